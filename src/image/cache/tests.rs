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

/// A docker-archive plan, as a Docker node is sent.
fn plan(
    cache: &Cache,
    ids: &[ImageId],
    omit: &HashSet<DiffId>,
    format: ArchiveFormat,
) -> ArchivePlan {
    let layout = ArchiveLayout::Docker {
        zstd_members: false,
    };
    cache.archive_plan(ids, omit, layout, format).unwrap()
}

fn written(cache: &Cache, plan: &ArchivePlan) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = cache.write_archive(plan, &mut out).unwrap();
    assert_eq!(bytes, out.len() as u64);
    out
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
    let zstd_plan = plan(&cache, &ids, &HashSet::new(), ArchiveFormat::Zstd);
    assert_eq!(zstd_plan.layers.len(), 3);
    assert_eq!(zstd_plan.saved_bytes, 0);

    let zst = written(&cache, &zstd_plan);
    assert_eq!(Some(zst.len() as u64), zstd_plan.wire_bytes());
    let raw = zstd::decode_all(&zst[..]).unwrap();
    assert_eq!(raw.len() as u64, zstd_plan.raw_bytes);
    let tar_plan = plan(&cache, &ids, &HashSet::new(), ArchiveFormat::Tar);
    let tar = written(&cache, &tar_plan);
    assert_eq!(Some(tar.len() as u64), tar_plan.wire_bytes());
    assert_eq!(tar, raw);
    let gz = written(
        &cache,
        &plan(&cache, &ids, &HashSet::new(), ArchiveFormat::Gzip),
    );
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
    let full = plan(&cache, &ids, &HashSet::new(), ArchiveFormat::Zstd);
    let base = layer(1).diff_id();
    let delta = plan(&cache, &ids, &HashSet::from([base]), ArchiveFormat::Zstd);
    assert_eq!(delta.omitted, vec![base]);
    assert_eq!(delta.layers.len(), 2);
    let base_info = cache.layer(&base).unwrap();
    assert_eq!(delta.saved_bytes, base_info.compressed_size);
    // The rest of the difference is the layer's tar header, compressed with its neighbours.
    let difference = full.compressed_bytes - delta.compressed_bytes;
    assert!((base_info.compressed_size..base_info.compressed_size + 512).contains(&difference));
    assert!(full.raw_bytes - delta.raw_bytes >= base_info.raw_size);

    let zst = written(&cache, &delta);
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

    let plan = plan(&cache, &ids, &HashSet::new(), ArchiveFormat::Zstd);
    let mut out = Vec::new();
    let err = cache.write_archive(&plan, &mut out).unwrap_err();
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
    let plan = plan(&cache, &ids, &HashSet::new(), ArchiveFormat::Zstd);
    let expected = plan.compressed_bytes;
    let mut out = Vec::new();
    cache
        .archive_reader(plan.clone())
        .read_to_end(&mut out)
        .await
        .unwrap();
    assert_eq!(out.len() as u64, expected);

    std::fs::remove_file(cache.layer_path(&layer(2).diff_id())).unwrap();
    let err = cache
        .archive_reader(plan)
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
        manifest: None,
        index: None,
        platform: None,
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

/// Every member of a plain tar: path → bytes.
fn members(tar: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    let mut out = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.insert(entry.path().unwrap().display().to_string(), bytes);
    }
    out
}

fn oci_plan(cache: &Cache, ids: &[ImageId], omit: &HashSet<DiffId>) -> ArchivePlan {
    cache
        .archive_plan(ids, omit, ArchiveLayout::Oci, ArchiveFormat::Tar)
        .unwrap()
}

fn layout_index(
    members: &std::collections::BTreeMap<String, Vec<u8>>,
) -> crate::image::archive::LayoutIndex {
    serde_json::from_slice(&members["index.json"]).unwrap()
}

/// A cache filled the way a registry fills it: an OCI layout with gzip layers.
fn registry_cache() -> (tempfile::TempDir, Cache, synth::OciLayout, Vec<u8>) {
    let (dir, cache) = cache();
    let mut bytes = Vec::new();
    let layout = synth::write_oci_layout(&two_images(), None, &mut bytes).unwrap();
    let report = cache.ingest(&bytes[..], "ctr export").unwrap();
    assert_eq!(
        report.blobs_stored, 3,
        "three gzip layer blobs kept as served"
    );
    assert_eq!(report.layers_stored, 0, "nothing recompressed");
    (dir, cache, layout, bytes)
}

