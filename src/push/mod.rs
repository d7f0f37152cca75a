//! `dropship push`: one task per node, at most `--forks` at once, each retried on its own, so
//! a fault on one node never stops the others.

pub mod decide;
pub mod node;
pub mod plan;
pub mod progress;
pub mod transfer;

use futures::StreamExt;

use crate::report::{HostReport, HostStatus, RunReport};
use node::{NodeContext, Target};

/// Push to every target. Ctrl-C stops the transfers under way (dropping a transfer closes its
/// channel, and the node's side removes any partial file) and reports what had finished.
pub async fn run(ctx: &NodeContext<'_>, targets: &[Target]) -> RunReport {
    let mut reports: Vec<Option<HostReport>> = vec![None; targets.len()];
    let mut tasks = futures::stream::iter(targets.iter().enumerate())
        .map(|(i, target)| async move { (i, node::push(ctx, target).await) })
        .buffer_unordered(ctx.settings.forks.max(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    loop {
        tokio::select! {
            next = tasks.next() => match next {
                Some((i, report)) => {
                    ctx.progress.done(&report);
                    reports[i] = Some(report);
                }
                None => break,
            },
            _ = &mut ctrl_c => {
                interrupted = true;
                break;
            }
        }
    }
    drop(tasks);
    ctx.progress.finish();
    let hosts = reports
        .into_iter()
        .zip(targets)
        .map(|(report, target)| report.unwrap_or_else(|| interrupted_report(target)))
        .collect();
    RunReport {
        check: ctx.settings.check,
        interrupted,
        hosts,
    }
}

fn interrupted_report(target: &Target) -> HostReport {
    HostReport {
        host: target.connection.name.clone(),
        status: HostStatus::Failed {
            reason: "interrupted (Ctrl-C) before it finished".into(),
        },
        images: Vec::new(),
        bytes_sent: 0,
        bytes_saved: 0,
        attempts: 0,
        elapsed: std::time::Duration::ZERO,
        notes: Vec::new(),
    }
}
