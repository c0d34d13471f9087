//! `frametap-api`: the REST API and live events over the agent's capture store.
//! Reads the store as a RocksDB secondary; asks the agent (control socket) for
//! anything that writes.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use frametap_api::{
    agent_link::AgentLink,
    auth::{AuthConfig, load_or_create_token},
    body_headers as bodies,
    events::LiveEvents,
    follower::{CATCH_UP_BACKSTOP, CATCH_UP_INTERVAL, Follower},
    health::ApiHealth,
    secondary_dir::SecondaryDir,
    server::ServerLimits,
    state::AppState,
};
use frametap_logging::LogFormat;
use frametap_store::data_dir;
use tracing::{debug, info, warn};

/// Serves what frametap-agent recorded (traffic, bodies, WebSocket frames and
/// messages, rules) over REST on /api and live events over Socket.IO, reading the
/// agent's store as a read-only follower and asking the agent for every change.
#[derive(Parser)]
#[command(
    name = "frametap-api",
    version,
    after_help = "Log verbosity follows FRAMETAP_LOG (e.g. FRAMETAP_LOG=debug; default info).\n\
                  Clients send the token as `Authorization: Bearer <token>` or `?token=<token>`\n\
                  (Socket.IO: `auth: {token}`). Every route is described by GET /api/openapi.json."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The agent's data dir: its store and control socket are there, and the
    /// generated API token is kept there (api-token).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "FRAMETAP_API_DATA_DIR",
        default_value = "/var/lib/frametap"
    )]
    data_dir: PathBuf,
    /// Address to serve REST and Socket.IO on. Anything but loopback exposes
    /// captured traffic to the network: keep the token on.
    #[arg(
        long,
        global = true,
        value_name = "ADDR:PORT",
        env = "FRAMETAP_API_LISTEN",
        default_value = "127.0.0.1:8889"
    )]
    listen: SocketAddr,
    /// Bearer token required on every /api route and Socket.IO connection.
    /// [default: generated at first start and kept in <DIR>/api-token, mode 0600]
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "FRAMETAP_API_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Serve without any token (only sensible on a single-user machine).
    /// [default: off]
    #[arg(
        long,
        global = true,
        env = "FRAMETAP_API_NO_AUTH",
        conflicts_with = "token"
    )]
    no_auth: bool,
    /// Allow browser pages from this origin to call the API (repeatable; the
    /// variable takes a comma-separated list). [default: none, no CORS headers]
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "FRAMETAP_API_CORS_ORIGIN",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Log lines as text or as JSON (one object per line), on stderr.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "FRAMETAP_API_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What else `frametap-api` does than serve (which it does without a command).
#[derive(clap::Subcommand)]
enum Command {
    /// Play a recorded WebSocket conversation again through the running frametap-api
    /// (at --listen) and its agent, wait for it to end (Ctrl-C cancels it), and print
    /// how it compares with the original. Exits 0 when the replay ran to its end.
    Replay(frametap_api::replay_command::ReplayCommand),
}

/// How long the API waits for its clients, and how many it serves at once.
#[derive(clap::Args)]
struct LimitArgs {
    /// Seconds a client has to send a request head in full (and a new connection to
    /// start one); slower ones get 408.
    #[arg(long, env = "FRAMETAP_API_HEADER_TIMEOUT", value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Seconds a request body may pause; a stalled one gets 408.
    #[arg(long, env = "FRAMETAP_API_BODY_TIMEOUT", value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout: u64,
    /// Seconds a kept-alive connection may idle between requests, and a client may
    /// leave an answer unread, before the connection is closed.
    #[arg(long, env = "FRAMETAP_API_IDLE_TIMEOUT", value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Connections served at once (Socket.IO ones included); more wait to be
    /// accepted. Each takes a file descriptor.
    #[arg(long, env = "FRAMETAP_API_MAX_CONNECTIONS", value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_connections: u64,
}

