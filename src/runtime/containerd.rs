//! containerd: `ctr -n k8s.io images import` of an archive on stdin, into the snapshotter the
//! CRI uses, checked with the same listing the facts read.
//!
//! What a node holds comes from one listing in the facts round trip: `images ls` (name →
//! target; the CRI's `sha256:<config>` references give target → config), `content ls` (the
//! blobs, and the GC labels that link an index to its manifests, a manifest to its config,
//! and a config to the snapshot it was unpacked into) and `snapshots ls` of the CRI's
//! snapshotter (committed chain IDs). A layer may be left out of an archive when its blob is
//! in the content store or its chain's snapshot is committed: the unpacker then does not read
//! it (`discard_unpacked_layers` nodes keep only the snapshots).
//!
//! containerd 1.6/1.7 import in the client (`ctr` creates the image records, then unpacks);
//! 2.x goes through the transfer service unless `--local`, which unpacks only for the
//! platforms and snapshotters of its `unpack_config` (by default the host's and overlayfs).

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::delegate::Next;
use super::transfer::Loader;
use super::{Expected, Holdings, LoadRequest, Mismatch, Unready, digest_of_name};
use crate::facts::{Facts, Sections};
use crate::image::manifest::{self, Content};
use crate::image::platform::Platform;
use crate::image::{DiffId, Digest, ImageId, ImageRef};
use crate::push::decide::WantedImage;
use crate::ssh::{RemoteCommand, quote, quote_words};

/// What containerd uses when its config names no snapshotter.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";
/// The label kubelet's image GC respects (containerd ≥ 1.6.25 / 1.7.10 report it to the CRI).
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned=pinned";
const CONTENT_MARK: &str = "@@dropship content@@";

/// Its part of the facts script. The CRI's settings are read from `containerd config dump`
/// (the daemon's own config file and its imports, as kind reads them): version 2 keeps them
/// under `plugins."io.containerd.grpc.v1.cri"`, version 3 (containerd 2.x) under
/// `plugins.'io.containerd.cri.v1.images'`. The socket is `CONTAINERD_ADDRESS`, else the
/// config's `[grpc] address` when that socket exists, else the default one.
pub const SCRIPT: &str = r#"
mark containerd-config
ctd_sock=${CONTAINERD_ADDRESS:-}
if have ctr || have containerd; then
  ctd_cfg=
  have containerd && ctd_cfg=$(limit containerd config dump 2>/dev/null | tr "'" '"' | awk '
    /^[[:space:]]*\[/ { s = $0; gsub(/^[[:space:]]*\[+|\]+[[:space:]]*$/, "", s); next }
    /^[[:space:]]*[A-Za-z_]+[[:space:]]*=/ {
      k = $0; sub(/^[[:space:]]*/, "", k); sub(/[[:space:]]*=.*$/, "", k)
      v = $0; sub(/^[^=]*=[[:space:]]*/, "", v); sub(/[[:space:]]+$/, "", v); gsub(/^"|"$/, "", v)
      cri = (s == "plugins.\"io.containerd.grpc.v1.cri\".containerd" || s == "plugins.\"io.containerd.cri.v1.images\"")
      reg = (s == "plugins.\"io.containerd.grpc.v1.cri\".registry" || s == "plugins.\"io.containerd.cri.v1.images\".registry")
      if (s == "" && k == "version") print "version " v
      else if (s == "grpc" && k == "address") print "address " v
      else if (cri && (k == "snapshotter" || k == "discard_unpacked_layers")) print k " " v
      else if (reg && k == "config_path") print "config_path " v
    }')
  printf '%s\n' "$ctd_cfg"
  ctd_addr=$(printf '%s\n' "$ctd_cfg" | sed -n 's/^address //p')
  [ -z "$ctd_sock" ] && [ -n "$ctd_addr" ] && [ -S "$ctd_addr" ] && ctd_sock=$ctd_addr
  ctd_sock=${ctd_sock:-/run/containerd/containerd.sock}
  ctd_sn=$(printf '%s\n' "$ctd_cfg" | sed -n 's/^snapshotter //p')
  ctd_sn=${ctd_sn:-overlayfs}
  echo "socket $ctd_sock"
fi
mark runtimes
ctd_up=
if [ -n "$ctd_sock" ] && [ -S "$ctd_sock" ]; then
  have ctr && probe ctr ctr -a "$ctd_sock" --connect-timeout 2s version && ctd_up=1
  have nerdctl && probe nerdctl nerdctl --address "$ctd_sock" version
else
  for t in ctr nerdctl; do have "$t" && echo "$t 1 no containerd socket at ${ctd_sock:-/run/containerd/containerd.sock}"; done
fi
if [ -n "$ctd_up" ]; then
  mark containerd-plugins
  limit ctr -a "$ctd_sock" plugins ls 2>/dev/null | awk '$2 == "cri" { print $1, $2, $NF }'
  mark containerd-images
  limit ctr -a "$ctd_sock" -n k8s.io images ls 2>/dev/null
  mark containerd-content
  limit ctr -a "$ctd_sock" -n k8s.io content ls 2>/dev/null
  mark containerd-snapshots
  limit ctr -a "$ctd_sock" -n k8s.io snapshots --snapshotter "$ctd_sn" ls 2>/dev/null
fi
"#;

/// containerd's facts, when `ctr` (or `containerd`) is installed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerdFacts {
    /// The socket `ctr` talks to.
    pub address: String,
    /// Whether the daemon answered there.
    pub answers: bool,
    /// The daemon's version when it answered (`1.6.20~ds1`, `v2.1.0`), else why not.
    pub detail: String,
    /// Whether its CRI plugin runs (what kubelet talks to).
    pub cri: bool,
    pub config: ContainerdConfig,
    pub store: Store,
}

/// The settings of `containerd config dump` that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerdConfig {
    /// The config format: 2 (containerd 1.x), 3 (2.x).
    pub version: Option<u32>,
    /// The CRI's snapshotter, where the config names one.
    pub snapshotter: Option<String>,
    pub discard_unpacked_layers: bool,
    /// The CRI's registry hosts directory (`config_path`), for pulls with `ctr`.
    pub hosts_dir: Option<String>,
}

