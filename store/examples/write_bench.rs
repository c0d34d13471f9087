//! Writer micro-benchmark: how fast one frame size can be recorded, with nothing else
//! on the machine (the relay's share is measured by `cargo xtask bench`).
//!
//! `cargo run --release --example write_bench -- [SIZE] [SUBMITTERS] [SECONDS] [now|queued]`
//!
//! Each submitter writes one frame of SIZE random bytes at a time, like a relay
//! direction that waits for its records before forwarding: `now` with
//! [`Writer::write_now`] (the agent's usual path), `queued` through the writer thread.
//! Prints frames and MB per second, the time per write, and each thread's CPU share.
use std::time::{Duration, Instant};

use frametap_store::{
    FrameRecord, Record, Store, StoreOptions, TrafficId, Writer, WrittenNow, now_ms,
};

fn frame(traffic: TrafficId, seq: u64, payload: &[u8]) -> Record {
    Record::Frame(FrameRecord {
        traffic,
        seq,
        timestamp_ms: now_ms(),
        from_client: true,
        opcode: 2,
        fin: true,
        rsv: 0,
        masked: false,
        compressed: false,
        wire_len: payload.len() as u64 + 10,
        payload_len: payload.len() as u64,
        truncated: false,
        payload: payload.to_vec(),
        close_code: None,
        close_reason: None,
        injected: false,
        dropped: false,
        binary_message: true,
        modified: false,
    })
}

/// Incompressible bytes (xorshift), so compression flatters nothing.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes frames for `seconds`; returns how many.
async fn submitter(
    writer: Writer,
    traffic: TrafficId,
    payload: Vec<u8>,
    deadline: Instant,
    queued: bool,
) -> u64 {
    let mut seq = 0;
    while Instant::now() < deadline {
        seq += 1;
        let records = vec![frame(traffic, seq, &payload)];
        let records = match (queued, writer.write_now(records.clone())) {
            (true, _) => records,
            (false, WrittenNow::Done(result)) => {
                result.expect("write failed");
                continue;
            }
            (false, WrittenNow::Busy(records)) => records,
        };
        writer.submit(records).await.expect("write failed");
    }
    seq
}

fn thread_cpu_shares(elapsed: f64) {
    let hz = 100.0; // USER_HZ on Linux
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((name, rest)) = stat.split_once(") ") else {
            continue;
        };
        let fields: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // utime and stime, counted from the field after the state letter.
        let ticks = fields.get(10).unwrap_or(&0.0) + fields.get(11).unwrap_or(&0.0);
        if ticks > 0.0 {
            let name = name.split_once('(').map_or(name, |(_, n)| n);
            println!(
                "  {name:20} {:.0}% of one core",
                ticks / hz / elapsed * 100.0
            );
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut next = |default: &str| args.next().unwrap_or_else(|| default.to_string());
    let size: usize = next("65536").parse().expect("SIZE: a number of bytes");
    let submitters: u64 = next("1").parse().expect("SUBMITTERS: a number");
    let seconds: f64 = next("5").parse().expect("SECONDS: a number");
    let queued = match next("now").as_str() {
        "now" => false,
        "queued" => true,
        other => panic!("mode {other:?}: use now or queued"),
    };
    let dir = tempfile::tempdir_in("/var/tmp").expect("a temporary dir in /var/tmp");
    let store = Store::open_primary(dir.path(), StoreOptions::default()).expect("open store");
    let writer = Writer::spawn(store, 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let payload = random_bytes(size);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let total: u64 = runtime.block_on(async {
        let tasks: Vec<_> = (0..submitters)
            .map(|s| {
                let traffic = TrafficId::new(now_ms(), s as u16);
                tokio::spawn(submitter(
                    writer.clone(),
                    traffic,
                    payload.clone(),
                    deadline,
                    queued,
                ))
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.expect("submitter");
        }
        total
    });
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{size} B frames, {submitters} submitter(s), {}: {:.0} frames/s, {:.0} MB/s, {:.1} µs per write",
        if queued { "queued" } else { "now" },
        total as f64 / elapsed,
        total as f64 * size as f64 / elapsed / 1e6,
        elapsed * 1e6 / (total as f64 / submitters as f64),
    );
    thread_cpu_shares(elapsed);
    writer.shutdown();
}
