//! What happened on each host: the data of the recap and its JSON twin (`--json`), whose shape
//! is documented in docs/json.md and versioned by [`SCHEMA_VERSION`].

use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use crate::runtime::Runtime;
use crate::shutdown::Signal;

/// The version of the `--json` document: raised when a field changes meaning or goes away
/// (new fields may appear without it).
pub const SCHEMA_VERSION: u32 = 1;

/// How a host ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum HostStatus {
    /// At least one image was loaded (or, with `--check`, would be).
    Loaded,
    /// Every image was already there with the same image ID.
    UpToDate,
    /// CoreOS / Flatcar (or forced by an inventory variable): images are not pushed there.
    SkippedCoreos { os: String },
    /// Reached, then something failed (a load, a check, the download it waited for).
    Failed { reason: String },
    /// Not reached, or the connection broke (Ansible's UNREACHABLE; see
    /// `SshError::unreachable`).
    Unreachable { reason: String },
    /// The run was stopped by a signal before this host finished.
    Interrupted { reason: String },
}

impl HostStatus {
    /// The status as one word, as the JSON's `status` field spells it.
    pub fn name(&self) -> &'static str {
        match self {
            HostStatus::Loaded => "loaded",
            HostStatus::UpToDate => "up_to_date",
            HostStatus::SkippedCoreos { .. } => "skipped_coreos",
            HostStatus::Failed { .. } => "failed",
            HostStatus::Unreachable { .. } => "unreachable",
            HostStatus::Interrupted { .. } => "interrupted",
        }
    }

    /// Why the host did not finish well; `None` when it did.
    pub fn reason(&self) -> Option<&str> {
        match self {
            HostStatus::Failed { reason }
            | HostStatus::Unreachable { reason }
            | HostStatus::Interrupted { reason } => Some(reason),
            HostStatus::Loaded | HostStatus::UpToDate | HostStatus::SkippedCoreos { .. } => None,
        }
    }
}

/// The steps of one node's push, in order. The JSON names the one a host stopped in, and
/// how long each took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// TCP, the bastion's tunnel, the SSH handshake and authentication.
    Connect,
    /// The facts round trip, and what they say (CoreOS, runtime, platform).
    Facts,
    /// Waiting for the images of its platform (the download).
    Download,
    /// What it lacks, and the archive of exactly that.
    Decide,
    /// The archive streamed into the runtime's loader, and the load.
    Send,
    /// What the node holds afterwards, checked against the cache.
    Verify,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Connect,
        Phase::Facts,
        Phase::Download,
        Phase::Decide,
        Phase::Send,
        Phase::Verify,
    ];

    /// As the JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Facts => "facts",
            Phase::Download => "download",
            Phase::Decide => "decide",
            Phase::Send => "send",
            Phase::Verify => "verify",
        }
    }

    /// As people read it (the send is the load too: one stream into the loader).
    pub fn label(self) -> &'static str {
        match self {
            Phase::Send => "send+load",
            other => other.name(),
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Time spent in each phase of a host's last attempt (a phase entered twice adds up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timings([Option<Duration>; Phase::ALL.len()]);

impl Timings {
    pub fn add(&mut self, phase: Phase, took: Duration) {
        let slot = &mut self.0[phase as usize];
        *slot = Some(slot.unwrap_or_default() + took);
    }

    pub fn get(&self, phase: Phase) -> Option<Duration> {
        self.0[phase as usize]
    }

    /// The phases that ran, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Phase, Duration)> + '_ {
        Phase::ALL
            .into_iter()
            .filter_map(|phase| self.get(phase).map(|took| (phase, took)))
    }

    /// `connect 0.21s, facts 0.84s, ...` (the `-v` line).
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .iter()
            .map(|(phase, took)| format!("{phase} {:.2}s", took.as_secs_f64()))
            .collect();
        parts.join(", ")
    }
}

impl Serialize for Timings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (phase, took) in self.iter() {
            map.serialize_entry(phase.name(), &rounded(took))?;
        }
        map.end()
    }
}

