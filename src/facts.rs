//! What a node is and holds, gathered in one SSH round trip.
//!
//! One POSIX `sh` script prints delimited sections (os-release, arch, tools, free space, and
//! each runtime's part: its probe, its settings, every image it holds); a missing tool leaves
//! its section empty instead of failing the script. Listing all images once per node, not once per image,
//! is what keeps large clusters from exhausting SSH (Kubespray #11092, #13083).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::runtime::{self, ContainerdFacts, CrioFacts, DockerFacts};
use crate::ssh::Become;
use crate::ssh::{RemoteCommand, Session, SshError, quote};

const MARK: &str = "@@dropship ";

/// The start of the fact-gathering script; `$DIR` is where free space is measured (its nearest
/// existing parent). Each runtime's part (`runtime::*::SCRIPT`) follows, then [`TAIL`].
const HEAD: &str = r#"
export LC_ALL=C
have() { command -v "$1" >/dev/null 2>&1; }
limit() { if have timeout; then timeout 20 "$@"; else "$@"; fi; }
mark() { printf '\n@@dropship %s@@\n' "$1"; }
# NAME RC DETAIL: the version line when it answered, else the last line of its complaint.
probe() {
  n=$1; shift; out=$(limit "$@" 2>&1); rc=$?; line=
  [ $rc -eq 0 ] && line=$(printf '%s\n' "$out" | grep '^[[:space:]]*Version:' | tail -n 1)
  [ -n "$line" ] || line=$(printf '%s\n' "$out" | tail -n 1)
  echo "$n $rc $line"
  return $rc
}
mark os-release; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
mark arch; uname -m
mark tools; for t in zstd gzip docker containerd ctr nerdctl podman; do have "$t" && echo "$t"; done
"#;

