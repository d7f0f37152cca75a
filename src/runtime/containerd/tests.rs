use super::*;
use crate::push::decide::testing::image;
use crate::push::transfer::{Landing, VERIFY_MARK};
use crate::runtime::Runtime;

fn platform(text: &str) -> Platform {
    Platform::parse(text).unwrap()
}

/// The facts of node1 of the test bed: containerd 1.6.20 with CRI, overlayfs, two images
/// pulled with ctr (app1, and the multi-arch index for linux/amd64).
fn captured() -> Facts {
    crate::facts::parse(include_str!(
        "../../../tests/fixtures/facts-node-containerd.txt"
    ))
    .unwrap()
}

fn digest(hex: &str) -> Digest {
    Digest::parse(hex).unwrap()
}

const APP1_CONFIG: &str = "sha256:be37bfa136d56bc41993027fad709fc2155f5443d28f01511d5060a214de2a6f";
const APP1_MANIFEST: &str =
    "sha256:dff0128fcd4e926c88af806dd6b0e0c18c750c140cb09e32738fecee1e87ded2";
const MULTIARCH_INDEX: &str =
    "sha256:b72ffd7dddba7799e92555397085b0c5f1e1bfcca3812a432ca50298a7a4122c";
const MULTIARCH_AMD64_CONFIG: &str =
    "sha256:adb593e813ab6c6bd36cea68091e6926a5c35dca635f4ca73a8a8f3b7a41bf13";
/// app1's layers: (blob as pulled, diff ID), base first, from the content labels.
const APP1_LAYERS: [(&str, &str); 4] = [
    (
        "sha256:ab344c31d39821f138e4c5eb58bd423ee04e07d344534a70f26e967177e8efd5",
        "sha256:efe04b92ce568ec92ef40b3a6003605eb35d0cefdc1a20c6252c4bc8cdda484d",
    ),
    (
        "sha256:871f1a4f8e56a2f30072e3330fef63c1f5cbdeef0d24ecfdab57c50f64752847",
        "sha256:dded6a52f96293b75647fa917430098cd650d998027b2d25feefa6d5e22965fb",
    ),
    (
        "sha256:ea0da7732d39d08c7bd314c49bbff970b6c607b3c15da47664f578ce5ce4a0c1",
        "sha256:ff3a6756e99dc9becc138341c33ef82aee00740c555b98fedd6f14235decc889",
    ),
    (
        "sha256:4835809194809e4bc746d792a167cc571efb9cdc4b6dfbcbc3f926cabcedd2e4",
        "sha256:a70d07356fda671cd303f4de68e1c54bdadefed199f23940e5d563ec00e905bb",
    ),
];

/// app1 as the cache would hold it.
fn app1() -> WantedImage {
    let mut app1 = image("dropship/app1", &[]);
    app1.record.id = digest(APP1_CONFIG);
    app1.record.diff_ids = APP1_LAYERS.iter().map(|(_, d)| digest(d)).collect();
    app1.blobs = APP1_LAYERS.iter().map(|(b, _)| digest(b)).collect();
    app1
}

#[test]
fn the_captured_listing_gives_names_configs_blobs_and_snapshots() {
    let facts = captured();
    let containerd = facts.containerd.as_ref().unwrap();
    assert_eq!(containerd.address, "/run/containerd/containerd.sock");
    assert!(containerd.answers && containerd.cri);
    assert_eq!(containerd.detail, "1.6.20~ds1");
    assert_eq!(
        containerd.config,
        ContainerdConfig {
            version: Some(2),
            snapshotter: Some("overlayfs".into()),
            discard_unpacked_layers: false,
            hosts_dir: Some("/etc/containerd/certs.d".into()),
        }
    );
    let store = &containerd.store;
    let names: Vec<&str> = store.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "registry.testbed:5000/dropship/app1:v1",
            "registry.testbed:5000/dropship/multiarch:v1"
        ],
        "the CRI's image-ID references are not names"
    );
    assert_eq!(store.blobs.len(), 11);
    assert_eq!(store.snapshots.len(), 6);
    // A manifest leads to its config, an index to its (amd64) manifest's.
    assert_eq!(
        store.configs(&digest(APP1_MANIFEST)),
        HashSet::from([digest(APP1_CONFIG)])
    );
    assert_eq!(
        store.configs(&digest(MULTIARCH_INDEX)),
        HashSet::from([digest(MULTIARCH_AMD64_CONFIG)])
    );
    assert!(store.unpacked(&digest(APP1_CONFIG), "overlayfs"));
    assert!(!store.unpacked(&digest(APP1_CONFIG), "native"));
    assert_eq!(Runtime::detect(&facts), Some(Runtime::Containerd));
    assert_eq!(Runtime::Containerd.ready(&facts), Ok(()));
}

