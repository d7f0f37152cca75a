//! Stream any set of cached images, minus any layers, as one archive in the layout a node's
//! runtime loads: a docker-archive (`docker load`, `podman load`) or an OCI image layout
//! (`ctr images import`), see `image::archive`.
//!
//! Nothing is compressed twice. In the zstd form the archive is a tar whose members are emitted
//! as separate zstd frames: small members (manifests, configs, tar headers, padding, the end
//! blocks) are compressed when the plan is made; a layer object whose tar is the member
//! ("opened") is its stored data frames copied verbatim; a blob whose bytes are the member as
//! they are (a served gzip layer, or a layer object inside an OCI layout) is wrapped in stored
//! zstd frames. Concatenated zstd frames decompress to the concatenation, so `zstd -dc` sees one
//! valid tar. The tar and gzip forms decompress opened objects on the fly.
//!
//! Layers left out (the node already has them) keep their place in the manifests: Docker 20.10
//! does not open the file of a layer whose chain it already holds, and containerd unpacks a
//! layer it holds from its own store.

use std::collections::HashSet;
use std::future::Future as _;
use std::io::{self, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};

use super::layer::{self, LayerInfo, VerifyingReader};
use super::{Cache, CacheError, ImageRecord, LayerBlob, Stored};
use crate::image::archive::{
    self, END_OF_ARCHIVE, INDEX_PATH, LAYOUT_CONTENT, LAYOUT_PATH, LayoutEntry, LayoutIndex,
    MANIFEST_PATH, ManifestEntry, NAME_ANNOTATION, REF_NAME_ANNOTATION,
};
use crate::image::compression::stored;
use crate::image::digest::{DiffId, Digest, ImageId};
use crate::image::manifest::{Descriptor, MediaType};
use crate::image::reference::ImageRef;

/// zstd level for the small members compressed at plan time.
const INLINE_LEVEL: i32 = 3;
/// What the blocking writer may run ahead of the SSH channel, per transfer. Small, because a
/// push holds one per node in flight (`--forks` of them): with 1 MiB here a push to 100
/// nodes at `-f 50` peaked at 170 MB RSS.
/// The channel's own window (2 MiB from OpenSSH) keeps the link busy; this only has to cover
/// one hand-off between the threads.
const PIPE_BUFFER: usize = 64 << 10;
/// The copy buffer of one part of an archive (per transfer, like the pipe).
const COPY_BUFFER: usize = 64 << 10;

/// How the archive bytes are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveFormat {
    /// zstd frames (decompress with `zstd -dc`); layers are never recompressed.
    Zstd,
    /// Plain tar, for nodes without any decompressor.
    Tar,
    /// gzip level 1, for nodes with gzip but no zstd.
    Gzip,
}

/// How the images are laid out inside the archive's tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveLayout {
    /// `docker save`'s format (`manifest.json`). `zstd_members`: the loader reads zstd layer
    /// files (podman does; Docker 20.10 does not, so layer objects are opened for it).
    Docker { zstd_members: bool },
    /// An OCI image layout, for `ctr images import`: registry manifests and digests are kept.
    Oci,
}

/// What an archive will contain, with exact sizes, computed before anything is sent.
#[derive(Debug, Clone, Serialize)]
pub struct ArchivePlan {
    pub layout: ArchiveLayout,
    pub format: ArchiveFormat,
    pub images: Vec<ImageId>,
    /// The names each image (in `images` order) has on the node once loaded: its tags in full,
    /// and in an OCI layout `repo@digest` too when the registry's manifest goes with it.
    pub names: Vec<Vec<String>>,
    /// Layers written into the archive, in order.
    pub layers: Vec<DiffId>,
    /// Layers listed in manifest.json but left out.
    pub omitted: Vec<DiffId>,
    /// Exact size of the zstd form.
    pub compressed_bytes: u64,
    /// Exact size of the uncompressed tar.
    pub raw_bytes: u64,
    /// Compressed size of the omitted layers (what leaving them out saves on the wire).
    pub saved_bytes: u64,
    #[serde(skip)]
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Inline {
        raw: Vec<u8>,
        zstd: Vec<u8>,
    },
    /// A layer object whose uncompressed tar is the member.
    Opened(LayerInfo),
    /// A blob whose bytes, as stored, are the member.
    Stored(LayerBlob),
}

