//! Layer objects: one uncompressed layer tar, compressed once, stored as
//! `layers/<diff-id-hex>.zst`.
//!
//! The file is the zstd frame(s) of the layer tar followed by a zstd *skippable* frame holding
//! the sha256 and length of the compressed bytes and the uncompressed size. Every file is thus
//! self-describing: two runs racing to store the same layer each rename a complete, consistent
//! file, and a reader needs nothing else to verify it. Only the data frames are ever sent; the
//! skippable frame stays home (zstd decoders would ignore it anyway).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::atomic::TempFile;
use crate::image::digest::{DiffId, Digest, Hashing};

/// zstd skippable frame magic (0x184D2A50..=0x184D2A5F); the low nibble marks ours.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const TRAILER_TAG: &[u8; 4] = b"dsl1";
const TRAILER_PAYLOAD: usize = 4 + 32 + 8 + 8;
pub const TRAILER_LEN: u64 = 8 + TRAILER_PAYLOAD as u64;

/// What a layer object's trailer records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    pub diff_id: DiffId,
    /// Size of the uncompressed layer tar.
    pub raw_size: u64,
    /// Size of the zstd data frames (what is sent over the wire).
    pub compressed_size: u64,
    /// sha256 of the zstd data frames.
    pub compressed_digest: Digest,
}

/// Why a layer object cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LayerObjectError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the trailer is missing or damaged")]
    BadTrailer,
}

/// Bytes of input per zstd worker job.
const JOB_SIZE: u32 = 1 << 20;

/// Compresses one layer tar into a temp file while hashing it.
pub struct LayerWriter {
    encoder: zstd::stream::write::Encoder<'static, Hashing<TempFile>>,
    raw: Hashing<io::Sink>,
}

impl LayerWriter {
    pub fn new(temp: TempFile, level: i32) -> io::Result<Self> {
        let mut encoder = zstd::stream::write::Encoder::new(Hashing::new(temp), level)?;
        // zstd -dc on the node checks this too: a second line of defence on the far side.
        encoder.include_checksum(true)?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        if workers > 1 {
            encoder.multithread(workers)?;
            // Each worker holds a job's input and output: zstd's default job (several windows)
            // made ingest peak above 64 MB; 1 MiB jobs cost no measurable speed or ratio.
            encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
        }
        Ok(LayerWriter {
            encoder,
            raw: Hashing::new(io::sink()),
        })
    }

    /// Finish compression and append the trailer; the temp file is ready to persist.
    pub fn finish(self) -> io::Result<(LayerInfo, TempFile)> {
        let (diff_id, raw_size, _) = self.raw.finish();
        let (compressed_digest, compressed_size, mut temp) = self.encoder.finish()?.finish();
        let info = LayerInfo {
            diff_id,
            raw_size,
            compressed_size,
            compressed_digest,
        };
        temp.file().write_all(&encode_trailer(&info))?;
        Ok((info, temp))
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.write(buf)?;
        self.raw.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

fn encode_trailer(info: &LayerInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(TRAILER_LEN as usize);
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(TRAILER_PAYLOAD as u32).to_le_bytes());
    out.extend_from_slice(TRAILER_TAG);
    out.extend_from_slice(info.compressed_digest.as_bytes());
    out.extend_from_slice(&info.compressed_size.to_le_bytes());
    out.extend_from_slice(&info.raw_size.to_le_bytes());
    out
}

/// Read a layer object's trailer; `diff_id` is the key the file is stored under.
pub fn read_info(path: &Path, diff_id: DiffId) -> Result<LayerInfo, LayerObjectError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < TRAILER_LEN {
        return Err(LayerObjectError::BadTrailer);
    }
    file.seek(SeekFrom::Start(len - TRAILER_LEN))?;
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact(&mut trailer)?;
    let field = |range: std::ops::Range<usize>| &trailer[range];
    let magic_ok = field(0..4) == SKIPPABLE_MAGIC.to_le_bytes()
        && field(4..8) == (TRAILER_PAYLOAD as u32).to_le_bytes()
        && field(8..12) == TRAILER_TAG;
    if !magic_ok {
        return Err(LayerObjectError::BadTrailer);
    }
    let compressed_digest = Digest::from_bytes(field(12..44).try_into().expect("32 bytes"));
    let compressed_size = u64::from_le_bytes(field(44..52).try_into().expect("8 bytes"));
    let raw_size = u64::from_le_bytes(field(52..60).try_into().expect("8 bytes"));
    if compressed_size != len - TRAILER_LEN {
        return Err(LayerObjectError::BadTrailer);
    }
    Ok(LayerInfo {
        diff_id,
        raw_size,
        compressed_size,
        compressed_digest,
    })
}

/// The first `len` bytes of a file, hashed as they are read; at their end the digest is compared
/// with the expected one and a mismatch is an `InvalidData` error. For a layer object, the
/// compressed data frames checked against its trailer; for a served blob, the whole file.
pub struct VerifyingReader {
    /// `None` once the end was reached and the digest checked.
    inner: Option<Hashing<io::Take<File>>>,
    expected: Digest,
    what: String,
}

impl VerifyingReader {
    /// `what` names the object in the mismatch error.
    pub fn open(path: &Path, expected: Digest, len: u64, what: String) -> io::Result<Self> {
        let file = File::open(path)?;
        Ok(VerifyingReader {
            inner: Some(Hashing::new(file.take(len))),
            expected,
            what: format!("{what} ({})", path.display()),
        })
    }

    /// A layer object's data frames.
    pub fn layer(path: &Path, info: &LayerInfo) -> io::Result<Self> {
        let what = format!("layer {}", info.diff_id);
        Self::open(path, info.compressed_digest, info.compressed_size, what)
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(0);
        };
        let n = inner.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        let (actual, _, _) = self.inner.take().expect("checked above").finish();
        if actual == self.expected {
            Ok(0)
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is corrupt: its sha256 is {actual}, expected {}",
                    self.what, self.expected
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, data: &[u8]) -> (LayerInfo, std::path::PathBuf) {
        let mut writer = LayerWriter::new(TempFile::new_in(dir).unwrap(), 3).unwrap();
        writer.write_all(data).unwrap();
        let (info, temp) = writer.finish().unwrap();
        let path = dir.join(format!("{}.zst", info.diff_id.hex()));
        temp.persist(&path).unwrap();
        (info, path)
    }

    #[test]
    fn trailer_round_trips_and_data_decompresses_to_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"layer bytes ".repeat(10_000);
        let (info, path) = store(dir.path(), &data);
        assert_eq!(info.diff_id, Digest::of(&data));
        assert_eq!(info.raw_size, data.len() as u64);
        assert_eq!(read_info(&path, info.diff_id).unwrap(), info);
        // The whole file (data + skippable trailer) is still a valid zstd stream.
        assert_eq!(zstd::decode_all(File::open(&path).unwrap()).unwrap(), data);
        let mut compressed = Vec::new();
        VerifyingReader::layer(&path, &info)
            .unwrap()
            .read_to_end(&mut compressed)
            .unwrap();
        assert_eq!(compressed.len() as u64, info.compressed_size);
    }

    #[test]
    fn a_flipped_byte_fails_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let (info, path) = store(dir.path(), &b"abc".repeat(5000));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let err = VerifyingReader::layer(&path, &info)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(&info.diff_id.to_string()), "{err}");
    }
}