#[test]
fn the_config_comes_from_the_labels_without_the_cris_id_references() {
    let mut store = captured().containerd.unwrap().store;
    store.id_refs.clear();
    assert_eq!(
        store.configs(&digest(MULTIARCH_INDEX)),
        HashSet::from([digest(MULTIARCH_AMD64_CONFIG)])
    );
}

#[test]
fn chain_ids_are_the_snapshot_keys() {
    let app1 = app1();
    let chains = chain_ids(&app1.record.diff_ids);
    let store = captured().containerd.unwrap().store;
    assert_eq!(
        chains[0], app1.record.diff_ids[0],
        "the base's chain is its diff ID"
    );
    for chain in &chains {
        assert!(
            store.snapshots.contains(chain),
            "{chain} is a committed snapshot"
        );
    }
    assert_eq!(
        chains[3],
        digest("sha256:81c02194002b76f01ae09d49d5cc1e5ed8954783aaa85dc92253106e06c6dbbf")
    );
}

#[test]
fn present_means_the_name_leads_to_the_config_and_the_digest_name_exists_when_known() {
    let facts = captured();
    let node = holdings(&facts);
    let app1 = app1();
    assert!(node.has(&app1));
    let mut other = app1.clone();
    other.record.id = Digest::of(b"another build");
    assert!(!node.has(&other), "the same tag with another config");
    let mut renamed = app1.clone();
    renamed.reference = ImageRef::parse("registry.testbed:5000/dropship/app1:v2").unwrap();
    assert!(!node.has(&renamed), "the same config under another tag");
    // ctr pull made no repo@digest name: where the cache knows the registry digest, the node
    // still needs it (a nearly empty archive gives it).
    let mut with_digest = app1.clone();
    with_digest.registry_digest = Some(digest(APP1_MANIFEST));
    assert!(!node.has(&with_digest));
    let mut by_digest = app1.clone();
    by_digest.reference = ImageRef::parse(&format!(
        "registry.testbed:5000/dropship/app1@{APP1_MANIFEST}"
    ))
    .unwrap();
    assert!(!node.has(&by_digest), "no repo@digest name on the node");
    assert!(!holdings(&Facts::default()).has(&app1));
}

#[test]
fn a_layer_is_held_by_its_blob_or_its_chains_snapshot() {
    let facts = captured();
    let node = holdings(&facts);
    let app1 = app1();
    // A new version of app1: the same base and lib, a new top layer.
    let mut bumped = app1.clone();
    bumped.record.id = Digest::of(b"v2");
    bumped.record.diff_ids[3] = Digest::of(b"code v2");
    bumped.blobs[3] = Digest::of(b"blob code v2");
    let held = node.held_layers(&[&bumped]);
    assert_eq!(held, app1.record.diff_ids[..3].iter().copied().collect());
    // Blobs sent in another compression than the node's (a zstd object): the snapshots
    // still hold them, as on a node that discards unpacked layers.
    let mut recompressed = bumped.clone();
    recompressed.blobs = recompressed
        .blobs
        .iter()
        .map(|b| Digest::of(b.as_bytes()))
        .collect();
    assert_eq!(node.held_layers(&[&recompressed]), held);
    // A held diff ID on another stack is a different chain: only the blob counts there.
    let mut restacked = recompressed.clone();
    restacked.record.diff_ids.swap(0, 1);
    restacked.blobs.swap(0, 1);
    assert!(node.held_layers(&[&restacked]).is_empty());
    let mut by_blob = restacked.clone();
    by_blob.blobs[0] = digest(APP1_LAYERS[1].0);
    assert_eq!(
        node.held_layers(&[&by_blob]),
        HashSet::from([by_blob.record.diff_ids[0]])
    );
    // A layer needed by one image and held for another is sent.
    let mut needs_base = image("fresh", &["x"]);
    needs_base.record.diff_ids = vec![Digest::of(b"other base"), app1.record.diff_ids[0]];
    let both = node.held_layers(&[&bumped, &needs_base]);
    assert_eq!(both, app1.record.diff_ids[1..3].iter().copied().collect());
}

