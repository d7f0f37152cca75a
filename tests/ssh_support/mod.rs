//! The test bed as the SSH tests see it: its variables, HostConnection values built by hand,
//! a cross-process lock, and starting/stopping servers.
#![allow(dead_code)] // each test crate uses a different part

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use dropship::inventory::connection::{HostConnection, JumpHost};
use dropship::ssh::ConnectOptions;

pub struct Testbed {
    vars: HashMap<String, String>,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Testbed {
    /// The instance of `TESTBED_ID` (default 0). When it is not up: fail under CI, else say so
    /// loudly and return None so the test ends.
    pub fn get() -> Option<Testbed> {
        let output = Command::new(repo().join("scripts/testbed.sh"))
            .arg("env")
            .output()
            .expect("run scripts/testbed.sh env");
        if !output.status.success() {
            let why = String::from_utf8_lossy(&output.stderr);
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("the test bed is not up (CI=true): {why}");
            }
            eprintln!(
                "\n*** SKIPPED: no test bed (TESTBED_ID={}): {why}***\n",
                std::env::var("TESTBED_ID").unwrap_or_default()
            );
            return None;
        }
        let vars = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        Some(Testbed { vars })
    }

    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("testbed env has no {name}"))
    }

    pub fn key(&self) -> PathBuf {
        PathBuf::from(self.var("TESTBED_KEY"))
    }

    pub fn known_hosts(&self) -> PathBuf {
        PathBuf::from(self.var("TESTBED_KNOWN_HOSTS"))
    }

    pub fn nodes(&self) -> Vec<String> {
        self.var("TESTBED_NODES")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    pub fn node_addr(&self, node: &str) -> String {
        self.var(&format!("TESTBED_{}_ADDR", node.to_uppercase()))
            .to_string()
    }

    pub fn jump(&self) -> JumpHost {
        JumpHost {
            name: "bastion".into(),
            address: self.var("TESTBED_BASTION").into(),
            port: 22,
            user: Some("root".into()),
            private_key: Some(self.key()),
            known_hosts: Some(self.known_hosts()),
            strict_host_key_checking: None,
        }
    }

    pub fn host(&self, node: &str) -> HostConnection {
        HostConnection {
            name: node.into(),
            address: self.node_addr(node),
            port: 22,
            user: Some("root".into()),
            private_key: Some(self.key()),
            become_: None,
            jump: Some(self.jump()),
            known_hosts: Some(self.known_hosts()),
            strict_host_key_checking: None,
            local: false,
        }
    }

    /// Options that use only what the tests give: no agent, no ~/.ssh keys, short timeouts.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            agent_socket: None,
            default_key_dir: None,
            connect_timeout: std::time::Duration::from_secs(5),
            ..ConnectOptions::default()
        }
    }

    /// `scripts/testbed.sh start|stop HOST sshd|dockerd`.
    pub fn server(&self, action: &str, host: &str, server: &str) {
        let status = Command::new(repo().join("scripts/testbed.sh"))
            .args([action, host, server])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "testbed.sh {action} {host} {server} failed"
        );
    }

    /// Shared for tests that only connect, exclusive for tests that stop servers.
    pub fn lock(&self, exclusive: bool) -> std::fs::File {
        let path = Path::new(self.var("TESTBED_STATE")).join("tests.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap();
        if exclusive {
            file.lock().unwrap()
        } else {
            file.lock_shared().unwrap()
        }
        file
    }
}

/// Stop the bastion's sshd (the test bed has no `stop bastion sshd`): kill the listener by
/// its pid file; [`BastionBack`] brings it back with an idempotent `up`.
pub fn stop_bastion_sshd(testbed: &Testbed) -> BastionBack<'_> {
    let pidfile = Path::new(testbed.var("TESTBED_STATE")).join("run/bastion-sshd.pid");
    let pid = std::fs::read_to_string(pidfile).unwrap();
    let pid = pid.split_whitespace().next().unwrap();
    assert!(Command::new("kill").arg(pid).status().unwrap().success());
    BastionBack { testbed }
}

pub struct BastionBack<'a> {
    testbed: &'a Testbed,
}

impl Drop for BastionBack<'_> {
    fn drop(&mut self) {
        let nodes = self.testbed.nodes().len().to_string();
        let status = Command::new(repo().join("scripts/testbed.sh"))
            .args(["up", &nodes])
            .status()
            .unwrap();
        assert!(status.success(), "testbed.sh up {nodes} failed");
    }
}

/// Starts a stopped server again when dropped, also when the test panics.
pub struct Restart<'a> {
    pub testbed: &'a Testbed,
    pub host: &'a str,
    pub server: &'a str,
}

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        self.testbed.server("start", self.host, self.server);
    }
}