#[test]
fn an_oci_layout_keeps_served_blobs_and_the_registry_manifest() {
    let (_dir, cache, layout, _) = registry_cache();
    for (i, id) in layout.ids.iter().enumerate() {
        assert!(cache.is_complete(id));
        let record = cache.record(id).unwrap().unwrap();
        assert_eq!(
            record.manifest.as_ref().unwrap().digest,
            layout.manifests[i]
        );
        assert_eq!(
            record.platform,
            Some(crate::image::platform::Platform::new(
                "linux", "amd64", None
            ))
        );
        let name = format!("reg:5000/app{}", i + 1);
        assert_eq!(
            record.repo_digests,
            [format!("{name}@{}", layout.manifests[i])],
            "findable by the registry's digest"
        );
        assert!(record.answers_to(&format!("{name}:v1")));
        for blob in cache.layer_blobs(&record).unwrap() {
            assert_eq!(blob.stored, Stored::Served);
            assert!(layout.layer_blobs.contains(&blob.descriptor.digest));
        }
    }
    assert!(
        object_names(&cache.root().join("layers"), ".zst")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_oci_archive_of_a_registry_image_carries_its_manifest_and_both_names_and_reingests() {
    let (_dir, cache, layout, original) = registry_cache();
    let plan = oci_plan(&cache, &layout.ids, &HashSet::new());
    let tar = written(&cache, &plan);
    assert_eq!(Some(tar.len() as u64), plan.wire_bytes());
    let archive = members(&tar);
    let served = members(&original);
    for (path, bytes) in &archive {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            assert_eq!(Digest::of(bytes).hex(), hex, "{path}");
            assert_eq!(
                Some(bytes),
                served.get(path),
                "{path} is byte for byte what was served"
            );
        }
    }
    assert_eq!(
        plan.names[0],
        [
            "reg:5000/app1:v1".to_string(),
            format!("reg:5000/app1@{}", layout.manifests[0])
        ]
    );
    let index = layout_index(&archive);
    let names: Vec<(String, Digest)> = index
        .manifests
        .iter()
        .map(|e| (e.annotations["io.containerd.image.name"].clone(), e.digest))
        .collect();
    assert_eq!(
        names,
        [
            ("reg:5000/app1:v1".to_string(), layout.manifests[0]),
            (
                format!("reg:5000/app1@{}", layout.manifests[0]),
                layout.manifests[0]
            ),
            ("reg:5000/app2:v1".to_string(), layout.manifests[1]),
            (
                format!("reg:5000/app2@{}", layout.manifests[1]),
                layout.manifests[1]
            ),
        ]
    );
    let (_dir2, copy, report) = reingest_tar(&tar);
    assert_eq!(
        report.images.iter().map(|i| i.id).collect::<Vec<_>>(),
        [layout.ids[0], layout.ids[0], layout.ids[1], layout.ids[1]]
    );
    let record = copy.record(&layout.ids[1]).unwrap().unwrap();
    assert_eq!(record.manifest.unwrap().digest, layout.manifests[1]);
}

fn reingest_tar(tar: &[u8]) -> (tempfile::TempDir, Cache, super::IngestReport) {
    let (dir, cache) = cache();
    let report = cache.ingest(tar, "archive").unwrap();
    (dir, cache, report)
}

#[test]
fn left_out_layers_are_missing_from_an_oci_archive_but_listed_in_its_manifest() {
    let (_dir, cache, layout, _) = registry_cache();
    let base = layer(1).diff_id();
    let plan = oci_plan(&cache, &layout.ids[1..], &HashSet::from([base]));
    assert_eq!(plan.omitted, [base]);
    let archive = members(&written(&cache, &plan));
    let record = cache.record(&layout.ids[1]).unwrap().unwrap();
    let blobs = cache.layer_blobs(&record).unwrap();
    assert!(!archive.contains_key(&format!(
        "blobs/sha256/{}",
        blobs[0].descriptor.digest.hex()
    )));
    assert!(archive.contains_key(&format!(
        "blobs/sha256/{}",
        blobs[1].descriptor.digest.hex()
    )));
    assert_eq!(plan.saved_bytes, blobs[0].descriptor.size);
}

#[test]
fn a_docker_save_image_gets_a_stable_synthesised_manifest_with_its_zstd_objects() {
    let (_dir, cache) = cache();
    let (bytes, ids) = archive_of(&two_images(), Layout::Classic);
    cache.ingest(&bytes[..], "docker save").unwrap();
    let first = members(&written(
        &cache,
        &oci_plan(&cache, &ids[..1], &HashSet::new()),
    ));
    let again = members(&written(
        &cache,
        &oci_plan(&cache, &ids[..1], &HashSet::new()),
    ));
    assert_eq!(first, again, "the same image gives the same archive");
    let index = layout_index(&first);
    assert_eq!(
        index.manifests.len(),
        1,
        "a tag entry, no digest entry: it has no registry digest"
    );
    let manifest = &first[&format!("blobs/sha256/{}", index.manifests[0].digest.hex())];
    let parsed = crate::image::manifest::parse(
        Some("application/vnd.oci.image.manifest.v1+json"),
        manifest.clone().into(),
    )
    .unwrap();
    let image = parsed.image().unwrap();
    assert_eq!(image.config.digest, ids[0]);
    for (blob, spec) in image.layers.iter().zip([layer(1), layer(2)]) {
        assert_eq!(blob.media_type, super::ZSTD_LAYER);
        let bytes = &first[&format!("blobs/sha256/{}", blob.digest.hex())];
        assert_eq!(
            Digest::of(&zstd::decode_all(&bytes[..]).unwrap()),
            spec.diff_id()
        );
    }
}

#[test]
fn docker_archives_pass_served_gzip_layers_through_in_every_format() {
    let (_dir, cache, layout, original) = registry_cache();
    let served = members(&original);
    for format in [ArchiveFormat::Zstd, ArchiveFormat::Tar] {
        let plan = plan(&cache, &layout.ids, &HashSet::new(), format);
        let out = written(&cache, &plan);
        assert_eq!(Some(out.len() as u64), plan.wire_bytes(), "{format:?}");
        let tar = match format {
            ArchiveFormat::Zstd => zstd::decode_all(&out[..]).unwrap(),
            _ => out,
        };
        let archive = members(&tar);
        let manifest: Vec<crate::image::archive::ManifestEntry> =
            serde_json::from_slice(&archive["manifest.json"]).unwrap();
        assert_eq!(manifest[0].repo_tags, ["reg:5000/app1:v1"]);
        for path in &manifest[1].layers {
            let hex = path.strip_suffix(".tar.gz").unwrap();
            assert_eq!(
                archive[path],
                served[&format!("blobs/sha256/{hex}")],
                "{format:?} {path}"
            );
        }
    }
}

#[test]
fn podman_archives_carry_layer_objects_as_zstd_members_and_full_tags() {
    let (_dir, cache) = cache();
    let (bytes, ids) = archive_of(&two_images(), Layout::Classic);
    cache.ingest(&bytes[..], "docker save").unwrap();
    let layout = ArchiveLayout::Docker { zstd_members: true };
    let plan = cache
        .archive_plan(&ids, &HashSet::new(), layout, ArchiveFormat::Tar)
        .unwrap();
    let archive = members(&written(&cache, &plan));
    let manifest: Vec<crate::image::archive::ManifestEntry> =
        serde_json::from_slice(&archive["manifest.json"]).unwrap();
    assert_eq!(manifest[0].repo_tags, ["reg:5000/app1:v1"]);
    let base = &archive[&manifest[0].layers[0]];
    assert_eq!(
        Digest::of(&zstd::decode_all(&base[..]).unwrap()),
        layer(1).diff_id()
    );
}

#[test]
fn a_multi_platform_index_gives_one_image_per_platform_under_one_tag() {
    let (_dir, cache) = cache();
    let images = [
        ImageSpec {
            repo_tags: vec![],
            layers: vec![layer(1), layer(2)],
        },
        ImageSpec {
            repo_tags: vec![],
            layers: vec![layer(1), layer(4)],
        },
    ];
    let mut bytes = Vec::new();
    let layout = synth::write_oci_layout(
        &images,
        Some(("reg:5000/multi:v1", &["amd64", "arm64"])),
        &mut bytes,
    )
    .unwrap();
    cache
        .ingest(&bytes[..], "ctr export --all-platforms")
        .unwrap();
    let index = layout.index.unwrap();
    let records: Vec<ImageRecord> = layout
        .ids
        .iter()
        .map(|id| cache.record(id).unwrap().unwrap())
        .collect();
    let archs: Vec<&str> = records
        .iter()
        .map(|r| r.platform.as_ref().unwrap().architecture())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    for record in &records {
        assert_eq!(
            record.repo_tags,
            ["reg:5000/multi:v1"],
            "the tag stays on both platforms"
        );
        assert_eq!(record.index.as_ref().unwrap().digest, index);
        assert_eq!(record.repo_digests, [format!("reg:5000/multi@{index}")]);
    }
    // An arm64 node gets the index (a digest reference names it) and its own manifest only.
    let archive = members(&written(
        &cache,
        &oci_plan(&cache, &layout.ids[1..], &HashSet::new()),
    ));
    assert!(archive.contains_key(&format!("blobs/sha256/{}", index.hex())));
    assert!(archive.contains_key(&format!("blobs/sha256/{}", layout.manifests[1].hex())));
    assert!(!archive.contains_key(&format!("blobs/sha256/{}", layout.manifests[0].hex())));
    let entries = layout_index(&archive).manifests;
    assert!(
        entries
            .iter()
            .all(|e| e.digest == index && e.media_type.ends_with("index.v1+json"))
    );
}

#[test]
fn verify_checks_served_blobs_and_prune_keeps_what_images_refer_to() {
    let (_dir, cache, layout, _) = registry_cache();
    let report = cache.verify().unwrap();
    assert_eq!(
        (report.blobs, report.problems.len()),
        (5, 0),
        "3 layers, 2 manifests"
    );
    let stray = b"nobody refers to this";
    cache
        .store_blob(&stray[..], &Digest::of(stray), stray.len() as u64)
        .unwrap();
    let pruned = cache.prune(false).unwrap();
    assert_eq!(pruned.removed_blobs, 1);
    assert!(layout.ids.iter().all(|id| cache.is_complete(id)));
    let victim = cache.blob_path(&layout.layer_blobs[1]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let report = cache.verify().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&layout.layer_blobs[1].to_string())),
        "{:?}",
        report.problems
    );
    assert!(
        !cache.is_complete(&layout.ids[0]),
        "the damaged blob was moved aside"
    );
}
