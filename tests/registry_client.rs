//! The registry client against real `docker-registry` processes on 127.0.0.1: an open one over
//! plain HTTP, and one over TLS (a CA made here with openssl) with htpasswd users, reached
//! with credentials from a docker config file and from a credential helper (run by a child
//! process of this binary, whose PATH has it).
//!
//! Each test starts its own registry on a free port in a temporary directory and pushes its
//! image through the registry's HTTP API, so tests run side by side and leave nothing behind.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use dropship::image::platform::Platform;
use dropship::image::{Digest, ImageRef};
use dropship::registry::{
    CredentialSource, Descriptor, ErrorKind, MediaType, Registry, RegistryConfig,
};
use dropship::retry::Transient;
use futures::StreamExt;
use serde_json::json;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const USER: &str = "alice";
const PASSWORD: &str = "correct-horse-battery";

/// A `docker-registry serve` of its own, stopped when dropped.
struct TestRegistry {
    child: Child,
    host: String,
    dir: tempfile::TempDir,
    /// The CA that signed its certificate, when it speaks TLS.
    ca: Option<PathBuf>,
}

impl TestRegistry {
    fn open() -> TestRegistry {
        TestRegistry::start(false)
    }

    /// TLS with a certificate from a fresh CA, and `USER`/`PASSWORD` in its htpasswd file.
    fn secured() -> TestRegistry {
        TestRegistry::start(true)
    }

    fn start(secured: bool) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {host}\n  secret: dropship-test\n",
            dir.path().join("data").display()
        );
        let ca = secured.then(|| {
            let ca = make_certificates(dir.path());
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("server.pem").display(),
                dir.path().join("server.key").display()
            ));
            let hash = bcrypt::hash_with_result(PASSWORD, 4)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoY);
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{USER}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: dropship-test\n    path: {}\n",
                htpasswd.display()
            ));
            ca
        });
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry runs (scripts/install-deps.sh installs it)");
        let registry = TestRegistry {
            child,
            host,
            dir,
            ca,
        };
        registry.wait_until_listening();
        registry
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&self.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}: {}",
                self.host,
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn base_url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }

    fn image(&self, rest: &str) -> ImageRef {
        ImageRef::parse(&format!("{}/{rest}", self.host)).unwrap()
    }

    /// A client configured for this registry (plain HTTP or its CA), with `credentials`.
    fn client(&self, credentials: CredentialSource) -> Registry {
        Registry::new(RegistryConfig {
            plain_http: if self.ca.is_none() {
                vec![self.host.clone()]
            } else {
                Vec::new()
            },
            ca_files: self.ca.iter().cloned().collect(),
            credentials,
            ..RegistryConfig::default()
        })
        .unwrap()
    }

    /// A docker config file in this registry's directory.
    fn docker_config(&self, name: &str, config: serde_json::Value) -> CredentialSource {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        CredentialSource::DockerConfig(path)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a server certificate for 127.0.0.1 it signed; returns the CA's PEM file.
fn make_certificates(dir: &Path) -> PathBuf {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=dropship test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    dir.join("ca.pem")
}

/// What was pushed: a two-platform index, its manifests, and the arm64 image's blobs.
struct Pushed {
    index: Bytes,
    amd64: Bytes,
    arm64: Bytes,
    arm64_layer: Bytes,
    arm64_layer_descriptor: Descriptor,
}

/// A gzipped tar with one file.
fn layer(content: &[u8]) -> Bytes {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "etc/hello", content).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    Bytes::from(gz.finish().unwrap())
}

fn descriptor_json(media_type: &str, content: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": Digest::of(content).to_string(), "size": content.len()})
}

