//! Child processes placed in a network namespace and/or a cgroup before they exec,
//! killed when dropped.
use std::{
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::{Child, Command, Output, Stdio},
};

/// Where a command runs.
#[derive(Default)]
pub struct Placement<'a> {
    pub netns: Option<&'a File>,
    /// Path of the `cgroup.procs` file to join.
    pub cgroup_procs: Option<CString>,
}

/// Configure `cmd` to join the namespace and cgroup between fork and exec.
pub fn place(cmd: &mut Command, placement: Placement<'_>) {
    let netns_fd = placement.netns.map(|f| f.as_raw_fd());
    let procs = placement.cgroup_procs;
    // SAFETY: only async-signal-safe syscalls (setns, open, write, close).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = netns_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(procs) = &procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if n != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A child that is killed and reaped when dropped.
pub struct Spawned {
    pub child: Option<Child>,
    pub name: String,
}

impl Spawned {
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child: Some(child),
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Wait for exit, at most `timeout`; None if still running.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        crate::wait_for(timeout, || child.try_wait().ok().flatten())
    }

    pub fn output(mut self) -> Output {
        self.child
            .take()
            .expect("running")
            .wait_with_output()
            .expect("wait")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
