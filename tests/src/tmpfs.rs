//! A small tmpfs for tests that fill the disk, unmounted again when dropped (also
//! when the test panics).
use std::path::{Path, PathBuf};

/// A filesystem of a given size mounted on a fresh directory.
pub struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "frametap-test",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs");
        Self { dir: Some(dir) }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.as_ref().expect("mounted").path().to_path_buf()
    }

    /// Fills the filesystem with a file at `file` until it is full; returns the bytes
    /// written. Removing the file gives the space back.
    pub fn fill(file: &Path) -> u64 {
        use std::io::Write as _;
        let mut f = std::fs::File::create(file).expect("create the filler file");
        let chunk = vec![0x5a_u8; 1 << 20];
        let mut written = 0;
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => return written,
                Ok(n) => written += n as u64,
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(dir.path())
                .status();
        }
    }
}
