//! The local image cache: content-addressed, layer-aware, shared safely between runs.
//!
//! Layout under the cache root (next to, never inside, Kubespray's own `images/` folder):
//!
//! ```text
//! blobs/sha256/<hex>            blobs exactly as a registry served them (see `blob`): manifests,
//!                               indexes, compressed layers
//! layers/<diff-id-hex>.zst      layers that came uncompressed (`docker save`), compressed once
//!                               (see `layer`), stored once for all images
//! configs/<image-id-hex>.json   image config JSON; its sha256 is the file name
//! manifests/<image-id-hex>.json our record: repo tags, repo digests, layer order, and the
//!                               registry's manifest (and index) when the image came from one
//! corrupt/                      objects that failed a check, kept for inspection
//! lock, index.lock              flock files (see `Locks`)
//! ```
//!
//! An image is present when its record, its config and one blob of each layer exist (the
//! served blob, else the layer object). Records are written last, so an interrupted ingest
//! leaves only unreferenced objects for `prune`.

mod atomic;
mod blob;
mod export;
mod ingest;
mod layer;
mod layout;
mod lock;
mod maintenance;
mod pending;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use export::{ArchiveFormat, ArchiveLayout, ArchivePlan, ArchiveReader, layers_to_omit};
pub use ingest::{IngestReport, IngestedImage};
pub use layer::LayerInfo;
pub use maintenance::{PruneReport, VerifyReport};
pub use pending::BlobWriter;

use super::compression::DEFAULT_ZSTD_LEVEL;
use super::digest::{DiffId, Digest, ImageId};
use super::manifest::Descriptor;
use super::platform::Platform;
use super::reference::{ImageRef, RefError};
use lock::Locks;

/// Everything that can go wrong with the cache. Each variant names the object or file.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{what} is corrupt ({path}): {detail}; it was moved aside, pull or import the image again"
    )]
    Corrupt {
        what: String,
        path: PathBuf,
        detail: String,
    },
    #[error("{what} is missing from the cache ({path}); pull or import the image again")]
    Missing { what: String, path: PathBuf },
    #[error("{source_name}: not a usable docker-archive: {detail}")]
    BadArchive { source_name: String, detail: String },
    #[error(
        "image {reference} is not in the cache {cache}; pull it (without --offline) or `dropship cache import` it"
    )]
    NotCached { reference: String, cache: PathBuf },
    #[error(transparent)]
    Reference(#[from] RefError),
    #[error("the archive writer stopped unexpectedly: {0}")]
    Writer(String),
}

impl CacheError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
        move |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What we keep per image besides its config and layers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    pub id: ImageId,
    /// Tags in the form `docker save` writes them (`nginx:1.25`, `reg:5000/app:v1`).
    pub repo_tags: Vec<String>,
    /// `repo@sha256:...` names the image was pulled by.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Layer diff IDs, base first (the config's `rootfs.diff_ids`).
    pub diff_ids: Vec<DiffId>,
    /// The registry's manifest of this image, a blob of the cache, when the image came from a
    /// registry (or an export that kept it); `None` for images from `docker save`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Descriptor>,
    /// The multi-platform index `manifest` was chosen from, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Descriptor>,
    /// What the image was built for, from its config; `None` in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The blob a node is sent for one layer of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    pub diff_id: DiffId,
    /// Its media type, digest and size as the node will see them.
    pub descriptor: Descriptor,
    pub(crate) stored: Stored,
}

impl LayerBlob {
    /// The layer's uncompressed size, when the cache knows it (its layer object does).
    pub fn raw_size(&self) -> Option<u64> {
        match &self.stored {
            Stored::Object(info) => Some(info.raw_size),
            Stored::Served => None,
        }
    }

    /// Whether the blob is the one its registry served (so its digest is the registry's).
    pub fn is_served(&self) -> bool {
        self.stored == Stored::Served
    }
}

/// Where a layer's blob lives in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// As served, under `blobs/`.
    Served,
    /// A layer object under `layers/`: its zstd data frames are the blob
    /// (`application/vnd.oci.image.layer.v1.tar+zstd`).
    Object(LayerInfo),
}

/// The media type of a layer object sent as a blob.
pub const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

