//! A client of the OCI distribution API (container registries), to fetch images without a
//! Docker daemon: manifests as served, and blobs as streams verified while they download.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use dropship::image::{ImageRef, platform::Platform};
//! use dropship::registry::{Registry, RegistryConfig};
//! use futures::StreamExt;
//!
//! let registry = Registry::new(RegistryConfig::default())?; // cheap to clone, share it
//! let image = ImageRef::parse("registry.k8s.io/pause:3.10")?;
//! let resolved = registry.resolve_platform(&image, &Platform::parse("linux/amd64")?).await?;
//! for layer in &resolved.image().layers {
//!     let mut blob = registry.blob(&image, layer).await?; // blob.size() known up front
//!     while let Some(chunk) = blob.next().await {
//!         let _bytes = chunk?; // the last item is an error if size or digest is wrong
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! What it does:
//! - [`Registry::resolve`] fetches the manifest an image reference names, exactly as served
//!   (bytes, media type, digest, checked against a pinned digest and `Docker-Content-Digest`);
//!   OCI index and manifest and Docker manifest list and v2 schema 2 are read, schema 1 refused.
//!   [`Registry::resolve_platform`] then picks the index entry for a platform the way
//!   containerd does ([`manifest::Index::select`]) and fetches it.
//! - [`Registry::blob`] streams a blob ([`Blob`]): its size known before the first byte,
//!   nothing buffered beyond a chunk, the count and sha256 checked as it goes.
//!   [`Registry::blob_size`] is a HEAD, for checks that download nothing.
//! - Authentication: anonymous, Basic, Bearer tokens (the `WWW-Authenticate` dance,
//!   tokens cached per host and repository until they expire, renewed on a `401`), and Docker
//!   identity tokens (the refresh-token grant). Credentials come from the docker CLI's config
//!   and its credential helpers ([`credentials`]).
//! - Mirrors ([`mirrors`]): Kubespray's `containerd_registries_mirrors`, tried in order before
//!   the registry itself, as containerd does (`?ns=`, `override_path`, capabilities).
//! - Plain HTTP only for hosts configured so, extra CA files, per-mirror `skip_verify`.
//! - Errors ([`RegistryError`]) name the image and the host, tell transient from permanent
//!   ([`crate::retry::Transient`]) and never carry a secret. Retrying is the caller's choice.
//!
//! # Why a thin client on reqwest rather than `oci-client`
//! `oci-client` (the ORAS project's, formerly `oci-distribution`) was evaluated at 0.18. It
//! pulls manifests raw with chosen Accept types, streams blobs, speaks token auth with Basic
//! credentials, and has `ClientProtocol::HttpsExcept` and extra roots. What dropship needs
//! beyond it would have meant working around it rather than with it:
//! - no Docker identity tokens: its `RegistryAuth::Bearer` sends the token as is, with no
//!   refresh-token grant;
//! - mirrors only as one host swapped in (`?ns=` included), with no fallover to the next
//!   mirror or the registry, no `override_path`, no per-host TLS or headers;
//! - a raw manifest pull returns the bytes and digest but not the served media type, and its
//!   errors mix transport, status and content without a transient/permanent split;
//! - its `auth()` is an explicit step per image, with no renewal on a `401`;
//! - it brings `oci-spec` (with `derive_builder`, `getset`, `strum` proc macros), `chrono`,
//!   `olpc-cjson` and `unicase` for types dropship does not use.
//!
//! The distribution API dropship uses is small (two GETs and a HEAD), so this module speaks
//! it on `reqwest` (rustls with the aws-lc-rs provider that `russh` already builds, the
//! system's roots through rustls-platform-verifier, HTTP/1.1, streaming bodies), parses
//! `WWW-Authenticate` with `http-auth`, and reads credentials with `docker_credential`.
//! Together they add no second version of any crate already in the tree.
//!
//! # Figures (this project's 2-core machine, shared; release build)
//! - Download from `docker-registry` on loopback, one 200 MiB layer
//!   (`scripts/bench-registry.sh`): 520-610 MB/s with 0.24 s of CPU (sha256 included) and
//!   7 MiB peak RSS; `curl | sha256sum` on the same blob: 122-125 MB/s.
//! - Layers as served (gzip) or recompressed to zstd, on a 300 MiB tar of
//!   `/usr/lib/x86_64-linux-gnu` and `/usr/bin`: `gzip -6` (what `docker push` serves) makes
//!   108.6 MB, `zstd -3` 105.8 MB (2.6 % smaller). Transcoding gzip to zstd -3 takes 4.9 s on
//!   one thread and 4.6 s with `-T2` (gzip's one-threaded decompression bounds it; 3.0 s with
//!   `pigz -dc`): 22-37 MB/s of gzip in, to save 2.9 MB. zstd -9 saves 11 % for 16.5 s. On a
//!   node, `gzip -dc` takes 2.2 s and `zstd -dc` 0.46 s for those 300 MiB. Recompressing would
//!   also change the layer digests the manifest names.

