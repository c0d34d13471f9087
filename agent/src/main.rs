//! `frametap-agent`: serve (capture and relay) or exec (run a command captured).
use std::{
    ffi::OsString,
    net::{Ipv6Addr, SocketAddr, SocketAddrV6},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use frametap_agent::{
    capture::{self, Capture, CaptureSettings},
    cgroup,
    config::{self, LogFormat, ServeConfig, ServeOptions},
    container_selection::ContainerSelection,
    context::{InterceptSettings, ProxyContext},
    control::{ControlContext, ControlSocket},
    exec,
    fd_budget::{self, FdGuard},
    hint,
    intercept::Passthrough,
    live::LiveConnections,
    memory,
    netns::{bind_listener, ensure_free},
    netns_listeners::{Accepting, NetnsListeners, NetnsStats},
    preflight, proxy,
    recorder::Recorder,
    tls::{self, CertificateAuthority, LeafMinter, TlsContext, UpstreamTrust},
};
use frametap_session::rules::RuleBook;
use frametap_store::{Store, StoreOptions, Writer, data_dir};

/// The RocksDB store, inside the data dir (the API opens it as a secondary).
const STORE_DIR: &str = "store";
const WRITER_QUEUE: usize = 65_536;
const RETENTION_INTERVAL: Duration = Duration::from_secs(30);

fn print_ca(args: &CaArgs) -> anyhow::Result<()> {
    let ca = CertificateAuthority::load_or_create(&args.data_dir, &args.ca_name)?;
    println!("{}", ca.cert_path.display());
    print!("{}", ca.cert_pem);
    Ok(())
}
use ipnet::IpNet;
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "frametap-agent",
    version,
    about = "Transparent capture of selected outbound TCP connections, redirected by eBPF"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load and attach the eBPF programs and relay every captured connection.
    #[command(after_help = config::config_file_help())]
    Serve(Box<ServeOptions>),
    /// Print, as JSON with the config file's keys, the configuration `serve` would run
    /// with given the same options (command line, config file, defaults), and exit.
    #[command(after_help = config::config_file_help())]
    Config(Box<ServeOptions>),
    /// Run one command (and its children) inside a fresh child cgroup of a captured cgroup.
    Exec(ExecArgs),
    /// Print the path and PEM of the frametap CA certificate (created if missing), to
    /// install as trusted on the captured hosts.
    Ca(CaArgs),
    /// List the running containers: id, name (with a runtime API socket), cgroup,
    /// network namespace, and whether a running agent captures them.
    Containers,
}

#[derive(Args)]
struct CaArgs {
    /// The agent's data dir, where the CA lives.
    #[arg(long, value_name = "DIR", default_value = config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Common name of the CA when it is created.
    #[arg(long, value_name = "NAME", default_value = config::DEFAULT_CA_NAME)]
    ca_name: String,
}

#[derive(Args)]
struct ExecArgs {
    /// Captured cgroup (relative to the cgroup2 mount) to run the command under.
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CGROUP)]
    cgroup: String,
    /// No longer used: exec asks the kernel whether the cgroup is captured.
    #[arg(long, value_name = "DIR", hide = true)]
    data_dir: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

fn main() {
    memory::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => ServeConfig::from_command_line(*args)
            .and_then(serve)
            .map(|()| 0),
        Command::Config(args) => ServeConfig::from_command_line(*args)
            .and_then(|cfg| Ok(serde_json::to_string_pretty(&cfg)?))
            .map(|json| {
                println!("{json}");
                0
            }),
        Command::Exec(args) => {
            frametap_logging::init(LogFormat::Text);
            if args.data_dir.is_some() {
                warn!(
                    "exec --data-dir is ignored and can be dropped: exec asks the kernel \
                     whether the cgroup is captured, whatever data dir the agent uses"
                );
            }
            exec::run(&args.cgroup, &args.command)
        }
        Command::Ca(args) => print_ca(&args).map(|()| 0),
        Command::Containers => list_containers().map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("frametap-agent: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Per worker: its IPv4 listener and, when IPv6 loopback exists, its IPv6 one
/// (SO_REUSEPORT: every worker has its own socket on the same address, and the
/// kernel spreads connections over them).
fn bind_workers(
    listen: std::net::SocketAddrV4,
    workers: usize,
) -> anyhow::Result<Vec<Vec<std::net::TcpListener>>> {
    let v4_addr = SocketAddr::V4(listen);
    let in_use = |addr: SocketAddr| {
        format!("cannot listen on {addr}: is another frametap-agent running? Pick another --listen")
    };
    ensure_free(None, v4_addr).with_context(|| in_use(v4_addr))?;
    let v6_addr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, listen.port(), 0, 0));
    let ipv6 = match ensure_free(None, v6_addr) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(e).with_context(|| in_use(v6_addr));
        }
        Err(e) => {
            warn!(error = %e, "no IPv6 loopback here: IPv6 connections will not be captured");
            false
        }
    };
    (0..workers)
        .map(|_| {
            let mut set = vec![bind_listener(None, v4_addr).with_context(|| in_use(v4_addr))?];
            if ipv6 {
                set.push(bind_listener(None, v6_addr).with_context(|| in_use(v6_addr))?);
            }
            Ok(set)
        })
        .collect()
}

fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    frametap_logging::init(cfg.log_format);

    preflight::check_privileges()?;
    preflight::check_btf()?;
    // Each captured connection takes descriptors: take all the system allows.
    match fd_budget::raise_limit() {
        Ok((before, after)) if before < after => {
            info!(from = before, to = after, "raised the open file limit")
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot raise the open file limit"),
    }
    let mount = cgroup::cgroup2_mount()?;
    let cgroup_dirs = cgroup::resolve_captured(&mount, &cfg.cgroups, config::DEFAULT_CGROUP)?;

    // Listeners before attaching: a port in use must fail with nothing attached.
    let workers = cfg.workers;
    let worker_listeners = bind_workers(cfg.listen, workers)?;
    let ipv6 = worker_listeners[0].len() > 1;

    // Recordings hold decrypted traffic: everything the agent creates from here on is
    // root's only, and a data dir left open (by an older version, or by hand) is
    // closed before anything is recorded into it.
    data_dir::create(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    data_dir::restrict_umask();
    let closed = data_dir::tighten(&cfg.data_dir, &[tls::CA_CERT_FILE]).with_context(|| {
        format!(
            "cannot make the data dir {} private: check that it is owned by root",
            cfg.data_dir.display()
        )
    })?;
    if !closed.is_empty() {
        warn!(
            data_dir = %cfg.data_dir.display(),
            entries = closed.len(),
            "the data dir was open to other users: removed their access to its files and directories"
        );
    }

    // Interception and recording are ready before anything is attached.
    let passthrough = Passthrough::parse(&cfg.passthrough).map_err(anyhow::Error::msg)?;
    let ca = CertificateAuthority::load_or_create(&cfg.data_dir, &cfg.ca_name)?;
    let ca_path = ca.cert_path.clone();
    info!(ca = %ca.cert_path.display(), "TLS interception CA (trust it on captured hosts: see `frametap-agent ca`)");
    let tls = Arc::new(TlsContext::new(
        LeafMinter::new(ca)?,
        &UpstreamTrust {
            extra_ca_files: cfg.upstream_ca.clone(),
            insecure: cfg.insecure_upstream,
        },
    )?);
    let store = Store::open_primary(
        &cfg.data_dir.join(STORE_DIR),
        StoreOptions {
            max_age: cfg.retention_max_age,
            max_bytes: cfg.retention_max_size,
            ..StoreOptions::default()
        },
    )?;
    let retention = (cfg.retention_max_age.is_some() || cfg.retention_max_size.is_some())
        .then(|| frametap_store::spawn_retention(store.clone(), RETENTION_INTERVAL));
    let writer = Writer::spawn(store.clone(), WRITER_QUEUE);
    let recorder = Recorder::new(writer.clone());
    let control = ControlSocket::bind(&cfg.data_dir)?;
    let rules = Arc::new(RuleBook::new(cfg.rules.clone()).map_err(anyhow::Error::msg)?);
    // The API shows these while the agent is down.
    frametap_agent::control::record_rules(&store, &rules)?;
    let live = Arc::new(LiveConnections::default());
    let namespace_stats = Arc::new(NetnsStats::default());
    let replays = Arc::new(frametap_agent::replay::ReplayBook::default());
    let control_ctx = Arc::new(ControlContext {
        replays: Arc::clone(&replays),
        namespaces: Arc::clone(&namespace_stats),
        store: store.clone(),
        recorder: recorder.clone(),
        rules: Arc::clone(&rules),
        live: Arc::clone(&live),
        rule_changes: tokio::sync::Mutex::default(),
    });

    let mut agent = capture_common::AgentConfig::new(
        *cfg.listen.ip(),
        if ipv6 {
            Ipv6Addr::LOCALHOST
        } else {
            Ipv6Addr::UNSPECIFIED
        },
        cfg.listen.port(),
    );
    agent.agent_tgid = std::process::id();
    agent.netns_cookie = capture::current_netns_cookie()?;
    let mark = agent.agent_mark;
    let capture = Arc::new(Capture::load_and_attach(&CaptureSettings {
        cgroup_dirs: cgroup_dirs.clone(),
        ports: cfg.ports.iter().copied().collect(),
        exclude: cfg.exclude.clone(),
        include: cfg.include.clone(),
        agent,
    })?);

    let ports = cfg
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let list = |nets: &[IpNet]| {
        nets.iter()
            .map(IpNet::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let dirs = cgroup_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    info!(
        cgroups = dirs,
        containers = cfg.containers.join(","),
        ports,
        exclude = list(&cfg.exclude),
        include = list(&cfg.include),
        listen = %cfg.listen,
        ipv6,
        workers,
        "capturing outbound TCP connects from these cgroups (and their descendants) to these ports"
    );
    if cfg.host_wide() {
        info!("host-wide mode: every process is captured, in containers too");
    } else if !cfg.cgroups.is_empty() {
        let hint = hint::exec_hint(
            &hint::invocation(),
            hint::started_through_sudo(),
            &cfg.cgroups[0],
            &cfg.ports,
            &ca_path,
        );
        info!("to capture one command: {hint}");
    }
    for net in cfg.include_shadowed_by_exclude() {
        warn!(include = %net, "this --include network is inside an --exclude network: nothing in it is captured");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let fds = FdGuard::new(Arc::clone(&capture));
    let names = Arc::new(frametap_agent::containers::ContainerNames::default());
    let ctx = Arc::new(ProxyContext::new(
        Arc::clone(&capture),
        Arc::clone(&fds),
        mark,
        InterceptSettings {
            tls,
            passthrough,
            session: frametap_session::Settings {
                ids: Arc::clone(&recorder.ids),
                payload_cap: usize::try_from(cfg.max_frame_payload).unwrap_or(usize::MAX),
                body_cap: cfg.max_body_size,
                rules,
                mask_keys: frametap_agent::intercept::random_mask_key,
            },
            live,
            alpn: Default::default(),
            handshake_timeout: cfg.handshake_timeout,
            half_open_timeout: cfg.half_open_timeout,
            names: Arc::clone(&names),
        },
        recorder.clone(),
    ));
    replays.attach(Arc::clone(&ctx));
    let grace = cfg.shutdown_grace;
    // Each worker also serves listeners opened later in containers' namespaces.
    let (to_workers, from_manager): (Vec<_>, Vec<_>) = (0..worker_listeners.len())
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let namespaces = Arc::new(NetnsListeners::new(
        Arc::clone(&capture),
        cfg.listen.port(),
        to_workers,
        cgroup_dirs.clone(),
        mount.clone(),
        namespace_stats,
        Arc::clone(&names),
    )?);
    let threads = worker_listeners
        .into_iter()
        .zip(from_manager)
        .enumerate()
        .map(|(i, (listeners, more))| {
            let (ctx, stop_rx) = (Arc::clone(&ctx), stop_rx.clone());
            std::thread::Builder::new()
                .name(format!("frametap-worker-{i}"))
                .spawn(move || run_worker(listeners, more, ctx, stop_rx, grace))
                .context("cannot start a worker thread")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    // `--container` names: attached now if running, and whenever they (re)start.
    let stop_containers = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let containers_thread = if cfg.containers.is_empty() {
        None
    } else {
        let mut selection = ContainerSelection::new(
            cfg.containers.clone(),
            Arc::clone(&capture),
            Arc::clone(&namespaces),
            mount.clone(),
        );
        selection.start()?;
        Some(
            selection
                .spawn(Arc::clone(&stop_containers))
                .context("cannot start the container watcher")?,
        )
    };

    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    info!(socket = %control.path().display(), "control socket for frametap-api");
    let result = signals.block_on(async {
        let watching = tokio::spawn(fds.watch());
        let serving_namespaces = tokio::spawn(Arc::clone(&namespaces).run(stop_rx.clone()));
        tokio::select! {
            signal = wait_for_signal() => signal?,
            () = control.serve(control_ctx) => {}
        }
        watching.abort();
        info!("shutting down: new connections are no longer captured");
        let _ = stop_tx.send(true);
        let _ = serving_namespaces.await;
        let workers_done = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        // A second signal skips the grace period.
        tokio::select! {
            _ = workers_done => {}
            _ = wait_for_signal() => warn!("second signal: closing open connections now"),
        }
        anyhow::Ok(())
    });
    stop_containers.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = containers_thread {
        let _ = t.join();
    }
    for (name, value) in capture.stats() {
        info!(counter = name, value, "eBPF counter");
    }
    // Detach, so new connects go direct, before anything else is torn down.
    drop(ctx);
    drop(capture);
    // Everything handed to the writer reaches the store before we exit.
    writer.shutdown();
    drop(retention);
    // Into SST files while the control socket still answers: an API that sees the
    // agent gone then reads everything from them, not from a WAL being retired.
    if let Err(e) = store.flush() {
        warn!(error = %format!("{e:#}"), "cannot flush the store at shutdown (the WAL has everything)");
    }
    let stats = &recorder.stats;
    info!(
        records = stats
            .records_submitted
            .load(std::sync::atomic::Ordering::Relaxed),
        failed = stats
            .records_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        "recorder"
    );
    drop(control);
    info!("detached; bye");
    signals.shutdown_background();
    result
}

/// `frametap-agent containers`: one line per running container.
fn list_containers() -> anyhow::Result<()> {
    let socket = frametap_agent::runtime_api::find_socket();
    let running = frametap_agent::containers::running(socket.as_deref())?;
    let mount = cgroup::cgroup2_mount()?;
    let agents: std::collections::BTreeSet<u32> = frametap_agent::attached::agent_programs()
        .map(|p| p.into_iter().map(|p| p.id).collect())
        .unwrap_or_default();
    match &socket {
        Some(s) => println!("# containers from {}", s.display()),
        None => println!(
            "# no container runtime API socket answers ({}): containers found in the cgroup tree, by id only",
            frametap_agent::runtime_api::SOCKETS.join(", ")
        ),
    }
    println!(
        "{:<12}  {:<24}  {:<8}  {:<12}  CGROUP",
        "ID", "NAME", "CAPTURED", "NETNS"
    );
    for c in running {
        let captured = frametap_agent::attached::connect4_programs(&c.cgroup_dir(&mount), true)
            .map(|ids| ids.iter().any(|id| agents.contains(id)))
            .unwrap_or(false);
        println!(
            "{:<12}  {:<24}  {:<8}  {:<12}  {}",
            &c.id[..c.id.len().min(12)],
            c.name.as_deref().unwrap_or("-"),
            if captured { "yes" } else { "no" },
            c.netns.map_or("-".to_string(), |n| n.to_string()),
            c.cgroup
        );
    }
    Ok(())
}

/// One worker: a single-threaded event loop serving its own listeners. Connections
/// never move between threads, which keeps per-connection latency low.
fn run_worker(
    listeners: Vec<std::net::TcpListener>,
    more: tokio::sync::mpsc::UnboundedReceiver<Accepting>,
    ctx: Arc<ProxyContext>,
    stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker event loop");
            return;
        }
    };
    runtime.block_on(async move {
        let listeners = listeners
            .into_iter()
            .filter_map(|l| {
                TcpListener::from_std(l)
                    .map_err(|e| warn!(error = %e, "listener"))
                    .ok()
            })
            .collect();
        proxy::serve(listeners, more, ctx, stop, grace).await;
    });
    // Connections still open after the grace period are dropped (closed) here.
    runtime.shutdown_timeout(Duration::from_millis(100));
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