impl ImageRecord {
    /// Whether `wanted` names this image: an image ID (full or 12+ hex digits), a tag or a digest.
    pub fn answers_to(&self, wanted: &str) -> bool {
        if let Some(hex) = id_prefix(wanted)
            && self.id.hex().starts_with(&hex.to_ascii_lowercase())
        {
            return true;
        }
        match ImageRef::parse(wanted) {
            Ok(reference) => self
                .repo_tags
                .iter()
                .chain(&self.repo_digests)
                .any(|name| reference.matches(name)),
            Err(_) => false,
        }
    }
}

/// The hex digits of `wanted` when it looks like an image ID (12 or more hex digits, with or
/// without `sha256:`), as `docker` accepts them.
fn id_prefix(wanted: &str) -> Option<&str> {
    let hex = wanted.strip_prefix("sha256:").unwrap_or(wanted);
    (hex.len() >= 12 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(hex)
}

/// A handle on a cache directory; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    zstd_level: i32,
    locks: Locks,
    /// Objects whose full sha256 was checked by this process (see `export`).
    verified: Mutex<HashSet<Digest>>,
    /// Blobs being downloaded, readable meanwhile (see `pending`).
    pending: pending::Pending,
}

const SUBDIRS: [&str; 5] = ["blobs/sha256", "layers", "configs", "manifests", "corrupt"];

impl Cache {
    /// Where the cache lives when neither `--cache-dir` nor `download_cache_dir` says.
    pub fn default_dir() -> PathBuf {
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("dropship")
    }

    /// The cache root: `--cache-dir`, else Kubespray's `download_cache_dir`, else the default.
    pub fn resolve_dir(flag: Option<&Path>, download_cache_dir: Option<&Path>) -> PathBuf {
        flag.or(download_cache_dir)
            .map_or_else(Cache::default_dir, Path::to_path_buf)
    }

