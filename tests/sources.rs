//! Where images come from, end to end on the mixed test bed: the registries, fetched by dropship
//! itself with no Docker daemon anywhere — every runtime fed, each node its own platform, logins
//! from the Docker CLI's config and from a credential helper, `--check` without layers, and
//! nodes receiving layers while they still download.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use crate::push::{Run, assert_holds, ids_on, push_with, regular_nodes};
use crate::runtimes::{served_digest_names, served_for, served_ids};
use crate::support::{Node, Runtime, Testbed, defer};

/// The controller's Docker daemon is nowhere: whatever comes, comes from a registry.
const NO_DOCKER: (&str, &str) = ("DOCKER_HOST", "unix:///nonexistent/docker.sock");

/// `dropship push` fetching from the registries itself (the localhost delegate, strictly: no
/// Docker daemon to fall back on), with the environment `env` besides.
fn from_registry(tb: &Testbed, cache: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let args = [
        &["--delegate", "localhost", "--source", "registry"][..],
        extra,
    ]
    .concat();
    let env = [&[NO_DOCKER][..], env].concat();
    push_with(tb, cache, &args, &tb.inventory_ini, &env)
}

fn ok(run: &Run) {
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
}

#[test]
fn every_runtime_gets_the_registry_images_with_no_docker_daemon_anywhere() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let cache = tempfile::tempdir().unwrap();
    let first = from_registry(&tb, &cache.path().join("c"), &[], &[]);
    ok(&first);
    let served: Vec<_> = tb
        .images
        .iter()
        .map(|i| (i, served_for(&tb, i, "amd64")))
        .collect();
    let expected = served_ids(&served);
    for node in regular_nodes(&tb) {
        assert_eq!(first.host(&node.name)["status"], "loaded", "{}", node.name);
        assert_holds(&tb, node, &expected, "the registry's image IDs");
    }
    for node in tb.running(Runtime::Containerd) {
        // The registry's own manifest digests survive, as kubelet resolves `image@sha256:…`.
        assert_eq!(
            tb.digest_names(node),
            served_digest_names(&served),
            "{}",
            node.name
        );
    }
    let again = from_registry(&tb, &cache.path().join("c"), &[], &[]);
    ok(&again);
    for node in regular_nodes(&tb) {
        let host = again.host(&node.name);
        assert_eq!(
            (&host["status"], &host["bytes_sent"]),
            (&"up_to_date".into(), &0.into()),
            "{host}"
        );
    }
}

#[test]
fn each_node_gets_the_manifest_of_its_own_platform_unless_one_is_forced() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let image = tb.multiarch_image.as_str();
    let (amd64, arm64) = (
        served_for(&tb, image, "amd64"),
        served_for(&tb, image, "arm64"),
    );
    assert_ne!(amd64.config, arm64.config);
    let cache = tempfile::tempdir().unwrap();
    let run = from_registry(&tb, &cache.path().join("c"), &["--image", image], &[]);
    ok(&run);
    for node in regular_nodes(&tb) {
        let wanted = if node.arch == "aarch64" {
            &arm64
        } else {
            &amd64
        };
        let held = ids_on(&tb, node);
        assert_eq!(
            held,
            [(image.to_string(), wanted.config.clone())],
            "{} ({})",
            node.name,
            node.arch
        );
    }
    assert!(
        tb.nodes
            .iter()
            .any(|n| n.arch == "aarch64" && n.name != tb.flatcar_node),
        "the test bed has a node that says aarch64"
    );
    // --platform: one platform for everyone.
    let forced = from_registry(
        &tb,
        &cache.path().join("c"),
        &["--image", image, "--platform", "linux/amd64"],
        &[],
    );
    ok(&forced);
    for node in regular_nodes(&tb) {
        assert_eq!(
            ids_on(&tb, node),
            [(image.to_string(), amd64.config.clone())],
            "{}",
            node.name
        );
    }
}

/// A Docker CLI config directory for the test registry that needs a login.
fn docker_config(dir: &Path, config: serde_json::Value) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir.to_path_buf()
}

fn secure_host(tb: &Testbed) -> &str {
    tb.private_image.split('/').next().unwrap()
}