impl ArchivePlan {
    /// The exact bytes on the wire, where the format makes them known in advance.
    pub fn wire_bytes(&self) -> Option<u64> {
        match self.format {
            ArchiveFormat::Zstd => Some(self.compressed_bytes),
            ArchiveFormat::Tar => Some(self.raw_bytes),
            ArchiveFormat::Gzip => None,
        }
    }
}

/// Collects consecutive small tar bytes into one inline part.
#[derive(Default)]
struct PartsBuilder {
    parts: Vec<Part>,
    pending: Vec<u8>,
}

impl PartsBuilder {
    fn inline(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    fn member(&mut self, path: &str, data: &[u8]) {
        self.inline(&archive::file_header(path, data.len() as u64));
        self.inline(data);
        self.inline(archive::padding(data.len() as u64));
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let raw = std::mem::take(&mut self.pending);
        let zstd =
            zstd::bulk::compress(&raw, INLINE_LEVEL).expect("compressing a small in-memory buffer");
        self.parts.push(Part::Inline { raw, zstd });
    }

    /// A layer object, opened: the member is its uncompressed tar.
    fn opened(&mut self, path: &str, info: LayerInfo) {
        self.inline(&archive::file_header(path, info.raw_size));
        self.flush();
        self.parts.push(Part::Opened(info));
        self.inline(archive::padding(info.raw_size));
    }

    /// A blob as stored: the member is its bytes.
    fn stored(&mut self, path: &str, blob: LayerBlob) {
        let size = blob.descriptor.size;
        self.inline(&archive::file_header(path, size));
        self.flush();
        self.parts.push(Part::Stored(blob));
        self.inline(archive::padding(size));
    }

    fn finish(mut self) -> Vec<Part> {
        self.inline(&END_OF_ARCHIVE);
        self.flush();
        self.parts
    }
}

/// One image of an archive, as the cache holds it.
struct Planned {
    record: ImageRecord,
    config: Vec<u8>,
    layers: Vec<LayerBlob>,
}

impl Cache {
    /// Plan one archive holding `images` (in that order, each once) in `layout`, leaving out the
    /// layers in `omit`, to be sent in `format`.
    pub fn archive_plan(
        &self,
        images: &[ImageId],
        omit: &HashSet<DiffId>,
        layout: ArchiveLayout,
        format: ArchiveFormat,
    ) -> Result<ArchivePlan, CacheError> {
        let mut ids: Vec<ImageId> = Vec::new();
        for id in images {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        let mut planned = Vec::new();
        for id in &ids {
            let record = self.record(id)?.ok_or_else(|| CacheError::NotCached {
                reference: id.to_string(),
                cache: self.root().to_path_buf(),
            })?;
            planned.push(Planned {
                config: self.read_config(id)?,
                layers: self.layer_blobs(&record)?,
                record,
            });
        }
        let mut builder = PartsBuilder::default();
        let names = match layout {
            ArchiveLayout::Docker { zstd_members } => {
                docker_layout(&mut builder, &planned, omit, zstd_members)
            }
            ArchiveLayout::Oci => self.oci_layout(&mut builder, &planned, omit)?,
        };
        let (mut layers, mut omitted, mut saved_bytes) = (Vec::new(), Vec::new(), 0);
        for blob in planned.iter().flat_map(|p| &p.layers) {
            if omit.contains(&blob.diff_id) {
                if !omitted.contains(&blob.diff_id) {
                    omitted.push(blob.diff_id);
                    saved_bytes += blob.descriptor.size;
                }
            } else if !layers.contains(&blob.diff_id) {
                layers.push(blob.diff_id);
            }
        }
        let parts = builder.finish();
        let (mut raw_bytes, mut compressed_bytes) = (0, 0);
        for part in &parts {
            let (raw, compressed) = match part {
                Part::Inline { raw, zstd } => (raw.len() as u64, zstd.len() as u64),
                Part::Opened(info) => (info.raw_size, info.compressed_size),
                Part::Stored(blob) => (
                    blob.descriptor.size,
                    stored::frame_len(blob.descriptor.size),
                ),
            };
            raw_bytes += raw;
            compressed_bytes += compressed;
        }
        Ok(ArchivePlan {
            layout,
            format,
            images: ids,
            names,
            layers,
            omitted,
            compressed_bytes,
            raw_bytes,
            saved_bytes,
            parts,
        })
    }

    /// `oci-layout`, the blobs, and `index.json` naming each image by its tags and, when it has
    /// a registry digest, by `repo@digest` too (so a pod naming the digest finds it). Returns
    /// each image's names.
    fn oci_layout(
        &self,
        builder: &mut PartsBuilder,
        planned: &[Planned],
        omit: &HashSet<DiffId>,
    ) -> Result<Vec<Vec<String>>, CacheError> {
        builder.member(LAYOUT_PATH, LAYOUT_CONTENT);
        let mut written: HashSet<Digest> = HashSet::new();
        let mut entries = Vec::new();
        let mut names = Vec::new();
        for image in planned {
            let served = image.record.manifest.as_ref().filter(|_| {
                image
                    .layers
                    .iter()
                    .all(|blob| blob.stored == Stored::Served)
            });
            let (manifest, manifest_bytes) = match served {
                Some(manifest) => (manifest.clone(), self.read_blob(manifest)?),
                None => synthesised_manifest(image),
            };
            // The registry's index stays the image's top descriptor: a digest reference names it.
            let top = match (&image.record.index, served) {
                (Some(index), Some(_)) => {
                    if written.insert(index.digest) {
                        builder.member(
                            &archive::blob_member(&index.digest),
                            &self.read_blob(index)?,
                        );
                    }
                    index.clone()
                }
                _ => manifest.clone(),
            };
            if written.insert(manifest.digest) {
                builder.member(&archive::blob_member(&manifest.digest), &manifest_bytes);
            }
            if written.insert(image.record.id) {
                builder.member(&archive::blob_member(&image.record.id), &image.config);
            }
            for blob in &image.layers {
                if !omit.contains(&blob.diff_id) && written.insert(blob.descriptor.digest) {
                    builder.stored(&archive::blob_member(&blob.descriptor.digest), blob.clone());
                }
            }
            let image_entries = index_entries(&image.record, &top, served.is_some());
            names.push(
                image_entries
                    .iter()
                    .filter_map(|e| e.annotations.get(NAME_ANNOTATION).cloned())
                    .collect(),
            );
            entries.extend(image_entries);
        }
        let index = LayoutIndex {
            schema_version: 2,
            media_type: Some(MediaType::OciIndex.as_str().to_string()),
            manifests: entries,
        };
        builder.member(
            INDEX_PATH,
            &serde_json::to_vec(&index).expect("index.json serialises"),
        );
        Ok(names)
    }

    /// Write the planned archive to `out`; returns the bytes written. Every object is checked
    /// against its sha256 before its first byte is written (once per process) and again while
    /// it streams; a mismatch stops the archive with an error naming the object.
    pub fn write_archive(&self, plan: &ArchivePlan, out: impl Write) -> Result<u64, CacheError> {
        let _shared = self.inner.locks.shared()?;
        let mut out = Counting {
            inner: out,
            bytes: 0,
        };
        match plan.format {
            ArchiveFormat::Zstd => self.write_parts(plan, &mut out, true)?,
            ArchiveFormat::Tar => self.write_parts(plan, &mut out, false)?,
            ArchiveFormat::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
                self.write_parts(plan, &mut gz, false)?;
                gz.finish().map_err(|e| self.writer_error(e))?;
            }
        }
        out.flush().map_err(|e| self.writer_error(e))?;
        Ok(out.bytes)
    }

