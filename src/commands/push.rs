//! `dropship push`: plan, push, recap.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::ansible_cfg::AnsibleCfg;
use crate::cli::PushArgs;
use crate::image::{Cache, ImageRef};
use crate::push::plan;
use crate::push::progress::Progress;
use crate::push::report::RunReport;
use crate::ssh::Connector;

use super::{UsageError, write_atomically, write_results};

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
    let mut report = crate::push::run(&plan, &connector, &cache, &progress, shutdown).await;
    for host in &report.hosts {
        tracing::info!(
            "{}: {} after {:.1}s, attempt {}: {}",
            host.host,
            host.status.name(),
            host.elapsed.as_secs_f64(),
            host.attempts,
            host.timings.describe()
        );
    }
    report.retry_file = write_retry_file(&run.cfg, &report);
    let mut recap = Vec::new();
    report.write_recap(&mut recap)?;
    let written = write_results(
        args.json.as_deref(),
        &report,
        &String::from_utf8_lossy(&recap),
    );
    match (written, report.interrupted) {
        (Ok(()), _) => exit_code(&report),
        (Err(e), None) => Err(e),
        // The signal's exit code matters more to whoever sent it than this failure.
        (Err(e), Some(signal)) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(signal.exit_code()))
        }
    }
}

/// The file Ansible would call `<playbook>.retry`, for a push.
const RETRY_FILE: &str = "dropship-push.retry";

/// Writes the hosts to push again (failed, unreachable, interrupted), one per line as Ansible
/// writes its retry files, unless `retry_files_enabled` is false (Ansible's default is false;
/// dropship's is true, since it names the file in the recap and `--limit @FILE` is how it is
/// used). It goes in `retry_files_save_path`, else the working directory: Ansible puts a
/// playbook's next to the playbook, where Kubespray's are run from. A file that cannot be
/// written is a warning, as in Ansible. Returns the file written.
fn write_retry_file(cfg: &AnsibleCfg, report: &RunReport) -> Option<PathBuf> {
    let hosts = report.retry_hosts();
    if hosts.is_empty() || cfg.retry_files_enabled.as_ref().is_some_and(|e| !e.value) {
        return None;
    }
    let dir = match &cfg.retry_files_save_path {
        Some(dir) => dir.value.clone(),
        None => std::env::current_dir().unwrap_or_default(),
    };
    let path = dir.join(RETRY_FILE);
    let text: String = hosts.iter().map(|host| format!("{host}\n")).collect();
    let written =
        std::fs::create_dir_all(&dir).and_then(|()| write_atomically(&path, text.as_bytes()));
    match written {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!("Could not create retry file '{}'. {e}", path.display());
            None
        }
    }
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

/// The signal's code when one stopped the run; 1 when the download failed or a host did not
/// finish well, naming them; else 0.
fn exit_code(report: &RunReport) -> anyhow::Result<ExitCode> {
    if let Some(signal) = report.interrupted {
        return Ok(ExitCode::from(signal.exit_code()));
    }
    let hosts = ["unreachable", "failed"].into_iter().filter_map(|status| {
        let hosts = report.hosts_with(status);
        (!hosts.is_empty())
            .then(|| format!("{} host(s) {status}: {}", hosts.len(), hosts.join(", ")))
    });
    let problems: Vec<String> = report
        .download_error
        .clone()
        .into_iter()
        .chain(hosts)
        .collect();
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("push failed: {}", problems.join("; "))
    }
}