#[test]
fn logins_come_from_the_docker_config_or_a_helper_and_a_wrong_password_fails_at_once() {
    let (tb, _lock) = testbed!();
    let node = tb.running(Runtime::Docker)[0];
    let limit = [
        "-l",
        node.name.as_str(),
        "--image",
        tb.private_image.as_str(),
    ];
    let work = tempfile::tempdir().unwrap();
    let login = |user: &str, password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    };

    // `auths` in ~/.docker/config.json (here $DOCKER_CONFIG).
    tb.reset_node(node);
    let auths = docker_config(
        &work.path().join("auths"),
        serde_json::json!({"auths": {secure_host(&tb): {"auth": login(&tb.secure_user, &tb.secure_password)}}}),
    );
    let run = from_registry(
        &tb,
        &work.path().join("c1"),
        &limit,
        &[("DOCKER_CONFIG", auths.to_str().unwrap())],
    );
    ok(&run);
    assert_eq!(run.host(&node.name)["status"], "loaded");

    // A credential helper named by credHelpers, found on PATH as docker-credential-<name>.
    tb.reset_node(node);
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-dropship-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho \"$server\" >> {log}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n",
            log = work.path().join("helper.log").display(),
            user = tb.secure_user,
            password = tb.secure_password,
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&helper)
        .status()
        .unwrap();
    let helpers = docker_config(
        &work.path().join("helpers"),
        serde_json::json!({"credHelpers": {secure_host(&tb): "dropship-test"}}),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = from_registry(
        &tb,
        &work.path().join("c2"),
        &limit,
        &[
            ("DOCKER_CONFIG", helpers.to_str().unwrap()),
            ("PATH", &path),
        ],
    );
    ok(&run);
    assert_eq!(run.host(&node.name)["status"], "loaded");
    let asked = std::fs::read_to_string(work.path().join("helper.log")).unwrap();
    assert!(
        asked.contains(secure_host(&tb)),
        "the helper was asked for the registry: {asked}"
    );

    // A wrong password: the registry's answer at once (no retries), naming the image, never the
    // password.
    let wrong = "not-the-password-Zq7";
    let bad = docker_config(
        &work.path().join("bad"),
        serde_json::json!({"auths": {secure_host(&tb): {"auth": login(&tb.secure_user, wrong)}}}),
    );
    let run = from_registry(
        &tb,
        &work.path().join("c3"),
        &[&limit[..], &["--retries", "4"]].concat(),
        &[("DOCKER_CONFIG", bad.to_str().unwrap())],
    );
    assert_eq!(run.code(), Some(1), "{}\n{}", run.stdout(), run.stderr());
    let everything = format!("{}{}{}", run.stdout(), run.stderr(), run.json);
    assert!(
        everything.contains(&tb.private_image),
        "the image is named: {everything}"
    );
    assert!(
        everything.contains("UNAUTHORIZED") || everything.contains("denied"),
        "{everything}"
    );
    assert!(!everything.contains(wrong) && !everything.contains(&login(&tb.secure_user, wrong)));
    // A retried fetch says so ("attempt 1/4 failed: …; retrying in 3s"): a refusal is not.
    assert!(
        !run.stderr().contains("attempt 1/4 failed"),
        "a refused login was retried: {}",
        run.stderr()
    );
}

#[test]
fn check_asks_the_registry_for_manifests_and_downloads_no_layer() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("c");
    let run = from_registry(&tb, &dir, &["--check"], &[]);
    ok(&run);
    let layers: u64 = tb
        .images
        .iter()
        .map(|i| served_for(&tb, i, "amd64").layers.len() as u64)
        .sum();
    let blobs = std::fs::read_dir(dir.join("blobs/sha256")).unwrap().count() as u64;
    assert_eq!(
        blobs,
        tb.images.len() as u64,
        "only the manifests are kept ({layers} layers were not fetched)"
    );
    for node in regular_nodes(&tb) {
        let host = run.host(&node.name);
        assert_eq!(host["status"], "loaded", "{host}");
        assert!(
            host["bytes_sent"].as_u64().unwrap() > 1 << 20,
            "what would be sent: {host}"
        );
        assert!(tb.node_images(node).is_empty(), "{} changed", node.name);
    }
}

/// Whether the cache has a blob still downloading (its temp file).
fn downloading(cache: &Path) -> bool {
    std::fs::read_dir(cache.join("blobs/sha256"))
        .map(|dir| {
            dir.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        })
        .unwrap_or(false)
}

/// Bytes of a node's archive received so far (kept archives are written as `.*.part`).
fn receiving(tb: &Testbed, node: &Node) -> u64 {
    let output = tb.run_in(
        node,
        "find /tmp/releases -name '*.part' -exec cat {} + 2>/dev/null | wc -c",
    );
    crate::support::stdout(&output).trim().parse().unwrap_or(0)
}

#[test]
fn nodes_receive_layers_while_they_download_and_a_slow_node_holds_back_no_other() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let (fast, slow) = (
        tb.running(Runtime::Docker)[0],
        tb.running(Runtime::Containerd)[0],
    );
    // The registry answers at 8 Mbit/s (~6 s for the images); the slow node takes 2 Mbit/s.
    tb.shape_pulls(Some("8mbit"));
    let _pulls = defer(|| tb.shape_pulls(None));
    tb.shape(slow, Some("2mbit"));
    let _slow = defer(|| tb.shape(slow, None));
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("c");
    let limit = format!("{}:{}", fast.name, slow.name);
    let (mut overlapped, mut slow_behind) = (false, false);
    let run = std::thread::scope(|scope| {
        let run =
            scope.spawn(|| from_registry(&tb, &dir, &["-l", &limit, "--keep-remote-cache"], &[]));
        while !run.is_finished() {
            let pending = downloading(&dir);
            overlapped |= pending && receiving(&tb, fast) > 0;
            // The download (and the cache write) done while the slow node still receives.
            slow_behind |= !pending && dir.join("manifests").exists() && receiving(&tb, slow) > 0;
            std::thread::sleep(Duration::from_millis(100));
        }
        run.join().unwrap()
    });
    ok(&run);
    assert!(
        overlapped,
        "{} received layers while the download was still under way",
        fast.name
    );
    assert!(
        slow_behind,
        "the download finished while {} was still receiving",
        slow.name
    );
    assert!(!downloading(&dir));
    for node in [fast, slow] {
        assert_eq!(run.host(&node.name)["status"], "loaded");
        assert_eq!(ids_on(&tb, node).len(), tb.images.len(), "{}", node.name);
    }
}
