//! Ingest an image archive as a stream: `docker save` (its classic layout, `<id>/layer.tar` and
//! `<id>.json`, or the OCI layout of newer Docker versions) or `ctr export` (an OCI image layout).
//!
//! Entries are handled in the order they arrive, because layers may come before the manifests:
//! - a compressed blob of an OCI layout (`blobs/sha256/<hex>`, gzip or zstd) is stored as it came,
//!   checked against its name, so the registry's digests survive (see `blob`);
//! - an uncompressed layer tar is hashed while it is compressed into a layer object, stored under
//!   its diff ID;
//! - small JSON files (manifests, indexes, configs) are kept in memory.
//!
//! Once the stream ends the images are assembled, from `index.json` for an OCI layout (see
//! `layout`), else from `manifest.json`; each is checked against its config's
//! `rootfs.diff_ids`, the configs and manifests are stored, and image records are written last.
//! Memory use does not depend on the size of the images.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Component, Path};

use serde::Serialize;

use super::atomic::{self, TempFile};
use super::layer::{self, LayerInfo, LayerWriter};
use super::{Cache, CacheError, ImageRecord};
use crate::image::archive::{INDEX_PATH, ImageConfig, MANIFEST_PATH, ManifestEntry};
use crate::image::compression::{decompressing_reader, is_compressed};
use crate::image::digest::{Digest, ImageId};
use crate::image::manifest::Descriptor;
use crate::image::platform::Platform;

/// JSON members larger than this are not configs or manifests.
const MAX_JSON: u64 = 16 << 20;
/// A tar needs at least its two end blocks; smaller members (VERSION) are skipped unless they
/// are compressed (a gzip layer blob of an OCI archive can be tiny).
const MIN_LAYER: u64 = 1024;
const COPY_BUFFER: usize = 1 << 20;

/// Whether `head` starts with a tar header: its checksum (the header's bytes summed, the
/// checksum field counted as spaces) matches the octal number it records. Junk fed to
/// `cache import` is then named as such instead of whatever bytes the tar reader trips on. (A
/// zero block is the end of an empty tar.)
fn is_tar_header(head: &[u8]) -> bool {
    let Some(header) = head.get(..512) else {
        return false;
    };
    let field = &header[148..156];
    let recorded = std::str::from_utf8(field)
        .ok()
        .map(|t| t.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|t| u32::from_str_radix(t, 8).ok());
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    recorded == Some(sum) || header.iter().all(|b| *b == 0)
}

/// An error detail safe to print on a terminal: the tar reader quotes raw bytes of the input.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

/// What an ingest did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub images: Vec<IngestedImage>,
    /// Layers compressed and stored by this ingest.
    pub layers_stored: usize,
    /// Layers the cache already had (the stream's copy was discarded).
    pub layers_reused: usize,
    /// Uncompressed bytes of all layer tars read.
    pub raw_bytes: u64,
    /// Compressed bytes of the layers stored by this ingest.
    pub stored_bytes: u64,
    /// Compressed blobs kept as served (OCI layouts).
    pub blobs_stored: usize,
    /// The objects this ingest added to the cache, removed again if it fails.
    #[serde(skip)]
    created: Vec<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestedImage {
    pub id: ImageId,
    pub repo_tags: Vec<String>,
    /// False when the cache already held this image.
    pub new: bool,
}

/// Everything read from the stream before it is checked and committed.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) json: HashMap<String, Vec<u8>>,
    /// Uncompressed layer tars, stored as layer objects.
    pub(super) layers: HashMap<String, LayerInfo>,
    /// Compressed blobs of an OCI layout, stored as served: member path → (digest, size).
    pub(super) served: HashMap<String, (Digest, u64)>,
    /// Symlinks and hard links: member path → the member it points at.
    links: HashMap<String, String>,
}

/// An image ready to be committed: its config, record, and the served manifests to keep.
pub(super) struct Assembled<'a> {
    pub(super) config: &'a [u8],
    pub(super) record: ImageRecord,
    pub(super) documents: Vec<(Descriptor, &'a [u8])>,
}

