//! `dropship ping`: reach every host of the limit (through its bastion) and show its facts.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use futures::StreamExt;
use indicatif::HumanBytes;
use serde::Serialize;

use crate::cli::PingArgs;
use crate::facts::{self, Facts};
use crate::inventory::connection;
use crate::inventory::host_vars::HostVars;
use crate::push::kubespray::DownloadSettings;
use crate::push::plan::runtime_of;
use crate::runtime::Runtime;
use crate::ssh::{Connector, Hop, Host};

use super::write_results;

pub async fn run(run: &super::Run, args: &PingArgs) -> anyhow::Result<ExitCode> {
    let limit = run.global.limit.as_deref();
    let inventory = run.load_inventory()?;
    if args.connect.list_hosts {
        return super::list_hosts(&inventory, limit);
    }
    let defaults = run.connection_defaults(&args.connect)?;
    let hosts = connection::targets(&inventory, limit.unwrap_or("all"), &defaults)?;
    let runtimes = hosts
        .iter()
        .map(|host| runtime_of(&HostVars::new(&inventory, host.name())))
        .collect::<Result<Vec<_>, _>>()?;
    let local_release_dir = DownloadSettings::from_inventory(&inventory)?.local_release_dir;
    let connector = Connector::new(run.connect_options(&args.connect, &defaults)?);
    super::log_hosts(&connector, &hosts);
    let report = ping(
        &connector,
        hosts.into_iter().zip(runtimes).collect(),
        &local_release_dir,
        run.forks(&args.connect)?,
    )
    .await;
    write_results(args.json.as_deref(), &report, &report.render())?;
    let failed = report.failed_hosts();
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("unreachable: {}", failed.join(", "))
    }
}

/// The outcome for one host, as printed and written to JSON.
#[derive(Debug, Serialize)]
pub struct HostPing {
    pub host: String,
    pub address: String,
    pub user: String,
    pub via: Option<String>,
    pub reachable: bool,
    pub error: Option<String>,
    pub seconds: f64,
    /// The runtime dropship would push into: the inventory's, else what the facts show.
    pub runtime: Option<Runtime>,
    pub facts: Option<Facts>,
}

#[derive(Debug, Serialize)]
pub struct BastionReport {
    pub name: String,
    pub address: String,
    pub reachable: bool,
    pub error: Option<String>,
}

/// The version of `ping --json`'s document (docs/json.md): raised when a field changes meaning
/// or goes away; new fields may appear without it.
pub const PING_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct PingReport {
    pub schema_version: u32,
    pub hosts: Vec<HostPing>,
    pub bastions: Vec<BastionReport>,
}

/// Ping `hosts` (each with the runtime the inventory names, if any) at most `forks` at once,
/// and each distinct bastion once.
pub async fn ping(
    connector: &Connector,
    hosts: Vec<(Host, Option<Runtime>)>,
    local_release_dir: &Path,
    forks: usize,
) -> PingReport {
    let mut jumps: Vec<Hop> = Vec::new();
    for jump in hosts.iter().filter_map(|(h, _)| connector.jump_for(h)) {
        if !jumps.contains(&jump) {
            jumps.push(jump);
        }
    }
    let bastions = futures::future::join_all(jumps.iter().map(|jump| async move {
        let result = connector.check_bastion(jump).await;
        BastionReport {
            name: jump.name.clone(),
            address: format!("{}:{}", jump.address, jump.port()),
            reachable: result.is_ok(),
            error: result.err().map(|e| e.to_string()),
        }
    }));
    let pings = futures::stream::iter(
        hosts
            .iter()
            .map(|(host, runtime)| ping_one(connector, host, *runtime, local_release_dir)),
    )
    .buffered(forks.max(1))
    .collect::<Vec<_>>();
    let (bastions, hosts) = futures::join!(bastions, pings);
    PingReport {
        schema_version: PING_SCHEMA_VERSION,
        hosts,
        bastions,
    }
}