    /// The archive as an `AsyncRead` (e.g. an SSH channel's stdin), produced on a blocking
    /// thread. A failure (corrupt layer, disk error) surfaces as a read error, never as a
    /// clean end of stream.
    pub fn archive_reader(&self, plan: ArchivePlan) -> ArchiveReader {
        let (reader, writer) = tokio::io::duplex(PIPE_BUFFER);
        let bridge = tokio_util::io::SyncIoBridge::new(writer);
        let cache = self.clone();
        let task =
            tokio::task::spawn_blocking(move || cache.write_archive(&plan, bridge).map(drop));
        ArchiveReader {
            pipe: reader,
            task: Some(task),
        }
    }

    /// `zstd`: the parts as zstd frames (the archive's zstd form), else as plain tar bytes.
    fn write_parts(
        &self,
        plan: &ArchivePlan,
        out: &mut impl Write,
        zstd: bool,
    ) -> Result<(), CacheError> {
        for part in &plan.parts {
            let copied = match part {
                Part::Inline { raw, zstd: frames } => {
                    let bytes = if zstd { frames } else { raw };
                    out.write_all(bytes).map_err(Copy::Write)
                }
                Part::Opened(info) => {
                    let source = self.checked_object(info)?;
                    if zstd {
                        copy_checked(source, out)
                    } else {
                        zstd::stream::read::Decoder::new(source)
                            .map_err(Copy::Read)
                            .and_then(|decoder| copy_checked(decoder, out))
                    }
                }
                Part::Stored(blob) => {
                    let source: Box<dyn Read + Send> = match &blob.stored {
                        Stored::Object(info) => Box::new(self.checked_object(info)?),
                        Stored::Served => self.checked_blob(&blob.descriptor)?,
                    };
                    if zstd {
                        write_stored(source, blob.descriptor.size, out)
                    } else {
                        copy_checked(source, out)
                    }
                }
            };
            match (copied, part) {
                (Ok(()), _) => {}
                (Err(Copy::Write(e)), _) => return Err(self.writer_error(e)),
                (Err(Copy::Read(e)), Part::Opened(info)) => {
                    return Err(self.corrupt_object(
                        &self.layer_path(&info.diff_id),
                        &info.compressed_digest,
                        format!("layer {}", info.diff_id),
                        e.to_string(),
                    ));
                }
                (Err(Copy::Read(e)), Part::Stored(blob)) => {
                    let (path, what) = match &blob.stored {
                        Stored::Object(info) => (
                            self.layer_path(&info.diff_id),
                            format!("layer {}", info.diff_id),
                        ),
                        Stored::Served => (
                            self.blob_path(&blob.descriptor.digest),
                            format!("blob {}", blob.descriptor.digest),
                        ),
                    };
                    return Err(self.corrupt_object(
                        &path,
                        &blob.descriptor.digest,
                        what,
                        e.to_string(),
                    ));
                }
                (Err(Copy::Read(e)), Part::Inline { .. }) => return Err(self.writer_error(e)),
            }
        }
        Ok(())
    }