    /// Open (creating if needed) the cache at `root`, compressing new layers at `zstd_level`.
    pub fn open(root: &Path, zstd_level: Option<i32>) -> Result<Cache, CacheError> {
        for sub in SUBDIRS {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(CacheError::io(&dir))?;
        }
        let locks = Locks::open(root)?;
        Ok(Cache {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                zstd_level: zstd_level.unwrap_or(DEFAULT_ZSTD_LEVEL),
                locks,
                verified: Mutex::new(HashSet::new()),
                pending: pending::Pending::default(),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn layer_path(&self, diff_id: &DiffId) -> PathBuf {
        self.inner
            .root
            .join("layers")
            .join(format!("{}.zst", diff_id.hex()))
    }

    fn config_path(&self, id: &ImageId) -> PathBuf {
        self.inner
            .root
            .join("configs")
            .join(format!("{}.json", id.hex()))
    }

    fn record_path(&self, id: &ImageId) -> PathBuf {
        self.inner
            .root
            .join("manifests")
            .join(format!("{}.json", id.hex()))
    }

    /// All image records, sorted by first tag then ID.
    pub fn images(&self) -> Result<Vec<ImageRecord>, CacheError> {
        let dir = self.inner.root.join("manifests");
        let mut records = Vec::new();
        for name in object_names(&dir, ".json")? {
            let Ok(id) = Digest::parse(&name) else {
                continue;
            };
            if let Some(record) = self.record(&id)? {
                records.push(record);
            }
        }
        records.sort_by(|a, b| (a.repo_tags.first(), a.id).cmp(&(b.repo_tags.first(), b.id)));
        Ok(records)
    }

    pub fn record(&self, id: &ImageId) -> Result<Option<ImageRecord>, CacheError> {
        let path = self.record_path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CacheError::Io { path, source: e }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CacheError::Corrupt {
                what: format!("image record {id}"),
                path,
                detail: e.to_string(),
            })
    }

    /// The cached image a reference (tag, digest or ID) names, if any.
    /// A name that is neither an image ID nor a valid reference is an error.
    pub fn find(&self, wanted: &str) -> Result<Option<ImageRecord>, CacheError> {
        if id_prefix(wanted).is_none() {
            ImageRef::parse(wanted)?;
        }
        Ok(self
            .images()?
            .into_iter()
            .find(|record| record.answers_to(wanted)))
    }

    /// Like [`Cache::find`], but a missing image is an error telling the user what to do.
    pub fn require(&self, wanted: &str) -> Result<ImageRecord, CacheError> {
        self.find(wanted)?
            .filter(|record| self.is_complete(&record.id))
            .ok_or_else(|| CacheError::NotCached {
                reference: wanted.to_string(),
                cache: self.inner.root.clone(),
            })
    }

    /// Whether the image's record, config and a blob of every layer are present (checksums are
    /// checked when objects are read, not here); a blob still downloading is not. The source
    /// skips `docker save` for complete images.
    pub fn is_complete(&self, id: &ImageId) -> bool {
        let Ok(Some(record)) = self.record(id) else {
            return false;
        };
        self.config_path(id).is_file()
            && self.layer_blobs(&record).is_ok_and(|blobs| {
                blobs.iter().all(|blob| match &blob.stored {
                    Stored::Served => self.has_blob(&blob.descriptor.digest),
                    Stored::Object(_) => true,
                })
            })
    }

    /// The blob of each layer of `record`, base first: the registry's blob when the image came
    /// from one and the cache holds it, is downloading it, or has no layer object instead (then
    /// sending it fails until it is fetched: a plan can be made before a layer arrives); else
    /// the layer object.
    pub fn layer_blobs(&self, record: &ImageRecord) -> Result<Vec<LayerBlob>, CacheError> {
        let served = match &record.manifest {
            Some(manifest) => self.image_manifest(manifest)?.layers,
            None => Vec::new(),
        };
        record
            .diff_ids
            .iter()
            .enumerate()
            .map(|(i, diff_id)| {
                let held = |b: &&Descriptor| {
                    self.has_blob(&b.digest)
                        || self.is_pending(&b.digest)
                        || !self.layer_path(diff_id).is_file()
                };
                if let Some(blob) = served.get(i).filter(held) {
                    return Ok(LayerBlob {
                        diff_id: *diff_id,
                        descriptor: blob.clone(),
                        stored: Stored::Served,
                    });
                }
                let info = self.layer(diff_id)?;
                Ok(LayerBlob {
                    diff_id: *diff_id,
                    descriptor: Descriptor {
                        media_type: ZSTD_LAYER.to_string(),
                        digest: info.compressed_digest,
                        size: info.compressed_size,
                        platform: None,
                    },
                    stored: Stored::Object(info),
                })
            })
            .collect()
    }

    /// Give a cached image more names: `repo_tags` move to it from any other image (as in
    /// Docker), `repo_digests` (`repo@sha256:...`) let it be found by digest offline.
    pub fn add_names(
        &self,
        id: &ImageId,
        repo_tags: &[String],
        repo_digests: &[String],
    ) -> Result<(), CacheError> {
        let Some(mut record) = self.record(id)? else {
            return Ok(());
        };
        let known = |have: &[String], names: &[String]| names.iter().all(|n| have.contains(n));
        if known(&record.repo_tags, repo_tags) && known(&record.repo_digests, repo_digests) {
            return Ok(());
        }
        record.repo_tags.extend(repo_tags.iter().cloned());
        record.repo_digests.extend(repo_digests.iter().cloned());
        self.commit_record(record)
    }

    fn write_record(&self, record: &ImageRecord) -> Result<(), CacheError> {
        let path = self.record_path(&record.id);
        let bytes = serde_json::to_vec_pretty(record).expect("records serialise");
        atomic::write_file(&path, &bytes).map_err(CacheError::io(&path))
    }

    /// Move a damaged object out of the way so the next pull fetches it again.
    fn quarantine(&self, path: &Path) {
        let Some(name) = path.file_name() else { return };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let target = self
            .inner
            .root
            .join("corrupt")
            .join(format!("{stamp}-{}", name.to_string_lossy()));
        match fs::rename(path, &target) {
            Ok(()) => tracing::warn!(
                "moved corrupt object {} to {}",
                path.display(),
                target.display()
            ),
            Err(e) => tracing::warn!("cannot move corrupt object {} aside: {e}", path.display()),
        }
    }
}

/// Names (without `suffix`) of the finished objects in `dir`; temp files are skipped.
fn object_names(dir: &Path, suffix: &str) -> Result<Vec<String>, CacheError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(CacheError::io(dir))? {
        let entry = entry.map_err(CacheError::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(suffix)
            && !atomic::is_temp_name(&name)
        {
            names.push(stem.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests;
