//! `dropship push`: plan, fill the cache from the delegate (once), push to every node, recap.

use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context;
use futures::FutureExt;

use crate::cli::{GlobalArgs, PushArgs};
use crate::image::localhost::{LocalDaemon, ProgressHook, PullEvent};
use crate::image::remote::RemoteDaemon;
use crate::image::source::{self, FetchReport};
use crate::image::{Cache, ImageRef};
use crate::inventory::Inventory;
use crate::push::decide::WantedImage;
use crate::push::node::{NodeContext, Wanted};
use crate::push::plan::{self, Delegate, Plan};
use crate::push::progress::Progress;
use crate::report::RunReport;
use crate::ssh::{ConnectOptions, Connector};

use super::{UsageError, write_json};

/// Exit code after Ctrl-C, as shells report a SIGINT death.
const EXIT_INTERRUPTED: u8 = 130;

pub async fn run(global: &GlobalArgs, args: &PushArgs) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::load(&global.inventory)?;
    let mut requested = args.images.clone();
    if let Some(file) = &args.images_file {
        requested.extend(read_images_file(file)?);
    }
    let plan = plan::build(&inventory, global.limit.as_deref(), args, requested)
        .map_err(|e| UsageError(e.to_string()))?;
    let connector = Connector::new(ConnectOptions::from_args(&args.connect).map_err(UsageError)?);
    let cache = Cache::open(&plan.cache_dir, Some(plan.zstd_level))
        .with_context(|| format!("opening the image cache {}", plan.cache_dir.display()))?;
    let progress = Progress::new(plan.targets.len());
    // Nodes connect and gather facts while the delegate downloads; they wait for this only
    // when they need the images.
    let wanted: Wanted = async {
        let fetched = fetch(&plan, args, &connector, &cache, &progress).await?;
        wanted_images(&plan, &cache, &fetched)
    }
    .map(|result| result.map(Arc::new).map_err(|e| Arc::new(format!("{e:#}"))))
    .boxed_local()
    .shared();
    let ctx = NodeContext {
        connector: &connector,
        cache: &cache,
        wanted: wanted.clone(),
        delegate: match &plan.delegate {
            Delegate::Host(host) => Some(host.name.as_str()),
            Delegate::Localhost => None,
        },
        settings: &plan.settings,
        progress: &progress,
    };
    // The download runs even while no node waits for it, and stops waiting at Ctrl-C (the
    // push reports that), so an interrupted run never sits out a long pull.
    let download = async {
        tokio::select! {
            result = wanted => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    };
    let (report, downloaded) = tokio::join!(crate::push::run(&ctx, &plan.targets), download);
    if let Some(Err(reason)) = downloaded
        && !report.interrupted
    {
        progress.finish();
        anyhow::bail!("{reason}");
    }
    report.write_recap(&mut std::io::stdout().lock())?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    exit_code(&report)
}

/// The images the plan names, as the cache now holds them.
fn wanted_images(
    plan: &Plan,
    cache: &Cache,
    fetched: &FetchReport,
) -> anyhow::Result<Vec<WantedImage>> {
    plan.images
        .iter()
        .zip(&fetched.images)
        .map(|(reference, image)| {
            let record = cache.record(&image.id)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{reference}: the cache lost image {} while pushing",
                    image.id
                )
            })?;
            Ok(WantedImage {
                reference: reference.clone(),
                record,
            })
        })
        .collect()
}

/// Fill the cache from the delegate, or (`--offline`) only check that it has every image.
async fn fetch(
    plan: &Plan,
    args: &PushArgs,
    connector: &Connector,
    cache: &Cache,
    progress: &Progress,
) -> anyhow::Result<FetchReport> {
    if args.offline {
        return Ok(source::resolve_offline(cache, &plan.images)?);
    }
    let retry = plan.settings.retry;
    let seed = plan.settings.seed;
    let report = match &plan.delegate {
        Delegate::Localhost => {
            let daemon = LocalDaemon::connect()?
                .with_platform(args.platform.clone())
                .with_progress(pull_progress(progress.clone()));
            source::fetch(&daemon, cache, &plan.images, plan.pull, retry, seed).await?
        }
        Delegate::Host(host) => {
            let session = connector
                .connect(host)
                .await
                .with_context(|| format!("reaching the download delegate {}", host.name))?;
            let daemon = RemoteDaemon::new(&session, host.become_.as_ref(), args.platform.clone());
            let report = source::fetch(&daemon, cache, &plan.images, plan.pull, retry, seed).await;
            session.close().await;
            report?
        }
    };
    Ok(report)
}

/// The daemon's own milestones of each pull ("Pulling from …", "Digest: …", "Status: …"),
/// not its per-layer byte counts.
fn pull_progress(progress: Progress) -> ProgressHook {
    Arc::new(move |event: &PullEvent<'_>| {
        let milestone = event.layer.is_none() || event.status.starts_with("Pulling from");
        if milestone && event.current.is_none() {
            progress.step(
                "localhost",
                &format!("{}: {}", event.reference, event.status),
            );
        }
    })
}

/// `--images-file`: one reference per line; `#` starts a comment. A bad line names its number.
fn read_images_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "{}: cannot read the images file: {e}",
            path.display()
        ))
    })?;
    let mut images = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        ImageRef::parse(line)
            .map_err(|e| UsageError(format!("{}:{}: {e}", path.display(), number + 1)))?;
        images.push(line.to_string());
    }
    Ok(images)
}

fn exit_code(report: &RunReport) -> anyhow::Result<ExitCode> {
    if report.interrupted {
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    let failed = report.failed_hosts();
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "push failed on {} host(s): {}",
            failed.len(),
            failed.join(", ")
        )
    }
}
