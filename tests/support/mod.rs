//! What the tests share: the repository and the binary under test, and the test bed
//! (`scripts/testbed.sh`) as the end-to-end tests see it.
//!
//! `testbed()` reads `scripts/testbed.sh env` for instance `$TESTBED_ID` (default 0). Every test
//! that touches the test bed holds its lock while it runs (`testbed!()`, `on_testbed`), so tests
//! in different threads and processes never act on one instance at the same time.

pub mod ansible;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use dropship::ssh::{ConnectOptions, Hop, Host};

/// Debian's docker client, the one that matches the test bed's dockerd 20.10.
pub const DOCKER: &str = "/usr/bin/docker";

/// One node: its inventory name, the address dropship connects to, and its runtime.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub address: String,
    /// The node's network namespace (`ip netns`).
    pub netns: String,
    pub runtime: Runtime,
    /// What its `uname -m` says (the aarch64 node is an amd64 machine that says so).
    pub arch: String,
    /// `unix://...`: a Docker node's dockerd, reachable from the root namespace.
    pub docker_host: Option<String>,
}

/// A node's container runtime, as `TESTBED_NODE<i>_RUNTIME` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
}

impl Runtime {
    fn parse(name: &str) -> Runtime {
        match name {
            "docker" => Runtime::Docker,
            "containerd" => Runtime::Containerd,
            "crio" => Runtime::Crio,
            other => panic!("unknown test bed runtime {other:?}"),
        }
    }

    /// The name the recap and the JSON give it.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
        }
    }
}

impl Node {
    /// The node's dockerd, which only a Docker node has.
    pub fn docker_host(&self) -> &str {
        self.docker_host
            .as_deref()
            .unwrap_or_else(|| panic!("{} runs {:?}, not docker", self.name, self.runtime))
    }
}

/// A running test bed instance.
#[derive(Debug, Clone)]
pub struct Testbed {
    pub id: u32,
    pub state_dir: PathBuf,
    pub inventory_ini: PathBuf,
    /// The client key authorized for root on every host (ed25519, no passphrase).
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// An ssh_config for the system `ssh` (key, known_hosts, strict checking), also for `-J`.
    pub ssh_config: PathBuf,
    /// The bastion's address from the root namespace.
    pub bastion: String,
    /// `registry.testbed:5000`: the name every daemon of the test bed resolves.
    pub registry: String,
    /// The same registry from the root namespace: `http://<bastion>:5000`.
    pub registry_url: String,
    /// The small test image set, as pushed to the registry (also in `images_file`).
    pub images: Vec<String>,
    pub images_file: PathBuf,
    /// An OCI index with a linux/amd64 and a linux/arm64/v8 manifest.
    pub multiarch_image: String,
    /// An image in the registry that needs a login (htpasswd, over TLS with a test CA).
    pub private_image: String,
    /// Its registry's user and password.
    pub secure_user: String,
    pub secure_password: String,
    /// `unix://...`: the control daemon in the root namespace (the localhost delegate).
    pub control_docker_host: String,
    pub nodes: Vec<Node>,
    /// A node whose /etc/os-release says Flatcar (the last of them; by default the last node).
    pub flatcar_node: String,
    /// Every node whose /etc/os-release says Flatcar (`TESTBED_FLATCAR_NODES`).
    pub flatcar_nodes: Vec<String>,
}

/// Holds the instance's lock until dropped.
pub struct TestbedLock {
    _file: File,
}

/// The test bed, or None (with a loud message) when it is not up. In CI (`CI=true`) a missing
/// test bed is a failure, never a silent pass.
pub fn testbed() -> Option<Testbed> {
    let script = repo().join("scripts/testbed.sh");
    let output = Command::new(&script)
        .arg("env")
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
    if !output.status.success() {
        let why = String::from_utf8_lossy(&output.stderr);
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!(
                "NO TEST BED in CI: {why}\nCI must run `scripts/testbed.sh up` before the tests"
            );
        }
        // Straight to stderr: libtest captures eprintln! of passing tests, this must show.
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n*** SKIPPED (no test bed; run scripts/testbed.sh up): {} ***",
            why.trim()
        );
        return None;
    }
    Some(Testbed::from_env(&String::from_utf8_lossy(&output.stdout)))
}

