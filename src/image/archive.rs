//! The docker-archive format (`docker save` / `docker load`): `manifest.json`, one config JSON
//! per image, one tar per layer, all inside a plain tar.

use serde::{Deserialize, Serialize};

use super::digest::{DiffId, ImageId};

pub const MANIFEST_PATH: &str = "manifest.json";
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

/// The part of an image config we need: the layer chain.
#[derive(Debug, Deserialize)]
pub struct ImageConfig {
    pub rootfs: RootFs,
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