impl Cache {
    /// Ingest a docker-archive (plain tar, gzip or zstd) from `input`; `source_name` names the
    /// stream in errors (a file name, or "docker save on HOST").
    ///
    /// A failed ingest takes back the objects it added that no image record refers to, so a
    /// broken archive leaves nothing behind (see `remove_orphans`).
    pub fn ingest(&self, input: impl Read, source_name: &str) -> Result<IngestReport, CacheError> {
        let mut report = IngestReport::default();
        let shared = self.inner.locks.shared()?;
        let result = self.ingest_locked(input, source_name, &mut report);
        drop(shared);
        match result {
            Ok(()) => Ok(report),
            Err(e) => {
                self.remove_orphans(&report.created);
                Err(e)
            }
        }
    }

    fn ingest_locked(
        &self,
        input: impl Read,
        source_name: &str,
        report: &mut IngestReport,
    ) -> Result<(), CacheError> {
        let bad = |detail: String| CacheError::BadArchive {
            source_name: source_name.to_string(),
            detail: printable(&detail),
        };
        let input = decompressing_reader(input).map_err(|e| bad(e.to_string()))?;
        let mut input = io::BufReader::with_capacity(COPY_BUFFER, input);
        let head = io::BufRead::fill_buf(&mut input).map_err(|e| bad(e.to_string()))?;
        if !head.is_empty() && !is_tar_header(head) {
            return Err(bad("not a tar, gzip or zstd archive".into()));
        }
        let collected = self.read_stream(input, report).map_err(|e| match e {
            StreamError::Cache(e) => e,
            StreamError::Read(e) => bad(e.to_string()),
        })?;
        let images = if collected.json.contains_key(INDEX_PATH) {
            collected.oci_images().map_err(bad)?
        } else {
            let manifest = collected
                .json
                .get(MANIFEST_PATH)
                .ok_or_else(|| bad("it has no manifest.json or index.json".into()))?;
            let entries: Vec<ManifestEntry> =
                serde_json::from_slice(manifest).map_err(|e| bad(format!("manifest.json: {e}")))?;
            let mut images = Vec::new();
            for entry in &entries {
                images.push(self.classic_image(&collected, entry, report, &bad)?);
            }
            images
        };
        for image in images {
            let record = image.record;
            let new = !self.is_complete(&record.id);
            for (descriptor, bytes) in &image.documents {
                self.store_new_blob(*bytes, &descriptor.digest, descriptor.size, report)?;
            }
            let path = self.config_path(&record.id);
            if !path.is_file() {
                atomic::write_file(&path, image.config).map_err(CacheError::io(&path))?;
                report.created.push(path);
            }
            self.commit_record(record.clone())?;
            report.images.push(IngestedImage {
                id: record.id,
                repo_tags: record.repo_tags,
                new,
            });
        }
        Ok(())
    }

    /// `store_blob`, noting a blob this ingest added.
    fn store_new_blob(
        &self,
        input: impl Read,
        digest: &Digest,
        size: u64,
        report: &mut IngestReport,
    ) -> Result<(), CacheError> {
        let path = self.blob_path(digest);
        let new = !path.is_file();
        self.store_blob(input, digest, size)?;
        if new {
            report.created.push(path);
        }
        Ok(())
    }

    /// Import a file (docker-archive as plain tar, gzip or zstd), e.g. a Kubespray cache file.
    pub fn import_file(&self, path: &Path) -> Result<IngestReport, CacheError> {
        let file = std::fs::File::open(path).map_err(CacheError::io(path))?;
        self.ingest(file, &path.display().to_string())
    }