/// Pushes `app:multi` (an index for linux/amd64 and linux/arm64/v8) through the HTTP API,
/// as `docker push` would, with `auth` as Basic credentials when given.
async fn push(registry: &TestRegistry, auth: Option<(&str, &str)>) -> Pushed {
    let mut http = reqwest::Client::builder();
    if let Some(ca) = &registry.ca {
        let pem = std::fs::read(ca).unwrap();
        http = http.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
    }
    let http = http.build().unwrap();
    let base = registry.base_url();
    let with_auth = |request: reqwest::RequestBuilder| match auth {
        Some((user, password)) => request.basic_auth(user, Some(password)),
        None => request,
    };
    let upload = async |content: &Bytes| {
        let started = with_auth(http.post(format!("{base}/v2/app/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202, "{:?}", started.text().await);
        let location = started.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{base}{location}")
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = with_auth(
            http.put(format!(
                "{location}{separator}digest={}",
                Digest::of(content)
            ))
            .header("content-type", "application/octet-stream")
            .body(content.clone()),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(done.status(), 201, "{:?}", done.text().await);
    };
    let put_manifest = async |reference: &str, media_type: &str, bytes: &Bytes| {
        let done = with_auth(
            http.put(format!("{base}/v2/app/manifests/{reference}"))
                .header("content-type", media_type)
                .body(bytes.clone()),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(done.status(), 201, "{:?}", done.text().await);
    };

    let mut manifests = Vec::new();
    let mut arm64_layer = Bytes::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let layer = layer(format!("hello from {arch}\n").as_bytes());
        let config = Bytes::from(
            json!({
                "architecture": arch, "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
            })
            .to_string(),
        );
        upload(&layer).await;
        upload(&config).await;
        let manifest = Bytes::from(
            json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor_json(OCI_CONFIG, &config),
                "layers": [descriptor_json(OCI_LAYER, &layer)],
            })
            .to_string(),
        );
        put_manifest(&Digest::of(&manifest).to_string(), OCI_MANIFEST, &manifest).await;
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(variant) = variant {
            platform["variant"] = json!(variant);
        }
        let mut entry = descriptor_json(OCI_MANIFEST, &manifest);
        entry["platform"] = platform;
        manifests.push((manifest, entry));
        arm64_layer = layer;
    }
    let index = Bytes::from(
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests.iter().map(|(_, entry)| entry.clone()).collect::<Vec<_>>(),
        })
        .to_string(),
    );
    put_manifest("multi", OCI_INDEX, &index).await;
    let [(amd64, _), (arm64, _)] = <[_; 2]>::try_from(manifests).unwrap();
    Pushed {
        index,
        amd64,
        arm64,
        arm64_layer_descriptor: Descriptor {
            media_type: OCI_LAYER.into(),
            digest: Digest::of(&arm64_layer),
            size: arm64_layer.len() as u64,
            platform: None,
        },
        arm64_layer,
    }
}

async fn download(registry: &Registry, image: &ImageRef, descriptor: &Descriptor) -> Vec<u8> {
    let mut blob = registry.blob(image, descriptor).await.unwrap();
    assert_eq!(blob.size(), descriptor.size);
    let mut out = Vec::new();
    while let Some(chunk) = blob.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn an_open_registry_serves_manifests_as_pushed_and_verified_blobs() {
    let server = TestRegistry::open();
    let pushed = push(&server, None).await;
    let registry = server.client(CredentialSource::Anonymous);
    let multi = server.image("app:multi");

    let index = registry.resolve(&multi).await.unwrap();
    assert_eq!(index.media_type, MediaType::OciIndex);
    assert_eq!(index.bytes, pushed.index);
    assert_eq!(index.digest, Digest::of(&pushed.index));

    let arm64 = Platform::from_uname_machine("aarch64").unwrap();
    let resolved = registry.resolve_platform(&multi, &arm64).await.unwrap();
    assert_eq!(resolved.index.unwrap().bytes, pushed.index);
    assert_eq!(resolved.manifest.bytes, pushed.arm64);
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let resolved_amd64 = registry.resolve_platform(&multi, &amd64).await.unwrap();
    assert_eq!(resolved_amd64.manifest.bytes, pushed.amd64);

    // By digest: the same bytes, checked against the digest.
    let pinned = server.image(&format!("app@{}", Digest::of(&pushed.arm64)));
    let by_digest = registry.resolve(&pinned).await.unwrap();
    assert_eq!(by_digest.bytes, pushed.arm64);
    assert_eq!(by_digest.media_type, MediaType::OciManifest);

    let layer = &resolved.manifest.image().unwrap().layers[0];
    assert_eq!(*layer, pushed.arm64_layer_descriptor);
    assert_eq!(download(&registry, &multi, layer).await, pushed.arm64_layer);
    // The same as an AsyncRead, e.g. for a decompressor or an SSH channel's stdin.
    let mut reader = registry
        .blob(&multi, layer)
        .await
        .unwrap()
        .into_async_read();
    let mut read = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut read)
        .await
        .unwrap();
    assert_eq!(read, pushed.arm64_layer);
    assert_eq!(
        registry.blob_size(&multi, &layer.digest).await.unwrap(),
        pushed.arm64_layer.len() as u64
    );

    // A descriptor that lies about the size is caught before any byte is trusted.
    let wrong_size = Descriptor {
        size: layer.size + 1,
        ..layer.clone()
    };
    let err = registry.blob(&multi, &wrong_size).await.err().unwrap();
    assert!(
        matches!(err.kind, ErrorKind::SizeMismatch { .. }),
        "{err:?}"
    );

    // Unknown tags and digests: permanent, naming the image and the registry.
    for missing in [
        server.image("app:nope"),
        server.image(&format!("app@{}", Digest::of(b"nothing"))),
    ] {
        let err = registry.resolve(&missing).await.unwrap_err();
        assert!(matches!(err.kind, ErrorKind::NotFound { .. }), "{err:?}");
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(
            text.contains(&missing.to_string()) && text.contains(&server.host),
            "{text}"
        );
        assert!(text.contains("MANIFEST_UNKNOWN"), "{text}");
    }
}

#[tokio::test]
async fn plain_http_is_used_only_when_configured() {
    let server = TestRegistry::open();
    push(&server, None).await;
    let https_only = Registry::new(RegistryConfig {
        credentials: CredentialSource::Anonymous,
        ..RegistryConfig::default()
    })
    .unwrap();
    let err = https_only
        .resolve(&server.image("app:multi"))
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("does not speak TLS"), "{err}");
    assert!(!err.is_transient());
}

