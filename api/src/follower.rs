//! The API's view of the agent's RocksDB: opened as a secondary (read-only
//! follower) and caught up whenever the agent's live record stream says it wrote
//! something ([`Follower::nudge`]), so a frame the agent wrote is visible here within
//! a few milliseconds. Without that stream (agent down or restarting) it catches up
//! on a short timer instead. Catching up only when there is something to catch up
//! with keeps it from stalling reads of an idle store. The API may start before the
//! agent (the store opens once it exists) and outlives agent restarts (a follower
//! that keeps failing to catch up is reopened). The secondary's own files live in a
//! [`crate::secondary_dir::SecondaryDir`].
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use frametap_store::Store;
use tracing::{info, warn};

use crate::state::StoreSource;

/// How often the follower catches up when nothing tells it the agent wrote.
pub const CATCH_UP_INTERVAL: Duration = Duration::from_millis(20);
/// How often it catches up anyway while the agent's record stream is up (in case a
/// write was not announced), or while no agent is up.
pub const CATCH_UP_BACKSTOP: Duration = Duration::from_secs(1);
/// Consecutive failed catch-ups after which the follower is reopened.
const REOPEN_AFTER_FAILURES: u32 = 5;

#[derive(Default)]
struct State {
    store: Option<Store>,
    /// Why the store is not readable (when `store` is `None`), or the last catch-up
    /// error.
    error: Option<String>,
    last_catch_up: Option<Instant>,
    failures: u32,
    /// [`Follower::close`]d: never opened again.
    closed: bool,
}

pub struct Follower {
    primary_dir: PathBuf,
    secondary_dir: PathBuf,
    state: Mutex<State>,
    /// Serialises catch-ups (the timer and read-your-writes refreshes).
    catching_up: Mutex<()>,
    /// Set by [`Follower::nudge`]: the agent wrote something.
    nudged: Mutex<bool>,
    wake: Condvar,
}

impl Follower {
    /// Follows `<data_dir>/store`; the secondary keeps its own files in
    /// `secondary_dir`, which must be private to this process.
    pub fn new(data_dir: &Path, secondary_dir: PathBuf) -> Arc<Follower> {
        Arc::new(Follower {
            primary_dir: data_dir.join("store"),
            secondary_dir,
            state: Mutex::new(State {
                error: Some("not opened yet".into()),
                ..State::default()
            }),
            catching_up: Mutex::new(()),
            nudged: Mutex::new(false),
            wake: Condvar::new(),
        })
    }

    /// The agent wrote something: catch up now.
    pub fn nudge(&self) {
        *self.nudged.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_one();
    }

    /// Opens (or keeps trying to open) the store and catches up on every
    /// [`Follower::nudge`], or after `idle()` without one, on a background thread,
    /// for as long as `self` lives.
    pub fn spawn(self: &Arc<Self>, idle: impl Fn() -> Duration + Send + 'static) {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("frametap-follower".into())
            .spawn(move || {
                while let Some(follower) = weak.upgrade() {
                    follower.tick();
                    let nudged = follower.nudged.lock().unwrap_or_else(|p| p.into_inner());
                    let (mut nudged, _) = follower
                        .wake
                        .wait_timeout_while(nudged, idle(), |n| !*n)
                        .unwrap_or_else(|p| p.into_inner());
                    *nudged = false;
                }
            })
            .expect("cannot start the store follower thread");
    }

    /// One step: open the store if it isn't, else catch up.
    pub fn tick(&self) {
        let _serial = self.catching_up.lock().unwrap_or_else(|p| p.into_inner());
        let (current, closed) = {
            let state = self.lock();
            (state.store.clone(), state.closed)
        };
        if closed {
            return;
        }
        match current {
            None => self.try_open(),
            Some(store) => {
                let result = store.catch_up();
                let mut state = self.lock();
                match result {
                    Ok(()) => {
                        state.last_catch_up = Some(Instant::now());
                        state.failures = 0;
                        state.error = None;
                    }
                    Err(e) => {
                        state.failures += 1;
                        state.error = Some(format!("{e:#}"));
                        if state.failures >= REOPEN_AFTER_FAILURES {
                            warn!(error = %format!("{e:#}"), "cannot follow the capture store; reopening it");
                            state.store = None;
                        }
                    }
                }
            }
        }
    }

    fn try_open(&self) {
        let opened = Store::open_secondary(&self.primary_dir, &self.secondary_dir)
            .and_then(|store| store.catch_up().map(|()| store));
        let mut state = self.lock();
        match opened {
            Ok(store) => {
                info!(store = %self.primary_dir.display(), "following the capture store");
                state.store = Some(store);
                state.error = None;
                state.failures = 0;
                state.last_catch_up = Some(Instant::now());
            }
            Err(e) => {
                let error = format!("{e:#}");
                if state.error.as_deref() != Some(error.as_str()) {
                    info!(%error, "capture store not readable yet; retrying");
                }
                state.error = Some(error);
            }
        }
    }

    /// Closes the store for good (at exit, before its directory goes).
    pub fn close(&self) {
        let _serial = self.catching_up.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self.lock();
        state.closed = true;
        state.store = None;
        state.error = Some("the API is stopping".into());
    }

    /// RocksDB sequence number this follower has caught up to.
    pub fn sequence(&self) -> Option<u64> {
        self.lock().store.as_ref().map(Store::latest_sequence)
    }

    /// Time since the last successful catch-up.
    pub fn since_catch_up(&self) -> Option<Duration> {
        self.lock().last_catch_up.map(|t| t.elapsed())
    }

    /// Why the store is not readable, or the last catch-up error.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StoreSource for Follower {
    fn store(&self) -> Result<Store, String> {
        let state = self.lock();
        state.store.clone().ok_or_else(|| {
            state
                .error
                .clone()
                .unwrap_or_else(|| "not opened yet".into())
        })
    }

    fn refresh(&self) {
        self.tick();
    }
}
