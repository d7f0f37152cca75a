//! The images of a push, as each node needs them: fetched once per platform, shared by every
//! node of that platform, while the nodes connect.
//!
//! - From registries (the localhost delegate's default): each platform's manifests and configs
//!   are fetched the first time a node of that platform asks; their layers download in the
//!   background into the cache, and nodes are sent them while they arrive.
//! - From a daemon (the localhost Docker with `--source docker`, or a remote delegate's Docker or
//!   containerd): one pull and one `docker save` (`ctr images export`) for the run, of the plan's
//!   platform (the delegate's own, or `--platform`), for every node.
//! - `--offline`: the cache alone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::{LocalBoxFuture, Shared};

use super::decide::WantedImage;
use super::plan::{Delegate, LocalSource, Plan};
use super::progress::Progress;
use crate::facts::{self, FactsError};
use crate::image::platform::Platform;
use crate::image::source::localhost::{LocalDaemon, ProgressHook, PullEvent};
use crate::image::source::registry::RegistrySource;
use crate::image::source::{self, FetchReport, SourceError};
use crate::image::{Cache, CacheError, Digest, ImageRecord, ImageRef, LayerBlob};
use crate::runtime::Runtime;
use crate::runtime::delegate::{RemoteDelegate, Unsupported};
use crate::ssh::{Become, Connector, Session, SshError};

/// The images for the nodes of one platform, once fetched; the error is the fetch's, as text,
/// shared by every node that waited.
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

/// Where the images come from, for one run.
enum Origin<'a> {
    /// One fetch for every node: a Docker daemon, or the cache alone.
    Once(Wanted<'a>),
    /// Registries: one fetch per platform.
    Registry {
        source: Rc<RegistrySource>,
        by_platform: RefCell<HashMap<Platform, Wanted<'a>>>,
    },
}

/// The images of the plan, for every platform the nodes ask for.
pub struct Images<'a> {
    plan: &'a Plan,
    cache: &'a Cache,
    origin: Origin<'a>,
}

impl<'a> Images<'a> {
    pub fn new(
        plan: &'a Plan,
        connector: &'a Connector,
        cache: &'a Cache,
        progress: &'a Progress,
    ) -> Images<'a> {
        let origin = match (&plan.delegate, &plan.local_source) {
            (Delegate::Localhost, LocalSource::Registry(registry)) if !plan.offline => {
                let (retry, seed) = (plan.settings.retry, plan.settings.seed);
                Origin::Registry {
                    source: Rc::new(RegistrySource::new(
                        registry.clone(),
                        cache.clone(),
                        retry,
                        seed,
                    )),
                    by_platform: RefCell::new(HashMap::new()),
                }
            }
            _ => Origin::Once(shared(async move {
                let fetched = from_daemon(plan, connector, cache, progress).await?;
                wanted_images(plan, cache, &fetched)
            })),
        };
        Images {
            plan,
            cache,
            origin,
        }
    }

    /// The images for a node of `platform` (ignored when one fetch serves every node).
    pub fn for_platform(&self, platform: &Platform) -> Wanted<'a> {
        match &self.origin {
            Origin::Once(wanted) => wanted.clone(),
            Origin::Registry {
                source,
                by_platform,
            } => {
                let mut by_platform = by_platform.borrow_mut();
                by_platform
                    .entry(platform.normalized())
                    .or_insert_with(|| {
                        let (plan, cache, source, platform) =
                            (self.plan, self.cache, source.clone(), platform.clone());
                        shared(async move {
                            let mut wanted = Vec::new();
                            for reference in &plan.images {
                                let record: ImageRecord = source
                                    .fetch(reference, &platform, !plan.settings.check)
                                    .await?;
                                wanted.push(wanted_image(cache, reference, record)?);
                            }
                            Ok(wanted)
                        })
                    })
                    .clone()
            }
        }
    }

    /// The fetch that serves every node, when there is one: it runs while the nodes connect,
    /// before any asks (a remote delegate reads its own facts after it).
    pub fn once(&self) -> Option<Wanted<'a>> {
        match &self.origin {
            Origin::Once(wanted) => Some(wanted.clone()),
            Origin::Registry { .. } => None,
        }
    }

    /// Once the nodes are done: the layer downloads finished, and the first failure of any
    /// fetch, for the recap.
    pub async fn finish(&self) -> Option<String> {
        match &self.origin {
            Origin::Once(wanted) => wanted.clone().await.err().map(|e| e.to_string()),
            Origin::Registry {
                source,
                by_platform,
            } => {
                let fetches: Vec<Wanted<'a>> = by_platform.borrow().values().cloned().collect();
                for wanted in fetches {
                    if let Err(e) = wanted.await {
                        return Some(e.to_string());
                    }
                }
                source.finish().await.err().map(|e| e.to_string())
            }
        }
    }
}

fn shared<'a>(
    fetch: impl Future<Output = Result<Vec<WantedImage>, FetchError>> + 'a,
) -> Wanted<'a> {
    fetch
        .map(|result| result.map(Arc::new).map_err(|e| Arc::new(e.to_string())))
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
            Ok(wanted_image(cache, reference, record)?)
        })
        .collect()
}

/// An image as the nodes' runtimes weigh it: with the blob each layer is sent as, and the
/// registry digest an OCI archive names it by.
fn wanted_image(
    cache: &Cache,
    reference: &ImageRef,
    record: ImageRecord,
) -> Result<WantedImage, CacheError> {
    let blobs = cache.layer_blobs(&record)?;
    Ok(WantedImage {
        reference: reference.clone(),
        registry_digest: registry_digest(&record, &blobs, reference),
        blobs: blobs.iter().map(|blob| blob.descriptor.digest).collect(),
        platform: record.platform.clone(),
        record,
    })
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
    if !blobs.iter().all(LayerBlob::is_served) {
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

/// Fill the cache from the delegate's Docker daemon, or (`--offline`) only check that it has
/// every image.
async fn from_daemon(
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
    let platform = plan.platform.as_ref().map(Platform::to_string);
    let report = match &plan.delegate {
        Delegate::Localhost => {
            let daemon = LocalDaemon::connect()?
                .with_platform(platform)
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
    become_: Option<&Become>,
    cache: &Cache,
) -> Result<FetchReport, FetchError> {
    let facts = facts::gather(session, &plan.settings.local_release_dir, become_).await?;
    let delegate = session.host().to_string();
    let unready = |reason: String| FetchError::DelegateRuntime {
        delegate: delegate.clone(),
        reason,
    };
    let runtime = plan
        .delegate_runtime
        .or_else(|| Runtime::detect(&facts))
        .ok_or_else(|| unready("no container runtime found (docker or containerd's ctr)".into()))?;
    runtime.ready(&facts).map_err(|e| unready(e.to_string()))?;
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
