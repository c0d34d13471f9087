//! `ft-wsecho`: the WebSocket-over-TLS echo peers of `frametap-bench`, in Rust so
//! that they leave the machine to what the benchmark measures (the Python peers
//! keep both cores busy on their own).
//!
//! * `server`: answers the upgrade and echoes every data message, one thread.
//! * `echo`: keeps `--in-flight` messages of `--size` bytes outstanding on each of
//!   `--connections` connections for `--seconds`, then closes cleanly; prints JSON.
//! * `hold`: opens `--connections` connections, echoes `--messages` messages on
//!   each, keeps them all open until stdin closes, then closes them; prints JSON.
//!
//! The client masks with the all-zero key (valid: RFC 6455 only asks for a key, and
//! XOR with zero leaves the payload as it is), so one frame is built once and sent
//! again and again; the server unmasks whatever key it gets (a MITM peer masks anew).
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use frametap_e2e::echo_framing::{
    Inbox, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, READ_CHUNK, client_frame, parse_header,
    push_header, unmask,
};

/// The key every client sends; the server answers with its fixed digest.
const CLIENT_KEY: &str = "ZnJhbWV0YXAtYmVuY2gtMQ==";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Server(ServerArgs),
    Echo(EchoArgs),
    Hold(HoldArgs),
}

#[derive(Args)]
struct ServerArgs {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// Written with "ready" once the server listens.
    #[arg(long)]
    ready: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct Dial {
    /// The server's address (the original destination when captured).
    #[arg(long)]
    connect: SocketAddr,
    /// The TLS server name and Host header.
    #[arg(long)]
    host: String,
    /// CA (PEM) the client trusts.
    #[arg(long)]
    cafile: PathBuf,
    /// An explicit proxy to reach the server through, with CONNECT host:port.
    #[arg(long)]
    proxy: Option<SocketAddr>,
}

#[derive(Args)]
struct EchoArgs {
    #[command(flatten)]
    dial: Dial,
    #[arg(long, default_value_t = 100)]
    size: usize,
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

#[derive(Args)]
struct HoldArgs {
    #[command(flatten)]
    dial: Dial,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Messages echoed on each connection before it goes idle.
    #[arg(long, default_value_t = 3)]
    messages: usize,
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `hold` keeps thousands of connections open: the agent's own raise, soft to hard.
    let _ = frametap_agent::fd_budget::raise_limit();
    // One thread each: the peers should cost as little as they can.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.mode {
            Mode::Server(a) => server(a).await,
            Mode::Echo(a) => echo(a).await,
            Mode::Hold(a) => hold(a).await,
        }
    })
}

/// CPU seconds (user + system) this process has used.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

// ---------------------------------------------------------------- server

fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let certs = CertificateDer::pem_file_iter(&args.cert)
        .context("server certificate")?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&args.key).context("server key")?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(ready) = &args.ready {
        std::fs::write(ready, "ready")?;
    }
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                // A benchmark peer that vanished is not the server's error.
                let _ = serve_connection(tls).await;
            }
        });
    }
}

