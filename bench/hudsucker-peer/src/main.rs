//! hudsucker as the benchmark's Rust MITM peer: an explicit proxy (clients connect
//! through CONNECT) that terminates TLS with leaves from the bench's CA, verifies
//! the server against `--upstream-ca`, and passes every HTTP message and WebSocket
//! message through unchanged, recording nothing. Its default provider (aws-lc-rs)
//! is kept, as a user would.
use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use clap::Parser;
use hudsucker::{
    Proxy,
    certificate_authority::RcgenAuthority,
    rcgen::{Issuer, KeyPair},
    tokio_tungstenite::Connector,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::{ClientConfig, RootCertStore, crypto::aws_lc_rs, pki_types::CertificateDer};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// CA certificate (PEM) the proxy signs its leaves with.
    #[arg(long)]
    ca_cert: PathBuf,
    /// The CA's private key (PEM).
    #[arg(long)]
    ca_key: PathBuf,
    /// CA (PEM) that upstream servers' certificates are verified against.
    #[arg(long)]
    upstream_ca: PathBuf,
    /// Worker threads (default: one per core, tokio's default).
    #[arg(long)]
    workers: Option<usize>,
    /// NAME=IP: resolve NAME to IP for this process only (hudsucker dials the
    /// CONNECT authority by name, and mints its leaf for that name).
    #[arg(long, value_parser = parse_resolve)]
    resolve: Vec<(String, String)>,
}

fn parse_resolve(s: &str) -> Result<(String, String), String> {
    let (name, ip) = s.split_once('=').ok_or("expected NAME=IP")?;
    ip.parse::<std::net::IpAddr>()
        .map_err(|e| format!("{ip}: {e}"))?;
    Ok((name.to_string(), ip.to_string()))
}

/// Puts `entries` in front of /etc/hosts in a mount namespace of this process's
/// own, so the rest of the machine sees no change. Must run before any thread starts.
fn private_hosts(entries: &[(String, String)]) -> anyhow::Result<()> {
    let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for (name, ip) in entries {
        hosts.insert_str(0, &format!("{ip} {name}\n"));
    }
    let file = std::env::temp_dir().join(format!("hudsucker-peer-hosts-{}", std::process::id()));
    std::fs::write(&file, hosts)?;
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (root, etc_hosts, source) = (c("/"), c("/etc/hosts"), c(&file.display().to_string()));
    // SAFETY: plain syscalls on NUL-terminated paths, single-threaded here.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0
            || libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            || libc::mount(
                source.as_ptr(),
                etc_hosts.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
        {
            let err = std::io::Error::last_os_error();
            let _ = std::fs::remove_file(&file);
            anyhow::bail!("cannot give this process its own /etc/hosts (run as root): {err}");
        }
    }
    // The bind mount keeps the contents; the name can go.
    let _ = std::fs::remove_file(&file);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.resolve.is_empty() {
        private_hosts(&args.resolve)?;
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        runtime.worker_threads(n);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("{}", p.display()));
    let key = KeyPair::from_pem(&read(&args.ca_key)?).context("CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&read(&args.ca_cert)?, key).context("CA certificate")?;
    let ca = RcgenAuthority::new(issuer, 1_000, aws_lc_rs::default_provider());

    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.upstream_ca).context("upstream CA")? {
        roots.add(cert?)?;
    }
    let upstream = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(upstream.clone())
        .https_or_http()
        .enable_http1()
        .build();

    let proxy = Proxy::builder()
        .with_addr(args.listen)
        .with_ca(ca)
        .with_http_connector(https)
        .with_websocket_connector(Connector::Rustls(Arc::new(upstream)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .build()?;
    eprintln!("hudsucker listening on {}", args.listen);
    proxy.start().await?;
    Ok(())
}
