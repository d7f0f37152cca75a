//! A remote download delegate (Kubespray's `download_delegate`, by default the first
//! `kube_control_plane` host): `docker pull` runs there, and `docker save` streams back over
//! the SSH channel straight into the local cache.

use tokio::io::AsyncWrite;

use super::{Daemon, Inspected, SourceError, classify_pull_message};
use crate::image::{Digest, ImageRef};
use crate::ssh::{Become, RemoteCommand, Session};

pub struct RemoteDaemon<'a> {
    session: &'a Session,
    become_: Option<&'a Become>,
    platform: Option<String>,
}

impl<'a> RemoteDaemon<'a> {
    pub fn new(
        session: &'a Session,
        become_: Option<&'a Become>,
        platform: Option<String>,
    ) -> Self {
        RemoteDaemon {
            session,
            become_,
            platform,
        }
    }

    fn docker(&self, args: Vec<String>) -> RemoteCommand {
        RemoteCommand::new(std::iter::once("docker".to_string()).chain(args))
            .with_become(self.become_)
    }

    fn failure(&self, action: String, stderr: String) -> SourceError {
        SourceError::Daemon {
            host: self.session.host().to_string(),
            action,
            message: stderr,
        }
    }
}

impl Daemon for RemoteDaemon<'_> {
    fn name(&self) -> &str {
        self.session.host()
    }

    async fn pull(&self, reference: &ImageRef) -> Result<(), SourceError> {
        let mut args = vec!["pull".to_string(), "--quiet".to_string()];
        if let Some(platform) = &self.platform {
            args.extend(["--platform".to_string(), platform.clone()]);
        }
        args.push(reference.to_string());
        tracing::info!("pulling {reference} on {}", self.name());
        let output = self.session.exec(&self.docker(args)).run().await?;
        if output.success() {
            Ok(())
        } else {
            Err(classify_pull_message(reference, output.stderr_text()))
        }
    }

    async fn inspect(&self, reference: &ImageRef) -> Result<Inspected, SourceError> {
        let args = [
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{json .RepoDigests}}",
        ]
        .into_iter()
        .map(str::to_string)
        .chain([reference.to_string()])
        .collect();
        let output = self.session.exec(&self.docker(args)).run().await?;
        let action = || format!("inspect {reference}");
        if !output.success() {
            return Err(self.failure(action(), output.stderr_text()));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let (id, digests) = text.trim().split_once(' ').unwrap_or((text.trim(), "null"));
        let id = Digest::parse(id)
            .map_err(|e| self.failure(action(), format!("unexpected image ID {id:?}: {e}")))?;
        let repo_digests = serde_json::from_str::<Option<Vec<String>>>(digests)
            .map_err(|e| {
                self.failure(action(), format!("unexpected RepoDigests {digests:?}: {e}"))
            })?
            .unwrap_or_default();
        Ok(Inspected { id, repo_digests })
    }

    async fn save(
        &self,
        names: &[String],
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), SourceError> {
        let args = std::iter::once("save".to_string())
            .chain(names.iter().cloned())
            .collect();
        let command = self.docker(args);
        let output = self.session.exec(&command).stdout_to(out).run().await?;
        if output.success() {
            Ok(())
        } else {
            Err(self.failure("save the images".into(), output.stderr_text()))
        }
    }
}