    /// [`Cache::ingest`] for async sources (a bollard export stream, an SSH channel's stdout),
    /// run on a blocking thread so compression does not stall the runtime. Records are written
    /// only once the whole archive has been read and checked: a stream cut short (an export
    /// that failed half-way) ends in an error and records nothing.
    pub async fn ingest_async<R>(
        &self,
        input: R,
        source_name: String,
    ) -> Result<IngestReport, CacheError>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let cache = self.clone();
        let bridge = tokio_util::io::SyncIoBridge::new(input);
        tokio::task::spawn_blocking(move || cache.ingest(bridge, &source_name))
            .await
            .map_err(|e| CacheError::Writer(e.to_string()))?
    }

    fn read_stream(
        &self,
        input: impl Read,
        report: &mut IngestReport,
    ) -> Result<Collected, StreamError> {
        let mut collected = Collected::default();
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = normalise(&entry.path()?);
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name()? else {
                    continue;
                };
                // Symlinks are relative to their own directory, hard links to the archive root.
                let base = if kind.is_symlink() {
                    Path::new(&path).parent().unwrap_or(Path::new(""))
                } else {
                    Path::new("")
                };
                let target = normalise(&base.join(target));
                collected.links.insert(path, target);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let size = entry.size();
            let mut head = vec![0u8; size.min(64 << 10) as usize];
            entry.read_exact(&mut head)?;
            let member = io::Cursor::new(head.as_slice()).chain(entry);
            if matches!(head.first(), Some(b'{' | b'[')) && size <= MAX_JSON {
                let mut json = Vec::with_capacity(size as usize);
                { member }.read_to_end(&mut json)?;
                collected.json.insert(path, json);
            } else if let Some(digest) = served_digest(&path).filter(|_| is_compressed(&head)) {
                self.store_new_blob(member, &digest, size, report)?;
                report.blobs_stored += 1;
                report.stored_bytes += size;
                collected.served.insert(path, (digest, size));
            } else if size >= MIN_LAYER || is_compressed(&head) {
                let info = self.store_layer(member, report)?;
                collected.layers.insert(path, info);
            }
        }
        Ok(collected)
    }

    /// Compress one layer tar into a temp object, then publish it under its diff ID. When the
    /// cache already holds that layer the temp object is dropped (the stream must be read anyway).
    fn store_layer(
        &self,
        member: impl Read,
        report: &mut IngestReport,
    ) -> Result<LayerInfo, StreamError> {
        let dir = self.inner.root.join("layers");
        let temp = TempFile::new_in(&dir).map_err(CacheError::io(&dir))?;
        // docker save writes plain layer tars; OCI archives from other tools may compress them.
        let mut content = decompressing_reader(member)?;
        let mut writer = LayerWriter::new(temp, self.inner.zstd_level)?;
        copy_large(&mut content, &mut writer)?;
        let (info, temp) = writer.finish()?;
        report.raw_bytes += info.raw_size;
        let target = self.layer_path(&info.diff_id);
        if let Ok(existing) = layer::read_info(&target, info.diff_id) {
            tracing::debug!(diff_id = %info.diff_id, "layer already cached");
            report.layers_reused += 1;
            return Ok(existing);
        }
        temp.persist(&target).map_err(CacheError::io(&target))?;
        report.created.push(target);
        tracing::debug!(diff_id = %info.diff_id, raw = info.raw_size, compressed = info.compressed_size, "layer stored");
        report.layers_stored += 1;
        report.stored_bytes += info.compressed_size;
        Ok(info)
    }

    /// Write the record; tags it carries are taken away from any other image of its platform
    /// (a tag names one image per platform, as in a registry's index), and what the image
    /// already had (names, its registry manifest) is kept.
    pub(super) fn commit_record(&self, mut record: ImageRecord) -> Result<(), CacheError> {
        let _index = self.inner.locks.index()?;
        for mut other in self.images()? {
            if other.id == record.id {
                record.repo_tags = union(other.repo_tags, record.repo_tags);
                record.repo_digests = union(other.repo_digests, record.repo_digests);
                record.manifest = record.manifest.or(other.manifest);
                record.index = record.index.or(other.index);
                record.platform = record.platform.or(other.platform);
                continue;
            }
            let other_platform = other.platform.as_ref().map(Platform::normalized);
            let platform = record.platform.as_ref().map(Platform::normalized);
            if other_platform.is_some() && platform.is_some() && other_platform != platform {
                continue;
            }
            let before = other.repo_tags.len();
            other
                .repo_tags
                .retain(|tag| !record.repo_tags.contains(tag));
            if other.repo_tags.len() != before {
                self.write_record(&other)?;
            }
        }
        self.write_record(&record)
    }
}

