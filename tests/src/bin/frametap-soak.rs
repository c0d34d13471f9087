//! `frametap-soak` (run by `cargo xtask soak`): mixed WebSocket load through the
//! agent for a while, with faults injected in turn, then a check that nothing a
//! peer received is missing from the store.
//!
//! * Load: `--clients` loops, each running wss conversations (a handful of text
//!   messages, some of them large, then a close) from a captured cgroup, every
//!   message tagged with its connection, so that the store can be checked against
//!   what the server received.
//! * Faults, every `--fault-every` seconds, in turn: SIGKILL of the agent (how long
//!   until its programs are gone, and a captured client goes direct meanwhile; then
//!   restarted on the same data dir), SIGKILL of the API (restarted; answers again),
//!   a client that sends half a ClientHello and vanishes, the upstream resetting in
//!   the middle of a frame (the client is reset, the connection recorded as reset,
//!   the next conversation unaffected), and the disk filling up and freed again (the
//!   data dir is on a tmpfs: recording must stop, be reported, and resume by itself).
//! * Samples of the agent every 5 s: resident memory, open descriptors, threads.
//! * At the end: every message the server received over a connection the agent
//!   recorded must be in the store (recorded before it was forwarded), except over
//!   conversations that overlapped a full disk: those are counted apart.
use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use frametap_e2e::{
    Agent, Case, Lab, TestCgroup,
    api::Api,
    frametap_program_ids,
    netns::UPSTREAM_V4,
    pki::TestPki,
    tmpfs::Tmpfs,
    wait_for,
    ws::{ClientOptions, WsServer, run_client},
};
use frametap_store::{FrameFilter, Store, StoreOptions};
use serde_json::json;

const HOST: &str = "soak.frametap.test";
const PORT: u16 = 8443;
/// A message that makes the upstream send half a frame and reset the connection.
const RESET_MID_FRAME: &str = "reset-mid-frame:";

#[derive(Parser)]
struct Args {
    /// How long the load runs.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between faults.
    #[arg(long, default_value_t = 30)]
    fault_every: u64,
    /// Concurrent client loops.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Write the results as markdown to this file.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Size of the tmpfs that holds the data dir (and that the disk-full fault fills).
    #[arg(long, default_value = "6g")]
    disk: String,
}

/// One sample of the agent process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    seconds: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample(pid: u32, start: Instant) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Sample {
        seconds: start.elapsed().as_secs_f64(),
        rss_kib: field("VmRSS:")?,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64,
        threads: field("Threads:")?,
    })
}

#[derive(Default)]
struct Tally {
    conversations: AtomicU64,
    failed_conversations: AtomicU64,
    /// Each conversation's tag, with when it started and ended.
    windows: Mutex<Vec<(String, Instant, Instant)>>,
}

#[derive(Default)]
struct Faults {
    /// name -> (injected, survived, notes)
    rows: BTreeMap<&'static str, (u32, u32, Vec<String>)>,
}

impl Faults {
    fn record(&mut self, name: &'static str, survived: bool, note: String) {
        let row = self.rows.entry(name).or_default();
        row.0 += 1;
        row.1 += u32::from(survived);
        if !note.is_empty() {
            row.2.push(note);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The data dir on a tmpfs, which the disk-full fault fills.
    let case = Case::new("soak")
        .ports(&PORT.to_string())
        .upstream_ca()
        .pki(&[HOST, UPSTREAM_V4])
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, PORT, Some(pki), true))
        .tmpfs(&args.disk)
        .start()
        .context("the soak run attaches eBPF programs and creates namespaces: run as root")?;
    let data = case.data_dir().to_path_buf();
    let ca = data.join("ca.pem");
    let agent_args: Vec<&str> = case.args.iter().map(String::as_str).collect();
    // Restarted after each SIGKILL, by the fault injector.
    let agent = Mutex::new(Some(case.agent));
    let mut api = Api::start(&data);

    let start = Instant::now();
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let connect = format!("{UPSTREAM_V4}:{PORT}");

