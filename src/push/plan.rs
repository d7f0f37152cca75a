//! What a push will do, decided before anything is contacted: targets, delegate, images and
//! settings, from the inventory (Kubespray's variable names) with CLI flags on top. Pure.

//!
//! The flags come in as clap parsed them; everything after the plan reads only the plan.

use std::path::PathBuf;

use super::kubespray::{DownloadSettings, RegistrySettings, images_from_inventory};
use crate::cli::{PushArgs, SourceArg};
use crate::image::compression::zstd_level_for_gzip;
use crate::image::platform::{Platform, PlatformError};
use crate::image::source::PullPolicy;
use crate::image::{Cache, ImageRef, RefError};
use crate::inventory::host_vars::HostVars;
use crate::inventory::{Inventory, InventoryError, connection};
use crate::registry::{ConfigError, Mirrors, MirrorsError, Registry, RegistryConfig};
use crate::retry::RetryPolicy;
use crate::runtime::Runtime;
use crate::ssh::Host;

/// Where images are pulled and saved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delegate {
    /// The machine running dropship (`download_localhost`): the registries in-process, or its
    /// Docker daemon (see [`LocalSource`]).
    Localhost,
    /// An inventory host, reached over SSH like any node (Kubespray's `download_delegate`).
    Host(Box<Host>),
}

impl Delegate {
    /// The inventory name of a remote delegate.
    pub fn host_name(&self) -> Option<&str> {
        match self {
            Delegate::Host(host) => Some(host.name()),
            Delegate::Localhost => None,
        }
    }
}

/// A push target: how to reach it, and what the inventory says about it.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: Host,
    /// `dropship_coreos`; `None` lets the node's os-release decide.
    pub coreos: Option<bool>,
    /// `dropship_runtime`, else Kubespray's `container_manager`; `None` lets the facts decide.
    pub runtime: Option<Runtime>,
    /// `dropship_pin_images`: label loaded images pinned (containerd), so that kubelet's image
    /// GC keeps them.
    pub pin: bool,
    /// The platform the inventory says the host runs (`dropship_platform`, `image_arch`);
    /// `None` lets its `uname -m` decide.
    pub platform: Option<Platform>,
}

/// What every node task shares.
pub struct PushSettings {
    pub retry: RetryPolicy,
    /// `--seed`: reproducible retry jitter.
    pub seed: Option<u64>,
    pub forks: usize,
    /// `download_keep_remote_cache`: keep the archive in `local_release_dir/images/`.
    pub keep_remote_cache: bool,
    pub local_release_dir: PathBuf,
    /// Leave out layers a node has (off with `--no-delta`).
    pub delta: bool,
    /// `--check`: decide and report, send nothing.
    pub check: bool,
}

/// How the localhost delegate gets images.
#[derive(Clone)]
pub enum LocalSource {
    /// From their registries, in-process, streamed to the nodes while they download;
    /// `fallback`: what no registry has is taken from the Docker daemon next to dropship.
    Registry { registry: Registry, fallback: bool },
    /// From the Docker daemon next to dropship, for images that exist only there.
    Daemon,
}

