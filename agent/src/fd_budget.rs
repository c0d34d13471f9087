//! The agent's file descriptors. Every captured connection costs some (two sockets,
//! and the relay's pipes while bytes move), so the agent raises its soft limit to the
//! hard one at start and watches how many it has open. Before it runs out, it stops
//! being handed new connections (the eBPF `PAUSED` flag: they go direct, counted as
//! `skipped_paused`) and takes them again once enough are free. A connection the agent
//! cannot take must never be broken: it goes direct instead.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tracing::{info, warn};

use crate::{capture::Capture, memory};

/// How often the open descriptors are counted.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Raises the soft limit on open files to the hard one. Returns (before, after).
pub fn raise_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = limit.rlim_cur;
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok((before, limit.rlim_max))
    }
}

/// The soft limit on open files now (someone may have changed it with prlimit).
fn soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// Descriptors this process has open.
fn open_fds() -> std::io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// A change of the capture's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Paused,
    Resumed,
}

/// When to pause and resume, with room between the two so the flag does not flap.
/// Sans-IO: counts in, changes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pressure {
    limit: u64,
    paused: bool,
}

impl Pressure {
    pub fn new(limit: u64) -> Self {
        Pressure {
            limit,
            paused: false,
        }
    }

    /// Descriptors kept free for connections already accepted or on their way
    /// (their upstream socket and pipes) and for the store: a quarter of the limit,
    /// at least 64, at most 4096.
    fn reserve(&self) -> u64 {
        (self.limit / 4).clamp(64, 4096)
    }

    /// Pause at or above this many open descriptors.
    pub fn pause_at(&self) -> u64 {
        self.limit.saturating_sub(self.reserve())
    }

    /// Resume at or below this many.
    pub fn resume_at(&self) -> u64 {
        self.limit.saturating_sub(2 * self.reserve())
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The limit changed (prlimit): thresholds follow, the state stays.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// `open` descriptors now; `out_of_fds`: an accept failed for lack of them since
    /// the last call.
    pub fn update(&mut self, open: u64, out_of_fds: bool) -> Option<Change> {
        let pause = out_of_fds || open >= self.pause_at();
        match (self.paused, pause) {
            (false, true) => {
                self.paused = true;
                Some(Change::Paused)
            }
            (true, _) if !pause && open <= self.resume_at() => {
                self.paused = false;
                Some(Change::Resumed)
            }
            _ => None,
        }
    }
}

/// Shared by the accept loops (which report running out) and the watcher.
pub struct FdGuard {
    capture: Arc<Capture>,
    out_of_fds: AtomicBool,
}

impl FdGuard {
    pub fn new(capture: Arc<Capture>) -> Arc<Self> {
        Arc::new(FdGuard {
            capture,
            out_of_fds: AtomicBool::new(false),
        })
    }

    /// An accept failed with EMFILE or ENFILE: stop taking new connections at once.
    pub fn report_out_of_fds(&self) {
        if !self.out_of_fds.swap(true, Ordering::Relaxed)
            && let Err(e) = self.capture.set_paused(true)
        {
            warn!(error = %e, "cannot pause capturing");
        }
    }

    /// A connection was accepted as descriptor `fd`. The kernel hands out the lowest
    /// free number, so at least `fd` descriptors are open: past the pause threshold
    /// (of the limit now: one getrlimit), pause at once rather than at the watcher's
    /// next count, as connections can arrive far faster than that.
    pub fn accepted(&self, fd: std::os::fd::RawFd) {
        let Some(limit) = soft_limit() else { return };
        if u64::try_from(fd).unwrap_or(0) >= Pressure::new(limit).pause_at() {
            self.report_out_of_fds();
        }
    }

    /// Counts the open descriptors every [`WATCH_EVERY`] and pauses or resumes the
    /// capture; once a burst of connections has closed, trims the heap. Runs until
    /// the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        let mut pressure = Pressure::new(soft_limit().unwrap_or(1024));
        let mut burst = memory::BurstTrim::default();
        let mut ticks = tokio::time::interval(WATCH_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Some(limit) = soft_limit() {
                pressure.set_limit(limit);
            }
            // Counting takes a descriptor too: failing means there are none left.
            let open = open_fds().unwrap_or(pressure.limit);
            let out_of_fds = self.out_of_fds.swap(false, Ordering::Relaxed);
            if burst.observe(open) {
                info!(
                    open_files = open,
                    "most connections of a burst have closed: handing free heap memory back"
                );
                tokio::task::spawn_blocking(memory::trim);
            }
            let Some(change) = pressure.update(open, out_of_fds) else {
                continue;
            };
            let paused = change == Change::Paused;
            if let Err(e) = self.capture.set_paused(paused) {
                warn!(error = %e, "cannot change whether new connections are captured");
                continue;
            }
            if paused {
                warn!(
                    open_files = open,
                    limit = pressure.limit,
                    "the agent is close to its open file limit: new connections go direct (not \
                     captured) until enough are free; raise the limit (LimitNOFILE, ulimit -n) \
                     to capture them"
                );
            } else {
                info!(
                    open_files = open,
                    limit = pressure.limit,
                    skipped = self.capture.stat(capture_common::stat::SKIPPED_PAUSED),
                    "enough open files are free again: new connections are captured again"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_near_the_limit_and_resumes_well_below_it() {
        let mut p = Pressure::new(1024);
        assert_eq!((p.pause_at(), p.resume_at()), (768, 512));
        assert_eq!(p.update(100, false), None);
        assert_eq!(p.update(768, false), Some(Change::Paused));
        assert_eq!(p.update(900, false), None);
        // Between the two thresholds: still paused, so it does not flap.
        assert_eq!(p.update(600, false), None);
        assert!(p.paused());
        assert_eq!(p.update(512, false), Some(Change::Resumed));
        assert_eq!(p.update(600, false), None);
    }

    #[test]
    fn an_accept_that_ran_out_pauses_whatever_the_count() {
        let mut p = Pressure::new(1024);
        assert_eq!(p.update(10, true), Some(Change::Paused));
        // Reported once; the count then decides.
        assert_eq!(p.update(10, false), Some(Change::Resumed));
    }

    #[test]
    fn small_limits_keep_a_minimum_reserve() {
        let mut p = Pressure::new(256);
        assert_eq!((p.pause_at(), p.resume_at()), (192, 128));
        p.set_limit(100);
        assert_eq!((p.pause_at(), p.resume_at()), (36, 0));
        assert_eq!(Pressure::new(1 << 20).pause_at(), (1 << 20) - 4096);
    }

    #[test]
    fn the_limit_is_raised_to_the_hard_one() {
        let (_, after) = raise_limit().unwrap();
        assert_eq!(soft_limit(), Some(after));
        assert!(open_fds().unwrap() > 0);
    }
}
