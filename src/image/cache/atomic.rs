//! Crash-safe file publication: write under a unique temp name in the target's directory,
//! fsync, rename over the final name, fsync the directory. Readers see the old file or the
//! new one, never a half-written one, and concurrent writers never share a temp file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const TEMP_PREFIX: &str = ".tmp-";

/// A file being written; dropped without [`TempFile::persist`] it is removed.
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub fn new_in(dir: &Path) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "{TEMP_PREFIX}{}-{}-{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u64>()
        );
        let path = dir.join(unique);
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("temp file is open until persisted")
    }

    /// fsync, rename to `target` (replacing it), fsync the directory.
    pub fn persist(mut self, target: &Path) -> io::Result<()> {
        let file = self.file.take().expect("temp file is open until persisted");
        file.sync_all()?;
        drop(file);
        fs::rename(&self.path, target)?;
        sync_dir(target)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Write `bytes` to `target` atomically.
pub fn write_file(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = target
        .parent()
        .expect("cache paths have a parent directory");
    let mut temp = TempFile::new_in(dir)?;
    temp.file().write_all(bytes)?;
    temp.persist(target)
}

/// Whether a directory entry is a leftover temp file (from a crashed run).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}
