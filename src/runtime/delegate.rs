//! A remote download delegate (Kubespray's `download_delegate`, by default the first
//! `kube_control_plane` host): the images are pulled there with its runtime, and one export
//! streams back over the SSH channel straight into the local cache.
//!
//! - Docker: `docker pull`, `docker image inspect`, `docker save`.
//! - containerd (no Docker anywhere): `ctr -n k8s.io images pull --hosts-dir <the CRI's
//!   config_path>` (ctr reads no registry hosts directory by itself), the config digest read
//!   from the target's manifest (`ctr content get`), and `ctr images export -`. A node whose
//!   CRI discarded the layer blobs after unpacking (`discard_unpacked_layers`, Kubespray's
//!   default before containerd 2.1) cannot export them (kubespray#13235; the stream is cut
//!   short and ctr exits non-zero): such images are pulled again first, which fetches the
//!   missing blobs, and the export's exit status is always checked.

use std::path::Path;

use tokio::io::AsyncWrite;

use super::containerd::of as containerd_of;
use super::{ContainerdFacts, Runtime, node_platform};
use crate::facts::{self, Facts, FactsError};
use crate::image::platform::Platform;
use crate::image::source::{Daemon, Inspected, SourceError, classify_pull_message};
use crate::image::{Digest, ImageRef};
use crate::ssh::{Become, RemoteCommand, Session, quote, quote_words};

/// How the delegate's runtime is driven.
enum Tool {
    Docker,
    Containerd(Box<ContainerdFacts>),
}

pub struct RemoteDelegate<'a> {
    session: &'a Session,
    become_: Option<&'a Become>,
    /// `--platform`, else (containerd pulls and exports one platform) the delegate's own.
    platform: Option<Platform>,
    tool: Tool,
}

/// A remote delegate that cannot pull for dropship.
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("the download delegate: {0}")]
    Facts(#[from] FactsError),
    #[error(
        "the download delegate {host} has no container runtime dropship can pull with (docker or containerd's ctr)"
    )]
    NoRuntime { host: String },
    #[error("the download delegate {host}: {reason}")]
    Unready { host: String, reason: String },
    #[error(
        "the download delegate {host} runs {runtime}, which dropship cannot pull with; use --delegate localhost or a Docker or containerd host"
    )]
    Unsupported { host: String, runtime: &'static str },
}

