//! One node, start to finish: connect, gather facts, decide, send, load, verify — retried as
//! a whole, so a node that comes back half-way through starts clean.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sha2::{Digest as _, Sha256};

use super::decide::{Decision, Delta, NodeImages, WantedImage, decide};
use super::fetch::Wanted;
use super::plan::{PushSettings, Target};
use super::progress::Progress;
use super::report::{HostReport, HostStatus, ImageAction, ImageResult};
use super::transfer::{self, Landing};
use crate::facts::{self, Facts, FactsError};
use crate::image::{ArchiveFormat, ArchivePlan, Cache, CacheError, DiffId, ImageId};
use crate::retry::{self, Jitter, Transient};
use crate::ssh::{Connector, Session, SshError};

pub struct NodeContext<'a> {
    pub connector: &'a Connector,
    pub cache: &'a Cache,
    pub wanted: Wanted<'a>,
    /// The remote download delegate, whose facts are only worth reading after the download.
    pub delegate: Option<&'a str>,
    pub settings: &'a PushSettings,
    pub progress: &'a Progress,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Facts(#[from] FactsError),
    #[error("{host}: docker is not installed; dropship loads images with docker")]
    NoDocker { host: String },
    #[error("{host}: docker does not answer: {detail}")]
    DockerDown { host: String, detail: String },
    #[error("{host}: docker load failed ({status}): {stderr}")]
    Load {
        host: String,
        status: String,
        stderr: String,
    },
    #[error("{host}: after the load {tag} is {found}, expected {expected}")]
    Mismatch {
        host: String,
        tag: String,
        expected: String,
        found: String,
    },
    #[error("{host}: {source}")]
    Cache { host: String, source: CacheError },
    #[error("{host}: nothing to push, the download failed: {reason}")]
    Download { host: String, reason: Arc<String> },
}

impl Transient for NodeError {
    fn is_transient(&self) -> bool {
        match self {
            NodeError::Ssh(e) => e.is_transient(),
            NodeError::Facts(FactsError::Ssh(e)) => e.is_transient(),
            // A daemon restarting or a load cut short may well work next time.
            NodeError::DockerDown { .. } | NodeError::Load { .. } => true,
            NodeError::Facts(_)
            | NodeError::NoDocker { .. }
            | NodeError::Mismatch { .. }
            | NodeError::Cache { .. }
            | NodeError::Download { .. } => false,
        }
    }
}

/// What one successful attempt found and did.
struct Outcome {
    status: HostStatus,
    images: Vec<ImageResult>,
    /// With `--check`: what would be sent; otherwise the counter says.
    would_send: u64,
    bytes_saved: u64,
    notes: Vec<String>,
}

impl Outcome {
    fn new(status: HostStatus, images: Vec<ImageResult>) -> Self {
        Outcome {
            status,
            images,
            would_send: 0,
            bytes_saved: 0,
            notes: Vec::new(),
        }
    }
}

/// What to do on one node, decided from its facts and the wanted images alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// Every wanted image, with what happens to it on this node.
    pub images: Vec<ImageResult>,
    /// The images to send, as indices into the wanted list; empty when the node is up to date.
    pub send: Vec<usize>,
    /// Layers the node holds, left out of the archive.
    pub omit: HashSet<DiffId>,
    pub format: ArchiveFormat,
}

/// The OS to name when the node is CoreOS-like (the inventory's `dropship_coreos`, else its
/// os-release), where Kubespray pushes no images.
pub fn coreos_os(target: &Target, facts: &Facts) -> Option<String> {
    if !target.coreos.unwrap_or_else(|| facts.is_coreos_like()) {
        return None;
    }
    let os = Some(&facts.os.name)
        .filter(|name| !name.is_empty())
        .unwrap_or(&facts.os.id);
    Some(if os.is_empty() {
        "CoreOS-like (inventory)".into()
    } else {
        os.clone()
    })
}

/// Which images the node lacks, which of their layers it holds, and the archive format its
/// tools read.
pub fn node_plan(facts: &Facts, wanted: &[WantedImage], delta: bool) -> NodePlan {
    let delta = if delta && accepts_delta(facts) {
        Delta::Allowed
    } else {
        Delta::Off
    };
    let (send, omit) = match decide(wanted, &NodeImages::from_facts(facts), delta) {
        Decision::UpToDate => (Vec::new(), HashSet::new()),
        Decision::Send { images, omit } => (images, omit),
    };
    let images = wanted
        .iter()
        .enumerate()
        .map(|(i, image)| ImageResult {
            reference: image.reference.familiar(),
            id: image.record.id.to_string(),
            action: if send.contains(&i) {
                ImageAction::Loaded
            } else {
                ImageAction::Present
            },
        })
        .collect();
    NodePlan {
        images,
        send,
        omit,
        format: format_for(facts),
    }
}

