//! Filling the cache from the download delegate, once per run, while the nodes connect.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::{LocalBoxFuture, Shared};

use super::decide::WantedImage;
use super::plan::{Delegate, Plan};
use super::progress::Progress;
use crate::facts::{self, FactsError};
use crate::image::source::localhost::{LocalDaemon, ProgressHook, PullEvent};
use crate::image::source::{self, FetchReport, SourceError};
use crate::image::{Cache, CacheError};
use crate::runtime::Runtime;
use crate::runtime::delegate::{RemoteDelegate, Unsupported};
use crate::ssh::{Connector, Session, SshError};

/// The images to push, once the delegate has filled the cache. Nodes connect and gather their
/// facts while the download runs, and wait for this only when they need it; the error is the
/// download's, as text, shared by every node that waited.
pub type Wanted<'a> = Shared<LocalBoxFuture<'a, Result<Arc<Vec<WantedImage>>, Arc<String>>>>;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("reaching the download delegate {delegate}: {source}")]
    Delegate {
        delegate: String,
        source: Box<SshError>,
    },
    #[error("{reference}: the cache lost image {id} while pushing")]
    Lost { reference: String, id: String },
    #[error("the download delegate: {0}")]
    DelegateFacts(#[from] FactsError),
    #[error("the download delegate {delegate}: {reason}")]
    DelegateRuntime { delegate: String, reason: String },
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

/// The download of the plan's images, started on first poll and shared by every node.
pub fn wanted<'a>(
    plan: &'a Plan,
    connector: &'a Connector,
    cache: &'a Cache,
    progress: &'a Progress,
) -> Wanted<'a> {
    async move {
        let fetched = fetch(plan, connector, cache, progress).await?;
        wanted_images(plan, cache, &fetched)
    }
    .map(|result: Result<_, FetchError>| result.map(Arc::new).map_err(|e| Arc::new(e.to_string())))
    .boxed_local()
    .shared()
}

/// The images the plan names, as the cache now holds them.
fn wanted_images(
    plan: &Plan,
    cache: &Cache,
    fetched: &FetchReport,
) -> Result<Vec<WantedImage>, FetchError> {
    plan.images
        .iter()
        .zip(&fetched.images)
        .map(|(reference, image)| {
            let record = cache.record(&image.id)?.ok_or_else(|| FetchError::Lost {
                reference: reference.to_string(),
                id: image.id.to_string(),
            })?;
            Ok(WantedImage {
                reference: reference.clone(),
                platform: platform_of(&cache.read_config(&record.id)?),
                record,
                // Known once the cache keeps the blobs as served (a registry's manifest).
                blobs: Vec::new(),
                registry_digest: None,
            })
        })
        .collect()
}

/// `os/arch[/variant]` as an image config states it.
fn platform_of(config: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Config {
        os: Option<String>,
        architecture: Option<String>,
        variant: Option<String>,
    }
    let config: Config = serde_json::from_slice(config).ok()?;
    let mut platform = format!("{}/{}", config.os?, config.architecture?);
    if let Some(variant) = config.variant.filter(|v| !v.is_empty()) {
        platform = format!("{platform}/{variant}");
    }
    Some(platform)
}

/// Fill the cache from the delegate, or (`--offline`) only check that it has every image.
async fn fetch(
    plan: &Plan,
    connector: &Connector,
    cache: &Cache,
    progress: &Progress,
) -> Result<FetchReport, FetchError> {
    if plan.offline {
        return Ok(source::resolve_offline(cache, &plan.images)?);
    }
    let retry = plan.settings.retry;
    let seed = plan.settings.seed;
    let report = match &plan.delegate {
        Delegate::Localhost => {
            let daemon = LocalDaemon::connect()?
                .with_platform(plan.platform.clone())
                .with_progress(pull_progress(progress.clone()));
            source::fetch(&daemon, cache, &plan.images, plan.pull, retry, seed).await?
        }
        Delegate::Host(host) => {
            let session = connector
                .connect(host)
                .await
                .map_err(|source| FetchError::Delegate {
                    delegate: host.name().to_string(),
                    source: Box::new(source),
                })?;
            let report = remote_fetch(plan, &session, host.become_.as_ref(), cache).await;
            session.close().await;
            report?
        }
    };
    Ok(report)
}

/// Pull and export on a remote delegate with its runtime (the inventory's, else its facts').
async fn remote_fetch(
    plan: &Plan,
    session: &Session,
    become_: Option<&crate::ssh::Become>,
    cache: &Cache,
) -> Result<FetchReport, FetchError> {
    let facts = facts::gather(session, &plan.settings.local_release_dir, become_).await?;
    let delegate = session.host().to_string();
    let runtime = plan
        .delegate_runtime
        .or_else(|| Runtime::detect(&facts))
        .ok_or_else(|| FetchError::DelegateRuntime {
            delegate: delegate.clone(),
            reason: "no container runtime found (docker or containerd's ctr)".into(),
        })?;
    runtime
        .ready(&facts)
        .map_err(|unready| FetchError::DelegateRuntime {
            delegate,
            reason: unready.to_string(),
        })?;
    let daemon = RemoteDelegate::new(session, become_, plan.platform.clone(), runtime, &facts)?;
    let (retry, seed) = (plan.settings.retry, plan.settings.seed);
    Ok(source::fetch(&daemon, cache, &plan.images, plan.pull, retry, seed).await?)
}

/// The daemon's own milestones of each pull ("Pulling from …", "Digest: …", "Status: …"),
/// not its per-layer byte counts.
fn pull_progress(progress: Progress) -> ProgressHook {
    Arc::new(move |event: &PullEvent<'_>| {
        let milestone = event.layer.is_none() || event.status.starts_with("Pulling from");
        if milestone && event.current.is_none() {
            progress.step(
                "localhost",
                &format!("{}: {}", event.reference, event.status),
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_is_the_configs() {
        let config = br#"{"architecture":"arm64","os":"linux","variant":"v8","rootfs":{}}"#;
        assert_eq!(platform_of(config).as_deref(), Some("linux/arm64/v8"));
        let config = br#"{"architecture":"amd64","os":"linux","variant":""}"#;
        assert_eq!(platform_of(config).as_deref(), Some("linux/amd64"));
        assert_eq!(platform_of(br#"{"os":"linux"}"#), None);
        assert_eq!(platform_of(b"not json"), None);
    }
}
