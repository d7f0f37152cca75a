//! The client against in-process fake registries: authentication, mirrors, content checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use super::testing::{FakeServer, Reply, Request};
use super::*;
use crate::retry::Transient;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const LAYER: &[u8] = b"layer bytes, pretend this is a gzipped tar";

fn descriptor(media_type: &str, content: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": Digest::of(content).to_string(), "size": content.len()})
}

/// An OCI image manifest with one layer, `LAYER`.
fn manifest_bytes() -> Bytes {
    Bytes::from(
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", b"{}"),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", LAYER)],
        })
        .to_string(),
    )
}

fn layer_descriptor() -> Descriptor {
    Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: Digest::of(LAYER),
        size: LAYER.len() as u64,
        platform: None,
    }
}

fn manifest_reply() -> Reply {
    Reply::new(200)
        .header("content-type", OCI_MANIFEST)
        .header(
            "docker-content-digest",
            &Digest::of(&manifest_bytes()).to_string(),
        )
        .body(manifest_bytes().to_vec())
}

/// Serves `app`'s manifest (tag `1` and by digest) and its layer.
fn serve_app(request: &Request) -> Reply {
    let manifest_digest = Digest::of(&manifest_bytes()).to_string();
    let layer_path = format!("/v2/app/blobs/{}", Digest::of(LAYER));
    match request.path() {
        "/v2/app/manifests/1" => manifest_reply(),
        p if p == format!("/v2/app/manifests/{manifest_digest}") => manifest_reply(),
        p if p == layer_path => Reply::new(200).body(LAYER),
        _ => Reply::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
    }
}

fn image(server: &FakeServer, rest: &str) -> ImageRef {
    ImageRef::parse(&format!("{}/{rest}", server.host())).unwrap()
}

fn config(credentials: CredentialSource, plain_http: &[&FakeServer]) -> RegistryConfig {
    RegistryConfig {
        plain_http: plain_http.iter().map(|s| s.host()).collect(),
        credentials,
        ..RegistryConfig::default()
    }
}

fn registry(credentials: CredentialSource, plain_http: &[&FakeServer]) -> Registry {
    Registry::new(config(credentials, plain_http)).unwrap()
}

/// A docker config file holding `auths` for `host`.
fn docker_config(host: &str, entry: serde_json::Value) -> (tempfile::TempDir, CredentialSource) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, json!({"auths": {host: entry}}).to_string()).unwrap();
    (dir, CredentialSource::DockerConfig(path))
}

fn basic_auth(username: &str, password: &str) -> serde_json::Value {
    use base64::Engine as _;
    json!({"auth": base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))})
}

/// A registry whose `/v2/...` wants `Bearer <token>` for the current `valid` token number,
/// and whose `/token` hands out the next number to `check`ed callers.
struct TokenRegistry {
    server: FakeServer,
    issued: Arc<AtomicUsize>,
}

