//! What a node is and holds, gathered in one SSH round trip.
//!
//! One POSIX `sh` script prints delimited sections (os-release, arch, tools, runtimes,
//! `docker info`, free space, every image with its layers); a missing tool leaves its section
//! empty instead of failing the script. Listing all images once per node, not once per image,
//! is what keeps large clusters from exhausting SSH (Kubespray #11092, #13083).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::ssh::Become;
use crate::ssh::{RemoteCommand, Session, SshError, quote};

const MARK: &str = "@@dropship ";

/// The fact-gathering script; `$DIR` is where free space is measured (its nearest existing parent).
const SCRIPT: &str = r#"
export LC_ALL=C
have() { command -v "$1" >/dev/null 2>&1; }
limit() { if have timeout; then timeout 20 "$@"; else "$@"; fi; }
mark() { printf '\n@@dropship %s@@\n' "$1"; }
mark os-release; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
mark arch; uname -m
mark tools; for t in zstd gzip docker ctr nerdctl podman; do have "$t" && echo "$t"; done
mark runtimes
# NAME RC DETAIL: the version line when it answered, else the last line of its complaint.
probe() {
  n=$1; shift; out=$(limit "$@" 2>&1); rc=$?; line=
  [ $rc -eq 0 ] && line=$(printf '%s\n' "$out" | grep '^[[:space:]]*Version:' | tail -n 1)
  [ -n "$line" ] || line=$(printf '%s\n' "$out" | tail -n 1)
  echo "$n $rc $line"
}
have docker && probe docker docker version --format '{{.Server.Version}}'
# ctr and nerdctl wait seconds for an absent containerd: ask only when its socket exists.
sock=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
if [ -S "$sock" ]; then
  have ctr && probe ctr ctr --connect-timeout 2s version
  have nerdctl && probe nerdctl nerdctl version
else
  for t in ctr nerdctl; do have "$t" && echo "$t 1 no containerd socket at $sock"; done
