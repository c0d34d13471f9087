//! Many intercepted WebSocket connections held open at once, idle after a few
//! messages each: the agent's memory per connection, whether it comes back down
//! after they close, and whether every message of every one was recorded.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use frametap_e2e::{Agent, Lab, Spawned, TestCgroup, workspace_bin};
use serde_json::Value;

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

const MIB: f64 = 1024.0 * 1024.0;
/// Descriptors the store may open (SST and blob files) while a section runs.
const FDS_SLACK: usize = 16;

/// Frames recorded on connections to `port` since `since_ms`, and how many such
/// connections there are, read from the agent's store as the API would.
fn recorded(data_dir: &Path, port: u16, since_ms: u64) -> anyhow::Result<(u64, u64)> {
    let secondary = tempfile::tempdir()?;
    let store = frametap_store::Store::open_secondary(&data_dir.join("store"), secondary.path())?;
    let needle = format!(":{port}/");
    let (entries, _) = store.traffic_page(0, usize::MAX, |e| {
        e.timestamp_ms >= since_ms && e.url.contains(&needle)
    })?;
    let mut frames = 0;
    for entry in &entries {
        frames += store.frame_count(entry.id)?;
    }
    Ok((frames, entries.len() as u64))
}

/// How many connections the agent `pid` can hold captured under this process's hard
/// descriptor limit (which it inherits and raises its soft limit to): it stops
/// capturing new connections at its own pause threshold, each relayed connection
/// takes two descriptors, and its store opens more files as it grows (200 spare).
pub fn capacity(requested: usize, pid: u32) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return requested;
    }
    let pause_at = frametap_agent::fd_budget::Pressure::new(limit.rlim_max).pause_at();
    let in_use = open_fds(pid) as u64 + 200;
    requested.min((pause_at.saturating_sub(in_use) / 2) as usize)
}

pub struct Settings<'a> {
    pub connections: usize,
    /// What was asked for, when the descriptor limit allowed fewer.
    pub requested: usize,
    pub messages: usize,
    /// `ft-wsecho` dial arguments (`--connect`, `--host`, `--cafile`).
    pub dial: Vec<String>,
    pub port: u16,
    pub data_dir: &'a Path,
}

pub fn section(
    lab: &Lab,
    cg: &TestCgroup,
    agent: &Agent,
    settings: Settings<'_>,
) -> anyhow::Result<String> {
    let pid = agent.pid();
    let since_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let (rss_before, fds_before) = (rss(pid), open_fds(pid));
    eprintln!("holding {} connections", settings.connections);
    let mut cmd = lab.client_command(Some(cg), workspace_bin("ft-wsecho"));
    cmd.arg("hold")
        .args(&settings.dial)
        .args(["--connections", &settings.connections.to_string()])
        .args(["--messages", &settings.messages.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let child = cmd.spawn().context("cannot start ft-wsecho hold")?;
    let mut holder = Spawned {
        child: Some(child),
        name: "ft-wsecho hold".into(),
    };
    let child = holder.child.as_mut().expect("just spawned");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut next_json = || -> anyhow::Result<Value> {
        let line = lines.next().context("ft-wsecho hold ended early")??;
        Ok(serde_json::from_str(&line)?)
    };
    let opened = next_json()?;
    // Let the last handshakes' records settle before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let (rss_held, fds_held) = (rss(pid), open_fds(pid));
    writeln!(child.stdin.as_mut().expect("piped"))?;
    let closed = next_json()?;
    let closing = Instant::now();
    // Back to where it was, give or take a few files the store opened meanwhile.
    frametap_e2e::wait_for(Duration::from_secs(60), || {
        (open_fds(pid) <= fds_before + FDS_SLACK).then_some(())
    });
    let fds_back = closing.elapsed().as_secs_f64();
    let fds_after = open_fds(pid);
    std::thread::sleep(Duration::from_secs(1));
    let rss_after_1s = rss(pid);
    std::thread::sleep(Duration::from_secs(9));
    let rss_after_10s = rss(pid);
    drop(holder);

    let held = opened["opened"].as_u64().unwrap_or(0);
    let failed = opened["failed"].as_u64().unwrap_or(0);
    if held == 0 {
        bail!("ft-wsecho hold opened no connection");
    }
    let (frames, entries) = recorded(settings.data_dir, settings.port, since_ms)?;
    // Per connection: each message and its echo, and the two close frames.
    let expected = held * (2 * settings.messages as u64 + 2);
    let per_conn = (rss_held.saturating_sub(rss_before)) as f64 / held as f64 / 1024.0;
    let allowed_after = (32.0 * MIB).max(rss_before as f64 * 1.25);
    Ok(format!(
        "## Many connections: memory per connection and after they close\n\n\
         `ft-wsecho hold` opens {n} wss connections through frametap ({parallel} handshakes at \
         a time), echoes {m} messages of 100 B on each, holds them all open, then closes them \
         all. The agent's RSS and open descriptors from its /proc.{limited}\n\n\
         | measure | value | target |\n|---|---|---|\n\
         | connections held (failed) | {held} ({failed}), opened in {open_s:.1} s | {n}, none failed |\n\
         | agent RSS before | {before:.1} MiB | |\n\
         | agent RSS with all open | {with:.1} MiB | |\n\
         | RSS per held connection | {per_conn:.1} KiB | ≤ 64 KiB |\n\
         | agent RSS 1 s / 10 s after all closed | {a1:.1} / {a10:.1} MiB | ≤ {allowed:.1} MiB |\n\
         | agent descriptors before / held / after | {fds_before} / {fds_held} / {fds_after} (back in {fds_back:.1} s) | back to before |\n\
         | connections closed cleanly by the client | {closed} | {held} |\n\
         | frames recorded (connections in the store) | {frames} ({entries}) | {expected} ({held}) |\n",
        n = settings.connections,
        limited = if settings.requested > settings.connections {
            format!(
                " {} were asked for: this machine's hard descriptor limit leaves the agent \
                 room for {} captured connections (two descriptors each, a reserve kept \
                 free), and without CAP_SYS_RESOURCE it cannot be raised.",
                settings.requested, settings.connections
            )
        } else {
            String::new()
        },
        parallel = 64,
        m = settings.messages,
        open_s = opened["open_seconds"].as_f64().unwrap_or(0.0),
        before = rss_before as f64 / MIB,
        with = rss_held as f64 / MIB,
        a1 = rss_after_1s as f64 / MIB,
        a10 = rss_after_10s as f64 / MIB,
        allowed = allowed_after / MIB,
        closed = closed["closed"].as_u64().unwrap_or(0),
    ))
}
