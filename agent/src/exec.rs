//! `frametap-agent exec -- CMD`: run one command, and everything it starts, inside
//! a fresh child cgroup of a captured cgroup, and exit with its status.
use std::{
    ffi::{CString, OsString},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicI32, Ordering},
};

use anyhow::{Context as _, bail};
use tracing::{debug, warn};

use crate::{attached, capture, cgroup, config};

static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = CHILD_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// A child cgroup that is removed again when dropped.
struct ChildCgroup {
    dir: PathBuf,
    parent: PathBuf,
}

impl ChildCgroup {
    fn create(parent: &Path) -> anyhow::Result<Self> {
        let dir = parent.join(format!("exec-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .with_context(|| format!("cannot create cgroup {}", dir.display()))?;
        Ok(Self {
            dir,
            parent: parent.to_path_buf(),
        })
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        // Processes the command left running (daemons) move up to the captured
        // cgroup, so they stay captured and this directory can go.
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(self.parent.join("cgroup.procs"), pid);
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            warn!(cgroup = %self.dir.display(), error = %e, "cannot remove the command's cgroup");
        }
    }
}

/// Warn when a command in `dir` (the cgroup `relative`) would not be captured, from
/// what the kernel says; stay quiet when it is, or when the kernel cannot tell.
fn warn_unless_captured(mount: &Path, dir: &Path, relative: &str) {
    let facts = (|| {
        let agents = attached::agent_programs()?;
        let effective = attached::connect4_programs(dir, true)
            .with_context(|| format!("cannot query the programs of {}", dir.display()))?;
        let netns = capture::current_netns_cookie()?;
        anyhow::Ok((agents, effective, netns))
    })();
    let (agents, effective, netns) = match facts {
        Ok(f) => f,
        Err(e) => {
            debug!(error = %format!("{e:#}"), "cannot tell whether this cgroup is captured");
            return;
        }
    };
    let finding = attached::judge(&effective, &agents, netns, |ids| {
        attached::cgroups_with(mount, ids)
    });
    match finding.warning(relative) {
        Some(w) => warn!("{w}"),
        None => debug!(
            cgroup = relative,
            ports = finding.captured_ports().unwrap_or_default(),
            "captured by a frametap agent"
        ),
    }
}

/// Run `command` captured; returns the exit code to exit with.
pub fn run(cgroup_path: &str, command: &[OsString]) -> anyhow::Result<i32> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command given: frametap-agent exec -- CMD [ARGS...]");
    };
    let relative = config::normalize_cgroup(cgroup_path)?;
    let mount = cgroup::cgroup2_mount()?;
    let captured = cgroup::resolve_captured(
        &mount,
        std::slice::from_ref(&relative),
        config::DEFAULT_CGROUP,
    )?;
    let child_cgroup = ChildCgroup::create(&captured[0])?;
    // The fresh child inherits its parent's programs: ask about the cgroup the
    // command will really run in.
    warn_unless_captured(&mount, &child_cgroup.dir, &relative);
    let procs = CString::new(child_cgroup.dir.join("cgroup.procs").as_os_str().as_bytes())
        .context("cgroup path contains a NUL byte")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the closure only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || cgroup::enter_cgroup_raw(&procs));
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    CHILD_PID.store(child.id() as i32, Ordering::Relaxed);
    // Ctrl-C reaches the child through the terminal; we stay to clean up. A
    // SIGTERM sent to us alone is passed on.
    // SAFETY: installing handlers that only call kill().
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        libc::signal(
            libc::SIGTERM,
            forward_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGHUP,
            forward_signal as *const () as libc::sighandler_t,
        );
    }
    let status = child.wait().context("waiting for the command failed")?;
    drop(child_cgroup);
    use std::os::unix::process::ExitStatusExt as _;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    })
}