impl<'a> RemoteDelegate<'a> {
    /// The delegate behind `session`, driven with its runtime: the inventory's word
    /// (`runtime`), else what its facts (one round trip) show.
    pub async fn open(
        session: &'a Session,
        become_: Option<&'a Become>,
        platform: Option<Platform>,
        runtime: Option<Runtime>,
        local_release_dir: &Path,
    ) -> Result<RemoteDelegate<'a>, DelegateError> {
        let facts = facts::gather(session, local_release_dir, become_).await?;
        let host = || session.host().to_string();
        let runtime = runtime
            .or_else(|| Runtime::detect(&facts))
            .ok_or_else(|| DelegateError::NoRuntime { host: host() })?;
        runtime.ready(&facts).map_err(|e| DelegateError::Unready {
            host: host(),
            reason: e.to_string(),
        })?;
        RemoteDelegate::new(session, become_, platform, runtime, &facts)
    }

    fn new(
        session: &'a Session,
        become_: Option<&'a Become>,
        platform: Option<Platform>,
        runtime: Runtime,
        facts: &Facts,
    ) -> Result<Self, DelegateError> {
        let tool = match runtime {
            Runtime::Docker => Tool::Docker,
            Runtime::Containerd => Tool::Containerd(Box::new(containerd_of(facts).clone())),
            Runtime::Crio => {
                return Err(DelegateError::Unsupported {
                    host: session.host().to_string(),
                    runtime: runtime.name(),
                });
            }
        };
        let platform = match tool {
            Tool::Containerd(_) => platform.or_else(|| node_platform(&facts.arch)),
            Tool::Docker => platform,
        };
        Ok(RemoteDelegate {
            session,
            become_,
            platform,
            tool,
        })
    }

    fn command(&self, argv: Vec<String>) -> RemoteCommand {
        RemoteCommand::new(argv).with_become(self.become_)
    }

    fn shell(&self, script: String) -> RemoteCommand {
        RemoteCommand::shell(script).with_become(self.become_)
    }

    fn failure(&self, action: String, stderr: String) -> SourceError {
        SourceError::Daemon {
            host: self.session.host().to_string(),
            action,
            message: stderr,
        }
    }

    /// stdout of `command`, or the failure of `action`.
    async fn output(&self, command: &RemoteCommand, action: String) -> Result<String, SourceError> {
        let output = self.session.exec(command).run().await?;
        if !output.success() {
            return Err(self.failure(action, output.stderr_text()));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn docker_inspect(&self, reference: &ImageRef) -> Result<Inspected, SourceError> {
        let action = || format!("inspect {reference}");
        let text = self
            .output(&self.command(docker_inspect_args(reference)), action())
            .await?;
        parse_docker_inspect(&text).map_err(|detail| self.failure(action(), detail))
    }

    async fn containerd_inspect(
        &self,
        containerd: &ContainerdFacts,
        reference: &ImageRef,
    ) -> Result<Inspected, SourceError> {
        let action = || format!("inspect {reference}");
        let listed = self
            .output(&self.shell(containerd.list_command(reference)), action())
            .await?;
        let lines: Vec<&str> = listed.lines().collect();
        let store = super::containerd::Store::parse(&lines, &[], &[]);
        let Some(image) = store.images.first() else {
            return Err(self.failure(action(), format!("{reference}: not found")));
        };
        let fallback = Platform::new("linux", "amd64", None);
        let platform = self.platform.as_ref().unwrap_or(&fallback);
        let mut digest = image.target;
        // An index, then its manifest for the platform: at most two reads of small blobs.
        for _ in 0..2 {
            let blob = self
                .output(&self.shell(containerd.content_command(&digest)), action())
                .await?;
            match super::containerd::config_or_manifest(blob.as_bytes(), platform) {
                Ok(Next::Config(config)) => {
                    return Ok(Inspected {
                        id: config,
                        repo_digests: vec![format!("{}@{}", reference.repository(), image.target)],
                    });
                }
                Ok(Next::Manifest(manifest)) => digest = manifest,
                Err(detail) => return Err(self.failure(action(), detail)),
            }
        }
        Err(self.failure(action(), format!("{reference}: an index of indexes")))
    }
}

/// Where a manifest or an index leads.
pub enum Next {
    Config(Digest),
    Manifest(Digest),
}

impl Daemon for RemoteDelegate<'_> {
    fn name(&self) -> &str {
        self.session.host()
    }

    async fn pull(&self, reference: &ImageRef) -> Result<(), SourceError> {
        let command = match &self.tool {
            Tool::Docker => self.command(docker_pull_args(reference, self.platform.as_ref())),
            Tool::Containerd(containerd) => {
                self.shell(containerd.pull_command(reference, self.platform.as_ref()))
            }
        };
        tracing::info!("pulling {reference} on {}", self.name());
        let output = self.session.exec(&command).run().await?;
        if output.success() {
            Ok(())
        } else {
            Err(classify_pull_message(reference, output.stderr_text()))
        }
    }

    async fn inspect(&self, reference: &ImageRef) -> Result<Inspected, SourceError> {
        match &self.tool {
            Tool::Docker => self.docker_inspect(reference).await,
            Tool::Containerd(containerd) => self.containerd_inspect(containerd, reference).await,
        }
    }

    async fn save(
        &self,
        names: &[String],
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), SourceError> {
        let command = match &self.tool {
            Tool::Docker => self.command(
                ["docker".to_string(), "save".to_string()]
                    .into_iter()
                    .chain(names.iter().cloned())
                    .collect(),
            ),
            Tool::Containerd(containerd) => {
                self.shell(containerd.export_command(names, self.platform.as_ref()))
            }
        };
        let output = self.session.exec(&command).stdout_to(out).run().await?;
        if output.success() {
            return Ok(());
        }
        let stderr = output.stderr_text();
        let message = match &self.tool {
            Tool::Containerd(_) if stderr.contains("content digest") => format!(
                "{stderr}: its containerd holds an image without the layer blobs (discarded after unpacking, kubespray#13235) and pulling it again did not bring them back"
            ),
            _ => stderr,
        };
        Err(self.failure("export the images".into(), message))
    }
}

fn docker_pull_args(reference: &ImageRef, platform: Option<&Platform>) -> Vec<String> {
    let mut args = vec!["docker".into(), "pull".into(), "--quiet".into()];
    if let Some(platform) = platform {
        args.extend(["--platform".to_string(), platform.to_string()]);
    }
    args.push(reference.to_string());
    args
}

fn docker_inspect_args(reference: &ImageRef) -> Vec<String> {
    [
        "docker",
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{json .RepoDigests}}",
    ]
    .into_iter()
    .map(str::to_string)
    .chain([reference.to_string()])
    .collect()
}

/// `ID RepoDigests-JSON`, as [`docker_inspect_args`] prints it.
fn parse_docker_inspect(text: &str) -> Result<Inspected, String> {
    let (id, digests) = text.trim().split_once(' ').unwrap_or((text.trim(), "null"));
    let id = Digest::parse(id).map_err(|e| format!("unexpected image ID {id:?}: {e}"))?;
    let repo_digests = serde_json::from_str::<Option<Vec<String>>>(digests)
        .map_err(|e| format!("unexpected RepoDigests {digests:?}: {e}"))?
        .unwrap_or_default();
    Ok(Inspected { id, repo_digests })
}

impl ContainerdFacts {
    /// `ctr images pull` of one image (for one platform), through the CRI's registry hosts.
    pub fn pull_command(&self, reference: &ImageRef, platform: Option<&Platform>) -> String {
        format!(
            "{} images pull {}{} {} >/dev/null",
            self.ctr(),
            self.hosts_dir_flag(),
            platform_flag(platform),
            quote(&reference.to_string())
        )
    }

