//! CRI-O: images live in containers-storage, which `podman` writes and CRI-O reads.
//!
//! `podman load` with the archive on stdin (no `-i`: podman cannot read a pipe as a file; it
//! copies stdin to a temp file in `$TMPDIR` and removes it afterwards), a docker-archive with
//! fully qualified tags (short ones would become `localhost/…`), image IDs checked with
//! `podman image inspect`. Presence is by image ID and name; a docker-archive must carry
//! every layer file, so images go whole. docker-archives get a manifest synthesised by
//! podman: registry digests are not kept.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::transfer::Loader;
use super::{Holdings, Unready};
use crate::facts::{Facts, Sections};
use crate::image::{DiffId, Digest, ImageId};
use crate::push::decide::WantedImage;

/// Its part of the facts script: the probe, CRI-O's socket, every image in containers-storage.
pub const SCRIPT: &str = r#"
mark runtimes
have podman && probe podman podman version
mark crio
for s in /var/run/crio/crio.sock /run/crio/crio.sock; do [ -S "$s" ] && { echo "socket $s"; break; }; done
mark podman-images
have podman && limit podman images --format json 2>/dev/null
"#;

/// CRI-O's facts: its socket, and containers-storage as podman lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CrioFacts {
    /// CRI-O's socket, when the daemon runs.
    pub socket: Option<String>,
    /// Every image in containers-storage, once each.
    pub images: Vec<StoredImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredImage {
    pub id: ImageId,
    /// Fully qualified names (`registry.example:5000/app:v1`).
    pub names: Vec<String>,
}

/// CRI-O's facts, when podman is installed or CRI-O's socket exists.
pub fn parse(sections: &Sections<'_>, podman: bool) -> Result<Option<CrioFacts>, String> {
    let socket = sections
        .get("crio")
        .iter()
        .find_map(|line| line.trim().strip_prefix("socket "))
        .map(str::to_string);
    if socket.is_none() && !podman {
        return Ok(None);
    }
    let json = sections.get("podman-images").join("\n");
    Ok(Some(CrioFacts {
        socket,
        images: if json.trim().is_empty() {
            Vec::new()
        } else {
            parse_images(&json)?
        },
    }))
}

/// `podman images --format json`: one entry per name, so the same ID comes several times.
fn parse_images(json: &str) -> Result<Vec<StoredImage>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        id: String,
        #[serde(default)]
        names: Option<Vec<String>>,
    }
    let entries: Vec<Entry> =
        serde_json::from_str(json).map_err(|e| format!("podman images: {e}"))?;
    let mut images: Vec<StoredImage> = Vec::new();
    for entry in entries {
        let Ok(id) = Digest::parse(&entry.id) else {
            continue;
        };
        let names = entry.names.unwrap_or_default();
        match images.iter_mut().find(|image| image.id == id) {
            Some(image) => {
                for name in names {
                    if !image.names.contains(&name) {
                        image.names.push(name);
                    }
                }
            }
            None => images.push(StoredImage { id, names }),
        }
    }
    Ok(images)
}

pub fn ready(facts: &Facts) -> Result<(), Unready> {
    if !facts.has_tool("podman") {
        return Err(Unready::NotInstalled(
            "podman is not installed (dropship loads CRI-O's containers-storage with podman)"
                .into(),
        ));
    }
    match facts.probe("podman") {
        Some(probe) if !probe.answers => Err(Unready::Down(format!(
            "podman does not answer: {}",
            probe.detail
        ))),
        _ => Ok(()),
    }
}

/// containers-storage: image ID → names.
pub struct CrioHoldings {
    names_by_id: HashMap<ImageId, Vec<String>>,
}

pub fn holdings(facts: &Facts) -> CrioHoldings {
    let images = facts.crio.as_ref().map(|c| c.images.as_slice());
    CrioHoldings {
        names_by_id: images
            .unwrap_or_default()
            .iter()
            .map(|image| (image.id, image.names.clone()))
            .collect(),
    }
}

impl Holdings for CrioHoldings {
    /// The same image ID under the reference's name (any name for a digest reference).
    fn has(&self, image: &WantedImage) -> bool {
        let Some(names) = self.names_by_id.get(&image.record.id) else {
            return false;
        };
        let reference = &image.reference;
        reference.tag().is_none() || names.iter().any(|name| reference.matches(name))
    }

    fn held_layers(&self, _images: &[&WantedImage]) -> HashSet<DiffId> {
        HashSet::new()
    }
}

/// `podman load`: stdin, or the kept file itself (no temp copy then).
pub fn loader() -> Loader {
    Loader {
        file: Some("podman load -q -i \"$final\"".into()),
        ..Loader::stdin("podman load -q")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::decide::testing::image;

    const CAPTURED: &str = include_str!("../../tests/fixtures/runtime/podman-images.json");

    #[test]
    fn podman_lists_an_image_once_per_name_and_we_keep_it_once() {
        let images = parse_images(CAPTURED).unwrap();
        assert_eq!(images.len(), 2, "{images:?}");
        assert_eq!(
            images[0].id.hex(),
            "be37bfa136d56bc41993027fad709fc2155f5443d28f01511d5060a214de2a6f"
        );
        assert_eq!(
            images[0].names,
            [
                "registry.testbed:5000/dropship/app1:v1",
                "registry.testbed:5000/dropship/extra:x"
            ]
        );
        assert_eq!(
            images[1].names,
            ["registry.testbed:5000/dropship/multiarch:v1"]
        );
    }

    #[test]
    fn present_by_id_and_fully_qualified_name() {
        let app1 = image("dropship/app1", &["base"]);
        let mut node = CrioHoldings {
            names_by_id: HashMap::from([(
                app1.record.id,
                vec!["registry.testbed:5000/dropship/app1:v1".to_string()],
            )]),
        };
        assert!(node.has(&app1));
        assert!(node.held_layers(&[&app1]).is_empty(), "whole images only");
        // podman prefixes short names with localhost/: that is another image to kubelet.
        node.names_by_id.insert(
            app1.record.id,
            vec!["localhost/dropship/app1:v1".to_string()],
        );
        assert!(!node.has(&app1));
    }

    #[test]
    fn no_podman_and_no_socket_is_no_crio() {
        let sections = Sections::parse("@@dropship crio@@\n@@dropship podman-images@@\n");
        assert_eq!(parse(&sections, false), Ok(None));
        let with = parse(&sections, true).unwrap().unwrap();
        assert!(with.images.is_empty() && with.socket.is_none());
    }

    #[test]
    fn the_loader_streams_or_reads_the_kept_file() {
        assert_eq!(loader().stdin, "podman load -q");
        assert_eq!(
            loader().file.as_deref(),
            Some("podman load -q -i \"$final\"")
        );
    }
}
