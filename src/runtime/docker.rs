//! Docker: `docker load` of a docker-archive, image IDs checked with `docker image inspect`.
//!
//! Docker 20.10's classic image store does not open the file of a layer whose chain it already
//! holds, so archives may leave those layers out; the containerd image store (Docker 23+ with
//! the containerd snapshotter) is not known to, so it always gets whole images. `docker load`
//! never records registry digests.

use std::collections::{HashMap, HashSet};

use super::{Holdings, Unready};
use crate::facts::{Facts, Sections};
use crate::image::{DiffId, Digest, ImageId, ImageRecord, layers_to_omit};
use crate::push::decide::WantedImage;

/// Its part of the facts script: the probe, `docker info`, every image with its layers.
pub const SCRIPT: &str = r#"
mark runtimes
have docker && probe docker docker version --format '{{.Server.Version}}'
mark docker-info
have docker && limit docker info --format '{"ServerVersion":{{json .ServerVersion}},"Driver":{{json .Driver}},"DriverStatus":{{json .DriverStatus}}}' 2>/dev/null
mark docker-images
if have docker; then
  ids=$(limit docker images -q --no-trunc 2>/dev/null)
  [ -n "$ids" ] && limit docker image inspect --format '[{{json .Id}},{{json .RepoTags}},{{json .RepoDigests}},{{json .RootFS.Layers}}]' $ids 2>/dev/null
fi
"#;

/// The Docker daemon's facts, when it answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DockerFacts {
    pub server_version: String,
    pub storage_driver: String,
    /// Images live in containerd's store (Docker's containerd snapshotter), not the classic one.
    pub containerd_image_store: bool,
    /// Every image the daemon holds.
    pub images: Vec<DockerImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DockerImage {
    /// `sha256:…` image ID (config digest).
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Layer diff IDs, base first.
    pub layers: Vec<String>,
}

/// The daemon's facts from its sections; `None` when it did not answer.
pub fn parse(sections: &Sections<'_>) -> Result<Option<DockerFacts>, String> {
    let Some(info) = parse_info(sections.get("docker-info")) else {
        return Ok(None);
    };
    Ok(Some(DockerFacts {
        images: parse_images(sections.get("docker-images"))?,
        ..info
    }))
}

fn parse_info(lines: &[&str]) -> Option<DockerFacts> {
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
    Some(DockerFacts {
        server_version,
        storage_driver: info.driver.unwrap_or_default(),
        containerd_image_store,
        images: Vec::new(),
    })
}

fn parse_images(lines: &[&str]) -> Result<Vec<DockerImage>, String> {
    type Row = (
        String,
        Option<Vec<String>>,
        Option<Vec<String>>,
        Option<Vec<String>>,
    );
    let mut images: Vec<DockerImage> = Vec::new();
    for line in lines {
        let (id, tags, digests, layers): Row =
            serde_json::from_str(line).map_err(|e| format!("image line {line:?}: {e}"))?;
        if images.iter().any(|i| i.id == id) {
            continue; // `docker images -q` lists an image once per tag
        }
        images.push(DockerImage {
            id,
            repo_tags: tags.unwrap_or_default(),
            repo_digests: digests.unwrap_or_default(),
            layers: layers.unwrap_or_default(),
        });
    }
    Ok(images)
}

pub fn ready(facts: &Facts) -> Result<(), Unready> {
    if facts.docker.is_some() {
        return Ok(());
    }
    if !facts.has_tool("docker") {
        return Err(Unready::NotInstalled("docker is not installed".into()));
    }
    Err(Unready::Down(format!(
        "docker does not answer: {}",
        facts.probe_detail("docker")
    )))
}

/// What the Docker daemon holds: image IDs with their tags, and the layer chains present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerHoldings {
    /// Image ID → the tags it carries there.
    pub tags_by_id: HashMap<ImageId, Vec<String>>,
    /// Each image's layer diff IDs, base first: the layer chains present.
    pub chains: Vec<Vec<DiffId>>,
    /// Whether leaving held layers out works (the classic image store).
    pub delta: bool,
}

/// Entries the daemon reports in a form we cannot read are ignored: at worst a layer is sent
/// that was not needed.
pub fn holdings(facts: &Facts) -> DockerHoldings {
    let mut node = DockerHoldings::default();
    let Some(docker) = &facts.docker else {
        return node;
    };
    node.delta = !docker.containerd_image_store;
    for image in &docker.images {
        let Ok(id) = Digest::parse(&image.id) else {
            continue;
        };
        node.tags_by_id.insert(id, image.repo_tags.clone());
        if let Ok(chain) = image.layers.iter().map(|l| Digest::parse(l)).collect() {
            node.chains.push(chain);
        }
    }
    node
}