const TAIL: &str = r#"
mark free
d=$DIR; while [ ! -d "$d" ]; do d=${d%/*}; [ -n "$d" ] || d=/; done
echo "$d"; df -Pk "$d" 2>/dev/null | tail -n 1
mark end
"#;

/// The whole script: the head, every runtime's part, the tail.
fn script() -> String {
    [
        HEAD,
        runtime::docker::SCRIPT,
        runtime::containerd::SCRIPT,
        runtime::crio::SCRIPT,
        TAIL,
    ]
    .concat()
}

/// Everything `dropship` needs to know about a node before pushing to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub os: OsRelease,
    /// `uname -m`: x86_64, aarch64, …
    pub arch: String,
    /// Tools found on PATH among zstd, gzip, docker, containerd, ctr, nerdctl, podman.
    pub tools: Vec<String>,
    /// Container runtime CLIs that are installed, and whether they answered.
    pub runtimes: Vec<Probe>,
    /// The Docker daemon and its images, when it answered.
    pub docker: Option<DockerFacts>,
    /// containerd, its CRI settings and what its `k8s.io` namespace holds, when installed.
    pub containerd: Option<ContainerdFacts>,
    /// CRI-O's socket and containers-storage, when podman or CRI-O is there.
    pub crio: Option<CrioFacts>,
    /// Free space where archives would be written (local_release_dir or its nearest parent).
    pub free_space: Option<FreeSpace>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub name: String,
    pub version_id: String,
}

/// One runtime CLI asked for its version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub name: String,
    pub answers: bool,
    /// Version when it answered, else the start of its error message.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FreeSpace {
    pub path: String,
    pub bytes: u64,
}

impl Facts {
    /// Container Linux / Flatcar (os-release ID or ID_LIKE), where Kubespray skips image downloads.
    pub fn is_coreos_like(&self) -> bool {
        std::iter::once(&self.os.id)
            .chain(&self.os.id_like)
            .any(|id| id.contains("coreos") || id.contains("flatcar"))
    }

    pub fn has_tool(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
    }

    pub fn probe(&self, name: &str) -> Option<&Probe> {
        self.runtimes.iter().find(|p| p.name == name)
    }

    /// What the probe of `name` said, or "no answer".
    pub fn probe_detail(&self, name: &str) -> String {
        self.probe(name)
            .map_or_else(|| "no answer".to_string(), |p| p.detail.clone())
    }

    /// "docker 20.10.24/overlay2", "containerd 1.6.20 (cri, overlayfs)", "podman 4.3.1", or
    /// "none".
    pub fn runtime_summary(&self) -> String {
        let mut answering: Vec<String> = self
            .runtimes
            .iter()
            .filter(|r| r.answers)
            .map(
                |r| match (r.name.as_str(), &self.docker, &self.containerd) {
                    ("docker", Some(docker), _) => {
                        format!("docker {}/{}", docker.server_version, docker.storage_driver)
                    }
                    ("ctr", _, Some(containerd)) => format!(
                        "containerd {} ({}{}{})",
                        r.detail,
                        if containerd.cri { "cri, " } else { "no cri, " },
                        containerd.snapshotter(),
                        if containerd.config.discard_unpacked_layers {
                            ", discards unpacked layers"
                        } else {
                            ""
                        }
                    ),
                    _ => format!("{} {}", r.name, r.detail).trim().to_string(),
                },
            )
            .collect();
        if answering.is_empty() {
            answering.push("none".to_string());
        }
        answering.join(", ")
    }
}

/// Output the script did not produce as expected.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{host}: cannot read the facts output: {reason}")]
    Unreadable { host: String, reason: String },
}

/// The one command that prints every fact, measuring free space at `local_release_dir`.
pub fn facts_command(local_release_dir: &Path, become_: Option<&Become>) -> RemoteCommand {
    let dir = local_release_dir.to_string_lossy();
    RemoteCommand::shell(format!("DIR={}\n{}", quote(&dir), script())).with_become(become_)
}

/// Gather the facts of the host behind `session` in one round trip.
pub async fn gather(
    session: &Session,
    local_release_dir: &Path,
    become_: Option<&Become>,
) -> Result<Facts, FactsError> {
    let command = facts_command(local_release_dir, become_);
    let output = session.exec(&command).run().await?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse(&text).map_err(|reason| FactsError::Unreadable {
        host: session.host().to_string(),
        reason: match output.stderr_text() {
            stderr if stderr.is_empty() => format!("{reason} ({})", output.status),
            stderr => format!("{reason} ({}: {stderr})", output.status),
        },
    })
}

/// Parse the script's output. Only a missing end marker (the script did not run to its end,
/// e.g. `sudo -n` refused) is an error; a missing tool just leaves its fact empty.
pub fn parse(output: &str) -> Result<Facts, String> {
    let sections = Sections::parse(output);
    if !sections.has("end") {
        return Err("the facts script did not run to its end".to_string());
    }
    let runtimes: Vec<Probe> = sections
        .get("runtimes")
        .iter()
        .filter_map(|line| parse_probe(line))
        .collect();
    let tools: Vec<String> = sections
        .get("tools")
        .iter()
        .map(|s| s.trim().to_string())
        .collect();
    let podman = tools.iter().any(|t| t == "podman");
    Ok(Facts {
        os: parse_os_release(sections.get("os-release")),
        arch: sections
            .get("arch")
            .first()
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        docker: runtime::docker::parse(&sections)?,
        containerd: runtime::containerd::parse(
            &sections,
            runtimes.iter().find(|p| p.name == "ctr"),
        ),
        crio: runtime::crio::parse(&sections, podman)?,
        free_space: parse_free(sections.get("free")),
        tools,
        runtimes,
    })
}

/// The script's output by section; a section printed twice (each runtime adds its probe to
/// `runtimes`) reads as one.
pub struct Sections<'a>(BTreeMap<&'a str, Vec<&'a str>>);

impl<'a> Sections<'a> {
    pub fn parse(output: &'a str) -> Self {
        let mut sections: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut current: Option<&str> = None;
        for line in output.lines() {
            if let Some(name) = line
                .strip_prefix(MARK)
                .and_then(|rest| rest.strip_suffix("@@"))
            {
                current = Some(name);
                sections.entry(name).or_default();
            } else if let Some(name) = current
                && !line.trim().is_empty()
            {
                sections.entry(name).or_default().push(line);
            }
        }
        Sections(sections)
    }

    /// The lines of a section (none when it is missing).
    pub fn get(&self, name: &str) -> &[&'a str] {
        self.0.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

fn parse_os_release(lines: &[&str]) -> OsRelease {
    let mut os = OsRelease::default();
    for line in lines {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote_os_release(value.trim());
        match key.trim() {
            "ID" => os.id = value.to_ascii_lowercase(),
            "ID_LIKE" => {
                os.id_like = value
                    .split_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect()
            }
            "NAME" => os.name = value,
            "VERSION_ID" => os.version_id = value,
            _ => {}
        }
    }
    os
}

/// os-release values are shell-style: optionally "double" or 'single' quoted, `\` escapes.
fn unquote_os_release(value: &str) -> String {
    let inner = match value.as_bytes() {
        [b'"', .., b'"'] | [b'\'', .., b'\''] if value.len() >= 2 => &value[1..value.len() - 1],
        _ => value,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `NAME RC DETAIL…`
fn parse_probe(line: &str) -> Option<Probe> {
    let mut parts = line.trim().splitn(3, ' ');
    let name = parts.next()?.to_string();
    let answers = parts.next()? == "0";
    let detail = parts.next().unwrap_or("").trim();
    let detail = detail
        .strip_prefix("Version:")
        .unwrap_or(detail)
        .trim()
        .chars()
        .take(120)
        .collect();
    Some(Probe {
        name,
        answers,
        detail,
    })
}

/// The path measured, then `df -Pk`'s last line: `FS 1K-blocks Used Available Capacity Mount`.
fn parse_free(lines: &[&str]) -> Option<FreeSpace> {
    let path = lines.first()?.trim().to_string();
    let available_kib: u64 = lines.get(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(FreeSpace {
        path,
        bytes: available_kib * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;

    fn captured(name: &str) -> Facts {
        let path = format!(
            "{}/tests/fixtures/facts-node-{name}.txt",
            env!("CARGO_MANIFEST_DIR")
        );
        parse(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn captured_docker_node() {
        let facts = captured("docker");
        assert_eq!(
            facts.os,
            OsRelease {
                id: "debian".into(),
                id_like: vec![],
                name: "Debian GNU/Linux".into(),
                version_id: "12".into()
            }
        );
        assert!(!facts.is_coreos_like());
        assert_eq!(facts.arch, "x86_64");
        assert_eq!(facts.tools, ["zstd", "gzip", "docker", "containerd", "ctr"]);
        assert_eq!(facts.runtime_summary(), "docker 20.10.24+dfsg1/overlay2");
        // Docker's own containerd has its socket elsewhere: ctr finds no daemon, the node is
        // a Docker node.
        let ctr = facts.probe("ctr").unwrap();
        assert!(
            !ctr.answers && ctr.detail.starts_with("no containerd socket"),
            "{ctr:?}"
        );
        assert_eq!(Runtime::detect(&facts), Some(Runtime::Docker));
        let docker = facts.docker.as_ref().unwrap();
        assert!(!docker.containerd_image_store);
        assert_eq!(
            facts.free_space.as_ref().map(|f| f.path.as_str()),
            Some("/tmp/releases")
        );
        // Listed once per tag by `docker images -q`, kept once.
        assert_eq!(docker.images.len(), 2);
        let app1 = &docker.images[1];
        assert_eq!(
            app1.repo_tags,
            [
                "extra/name:latest",
                "registry.testbed:5000/dropship/app1:v1"
            ]
        );
        assert_eq!(app1.layers.len(), 4);
        assert_eq!(Runtime::Docker.images_held(&facts), 2);
    }

    #[test]
    fn captured_containerd_node() {
        let facts = captured("containerd");
        assert_eq!(facts.tools, ["zstd", "gzip", "containerd", "ctr"]);
        assert!(facts.docker.is_none() && facts.crio.is_none());
        assert_eq!(
            facts.runtime_summary(),
            "containerd 1.6.20~ds1 (cri, overlayfs)"
        );
        assert_eq!(Runtime::detect(&facts), Some(Runtime::Containerd));
        assert_eq!(Runtime::Containerd.images_held(&facts), 2);
    }

    #[test]
    fn captured_crio_node() {
        let facts = captured("crio");
        assert_eq!(facts.tools, ["zstd", "gzip", "podman"]);
        assert_eq!(facts.runtime_summary(), "podman 4.3.1");
        let crio = facts.crio.as_ref().unwrap();
        assert_eq!(crio.socket, None, "podman without a CRI-O daemon");
        assert_eq!(Runtime::detect(&facts), Some(Runtime::Crio));
        assert_eq!(Runtime::Crio.ready(&facts), Ok(()));
        assert_eq!(Runtime::Crio.images_held(&facts), 2);
    }

    #[test]
    fn captured_flatcar_node() {
        let facts = captured("flatcar");
        assert!(facts.is_coreos_like());
        assert_eq!(facts.os.id_like, ["coreos"]);
    }

    #[test]
    fn a_bare_node_without_any_runtime_still_parses() {
        let out = "\n@@dropship os-release@@\nID=\"flatcar\"\nID_LIKE=coreos\nNAME='Flatcar Container Linux by Kinvolk'\n\
                   \n@@dropship arch@@\naarch64\n@@dropship tools@@\ngzip\n@@dropship runtimes@@\n\
                   @@dropship docker-info@@\n@@dropship free@@\n/\n/dev/vda 1000 10 900 2% /\n\
                   @@dropship docker-images@@\n@@dropship end@@\n";
        let facts = parse(out).unwrap();
        assert!(facts.is_coreos_like());
        assert_eq!(facts.os.name, "Flatcar Container Linux by Kinvolk");
        assert_eq!(facts.arch, "aarch64");
        assert!(facts.has_tool("gzip") && !facts.has_tool("zstd"));
        assert_eq!(
            facts.free_space,
            Some(FreeSpace {
                path: "/".into(),
                bytes: 900 * 1024
            })
        );
        assert!(facts.docker.is_none() && facts.containerd.is_none() && facts.crio.is_none());
        assert_eq!(facts.runtime_summary(), "none");
        assert_eq!(Runtime::detect(&facts), None);
    }

    #[test]
    fn output_cut_short_is_an_error() {
        assert!(parse("@@dropship os-release@@\nID=debian\n").is_err());
        assert!(parse("sudo: a password is required\n").is_err());
    }

    #[test]
    fn a_section_printed_twice_reads_as_one() {
        let sections = Sections::parse(
            "@@dropship runtimes@@\ndocker 0 20.10\n@@dropship x@@\n1\n@@dropship runtimes@@\nctr 1 down\n",
        );
        assert_eq!(sections.get("runtimes"), ["docker 0 20.10", "ctr 1 down"]);
        assert!(sections.get("nope").is_empty() && !sections.has("nope"));
    }

    #[test]
    fn the_script_is_valid_posix_sh() {
        let status = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(format!("DIR=/x\n{}", script()))
            .status()
            .unwrap();
        assert!(status.success());
    }
}
