//! The container runtimes dropship loads images into: Docker, containerd and CRI-O.
//!
//! A runtime answers the few questions a push asks of a node, each in its own file:
//! - what the node holds: its part of the facts script, and the parser of that part
//!   (`docker::SCRIPT` → [`DockerFacts`], `containerd::SCRIPT` → [`ContainerdFacts`],
//!   `crio::SCRIPT` → [`CrioFacts`]), all inside the one facts round trip;
//! - whether it is there and answering ([`Runtime::ready`]);
//! - which images are present and which of their layers may be left out ([`Runtime::holdings`]);
//! - which archive it loads ([`Runtime::archive_format`]);
//! - the one command that loads and verifies ([`Runtime::load_command`],
//!   [`Runtime::check_loaded`]), and what to undo when a load with layers left out fails
//!   ([`Runtime::cleanup_command`]);
//! - how a remote download delegate pulls and exports with it (`delegate`).
//!
//! Which runtime a node runs is a per-node fact: `dropship_runtime`, else Kubespray's
//! `container_manager`, else what the facts show ([`Runtime::detect`]).

pub mod containerd;
pub mod crio;
pub mod delegate;
pub mod docker;

use std::collections::HashSet;

use serde::Serialize;

pub use containerd::ContainerdFacts;
pub use crio::CrioFacts;
pub use docker::DockerFacts;

use crate::facts::Facts;
use crate::image::platform::Platform;
use crate::image::{ArchiveFormat, ArchiveLayout, ArchivePlan, DiffId, Digest, ImageId};
use crate::push::decide::WantedImage;
use crate::push::transfer::{self, Landing};
use crate::ssh::{Become, RemoteCommand, quote_words};

/// A node's container runtime, named as Kubespray's `container_manager` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
}

/// A runtime that cannot take images on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unready {
    /// Its tool is missing: retrying cannot help.
    #[error("{0}")]
    NotInstalled(String),
    /// It is installed but does not answer (a daemon restarting): worth retrying.
    #[error("{0}")]
    Down(String),
}

/// What a node must hold after a load: image `id` under each of `names`, as the archive names
/// it (its tags in full, and in an OCI layout `repo@digest` too; its ID when it has no name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub id: ImageId,
    pub names: Vec<String>,
}

impl Expected {
    /// Every image of the archive, with its names.
    pub fn from_plan(plan: &ArchivePlan) -> Vec<Expected> {
        plan.images
            .iter()
            .zip(&plan.names)
            .map(|(id, names)| Expected {
                id: *id,
                names: if names.is_empty() {
                    vec![id.to_string()]
                } else {
                    names.clone()
                },
            })
            .collect()
    }

    /// `PROGRAM image inspect` (`docker` or `podman`: the same flags) printing the image ID of
    /// every expected tag, in order; nothing to run when nothing is expected.
    fn inspect_script(program: &str, expected: &[Expected]) -> String {
        let names: Vec<&str> = Expected::inspected(expected)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if names.is_empty() {
            return String::new();
        }
        format!(
            "{program} image inspect --format '{{{{.Id}}}}' {}",
            quote_words(&names)
        )
    }

    /// (name, ID) for every tag or ID, in order: what `docker`/`podman image inspect` take
    /// (`repo@digest` names are containerd's).
    fn inspected(expected: &[Expected]) -> Vec<(&str, &ImageId)> {
        expected
            .iter()
            .flat_map(|e| {
                e.names
                    .iter()
                    .filter(|n| !n.contains('@'))
                    .map(move |n| (n.as_str(), &e.id))
            })
            .collect()
    }
}

/// A load that did not leave what it should have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("after the load {name} is {found}, expected {expected}")]
pub struct Mismatch {
    pub name: String,
    pub expected: String,
    pub found: String,
}

/// What the load command needs besides the runtime's facts.
pub struct LoadRequest<'a> {
    pub format: ArchiveFormat,
    pub landing: &'a Landing,
    /// The archive's exact size, where known before sending (a kept file is checked with it).
    pub size: Option<u64>,
    pub expected: &'a [Expected],
    /// `dropship_pin_images`: label what is loaded so that kubelet's image GC keeps it.
    pub pin: bool,
    /// The platform the images are for, where known.
    pub platform: Option<&'a Platform>,
    /// The node's own platform (the inventory's word, else its `uname -m`).
    pub node: &'a Platform,
    pub become_: Option<&'a Become>,
}

