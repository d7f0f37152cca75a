//! Synthetic image archives: test fixtures and benchmark input without a registry — docker
//! archives (`docker save`), and OCI layouts shaped like a registry's images (`ctr export`).
//!
//! Layers are generated as they are written (a 1 GB image needs no 1 GB buffer); their content
//! is pseudo-random text over a small alphabet, which compresses roughly like real binaries.

use std::io::{self, Write};

use super::archive::{
    self, END_OF_ARCHIVE, INDEX_PATH, LAYOUT_CONTENT, LAYOUT_PATH, MANIFEST_PATH, ManifestEntry,
    NAME_ANNOTATION,
};
use super::digest::{DiffId, Digest, Hashing, ImageId};

/// One layer: `files` files of `file_size` bytes each, content derived from `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    pub seed: u64,
    pub files: usize,
    pub file_size: usize,
}

/// One image: its layers, base first, and its tags.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub repo_tags: Vec<String>,
    pub layers: Vec<LayerSpec>,
}

/// Where layers go inside the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Docker ≤ 24: `<hex>/layer.tar`, `<id>.json`.
    Classic,
    /// Docker ≥ 25: `blobs/sha256/<hex>` for layers and configs.
    Oci,
}

impl LayerSpec {
    /// Write the layer tar (files, then the end blocks).
    pub fn write_tar(&self, out: &mut impl Write) -> io::Result<()> {
        let mut rng = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut data = vec![0u8; self.file_size];
        for index in 0..self.files {
            for byte in data.iter_mut() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                *byte = b"etaoin shrdlu\n{}"[(rng % 16) as usize];
            }
            let name = format!("layer-{}/file-{index}", self.seed);
            out.write_all(&archive::file_header(&name, data.len() as u64))?;
            out.write_all(&data)?;
            out.write_all(archive::padding(data.len() as u64))?;
        }
        out.write_all(&END_OF_ARCHIVE)
    }

    pub fn diff_id(&self) -> DiffId {
        let mut hashing = Hashing::new(io::sink());
        self.write_tar(&mut hashing).expect("writing to a sink");
        hashing.finish().0
    }

    pub fn tar_size(&self) -> u64 {
        let per_file = archive::BLOCK + self.file_size.div_ceil(512) as u64 * archive::BLOCK;
        per_file * self.files as u64 + END_OF_ARCHIVE.len() as u64
    }
}

/// Write a docker-archive of `images` (layers shared between images are written once) and
/// return the image IDs. Layers come first and manifest.json last, as `docker save` does.
pub fn write_archive(
    images: &[ImageSpec],
    layout: Layout,
    out: &mut impl Write,
) -> io::Result<Vec<ImageId>> {
    let mut written: Vec<(LayerSpec, DiffId)> = Vec::new();
    let path_of = |digest: &Digest, is_config: bool| match layout {
        Layout::Classic if is_config => archive::config_member(digest),
        Layout::Classic => archive::layer_member(digest),
        Layout::Oci => format!("blobs/sha256/{}", digest.hex()),
    };
    for layer in images.iter().flat_map(|image| &image.layers) {
        if written.iter().any(|(spec, _)| spec == layer) {
            continue;
        }
        let diff_id = layer.diff_id();
        out.write_all(&archive::file_header(
            &path_of(&diff_id, false),
            layer.tar_size(),
        ))?;
        layer.write_tar(out)?;
        written.push((*layer, diff_id));
    }
    let mut manifest = Vec::new();
    let mut ids = Vec::new();
    for image in images {
        let diff_ids: Vec<DiffId> = image
            .layers
            .iter()
            .map(|layer| {
                written
                    .iter()
                    .find(|(spec, _)| spec == layer)
                    .expect("written above")
                    .1
            })
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("config serialises");
        let id = Digest::of(&config);
        write_member(out, &path_of(&id, true), &config)?;
        manifest.push(ManifestEntry {
            config: path_of(&id, true),
            repo_tags: image.repo_tags.clone(),
            layers: diff_ids.iter().map(|d| path_of(d, false)).collect(),
        });
        ids.push(id);
    }
    write_member(
        out,
        MANIFEST_PATH,
        &serde_json::to_vec(&manifest).expect("manifest serialises"),
    )?;
    out.write_all(&END_OF_ARCHIVE)?;
    Ok(ids)
}

