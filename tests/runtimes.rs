//! Each runtime end to end on the mixed test bed: containerd (the `k8s.io` namespace, what the
//! CRI shows, registry digests, pins, layers left out, faults), CRI-O's containers-storage, and
//! a download delegate that runs containerd only.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::push::{assert_holds, files_under_releases, ids_on, push, push_with};
use crate::support::{Node, Runtime, Testbed, defer, stdout, succeed};

/// What the registry serves for `image`: the digest of its manifest (or index), and the config
/// digest of its linux/amd64 image.
pub struct Served {
    pub digest: String,
    pub config: String,
    /// The compressed size of each layer, base first.
    pub layers: Vec<(String, u64)>,
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

fn registry_get(tb: &Testbed, repository: &str, reference: &str) -> (String, Value) {
    let url = format!("{}/v2/{repository}/manifests/{reference}", tb.registry_url);
    let output = succeed(
        Command::new("curl")
            .args(["-sSf", "-D", "-", "-H", &format!("Accept: {ACCEPT}"), &url])
            .output()
            .unwrap(),
    );
    let text = stdout(&output);
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    let digest = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("docker-content-digest:")
                .map(|d| d.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no digest header for {url}: {headers}"));
    (digest, serde_json::from_str(body).unwrap())
}

fn served(tb: &Testbed, image: &str) -> Served {
    served_for(tb, image, "amd64")
}

/// [`served`] for the `architecture` entry of an index.
pub fn served_for(tb: &Testbed, image: &str, architecture: &str) -> Served {
    let rest = image.strip_prefix(&format!("{}/", tb.registry)).unwrap();
    let (repository, tag) = rest.rsplit_once(':').unwrap();
    let (digest, top) = registry_get(tb, repository, tag);
    let manifest = match top["manifests"].as_array() {
        Some(entries) => {
            let entry = entries
                .iter()
                .find(|e| e["platform"]["architecture"] == architecture)
                .unwrap();
            registry_get(tb, repository, entry["digest"].as_str().unwrap()).1
        }
        None => top,
    };
    Served {
        digest,
        config: manifest["config"]["digest"].as_str().unwrap().to_string(),
        layers: manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().unwrap().to_string(),
                    l["size"].as_u64().unwrap(),
                )
            })
            .collect(),
    }
}

pub fn repository(image: &str) -> &str {
    image.rsplit_once(':').unwrap().0
}

/// tag → image ID (the config digest) of each served image, sorted as `ids_on` sorts.
pub fn served_ids(served: &[(&String, Served)]) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = served
        .iter()
        .map(|(image, s)| (image.to_string(), s.config.clone()))
        .collect();
    ids.sort();
    ids
}

/// `repository@digest` → digest of each served image (index or manifest), sorted: the names
/// containerd keeps, by which kubelet resolves `image@sha256:…`.
pub fn served_digest_names(served: &[(&String, Served)]) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = served
        .iter()
        .map(|(image, s)| {
            (
                format!("{}@{}", repository(image), s.digest),
                s.digest.clone(),
            )
        })
        .collect();
    names.sort();
    names
}

/// `--image` for each of `images`.
fn image_flags(images: &[String]) -> Vec<&str> {
    images
        .iter()
        .flat_map(|i| ["--image", i.as_str()])
        .collect()
}

fn limit(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(":")
}

/// Every containerd and CRI-O node (no Docker node, no Flatcar).
fn docker_free(tb: &Testbed) -> Vec<&Node> {
    let mut nodes = tb.running(Runtime::Containerd);
    nodes.extend(tb.running(Runtime::Crio));
    nodes
}

/// With no Docker daemon anywhere: the delegate is node1 (containerd), and the controller's
/// DOCKER_HOST leads nowhere.
const NO_DOCKER: (&str, &str) = ("DOCKER_HOST", "unix:///nonexistent/docker.sock");

