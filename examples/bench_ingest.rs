//! Benchmark helper for scripts/bench-cache.sh (not a test).
//!
//!   bench_ingest synth OUT SIZE_MB     write a synthetic docker-archive of about SIZE_MB
//!   bench_ingest ingest FILE LEVEL     ingest FILE into a fresh cache at zstd LEVEL, then
//!                                      export it (zstd and tar) to /dev/null; print one JSON line
//!
//! One level per process, so the peak RSS (VmHWM) belongs to that run alone.

mod common;

use std::collections::HashSet;
use std::io::BufWriter;
use std::path::Path;
use std::time::Instant;

use dropship::image::synth::{self, ImageSpec, LayerSpec, Layout};
use dropship::image::{ArchiveFormat, ArchiveLayout, Cache};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("synth") if args.len() == 4 => synth_archive(Path::new(&args[2]), args[3].parse()?),
        Some("ingest") if args.len() == 4 => ingest(Path::new(&args[2]), args[3].parse()?),
        _ => Err("usage: bench_ingest synth OUT SIZE_MB | bench_ingest ingest FILE LEVEL".into()),
    }
}

/// Four layers: a base of half the size and three smaller ones, like a typical image.
fn synth_archive(out: &Path, size_mb: usize) -> Result<(), Box<dyn std::error::Error>> {
    let file_size = 1 << 20;
    let layers = [size_mb / 2, size_mb / 4, size_mb / 8, size_mb / 8]
        .iter()
        .enumerate()
        .map(|(i, &mb)| LayerSpec {
            seed: i as u64 + 1,
            files: mb.max(1),
            file_size,
        })
        .collect();
    let image = ImageSpec {
        repo_tags: vec!["bench/synthetic:1".into()],
        layers,
    };
    let mut writer = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    synth::write_archive(&[image], Layout::Classic, &mut writer)?;
    Ok(())
}

fn ingest(file: &Path, level: i32) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir_in(file.parent().unwrap_or(Path::new(".")))?;
    let cache = Cache::open(dir.path(), Some(level))?;
    let started = Instant::now();
    let report = cache.import_file(file)?;
    let ingest_secs = started.elapsed().as_secs_f64();
    let ids: Vec<_> = report.images.iter().map(|i| i.id).collect();
    // MB/s of writing the whole archive in `format` (to nowhere).
    let export = |format| -> Result<f64, Box<dyn std::error::Error>> {
        let layout = ArchiveLayout::Docker {
            zstd_members: false,
        };
        let plan = cache.archive_plan(&ids, &HashSet::new(), layout, format)?;
        let started = Instant::now();
        let bytes = cache.write_archive(&plan, std::io::sink())?;
        Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
    };
    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({
            "level": level,
            "raw_mb": mb(report.raw_bytes),
            "stored_mb": mb(report.stored_bytes),
            "ratio": report.raw_bytes as f64 / report.stored_bytes.max(1) as f64,
            "ingest_secs": ingest_secs,
            "ingest_mb_per_s": mb(report.raw_bytes) / ingest_secs,
            "export_zstd_mb_per_s": export(ArchiveFormat::Zstd)?,
            "export_tar_mb_per_s": export(ArchiveFormat::Tar)?,
            "peak_rss_mb": common::peak_rss_kib() as f64 / 1024.0,
        })
    );
    Ok(())
}
