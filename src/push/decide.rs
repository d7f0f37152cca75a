//! Per node: which images to send and which of their layers to leave out. Pure logic.

use std::collections::{HashMap, HashSet};

use crate::facts::Facts;
use crate::image::{DiffId, Digest, ImageId, ImageRecord, ImageRef, layers_to_omit};

/// An image the push wants on every node: what the user asked for, and what the cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedImage {
    pub reference: ImageRef,
    pub record: ImageRecord,
}

/// What a node already holds, from its facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeImages {
    /// Image ID → the tags it carries there.
    pub tags_by_id: HashMap<ImageId, Vec<String>>,
    /// Each image's layer diff IDs, base first: the layer chains present.
    pub chains: Vec<Vec<DiffId>>,
}

impl NodeImages {
    /// Entries the node reports in a form we cannot read are ignored: at worst a layer is sent
    /// that was not needed.
    pub fn from_facts(facts: &Facts) -> Self {
        let mut node = NodeImages::default();
        for image in &facts.images {
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
}

/// Whether the node accepts an archive with layers left out (Docker's classic image store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    Allowed,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is missing.
    UpToDate,
    /// Send these images (indices into the wanted list), leaving out these layers.
    Send {
        images: Vec<usize>,
        omit: HashSet<DiffId>,
    },
}

pub fn decide(wanted: &[WantedImage], node: &NodeImages, delta: Delta) -> Decision {
    let missing: Vec<usize> = (0..wanted.len())
        .filter(|&i| !is_present(&wanted[i], node))
        .collect();
    if missing.is_empty() {
        return Decision::UpToDate;
    }
    let omit = match delta {
        Delta::Off => HashSet::new(),
        Delta::Allowed => {
            let records: Vec<ImageRecord> =
                missing.iter().map(|&i| wanted[i].record.clone()).collect();
            layers_to_omit(&records, &node.chains)
        }
    };
    Decision::Send {
        images: missing,
        omit,
    }
}

/// Present means the same image ID *and*, for a tagged reference, that tag: an image that is
/// there under another name still needs its tag, which a (with delta, nearly empty) load gives.
pub fn is_present(image: &WantedImage, node: &NodeImages) -> bool {
    let Some(tags) = node.tags_by_id.get(&image.record.id) else {
        return false;
    };
    image.reference.repo_tag().is_none() || tags.iter().any(|t| image.reference.matches(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(name: &str) -> Digest {
        Digest::of(name.as_bytes())
    }

    fn image(name: &str, layers: &[&str]) -> WantedImage {
        let tag = format!("registry.testbed:5000/{name}:v1");
        WantedImage {
            reference: ImageRef::parse(&tag).unwrap(),
            record: ImageRecord {
                id: digest(&format!("config-{name}")),
                repo_tags: vec![tag],
                repo_digests: vec![],
                diff_ids: layers.iter().map(|l| digest(l)).collect(),
                manifest: None,
                index: None,
                platform: None,
            },
        }
    }

    fn node_with(images: &[&WantedImage]) -> NodeImages {
        let mut node = NodeImages::default();
        for image in images {
            node.tags_by_id
                .insert(image.record.id, image.record.repo_tags.clone());
            node.chains.push(image.record.diff_ids.clone());
        }
        node
    }

    fn send(images: Vec<usize>, omit: &[&str]) -> Decision {
        Decision::Send {
            images,
            omit: omit.iter().map(|l| digest(l)).collect(),
        }
    }

    #[test]
    fn an_empty_node_gets_everything_whole() {
        let wanted = vec![
            image("app1", &["base", "a1"]),
            image("app2", &["base", "a2"]),
        ];
        let decision = decide(&wanted, &NodeImages::default(), Delta::Allowed);
        assert_eq!(decision, send(vec![0, 1], &[]));
    }

    #[test]
    fn a_node_holding_every_image_is_up_to_date() {
        let wanted = vec![image("app1", &["base", "a1"])];
        let node = node_with(&[&wanted[0]]);
        assert_eq!(decide(&wanted, &node, Delta::Allowed), Decision::UpToDate);
    }

    #[test]
    fn only_missing_images_are_sent() {
        let wanted = vec![
            image("app1", &["base", "a1"]),
            image("app2", &["base", "a2"]),
        ];
        let node = node_with(&[&wanted[0]]);
        assert_eq!(
            decide(&wanted, &node, Delta::Allowed),
            send(vec![1], &["base"])
        );
    }

    #[test]
    fn a_node_with_only_the_base_gets_everything_but_the_base() {
        let base = image("base", &["base"]);
        let wanted = vec![
            image("app1", &["base", "a1"]),
            image("app2", &["base", "a2"]),
        ];
        let decision = decide(&wanted, &node_with(&[&base]), Delta::Allowed);
        assert_eq!(decision, send(vec![0, 1], &["base"]));
    }

    #[test]
    fn a_version_bump_sends_only_the_changed_layer() {
        let old = image("app1", &["base", "lib", "code-v1"]);
        let mut new = image("app1", &["base", "lib", "code-v2"]);
        new.record.id = digest("config-app1-v2");
        let decision = decide(
            std::slice::from_ref(&new),
            &node_with(&[&old]),
            Delta::Allowed,
        );
        assert_eq!(decision, send(vec![0], &["base", "lib"]));
    }

    #[test]
    fn a_layer_on_a_different_stack_is_not_held() {
        let there = image("x", &["other", "lib"]);
        let wanted = vec![image("app1", &["base", "lib"])];
        let decision = decide(&wanted, &node_with(&[&there]), Delta::Allowed);
        assert_eq!(decision, send(vec![0], &[]));
    }

    #[test]
    fn same_id_under_another_tag_is_sent_for_its_tag_with_every_layer_left_out() {
        let wanted = vec![image("app1", &["base", "a1"])];
        let mut node = node_with(&[&wanted[0]]);
        node.tags_by_id
            .insert(wanted[0].record.id, vec!["renamed:v1".into()]);
        let decision = decide(&wanted, &node, Delta::Allowed);
        assert_eq!(decision, send(vec![0], &["base", "a1"]));
    }

    #[test]
    fn a_digest_reference_is_present_by_id_alone() {
        let mut wanted = image("app1", &["base"]);
        let digest_ref = format!("registry.testbed:5000/app1@{}", digest("manifest"));
        wanted.reference = ImageRef::parse(&digest_ref).unwrap();
        let mut node = node_with(&[&wanted]);
        node.tags_by_id.insert(wanted.record.id, vec![]);
        assert!(is_present(&wanted, &node));
    }

    #[test]
    fn without_delta_nothing_is_left_out() {
        let base = image("base", &["base"]);
        let wanted = vec![image("app1", &["base", "a1"])];
        let decision = decide(&wanted, &node_with(&[&base]), Delta::Off);
        assert_eq!(decision, send(vec![0], &[]));
    }
}
