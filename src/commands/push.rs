//! `dropship push`: plan, push, recap.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::PushArgs;
use crate::image::{Cache, ImageRef};
use crate::push::plan;
use crate::push::progress::Progress;
use crate::push::report::RunReport;
use crate::ssh::Connector;

use super::{UsageError, write_results};

pub async fn run(run: &super::Run, args: &PushArgs) -> anyhow::Result<ExitCode> {
    let global = &run.global;
    let inventory = run.load_inventory()?;
    if args.connect.list_hosts {
        return super::list_hosts(&inventory, global.limit.as_deref());
    }
    let mut requested = args
        .images
        .iter()
        .map(|text| ImageRef::parse(text).map_err(|e| UsageError(format!("--image: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(file) = &args.images_file {
        requested.extend(read_images_file(file)?);
    }
    let defaults = run.connection_defaults(&args.connect)?;
    let forks = run.forks(&args.connect)?;
    let plan = plan::build(
        &inventory,
        global.limit.as_deref(),
        args,
        requested,
        &plan::Context {
            connection: &defaults,
            forks,
            connect_timeout: run.connect_timeout(&args.connect)?,
        },
    )
    .map_err(|e| UsageError(e.to_string()))?;
    let cache = Cache::open(&plan.cache_dir, Some(plan.zstd_level))
        .with_context(|| format!("opening the image cache {}", plan.cache_dir.display()))?;
    // What can be checked here is, before anything is contacted.
    if plan.offline {
        crate::push::check_offline(&cache, &plan.images).map_err(|e| match e {
            missing @ crate::push::OfflineError::NotCached { .. } => {
                anyhow::Error::new(UsageError(missing.to_string()))
            }
            other => other.into(),
        })?;
    }
    let connector = Connector::new(run.connect_options(&args.connect, &defaults)?);
    let planned: Vec<_> = plan.targets.iter().map(|t| t.host.clone()).collect();
    super::log_hosts(&connector, &planned);
    let shutdown = crate::shutdown::signals().context("listening for signals")?;
    let progress = Progress::new(plan.targets.len());
    let report = crate::push::run(&plan, &connector, &cache, &progress, shutdown).await;
    let mut recap = Vec::new();
    report.write_recap(&mut recap)?;
    write_results(
        args.json.as_deref(),
        &report,
        &String::from_utf8_lossy(&recap),
    )?;
    exit_code(&report)
}

/// `--images-file`: one reference per line; `#` starts a comment. A bad line names its number.
fn read_images_file(path: &Path) -> anyhow::Result<Vec<ImageRef>> {
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
        let image = ImageRef::parse(line)
            .map_err(|e| UsageError(format!("{}:{}: {e}", path.display(), number + 1)))?;
        images.push(image);
    }
    Ok(images)
}

fn exit_code(report: &RunReport) -> anyhow::Result<ExitCode> {
    if let Some(signal) = report.interrupted {
        return Ok(ExitCode::from(signal.exit_code()));
    }
    if let Some(reason) = &report.download_error {
        anyhow::bail!("{reason}");
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
