//! Cache behaviour on synthetic archives (no daemon needed); the end-to-end proofs with real
//! `docker load` live in tests/cache_*.rs.

use std::collections::HashSet;
use std::io::Read;

use super::*;
use crate::image::synth::{self, ImageSpec, LayerSpec, Layout};

fn layer(seed: u64) -> LayerSpec {
    LayerSpec {
        seed,
        files: 4,
        file_size: 3000,
    }
}

/// base ← app1, base ← app2: the base layer is shared.
fn two_images() -> Vec<ImageSpec> {
    vec![
        ImageSpec {
            repo_tags: vec!["reg:5000/app1:v1".into()],
            layers: vec![layer(1), layer(2)],
        },
        ImageSpec {
            repo_tags: vec!["reg:5000/app2:v1".into()],
            layers: vec![layer(1), layer(3)],
        },
    ]
}

fn archive_of(images: &[ImageSpec], layout: Layout) -> (Vec<u8>, Vec<ImageId>) {
    let mut bytes = Vec::new();
    let ids = synth::write_archive(images, layout, &mut bytes).unwrap();
    (bytes, ids)
}

fn cache() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), Some(3)).unwrap();
    (dir, cache)
}

#[test]
fn ingest_stores_shared_layers_once_in_either_layout() {
    for layout in [Layout::Classic, Layout::Oci] {
        let (_dir, cache) = cache();
        let (bytes, ids) = archive_of(&two_images(), layout);
        let report = cache.ingest(&bytes[..], "test").unwrap();
        assert_eq!(report.layers_stored, 3, "{layout:?}");
        assert_eq!(report.images.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
        assert!(report.images.iter().all(|i| i.new));
        assert_eq!(
            object_names(&cache.root().join("layers"), ".zst")
                .unwrap()
                .len(),
            3
        );
        for id in &ids {
            assert!(cache.is_complete(id));
        }
        assert_eq!(cache.require("reg:5000/app2:v1").unwrap().id, ids[1]);
        assert_eq!(cache.require(&ids[0].hex()[..12]).unwrap().id, ids[0]);
    }
}

#[test]
fn a_second_ingest_reuses_everything() {
    let (_dir, cache) = cache();
    let (bytes, _) = archive_of(&two_images(), Layout::Classic);
    cache.ingest(&bytes[..], "first").unwrap();
    let again = cache.ingest(&bytes[..], "second").unwrap();
    assert_eq!((again.layers_stored, again.layers_reused), (0, 3));
    assert!(again.images.iter().all(|i| !i.new));
}

#[test]
fn gzip_and_zstd_inputs_are_sniffed() {
    let (bytes, ids) = archive_of(&two_images(), Layout::Classic);
    let gz = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &bytes).unwrap();
        enc.finish().unwrap()
    };
    for input in [gz, zstd::encode_all(&bytes[..], 1).unwrap()] {
        let (_dir, cache) = cache();
        let report = cache.ingest(&input[..], "compressed").unwrap();
        assert_eq!(report.images.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
    }
}

#[test]
fn a_layer_that_does_not_match_its_config_is_rejected() {
    let (mut bytes, _) = archive_of(&two_images(), Layout::Classic);
    // Flip a byte inside the first layer's first file: still a valid tar, wrong diff ID.
    bytes[512 + 512 + 10] ^= 0x01;
    let (_dir, cache) = cache();
    let err = cache.ingest(&bytes[..], "broken.tar").unwrap_err();
    assert!(
        err.to_string().contains("broken.tar") && err.to_string().contains("expects"),
        "{err}"
    );
    assert!(cache.images().unwrap().is_empty());
}

/// Decompress an exported archive and read it back as a docker-archive.
fn reingest(archive_zstd: &[u8]) -> (tempfile::TempDir, Cache, IngestReport) {
    let (dir, cache) = cache();
    let report = cache.ingest(archive_zstd, "export").unwrap();
    (dir, cache, report)
}

#[test]
fn export_round_trips_in_all_formats_with_exact_plan_sizes() {
    let (_dir, cache) = cache();
    let (bytes, ids) = archive_of(&two_images(), Layout::Classic);
    cache.ingest(&bytes[..], "test").unwrap();
    let plan = cache.archive_plan(&ids, &HashSet::new()).unwrap();
    assert_eq!(plan.layers.len(), 3);
    assert_eq!(plan.saved_bytes, 0);

    let mut zst = Vec::new();
    assert_eq!(
        cache
            .write_archive(&plan, ArchiveFormat::Zstd, &mut zst)
            .unwrap(),
        plan.compressed_bytes
    );
    assert_eq!(zst.len() as u64, plan.compressed_bytes);
    let raw = zstd::decode_all(&zst[..]).unwrap();
    assert_eq!(raw.len() as u64, plan.raw_bytes);
    let mut tar = Vec::new();
    cache
        .write_archive(&plan, ArchiveFormat::Tar, &mut tar)
        .unwrap();
    assert_eq!(tar, raw);
    let mut gz = Vec::new();
    cache
        .write_archive(&plan, ArchiveFormat::Gzip, &mut gz)
        .unwrap();
    let mut gunzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut gunzipped)
        .unwrap();
    assert_eq!(gunzipped, raw);

    let (_dir2, _copy, report) = reingest(&zst);
    assert_eq!(report.images.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        report.images[0].repo_tags,
        vec!["reg:5000/app1:v1".to_string()]
    );
}

