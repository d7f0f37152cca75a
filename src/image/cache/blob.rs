//! Blobs exactly as a registry (or `ctr export`) served them — manifests, indexes, compressed
//! layers — stored once by digest under `blobs/sha256/<hex>`. A node that is sent them ends
//! with the registry's digests, which a re-compressed copy could never give.

use std::io::{self, Read};
use std::path::PathBuf;

use super::atomic::{self, TempFile};
use super::layer::VerifyingReader;
use super::{Cache, CacheError, ImageRecord};
use crate::image::digest::{Digest, Hashing, ImageId};
use crate::image::manifest::{self, Descriptor, ImageManifest};

/// Manifests and configs are read whole; anything larger is not one.
const MAX_DOCUMENT: u64 = manifest::MAX_MANIFEST_SIZE;

impl Cache {
    pub(super) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .root
            .join("blobs")
            .join("sha256")
            .join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Store `size` bytes of `input` under `digest`, checking both before the blob becomes
    /// visible. A blob the cache already holds is not read again.
    pub fn store_blob(
        &self,
        input: impl Read,
        digest: &Digest,
        size: u64,
    ) -> Result<(), CacheError> {
        let path = self.blob_path(digest);
        if path.is_file() {
            return Ok(());
        }
        let dir = path.parent().expect("blob paths have a directory");
        let mut temp = Hashing::new(TempFile::new_in(dir).map_err(CacheError::io(dir))?);
        io::copy(&mut input.take(size + 1), &mut temp).map_err(CacheError::io(&path))?;
        let (actual, len, temp) = temp.finish();
        if actual != *digest || len != size {
            return Err(CacheError::Corrupt {
                what: format!("blob {digest}"),
                path,
                detail: format!("received {len} bytes with sha256 {actual}, expected {size} bytes"),
            });
        }
        temp.persist(&path).map_err(CacheError::io(&path))
    }

    /// Keep an image config (its sha256 is the image ID), checked.
    pub fn store_config(&self, config: &[u8], id: &ImageId) -> Result<(), CacheError> {
        let path = self.config_path(id);
        if Digest::of(config) != *id {
            return Err(CacheError::Corrupt {
                what: format!("config of image {id}"),
                path,
                detail: format!("its sha256 is {}", Digest::of(config)),
            });
        }
        if path.is_file() {
            return Ok(());
        }
        atomic::write_file(&path, config).map_err(CacheError::io(&path))
    }

    /// Record an image whose config and manifests the cache holds (its layers may still be
    /// arriving: it is complete once they are). Tags move to it as with an ingest.
    pub fn add_record(&self, record: ImageRecord) -> Result<(), CacheError> {
        self.commit_record(record)
    }

    /// A served blob, streamed and checked against its digest as it is read.
    pub fn open_blob(&self, blob: &Descriptor) -> Result<VerifyingReader, CacheError> {
        let path = self.blob_path(&blob.digest);
        VerifyingReader::open(
            &path,
            blob.digest,
            blob.size,
            format!("blob {}", blob.digest),
        )
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => CacheError::Missing {
                what: format!("blob {}", blob.digest),
                path,
            },
            _ => CacheError::Io { path, source: e },
        })
    }

    /// A small served blob (a manifest or an index), whole and checked.
    pub fn read_blob(&self, blob: &Descriptor) -> Result<Vec<u8>, CacheError> {
        if blob.size > MAX_DOCUMENT {
            return Err(CacheError::Corrupt {
                what: format!("blob {}", blob.digest),
                path: self.blob_path(&blob.digest),
                detail: format!("{} bytes is too large for a manifest", blob.size),
            });
        }
        let mut bytes = Vec::with_capacity(blob.size as usize);
        self.open_blob(blob)?
            .read_to_end(&mut bytes)
            .map_err(|e| self.corrupt_blob(blob, e.to_string()))?;
        Ok(bytes)
    }

    /// The config and layers a cached image manifest lists.
    pub fn image_manifest(&self, blob: &Descriptor) -> Result<ImageManifest, CacheError> {
        let bytes = self.read_blob(blob)?;
        manifest::parse(Some(&blob.media_type), bytes.into())
            .ok()
            .and_then(|parsed| parsed.image().cloned())
            .ok_or_else(|| {
                self.corrupt_blob(
                    blob,
                    format!("it is not an image manifest ({})", blob.media_type),
                )
            })
    }

    fn corrupt_blob(&self, blob: &Descriptor, detail: String) -> CacheError {
        let path = self.blob_path(&blob.digest);
        self.quarantine(&path);
        CacheError::Corrupt {
            what: format!("blob {}", blob.digest),
            path,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_stored_only_when_its_digest_and_size_match() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), None).unwrap();
        let data = b"layer bytes as served".repeat(100);
        let blob = Descriptor::of("application/vnd.oci.image.layer.v1.tar+gzip", &data);
        let err = cache
            .store_blob(&data[1..], &blob.digest, blob.size)
            .unwrap_err();
        assert!(matches!(err, CacheError::Corrupt { .. }), "{err}");
        assert!(
            !cache.has_blob(&blob.digest),
            "nothing half-written is visible"
        );
        cache
            .store_blob(&data[..], &blob.digest, blob.size)
            .unwrap();
        assert!(cache.has_blob(&blob.digest));
        let mut back = Vec::new();
        cache
            .open_blob(&blob)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let leftovers = std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 1, "no temp file left");
    }

    #[test]
    fn a_stored_manifest_is_read_back_parsed_and_a_damaged_one_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), None).unwrap();
        let layer = Descriptor::of("application/vnd.oci.image.layer.v1.tar+gzip", b"l");
        let config = Descriptor::of("application/vnd.oci.image.config.v1+json", b"{}");
        let text = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [layer],
        })
        .to_string();
        let blob = Descriptor::of(
            "application/vnd.oci.image.manifest.v1+json",
            text.as_bytes(),
        );
        cache
            .store_blob(text.as_bytes(), &blob.digest, blob.size)
            .unwrap();
        let parsed = cache.image_manifest(&blob).unwrap();
        assert_eq!(
            (parsed.config.digest, parsed.layers.len()),
            (config.digest, 1)
        );
        std::fs::write(cache.blob_path(&blob.digest), text.replace("2", "3")).unwrap();
        let err = cache.image_manifest(&blob).unwrap_err();
        assert!(matches!(err, CacheError::Corrupt { .. }), "{err}");
        assert!(!cache.has_blob(&blob.digest), "moved to corrupt/");
    }
}