async fn serve_connection(mut tls: impl AsyncRead + AsyncWrite + Unpin) -> anyhow::Result<()> {
    let mut inbox = Inbox::new();
    let head = inbox.head(&mut tls).await?;
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        })
        .context("no Sec-WebSocket-Key")?;
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(&key)
    );
    tls.write_all(answer.as_bytes()).await?;
    tls.flush().await?;
    let mut out = Vec::with_capacity(READ_CHUNK);
    loop {
        // Answer every whole frame read so far with one write.
        while let Some(h) = parse_header(inbox.pending()) {
            let end = h.header_len + h.payload_len;
            if inbox.pending().len() < end {
                break;
            }
            let start = inbox.start;
            let payload = &mut inbox.buf[start + h.header_len..start + end];
            if let Some(key) = h.mask {
                unmask(payload, key);
            }
            let opcode = match h.opcode {
                OP_PING => OP_PONG,
                OP_PONG => {
                    inbox.consume(end);
                    continue;
                }
                op => op,
            };
            push_header(&mut out, opcode, payload.len(), false);
            out.extend_from_slice(payload);
            inbox.consume(end);
            if opcode == OP_CLOSE {
                tls.write_all(&out).await?;
                tls.shutdown().await?;
                return Ok(());
            }
        }
        if !out.is_empty() {
            tls.write_all(&out).await?;
            tls.flush().await?;
            out.clear();
        }
        if !inbox.fill(&mut tls).await? {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------- client

fn connector(cafile: &PathBuf) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cafile).context("client CA")? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A TLS WebSocket connection past its upgrade, and the bytes read after the 101.
async fn open(
    dial: &Dial,
    tls: &TlsConnector,
) -> anyhow::Result<(tokio_rustls::client::TlsStream<TcpStream>, Inbox)> {
    let port = dial.connect.port();
    let mut tcp = TcpStream::connect(dial.proxy.unwrap_or(dial.connect))
        .await
        .with_context(|| format!("cannot connect to {}", dial.proxy.unwrap_or(dial.connect)))?;
    tcp.set_nodelay(true)?;
    if dial.proxy.is_some() {
        let authority = format!("{}:{port}", dial.host);
        tcp.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut inbox = Inbox::new();
        let head = inbox.head(&mut tcp).await?;
        if head.split_whitespace().nth(1) != Some("200") {
            bail!("the proxy refused CONNECT {authority}: {head}");
        }
    }
    let name = ServerName::try_from(dial.host.clone())?;
    let mut stream = tls.connect(name, tcp).await.context("TLS handshake")?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        dial.host
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut inbox = Inbox::new();
    let head = inbox.head(&mut stream).await?;
    if !head.starts_with("HTTP/1.1 101") {
        bail!("the upgrade was refused: {head}");
    }
    Ok((stream, inbox))
}

/// Keeps `in_flight` messages outstanding until `deadline`, then closes; the
/// number of messages echoed.
async fn echo_connection(
    dial: Dial,
    tls: TlsConnector,
    frame: Arc<[u8]>,
    in_flight: usize,
    deadline: Instant,
) -> anyhow::Result<u64> {
    let (stream, mut inbox) = open(&dial, &tls).await?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let window = Semaphore::new(in_flight);
    let writer = async {
        while Instant::now() < deadline {
            window.acquire().await?.forget();
            wr.write_all(&frame).await?;
            // rustls may keep the tail of a record when the socket is full: push it.
            wr.flush().await?;
        }
        // Every echo back before the close.
        window.acquire_many(in_flight as u32).await?.forget();
        wr.write_all(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
            .await?;
        wr.flush().await?;
        anyhow::Ok(())
    };
    let reader = async {
        let mut echoed = 0u64;
        while let Some((h, _)) = inbox.frame(&mut rd).await? {
            inbox.consume(h.header_len + h.payload_len);
            if h.opcode == OP_CLOSE {
                return Ok(echoed);
            }
            echoed += 1;
            window.add_permits(1);
        }
        bail!("the server closed without a close frame")
    };
    let ((), echoed) = tokio::try_join!(writer, reader)?;
    Ok(echoed)
}

async fn echo(args: EchoArgs) -> anyhow::Result<()> {
    let tls = connector(&args.dial.cafile)?;
    let frame: Arc<[u8]> = client_frame(OP_BINARY, &vec![b'x'; args.size]).into();
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        runs.spawn(echo_connection(
            args.dial.clone(),
            tls.clone(),
            frame.clone(),
            args.in_flight,
            deadline,
        ));
    }
    let mut echoed = 0;
    while let Some(run) = runs.join_next().await {
        echoed += run??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = echoed as f64 * args.size as f64;
    println!(
        "{}",
        json!({
            "messages": echoed,
            "seconds": seconds,
            "messages_per_s": echoed as f64 / seconds,
            "mb_per_s": bytes / seconds / 1e6,
            "client_cpu_seconds": own_cpu_seconds() - cpu_before,
        })
    );
    Ok(())
}

type Held = (tokio_rustls::client::TlsStream<TcpStream>, Inbox);

/// One held connection: `messages` echoed one at a time, then idle.
async fn hold_one(
    dial: Dial,
    tls: TlsConnector,
    frame: Arc<[u8]>,
    messages: usize,
) -> anyhow::Result<Held> {
    let (mut stream, mut inbox) = open(&dial, &tls).await?;
    for _ in 0..messages {
        stream.write_all(&frame).await?;
        stream.flush().await?;
        let (h, _) = inbox
            .frame(&mut stream)
            .await?
            .context("the server closed a held connection")?;
        inbox.consume(h.header_len + h.payload_len);
    }
    Ok((stream, inbox))
}

/// A clean close of a held connection: close frame, the server's close, FIN.
async fn close_held((mut stream, mut inbox): Held) -> anyhow::Result<()> {
    stream
        .write_all(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
        .await?;
    stream.flush().await?;
    while let Some((h, _)) = inbox.frame(&mut stream).await? {
        inbox.consume(h.header_len + h.payload_len);
        if h.opcode == OP_CLOSE {
            break;
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}

async fn hold(args: HoldArgs) -> anyhow::Result<()> {
    let tls = connector(&args.dial.cafile)?;
    let frame: Arc<[u8]> = client_frame(OP_BINARY, &vec![b'h'; args.size]).into();
    let mut held = Vec::with_capacity(args.connections);
    let mut failed = 0u64;
    let started = Instant::now();
    let mut opens = tokio::task::JoinSet::new();
    for i in 0..args.connections {
        // At most `parallel` handshakes at a time.
        if i >= args.parallel
            && let Some(result) = opens.join_next().await
        {
            record_open(result?, &mut held, &mut failed);
        }
        opens.spawn(hold_one(
            args.dial.clone(),
            tls.clone(),
            frame.clone(),
            args.messages,
        ));
    }
    while let Some(result) = opens.join_next().await {
        record_open(result?, &mut held, &mut failed);
    }
    let opened = held.len();
    // Tell the bench they are all open, then wait for its word to close them.
    println!(
        "{}",
        json!({"opened": opened, "failed": failed, "open_seconds": started.elapsed().as_secs_f64()})
    );
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
    let mut closes = tokio::task::JoinSet::new();
    for conn in held {
        closes.spawn(close_held(conn));
    }
    let mut closed = 0u64;
    while let Some(result) = closes.join_next().await {
        closed += u64::from(matches!(result, Ok(Ok(()))));
    }
    println!("{}", json!({ "closed": closed }));
    Ok(())
}

fn record_open(result: anyhow::Result<Held>, held: &mut Vec<Held>, failed: &mut u64) {
    match result {
        Ok(conn) => held.push(conn),
        Err(e) => {
            if *failed == 0 {
                eprintln!("ft-wsecho hold: {e:#}");
            }
            *failed += 1;
        }
    }
}
