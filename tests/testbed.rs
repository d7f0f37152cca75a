//! The test bed itself: what every end-to-end test relies on. Each test skips (loudly) when no
//! test bed is up, and fails in CI.

use std::fs::File;
use std::process::Stdio;

use crate::support::{Runtime, Testbed, docker, stdout, succeed};

fn ssh_output(
    testbed: &Testbed,
    node: &crate::support::Node,
    command: &str,
) -> std::process::Output {
    testbed.ssh(node).arg(command).output().expect("run ssh")
}

#[test]
fn every_node_is_reachable_through_the_bastion_and_not_directly() {
    let (testbed, _lock) = testbed!();
    std::thread::scope(|scope| {
        for node in &testbed.nodes {
            let testbed = &testbed;
            scope.spawn(move || {
                let hostname = succeed(ssh_output(testbed, node, "hostname"));
                assert_eq!(stdout(&hostname).trim(), node.name);

                let direct = std::process::Command::new("ssh")
                    .arg("-F")
                    .arg(&testbed.ssh_config)
                    .args(["-o", "ConnectTimeout=2"])
                    .arg(format!("root@{}", node.address))
                    .arg("true")
                    .output()
                    .expect("run ssh");
                assert!(
                    !direct.status.success(),
                    "{} is reachable without the bastion",
                    node.name
                );
            });
        }
    });
}

#[test]
fn only_the_flatcar_nodes_read_as_flatcar_over_ssh() {
    let (testbed, _lock) = testbed!();
    assert!(testbed.is_flatcar(testbed.flatcar()));
    for node in &testbed.nodes {
        let os_release = stdout(&succeed(ssh_output(&testbed, node, "cat /etc/os-release")));
        let is_flatcar = os_release.lines().any(|line| line == "ID=flatcar");
        assert_eq!(
            is_flatcar,
            testbed.is_flatcar(node),
            "{}: {os_release}",
            node.name
        );
    }
}

#[test]
fn an_archive_loaded_over_ssh_lands_in_that_nodes_daemon_only() {
    let (testbed, _lock) = testbed!();
    testbed.reset_nodes();
    let image = &testbed.images[0];
    let archive = tempfile::NamedTempFile::new().unwrap();
    let control = &testbed.control_docker_host;
    succeed(docker(control, &["pull", "--quiet", image]));
    let saved = docker(
        control,
        &["save", "--output", archive.path().to_str().unwrap(), image],
    );
    succeed(docker(control, &["rmi", image]));
    succeed(saved);

    let target = testbed.running(Runtime::Docker)[0];
    succeed(
        testbed
            .ssh(target)
            .arg("docker load")
            .stdin(File::open(archive.path()).unwrap())
            .stdout(Stdio::null())
            .output()
            .unwrap(),
    );

    for node in &testbed.nodes {
        let tags: Vec<String> = testbed
            .node_images(node)
            .into_iter()
            .flat_map(|(_, tags)| tags)
            .collect();
        if node.name == target.name {
            assert_eq!(tags, std::slice::from_ref(image));
        } else {
            assert!(tags.is_empty(), "{} has images: {tags:?}", node.name);
        }
    }
    // `sudo docker` over SSH reaches the same daemon as `docker`.
    let listed = |command: &str| stdout(&succeed(ssh_output(&testbed, target, command)));
    assert_eq!(
        listed("sudo -n docker images -q"),
        listed("docker images -q")
    );
    testbed.reset_nodes();
}

#[test]
fn every_runtime_pulls_from_the_registry() {
    let (testbed, _lock) = testbed!();
    testbed.reset_nodes();
    let image = &testbed.images[2];
    for runtime in [Runtime::Docker, Runtime::Containerd, Runtime::Crio] {
        let node = testbed.running(runtime)[0];
        let pull = match runtime {
            Runtime::Docker => format!("docker pull --quiet {image}"),
            Runtime::Containerd => {
                format!("ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d {image}")
            }
            Runtime::Crio => format!("podman pull --quiet {image}"),
        };
        succeed(ssh_output(&testbed, node, &pull));
        let tags: Vec<String> = testbed
            .node_images(node)
            .into_iter()
            .flat_map(|(_, tags)| tags)
            .collect();
        assert_eq!(tags, std::slice::from_ref(image), "{}", node.name);
    }
    testbed.reset_nodes();
}

#[test]
fn files_a_node_writes_stay_on_that_node() {
    let (testbed, _lock) = testbed!();
    testbed.reset_nodes();
    let (writer, reader) = (&testbed.nodes[0], &testbed.nodes[1]);
    succeed(ssh_output(
        &testbed,
        writer,
        "echo here > /tmp/releases/marker",
    ));
    assert!(succeed(testbed.run_in(writer, "cat /tmp/releases/marker")).stdout == b"here\n");
    assert!(
        !testbed
            .run_in(reader, "test -e /tmp/releases/marker")
            .status
            .success()
    );
    assert!(!std::path::Path::new("/tmp/releases/marker").exists());
    testbed.reset_nodes();
}

/// root's home on a node is the node's own: what sshd's shell sources there is not the
/// machine's `~/.bashrc`, and what a command leaves in `~` stays on that node.
#[test]
fn a_nodes_home_is_its_own() {
    let (testbed, _lock) = testbed!();
    let node = &testbed.nodes[0];
    let marker = "dropship-home-marker";
    succeed(ssh_output(&testbed, node, &format!("touch ~/{marker}")));
    let home = dirs::home_dir().expect("the machine's home");
    assert!(
        !home.join(marker).exists(),
        "{marker} landed in {}",
        home.display()
    );
    succeed(testbed.run_in(node, &format!("test -e /root/{marker}")));
    succeed(testbed.run_in(node, &format!("rm /root/{marker}")));
}

#[test]
fn a_stopped_server_can_be_started_again() {
    let (testbed, _lock) = testbed!();
    let node = &testbed.nodes[0];
    testbed.stop_sshd(node);
    assert!(!ssh_output(&testbed, node, "true").status.success());
    testbed.start_sshd(node);
    succeed(ssh_output(&testbed, node, "true"));

    let node = testbed.running(Runtime::Docker)[0];
    testbed.stop_dockerd(node);
    assert!(!docker(node.docker_host(), &["version"]).status.success());
    testbed.start_dockerd(node);
    succeed(ssh_output(&testbed, node, "docker version"));

    let node = testbed.running(Runtime::Containerd)[0];
    testbed.stop_containerd(node);
    assert!(!ssh_output(&testbed, node, "ctr version").status.success());
    testbed.start_containerd(node);
    succeed(ssh_output(&testbed, node, "ctr version"));
}