    /// A layer object's data frames, hashed whole before the first byte is sent.
    fn checked_object(&self, info: &LayerInfo) -> Result<VerifyingReader, CacheError> {
        let path = self.layer_path(&info.diff_id);
        let what = format!("layer {}", info.diff_id);
        let open =
            || VerifyingReader::layer(&path, info).map_err(|e| self.open_error(&path, &what, e));
        self.check_once(info.compressed_digest, &path, &what, open)
    }

    /// A served blob, hashed whole before the first byte is sent; or, while it still
    /// downloads, followed as it arrives (the download checks it, and a reader sees a
    /// mismatch as an error at the end).
    fn checked_blob(&self, blob: &Descriptor) -> Result<Box<dyn Read + Send>, CacheError> {
        if !self.has_blob(&blob.digest)
            && let Some(pending) = self.follow_pending(&blob.digest)
        {
            return Ok(Box::new(pending));
        }
        let path = self.blob_path(&blob.digest);
        let what = format!("blob {}", blob.digest);
        let reader = self.check_once(blob.digest, &path, &what, || self.open_blob(blob))?;
        Ok(Box::new(reader))
    }

    /// Hash an object once per process before any of it is sent, so corrupt data never leaves
    /// the cache; then open it for sending (checked again as it streams).
    fn check_once(
        &self,
        digest: Digest,
        path: &Path,
        what: &str,
        open: impl Fn() -> Result<VerifyingReader, CacheError>,
    ) -> Result<VerifyingReader, CacheError> {
        let verified = |set: &HashSet<Digest>| set.contains(&digest);
        if !verified(&self.inner.verified.lock().expect("verified set")) {
            io::copy(&mut open()?, &mut io::sink())
                .map_err(|e| self.corrupt_object(path, &digest, what.to_string(), e.to_string()))?;
            self.inner
                .verified
                .lock()
                .expect("verified set")
                .insert(digest);
        }
        open()
    }

    fn open_error(&self, path: &Path, what: &str, e: io::Error) -> CacheError {
        match e.kind() {
            io::ErrorKind::NotFound => CacheError::Missing {
                what: what.to_string(),
                path: path.to_path_buf(),
            },
            _ => CacheError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        }
    }