#[test]
fn versions_from_distributions_and_release_binaries() {
    let v = |text| Version::parse(text).unwrap();
    assert_eq!(
        v("1.6.20~ds1"),
        Version {
            major: 1,
            minor: 6,
            patch: 20
        }
    );
    assert_eq!(
        v("v2.0.0"),
        Version {
            major: 2,
            minor: 0,
            patch: 0
        }
    );
    assert_eq!(
        v("2.1.0-rc.1"),
        Version {
            major: 2,
            minor: 1,
            patch: 0
        }
    );
    assert_eq!(
        v("1.7.3-0ubuntu1"),
        Version {
            major: 1,
            minor: 7,
            patch: 3
        }
    );
    assert_eq!(Version::parse("no containerd socket at /x"), None);
    assert!(!v("1.6.20").honours_pin() && v("1.6.25").honours_pin());
    assert!(!v("1.7.9").honours_pin() && v("1.7.10").honours_pin());
    assert!(v("2.0.0").honours_pin());
}

fn node(version: &str, snapshotter: &str) -> ContainerdFacts {
    ContainerdFacts {
        address: "/run/containerd/containerd.sock".into(),
        answers: true,
        detail: version.into(),
        cri: true,
        config: ContainerdConfig {
            snapshotter: Some(snapshotter.into()),
            ..ContainerdConfig::default()
        },
        store: Store::default(),
    }
}

#[test]
fn containerd_1_imports_locally_into_the_cris_snapshotter_and_pins_with_a_second_command() {
    for version in ["1.6.20~ds1", "1.7.3"] {
        let facts = node(version, "overlayfs");
        assert_eq!(
            facts.import_args(
                &platform("linux/amd64"),
                Some(&platform("linux/amd64")),
                true
            ),
            [
                "images",
                "import",
                "--platform",
                "linux/amd64",
                "--snapshotter",
                "overlayfs",
                "-"
            ],
            "{version}: no --local (1.6 lacks it, 1.7 defaults to it), no --label"
        );
    }
    let facts = node("1.6.20~ds1", "native");
    let expected = [Expected {
        id: digest(APP1_CONFIG),
        names: vec![
            "registry.testbed:5000/dropship/app1:v1".into(),
            format!("registry.testbed:5000/dropship/app1@{APP1_MANIFEST}"),
        ],
    }];
    let arm64 = platform("linux/arm64/v8");
    let request = LoadRequest {
        format: ArchiveFormat::Tar,
        landing: &Landing::Stream,
        size: None,
        expected: &expected,
        pin: true,
        platform: None,
        node: &arm64,
        become_: None,
    };
    let loader = facts.loader(&request);
    assert_eq!(
        loader.stdin,
        "ctr -a '/run/containerd/containerd.sock' -n k8s.io 'images' 'import' '--platform' 'linux/arm64/v8' '--snapshotter' 'native' '-'",
        "without the images' platform: the node's"
    );
    let amd64 = platform("linux/amd64");
    let for_amd64 = LoadRequest {
        platform: Some(&amd64),
        ..request
    };
    assert!(
        facts
            .loader(&for_amd64)
            .stdin
            .contains("'--platform' 'linux/amd64'"),
        "the images' platform wins: the archive holds only theirs"
    );
    let request = LoadRequest {
        platform: None,
        ..for_amd64
    };
    assert_eq!(
        loader.after.as_deref(),
        Some(
            "for n in 'registry.testbed:5000/dropship/app1:v1' 'registry.testbed:5000/dropship/app1@sha256:dff0128fcd4e926c88af806dd6b0e0c18c750c140cb09e32738fecee1e87ded2'; do ctr -a '/run/containerd/containerd.sock' -n k8s.io images label \"$n\" io.cri-containerd.pinned=pinned >/dev/null; done"
        )
    );
    let unpinned = LoadRequest {
        pin: false,
        ..request
    };
    assert_eq!(facts.loader(&unpinned).after, None);
}

