//! Test peer for frametap's end-to-end tests and benchmarks.
//!
//! * `serve ADDR --mode echo|pingpong|source --log FILE`: a TCP server. `echo` reads
//!   the request to EOF and answers "echo <bytes>" (so half-close is exercised);
//!   `pingpong` answers each byte with one byte; `source` sends `--bytes` bytes;
//!   `silent` reads the request to EOF and then neither answers nor closes (a minute).
//!   Each connection is logged to FILE as a JSON line; "ready" is logged first.
//! * `connect ADDR --send TEXT|--send-file F`: one request, prints {peer, local, reply} as JSON.
//! * `latency ADDR --count N`: N times connect + 1-byte round trip; prints microseconds.
//! * `download ADDR --bytes N --repeat K`: K times, read N bytes from a `source`
//!   server on a new connection; prints the seconds each took.
//! * `hold ADDR --count N`: opens N connections to a `pingpong` server, one byte
//!   round trip on each as it opens, keeps them all open, then one more round trip
//!   on each; prints {ok, errors}.
use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Echo,
    Pingpong,
    Source,
    Silent,
}

#[derive(Subcommand)]
enum Cmd {
    Serve {
        addr: SocketAddr,
        #[arg(long, value_enum, default_value = "echo")]
        mode: Mode,
        #[arg(long, default_value_t = 0)]
        bytes: u64,
        #[arg(long)]
        log: PathBuf,
    },
    Connect {
        addr: SocketAddr,
        #[arg(long, default_value = "hello")]
        send: String,
        /// Send this file's content instead of --send (for payloads too big for argv).
        #[arg(long)]
        send_file: Option<PathBuf>,
    },
    Latency {
        addr: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    Download {
        addr: SocketAddr,
        #[arg(long)]
        bytes: u64,
        /// Downloads in a row, each on a new connection.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    Hold {
        addr: SocketAddr,
        #[arg(long)]
        count: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve {
            addr,
            mode,
            bytes,
            log,
        } => serve(addr, mode, bytes, log),
        Cmd::Connect {
            addr,
            send,
            send_file,
        } => {
            let payload = match send_file {
                Some(path) => std::fs::read(path)?,
                None => send.into_bytes(),
            };
            let result = connect(addr, &payload);
            let out = match result {
                Ok((peer, local, reply)) => json!({
                    "peer": peer.to_string(),
                    "local": local.to_string(),
                    "reply": String::from_utf8_lossy(&reply),
                    "error": null,
                }),
                Err(e) => json!({ "error": e.to_string(), "kind": format!("{:?}", e.kind()) }),
            };
            println!("{out}");
            Ok(())
        }
        Cmd::Latency { addr, count } => {
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let start = Instant::now();
                let mut s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                s.write_all(b"x")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                samples.push(start.elapsed().as_secs_f64() * 1e6);
            }
            println!("{}", json!({ "micros": samples }));
            Ok(())
        }
        Cmd::Download {
            addr,
            bytes,
            repeat,
        } => {
            let mut seconds = Vec::with_capacity(repeat);
            let mut buf = vec![0u8; 256 * 1024];
            for _ in 0..repeat {
                let start = Instant::now();
                let mut s = TcpStream::connect(addr)?;
                let mut got = 0u64;
                while got < bytes {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        anyhow::bail!("server closed after {got} of {bytes} bytes");
                    }
                    got += n as u64;
                }
                seconds.push(start.elapsed().as_secs_f64());
            }
            println!("{}", json!({ "seconds": seconds, "bytes": bytes }));
            Ok(())
        }
        Cmd::Hold { addr, count } => {
            let round_trip = |s: &mut TcpStream| -> std::io::Result<()> {
                s.write_all(b"x")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)
            };
            let mut held = Vec::with_capacity(count);
            let mut errors = Vec::new();
            for i in 0..count {
                let opened =
                    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(10)))?;
                        round_trip(&mut s)?;
                        Ok(s)
                    });
                match opened {
                    Ok(s) => held.push(s),
                    Err(e) => errors.push(format!("connection {i}: {e}")),
                }
            }
            for (i, s) in held.iter_mut().enumerate() {
                if let Err(e) = round_trip(s) {
                    errors.push(format!("held connection {i}: {e}"));
                }
            }
            let ok = count - errors.len();
            println!("{}", json!({ "ok": ok, "errors": errors }));
            Ok(())
        }
    }
}

fn connect(addr: SocketAddr, send: &[u8]) -> std::io::Result<(SocketAddr, SocketAddr, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let peer = s.peer_addr()?;
    let local = s.local_addr()?;
    s.write_all(send)?;
    s.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    Ok((peer, local, reply))
}

fn serve(addr: SocketAddr, mode: Mode, bytes: u64, log: PathBuf) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)?;
    let log = Arc::new(Mutex::new(std::fs::File::create(log)?));
    writeln!(log.lock().unwrap(), "{}", json!({ "event": "ready" }))?;
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let peer = s.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            let _ = s.set_nodelay(true);
            let result: std::io::Result<serde_json::Value> = (|| match mode {
                Mode::Echo => {
                    let mut req = Vec::new();
                    s.read_to_end(&mut req)?;
                    let mut reply = b"echo ".to_vec();
                    reply.extend_from_slice(&req);
                    s.write_all(&reply)?;
                    Ok(json!({ "received": String::from_utf8_lossy(&req) }))
                }
                Mode::Pingpong => {
                    let mut b = [0u8; 1];
                    let mut n = 0u64;
                    while s.read(&mut b)? == 1 {
                        s.write_all(&b)?;
                        n += 1;
                    }
                    Ok(json!({ "rounds": n }))
                }
                Mode::Silent => {
                    let mut req = Vec::new();
                    s.read_to_end(&mut req)?;
                    std::thread::sleep(Duration::from_secs(60));
                    Ok(json!({ "received": String::from_utf8_lossy(&req) }))
                }
                Mode::Source => {
                    let chunk = vec![0x5au8; 256 * 1024];
                    let mut left = bytes;
                    while left > 0 {
                        let n = left.min(chunk.len() as u64) as usize;
                        s.write_all(&chunk[..n])?;
                        left -= n as u64;
                    }
                    Ok(json!({ "sent": bytes }))
                }
            })();
            let entry = match result {
                Ok(v) => json!({ "event": "connection", "peer": peer, "result": v }),
                Err(e) => json!({ "event": "connection", "peer": peer, "error": e.to_string() }),
            };
            if matches!(mode, Mode::Echo) {
                let _ = writeln!(log.lock().unwrap(), "{entry}");
            }
        });
    }
    Ok(())
}