/// What happened to one image on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageAction {
    /// Sent and loaded (with `--check`: would be).
    Loaded,
    /// Already present with the same image ID: nothing sent.
    Present,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageResult {
    pub reference: String,
    pub id: String,
    pub action: ImageAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostReport {
    pub host: String,
    /// The node's container runtime, once known (the inventory's, or what its facts showed).
    pub runtime: Option<Runtime>,
    #[serde(flatten)]
    pub status: HostStatus,
    /// Where a host that did not finish well stopped; `None` for the others, and for a host
    /// the run was interrupted before it started.
    pub phase: Option<Phase>,
    pub images: Vec<ImageResult>,
    /// Compressed bytes that went over the wire to this host (with `--check`: would go).
    pub bytes_sent: u64,
    /// Compressed bytes not sent because the host already had those layers.
    pub bytes_saved: u64,
    pub attempts: u32,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Seconds per phase of the last attempt.
    pub timings: Timings,
    /// Things worth knowing that did not fail the host (e.g. a delta load retried in full).
    pub notes: Vec<String>,
}

fn rounded(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(rounded(*d))
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

impl HostReport {
    pub fn loaded_count(&self) -> usize {
        self.images
            .iter()
            .filter(|i| i.action == ImageAction::Loaded)
            .count()
    }

    /// Whether it must be pushed again: failed, unreachable or interrupted.
    pub fn needs_retry(&self) -> bool {
        self.status.reason().is_some()
    }

    /// The reason without the host's name in front (the errors name their host; the recap's
    /// line already does).
    pub fn short_reason(&self) -> Option<&str> {
        let reason = self.status.reason()?;
        Some(
            reason
                .strip_prefix(self.host.as_str())
                .and_then(|rest| rest.strip_prefix(": "))
                .unwrap_or(reason),
        )
    }
}

/// Hosts per status and bytes, over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub hosts: usize,
    pub loaded: usize,
    pub up_to_date: usize,
    pub skipped_coreos: usize,
    pub failed: usize,
    pub unreachable: usize,
    pub interrupted: usize,
    pub bytes_sent: u64,
    pub bytes_saved: u64,
}

impl Totals {
    /// Hosts that ended well: loaded or up to date.
    pub fn ok(&self) -> usize {
        self.loaded + self.up_to_date
    }
}

/// Every host's report, in inventory order.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// True for `--check`: nothing was sent, figures say what would have been.
    pub check: bool,
    pub started: SystemTime,
    pub finished: SystemTime,
    /// The signal that stopped the run; unfinished hosts are reported as interrupted.
    pub interrupted: Option<Signal>,
    /// Why the images could not be had (the delegate's download failed): every host that
    /// needed them failed for this reason.
    pub download_error: Option<String>,
    /// The retry file written for this run (`--limit @FILE` re-runs what did not finish).
    pub retry_file: Option<std::path::PathBuf>,
    pub hosts: Vec<HostReport>,
}

impl RunReport {
    /// The hosts of `status` (by its JSON name), in inventory order.
    pub fn hosts_with(&self, status: &str) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| h.status.name() == status)
            .map(|h| h.host.as_str())
            .collect()
    }

    /// What a retry file lists: the failed, unreachable and interrupted hosts, sorted (as
    /// Ansible writes its own).
    pub fn retry_hosts(&self) -> Vec<&str> {
        let mut hosts: Vec<&str> = self
            .hosts
            .iter()
            .filter(|h| h.needs_retry())
            .map(|h| h.host.as_str())
            .collect();
        hosts.sort_unstable();
        hosts
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            hosts: self.hosts.len(),
            ..Totals::default()
        };
        for host in &self.hosts {
            totals.bytes_sent += host.bytes_sent;
            totals.bytes_saved += host.bytes_saved;
            let count = match host.status {
                HostStatus::Loaded => &mut totals.loaded,
                HostStatus::UpToDate => &mut totals.up_to_date,
                HostStatus::SkippedCoreos { .. } => &mut totals.skipped_coreos,
                HostStatus::Failed { .. } => &mut totals.failed,
                HostStatus::Unreachable { .. } => &mut totals.unreachable,
                HostStatus::Interrupted { .. } => &mut totals.interrupted,
            };
            *count += 1;
        }
        totals
    }
}

/// The `--json` document (docs/json.md).
#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    check: bool,
    #[serde(serialize_with = "rfc3339")]
    started: &'a SystemTime,
    #[serde(serialize_with = "rfc3339")]
    finished: &'a SystemTime,
    #[serde(serialize_with = "seconds")]
    elapsed: Duration,
    interrupted: Option<Signal>,
    download_error: Option<&'a str>,
    retry_file: Option<&'a std::path::Path>,
    totals: Totals,
    hosts: &'a [HostReport],
}

impl Serialize for RunReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Document {
            schema_version: SCHEMA_VERSION,
            check: self.check,
            started: &self.started,
            finished: &self.finished,
            elapsed: self
                .finished
                .duration_since(self.started)
                .unwrap_or_default(),
            interrupted: self.interrupted,
            download_error: self.download_error.as_deref(),
            retry_file: self.retry_file.as_deref(),
            totals: self.totals(),
            hosts: &self.hosts,
        }
        .serialize(s)
    }
}

/// Reports to test the recap and the JSON with.
#[cfg(any(test, feature = "synth"))]
pub mod testing {
    use super::*;