/// The test bed, locked for this test (until the lock drops); None as for [`testbed`].
pub fn locked_testbed() -> Option<(Testbed, TestbedLock)> {
    let testbed = testbed()?;
    let lock = testbed.lock();
    Some((testbed, lock))
}

/// `let (tb, _lock) = testbed!();`: the test bed, locked until `_lock` drops; when it is not up
/// the test returns (a loud skip, or a failure in CI, as [`testbed`] says).
macro_rules! testbed {
    () => {
        match $crate::support::locked_testbed() {
            Some(locked) => locked,
            None => return,
        }
    };
}

/// Run an async test on the locked test bed, on a runtime of its own (skipped as [`testbed`]
/// says when the test bed is not up).
pub fn on_testbed(test: impl AsyncFnOnce(&Testbed)) {
    let (tb, _lock) = testbed!();
    runtime().block_on(test(&tb));
}

/// The multi-threaded runtime dropship itself runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `NAME='value'` lines, as `scripts/testbed.sh env` prints them.
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.trim_matches('\'').to_string()))
        .collect()
}

impl Testbed {
    fn from_env(text: &str) -> Testbed {
        let vars = parse_env(text);
        let var = |name: &str| {
            vars.get(name)
                .unwrap_or_else(|| panic!("scripts/testbed.sh env did not print {name}"))
                .clone()
        };
        let nodes = var("TESTBED_NODES")
            .split_whitespace()
            .map(|name| {
                let prefix = format!("TESTBED_{}", name.to_uppercase());
                Node {
                    name: name.to_string(),
                    address: var(&format!("{prefix}_ADDR")),
                    netns: var(&format!("{prefix}_NETNS")),
                    runtime: Runtime::parse(&var(&format!("{prefix}_RUNTIME"))),
                    arch: var(&format!("{prefix}_ARCH")),
                    docker_host: vars.get(&format!("{prefix}_DOCKER_HOST")).cloned(),
                }
            })
            .collect();
        Testbed {
            id: var("TESTBED_ID").parse().expect("TESTBED_ID is a number"),
            state_dir: var("TESTBED_STATE").into(),
            inventory_ini: var("TESTBED_INVENTORY").into(),
            key: var("TESTBED_KEY").into(),
            known_hosts: var("TESTBED_KNOWN_HOSTS").into(),
            ssh_config: var("TESTBED_SSH_CONFIG").into(),
            bastion: var("TESTBED_BASTION"),
            registry: var("TESTBED_REGISTRY"),
            registry_url: var("TESTBED_REGISTRY_URL"),
            images: var("TESTBED_IMAGES")
                .split_whitespace()
                .map(String::from)
                .collect(),
            images_file: var("TESTBED_IMAGES_FILE").into(),
            multiarch_image: var("TESTBED_MULTIARCH_IMAGE"),
            private_image: var("TESTBED_PRIVATE_IMAGE"),
            secure_user: var("TESTBED_SECURE_USER"),
            secure_password: var("TESTBED_SECURE_PASSWORD"),
            control_docker_host: var("TESTBED_CONTROL_DOCKER_HOST"),
            nodes,
            flatcar_node: var("TESTBED_FLATCAR_NODE"),
            flatcar_nodes: var("TESTBED_FLATCAR_NODES")
                .split_whitespace()
                .map(String::from)
                .collect(),
        }
    }

