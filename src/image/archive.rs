//! The archive formats images travel in, both plain tars:
//! - docker-archive (`docker save` / `docker load`): `manifest.json`, one config JSON per image,
//!   one file per layer;
//! - the OCI image layout (`ctr export` / `ctr import`): `oci-layout`, `index.json` naming the
//!   images, and every blob (index, manifests, configs, layers) under `blobs/sha256/<hex>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::{DiffId, Digest, ImageId};
use super::platform::Platform;
use super::reference::ImageRef;

pub const MANIFEST_PATH: &str = "manifest.json";
pub const INDEX_PATH: &str = "index.json";
pub const LAYOUT_PATH: &str = "oci-layout";
pub const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// containerd's name for an index entry: a full reference, used as the image's name on import.
pub const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// OCI's name for an index entry: often only the tag.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
pub const BLOCK: u64 = 512;
/// A tar archive ends with two zero blocks.
pub const END_OF_ARCHIVE: [u8; 1024] = [0; 1024];

/// One image in `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// The part of an image config we need: the layer chain and the platform.
#[derive(Debug, Deserialize)]
pub struct ImageConfig {
    pub rootfs: RootFs,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl ImageConfig {
    /// What the image was built for; `None` when the config does not say.
    pub fn platform(&self) -> Option<Platform> {
        (!self.os.is_empty() && !self.architecture.is_empty())
            .then(|| Platform::new(&self.os, &self.architecture, self.variant.as_deref()))
    }
}

#[derive(Debug, Deserialize)]
pub struct RootFs {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub diff_ids: Vec<DiffId>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// An OCI layout's `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LayoutIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<LayoutEntry>,
}

/// One image of an OCI layout: its top manifest (or index) and the names it is imported as.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LayoutEntry {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl LayoutEntry {
    /// The full reference the entry names, as containerd reads it: its name annotation, else an
    /// OCI ref name that is more than a tag.
    pub fn name(&self) -> Option<ImageRef> {
        let full = self.annotations.get(NAME_ANNOTATION).or_else(|| {
            self.annotations
                .get(REF_NAME_ANNOTATION)
                .filter(|name| name.contains('/') || name.contains(':'))
        })?;
        ImageRef::parse(full).ok()
    }
}

/// Where a blob lives inside an OCI layout.
pub fn blob_member(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Where we put an image's config inside archives we write (the name `docker save` uses).
pub fn config_member(id: &ImageId) -> String {
    format!("{}.json", id.hex())
}

/// Where we put a layer inside archives we write. Docker reads layer paths from
/// `manifest.json`, so any unique name works; the diff ID makes it stable across images.
pub fn layer_member(diff_id: &DiffId) -> String {
    format!("{}/layer.tar", diff_id.hex())
}

/// A deterministic tar header (owner root, mode 0644, mtime 0) for a regular file.
pub fn file_header(path: &str, size: u64) -> [u8; BLOCK as usize] {
    let mut header = tar::Header::new_gnu();
    header
        .set_path(path)
        .expect("member names we generate are short ASCII");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    *header.as_bytes()
}

/// Zero bytes that follow `size` bytes of member data up to the next block boundary.
pub fn padding(size: u64) -> &'static [u8] {
    const ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];
    let rem = (size % BLOCK) as usize;
    if rem == 0 {
        &[]
    } else {
        &ZEROS[..BLOCK as usize - rem]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn headers_and_padding_form_a_tar_that_the_tar_crate_reads() {
        let mut bytes = Vec::new();
        for (name, data) in [("a/layer.tar", &b"hello"[..]), ("b.json", &[7u8; 512][..])] {
            bytes.extend_from_slice(&file_header(name, data.len() as u64));
            bytes.extend_from_slice(data);
            bytes.extend_from_slice(padding(data.len() as u64));
        }
        bytes.extend_from_slice(&END_OF_ARCHIVE);
        assert_eq!(bytes.len() % 512, 0);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            seen.push((entry.path().unwrap().display().to_string(), data.len()));
        }
        assert_eq!(
            seen,
            vec![("a/layer.tar".to_string(), 5), ("b.json".to_string(), 512)]
        );
    }

    #[test]
    fn manifest_accepts_null_repo_tags() {
        let entries: Vec<ManifestEntry> = serde_json::from_str(
            r#"[{"Config":"x.json","RepoTags":null,"Layers":["a/layer.tar"]}]"#,
        )
        .unwrap();
        assert!(entries[0].repo_tags.is_empty());
    }
}
