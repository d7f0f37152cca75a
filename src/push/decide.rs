//! Per node: skip it, or which images and which of their layers to send. Pure logic.
//!
//! Layers are left out by *chain*, not by diff ID alone: Docker keys a layer by the chain of
//! diff IDs beneath it, so a node "has" a layer only when it has that exact stack. A diff ID
//! is left out of a node's archive only when, for every image in that archive that uses it,
//! the node already holds the chain up to and including it.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

/// An image the push wants on every node, as the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedImage {
    /// What the user asked for, e.g. `registry.local:5000/app:v1`.
    pub reference: String,
    /// The image ID (`sha256:` + config digest).
    pub id: String,
    /// The tag this image must carry on the node (`docker load` applies it).
    pub tag: String,
    /// Uncompressed layer digests, bottom first (`rootfs.diff_ids`).
    pub diff_ids: Vec<String>,
}

/// What a node already holds, from its facts.
#[derive(Debug, Clone, Default)]
pub struct NodeImages {
    /// Image ID → the tags it carries there.
    pub tags_by_id: HashMap<String, Vec<String>>,
    /// Chain IDs of every layer stack present.
    pub chain_ids: HashSet<String>,
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
    /// Send these images (indices into the wanted list), leaving out these diff IDs.
    Send {
        images: Vec<usize>,
        omit: HashSet<String>,
    },
}

/// The chain ID of each layer of a stack: chain(1) = diff(1), chain(n) = sha256(chain(n-1) + " " + diff(n)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match chains.last() {
            None => diff.clone(),
            Some(parent) => {
                let digest = Sha256::digest(format!("{parent} {diff}").as_bytes());
                format!("sha256:{}", hex::encode(digest))
            }
        };
        chains.push(next);
    }
    chains
}

pub fn decide(wanted: &[WantedImage], node: &NodeImages, delta: Delta) -> Decision {
    let missing: Vec<usize> = wanted
        .iter()
        .enumerate()
        .filter(|(_, image)| !is_present(image, node))
        .map(|(i, _)| i)
        .collect();
    if missing.is_empty() {
        return Decision::UpToDate;
    }
    let omit = match delta {
        Delta::Off => HashSet::new(),
        Delta::Allowed => layers_to_omit(missing.iter().map(|&i| &wanted[i]), node),
    };
    Decision::Send {
        images: missing,
        omit,
    }
}

/// Present means same image ID *and* the wanted tag: an image that is there under another
/// name still needs its tag, which a (nearly empty, with delta) load gives it.
fn is_present(image: &WantedImage, node: &NodeImages) -> bool {
    node.tags_by_id
        .get(&image.id)
        .is_some_and(|tags| tags.iter().any(|t| t == &image.tag))
}