    let mut faults = Faults::default();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new()];
    // From filling the disk until recording resumed (and a second more).
    let mut outages: Vec<(Instant, Instant)> = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        // Load.
        for c in 0..args.clients {
            let (stop, tally, lab, cg, ca, connect) =
                (&stop, &tally, &case.lab, &case.cg, &ca, &connect);
            scope.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let tag = format!("soak:{c}:{n}");
                    let mut script: Vec<_> = (0..5)
                        .map(|i| json!({"op": "text", "data": format!("{tag}:{i}")}))
                        .collect();
                    let big = "x".repeat(70_000);
                    script.push(json!({"op": "text", "data": format!("{tag}:big:{big}")}));
                    script.push(json!({"op": "close", "code": 1000, "reason": ""}));
                    let opts = ClientOptions {
                        connect,
                        host: HOST,
                        cafile: Some(ca),
                        deflate: n.is_multiple_of(2),
                    };
                    let began = Instant::now();
                    let run = run_client(lab, Some(cg), &opts, &json!(script));
                    tally
                        .windows
                        .lock()
                        .unwrap()
                        .push((tag, began, Instant::now()));
                    tally.conversations.fetch_add(1, Ordering::Relaxed);
                    if !run.success {
                        tally.failed_conversations.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // Faults and samples; the load stops even if a fault fails.
        let result = FaultInjector {
            args: &args,
            lab: &case.lab,
            cg: &case.cg,
            pki: &case.pki,
            agent: &agent,
            agent_args: &agent_args,
            api: &mut api,
            data: &data,
            disk: case.tmpfs.as_ref().expect("the data dir's tmpfs"),
            faults: &mut faults,
            samples: &mut samples,
            outages: &mut outages,
        }
        .run(start);
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    let elapsed = start.elapsed();
    drop(api);
    let mut last = agent.lock().unwrap().take().context("agent")?;
    anyhow::ensure!(last.stop().success(), "the agent did not stop cleanly");

    // What the server received against what the store holds.
    let store = Store::open_primary(&data.join("store"), StoreOptions::default())?;
    let (traffic, _) = store.traffic_page(0, usize::MAX, |t| t.protocol == "wss")?;
    let mut recorded = HashSet::new();
    let mut frames = 0u64;
    // Connections the upstream reset mid-frame, and those recorded as reset.
    let (mut reset_connections, mut recorded_as_reset) = (0u64, 0u64);
    for t in &traffic {
        let mut after = None;
        loop {
            let filter = FrameFilter {
                from_client: Some(true),
                opcode: None,
            };
            let page = store.frames(t.id, after, 1000, &filter)?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            frames += page.len() as u64;
            for f in &page {
                if f.payload.starts_with(RESET_MID_FRAME.as_bytes()) {
                    reset_connections += 1;
                    let abnormal = store.ws_connection(t.id)?.and_then(|c| c.abnormal);
                    if abnormal.as_deref() == Some("server reset") {
                        recorded_as_reset += 1;
                    }
                }
                if !f.truncated {
                    recorded.insert(f.payload.clone());
                }
            }
        }
    }
    let tag_of = |m: &[u8]| -> Option<String> {
        let text = std::str::from_utf8(m).ok()?;
        let mut parts = text.splitn(4, ':');
        let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
        (a == "soak").then(|| format!("{a}:{b}:{c}"))
    };
    let captured: HashSet<String> = recorded.iter().filter_map(|m| tag_of(m)).collect();
    let received = case.server.received();
    let during_outage: HashSet<String> = tally
        .windows
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, began, ended)| outages.iter().any(|(a, b)| began <= b && ended >= a))
        .map(|(tag, ..)| tag.clone())
        .collect();
    let (mut checked, mut lost, mut direct) = (0u64, Vec::new(), 0u64);
    let (mut outage_messages, mut outage_missing) = (0u64, 0u64);
    for (_, message) in &received {
        let Some(tag) = tag_of(message) else { continue };
        if during_outage.contains(&tag) {
            outage_messages += 1;
            outage_missing += u64::from(!recorded.contains(message));
            continue;
        }
        if !captured.contains(&tag) {
            direct += 1;
            continue;
        }
        checked += 1;
        if message.len() <= 1 << 20 && !recorded.contains(message) {
            lost.push(String::from_utf8_lossy(&message[..message.len().min(40)]).into_owned());
        }
    }

    let conversations = tally.conversations.load(Ordering::Relaxed);
    let failed = tally.failed_conversations.load(Ordering::Relaxed);
    let mut out = String::new();
    out.push_str(&format!(
        "Run: {:.1} min, {} client loops, a fault every {} s. {conversations} wss \
         conversations ({failed} of them cut by a fault or failed), {} messages received \
         by the server, {checked} of them over connections the agent recorded, {direct} \
         over connections that went direct (agent down) or were never recorded; \
         {frames} client frames in the store.\n\n",
        elapsed.as_secs_f64() / 60.0,
        args.clients,
        args.fault_every,
        received.len(),
    ));
    out.push_str("| fault | injected | survived | notes |\n|---|---|---|---|\n");
    for (name, (injected, survived, notes)) in &faults.rows {
        let notes = notes.iter().take(6).cloned().collect::<Vec<_>>().join("; ");
        out.push_str(&format!("| {name} | {injected} | {survived} | {notes} |\n"));
    }
    out.push_str(&format!(
        "\n**Messages the server received over recorded connections and missing from the \
         store: {} of {checked}.**\n\n\
         Conversations that overlapped a full disk (from filling it until a second after \
         recording resumed) are counted apart: {outage_messages} messages, {outage_missing} \
         of them not stored (the agent reports what it could not store; see the notes of \
         the disk-full row). Connections the upstream reset in the middle of a frame: \
         {reset_connections}, recorded as `server reset`: {recorded_as_reset}.\n\n",
        lost.len()
    ));
    out.push_str(
        "Agent process per incarnation (restarted after each SIGKILL), after a 30 s \
         warm-up: resident memory, open descriptors, threads (min – max):\n\n\
         | incarnation | samples | RSS MiB | fds | threads |\n|---|---|---|---|---|\n",
    );
    for (i, run) in samples.iter().enumerate() {
        let first = run.first().map_or(0.0, |s| s.seconds);
        let warm: Vec<&Sample> = run.iter().filter(|s| s.seconds - first >= 30.0).collect();
        if warm.is_empty() {
            continue;
        }
        let range = |f: &dyn Fn(&Sample) -> u64| {
            let (lo, hi) = warm
                .iter()
                .map(|s| f(s))
                .fold((u64::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
            format!("{lo} – {hi}")
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            i + 1,
            warm.len(),
            range(&|s| s.rss_kib / 1024),
            range(&|s| s.fds),
            range(&|s| s.threads),
        ));
    }
    println!("{out}");
    if let Some(path) = &args.write {
        let doc = format!(
            "# Reliability\n\nWritten by `cargo xtask soak` (tests/src/bin/frametap-soak.rs) \
             on {}; numbers from one run on a 2-core machine.\n\n{out}",
            std::process::Command::new("date")
                .arg("-u")
                .arg("+%Y-%m-%d")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        );
        std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
    }
    anyhow::ensure!(lost.is_empty(), "messages lost: {lost:?}");
    anyhow::ensure!(
        recorded_as_reset == reset_connections,
        "{reset_connections} connections reset mid-frame, {recorded_as_reset} recorded as reset"
    );
    Ok(())
}

