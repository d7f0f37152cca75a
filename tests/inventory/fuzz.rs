//! Property tests: arbitrary and mutated INI/YAML inventories never panic and never hang in the
//! readers or in anything built on them. `PROPTEST_CASES` sets the case count (default 200 per
//! property, for CI); run long with e.g. `PROPTEST_CASES=200000 cargo test --release --test tests inventory::fuzz`.

use std::path::{Path, PathBuf};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use dropship::inventory::{Inventory, connection, render};
use dropship::push::kubespray::{DownloadSettings, images_from_inventory};
use proptest::prelude::*;

/// A case taking longer than this is a hang.
const HANG: Duration = Duration::from_secs(10);

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Loads `text` as `name` (with `vars` as group_vars/all.yml) and uses every API on the result.
fn exercise(name: &str, text: &[u8], vars: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::create_dir(dir.path().join("group_vars")).unwrap();
    std::fs::write(dir.path().join("group_vars/all.yml"), vars).unwrap();
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        use_everything(&path);
        let _ = done.send(());
    });
    match finished.recv_timeout(HANG) {
        Ok(()) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: surface its panic.
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hang: {name} took longer than {HANG:?}"),
    }
}

fn use_everything(path: &Path) {
    let Ok(inventory) = Inventory::load(&[path.to_path_buf()]) else {
        return;
    };
    let _ = render::list(&inventory, None).map(|v| render::to_ansible_json(&v));
    let _ = render::graph(&inventory, "all");
    let hosts: Vec<String> = inventory.hosts().map(str::to_string).collect();
    for host in hosts.iter().take(50) {
        let _ = inventory.host_vars(host);
        let _ = connection::resolve(&inventory, host, &connection::Defaults::default());
        let _ = inventory.select(host);
    }
    for pattern in ["all", "all:!ungrouped", "*[0]", "~.*", "all[1:2]", "&all"] {
        let _ = inventory.select(pattern);
    }
    let _ = DownloadSettings::from_inventory(&inventory);
    let _ = images_from_inventory(&inventory);
}

/// Every file of the corpus, as seeds for mutation (read once).
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(read_seeds)
}

fn read_seeds() -> Vec<Vec<u8>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_none_or(|e| e != "txt") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &crate::support::repo().join("tests/inventories"),
        &mut files,
    );
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Flip(usize, u8),
}

fn apply(mut text: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = text.len().max(1);
        match edit {
            Edit::Insert(at, bytes) => {
                let at = at % (text.len() + 1);
                text.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(text.len());
                if at < end {
                    text.drain(at..end);
                }
            }
            Edit::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n).min(text.len());
                if at < end {
                    let piece: Vec<u8> = text[at..end].to_vec();
                    text.splice(at..at, piece);
                }
            }
            Edit::Flip(at, byte) => {
                if !text.is_empty() {
                    let at = at % text.len();
                    text[at] = *byte;
                }
            }
        }
    }
    text
}

/// Bytes that matter to INI and YAML syntax, often, plus anything else sometimes.
fn syntax_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting =
        prop::sample::select(b"[]:=#;'\"\\ \t\n{}-,.!&*|>~@%?<()0123456789abcxyzAZ_$\r".to_vec());
    prop::collection::vec(prop_oneof![8 => interesting, 1 => any::<u8>()], 0..64)
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), syntax_bytes()).prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), 0usize..80).prop_map(|(a, n)| Edit::Duplicate(a, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Flip(a, b)),
    ]
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["hosts.ini", "hosts.yml", "hosts"])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_files_never_panic_or_hang(
        seed in any::<prop::sample::Index>(),
        vars_seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..8),
        name in name(),
    ) {
        let seeds = seeds();
        let text = apply(seeds[seed.index(seeds.len())].clone(), &edits);
        let vars = apply(seeds[vars_seed.index(seeds.len())].clone(), &edits[..1]);
        exercise(name, &text, &vars);
    }

    #[test]
    fn arbitrary_syntax_never_panics_or_hangs(
        chunks in prop::collection::vec(syntax_bytes(), 0..12),
        vars in syntax_bytes(),
        name in name(),
    ) {
        exercise(name, &chunks.concat(), &vars);
    }
}
