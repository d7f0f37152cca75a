//! Blobs being downloaded into the cache, readable while they arrive.
//!
//! A download writes into its temp file; every reader (one per node being sent the blob)
//! follows the bytes already written, waiting for more, and sees the download's outcome at
//! the end. The file is the buffer: a slow reader falls behind without holding back the
//! download or the other readers, and memory does not grow with the blob. When the download
//! ends well the temp file is renamed to the blob's name; readers keep their open file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

use super::atomic::TempFile;
use super::{Cache, CacheError};
use crate::image::digest::{Digest, Hashing};
use crate::image::manifest::Descriptor;

/// The downloads under way in this process, by digest.
#[derive(Default)]
pub(super) struct Pending {
    downloads: Mutex<HashMap<Digest, Arc<Download>>>,
}

struct Download {
    /// The temp file, for readers (positioned reads: its offset is the writer's).
    file: File,
    size: u64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    written: u64,
    /// `Some` once the download ended: `Err` says why it failed.
    outcome: Option<Result<(), String>>,
}

/// The writing end of a download; dropped without [`BlobWriter::finish`] it fails the
/// download (readers get an error, nothing is published).
pub struct BlobWriter {
    cache: Cache,
    blob: Descriptor,
    download: Arc<Download>,
    temp: Option<Hashing<TempFile>>,
}

