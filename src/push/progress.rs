//! Live progress: one bar per active node and an overall bar on a terminal, plain log lines
//! otherwise (CI logs, pipes), so a long push never looks stuck.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::report::HostReport;

/// Cheap to clone: clones draw on the same bars.
#[derive(Clone)]
pub struct Progress {
    bars: Option<Bars>,
}

#[derive(Clone)]
struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
}

/// How often a node's bar reads its byte counter.
const TICK: Duration = Duration::from_millis(200);

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn new(hosts: usize) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bars: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(hosts as u64));
        overall.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} hosts {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        overall.set_prefix("push");
        Progress {
            bars: Some(Bars { multi, overall }),
        }
    }

    /// A step of one host (connecting, gathering facts, ...).
    pub fn step(&self, host: &str, message: &str) {
        match &self.bars {
            Some(bars) => bars.overall.set_message(format!("{host}: {message}")),
            None => eprintln!("{host}: {message}"),
        }
    }

    /// Show a transfer of `total` bytes while it runs, reading `sent`; the returned guard
    /// removes the bar.
    pub fn transfer(&self, host: &str, total: u64, sent: Arc<AtomicU64>) -> TransferGuard {
        self.step(host, &format!("sending {}", HumanBytes(total)));
        let Some(bars) = &self.bars else {
            return TransferGuard { bar: None };
        };
        let start = sent.load(Ordering::Relaxed);
        let bar = bars
            .multi
            .insert_before(&bars.overall, ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(host.to_string());
        let ticker = bar.clone();
        tokio::spawn(async move {
            while !ticker.is_finished() {
                ticker.set_position(sent.load(Ordering::Relaxed).saturating_sub(start));
                tokio::time::sleep(TICK).await;
            }
        });
        TransferGuard { bar: Some(bar) }
    }

    pub fn done(&self, report: &HostReport) {
        let status = serde_json::to_value(&report.status)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_string))
            .unwrap_or_default();
        match &self.bars {
            Some(bars) => {
                bars.overall.inc(1);
                bars.overall
                    .set_message(format!("{}: {status}", report.host));
            }
            None => eprintln!(
                "{}: {status} ({} sent, attempt {})",
                report.host,
                HumanBytes(report.bytes_sent),
                report.attempts
            ),
        }
    }

    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            bars.overall.finish_and_clear();
        }
    }
}

pub struct TransferGuard {
    bar: Option<ProgressBar>,
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