use crate::image::ArchiveFormat;

#[test]
fn containerd_2_uses_the_transfer_service_where_it_unpacks_and_local_elsewhere() {
    let facts = node("v2.1.0", "overlayfs");
    assert_eq!(
        facts.import_args(
            &platform("linux/amd64"),
            Some(&platform("linux/amd64")),
            true
        ),
        [
            "images",
            "import",
            "--platform",
            "linux/amd64",
            "--snapshotter",
            "overlayfs",
            "--label",
            "io.cri-containerd.pinned=pinned",
            "-"
        ]
    );
    // Another snapshotter, or another platform than the host's: not in the transfer
    // service's default unpack_config, which would skip the unpack without a word.
    let native = node("2.0.0", "native");
    assert_eq!(
        native.import_args(
            &platform("linux/amd64"),
            Some(&platform("linux/amd64")),
            false
        )[..3],
        ["images", "import", "--local"]
    );
    assert_eq!(
        facts.import_args(
            &platform("linux/arm64"),
            Some(&platform("linux/amd64")),
            false
        )[..3],
        ["images", "import", "--local"]
    );
    let expected: [Expected; 0] = [];
    let amd64 = platform("linux/amd64");
    let request = LoadRequest {
        format: ArchiveFormat::Tar,
        landing: &Landing::Stream,
        size: None,
        expected: &expected,
        pin: true,
        platform: Some(&amd64),
        node: &amd64,
        become_: None,
    };
    assert_eq!(facts.loader(&request).after, None, "--label did it");
}

#[test]
fn the_load_command_imports_then_lists_with_the_same_words_the_facts_use() {
    let mut facts = captured();
    facts.containerd.as_mut().unwrap().address = "/run/k8s/containerd.sock".into();
    let expected: [Expected; 0] = [];
    let amd64 = platform("linux/amd64");
    let command = Runtime::Containerd.load_command(
        &facts,
        &LoadRequest {
            format: ArchiveFormat::Tar,
            landing: &Landing::Stream,
            size: Some(10),
            expected: &expected,
            pin: false,
            platform: None,
            node: &amd64,
            become_: Some(&crate::ssh::Become { user: None }),
        },
    );
    let rendered = command.render();
    assert!(rendered.starts_with("'sudo' '-n' "), "{rendered}");
    assert!(
        rendered.contains("-n k8s.io '\\''images'\\'' '\\''import'\\''"),
        "{rendered}"
    );
    assert!(
        rendered.contains(&format!("echo '\\''{VERIFY_MARK}'\\''")),
        "{rendered}"
    );
    assert!(rendered.contains("content ls"), "{rendered}");
}

#[test]
fn a_failed_import_removes_the_names_it_was_creating() {
    let facts = node("1.6.20", "overlayfs");
    let expected = [
        Expected {
            id: digest(APP1_CONFIG),
            names: vec![
                "registry.testbed:5000/dropship/app1:v1".into(),
                "registry.testbed:5000/dropship/app1@sha256:1".into(),
            ],
        },
        Expected {
            id: digest(APP2_CONFIG),
            names: vec![APP2_CONFIG.into()],
        },
    ];
    assert_eq!(
        facts.remove_command(&expected).render(),
        RemoteCommand::shell(
            "ctr -a '/run/containerd/containerd.sock' -n k8s.io images rm 'registry.testbed:5000/dropship/app1:v1' 'registry.testbed:5000/dropship/app1@sha256:1' >/dev/null 2>&1 || true"
        )
        .render(),
        "names, not the ID standing for an unnamed image"
    );
}

/// What the verify script printed after a real import on node1 (app2 from `docker save`).
const AFTER_IMPORT: &str = include_str!("../../../tests/fixtures/runtime/ctr-after-import.txt");
const APP2_CONFIG: &str = "sha256:4d9139016a63ecde1c9c298d8b283a10ef1ea6068c6869f829c7fdf0d0bf8735";