#[test]
fn a_containerd_delegate_fills_containerd_and_crio_nodes_keeping_ids_digests_and_tags() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let nodes = docker_free(&tb);
    let mut images = tb.images.clone();
    images.push(tb.multiarch_image.clone());
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("c");
    let limit = limit(&nodes);
    let args = [&["-l", limit.as_str()][..], &image_flags(&images)].concat();
    let first = push_with(&tb, &cache_dir, &args, &tb.inventory_ini, &[NO_DOCKER]);
    assert_eq!(
        first.code(),
        Some(0),
        "{}\n{}",
        first.stdout(),
        first.stderr()
    );

    let sources: Vec<(&String, Served)> = images.iter().map(|i| (i, served(&tb, i))).collect();
    let expected = served_ids(&sources);
    for node in &nodes {
        let host = first.host(&node.name);
        assert_eq!(host["status"], "loaded", "{host}");
        assert_eq!(host["runtime"], node.runtime.name(), "{host}");
        assert_holds(&tb, node, &expected, "the registry's image IDs");
    }
    for node in tb.running(Runtime::Containerd) {
        // The registry's manifest (index) digests, by name, as kubelet resolves them.
        assert_eq!(
            tb.digest_names(node),
            served_digest_names(&sources),
            "{}",
            node.name
        );
        let cri = tb.cri_images(node);
        for (image, served) in &sources {
            let digest_name = format!("{}@{}", repository(image), served.digest);
            assert!(
                cri.iter()
                    .any(|(id, tags, repo_digests, _)| id == &served.config
                        && tags.contains(image)
                        && repo_digests.contains(&digest_name)),
                "{}: the CRI lists {image} as {} with {digest_name}: {cri:?}",
                node.name,
                served.config
            );
        }
    }
    // The delegate pulled with ctr (tags only): it was sent the digest names, no layer.
    let delegate = first.host("node1");
    assert!(
        delegate["bytes_sent"].as_u64().unwrap() < 64 << 10,
        "{delegate}"
    );
    // The node that says aarch64 was told so.
    for node in nodes.iter().filter(|n| n.arch == "aarch64") {
        let notes = first.host(&node.name)["notes"].to_string();
        assert!(
            notes.contains("linux/arm64") && notes.contains("kubelet will not use them"),
            "{notes}"
        );
    }

    let again = push_with(&tb, &cache_dir, &args, &tb.inventory_ini, &[NO_DOCKER]);
    assert_eq!(again.code(), Some(0), "{}", again.stderr());
    for node in &nodes {
        let host = again.host(&node.name);
        assert_eq!(host["status"], "up_to_date", "{host}");
        assert_eq!(host["bytes_sent"], 0, "{host}");
    }
}

#[test]
fn a_version_bump_from_the_containerd_delegate_sends_only_the_changed_layer() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("c");
    let first = push(&tb, &cache_dir, &[]);
    assert_eq!(first.code(), Some(0), "{}", first.stderr());
    let bumped = bump(&tb);
    let run = push(&tb, &cache_dir, &["--image", &bumped]);
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let (old, new) = (served(&tb, &tb.images[0]), served(&tb, &bumped));
    let changed: u64 = new
        .layers
        .iter()
        .filter(|layer| !old.layers.contains(layer))
        .map(|(_, size)| size)
        .sum();
    assert!(changed > 100_000, "{changed}");
    for node in tb
        .running(Runtime::Containerd)
        .into_iter()
        .chain(tb.running(Runtime::Docker))
    {
        let host = run.host(&node.name);
        let sent = host["bytes_sent"].as_u64().unwrap();
        assert!(
            sent as f64 <= changed as f64 * 1.2,
            "{} ({:?}): sent {sent} for a changed layer of {changed}",
            node.name,
            node.runtime
        );
        assert!(
            ids_on(&tb, node).contains(&(bumped.clone(), new.config.clone())),
            "{}",
            node.name
        );
    }
}