/// What a node holds in its runtime, as the decision needs it.
pub trait Holdings {
    /// Whether the node already holds the image under the name its reference gives (and,
    /// where the runtime keeps them, under its registry digest).
    fn has(&self, image: &WantedImage) -> bool;

    /// Of the layers of `images` (to be sent), those the runtime can load without: leaving
    /// them out must still give the same images. Empty when the runtime takes whole images only.
    fn held_layers(&self, images: &[&WantedImage]) -> HashSet<DiffId>;
}

impl Runtime {
    pub const ALL: [Runtime; 3] = [Runtime::Docker, Runtime::Containerd, Runtime::Crio];

    /// The name Kubespray's `container_manager` uses (and the recap shows).
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
        }
    }

    /// `docker`, `containerd` or `crio` (the values of `container_manager`).
    pub fn from_name(name: &str) -> Option<Runtime> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.name() == name.trim().to_ascii_lowercase())
    }

    /// The runtime the facts show, when the inventory does not say: containerd with its CRI
    /// plugin (what kubelet talks to), else CRI-O (its socket), else Docker (installed), else a
    /// containerd without CRI, else podman's containers-storage, else a `ctr` whose daemon is
    /// down (so that the error names it).
    pub fn detect(facts: &Facts) -> Option<Runtime> {
        let containerd = facts.containerd.as_ref();
        let crio = facts.crio.as_ref();
        if containerd.is_some_and(|c| c.answers && c.cri) {
            Some(Runtime::Containerd)
        } else if crio.is_some_and(|c| c.socket.is_some()) {
            Some(Runtime::Crio)
        } else if facts.has_tool("docker") {
            Some(Runtime::Docker)
        } else if containerd.is_some_and(|c| c.answers) {
            Some(Runtime::Containerd)
        } else if facts.has_tool("podman") {
            Some(Runtime::Crio)
        } else if containerd.is_some() {
            Some(Runtime::Containerd)
        } else {
            None
        }
    }

    /// Whether the runtime can take images now.
    pub fn ready(self, facts: &Facts) -> Result<(), Unready> {
        match self {
            Runtime::Docker => docker::ready(facts),
            Runtime::Containerd => containerd::ready(facts),
            Runtime::Crio => crio::ready(facts),
        }
    }

    /// What the node holds in this runtime. A runtime whose listing is missing holds nothing.
    pub fn holdings(self, facts: &Facts) -> Box<dyn Holdings + '_> {
        match self {
            Runtime::Docker => Box::new(docker::holdings(facts)),
            Runtime::Containerd => Box::new(containerd::holdings(facts)),
            Runtime::Crio => Box::new(crio::holdings(facts)),
        }
    }

    /// The archive layout it loads: Docker a docker-archive whose layers it can open (not zstd:
    /// 20.10 does not read it), containerd an OCI image layout (registry manifests and digests
    /// kept, layers it holds left out), podman a docker-archive with zstd layers as they are
    /// (it cannot take an OCI archive of several images, nor one with layers left out).
    pub fn archive_layout(self) -> ArchiveLayout {
        match self {
            Runtime::Docker => ArchiveLayout::Docker {
                zstd_members: false,
            },
            Runtime::Containerd => ArchiveLayout::Oci,
            Runtime::Crio => ArchiveLayout::Docker { zstd_members: true },
        }
    }

    /// The outer encoding of the archive on the wire. Docker gets zstd where the node has it
    /// (layers go out exactly as cached), else gzip, else tar; `ctr import` and `podman load`
    /// get a plain tar (containerd 1.6 refuses a compressed archive stream).
    pub fn archive_format(self, facts: &Facts) -> ArchiveFormat {
        match self {
            Runtime::Docker if facts.has_tool("zstd") => ArchiveFormat::Zstd,
            Runtime::Docker if facts.has_tool("gzip") => ArchiveFormat::Gzip,
            Runtime::Docker | Runtime::Containerd | Runtime::Crio => ArchiveFormat::Tar,
        }
    }

    /// How many images the node holds in this runtime (`dropship ping`).
    pub fn images_held(self, facts: &Facts) -> usize {
        match self {
            Runtime::Docker => facts.docker.as_ref().map_or(0, |d| d.images.len()),
            // An image has a tag and a digest name: count what they point at.
            Runtime::Containerd => {
                let store = &containerd::of(facts).store;
                let targets: HashSet<&Digest> = store.images.iter().map(|i| &i.target).collect();
                targets.len()
            }
            Runtime::Crio => facts.crio.as_ref().map_or(0, |c| c.images.len()),
        }
    }

    /// The program the load runs, for messages.
    pub fn loader(self) -> &'static str {
        match self {
            Runtime::Docker => "docker load",
            Runtime::Containerd => "ctr images import",
            Runtime::Crio => "podman load",
        }
    }

    /// The one command that receives the archive on stdin, loads it and prints, after
    /// [`transfer::VERIFY_MARK`], what [`Runtime::check_loaded`] reads.
    pub fn load_command(self, facts: &Facts, request: &LoadRequest<'_>) -> RemoteCommand {
        let (load, verify) = match self {
            Runtime::Docker => (
                docker::loader(),
                Expected::inspect_script("docker", request.expected),
            ),
            Runtime::Containerd => {
                let containerd = containerd::of(facts);
                (containerd.loader(request), containerd.verify_script())
            }
            Runtime::Crio => (
                crio::loader(),
                Expected::inspect_script("podman", request.expected),
            ),
        };
        let receive = transfer::receive(request.format, request.landing, request.size, &load);
        RemoteCommand::shell(format!(
            "set -e\n{receive}\necho '{}'\n{verify}",
            transfer::VERIFY_MARK
        ))
        .with_become(request.become_)
    }

    /// Check what the load command printed after its marker against what was expected.
    pub fn check_loaded(
        self,
        facts: &Facts,
        stdout: &str,
        expected: &[Expected],
    ) -> Result<(), Mismatch> {
        let report = transfer::after_mark(stdout).unwrap_or_default();
        match self {
            Runtime::Docker => check_ids(report, expected, |id| id.to_string()),
            Runtime::Crio => check_ids(report, expected, |id| id.hex()),
            Runtime::Containerd => {
                containerd::check_loaded(report, expected, containerd::of(facts).snapshotter())
            }
        }
    }

    /// Whether a failed load with layers left out failed for want of them, so that the full
    /// archive should follow in the same attempt. containerd names the blob it lacks (`content
    /// digest sha256:…: not found`); anything else (the daemon went away) is an ordinary failure,
    /// retried as such. Docker's words vary with the layer file it missed: any failure counts.
    pub fn lacked_left_out_layers(self, stderr: &str) -> bool {
        match self {
            Runtime::Containerd => containerd::lacks_content(stderr),
            Runtime::Docker | Runtime::Crio => true,
        }
    }

    /// What to run after a load with layers left out failed, before the full archive is sent:
    /// containerd 1.x has already created the image records (without a rootfs), which kubelet
    /// would take for present images.
    pub fn cleanup_command(
        self,
        facts: &Facts,
        expected: &[Expected],
        become_: Option<&Become>,
    ) -> Option<RemoteCommand> {
        match self {
            Runtime::Containerd => Some(
                containerd::of(facts)
                    .remove_command(expected)
                    .with_become(become_),
            ),
            Runtime::Docker | Runtime::Crio => None,
        }
    }

    /// Things worth telling about this node's runtime that do not stop the push: `images` is
    /// the platform of the images sent, `node` the node's.
    pub fn notes(
        self,
        facts: &Facts,
        pin: bool,
        images: Option<&Platform>,
        node: &Platform,
    ) -> Vec<String> {
        match self {
            Runtime::Containerd => containerd::of(facts).notes(pin, images, node),
            Runtime::Docker | Runtime::Crio if pin => vec![format!(
                "dropship_pin_images pins in containerd only: {} has no such label (CRI-O pins with pinned_images in crio.conf)",
                self.name()
            )],
            Runtime::Docker | Runtime::Crio => Vec::new(),
        }
    }
}

