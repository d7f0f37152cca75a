//! Filling the cache from a download delegate's daemon: the local Docker daemon (`localhost`)
//! or a remote delegate's runtime (`runtime::delegate`), behind one [`Daemon`] trait.
//!
//! For each image: pull it (Kubespray's retries, transient errors only), inspect its ID, and
//! if the cache already holds that ID, stop there (Kubespray's `image_changed`). All images
//! that are new are then exported with ONE `docker save`, so shared layers cross once, and the
//! stream goes straight into the cache: no temporary file on either side.

use std::future::Future;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

pub mod localhost;
pub mod registry;

use crate::image::cache::{Cache, CacheError, IngestReport};
use crate::image::{ImageId, ImageRef};
use crate::registry::CredentialError;
use crate::retry::{self, Jitter, Retry, RetryPolicy, Transient};
use crate::ssh::SshError;

/// Pulls run side by side up to this many (a daemon downloads layers in parallel itself).
const PARALLEL_PULLS: usize = 3;
const SAVE_PIPE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("image {reference} does not exist in its registry: {message}")]
    NotFound { reference: String, message: String },
    #[error(
        "pulling {reference} was refused (check the registry credentials of the delegate, e.g. ~/.docker/config.json): {message}"
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
    Ssh(#[from] SshError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
    #[error("{reference}: the registry served something unusable: {detail}")]
    Unusable { reference: String, detail: String },
    #[error("a download task stopped: {0}")]
    Task(String),
}

impl From<crate::registry::RegistryError> for SourceError {
    fn from(e: crate::registry::RegistryError) -> Self {
        SourceError::Registry(Box::new(e))
    }
}

impl SourceError {
    /// The registry does not have the image, or will not say (a registry answers "denied" for a
    /// repository that does not exist as often as "not found"), or cannot be reached: the image
    /// may still be elsewhere.
    pub fn is_absent(&self) -> bool {
        use crate::registry::ErrorKind;
        match self {
            SourceError::Registry(e) => matches!(
                e.kind,
                ErrorKind::NotFound { .. }
                    | ErrorKind::Denied { .. }
                    | ErrorKind::Network(_)
                    | ErrorKind::UnknownHost(_)
            ),
            _ => false,
        }
    }

    fn unusable(reference: &ImageRef, detail: String) -> SourceError {
        SourceError::Unusable {
            reference: reference.to_string(),
            detail,
        }
    }
}

impl Transient for SourceError {
    fn is_transient(&self) -> bool {
        match self {
            SourceError::Pull { .. } => true,
            SourceError::Ssh(e) => e.is_transient(),
            SourceError::Registry(e) => e.is_transient(),
            _ => false,
        }
    }

    /// A delegate that refuses the connection is tried once more, as a node is.
    fn retry(&self) -> Retry {
        match self {
            SourceError::Ssh(e) => e.retry(),
            other => Retry::staggered_if(other.is_transient()),
        }
    }
}

/// The daemon reports registry answers as text; these phrases mean retrying cannot help.
pub fn classify_pull_message(reference: &ImageRef, message: String) -> SourceError {
    let lower = message.to_lowercase();
    let reference = reference.to_string();
    let says = |phrases: &[&str]| phrases.iter().any(|phrase| lower.contains(phrase));
    if says(&[
        "unauthorized",
        "denied",
        "authentication required",
        "no basic auth credentials",
    ]) {
        SourceError::Denied { reference, message }
    } else if says(&[
        "not found",
        "manifest unknown",
        "does not exist",
        "no matching manifest",
    ]) {
        SourceError::NotFound { reference, message }
    } else {
        SourceError::Pull { reference, message }
    }
}

/// What a daemon says about an image it holds.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub id: ImageId,
    /// `repo@sha256:...` names, so the image can later be found by digest offline.
    pub repo_digests: Vec<String>,
}

/// A daemon that can pull, inspect and save: the local Docker (bollard) or a remote delegate's
/// delegate's (over SSH).
pub trait Daemon {
    /// Where it is, for messages.
    fn name(&self) -> &str;
    fn pull(&self, reference: &ImageRef) -> impl Future<Output = Result<(), SourceError>>;
    fn inspect(&self, reference: &ImageRef)
    -> impl Future<Output = Result<Inspected, SourceError>>;
    /// `docker save` of `names` into `out`.
    fn save(
        &self,
        names: &[String],
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> impl Future<Output = Result<(), SourceError>>;
}

/// What a fetch did, per image and in total.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// In the order of the references asked for.
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

/// When to pull an image the delegate already holds (Kubespray's `download_always_pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull only what the delegate lacks: a warm run contacts no registry.
    IfMissing,
    /// Pull every time, to notice a tag that moved in the registry.
    Always,
}

