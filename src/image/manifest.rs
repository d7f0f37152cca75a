//! Manifests as a registry serves them: the raw bytes (what a node must receive to keep the
//! image's digest), their media type and digest, and the parts dropship reads (an index's
//! entries, an image manifest's config and layers).
//!
//! Accepted: OCI image index and manifest, Docker manifest list and image manifest v2 schema 2.
//! Docker schema 1 (signed, pre-2017) is refused: containerd 2 refuses it too.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::image::Digest;
use crate::image::platform::Platform;

/// Manifests larger than this are refused (containerd's limit too): nothing real comes close.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// The manifest kinds dropship reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaType {
    OciIndex,
    OciManifest,
    DockerManifestList,
    DockerManifest,
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The `Accept` header of a manifest request: every kind above, nothing else.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::OciIndex => OCI_INDEX,
            MediaType::OciManifest => OCI_MANIFEST,
            MediaType::DockerManifestList => DOCKER_LIST,
            MediaType::DockerManifest => DOCKER_MANIFEST,
        }
    }

    pub fn from_name(name: &str) -> Option<MediaType> {
        match name {
            OCI_INDEX => Some(MediaType::OciIndex),
            OCI_MANIFEST => Some(MediaType::OciManifest),
            DOCKER_LIST => Some(MediaType::DockerManifestList),
            DOCKER_MANIFEST => Some(MediaType::DockerManifest),
            _ => None,
        }
    }

    /// An index (OCI) or manifest list (Docker): entries per platform, no layers.
    pub fn is_index(self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }
}

impl std::fmt::Display for MediaType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to content: what it is, its digest and exact size, and for an index entry the
/// platform it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The descriptor of `bytes` as content of `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            platform: None,
        }
    }
}

/// An index's (or manifest list's) entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

impl Index {
    /// The entry a node of `platform` runs, as containerd picks it: the best-ranked platform
    /// (see [`Platform::rank`]), the first of equals; an entry without a platform only when
    /// nothing else fits.
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests
            .iter()
            .filter_map(|entry| match &entry.platform {
                Some(p) => platform.rank(p).map(|rank| (rank, entry)),
                None => Some((usize::MAX, entry)),
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, entry)| entry)
    }

    /// The platforms listed, for an error message.
    pub fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter_map(|entry| entry.platform.as_ref().map(Platform::to_string))
            .collect()
    }
}

/// An image manifest's config and layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Index(Index),
    Image(ImageManifest),
}

/// A manifest exactly as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: MediaType,
    /// The sha256 of `bytes`: the digest the image is known by (`image@sha256:...`).
    pub digest: Digest,
    pub bytes: Bytes,
    pub content: Content,
}

impl Manifest {
    pub fn index(&self) -> Option<&Index> {
        match &self.content {
            Content::Index(index) => Some(index),
            Content::Image(_) => None,
        }
    }

    pub fn image(&self) -> Option<&ImageManifest> {
        match &self.content {
            Content::Image(image) => Some(image),
            Content::Index(_) => None,
        }
    }
}

/// Why served bytes are not a manifest dropship can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "it is a Docker schema 1 manifest, which is no longer supported (containerd 2 refuses it too): push the image again with a current client"
    )]
    Schema1,
    #[error("its media type {0:?} is not an image index or manifest")]
    Unsupported(String),
    #[error("it is larger than {MAX_MANIFEST_SIZE} bytes")]
    TooLarge,
    #[error("its indexes nest deeper than {0} levels")]
    NestedTooDeep(usize),
    #[error("it is not a valid {media_type} document: {message}")]
    Invalid {
        media_type: MediaType,
        message: String,
    },
}

/// The wire form of both kinds; which fields must be there depends on the kind.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// Parses served bytes. `content_type` is the response's header, parameters and all; when a
/// registry sends none or a generic one, the document's own `mediaType` decides, and failing
/// that its shape (OCI allows leaving `mediaType` out).
pub fn parse(content_type: Option<&str>, bytes: Bytes) -> Result<Manifest, ManifestError> {
    let header = content_type
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|value| !value.is_empty());
    if header
        .as_deref()
        .is_some_and(|h| DOCKER_SCHEMA1.contains(&h))
    {
        return Err(ManifestError::Schema1);
    }
    let declared = header.as_deref().and_then(MediaType::from_name);
    let document: Result<Document, _> = serde_json::from_slice(&bytes);
    let media_type = match (&declared, &document) {
        (Some(media_type), _) => *media_type,
        (None, Ok(doc)) => media_type_of(doc, header.as_deref())?,
        (None, Err(_)) => {
            return Err(ManifestError::Unsupported(header.unwrap_or_default()));
        }
    };
    let invalid = |message: String| ManifestError::Invalid {
        media_type,
        message,
    };
    let document = document.map_err(|e| invalid(e.to_string()))?;
    if document.schema_version == Some(1) {
        return Err(ManifestError::Schema1);
    }
    let content = if media_type.is_index() {
        let manifests = document
            .manifests
            .ok_or_else(|| invalid("it has no manifests".into()))?;
        Content::Index(Index { manifests })
    } else {
        let config = document
            .config
            .ok_or_else(|| invalid("it has no config".into()))?;
        let layers = document
            .layers
            .ok_or_else(|| invalid("it has no layers".into()))?;
        Content::Image(ImageManifest { config, layers })
    };
    Ok(Manifest {
        media_type,
        digest: Digest::of(&bytes),
        bytes,
        content,
    })
}

