//! The `dropship` binary: parse, run, print, exit code. Everything else lives in the library.

use clap::Parser;
use dropship::cli::Cli;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    dropship::logging::init(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    runtime.block_on(dropship::commands::run(cli))
}
