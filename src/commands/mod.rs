//! The edges: one module per subcommand. Library errors get their user-facing context here.

mod cache;
mod inventory;
mod ping;
mod push;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::ansible_cfg::{AnsibleCfg, AnsibleCfgError};
use crate::cli::{Cli, Command, ConnectArgs, GlobalArgs, MAX_FORKS};
use crate::inventory::connection::{self, Defaults};
use crate::inventory::vault::VaultSecrets;
use crate::inventory::{Inventory, InventoryError};
use crate::ssh::config::{SshConfig, SshConfigError};
use crate::ssh::{ConnectOptions, Connector, Destination, Host, Source};

/// Exit code for bad input (inventory, flags, image references): nothing was attempted.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when the run happened but some host or image failed.
pub const EXIT_FAILED: u8 = 1;

/// A problem with what the user gave us, found before anything was attempted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn run(cli: Cli) -> ExitCode {
    let result = match Run::new(cli.global) {
        Err(err) => Err(err),
        Ok(run) => match cli.command {
            Command::Inventory(args) => inventory::run(&run, &args),
            Command::Ping(args) => ping::run(&run, &args).await,
            Command::Push(args) => push::run(&run, &args).await,
            Command::Cache(command) => cache::run(&run, &command),
            Command::Completions { shell } => completions(shell),
            Command::Man { out_dir } => man(&out_dir),
        },
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
            || e.is::<AnsibleCfgError>()
            || e.is::<SshConfigError>()
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

/// The global flags and `ansible.cfg` (with its `ANSIBLE_*` variables), read once per run:
/// flags win over the environment, which wins over the file.
struct Run {
    global: GlobalArgs,
    cfg: AnsibleCfg,
}

/// Ansible's default inventory, read when nothing names one (and only if it exists).
const DEFAULT_INVENTORY: &str = "/etc/ansible/hosts";

/// dropship's default forks (Ansible's is 5): see docs/architecture.md for why 10.
const DEFAULT_FORKS: usize = 10;
/// Seconds, as Ansible's `timeout` default.
const DEFAULT_TIMEOUT: u64 = 10;

impl Run {
    fn new(global: GlobalArgs) -> anyhow::Result<Run> {
        let cfg = AnsibleCfg::load()?;
        if let Some(file) = &cfg.file {
            tracing::info!("ansible.cfg: reading {}", file.display());
        }
        Ok(Run { global, cfg })
    }

    /// The inventory sources: `-i`, else `ANSIBLE_INVENTORY` / ansible.cfg's `inventory`,
    /// else `/etc/ansible/hosts` when it exists. Empty when nothing names one.
    fn inventory_sources(&self, fallback: bool) -> Vec<PathBuf> {
        let (sources, from) = if !self.global.inventory.is_empty() {
            (self.global.inventory.clone(), "-i".to_string())
        } else if let Some(found) = &self.cfg.inventory {
            (found.value.clone(), found.origin.clone())
        } else if fallback && std::path::Path::new(DEFAULT_INVENTORY).exists() {
            (
                vec![PathBuf::from(DEFAULT_INVENTORY)],
                "Ansible's default".into(),
            )
        } else {
            return Vec::new();
        };
        for source in &sources {
            tracing::info!("inventory: reading {} (from {from})", source.display());
        }
        sources
    }

    /// The inventory, with the vault passwords the flags give (read, or asked for, now) and
    /// the `-e` extra variables.
    fn load_inventory(&self) -> Result<Inventory, InventoryError> {
        self.load_inventory_from(self.inventory_sources(true))
    }

    fn load_inventory_from(&self, sources: Vec<PathBuf>) -> Result<Inventory, InventoryError> {
        let extra = crate::inventory::extra_vars::parse(&self.global.extra_vars)?;
        let global = &self.global;
        let secrets = VaultSecrets::load(
            &global.vault_ids,
            &global.vault_password_files,
            global.ask_vault_pass,
        )?;
        Ok(Inventory::load_with(&sources, secrets)?.with_extra_vars(extra))
    }

    /// `-f`, else `ANSIBLE_FORKS` / ansible.cfg's `forks`, else 10.
    fn forks(&self, args: &ConnectArgs) -> Result<usize, UsageError> {
        if let Some(forks) = args.forks {
            return Ok(forks);
        }
        match &self.cfg.forks {
            None => Ok(DEFAULT_FORKS),
            Some(forks) if (1..=MAX_FORKS).contains(&forks.value) => Ok(forks.value as usize),
            Some(forks) => Err(UsageError(format!(
                "{}: forks {} is not in 1..={MAX_FORKS}",
                forks.origin, forks.value
            ))),
        }
    }

    /// `-T`, else `ANSIBLE_TIMEOUT` / ansible.cfg's `timeout`, else 10 s.
    fn connect_timeout(&self, args: &ConnectArgs) -> Result<Duration, UsageError> {
        let seconds = match (args.connect_timeout, &self.cfg.timeout) {
            (Some(seconds), _) => seconds,
            (None, None) => DEFAULT_TIMEOUT,
            (None, Some(t)) if t.value >= 1 => t.value,
            (None, Some(t)) => {
                return Err(UsageError(format!(
                    "{}: timeout {} must be at least 1 second",
                    t.origin, t.value
                )));
            }
        };
        Ok(Duration::from_secs(seconds))
    }

    /// What every host gets unless its inventory variables say otherwise: ansible.cfg's
    /// user, key, ssh_args and host_key_checking, and the ssh config (`-F`, else the default).
    fn connection_defaults(&self, args: &ConnectArgs) -> anyhow::Result<Defaults> {
        let ssh_config = match &args.ssh_config {
            Some(file) => SshConfig::load_file(file)?,
            None => SshConfig::load_default()?,
        };
        for file in ssh_config.files() {
            tracing::info!("ssh config: reading {}", file.display());
        }
        let cfg = &self.cfg;
        Ok(Defaults {
            user: cfg.remote_user.as_ref().map(|u| u.value.clone()),
            private_key: cfg.private_key_file.as_ref().map(|k| k.value.clone()),
            ssh_args: cfg.ssh_args.as_ref().map(|a| a.value.clone()),
            no_host_key_checking: cfg.host_key_checking.as_ref().is_some_and(|h| !h.value),
            ssh_config,
        })
    }

    /// The transport's options from the flags every connecting command shares; `--bastion`
    /// gets its ssh config block like any jump host.
    fn connect_options(
        &self,
        args: &ConnectArgs,
        defaults: &Defaults,
    ) -> Result<ConnectOptions, UsageError> {
        let bastion = args
            .bastion
            .as_deref()
            .map(|spec| {
                let destination = Destination::parse(spec).map_err(|e| {
                    UsageError(format!(
                        "--bastion {spec:?}: expected [USER@]HOST[:PORT] ({e})"
                    ))
                })?;
                let mut hop = destination.hop();
                hop.sources.address = Source::Flag;
                if hop.port.is_some() {
                    hop.sources.port = Source::Flag;
                }
                if hop.user.is_some() {
                    hop.sources.user = Source::Flag;
                }
                defaults.ssh_config.apply(&mut hop);
                Ok(hop)
            })
            .transpose()?;
        Ok(ConnectOptions {
            user: args.user.clone(),
            private_key: args.private_key.clone(),
            known_hosts: args.known_hosts.clone(),
            bastion,
            accept_new: args.accept_new,
            insecure_ignore_host_keys: args.insecure_ignore_host_keys,
            connect_timeout: self.connect_timeout(args)?,
            ..ConnectOptions::default()
        })
    }
}

/// `--list-hosts`: the hosts a run would contact, as `ansible PATTERN --list-hosts` prints
/// them, and nothing contacted.
fn list_hosts(inventory: &Inventory, limit: Option<&str>) -> anyhow::Result<ExitCode> {
    let names = connection::target_names(inventory, limit.unwrap_or("all"))?;
    let mut out = format!("  hosts ({}):\n", names.len());
    for name in names {
        out.push_str(&format!("    {name}\n"));
    }
    print_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints to stdout; a closed pipe (`| head`) or a terminal that hung up is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    ignore_gone(std::io::stdout().lock().write_all(text.as_bytes())).context("writing to stdout")
}

/// The `-v` lines saying how each host will be reached.
fn log_hosts(connector: &Connector, hosts: &[Host]) {
    for host in hosts {
        tracing::info!("{}", connector.describe(host));
    }
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "dropship", &mut out);
    print_stdout(&String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}

fn man(out_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let command = <Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(command, out_dir)
        .with_context(|| format!("cannot write the man pages into {}", out_dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// A run's results, written whatever happened: the JSON (`--json FILE`, or `-` for stdout)
/// and the text people read. A file comes first, so it is written even when the terminal
/// went away (SIGHUP); the text goes to stdout, or to stderr when the JSON has stdout to
/// itself, so that `--json - | jq` reads JSON alone. A closed terminal or pipe does not stop
/// the rest from being written.
fn write_results(
    json: Option<&std::path::Path>,
    value: &impl serde::Serialize,
    text: &str,
) -> anyhow::Result<()> {
    use std::io::Write;
    let to_stdout = json.is_some_and(|path| path.as_os_str() == "-");
    let written = match json {
        Some(path) if !to_stdout => write_json_file(path, value),
        _ => Ok(()),
    };
    if to_stdout {
        ignore_gone(std::io::stderr().lock().write_all(text.as_bytes()))?;
        print_stdout(&(serde_json::to_string_pretty(value)? + "\n"))?;
    } else {
        print_stdout(text)?;
    }
    written
}

/// A write to a reader that left (a closed pipe, a terminal that hung up) is not an error:
/// nobody is there to read about it.
fn ignore_gone(written: std::io::Result<()>) -> std::io::Result<()> {
    match written {
        Err(e)
            if e.kind() == std::io::ErrorKind::BrokenPipe
                || e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Write `value` as pretty JSON to `path`, under a temporary name and renamed, so a reader
/// never sees half of it.
fn write_json_file(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    write_atomically(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// `bytes` into `path` under a temporary name, then renamed over it.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}