    /// Waits until no other test (thread or process) uses this instance, then holds it.
    pub fn lock(&self) -> TestbedLock {
        let path = self.state_dir.join("lock");
        let file = File::create(&path)
            .unwrap_or_else(|err| panic!("cannot open {}: {err}", path.display()));
        file.lock()
            .unwrap_or_else(|err| panic!("cannot lock {}: {err}", path.display()));
        TestbedLock { _file: file }
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|node| node.name == name)
            .unwrap_or_else(|| panic!("the test bed has no node {name}"))
    }

    pub fn flatcar(&self) -> &Node {
        self.node(&self.flatcar_node)
    }

    pub fn is_flatcar(&self, node: &Node) -> bool {
        self.flatcar_nodes.contains(&node.name)
    }

    /// The nodes that run `runtime`, Flatcar aside.
    pub fn running(&self, runtime: Runtime) -> Vec<&Node> {
        self.nodes
            .iter()
            .filter(|node| node.runtime == runtime && !self.is_flatcar(node))
            .collect()
    }

    /// TCP connections established to the bastion's sshd at this moment.
    pub fn bastion_connections(&self) -> usize {
        let output = Command::new("ip")
            .args(["netns", "exec", &format!("ds{}-bastion", self.id)])
            .args(["ss", "-Htn", "state", "established", "( sport = :22 )"])
            .output()
            .expect("run ss in the bastion's namespace");
        stdout(&succeed(output)).lines().count()
    }

    /// Removes every image from every node's runtime and empties their /tmp/releases.
    pub fn reset_nodes(&self) {
        std::thread::scope(|scope| {
            for node in &self.nodes {
                scope.spawn(move || self.reset_node(node));
            }
        });
    }

    /// Removes every image from the node's runtime (containerd: with its blobs and snapshots)
    /// and empties its /tmp/releases.
    pub fn reset_node(&self, node: &Node) {
        let clear = match node.runtime {
            Runtime::Docker => "docker image prune --all --force >/dev/null",
            // An import cut short (its daemon stopped) leaves its lease, and the lease keeps
            // the blobs it wrote: drop both.
            Runtime::Containerd => {
                "ctr -n k8s.io images ls -q | xargs -r ctr -n k8s.io images rm --sync >/dev/null; \
                 ctr -n k8s.io leases ls -q | xargs -r ctr -n k8s.io leases rm --sync; \
                 ctr -n k8s.io content ls -q | xargs -r ctr -n k8s.io content rm >/dev/null"
            }
            Runtime::Crio => "podman rmi --all --force >/dev/null 2>&1 || true",
        };
        succeed(self.run_in(
            node,
            &format!("{clear}; rm -rf /tmp/releases/* /tmp/releases/.[!.]*"),
        ));
    }

    /// The images on a node's runtime: (full image id, its repo:tag names). containerd's
    /// `repo@digest` names are not tags (see [`Testbed::digest_names`]).
    pub fn node_images(&self, node: &Node) -> Vec<(String, Vec<String>)> {
        match node.runtime {
            Runtime::Docker => self.docker_images(node),
            Runtime::Containerd => {
                let store = self.containerd_store(node);
                let mut images: Vec<(String, Vec<String>)> = Vec::new();
                for image in store.images.iter().filter(|i| !i.name.contains('@')) {
                    let configs = store.configs(&image.target);
                    assert_eq!(
                        configs.len(),
                        1,
                        "{}: {} has {configs:?}",
                        node.name,
                        image.name
                    );
                    let id = configs.into_iter().next().unwrap().to_string();
                    match images.iter_mut().find(|(known, _)| *known == id) {
                        Some((_, names)) => names.push(image.name.clone()),
                        None => images.push((id, vec![image.name.clone()])),
                    }
                }
                images
            }
            Runtime::Crio => {
                let listing = succeed(self.run_in(node, "podman images --format json"));
                let entries: Vec<serde_json::Value> =
                    serde_json::from_slice(&listing.stdout).expect("podman images JSON");
                let mut images: Vec<(String, Vec<String>)> = Vec::new();
                for entry in entries {
                    let id = format!("sha256:{}", entry["Id"].as_str().unwrap());
                    let names: Vec<String> = entry["Names"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|n| n.as_str().map(String::from))
                        .collect();
                    match images.iter_mut().find(|(known, _)| *known == id) {
                        Some(_) => {}
                        None => images.push((id, names)),
                    }
                }
                images
            }
        }
    }

    fn docker_images(&self, node: &Node) -> Vec<(String, Vec<String>)> {
        let listing = succeed(docker(
            node.docker_host(),
            &[
                "image",
                "ls",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Repository}}:{{.Tag}}",
            ],
        ));
        let mut images: Vec<(String, Vec<String>)> = Vec::new();
        for line in String::from_utf8_lossy(&listing.stdout).lines() {
            let Some((id, name)) = line.split_once(' ') else {
                continue;
            };
            let index = match images.iter().position(|(known, _)| known == id) {
                Some(index) => index,
                None => {
                    images.push((id.to_string(), Vec::new()));
                    images.len() - 1
                }
            };
            if name != "<none>:<none>" {
                images[index].1.push(name.to_string());
            }
        }
        images
    }

    /// A containerd node's `k8s.io` namespace, read with dropship's own parser of `ctr`'s
    /// listings.
    pub fn containerd_store(&self, node: &Node) -> dropship::runtime::containerd::Store {
        let images = stdout(&succeed(self.run_in(node, "ctr -n k8s.io images ls")));
        let content = stdout(&succeed(self.run_in(node, "ctr -n k8s.io content ls")));
        let images: Vec<&str> = images.lines().collect();
        let content: Vec<&str> = content.lines().collect();
        dropship::runtime::containerd::Store::parse(&images, &content, &[])
    }

    /// A containerd node's `repo@sha256:…` names, each with its target.
    pub fn digest_names(&self, node: &Node) -> Vec<(String, String)> {
        let mut names: Vec<(String, String)> = self
            .containerd_store(node)
            .images
            .into_iter()
            .filter(|i| i.name.contains('@'))
            .map(|i| (i.name, i.target.to_string()))
            .collect();
        names.sort();
        names
    }

    /// A containerd node's images as kubelet sees them (the CRI's ListImages): (id, repoTags,
    /// repoDigests, pinned).
    pub fn cri_images(&self, node: &Node) -> Vec<(String, Vec<String>, Vec<String>, bool)> {
        let output = succeed(self.command(&["cri-images", &node.name]).output().unwrap());
        let listing: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).expect("cri-images prints JSON");
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        };
        let mut images: Vec<_> = listing
            .iter()
            .map(|image| {
                (
                    image["id"].as_str().unwrap_or_default().to_string(),
                    strings(&image["repoTags"]),
                    strings(&image["repoDigests"]),
                    image["pinned"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        images.sort();
        images
    }

    pub fn stop_sshd(&self, node: &Node) {
        self.script(&["stop", &node.name, "sshd"]);
    }

    pub fn start_sshd(&self, node: &Node) {
        self.script(&["start", &node.name, "sshd"]);
    }

    pub fn stop_dockerd(&self, node: &Node) {
        self.script(&["stop", &node.name, "dockerd"]);
    }

    pub fn start_dockerd(&self, node: &Node) {
        self.script(&["start", &node.name, "dockerd"]);
    }

    pub fn stop_containerd(&self, node: &Node) {
        self.script(&["stop", &node.name, "containerd"]);
    }

    pub fn start_containerd(&self, node: &Node) {
        self.script(&["start", &node.name, "containerd"]);
    }

    /// Stops the bastion's sshd (its registry stays up): every node becomes unreachable.
    pub fn stop_bastion_sshd(&self) {
        self.script(&["stop", "bastion", "sshd"]);
    }

    pub fn start_bastion_sshd(&self) {
        self.script(&["start", "bastion", "sshd"]);
    }

    /// Kills the node's sshd *and* every session it serves (a node that dies mid-transfer);
    /// `start_sshd` brings it back.
    pub fn kill_sshd(&self, node: &Node) {
        let pids = Command::new("ip")
            .args(["netns", "pids", &node.netns])
            .output()
            .expect("ip netns pids");
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if exe.ends_with("sshd") {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        self.stop_sshd(node);
    }

    /// Limits what the bastion sends to `node` to `rate` (tc tbf, e.g. "4mbit"); `None` lifts it.
    pub fn shape(&self, node: &Node, rate: Option<&str>) {
        self.shape_bastion_port(
            &format!("port{}", node.name.trim_start_matches("node")),
            rate,
        );
    }

    /// Limits what the bastion (and its registry) sends to the root namespace: pulls on the
    /// control daemon slow down; `None` lifts it.
    pub fn shape_pulls(&self, rate: Option<&str>) {
        self.shape_bastion_port("eth0", rate);
    }

    fn shape_bastion_port(&self, port: &str, rate: Option<&str>) {
        let bastion = format!("ds{}-bastion", self.id);
        let mut tc = Command::new("ip");
        tc.args(["netns", "exec", &bastion, "tc", "qdisc"]);
        match rate {
            Some(rate) => tc.args([
                "replace", "dev", port, "root", "tbf", "rate", rate, "burst", "32kbit", "latency",
                "400ms",
            ]),
            None => tc.args(["del", "dev", port, "root"]),
        };
        let output = tc.output().expect("run tc");
        // Lifting a limit that is not there is fine; a limit that did not apply is not: a test
        // relying on a slow transfer would race instead of failing.
        if rate.is_some() {
            succeed(output);
        }
    }

    /// Runs a shell command inside the node's namespaces (its network, /tmp, /run), not over SSH.
    pub fn run_in(&self, node: &Node, command: &str) -> Output {
        self.command(&["exec", &node.name, "sh", "-c", command])
            .output()
            .expect("run scripts/testbed.sh exec")
    }

    /// The system `ssh` to a node through the bastion (`ssh -J`), as root.
    pub fn ssh(&self, node: &Node) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg("-F")
            .arg(&self.ssh_config)
            .args(["-J", &format!("root@{}", self.bastion)])
            .arg(format!("root@{}", node.address));
        ssh
    }

    /// The bastion as dropship's SSH transport reaches it: as root, with the test bed's key and
    /// known_hosts.
    pub fn jump(&self) -> Hop {
        Hop {
            name: "bastion".into(),
            ..self.login(&self.bastion)
        }
    }

    /// A node as the inventory would describe it: root, the test bed's key, through [`Self::jump`].
    pub fn host(&self, node: &Node) -> Host {
        Host {
            hop: Hop {
                name: node.name.clone(),
                ..self.login(&node.address)
            },
            jump: Some(self.jump()),
            become_: None,
        }
    }

    /// Root at `address`, with the test bed's key and known_hosts.
    fn login(&self, address: &str) -> Hop {
        Hop {
            private_key: Some(self.key.clone()),
            known_hosts: Some(self.known_hosts.clone()),
            ..Hop::to(address, 22, Some("root".into()))
        }
    }

    /// Options that use only what the tests give: no agent, no ~/.ssh keys, short timeouts.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            agent_socket: None,
            default_key_dir: None,
            key_passphrase: None,
            connect_timeout: Duration::from_secs(5),
            ..ConnectOptions::default()
        }
    }

    /// The dropship binary under test, its docker client on the control daemon (the localhost
    /// delegate), without retry files: a run with failures would leave one in the working
    /// directory (the tests that want one turn them back on).
    pub fn dropship(&self) -> Command {
        let mut command = dropship();
        command
            .env("DOCKER_HOST", &self.control_docker_host)
            .env("ANSIBLE_RETRY_FILES_ENABLED", "false");
        command
    }

    /// `scripts/testbed.sh ARGS...` for this instance.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(repo().join("scripts/testbed.sh"));
        command.args(args).env("TESTBED_ID", self.id.to_string());
        command
    }

    fn script(&self, args: &[&str]) {
        succeed(
            self.command(args)
                .stdout(Stdio::null())
                .output()
                .expect("run scripts/testbed.sh"),
        );
    }
}

/// The dropship binary under test.
pub fn dropship() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dropship"))
}

/// Runs `undo` when dropped, also when the test panics: `let _back = defer(|| tb.start_sshd(node));`
/// after stopping a server, so a failing test does not leave it stopped for the next one.
#[must_use = "the guard runs `undo` when it is dropped"]
pub struct Defer<F: FnMut()>(F);

pub fn defer<F: FnMut()>(undo: F) -> Defer<F> {
    Defer(undo)
}

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Debian's docker client against one daemon of the test bed.
pub fn docker(docker_host: &str, args: &[&str]) -> Output {
    Command::new(DOCKER)
        .args(["-H", docker_host])
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {DOCKER}: {err}"))
}

/// The output of a command that must have succeeded (else panic with its stderr).
pub fn succeed(output: Output) -> Output {
    assert!(
        output.status.success(),
        "command failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A command's stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