/// Push to one node, retrying transient failures; never fails: the report says what happened.
pub async fn push(ctx: &NodeContext<'_>, target: &Target) -> HostReport {
    let host = target.host.name();
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let mut jitter = Jitter::new(ctx.settings.seed, host);
    let on_retry = |attempt: u32, err: &NodeError, delay: std::time::Duration| {
        ctx.progress.step(
            host,
            &format!(
                "attempt {attempt}/{} failed: {err}; retrying in {}s",
                ctx.settings.retry.attempts,
                delay.as_secs()
            ),
        );
    };
    let retried = retry::retry(ctx.settings.retry, &mut jitter, on_retry, |_| {
        attempt(ctx, target, &sent)
    })
    .await;
    let wire_bytes = sent.load(Ordering::Relaxed);
    let report = |outcome: Outcome| HostReport {
        host: host.to_string(),
        status: outcome.status,
        images: outcome.images,
        bytes_sent: wire_bytes + outcome.would_send,
        bytes_saved: outcome.bytes_saved,
        attempts: retried.attempts,
        elapsed: started.elapsed(),
        notes: outcome.notes,
    };
    match retried.result {
        Ok(outcome) => report(outcome),
        Err(err) => report(Outcome::new(
            HostStatus::Failed {
                reason: err.to_string(),
            },
            Vec::new(),
        )),
    }
}

async fn attempt(
    ctx: &NodeContext<'_>,
    target: &Target,
    sent: &Arc<AtomicU64>,
) -> Result<Outcome, NodeError> {
    let host = target.host.name();
    ctx.progress.step(host, "connecting");
    let session = ctx.connector.connect(&target.host).await?;
    if ctx.delegate == Some(host) {
        // It pulls the images itself: read its facts afterwards, or they miss them.
        let _ = ctx.wanted.clone().await;
    }
    let become_ = target.host.become_.as_ref();
    let facts = facts::gather(&session, &ctx.settings.local_release_dir, become_).await?;
    let outcome = act(ctx, target, &session, &facts, sent).await;
    session.close().await;
    outcome
}

async fn act(
    ctx: &NodeContext<'_>,
    target: &Target,
    session: &Session,
    facts: &Facts,
    sent: &Arc<AtomicU64>,
) -> Result<Outcome, NodeError> {
    let host = target.host.name();
    if let Some(os) = coreos_os(target, facts) {
        return Ok(Outcome::new(HostStatus::SkippedCoreos { os }, Vec::new()));
    }
    require_docker(host, facts)?;
    let wanted = ctx
        .wanted
        .clone()
        .await
        .map_err(|reason| NodeError::Download {
            host: host.to_string(),
            reason,
        })?;
    let NodePlan {
        images,
        send: sending,
        omit,
        format,
    } = node_plan(facts, &wanted, ctx.settings.delta);
    if sending.is_empty() {
        return Ok(Outcome::new(HostStatus::UpToDate, images));
    }
    let chosen: Vec<&WantedImage> = sending.iter().map(|&i| &wanted[i]).collect();
    let ids: Vec<ImageId> = chosen.iter().map(|w| w.record.id).collect();
    let cache_error = |source| NodeError::Cache {
        host: host.to_string(),
        source,
    };
    let plan = ctx.cache.archive_plan(&ids, &omit).map_err(cache_error)?;
    let mut outcome = Outcome {
        bytes_saved: plan.saved_bytes,
        ..Outcome::new(HostStatus::Loaded, images)
    };
    if ctx.settings.check {
        outcome.would_send = wire_size(&plan, format).unwrap_or(plan.raw_bytes);
        return Ok(outcome);
    }
    let delta_used = !plan.omitted.is_empty();
    match send(ctx, target, session, &chosen, plan, format, sent).await {
        Err(NodeError::Load { stderr, .. }) if delta_used => {
            // The node did not take an archive with layers left out (its store is not what
            // its facts said): the same attempt sends everything instead.
            outcome.notes.push(format!(
                "the load without the layers it had failed ({stderr}); sent the full archive"
            ));
            outcome.bytes_saved = 0;
            let full = ctx
                .cache
                .archive_plan(&ids, &HashSet::new())
                .map_err(cache_error)?;
            send(ctx, target, session, &chosen, full, format, sent).await?;
        }
        other => other?,
    }
    Ok(outcome)
}