/// What the `k8s.io` namespace holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Store {
    /// Named images (the CRI's `sha256:<config>` references are in `id_refs`).
    pub images: Vec<StoredImage>,
    /// Target → config digest, from the CRI's image-ID references.
    #[serde(skip)]
    pub id_refs: Vec<(Digest, ImageId)>,
    /// Blobs in the content store, with the links their GC labels record.
    #[serde(skip)]
    pub blobs: HashMap<Digest, Blob>,
    /// Chain IDs of the committed snapshots in the CRI's snapshotter.
    #[serde(skip)]
    pub snapshots: HashSet<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredImage {
    pub name: String,
    pub media_type: String,
    /// The manifest or index digest (the registry's, for pulled or OCI-imported images).
    pub target: Digest,
}

/// A content-store blob's GC labels, as far as they link images together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob {
    /// A manifest's config (`containerd.io/gc.ref.content.config`).
    pub config: Option<Digest>,
    /// An index's manifests (`containerd.io/gc.ref.content.m.<i>`).
    pub manifests: Vec<Digest>,
    /// Snapshotters a config was unpacked into (`containerd.io/gc.ref.snapshot.<name>`).
    pub unpacked_in: Vec<String>,
}

/// A containerd version, from `ctr version`'s server line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// `1.6.20~ds1` (Debian), `v2.0.0` (release binaries), `1.7.3-0ubuntu1`.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim().trim_start_matches('v');
        let mut numbers = text.split(|c: char| !c.is_ascii_digit()).map(str::parse);
        let major = numbers.next()?.ok()?;
        let minor = numbers.next()?.ok()?;
        let patch = numbers.next().and_then(Result::ok).unwrap_or(0);
        Some(Version {
            major,
            minor,
            patch,
        })
    }

    /// Whether the CRI reports (and kubelet's GC respects) a pinned label added to an image
    /// that exists: containerd PR #9338, in 1.6.25, 1.7.10 and 2.0.
    pub fn honours_pin(self) -> bool {
        match (self.major, self.minor) {
            (1, 6) => self.patch >= 25,
            (1, 7) => self.patch >= 10,
            (major, _) => major >= 2,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// containerd's facts from its sections; `None` when neither `ctr` nor `containerd` is there.
pub fn parse(
    sections: &Sections<'_>,
    probe: Option<&crate::facts::Probe>,
) -> Option<ContainerdFacts> {
    let mut facts = ContainerdFacts::default();
    let mut socket = None;
    for line in sections.get("containerd-config") {
        let (key, value) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        let value = value.trim();
        match key {
            "socket" => socket = Some(value.to_string()),
            "version" => facts.config.version = value.parse().ok(),
            "snapshotter" if !value.is_empty() => {
                facts.config.snapshotter = Some(value.to_string())
            }
            "discard_unpacked_layers" => facts.config.discard_unpacked_layers = value == "true",
            // The CRI reads a list (`a:b`); `ctr --hosts-dir` takes one directory.
            "config_path" => {
                facts.config.hosts_dir = value
                    .split(':')
                    .find(|dir| !dir.is_empty())
                    .map(str::to_string)
            }
            _ => {}
        }
    }
    facts.address = socket?;
    if let Some(probe) = probe {
        facts.answers = probe.answers;
        facts.detail = probe.detail.clone();
    }
    facts.cri = sections.get("containerd-plugins").iter().any(|line| {
        line.split_whitespace().collect::<Vec<_>>() == ["io.containerd.grpc.v1", "cri", "ok"]
    });
    facts.store = Store::parse(
        sections.get("containerd-images"),
        sections.get("containerd-content"),
        sections.get("containerd-snapshots"),
    );
    Some(facts)
}

impl Store {
    /// From `ctr images ls`, `ctr content ls` and `ctr snapshots ls` as 1.6 to 2.x print them
    /// (no `--format` there): rows we cannot read are skipped.
    pub fn parse(images: &[&str], content: &[&str], snapshots: &[&str]) -> Store {
        let mut store = Store::default();
        // REF TYPE DIGEST SIZE PLATFORMS LABELS; SIZE holds a space ("2.5 MiB").
        for line in images {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, media_type, target, ..] = fields[..] else {
                continue;
            };
            let Ok(target) = Digest::parse(target) else {
                continue; // the header
            };
            match Digest::parse(name) {
                Ok(config) if name.starts_with("sha256:") => store.id_refs.push((target, config)),
                _ => store.images.push(StoredImage {
                    name: name.to_string(),
                    media_type: media_type.to_string(),
                    target,
                }),
            }
        }
        // DIGEST SIZE AGE LABELS; AGE holds spaces ("2 minutes"), LABELS none.
        for line in content {
            let mut fields = line.split_whitespace();
            let Some(Ok(digest)) = fields.next().map(Digest::parse) else {
                continue;
            };
            let labels = fields.next_back().filter(|l| l.contains('='));
            store
                .blobs
                .insert(digest, Blob::from_labels(labels.unwrap_or("")));
        }
        // KEY PARENT KIND; PARENT is empty for a base layer.
        for line in snapshots {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.last() == Some(&"Committed")
                && let Some(Ok(key)) = fields.first().map(|k| Digest::parse(k))
            {
                store.snapshots.insert(key);
            }
        }
        store
    }

    /// The images named `name` (compared as references: `docker.io/library/x` is `x`).
    fn named(&self, reference: &ImageRef) -> Vec<&StoredImage> {
        self.images
            .iter()
            .filter(|image| reference.matches(&image.name))
            .collect()
    }

    /// The configs a target leads to: its own (a manifest), or its manifests' (an index, of
    /// which only the node's platforms are in the store), and the CRI's ID references.
    pub fn configs(&self, target: &Digest) -> HashSet<ImageId> {
        let mut configs: HashSet<ImageId> = self
            .id_refs
            .iter()
            .filter(|(t, _)| t == target)
            .map(|(_, config)| *config)
            .collect();
        if let Some(blob) = self.blobs.get(target) {
            configs.extend(blob.config);
            for manifest in &blob.manifests {
                configs.extend(self.blobs.get(manifest).and_then(|m| m.config));
            }
        }
        configs
    }

    /// Whether an image with this config was unpacked into `snapshotter`.
    pub fn unpacked(&self, config: &ImageId, snapshotter: &str) -> bool {
        self.blobs
            .get(config)
            .is_some_and(|blob| blob.unpacked_in.iter().any(|s| s == snapshotter))
    }
}

impl Blob {
    fn from_labels(labels: &str) -> Blob {
        let mut blob = Blob::default();
        for label in labels.split(',') {
            let Some((key, value)) = label.split_once('=') else {
                continue;
            };
            let Some(gc) = key.strip_prefix("containerd.io/gc.ref.") else {
                continue;
            };
            if let Some(snapshotter) = gc.strip_prefix("snapshot.") {
                blob.unpacked_in.push(snapshotter.to_string());
            } else if let Ok(digest) = Digest::parse(value) {
                if gc == "content.config" {
                    blob.config = Some(digest);
                } else if gc.starts_with("content.m.") {
                    blob.manifests.push(digest);
                }
            }
        }
        blob
    }
}

/// The snapshot key of layer `i` of an image: its chain ID (OCI image spec: the diff ID of
/// the base, then `sha256(parent + " " + diff_id)`).
pub fn chain_ids(diff_ids: &[DiffId]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => *diff_id,
            Some(parent) => {
                Digest::from_bytes(Sha256::digest(format!("{parent} {diff_id}").as_bytes()).into())
            }
        };
        chain.push(next);
    }
    chain
}

