//! cgroup v2: where it is mounted, which directories we capture, and moving a
//! process into one. The mount point is read from /proc/mounts, never assumed
//! (on hybrid hosts it is /sys/fs/cgroup/unified).
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Find the cgroup2 mount point from a /proc/mounts text.
pub fn cgroup2_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_dev, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(dir)))
    })
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup2 mount of this host.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    cgroup2_mount_in(&mounts).context(
        "cgroup v2 is not mounted: frametap selects sockets by cgroup v2. \
         Mount it (e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`) and retry",
    )
}

/// Absolute directory of a cgroup path given relative to the mount ("/" is the
/// root; a leading "/" is allowed, as /proc/PID/cgroup writes them).
pub fn cgroup_dir(mount: &Path, relative: &str) -> PathBuf {
    match relative.trim_start_matches('/') {
        "" => mount.to_path_buf(),
        inside => mount.join(inside),
    }
}

/// Resolve the captured cgroups; the default one is created when missing, any
/// other must already exist (a typo must not silently capture nothing).
pub fn resolve_captured(
    mount: &Path,
    cgroups: &[String],
    default_name: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::with_capacity(cgroups.len());
    for c in cgroups {
        let dir = cgroup_dir(mount, c);
        if !dir.join("cgroup.procs").exists() {
            if c == default_name {
                fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create cgroup {}", dir.display()))?;
            } else {
                bail!(
                    "cgroup {c:?} does not exist ({} is not a cgroup2 directory); create it or pass \
                     another --cgroup (paths are relative to the cgroup2 mount {})",
                    dir.display(),
                    mount.display()
                );
            }
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Move the calling process into `dir`. Only async-signal-safe calls, so it can
/// run between fork and exec.
///
/// # Safety
/// `procs_path` must be a NUL-terminated path to a `cgroup.procs` file.
pub unsafe fn enter_cgroup_raw(procs_path: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: plain syscalls on a valid C string and a stack buffer.
    unsafe {
        let fd = libc::open(procs_path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // "0" moves the writing process.
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// The ids of the processes running now, as /proc lists them.
pub fn pids() -> std::io::Result<impl Iterator<Item = u32>> {
    Ok(fs::read_dir("/proc")?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok()))
}

/// The cgroup v2 path (relative to the mount) of a process, from /proc/PID/cgroup.
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_on_hybrid_hosts() {
        let mounts = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
        assert_eq!(
            cgroup2_mount_in(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount_in("proc /proc proc rw 0 0\n"), None);
        assert_eq!(
            cgroup2_mount_in("none /mnt/c\\040g cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/mnt/c g"))
        );
    }

    #[test]
    fn dirs_relative_to_mount() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(
            cgroup_dir(m, "/libpod_parent/libpod-1"),
            m.join("libpod_parent/libpod-1")
        );
        let m = Path::new("/cg");
        assert_eq!(cgroup_dir(m, "/"), PathBuf::from("/cg"));
        assert_eq!(cgroup_dir(m, "a/b"), PathBuf::from("/cg/a/b"));
    }

    #[test]
    fn missing_cgroup_is_an_error_but_default_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_captured(tmp.path(), &["nope".into()], "frametap").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        // In a plain directory "creating" the default makes a folder without cgroup.procs;
        // the real cgroupfs fills it in. Here we only check that it was attempted.
        let _ = resolve_captured(tmp.path(), &["frametap".into()], "frametap");
        assert!(tmp.path().join("frametap").is_dir());
    }
}
