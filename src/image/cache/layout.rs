//! The images of an OCI image layout (`ctr export`, newer `docker save`), assembled from its
//! `index.json` once the whole stream has been read.
//!
//! An image keeps the registry's manifest (and index) only when every one of its layers came
//! as a served blob: then a node can be sent exactly what the registry served. Layers that came
//! uncompressed were turned into layer objects, so such an image is sent like one from
//! `docker save`.

use super::ImageRecord;
use super::ingest::{Assembled, Collected};
use crate::image::archive::MANIFEST_PATH;
use crate::image::archive::{INDEX_PATH, ImageConfig, LayoutIndex, ManifestEntry, blob_member};
use crate::image::digest::Digest;
use crate::image::manifest::{self, Content, Descriptor};
use crate::image::reference::ImageRef;

impl Collected {
    pub(super) fn oci_images(&self) -> Result<Vec<Assembled<'_>>, String> {
        let index: LayoutIndex = serde_json::from_slice(&self.json[INDEX_PATH])
            .map_err(|e| format!("{INDEX_PATH}: {e}"))?;
        let mut images = Vec::new();
        for entry in &index.manifests {
            let top = Descriptor {
                media_type: entry.media_type.clone(),
                digest: entry.digest,
                size: entry.size,
                platform: None,
            };
            let name = entry.name();
            let bytes = self.blob(&top.digest)?;
            let parsed = manifest::parse(Some(&top.media_type), bytes.to_vec().into())
                .map_err(|e| format!("manifest {}: {e}", top.digest))?;
            match parsed.content {
                Content::Image(_) => images.push(self.image(&top, None, name.as_ref())?),
                Content::Index(platforms) => {
                    // `ctr export --platform` keeps the whole index but only one platform's
                    // content: the others are simply not here.
                    let present: Vec<&Descriptor> = (platforms.manifests.iter())
                        .filter(|m| self.json.contains_key(&blob_member(&m.digest)))
                        .collect();
                    if present.is_empty() {
                        return Err(format!(
                            "none of the manifests of index {} is in the archive",
                            top.digest
                        ));
                    }
                    for manifest in present {
                        images.push(self.image(manifest, Some(&top), name.as_ref())?);
                    }
                }
            }
        }
        Ok(images)
    }

    fn blob(&self, digest: &Digest) -> Result<&[u8], String> {
        let bytes = self
            .json
            .get(&blob_member(digest))
            .ok_or_else(|| format!("blob {digest} is not in the archive"))?;
        if Digest::of(bytes) != *digest {
            return Err(format!("blob {digest} does not have that digest"));
        }
        Ok(bytes)
    }

    /// One image manifest, checked against its config and the layers in the archive.
    fn image<'a>(
        &'a self,
        manifest: &Descriptor,
        index: Option<&Descriptor>,
        name: Option<&ImageRef>,
    ) -> Result<Assembled<'a>, String> {
        let bytes = self.blob(&manifest.digest)?;
        let parsed = manifest::parse(Some(&manifest.media_type), bytes.to_vec().into())
            .map_err(|e| format!("manifest {}: {e}", manifest.digest))?;
        let image = parsed
            .image()
            .ok_or_else(|| format!("manifest {} is an index inside an index", manifest.digest))?;
        let config = self.blob(&image.config.digest)?;
        let parsed_config: ImageConfig = serde_json::from_slice(config)
            .map_err(|e| format!("config {}: {e}", image.config.digest))?;
        let diff_ids = parsed_config.rootfs.diff_ids.clone();
        if diff_ids.len() != image.layers.len() {
            return Err(format!(
                "manifest {} lists {} layers but its config has {} diff_ids",
                manifest.digest,
                image.layers.len(),
                diff_ids.len()
            ));
        }
        let mut all_served = true;
        for (layer, diff_id) in image.layers.iter().zip(&diff_ids) {
            let member = blob_member(&layer.digest);
            if self.served.contains_key(&member) {
                continue;
            }
            let info = self
                .layers
                .get(&member)
                .ok_or_else(|| format!("layer {} is not in the archive", layer.digest))?;
            if info.diff_id != *diff_id {
                return Err(format!(
                    "layer {} has diff ID {} but the config expects {diff_id}",
                    layer.digest, info.diff_id
                ));
            }
            all_served = false;
        }
        let top = index.unwrap_or(manifest);
        let mut repo_tags: Vec<String> = name.and_then(ImageRef::repo_tag).into_iter().collect();
        for tag in self.docker_tags(&image.config.digest) {
            if !repo_tags.contains(&tag) {
                repo_tags.push(tag);
            }
        }
        let mut documents = Vec::new();
        if all_served {
            documents.push((manifest.clone(), bytes));
            if let Some(index) = index {
                documents.push((index.clone(), self.blob(&index.digest)?));
            }
        }
        let record = ImageRecord {
            id: image.config.digest,
            repo_tags,
            repo_digests: match name {
                Some(name) if all_served => vec![format!("{}@{}", name.repository(), top.digest)],
                _ => Vec::new(),
            },
            platform: parsed_config.platform(),
            diff_ids,
            manifest: all_served.then(|| manifest.clone()),
            index: index.filter(|_| all_served).cloned(),
        };
        Ok(Assembled {
            config,
            record,
            documents,
        })
    }

    /// The tags a `manifest.json` next to the index gives the image with this config (Docker
    /// and `ctr export` write one for `docker load`).
    fn docker_tags(&self, config: &Digest) -> Vec<String> {
        let Some(entries) = self
            .json
            .get(MANIFEST_PATH)
            .and_then(|bytes| serde_json::from_slice::<Vec<ManifestEntry>>(bytes).ok())
        else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter(|entry| self.resolve(&entry.config) == blob_member(config))
            .flat_map(|entry| entry.repo_tags)
            .collect()
    }
}