impl LimitArgs {
    fn limits(&self) -> ServerLimits {
        ServerLimits {
            header_timeout: Duration::from_secs(self.header_timeout),
            body_timeout: Duration::from_secs(self.body_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Some(Command::Replay(args)) = &cli.command {
        let done = replay_token(&cli).and_then(|token| {
            frametap_api::replay_command::run(
                args,
                &format!("http://{}", cli.listen),
                token.as_deref(),
            )
        });
        match done {
            Ok(true) => return,
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("frametap-api replay: {e:#}");
                std::process::exit(1);
            }
        }
    }
    frametap_logging::init(cli.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(serve(cli)));
    if let Err(e) = result {
        eprintln!("frametap-api: {e:#}");
        std::process::exit(1);
    }
}

/// The token a client of this API sends: --token, none with --no-auth, or the one
/// the API keeps in the data dir.
fn replay_token(cli: &Cli) -> anyhow::Result<Option<String>> {
    if cli.no_auth {
        return Ok(None);
    }
    if let Some(token) = &cli.token {
        return Ok(Some(token.clone()));
    }
    let path = frametap_api::auth::token_path(&cli.data_dir);
    let token = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the API token from {} (run as root, or give --token)",
            path.display()
        )
    })?;
    Ok(Some(token.trim().to_string()))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let limits = cli.limits.limits();
    raise_fd_limit(limits.max_connections);
    // What this process creates in the data dir (the token, the follower's files) is
    // root's only.
    data_dir::create(&cli.data_dir)
        .with_context(|| format!("cannot create the data dir {}", cli.data_dir.display()))?;
    data_dir::restrict_umask();
    let token_file = cli.data_dir.join("api-token");
    let token = if cli.no_auth {
        warn!(
            "--no-auth: anyone who can reach {} reads captured traffic",
            cli.listen
        );
        None
    } else if let Some(token) = cli.token.clone() {
        anyhow::ensure!(
            !token.trim().is_empty(),
            "--token / FRAMETAP_API_TOKEN is empty"
        );
        Some(token)
    } else {
        Some(load_or_create_token(&cli.data_dir)?)
    };
    if !cli.listen.ip().is_loopback() {
        warn!(listen = %cli.listen, "serving beyond loopback");
    }
    let auth = AuthConfig {
        token: token.clone(),
    };

    let (mut secondary, stale) = SecondaryDir::create(&cli.data_dir).with_context(|| {
        format!(
            "cannot set up the API's working directory in {}: run frametap-api as the data \
             dir's owner (root)",
            cli.data_dir.display()
        )
    })?;
    for dir in &stale {
        info!(dir = %dir.display(), "removed the working directory of an API process that is gone");
    }
    let follower = Follower::new(&cli.data_dir, secondary.db_path());
    // Open now if the store exists, so the first requests don't see "not opened yet".
    follower.tick();
    let agent = AgentLink::new(&cli.data_dir);
    // The agent's record stream says when to catch up. Without it a timer does, while
    // an agent is up; with no agent there is nothing new to see (only the agent
    // writes), so the follower only checks now and then.
    let link = Arc::clone(&agent);
    follower.spawn(move || {
        let streaming = link.subscribed.load(std::sync::atomic::Ordering::Relaxed);
        if !streaming && link.status().is_ok() {
            CATCH_UP_INTERVAL
        } else {
            CATCH_UP_BACKSTOP
        }
    });
    tokio::spawn(Arc::clone(&agent).poll_status());
    let (socketio_layer, events) = LiveEvents::new(auth.clone(), Some(follower.clone()));
    let nudged = Arc::clone(&follower);
    tokio::spawn(Arc::clone(&agent).follow_records(events.clone(), move || nudged.nudge()));

    let state = AppState {
        store: follower.clone(),
        agent: agent.clone(),
        health: Arc::new(ApiHealth {
            follower: follower.clone(),
            agent: agent.clone(),
            events: Arc::clone(&events.stats),
        }),
        auth,
    };
    let mut app = frametap_api::router(state).layer(socketio_layer);
    if !cli.cors_origins.is_empty() {
        let origins = cli
            .cors_origins
            .iter()
            .map(|o| {
                o.parse()
                    .with_context(|| format!("bad --cors-origin {o:?}"))
            })
            .collect::<anyhow::Result<Vec<axum::http::HeaderValue>>>()?;
        app = app.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any)
                // The frames page's cursor, and what the body endpoints say about a body.
                .expose_headers([
                    axum::http::header::LINK,
                    axum::http::HeaderName::from_static(bodies::SIZE_HEADER),
                    axum::http::HeaderName::from_static(bodies::STORED_HEADER),
                    axum::http::HeaderName::from_static(bodies::TRUNCATED_HEADER),
                    axum::http::HeaderName::from_static(bodies::ENCODING_HEADER),
                    axum::http::HeaderName::from_static(bodies::DECODED_HEADER),
                ]),
        );
    }

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another frametap-api running? choose another with --listen",
                cli.listen
            )
        })?;
    info!(
        listen = %cli.listen,
        data_dir = %cli.data_dir.display(),
        "frametap-api serving REST on /api and Socket.IO on /socket.io"
    );
    let ui = format!("http://{}/", cli.listen);
    match &token {
        Some(t) if cli.token.is_none() => {
            println!(
                "frametap-api: token {t} (stored in {}); send \"Authorization: Bearer {t}\"",
                token_file.display()
            );
            println!("frametap-api: the UI, signed in: {ui}?token={t}");
        }
        Some(_) => println!(
            "frametap-api: token from --token / FRAMETAP_API_TOKEN; the UI: {ui} (sign in with it)"
        ),
        None => println!("frametap-api: no token required (--no-auth); the UI: {ui}"),
    }
    frametap_api::server::serve(listener, app, limits, shutdown_signal()).await;
    follower.close();
    secondary.remove();
    info!("bye");
    Ok(())
}