fn require_docker(host: &str, facts: &Facts) -> Result<(), NodeError> {
    if facts.docker_answers() {
        return Ok(());
    }
    if !facts.has_tool("docker") {
        return Err(NodeError::NoDocker {
            host: host.to_string(),
        });
    }
    let detail = facts
        .runtimes
        .iter()
        .find(|r| r.name == "docker")
        .map_or_else(|| "no answer".to_string(), |r| r.detail.clone());
    Err(NodeError::DockerDown {
        host: host.to_string(),
        detail,
    })
}

/// Docker's classic image store skips the file of a layer whose chain it has; the containerd
/// image store is not known to, so it always gets whole images.
fn accepts_delta(facts: &Facts) -> bool {
    facts
        .docker
        .as_ref()
        .is_some_and(|docker| !docker.containerd_image_store)
}

/// zstd where the node has it (layers go out exactly as cached), else gzip, else plain tar.
fn format_for(facts: &Facts) -> ArchiveFormat {
    if facts.has_tool("zstd") {
        ArchiveFormat::Zstd
    } else if facts.has_tool("gzip") {
        ArchiveFormat::Gzip
    } else {
        ArchiveFormat::Tar
    }
}

/// The exact bytes on the wire, where known before sending.
fn wire_size(plan: &ArchivePlan, format: ArchiveFormat) -> Option<u64> {
    match format {
        ArchiveFormat::Zstd => Some(plan.compressed_bytes),
        ArchiveFormat::Tar => Some(plan.raw_bytes),
        ArchiveFormat::Gzip => None,
    }
}

