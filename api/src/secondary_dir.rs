//! The follower's working directory: a RocksDB secondary keeps files of its own (info
//! logs, its view of the manifest). Each API process gets a fresh one under the data
//! dir, `<data-dir>/api-followers/<pid>-<random>/`, owner-only and never a path that
//! someone else could have prepared. It holds a lock file, locked for as long as its
//! process runs; the directory goes when the process stops, and the next start
//! removes those left by a process that was killed (their lock is free).

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use frametap_store::data_dir;

/// The directory, in the data dir, of every API process's working directory.
pub const FOLLOWERS_DIR: &str = "api-followers";
/// The lock file in each working directory.
const LOCK_FILE: &str = "owner.lock";
/// Where RocksDB keeps its files, in a working directory.
const DB_DIR: &str = "rocksdb";
/// A working directory without its lock file is being created (for a moment), or
/// was left by a process killed in that moment: removed once it is this old.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// This process's working directory; removed when dropped.
#[derive(Debug)]
pub struct SecondaryDir {
    path: PathBuf,
    /// Holds the lock; `None` once removed.
    lock: Option<File>,
}

impl SecondaryDir {
    /// Creates a fresh working directory under `data_dir` (which must exist), after
    /// removing those of processes that are gone, which it returns.
    pub fn create(data_dir: &Path) -> anyhow::Result<(SecondaryDir, Vec<PathBuf>)> {
        let root = data_dir.join(FOLLOWERS_DIR);
        data_dir::create_private(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        check_root(&root)?;
        let removed = remove_stale(&root);
        let pid = std::process::id();
        for _ in 0..8 {
            let path = root.join(format!("{pid}-{:08x}", random_u32()?));
            match DirBuilder::new()
                .mode(data_dir::PRIVATE_DIR_MODE)
                .create(&path)
            {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()));
                }
            }
            let lock = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path.join(LOCK_FILE))
                .and_then(|file| {
                    file.try_lock().map_err(std::io::Error::from)?;
                    Ok(file)
                })
                .with_context(|| format!("cannot lock {}", path.join(LOCK_FILE).display()))?;
            return Ok((
                SecondaryDir {
                    path,
                    lock: Some(lock),
                },
                removed,
            ));
        }
        bail!(
            "cannot find a free name for the API's working directory in {}",
            root.display()
        )
    }

    /// The working directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the RocksDB secondary keeps its files.
    pub fn db_path(&self) -> PathBuf {
        self.path.join(DB_DIR)
    }

    /// Removes the working directory (once the secondary is closed).
    pub fn remove(&mut self) {
        if let Some(lock) = self.lock.take() {
            let _ = fs::remove_dir_all(&self.path);
            drop(lock);
        }
    }
}

impl Drop for SecondaryDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The root must be a real directory of ours: nothing in it is followed elsewhere.
fn check_root(root: &Path) -> anyhow::Result<()> {
    let meta =
        fs::symlink_metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me {
        bail!(
            "{} is not a directory owned by this user: remove it and start again",
            root.display()
        );
    }
    Ok(())
}

/// Removes the working directories under `root` whose process is gone; returns them.
fn remove_stale(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let lock = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path.join(LOCK_FILE));
        let stale = match lock {
            // Held while its process lives; the lock stays ours while we remove it.
            Ok(file) => match file.try_lock() {
                Ok(()) => fs::remove_dir_all(&path).is_ok(),
                Err(TryLockError::WouldBlock | TryLockError::Error(_)) => false,
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok());
                age.is_some_and(|age| age > UNLOCKED_GRACE) && fs::remove_dir_all(&path).is_ok()
            }
            Err(_) => false,
        };
        if stale {
            removed.push(path);
        }
    }
    removed
}

fn random_u32() -> anyhow::Result<u32> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(u32::from_ne_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn names(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_private_locked_dir_removed_when_dropped() {
        let data = tempfile::tempdir().unwrap();
        let (dir, removed) = SecondaryDir::create(data.path()).unwrap();
        assert!(removed.is_empty());
        let root = data.path().join(FOLLOWERS_DIR);
        for path in [&root, &dir.path().to_path_buf()] {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
        assert!(dir.db_path().starts_with(dir.path()));
        let name = dir.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with(&format!("{}-", std::process::id())),
            "{name}"
        );
        // Another process (here: another lock) sees it in use and leaves it.
        let (other, removed) = SecondaryDir::create(data.path()).unwrap();
        assert!(removed.is_empty());
        assert_eq!(names(&root).len(), 2);
        drop(dir);
        drop(other);
        assert!(names(&root).is_empty());
    }

    #[test]
    fn dirs_of_killed_processes_are_removed_at_the_next_start() {
        let data = tempfile::tempdir().unwrap();
        let root = data.path().join(FOLLOWERS_DIR);
        // As a SIGKILLed process leaves it: the lock file, unlocked, and RocksDB's logs.
        let killed = root.join("4242-0badf00d");
        fs::create_dir_all(killed.join(DB_DIR)).unwrap();
        fs::write(killed.join(LOCK_FILE), b"").unwrap();
        fs::write(killed.join(DB_DIR).join("LOG"), b"log").unwrap();
        // Just being created by someone else: no lock file yet, and new.
        let starting = root.join("4243-00000001");
        fs::create_dir_all(&starting).unwrap();

        let (mine, removed) = SecondaryDir::create(data.path()).unwrap();
        assert_eq!(removed, vec![killed.clone()]);
        assert!(!killed.exists());
        assert!(starting.exists());
        drop(mine);
        assert_eq!(names(&root), vec!["4243-00000001".to_string()]);
    }

    #[test]
    fn a_symlinked_root_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), data.path().join(FOLLOWERS_DIR)).unwrap();
        let err = SecondaryDir::create(data.path()).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a directory owned"),
            "{err:#}"
        );
        assert!(names(elsewhere.path()).is_empty());
    }
}