pub fn ready(facts: &Facts) -> Result<(), Unready> {
    let Some(containerd) = &facts.containerd else {
        return Err(Unready::NotInstalled(
            "containerd's ctr is not installed".into(),
        ));
    };
    if !facts.has_tool("ctr") {
        return Err(Unready::NotInstalled(
            "ctr is not installed (dropship imports into containerd with ctr)".into(),
        ));
    }
    if containerd.answers {
        Ok(())
    } else {
        Err(Unready::Down(format!(
            "containerd does not answer at {}: {}",
            containerd.address, containerd.detail
        )))
    }
}

/// What the `k8s.io` namespace holds, and the layers the CRI's snapshotter has.
pub struct ContainerdHoldings<'a> {
    store: &'a Store,
}

pub fn holdings(facts: &Facts) -> ContainerdHoldings<'_> {
    ContainerdHoldings {
        store: &of(facts).store,
    }
}

/// The node's containerd facts; a node without any (which [`ready`] refuses) reads as one
/// holding nothing.
pub fn of(facts: &Facts) -> &ContainerdFacts {
    static NONE: std::sync::OnceLock<ContainerdFacts> = std::sync::OnceLock::new();
    facts
        .containerd
        .as_ref()
        .unwrap_or_else(|| NONE.get_or_init(ContainerdFacts::default))
}