/// What the faults act on, and where they note what happened.
struct FaultInjector<'a> {
    args: &'a Args,
    lab: &'a Lab,
    cg: &'a TestCgroup,
    pki: &'a TestPki,
    agent: &'a Mutex<Option<Agent>>,
    /// What the agent is (re)started with.
    agent_args: &'a [&'a str],
    api: &'a mut Api,
    data: &'a std::path::Path,
    disk: &'a Tmpfs,
    faults: &'a mut Faults,
    samples: &'a mut Vec<Vec<Sample>>,
    outages: &'a mut Vec<(Instant, Instant)>,
}

impl FaultInjector<'_> {
    /// Injects a fault every `--fault-every` seconds and samples the agent every 5 s,
    /// until the run's time is up.
    fn run(mut self, start: Instant) -> anyhow::Result<()> {
        let run_for = Duration::from_secs_f64(self.args.minutes * 60.0);
        let mut next_fault = Instant::now() + Duration::from_secs(self.args.fault_every);
        let mut next_sample = Instant::now();
        let mut turn = 0usize;
        while start.elapsed() < run_for {
            if Instant::now() >= next_sample {
                let pid = self.agent.lock().unwrap().as_ref().map(Agent::pid);
                if let Some(s) = pid.and_then(|pid| sample(pid, start)) {
                    self.samples.last_mut().unwrap().push(s);
                }
                next_sample += Duration::from_secs(5);
            }
            if Instant::now() >= next_fault {
                match turn % 5 {
                    0 => self.kill_agent()?,
                    1 => self.kill_api(),
                    2 => self.half_hello()?,
                    3 => self.upstream_reset(turn),
                    _ => self.disk_full()?,
                }
                turn += 1;
                // A fault that took long does not make the next ones come in a burst.
                next_fault =
                    next_fault.max(Instant::now()) + Duration::from_secs(self.args.fault_every);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// One conversation from the captured cgroup: through the agent (trusting its
    /// CA) when it runs, direct (trusting the test CA) when it does not.
    fn client(&self, script: serde_json::Value) -> bool {
        let connect = format!("{UPSTREAM_V4}:{PORT}");
        let agent_ca = self.data.join("ca.pem");
        let opts = ClientOptions {
            connect: &connect,
            host: HOST,
            cafile: Some(if self.agent_up() {
                &agent_ca
            } else {
                &self.pki.ca
            }),
            deflate: false,
        };
        run_client(self.lab, Some(self.cg), &opts, &script).success
    }

    fn agent_up(&self) -> bool {
        self.agent.lock().unwrap().is_some()
    }

    fn kill_agent(&mut self) -> anyhow::Result<()> {
        let mut slot = self.agent.lock().unwrap();
        let mut old = slot.take().context("agent")?;
        drop(slot);
        let before = frametap_program_ids();
        old.process.signal(libc::SIGKILL);
        let killed = Instant::now();
        old.process.wait_timeout(Duration::from_secs(5));
        let gone = wait_for(Duration::from_secs(5), || {
            let now = frametap_program_ids();
            (now.len() < before.len()).then_some(killed.elapsed())
        });
        // Captured clients go direct meanwhile.
        let direct = self.client(json!([
            {"op": "text", "data": "direct while the agent is down"},
            {"op": "close", "code": 1000, "reason": ""}
        ]));
        let Agent { data_dir, .. } = old;
        *self.agent.lock().unwrap() = Some(Agent::start_in(self.lab, self.agent_args, data_dir));
        self.samples.push(Vec::new());
        let ok = gone.is_some_and(|d| d < Duration::from_secs(1)) && direct;
        self.faults.record(
            "SIGKILL of the agent",
            ok,
            format!(
                "detached after {:.2} s",
                gone.map_or(f64::NAN, |d| d.as_secs_f64())
            ),
        );
        Ok(())
    }

    fn kill_api(&mut self) {
        self.api.process.signal(libc::SIGKILL);
        self.api.process.wait_timeout(Duration::from_secs(5));
        *self.api = Api::start(self.data);
        let health = self.api.request("GET", "/api/health");
        self.faults
            .record("SIGKILL of the API", health.status == 200, String::new());
    }

    fn half_hello(&mut self) -> anyhow::Result<()> {
        let abuse = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/tls_abuse.py");
        let out = self
            .lab
            .client_command(Some(self.cg), "python3")
            .arg(&abuse)
            .args(["half-hello", UPSTREAM_V4, &PORT.to_string(), HOST])
            .output()?;
        self.faults.record(
            "client vanishing mid-handshake",
            out.status.success(),
            String::new(),
        );
        Ok(())
    }

    /// The upstream sends half a frame and resets: the client must see the reset
    /// (not hang), and the next conversation must work.
    fn upstream_reset(&mut self, turn: usize) {
        let reset = self.client(json!([
            {"op": "text", "data": format!("{RESET_MID_FRAME}{turn}")}
        ]));
        let next = self.client(json!([
            {"op": "text", "data": "after a reset"},
            {"op": "close", "code": 1000, "reason": ""}
        ]));
        self.faults
            .record("upstream reset mid-frame", !reset && next, String::new());
    }

    /// Fills the data dir's filesystem under load until the agent reports recording
    /// degraded, frees it, and waits for recording to resume by itself.
    fn disk_full(&mut self) -> anyhow::Result<()> {
        let filler = self.disk.path().join("filler");
        let began = Instant::now();
        Tmpfs::fill(&filler);
        let state = |api: &Api| {
            let h = api.request("GET", "/api/health");
            (h.status == 200).then(|| h.json())
        };
        let degraded = wait_for(Duration::from_secs(60), || {
            state(self.api).filter(|h| h["recording"]["state"] == "degraded")
        });
        std::fs::remove_file(&filler).context("freeing the disk")?;
        let freed = Instant::now();
        let resumed = wait_for(Duration::from_secs(60), || {
            state(self.api).filter(|h| h["recording"]["state"] == "ok")
        });
        self.outages
            .push((began, Instant::now() + Duration::from_secs(1)));
        let note = match (&degraded, &resumed) {
            (Some(_), Some(h)) => format!(
                "resumed {:.1} s after the space came back, {} records lost",
                freed.elapsed().as_secs_f64(),
                h["recording"]["lastOutage"]["recordsLost"]
            ),
            (None, _) => "recording never reported degraded".into(),
            (_, None) => "recording did not resume within 60 s".into(),
        };
        self.faults.record(
            "disk full, then freed",
            degraded.is_some() && resumed.is_some(),
            note,
        );
        Ok(())
    }
}