/// Pull every image on `daemon` (as `pull` says), then save the ones the cache lacks with
/// one `docker save`.
pub async fn fetch(
    daemon: &impl Daemon,
    cache: &Cache,
    references: &[ImageRef],
    pull: PullPolicy,
    retry: RetryPolicy,
    seed: Option<u64>,
) -> Result<FetchReport, SourceError> {
    let inspected: Vec<Inspected> = futures::stream::iter(references)
        .map(|reference| pull_and_inspect(daemon, reference, pull, retry, seed))
        .buffered(PARALLEL_PULLS)
        .try_collect()
        .await?;
    let mut images = Vec::new();
    let mut to_save: Vec<String> = Vec::new();
    for (reference, image) in references.iter().zip(&inspected) {
        let saved = !cache.is_complete(&image.id);
        if saved {
            to_save.push(reference.to_string());
        } else {
            tracing::info!(
                "{reference}: image {} is already cached, not saving it again",
                image.id
            );
        }
        images.push(FetchedImage {
            reference: reference.familiar(),
            id: image.id,
            saved,
        });
    }
    let ingest = if to_save.is_empty() {
        None
    } else {
        Some(save_into(daemon, cache, &to_save).await?)
    };
    for (reference, image) in references.iter().zip(&inspected) {
        cache.add_names(
            &image.id,
            reference.repo_tag().as_slice(),
            &image.repo_digests,
        )?;
    }
    Ok(FetchReport {
        images,
        save_runs: usize::from(ingest.is_some()),
        ingest,
    })
}

async fn pull_and_inspect(
    daemon: &impl Daemon,
    reference: &ImageRef,
    pull: PullPolicy,
    policy: RetryPolicy,
    seed: Option<u64>,
) -> Result<Inspected, SourceError> {
    if pull == PullPolicy::IfMissing
        && let Ok(held) = daemon.inspect(reference).await
    {
        tracing::debug!(
            "{reference}: {} already holds it, not pulling",
            daemon.name()
        );
        return Ok(held);
    }
    let mut jitter = Jitter::new(seed, &reference.to_string());
    let warn = |attempt, e: &SourceError, delay: std::time::Duration| {
        tracing::warn!(
            "pull {reference} on {}: attempt {attempt}/{} failed: {e}; retrying in {}s",
            daemon.name(),
            policy.attempts,
            delay.as_secs()
        );
    };
    retry::retry(policy, &mut jitter, warn, |_| daemon.pull(reference))
        .await
        .result?;
    daemon.inspect(reference).await
}

/// `docker save` of `names`, streamed into the cache.
async fn save_into(
    daemon: &impl Daemon,
    cache: &Cache,
    names: &[String],
) -> Result<IngestReport, SourceError> {
    tracing::info!(
        "saving {} image(s) from {} into the cache: {}",
        names.len(),
        daemon.name(),
        names.join(" ")
    );
    let (reader, mut writer) = tokio::io::duplex(SAVE_PIPE);
    let pump = async {
        let saved = daemon.save(names, &mut writer).await;
        let _ = writer.shutdown().await;
        drop(writer);
        saved
    };
    let ingest = cache.ingest_async(reader, format!("docker save on {}", daemon.name()));
    let (saved, ingested) = tokio::join!(pump, ingest);
    // A failed save explains a broken ingest better than the ingest's own error does.
    saved?;
    Ok(ingested?)
}

/// The cached images `references` name, without contacting anything (`--offline`).
pub fn resolve_offline(cache: &Cache, references: &[ImageRef]) -> Result<FetchReport, CacheError> {
    let images = references
        .iter()
        .map(|reference| {
            let record = cache.require(&reference.to_string())?;
            Ok(FetchedImage {
                reference: reference.familiar(),
                id: record.id,
                saved: false,
            })
        })
        .collect::<Result<_, CacheError>>()?;
    Ok(FetchReport {
        images,
        save_runs: 0,
        ingest: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_answers_are_classified() {
        let r = ImageRef::parse("reg:5000/x:1").unwrap();
        let classify = |m: &str| classify_pull_message(&r, m.to_string());
        assert!(matches!(
            classify("manifest unknown"),
            SourceError::NotFound { .. }
        ));
        assert!(matches!(
            classify("unauthorized: login"),
            SourceError::Denied { .. }
        ));
        let refused = classify("Get https://reg:5000/v2/: connection refused");
        assert!(matches!(refused, SourceError::Pull { .. }));
        assert!(refused.is_transient());
        assert!(!classify("manifest unknown").is_transient());
    }
}
