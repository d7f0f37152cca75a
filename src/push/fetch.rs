//! Filling the cache from the download delegate, once per run, while the nodes connect.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::{LocalBoxFuture, Shared};

use super::decide::WantedImage;
use super::plan::{Delegate, Plan};
use super::progress::Progress;
use crate::image::source::localhost::{LocalDaemon, ProgressHook, PullEvent};
use crate::image::source::remote::RemoteDaemon;
use crate::image::source::{self, FetchReport, SourceError};
use crate::image::{Cache, CacheError};
use crate::ssh::{Connector, SshError};

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
                record,
            })
        })
        .collect()
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
            let daemon = RemoteDaemon::new(&session, host.become_.as_ref(), plan.platform.clone());
            let report = source::fetch(&daemon, cache, &plan.images, plan.pull, retry, seed).await;
            session.close().await;
            report?
        }
    };
    Ok(report)
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
