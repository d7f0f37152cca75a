//! Shared by the inventory tests: the corpus, the real ansible oracle, and a small thread pool.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use dropship::inventory::vault::VaultSecrets;
use serde::Deserialize;

use crate::support::repo;

/// One corpus inventory: its `-i` sources, its vault password file if it has vault-encrypted
/// files, and the host patterns to compare.
pub struct Case {
    pub name: String,
    pub sources: Vec<PathBuf>,
    pub vault_password_file: Option<PathBuf>,
    pub patterns: Vec<String>,
}

impl Case {
    /// `-i` for each source, and `--vault-password-file` (both tools take the same flags).
    pub fn source_args(&self) -> Vec<String> {
        let sources = self
            .sources
            .iter()
            .flat_map(|s| ["-i".to_string(), s.display().to_string()]);
        let vault = self
            .vault_password_file
            .iter()
            .flat_map(|f| ["--vault-password-file".to_string(), f.display().to_string()]);
        sources.chain(vault).collect()
    }

    pub fn vault_secrets(&self) -> VaultSecrets {
        let files: Vec<PathBuf> = self.vault_password_file.iter().cloned().collect();
        VaultSecrets::load(&[], &files, false).expect("the case's vault password file is readable")
    }
}

/// tests/inventories/* (sources from sources.txt, patterns from patterns.txt, the vault password
/// in vault-password.txt) and the sample inventories under inventory/ (read as directory
/// sources).
pub fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for dir in sorted_dirs(&repo().join("tests/inventories")) {
        let lines = |file: &str| -> Vec<String> {
            std::fs::read_to_string(dir.join(file))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        };
        // `list:a,b` is passed as is: a comma-separated host list instead of a path.
        let sources: Vec<PathBuf> = lines("sources.txt")
            .iter()
            .map(|s| {
                s.strip_prefix("list:")
                    .map_or_else(|| dir.join(s), PathBuf::from)
            })
            .collect();
        assert!(!sources.is_empty(), "{} has no sources.txt", dir.display());
        let vault_password_file = Some(dir.join("vault-password.txt")).filter(|f| f.is_file());
        cases.push(Case {
            name: name_of(&dir),
            sources,
            vault_password_file,
            patterns: lines("patterns.txt"),
        });
    }
    for dir in sorted_dirs(&repo().join("inventory")) {
        cases.push(Case {
            name: format!("inventory/{}", name_of(&dir)),
            sources: vec![dir],
            vault_password_file: None,
            patterns: Vec::new(),
        });
    }
    cases
}

fn name_of(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

fn sorted_dirs(parent: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(parent)
        .unwrap_or_else(|e| panic!("{}: {e}", parent.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The real Ansible, from `$DROPSHIP_ANSIBLE_BIN` or `<repo>/.venv/bin`, run through
/// `oracle_server.py`: Ansible's own CLI entry points, imported once and forked per call.
pub struct Ansible {
    bin: PathBuf,
    scratch: tempfile::TempDir,
    idle: Mutex<Vec<Server>>,
}

/// What one CLI call printed and returned.
pub struct CliOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

struct Server {
    child: Child,
    requests: ChildStdin,
    replies: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The server keeps no state worth a clean shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Deserialize)]
struct Reply {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Ansible {
    /// `None` (with a loud SKIPPED line) when Ansible is missing; with CI=true that is a failure.
    pub fn find(test: &str) -> Option<Ansible> {
        let bin = std::env::var_os("DROPSHIP_ANSIBLE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join(".venv/bin"));
        if bin.join("ansible-inventory").is_file() && bin.join("python").is_file() {
            return Some(Ansible {
                bin,
                scratch: tempfile::tempdir().unwrap(),
                idle: Mutex::new(Vec::new()),
            });
        }
        let message = format!(
            "ansible-inventory not found in {} (set DROPSHIP_ANSIBLE_BIN or create .venv with ansible-core==2.19.14)",
            bin.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: {message}; CI=true requires the ansible oracle");
        }
        eprintln!("\n*** SKIPPED {test}: {message} ***\n");
        None
    }

    /// Runs `program` (ansible-inventory or ansible) with `args` in an empty directory with an
    /// empty HOME, so no ansible.cfg or playbook-adjacent group_vars can leak in.
    pub fn run(&self, program: &str, args: &[String]) -> CliOutput {
        let idle = self.idle.lock().unwrap().pop();
        let mut server = idle.unwrap_or_else(|| self.start_server(None));
        let output = ask(&mut server, program, args);
        self.idle.lock().unwrap().push(server);
        output
    }

    /// Like `run`, in a fresh Python process with a given `PYTHONHASHSEED`: forked children
    /// share their server's seed, so only fresh processes show whether an answer depends on
    /// Python's set order.
    pub fn run_with_hash_seed(&self, program: &str, args: &[String], seed: u32) -> CliOutput {
        ask(&mut self.start_server(Some(seed)), program, args)
    }

    fn start_server(&self, hash_seed: Option<u32>) -> Server {
        let mut python = Command::new(self.bin.join("python"));
        if let Some(seed) = hash_seed {
            python.env("PYTHONHASHSEED", seed.to_string());
        }
        let mut child = python
            .arg(repo().join("tests/support/oracle_server.py"))
            .current_dir(self.scratch.path())
            .env("HOME", self.scratch.path())
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_LOCALHOST_WARNING", "false")
            .env_remove("ANSIBLE_CONFIG")
            .env_remove("ANSIBLE_INVENTORY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the ansible oracle server");
        let requests = child.stdin.take().expect("piped stdin");
        let replies = BufReader::new(child.stdout.take().expect("piped stdout"));
        Server {
            child,
            requests,
            replies,
        }
    }
}

fn ask(server: &mut Server, program: &str, args: &[String]) -> CliOutput {
    let request = serde_json::json!({ "program": program, "args": args });
    writeln!(server.requests, "{request}").expect("oracle server accepts requests");
    server
        .requests
        .flush()
        .expect("oracle server accepts requests");
    let mut line = String::new();
    server
        .replies
        .read_line(&mut line)
        .expect("oracle server replies");
    let reply: Reply =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("oracle server reply {line:?}: {e}"));
    CliOutput {
        code: reply.status,
        stdout: reply.stdout.into_bytes(),
        stderr: reply.stderr.into_bytes(),
    }
}

pub fn dropship(args: &[String]) -> Output {
    crate::support::dropship()
        .args(args)
        .output()
        .expect("running dropship")
}

pub fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Applies `f` to every item on a few threads (the oracle is a Python process per call);
/// results come back in item order.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let result = f(item);
                    results.lock().unwrap()[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}
