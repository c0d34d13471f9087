//! A throw-away cgroup v2 directory; dropping it kills what is left inside and
//! removes it.
use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::PathBuf, time::Duration};

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub struct TestCgroup {
    pub mount: PathBuf,
    /// Path relative to the cgroup2 mount, as `--cgroup` takes it.
    pub relative: String,
    pub dir: PathBuf,
}

pub fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .expect("cgroup2 is not mounted")
}

impl TestCgroup {
    pub fn new(tag: &str) -> Self {
        let mount = cgroup2_mount();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let relative = format!("ft-e2e-{}-{n}-{tag}", std::process::id());
        let dir = mount.join(&relative);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self {
            mount,
            relative,
            dir,
        }
    }

    pub fn procs_path(&self) -> CString {
        CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes()).expect("path")
    }

    fn kill_all(dir: &std::path::Path) {
        if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
            // Kernels before 5.14 have no cgroup.kill.
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    // SAFETY: SIGKILL to a pid listed in our own test cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }

    /// Remove `dir` and its children, killing what runs in them.
    pub fn remove_tree(dir: &std::path::Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    Self::remove_tree(&e.path());
                }
            }
        }
        Self::kill_all(dir);
        crate::wait_for(Duration::from_secs(5), || std::fs::remove_dir(dir).ok());
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        Self::remove_tree(&self.dir);
    }
}

/// Remove cgroups left behind by earlier test runs whose process is gone.
pub fn remove_stale() {
    let mount = cgroup2_mount();
    let Ok(entries) = std::fs::read_dir(&mount) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("ft-e2e-") else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            TestCgroup::remove_tree(&e.path());
        }
    }
}
