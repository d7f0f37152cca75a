//! `dropship push` end to end on the test bed: real bastion, sshd, dockerd and registry.
//! Skipped with a loud message when the test bed is not up (a failure in CI).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{Node, Runtime, Testbed};
use serde_json::Value;

pub struct Run {
    pub output: Output,
    pub json: Value,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn host(&self, name: &str) -> &Value {
        self.json["hosts"]
            .as_array()
            .and_then(|hosts| hosts.iter().find(|h| h["host"] == name))
            .unwrap_or_else(|| panic!("no {name} in the recap: {}", self.json))
    }
}

/// `dropship push` against the test bed's inventory, with a cache of the test's own; the test
/// bed's images unless `extra` names some with `--image`.
pub fn push(tb: &Testbed, cache: &Path, extra: &[&str]) -> Run {
    push_with(tb, cache, extra, &tb.inventory_ini, &[])
}

/// [`push`] with another inventory and environment.
pub fn push_with(
    tb: &Testbed,
    cache: &Path,
    extra: &[&str],
    inventory: &Path,
    env: &[(&str, &str)],
) -> Run {
    push_from(tb.dropship(), tb, cache, extra, inventory, env)
}

/// [`push_with`] from `command` (e.g. one with its working directory set).
fn push_from(
    mut command: Command,
    tb: &Testbed,
    cache: &Path,
    extra: &[&str],
    inventory: &Path,
    env: &[(&str, &str)],
) -> Run {
    let json = cache.with_extension("json");
    push_args(
        &mut command,
        tb,
        cache,
        inventory,
        !extra.contains(&"--image"),
    );
    let output = command
        .arg("--json")
        .arg(&json)
        .args(["--retry-stagger", "1", "--seed", "7"])
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .expect("run dropship");
    let json = std::fs::read(&json)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    Run { output, json }
}

/// `push -i INVENTORY [--images-file <the test bed's>] --cache-dir CACHE` on `command`.
fn push_args(command: &mut Command, tb: &Testbed, cache: &Path, inventory: &Path, images: bool) {
    command.args(["push", "-i"]).arg(inventory);
    if images {
        command.arg("--images-file").arg(&tb.images_file);
    }
    command.arg("--cache-dir").arg(cache);
}

/// A `dropship push` of the test bed's images to its inventory, to spawn (signal tests).
fn push_command(tb: &Testbed, cache: &Path) -> Command {
    let mut command = tb.dropship();
    push_args(&mut command, tb, cache, &tb.inventory_ini, true);
    command
}

/// tag → image ID on a node.
pub fn ids_on(tb: &Testbed, node: &Node) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = tb
        .node_images(node)
        .into_iter()
        .flat_map(|(id, tags)| tags.into_iter().map(move |tag| (tag, id.clone())))
        .collect();
    ids.sort();
    ids
}

/// `node` holds exactly `expected` (tag → image ID) and nothing is left in its releases dir.
pub fn assert_holds(tb: &Testbed, node: &Node, expected: &[(String, String)], what: &str) {
    assert_eq!(ids_on(tb, node), expected, "{}: {what}", node.name);
    assert_eq!(
        files_under_releases(tb, node),
        "",
        "nothing left on {}",
        node.name
    );
}

pub fn regular_nodes(tb: &Testbed) -> impl Iterator<Item = &Node> {
    tb.nodes.iter().filter(|n| !tb.is_flatcar(n))
}

pub fn files_under_releases(tb: &Testbed, node: &Node) -> String {
    crate::support::stdout(&tb.run_in(node, "find /tmp/releases -type f 2>/dev/null"))
}