#[test]
fn a_containerd_node_holding_only_the_snapshots_is_sent_only_the_changed_layer() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let node = tb.running(Runtime::Containerd)[1];
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("c");
    let only = ["-l", node.name.as_str()];
    let first = push(
        &tb,
        &cache_dir,
        &[&only[..], &["--image", &tb.images[0]]].concat(),
    );
    assert_eq!(first.code(), Some(0), "{}", first.stderr());
    // What a CRI with discard_unpacked_layers keeps after a pull: the snapshots, not the
    // compressed layers.
    let old = served(&tb, &tb.images[0]);
    for (digest, _) in &old.layers {
        succeed(tb.run_in(node, &format!("ctr -n k8s.io content rm {digest}")));
    }
    let content = stdout(&succeed(tb.run_in(node, "ctr -n k8s.io content ls -q")));
    assert!(
        old.layers
            .iter()
            .all(|(d, _)| !content.contains(d.as_str())),
        "{content}"
    );
    let bumped = bump(&tb);
    let run = push(
        &tb,
        &cache_dir,
        &[&only[..], &["--image", &bumped]].concat(),
    );
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
    let new = served(&tb, &bumped);
    let changed: u64 = new
        .layers
        .iter()
        .filter(|layer| !old.layers.contains(layer))
        .map(|(_, size)| size)
        .sum();
    let host = run.host(&node.name);
    let sent = host["bytes_sent"].as_u64().unwrap();
    assert!(
        sent as f64 <= changed as f64 * 1.2,
        "sent {sent} for {changed}: {host}"
    );
    assert_eq!(host["attempts"], 1, "{host}");
    assert!(
        !host["notes"].to_string().contains("full archive"),
        "{host}"
    );
    assert!(ids_on(&tb, node).contains(&(bumped.clone(), new.config.clone())));
    let cri = tb.cri_images(node);
    assert!(
        cri.iter()
            .any(|(id, tags, _, _)| id == &new.config && tags.contains(&bumped)),
        "{cri:?}"
    );
}

/// `scripts/testbed-images.sh bump`: the first image as `:v2`, only its last layer changed.
fn bump(tb: &Testbed) -> String {
    let bump = Command::new(crate::support::repo().join("scripts/testbed-images.sh"))
        .arg("bump")
        .env("TESTBED_ID", tb.id.to_string())
        .output()
        .unwrap();
    let bumped = stdout(&bump)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(bump.status.success() && bumped.ends_with(":v2"), "{bumped}");
    bumped
}

/// Whether a process of the node (in its network namespace) runs `program` with `word` among
/// its arguments: a load under way.
fn running_on(node: &Node, program: &str, word: &str) -> bool {
    let pids = Command::new("ip")
        .args(["netns", "pids", &node.netns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .any(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.first()
                .is_some_and(|a| a.ends_with(program.as_bytes()))
                && args.contains(&word.as_bytes())
        })
}

/// Waits (up to 30 s) until `node` runs `ctr … import`.
fn wait_for_import(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running_on(node, "ctr", "import") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        running_on(node, "ctr", "import"),
        "the import never started on {}",
        node.name
    );
}

#[test]
fn containerd_stopped_during_its_import_fails_that_attempt_in_its_words_and_the_retry_loads() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let node = tb.running(Runtime::Containerd)[1];
    let others: Vec<&Node> = crate::push::regular_nodes(&tb)
        .filter(|n| n.name != node.name)
        .collect();
    let cache = tempfile::tempdir().unwrap();
    tb.shape(node, Some("2mbit"));
    let _unshape = defer(|| tb.shape(node, None));
    let _restart = defer(|| tb.start_containerd(node));
    let run = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            push(
                &tb,
                &cache.path().join("c"),
                &["--delegate", "localhost", "--source", "docker"],
            )
        });
        wait_for_import(node);
        // Into the stream of blobs (the link gives it ~25 s): stopped while ctr still dials
        // containerd or takes its lease, the gRPC client waits for the daemon to return and
        // the import goes on as if nothing happened.
        std::thread::sleep(Duration::from_millis(1500));
        tb.stop_containerd(node);
        tb.shape(node, None);
        // Down until that import has given up: ctr's gRPC client reconnects by itself to a
        // containerd back within its deadline, and the attempt would then succeed after all.
        let deadline = Instant::now() + Duration::from_secs(20);
        while running_on(node, "ctr", "import") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        tb.start_containerd(node);
        run.join().unwrap()
    });
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
    let host = run.host(&node.name);
    assert_eq!(host["status"], "loaded", "{host}");
    assert!(host["attempts"].as_u64().unwrap() >= 2, "{host}");
    // The failed attempt is shown (on stderr, without a terminal) with ctr's own words.
    let failed = run
        .stderr()
        .lines()
        .find(|l| l.starts_with(&format!("{}: attempt 1/", node.name)))
        .unwrap_or_else(|| panic!("no failed attempt shown: {}", run.stderr()))
        .to_string();
    assert!(
        failed.contains("ctr images import failed") && failed.contains("ctr: "),
        "{failed}"
    );
    for other in others {
        assert_eq!(run.host(&other.name)["attempts"], 1, "{}", other.name);
        assert_eq!(run.host(&other.name)["status"], "loaded", "{}", other.name);
    }
    assert_eq!(ids_on(&tb, node).len(), tb.images.len());
}