fi
have podman && probe podman podman version
mark docker-info
have docker && limit docker info --format '{"ServerVersion":{{json .ServerVersion}},"Driver":{{json .Driver}},"DriverStatus":{{json .DriverStatus}}}' 2>/dev/null
mark free
d=$DIR; while [ ! -d "$d" ]; do d=${d%/*}; [ -n "$d" ] || d=/; done
echo "$d"; df -Pk "$d" 2>/dev/null | tail -n 1
mark images
if have docker; then
  ids=$(limit docker images -q --no-trunc 2>/dev/null)
  [ -n "$ids" ] && limit docker image inspect --format '[{{json .Id}},{{json .RepoTags}},{{json .RepoDigests}},{{json .RootFS.Layers}}]' $ids 2>/dev/null
fi
mark end
"#;

/// Everything `dropship` needs to know about a node before pushing to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub os: OsRelease,
    /// `uname -m`: x86_64, aarch64, …
    pub arch: String,
    /// Tools found on PATH among zstd, gzip, docker, ctr, nerdctl, podman.
    pub tools: Vec<String>,
    /// Container runtimes whose CLI is installed, and whether they answered.
    pub runtimes: Vec<Runtime>,
    /// `docker info`, when the Docker daemon answered.
    pub docker: Option<DockerInfo>,
    /// Free space where archives would be written (local_release_dir or its nearest parent).
    pub free_space: Option<FreeSpace>,
    /// Every image the Docker daemon holds.
    pub images: Vec<NodeImage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub name: String,
    pub version_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Runtime {
    pub name: String,
    pub answers: bool,
    /// Version when it answered, else the start of its error message.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerInfo {
    pub server_version: String,
    pub storage_driver: String,
    /// Images live in containerd's store (Docker's containerd snapshotter), not the classic one.
    pub containerd_image_store: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FreeSpace {
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeImage {
    /// `sha256:…` image ID (config digest).
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Layer diff IDs, base first.
    pub layers: Vec<String>,
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

    pub fn docker_answers(&self) -> bool {
        self.docker.is_some()
    }

    /// "docker 20.10.24/overlay2", "podman 4.3.1", or "none".
    pub fn runtime_summary(&self) -> String {
        let mut answering: Vec<String> = self
            .runtimes
            .iter()
            .filter(|r| r.answers)
            .map(|r| match (&self.docker, r.name.as_str()) {
                (Some(docker), "docker") => {
                    format!("docker {}/{}", docker.server_version, docker.storage_driver)
                }
                _ => format!("{} {}", r.name, r.detail).trim().to_string(),
            })
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
    RemoteCommand::shell(format!("DIR={}\n{SCRIPT}", quote(&dir))).with_become(become_)
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
    let sections = split_sections(output);
    if !sections.contains_key("end") {
        return Err("the facts script did not run to its end".to_string());
    }
    let section = |name: &str| sections.get(name).map(Vec::as_slice).unwrap_or_default();
    let docker = parse_docker_info(section("docker-info"));
    Ok(Facts {
        os: parse_os_release(section("os-release")),
        arch: section("arch")
            .first()
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        tools: section("tools")
            .iter()
            .map(|s| s.trim().to_string())
            .collect(),
        runtimes: section("runtimes")
            .iter()
            .filter_map(|line| parse_runtime(line))
            .collect(),
        free_space: parse_free(section("free")),
        images: parse_images(section("images"))?,
        docker,
    })
}

fn split_sections(output: &str) -> BTreeMap<&str, Vec<&str>> {
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
    sections
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
fn parse_runtime(line: &str) -> Option<Runtime> {
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
    Some(Runtime {
        name,
        answers,
        detail,
    })
}

fn parse_docker_info(lines: &[&str]) -> Option<DockerInfo> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Info {
        server_version: Option<String>,
        driver: Option<String>,
        driver_status: Option<Vec<Vec<String>>>,
    }
    let info: Info = lines
        .iter()
        .find_map(|line| serde_json::from_str(line).ok())?;
    let server_version = info.server_version.filter(|v| !v.is_empty())?;
    let containerd_image_store = info.driver_status.unwrap_or_default().iter().any(|pair| {
        pair.first().is_some_and(|k| k == "driver-type")
            && pair.get(1).is_some_and(|v| v.contains("containerd"))
    });
    Some(DockerInfo {
        server_version,
        storage_driver: info.driver.unwrap_or_default(),
        containerd_image_store,
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

fn parse_images(lines: &[&str]) -> Result<Vec<NodeImage>, String> {
    type Row = (
        String,
        Option<Vec<String>>,
        Option<Vec<String>>,
        Option<Vec<String>>,
    );
    let mut images: Vec<NodeImage> = Vec::new();
    for line in lines {
        let (id, tags, digests, layers): Row =
            serde_json::from_str(line).map_err(|e| format!("image line {line:?}: {e}"))?;
        if images.iter().any(|i| i.id == id) {
            continue; // `docker images -q` lists an image once per tag
        }
        images.push(NodeImage {
            id,
            repo_tags: tags.unwrap_or_default(),
            repo_digests: digests.unwrap_or_default(),
            layers: layers.unwrap_or_default(),
        });
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_docker_node() {
        let facts = parse(include_str!("../tests/fixtures/facts-node-docker.txt")).unwrap();
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
        assert_eq!(facts.tools, ["zstd", "gzip", "docker", "ctr"]);
        assert_eq!(facts.runtime_summary(), "docker 20.10.24+dfsg1/overlay2");
        let ctr = &facts.runtimes[1];
        assert!(
            !ctr.answers && ctr.detail.starts_with("no containerd socket"),
            "{ctr:?}"
        );
        assert!(!facts.docker.as_ref().unwrap().containerd_image_store);
        assert_eq!(
            facts.free_space,
            Some(FreeSpace {
                path: "/tmp/releases".into(),
                bytes: 72639940 * 1024
            })
        );
        // Listed once per tag by `docker images -q`, kept once.
        assert_eq!(facts.images.len(), 2);
        let app1 = &facts.images[1];
        assert_eq!(
            app1.repo_tags,
            [
                "extra/name:latest",
                "registry.testbed:5000/dropship/app1:v1"
            ]
        );
        assert_eq!(app1.layers.len(), 4);
    }

    #[test]
    fn captured_flatcar_node() {
        let facts = parse(include_str!("../tests/fixtures/facts-node-flatcar.txt")).unwrap();
        assert!(facts.is_coreos_like());
        assert_eq!(facts.os.id_like, ["coreos"]);
    }

    #[test]
    fn a_bare_node_without_docker_still_parses() {
        let out = "\n@@dropship os-release@@\nID=\"flatcar\"\nID_LIKE=coreos\nNAME='Flatcar Container Linux by Kinvolk'\n\
                   \n@@dropship arch@@\naarch64\n@@dropship tools@@\ngzip\n@@dropship runtimes@@\n\
                   @@dropship docker-info@@\n@@dropship free@@\n/\n/dev/vda 1000 10 900 2% /\n\
                   @@dropship images@@\n@@dropship end@@\n";
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
        assert!(!facts.docker_answers() && facts.images.is_empty());
        assert_eq!(facts.runtime_summary(), "none");
    }

    #[test]
    fn output_cut_short_is_an_error() {
        assert!(parse("@@dropship os-release@@\nID=debian\n").is_err());
        assert!(parse("sudo: a password is required\n").is_err());
    }

    #[test]
    fn containerd_image_store_is_detected() {
        let line = r#"{"ServerVersion":"27.3.1","Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}"#;
        let info = parse_docker_info(&[line]).unwrap();
        assert!(info.containerd_image_store);
        assert_eq!(info.storage_driver, "overlayfs");
        let classic = r#"{"ServerVersion":"20.10.24","Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"]]}"#;
        assert!(
            !parse_docker_info(&[classic])
                .unwrap()
                .containerd_image_store
        );
        assert_eq!(
            parse_docker_info(&[r#"{"ServerVersion":"","Driver":""}"#]),
            None
        );
    }

    #[test]
    fn the_script_is_valid_posix_sh() {
        let status = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(format!("DIR=/x\n{SCRIPT}"))
            .status()
            .unwrap();
        assert!(status.success());
    }
}