impl Holdings for ContainerdHoldings<'_> {
    /// Present means: the reference's name leads to the same config, and, where the cache
    /// knows the image's registry digest, `repo@digest` exists too (so that a pod naming the
    /// digest starts without a pull). A name that is missing costs a nearly empty archive.
    fn has(&self, image: &WantedImage) -> bool {
        let leads_to_config =
            |held: &StoredImage| self.store.configs(&held.target).contains(&image.record.id);
        // A digest reference is its own digest name.
        let named = self
            .store
            .named(&image.reference)
            .into_iter()
            .any(leads_to_config);
        named
            && registry_digest_name(image).is_none_or(|name| {
                ImageRef::parse(&name).is_ok_and(|by_digest| {
                    self.store
                        .named(&by_digest)
                        .into_iter()
                        .any(leads_to_config)
                })
            })
    }

    fn held_layers(&self, images: &[&WantedImage]) -> HashSet<DiffId> {
        let mut held = HashSet::new();
        let mut needed = HashSet::new();
        for image in images {
            let diff_ids = &image.record.diff_ids;
            let chains = chain_ids(diff_ids);
            for (i, diff_id) in diff_ids.iter().enumerate() {
                let blob_held = image
                    .blobs
                    .get(i)
                    .is_some_and(|blob| self.store.blobs.contains_key(blob));
                if blob_held || self.store.snapshots.contains(&chains[i]) {
                    held.insert(*diff_id);
                } else {
                    needed.insert(*diff_id);
                }
            }
        }
        held.retain(|diff_id| !needed.contains(diff_id));
        held
    }
}

