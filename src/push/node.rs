//! One node, start to finish: connect, gather facts, decide, send, load, verify — retried as
//! a whole, so a node that comes back half-way through starts clean.

use std::collections::HashSet;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::decide::{Decision, Delta, WantedImage, decide};
use super::fetch::Images;
use super::plan::{PushSettings, Target};
use super::progress::Progress;
use super::report::{HostReport, HostStatus, ImageAction, ImageResult, Phase};
use super::state::{Ending, NodeState};
use super::transfer::{self, Landing, LoadOutput};
use crate::facts::{self, Facts, FactsError};
use crate::image::platform::Platform;
use crate::image::{ArchiveFormat, ArchivePlan, Cache, CacheError, DiffId, ImageId};
use crate::retry::{self, Jitter, Retry, Transient};
use crate::runtime::{self, Expected, LoadRequest, Runtime, Unready};
use crate::ssh::{Connector, Session, SshError};

/// What every node task shares; `'i` is the run's images, which borrow the rest (`'a`).
pub struct NodeContext<'a, 'i> {
    pub connector: &'a Connector,
    pub cache: &'a Cache,
    pub images: &'i Images<'a>,
    /// The remote download delegate, whose facts are only worth reading after the download.
    pub delegate: Option<&'a str>,
    /// `--platform`: one platform for every node.
    pub platform: Option<&'a Platform>,
    pub settings: &'a PushSettings,
    pub progress: &'a Progress,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Facts(#[from] FactsError),
    #[error(
        "{host}: no container runtime found (docker, containerd's ctr, or podman for CRI-O); set container_manager or dropship_runtime"
    )]
    NoRuntime { host: String },
    #[error("{host}: {reason}")]
    NotInstalled { host: String, reason: String },
    #[error("{host}: {reason}")]
    RuntimeDown { host: String, reason: String },
    #[error("{host}: {loader} failed ({status}): {stderr}")]
    Load {
        host: String,
        loader: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{host}: {source}")]
    Mismatch {
        host: String,
        source: runtime::Mismatch,
    },
    #[error("{host}: {source}")]
    Cache { host: String, source: CacheError },
    #[error("{host}: nothing to push, the download failed: {reason}")]
    Download { host: String, reason: Arc<String> },
    #[error("{host}: {source}; set its platform with dropship_platform (e.g. linux/arm64)")]
    Platform {
        host: String,
        source: crate::image::platform::PlatformError,
    },
}

impl Transient for NodeError {
    fn is_transient(&self) -> bool {
        self.retry() != Retry::Never
    }

    fn retry(&self) -> Retry {
        match self {
            NodeError::Ssh(e) | NodeError::Facts(FactsError::Ssh(e)) => e.retry(),
            // A daemon restarting or a load cut short may well work next time.
            NodeError::RuntimeDown { .. } | NodeError::Load { .. } => Retry::Staggered,
            NodeError::Facts(_)
            | NodeError::NoRuntime { .. }
            | NodeError::NotInstalled { .. }
            | NodeError::Mismatch { .. }
            | NodeError::Cache { .. }
            | NodeError::Platform { .. }
            | NodeError::Download { .. } => Retry::Never,
        }
    }
}

