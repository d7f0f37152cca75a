//! Per node: which images to send and which of their layers to leave out. Pure logic; what
//! counts as present and which layers a node can do without is its runtime's answer
//! ([`Holdings`]).

use std::collections::HashSet;

use crate::image::platform::Platform;
use crate::image::{Cache, CacheError, DiffId, Digest, ImageRecord, ImageRef, LayerBlob};
use crate::runtime::Holdings;

/// An image the push wants on every node: what the user asked for, and what the cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedImage {
    pub reference: ImageRef,
    pub record: ImageRecord,
    /// The digest of the blob each layer is sent as, base first (what a containerd node's
    /// content store is compared with); empty when not known.
    pub blobs: Vec<Digest>,
    /// The registry's manifest (or index) digest, when the cache holds that manifest: runtimes
    /// that keep digests end with `repo@digest` too.
    pub registry_digest: Option<Digest>,
    /// What the image was built for, when its record says.
    pub platform: Option<Platform>,
}

impl WantedImage {
    /// `reference` as the cache holds it in `record`: with the blob each layer is sent as, and
    /// the registry digest an OCI archive names it by.
    pub fn from_cache(
        cache: &Cache,
        reference: &ImageRef,
        record: ImageRecord,
    ) -> Result<WantedImage, CacheError> {
        let blobs = cache.layer_blobs(&record)?;
        Ok(WantedImage {
            reference: reference.clone(),
            registry_digest: registry_digest(&record, &blobs, reference),
            blobs: blobs.iter().map(|blob| blob.descriptor.digest).collect(),
            platform: record.platform.clone(),
            record,
        })
    }
}

/// The digest an OCI archive names the image by as `reference`'s `repo@digest`: the top of what
/// the registry served (its index, else its manifest), when every layer is sent as served and
/// the image was pulled under that repository (the cache's rule for naming, `index_entries`).
fn registry_digest(
    record: &ImageRecord,
    blobs: &[LayerBlob],
    reference: &ImageRef,
) -> Option<Digest> {
    record.manifest.as_ref()?;
    if !blobs.iter().all(LayerBlob::is_served) {
        return None;
    }
    let top = record.index.as_ref().or(record.manifest.as_ref())?.digest;
    let top_text = top.to_string();
    record
        .repo_digests
        .iter()
        .filter_map(|name| ImageRef::parse(name).ok())
        .any(|name| {
            name.repository() == reference.repository() && name.digest() == Some(top_text.as_str())
        })
        .then_some(top)
}

/// Whether archives may leave out layers the node holds (off with `--no-delta`).
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

pub fn decide(wanted: &[WantedImage], node: &dyn Holdings, delta: Delta) -> Decision {
    let missing: Vec<usize> = (0..wanted.len())
        .filter(|&i| !node.has(&wanted[i]))
        .collect();
    if missing.is_empty() {
        return Decision::UpToDate;
    }
    let omit = match delta {
        Delta::Off => HashSet::new(),
        Delta::Allowed => {
            let sending: Vec<&WantedImage> = missing.iter().map(|&i| &wanted[i]).collect();
            node.held_layers(&sending)
        }
    };
    Decision::Send {
        images: missing,
        omit,
    }
}

/// Images for the tests of the decision and of the runtimes.
#[cfg(test)]
pub mod testing {
    use super::*;

    pub fn digest(name: &str) -> Digest {
        Digest::of(name.as_bytes())
    }

    /// `registry.testbed:5000/NAME:v1` with config `config-NAME` and these layers (the blobs
    /// are named `blob-LAYER`).
    pub fn image(name: &str, layers: &[&str]) -> WantedImage {
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
            blobs: layers
                .iter()
                .map(|l| digest(&format!("blob-{l}")))
                .collect(),
            registry_digest: None,
            platform: Some(Platform::new("linux", "amd64", None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{digest, image};
    use super::*;

    /// Holds the images named, and leaves out every layer of theirs.
    struct Fake(Vec<WantedImage>);

    impl Holdings for Fake {
        fn has(&self, image: &WantedImage) -> bool {
            self.0.contains(image)
        }

        fn held_layers(&self, images: &[&WantedImage]) -> HashSet<DiffId> {
            let held: HashSet<DiffId> = self
                .0
                .iter()
                .flat_map(|i| i.record.diff_ids.clone())
                .collect();
            images
                .iter()
                .flat_map(|i| i.record.diff_ids.clone())
                .filter(|d| held.contains(d))
                .collect()
        }
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
        let decision = decide(&wanted, &Fake(vec![]), Delta::Allowed);
        assert_eq!(decision, send(vec![0, 1], &[]));
    }

    #[test]
    fn a_node_holding_every_image_is_up_to_date() {
        let wanted = vec![image("app1", &["base", "a1"])];
        let node = Fake(wanted.clone());
        assert_eq!(decide(&wanted, &node, Delta::Allowed), Decision::UpToDate);
    }

    #[test]
    fn only_missing_images_are_sent_without_what_the_runtime_holds() {
        let wanted = vec![
            image("app1", &["base", "a1"]),
            image("app2", &["base", "a2"]),
        ];
        let node = Fake(vec![wanted[0].clone()]);
        assert_eq!(
            decide(&wanted, &node, Delta::Allowed),
            send(vec![1], &["base"])
        );
    }

    #[test]
    fn without_delta_nothing_is_left_out() {
        let wanted = vec![image("app1", &["base", "a1"])];
        let node = Fake(vec![image("base", &["base"])]);
        assert_eq!(decide(&wanted, &node, Delta::Off), send(vec![0], &[]));
    }
}