pub struct Plan {
    pub targets: Vec<Target>,
    pub delegate: Delegate,
    /// The remote delegate's runtime, as the inventory names it (`None`: its facts decide).
    pub delegate_runtime: Option<Runtime>,
    /// With [`Delegate::Localhost`]: where images come from.
    pub local_source: LocalSource,
    pub images: Vec<ImageRef>,
    pub settings: PushSettings,
    pub pull: PullPolicy,
    /// `--offline`: the cache alone, contacting no delegate or registry.
    pub offline: bool,
    /// `--platform`: this platform for every node, instead of each node's own.
    pub platform: Option<Platform>,
    pub cache_dir: PathBuf,
    pub zstd_level: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Image(#[from] RefError),
    #[error(
        "no images to push: name them with --image REF, --images-file FILE, or the inventory variable dropship_images"
    )]
    NoImages,
    #[error(
        "the limit '{pattern}' leaves no host to push to (the bastion and local hosts are never targets)"
    )]
    NoTargets { pattern: String },
    #[error("--delegate {name}: not an inventory host; use `localhost` or a host of the inventory")]
    UnknownDelegate { name: String },
    #[error("--platform: {0}")]
    Platform(PlatformError),
    #[error("host '{host}': {name}: {source}")]
    HostPlatform {
        host: String,
        name: &'static str,
        source: PlatformError,
    },
    #[error(transparent)]
    Mirrors(#[from] MirrorsError),
    #[error(transparent)]
    Registry(#[from] ConfigError),
    #[error("dropship_image_source must be `auto`, `registry` or `docker`, got {0:?}")]
    Source(String),
}

/// What the edge resolved from ansible.cfg and the ssh config, with the flags over them.
pub struct Context<'a> {
    pub connection: &'a connection::Defaults,
    pub forks: usize,
    /// `-T`, else ansible.cfg's `timeout`, else 10 s: also the registry's connect timeout.
    pub connect_timeout: std::time::Duration,
}

/// `requested` are the images from `--image` and `--images-file`; without any, the
/// inventory's `dropship_images` list is used.
pub fn build(
    inventory: &Inventory,
    limit: Option<&str>,
    args: &PushArgs,
    requested: Vec<ImageRef>,
    context: &Context,
) -> Result<Plan, PlanError> {
    let download = DownloadSettings::from_inventory(inventory)?;
    let pattern = limit.unwrap_or("all");
    let targets = connection::targets(inventory, pattern, context.connection)?
        .into_iter()
        .map(|host| {
            let vars = HostVars::new(inventory, host.name());
            Ok(Target {
                coreos: vars.bool("dropship_coreos")?,
                runtime: runtime_of(&vars)?,
                pin: vars.bool("dropship_pin_images")?.unwrap_or(false),
                platform: target_platform(&vars)?,
                host,
            })
        })
        .collect::<Result<Vec<_>, PlanError>>()?;
    if targets.is_empty() {
        return Err(PlanError::NoTargets {
            pattern: pattern.to_string(),
        });
    }
    let requested = if requested.is_empty() {
        images_from_inventory(inventory)?
            .iter()
            .map(|text| ImageRef::parse(text))
            .collect::<Result<_, _>>()?
    } else {
        requested
    };
    let mut images: Vec<ImageRef> = Vec::new();
    for image in requested {
        if !images.contains(&image) {
            images.push(image);
        }
    }
    if images.is_empty() {
        return Err(PlanError::NoImages);
    }
    let platform = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .map_err(PlanError::Platform)?;
    let delegate = delegate(inventory, args.delegate.as_deref(), &download, context)?;
    let delegate_runtime = match delegate.host_name() {
        Some(name) => runtime_of(&HostVars::new(inventory, name))?,
        None => None,
    };
    Ok(Plan {
        targets,
        delegate,
        delegate_runtime,
        local_source: local_source(inventory, args, context.connect_timeout)?,
        images,
        settings: PushSettings {
            retry: RetryPolicy::new(
                args.retries.unwrap_or(download.retries),
                args.retry_stagger.unwrap_or(download.retry_stagger),
            ),
            seed: args.seed,
            forks: context.forks,
            keep_remote_cache: args.keep_remote_cache || download.keep_remote_cache,
            local_release_dir: download.local_release_dir.clone(),
            delta: !args.no_delta,
            check: args.check,
        },
        pull: if download.always_pull {
            PullPolicy::Always
        } else {
            PullPolicy::IfMissing
        },
        offline: args.offline,
        platform,
        cache_dir: Cache::resolve_dir(
            args.cache.cache_dir.as_deref(),
            download.cache_dir.as_deref(),
        ),
        zstd_level: args
            .zstd_level
            .unwrap_or_else(|| zstd_level_for_gzip(download.compress)),
    })
}

