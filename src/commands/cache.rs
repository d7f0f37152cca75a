//! `dropship cache`: list, import, export, verify and prune the local image cache.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::HumanBytes;
use serde::Serialize;

use crate::cli::{CacheCommand, CacheDirArgs, GlobalArgs};
use crate::image::compression::zstd_level_for_gzip;
use crate::image::{ArchiveFormat, ArchiveLayout, Cache, Digest, ImageId, LayerBlob};
use crate::push::kubespray::DownloadSettings;

pub fn run(global: &GlobalArgs, command: &CacheCommand) -> anyhow::Result<ExitCode> {
    let open = |args: &CacheDirArgs| open(global, args);
    match command {
        CacheCommand::List { cache, json } => list(&open(cache)?, *json),
        CacheCommand::Import { cache, files } => import(&open(cache)?, files),
        CacheCommand::Export {
            cache,
            images,
            output,
            zstd,
        } => export(&open(cache)?, images, output, *zstd),
        CacheCommand::Verify { cache } => verify(&open(cache)?),
        CacheCommand::Prune { cache, all } => prune(&open(cache)?, *all),
    }
}

/// `--cache-dir`, else (with `-i`) the inventory's `download_cache_dir`, else the default;
/// new layers are compressed at the level `download_compress` maps to.
fn open(global: &GlobalArgs, args: &CacheDirArgs) -> anyhow::Result<Cache> {
    let settings = if global.inventory.is_empty() {
        DownloadSettings::default()
    } else {
        DownloadSettings::from_inventory(&super::load_inventory(global)?)?
    };
    let dir = Cache::resolve_dir(args.cache_dir.as_deref(), settings.cache_dir.as_deref());
    Cache::open(&dir, Some(zstd_level_for_gzip(settings.compress)))
        .with_context(|| format!("cannot open the image cache at {}", dir.display()))
}

#[derive(Serialize)]
struct ListedImage {
    id: ImageId,
    repo_tags: Vec<String>,
    layers: usize,
    /// Uncompressed size; `None` when a layer is kept as its registry served it (compressed,
    /// its uncompressed size unknown until it is unpacked).
    raw_bytes: Option<u64>,
    compressed_bytes: u64,
    /// Compressed bytes of layers this image shares with other cached images.
    shared_bytes: u64,
}

#[derive(Serialize)]
struct Listing {
    cache_dir: String,
    images: Vec<ListedImage>,
    /// Distinct layers, each stored once.
    layers: usize,
    stored_bytes: u64,
    /// What storing shared layers once saves, compared with one archive per image.
    saved_by_sharing: u64,
}

fn list(cache: &Cache, json: bool) -> anyhow::Result<ExitCode> {
    let records = cache.images()?;
    let blobs: Vec<Vec<LayerBlob>> = records
        .iter()
        .map(|record| cache.layer_blobs(record))
        .collect::<Result<_, _>>()?;
    let mut users: HashMap<Digest, usize> = HashMap::new();
    for layers in &blobs {
        let distinct: HashSet<Digest> = layers.iter().map(|b| b.descriptor.digest).collect();
        for digest in distinct {
            *users.entry(digest).or_default() += 1;
        }
    }
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    let mut images = Vec::new();
    let mut per_image_total = 0;
    for (record, layers) in records.into_iter().zip(&blobs) {
        let (mut raw_bytes, mut compressed_bytes, mut shared_bytes) = (Some(0), 0, 0);
        for blob in layers {
            raw_bytes = raw_bytes
                .zip(blob.raw_size())
                .map(|(total, raw)| total + raw);
            compressed_bytes += blob.descriptor.size;
            if users[&blob.descriptor.digest] > 1 {
                shared_bytes += blob.descriptor.size;
            }
            sizes.insert(blob.descriptor.digest, blob.descriptor.size);
        }
        per_image_total += compressed_bytes;
        images.push(ListedImage {
            id: record.id,
            repo_tags: record.repo_tags,
            layers: record.diff_ids.len(),
            raw_bytes,
            compressed_bytes,
            shared_bytes,
        });
    }
    let stored_bytes = sizes.values().sum();
    let listing = Listing {
        cache_dir: cache.root().display().to_string(),
        images,
        layers: sizes.len(),
        stored_bytes,
        saved_by_sharing: per_image_total - stored_bytes,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<14} {:>6} {:>10} {:>10} {:>10}  TAGS",
        "IMAGE ID", "LAYERS", "RAW", "STORED", "SHARED"
    );
    for image in &listing.images {
        let tags = if image.repo_tags.is_empty() {
            "<none>".to_string()
        } else {
            image.repo_tags.join(", ")
        };
        println!(
            "{:<14} {:>6} {:>10} {:>10} {:>10}  {tags}",
            &image.id.hex()[..12],
            image.layers,
            image
                .raw_bytes
                .map_or_else(|| "(served)".to_string(), |raw| HumanBytes(raw).to_string()),
            HumanBytes(image.compressed_bytes),
            HumanBytes(image.shared_bytes),
        );
    }
    println!(
        "{} image(s), {} distinct layer(s), {} stored in {} ({} saved by storing shared layers once)",
        listing.images.len(),
        listing.layers,
        HumanBytes(listing.stored_bytes),
        listing.cache_dir,
        HumanBytes(listing.saved_by_sharing)
    );
    Ok(ExitCode::SUCCESS)
}