fn layers_to_omit<'a>(
    images: impl Iterator<Item = &'a WantedImage>,
    node: &NodeImages,
) -> HashSet<String> {
    let mut held = HashSet::new();
    let mut needed = HashSet::new();
    for image in images {
        for (diff, chain) in image.diff_ids.iter().zip(chain_ids(&image.diff_ids)) {
            if node.chain_ids.contains(&chain) {
                held.insert(diff.clone());
            } else {
                needed.insert(diff.clone());
            }
        }
    }
    held.retain(|diff| !needed.contains(diff));
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(name: &str) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(name.as_bytes())))
    }

    fn image(name: &str, layers: &[&str]) -> WantedImage {
        WantedImage {
            reference: format!("{name}:v1"),
            id: digest(&format!("config-{name}")),
            tag: format!("{name}:v1"),
            diff_ids: layers.iter().map(|l| digest(l)).collect(),
        }
    }

    fn node_with(images: &[&WantedImage]) -> NodeImages {
        let mut node = NodeImages::default();
        for image in images {
            node.tags_by_id
                .insert(image.id.clone(), vec![image.tag.clone()]);
            node.chain_ids.extend(chain_ids(&image.diff_ids));
        }
        node
    }

    #[test]
    fn chain_ids_follow_dockers_definition() {
        let diffs = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
        let chains = chain_ids(&diffs);
        assert_eq!(chains[0], "sha256:aa");
        assert_eq!(chains[1], digest("sha256:aa sha256:bb"));
    }

    #[test]
    fn an_empty_node_gets_everything_whole() {
        let wanted = vec![
            image("app1", &["base", "a1"]),
            image("app2", &["base", "a2"]),
        ];
        let decision = decide(&wanted, &NodeImages::default(), Delta::Allowed);
        assert_eq!(
            decision,
            Decision::Send {
                images: vec![0, 1],
                omit: HashSet::new()
            }
        );
    }

    #[test]
    fn a_node_holding_every_image_is_up_to_date() {
        let wanted = vec![image("app1", &["base", "a1"])];
        let node = node_with(&[&wanted[0]]);
        assert_eq!(decide(&wanted, &node, Delta::Allowed), Decision::UpToDate);
    }

    #[test]
    fn a_node_with_only_the_base_gets_everything_but_the_base() {
        let base = image("base", &["base"]);
        let wanted = vec![
            image("app1", &["base", "a1"]),
            image("app2", &["base", "a2"]),
        ];
        let decision = decide(&wanted, &node_with(&[&base]), Delta::Allowed);
        assert_eq!(
            decision,
            Decision::Send {
                images: vec![0, 1],
                omit: HashSet::from([digest("base")])
            }
        );
    }

    #[test]
    fn a_version_bump_sends_only_the_changed_layer() {
        let old = image("app1", &["base", "lib", "code-v1"]);
        let mut new = image("app1", &["base", "lib", "code-v2"]);
        new.id = digest("config-app1-v2");
        let decision = decide(
            std::slice::from_ref(&new),
            &node_with(&[&old]),
            Delta::Allowed,
        );
        assert_eq!(
            decision,
            Decision::Send {
                images: vec![0],
                omit: HashSet::from([digest("base"), digest("lib")])
            }
        );
    }

    #[test]
    fn a_layer_on_a_different_stack_is_not_held() {
        // The node has "lib" on top of "other", not on top of "base": its chain differs.
        let there = image("x", &["other", "lib"]);
        let wanted = vec![image("app1", &["base", "lib"])];
        let decision = decide(&wanted, &node_with(&[&there]), Delta::Allowed);
        assert_eq!(
            decision,
            Decision::Send {
                images: vec![0],
                omit: HashSet::new()
            }
        );
    }

    #[test]
    fn a_layer_needed_by_one_image_in_the_archive_is_kept_for_all() {
        // "lib" is held under "base" but a second image needs it under "other".
        let there = image("held", &["base", "lib"]);
        let wanted = vec![
            image("app1", &["base", "lib", "a1"]),
            image("app2", &["other", "lib"]),
        ];
        let decision = decide(&wanted, &node_with(&[&there]), Delta::Allowed);
        assert_eq!(
            decision,
            Decision::Send {
                images: vec![0, 1],
                omit: HashSet::from([digest("base")])
            }
        );
    }

    #[test]
    fn same_id_under_another_tag_is_sent_for_its_tag_with_every_layer_left_out() {
        let wanted = vec![image("app1", &["base", "a1"])];
        let mut node = node_with(&[&wanted[0]]);
        node.tags_by_id
            .insert(wanted[0].id.clone(), vec!["renamed:v1".into()]);
        let decision = decide(&wanted, &node, Delta::Allowed);
        assert_eq!(
            decision,
            Decision::Send {
                images: vec![0],
                omit: wanted[0].diff_ids.iter().cloned().collect()
            }
        );
    }

    #[test]
    fn without_delta_nothing_is_left_out() {
        let base = image("base", &["base"]);
        let wanted = vec![image("app1", &["base", "a1"])];
        let decision = decide(&wanted, &node_with(&[&base]), Delta::Off);
        assert_eq!(
            decision,
            Decision::Send {
                images: vec![0],
                omit: HashSet::new()
            }
        );
    }
}
