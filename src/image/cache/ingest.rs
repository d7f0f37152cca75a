//! Ingest a `docker save` archive as a stream.
//!
//! Entries are handled in the order they arrive, because layers may come before
//! `manifest.json`: every layer tar is hashed while it is compressed into a temp object and
//! then stored under its diff ID; small JSON files (manifest, configs) are kept in memory.
//! Once the stream ends the manifest is checked against the configs' `rootfs.diff_ids`, the
//! configs are stored, and image records are written last. Memory use does not depend on the
//! size of the images. Both the classic layout (`<id>/layer.tar`, `<id>.json`) and the OCI
//! layout (`blobs/sha256/<hex>`) of newer Docker versions are accepted.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Component, Path};

use serde::Serialize;

use super::atomic::{self, TempFile};
use super::layer::{self, LayerInfo, LayerWriter};
use super::{Cache, CacheError, ImageRecord};
use crate::image::archive::{ImageConfig, MANIFEST_PATH, ManifestEntry};
use crate::image::compression::{decompressing_reader, is_compressed};
use crate::image::digest::{Digest, ImageId};

/// JSON members larger than this are not configs or manifests.
const MAX_JSON: u64 = 16 << 20;
/// A tar needs at least its two end blocks; smaller members (VERSION) are skipped unless they
/// are compressed (a gzip layer blob of an OCI archive can be tiny).
const MIN_LAYER: u64 = 1024;
const COPY_BUFFER: usize = 1 << 20;

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
struct Collected {
    json: HashMap<String, Vec<u8>>,
    layers: HashMap<String, LayerInfo>,
    /// Symlinks and hard links: member path → the member it points at.
    links: HashMap<String, String>,
}

impl Cache {
    /// Ingest a docker-archive (plain tar, gzip or zstd) from `input`; `source_name` names the
    /// stream in errors (a file name, or "docker save on HOST").
    pub fn ingest(&self, input: impl Read, source_name: &str) -> Result<IngestReport, CacheError> {
        let _shared = self.inner.locks.shared()?;
        let bad = |detail: String| CacheError::BadArchive {
            source_name: source_name.to_string(),
            detail,
        };
        let input = decompressing_reader(input).map_err(|e| bad(e.to_string()))?;
        let mut report = IngestReport::default();
        let collected = self.read_stream(input, &mut report).map_err(|e| match e {
            StreamError::Cache(e) => e,
            StreamError::Read(e) => bad(e.to_string()),
        })?;
        let manifest = collected
            .json
            .get(MANIFEST_PATH)
            .ok_or_else(|| bad("it has no manifest.json".into()))?;
        let entries: Vec<ManifestEntry> =
            serde_json::from_slice(manifest).map_err(|e| bad(format!("manifest.json: {e}")))?;
        for entry in &entries {
            let (config, record) = collected.image(entry).map_err(bad)?;
            let new = !self.is_complete(&record.id);
            let path = self.config_path(&record.id);
            if !path.is_file() {
                atomic::write_file(&path, config).map_err(CacheError::io(&path))?;
            }
            self.commit_record(record.clone())?;
            report.images.push(IngestedImage {
                id: record.id,
                repo_tags: record.repo_tags,
                new,
            });
        }
        Ok(report)
    }

    /// Import a file (docker-archive as plain tar, gzip or zstd), e.g. a Kubespray cache file.
    pub fn import_file(&self, path: &Path) -> Result<IngestReport, CacheError> {
        let file = std::fs::File::open(path).map_err(CacheError::io(path))?;
        self.ingest(file, &path.display().to_string())
    }

    /// [`Cache::ingest`] for async sources (a bollard export stream, an SSH channel's stdout),
    /// run on a blocking thread so compression does not stall the runtime.
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
            if matches!(head.first(), Some(b'{' | b'[')) && size <= MAX_JSON {
                entry.read_to_end(&mut head)?;
                collected.json.insert(path, head);
            } else if size >= MIN_LAYER || is_compressed(&head) {
                let info = self.store_layer(io::Cursor::new(head).chain(entry), report)?;
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
        tracing::debug!(diff_id = %info.diff_id, raw = info.raw_size, compressed = info.compressed_size, "layer stored");
        report.layers_stored += 1;
        report.stored_bytes += info.compressed_size;
        Ok(info)
    }

    /// Write the record; tags it carries are taken away from any other image (a tag names one
    /// image, as in Docker), and names the image already had are kept.
    pub(super) fn commit_record(&self, mut record: ImageRecord) -> Result<(), CacheError> {
        let _index = self.inner.locks.index()?;
        for mut other in self.images()? {
            if other.id == record.id {
                record.repo_tags = union(other.repo_tags, record.repo_tags);
                record.repo_digests = union(other.repo_digests, record.repo_digests);
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
    fn resolve(&self, manifest_path: &str) -> String {
        let mut path = normalise(Path::new(manifest_path));
        for _ in 0..16 {
            match self.links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        path
    }

    /// Check one manifest entry against its config; returns the config bytes and the record.
    fn image(&self, entry: &ManifestEntry) -> Result<(&[u8], ImageRecord), String> {
        let config = self
            .json
            .get(&self.resolve(&entry.config))
            .ok_or_else(|| format!("config {} is not in the archive", entry.config))?;
        let id = Digest::of(config);
        let parsed: ImageConfig =
            serde_json::from_slice(config).map_err(|e| format!("config {}: {e}", entry.config))?;
        if parsed.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(format!(
                "image {id}: manifest.json lists {} layers but its config has {} diff_ids",
                entry.layers.len(),
                parsed.rootfs.diff_ids.len()
            ));
        }
        for (layer_path, expected) in entry.layers.iter().zip(&parsed.rootfs.diff_ids) {
            let info = self
                .layers
                .get(&self.resolve(layer_path))
                .ok_or_else(|| format!("layer {layer_path} is not in the archive"))?;
            if info.diff_id != *expected {
                return Err(format!(
                    "layer {layer_path} has diff ID {} but image {id} expects {expected}",
                    info.diff_id
                ));
            }
        }
        let record = ImageRecord {
            id,
            repo_tags: entry.repo_tags.clone(),
            repo_digests: Vec::new(),
            diff_ids: parsed.rootfs.diff_ids,
        };
        Ok((config, record))
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
