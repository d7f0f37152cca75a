//! `dropship push`, the whole of it: the plan, the download on the delegate, and one task per
//! node, at most `--forks` at once, each retried on its own, so a fault on one node never
//! stops the others.

pub mod decide;
pub mod fetch;
pub mod kubespray;
pub mod node;
pub mod plan;
pub mod progress;
pub mod recap;
pub mod report;
pub mod state;
pub mod transfer;

use std::future::Future;
use std::time::SystemTime;

use futures::{FutureExt, StreamExt};

use crate::image::{Cache, CacheError, ImageRef};
use crate::shutdown::Signal;
use crate::ssh::Connector;
use fetch::Images;
use node::NodeContext;
use plan::{Plan, Target};
use progress::Progress;
use report::{HostReport, RunReport};
use state::NodeState;

/// Push the plan's images to its targets; never fails: the report says what happened on each
/// host, and why the images could not be had if the download failed.
///
/// Nodes connect and gather facts while the delegate downloads. When `shutdown` resolves, the
/// transfers under way stop (dropping a transfer closes its channel, and the node's side
/// removes any partial file), the download is no longer waited for, and the hosts that had
/// not finished are reported as interrupted, each with the phase it was in.
pub async fn run(
    plan: &Plan,
    connector: &Connector,
    cache: &Cache,
    progress: &Progress,
    shutdown: impl Future<Output = Signal>,
) -> RunReport {
    let started = SystemTime::now();
    let shutdown = shutdown.boxed_local().shared();
    let images = Images::new(plan, connector, cache, progress);
    let ctx = NodeContext {
        connector,
        cache,
        images: &images,
        delegate: plan.delegate.host_name(),
        platform: plan.platform.as_ref(),
        settings: &plan.settings,
        progress,
    };
    // What needs no node's platform is fetched while the nodes connect; it is not waited for
    // once the run is interrupted.
    let stopped = shutdown.clone();
    let early = async {
        tokio::select! {
            _ = images.early() => {}
            _ = stopped => {}
        }
    };
    let ((hosts, interrupted), ()) = tokio::join!(push_all(&ctx, &plan.targets, shutdown), early);
    // What is still downloading is not waited for once the run is interrupted.
    let download_error = match interrupted {
        Some(_) => None,
        None => images.finish().await,
    };
    progress.finish();
    RunReport {
        check: plan.settings.check,
        started,
        finished: SystemTime::now(),
        interrupted,
        download_error: download_error.map(|e| e.to_string()),
        retry_file: None,
        hosts,
    }
}