    /// A host of `status` with two images (`loaded` of them loaded) and set figures.
    pub fn host(name: &str, status: HostStatus, loaded: usize) -> HostReport {
        let reached = !matches!(
            status,
            HostStatus::Unreachable { .. } | HostStatus::Interrupted { .. }
        );
        let images = match status {
            HostStatus::Loaded | HostStatus::UpToDate => (0..2)
                .map(|i| ImageResult {
                    reference: format!("registry.example/app{i}:v1"),
                    id: format!("sha256:{i:064}"),
                    action: if i < loaded {
                        ImageAction::Loaded
                    } else {
                        ImageAction::Present
                    },
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut timings = Timings::default();
        timings.add(Phase::Connect, Duration::from_millis(210));
        if reached {
            timings.add(Phase::Facts, Duration::from_millis(840));
        }
        let phase = match &status {
            HostStatus::Failed { .. } => Some(Phase::Send),
            HostStatus::Unreachable { .. } => Some(Phase::Connect),
            HostStatus::Interrupted { .. } => Some(Phase::Facts),
            _ => None,
        };
        let sent = if loaded > 0 { 2048 * loaded as u64 } else { 0 };
        HostReport {
            host: name.into(),
            runtime: Some(Runtime::Containerd),
            status,
            phase,
            images,
            bytes_sent: sent,
            bytes_saved: if loaded > 0 { 1024 } else { 0 },
            attempts: 1,
            elapsed: Duration::from_millis(1500),
            timings,
            notes: vec![],
        }
    }

    /// A run that started at 2025-01-02T03:04:05Z and took 7.5 s.
    pub fn run(hosts: Vec<HostReport>) -> RunReport {
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_787_045);
        RunReport {
            check: false,
            started,
            finished: started + Duration::from_millis(7500),
            interrupted: None,
            download_error: None,
            retry_file: None,
            hosts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{host, run};
    use super::*;

    fn sample() -> RunReport {
        let reason = |text: &str| text.to_string();
        run(vec![
            host("node1", HostStatus::Loaded, 1),
            host("node2", HostStatus::UpToDate, 0),
            host(
                "node3",
                HostStatus::Unreachable {
                    reason: reason("node3: cannot connect to 198.18.1.13:22: connection refused"),
                },
                0,
            ),
            host(
                "node4",
                HostStatus::SkippedCoreos {
                    os: "flatcar".into(),
                },
                0,
            ),
            host(
                "node0",
                HostStatus::Failed {
                    reason: reason("node0: docker load failed"),
                },
                0,
            ),
        ])
    }

    #[test]
    fn json_carries_the_same_facts_and_the_totals() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["schema_version"], SCHEMA_VERSION);
        assert_eq!(json["started"], "2025-01-02T03:04:05.000Z");
        assert_eq!(json["finished"], "2025-01-02T03:04:12.500Z");
        assert_eq!(json["elapsed"], 7.5);
        let node1 = &json["hosts"][0];
        assert_eq!(node1["status"], "loaded");
        assert_eq!(node1["runtime"], "containerd");
        assert_eq!(node1["phase"], serde_json::Value::Null);
        assert_eq!(node1["images"][0]["action"], "loaded");
        assert_eq!(node1["bytes_sent"], 2048);
        assert_eq!(node1["elapsed"], 1.5);
        assert_eq!(
            node1["timings"],
            serde_json::json!({"connect": 0.21, "facts": 0.84})
        );
        let node3 = &json["hosts"][2];
        assert_eq!(node3["status"], "unreachable");
        assert_eq!(node3["phase"], "connect");
        assert_eq!(
            node3["reason"],
            "node3: cannot connect to 198.18.1.13:22: connection refused"
        );
        assert_eq!(node3["timings"], serde_json::json!({"connect": 0.21}));
        assert_eq!(json["hosts"][3]["os"], "flatcar");
        assert_eq!(
            json["totals"],
            serde_json::json!({
                "hosts": 5, "loaded": 1, "up_to_date": 1, "skipped_coreos": 1, "failed": 1,
                "unreachable": 1, "interrupted": 0, "bytes_sent": 2048, "bytes_saved": 1024,
            })
        );
        for (i, host) in sample().hosts.iter().enumerate() {
            assert_eq!(json["hosts"][i]["status"], host.status.name());
        }
    }

    #[test]
    fn the_retry_hosts_are_the_ones_that_did_not_finish_well_sorted() {
        let mut report = sample();
        report.hosts.push(host(
            "node9",
            HostStatus::Interrupted {
                reason: "interrupted (SIGTERM) before it finished".into(),
            },
            0,
        ));
        assert_eq!(report.retry_hosts(), ["node0", "node3", "node9"]);
        assert_eq!(report.hosts_with("unreachable"), ["node3"]);
        assert_eq!(
            report.hosts[2].short_reason(),
            Some("cannot connect to 198.18.1.13:22: connection refused")
        );
        assert_eq!(report.hosts[0].short_reason(), None);
    }

    #[test]
    fn timings_add_up_per_phase_in_phase_order() {
        let mut timings = Timings::default();
        timings.add(Phase::Send, Duration::from_millis(1500));
        timings.add(Phase::Download, Duration::from_millis(100));
        timings.add(Phase::Download, Duration::from_millis(200));
        assert_eq!(timings.describe(), "download 0.30s, send+load 1.50s");
        assert_eq!(
            serde_json::to_value(&timings).unwrap(),
            serde_json::json!({"download": 0.3, "send": 1.5})
        );
    }
}
