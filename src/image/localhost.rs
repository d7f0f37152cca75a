//! The localhost download delegate: the docker daemon next to dropship, through bollard.
//!
//! For each image: pull it (with registry credentials, an optional platform, Kubespray's
//! retries), inspect its ID, and if the cache already holds that ID, stop there (Kubespray's
//! `image_changed`). All images that are new are then exported with ONE `docker save`, so
//! shared layers cross the socket once, and the stream goes straight into the cache.

use std::path::PathBuf;
use std::sync::Arc;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptions;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::cache::{Cache, CacheError, IngestReport};
use super::credentials::{self, CredentialError};
use super::digest::{Digest, ImageId};
use super::reference::ImageRef;
use super::retry::{RetryPolicy, Sleeper, TokioSleeper};

/// Pulls run side by side up to this many (the daemon downloads layers in parallel itself).
const PARALLEL_PULLS: usize = 3;
const SAVE_PIPE: usize = 1 << 20;
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

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("image {reference} does not exist in its registry: {message}")]
    NotFound { reference: String, message: String },
    #[error(
        "pulling {reference} was refused (check the credentials in ~/.docker/config.json): {message}"
    )]
    Denied { reference: String, message: String },
    #[error("pulling {reference} failed: {message}")]
    Pull { reference: String, message: String },
    #[error("the docker daemon at {host} failed to {action}: {message}")]
    Daemon {
        host: String,
        action: String,
        message: String,
    },
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl SourceError {
    fn is_transient(&self) -> bool {
        matches!(self, SourceError::Pull { .. })
    }
}

/// What a fetch did, per image and in total.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    pub images: Vec<FetchedImage>,
    /// `docker save` runs (0 when the cache already had every image, at most 1).
    pub save_runs: usize,
    pub ingest: Option<IngestReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FetchedImage {
    pub reference: String,
    pub id: ImageId,
    /// True when this run saved the image into the cache; false when the cache had it.
    pub saved: bool,
}