#[test]
fn a_containerd_import_missing_a_left_out_blob_is_resent_whole_in_the_same_attempt() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let node = tb.running(Runtime::Containerd)[1];
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("c");
    let only = |extra: &[&str]| {
        let args = [
            &[
                "--delegate",
                "localhost",
                "--source",
                "docker",
                "-l",
                &node.name,
            ][..],
            extra,
        ]
        .concat();
        push(&tb, &cache_dir, &args)
    };
    let seeded = only(&["--image", &tb.images[0]]);
    assert_eq!(seeded.code(), Some(0), "{}", seeded.stderr());
    // The next push leaves out the base the node holds through the first image. Remove that
    // image, its blobs and snapshots, while the archive is on its way: the import then stores
    // the records and fails to unpack.
    tb.shape(node, Some("2mbit"));
    let _unshape = defer(|| tb.shape(node, None));
    let rest = image_flags(&tb.images[1..]);
    let run = std::thread::scope(|scope| {
        let run = scope.spawn(|| only(&rest));
        wait_for_import(node);
        // Every reference to it, the CRI's `sha256:<config>` one too (as kubelet's GC does).
        succeed(tb.run_in(
            node,
            &format!(
                "t=$(ctr -n k8s.io images ls | awk '$1 == \"{}\" {{ print $3 }}'); \
                 ctr -n k8s.io images ls | awk -v t=\"$t\" '$3 == t {{ print $1 }}' \
                 | xargs ctr -n k8s.io images rm --sync >/dev/null",
                tb.images[0]
            ),
        ));
        tb.shape(node, None);
        run.join().unwrap()
    });
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
    let host = run.host(&node.name);
    assert_eq!(host["status"], "loaded", "{host}");
    assert_eq!(
        host["attempts"], 1,
        "the fallback is part of the same attempt: {host}"
    );
    assert_eq!(host["bytes_saved"], 0, "{host}");
    let note = host["notes"].to_string();
    assert!(
        note.contains("sent the full archive") && note.contains("not found"),
        "{host}"
    );
    let on_node: Vec<String> = ids_on(&tb, node).into_iter().map(|(tag, _)| tag).collect();
    assert_eq!(on_node, tb.images[1..].to_vec());
}

#[test]
fn pinned_images_carry_the_label_and_the_recap_says_where_containerd_ignores_it() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let node = tb.running(Runtime::Containerd)[0];
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("hosts.ini");
    let ini = std::fs::read_to_string(&tb.inventory_ini).unwrap();
    std::fs::write(
        &inventory,
        format!("{ini}\n[all:vars]\ndropship_pin_images=true\n"),
    )
    .unwrap();
    let args = [
        "--delegate",
        "localhost",
        "--source",
        "docker",
        "-l",
        &node.name,
    ];
    let run = push_with(&tb, &dir.path().join("c"), &args, &inventory, &[]);
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
    let labels = stdout(&succeed(tb.run_in(node, "ctr -n k8s.io images ls")));
    for image in &tb.images {
        let row = labels
            .lines()
            .find(|l| l.starts_with(&format!("{image} ")))
            .unwrap_or_else(|| panic!("{image}: {labels}"));
        assert!(row.contains("io.cri-containerd.pinned=pinned"), "{row}");
    }
    // containerd 1.6.20 keeps the label but does not report it to kubelet (1.6.25 does).
    assert!(tb.cri_images(node).iter().all(|(_, _, _, pinned)| !pinned));
    let note = run.host(&node.name)["notes"].to_string();
    assert!(note.contains("does not report pins to kubelet"), "{note}");
    let unpinned = push(
        &tb,
        &dir.path().join("c"),
        &[
            "--delegate",
            "localhost",
            "--source",
            "docker",
            "-l",
            "node4",
        ],
    );
    assert_eq!(unpinned.code(), Some(0), "{}", unpinned.stderr());
    let labels = stdout(&succeed(
        tb.run_in(tb.node("node4"), "ctr -n k8s.io images ls"),
    ));
    assert!(!labels.contains("pinned"), "off by default: {labels}");
}