    /// A cached layer's sizes and checksum (from its trailer).
    pub fn layer(&self, diff_id: &DiffId) -> Result<LayerInfo, CacheError> {
        let path = self.layer_path(diff_id);
        if !path.exists() {
            return Err(CacheError::Missing {
                what: format!("layer {diff_id}"),
                path,
            });
        }
        layer::read_info(&path, *diff_id).map_err(|e| {
            self.quarantine(&path);
            CacheError::Corrupt {
                what: format!("layer {diff_id}"),
                path,
                detail: e.to_string(),
            }
        })
    }

    /// The config JSON of a cached image, checked against its ID.
    pub fn read_config(&self, id: &ImageId) -> Result<Vec<u8>, CacheError> {
        let path = self.config_path(id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CacheError::Missing {
                    what: format!("config of image {id}"),
                    path,
                });
            }
            Err(e) => return Err(CacheError::Io { path, source: e }),
        };
        let actual = Digest::of(&bytes);
        if actual != *id {
            self.quarantine(&path);
            return Err(CacheError::Corrupt {
                what: format!("config of image {id}"),
                path,
                detail: format!("its sha256 is {actual}"),
            });
        }
        Ok(bytes)
    }

    fn corrupt_object(
        &self,
        path: &Path,
        digest: &Digest,
        what: String,
        detail: String,
    ) -> CacheError {
        self.inner
            .verified
            .lock()
            .expect("verified set")
            .remove(digest);
        self.quarantine(path);
        CacheError::Corrupt {
            what,
            path: path.to_path_buf(),
            detail,
        }
    }

    fn writer_error(&self, e: io::Error) -> CacheError {
        CacheError::Writer(e.to_string())
    }
}

/// `manifest.json`, the configs, and each layer once: layer objects opened unless the loader
/// reads zstd members, served blobs as they are. Returns each image's names (its tags).
fn docker_layout(
    builder: &mut PartsBuilder,
    planned: &[Planned],
    omit: &HashSet<DiffId>,
    zstd_members: bool,
) -> Vec<Vec<String>> {
    let member = |blob: &LayerBlob| match (&blob.stored, zstd_members) {
        (Stored::Object(_), false) => archive::layer_member(&blob.diff_id),
        (Stored::Object(_), true) => format!("{}.tar.zst", blob.diff_id.hex()),
        (Stored::Served, _) => format!(
            "{}.{}",
            blob.descriptor.digest.hex(),
            extension(&blob.descriptor.media_type)
        ),
    };
    let manifest: Vec<ManifestEntry> = planned
        .iter()
        .map(|image| ManifestEntry {
            config: archive::config_member(&image.record.id),
            repo_tags: image
                .record
                .repo_tags
                .iter()
                .map(|t| qualified(t))
                .collect(),
            layers: image.layers.iter().map(member).collect(),
        })
        .collect();
    builder.member(
        MANIFEST_PATH,
        &serde_json::to_vec(&manifest).expect("manifest serialises"),
    );
    for image in planned {
        builder.member(&archive::config_member(&image.record.id), &image.config);
    }
    let mut written: HashSet<DiffId> = HashSet::new();
    for blob in planned.iter().flat_map(|p| &p.layers) {
        if omit.contains(&blob.diff_id) || !written.insert(blob.diff_id) {
            continue;
        }
        match (&blob.stored, zstd_members) {
            (Stored::Object(info), false) => builder.opened(&member(blob), *info),
            _ => builder.stored(&member(blob), blob.clone()),
        }
    }
    manifest.into_iter().map(|entry| entry.repo_tags).collect()
}

/// A file extension for a layer blob's media type (docker reads the contents, not the name).
fn extension(media_type: &str) -> &'static str {
    if media_type.ends_with("gzip") {
        "tar.gz"
    } else if media_type.ends_with("zstd") {
        "tar.zst"
    } else {
        "tar"
    }
}

/// A tag in full (`docker.io/library/nginx:1.25`): podman would put `localhost/` before a
/// short one, Docker and containerd read either.
fn qualified(tag: &str) -> String {
    ImageRef::parse(tag).map_or_else(|_| tag.to_string(), |r| r.to_string())
}