#[test]
fn every_node_but_flatcar_gets_every_image_and_a_rerun_sends_nothing() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let cache = tempfile::tempdir().unwrap();
    let first = push(&tb, &cache.path().join("c"), &[]);
    assert_eq!(
        first.code(),
        Some(0),
        "{}\n{}",
        first.stdout(),
        first.stderr()
    );
    // The default delegate is node1 (first kube_control_plane host, containerd as Kubespray
    // installs it): what it pulled is the source.
    let source = ids_on(&tb, tb.node("node1"));
    assert_eq!(
        source.len(),
        tb.images.len(),
        "node1 pulled every image: {source:?}"
    );
    for image in &tb.images {
        assert!(
            source.iter().any(|(tag, _)| tag == image),
            "{image} on node1"
        );
    }
    for node in regular_nodes(&tb) {
        assert_holds(&tb, node, &source, "the source's images");
        let host = first.host(&node.name);
        assert_eq!(host["status"], "loaded", "{host}");
        assert_eq!(host["runtime"], node.runtime.name(), "{host}");
    }
    // The delegate pulled with ctr, which names images by tag only: it was sent the digest
    // names alone, every layer left out.
    let delegate = first.host("node1");
    assert!(
        delegate["bytes_sent"].as_u64().unwrap() < 64 << 10,
        "{delegate}"
    );
    assert!(
        delegate["bytes_saved"].as_u64().unwrap() > 1_000_000,
        "{delegate}"
    );
    let flatcar = tb.flatcar();
    assert!(
        tb.node_images(flatcar).is_empty(),
        "the Flatcar node holds nothing"
    );
    assert_eq!(first.host(&flatcar.name)["status"], "skipped_coreos");
    assert!(
        first
            .stdout()
            .contains("images are not pushed to CoreOS/Flatcar hosts")
    );

    let again = push(&tb, &cache.path().join("c"), &[]);
    assert_eq!(again.code(), Some(0), "{}", again.stderr());
    for node in regular_nodes(&tb) {
        let host = again.host(&node.name);
        assert_eq!(host["status"], "up_to_date", "{host}");
        assert_eq!(host["bytes_sent"], 0, "{host}");
        assert_eq!(host["runtime"], node.runtime.name(), "{host}");
    }
    assert!(again.stdout().contains("; 0 B sent"), "{}", again.stdout());
}

#[test]
fn check_reports_what_would_be_sent_and_changes_nothing() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let cache = tempfile::tempdir().unwrap();
    let run = push(
        &tb,
        &cache.path().join("c"),
        &["--check", "--delegate", "localhost", "--source", "docker"],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    assert!(run.stdout().contains("PUSH CHECK"), "{}", run.stdout());
    for node in regular_nodes(&tb) {
        let host = run.host(&node.name);
        assert_eq!(host["status"], "loaded", "{host}");
        assert!(host["bytes_sent"].as_u64().unwrap() > 1_000_000, "{host}");
        assert!(
            tb.node_images(node).is_empty(),
            "--check loaded nothing on {}",
            node.name
        );
    }
}

#[test]
fn a_kept_archive_lands_in_local_release_dir_and_nothing_else_is_left() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let cache = tempfile::tempdir().unwrap();
    let run = push(
        &tb,
        &cache.path().join("c"),
        &[
            "--keep-remote-cache",
            "--delegate",
            "localhost",
            "--source",
            "docker",
            "-l",
            "node2",
        ],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr());
    let files = files_under_releases(&tb, tb.node("node2"));
    let kept: Vec<&str> = files.lines().collect();
    assert_eq!(kept.len(), 1, "{files}");
    assert!(
        kept[0].starts_with("/tmp/releases/images/dropship-"),
        "{files}"
    );
    assert!(kept[0].ends_with(".tar.zst"), "{files}");
    assert_eq!(
        files_under_releases(&tb, tb.node("node3")),
        "",
        "the limit kept node3 out"
    );
    assert_eq!(ids_on(&tb, tb.node("node2")).len(), tb.images.len());
}

#[test]
fn a_node_cut_off_mid_transfer_succeeds_on_a_later_attempt() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let node = tb.node("node2");
    // Slow node2's link so its transfer is surely under way when its sshd dies.
    tb.shape(node, Some("2mbit"));
    let cache = tempfile::tempdir().unwrap();
    let run = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            push(
                &tb,
                &cache.path().join("c"),
                &[
                    "--delegate",
                    "localhost",
                    "--source",
                    "docker",
                    "-l",
                    "node2:node3",
                ],
            )
        });
        std::thread::sleep(Duration::from_secs(4));
        tb.kill_sshd(node);
        tb.shape(node, None);
        std::thread::sleep(Duration::from_secs(2));
        tb.start_sshd(node);
        run.join().unwrap()
    });
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
    let host = run.host("node2");
    assert_eq!(host["status"], "loaded", "{host}");
    assert!(host["attempts"].as_u64().unwrap() >= 2, "{host}");
    assert_eq!(run.host("node3")["attempts"], 1);
    assert_eq!(ids_on(&tb, node), ids_on(&tb, tb.node("node3")));
    assert_eq!(files_under_releases(&tb, node), "");
}

