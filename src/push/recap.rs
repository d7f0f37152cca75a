//! The recap printed at the end of a push: a line per host (as Ansible's PLAY RECAP), or, on
//! a large run, a line per distinct outcome ("87 hosts : ok ... up to date") with every host
//! that did not finish well still on a line of its own; then the totals, the hosts to look
//! at, and the retry file. The JSON (`report.rs`) stays complete per host either way.

use std::io::{self, Write};

use indicatif::HumanBytes;

use super::report::{HostReport, HostStatus, RunReport};
use crate::runtime::Runtime;

/// Up to this many hosts, one line each; beyond, hosts with the same outcome share a line.
const GROUP_ABOVE: usize = 10;

impl RunReport {
    /// The recap, grouped when there are more than [`GROUP_ABOVE`] hosts.
    pub fn write_recap(&self, out: &mut impl Write) -> io::Result<()> {
        let title = if self.check {
            "PUSH CHECK"
        } else {
            "PUSH RECAP"
        };
        writeln!(out, "\n{title} {}", "*".repeat(60))?;
        let lines = if self.hosts.len() > GROUP_ABOVE {
            grouped(&self.hosts, self.check)
        } else {
            self.hosts
                .iter()
                .map(|host| Line::of(host, self.check))
                .collect()
        };
        let width = lines.iter().map(|l| l.name.len()).max().unwrap_or(0);
        for line in &lines {
            writeln!(out, "{:<width$} : {}", line.name, line.text)?;
            for note in &line.notes {
                writeln!(out, "{:<width$}   note: {note}", "")?;
            }
        }
        let totals = self.totals();
        let mut counts = vec![
            format!("{} ok", totals.ok()),
            format!("{} skipped", totals.skipped_coreos),
            format!("{} unreachable", totals.unreachable),
            format!("{} failed", totals.failed),
        ];
        if totals.interrupted > 0 {
            counts.push(format!("{} interrupted", totals.interrupted));
        }
        let verb = if self.check { "to send" } else { "sent" };
        writeln!(
            out,
            "{} hosts: {}; {} {verb}, {} saved",
            totals.hosts,
            counts.join(", "),
            HumanBytes(totals.bytes_sent),
            HumanBytes(totals.bytes_saved),
        )?;
        if let Some(signal) = self.interrupted {
            writeln!(out, "interrupted by {signal}")?;
        }
        for status in ["unreachable", "failed", "interrupted"] {
            let hosts = self.hosts_with(status);
            if !hosts.is_empty() {
                writeln!(out, "{status} hosts: {}", hosts.join(", "))?;
            }
        }
        if let Some(file) = &self.retry_file {
            // Ansible's words, so that the same habit works.
            writeln!(out, "to retry, use: --limit @{}", file.display())?;
        }
        Ok(())
    }
}

/// One line of the recap: a host, or several with the same outcome.
struct Line {
    name: String,
    text: String,
    notes: Vec<String>,
}

impl Line {
    fn of(host: &HostReport, check: bool) -> Line {
        Line {
            name: host.host.clone(),
            text: format!("{} {}", columns(host), detail(host, check)),
            notes: host.notes.clone(),
        }
    }
}

/// The status word and the runtime, aligned.
fn columns(host: &HostReport) -> String {
    let word = match host.status {
        HostStatus::Loaded | HostStatus::UpToDate => "ok",
        HostStatus::SkippedCoreos { .. } => "skipped",
        HostStatus::Failed { .. } => "FAILED",
        HostStatus::Unreachable { .. } => "UNREACHABLE",
        HostStatus::Interrupted { .. } => "INTERRUPTED",
    };
    format!("{word:<11} {:<10}", host.runtime.map_or("-", Runtime::name))
}

fn detail(host: &HostReport, check: bool) -> String {
    let reason = host.short_reason().unwrap_or_default();
    match &host.status {
        HostStatus::Loaded => format!(
            "{} sent={} saved={} attempts={} {:.1}s",
            outcome(host, check),
            HumanBytes(host.bytes_sent),
            HumanBytes(host.bytes_saved),
            host.attempts,
            host.elapsed.as_secs_f64()
        ),
        HostStatus::UpToDate | HostStatus::SkippedCoreos { .. } => outcome(host, check),
        HostStatus::Failed { .. } | HostStatus::Unreachable { .. } => {
            format!("{} attempts={}: {reason}", stopped(host), host.attempts)
        }
        // What it had sent before the signal, if anything.
        HostStatus::Interrupted { .. } if host.bytes_sent > 0 => {
            let sent = HumanBytes(host.bytes_sent);
            format!("{} sent={sent}: {reason}", stopped(host))
        }
        HostStatus::Interrupted { .. } => outcome(host, check),
    }
}