/// What `--offline` needs that the cache lacks.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(
        "--offline: not in the cache {}: {}; pull them (without --offline) or `dropship cache import` them",
        cache.display(),
        missing.join(", ")
    )]
    NotCached {
        cache: std::path::PathBuf,
        missing: Vec<String>,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// With `--offline` every image must be in the cache: checked before anything is contacted,
/// naming every image missing at once.
pub fn check_offline(cache: &Cache, images: &[ImageRef]) -> Result<(), OfflineError> {
    let mut missing = Vec::new();
    for image in images {
        match cache.require(&image.to_string()) {
            Ok(_) => {}
            Err(CacheError::NotCached { .. }) => missing.push(image.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(OfflineError::NotCached {
            cache: cache.root().to_path_buf(),
            missing,
        })
    }
}

/// Every target's report in target order, and the signal that cut the run short, if any.
async fn push_all(
    ctx: &NodeContext<'_, '_>,
    targets: &[Target],
    shutdown: impl Future<Output = Signal>,
) -> (Vec<HostReport>, Option<Signal>) {
    let states: Vec<NodeState> = targets
        .iter()
        .map(|target| NodeState::new(target, ctx.progress))
        .collect();
    let mut reports: Vec<Option<HostReport>> = vec![None; targets.len()];
    let mut tasks = futures::stream::iter(targets.iter().zip(&states).enumerate())
        .map(|(i, (target, state))| async move { (i, node::push(ctx, target, state).await) })
        .buffer_unordered(ctx.settings.forks.max(1));
    tokio::pin!(shutdown);
    let mut interrupted = None;
    loop {
        tokio::select! {
            next = tasks.next() => match next {
                Some((i, report)) => {
                    ctx.progress.done(&report);
                    reports[i] = Some(report);
                }
                None => break,
            },
            signal = &mut shutdown => {
                interrupted = Some(signal);
                break;
            }
        }
    }
    drop(tasks);
    let hosts = reports
        .into_iter()
        .zip(&states)
        .map(|(report, state)| {
            report.unwrap_or_else(|| {
                let signal = interrupted.expect("a host is unfinished only after a signal");
                state.interrupted(signal)
            })
        })
        .collect();
    (hosts, interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testing::load_ini;
    use clap::Parser;

    fn plan_for(inventory: &str, flags: &[&str]) -> Plan {
        let (_dir, inventory) = load_ini(inventory);
        let cli = crate::cli::Cli::parse_from(["dropship", "push"].iter().chain(flags));
        let crate::cli::Command::Push(args) = cli.command else {
            unreachable!()
        };
        let images = vec![crate::image::ImageRef::parse("registry.testbed:5000/app:v1").unwrap()];
        let context = plan::Context {
            connection: &crate::inventory::connection::Defaults::default(),
            forks: 10,
            connect_timeout: std::time::Duration::from_secs(10),
        };
        plan::build(&inventory, None, &args, images, &context).unwrap()
    }

    /// Nodes that accept TCP and then never answer: without the shutdown, each would sit in
    /// its SSH handshake for the whole connect timeout.
    #[tokio::test]
    async fn a_shutdown_future_stops_every_node_and_the_download_and_says_so() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut held = Vec::new();
        let accept = async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                held.push(socket);
            }
        };
        let inventory =
            format!("[kube_node]\nnode[1:3] ansible_host=127.0.0.1 ansible_port={port}\n");
        let plan = plan_for(&inventory, &["--delegate", "node1"]);
        let connector = Connector::new(crate::ssh::ConnectOptions {
            agent_socket: None,
            default_key_dir: None,
            connect_timeout: std::time::Duration::from_secs(600),
            ..Default::default()
        });
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(cache_dir.path(), None).unwrap();
        let progress = Progress::new(plan.targets.len());
        let shutdown = async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Signal::Sigterm
        };
        let report = tokio::select! {
            report = run(&plan, &connector, &cache, &progress, shutdown) => report,
            _ = accept => unreachable!(),
        };
        assert_eq!(report.interrupted, Some(Signal::Sigterm));
        assert_eq!(
            report.download_error, None,
            "the download was not waited for"
        );
        assert_eq!(report.hosts.len(), 3);
        for host in &report.hosts {
            assert_eq!(
                host.status,
                report::HostStatus::Interrupted {
                    reason: "interrupted (SIGTERM) before it finished".into()
                },
                "{}",
                host.host
            );
            assert_eq!(host.phase, Some(report::Phase::Connect), "{}", host.host);
        }
        assert_eq!(report.retry_hosts(), ["node1", "node2", "node3"]);
    }

    #[tokio::test]
    async fn a_failed_download_fails_the_hosts_that_needed_it_and_is_reported() {
        // --offline with an empty cache: the images cannot be had; the node is not reachable
        // either (nothing listens), so it fails on its own account first or on the download.
        let plan = plan_for(
            "[kube_node]\nnode1 ansible_host=127.0.0.1 ansible_port=1\n",
            &["--offline", "--retries", "1"],
        );
        let connector = Connector::new(crate::ssh::ConnectOptions {
            agent_socket: None,
            default_key_dir: None,
            ..Default::default()
        });
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(cache_dir.path(), None).unwrap();
        let report = run(
            &plan,
            &connector,
            &cache,
            &Progress::new(1),
            std::future::pending(),
        )
        .await;
        assert_eq!(report.interrupted, None);
        let reason = report.download_error.expect("the download failed");
        assert!(reason.contains("is not in the cache"), "{reason}");
        assert_eq!(report.hosts[0].status.name(), "unreachable");
    }
}
