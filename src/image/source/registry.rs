//! Registries as the source: images fetched in-process, with no Docker daemon anywhere, kept
//! in the cache exactly as served, and sent to nodes while their layers still download.
//!
//! For one image and one platform, [`RegistrySource::fetch`] resolves the manifest (choosing
//! the platform's entry of an index), keeps the index, manifest and config, writes the image's
//! record — a node can plan its archive at once — and starts a download for each layer the
//! cache lacks. A layer downloads once, however many images, platforms and nodes want it; it is
//! written into the cache as it arrives, and nodes read it from there (see the cache's pending
//! blobs), so none of them waits for another or for the whole image.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;

use super::SourceError;
use crate::image::ImageRef;
use crate::image::archive::ImageConfig;
use crate::image::cache::{Cache, CacheError, ImageRecord};
use crate::image::manifest::{Descriptor, Manifest};
use crate::image::platform::Platform;
use crate::registry::{Registry, RegistryError};
use crate::retry::{self, Jitter, RetryPolicy};

/// Layer downloads at once, across every image: enough to fill a link, few enough that each
/// layer (the base ones first) arrives early for the nodes already reading it.
const PARALLEL_DOWNLOADS: usize = 4;
/// The largest config accepted (real ones are a few KiB).
const MAX_CONFIG: u64 = 4 << 20;

/// Fetches images from registries into the cache. Dropping it cancels the downloads under way
/// (their temp files are removed).
pub struct RegistrySource {
    registry: Registry,
    cache: Cache,
    retry: RetryPolicy,
    seed: Option<u64>,
    slots: Arc<Semaphore>,
    downloads: Mutex<JoinSet<Result<(), SourceError>>>,
    /// What each reference names (an image manifest, or an index), asked once per run.
    tops: Mutex<HashMap<String, Arc<OnceCell<Manifest>>>>,
}

impl RegistrySource {
    pub fn new(registry: Registry, cache: Cache, retry: RetryPolicy, seed: Option<u64>) -> Self {
        RegistrySource {
            registry,
            cache,
            retry,
            seed,
            slots: Arc::new(Semaphore::new(PARALLEL_DOWNLOADS)),
            downloads: Mutex::new(JoinSet::new()),
            tops: Mutex::new(HashMap::new()),
        }
    }

    /// Start on `reference` before any node has said its platform: resolve what it names and,
    /// when that is a single image (no index to choose from), fetch it for everyone. A failure
    /// is left for the nodes' own fetch to meet (and report).
    pub async fn prefetch(&self, reference: &ImageRef, layers: bool) {
        if let Ok(top) = self.top(reference).await
            && top.index().is_none()
        {
            let any = Platform::new("linux", "amd64", None);
            let _ = self.fetch(reference, &any, layers).await;
        }
    }

    /// The manifest `reference` names, resolved once per run (retried on transient errors).
    async fn top(&self, reference: &ImageRef) -> Result<Manifest, SourceError> {
        let cell = self
            .tops
            .lock()
            .expect("tops")
            .entry(reference.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.retried(reference, || self.registry.resolve(reference)))
            .await
            .cloned()
    }

    /// The image manifest for `platform`: the top itself, or its index's entry for it.
    async fn resolve(
        &self,
        reference: &ImageRef,
        platform: &Platform,
    ) -> Result<(Option<Manifest>, Manifest), SourceError> {
        let top = self.top(reference).await?;
        let Some(index) = top.index() else {
            return Ok((None, top));
        };
        let entry = index.select(platform).ok_or_else(|| {
            let detail = format!(
                "no manifest for {platform} in its index (it has: {})",
                index.platforms().join(", ")
            );
            SourceError::unusable(reference, detail)
        })?;
        let manifest = self
            .retried(reference, || self.registry.manifest(reference, entry))
            .await?;
        if manifest.index().is_some() {
            let detail = format!("its index entry for {platform} is an index itself");
            return Err(SourceError::unusable(reference, detail));
        }
        Ok((Some(top), manifest))
    }

    /// `reference` for `platform`: its manifests and config kept, its record written, and —
    /// unless `layers` is false (`--check`: manifests and sizes only) — downloads started for
    /// the layers the cache lacks. Resolving is retried on transient errors.
    pub async fn fetch(
        &self,
        reference: &ImageRef,
        platform: &Platform,
        layers: bool,
    ) -> Result<ImageRecord, SourceError> {
        let (index, manifest) = self.resolve(reference, platform).await?;
        let image = manifest
            .image()
            .expect("resolve gives an image manifest")
            .clone();
        for manifest in index.iter().chain([&manifest]) {
            self.cache.store_blob(
                &manifest.bytes[..],
                &manifest.digest,
                manifest.bytes.len() as u64,
            )?;
        }
        let config = self.config(reference, &image.config).await?;
        let parsed: ImageConfig = serde_json::from_slice(&config).map_err(|e| {
            let detail = format!(
                "its config {} is not an image config: {e}",
                image.config.digest
            );
            SourceError::unusable(reference, detail)
        })?;
        if parsed.rootfs.diff_ids.len() != image.layers.len() {
            let detail = format!(
                "its manifest lists {} layers but its config {} diff IDs",
                image.layers.len(),
                parsed.rootfs.diff_ids.len()
            );
            return Err(SourceError::unusable(reference, detail));
        }
        let top = index.as_ref().unwrap_or(&manifest);
        let record = ImageRecord {
            id: image.config.digest,
            repo_tags: reference.repo_tag().into_iter().collect(),
            repo_digests: vec![format!("{}@{}", reference.repository(), top.digest)],
            platform: parsed.platform(),
            diff_ids: parsed.rootfs.diff_ids,
            manifest: Some(descriptor(&manifest)),
            index: index.as_ref().map(descriptor),
        };
        self.cache.add_record(record.clone())?;
        if layers {
            for layer in &image.layers {
                self.start_download(reference, layer)?;
            }
        }
        Ok(record)
    }