/// The local docker daemon as an image source.
pub struct LocalDaemon {
    docker: Docker,
    host: String,
    config_path: Option<PathBuf>,
    platform: Option<String>,
    retry: RetryPolicy,
    sleeper: Arc<dyn Sleeper>,
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
            retry: RetryPolicy::default(),
            sleeper: Arc::new(TokioSleeper),
            progress: None,
        })
    }

    pub fn with_platform(mut self, platform: Option<String>) -> Self {
        self.platform = platform;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy, sleeper: Arc<dyn Sleeper>) -> Self {
        self.retry = retry;
        self.sleeper = sleeper;
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

    /// Pull every image, then save the ones the cache lacks with one `docker save`.
    pub async fn fetch(
        &self,
        cache: &Cache,
        references: &[ImageRef],
    ) -> Result<FetchReport, SourceError> {
        let ids: Vec<ImageId> = futures::stream::iter(references)
            .map(|reference| self.pull_and_inspect(cache, reference))
            .buffered(PARALLEL_PULLS)
            .try_collect()
            .await?;
        let mut images = Vec::new();
        let mut to_save: Vec<String> = Vec::new();
        for (reference, id) in references.iter().zip(&ids) {
            let saved = !cache.is_complete(id);
            if saved {
                to_save.push(reference.to_string());
            } else {
                tracing::info!("{reference}: image {id} is already cached, not saving it again");
            }
            images.push(FetchedImage {
                reference: reference.familiar(),
                id: *id,
                saved,
            });
        }
        let ingest = if to_save.is_empty() {
            None
        } else {
            Some(self.save_into(cache, &to_save).await?)
        };
        for (reference, id) in references.iter().zip(&ids) {
            cache.add_names(
                id,
                reference.repo_tag().as_slice(),
                &self.repo_digests(reference).await,
            )?;
        }
        Ok(FetchReport {
            images,
            save_runs: usize::from(ingest.is_some()),
            ingest,
        })
    }

    async fn pull_and_inspect(
        &self,
        cache: &Cache,
        reference: &ImageRef,
    ) -> Result<ImageId, SourceError> {
        let what = format!("pull {reference}");
        self.retry
            .run(
                self.sleeper.as_ref(),
                &what,
                SourceError::is_transient,
                || self.pull(reference),
            )
            .await?;
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
        tracing::debug!(
            "{reference}: image {id}, cached: {}",
            cache.is_complete(&id)
        );
        Ok(id)
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
        let auth = credentials.map(|c| DockerCredentials {
            username: Some(c.username),
            password: Some(c.secret),
            serveraddress: Some(reference.domain().to_string()),
            ..Default::default()
        });
        tracing::info!("pulling {reference}");
        let mut stream = std::pin::pin!(self.docker.create_image(Some(options), None, auth));
        while let Some(message) = stream.next().await {
            let info = message.map_err(|e| classify_pull_error(reference, e))?;
            if let Some(detail) = info.error_detail.as_ref().and_then(|d| d.message.clone()) {
                return Err(classify_message(reference, detail));
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

    /// `docker save` of `names`, streamed into the cache.
    async fn save_into(
        &self,
        cache: &Cache,
        names: &[String],
    ) -> Result<IngestReport, SourceError> {
        tracing::info!(
            "saving {} image(s) into the cache: {}",
            names.len(),
            names.join(" ")
        );
        let (reader, mut writer) = tokio::io::duplex(SAVE_PIPE);
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let pump = async {
            let mut stream = std::pin::pin!(self.docker.export_images(&name_refs));
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.daemon_error("save the images", e))?;
                if writer.write_all(&chunk).await.is_err() {
                    break; // the ingest stopped reading; its error says why
                }
            }
            let _ = writer.shutdown().await;
            drop(writer);
            Ok::<(), SourceError>(())
        };
        let ingest = cache.ingest_async(reader, format!("docker save on {}", self.host));
        let (pumped, ingested) = tokio::join!(pump, ingest);
        pumped?;
        Ok(ingested?)
    }

    async fn repo_digests(&self, reference: &ImageRef) -> Vec<String> {
        match self.docker.inspect_image(&reference.to_string()).await {
            Ok(inspect) => inspect.repo_digests.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    fn daemon_error(&self, action: &str, e: DockerError) -> SourceError {
        SourceError::Daemon {
            host: self.host.clone(),
            action: action.to_string(),
            message: e.to_string(),
        }
    }
}

/// The cached images `references` name, without contacting anything (`--offline`).
pub fn resolve_offline(
    cache: &Cache,
    references: &[ImageRef],
) -> Result<Vec<FetchedImage>, CacheError> {
    references
        .iter()
        .map(|reference| {
            let record = cache.require(&reference.to_string())?;
            Ok(FetchedImage {
                reference: reference.familiar(),
                id: record.id,
                saved: false,
            })
        })
        .collect()
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
            classify_message(reference, message)
        }
        DockerError::DockerStreamError { error } => classify_message(reference, error),
        other => SourceError::Pull {
            reference: reference.to_string(),
            message: other.to_string(),
        },
    }
}

/// The daemon reports registry answers as text; these phrases mean retrying cannot help.
fn classify_message(reference: &ImageRef, message: String) -> SourceError {
    let lower = message.to_lowercase();
    let reference = reference.to_string();
    if [
        "unauthorized",
        "denied",
        "authentication required",
        "no basic auth credentials",
    ]
    .iter()
    .any(|phrase| lower.contains(phrase))
    {
        SourceError::Denied { reference, message }
    } else if [
        "not found",
        "manifest unknown",
        "does not exist",
        "no matching manifest",
    ]
    .iter()
    .any(|phrase| lower.contains(phrase))
    {
        SourceError::NotFound { reference, message }
    } else {
        SourceError::Pull { reference, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