impl Holdings for DockerHoldings {
    /// Present means the same image ID *and*, for a tagged reference, that tag: an image that
    /// is there under another name still needs its tag, which a (with delta, nearly empty)
    /// load gives.
    fn has(&self, image: &WantedImage) -> bool {
        let Some(tags) = self.tags_by_id.get(&image.record.id) else {
            return false;
        };
        let reference = &image.reference;
        reference.repo_tag().is_none() || tags.iter().any(|t| reference.matches(t))
    }

    fn held_layers(&self, images: &[&WantedImage]) -> HashSet<DiffId> {
        if !self.delta {
            return HashSet::new();
        }
        let records: Vec<ImageRecord> = images.iter().map(|w| w.record.clone()).collect();
        layers_to_omit(&records, &self.chains)
    }
}

/// `docker load`, reading the archive on stdin.
pub fn loader() -> super::transfer::Loader {
    super::transfer::Loader::stdin("docker load")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::decide::testing::{digest, image};

    fn node_with(images: &[&WantedImage]) -> DockerHoldings {
        let mut node = DockerHoldings {
            delta: true,
            ..DockerHoldings::default()
        };
        for image in images {
            node.tags_by_id
                .insert(image.record.id, image.record.repo_tags.clone());
            node.chains.push(image.record.diff_ids.clone());
        }
        node
    }

    fn omitted(names: &[&str]) -> HashSet<DiffId> {
        names.iter().map(|l| digest(l)).collect()
    }

    #[test]
    fn present_means_the_same_id_under_the_wanted_tag() {
        let app1 = image("app1", &["base", "a1"]);
        let mut node = node_with(&[&app1]);
        assert!(node.has(&app1));
        node.tags_by_id
            .insert(app1.record.id, vec!["renamed:v1".into()]);
        assert!(!node.has(&app1));
        let mut by_digest = app1.clone();
        by_digest.reference =
            crate::image::ImageRef::parse(&format!("registry.testbed:5000/app1@{}", digest("m")))
                .unwrap();
        assert!(node.has(&by_digest), "a digest reference: by ID");
        assert!(!DockerHoldings::default().has(&app1));
    }

    #[test]
    fn held_chains_are_left_out_only_by_the_classic_store() {
        let base = image("base", &["base"]);
        let app1 = image("app1", &["base", "a1"]);
        let app2 = image("app2", &["base", "a2"]);
        let node = node_with(&[&base]);
        assert_eq!(node.held_layers(&[&app1, &app2]), omitted(&["base"]));
        let containerd_store = DockerHoldings {
            delta: false,
            ..node.clone()
        };
        assert!(containerd_store.held_layers(&[&app1]).is_empty());
    }

    #[test]
    fn a_version_bump_leaves_out_all_but_the_changed_layer() {
        let old = image("app1", &["base", "lib", "code-v1"]);
        let mut new = image("app1", &["base", "lib", "code-v2"]);
        new.record.id = digest("config-app1-v2");
        assert_eq!(
            node_with(&[&old]).held_layers(&[&new]),
            omitted(&["base", "lib"])
        );
    }

    #[test]
    fn a_layer_on_a_different_stack_is_not_held() {
        let there = image("x", &["other", "lib"]);
        let app1 = image("app1", &["base", "lib"]);
        assert!(node_with(&[&there]).held_layers(&[&app1]).is_empty());
    }

    #[test]
    fn facts_without_a_daemon_hold_nothing() {
        let node = holdings(&Facts::default());
        assert!(node.tags_by_id.is_empty() && !node.delta);
    }

    #[test]
    fn containerd_image_store_is_detected() {
        let line = r#"{"ServerVersion":"27.3.1","Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}"#;
        let info = parse_info(&[line]).unwrap();
        assert!(info.containerd_image_store);
        assert_eq!(info.storage_driver, "overlayfs");
        let classic = r#"{"ServerVersion":"20.10.24","Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"]]}"#;
        assert!(!parse_info(&[classic]).unwrap().containerd_image_store);
        assert_eq!(parse_info(&[r#"{"ServerVersion":"","Driver":""}"#]), None);
    }
}
