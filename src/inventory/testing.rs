//! Inventories written to a temporary directory, for unit tests.

use super::Inventory;

/// Writes `files` (path under a fresh temporary directory, text) and loads the first one as the
/// inventory source; the directory lives as long as the returned guard.
pub(crate) fn load_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Inventory) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let inventory = Inventory::load(&[dir.path().join(files[0].0)]).unwrap();
    (dir, inventory)
}

/// One INI inventory file, `hosts.ini`.
pub(crate) fn load_ini(ini: &str) -> (tempfile::TempDir, Inventory) {
    load_files(&[("hosts.ini", ini)])
}