fn import(cache: &Cache, files: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    for file in files {
        let report = cache
            .import_file(file)
            .with_context(|| format!("cannot import {}", file.display()))?;
        for image in &report.images {
            let state = if image.new {
                "imported"
            } else {
                "already cached"
            };
            println!(
                "{}: {} {state} ({})",
                file.display(),
                &image.id.hex()[..12],
                image.repo_tags.join(", ")
            );
        }
        println!(
            "{}: {} new layer(s) ({} stored), {} already cached, {} read",
            file.display(),
            report.layers_stored,
            HumanBytes(report.stored_bytes),
            report.layers_reused,
            HumanBytes(report.raw_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn export(cache: &Cache, images: &[String], output: &Path, zstd: bool) -> anyhow::Result<ExitCode> {
    let mut ids = Vec::new();
    for wanted in images {
        ids.push(cache.require(wanted)?.id);
    }
    let format = if zstd {
        ArchiveFormat::Zstd
    } else {
        ArchiveFormat::Tar
    };
    let layout = ArchiveLayout::Docker {
        zstd_members: false,
    };
    let plan = cache.archive_plan(&ids, &HashSet::new(), layout, format)?;
    let written = if output == Path::new("-") {
        cache.write_archive(&plan, std::io::stdout().lock())?
    } else {
        let file = std::fs::File::create(output)
            .with_context(|| format!("cannot create {}", output.display()))?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
        let written = cache.write_archive(&plan, &mut writer)?;
        writer
            .flush()
            .with_context(|| format!("cannot write {}", output.display()))?;
        written
    };
    eprintln!(
        "wrote {} image(s), {} layer(s), {} to {}",
        plan.images.len(),
        plan.layers.len(),
        HumanBytes(written),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(cache: &Cache) -> anyhow::Result<ExitCode> {
    let report = cache.verify()?;
    for problem in &report.problems {
        println!("PROBLEM: {problem}");
    }
    println!(
        "checked {} image(s), {} layer(s), {} blob(s), {} config(s): {} problem(s)",
        report.images,
        report.layers,
        report.blobs,
        report.configs,
        report.problems.len()
    );
    if report.problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "damaged objects were moved to {}/corrupt; pull or import those images again",
            cache.root().display()
        );
        Ok(ExitCode::from(super::EXIT_FAILED))
    }
}

fn prune(cache: &Cache, all: bool) -> anyhow::Result<ExitCode> {
    let report = cache.prune(all)?;
    println!(
        "removed {} image(s), {} layer(s), {} blob(s), {} config(s); freed {}",
        report.removed_images,
        report.removed_layers,
        report.removed_blobs,
        report.removed_configs,
        HumanBytes(report.freed_bytes)
    );
    Ok(ExitCode::SUCCESS)
}