impl NodeError {
    /// Whether the node was out of reach (its connection failed or broke), rather than
    /// reached and then failing: see [`SshError::unreachable`].
    pub fn unreachable(&self) -> bool {
        match self {
            NodeError::Ssh(e) | NodeError::Facts(FactsError::Ssh(e)) => e.unreachable(),
            _ => false,
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

/// The platform a node's images are for: `--platform`, else the inventory's word, else its
/// `uname -m`.
pub fn node_platform(
    forced: Option<&Platform>,
    target: &Target,
    facts: &Facts,
) -> Result<Platform, crate::image::platform::PlatformError> {
    match forced.or(target.platform.as_ref()) {
        Some(platform) => Ok(platform.clone()),
        None => Platform::from_uname_machine(&facts.arch),
    }
}

/// The node's runtime: the inventory's word, else what its facts show.
pub fn runtime_for(target: &Target, facts: &Facts) -> Result<Runtime, NodeError> {
    let runtime = target.runtime.or_else(|| Runtime::detect(facts));
    let host = || target.host.name().to_string();
    let runtime = runtime.ok_or_else(|| NodeError::NoRuntime { host: host() })?;
    runtime.ready(facts).map_err(|unready| match unready {
        Unready::NotInstalled(reason) => NodeError::NotInstalled {
            host: host(),
            reason,
        },
        Unready::Down(reason) => NodeError::RuntimeDown {
            host: host(),
            reason,
        },
    })?;
    Ok(runtime)
}

/// Which images the node lacks, which of their layers its runtime holds, and the archive
/// format it reads.
pub fn node_plan(facts: &Facts, runtime: Runtime, wanted: &[WantedImage], delta: bool) -> NodePlan {
    let delta = if delta { Delta::Allowed } else { Delta::Off };
    let (send, omit) = match decide(wanted, runtime.holdings(facts).as_ref(), delta) {
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
        format: runtime.archive_format(facts),
    }
}

/// Push to one node, retrying transient failures; never fails: the report says what happened
/// (read from `state`, which also tells the progress display which phase the node is in).
pub async fn push(ctx: &NodeContext<'_, '_>, target: &Target, state: &NodeState<'_>) -> HostReport {
    let host = target.host.name();
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
    let retried = retry::retry(ctx.settings.retry, &mut jitter, on_retry, |n| {
        state.begin_attempt(n);
        attempt(ctx, target, state)
    })
    .await;
    state.report(match retried.result {
        Ok(ending) => ending,
        Err(err) => {
            let reason = err.to_string();
            let status = if err.unreachable() {
                HostStatus::Unreachable { reason }
            } else {
                HostStatus::Failed { reason }
            };
            Ending::new(status, Vec::new())
        }
    })
}

async fn attempt(
    ctx: &NodeContext<'_, '_>,
    target: &Target,
    state: &NodeState<'_>,
) -> Result<Ending, NodeError> {
    let host = target.host.name();
    state.enter(Phase::Connect);
    let session = ctx.connector.connect(&target.host).await?;
    if ctx.delegate == Some(host)
        && let Some(download) = ctx.images.once()
    {
        // It pulls the images itself: read its facts afterwards, or they miss them.
        state.enter(Phase::Download);
        let _ = download.await;
    }
    state.enter(Phase::Facts);
    let become_ = target.host.become_.as_ref();
    let facts = facts::gather(&session, &ctx.settings.local_release_dir, become_).await?;
    let ending = act(ctx, target, &session, &facts, state).await;
    // Closing the session is no phase's time.
    state.close();
    session.close().await;
    ending
}

async fn act(
    ctx: &NodeContext<'_, '_>,
    target: &Target,
    session: &Session,
    facts: &Facts,
    state: &NodeState<'_>,
) -> Result<Ending, NodeError> {
    let host = target.host.name();
    if let Some(os) = coreos_os(target, facts) {
        return Ok(Ending::new(HostStatus::SkippedCoreos { os }, Vec::new()));
    }
    state.set_runtime(target.runtime.or_else(|| Runtime::detect(facts)));
    let runtime = runtime_for(target, facts)?;
    let platform =
        node_platform(ctx.platform, target, facts).map_err(|source| NodeError::Platform {
            host: host.to_string(),
            source,
        })?;
    state.enter(Phase::Download);
    let wanted =
        ctx.images
            .for_platform(&platform)
            .await
            .map_err(|reason| NodeError::Download {
                host: host.to_string(),
                reason,
            })?;
    state.enter(Phase::Decide);
    let NodePlan {
        images,
        send: sending,
        omit,
        format,
    } = node_plan(facts, runtime, &wanted, ctx.settings.delta);
    let mut ending = Ending::new(HostStatus::UpToDate, images);
    if sending.is_empty() {
        return Ok(ending);
    }
    let chosen: Vec<&WantedImage> = sending.iter().map(|&i| &wanted[i]).collect();
    let images_platform = common_platform(&chosen);
    ending.notes = runtime.notes(facts, target.pin, images_platform, &platform);
    let ids: Vec<ImageId> = chosen.iter().map(|w| w.record.id).collect();
    let cache_error = |source| NodeError::Cache {
        host: host.to_string(),
        source,
    };
    let layout = runtime.archive_layout();
    let plan = ctx
        .cache
        .archive_plan(&ids, &omit, layout, format)
        .map_err(cache_error)?;
    ending.status = HostStatus::Loaded;
    ending.bytes_saved = plan.saved_bytes;
    if ctx.settings.check {
        ending.would_send = plan.wire_bytes().unwrap_or(plan.raw_bytes);
        return Ok(ending);
    }
    let expected = Expected::from_plan(&plan);
    let node = Node {
        target,
        session,
        facts,
        runtime,
        expected: &expected,
        platform: images_platform,
        node_platform: &platform,
    };
    let delta_used = !plan.omitted.is_empty();
    match send(ctx, &node, plan, state).await {
        Err(NodeError::Load { stderr, .. })
            if delta_used && runtime.lacked_left_out_layers(&stderr) =>
        {
            // The node did not take an archive with layers left out (its store is not what
            // its facts said): what the failed load left is removed, and the same attempt
            // sends everything instead.
            if let Some(cleanup) =
                runtime.cleanup_command(facts, &expected, target.host.become_.as_ref())
            {
                session.exec(&cleanup).run().await?;
            }
            ending.notes.push(format!(
                "the load without the layers it had failed ({stderr}); sent the full archive"
            ));
            ending.bytes_saved = 0;
            state.enter(Phase::Decide);
            let full = ctx
                .cache
                .archive_plan(&ids, &HashSet::new(), layout, format)
                .map_err(cache_error)?;
            send(ctx, &node, full, state).await?;
        }
        other => other?,
    }
    Ok(ending)
}

/// The platform all of `images` are for, when they agree.
fn common_platform<'a>(images: &[&'a WantedImage]) -> Option<&'a Platform> {
    let first = images.first()?.platform.as_ref()?;
    images
        .iter()
        .all(|image| image.platform.as_ref() == Some(first))
        .then_some(first)
}

