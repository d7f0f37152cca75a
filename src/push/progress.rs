//! Live progress, so a long push never looks stuck. On a terminal: an overall bar (hosts
//! done, bytes sent, how many hosts are in each phase) and a bar for each transfer, at most
//! [`MAX_HOST_BARS`] of them (the oldest under way; one that ends hands its line to the next),
//! whatever the number of hosts; retries and hosts that did not finish well are printed above
//! the bars as they happen. Otherwise (CI logs, pipes): plain lines, `HOST: what happened`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::report::{HostReport, Phase};

/// Transfer bars shown at most (fewer on a short terminal): the default `--forks`, so that a
/// default run shows every transfer.
const MAX_HOST_BARS: usize = 10;

/// How often the bars read the byte counters.
const TICK: Duration = Duration::from_millis(200);

/// Cheap to clone: clones draw on the same display.
#[derive(Clone)]
pub struct Progress {
    display: Display,
}

#[derive(Clone)]
enum Display {
    /// Nothing at all (tests).
    Hidden,
    Lines,
    Bars(Arc<Board>),
}

struct Board {
    multi: MultiProgress,
    overall: ProgressBar,
    max_bars: usize,
    state: Mutex<BoardState>,
}

#[derive(Default)]
struct BoardState {
    /// Hosts under way, and their phase.
    phases: HashMap<String, Phase>,
    /// Transfers under way, oldest first.
    transfers: Vec<Transfer>,
    next_id: u64,
    /// Bytes sent by hosts that are done.
    done_bytes: u64,
    unreachable: usize,
    failed: usize,
}

struct Transfer {
    id: u64,
    host: String,
    total: u64,
    /// The counter's value when this transfer began (it counts every attempt).
    start: u64,
    sent: Arc<AtomicU64>,
    bar: Option<ProgressBar>,
}

