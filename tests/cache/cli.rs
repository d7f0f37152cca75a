//! `dropship cache` end to end on synthetic archives (no daemon needed; the test-bed proofs
//! with real `docker load` are in `cache::testbed`).

use std::path::Path;
use std::process::Output;

use crate::support::stdout;
use dropship::image::synth::{self, ImageSpec, LayerSpec, Layout};

fn dropship(cache: &Path, args: &[&str]) -> Output {
    let (command, rest) = args.split_first().unwrap();
    crate::support::dropship()
        .args(["cache", command, "--cache-dir"])
        .arg(cache)
        .args(rest)
        .output()
        .unwrap()
}

fn layer(seed: u64) -> LayerSpec {
    LayerSpec {
        seed,
        files: 2,
        file_size: 5000,
    }
}

#[test]
fn import_list_export_verify_prune() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let images = [
        ImageSpec {
            repo_tags: vec!["reg.test:5000/a:1".into()],
            layers: vec![layer(1), layer(2)],
        },
        ImageSpec {
            repo_tags: vec!["b:2".into()],
            layers: vec![layer(1), layer(3)],
        },
    ];
    // A Kubespray cache file: gzip data despite the .tar name.
    let kubespray_file = work.path().join("reg.test_5000_a_1.tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let ids = synth::write_archive(&images, Layout::Classic, &mut gz).unwrap();
    std::fs::write(&kubespray_file, gz.finish().unwrap()).unwrap();

    let import = dropship(&cache, &["import", kubespray_file.to_str().unwrap()]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(
        stdout(&import).contains("3 new layer(s)"),
        "{}",
        stdout(&import)
    );

    let list = dropship(&cache, &["list", "--json"]);
    let listing: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listing["layers"], 3);
    assert_eq!(listing["images"].as_array().unwrap().len(), 2);
    assert!(
        listing["saved_by_sharing"].as_u64().unwrap() > 0,
        "the base layer is shared"
    );
    // Tags are listed the way docker prints them.
    assert!(stdout(&dropship(&cache, &["list"])).contains("  b:2"));

    // Export by familiar name and by full name, then read the archive back.
    let out = work.path().join("out.tar");
    let export = dropship(
        &cache,
        &[
            "export",
            "docker.io/library/b:2",
            "reg.test:5000/a:1",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let copy = work.path().join("copy");
    let reimport = dropship(&copy, &["import", out.to_str().unwrap()]);
    assert!(reimport.status.success());
    let relisted: serde_json::Value =
        serde_json::from_slice(&dropship(&copy, &["list", "--json"]).stdout).unwrap();
    let mut reids: Vec<String> = relisted["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    reids.sort();
    expected.sort();
    assert_eq!(reids, expected);

    // Bad and unknown names.
    let bad = dropship(&cache, &["export", "Not_A_Ref", "-o", "-"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Not_A_Ref"));
    let unknown = dropship(&cache, &["export", "c:9", "-o", "-"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("c:9 is not in the cache"));

    // A damaged layer is reported by verify and moved aside.
    assert!(dropship(&cache, &["verify"]).status.success());
    let layer_file = std::fs::read_dir(cache.join("layers"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&layer_file).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&layer_file, bytes).unwrap();
    let verify = dropship(&cache, &["verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(stdout(&verify).contains("PROBLEM"), "{}", stdout(&verify));

    let refused = crate::support::dropship()
        .args(["cache", "prune", "--all", "--cache-dir"])
        .arg(&cache)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "no terminal to ask on");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("pass --yes to confirm"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let prune = dropship(&cache, &["prune", "--all", "--yes"]);
    assert!(prune.status.success());
    let listing: serde_json::Value =
        serde_json::from_slice(&dropship(&cache, &["list", "--json"]).stdout).unwrap();
    assert_eq!(listing["images"].as_array().unwrap().len(), 0);
    assert_eq!(std::fs::read_dir(cache.join("layers")).unwrap().count(), 0);
}

#[test]
fn list_reads_without_creating_and_lines_up() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("never-created");
    let list = dropship(&cache, &["list"]);
    assert!(list.status.success());
    assert!(!cache.exists(), "cache list created {}", cache.display());
    assert!(stdout(&list).contains("0 image(s)"), "{}", stdout(&list));

    let archive = work.path().join("a.tar");
    let images = [ImageSpec {
        repo_tags: vec!["a:1".into()],
        layers: vec![layer(1), layer(2)],
    }];
    synth::write_archive(
        &images,
        Layout::Classic,
        &mut std::fs::File::create(&archive).unwrap(),
    )
    .unwrap();
    assert!(
        dropship(&cache, &["import", archive.to_str().unwrap()])
            .status
            .success()
    );
    let list = stdout(&dropship(&cache, &["list"]));
    let mut lines = list.lines();
    let header = lines.next().unwrap();
    let row = lines.next().unwrap();
    // Every size column ends where its heading does.
    for heading in ["RAW", "STORED", "SHARED"] {
        let end = header.find(heading).unwrap() + heading.len();
        assert!(
            row.as_bytes()[end - 1].is_ascii_alphabetic(),
            "{heading} column not right-aligned:\n{header}\n{row}"
        );
        assert_eq!(row.as_bytes()[end], b' ', "{header}\n{row}");
    }
}

#[test]
fn bad_input_is_named_and_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let junk = work.path().join("junk.tar");
    std::fs::write(
        &junk,
        b"\x1b[2J\x1b]0;pwned\x07 this is not an archive".repeat(40),
    )
    .unwrap();
    let import = dropship(&cache, &["import", junk.to_str().unwrap()]);
    assert_eq!(import.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&import.stderr),
        format!(
            "error: cannot import {0}: {0}: not a usable docker-archive: not a tar, gzip or zstd archive\n",
            junk.display()
        )
    );

    let missing = work.path().join("missing.tar");
    let import = dropship(&cache, &["import", missing.to_str().unwrap()]);
    assert_eq!(import.status.code(), Some(2), "a missing file is bad input");
    assert_eq!(
        String::from_utf8_lossy(&import.stderr),
        format!("error: {}: no such file to import\n", missing.display())
    );

    // An archive cut after its layers: the layers it stored are taken back.
    let images = [ImageSpec {
        repo_tags: vec!["cut:1".into()],
        layers: vec![layer(7), layer(8)],
    }];
    let mut whole = Vec::new();
    synth::write_archive(&images, Layout::Classic, &mut whole).unwrap();
    let cut = work.path().join("cut.tar");
    std::fs::write(&cut, &whole[..whole.len() * 3 / 4]).unwrap();
    let import = dropship(&cache, &["import", cut.to_str().unwrap()]);
    assert_eq!(import.status.code(), Some(1));
    let left: Vec<_> = ["layers", "blobs/sha256", "configs"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(cache.join(sub)).unwrap())
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn export_to_stdout_refuses_a_terminal() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let archive = work.path().join("a.tar");
    let images = [ImageSpec {
        repo_tags: vec!["a:1".into()],
        layers: vec![layer(1)],
    }];
    synth::write_archive(
        &images,
        Layout::Classic,
        &mut std::fs::File::create(&archive).unwrap(),
    )
    .unwrap();
    assert!(
        dropship(&cache, &["import", archive.to_str().unwrap()])
            .status
            .success()
    );
    // script(1) gives the command a terminal as its stdout.
    let command = format!(
        "{} cache export --cache-dir {} a:1 -o -; echo exit=$?",
        env!("CARGO_BIN_EXE_dropship"),
        cache.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refusing to write an archive to a terminal") && text.contains("exit=2"),
        "{text}"
    );
    assert!(text.len() < 400, "no archive bytes on the terminal: {text}");
}
