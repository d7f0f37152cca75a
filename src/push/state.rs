//! What is known of one node while it is pushed: its attempt, the phase it is in and how long
//! each took, its runtime once known, the bytes sent. Its report is read from here when it
//! finishes, and also when the run is interrupted before it does, so an interrupted host
//! still says where it was and what it had sent.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::plan::Target;
use super::progress::Progress;
use super::report::{HostReport, HostStatus, ImageResult, Phase, Timings};
use crate::runtime::Runtime;
use crate::shutdown::Signal;

pub struct NodeState<'a> {
    host: String,
    progress: &'a Progress,
    started: Cell<Option<Instant>>,
    attempts: Cell<u32>,
    /// The phase under way, or the last one (where a failed attempt stopped).
    phase: Cell<Option<Phase>>,
    /// When the phase under way began; `None` once it is closed.
    since: Cell<Option<Instant>>,
    /// Of the current (or last) attempt.
    timings: RefCell<Timings>,
    runtime: Cell<Option<Runtime>>,
    /// Bytes that went over the wire, every attempt together.
    pub sent: Arc<AtomicU64>,
}

/// What a finished attempt found and did, for the report.
pub struct Ending {
    pub status: HostStatus,
    pub images: Vec<ImageResult>,
    /// With `--check`: what would be sent (nothing went over the wire).
    pub would_send: u64,
    pub bytes_saved: u64,
    pub notes: Vec<String>,
}

impl Ending {
    pub fn new(status: HostStatus, images: Vec<ImageResult>) -> Self {
        Ending {
            status,
            images,
            would_send: 0,
            bytes_saved: 0,
            notes: Vec::new(),
        }
    }
}

impl<'a> NodeState<'a> {
    pub fn new(target: &Target, progress: &'a Progress) -> Self {
        NodeState {
            host: target.host.name().to_string(),
            progress,
            started: Cell::new(None),
            attempts: Cell::new(0),
            phase: Cell::new(None),
            since: Cell::new(None),
            timings: RefCell::new(Timings::default()),
            runtime: Cell::new(target.runtime),
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A new attempt (the first starts the clock); the timings are this attempt's from now on.
    pub fn begin_attempt(&self, attempt: u32) {
        if self.started.get().is_none() {
            self.started.set(Some(Instant::now()));
        }
        self.attempts.set(attempt);
        self.phase.set(None);
        self.since.set(None);
        *self.timings.borrow_mut() = Timings::default();
    }

    pub fn enter(&self, phase: Phase) {
        self.enter_at(phase, Instant::now());
    }

    /// `phase` began at `at` (a moment of the phase before it, which ends then).
    pub fn enter_at(&self, phase: Phase, at: Instant) {
        self.close_at(at);
        self.phase.set(Some(phase));
        self.since.set(Some(at));
        self.progress.phase(&self.host, phase);
    }

    /// The phase under way ends now; the state keeps which it was.
    pub fn close(&self) {
        self.close_at(Instant::now());
    }

    fn close_at(&self, at: Instant) {
        if let (Some(phase), Some(since)) = (self.phase.get(), self.since.take()) {
            self.timings
                .borrow_mut()
                .add(phase, at.saturating_duration_since(since));
        }
    }

    pub fn set_runtime(&self, runtime: Option<Runtime>) {
        self.runtime.set(runtime);
    }

    /// The host's report, once its last attempt ended as `ending`.
    pub fn report(&self, ending: Ending) -> HostReport {
        self.close();
        let phase = ending.status.reason().and(self.phase.get());
        HostReport {
            host: self.host.clone(),
            runtime: self.runtime.get(),
            status: ending.status,
            phase,
            images: ending.images,
            bytes_sent: self.sent.load(Ordering::Relaxed) + ending.would_send,
            bytes_saved: ending.bytes_saved,
            attempts: self.attempts.get(),
            elapsed: self.started.get().map(|s| s.elapsed()).unwrap_or_default(),
            timings: self.timings.borrow().clone(),
            notes: ending.notes,
        }
    }

    /// The report of a host the run stopped before it finished (or started).
    pub fn interrupted(&self, signal: Signal) -> HostReport {
        let reason = if self.started.get().is_some() {
            format!("interrupted ({signal}) before it finished")
        } else {
            format!("interrupted ({signal}) before it started")
        };
        self.report(Ending::new(HostStatus::Interrupted { reason }, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn target() -> Target {
        Target {
            host: crate::ssh::Host {
                hop: crate::ssh::Hop::to("198.18.1.11", 22, None),
                jump: None,
                become_: None,
            },
            coreos: None,
            runtime: Some(Runtime::Docker),
            pin: false,
            platform: None,
        }
    }

    #[test]
    fn the_report_says_where_it_stopped_how_long_each_phase_took_and_what_went_out() {
        let progress = Progress::hidden();
        let state = NodeState::new(&target(), &progress);
        state.begin_attempt(1);
        let start = Instant::now();
        state.enter_at(Phase::Connect, start);
        state.enter_at(Phase::Facts, start + Duration::from_millis(200));
        state.enter_at(Phase::Send, start + Duration::from_millis(500));
        state.sent.fetch_add(4096, Ordering::Relaxed);
        let report = state.interrupted(Signal::Sigterm);
        assert_eq!(report.status.name(), "interrupted");
        assert_eq!(report.phase, Some(Phase::Send));
        assert_eq!(report.bytes_sent, 4096);
        assert_eq!(report.attempts, 1);
        assert_eq!(report.runtime, Some(Runtime::Docker));
        assert_eq!(
            report.timings.get(Phase::Connect),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            report.timings.get(Phase::Facts),
            Some(Duration::from_millis(300))
        );
        assert!(report.timings.get(Phase::Send).is_some());
    }

    #[test]
    fn a_new_attempt_starts_its_timings_afresh_and_a_good_ending_has_no_phase() {
        let progress = Progress::hidden();
        let state = NodeState::new(&target(), &progress);
        state.begin_attempt(1);
        state.enter(Phase::Connect);
        state.close();
        state.begin_attempt(2);
        state.enter(Phase::Connect);
        state.enter(Phase::Facts);
        let report = state.report(Ending::new(HostStatus::UpToDate, Vec::new()));
        assert_eq!((report.phase, report.attempts), (None, 2));
        assert_eq!(
            report.timings.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            [Phase::Connect, Phase::Facts]
        );
        let unstarted = NodeState::new(&target(), &progress);
        let report = unstarted.interrupted(Signal::Sigint);
        assert_eq!(
            report.status.reason(),
            Some("interrupted (SIGINT) before it started")
        );
        assert_eq!((report.phase, report.attempts), (None, 0));
    }
}
