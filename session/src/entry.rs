//! An HTTP exchange as a traffic entry: URL, host and path from the request head
//! (origin-form or absolute-form), status and headers, body sizes, timings, and the
//! connection's facts (TLS, addresses, process, origin).
use frametap_model::{Origin, TrafficEntry, TrafficId};
use frametap_proto::http1::{RequestHead, ResponseHead};

use crate::body::BodyCapture;

/// Facts about the connection that every record carries.
#[derive(Clone, Debug, Default)]
pub struct SessionMeta {
    pub conn_id: u64,
    pub tls: bool,
    pub tls_version: Option<String>,
    pub sni: Option<String>,
    pub client_address: String,
    pub server_address: String,
    pub pid: Option<u32>,
    pub process: Option<String>,
    /// ALPN the client offered, and what the server selected (TLS only).
    pub alpn_offered: Vec<String>,
    pub alpn_selected: Option<String>,
    /// cgroup, network namespace and container of the client.
    pub origin: Origin,
}

/// One request and its response, as they are being recorded.
pub(crate) struct Exchange {
    pub(crate) id: TrafficId,
    /// When the request head arrived (µs since the Unix epoch).
    pub(crate) started_us: u64,
    pub(crate) request: RequestHead,
    pub(crate) response: Option<ResponseHead>,
    pub(crate) request_body: BodyCapture,
    pub(crate) response_body: BodyCapture,
}

/// A traffic entry for a finished (or failed) exchange, whose bodies are
/// finished. `protocol` overrides http/https (for ws/wss).
pub(crate) fn entry(
    meta: &SessionMeta,
    x: Exchange,
    protocol: &str,
    error: Option<String>,
    now_us: u64,
) -> TrafficEntry {
    let req = &x.request;
    let host = req
        .header("host")
        .map(str::to_string)
        .or_else(|| meta.sni.clone())
        .unwrap_or_else(|| meta.server_address.clone());
    let scheme = match (protocol, meta.tls) {
        ("", true) => "https",
        ("", false) => "http",
        (p, _) => p,
    };
    // Absolute-form targets (proxies) already carry scheme and host.
    let (url, path) = if req.target.contains("://") {
        let path = req
            .target
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_else(|| "/".into());
        (req.target.clone(), path)
    } else {
        (
            format!("{scheme}://{host}{}", req.target),
            req.target.clone(),
        )
    };
    let headers = |h: &[frametap_proto::http1::Header]| {
        h.iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect::<Vec<_>>()
    };
    TrafficEntry {
        id: x.id,
        timestamp_ms: x.started_us / 1000,
        conn_id: meta.conn_id,
        method: req.method.clone(),
        url,
        protocol: scheme.to_string(),
        host,
        path,
        status: x.response.as_ref().map(|r| r.status),
        request_headers: headers(&req.headers),
        response_headers: x
            .response
            .as_ref()
            .map(|r| headers(&r.headers))
            .unwrap_or_default(),
        remote_address: meta.server_address.clone(),
        tls_version: meta.tls_version.clone(),
        duration_ms: Some(now_us.saturating_sub(x.started_us) as f64 / 1e3),
        error,
        client_address: meta.client_address.clone(),
        pid: meta.pid,
        process: meta.process.clone(),
        sni: meta.sni.clone(),
        alpn_offered: meta.alpn_offered.clone(),
        alpn_selected: meta.alpn_selected.clone(),
        http_version: Some(format!("HTTP/1.{}", req.version.min(1))),
        request_body: Some(x.request_body.info()),
        response_body: x.response.is_some().then(|| x.response_body.info()),
        ..meta.origin.entry_base()
    }
}

/// An entry for an error with no request to attach it to.
pub(crate) fn bare_entry(
    meta: &SessionMeta,
    id: TrafficId,
    now_ms: u64,
    error: String,
) -> TrafficEntry {
    TrafficEntry {
        id,
        timestamp_ms: now_ms,
        conn_id: meta.conn_id,
        method: String::new(),
        url: String::new(),
        protocol: if meta.tls { "https" } else { "http" }.into(),
        host: meta
            .sni
            .clone()
            .unwrap_or_else(|| meta.server_address.clone()),
        path: String::new(),
        status: None,
        request_headers: Vec::new(),
        response_headers: Vec::new(),
        remote_address: meta.server_address.clone(),
        tls_version: meta.tls_version.clone(),
        duration_ms: None,
        error: Some(error),
        client_address: meta.client_address.clone(),
        pid: meta.pid,
        process: meta.process.clone(),
        sni: meta.sni.clone(),
        alpn_offered: meta.alpn_offered.clone(),
        alpn_selected: meta.alpn_selected.clone(),
        request_body: None,
        response_body: None,
        ..meta.origin.entry_base()
    }
}