    fn hosts_dir_flag(&self) -> String {
        let dir = self
            .config
            .hosts_dir
            .as_deref()
            .unwrap_or("/etc/containerd/certs.d");
        format!("--hosts-dir {}", quote(dir))
    }

    /// `ctr images ls name==REF`.
    pub fn list_command(&self, reference: &ImageRef) -> String {
        format!(
            "{} images ls {}",
            self.ctr(),
            quote(&format!("name=={reference}"))
        )
    }

    /// `ctr content get DIGEST`: a manifest or an index.
    pub fn content_command(&self, digest: &Digest) -> String {
        format!("{} content get {digest}", self.ctr())
    }

    /// One `ctr images export -` of `names` for one platform, to stdout. Images whose content
    /// is incomplete (their layer blobs were discarded after unpacking) are pulled again first,
    /// with the pull's output kept off stdout: stdout is the archive.
    pub fn export_command(&self, names: &[String], platform: Option<&Platform>) -> String {
        let names: Vec<String> = names
            .iter()
            .map(|name| ImageRef::parse(name).map_or_else(|_| name.clone(), |r| r.to_string()))
            .collect();
        format!(
            "set -e\n\
             for n in {names}; do\n\
             \x20 if {ctr} images check \"name==$n\" | grep -q incomplete; then\n\
             \x20   {ctr} images pull {hosts}{platform} \"$n\" >/dev/null\n\
             \x20 fi\n\
             done\n\
             {ctr} images export{platform} - {names}",
            names = quote_words(&names),
            ctr = self.ctr(),
            hosts = self.hosts_dir_flag(),
            platform = platform_flag(platform),
        )
    }
}

/// ` --platform P`, or nothing.
fn platform_flag(platform: Option<&Platform>) -> String {
    platform.map_or_else(String::new, |p| {
        format!(" --platform {}", quote(&p.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn containerd() -> ContainerdFacts {
        ContainerdFacts {
            address: "/run/containerd/containerd.sock".into(),
            ..ContainerdFacts::default()
        }
    }

    #[test]
    fn docker_pulls_for_the_platform_asked_and_inspects_id_and_digests() {
        let reference = ImageRef::parse("reg:5000/app:v1").unwrap();
        assert_eq!(
            docker_pull_args(&reference, Platform::parse("linux/arm64").ok().as_ref()),
            [
                "docker",
                "pull",
                "--quiet",
                "--platform",
                "linux/arm64",
                "reg:5000/app:v1"
            ]
        );
        let id = Digest::of(b"c");
        let inspected = parse_docker_inspect(&format!("{id} [\"reg:5000/app@{id}\"]\n")).unwrap();
        assert_eq!(inspected.id, id);
        assert_eq!(inspected.repo_digests, [format!("reg:5000/app@{id}")]);
        assert!(
            parse_docker_inspect(&format!("{id} null"))
                .unwrap()
                .repo_digests
                .is_empty()
        );
        assert!(parse_docker_inspect("nope").is_err());
    }

    #[test]
    fn containerd_pulls_through_the_cri_hosts_dir_in_k8s_io() {
        let reference = ImageRef::parse("nginx:1.27").unwrap();
        let mut facts = containerd();
        assert_eq!(
            facts.pull_command(&reference, Platform::parse("linux/amd64").ok().as_ref()),
            "ctr -a '/run/containerd/containerd.sock' -n k8s.io images pull --hosts-dir '/etc/containerd/certs.d' --platform 'linux/amd64' 'docker.io/library/nginx:1.27' >/dev/null"
        );
        facts.config.hosts_dir = Some("/opt/certs.d".into());
        assert!(
            facts
                .pull_command(&reference, Some(&Platform::parse("linux/arm64").unwrap()))
                .contains("--hosts-dir '/opt/certs.d' --platform 'linux/arm64'")
        );
        assert_eq!(
            facts.list_command(&reference),
            "ctr -a '/run/containerd/containerd.sock' -n k8s.io images ls 'name==docker.io/library/nginx:1.27'"
        );
    }

    #[test]
    fn the_export_pulls_incomplete_images_again_and_writes_only_the_archive_to_stdout() {
        let script = containerd().export_command(
            &["nginx:1.27".into(), "reg:5000/app:v1".into()],
            Platform::parse("linux/amd64").ok().as_ref(),
        );
        assert!(script.starts_with("set -e\n"), "{script}");
        assert!(
            script.contains("images check \"name==$n\" | grep -q incomplete"),
            "{script}"
        );
        assert!(script.contains("\"$n\" >/dev/null\n"), "{script}");
        assert!(
            script.ends_with(
                "images export --platform 'linux/amd64' - 'docker.io/library/nginx:1.27' 'reg:5000/app:v1'"
            ),
            "{script}"
        );
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .status()
            .unwrap();
        assert!(status.success());
    }
}