/// Raises the soft limit on open files to the hard one: every connection and every
/// file of the store the follower reads takes a descriptor.
fn raise_fd_limit(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                debug!(
                    from = limit.rlim_cur,
                    to = limit.rlim_max,
                    "raised the open file limit"
                );
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    if u64::try_from(max_connections).unwrap_or(u64::MAX) > soft / 2 {
        warn!(
            max_connections,
            open_file_limit = soft,
            "--max-connections is more than half the open file limit: lower it, or raise the limit (ulimit -n)"
        );
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn help_describes_every_flag_with_its_default_and_variable() {
        let command = Cli::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(help.len() > 20, "--{id} has no real description");
            assert!(
                arg.get_env().is_some(),
                "--{id} has no environment variable"
            );
            assert!(
                !arg.get_default_values().is_empty() || help.contains("[default: "),
                "--{id} does not say its default"
            );
        }
        let rendered = Cli::command().render_long_help().to_string();
        for needle in [
            "--data-dir",
            "FRAMETAP_API_DATA_DIR",
            "[default: /var/lib/frametap]",
            "FRAMETAP_API_LISTEN",
            "[default: 127.0.0.1:8889]",
            "FRAMETAP_API_TOKEN",
            "api-token",
            "FRAMETAP_API_NO_AUTH",
            "FRAMETAP_API_CORS_ORIGIN",
            "FRAMETAP_API_LOG_FORMAT",
            "FRAMETAP_LOG",
        ] {
            assert!(
                rendered.contains(needle),
                "--help lacks {needle}:\n{rendered}"
            );
        }
    }

    #[test]
    fn flags_come_from_the_environment_too() {
        let cli = Cli::try_parse_from(["frametap-api", "--listen", "127.0.0.1:9999", "--no-auth"])
            .unwrap();
        assert_eq!(cli.listen.port(), 9999);
        assert!(cli.no_auth);
        assert_eq!(cli.data_dir, PathBuf::from("/var/lib/frametap"));
        assert!(Cli::try_parse_from(["frametap-api", "--no-auth", "--token", "t"]).is_err());
    }
}