impl TokenRegistry {
    async fn start(check: impl Fn(&Request) -> bool + Send + Sync + 'static) -> TokenRegistry {
        let issued = Arc::new(AtomicUsize::new(0));
        let counter = issued.clone();
        let realm = Arc::new(std::sync::OnceLock::<String>::new());
        let realm_in_handler = realm.clone();
        let server = FakeServer::start(move |request| {
            if request.path() == "/token" {
                if !check(request) {
                    return Reply::new(401)
                        .header("content-type", "application/json")
                        .body(r#"{"details":"incorrect username or password"}"#);
                }
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                return Reply::new(200)
                    .header("content-type", "application/json")
                    .body(json!({"token": format!("tok-{n}"), "expires_in": 300}).to_string());
            }
            let current = format!("Bearer tok-{}", counter.load(Ordering::SeqCst));
            if request.header("authorization") != Some(current.as_str()) {
                let realm = realm_in_handler.get().unwrap();
                return Reply::error(401, "UNAUTHORIZED", "authentication required").header(
                    "www-authenticate",
                    &format!(
                        r#"Bearer realm="{realm}",service="fake",scope="repository:app:pull""#
                    ),
                );
            }
            serve_app(request)
        })
        .await;
        realm
            .set(format!("http://{}/token", server.host()))
            .unwrap();
        TokenRegistry { server, issued }
    }

    fn tokens_issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// Later requests must bring a token fetched after this.
    fn revoke(&self) {
        self.issued.fetch_add(1, Ordering::SeqCst);
    }
}

async fn drain(mut blob: Blob) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    while let Some(chunk) = blob.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[tokio::test]
async fn the_token_dance_uses_basic_credentials_and_caches_the_token() {
    let fake = TokenRegistry::start(|request| {
        request.method == "GET"
            && request.header("authorization") == Some("Basic YWxpY2U6czNjcmV0") // alice:s3cret
            && request.param("service").as_deref() == Some("fake")
            && request.param("scope").as_deref() == Some("repository:app:pull")
    })
    .await;
    let (_dir, credentials) = docker_config(&fake.server.host(), basic_auth("alice", "s3cret"));
    let registry = registry(credentials, &[&fake.server]);
    let app = image(&fake.server, "app:1");

    let manifest = registry.resolve(&app).await.unwrap();
    assert_eq!(manifest.bytes, manifest_bytes());
    assert_eq!(manifest.media_type, MediaType::OciManifest);
    assert_eq!(manifest.digest, Digest::of(&manifest_bytes()));
    let again = registry.clone().resolve(&app).await.unwrap();
    assert_eq!(again.digest, manifest.digest);
    // Downloads run as tasks of their own.
    let download = tokio::spawn({
        let (registry, app) = (registry.clone(), app.clone());
        async move { drain(registry.blob(&app, &layer_descriptor()).await?).await }
    });
    assert_eq!(download.await.unwrap().unwrap(), LAYER);

    assert_eq!(fake.tokens_issued(), 1, "one token for the repository");
    let challenged = fake
        .server
        .requests()
        .iter()
        .filter(|r| r.path() != "/token" && r.header("authorization").is_none())
        .count();
    assert_eq!(
        challenged, 1,
        "only the first request goes without the token"
    );
}

#[tokio::test]
async fn many_tasks_wait_for_one_token() {
    let fake = TokenRegistry::start(|_| true).await;
    let registry = registry(CredentialSource::Anonymous, &[&fake.server]);
    let app = image(&fake.server, "app:1");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (registry, app) = (registry.clone(), app.clone());
            tokio::spawn(async move { registry.resolve(&app).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(fake.tokens_issued(), 1);
}

#[tokio::test]
async fn a_rejected_token_is_fetched_again_once() {
    let fake = TokenRegistry::start(|request| request.header("authorization").is_none()).await;
    let registry = registry(CredentialSource::Anonymous, &[&fake.server]);
    let app = image(&fake.server, "app:1");
    registry.resolve(&app).await.unwrap();
    fake.revoke();
    registry.resolve(&app).await.unwrap();
    // tok-1, then the revocation's skip, then tok-3 fetched after tok-1 met a 401.
    assert_eq!(fake.tokens_issued(), 3);
    assert_eq!(fake.server.requests_to("/token").len(), 2);
}

#[tokio::test]
async fn identity_tokens_take_the_refresh_token_grant() {
    let fake = TokenRegistry::start(|request| {
        request.method == "POST"
            && request.header("authorization").is_none()
            && request.param("grant_type").as_deref() == Some("refresh_token")
            && request.param("refresh_token").as_deref() == Some("refresh-abc")
            && request.param("service").as_deref() == Some("fake")
            && request.param("scope").as_deref() == Some("repository:app:pull")
            && request.param("client_id").as_deref() == Some("dropship")
    })
    .await;
    let (_dir, credentials) =
        docker_config(&fake.server.host(), json!({"identitytoken": "refresh-abc"}));
    let registry = registry(credentials, &[&fake.server]);
    registry
        .resolve(&image(&fake.server, "app:1"))
        .await
        .unwrap();
    assert_eq!(fake.tokens_issued(), 1);
}

#[tokio::test]
async fn a_wrong_password_is_refused_at_once_with_the_registrys_words() {
    let fake = TokenRegistry::start(|_| false).await;
    let (_dir, credentials) = docker_config(&fake.server.host(), basic_auth("alice", "wrong-pw"));
    let registry = registry(credentials, &[&fake.server]);
    let app = image(&fake.server, "app:1");
    let err = registry.resolve(&app).await.unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::Denied { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("incorrect username or password"), "{text}");
    assert!(
        text.contains(&app.to_string()) && text.contains(&fake.server.host()),
        "{text}"
    );
    assert!(!text.contains("wrong-pw") && !format!("{err:?}").contains("wrong-pw"));
    assert_eq!(fake.server.requests_to("/token").len(), 1, "no second try");
}

#[tokio::test]
async fn basic_challenges_get_the_credentials_and_a_refusal_says_why() {
    let server = FakeServer::start(|request| {
        if request.header("authorization") == Some("Basic Ym9iOnB3") {
            return serve_app(request);
        }
        Reply::error(401, "UNAUTHORIZED", "authentication required")
            .header("www-authenticate", r#"Basic realm="Registry Realm""#)
    })
    .await;
    let (_dir, credentials) = docker_config(&server.host(), basic_auth("bob", "pw"));
    let app = image(&server, "app:1");
    registry(credentials, &[&server])
        .resolve(&app)
        .await
        .unwrap();

    let err = registry(CredentialSource::Anonymous, &[&server])
        .resolve(&app)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{app} from {}: access denied (401): UNAUTHORIZED: authentication required",
            server.host()
        )
    );
}

#[tokio::test]
async fn statuses_become_transient_or_permanent_errors() {
    let server = FakeServer::start(|request| match request.path() {
        "/v2/busy/manifests/1" => Reply::new(503).body("upstream overloaded"),
        "/v2/slow/manifests/1" => Reply::error(429, "TOOMANYREQUESTS", "rate limit"),
        _ => Reply::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
    })
    .await;
    let registry = registry(CredentialSource::Anonymous, &[&server]);
    let busy = registry
        .resolve(&image(&server, "busy:1"))
        .await
        .unwrap_err();
    assert!(busy.is_transient(), "{busy}");
    assert!(
        busy.to_string().contains("(503): upstream overloaded"),
        "{busy}"
    );
    let slow = registry
        .resolve(&image(&server, "slow:1"))
        .await
        .unwrap_err();
    assert!(slow.is_transient(), "{slow}");
    let missing = registry
        .resolve(&image(&server, "none:1"))
        .await
        .unwrap_err();
    assert!(!missing.is_transient());
    assert!(
        missing
            .to_string()
            .ends_with("not found: MANIFEST_UNKNOWN: manifest unknown"),
        "{missing}"
    );
    // Nothing listens on a closed port: a network error, worth retrying.
    let closed = closed_port_host().await;
    let refused = registry_for_hosts(&[closed.as_str()])
        .resolve(&ImageRef::parse(&format!("{closed}/app:1")).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(refused.kind, ErrorKind::Network(_)), "{refused:?}");
    assert!(refused.is_transient());
}

async fn closed_port_host() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

fn registry_for_hosts(plain_http: &[&str]) -> Registry {
    Registry::new(RegistryConfig {
        plain_http: plain_http.iter().map(|h| h.to_string()).collect(),
        credentials: CredentialSource::Anonymous,
        ..RegistryConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn manifests_must_match_their_digests_and_be_current() {
    let other = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#);
    let served = other.clone();
    let server = FakeServer::start(move |request| match request.path() {
        "/v2/lies/manifests/1" => Reply::new(200)
            .header("content-type", OCI_MANIFEST)
            .header(
                "docker-content-digest",
                &Digest::of(b"something else").to_string(),
            )
            .body(served.to_vec()),
        "/v2/old/manifests/1" => Reply::new(200)
            .header(
                "content-type",
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
            )
            .body(r#"{"schemaVersion":1}"#),
        _ => Reply::new(200)
            .header("content-type", OCI_MANIFEST)
            .body(served.to_vec()),
    })
    .await;
    let registry = registry(CredentialSource::Anonymous, &[&server]);

    let pinned = image(&server, &format!("app@{}", Digest::of(&manifest_bytes())));
    let err = registry.resolve(&pinned).await.unwrap_err();
    assert!(
        matches!(&err.kind, ErrorKind::DigestMismatch { expected, actual, .. }
            if *expected == Digest::of(&manifest_bytes()) && *actual == Digest::of(&other)),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let by_digest = image(&server, &format!("app@{}", Digest::of(&other)));
    assert_eq!(registry.resolve(&by_digest).await.unwrap().bytes, other);

    let err = registry
        .resolve(&image(&server, "lies:1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Docker-Content-Digest"), "{err}");
    let err = registry
        .resolve(&image(&server, "old:1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::Manifest(ManifestError::Schema1)),
        "{err:?}"
    );
    assert!(err.to_string().contains("schema 1"), "{err}");
}

#[tokio::test]
async fn blobs_are_checked_as_they_stream() {
    let tampered: Vec<u8> = LAYER.iter().map(|b| b ^ 1).collect();
    let server = FakeServer::start(move |request| {
        let good = format!("/v2/app/blobs/{}", Digest::of(LAYER));
        match request.path() {
            p if p == good => Reply::new(200).body(LAYER),
            p if p.starts_with("/v2/tampered/") => Reply::new(200).body(tampered.clone()),
            p if p.starts_with("/v2/short/") => Reply::new(200).body(&LAYER[1..]),
            _ => Reply::error(404, "BLOB_UNKNOWN", "blob unknown to registry"),
        }
    })
    .await;
    let registry = registry(CredentialSource::Anonymous, &[&server]);
    let layer = layer_descriptor();

    let blob = registry
        .blob(&image(&server, "app:1"), &layer)
        .await
        .unwrap();
    assert_eq!(blob.size(), LAYER.len() as u64);
    assert_eq!(drain(blob).await.unwrap(), LAYER);
    assert_eq!(
        registry
            .blob_size(&image(&server, "app:1"), &layer.digest)
            .await
            .unwrap(),
        LAYER.len() as u64
    );

    // Every byte arrives, then the verdict.
    let mut blob = registry
        .blob(&image(&server, "tampered:1"), &layer)
        .await
        .unwrap();
    let mut received = 0;
    let err = loop {
        match blob.next().await.unwrap() {
            Ok(chunk) => received += chunk.len(),
            Err(err) => break err,
        }
    };
    assert_eq!(received, LAYER.len());
    assert!(
        matches!(err.kind, ErrorKind::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(blob.next().await.is_none(), "nothing after the error");

    let err = registry
        .blob(&image(&server, "short:1"), &layer)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err.kind, ErrorKind::SizeMismatch { expected, actual, .. }
            if expected == LAYER.len() as u64 && actual == LAYER.len() as u64 - 1),
        "{err:?}"
    );
    let err = registry
        .blob_size(&image(&server, "none:1"), &layer.digest)
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn an_index_resolves_to_the_platforms_manifest() {
    let index = Bytes::from(
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": Digest::of(b"amd64 manifest").to_string(), "size": 14,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": Digest::of(&manifest_bytes()).to_string(),
                 "size": manifest_bytes().len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            ],
        })
        .to_string(),
    );
    let served = index.clone();
    let server = FakeServer::start(move |request| match request.path() {
        "/v2/app/manifests/multi" => Reply::new(200)
            .header("content-type", OCI_INDEX)
            .body(served.to_vec()),
        _ => serve_app(request),
    })
    .await;
    let registry = registry(CredentialSource::Anonymous, &[&server]);
    let app = image(&server, "app:multi");
    let arm64 = Platform::from_uname_machine("aarch64").unwrap();
    let resolved = registry.resolve_platform(&app, &arm64).await.unwrap();
    assert_eq!(resolved.index.as_ref().unwrap().bytes, index);
    assert_eq!(resolved.manifest.bytes, manifest_bytes());
    assert_eq!(resolved.image().layers, [layer_descriptor()]);

    let err = registry
        .resolve_platform(&app, &Platform::parse("linux/s390x").unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind.to_string(),
        "no manifest for linux/s390x in its index (it has: linux/amd64, linux/arm64/v8)"
    );
    // A plain manifest is its own answer, for any platform.
    let plain = registry
        .resolve_platform(&image(&server, "app:1"), &arm64)
        .await
        .unwrap();
    assert!(plain.index.is_none());
}

/// Three hosts for `docker.io`-like upstream `upstream`: a mirror that is down, a mirror
/// that lacks the image, then the registry.
#[tokio::test]
async fn mirrors_are_tried_in_order_then_the_registry() {
    let upstream = FakeServer::start(serve_app).await;
    let lacking =
        FakeServer::start(|_| Reply::error(404, "MANIFEST_UNKNOWN", "manifest unknown")).await;
    let down = closed_port_host().await;
    let mirrors = Mirrors::from_kubespray(&json!([{
        "prefix": upstream.host(),
        "mirrors": [
            {"host": format!("http://{down}"), "capabilities": ["pull", "resolve"]},
            {"host": format!("http://{}/cache/hub", lacking.host()), "capabilities": ["pull", "resolve"], "override_path": true},
        ],
        "server": format!("http://{}", upstream.host()),
    }]))
    .unwrap();
    let registry = Registry::new(RegistryConfig {
        mirrors,
        ..config(CredentialSource::Anonymous, &[])
    })
    .unwrap();
    let app = image(&upstream, "app:1");
    let manifest = registry.resolve(&app).await.unwrap();
    assert_eq!(manifest.bytes, manifest_bytes());

    let asked = lacking.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].target,
        format!("/cache/hub/app/manifests/1?ns={}", upstream.host())
    );
    assert_eq!(
        upstream.requests()[0].target,
        "/v2/app/manifests/1",
        "no ns upstream"
    );

    let blob = registry.blob(&app, &layer_descriptor()).await.unwrap();
    assert_eq!(blob.host(), upstream.host());
    assert_eq!(drain(blob).await.unwrap(), LAYER);
    assert_eq!(
        lacking.requests().len(),
        2,
        "the mirror is asked for the blob first"
    );
}

#[tokio::test]
async fn tags_skip_pull_only_mirrors_and_the_most_telling_error_wins() {
    let mirror = FakeServer::start(serve_app).await;
    let upstream = FakeServer::start(|_| Reply::new(503).body("down for maintenance")).await;
    let mirrors = Mirrors::from_kubespray(&json!([{
        "prefix": upstream.host(),
        "mirrors": [{"host": format!("http://{}", mirror.host()), "capabilities": "pull"}],
    }]))
    .unwrap();
    let registry = Registry::new(RegistryConfig {
        mirrors,
        ..config(CredentialSource::Anonymous, &[&upstream])
    })
    .unwrap();
    // By tag: only the upstream may answer, and it is down.
    let err = registry
        .resolve(&image(&upstream, "app:1"))
        .await
        .unwrap_err();
    assert_eq!(err.host, upstream.host());
    assert!(err.is_transient(), "{err}");
    assert!(mirror.requests().is_empty());
    // By digest: the pull-only mirror serves it.
    let pinned = image(&upstream, &format!("app@{}", Digest::of(&manifest_bytes())));
    registry.resolve(&pinned).await.unwrap();
    assert_eq!(
        mirror.requests()[0].target,
        format!(
            "/v2/app/manifests/{}?ns={}",
            Digest::of(&manifest_bytes()),
            upstream.host()
        )
    );
    // Not found on the mirror, down upstream: "down" says more.
    let missing = image(&upstream, &format!("none@{}", Digest::of(b"x")));
    let err = registry.resolve(&missing).await.unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::Unavailable { status: 503, .. }),
        "{err:?}"
    );
}
