//! Filling the cache from the download delegate, once per run, while the nodes connect.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::{LocalBoxFuture, Shared};

use super::decide::WantedImage;
use super::plan::{Delegate, Plan};
use super::progress::Progress;
use crate::facts::{self, FactsError};
use crate::image::cache::Stored;
use crate::image::platform::Platform;
use crate::image::source::localhost::{LocalDaemon, ProgressHook, PullEvent};
use crate::image::source::{self, FetchReport, SourceError};
use crate::image::{Cache, CacheError, Digest, ImageRecord, ImageRef, LayerBlob};
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
            let blobs = cache.layer_blobs(&record)?;
            Ok(WantedImage {
                reference: reference.clone(),
                registry_digest: registry_digest(&record, &blobs, reference),
                blobs: blobs.iter().map(|blob| blob.descriptor.digest).collect(),
                platform: record.platform.clone(),
                record,
            })
        })
        .collect()
}

/// The registry digest an OCI archive names the image by as `reference`'s `repo@digest`: the
/// top of what the registry served (its index, else its manifest), when every layer is sent
/// as served and the image was pulled under that repository.
fn registry_digest(
    record: &ImageRecord,
    blobs: &[LayerBlob],
    reference: &ImageRef,
) -> Option<Digest> {
    record.manifest.as_ref()?;
    if !blobs.iter().all(|blob| blob.stored == Stored::Served) {
        return None;
    }
    let top = record.index.as_ref().or(record.manifest.as_ref())?.digest;
    let top_text = top.to_string();
    record
        .repo_digests
        .iter()
        .filter_map(|name| ImageRef::parse(name).ok())
        .any(|name| {
            name.repository() == reference.repository() && name.digest() == Some(top_text.as_str())
        })
        .then_some(top)
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
            delegate: delegate.clone(),
            reason: unready.to_string(),
        })?;
    let platform = match &plan.platform {
        Some(text) => Some(
            Platform::parse(text).map_err(|e| FetchError::DelegateRuntime {
                delegate: delegate.clone(),
                reason: e.to_string(),
            })?,
        ),
        None => None,
    };
    let daemon = RemoteDelegate::new(session, become_, platform, runtime, &facts)?;
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