/// An OCI manifest for an image the cache holds no registry manifest for (or not all of whose
/// served layers): its config and the blob of each layer. The same image gives the same bytes.
fn synthesised_manifest(image: &Planned) -> (Descriptor, Vec<u8>) {
    let descriptor = |d: &Descriptor| serde_json::json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
    let config = Descriptor::of("application/vnd.oci.image.config.v1+json", &image.config);
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OciManifest.as_str(),
        "config": descriptor(&config),
        "layers": image.layers.iter().map(|l| descriptor(&l.descriptor)).collect::<Vec<_>>(),
    }))
    .expect("a manifest serialises");
    let manifest = Descriptor::of(MediaType::OciManifest.as_str(), &bytes);
    (manifest, bytes)
}

/// The `index.json` entries of one image: one per tag, and one per registry digest when the
/// archive carries the registry's manifest.
fn index_entries(record: &ImageRecord, top: &Descriptor, served: bool) -> Vec<LayoutEntry> {
    let tags = record
        .repo_tags
        .iter()
        .filter_map(|tag| ImageRef::parse(tag).ok())
        .map(|r| (r.to_string(), r.tag().map(str::to_string)));
    let digests = served
        .then(|| {
            record
                .repo_digests
                .iter()
                .filter_map(|name| ImageRef::parse(name).ok())
                .filter(|r| r.digest() == Some(&top.digest.to_string()))
                .map(|r| (r.to_string(), None))
        })
        .into_iter()
        .flatten();
    tags.chain(digests)
        .map(|(name, tag)| LayoutEntry {
            media_type: top.media_type.clone(),
            digest: top.digest,
            size: top.size,
            annotations: std::iter::once((NAME_ANNOTATION.to_string(), name))
                .chain(tag.map(|tag| (REF_NAME_ANNOTATION.to_string(), tag)))
                .collect(),
        })
        .collect()
}

/// The layers a node does not need in an archive of `images`, given the layer chains of the
/// images it already holds (each `rootfs.diff_ids`, base first).
///
/// Docker skips a layer's file only when it has that layer's whole chain (the layer and every
/// layer below it, in order), so a layer is left out only if, in every image of the archive
/// that contains it, the chain up to it is a prefix of some chain the node holds.
pub fn layers_to_omit(images: &[ImageRecord], node_chains: &[Vec<DiffId>]) -> HashSet<DiffId> {
    let node_has_chain = |chain: &[DiffId]| node_chains.iter().any(|held| held.starts_with(chain));
    let mut needed = HashSet::new();
    let mut present = HashSet::new();
    for image in images {
        for (depth, diff_id) in image.diff_ids.iter().enumerate() {
            if node_has_chain(&image.diff_ids[..=depth]) {
                present.insert(*diff_id);
            } else {
                needed.insert(*diff_id);
            }
        }
    }
    present.retain(|diff_id| !needed.contains(diff_id));
    present
}

enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// One stored zstd frame of `len` bytes of `from`, keeping read errors apart from write errors.
fn write_stored(from: impl Read, len: u64, out: &mut impl Write) -> Result<(), Copy> {
    let mut source = Tracked {
        inner: from,
        failed: false,
    };
    stored::write_frame(&mut source, len, out).map_err(|e| {
        if source.failed {
            Copy::Read(e)
        } else {
            Copy::Write(e)
        }
    })
}

/// Remembers whether a read failed, to tell the source's errors from the sink's.
struct Tracked<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// Copy keeping read errors (a damaged object) apart from write errors (the consumer went away).
fn copy_checked(mut from: impl Read, out: &mut impl Write) -> Result<(), Copy> {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(Copy::Write)?;
    }
}

/// Counts what is written (hashing the output would cost a sha256 per pushed byte).
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An archive being produced by a blocking task; see [`Cache::archive_reader`].
pub struct ArchiveReader {
    pipe: tokio::io::DuplexStream,
    task: Option<tokio::task::JoinHandle<Result<(), CacheError>>>,
}

impl AsyncRead for ArchiveReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.pipe).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {}
            other => return other,
        }
        // End of the pipe: the writer finished or failed; only a success is a clean EOF.
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let outcome = match Pin::new(task).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        self.task = None;
        Poll::Ready(match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(join) => Err(io::Error::other(join)),
        })
    }
}
