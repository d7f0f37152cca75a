//! `verify` (check every object) and `prune` (drop what no image refers to).

use std::collections::HashSet;
use std::fs;
use std::io;

use serde::Serialize;

use super::layer::{self, VerifyingReader};
use super::{Cache, CacheError, atomic, object_names};
use crate::image::digest::{Digest, Hashing};

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub images: usize,
    pub layers: usize,
    pub configs: usize,
    pub blobs: usize,
    /// One line per problem, naming the object; damaged objects were moved to `corrupt/`.
    pub problems: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub removed_images: usize,
    pub removed_layers: usize,
    pub removed_configs: usize,
    pub removed_blobs: usize,
    pub freed_bytes: u64,
}

impl Cache {
    /// Check every layer object (compressed sha256 and diff ID), every served blob (sha256), every
    /// config (image ID) and that every image has all its objects. Damaged objects are moved
    /// aside so the next pull refetches them.
    pub fn verify(&self) -> Result<VerifyReport, CacheError> {
        let _shared = self.inner.locks.shared()?;
        let mut report = VerifyReport::default();
        for name in object_names(&self.inner.root.join("layers"), ".zst")? {
            let Ok(diff_id) = Digest::parse(&name) else {
                continue;
            };
            report.layers += 1;
            if let Err(problem) = self.verify_layer(&diff_id) {
                self.quarantine(&self.layer_path(&diff_id));
                report.problems.push(problem);
            }
        }
        for name in object_names(&self.inner.root.join("configs"), ".json")? {
            let Ok(id) = Digest::parse(&name) else {
                continue;
            };
            report.configs += 1;
            if let Err(e) = self.read_config(&id) {
                report.problems.push(e.to_string());
            }
        }
        let blobs_dir = self.inner.root.join("blobs").join("sha256");
        for name in object_names(&blobs_dir, "")? {
            let Ok(digest) = Digest::parse(&name) else {
                continue;
            };
            report.blobs += 1;
            let path = self.blob_path(&digest);
            let mut hashing = Hashing::new(io::sink());
            let checked = fs::File::open(&path).and_then(|mut f| io::copy(&mut f, &mut hashing));
            let problem = match checked {
                Err(e) => Some(format!("blob {digest} ({}): {e}", path.display())),
                Ok(_) => {
                    let (actual, _, _) = hashing.finish();
                    (actual != digest).then(|| {
                        format!(
                            "blob {digest} ({}) is corrupt: its sha256 is {actual}",
                            path.display()
                        )
                    })
                }
            };
            if let Some(problem) = problem {
                self.quarantine(&path);
                report.problems.push(problem);
            }
        }
        for record in self.images()? {
            report.images += 1;
            let missing_config =
                (!self.config_path(&record.id).is_file()).then(|| "its config".to_string());
            let missing_layers = self.layer_blobs(&record).err().map(|e| e.to_string());
            for what in missing_config.into_iter().chain(missing_layers) {
                report.problems.push(format!(
                    "image {} ({}) lacks {what}",
                    record.id,
                    record.repo_tags.join(", ")
                ));
            }
        }
        Ok(report)
    }

    fn verify_layer(&self, diff_id: &Digest) -> Result<(), String> {
        let path = self.layer_path(diff_id);
        let what = format!("layer {diff_id} ({})", path.display());
        let info = layer::read_info(&path, *diff_id).map_err(|e| format!("{what}: {e}"))?;
        let reader = VerifyingReader::layer(&path, &info).map_err(|e| format!("{what}: {e}"))?;
        let mut decoded = Hashing::new(io::sink());
        zstd::stream::copy_decode(reader, &mut decoded).map_err(|e| format!("{what}: {e}"))?;
        let (actual, raw_size, _) = decoded.finish();
        if actual != *diff_id || raw_size != info.raw_size {
            return Err(format!(
                "{what} is corrupt: it decompresses to {actual} ({raw_size} bytes)"
            ));
        }
        Ok(())
    }