impl Transfer {
    fn position(&self) -> u64 {
        self.sent.load(Ordering::Relaxed).saturating_sub(self.start)
    }
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn new(hosts: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress {
                display: Display::Lines,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(hosts as u64));
        overall.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} hosts {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        overall.set_prefix("push");
        let board = Arc::new(Board {
            multi,
            overall,
            max_bars: MAX_HOST_BARS.min(terminal_rows().saturating_sub(4)).max(1),
            state: Mutex::new(BoardState::default()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let ticking = board.clone();
            tokio::spawn(async move {
                while !ticking.overall.is_finished() {
                    ticking.tick();
                    tokio::time::sleep(TICK).await;
                }
            });
        }
        Progress {
            display: Display::Bars(board),
        }
    }

    /// A display that shows nothing.
    pub fn hidden() -> Self {
        Progress {
            display: Display::Hidden,
        }
    }

    /// A host entered `phase`.
    pub fn phase(&self, host: &str, phase: Phase) {
        match &self.display {
            Display::Hidden => {}
            Display::Lines if phase == Phase::Connect => eprintln!("{host}: connecting"),
            Display::Lines => {}
            Display::Bars(board) => {
                board.lock().phases.insert(host.to_string(), phase);
                board.refresh();
            }
        }
    }

    /// Something worth a line (a retry, a pull's milestone).
    pub fn step(&self, host: &str, message: &str) {
        self.line(&format!("{host}: {message}"));
    }

    fn line(&self, text: &str) {
        match &self.display {
            Display::Hidden => {}
            Display::Lines => eprintln!("{text}"),
            Display::Bars(board) => {
                let _ = board.multi.println(text);
            }
        }
    }

    /// Show a transfer of `total` bytes while it runs, reading `sent`; the returned guard ends
    /// it.
    pub fn transfer(&self, host: &str, total: u64, sent: Arc<AtomicU64>) -> TransferGuard {
        let board = match &self.display {
            Display::Hidden => return TransferGuard { board: None, id: 0 },
            Display::Lines => {
                eprintln!("{host}: sending {}", HumanBytes(total));
                return TransferGuard { board: None, id: 0 };
            }
            Display::Bars(board) => board,
        };
        let mut state = board.lock();
        let id = state.next_id;
        state.next_id += 1;
        let shown = state.transfers.iter().filter(|t| t.bar.is_some()).count();
        let mut transfer = Transfer {
            id,
            host: host.to_string(),
            total,
            start: sent.load(Ordering::Relaxed),
            sent,
            bar: None,
        };
        if shown < board.max_bars {
            transfer.bar = Some(board.bar_for(&transfer));
        }
        state.transfers.push(transfer);
        drop(state);
        TransferGuard {
            board: Some(board.clone()),
            id,
        }
    }

    /// A host is done: counted, and on a line of its own unless it ended well on a terminal.
    pub fn done(&self, report: &HostReport) {
        let line = done_line(report);
        match &self.display {
            Display::Hidden => {}
            Display::Lines => eprintln!("{line}"),
            Display::Bars(board) => {
                let mut state = board.lock();
                state.phases.remove(&report.host);
                state.done_bytes += report.bytes_sent;
                match report.status.name() {
                    "unreachable" => state.unreachable += 1,
                    "failed" => state.failed += 1,
                    _ => {}
                }
                drop(state);
                board.overall.inc(1);
                if report.needs_retry() {
                    let _ = board.multi.println(line);
                }
                board.refresh();
            }
        }
    }

    pub fn finish(&self) {
        if let Display::Bars(board) = &self.display {
            for transfer in board.lock().transfers.drain(..) {
                if let Some(bar) = transfer.bar {
                    bar.finish_and_clear();
                }
            }
            board.overall.finish_and_clear();
        }
    }
}

/// `node3: unreachable (connect, attempt 2): cannot connect to ...`; `node1: loaded (5.51 MiB
/// sent, attempt 1)`.
fn done_line(report: &HostReport) -> String {
    let status = report.status.name();
    match report.short_reason() {
        Some(reason) => format!(
            "{}: {status} ({}, attempt {}): {reason}",
            report.host,
            report.phase.map_or("not started", Phase::name),
            report.attempts
        ),
        None => format!(
            "{}: {status} ({} sent, attempt {})",
            report.host,
            HumanBytes(report.bytes_sent),
            report.attempts
        ),
    }
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, BoardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bar_for(&self, transfer: &Transfer) -> ProgressBar {
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new(transfer.total));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(transfer.host.clone());
        bar.set_position(transfer.position());
        bar
    }

    /// The transfer ended: its line goes to the oldest one without a line.
    fn end(&self, id: u64) {
        let mut state = self.lock();
        let Some(at) = state.transfers.iter().position(|t| t.id == id) else {
            return;
        };
        let ended = state.transfers.remove(at);
        if let Some(bar) = ended.bar {
            bar.finish_and_clear();
            self.multi.remove(&bar);
            if let Some(next) = state.transfers.iter_mut().find(|t| t.bar.is_none()) {
                next.bar = Some(self.bar_for(next));
            }
        }
    }

    fn tick(&self) {
        for transfer in &self.lock().transfers {
            if let Some(bar) = &transfer.bar {
                bar.set_position(transfer.position());
            }
        }
        self.refresh();
    }

    /// The overall line: bytes sent, hosts per phase, hosts that did not finish well.
    fn refresh(&self) {
        let state = self.lock();
        let sent = state.done_bytes + state.transfers.iter().map(Transfer::position).sum::<u64>();
        let mut parts = vec![format!("{} sent", HumanBytes(sent))];
        for phase in Phase::ALL {
            let count = state.phases.values().filter(|p| **p == phase).count();
            if count > 0 {
                parts.push(format!("{phase} {count}"));
            }
        }
        for (count, what) in [(state.unreachable, "unreachable"), (state.failed, "failed")] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        self.overall.set_message(parts.join(" · "));
    }
}

/// The terminal's height on stderr, 24 when it cannot be had.
fn terminal_rows() -> usize {
    match rustix::termios::tcgetwinsize(std::io::stderr()) {
        Ok(size) if size.ws_row > 0 => size.ws_row as usize,
        _ => 24,
    }
}

pub struct TransferGuard {
    board: Option<Arc<Board>>,
    id: u64,
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        if let Some(board) = &self.board {
            board.end(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::report::HostStatus;
    use crate::push::report::testing::host;

    fn board(max_bars: usize) -> Arc<Board> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let overall = multi.add(ProgressBar::new(100));
        Arc::new(Board {
            multi,
            overall,
            max_bars,
            state: Mutex::new(BoardState::default()),
        })
    }

    fn shown(board: &Board) -> Vec<String> {
        let state = board.lock();
        let hosts = state.transfers.iter().filter(|t| t.bar.is_some());
        hosts.map(|t| t.host.clone()).collect()
    }

    #[test]
    fn at_most_max_bars_transfers_are_shown_and_an_ended_one_hands_its_line_on() {
        let board = board(3);
        let progress = Progress {
            display: Display::Bars(board.clone()),
        };
        let counter = Arc::new(AtomicU64::new(0));
        let mut guards: Vec<TransferGuard> = (0..100)
            .map(|i| progress.transfer(&format!("node{i:03}"), 1000, counter.clone()))
            .collect();
        assert_eq!(shown(&board), ["node000", "node001", "node002"]);
        guards.remove(1);
        assert_eq!(shown(&board), ["node000", "node002", "node003"]);
        guards.remove(50); // node051: it had no line, nothing changes
        assert_eq!(shown(&board), ["node000", "node002", "node003"]);
        assert_eq!(board.lock().transfers.len(), 98);
        drop(guards);
        assert!(board.lock().transfers.is_empty());
    }

    #[test]
    fn the_overall_line_counts_hosts_per_phase_and_the_ones_that_failed() {
        let board = board(3);
        let progress = Progress {
            display: Display::Bars(board.clone()),
        };
        for i in 0..5 {
            progress.phase(&format!("node{i}"), Phase::Connect);
        }
        progress.phase("node0", Phase::Download);
        progress.done(&host(
            "node4",
            HostStatus::Unreachable {
                reason: "node4: refused".into(),
            },
            0,
        ));
        assert_eq!(
            board.overall.message(),
            "0 B sent · connect 3 · download 1 · 1 unreachable"
        );
        assert_eq!(board.overall.position(), 1);
    }

    #[test]
    fn a_done_line_says_why_a_host_did_not_finish_well() {
        let mut unreachable = host(
            "node3",
            HostStatus::Unreachable {
                reason: "node3: cannot connect to 10.0.0.3:22: Connection refused".into(),
            },
            0,
        );
        unreachable.attempts = 2;
        assert_eq!(
            done_line(&unreachable),
            "node3: unreachable (connect, attempt 2): cannot connect to 10.0.0.3:22: Connection refused"
        );
        assert_eq!(
            done_line(&host("node1", HostStatus::Loaded, 1)),
            "node1: loaded (2.00 KiB sent, attempt 1)"
        );
    }
}
