//! Stream any set of cached images, minus any layers, as one `docker load` archive.
//!
//! The archive is a tar whose members are emitted as separate zstd frames: small members
//! (manifest.json, configs, tar headers, padding, the end blocks) are compressed when the plan
//! is made, and each layer is the stored object's data frames copied verbatim. Concatenated
//! zstd frames decompress to the concatenation, so `zstd -dc | docker load` sees one valid tar
//! and no layer is ever compressed twice. The tar and gzip variants decompress on the fly.
//!
//! Layers left out (the node already has them) keep their `manifest.json` entry: Docker 20.10
//! does not open the file of a layer whose chain it already holds.

use std::collections::HashSet;
use std::future::Future as _;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};

use super::layer::{self, LayerInfo, VerifyingReader};
use super::{Cache, CacheError, ImageRecord};
use crate::image::archive::{self, END_OF_ARCHIVE, MANIFEST_PATH, ManifestEntry};
use crate::image::digest::{DiffId, Digest, ImageId};

/// zstd level for the small members compressed at plan time.
const INLINE_LEVEL: i32 = 3;
const PIPE_BUFFER: usize = 1 << 20;

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

/// What an archive will contain, with exact sizes, computed before anything is sent.
#[derive(Debug, Clone, Serialize)]
pub struct ArchivePlan {
    pub images: Vec<ImageId>,
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
    Inline { raw: Vec<u8>, zstd: Vec<u8> },
    Layer(LayerInfo),
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

    fn layer(&mut self, info: LayerInfo) {
        self.inline(&archive::file_header(
            &archive::layer_member(&info.diff_id),
            info.raw_size,
        ));
        self.flush();
        self.parts.push(Part::Layer(info));
        self.inline(archive::padding(info.raw_size));
    }

    fn finish(mut self) -> Vec<Part> {
        self.inline(&END_OF_ARCHIVE);
        self.flush();
        self.parts
    }
}

