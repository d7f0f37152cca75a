//! Log setup: `-v` raises dropship's own level; `RUST_LOG` overrides everything.
//!
//! Lines are plain and greppable (`warning: ...`, `info: ...`), on stderr. Colour only on a
//! terminal, never in a pipe or a file (tracing-subscriber colours by default wherever it
//! writes), and as the conventions say: `NO_COLOR` (set, not empty) turns it off,
//! `CLICOLOR_FORCE` (set, not `0`) turns it on even into a pipe.
//!
//! What each level adds: `-v` the files read and each target's address, port, user and jump
//! host with where each came from; `-vv` the authentication and the remote commands; `-vvv`
//! the transport (russh's own messages).

use std::collections::HashSet;
use std::fmt;
use std::io::IsTerminal;
use std::sync::Mutex;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub fn init(verbosity: u8) {
    let default = match verbosity {
        0 => "dropship=warn",
        1 => "dropship=info",
        2 => "dropship=debug",
        _ => "dropship=trace,russh=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = colour(
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("CLICOLOR_FORCE").as_deref(),
        std::io::stderr().is_terminal(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .event_format(Plain {
            ansi,
            target: verbosity >= 3,
        })
        .try_init();
}

/// Whether to colour stderr: `NO_COLOR` wins, then `CLICOLOR_FORCE`, then "is it a terminal".
fn colour(
    no_color: Option<&std::ffi::OsStr>,
    force: Option<&std::ffi::OsStr>,
    terminal: bool,
) -> bool {
    if no_color.is_some_and(|v| !v.is_empty()) {
        return false;
    }
    if force.is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    terminal
}

/// Prints a warning once per run, however many times the situation is met (several sources,
/// several hosts looking up the same ssh config line), as Ansible's display does.
pub fn warn_once(message: String) {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert(message.clone())
    {
        tracing::warn!("{message}");
    }
}

/// `warning: message` and `info: message`, nothing else: no timestamp, no module path (but
/// for -vvv, where the target tells dropship's lines from russh's).
struct Plain {
    ansi: bool,
    target: bool,
}

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let (word, colour) = match *metadata.level() {
            Level::ERROR => ("error", "31"),
            Level::WARN => ("warning", "33"),
            Level::INFO => ("info", "32"),
            Level::DEBUG => ("debug", "34"),
            Level::TRACE => ("trace", "35"),
        };
        if self.ansi {
            write!(writer, "\x1b[1;{colour}m{word}\x1b[0m: ")?;
        } else {
            write!(writer, "{word}: ")?;
        }
        if self.target {
            write!(writer, "{}: ", metadata.target())?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_follows_no_color_then_clicolor_force_then_the_terminal() {
        let v = |s| Some(OsStr::new(s));
        assert!(colour(None, None, true));
        assert!(!colour(None, None, false));
        assert!(!colour(v("1"), v("1"), true), "NO_COLOR wins");
        assert!(colour(v(""), None, true), "an empty NO_COLOR is unset");
        assert!(colour(None, v("1"), false), "CLICOLOR_FORCE colours a pipe");
        assert!(!colour(None, v("0"), false));
    }
}