mod auth;
mod blob;
pub mod credentials;
mod error;
pub mod mirrors;
mod transport;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;

pub use crate::image::manifest::{
    self, Content, Descriptor, ImageManifest, Index, Manifest, ManifestError, MediaType,
};
pub use blob::Blob;
pub use credentials::{Credential, CredentialError};
pub use error::{ErrorKind, RegistryError};
pub use mirrors::{Endpoint, Mirrors, MirrorsError};

use crate::image::platform::Platform;
use crate::image::{Digest, ImageRef};
use transport::Transport;

/// Where credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// None: anonymous pulls only.
    Anonymous,
    /// A docker CLI `config.json` (with the helpers it names).
    DockerConfig(PathBuf),
}

impl CredentialSource {
    /// The docker CLI's own: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn docker_default() -> CredentialSource {
        match credentials::default_config_path() {
            Some(path) => CredentialSource::DockerConfig(path),
            None => CredentialSource::Anonymous,
        }
    }
}

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registries (`host[:port]`) spoken to over plain HTTP; every other one is HTTPS. A mirror
    /// URL says its own scheme.
    pub plain_http: Vec<String>,
    /// PEM files of CAs to trust besides the system's.
    pub ca_files: Vec<PathBuf>,
    pub mirrors: Mirrors,
    pub credentials: CredentialSource,
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of an answer.
    pub read_timeout: Duration,
}

impl Default for RegistryConfig {
    /// HTTPS everywhere, the system's CAs, no mirrors, the docker CLI's credentials.
    fn default() -> Self {
        RegistryConfig {
            plain_http: Vec::new(),
            ca_files: Vec::new(),
            mirrors: Mirrors::default(),
            credentials: CredentialSource::docker_default(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// An image resolved for one platform: the index it was picked from (when the reference named
/// one) and the image manifest.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub index: Option<Manifest>,
    pub manifest: Manifest,
}

impl Resolved {
    /// The image manifest's config and layers.
    pub fn image(&self) -> &ImageManifest {
        self.manifest
            .image()
            .expect("a resolved manifest is an image manifest")
    }
}

/// Indexes inside indexes are followed this deep.
const MAX_INDEX_DEPTH: usize = 3;

/// A registry client for any number of registries and tasks: clones share connections,
/// credentials and tokens.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    mirrors: Mirrors,
    plain_http: HashSet<String>,
}

/// What a host must be able to do for a request (a mirror's capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Answer for a tag.
    Resolve,
    /// Serve content by digest.
    Pull,
}

impl Registry {
    pub fn new(config: RegistryConfig) -> Result<Registry, ConfigError> {
        Ok(Registry {
            inner: Arc::new(Inner {
                transport: Transport::new(&config)?,
                mirrors: config.mirrors,
                plain_http: config.plain_http.into_iter().collect(),
            }),
        })
    }

    /// The manifest `image` names, as served: by tag from a host that may resolve tags, by
    /// digest from any that serves content, the digest then checked.
    pub async fn resolve(&self, image: &ImageRef) -> Result<Manifest, RegistryError> {
        let pinned = image.digest().map(|text| {
            Digest::parse(text).expect("an ImageRef's digest is a valid sha256 digest")
        });
        let (reference, need) = match (image.digest(), image.tag()) {
            (Some(digest), _) => (digest, Need::Pull),
            (None, Some(tag)) => (tag, Need::Resolve),
            (None, None) => ("latest", Need::Resolve),
        };
        let endpoints = self.endpoints(image, need);
        let mut fallover = Fallover::new(image, need, &endpoints);
        for endpoint in endpoints {
            let result = self
                .fetch_manifest(&endpoint, image, reference, pinned.map(|d| (d, None)))
                .await;
            if let Some(outcome) = fallover.settle(&endpoint, result) {
                return outcome;
            }
        }
        Err(fallover.failure())
    }