/// `repo@sha256:…` of the registry's manifest (or index) an OCI archive names `image` by.
fn registry_digest_name(image: &WantedImage) -> Option<String> {
    let digest = image.registry_digest?;
    Some(format!("{}@{digest}", image.reference.repository()))
}

impl ContainerdFacts {
    fn version(&self) -> Option<Version> {
        Version::parse(&self.detail).filter(|_| self.answers)
    }

    fn is_v2(&self) -> bool {
        self.version().is_some_and(|v| v.major >= 2)
    }

    /// The CRI's snapshotter.
    pub fn snapshotter(&self) -> &str {
        self.config
            .snapshotter
            .as_deref()
            .unwrap_or(DEFAULT_SNAPSHOTTER)
    }

    /// `ctr` on this node's socket, in the CRI's namespace.
    pub(super) fn ctr(&self) -> String {
        format!("ctr -a {} -n k8s.io", quote(&self.address))
    }

    /// The arguments of `ctr images import` for images of `platform` on a node whose own
    /// platform is `node`. No `--all-platforms`: the archive holds one platform, and an index
    /// naming absent ones would fail (kind#3795). On 2.x the transfer service unpacks only for
    /// its `unpack_config` (the host platform and overlayfs by default): anything else goes
    /// through `--local`, as 1.x always does.
    pub fn import_args(
        &self,
        platform: &Platform,
        node: Option<&Platform>,
        pin: bool,
    ) -> Vec<String> {
        let mut args: Vec<String> = vec!["images".into(), "import".into()];
        let host_platform = node.is_some_and(|node| node.normalized() == platform.normalized());
        if self.is_v2() && (self.snapshotter() != DEFAULT_SNAPSHOTTER || !host_platform) {
            args.push("--local".into());
        }
        args.extend(["--platform".into(), platform.to_string()]);
        args.extend(["--snapshotter".into(), self.snapshotter().to_string()]);
        if pin && self.is_v2() {
            args.extend(["--label".into(), PINNED_LABEL.into()]);
        }
        args.push("-".into());
        args
    }

    /// The import, with 1.x's pin as a second command (1.6/1.7 have no `--label` on import).
    pub fn loader(&self, request: &LoadRequest<'_>) -> Loader {
        let platform = request.platform.unwrap_or(request.node);
        let import = format!(
            "{} {}",
            self.ctr(),
            quote_words(&self.import_args(platform, Some(request.node), request.pin))
        );
        let after = (request.pin && !self.is_v2()).then(|| {
            format!(
                "for n in {}; do {} images label \"$n\" {PINNED_LABEL} >/dev/null; done",
                quote_words(&loaded_names(request.expected)),
                self.ctr()
            )
        });
        Loader {
            stdin: import,
            file: None,
            after,
        }
    }

    /// The listing the check reads: the same two the facts read.
    pub fn verify_script(&self) -> String {
        format!(
            "{ctr} images ls\necho '{CONTENT_MARK}'\n{ctr} content ls",
            ctr = self.ctr()
        )
    }

    /// Removes the image records a failed import left (1.x creates them before unpacking).
    pub fn remove_command(&self, expected: &[Expected]) -> RemoteCommand {
        RemoteCommand::shell(format!(
            "{} images rm {} >/dev/null 2>&1 || true",
            self.ctr(),
            quote_words(&loaded_names(expected))
        ))
    }