    /// Remove layers and configs no image refers to, and leftovers of interrupted runs; with
    /// `all`, remove every image too. Waits for running ingests and exports to finish.
    pub fn prune(&self, all: bool) -> Result<PruneReport, CacheError> {
        let _exclusive = self.inner.locks.exclusive()?;
        let _index = self.inner.locks.index()?;
        let mut report = PruneReport::default();
        let records = self.images()?;
        if all {
            for record in &records {
                self.remove(&self.record_path(&record.id), &mut report.freed_bytes)?;
                report.removed_images += 1;
            }
        }
        let referenced = if all {
            Referenced::default()
        } else {
            self.referenced(&records)
        };
        let Referenced {
            layers: keep_layers,
            configs: keep_configs,
            blobs: keep_blobs,
        } = referenced;
        for (sub, suffix, keep, counter) in [
            ("layers", ".zst", &keep_layers, &mut report.removed_layers),
            (
                "configs",
                ".json",
                &keep_configs,
                &mut report.removed_configs,
            ),
            ("blobs/sha256", "", &keep_blobs, &mut report.removed_blobs),
        ] {
            let dir = self.inner.root.join(sub);
            for entry in fs::read_dir(&dir).map_err(CacheError::io(&dir))? {
                let entry = entry.map_err(CacheError::io(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let stem = name.strip_suffix(suffix).unwrap_or(&name);
                let is_object = !atomic::is_temp_name(&name) && name.ends_with(suffix);
                if is_object && keep.contains(stem) {
                    continue;
                }
                self.remove(&entry.path(), &mut report.freed_bytes)?;
                if is_object {
                    *counter += 1;
                }
            }
        }
        let corrupt = self.inner.root.join("corrupt");
        for entry in fs::read_dir(&corrupt).map_err(CacheError::io(&corrupt))? {
            let entry = entry.map_err(CacheError::io(&corrupt))?;
            self.remove(&entry.path(), &mut report.freed_bytes)?;
        }
        Ok(report)
    }

    /// The objects `records` refer to, by hex digest.
    fn referenced(&self, records: &[super::ImageRecord]) -> Referenced {
        let mut found = Referenced::default();
        for record in records {
            found.configs.insert(record.id.hex());
            found.layers.extend(record.diff_ids.iter().map(Digest::hex));
            for document in record.manifest.iter().chain(&record.index) {
                found.blobs.insert(document.digest.hex());
            }
            if let Some(manifest) = &record.manifest
                && let Ok(image) = self.image_manifest(manifest)
            {
                found
                    .blobs
                    .extend(image.layers.iter().map(|layer| layer.digest.hex()));
            }
        }
        found
    }

    /// After a failed ingest: removes the objects it `created` that no record refers to. Only
    /// when no other run holds the cache (the exclusive lock is free at once): another run's
    /// ingest may be about to refer to them; then they stay for `cache prune`.
    pub(super) fn remove_orphans(&self, created: &[std::path::PathBuf]) {
        if created.is_empty() {
            return;
        }
        let Ok(Some(_exclusive)) = self.inner.locks.try_exclusive() else {
            tracing::debug!(
                "{} object(s) of a failed ingest left for `cache prune`: the cache is in use",
                created.len()
            );
            return;
        };
        let Ok(_index) = self.inner.locks.index() else {
            return;
        };
        let Ok(records) = self.images() else {
            return;
        };
        let referenced = self.referenced(&records);
        let mut freed = 0;
        for path in created {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let stem = name.split('.').next().unwrap_or_default();
            let kept = referenced.layers.contains(stem)
                || referenced.configs.contains(stem)
                || referenced.blobs.contains(stem);
            if !kept && let Err(e) = self.remove(path, &mut freed) {
                tracing::debug!("{e}");
            }
        }
    }

    fn remove(&self, path: &std::path::Path, freed: &mut u64) -> Result<(), CacheError> {
        *freed += fs::metadata(path).map_or(0, |m| m.len());
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CacheError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Objects image records refer to, by hex digest.
#[derive(Default)]
struct Referenced {
    layers: HashSet<String>,
    configs: HashSet<String>,
    blobs: HashSet<String>,
}
