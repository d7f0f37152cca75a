//! The images of a push, as each node needs them: fetched once per platform, shared by every
//! node of that platform, while the nodes connect.
//!
//! - From registries (the localhost delegate's default): each platform's manifests and configs
//!   are fetched the first time a node of that platform asks; their layers download in the
//!   background into the cache, and nodes are sent them while they arrive. What no registry can
//!   give (a `localhost/...` name, or an image its registry does not have) is taken from the
//!   Docker daemon next to dropship when it holds it, unless `--source registry`.
//! - From a daemon (the localhost Docker with `--source docker`, or a remote delegate's Docker or
//!   containerd): one pull and one `docker save` (`ctr images export`) for the run, of the
//!   plan's platform (the delegate's own, or `--platform`), for every node.
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
use crate::image::platform::Platform;
use crate::image::source::localhost::{LocalDaemon, ProgressHook, PullEvent};
use crate::image::source::registry::RegistrySource;
use crate::image::source::{self, FetchReport, SourceError};
use crate::image::{Cache, CacheError, ImageRecord, ImageRef};

use crate::runtime::delegate::{DelegateError, RemoteDelegate};
use crate::ssh::{Connector, SshError};

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
    #[error(transparent)]
    RemoteDelegate(#[from] DelegateError),
    #[error("{0}")]
    Local(Arc<String>),
}

/// Where the images come from, for one run.
enum Origin<'a> {
    /// One fetch for every node: a Docker daemon, or the cache alone.
    Once(Wanted<'a>),
    /// Registries: one fetch per platform.
    Registry {
        source: Rc<RegistrySource>,
        /// For what no registry has, when the plan allows it.
        local: Option<Rc<LocalImages<'a>>>,
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
            (Delegate::Localhost, LocalSource::Registry { registry, fallback })
                if !plan.offline =>
            {
                let (retry, seed) = (plan.settings.retry, plan.settings.seed);
                let source = RegistrySource::new(registry.clone(), cache.clone(), retry, seed);
                let local = fallback.then(|| {
                    Rc::new(LocalImages {
                        plan,
                        cache,
                        progress,
                        fetched: RefCell::new(HashMap::new()),
                    })
                });
                Origin::Registry {
                    source: Rc::new(source),
                    local,
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
        let Origin::Registry {
            source,
            local,
            by_platform,
        } = &self.origin
        else {
            return self.once().expect("one fetch serves every node");
        };
        let (plan, cache) = (self.plan, self.cache);
        let (source, local, platform) = (source.clone(), local.clone(), platform.clone());
        by_platform
            .borrow_mut()
            .entry(platform.normalized())
            .or_insert_with(|| {
                shared(async move {
                    let layers = !plan.settings.check;
                    let fetches = plan.images.iter().map(|reference| async {
                        let local = local.as_deref();
                        let record =
                            registry_image(&source, local, reference, &platform, layers).await?;
                        Ok::<_, FetchError>(WantedImage::from_cache(cache, reference, record)?)
                    });
                    futures::future::try_join_all(fetches).await
                })
            })
            .clone()
    }

    /// The fetch that serves every node, when there is one (a remote delegate reads its own
    /// facts after it).
    pub fn once(&self) -> Option<Wanted<'a>> {
        match &self.origin {
            Origin::Once(wanted) => Some(wanted.clone()),
            Origin::Registry { .. } => None,
        }
    }

    /// What can be fetched before any node says its platform, run while the nodes connect:
    /// a daemon's whole download; from registries, each image that has only one platform.
    pub async fn early(&self) {
        match &self.origin {
            Origin::Once(wanted) => {
                let _ = wanted.clone().await;
            }
            Origin::Registry { source, .. } => {
                let layers = !self.plan.settings.check;
                let prefetches = (self.plan.images.iter())
                    .filter(|r| !has_no_registry(r))
                    .map(|r| source.prefetch(r, layers));
                futures::future::join_all(prefetches).await;
            }
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
                ..
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

type SharedRecord<'a> = Shared<LocalBoxFuture<'a, Result<ImageRecord, Arc<String>>>>;

/// Images taken from the Docker daemon next to dropship, each asked for once.
struct LocalImages<'a> {
    plan: &'a Plan,
    cache: &'a Cache,
    progress: &'a Progress,
    fetched: RefCell<HashMap<String, SharedRecord<'a>>>,
}

impl<'a> LocalImages<'a> {
    fn fetch(&self, reference: &ImageRef) -> SharedRecord<'a> {
        let (plan, cache, progress) = (self.plan, self.cache, self.progress);
        let reference = reference.clone();
        self.fetched
            .borrow_mut()
            .entry(reference.to_string())
            .or_insert_with(|| {
                async move {
                    let daemon =
                        LocalDaemon::connect()?.with_progress(pull_progress(progress.clone()));
                    let (retry, seed) = (plan.settings.retry, plan.settings.seed);
                    let refs = std::slice::from_ref(&reference);
                    let fetched =
                        source::fetch(&daemon, cache, refs, plan.pull, retry, seed).await?;
                    let id = fetched.images[0].id;
                    cache.record(&id)?.ok_or(FetchError::Lost {
                        reference: reference.to_string(),
                        id: id.to_string(),
                    })
                }
                .map(|result: Result<ImageRecord, FetchError>| {
                    result.map_err(|e| Arc::new(e.to_string()))
                })
                .boxed_local()
                .shared()
            })
            .clone()
    }
}

/// Names no registry can answer for: `localhost/...` (podman's and buildah's local builds).
fn has_no_registry(reference: &ImageRef) -> bool {
    reference.domain() == "localhost"
}

/// An image from `source`, else (when allowed and its registry does not have it) from the
/// Docker daemon next to dropship.
async fn registry_image(
    source: &RegistrySource,
    local: Option<&LocalImages<'_>>,
    reference: &ImageRef,
    platform: &Platform,
    layers: bool,
) -> Result<ImageRecord, FetchError> {
    if let Some(local) = local.filter(|_| has_no_registry(reference)) {
        return local.fetch(reference).await.map_err(FetchError::Local);
    }
    match (source.fetch(reference, platform, layers).await, local) {
        (Ok(record), _) => Ok(record),
        (Err(e), Some(local)) if e.is_absent() => match local.fetch(reference).await {
            Ok(record) => {
                tracing::warn!("{reference}: {e}; using the local Docker daemon's image");
                Ok(record)
            }
            Err(_) => Err(e.into()),
        },
        (Err(e), _) => Err(e.into()),
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
            Ok(WantedImage::from_cache(cache, reference, record)?)
        })
        .collect()
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
            let report = async {
                let daemon = RemoteDelegate::open(
                    &session,
                    host.become_.as_ref(),
                    plan.platform.clone(),
                    plan.delegate_runtime,
                    &plan.settings.local_release_dir,
                )
                .await?;
                Ok::<_, FetchError>(
                    source::fetch(&daemon, cache, &plan.images, plan.pull, retry, seed).await?,
                )
            }
            .await;
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
