//! `dropship ping` against the test bed: its output, JSON and exit code.

use crate::support::{Runtime, Testbed};

fn ping(tb: &Testbed, extra: &[&str]) -> (i32, String, String) {
    let output = crate::support::dropship()
        .args([
            "ping",
            "-i",
            tb.inventory_ini.to_str().unwrap(),
            "--connect-timeout",
            "5",
        ])
        .args(extra)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        output.status.code().unwrap_or(-1),
        text(&output.stdout),
        text(&output.stderr),
    )
}

#[test]
fn every_node_answers_with_its_facts() {
    let (tb, _lock) = testbed!();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ping.json");
    let (code, stdout, stderr) = ping(&tb, &["--json", json.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for node in &tb.nodes {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{} ", node.name)))
            .unwrap_or_else(|| panic!("{}: {stdout}", node.name));
        let version = match node.runtime {
            Runtime::Docker => "docker 20.10",
            Runtime::Containerd => "containerd 1.6.20",
            Runtime::Crio => "podman 4.3.1",
        };
        assert!(
            line.contains("  ok  ")
                && line.contains("root@")
                && line.contains(&format!("runtime:{} ", node.runtime.name()))
                && line.contains(version),
            "{line}"
        );
    }
    assert!(stdout.contains("flatcar"), "{stdout}");
    assert!(
        stdout.contains("0 failed")
            && stdout.contains("bastion bastion")
            && stdout.contains("reachable"),
        "{stdout}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        report["hosts"].as_array().unwrap().len(),
        tb.nodes.len(),
        "the bastion is not a target"
    );
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["bastions"][0]["reachable"], true);
    for (host, node) in report["hosts"].as_array().unwrap().iter().zip(&tb.nodes) {
        assert_eq!(host["runtime"], node.runtime.name(), "{host}");
    }
}

#[test]
fn a_node_with_sshd_stopped_fails_the_run_and_is_named() {
    let (tb, _lock) = testbed!();
    let node1 = tb.node("node1");
    tb.stop_sshd(node1);
    let _restart = crate::support::defer(|| tb.start_sshd(node1));
    let (code, stdout, stderr) = ping(&tb, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with("node1  FAILED")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("node2  ok")),
        "{stdout}"
    );
    assert!(stderr.contains("unreachable: node1"), "{stderr}");
}

#[test]
fn a_dead_bastion_fails_every_host_at_once_naming_it() {
    let (tb, _lock) = testbed!();
    tb.stop_bastion_sshd();
    let _restart = crate::support::defer(|| tb.start_bastion_sshd());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = ping(&tb, &[]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "within the 5 s timeout"
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    for node in tb.nodes.iter().map(|node| &node.name) {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{node} ")))
            .unwrap();
        assert!(
            line.contains("FAILED")
                && line.contains("through bastion bastion")
                && line.contains("refused"),
            "{line}"
        );
    }
    assert!(
        stdout.contains("bastion bastion (") && stdout.contains("UNREACHABLE"),
        "{stdout}"
    );
}

#[test]
fn the_limit_selects_hosts() {
    let (tb, _lock) = testbed!();
    let (code, stdout, stderr) = ping(&tb, &["-l", "node2", "--json", "-"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // stdout is the JSON alone, the text went to stderr.
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON alone on stdout");
    let hosts: Vec<&str> = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["node2"]);
    assert!(stderr.contains("1 host(s): 1 reachable"), "{stderr}");
    assert!(!stderr.contains("node1"), "{stderr}");
}

#[test]
fn accept_new_learns_an_unknown_node_once() {
    let (tb, _lock) = testbed!();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    let bastion = &tb.bastion;
    let bastion_line = std::fs::read_to_string(&tb.known_hosts)
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{bastion} ")))
        .unwrap()
        .to_string();
    std::fs::write(&known_hosts, format!("{bastion_line}\n")).unwrap();
    let file = known_hosts.to_str().unwrap();
    let (code, stdout, stderr) = ping(&tb, &["-l", "node1", "--known-hosts", file]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let node1 = &tb.node("node1").address;
    assert!(
        stdout.contains("is not known") && stdout.contains(&format!("{node1} ssh-ed25519 ")),
        "{stdout}"
    );
    let (code, stdout, stderr) = ping(&tb, &["-l", "node1", "--known-hosts", file, "--accept-new"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let learned = std::fs::read_to_string(&known_hosts).unwrap();
    assert_eq!(
        learned
            .lines()
            .filter(|l| l.starts_with(&format!("{node1} ")))
            .count(),
        1,
        "{learned}"
    );
}