/// The name a kept archive gets on the node: the same content gets the same name.
fn archive_name(plan: &ArchivePlan, format: ArchiveFormat) -> String {
    let mut hasher = Sha256::new();
    for id in plan.images.iter().chain(&plan.omitted) {
        hasher.update(id.to_string().as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!("dropship-{}.{}", &digest[..16], transfer::extension(format))
}

async fn send(
    ctx: &NodeContext<'_>,
    target: &Target,
    session: &Session,
    images: &[&WantedImage],
    plan: ArchivePlan,
    format: ArchiveFormat,
    sent: &Arc<AtomicU64>,
) -> Result<(), NodeError> {
    let host = target.host.name();
    // A digest reference carries no tag: its image ID is what gets checked.
    let names: Vec<String> = images
        .iter()
        .map(|w| {
            w.reference
                .repo_tag()
                .unwrap_or_else(|| w.record.id.to_string())
        })
        .collect();
    let landing = if ctx.settings.keep_remote_cache {
        Landing::keep(&ctx.settings.local_release_dir, archive_name(&plan, format))
    } else {
        Landing::Stream
    };
    let size = wire_size(&plan, format);
    let command =
        transfer::load_command(format, &landing, size, &names, target.host.become_.as_ref());
    let _bar = ctx
        .progress
        .transfer(host, size.unwrap_or(plan.raw_bytes), sent.clone());
    let reader = ctx.cache.archive_reader(plan, format);
    let output = session
        .exec(&command)
        .stdin(reader)
        .count_sent(sent.clone())
        .run()
        .await?;
    if !output.success() {
        return Err(NodeError::Load {
            host: host.to_string(),
            status: output.status.to_string(),
            stderr: output.stderr_text(),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let found = transfer::loaded_ids(&stdout).unwrap_or_default();
    for (i, (name, image)) in names.iter().zip(images).enumerate() {
        let expected = image.record.id.to_string();
        let got = found.get(i).map_or("missing", String::as_str);
        if got != expected {
            return Err(NodeError::Mismatch {
                host: host.to_string(),
                tag: name.clone(),
                expected,
                found: got.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::DockerInfo;

    fn facts(tools: &[&str], containerd_image_store: bool) -> Facts {
        Facts {
            tools: tools.iter().map(|t| t.to_string()).collect(),
            docker: Some(DockerInfo {
                server_version: "20.10.24".into(),
                storage_driver: "overlay2".into(),
                containerd_image_store,
            }),
            ..Facts::default()
        }
    }

    fn target(coreos: Option<bool>) -> Target {
        let hop = crate::ssh::Hop::to("198.18.1.11", 22, None);
        Target {
            host: crate::ssh::Host {
                hop,
                jump: None,
                become_: None,
            },
            coreos,
        }
    }

    fn wanted(name: &str, layers: &[&str]) -> WantedImage {
        let tag = format!("registry.testbed:5000/{name}:v1");
        WantedImage {
            reference: crate::image::ImageRef::parse(&tag).unwrap(),
            record: crate::image::ImageRecord {
                id: crate::image::Digest::of(name.as_bytes()),
                repo_tags: vec![tag],
                repo_digests: vec![],
                diff_ids: layers
                    .iter()
                    .map(|l| crate::image::Digest::of(l.as_bytes()))
                    .collect(),
            },
        }
    }

    /// A node's facts listing `images` as its daemon reports them.
    fn holding(mut facts: Facts, images: &[&WantedImage]) -> Facts {
        facts.images = images
            .iter()
            .map(|w| crate::facts::NodeImage {
                id: w.record.id.to_string(),
                repo_tags: w.record.repo_tags.clone(),
                repo_digests: vec![],
                layers: w.record.diff_ids.iter().map(|d| d.to_string()).collect(),
            })
            .collect();
        facts
    }

    #[test]
    fn coreos_is_the_inventorys_word_else_the_os_release() {
        let mut flatcar = facts(&[], false);
        flatcar.os.id = "flatcar".into();
        flatcar.os.name = "Flatcar Container Linux".into();
        assert_eq!(
            coreos_os(&target(None), &flatcar).as_deref(),
            Some("Flatcar Container Linux")
        );
        assert_eq!(coreos_os(&target(Some(false)), &flatcar), None);
        assert_eq!(
            coreos_os(&target(Some(true)), &facts(&[], false)).as_deref(),
            Some("CoreOS-like (inventory)")
        );
        assert_eq!(coreos_os(&target(None), &facts(&[], false)), None);
    }

    #[test]
    fn the_node_plan_sends_what_is_missing_without_the_layers_held() {
        let app1 = wanted("app1", &["base", "a1"]);
        let app2 = wanted("app2", &["base", "a2"]);
        let all = [app1.clone(), app2.clone()];
        let plan = node_plan(&holding(facts(&["zstd"], false), &[&app1]), &all, true);
        assert_eq!(plan.send, [1]);
        assert_eq!(plan.omit, HashSet::from([app1.record.diff_ids[0]]));
        assert_eq!(plan.format, ArchiveFormat::Zstd);
        let actions: Vec<ImageAction> = plan.images.iter().map(|i| i.action).collect();
        assert_eq!(actions, [ImageAction::Present, ImageAction::Loaded]);

        let both = holding(facts(&["gzip"], false), &[&app1, &app2]);
        let plan = node_plan(&both, &all, true);
        assert!(plan.send.is_empty() && plan.omit.is_empty());

        // --no-delta, or a store that does not skip held layers: whole images.
        let plan = node_plan(&holding(facts(&[], false), &[&app1]), &all, false);
        assert!(plan.omit.is_empty() && plan.format == ArchiveFormat::Tar);
        let plan = node_plan(&holding(facts(&[], true), &[&app1]), &all, true);
        assert!(plan.omit.is_empty());
    }

    #[test]
    fn layers_are_left_out_only_for_dockers_classic_store() {
        assert!(accepts_delta(&facts(&["docker"], false)));
        assert!(!accepts_delta(&facts(&["docker"], true)));
        assert!(!accepts_delta(&Facts::default()));
    }

    #[test]
    fn the_archive_format_follows_the_nodes_decompressors() {
        assert_eq!(
            format_for(&facts(&["zstd", "gzip"], false)),
            ArchiveFormat::Zstd
        );
        assert_eq!(format_for(&facts(&["gzip"], false)), ArchiveFormat::Gzip);
        assert_eq!(format_for(&facts(&[], false)), ArchiveFormat::Tar);
    }

    #[test]
    fn a_node_without_docker_is_a_permanent_failure_and_a_silent_daemon_a_transient_one() {
        let mut missing = facts(&[], false);
        missing.docker = None;
        let err = require_docker("node1", &missing).unwrap_err();
        assert!(matches!(err, NodeError::NoDocker { .. }) && !err.is_transient());
        let mut silent = facts(&["docker"], false);
        silent.docker = None;
        let err = require_docker("node1", &silent).unwrap_err();
        assert!(matches!(err, NodeError::DockerDown { .. }) && err.is_transient());
        assert!(require_docker("node1", &facts(&["docker"], false)).is_ok());
    }
}