    pub fn notes(&self, pin: bool, images: Option<&Platform>, node: &Platform) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.cri {
            notes.push(
                "containerd's CRI plugin is not running: kubelet will not see the images".into(),
            );
        }
        if pin && let Some(version) = self.version().filter(|v| !v.honours_pin()) {
            notes.push(format!(
                "images are labelled pinned, but containerd {version} does not report pins to kubelet (1.6.25, 1.7.10 or 2.0 do)"
            ));
        }
        if let Some(platform) = images
            && node.rank(platform).is_none()
        {
            notes.push(format!(
                "the node says it is {node}, the images are {platform}: kubelet will not use them"
            ));
        }
        notes
    }
}

/// A manifest's config, or an index's manifest for `platform` (as containerd picks it): what
/// `ctr content get` printed.
pub fn config_or_manifest(bytes: &[u8], platform: &Platform) -> Result<Next, String> {
    let parsed = manifest::parse(None, bytes.to_vec().into()).map_err(|e| e.to_string())?;
    match parsed.content {
        Content::Image(image) => Ok(Next::Config(image.config.digest)),
        Content::Index(index) => index
            .select(platform)
            .map(|entry| Next::Manifest(entry.digest))
            .ok_or_else(|| {
                format!(
                    "the index has no manifest for {platform} (only {})",
                    index.platforms().join(", ")
                )
            }),
    }
}

/// Whether ctr's error is a blob missing from the content store (as the 1.x client and the
/// 2.x transfer service word it).
pub fn lacks_content(stderr: &str) -> bool {
    static MISSING: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    MISSING
        .get_or_init(|| {
            regex::Regex::new(r"content digest sha256:[0-9a-f]{64}: not found").unwrap()
        })
        .is_match(stderr)
}

/// Every name a load creates (not the IDs that stand for unnamed images).
fn loaded_names(expected: &[Expected]) -> Vec<String> {
    expected
        .iter()
        .flat_map(|e| &e.names)
        .filter(|name| Digest::parse(name).is_err())
        .cloned()
        .collect()
}

/// Reads what [`ContainerdFacts::verify_script`] printed: every expected tag leads to the
/// expected config, unpacked into the CRI's snapshotter; every digest name points at its
/// digest.
pub fn check_loaded(
    report: &str,
    expected: &[Expected],
    snapshotter: &str,
) -> Result<(), Mismatch> {
    let (images, content) = report.split_once(CONTENT_MARK).unwrap_or((report, ""));
    let images: Vec<&str> = images.lines().collect();
    let content: Vec<&str> = content.lines().collect();
    let store = Store::parse(&images, &content, &[]);
    for want in expected {
        for name in &want.names {
            check_name(&store, name, &want.id, snapshotter)?;
        }
    }
    Ok(())
}

fn check_name(store: &Store, name: &str, id: &ImageId, snapshotter: &str) -> Result<(), Mismatch> {
    let mismatch = |expected: String, found: String| Mismatch {
        name: name.to_string(),
        expected,
        found,
    };
    if let Some(digest) = digest_of_name(name) {
        let held = store.images.iter().find(|image| image.name == name);
        return match held {
            Some(image) if image.target == digest => Ok(()),
            _ => Err(mismatch(
                digest.to_string(),
                held.map_or("missing".into(), |i| i.target.to_string()),
            )),
        };
    }
    let candidates: Vec<&StoredImage> = match ImageRef::parse(name) {
        Ok(reference) if Digest::parse(name).is_err() => store.named(&reference),
        _ => store.images.iter().collect(), // an image ID: any name will do
    };
    let Some(image) = candidates
        .iter()
        .find(|image| store.configs(&image.target).contains(id))
    else {
        let found = candidates
            .iter()
            .flat_map(|image| store.configs(&image.target))
            .map(|config| config.to_string())
            .next()
            .unwrap_or_else(|| "missing".to_string());
        return Err(mismatch(id.to_string(), found));
    };
    if !store.unpacked(id, snapshotter) {
        return Err(mismatch(
            id.to_string(),
            format!(
                "{} but not unpacked into the {snapshotter} snapshotter",
                image.target
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