/// Files under podman's temp dir (`/var/tmp`) on a node.
fn podman_temp_files(tb: &Testbed, node: &Node) -> String {
    stdout(&tb.run_in(
        node,
        "find /var/tmp -maxdepth 2 -newer /tmp/releases -type f 2>/dev/null",
    ))
}

#[test]
fn containerd_and_crio_nodes_keep_nothing_unless_asked_then_one_archive_each() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let nodes = docker_free(&tb);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("c");
    let limit = limit(&nodes);
    let args = [
        "--delegate",
        "localhost",
        "--source",
        "docker",
        "-l",
        limit.as_str(),
    ];
    let streamed = push(&tb, &cache_dir, &args);
    assert_eq!(streamed.code(), Some(0), "{}", streamed.stderr());
    for node in &nodes {
        assert_eq!(files_under_releases(&tb, node), "", "{}", node.name);
        if node.runtime == Runtime::Crio {
            assert_eq!(podman_temp_files(&tb, node), "", "podman removed its copy");
        }
    }
    tb.reset_nodes();
    let kept = push(
        &tb,
        &cache_dir,
        &[&args[..], &["--keep-remote-cache"]].concat(),
    );
    assert_eq!(kept.code(), Some(0), "{}", kept.stderr());
    for node in &nodes {
        let files = files_under_releases(&tb, node);
        let files: Vec<&str> = files.lines().collect();
        assert_eq!(files.len(), 1, "{}: {files:?}", node.name);
        assert!(
            files[0].starts_with("/tmp/releases/images/dropship-") && files[0].ends_with(".tar"),
            "{}: {files:?}",
            node.name
        );
        assert_eq!(ids_on(&tb, node).len(), tb.images.len(), "{}", node.name);
        if node.runtime == Runtime::Crio {
            assert_eq!(
                podman_temp_files(&tb, node),
                "",
                "podman read the kept file itself"
            );
        }
    }
}

#[test]
fn the_containerd_delegate_pulls_again_the_layers_its_cri_discarded_before_exporting() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let delegate = tb.node("node1");
    let target = tb.running(Runtime::Containerd)[1];
    let image = &tb.images[0];
    succeed(tb.run_in(
        delegate,
        &format!(
            "ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d {image} >/dev/null"
        ),
    ));
    // What a CRI with discard_unpacked_layers leaves: the snapshots, not the layer blobs
    // (kubespray#13235: `ctr export` then fails half-way).
    let layers = served(&tb, image).layers;
    for (digest, _) in &layers {
        succeed(tb.run_in(delegate, &format!("ctr -n k8s.io content rm {digest}")));
    }
    let check = stdout(&succeed(tb.run_in(delegate, "ctr -n k8s.io images check")));
    assert!(check.contains("incomplete"), "{check}");
    let export = tb.run_in(
        delegate,
        &format!("ctr -n k8s.io images export - {image} | wc -c"),
    );
    let cache = tempfile::tempdir().unwrap();
    let run = push_with(
        &tb,
        &cache.path().join("c"),
        &["-l", &target.name, "--image", image],
        &tb.inventory_ini,
        &[NO_DOCKER],
    );
    assert_eq!(
        run.code(),
        Some(0),
        "{}\n{}\n(export before: {})",
        run.stdout(),
        run.stderr(),
        stdout(&export)
    );
    let content = stdout(&succeed(tb.run_in(delegate, "ctr -n k8s.io content ls -q")));
    for (digest, _) in &layers {
        assert!(content.contains(digest.as_str()), "{digest} pulled again");
    }
    let served = served(&tb, image);
    assert_eq!(
        ids_on(&tb, target),
        [(image.clone(), served.config.clone())]
    );
}