/// The runtime the inventory names for a host: `dropship_runtime` wins over Kubespray's
/// `container_manager`; a value that is neither `docker`, `containerd` nor `crio` is an error.
pub fn runtime_of(vars: &HostVars<'_>) -> Result<Option<Runtime>, InventoryError> {
    let Some((name, value)) = vars.first(&["dropship_runtime", "container_manager"])? else {
        return Ok(None);
    };
    match value.as_str().map(Runtime::from_name) {
        Some(Some(runtime)) => Ok(Some(runtime)),
        _ => Err(vars.error(
            name,
            format!("must be docker, containerd or crio, got {value}"),
        )),
    }
}

/// A target's own platform, when the inventory sets it: `dropship_platform` (`os/arch[/variant]`),
/// else Kubespray's `image_arch` (an architecture, Linux implied).
fn target_platform(vars: &HostVars) -> Result<Option<Platform>, PlanError> {
    let error = |name, source| PlanError::HostPlatform {
        host: vars.host().to_string(),
        name,
        source,
    };
    if let Some(text) = vars.string(&["dropship_platform"])? {
        return Platform::parse(&text)
            .map(Some)
            .map_err(|e| error("dropship_platform", e));
    }
    match vars.string(&["image_arch"])? {
        Some(arch) => Platform::parse(&format!("linux/{arch}"))
            .map(Some)
            .map_err(|e| error("image_arch", e)),
        None => Ok(None),
    }
}

/// `--source`, else `dropship_image_source`, else `auto`; and how to reach the registries.
fn local_source(
    inventory: &Inventory,
    args: &PushArgs,
    connect_timeout: std::time::Duration,
) -> Result<LocalSource, PlanError> {
    let chosen = match args.source {
        Some(source) => source,
        None => match images_source_var(inventory)?.as_deref() {
            None | Some("auto") => SourceArg::Auto,
            Some("registry") => SourceArg::Registry,
            Some("docker") => SourceArg::Docker,
            Some(other) => return Err(PlanError::Source(other.to_string())),
        },
    };
    if chosen == SourceArg::Docker {
        return Ok(LocalSource::Daemon);
    }
    let settings = RegistrySettings::from_inventory(inventory)?;
    let defaults = RegistryConfig::default();
    let config = RegistryConfig {
        plain_http: settings
            .plain_http
            .into_iter()
            .chain(args.insecure_registries.iter().cloned())
            .collect(),
        ca_files: settings
            .ca_files
            .into_iter()
            .chain(args.registry_cas.iter().cloned())
            .collect(),
        mirrors: Mirrors::from_kubespray(&settings.mirrors)?,
        connect_timeout,
        ..defaults
    };
    Ok(LocalSource::Registry {
        registry: Registry::new(config)?,
        fallback: chosen == SourceArg::Auto,
    })
}

fn images_source_var(inventory: &Inventory) -> Result<Option<String>, PlanError> {
    Ok(match super::kubespray::play_host(inventory)? {
        Some(host) => HostVars::new(inventory, &host).string(&["dropship_image_source"])?,
        None => None,
    })
}