#[test]
fn omitted_layers_stay_in_the_manifest_and_their_bytes_are_saved() {
    let (_dir, cache) = cache();
    let (bytes, ids) = archive_of(&two_images(), Layout::Classic);
    cache.ingest(&bytes[..], "test").unwrap();
    let full = cache.archive_plan(&ids, &HashSet::new()).unwrap();
    let base = layer(1).diff_id();
    let delta = cache.archive_plan(&ids, &HashSet::from([base])).unwrap();
    assert_eq!(delta.omitted, vec![base]);
    assert_eq!(delta.layers.len(), 2);
    let base_info = cache.layer(&base).unwrap();
    assert_eq!(delta.saved_bytes, base_info.compressed_size);
    // The rest of the difference is the layer's tar header, compressed with its neighbours.
    let difference = full.compressed_bytes - delta.compressed_bytes;
    assert!((base_info.compressed_size..base_info.compressed_size + 512).contains(&difference));
    assert!(full.raw_bytes - delta.raw_bytes >= base_info.raw_size);

    let mut zst = Vec::new();
    cache
        .write_archive(&delta, ArchiveFormat::Zstd, &mut zst)
        .unwrap();
    let raw = zstd::decode_all(&zst[..]).unwrap();
    let mut archive = tar::Archive::new(&raw[..]);
    let mut names = Vec::new();
    let mut manifest = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        if name == "manifest.json" {
            entry.read_to_end(&mut manifest).unwrap();
        }
        names.push(name);
    }
    let base_member = crate::image::archive::layer_member(&base);
    assert!(!names.contains(&base_member));
    let manifest: Vec<crate::image::archive::ManifestEntry> =
        serde_json::from_slice(&manifest).unwrap();
    assert!(manifest.iter().all(|m| m.layers[0] == base_member));
}

#[test]
fn a_flipped_byte_in_a_cached_layer_stops_the_export_and_is_moved_aside() {
    let (_dir, cache) = cache();
    let (bytes, ids) = archive_of(&two_images(), Layout::Classic);
    cache.ingest(&bytes[..], "test").unwrap();
    let victim = layer(3).diff_id();
    let path = cache.layer_path(&victim);
    let mut object = std::fs::read(&path).unwrap();
    object[30] ^= 0x40;
    std::fs::write(&path, object).unwrap();

    let plan = cache.archive_plan(&ids, &HashSet::new()).unwrap();
    let mut out = Vec::new();
    let err = cache
        .write_archive(&plan, ArchiveFormat::Zstd, &mut out)
        .unwrap_err();
    assert!(matches!(err, CacheError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&victim.to_string()), "{err}");
    // Nothing of the damaged layer was written: the output ends before its frames.
    let victim_info = super::layer::read_info(
        &cache
            .root()
            .join("corrupt")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
        victim,
    )
    .unwrap();
    assert!((out.len() as u64) < plan.compressed_bytes - victim_info.compressed_size + 1);
    assert!(!path.exists());
    assert!(!cache.is_complete(&ids[1]));
    assert!(cache.is_complete(&ids[0]));
    // The next ingest (pull) stores it again.
    let report = cache.ingest(&bytes[..], "again").unwrap();
    assert_eq!(report.layers_stored, 1);
    assert!(cache.verify().unwrap().problems.is_empty());
}

#[test]
fn verify_reports_damaged_and_missing_objects() {
    let (_dir, cache) = cache();
    let (bytes, ids) = archive_of(&two_images(), Layout::Classic);
    cache.ingest(&bytes[..], "test").unwrap();
    assert_eq!(cache.verify().unwrap().problems, Vec::<String>::new());
    std::fs::write(cache.config_path(&ids[0]), b"{}").unwrap();
    std::fs::remove_file(cache.layer_path(&layer(2).diff_id())).unwrap();
    let report = cache.verify().unwrap();
    // The damaged config, then (as it was moved aside) the image lacking it, and the lost layer.
    assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&format!("config of image {}", ids[0])))
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&layer(2).diff_id().to_string()))
    );
}

#[test]
fn a_tag_moves_to_the_newer_image() {
    let (_dir, cache) = cache();
    let old = ImageSpec {
        repo_tags: vec!["app:v1".into()],
        layers: vec![layer(1)],
    };
    let new = ImageSpec {
        repo_tags: vec!["app:v1".into()],
        layers: vec![layer(1), layer(2)],
    };
    let (first, old_ids) = archive_of(&[old], Layout::Classic);
    let (second, new_ids) = archive_of(&[new], Layout::Classic);
    cache.ingest(&first[..], "old").unwrap();
    cache.ingest(&second[..], "new").unwrap();
    assert_eq!(cache.require("app:v1").unwrap().id, new_ids[0]);
    assert!(
        cache
            .record(&old_ids[0])
            .unwrap()
            .unwrap()
            .repo_tags
            .is_empty()
    );
}

