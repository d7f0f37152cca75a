//! The image cache against the real test bed (instance `$TESTBED_ID`): the control daemon as
//! the localhost delegate, the registry's test images, and empty node daemons for `docker load`.
//! Skipped with a loud message when the test bed is not up (a failure in CI).

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::support::{DOCKER, Testbed, docker, stdout, succeed};
use dropship::image::source::localhost::LocalDaemon;
use dropship::image::source::{self, FetchReport, PullPolicy, SourceError, resolve_offline};
use dropship::image::{ArchiveFormat, ArchiveLayout, Cache, CacheError, ImageId, ImageRef};
use dropship::retry::RetryPolicy;
use tokio::io::AsyncReadExt;

fn images(tb: &Testbed) -> Vec<ImageRef> {
    tb.images
        .iter()
        .map(|r| ImageRef::parse(r).unwrap())
        .collect()
}

fn control(tb: &Testbed) -> LocalDaemon {
    LocalDaemon::connect_to(&tb.control_docker_host).unwrap()
}

/// Two quick attempts: the test bed's registry is local, a retry only hides a real fault.
const RETRY: RetryPolicy = RetryPolicy {
    attempts: 2,
    stagger_secs: 0,
};

/// Pull every time, so each run really asks the daemon and compares image IDs.
async fn fetch(
    daemon: &LocalDaemon,
    cache: &Cache,
    references: &[ImageRef],
) -> Result<FetchReport, SourceError> {
    source::fetch(
        daemon,
        cache,
        references,
        PullPolicy::Always,
        RETRY,
        Some(1),
    )
    .await
}

fn empty_daemon(host: &str) {
    succeed(docker(host, &["image", "prune", "--all", "--force"]));
    assert_eq!(
        stdout(&succeed(docker(host, &["images", "-q"]))).trim(),
        "",
        "{host} still has images"
    );
}

