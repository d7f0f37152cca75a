//! Why a run stops early. The binary listens for the signals once, at the edge, and passes the
//! future into the library (`push::run` takes any `Future<Output = Signal>`), so interruption
//! is testable without sending signals.

use serde::Serialize;

/// The signal that asked the run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Signal {
    /// Ctrl-C.
    Sigint,
    /// What `timeout`, systemd and CI runners send.
    Sigterm,
    /// The terminal went away.
    Sighup,
}

impl Signal {
    /// The exit code a shell reports for a death by this signal (128 + its number).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Sighup => 129,
            Signal::Sigint => 130,
            Signal::Sigterm => 143,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Sigint => "SIGINT",
            Signal::Sigterm => "SIGTERM",
            Signal::Sighup => "SIGHUP",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Resolves at the first SIGINT, SIGTERM or SIGHUP. The handlers are installed when this is
/// called, not when it is first polled, so a signal that arrives early is not lost.
pub fn signals() -> std::io::Result<impl Future<Output = Signal> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => Signal::Sigint,
            _ = terminate.recv() => Signal::Sigterm,
            _ = hangup.recv() => Signal::Sighup,
        }
    })
}