impl Cache {
    /// Start storing `blob` from a stream, readable while it arrives; `None` when the cache
    /// holds it or another task is already downloading it.
    pub fn begin_blob(&self, blob: &Descriptor) -> Result<Option<BlobWriter>, CacheError> {
        let path = self.blob_path(&blob.digest);
        let mut downloads = self
            .inner
            .pending
            .downloads
            .lock()
            .expect("pending downloads");
        if path.is_file() || downloads.contains_key(&blob.digest) {
            return Ok(None);
        }
        let dir = path.parent().expect("blob paths have a directory");
        let mut temp = TempFile::new_in(dir).map_err(CacheError::io(dir))?;
        let file = temp.file().try_clone().map_err(CacheError::io(dir))?;
        let download = Arc::new(Download {
            file,
            size: blob.size,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        downloads.insert(blob.digest, download.clone());
        Ok(Some(BlobWriter {
            cache: self.clone(),
            blob: blob.clone(),
            download,
            temp: Some(Hashing::new(temp)),
        }))
    }

    /// Whether `digest` is being downloaded by this process.
    pub fn is_pending(&self, digest: &Digest) -> bool {
        self.pending_download(digest).is_some()
    }

    fn pending_download(&self, digest: &Digest) -> Option<Arc<Download>> {
        let downloads = self
            .inner
            .pending
            .downloads
            .lock()
            .expect("pending downloads");
        downloads.get(digest).cloned()
    }

    /// A reader of a blob being downloaded, from its first byte; `None` when it is not (any
    /// more) downloading: then it is in the cache, or nowhere.
    pub(super) fn follow_pending(&self, digest: &Digest) -> Option<PendingReader> {
        let download = self.pending_download(digest)?;
        Some(PendingReader {
            download,
            offset: 0,
            what: format!("blob {digest}"),
        })
    }
}

impl BlobWriter {
    pub fn digest(&self) -> Digest {
        self.blob.digest
    }

    /// Append the next bytes; readers see them at once.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), CacheError> {
        let temp = self.temp.as_mut().expect("written until finished");
        let path = self.cache.blob_path(&self.blob.digest);
        temp.write_all(bytes).map_err(CacheError::io(&path))?;
        let mut state = self.download.state.lock().expect("download state");
        state.written += bytes.len() as u64;
        self.download.changed.notify_all();
        Ok(())
    }

    /// Check the digest and size, publish the blob, and tell the readers.
    pub fn finish(mut self) -> Result<(), CacheError> {
        let path = self.cache.blob_path(&self.blob.digest);
        let (actual, len, temp) = self.temp.take().expect("finished once").finish();
        let published = if actual != self.blob.digest || len != self.blob.size {
            Err(CacheError::Corrupt {
                what: format!("blob {}", self.blob.digest),
                path: path.clone(),
                detail: format!(
                    "received {len} bytes with sha256 {actual}, expected {} bytes",
                    self.blob.size
                ),
            })
        } else {
            temp.persist(&path).map_err(CacheError::io(&path))
        };
        self.end(published.as_ref().map(drop).map_err(|e| e.to_string()));
        published
    }

    /// Give up (the download failed): readers get `reason`, nothing is published.
    pub fn fail(mut self, reason: String) {
        self.temp = None;
        self.end(Err(reason));
    }

    fn end(&mut self, outcome: Result<(), String>) {
        self.cache
            .inner
            .pending
            .downloads
            .lock()
            .expect("pending downloads")
            .remove(&self.blob.digest);
        let mut state = self.download.state.lock().expect("download state");
        state.outcome = Some(outcome);
        self.download.changed.notify_all();
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.temp.is_some() {
            self.temp = None;
            self.end(Err("the download was abandoned".into()));
        }
    }
}

/// Reads a blob while it downloads: blocks until more bytes are written, and ends with the
/// download's outcome (an error if it failed). For blocking threads (the archive writer).
pub(super) struct PendingReader {
    download: Arc<Download>,
    offset: u64,
    what: String,
}

impl Read for PendingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let download = &self.download;
        let mut state = download.state.lock().expect("download state");
        loop {
            if self.offset < state.written {
                let available = (state.written - self.offset).min(buf.len() as u64) as usize;
                drop(state);
                let n = download.file.read_at(&mut buf[..available], self.offset)?;
                self.offset += n as u64;
                return Ok(n);
            }
            match &state.outcome {
                Some(Ok(())) if self.offset == download.size => return Ok(0),
                Some(Ok(())) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} ended early", self.what),
                    ));
                }
                Some(Err(reason)) => {
                    return Err(io::Error::other(format!(
                        "{}: the download failed: {reason}",
                        self.what
                    )));
                }
                None => state = download.changed.wait(state).expect("download state"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(bytes: &[u8]) -> Descriptor {
        Descriptor::of("application/vnd.oci.image.layer.v1.tar+gzip", bytes)
    }

    #[test]
    fn readers_follow_a_download_and_see_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), None).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let blob = descriptor(&data);
        let mut writer = cache.begin_blob(&blob).unwrap().unwrap();
        assert!(
            cache.begin_blob(&blob).unwrap().is_none(),
            "one download per blob"
        );
        assert!(cache.is_pending(&blob.digest));
        let mut early = cache.follow_pending(&blob.digest).unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            early.read_to_end(&mut out).map(|_| out)
        });
        for chunk in data.chunks(7_000) {
            writer.write(chunk).unwrap();
            std::thread::yield_now();
        }
        let mut late = cache.follow_pending(&blob.digest).unwrap();
        writer.finish().unwrap();
        assert_eq!(
            reader.join().unwrap().unwrap(),
            data,
            "a reader that started first"
        );
        let mut out = Vec::new();
        late.read_to_end(&mut out).unwrap();
        assert_eq!(
            out, data,
            "a reader that started late, finishing after the rename"
        );
        assert!(cache.has_blob(&blob.digest) && !cache.is_pending(&blob.digest));
    }

    #[test]
    fn a_failed_or_wrong_download_fails_its_readers_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), None).unwrap();
        let data = b"some layer bytes".repeat(1000);
        let blob = descriptor(&data);
        let mut writer = cache.begin_blob(&blob).unwrap().unwrap();
        let mut reader = cache.follow_pending(&blob.digest).unwrap();
        writer.write(&data[..100]).unwrap();
        writer.fail("connection reset".into());
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
        assert!(!cache.has_blob(&blob.digest) && !cache.is_pending(&blob.digest));

        let mut writer = cache.begin_blob(&blob).unwrap().unwrap();
        let mut reader = cache.follow_pending(&blob.digest).unwrap();
        writer.write(&data[1..]).unwrap();
        writer.write(b"x").unwrap();
        assert!(matches!(writer.finish(), Err(CacheError::Corrupt { .. })));
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
        assert!(!cache.has_blob(&blob.digest));

        let writer = cache.begin_blob(&blob).unwrap().unwrap();
        drop(writer);
        assert!(
            !cache.is_pending(&blob.digest),
            "an abandoned download is no longer pending"
        );
        let leftovers = std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0, "no temp file left behind");
    }
}