/// Full image IDs on a daemon, by `repo:tag`.
fn image_id(host: &str, name: &str) -> Option<String> {
    let output = docker(host, &["image", "inspect", "--format", "{{.Id}}", name]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The daemon at `host` holds each of `names` with the ID at the same place in `ids`;
/// `context` starts the failure message.
fn assert_images_on(host: &str, names: &[String], ids: &[ImageId], context: &str) {
    for (name, id) in names.iter().zip(ids) {
        assert_eq!(
            image_id(host, name).as_deref(),
            Some(id.to_string().as_str()),
            "{context}{name}"
        );
    }
}

/// Stream an archive into `zstd -dc | docker load` on a node, like a push does over SSH.
/// Returns the streaming error, if any, and whether `docker load` succeeded.
/// The docker-archive a Docker node is sent.
fn docker_plan(
    cache: &Cache,
    ids: &[ImageId],
    omit: &HashSet<dropship::image::DiffId>,
    format: ArchiveFormat,
) -> dropship::image::ArchivePlan {
    let layout = ArchiveLayout::Docker {
        zstd_members: false,
    };
    cache.archive_plan(ids, omit, layout, format).unwrap()
}

async fn load_on(
    host: &str,
    mut archive: impl tokio::io::AsyncRead + Unpin,
    format: ArchiveFormat,
) -> (Option<std::io::Error>, bool) {
    // docker load reads plain and gzip tars itself, zstd only through zstd -dc.
    let decompress = if format == ArchiveFormat::Zstd {
        "zstd -dc |"
    } else {
        ""
    };
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!("{decompress} DOCKER_HOST={host} {DOCKER} load"),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut failure = None;
    loop {
        match archive.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => stdin.write_all(&buf[..n]).unwrap(),
            Err(e) => {
                failure = Some(e);
                // A failed stream must not look like a finished one: kill the loader.
                let _ = child.kill();
                break;
            }
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    (failure, status.success())
}

async fn fetched_cache(tb: &Testbed) -> (tempfile::TempDir, Cache, Vec<ImageId>) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), None).unwrap();
    let report = fetch(&control(tb), &cache, &images(tb)).await.unwrap();
    let ids = report.images.iter().map(|i| i.id).collect();
    (dir, cache, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_pull_stores_shared_layers_once_and_the_next_run_saves_nothing() {
    let (tb, _lock) = testbed!();
    let control_host = tb.control_docker_host.clone();
    for image in images(&tb) {
        // Make the pull real: the control daemon must fetch from the registry.
        let _ = docker(&control_host, &["rmi", &image.to_string()]);
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), None).unwrap();
    let events = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = events.clone();
    let daemon = control(&tb).with_progress(Arc::new(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    let first = fetch(&daemon, &cache, &images(&tb)).await.unwrap();
    assert_eq!(first.save_runs, 1);
    assert!(first.images.iter().all(|i| i.saved));
    assert!(
        events.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no pull progress reported"
    );
    for image in &first.images {
        let on_daemon = image_id(&control_host, &image.reference).unwrap();
        assert_eq!(on_daemon, image.id.to_string(), "{}", image.reference);
    }
    // Each distinct layer once, although the images share their base.
    let distinct: HashSet<_> = cache
        .images()
        .unwrap()
        .iter()
        .flat_map(|r| r.diff_ids.clone())
        .collect();
    let total: usize = cache
        .images()
        .unwrap()
        .iter()
        .map(|r| r.diff_ids.len())
        .sum();
    assert!(
        distinct.len() < total,
        "the test images should share layers"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("layers"))
            .unwrap()
            .count(),
        distinct.len()
    );
    let ingest = first.ingest.unwrap();
    assert_eq!(ingest.layers_stored, distinct.len());

    let mtimes = |dir: &Path| -> Vec<_> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().modified().unwrap())
            .collect()
    };
    let before = mtimes(&dir.path().join("layers"));
    let second = fetch(&daemon, &cache, &images(&tb)).await.unwrap();
    assert_eq!(second.save_runs, 0, "a second run must not save again");
    assert!(second.images.iter().all(|i| !i.saved));
    assert_eq!(mtimes(&dir.path().join("layers")), before);

    // Offline: the cache alone answers, no daemon involved.
    let offline = resolve_offline(&cache, &images(&tb)).unwrap();
    assert_eq!(
        offline.images.iter().map(|i| i.id).collect::<Vec<_>>(),
        first.images.iter().map(|i| i.id).collect::<Vec<_>>()
    );
    let missing = ImageRef::parse(&format!("{}/dropship/absent:v9", tb.registry.as_str())).unwrap();
    let err = resolve_offline(&cache, &[missing]).unwrap_err();
    assert!(
        matches!(err, CacheError::NotCached { .. }) && err.to_string().contains("absent:v9"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_images_fail_at_once_with_a_clear_message() {
    let (tb, _lock) = testbed!();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), None).unwrap();
    let missing = ImageRef::parse(&format!("{}/dropship/absent:v9", tb.registry.as_str())).unwrap();
    let err = fetch(&control(&tb), &cache, &[missing]).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("does not exist") && text.contains("absent:v9"),
        "{text}"
    );
}

