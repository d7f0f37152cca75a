//! The edges: one module per subcommand. Library errors get their user-facing context here.

mod cache;
mod inventory;
mod ping;
mod push;

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{Cli, Command, ConnectArgs, GlobalArgs};
use crate::inventory::vault::VaultSecrets;
use crate::inventory::{Inventory, InventoryError};
use crate::ssh::{ConnectOptions, Destination};

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
        Command::Push(args) => push::run(&cli.global, &args).await,
        Command::Cache(command) => cache::run(&cli.global, &command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code_for(&err))
        }
    }
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

/// The `-i` inventory, with the vault passwords the flags give (read, or asked for, now).
fn load_inventory(global: &GlobalArgs) -> Result<Inventory, InventoryError> {
    let secrets = VaultSecrets::load(
        &global.vault_ids,
        &global.vault_password_files,
        global.ask_vault_pass,
    )?;
    Inventory::load_with(&global.inventory, secrets)
}

/// The transport's options from the flags every connecting command shares.
fn connect_options(args: &ConnectArgs) -> Result<ConnectOptions, UsageError> {
    let bastion = args
        .bastion
        .as_deref()
        .map(|spec| {
            Destination::parse(spec).map(Destination::hop).map_err(|e| {
                UsageError(format!(
                    "--bastion {spec:?}: expected [USER@]HOST[:PORT] ({e})"
                ))
            })
        })
        .transpose()?;
    Ok(ConnectOptions {
        user: args.user.clone(),
        private_key: args.private_key.clone(),
        known_hosts: args.known_hosts.clone(),
        bastion,
        accept_new: args.accept_new,
        insecure_ignore_host_keys: args.insecure_ignore_host_keys,
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        ..ConnectOptions::default()
    })
}

/// Write `value` as pretty JSON to `path` ("-" for stdout); a file is written under a temporary
/// name and renamed, so a reader never sees half of it.
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = serde_json::to_string_pretty(value)? + "\n";
    if path.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&temp, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("writing {}", path.display()))
}
