//! Log setup: `-v` raises dropship's own level; `RUST_LOG` overrides everything.

use tracing_subscriber::EnvFilter;

pub fn init(verbosity: u8) {
    let default = match verbosity {
        0 => "dropship=warn",
        1 => "dropship=info",
        2 => "dropship=debug",
        _ => "dropship=trace,russh=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