#[test]
fn prune_drops_only_unreferenced_objects_unless_all() {
    let (_dir, cache) = cache();
    let (bytes, ids) = archive_of(&two_images(), Layout::Classic);
    cache.ingest(&bytes[..], "test").unwrap();
    std::fs::remove_file(cache.record_path(&ids[1])).unwrap();
    let report = cache.prune(false).unwrap();
    assert_eq!((report.removed_layers, report.removed_configs), (1, 1));
    assert!(cache.is_complete(&ids[0]));
    let report = cache.prune(true).unwrap();
    assert_eq!((report.removed_images, report.removed_layers), (1, 2));
    assert!(cache.images().unwrap().is_empty());
}

#[test]
fn concurrent_ingests_into_one_cache_do_not_corrupt_it() {
    let (_dir, cache) = cache();
    let (bytes, ids) = archive_of(&two_images(), Layout::Classic);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| cache.ingest(&bytes[..], "racer").unwrap());
        }
    });
    assert!(cache.verify().unwrap().problems.is_empty());
    assert_eq!(
        object_names(&cache.root().join("layers"), ".zst")
            .unwrap()
            .len(),
        3
    );
    assert_eq!(cache.images().unwrap().len(), ids.len());
    let leftovers: Vec<_> = std::fs::read_dir(cache.root().join("layers"))
        .unwrap()
        .filter(|e| atomic::is_temp_name(&e.as_ref().unwrap().file_name().to_string_lossy()))
        .collect();
    assert!(leftovers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_reader_streams_and_reports_failures_as_errors() {
    use tokio::io::AsyncReadExt;
    let (_dir, cache) = cache();
    let (bytes, ids) = archive_of(&two_images(), Layout::Classic);
    cache.ingest(&bytes[..], "test").unwrap();
    let plan = cache.archive_plan(&ids, &HashSet::new()).unwrap();
    let expected = plan.compressed_bytes;
    let mut out = Vec::new();
    cache
        .archive_reader(plan.clone(), ArchiveFormat::Zstd)
        .read_to_end(&mut out)
        .await
        .unwrap();
    assert_eq!(out.len() as u64, expected);

    std::fs::remove_file(cache.layer_path(&layer(2).diff_id())).unwrap();
    let err = cache
        .archive_reader(plan, ArchiveFormat::Zstd)
        .read_to_end(&mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&layer(2).diff_id().to_string()),
        "{err}"
    );
}

#[test]
fn only_layers_whose_whole_chain_the_node_holds_are_omitted() {
    let [a, b, c, d] = [1, 2, 3, 4].map(|seed| layer(seed).diff_id());
    let record = |diff_ids: Vec<DiffId>| ImageRecord {
        id: Digest::of(format!("{diff_ids:?}").as_bytes()),
        repo_tags: vec![],
        repo_digests: vec![],
        diff_ids,
    };
    // The node holds a ← b. Image 1 is a ← b ← c, image 2 is d ← b (b on another chain).
    let node = vec![vec![a, b]];
    assert_eq!(
        layers_to_omit(&[record(vec![a, b, c])], &node),
        HashSet::from([a, b])
    );
    assert_eq!(
        layers_to_omit(&[record(vec![a, b, c]), record(vec![d, b])], &node),
        HashSet::from([a])
    );
    assert!(layers_to_omit(&[record(vec![b, a])], &node).is_empty());
}

#[test]
fn symlinked_layers_of_docker_save_are_followed() {
    // docker save writes a layer once and symlinks other occurrences to it.
    let mut layer_tar = Vec::new();
    layer(9).write_tar(&mut layer_tar).unwrap();
    let diff_id = Digest::of(&layer_tar);
    let configs: Vec<Vec<u8>> = (0..2)
        .map(|n| {
            serde_json::to_vec(
                &serde_json::json!({"n": n, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}),
            )
            .unwrap()
        })
        .collect();
    let mut builder = tar::Builder::new(Vec::new());
    let file = |builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, data).unwrap();
    };
    file(&mut builder, "aaa/layer.tar", &layer_tar);
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder
        .append_link(&mut link, "bbb/layer.tar", "../aaa/layer.tar")
        .unwrap();
    let mut manifest = Vec::new();
    for (n, (config, dir)) in configs.iter().zip(["aaa", "bbb"]).enumerate() {
        let name = format!("{}.json", Digest::of(config).hex());
        file(&mut builder, &name, config);
        manifest.push(serde_json::json!({"Config": name, "RepoTags": [format!("img{n}:1")], "Layers": [format!("{dir}/layer.tar")]}));
    }
    file(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let bytes = builder.into_inner().unwrap();
    let (_dir, cache) = cache();
    let report = cache.ingest(&bytes[..], "symlinks").unwrap();
    assert_eq!((report.images.len(), report.layers_stored), (2, 1));
    assert!(cache.is_complete(&cache.require("img1:1").unwrap().id));
}