fn media_type_of(doc: &Document, header: Option<&str>) -> Result<MediaType, ManifestError> {
    if doc.schema_version == Some(1) {
        return Err(ManifestError::Schema1);
    }
    match doc.media_type.as_deref() {
        Some(name) if DOCKER_SCHEMA1.contains(&name) => Err(ManifestError::Schema1),
        Some(name) => {
            MediaType::from_name(name).ok_or_else(|| ManifestError::Unsupported(name.to_string()))
        }
        None if doc.manifests.is_some() => Ok(MediaType::OciIndex),
        None if doc.config.is_some() => Ok(MediaType::OciManifest),
        None => Err(ManifestError::Unsupported(
            header.unwrap_or("(none)").to_string(),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn descriptor_json(media_type: &str, content: &[u8], platform: &str) -> String {
        format!(
            r#"{{"mediaType":"{media_type}","digest":"{}","size":{}{platform}}}"#,
            Digest::of(content),
            content.len()
        )
    }

    fn index_bytes() -> Bytes {
        let entries = [
            (
                r#","platform":{"architecture":"amd64","os":"linux"}"#,
                &b"amd"[..],
            ),
            (
                r#","platform":{"architecture":"arm","os":"linux","variant":"v6"}"#,
                b"v6",
            ),
            (
                r#","platform":{"architecture":"arm","os":"linux","variant":"v7"}"#,
                b"v7",
            ),
            (
                r#","platform":{"architecture":"arm64","os":"linux","variant":"v8"}"#,
                b"arm64",
            ),
            (
                r#","platform":{"architecture":"unknown","os":"unknown"}"#,
                b"attestation",
            ),
        ]
        .map(|(platform, content)| descriptor_json(OCI_MANIFEST, content, platform))
        .join(",");
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{entries}]}}"#
        ))
    }

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    #[test]
    fn an_index_selects_like_containerd() {
        let manifest = parse(Some(OCI_INDEX), index_bytes()).unwrap();
        assert_eq!(manifest.media_type, MediaType::OciIndex);
        assert_eq!(manifest.digest, Digest::of(&index_bytes()));
        let index = manifest.index().unwrap();
        let pick = |p: &str| index.select(&platform(p)).map(|d| d.digest);
        assert_eq!(pick("linux/amd64"), Some(Digest::of(b"amd")));
        assert_eq!(pick("linux/arm64"), Some(Digest::of(b"arm64")));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::of(b"v7")));
        assert_eq!(pick("linux/arm/v6"), Some(Digest::of(b"v6")));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(
            index.platforms(),
            [
                "linux/amd64",
                "linux/arm/v6",
                "linux/arm/v7",
                "linux/arm64/v8",
                "unknown/unknown"
            ]
        );
    }

    #[test]
    fn an_arm64_node_falls_back_to_32_bit_arm() {
        let bytes = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{},{}]}}"#,
            descriptor_json(
                DOCKER_MANIFEST,
                b"v6",
                r#","platform":{"architecture":"arm","os":"linux","variant":"v6"}"#
            ),
            descriptor_json(
                DOCKER_MANIFEST,
                b"v7",
                r#","platform":{"architecture":"arm","os":"linux","variant":"v7"}"#
            ),
        ));
        let manifest = parse(Some(DOCKER_LIST), bytes).unwrap();
        let index = manifest.index().unwrap();
        let picked = index.select(&platform("linux/arm64/v8")).unwrap();
        assert_eq!(picked.digest, Digest::of(b"v7"));
    }

    #[test]
    fn image_manifests_parse_config_and_layers() {
        let bytes = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{},"layers":[{},{}]}}"#,
            descriptor_json("application/vnd.docker.container.image.v1+json", b"{}", ""),
            descriptor_json(
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                b"l1",
                ""
            ),
            descriptor_json(
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                b"l2",
                ""
            ),
        ));
        let manifest = parse(
            Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
            bytes,
        )
        .unwrap();
        assert_eq!(manifest.media_type, MediaType::DockerManifest);
        let image = manifest.image().unwrap();
        assert_eq!(image.config.digest, Digest::of(b"{}"));
        assert_eq!(
            image.layers.iter().map(|l| l.size).collect::<Vec<_>>(),
            [2, 2]
        );
    }

    #[test]
    fn generic_content_types_fall_back_to_the_document() {
        // OCI manifests may leave mediaType out; the shape tells.
        let oci = Bytes::from(format!(
            r#"{{"schemaVersion":2,"config":{},"layers":[]}}"#,
            descriptor_json("application/vnd.oci.image.config.v1+json", b"{}", "")
        ));
        assert_eq!(
            parse(Some("application/json"), oci.clone())
                .unwrap()
                .media_type,
            MediaType::OciManifest
        );
        assert_eq!(parse(None, oci).unwrap().media_type, MediaType::OciManifest);
        assert_eq!(
            parse(None, index_bytes()).unwrap().media_type,
            MediaType::OciIndex
        );
    }

    #[test]
    fn schema1_and_strangers_are_refused_clearly() {
        let schema1 =
            Bytes::from_static(br#"{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[]}"#);
        assert_eq!(
            parse(
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                schema1.clone()
            ),
            Err(ManifestError::Schema1)
        );
        assert_eq!(
            parse(Some("application/json"), schema1),
            Err(ManifestError::Schema1)
        );
        assert_eq!(
            parse(Some("text/html"), Bytes::from_static(b"<html>")),
            Err(ManifestError::Unsupported("text/html".into()))
        );
        let err = parse(
            Some(OCI_MANIFEST),
            Bytes::from_static(br#"{"schemaVersion":2}"#),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no config"), "{err}");
        assert!(ManifestError::Schema1.to_string().contains("schema 1"));
    }
}