#[test]
fn the_check_finds_every_name_with_its_config_unpacked() {
    let want = |name: &str, id: &str| Expected {
        id: digest(id),
        names: vec![name.into()],
    };
    let app2 = want("registry.testbed:5000/dropship/app2:v1", APP2_CONFIG);
    assert_eq!(
        check_loaded(AFTER_IMPORT, std::slice::from_ref(&app2), "overlayfs"),
        Ok(())
    );
    let err = check_loaded(AFTER_IMPORT, std::slice::from_ref(&app2), "native").unwrap_err();
    assert!(
        err.found
            .contains("not unpacked into the native snapshotter"),
        "{err}"
    );
    let wrong = want("registry.testbed:5000/dropship/app2:v1", APP1_CONFIG);
    let err = check_loaded(AFTER_IMPORT, &[wrong], "overlayfs").unwrap_err();
    assert_eq!(err.found, APP2_CONFIG);
    let missing = want("registry.testbed:5000/dropship/app3:v1", APP2_CONFIG);
    assert_eq!(
        check_loaded(AFTER_IMPORT, &[missing], "overlayfs")
            .unwrap_err()
            .found,
        "missing"
    );
    // An image with no name is found by its config.
    assert_eq!(
        check_loaded(AFTER_IMPORT, &[want(APP2_CONFIG, APP2_CONFIG)], "overlayfs"),
        Ok(())
    );
    // A digest name must point at its digest: `docker save` archives have none.
    let mut with_digest = app2.clone();
    with_digest.names.push(format!(
        "registry.testbed:5000/dropship/app2@{APP1_MANIFEST}"
    ));
    let err = check_loaded(AFTER_IMPORT, &[with_digest], "overlayfs").unwrap_err();
    assert_eq!(
        (err.expected.as_str(), err.found.as_str()),
        (APP1_MANIFEST, "missing")
    );
    // The multi-arch image, checked by its tag and digest name (ctr pulled the index, tag
    // only).
    let mut multiarch = want(
        "registry.testbed:5000/dropship/multiarch:v1",
        MULTIARCH_AMD64_CONFIG,
    );
    assert_eq!(
        check_loaded(AFTER_IMPORT, &[multiarch.clone()], "overlayfs"),
        Ok(())
    );
    multiarch.names.push(format!(
        "registry.testbed:5000/dropship/multiarch@{MULTIARCH_INDEX}"
    ));
    let err = check_loaded(AFTER_IMPORT, &[multiarch], "overlayfs").unwrap_err();
    assert!(err.name.ends_with(MULTIARCH_INDEX), "{err}");
}

#[test]
fn index_and_manifest_blobs_lead_to_the_platforms_config() {
    let index = include_str!("../../../tests/fixtures/runtime/ctr-content-index.json");
    let manifest = include_str!("../../../tests/fixtures/runtime/ctr-content-manifest.json");
    let manifest_of = |text: &str| match config_or_manifest(index.as_bytes(), &platform(text)) {
        Ok(Next::Manifest(m)) => Ok(m.to_string()),
        Ok(Next::Config(_)) => Err("a config".to_string()),
        Err(e) => Err(e),
    };
    assert_eq!(
        manifest_of("linux/amd64").unwrap(),
        "sha256:60abd3c465735e48003f1bcb3cab17fcfa86ffc6b3e2ea27f7c1a077cffaebdd"
    );
    assert_eq!(
        manifest_of("linux/arm64/v8").unwrap(),
        "sha256:98996d90a6e2a5ce1f584aab87c7a46a5e4089d18213aff3ebf4f1799981926a"
    );
    assert_eq!(
        manifest_of("linux/arm64").unwrap(),
        manifest_of("linux/arm64/v8").unwrap()
    );
    assert!(
        manifest_of("linux/s390x")
            .unwrap_err()
            .contains("linux/s390x")
    );
    assert!(matches!(
        config_or_manifest(manifest.as_bytes(), &platform("linux/amd64")),
        Ok(Next::Config(c)) if c.to_string() == APP1_CONFIG
    ));
    assert!(config_or_manifest(b"ctr: not found", &platform("linux/amd64")).is_err());
}