/// What a host came to, without its own figures: the part hosts can share.
fn outcome(host: &HostReport, check: bool) -> String {
    let present = host.images.len() - host.loaded_count();
    match &host.status {
        HostStatus::Loaded => {
            let verb = if check { "would load" } else { "loaded" };
            format!("{verb}={} present={present}", host.loaded_count())
        }
        HostStatus::UpToDate => format!("up to date ({present} images present)"),
        HostStatus::SkippedCoreos { os } => {
            format!("{os}: images are not pushed to CoreOS/Flatcar hosts")
        }
        HostStatus::Failed { .. }
        | HostStatus::Unreachable { .. }
        | HostStatus::Interrupted { .. } => {
            format!(
                "{}: {}",
                stopped(host),
                host.short_reason().unwrap_or_default()
            )
        }
    }
}

fn stopped(host: &HostReport) -> String {
    match host.phase {
        Some(phase) => format!("phase={}", phase.name()),
        None => "not started".to_string(),
    }
}

/// A line per distinct good outcome, in the order outcomes first appear (a host alone with
/// its outcome keeps its own full line); then a line for each host that did not finish well,
/// in inventory order, next to the totals that name them again.
fn grouped(hosts: &[HostReport], check: bool) -> Vec<Line> {
    let (apart, shared): (Vec<&HostReport>, Vec<&HostReport>) =
        hosts.iter().partition(|host| host.needs_retry());
    let mut groups: Vec<(String, Vec<&HostReport>)> = Vec::new();
    for host in shared {
        let key = format!(
            "{} {}\n{}",
            columns(host),
            outcome(host, check),
            host.notes.join("\n")
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(host),
            None => groups.push((key, vec![host])),
        }
    }
    let grouped = groups
        .into_iter()
        .map(|(_, members)| match members.as_slice() {
            [host] => Line::of(host, check),
            [first, ..] => {
                let sent: u64 = members.iter().map(|h| h.bytes_sent).sum();
                let saved: u64 = members.iter().map(|h| h.bytes_saved).sum();
                let figures = if sent + saved > 0 {
                    format!(" sent={} saved={}", HumanBytes(sent), HumanBytes(saved))
                } else {
                    String::new()
                };
                Line {
                    name: format!("{} hosts", members.len()),
                    text: format!("{} {}{figures}", columns(first), outcome(first, check)),
                    notes: first.notes.clone(),
                }
            }
            [] => unreachable!("a group has a member"),
        });
    grouped
        .chain(apart.into_iter().map(|host| Line::of(host, check)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::report::testing::{host, run};
    use super::*;

    fn text(report: &RunReport) -> String {
        let mut out = Vec::new();
        report.write_recap(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A snapshot of what users read: a change to it is a visible diff in review.
    #[test]
    fn a_small_run_has_a_line_per_host_and_names_the_ones_to_look_at() {
        let mut interrupted = host(
            "node5",
            HostStatus::Interrupted {
                reason: "interrupted (SIGTERM) before it finished".into(),
            },
            0,
        );
        interrupted.bytes_sent = 3 << 20;
        let mut report = run(vec![
            host("node1", HostStatus::Loaded, 1),
            host("node2", HostStatus::UpToDate, 0),
            host(
                "node3",
                HostStatus::Unreachable {
                    reason: "node3: cannot connect to 198.18.1.13:22: connection refused".into(),
                },
                0,
            ),
            host(
                "node4",
                HostStatus::Failed {
                    reason: "node4: docker load failed (exit code 1): no space left".into(),
                },
                0,
            ),
            interrupted,
            host(
                "node6",
                HostStatus::SkippedCoreos {
                    os: "flatcar".into(),
                },
                0,
            ),
        ]);
        report.interrupted = Some(crate::shutdown::Signal::Sigterm);
        report.retry_file = Some("/work/dropship-push.retry".into());
        insta::assert_snapshot!(text(&report));
    }

    /// 100 hosts as the fleet issue pictures them: most up to date, some loaded, Flatcar
    /// skipped, a few down. The good outcomes share lines, each host that needs a look has
    /// its own, even when its reason is the same as another's.
    #[test]
    fn a_large_run_groups_identical_outcomes_and_keeps_the_odd_ones_apart() {
        let mut hosts: Vec<HostReport> = (1..=100)
            .map(|i| host(&format!("node{i:03}"), HostStatus::UpToDate, 0))
            .collect();
        for i in [3, 14, 15, 92, 65] {
            hosts[i] = host(&hosts[i].host.clone(), HostStatus::Loaded, 2);
        }
        hosts[40] = host(&hosts[40].host.clone(), HostStatus::Loaded, 1);
        for i in [10, 20, 30] {
            let os = "flatcar".to_string();
            hosts[i] = host(&hosts[i].host.clone(), HostStatus::SkippedCoreos { os }, 0);
        }
        for i in [7, 9, 50, 51, 99] {
            let name = hosts[i].host.clone();
            let reason = format!("{name}: the bastion could not open a tunnel: it cannot connect");
            hosts[i] = host(&name, HostStatus::Unreachable { reason }, 0);
        }
        let text = text(&run(hosts));
        insta::assert_snapshot!(text);
        assert!(text.lines().count() < 20, "{text}");
    }
}