impl Collected {
    /// The member a manifest path finally refers to, following links (a bounded number).
    pub(super) fn resolve(&self, manifest_path: &str) -> String {
        let mut path = normalise(Path::new(manifest_path));
        for _ in 0..16 {
            match self.links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        path
    }

    /// A JSON member by the path a manifest names it with.
    pub(super) fn member_json(&self, manifest_path: &str) -> Option<&[u8]> {
        self.json
            .get(&self.resolve(manifest_path))
            .map(Vec::as_slice)
    }
}

impl Cache {
    /// One `manifest.json` entry checked against its config. A layer that came as a compressed
    /// blob (an OCI-style path in an archive without `index.json`) has no served manifest to
    /// go with it, so it is turned into a layer object.
    fn classic_image<'a>(
        &self,
        collected: &'a Collected,
        entry: &ManifestEntry,
        report: &mut IngestReport,
        bad: &impl Fn(String) -> CacheError,
    ) -> Result<Assembled<'a>, CacheError> {
        let config = collected
            .member_json(&entry.config)
            .ok_or_else(|| bad(format!("config {} is not in the archive", entry.config)))?;
        let id = Digest::of(config);
        let parsed: ImageConfig = serde_json::from_slice(config)
            .map_err(|e| bad(format!("config {}: {e}", entry.config)))?;
        if parsed.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(bad(format!(
                "image {id}: manifest.json lists {} layers but its config has {} diff_ids",
                entry.layers.len(),
                parsed.rootfs.diff_ids.len()
            )));
        }
        for (layer_path, expected) in entry.layers.iter().zip(&parsed.rootfs.diff_ids) {
            let member = collected.resolve(layer_path);
            let diff_id = match (collected.layers.get(&member), collected.served.get(&member)) {
                (Some(info), _) => info.diff_id,
                (None, Some((digest, size))) => {
                    let blob = Descriptor {
                        media_type: String::new(),
                        digest: *digest,
                        size: *size,
                        platform: None,
                    };
                    self.store_layer(self.open_blob(&blob)?, report)
                        .map_err(|e| match e {
                            StreamError::Cache(e) => e,
                            StreamError::Read(e) => bad(format!("layer {layer_path}: {e}")),
                        })?
                        .diff_id
                }
                (None, None) => {
                    return Err(bad(format!("layer {layer_path} is not in the archive")));
                }
            };
            if diff_id != *expected {
                return Err(bad(format!(
                    "layer {layer_path} has diff ID {diff_id} but image {id} expects {expected}"
                )));
            }
        }
        let record = ImageRecord {
            id,
            repo_tags: entry.repo_tags.clone(),
            repo_digests: Vec::new(),
            platform: parsed.platform(),
            diff_ids: parsed.rootfs.diff_ids,
            manifest: None,
            index: None,
        };
        Ok(Assembled {
            config,
            record,
            documents: Vec::new(),
        })
    }
}

enum StreamError {
    Cache(CacheError),
    Read(io::Error),
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> Self {
        StreamError::Read(e)
    }
}

impl From<CacheError> for StreamError {
    fn from(e: CacheError) -> Self {
        StreamError::Cache(e)
    }
}

/// The digest an OCI layout member is named after (`blobs/sha256/<hex>`).
fn served_digest(path: &str) -> Option<Digest> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    (hex.len() == 64).then(|| Digest::parse(hex).ok()).flatten()
}

/// `first` followed by the names of `then` it lacks.
fn union(mut first: Vec<String>, then: Vec<String>) -> Vec<String> {
    for name in then {
        if !first.contains(&name) {
            first.push(name);
        }
    }
    first
}

/// `./a/../b/c` → `b/c`: member paths as the archive's other members refer to them.
fn normalise(path: &Path) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

fn copy_large(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}