impl Cache {
    /// Plan one archive holding `images` (in that order, each once), leaving out the files of
    /// the layers in `omit`.
    pub fn archive_plan(
        &self,
        images: &[ImageId],
        omit: &HashSet<DiffId>,
    ) -> Result<ArchivePlan, CacheError> {
        let mut ids: Vec<ImageId> = Vec::new();
        for id in images {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        let mut manifest = Vec::new();
        let mut configs = Vec::new();
        let mut layer_order: Vec<DiffId> = Vec::new();
        for id in &ids {
            let record = self.record(id)?.ok_or_else(|| CacheError::NotCached {
                reference: id.to_string(),
                cache: self.root().to_path_buf(),
            })?;
            configs.push((archive::config_member(id), self.read_config(id)?));
            manifest.push(ManifestEntry {
                config: archive::config_member(id),
                repo_tags: record.repo_tags.clone(),
                layers: record.diff_ids.iter().map(archive::layer_member).collect(),
            });
            for diff_id in record.diff_ids {
                if !layer_order.contains(&diff_id) {
                    layer_order.push(diff_id);
                }
            }
        }
        let mut builder = PartsBuilder::default();
        builder.member(
            MANIFEST_PATH,
            &serde_json::to_vec(&manifest).expect("manifest serialises"),
        );
        for (path, config) in &configs {
            builder.member(path, config);
        }
        let (mut layers, mut omitted, mut saved_bytes) = (Vec::new(), Vec::new(), 0);
        for diff_id in layer_order {
            let info = self.layer(&diff_id)?;
            if omit.contains(&diff_id) {
                omitted.push(diff_id);
                saved_bytes += info.compressed_size;
            } else {
                layers.push(diff_id);
                builder.layer(info);
            }
        }
        let parts = builder.finish();
        let (mut raw_bytes, mut compressed_bytes) = (0, 0);
        for part in &parts {
            let (raw, compressed) = match part {
                Part::Inline { raw, zstd } => (raw.len() as u64, zstd.len() as u64),
                Part::Layer(info) => (info.raw_size, info.compressed_size),
            };
            raw_bytes += raw;
            compressed_bytes += compressed;
        }
        Ok(ArchivePlan {
            images: ids,
            layers,
            omitted,
            compressed_bytes,
            raw_bytes,
            saved_bytes,
            parts,
        })
    }

    /// Write the planned archive to `out`; returns the bytes written. Every layer is checked
    /// against its sha256 before its first byte is written (once per process) and again while
    /// it streams; a mismatch stops the archive with an error naming the layer.
    pub fn write_archive(
        &self,
        plan: &ArchivePlan,
        format: ArchiveFormat,
        out: impl Write,
    ) -> Result<u64, CacheError> {
        let _shared = self.inner.locks.shared()?;
        let mut out = Counting {
            inner: out,
            bytes: 0,
        };
        match format {
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
    pub fn archive_reader(&self, plan: ArchivePlan, format: ArchiveFormat) -> ArchiveReader {
        let (reader, writer) = tokio::io::duplex(PIPE_BUFFER);
        let bridge = tokio_util::io::SyncIoBridge::new(writer);
        let cache = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            cache.write_archive(&plan, format, bridge).map(drop)
        });
        ArchiveReader {
            pipe: reader,
            task: Some(task),
        }
    }

    fn write_parts(
        &self,
        plan: &ArchivePlan,
        out: &mut impl Write,
        compressed: bool,
    ) -> Result<(), CacheError> {
        for part in &plan.parts {
            match part {
                Part::Inline { raw, zstd } => out
                    .write_all(if compressed { zstd } else { raw })
                    .map_err(|e| self.writer_error(e))?,
                Part::Layer(info) => self.write_layer(info, out, compressed)?,
            }
        }
        Ok(())
    }

    fn write_layer(
        &self,
        info: &LayerInfo,
        out: &mut impl Write,
        compressed: bool,
    ) -> Result<(), CacheError> {
        self.check_layer_once(info)?;
        let source = self.open_layer(info)?;
        let copied = if compressed {
            copy_checked(source, out)
        } else {
            zstd::stream::read::Decoder::new(source)
                .map_err(Copy::Read)
                .and_then(|decoder| copy_checked(decoder, out))
        };
        match copied {
            Ok(()) => Ok(()),
            Err(Copy::Read(e)) => Err(self.corrupt_layer(info, e.to_string())),
            Err(Copy::Write(e)) => Err(self.writer_error(e)),
        }
    }

    /// Hash the whole object before sending any of it, so corrupt data never leaves the cache.
    fn check_layer_once(&self, info: &LayerInfo) -> Result<(), CacheError> {
        if self
            .inner
            .verified
            .lock()
            .expect("verified set")
            .contains(&info.diff_id)
        {
            return Ok(());
        }
        let mut reader = self.open_layer(info)?;
        io::copy(&mut reader, &mut io::sink())
            .map_err(|e| self.corrupt_layer(info, e.to_string()))?;
        self.inner
            .verified
            .lock()
            .expect("verified set")
            .insert(info.diff_id);
        Ok(())
    }

    fn open_layer(&self, info: &LayerInfo) -> Result<VerifyingReader, CacheError> {
        let path = self.layer_path(&info.diff_id);
        VerifyingReader::open(&path, info).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => CacheError::Missing {
                what: format!("layer {}", info.diff_id),
                path,
            },
            _ => CacheError::Io { path, source: e },
        })
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

    fn corrupt_layer(&self, info: &LayerInfo, detail: String) -> CacheError {
        let path = self.layer_path(&info.diff_id);
        self.inner
            .verified
            .lock()
            .expect("verified set")
            .remove(&info.diff_id);
        self.quarantine(&path);
        CacheError::Corrupt {
            what: format!("layer {}", info.diff_id),
            path,
            detail,
        }
    }

    fn writer_error(&self, e: io::Error) -> CacheError {
        CacheError::Writer(e.to_string())
    }
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

/// Copy keeping read errors (a damaged object) apart from write errors (the consumer went away).
fn copy_checked(mut from: impl Read, out: &mut impl Write) -> Result<(), Copy> {
    let mut buf = vec![0u8; 256 << 10];
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