/// Runs the real facts script with only a fake `containerd` on PATH that prints `dump` for
/// `config dump` (no ctr: the daemon is not asked), and parses what it printed.
fn config_from_dump(dump: &str, env: &[(&str, &str)]) -> ContainerdFacts {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in [
        "sh", "awk", "tr", "sed", "grep", "tail", "cat", "uname", "df", "timeout",
    ] {
        let path = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(path, bin.join(tool)).unwrap();
    }
    let dump_file = dir.path().join("dump.toml");
    std::fs::write(&dump_file, dump).unwrap();
    let fake = bin.join("containerd");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = 'config dump' ] && exec cat {}\n",
            dump_file.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .unwrap();
    let command = crate::facts::facts_command(dir.path(), None);
    let output = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command.render())
        .env_clear()
        .env("PATH", &bin)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let facts = crate::facts::parse(&String::from_utf8_lossy(&output.stdout)).unwrap();
    assert!(
        facts.has_tool("containerd") && !facts.has_tool("ctr"),
        "{:?}",
        facts.tools
    );
    facts.containerd.unwrap()
}

#[test]
fn the_cris_settings_are_read_from_a_1_6_config_dump() {
    let containerd = config_from_dump(
        include_str!("../../../tests/fixtures/runtime/containerd-1.6-config-dump.toml"),
        &[],
    );
    assert_eq!(
        containerd.config,
        ContainerdConfig {
            version: Some(2),
            snapshotter: Some("overlayfs".into()),
            discard_unpacked_layers: false,
            hosts_dir: Some("/etc/containerd/certs.d".into()),
        }
    );
    assert_eq!(containerd.address, "/run/containerd/containerd.sock");
    assert!(!containerd.answers, "no ctr, no daemon asked");
}

#[test]
fn the_cris_settings_are_read_from_a_2_x_config_dump() {
    // Version 3 quotes with ' and keeps the CRI's image settings in their own plugin.
    let dump = include_str!("../../../tests/fixtures/runtime/containerd-2.x-config-dump.toml");
    let containerd = config_from_dump(dump, &[]);
    assert_eq!(
        containerd.config,
        ContainerdConfig {
            version: Some(3),
            snapshotter: Some("native".into()),
            discard_unpacked_layers: true,
            hosts_dir: Some("/etc/containerd/certs.d".into()),
        }
    );
    // The config's socket does not exist here: the default is kept; CONTAINERD_ADDRESS wins.
    assert_eq!(containerd.address, "/run/containerd/containerd.sock");
    let containerd = config_from_dump(dump, &[("CONTAINERD_ADDRESS", "/x/c.sock")]);
    assert_eq!(containerd.address, "/x/c.sock");
}

#[test]
fn a_missing_blob_is_told_from_other_failures() {
    // containerd 1.6.20, a delta whose base was gone (test bed, node4).
    assert!(lacks_content(
        "ctr: failed to extract layer sha256:9322a3f52def2c8bdaed0c0f6152e278a0f7aa8b01c188e690a46ae6e24a46b2: failed to get reader from content store: content digest sha256:ee793a4de7016b963527f51f16eb66c6b0c163ce9f176c9eb75bba9f7f43b20e: not found"
    ));
    // The 2.x transfer service's wording (kind#3996).
    assert!(lacks_content(
        "ctr: rpc error: code = NotFound desc = content digest sha256:8db9bc11aa1a0d3a5c4e46a37e2fd2b24a12b9d4e1e3e8dc5df5e4fc8e9dc0f0: not found"
    ));
    // containerd stopped during the import (test bed, node4).
    assert!(!lacks_content(
        "ctr: failed to ingest \"blobs/sha256/6f2bbd970245bd8674d996495d23318a20941ef67869f59ce683576b8b46742c\": failed to copy: failed to send write: EOF: unknown"
    ));
    assert!(Runtime::Containerd.lacked_left_out_layers("content digest sha256:ee793a4de7016b963527f51f16eb66c6b0c163ce9f176c9eb75bba9f7f43b20e: not found"));
    assert!(Runtime::Docker.lacked_left_out_layers("anything"));
}
