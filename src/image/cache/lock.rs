//! Advisory locks (flock) that let several dropship runs share one cache.
//!
//! - `lock`: held *shared* by every ingest and archive stream, *exclusive* by `prune`, so
//!   prune never deletes a layer that a running ingest has stored but not yet referenced.
//! - `index.lock`: held *exclusive* briefly while image records (tags) are rewritten, because
//!   a tag moving to a new image is a read-modify-write across records.
//!
//! Content-addressed objects themselves need no lock: every writer renames a complete file.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::CacheError;

pub struct Locks {
    main: PathBuf,
    index: PathBuf,
}

/// A held lock; released when dropped (closing the file releases the flock).
pub struct Held {
    _file: File,
}

impl Locks {
    pub fn open(root: &Path) -> Result<Locks, CacheError> {
        let locks = Locks {
            main: root.join("lock"),
            index: root.join("index.lock"),
        };
        for path in [&locks.main, &locks.index] {
            open(path)?;
        }
        Ok(locks)
    }

    pub fn shared(&self) -> Result<Held, CacheError> {
        let file = open(&self.main)?;
        file.lock_shared().map_err(CacheError::io(&self.main))?;
        Ok(Held { _file: file })
    }

    pub fn exclusive(&self) -> Result<Held, CacheError> {
        let file = open(&self.main)?;
        file.lock().map_err(CacheError::io(&self.main))?;
        Ok(Held { _file: file })
    }

    /// The exclusive lock if no other run holds the cache now; `None` without waiting.
    pub fn try_exclusive(&self) -> Result<Option<Held>, CacheError> {
        let file = open(&self.main)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Held { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(CacheError::Io {
                path: self.main.clone(),
                source: e,
            }),
        }
    }

    pub fn index(&self) -> Result<Held, CacheError> {
        let file = open(&self.index)?;
        file.lock().map_err(CacheError::io(&self.index))?;
        Ok(Held { _file: file })
    }
}

fn open(path: &Path) -> Result<File, CacheError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(CacheError::io(path))
}