/// One image ID per expected tag, in order, as `docker`/`podman image inspect` print them.
fn check_ids(
    report: &str,
    expected: &[Expected],
    form: impl Fn(&ImageId) -> String,
) -> Result<(), Mismatch> {
    let found: Vec<&str> = report.split_whitespace().collect();
    for (i, (name, id)) in Expected::inspected(expected).into_iter().enumerate() {
        let got = found.get(i).copied().unwrap_or("missing");
        let expected = form(id);
        if got != expected {
            return Err(Mismatch {
                name: name.to_string(),
                expected,
                found: got.to_string(),
            });
        }
    }
    Ok(())
}

/// The node's own platform, from its `uname -m`.
pub fn node_platform(machine: &str) -> Option<Platform> {
    Platform::from_uname_machine(machine).ok()
}

/// The digest a `repo@sha256:…` name carries.
fn digest_of_name(name: &str) -> Option<Digest> {
    name.rsplit_once('@')
        .and_then(|(_, digest)| Digest::parse(digest).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verify_script_inspects_every_name_quoted() {
        let expected = Expected {
            id: crate::push::decide::testing::digest("x"),
            names: vec![
                "reg:5000/app:v1".into(),
                "it's:odd".into(),
                "reg:5000/app@sha256:1".into(),
            ],
        };
        let script = Expected::inspect_script("docker", &[expected]);
        assert_eq!(
            script,
            "docker image inspect --format '{{.Id}}' 'reg:5000/app:v1' 'it'\\''s:odd'"
        );
        assert_eq!(Expected::inspect_script("podman", &[]), "");
    }

    fn facts(tools: &[&str]) -> Facts {
        Facts {
            tools: tools.iter().map(|t| t.to_string()).collect(),
            ..Facts::default()
        }
    }

    fn containerd(answers: bool, cri: bool) -> Option<ContainerdFacts> {
        Some(ContainerdFacts {
            answers,
            cri,
            ..ContainerdFacts::default()
        })
    }

    #[test]
    fn names_are_kubesprays() {
        for runtime in Runtime::ALL {
            assert_eq!(Runtime::from_name(runtime.name()), Some(runtime));
        }
        assert_eq!(
            Runtime::from_name(" Containerd "),
            Some(Runtime::Containerd)
        );
        assert_eq!(Runtime::from_name("rkt"), None);
        assert_eq!(
            serde_json::to_value(Runtime::Crio).unwrap(),
            serde_json::json!("crio")
        );
    }

    #[test]
    fn detection_prefers_what_kubelet_talks_to() {
        // containerd with CRI beats a docker that is installed too (its own containerd).
        let mut both = facts(&["docker", "ctr"]);
        both.containerd = containerd(true, true);
        assert_eq!(Runtime::detect(&both), Some(Runtime::Containerd));
        // Docker's containerd has no CRI plugin: the node is a Docker node.
        both.containerd = containerd(true, false);
        assert_eq!(Runtime::detect(&both), Some(Runtime::Docker));
        // A CRI-O socket.
        let mut crio = facts(&["podman"]);
        crio.crio = Some(CrioFacts {
            socket: Some("/var/run/crio/crio.sock".into()),
            ..CrioFacts::default()
        });
        assert_eq!(Runtime::detect(&crio), Some(Runtime::Crio));
        // podman alone (containers-storage, no daemon).
        assert_eq!(Runtime::detect(&facts(&["podman"])), Some(Runtime::Crio));
        // ctr installed, its daemon down: containerd, so that the error says it is down.
        let mut down = facts(&["ctr"]);
        down.containerd = containerd(false, false);
        assert_eq!(Runtime::detect(&down), Some(Runtime::Containerd));
        assert_eq!(Runtime::detect(&facts(&["zstd"])), None);
    }

    #[test]
    fn docker_gets_the_best_compression_the_node_reads_the_others_a_tar() {
        assert_eq!(
            Runtime::Docker.archive_format(&facts(&["zstd", "gzip"])),
            ArchiveFormat::Zstd
        );
        assert_eq!(
            Runtime::Docker.archive_format(&facts(&["gzip"])),
            ArchiveFormat::Gzip
        );
        assert_eq!(
            Runtime::Docker.archive_format(&facts(&[])),
            ArchiveFormat::Tar
        );
        for runtime in [Runtime::Containerd, Runtime::Crio] {
            assert_eq!(
                runtime.archive_format(&facts(&["zstd", "gzip"])),
                ArchiveFormat::Tar
            );
        }
    }

    #[test]
    fn pinning_is_noted_where_the_runtime_has_no_pins() {
        let node = Platform::new("linux", "amd64", None);
        for runtime in [Runtime::Docker, Runtime::Crio] {
            let notes = runtime.notes(&facts(&[]), true, None, &node);
            assert!(notes[0].contains("containerd only"), "{notes:?}");
            assert!(runtime.notes(&facts(&[]), false, None, &node).is_empty());
        }
    }

    #[test]
    fn ids_are_checked_in_order_in_each_runtimes_form() {
        let id = Digest::of(b"config");
        let expected = [Expected {
            id,
            names: vec!["reg/app:v1".into(), "reg/app@sha256:1".into()],
        }];
        assert_eq!(
            check_ids(&id.to_string(), &expected, |i| i.to_string()),
            Ok(())
        );
        assert_eq!(check_ids(&id.hex(), &expected, |i| i.hex()), Ok(()));
        let err = check_ids("", &expected, |i| i.hex()).unwrap_err();
        assert_eq!(err.found, "missing");
    }
}
