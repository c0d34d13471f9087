//! The data dir holds decrypted recordings, the CA key and the API token, so only its
//! owner (root) may read what is in it.
//!
//! - Processes that write there call [`restrict_umask`] first: every file and
//!   directory they create (RocksDB's included) is then their owner's only.
//! - The data dir itself is 0711 ([`create`]): others may pass through it but not
//!   list it, so the one public file, the CA certificate that captured applications
//!   must trust, stays readable at its documented path. Nothing else is reachable.
//! - [`tighten`] fixes a data dir left open by an older version or by hand (a 0755
//!   dir with 0644 recordings), so the agent calls it at start.
use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the data dir: its owner's, and traversable (not listable) by others.
pub const DATA_DIR_MODE: u32 = 0o711;
/// Mode of every directory inside it.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the public files ([`tighten`]'s `public`).
pub const PUBLIC_FILE_MODE: u32 = 0o644;

/// Makes this process create files and directories for its owner only (umask 077).
/// Only for daemons: child processes inherit the umask.
pub fn restrict_umask() {
    // SAFETY: umask only changes this process's file creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates the data dir `dir` (and missing parents) with mode 0711 if it does not
/// exist. An existing one is left as it is: [`tighten`] fixes its modes.
/// Call it before [`restrict_umask`], so that missing parents get the usual modes.
pub fn create(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => {}
        // Created meanwhile by the API or the agent: the same thing.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    // Private from the start; then traversable, whatever the umask.
    fs::set_permissions(dir, Permissions::from_mode(DATA_DIR_MODE))
}

/// Creates `dir` (and missing parents) owner-only (0700), whatever the umask.
pub fn create_private(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// One mode [`tighten`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChange {
    pub path: PathBuf,
    pub from: u32,
    pub to: u32,
}

/// Takes from group and others every right on the entries of the data dir `dir`,
/// recursively, but for the files named in `public` (directly in `dir`), which stay
/// readable (0644 at most), and `dir` itself, which stays traversable (0711).
/// Symlinks are never followed. Returns what it changed.
pub fn tighten(dir: &Path, public: &[&str]) -> io::Result<Vec<ModeChange>> {
    let mut changes = Vec::new();
    let mode = fs::symlink_metadata(dir)?.permissions().mode() & 0o7777;
    // Read or write for group or others: close it; execute alone is the intended 0711.
    if mode & 0o066 != 0 {
        set_mode(dir, mode, DATA_DIR_MODE, &mut changes)?;
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_public = name.to_str().is_some_and(|n| public.contains(&n));
        let path = entry.path();
        if is_public {
            let Some(mode) = mode_of(&path)? else {
                continue;
            };
            // Readable by all, writable by nobody else.
            if mode & 0o022 != 0 {
                set_mode(&path, mode, mode & !0o022, &mut changes)?;
            }
        } else {
            close_tree(&path, &mut changes)?;
        }
    }
    Ok(changes)
}

/// Takes group and other rights off `path` and, for a directory, everything in it.
fn close_tree(path: &Path, changes: &mut Vec<ModeChange>) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Removed meanwhile (a RocksDB file being replaced): nothing left to close.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        set_mode(path, mode, mode & !0o077, changes)?;
    }
    if meta.is_dir() {
        let entries = match fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            close_tree(&entry?.path(), changes)?;
        }
    }
    Ok(())
}

/// The permission bits of `path`, `None` if it is gone or a symlink.
fn mode_of(path: &Path) -> io::Result<Option<u32>> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Ok(None),
        Ok(meta) => Ok(Some(meta.permissions().mode() & 0o7777)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn set_mode(path: &Path, from: u32, to: u32, changes: &mut Vec<ModeChange>) -> io::Result<()> {
    match fs::set_permissions(path, Permissions::from_mode(to)) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot restrict {} to its owner: {e}", path.display()),
            ));
        }
    }
    changes.push(ModeChange {
        path: path.to_path_buf(),
        from,
        to,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn create_makes_a_traversable_private_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/data");
        create(&dir).unwrap();
        assert_eq!(mode(&dir), DATA_DIR_MODE);
        // An existing dir is not touched.
        chmod(&dir, 0o700);
        create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let private = dir.join("store/x");
        create_private(&private).unwrap();
        assert_eq!(mode(&private), 0o700);
        assert_eq!(mode(&dir.join("store")), 0o700);
    }

    #[test]
    fn tighten_closes_an_open_tree_but_the_public_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        fs::create_dir_all(dir.join("store/sub")).unwrap();
        for (file, m) in [
            ("store/000001.sst", 0o644),
            ("store/sub/LOG", 0o666),
            ("ca.pem", 0o666),
            ("ca-key.pem", 0o600),
            ("agent.json", 0o640),
        ] {
            fs::write(dir.join(file), b"x").unwrap();
            chmod(&dir.join(file), m);
        }
        chmod(&dir.join("store"), 0o755);
        chmod(&dir.join("store/sub"), 0o750);
        chmod(dir, 0o755);
        std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();

        let changes = tighten(dir, &["ca.pem"]).unwrap();
        let changed: Vec<(&Path, u32, u32)> = changes
            .iter()
            .map(|c| (c.path.strip_prefix(dir).unwrap(), c.from, c.to))
            .collect();
        for expected in [
            (Path::new(""), 0o755, 0o711),
            (Path::new("store"), 0o755, 0o700),
            (Path::new("store/000001.sst"), 0o644, 0o600),
            (Path::new("store/sub"), 0o750, 0o700),
            (Path::new("store/sub/LOG"), 0o666, 0o600),
            (Path::new("ca.pem"), 0o666, 0o644),
            (Path::new("agent.json"), 0o640, 0o600),
        ] {
            assert!(changed.contains(&expected), "{expected:?} in {changed:?}");
        }
        assert_eq!(changes.len(), 7, "{changed:?}");
        assert_eq!(mode(dir), 0o711);
        assert_eq!(mode(&dir.join("store/000001.sst")), 0o600);
        assert_eq!(mode(&dir.join("ca.pem")), 0o644);
        assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);
        // The symlink's target is not ours.
        assert_ne!(mode(Path::new("/etc/hostname")) & 0o044, 0);

        // A private tree is left as it is.
        assert!(tighten(dir, &["ca.pem"]).unwrap().is_empty());
        chmod(dir, 0o700);
        assert!(tighten(dir, &["ca.pem"]).unwrap().is_empty());
    }
}