    /// The manifest `descriptor` points to (an index entry), checked against its digest and
    /// size.
    pub async fn manifest(
        &self,
        image: &ImageRef,
        descriptor: &Descriptor,
    ) -> Result<Manifest, RegistryError> {
        let reference = descriptor.digest.to_string();
        let expected = Some((descriptor.digest, Some(descriptor.size)));
        let endpoints = self.endpoints(image, Need::Pull);
        let mut fallover = Fallover::new(image, Need::Pull, &endpoints);
        for endpoint in endpoints {
            let result = self
                .fetch_manifest(&endpoint, image, &reference, expected)
                .await;
            if let Some(outcome) = fallover.settle(&endpoint, result) {
                return outcome;
            }
        }
        Err(fallover.failure())
    }

    /// The image manifest for `platform`: `image`'s own if it names one, else the entry of its
    /// index that containerd would pick on such a node.
    pub async fn resolve_platform(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<Resolved, RegistryError> {
        let top = self.resolve(image).await?;
        if top.index().is_none() {
            return Ok(Resolved {
                index: None,
                manifest: top,
            });
        }
        let mut current = top.clone();
        for _ in 0..MAX_INDEX_DEPTH {
            let Some(index) = current.index() else {
                return Ok(Resolved {
                    index: Some(top),
                    manifest: current,
                });
            };
            let entry = index.select(platform).ok_or_else(|| RegistryError {
                image: image.to_string(),
                host: image.domain().to_string(),
                kind: ErrorKind::NoPlatform {
                    platform: platform.to_string(),
                    available: index.platforms().join(", "),
                },
            })?;
            current = self.manifest(image, entry).await?;
        }
        match current.index() {
            None => Ok(Resolved {
                index: Some(top),
                manifest: current,
            }),
            Some(_) => Err(RegistryError {
                image: image.to_string(),
                host: image.domain().to_string(),
                kind: ManifestError::NestedTooDeep(MAX_INDEX_DEPTH).into(),
            }),
        }
    }

    /// Starts downloading the blob `descriptor` points to (a layer or config of `image`).
    pub async fn blob(
        &self,
        image: &ImageRef,
        descriptor: &Descriptor,
    ) -> Result<Blob, RegistryError> {
        let endpoints = self.endpoints(image, Need::Pull);
        let mut fallover = Fallover::new(image, Need::Pull, &endpoints);
        for endpoint in endpoints {
            let result = self.start_blob(&endpoint, image, descriptor).await;
            if let Some(outcome) = fallover.settle(&endpoint, result) {
                return outcome;
            }
        }
        Err(fallover.failure())
    }

    async fn start_blob(
        &self,
        endpoint: &Endpoint,
        image: &ImageRef,
        descriptor: &Descriptor,
    ) -> Result<Blob, ErrorKind> {
        let digest = descriptor.digest.to_string();
        let url = endpoint.url(image.domain(), image.path(), "blobs", &digest);
        let response = self
            .inner
            .transport
            .send(endpoint, image.path(), Method::GET, &url, None)
            .await?;
        match transport::content_length(&response) {
            Some(length) if length != descriptor.size => Err(ErrorKind::SizeMismatch {
                what: format!("blob {digest}"),
                expected: descriptor.size,
                actual: length,
            }),
            _ => Ok(Blob::new(
                response,
                descriptor.size,
                descriptor.digest,
                image.to_string(),
                endpoint.host.clone(),
            )),
        }
    }

    /// The size of blob `digest` in `image`'s repository, from a HEAD: it exists, and is this
    /// big, without a byte of it downloaded.
    pub async fn blob_size(&self, image: &ImageRef, digest: &Digest) -> Result<u64, RegistryError> {
        let digest = digest.to_string();
        let endpoints = self.endpoints(image, Need::Pull);
        let mut fallover = Fallover::new(image, Need::Pull, &endpoints);
        for endpoint in endpoints {
            let url = endpoint.url(image.domain(), image.path(), "blobs", &digest);
            let result = self
                .inner
                .transport
                .send(&endpoint, image.path(), Method::HEAD, &url, None)
                .await
                .and_then(|response| {
                    transport::content_length(&response).ok_or_else(|| ErrorKind::Status {
                        status: response.status().as_u16(),
                        message: "the answer has no Content-Length".into(),
                    })
                });
            if let Some(outcome) = fallover.settle(&endpoint, result) {
                return outcome;
            }
        }
        Err(fallover.failure())
    }

    /// The endpoints for `image` able to do `need`, in the order to try them.
    fn endpoints(&self, image: &ImageRef, need: Need) -> Vec<Endpoint> {
        let domain = image.domain();
        let plain_http = self.inner.plain_http.contains(domain);
        self.inner
            .mirrors
            .endpoints(domain, plain_http)
            .into_iter()
            .filter(|e| match need {
                Need::Resolve => e.capabilities.resolve,
                Need::Pull => e.capabilities.pull,
            })
            .collect()
    }

    /// The manifest `reference` (a tag or digest) from one endpoint; `expected` is the digest
    /// (and size) it must have.
    async fn fetch_manifest(
        &self,
        endpoint: &Endpoint,
        image: &ImageRef,
        reference: &str,
        expected: Option<(Digest, Option<u64>)>,
    ) -> Result<Manifest, ErrorKind> {
        let url = endpoint.url(image.domain(), image.path(), "manifests", reference);
        let response = self
            .inner
            .transport
            .send(
                endpoint,
                image.path(),
                Method::GET,
                &url,
                Some(manifest::ACCEPT),
            )
            .await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type");
        let served_digest = header("docker-content-digest");
        let bytes = transport::read_at_most(response, manifest::MAX_MANIFEST_SIZE, || {
            ManifestError::TooLarge.into()
        })
        .await?;
        let size = bytes.len() as u64;
        let manifest = manifest::parse(content_type.as_deref(), bytes)?;
        let what = format!("manifest {reference}");
        if let Some((digest, expected_size)) = expected {
            if manifest.digest != digest {
                return Err(ErrorKind::DigestMismatch {
                    what,
                    expected: digest,
                    actual: manifest.digest,
                });
            }
            if let Some(expected_size) = expected_size.filter(|s| *s != size) {
                return Err(ErrorKind::SizeMismatch {
                    what,
                    expected: expected_size,
                    actual: size,
                });
            }
        }
        // Only sha256 is checked: another algorithm in the header says nothing against it.
        if let Some(served) = served_digest.and_then(|text| Digest::parse(&text).ok())
            && served != manifest.digest
        {
            return Err(ErrorKind::DigestMismatch {
                what: format!("{what} (by its Docker-Content-Digest)"),
                expected: served,
                actual: manifest.digest,
            });
        }
        Ok(manifest)
    }
}

/// Trying endpoints in turn: the first success ends it, as does an error no other host can
/// mend; otherwise the most telling error is kept for when every host has failed (see
/// [`ErrorKind::relevance`]).
struct Fallover<'a> {
    image: &'a ImageRef,
    need: Need,
    /// Endpoints not yet tried.
    left: usize,
    reported: Option<RegistryError>,
}

impl<'a> Fallover<'a> {
    fn new(image: &'a ImageRef, need: Need, endpoints: &[Endpoint]) -> Fallover<'a> {
        Fallover {
            image,
            need,
            left: endpoints.len(),
            reported: None,
        }
    }

    /// The outcome when `result` (from `endpoint`) is final: a success, or an error that ends
    /// the search. `None`: try the next endpoint.
    fn settle<T>(
        &mut self,
        endpoint: &Endpoint,
        result: Result<T, ErrorKind>,
    ) -> Option<Result<T, RegistryError>> {
        let kind = match result {
            Ok(value) => return Some(Ok(value)),
            Err(kind) => kind,
        };
        let error = RegistryError {
            image: self.image.to_string(),
            host: endpoint.host.clone(),
            kind,
        };
        self.left = self.left.saturating_sub(1);
        if !error.kind.falls_over() {
            return Some(Err(error));
        }
        if self.left > 0 {
            tracing::info!("{error}; trying the next host");
        }
        if self
            .reported
            .as_ref()
            .is_none_or(|r| error.kind.relevance() > r.kind.relevance())
        {
            self.reported = Some(error);
        }
        None
    }

    /// The error to report once every endpoint failed.
    fn failure(self) -> RegistryError {
        self.reported.unwrap_or_else(|| RegistryError {
            image: self.image.to_string(),
            host: self.image.domain().to_string(),
            kind: ErrorKind::NotFound {
                message: format!(
                    "no configured host may {}",
                    match self.need {
                        Need::Resolve => "resolve tags",
                        Need::Pull => "serve content",
                    }
                ),
            },
        })
    }
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