/// A node whose sshd is stopped refuses the connection: unreachable, tried once more after a
/// short pause rather than on the whole schedule, named in the recap and the error.
#[test]
fn a_node_down_for_the_whole_run_is_unreachable_alone_and_is_named() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let down = tb.node("node3");
    tb.stop_sshd(down);
    let _back = crate::support::defer(|| tb.start_sshd(down));
    let cache = tempfile::tempdir().unwrap();
    let run = push(
        &tb,
        &cache.path().join("c"),
        &[
            "--delegate",
            "localhost",
            "--source",
            "docker",
            "--retries",
            "4",
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    let host = run.host("node3");
    assert_eq!(host["status"], "unreachable", "{host}");
    assert_eq!(host["phase"], "connect", "{host}");
    assert_eq!(host["attempts"], 2, "a refusal is retried once: {host}");
    assert!(
        host["elapsed"].as_f64().unwrap() < 3.0,
        "not the staggered delay of 3 s or more: {host}"
    );
    assert!(host["reason"].as_str().unwrap().contains("node3"), "{host}");
    assert!(
        run.stdout().contains("unreachable hosts: node3"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stderr().contains(
            "node3: unreachable (connect, attempt 2): the bastion could not open a tunnel"
        ),
        "the live line says why: {}",
        run.stderr()
    );
    assert!(
        run.stderr()
            .contains("push failed: 1 host(s) unreachable: node3"),
        "{}",
        run.stderr()
    );
    for name in ["node1", "node2"] {
        assert_eq!(run.host(name)["status"], "loaded");
        assert_eq!(ids_on(&tb, tb.node(name)).len(), tb.images.len());
    }
}

/// With every node down (the delegate too), the run still ends with the recap and the JSON,
/// every host unreachable, and exits 1 naming them.
#[test]
fn every_host_unreachable_still_writes_the_recap_and_the_json() {
    let (tb, _lock) = testbed!();
    for node in &tb.nodes {
        tb.stop_sshd(node);
    }
    let _back = crate::support::defer(|| {
        for node in &tb.nodes {
            tb.start_sshd(node);
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let run = push(&tb, &cache.path().join("c"), &[]);
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    let names: Vec<&str> = tb.nodes.iter().map(|n| n.name.as_str()).collect();
    let hosts = run.json["hosts"].as_array().expect("the JSON was written");
    assert_eq!(hosts.len(), names.len(), "{}", run.json);
    for host in hosts {
        assert_eq!(host["status"], "unreachable", "{host}");
        assert_eq!(host["phase"], "connect", "{host}");
    }
    assert_eq!(run.json["totals"]["unreachable"], names.len());
    assert!(run.json["download_error"].is_string(), "{}", run.json);
    let every = names.join(", ");
    assert!(run.stdout().contains("PUSH RECAP"), "{}", run.stdout());
    assert!(
        run.stdout()
            .contains(&format!("unreachable hosts: {every}")),
        "{}",
        run.stdout()
    );
    assert!(
        run.stderr()
            .contains(&format!("{} host(s) unreachable: {every}", names.len())),
        "{}",
        run.stderr()
    );
}

/// `--json -`: the JSON alone on stdout, as `json.load` reads it from a pipe; the recap on
/// stderr. For `push` and `ping`.
#[test]
fn json_on_stdout_is_alone_and_the_recap_goes_to_stderr() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let cache = tempfile::tempdir().unwrap();
    let inventory = tb.inventory_ini.to_str().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let images = tb.images_file.to_str().unwrap();
    let cases: [(&[&str], &str, &str); 2] = [
        (
            &[
                "push",
                "-i",
                inventory,
                "--images-file",
                images,
                "--cache-dir",
                cache_dir,
                "--delegate",
                "localhost",
                "--source",
                "docker",
                "-l",
                "node2",
                "--json",
                "-",
            ],
            "d['totals']['loaded']",
            "PUSH RECAP",
        ),
        (
            &["ping", "-i", inventory, "-l", "node2", "--json", "-"],
            "len(d['hosts'])",
            "1 reachable",
        ),
    ];
    for (args, read, recap) in cases {
        let mut dropship = tb.dropship();
        let mut child = dropship
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let python = Command::new("python3")
            .args([
                "-c",
                &format!("import json, sys; d = json.load(sys.stdin); print({read})"),
            ])
            .stdin(child.stdout.take().unwrap())
            .output()
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            python.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&python.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&python.stdout), "1\n", "{args:?}");
        assert!(stderr.contains(recap), "{args:?}: {stderr}");
    }
}

/// A run with a host down writes the hosts to push again to a retry file named in the recap;
/// `--limit @FILE` then re-runs exactly those. Ansible's settings move it or turn it off.
#[test]
fn a_retry_file_names_the_hosts_to_push_again_and_limit_at_file_reruns_them() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let down = tb.node("node3");
    tb.stop_sshd(down);
    let mut back = Some(crate::support::defer(|| tb.start_sshd(down)));
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("c");
    let in_work = |extra: &[&str], env: &[(&str, &str)]| {
        let args = [
            &["--delegate", "localhost", "--source", "docker"][..],
            extra,
        ]
        .concat();
        let mut command = tb.dropship();
        command
            .current_dir(work.path())
            .env_remove("ANSIBLE_RETRY_FILES_ENABLED");
        push_from(command, &tb, &cache, &args, &tb.inventory_ini, env)
    };
    let first = in_work(&["-l", "node2,node3", "--retries", "1"], &[]);
    assert_eq!(first.code(), Some(1), "{}", first.stderr());
    let file = work.path().join("dropship-push.retry");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "node3\n");
    assert!(
        first
            .stdout()
            .contains(&format!("to retry, use: --limit @{}", file.display())),
        "{}",
        first.stdout()
    );
    assert_eq!(first.json["retry_file"], file.to_str().unwrap());
    drop(back.take());
    let again = in_work(&["-l", "@dropship-push.retry"], &[]);
    assert_eq!(again.code(), Some(0), "{}", again.stderr());
    let hosts: Vec<&Value> = again.json["hosts"].as_array().unwrap().iter().collect();
    assert_eq!(hosts.len(), 1, "{}", again.json);
    assert_eq!(
        (&hosts[0]["host"], &hosts[0]["status"]),
        (&"node3".into(), &"loaded".into())
    );
    assert!(!again.stdout().contains("to retry"), "{}", again.stdout());

    tb.stop_sshd(down);
    let _back = crate::support::defer(|| tb.start_sshd(down));
    let elsewhere = work.path().join("retries");
    let saved = in_work(
        &["-l", "node3", "--retries", "1"],
        &[("ANSIBLE_RETRY_FILES_SAVE_PATH", elsewhere.to_str().unwrap())],
    );
    assert_eq!(saved.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("dropship-push.retry")).unwrap(),
        "node3\n"
    );
    std::fs::remove_file(&file).unwrap();
    let off = in_work(
        &["-l", "node3", "--retries", "1"],
        &[("ANSIBLE_RETRY_FILES_ENABLED", "false")],
    );
    assert_eq!(off.code(), Some(1));
    assert!(
        !file.exists() && !off.stdout().contains("to retry"),
        "{}",
        off.stdout()
    );
    assert_eq!(off.json["retry_file"], Value::Null);
}