/// What [`write_oci_layout`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLayout {
    /// Each image's manifest digest and ID (config digest), in order.
    pub manifests: Vec<Digest>,
    pub ids: Vec<ImageId>,
    /// The index's digest, when the images are the platforms of one.
    pub index: Option<Digest>,
    /// Every layer blob (gzip) written.
    pub layer_blobs: Vec<Digest>,
}

/// An OCI image layout as a registry serves images and `ctr export` writes them: gzip layer
/// blobs, OCI manifests. With `index = Some((name, architectures))` the images are the
/// platforms of one index named `name` (linux/`architectures[i]`); otherwise each image is its
/// own entry, named by its first tag. Layers are compressed in memory: for small fixtures.
pub fn write_oci_layout(
    images: &[ImageSpec],
    index: Option<(&str, &[&str])>,
    out: &mut impl Write,
) -> io::Result<OciLayout> {
    let descriptor = |media_type: &str, bytes: &[u8]| serde_json::json!({"mediaType": media_type, "digest": Digest::of(bytes), "size": bytes.len()});
    write_member(out, LAYOUT_PATH, LAYOUT_CONTENT)?;
    let mut blobs: Vec<Digest> = Vec::new();
    let mut blob = |out: &mut dyn Write, bytes: &[u8]| -> io::Result<Digest> {
        let digest = Digest::of(bytes);
        if !blobs.contains(&digest) {
            write_member(out, &archive::blob_member(&digest), bytes)?;
            blobs.push(digest);
        }
        Ok(digest)
    };
    let mut layout = OciLayout {
        manifests: Vec::new(),
        ids: Vec::new(),
        index: None,
        layer_blobs: Vec::new(),
    };
    let mut entries = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let architecture = index.map_or("amd64", |(_, archs)| archs[i]);
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for spec in &image.layers {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            spec.write_tar(&mut gz)?;
            let gz = gz.finish()?;
            let digest = blob(out, &gz)?;
            if !layout.layer_blobs.contains(&digest) {
                layout.layer_blobs.push(digest);
            }
            layers.push(descriptor(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                &gz,
            ));
            diff_ids.push(spec.diff_id());
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": architecture,
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("config serialises");
        layout.ids.push(blob(out, &config)?);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers,
        }))
        .expect("manifest serialises");
        layout.manifests.push(blob(out, &manifest)?);
        let mut entry = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
        match index {
            Some(_) => {
                entry["platform"] =
                    serde_json::json!({"os": "linux", "architecture": architecture});
            }
            None => {
                entry["annotations"] = serde_json::json!({NAME_ANNOTATION: image.repo_tags[0]});
            }
        }
        entries.push(entry);
    }
    if let Some((name, _)) = index {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
        .expect("index serialises");
        layout.index = Some(blob(out, &bytes)?);
        let mut entry = descriptor("application/vnd.oci.image.index.v1+json", &bytes);
        entry["annotations"] = serde_json::json!({NAME_ANNOTATION: name});
        entries = vec![entry];
    }
    let index_json =
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries}))
            .expect("index.json serialises");
    write_member(out, INDEX_PATH, &index_json)?;
    out.write_all(&END_OF_ARCHIVE)?;
    Ok(layout)
}

fn write_member(out: &mut (impl Write + ?Sized), path: &str, data: &[u8]) -> io::Result<()> {
    out.write_all(&archive::file_header(path, data.len() as u64))?;
    out.write_all(data)?;
    out.write_all(archive::padding(data.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_size_matches_what_is_written() {
        let spec = LayerSpec {
            seed: 7,
            files: 3,
            file_size: 1000,
        };
        let mut out = Vec::new();
        spec.write_tar(&mut out).unwrap();
        assert_eq!(out.len() as u64, spec.tar_size());
        assert_eq!(Digest::of(&out), spec.diff_id());
    }
}
