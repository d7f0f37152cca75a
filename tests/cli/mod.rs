//! What an operator types and reads: flags, settings from ansible.cfg and ~/.ssh/config,
//! warnings, colour, help texts. Every run is sandboxed: its own HOME and working directory,
//! no ANSIBLE_* variables from the machine.

mod flags;
mod output;
mod settings;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A HOME and a working directory of their own.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home/.ssh", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Sandbox { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Writes `text` to `path` (relative to the sandbox), returning the absolute path.
    pub fn write(&self, path: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.path().join(path)
    }

    /// dropship in the sandbox: stdin closed, stdout and stderr captured (pipes).
    pub fn dropship(&self) -> Command {
        let mut command = crate::support::dropship();
        command
            .current_dir(self.work())
            .env("HOME", self.home())
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        for (name, _) in std::env::vars() {
            if name.starts_with("ANSIBLE_") {
                command.env_remove(name);
            }
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.dropship().args(args).output().unwrap())
    }
}

/// What a run printed, and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The `-v` line describing `host` (`info: HOST user@address:port ...`).
    pub fn host_line(&self, host: &str) -> &str {
        self.stderr
            .lines()
            .find(|l| l.starts_with(&format!("info: {host} ")))
            .unwrap_or_else(|| panic!("no -v line for {host}:\n{}", self.stderr))
    }
}

/// `path` as the sandbox's messages print it.
pub fn shown(path: &Path) -> String {
    path.display().to_string()
}
