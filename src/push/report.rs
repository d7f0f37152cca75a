//! What happened on each host: the recap printed at the end of a push and its JSON twin.

use std::io::{self, Write};
use std::time::Duration;

use indicatif::HumanBytes;
use serde::Serialize;

use crate::runtime::Runtime;
use crate::shutdown::Signal;

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
    /// The last attempt failed; `reason` is what to look at.
    Failed { reason: String },
}

impl HostStatus {
    /// The status as one word, as the JSON's `status` field spells it.
    pub fn name(&self) -> &'static str {
        match self {
            HostStatus::Loaded => "loaded",
            HostStatus::UpToDate => "up_to_date",
            HostStatus::SkippedCoreos { .. } => "skipped_coreos",
            HostStatus::Failed { .. } => "failed",
        }
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
    pub images: Vec<ImageResult>,
    /// Compressed bytes that went over the wire to this host (with `--check`: would go).
    pub bytes_sent: u64,
    /// Compressed bytes not sent because the host already had those layers.
    pub bytes_saved: u64,
    pub attempts: u32,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    /// Things worth knowing that did not fail the host (e.g. a delta load retried in full).
    pub notes: Vec<String>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl HostReport {
    pub fn loaded_count(&self) -> usize {
        self.images
            .iter()
            .filter(|i| i.action == ImageAction::Loaded)
            .count()
    }

    pub fn failed(&self) -> bool {
        matches!(self.status, HostStatus::Failed { .. })
    }
}

/// Every host's report, in inventory order.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// True for `--check`: nothing was sent, figures say what would have been.
    pub check: bool,
    /// The signal that stopped the run; unfinished hosts are reported as failed.
    pub interrupted: Option<Signal>,
    /// Why the images could not be had (the delegate's download failed): every host that
    /// needed them failed for this reason.
    pub download_error: Option<String>,
    pub hosts: Vec<HostReport>,
}

impl RunReport {
    pub fn failed_hosts(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| h.failed())
            .map(|h| h.host.as_str())
            .collect()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.hosts.iter().map(|h| h.bytes_sent).sum()
    }

    /// An Ansible-style recap, one line per host, then one line of totals.
    pub fn write_recap(&self, out: &mut impl Write) -> io::Result<()> {
        let title = if self.check {
            "PUSH CHECK"
        } else {
            "PUSH RECAP"
        };
        writeln!(out, "\n{title} {}", "*".repeat(60))?;
        let width = self.hosts.iter().map(|h| h.host.len()).max().unwrap_or(0);
        for host in &self.hosts {
            writeln!(
                out,
                "{:<width$} : {}",
                host.host,
                describe(host, self.check)
            )?;
            for note in &host.notes {
                writeln!(out, "{:<width$}   note: {note}", "")?;
            }
        }
        let failed = self.failed_hosts();
        let verb = if self.check { "to send" } else { "sent" };
        writeln!(
            out,
            "{} hosts, {} failed, {} {verb}",
            self.hosts.len(),
            failed.len(),
            HumanBytes(self.bytes_sent())
        )?;
        if !failed.is_empty() {
            writeln!(out, "failed hosts: {}", failed.join(", "))?;
        }
        Ok(())
    }
}

fn describe(host: &HostReport, check: bool) -> String {
    let figures = || {
        format!(
            "sent={} saved={} attempts={} {:.1}s",
            HumanBytes(host.bytes_sent),
            HumanBytes(host.bytes_saved),
            host.attempts,
            host.elapsed.as_secs_f64()
        )
    };
    let present = host.images.len() - host.loaded_count();
    let runtime = host.runtime.map_or("-", Runtime::name);
    match &host.status {
        HostStatus::Loaded => {
            let verb = if check { "would load" } else { "loaded" };
            format!(
                "ok       {runtime:<10} {verb}={} present={present} {}",
                host.loaded_count(),
                figures()
            )
        }
        HostStatus::UpToDate => {
            format!("ok       {runtime:<10} up to date ({present} images present)")
        }
        HostStatus::SkippedCoreos { os } => {
            format!("skipped  {os}: images are not pushed to CoreOS/Flatcar hosts")
        }
        HostStatus::Failed { reason } => {
            format!(
                "FAILED   {runtime:<10} attempts={}: {reason}",
                host.attempts
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, status: HostStatus, actions: &[ImageAction]) -> HostReport {
        HostReport {
            host: name.into(),
            runtime: Some(Runtime::Containerd),
            status,
            images: actions
                .iter()
                .enumerate()
                .map(|(i, &action)| ImageResult {
                    reference: format!("app{i}:v1"),
                    id: format!("sha256:{i:064}"),
                    action,
                })
                .collect(),
            bytes_sent: 2048,
            bytes_saved: 1024,
            attempts: 2,
            elapsed: Duration::from_millis(1500),
            notes: vec![],
        }
    }

    fn sample() -> RunReport {
        use ImageAction::*;
        RunReport {
            check: false,
            interrupted: None,
            download_error: None,
            hosts: vec![
                host("node1", HostStatus::Loaded, &[Loaded, Present]),
                host("node2", HostStatus::UpToDate, &[Present, Present]),
                host(
                    "node3",
                    HostStatus::Failed {
                        reason: "connection refused".into(),
                    },
                    &[],
                ),
                host(
                    "node4",
                    HostStatus::SkippedCoreos {
                        os: "flatcar".into(),
                    },
                    &[],
                ),
            ],
        }
    }

    #[test]
    fn recap_has_one_line_per_host_and_names_the_failed_ones() {
        let mut out = Vec::new();
        sample().write_recap(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "node1 : ok       containerd loaded=1 present=1 sent=2.00 KiB saved=1.00 KiB attempts=2 1.5s"
            ),
            "{text}"
        );
        assert!(
            text.contains("node2 : ok       containerd up to date (2 images present)"),
            "{text}"
        );
        assert!(
            text.contains("node3 : FAILED   containerd attempts=2: connection refused"),
            "{text}"
        );
        assert!(text.contains("node4 : skipped  flatcar"), "{text}");
        assert!(text.contains("4 hosts, 1 failed, 8.00 KiB sent"), "{text}");
        assert!(text.ends_with("failed hosts: node3\n"), "{text}");
    }

    #[test]
    fn json_carries_the_same_facts() {
        let json = serde_json::to_value(sample()).unwrap();
        let node1 = &json["hosts"][0];
        assert_eq!(node1["status"], "loaded");
        assert_eq!(node1["runtime"], "containerd");
        assert_eq!(node1["images"][0]["action"], "loaded");
        assert_eq!(node1["bytes_sent"], 2048);
        assert_eq!(node1["elapsed"], 1.5);
        assert_eq!(json["hosts"][2]["status"], "failed");
        assert_eq!(json["hosts"][2]["reason"], "connection refused");
        assert_eq!(json["hosts"][3]["os"], "flatcar");
        for (i, host) in sample().hosts.iter().enumerate() {
            assert_eq!(json["hosts"][i]["status"], host.status.name());
        }
    }
}