    /// Wait for every layer download started so far; the first failure, if any.
    pub async fn finish(&self) -> Result<(), SourceError> {
        let mut downloads = std::mem::take(&mut *self.downloads.lock().expect("downloads"));
        let mut first_error = None;
        while let Some(joined) = downloads.join_next().await {
            let result = joined.unwrap_or_else(|e| Err(SourceError::Task(e.to_string())));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn config(
        &self,
        reference: &ImageRef,
        config: &Descriptor,
    ) -> Result<Vec<u8>, SourceError> {
        if let Ok(bytes) = self.cache.read_config(&config.digest) {
            return Ok(bytes);
        }
        if config.size > MAX_CONFIG {
            let detail = format!("its config is {} bytes, too large to be one", config.size);
            return Err(SourceError::unusable(reference, detail));
        }
        let bytes = self
            .retried(reference, || async {
                let mut blob = self.registry.blob(reference, config).await?;
                let mut bytes = Vec::with_capacity(config.size as usize);
                while let Some(chunk) = blob.next().await {
                    bytes.extend_from_slice(&chunk?);
                }
                Ok(bytes)
            })
            .await?;
        self.cache.store_config(&bytes, &config.digest)?;
        Ok(bytes)
    }

    /// Download `layer` into the cache in the background, unless it is there or on its way.
    fn start_download(&self, reference: &ImageRef, layer: &Descriptor) -> Result<(), CacheError> {
        let Some(writer) = self.cache.begin_blob(layer)? else {
            return Ok(());
        };
        let (registry, cache, retry, slots) = (
            self.registry.clone(),
            self.cache.clone(),
            self.retry,
            self.slots.clone(),
        );
        let (reference, layer, seed) = (reference.clone(), layer.clone(), self.seed);
        self.downloads.lock().expect("downloads").spawn(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            download(&registry, &cache, &reference, &layer, writer, retry, seed).await
        });
        Ok(())
    }

    async fn retried<T, F, Fut>(
        &self,
        reference: &ImageRef,
        mut operation: F,
    ) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut jitter = Jitter::new(self.seed, &reference.to_string());
        let policy = self.retry;
        let warn = |attempt, e: &RegistryError, delay: std::time::Duration| {
            tracing::warn!(
                "{reference}: attempt {attempt}/{} failed: {e}; retrying in {}s",
                policy.attempts,
                delay.as_secs()
            );
        };
        retry::retry(policy, &mut jitter, warn, |_| operation())
            .await
            .result
            .map_err(SourceError::from)
    }
}

impl Drop for RegistrySource {
    fn drop(&mut self) {
        self.downloads.lock().expect("downloads").abort_all();
    }
}

/// One layer into the cache, retried on transient errors; readers of a failed attempt fail
/// (their node tries again later), and a new attempt starts from the first byte.
async fn download(
    registry: &Registry,
    cache: &Cache,
    reference: &ImageRef,
    layer: &Descriptor,
    mut writer: crate::image::cache::BlobWriter,
    policy: RetryPolicy,
    seed: Option<u64>,
) -> Result<(), SourceError> {
    let mut jitter = Jitter::new(seed, &layer.digest.to_string());
    for attempt in 1..=policy.attempts {
        match copy(registry, reference, layer, &mut writer).await {
            Ok(()) => return Ok(writer.finish()?),
            Err(Copied::Cache(e)) => {
                writer.fail(e.to_string());
                return Err(e.into());
            }
            Err(Copied::Registry(e)) => {
                let transient = retry::Transient::is_transient(&e);
                writer.fail(e.to_string());
                if !transient || attempt == policy.attempts {
                    return Err(e.into());
                }
                let delay = policy.delay(&mut jitter);
                tracing::warn!(
                    "{reference}: layer {}: attempt {attempt}/{} failed: {e}; retrying in {}s",
                    layer.digest,
                    policy.attempts,
                    delay.as_secs()
                );
                tokio::time::sleep(delay).await;
                writer = match cache.begin_blob(layer)? {
                    Some(writer) => writer,
                    None => return Ok(()), // fetched meanwhile (another run into this cache)
                };
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Why a download attempt stopped: the registry's side (maybe worth retrying) or ours.
enum Copied {
    Registry(RegistryError),
    Cache(CacheError),
}

async fn copy(
    registry: &Registry,
    reference: &ImageRef,
    layer: &Descriptor,
    writer: &mut crate::image::cache::BlobWriter,
) -> Result<(), Copied> {
    let mut blob = registry
        .blob(reference, layer)
        .await
        .map_err(Copied::Registry)?;
    while let Some(chunk) = blob.next().await {
        let chunk = chunk.map_err(Copied::Registry)?;
        writer.write(&chunk).map_err(Copied::Cache)?;
    }
    Ok(())
}

fn descriptor(manifest: &Manifest) -> Descriptor {
    Descriptor {
        media_type: manifest.media_type.as_str().to_string(),
        digest: manifest.digest,
        size: manifest.bytes.len() as u64,
        platform: None,
    }
}