/// `--delegate` wins; else Kubespray's rule: localhost with `download_localhost`, else the
/// first `kube_control_plane` (or `kube-master`) host, else localhost.
fn delegate(
    inventory: &Inventory,
    flag: Option<&str>,
    download: &DownloadSettings,
    context: &Context,
) -> Result<Delegate, PlanError> {
    let name = match flag {
        Some("localhost") => return Ok(Delegate::Localhost),
        Some(name) if !inventory.has_host(name) => {
            return Err(PlanError::UnknownDelegate {
                name: name.to_string(),
            });
        }
        Some(name) => name.to_string(),
        None if download.localhost => return Ok(Delegate::Localhost),
        None => match &download.delegate {
            Some(name) => name.clone(),
            None => return Ok(Delegate::Localhost),
        },
    };
    Ok(Delegate::Host(Box::new(connection::resolve(
        inventory,
        &name,
        context.connection,
    )?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testing::load_ini as inventory;

    /// `super::build` without ansible.cfg or an ssh config; forks from `-f`, else 10.
    fn build(
        inventory: &Inventory,
        limit: Option<&str>,
        args: &PushArgs,
        requested: Vec<ImageRef>,
    ) -> Result<Plan, PlanError> {
        let context = Context {
            connection: &connection::Defaults::default(),
            forks: args.connect.forks.unwrap_or(10),
            connect_timeout: std::time::Duration::from_secs(10),
        };
        super::build(inventory, limit, args, requested, &context)
    }
    use clap::Parser;

    fn args(extra: &[&str]) -> PushArgs {
        let cli = crate::cli::Cli::parse_from(["dropship", "push"].iter().chain(extra));
        match cli.command {
            crate::cli::Command::Push(args) => *args,
            _ => unreachable!(),
        }
    }

    const CLUSTER: &str = "\
[bastion]
bastion ansible_host=10.0.0.1

[kube_control_plane]
cp1 ansible_host=10.0.1.1

[kube_node]
cp1
node[1:3] dropship_coreos=false
local1 ansible_connection=local

[k8s_cluster:children]
kube_control_plane
kube_node

[all:vars]
retry_stagger=9
download_retries=2
download_keep_remote_cache=yes
";

    fn names(plan: &Plan) -> Vec<&str> {
        plan.targets.iter().map(|t| t.host.name()).collect()
    }

    fn refs(texts: &[&str]) -> Vec<ImageRef> {
        texts.iter().map(|t| ImageRef::parse(t).unwrap()).collect()
    }

    #[test]
    fn targets_leave_out_the_bastion_and_local_hosts() {
        let (_dir, inv) = inventory(CLUSTER);
        let plan = build(&inv, None, &args(&[]), refs(&["app:v1"])).unwrap();
        assert_eq!(names(&plan), ["cp1", "node1", "node2", "node3"]);
        assert_eq!(plan.targets[0].coreos, None);
        assert_eq!(plan.targets[1].coreos, Some(false));
        assert!(
            plan.targets[1].host.jump.is_some(),
            "nodes go through the bastion"
        );
    }

    #[test]
    fn the_runtime_is_dropship_runtime_else_container_manager_else_left_to_the_facts() {
        let (_dir, inv) = inventory(&format!(
            "{CLUSTER}container_manager=containerd\n\n[pinned]\nnode2 dropship_runtime=crio dropship_pin_images=yes\nnode3 container_manager=docker\n"
        ));
        let plan = build(&inv, None, &args(&[]), refs(&["app:v1"])).unwrap();
        let of = |name: &str| {
            let target = plan.targets.iter().find(|t| t.host.name() == name).unwrap();
            (target.runtime, target.pin)
        };
        assert_eq!(of("cp1"), (Some(Runtime::Containerd), false));
        assert_eq!(of("node1"), (Some(Runtime::Containerd), false));
        assert_eq!(of("node2"), (Some(Runtime::Crio), true));
        assert_eq!(of("node3"), (Some(Runtime::Docker), false));

        let (_dir, inv) = inventory(CLUSTER);
        let plan = build(&inv, None, &args(&[]), refs(&["app:v1"])).unwrap();
        assert!(plan.targets.iter().all(|t| t.runtime.is_none() && !t.pin));

        let (_dir, inv) = inventory(&format!("{CLUSTER}container_manager=rkt\n"));
        let err = build(&inv, None, &args(&[]), refs(&["app:v1"]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("container_manager") && err.contains("docker, containerd or crio"),
            "{err}"
        );
    }

    #[test]
    fn kubespray_variables_set_the_defaults_and_flags_override_them() {
        let (_dir, inv) = inventory(CLUSTER);
        let plan = build(&inv, None, &args(&[]), refs(&["app:v1"])).unwrap();
        assert_eq!(plan.settings.retry, RetryPolicy::new(2, 9));
        assert!(plan.settings.keep_remote_cache);
        assert_eq!(plan.settings.forks, 10);
        let flags = args(&[
            "--retries",
            "7",
            "--retry-stagger",
            "1",
            "-f",
            "3",
            "--no-delta",
        ]);
        let plan = build(&inv, None, &flags, refs(&["app:v1"])).unwrap();
        assert_eq!(plan.settings.retry, RetryPolicy::new(7, 1));
        assert_eq!(plan.settings.forks, 3);
        assert!(!plan.settings.delta);
        assert!(!plan.offline && plan.platform.is_none());
        let flags = args(&["--offline", "--platform", "linux/arm64"]);
        let plan = build(&inv, None, &flags, refs(&["app:v1"])).unwrap();
        assert!(plan.offline);
        assert_eq!(plan.platform, Some(Platform::parse("linux/arm64").unwrap()));
        let err = build(&inv, None, &args(&["--platform", "arm64"]), refs(&["a"]));
        assert!(matches!(err, Err(PlanError::Platform(_))));
    }

    #[test]
    fn the_delegate_follows_kubesprays_rule() {
        let (_dir, inv) = inventory(CLUSTER);
        let plan = build(&inv, None, &args(&[]), refs(&["a"])).unwrap();
        assert!(matches!(&plan.delegate, Delegate::Host(h) if h.name() == "cp1"));
        let plan = build(
            &inv,
            None,
            &args(&["--delegate", "localhost"]),
            refs(&["a"]),
        )
        .unwrap();
        assert_eq!(plan.delegate, Delegate::Localhost);
        let (_dir, inv) = inventory(&format!("{CLUSTER}download_localhost=true\n"));
        let plan = build(&inv, None, &args(&[]), refs(&["a"])).unwrap();
        assert_eq!(plan.delegate, Delegate::Localhost);
        let err = build(&inv, None, &args(&["--delegate", "nope"]), refs(&["a"]));
        assert!(matches!(err, Err(PlanError::UnknownDelegate { .. })));
    }

    #[test]
    fn images_come_from_flags_else_the_inventory_and_are_checked_early() {
        let (_dir, inv) = inventory(&format!(
            "{CLUSTER}dropship_images=['nginx:1.25', 'nginx:1.25', 'redis']\n"
        ));
        let plan = build(&inv, None, &args(&[]), Vec::new()).unwrap();
        let names: Vec<String> = plan.images.iter().map(|i| i.familiar()).collect();
        assert_eq!(names, ["nginx:1.25", "redis:latest"]);
        let plan = build(&inv, None, &args(&[]), refs(&["app:v2"])).unwrap();
        assert_eq!(plan.images.len(), 1);
        let (_dir, inv) = inventory(&format!("{CLUSTER}dropship_images=['Bad Ref']\n"));
        let err = build(&inv, None, &args(&[]), vec![]);
        assert!(matches!(err, Err(PlanError::Image(_))), "{:?}", err.err());
    }

    #[test]
    fn a_limit_that_leaves_nothing_or_names_nothing_is_an_error() {
        let (_dir, inv) = inventory(CLUSTER);
        let err = build(&inv, Some("bastion"), &args(&[]), refs(&["a"]));
        assert!(matches!(err, Err(PlanError::NoTargets { .. })));
        let err = build(&inv, Some("node9"), &args(&[]), refs(&["a"]));
        assert!(matches!(err, Err(PlanError::Inventory(_))));
        let plan = build(&inv, Some("kube_node:!node2"), &args(&[]), refs(&["a"])).unwrap();
        assert_eq!(names(&plan), ["cp1", "node1", "node3"]);
    }

    #[test]
    fn a_bad_coreos_override_names_the_host() {
        let (_dir, inv) = inventory("[kube_node]\nnode1 dropship_coreos=maybe\n");
        let err = build(&inv, None, &args(&[]), refs(&["a"])).err().unwrap();
        assert!(err.to_string().contains("node1"), "{err}");
    }
}
