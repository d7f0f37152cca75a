//! The localhost download delegate: the docker daemon next to dropship, through bollard
//! (`DOCKER_HOST` honoured, unix and tcp), with registry credentials and an optional platform.

use std::path::PathBuf;
use std::sync::Arc;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Daemon, Inspected, SourceError, classify_pull_message};
use crate::image::{Digest, ImageRef};
use crate::registry::credentials::{self, Credential};
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// One progress message of a pull, as the daemon reports it.
#[derive(Debug, Clone, Copy)]
pub struct PullEvent<'a> {
    pub reference: &'a ImageRef,
    /// The layer (short ID) the message is about, if any.
    pub layer: Option<&'a str>,
    pub status: &'a str,
    pub current: Option<i64>,
    pub total: Option<i64>,
}

pub type ProgressHook = Arc<dyn Fn(&PullEvent<'_>) + Send + Sync>;

/// The local docker daemon as an image source.
pub struct LocalDaemon {
    docker: Docker,
    host: String,
    config_path: Option<PathBuf>,
    platform: Option<String>,
    progress: Option<ProgressHook>,
}

impl LocalDaemon {
    /// Connect to `DOCKER_HOST` (unix:// or tcp://), else the default socket.
    pub fn connect() -> Result<LocalDaemon, SourceError> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_DOCKER_HOST.into());
        LocalDaemon::connect_to(&host)
    }

    /// Connect to the daemon at `host` (`unix:///path` or `tcp://host:port`).
    pub fn connect_to(host: &str) -> Result<LocalDaemon, SourceError> {
        let host = host.to_string();
        let docker = Docker::connect_with_host(&host).map_err(|e| SourceError::Daemon {
            host: host.clone(),
            action: "accept a connection".into(),
            message: e.to_string(),
        })?;
        Ok(LocalDaemon {
            docker,
            host,
            config_path: credentials::default_config_path(),
            platform: None,
            progress: None,
        })
    }

    pub fn with_platform(mut self, platform: Option<String>) -> Self {
        self.platform = platform;
        self
    }

    pub fn with_progress(mut self, hook: ProgressHook) -> Self {
        self.progress = Some(hook);
        self
    }

    /// Use this docker CLI config file for registry credentials instead of the default.
    pub fn with_docker_config(mut self, path: PathBuf) -> Self {
        self.config_path = Some(path);
        self
    }

    fn daemon_error(&self, action: &str, e: DockerError) -> SourceError {
        SourceError::Daemon {
            host: self.host.clone(),
            action: action.to_string(),
            message: e.to_string(),
        }
    }
}

impl Daemon for LocalDaemon {
    fn name(&self) -> &str {
        &self.host
    }

    async fn pull(&self, reference: &ImageRef) -> Result<(), SourceError> {
        let credentials = match &self.config_path {
            Some(path) => credentials::lookup(path, reference.domain())?,
            None => None,
        };
        let options = CreateImageOptions {
            from_image: Some(match reference.digest() {
                Some(digest) => format!("{}@{digest}", reference.repository()),
                None => reference.repository(),
            }),
            tag: reference
                .digest()
                .is_none()
                .then(|| reference.tag().unwrap_or("latest").to_string()),
            platform: self.platform.clone().unwrap_or_default(),
            ..Default::default()
        };
        let auth = credentials.map(|credential| {
            let (username, password, identitytoken) = match credential {
                Credential::Basic { username, password } => (Some(username), Some(password), None),
                Credential::IdentityToken(token) => (None, None, Some(token)),
            };
            DockerCredentials {
                username,
                password,
                identitytoken,
                serveraddress: Some(reference.domain().to_string()),
                ..Default::default()
            }
        });
        tracing::info!("pulling {reference}");
        let mut stream = std::pin::pin!(self.docker.create_image(Some(options), None, auth));
        while let Some(message) = stream.next().await {
            let info = message.map_err(|e| classify_pull_error(reference, e))?;
            if let Some(detail) = info.error_detail.as_ref().and_then(|d| d.message.clone()) {
                return Err(classify_pull_message(reference, detail));
            }
            let status = info.status.as_deref().unwrap_or_default();
            let progress = info.progress_detail.as_ref();
            let event = PullEvent {
                reference,
                layer: info.id.as_deref(),
                status,
                current: progress.and_then(|p| p.current),
                total: progress.and_then(|p| p.total),
            };
            tracing::debug!("{reference}: {} {status}", event.layer.unwrap_or(""));
            if let Some(hook) = &self.progress {
                hook(&event);
            }
        }
        Ok(())
    }

    async fn inspect(&self, reference: &ImageRef) -> Result<Inspected, SourceError> {
        let inspect = self
            .docker
            .inspect_image(&reference.to_string())
            .await
            .map_err(|e| self.daemon_error("inspect", e))?;
        let id = inspect
            .id
            .as_deref()
            .and_then(|id| Digest::parse(id).ok())
            .ok_or_else(|| SourceError::Daemon {
                host: self.host.clone(),
                action: format!("report the image ID of {reference}"),
                message: format!("got {:?}", inspect.id),
            })?;
        Ok(Inspected {
            id,
            repo_digests: inspect.repo_digests.unwrap_or_default(),
        })
    }

    async fn save(
        &self,
        names: &[String],
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), SourceError> {
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut stream = std::pin::pin!(self.docker.export_images(&name_refs));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.daemon_error("save the images", e))?;
            if out.write_all(&chunk).await.is_err() {
                break; // the ingest stopped reading; its error says why
            }
        }
        Ok(())
    }
}

fn classify_pull_error(reference: &ImageRef, e: DockerError) -> SourceError {
    match e {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } => SourceError::NotFound {
            reference: reference.to_string(),
            message,
        },
        DockerError::DockerResponseServerError {
            status_code: 401 | 403,
            message,
        } => SourceError::Denied {
            reference: reference.to_string(),
            message,
        },
        DockerError::DockerResponseServerError { message, .. } => {
            classify_pull_message(reference, message)
        }
        DockerError::DockerStreamError { error } => classify_pull_message(reference, error),
        other => SourceError::Pull {
            reference: reference.to_string(),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Transient;

    #[test]
    fn registry_answers_are_classified() {
        let r = ImageRef::parse("reg:5000/x:1").unwrap();
        let server = |status_code, message: &str| DockerError::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        };
        assert!(matches!(
            classify_pull_error(&r, server(404, "manifest unknown")),
            SourceError::NotFound { .. }
        ));
        assert!(matches!(
            classify_pull_error(&r, server(500, "unauthorized: login")),
            SourceError::Denied { .. }
        ));
        assert!(matches!(
            classify_pull_error(
                &r,
                server(500, "Get https://reg:5000/v2/: connection refused")
            ),
            SourceError::Pull { .. }
        ));
        assert!(classify_pull_error(&r, server(502, "bad gateway")).is_transient());
        assert!(!classify_pull_error(&r, server(404, "x")).is_transient());
    }
}