/// The name a kept archive gets on the node: the same content gets the same name.
fn archive_name(plan: &ArchivePlan) -> String {
    let mut hasher = Sha256::new();
    for id in plan.images.iter().chain(&plan.omitted) {
        hasher.update(id.to_string().as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!(
        "dropship-{}.{}",
        &digest[..16],
        transfer::extension(plan.format)
    )
}

/// One node as a transfer sees it.
struct Node<'a> {
    target: &'a Target,
    session: &'a Session,
    facts: &'a Facts,
    runtime: Runtime,
    expected: &'a [Expected],
    /// The platform of the images sent, when they share one.
    platform: Option<&'a Platform>,
    node_platform: &'a Platform,
}

/// Stream `plan` into the node's loader and check what it then holds, in one exec: the send
/// phase lasts until the node prints the verify mark, the verify phase from there.
async fn send(
    ctx: &NodeContext<'_, '_>,
    node: &Node<'_>,
    plan: ArchivePlan,
    state: &NodeState<'_>,
) -> Result<(), NodeError> {
    let host = node.target.host.name();
    let landing = if ctx.settings.keep_remote_cache {
        Landing::keep(&ctx.settings.local_release_dir, archive_name(&plan))
    } else {
        Landing::Stream
    };
    let size = plan.wire_bytes();
    let command = node.runtime.load_command(
        node.facts,
        &LoadRequest {
            format: plan.format,
            landing: &landing,
            size,
            expected: node.expected,
            pin: node.target.pin,
            platform: node.platform,
            node: node.node_platform,
            become_: node.target.host.become_.as_ref(),
        },
    );
    state.enter(Phase::Send);
    let _bar = ctx
        .progress
        .transfer(host, size.unwrap_or(plan.raw_bytes), state.sent.clone());
    let reader = ctx.cache.archive_reader(plan);
    let mut stdout = LoadOutput::default();
    let output = node
        .session
        .exec(&command)
        .stdin(reader)
        .stdout_to(&mut stdout)
        .count_sent(state.sent.clone())
        .run()
        .await?;
    let verify_started = stdout.verify_started();
    if let Some(at) = verify_started {
        state.enter_at(Phase::Verify, at);
    }
    if !output.success() {
        return Err(NodeError::Load {
            host: host.to_string(),
            loader: node.runtime.loader(),
            status: output.status.to_string(),
            stderr: output.stderr_text(),
        });
    }
    if verify_started.is_none() {
        state.enter(Phase::Verify);
    }
    node.runtime
        .check_loaded(node.facts, &stdout.text(), node.expected)
        .map_err(|source| NodeError::Mismatch {
            host: host.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::decide::testing::image;
    use crate::runtime::DockerFacts;

    fn docker_facts(tools: &[&str], containerd_image_store: bool) -> Facts {
        Facts {
            tools: tools.iter().map(|t| t.to_string()).collect(),
            docker: Some(DockerFacts {
                server_version: "20.10.24".into(),
                storage_driver: "overlay2".into(),
                containerd_image_store,
                images: Vec::new(),
            }),
            ..Facts::default()
        }
    }

    fn target(coreos: Option<bool>, runtime: Option<Runtime>) -> Target {
        let hop = crate::ssh::Hop::to("198.18.1.11", 22, None);
        Target {
            host: crate::ssh::Host {
                hop,
                jump: None,
                become_: None,
            },
            coreos,
            runtime,
            pin: false,
            platform: None,
        }
    }

    /// A Docker node's facts listing `images` as its daemon reports them.
    fn holding(mut facts: Facts, images: &[&WantedImage]) -> Facts {
        facts.docker.as_mut().unwrap().images = images
            .iter()
            .map(|w| crate::runtime::docker::DockerImage {
                id: w.record.id.to_string(),
                repo_tags: w.record.repo_tags.clone(),
                repo_digests: vec![],
                layers: w.record.diff_ids.iter().map(|d| d.to_string()).collect(),
            })
            .collect();
        facts
    }

    #[test]
    fn the_platform_is_the_flags_else_the_inventorys_else_uname() {
        let mut facts = docker_facts(&[], false);
        facts.arch = "aarch64".into();
        let arm64 = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(
            node_platform(None, &target(None, None), &facts).unwrap(),
            arm64
        );
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let mut declared = target(None, None);
        declared.platform = Some(Platform::parse("linux/arm/v7").unwrap());
        assert_eq!(
            node_platform(None, &declared, &facts).unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            node_platform(Some(&amd64), &declared, &facts).unwrap(),
            amd64
        );
        facts.arch = "mystery".into();
        assert!(node_platform(None, &target(None, None), &facts).is_err());
    }

    #[test]
    fn coreos_is_the_inventorys_word_else_the_os_release() {
        let mut flatcar = docker_facts(&[], false);
        flatcar.os.id = "flatcar".into();
        flatcar.os.name = "Flatcar Container Linux".into();
        assert_eq!(
            coreos_os(&target(None, None), &flatcar).as_deref(),
            Some("Flatcar Container Linux")
        );
        assert_eq!(coreos_os(&target(Some(false), None), &flatcar), None);
        assert_eq!(
            coreos_os(&target(Some(true), None), &docker_facts(&[], false)).as_deref(),
            Some("CoreOS-like (inventory)")
        );
        assert_eq!(
            coreos_os(&target(None, None), &docker_facts(&[], false)),
            None
        );
    }

    #[test]
    fn the_node_plan_sends_what_is_missing_without_the_layers_held() {
        let app1 = image("app1", &["base", "a1"]);
        let app2 = image("app2", &["base", "a2"]);
        let all = [app1.clone(), app2.clone()];
        let node = holding(docker_facts(&["zstd"], false), &[&app1]);
        let plan = node_plan(&node, Runtime::Docker, &all, true);
        assert_eq!(plan.send, [1]);
        assert_eq!(plan.omit, HashSet::from([app1.record.diff_ids[0]]));
        assert_eq!(plan.format, ArchiveFormat::Zstd);
        let actions: Vec<ImageAction> = plan.images.iter().map(|i| i.action).collect();
        assert_eq!(actions, [ImageAction::Present, ImageAction::Loaded]);

        let both = holding(docker_facts(&["gzip"], false), &[&app1, &app2]);
        let plan = node_plan(&both, Runtime::Docker, &all, true);
        assert!(plan.send.is_empty() && plan.omit.is_empty());

        // --no-delta, or a store that does not skip held layers: whole images.
        let node = holding(docker_facts(&[], false), &[&app1]);
        let plan = node_plan(&node, Runtime::Docker, &all, false);
        assert!(plan.omit.is_empty() && plan.format == ArchiveFormat::Tar);
        let node = holding(docker_facts(&[], true), &[&app1]);
        assert!(
            node_plan(&node, Runtime::Docker, &all, true)
                .omit
                .is_empty()
        );
        // The same facts read as another runtime's: nothing of Docker's counts there.
        let node = holding(docker_facts(&["zstd"], false), &[&app1]);
        let plan = node_plan(&node, Runtime::Crio, &all, true);
        assert_eq!(plan.send, [0, 1]);
        assert_eq!(plan.format, ArchiveFormat::Tar);
    }

    #[test]
    fn the_inventorys_runtime_wins_and_a_missing_one_is_permanent_a_silent_one_transient() {
        let docker = docker_facts(&["docker"], false);
        assert_eq!(
            runtime_for(&target(None, None), &docker).unwrap(),
            Runtime::Docker
        );
        let err = runtime_for(&target(None, Some(Runtime::Containerd)), &docker).unwrap_err();
        assert!(
            matches!(err, NodeError::NotInstalled { .. }) && !err.is_transient(),
            "{err}"
        );
        let mut silent = docker_facts(&["docker"], false);
        silent.docker = None;
        let err = runtime_for(&target(None, None), &silent).unwrap_err();
        assert!(
            matches!(err, NodeError::RuntimeDown { .. }) && err.is_transient(),
            "{err}"
        );
        let err = runtime_for(&target(None, None), &Facts::default()).unwrap_err();
        assert!(
            matches!(err, NodeError::NoRuntime { .. }) && !err.is_transient(),
            "{err}"
        );
        assert!(err.to_string().contains("container_manager"), "{err}");
    }
}
