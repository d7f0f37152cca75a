//! The edges: one module per subcommand. Library errors get their user-facing context here.

mod cache;
mod inventory;
mod ping;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Exit code for bad input (inventory, flags, image references): nothing was attempted.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when the run happened but some host or image failed.
pub const EXIT_FAILED: u8 = 1;

/// A problem with what the user gave us, found before anything was attempted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Inventory(args) => inventory::run(&cli.global, &args),
        Command::Ping(args) => ping::run(&cli.global, &args).await,
        Command::Push(_) => Err(not_built("push")),
        Command::Cache(command) => cache::run(&command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code_for(&err))
        }
    }
}

fn not_built(what: &str) -> anyhow::Error {
    UsageError(format!("`dropship {what}` is not built yet")).into()
}

/// Bad input exits 2 (like Ansible's parser errors); everything else exits 1.
fn exit_code_for(err: &anyhow::Error) -> u8 {
    let bad_input = err.chain().any(|e| {
        e.is::<UsageError>()
            || e.is::<crate::inventory::InventoryError>()
            || e.is::<crate::image::RefError>()
            || matches!(
                e.downcast_ref(),
                Some(crate::image::CacheError::Reference(_))
            )
    });
    if bad_input {
        EXIT_BAD_INPUT
    } else {
        EXIT_FAILED
    }
}
