//! `dropship cache`: list, import, export, verify and prune the local image cache.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::HumanBytes;
use serde::Serialize;

use crate::cli::{CacheCommand, CacheDirArgs};
use crate::image::compression::zstd_level_for_gzip;
use crate::image::{ArchiveFormat, ArchiveLayout, Cache, Digest, ImageId, LayerBlob};
use crate::push::kubespray::DownloadSettings;

pub fn run(run: &super::Run, command: &CacheCommand) -> anyhow::Result<ExitCode> {
    let open = |args: &CacheDirArgs| open(run, args);
    match command {
        // Listing a cache that does not exist shows it empty, and does not create it.
        CacheCommand::List { cache, json } => match existing(run, cache)? {
            Some(cache) => list(&cache, *json),
            None => print_listing(&Listing::empty(&cache_dir(run, cache)?), *json),
        },
        CacheCommand::Import { cache, files } => {
            for file in files {
                if !file.is_file() {
                    return Err(super::UsageError(format!(
                        "{}: no such file to import",
                        file.display()
                    ))
                    .into());
                }
            }
            import(&open(cache)?, files)
        }
        CacheCommand::Export {
            cache,
            images,
            output,
            zstd,
        } => export(&open(cache)?, images, output, *zstd),
        CacheCommand::Verify { cache } => verify(&open(cache)?),
        CacheCommand::Prune { cache, all, yes } => {
            let cache = open(cache)?;
            if *all && !yes {
                confirm_prune_all(&cache)?;
            }
            prune(&cache, *all)
        }
    }
}

/// `--cache-dir`, else (with `-i`, `ANSIBLE_INVENTORY` or ansible.cfg's `inventory`) the
/// inventory's `download_cache_dir`, else the default; new layers are compressed at the level
/// `download_compress` maps to.
fn open(run: &super::Run, args: &CacheDirArgs) -> anyhow::Result<Cache> {
    let settings = download_settings(run)?;
    let dir = Cache::resolve_dir(args.cache_dir.as_deref(), settings.cache_dir.as_deref());
    Cache::open(&dir, Some(zstd_level_for_gzip(settings.compress)))
        .with_context(|| format!("cannot open the image cache at {}", dir.display()))
}

fn download_settings(run: &super::Run) -> anyhow::Result<DownloadSettings> {
    let sources = run.inventory_sources(false);
    Ok(if sources.is_empty() {
        DownloadSettings::default()
    } else {
        DownloadSettings::from_inventory(&run.load_inventory_from(sources)?)?
    })
}

fn cache_dir(run: &super::Run, args: &CacheDirArgs) -> anyhow::Result<std::path::PathBuf> {
    let settings = download_settings(run)?;
    Ok(Cache::resolve_dir(
        args.cache_dir.as_deref(),
        settings.cache_dir.as_deref(),
    ))
}

/// The cache, if its directory exists.
fn existing(run: &super::Run, args: &CacheDirArgs) -> anyhow::Result<Option<Cache>> {
    if cache_dir(run, args)?.is_dir() {
        open(run, args).map(Some)
    } else {
        Ok(None)
    }
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
    print_listing(&listing, json)
}

impl Listing {
    fn empty(dir: &Path) -> Listing {
        Listing {
            cache_dir: dir.display().to_string(),
            images: Vec::new(),
            layers: 0,
            stored_bytes: 0,
            saved_by_sharing: 0,
        }
    }
}

/// `HumanBytes` ignores width and alignment: format it first.
fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

fn print_listing(listing: &Listing, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        super::print_stdout(&(serde_json::to_string_pretty(&listing)? + "\n"))?;
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
                .map_or_else(|| "(served)".to_string(), bytes),
            bytes(image.compressed_bytes),
            bytes(image.shared_bytes),
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
    let to_stdout = output == Path::new("-");
    if to_stdout && std::io::stdout().is_terminal() {
        // As `docker save`: binary data on a terminal is never what was meant.
        return Err(super::UsageError(
            "cache export -o -: refusing to write an archive to a terminal; redirect stdout \
             or name a file"
                .into(),
        )
        .into());
    }
    let plan = cache.archive_plan(&ids, &HashSet::new(), layout, format)?;
    let written = if to_stdout {
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

/// `prune --all` empties the cache: asked on a terminal, refused without one (pass --yes).
fn confirm_prune_all(cache: &Cache) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let root = cache.root().display().to_string();
    if !std::io::stdin().is_terminal() {
        return Err(super::UsageError(format!(
            "cache prune --all removes every image in {root}: pass --yes to confirm \
             (no terminal to ask on)"
        ))
        .into());
    }
    eprint!("Remove every image and layer in {root}? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("cache prune --all: not confirmed, nothing removed")
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