/// The credential helper of the helper test, named so that no real PATH has it.
const HELPER: &str = "dropship-test";
/// Set (to the helper's directory) in the child process that has the helper on PATH.
const HELPER_DIR_VAR: &str = "DROPSHIP_TEST_CREDENTIAL_HELPER_DIR";

/// Writes `docker-credential-dropship-test` into a fresh directory: it answers `USER` and
/// `PASSWORD` for a registry on 127.0.0.1 and "not found" for any other.
fn write_credential_helper(dir: &Path) {
    let script = dir.join(format!("docker-credential-{HELPER}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n\
             case \"$server\" in 127.0.0.1:*) ;; *) echo 'credentials not found in native keychain'; exit 1;; esac\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_tls_registry_with_htpasswd_takes_credentials_from_the_docker_config() {
    let server = TestRegistry::secured();
    let pushed = push(&server, Some((USER, PASSWORD))).await;
    let multi = server.image("app:multi");
    let arm64 = Platform::parse("linux/arm64").unwrap();

    // Keyed the way `docker login https://host` writes it; looked up by host.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let credentials = server.docker_config(
        "file",
        json!({"auths": {format!("https://{}", server.host): {"auth": auth}}}),
    );
    let registry = server.client(credentials);
    let resolved = registry.resolve_platform(&multi, &arm64).await.unwrap();
    assert_eq!(resolved.manifest.bytes, pushed.arm64);
    let layer = &resolved.manifest.image().unwrap().layers[0];
    assert_eq!(download(&registry, &multi, layer).await, pushed.arm64_layer);
}

/// A login through `credHelpers`. The helper must be on PATH, and PATH is not changed in a
/// process running other tests: so this test runs twice. Here, without the helper on PATH,
/// the lookup fails and names the helper; then again in a child process of this test binary
/// whose PATH has it, where the login works.
#[tokio::test]
async fn a_tls_registry_with_htpasswd_takes_credentials_from_a_helper() {
    let server = TestRegistry::secured();
    let pushed = push(&server, Some((USER, PASSWORD))).await;
    let multi = server.image("app:multi");
    let credentials = server.docker_config(
        "helper",
        json!({"credHelpers": {server.host.clone(): HELPER}}),
    );
    let registry = server.client(credentials);

    if std::env::var_os(HELPER_DIR_VAR).is_some() {
        // The child: the helper is on PATH.
        let manifest = registry.resolve(&multi).await.unwrap();
        assert_eq!(manifest.bytes, pushed.index);
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let resolved = registry.resolve_platform(&multi, &arm64).await.unwrap();
        let layer = &resolved.manifest.image().unwrap().layers[0];
        assert_eq!(download(&registry, &multi, layer).await, pushed.arm64_layer);
        return;
    }

    let err = registry.resolve(&multi).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Credentials(_)), "{err:?}");
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains(&format!(
            "docker-credential-{HELPER} failed for {}",
            server.host
        )),
        "{err}"
    );

    let helper_dir = tempfile::tempdir().unwrap();
    write_credential_helper(helper_dir.path());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(helper_dir.path().to_path_buf()).chain(std::env::split_paths(&path));
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_tls_registry_with_htpasswd_takes_credentials_from_a_helper",
            "--nocapture",
        ])
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env(HELPER_DIR_VAR, helper_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && stdout.contains("1 passed"),
        "the child with the helper on PATH failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_and_never_shows_the_password() {
    let server = TestRegistry::secured();
    push(&server, Some((USER, PASSWORD))).await;
    let wrong = "not-the-password-42";
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{wrong}"));
    let credentials = server.docker_config(
        "wrong",
        json!({"auths": {server.host.clone(): {"auth": auth}}}),
    );
    let registry = server.client(credentials);
    let multi = server.image("app:multi");

    let started = Instant::now();
    let err = registry.resolve(&multi).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err.kind, ErrorKind::Denied { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient(), "a retry would fail the same way");
    let text = err.to_string();
    assert!(text.contains(&multi.to_string()), "{text}");
    assert!(text.contains(&server.host), "{text}");
    assert!(
        text.contains("UNAUTHORIZED"),
        "the registry's own answer: {text}"
    );
    assert!(
        !text.contains(wrong) && !format!("{err:?}").contains(wrong),
        "{text}"
    );

    // Without credentials the same registry refuses too, and without its CA the TLS fails.
    let anonymous = server.client(CredentialSource::Anonymous);
    let err = anonymous.resolve(&multi).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Denied { .. }), "{err:?}");
    let untrusting = Registry::new(RegistryConfig {
        credentials: CredentialSource::Anonymous,
        ..RegistryConfig::default()
    })
    .unwrap();
    let err = untrusting.resolve(&multi).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("trust its CA"), "{err}");
    assert!(!err.is_transient());
}