async fn ping_one(
    connector: &Connector,
    host: &Host,
    runtime: Option<Runtime>,
    local_release_dir: &Path,
) -> HostPing {
    let started = Instant::now();
    let result = async {
        let session = connector.connect(host).await?;
        let facts = facts::gather(&session, local_release_dir, host.become_.as_ref()).await;
        session.close().await;
        facts
    }
    .await;
    HostPing {
        host: host.name().to_string(),
        address: host.hop.address.clone(),
        user: connector.login_user(host),
        via: connector.jump_for(host).map(|j| j.name.clone()),
        reachable: result.is_ok(),
        seconds: started.elapsed().as_secs_f64(),
        error: result.as_ref().err().map(|e| e.to_string()),
        runtime: runtime.or_else(|| result.as_ref().ok().and_then(Runtime::detect)),
        facts: result.ok(),
    }
}

impl PingReport {
    pub fn failed_hosts(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| !h.reachable)
            .map(|h| h.host.as_str())
            .collect()
    }

    /// One line per host, then the summary.
    pub fn render(&self) -> String {
        let width = self.hosts.iter().map(|h| h.host.len()).max().unwrap_or(4);
        let mut out = String::new();
        for host in &self.hosts {
            let login = format!("{}@{}", host.user, host.address);
            match &host.facts {
                Some(facts) => out.push_str(&format!(
                    "{:width$}  ok      {login}  {} {} {}  runtime:{} ({})  zstd:{}  free:{}  images:{}  ({:.1}s)\n",
                    host.host,
                    non_empty(&facts.os.id),
                    non_empty(&facts.os.version_id),
                    non_empty(&facts.arch),
                    host.runtime.map_or("none", Runtime::name),
                    facts.runtime_summary(),
                    if facts.has_tool("zstd") { "yes" } else { "no" },
                    facts.free_space.as_ref().map(|f| HumanBytes(f.bytes).to_string()).unwrap_or_else(|| "?".into()),
                    host.runtime.map_or(0, |r| r.images_held(facts)),
                    host.seconds,
                )),
                None => out.push_str(&format!(
                    "{:width$}  FAILED  {login}  {}\n",
                    host.host,
                    host.error.as_deref().unwrap_or("unknown error")
                )),
            }
        }
        let failed = self.failed_hosts();
        out.push_str(&format!(
            "\n{} host(s): {} reachable, {} failed{}\n",
            self.hosts.len(),
            self.hosts.len() - failed.len(),
            failed.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(" ({})", failed.join(", "))
            }
        ));
        for bastion in &self.bastions {
            match &bastion.error {
                None => out.push_str(&format!(
                    "bastion {} ({}): reachable\n",
                    bastion.name, bastion.address
                )),
                Some(error) => out.push_str(&format!(
                    "bastion {} ({}): UNREACHABLE: {error}\n",
                    bastion.name, bastion.address
                )),
            }
        }
        out
    }
}

fn non_empty(value: &str) -> &str {
    if value.is_empty() { "?" } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_the_failed_hosts_and_the_bastion() {
        let failed = HostPing {
            host: "node2".into(),
            address: "10.0.0.2".into(),
            user: "root".into(),
            via: Some("bastion".into()),
            reachable: false,
            error: Some("node2: connection refused".into()),
            seconds: 0.1,
            runtime: None,
            facts: None,
        };
        let report = PingReport {
            schema_version: PING_SCHEMA_VERSION,
            hosts: vec![failed],
            bastions: vec![BastionReport {
                name: "bastion".into(),
                address: "10.0.0.1:22".into(),
                reachable: true,
                error: None,
            }],
        };
        let text = report.render();
        assert!(
            text.contains("node2  FAILED  root@10.0.0.2  node2: connection refused"),
            "{text}"
        );
        assert!(
            text.contains("1 host(s): 0 reachable, 1 failed (node2)"),
            "{text}"
        );
        assert!(
            text.contains("bastion bastion (10.0.0.1:22): reachable"),
            "{text}"
        );
    }
}