/// The `DOCKER_HOST` of every Docker node.
fn docker_daemons(tb: &crate::support::Testbed) -> Vec<String> {
    let daemons: Vec<String> = tb
        .nodes
        .iter()
        .filter_map(|node| node.docker_host.clone())
        .collect();
    assert!(daemons.len() >= 2, "the test bed has two Docker nodes");
    daemons
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_archives_load_with_identical_ids_in_full_and_without_present_layers() {
    let (tb, _lock) = testbed!();
    let (_dir, cache, ids) = fetched_cache(&tb).await;
    let names: Vec<String> = images(&tb).iter().map(ImageRef::familiar).collect();

    // Everything, through the CLI, into an empty daemon.
    // Two Docker daemons of the test bed (its Flatcar node runs one too: only its os-release
    // says Flatcar).
    let dockers = docker_daemons(&tb);
    let node1 = dockers[0].clone();
    empty_daemon(&node1);
    let mut export = crate::support::dropship()
        .args(["cache", "export", "--zstd", "-o", "-", "--cache-dir"])
        .arg(cache.root())
        .args(&names)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new("sh")
        .args([
            "-c",
            &format!("zstd -dc | DOCKER_HOST={node1} {DOCKER} load"),
        ])
        .stdin(export.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(export.wait().unwrap().success());
    succeed(load);
    assert_images_on(&node1, &names, &ids, "");

    // A node holding the first image gets the others without the layers it already has.
    let node2 = dockers[1].clone();
    empty_daemon(&node2);
    let first = docker_plan(&cache, &ids[..1], &HashSet::new(), ArchiveFormat::Zstd);
    let (err, ok) = load_on(&node2, cache.archive_reader(first), ArchiveFormat::Zstd).await;
    assert!(err.is_none() && ok);
    let present: HashSet<_> = cache
        .record(&ids[0])
        .unwrap()
        .unwrap()
        .diff_ids
        .into_iter()
        .collect();
    let delta = docker_plan(&cache, &ids[1..], &present, ArchiveFormat::Zstd);
    let full = docker_plan(&cache, &ids[1..], &HashSet::new(), ArchiveFormat::Zstd);
    assert!(!delta.omitted.is_empty(), "the images share a base layer");
    assert!(delta.compressed_bytes + delta.saved_bytes <= full.compressed_bytes + 1024);
    let (err, ok) = load_on(&node2, cache.archive_reader(delta), ArchiveFormat::Zstd).await;
    assert!(
        err.is_none() && ok,
        "docker load of the delta archive failed"
    );
    assert_images_on(&node2, &names, &ids, "");

    // Nodes without zstd get plain tar or gzip, layers decompressed on the fly.
    for format in [ArchiveFormat::Gzip, ArchiveFormat::Tar] {
        empty_daemon(&node1);
        let plan = docker_plan(&cache, &ids, &HashSet::new(), format);
        let (err, ok) = load_on(&node1, cache.archive_reader(plan), format).await;
        assert!(
            err.is_none() && ok,
            "docker load of the {format:?} archive failed"
        );
        assert_images_on(&node1, &names, &ids, &format!("{format:?} "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_cached_layer_never_reaches_the_daemon() {
    let (tb, _lock) = testbed!();
    let (dir, cache, ids) = fetched_cache(&tb).await;
    let record = cache.record(&ids[0]).unwrap().unwrap();
    let victim = record.diff_ids.last().unwrap();
    let path = dir
        .path()
        .join("layers")
        .join(format!("{}.zst", victim.hex()));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();

    let node3 = docker_daemons(&tb)[0].clone();
    empty_daemon(&node3);
    let plan = docker_plan(&cache, &ids[..1], &HashSet::new(), ArchiveFormat::Zstd);
    let (err, ok) = load_on(&node3, cache.archive_reader(plan), ArchiveFormat::Zstd).await;
    let err = err.expect("the stream must fail");
    assert!(err.to_string().contains(&victim.to_string()), "{err}");
    assert!(!ok, "docker load must not succeed");
    assert_eq!(image_id(&node3, &record.repo_tags[0]), None);
    // The damaged layer was moved aside, so the next pull saves the image again.
    assert!(!cache.is_complete(&ids[0]));
    let again = fetch(&control(&tb), &cache, &images(&tb)[..1])
        .await
        .unwrap();
    assert_eq!(again.save_runs, 1);
    assert!(cache.verify().unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_importing_into_one_cache_at_once_leave_it_consistent() {
    let (tb, _lock) = testbed!();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("save.tar.gz");
    let names: Vec<String> = images(&tb).iter().map(|r| r.to_string()).collect();
    let save = Command::new("sh")
        .args([
            "-c",
            &format!("{DOCKER} save \"$@\" | gzip -1 > {}", archive.display()),
            "save",
        ])
        .args(&names)
        .env("DOCKER_HOST", tb.control_docker_host.as_str())
        .status()
        .unwrap();
    assert!(save.success());
    let cache_dir = work.path().join("cache");
    let importers: Vec<_> = (0..2)
        .map(|_| {
            crate::support::dropship()
                .args(["cache", "import", "--cache-dir"])
                .arg(&cache_dir)
                .arg(&archive)
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut importer in importers {
        assert!(importer.wait().unwrap().success());
    }
    let verify = crate::support::dropship()
        .args(["cache", "verify", "--cache-dir"])
        .arg(&cache_dir)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let cache = Cache::open(&cache_dir, None).unwrap();
    assert_eq!(cache.images().unwrap().len(), names.len());
    let leftovers = std::fs::read_dir(cache_dir.join("layers"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
}