#[test]
fn a_stopped_docker_daemon_fails_that_node_with_the_daemons_words() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let node = tb.node("node2");
    tb.stop_dockerd(node);
    let cache = tempfile::tempdir().unwrap();
    let run = push(
        &tb,
        &cache.path().join("c"),
        &[
            "--delegate",
            "localhost",
            "--source",
            "docker",
            "--retries",
            "1",
        ],
    );
    tb.start_dockerd(node);
    assert_eq!(run.code(), Some(1), "{}", run.stderr());
    let host = run.host("node2");
    assert_eq!(host["status"], "failed", "reached, then failed: {host}");
    assert_eq!(host["phase"], "facts", "{host}");
    let reason = host["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("docker does not answer"), "{reason}");
    assert!(
        reason.contains("Cannot connect to the Docker daemon"),
        "{reason}"
    );
    // The recap's line names the host already; the reason follows without it.
    let shown = reason.strip_prefix("node2: ").unwrap_or(&reason);
    assert!(
        run.stdout().contains(&format!(
            "node2 : FAILED      docker     phase=facts attempts=1: {shown}"
        )),
        "the recap shows it: {}",
        run.stdout()
    );
    assert_eq!(run.host("node3")["status"], "loaded");
}

#[test]
fn bad_input_is_refused_before_anything_is_sent() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let cache = tempfile::tempdir().unwrap();
    let dropship = |args: &[&str]| {
        tb.dropship()
            .args(args)
            .arg("--cache-dir")
            .arg(cache.path())
            .output()
            .unwrap()
    };
    let inventory = tb.inventory_ini.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["push", "-i", inventory, "--image", "Not A Ref"],
            "Not A Ref",
        ),
        (
            &["push", "-i", "/nonexistent/hosts.ini", "--image", "a:1"],
            "/nonexistent/hosts.ini",
        ),
        (
            &["push", "-i", inventory, "-l", "node99", "--image", "a:1"],
            "node99",
        ),
        (
            &[
                "push",
                "-i",
                inventory,
                "--image",
                "registry.testbed:5000/dropship/nope:v1",
                "--delegate",
                "localhost",
                "--source",
                "docker",
            ],
            "nope",
        ),
    ];
    for (args, named) in cases {
        let output = dropship(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{args:?}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
    for node in &tb.nodes {
        assert!(
            tb.node_images(node).is_empty(),
            "nothing reached {}",
            node.name
        );
    }
}

/// One image of `dropship cache list --json`.
pub fn cached_image(cache: &Path, tag: &str) -> Value {
    let output = crate::support::dropship()
        .args(["cache", "list", "--json", "--cache-dir"])
        .arg(cache)
        .output()
        .unwrap();
    let listing: Value = serde_json::from_slice(&output.stdout).unwrap();
    listing["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["repo_tags"].as_array().unwrap().iter().any(|t| t == tag))
        .unwrap_or_else(|| panic!("{tag} not in {listing}"))
        .clone()
}

#[test]
fn a_version_bump_sends_each_node_only_the_changed_layer() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("c");
    let first = push(
        &tb,
        &cache_dir,
        &["--delegate", "localhost", "--source", "docker"],
    );
    assert_eq!(first.code(), Some(0), "{}", first.stderr());
    let bump = Command::new(crate::support::repo().join("scripts/testbed-images.sh"))
        .arg("bump")
        .env("TESTBED_ID", tb.id.to_string())
        .output()
        .unwrap();
    let bumped = crate::support::stdout(&bump)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(bump.status.success() && bumped.ends_with(":v2"), "{bumped}");
    let output = crate::support::succeed(
        tb.dropship()
            .args(["push", "-i"])
            .arg(&tb.inventory_ini)
            .args([
                "--image",
                &bumped,
                "--delegate",
                "localhost",
                "--source",
                "docker",
                "--json",
                "-",
                "--cache-dir",
            ])
            .arg(&cache_dir)
            .output()
            .unwrap(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout[stdout.find('{').unwrap()..]).unwrap();
    let image = cached_image(&cache_dir, &bumped);
    // Every layer of v2 but the changed one is shared with v1: the rest is what changed.
    let changed =
        image["compressed_bytes"].as_u64().unwrap() - image["shared_bytes"].as_u64().unwrap();
    for node in regular_nodes(&tb) {
        let host = report["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == node.name.as_str())
            .unwrap();
        let sent = host["bytes_sent"].as_u64().unwrap();
        if node.runtime == Runtime::Crio {
            // podman cannot take a docker-archive with layers left out: the image goes whole.
            assert!(sent as f64 >= image["compressed_bytes"].as_u64().unwrap() as f64 * 0.9);
            assert_eq!(host["bytes_saved"], 0, "{host}");
        } else {
            assert!(
                sent as f64 <= changed as f64 * 1.2,
                "{} ({:?}): sent {sent} bytes for a changed layer of {changed}",
                node.name,
                node.runtime
            );
            assert!(host["bytes_saved"].as_u64().unwrap() > 0, "{host}");
        }
        let on_node = ids_on(&tb, node);
        assert!(
            on_node
                .iter()
                .any(|(tag, id)| tag == &bumped && id == image["id"].as_str().unwrap()),
            "{}: {on_node:?}",
            node.name
        );
    }
}

#[test]
fn a_node_holding_the_shared_base_gets_everything_but_the_base_and_no_delta_sends_it_all() {
    let (tb, _lock) = testbed!();
    // Docker (the only Docker node, twice) and containerd (two nodes).
    let docker = tb.running(Runtime::Docker)[0];
    let containerd = tb.running(Runtime::Containerd);
    for (with_delta, without) in [(docker, docker), (containerd[0], containerd[1])] {
        tb.reset_nodes();
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = cache.path().join("c");
        let seed = |node: &Node| {
            // The first image only: the node then holds the set's shared base.
            let run = push(
                &tb,
                &cache_dir,
                &[
                    "--delegate",
                    "localhost",
                    "--source",
                    "docker",
                    "-l",
                    &node.name,
                    "--image",
                    &tb.images[0],
                ],
            );
            assert_eq!(run.code(), Some(0), "{}", run.stderr());
        };
        let rest: Vec<&str> = tb.images[1..]
            .iter()
            .flat_map(|i| ["--image", i.as_str()])
            .collect();
        let rest_to = |node: &Node, flags: &[&str]| {
            let run = push(
                &tb,
                &cache_dir,
                &[
                    &[
                        "--delegate",
                        "localhost",
                        "--source",
                        "docker",
                        "-l",
                        &node.name,
                    ][..],
                    flags,
                    &rest,
                ]
                .concat(),
            );
            assert_eq!(run.code(), Some(0), "{}", run.stderr());
            (run.host(&node.name).clone(), ids_on(&tb, node))
        };
        seed(with_delta);
        let (with, delta_images) = rest_to(with_delta, &[]);
        if with_delta.name == without.name {
            tb.reset_node(without);
        }
        seed(without);
        let (without, full_images) = rest_to(without, &["--no-delta"]);
        let saved = with["bytes_saved"].as_u64().unwrap();
        assert!(saved > 500_000, "the 1 MB base was not sent: {with}");
        assert_eq!(without["bytes_saved"], 0, "{without}");
        let difference =
            without["bytes_sent"].as_u64().unwrap() - with["bytes_sent"].as_u64().unwrap();
        // The full archive is the delta one plus the base layer (and that layer's tar header).
        assert!(
            difference.abs_diff(saved) < 4096,
            "{:?}: {difference} vs {saved}",
            with_delta.runtime
        );
        assert_eq!(delta_images, full_images);
    }
}

/// Ctrl-C, SIGTERM (what `timeout`, systemd and CI runners send) and SIGHUP mid-transfer:
/// the transfer stops, the recap and the JSON are written, the exit code is the signal's, and
/// the node is left without a partial file.
#[test]
fn a_signal_mid_transfer_stops_it_reports_and_leaves_no_partial_file() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let node = tb.node("node2");
    tb.shape(node, Some("1mbit"));
    let _unshape = crate::support::defer(|| tb.shape(node, None));
    let cache = tempfile::tempdir().unwrap();
    let json = cache.path().join("recap.json");
    for (signal, code) in [("INT", 130), ("TERM", 143), ("HUP", 129)] {
        let _ = std::fs::remove_file(&json);
        let child = push_command(&tb, &cache.path().join("c"))
            .arg("--json")
            .arg(&json)
            .args([
                "--delegate",
                "localhost",
                "--source",
                "docker",
                "--keep-remote-cache",
                "-l",
                "node2",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the partial archive shows on the node, then send the signal.
        let partial =
            || crate::support::stdout(&tb.run_in(node, "find /tmp/releases -name '*.part'"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while partial().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            !partial().is_empty(),
            "SIG{signal}: the transfer never started"
        );
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(code),
            "SIG{signal}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(&format!("interrupted by SIG{signal}"))
                && stdout.contains("node2 : INTERRUPTED"),
            "SIG{signal}: {stdout}"
        );
        let recap: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(recap["interrupted"], format!("SIG{signal}"));
        let host = &recap["hosts"][0];
        assert_eq!(host["status"], "interrupted", "{host}");
        assert_eq!(host["phase"], "send", "{host}");
        assert!(host["bytes_sent"].as_u64().unwrap() > 0, "{host}");
        // The node's side notices the closed channel and removes what it had received.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !files_under_releases(&tb, node).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            files_under_releases(&tb, node),
            "",
            "SIG{signal}: a partial archive was left behind"
        );
        assert!(tb.node_images(node).is_empty());
    }
}

/// Whether a `docker load` runs in the node's network namespace (a push is loading there).
fn loading_on(node: &Node) -> bool {
    let pids = Command::new("ip")
        .args(["netns", "pids", &node.netns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .any(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|&b| b == 0).any(|arg| arg == b"load") && cmdline.starts_with(b"docker")
        })
}

#[test]
fn a_delta_load_that_fails_is_resent_whole_in_the_same_attempt() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    let node = tb.node("node2");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("c");
    let seeded = push(
        &tb,
        &cache_dir,
        &[
            "--delegate",
            "localhost",
            "--source",
            "docker",
            "-l",
            "node2",
            "--image",
            &tb.images[0],
        ],
    );
    assert_eq!(seeded.code(), Some(0), "{}", seeded.stderr());
    // The next push leaves out the base that node2 holds through the first image. Remove that
    // image while the archive is on its way: the load then lacks the base and fails.
    tb.shape(node, Some("2mbit"));
    let _unshape = crate::support::defer(|| tb.shape(node, None));
    let rest: Vec<&str> = tb.images[1..]
        .iter()
        .flat_map(|i| ["--image", i.as_str()])
        .collect();
    let run = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            push(
                &tb,
                &cache_dir,
                &[
                    &[
                        "--delegate",
                        "localhost",
                        "--source",
                        "docker",
                        "-l",
                        "node2",
                    ][..],
                    &rest,
                ]
                .concat(),
            )
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !loading_on(node) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(loading_on(node), "the transfer never started");
        crate::support::succeed(crate::support::docker(
            node.docker_host(),
            &["rmi", &tb.images[0]],
        ));
        tb.shape(node, None);
        run.join().unwrap()
    });
    assert_eq!(run.code(), Some(0), "{}\n{}", run.stdout(), run.stderr());
    let host = run.host("node2");
    assert_eq!(host["status"], "loaded", "{host}");
    assert_eq!(
        host["attempts"], 1,
        "the fallback is part of the same attempt: {host}"
    );
    assert_eq!(host["bytes_saved"], 0, "{host}");
    let note = host["notes"][0].as_str().unwrap_or_default();
    assert!(note.contains("sent the full archive"), "{host}");
    assert!(
        run.stdout().contains("sent the full archive"),
        "{}",
        run.stdout()
    );
    let on_node: Vec<String> = ids_on(&tb, node).into_iter().map(|(tag, _)| tag).collect();
    assert_eq!(on_node, tb.images[1..].to_vec());
}

#[test]
fn ctrl_c_during_the_download_stops_without_waiting_for_it() {
    let (tb, _lock) = testbed!();
    tb.reset_nodes();
    crate::support::succeed(crate::support::docker(
        &tb.control_docker_host,
        &["image", "prune", "--all", "--force"],
    ));
    // At 1 Mbit/s the pull of the test images takes most of a minute.
    tb.shape_pulls(Some("1mbit"));
    let _unshape = crate::support::defer(|| tb.shape_pulls(None));
    let cache = tempfile::tempdir().unwrap();
    let child = push_command(&tb, cache.path())
        .args(["--delegate", "localhost", "--source", "docker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    // Had it waited for the pull to finish, the images would now be in its cache.
    let listing = crate::support::succeed(
        crate::support::dropship()
            .args(["cache", "list", "--json", "--cache-dir"])
            .arg(cache.path())
            .output()
            .unwrap(),
    );
    let listing: Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(listing["images"], serde_json::json!([]), "{listing}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("interrupted (SIGINT)"));
}
