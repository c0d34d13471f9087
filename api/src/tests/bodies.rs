//! The recorded request and response bodies, decoded or raw.

use std::sync::Arc;

use axum::http::StatusCode;
use frametap_store::{BodyInfo, BodyOf};
use serde_json::Value;

use crate::router;
use crate::state::AppState;

use super::{
    CHAT, DOWNLOAD, FAILED, FORM, Fixture, JSON_REPLY, NoStore, OLD, RawReply, UNKNOWN, UPLOAD,
    chunk, entry, get, gzip, send_raw, write_exchanges,
};

fn header<'a>(reply: &'a RawReply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn traffic_entries_carry_body_sizes() {
    let fx = Fixture::new();
    write_exchanges(&fx);
    let app = fx.router();
    let upload = get(&app, &format!("/api/traffic/{UPLOAD}")).await.body;
    assert_eq!(upload["requestBodySize"], FORM.len());
    assert_eq!(upload["requestBodyTruncated"], false);
    assert_eq!(upload["responseBodySize"], gzip(JSON_REPLY).len());
    let download = get(&app, &format!("/api/traffic/{DOWNLOAD}")).await.body;
    assert_eq!(download["responseBodySize"], 100_000);
    assert_eq!(download["responseBodyTruncated"], true);
    let old = get(&app, &format!("/api/traffic/{OLD}")).await.body;
    assert_eq!(old["requestBodySize"], Value::Null);
    assert_eq!(old["responseBodySize"], Value::Null);
    assert_eq!(old["responseBodyTruncated"], false);
}

#[tokio::test]
async fn bodies_are_served_decoded_or_raw_with_what_was_recorded() {
    let fx = Fixture::new();
    write_exchanges(&fx);
    let app = fx.router();
    let get_raw = |uri: String| {
        let app = app.clone();
        async move { send_raw(&app, "GET", &uri, None, None).await }
    };

    let form = get_raw(format!("/api/traffic/{UPLOAD}/request/body")).await;
    assert_eq!(form.status, StatusCode::OK);
    assert_eq!(form.bytes, FORM);
    assert_eq!(
        form.content_type(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(header(&form, "x-frametap-body-size"), Some("27"));
    assert_eq!(header(&form, "x-frametap-stored-size"), Some("27"));
    assert_eq!(header(&form, "x-frametap-truncated"), Some("false"));
    assert_eq!(header(&form, "x-frametap-decoded"), Some("false"));
    assert_eq!(header(&form, "x-frametap-content-encoding"), None);
    assert_eq!(header(&form, "content-length"), Some("27"));

    // Decoded by default, as a browser would; as sent with raw=true.
    let reply = get_raw(format!("/api/traffic/{UPLOAD}/response/body")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes, JSON_REPLY);
    assert_eq!(reply.content_type(), Some("application/json"));
    assert_eq!(header(&reply, "x-frametap-decoded"), Some("true"));
    assert_eq!(header(&reply, "x-frametap-content-encoding"), Some("gzip"));
    assert_eq!(header(&reply, "content-encoding"), None);
    let raw = get_raw(format!("/api/traffic/{UPLOAD}/response/body?raw=true")).await;
    assert_eq!(raw.bytes, gzip(JSON_REPLY));
    assert_eq!(header(&raw, "x-frametap-decoded"), Some("false"));
    assert_eq!(
        header(&raw, "x-frametap-body-size"),
        Some(gzip(JSON_REPLY).len().to_string().as_str())
    );

    // Only a prefix stored: what there is, and the true size.
    let cut = get_raw(format!("/api/traffic/{DOWNLOAD}/response/body")).await;
    assert_eq!(cut.bytes.len(), 1000);
    assert_eq!(cut.bytes[..3], [0, 7, 14]);
    assert_eq!(header(&cut, "x-frametap-body-size"), Some("100000"));
    assert_eq!(header(&cut, "x-frametap-stored-size"), Some("1000"));
    assert_eq!(header(&cut, "x-frametap-truncated"), Some("true"));
    assert_eq!(cut.content_type(), Some("application/octet-stream"));
    // A body with no bytes is an empty 200.
    let empty = get_raw(format!("/api/traffic/{CHAT}/response/body")).await;
    assert_eq!((empty.status, empty.bytes.len()), (StatusCode::OK, 0));

    // No body recorded, no entry, bad parameters: JSON errors.
    for (uri, status, needle) in [
        (
            format!("/api/traffic/{OLD}/response/body"),
            StatusCode::NOT_FOUND,
            "recorded before frametap recorded bodies",
        ),
        (
            format!("/api/traffic/{FAILED}/response/body"),
            StatusCode::NOT_FOUND,
            "no response arrived",
        ),
        (
            format!("/api/traffic/{UNKNOWN}/request/body"),
            StatusCode::NOT_FOUND,
            "Traffic entry not found",
        ),
        (
            "/api/traffic/garbage/request/body".into(),
            StatusCode::NOT_FOUND,
            "Traffic entry not found",
        ),
        (
            format!("/api/traffic/{UPLOAD}/request/body?raw=maybe"),
            StatusCode::BAD_REQUEST,
            "`raw`",
        ),
    ] {
        let reply = get(&app, &uri).await;
        assert_eq!(reply.status, status, "{uri}");
        assert!(reply.error().contains(needle), "{uri}: {}", reply.error());
    }
    let no_store = router(AppState {
        store: Arc::new(NoStore),
        ..fx.state()
    });
    let reply = get(&no_store, &format!("/api/traffic/{UPLOAD}/request/body")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_body_that_is_not_what_its_header_claims_is_served_as_sent() {
    let fx = Fixture::new();
    let mut liar = entry(UPLOAD, "GET", "https://api.example.com/x", Some(200));
    liar.response_headers = vec![("Content-Encoding".into(), "gzip".into())];
    liar.response_body = Some(BodyInfo {
        size: 11,
        stored: 11,
    });
    fx.primary
        .write(&[
            chunk(UPLOAD, BodyOf::Response, 0, b"not gzipped"),
            liar.into(),
        ])
        .unwrap();
    fx.catch_up();
    let reply = send_raw(
        &fx.router(),
        "GET",
        &format!("/api/traffic/{UPLOAD}/response/body"),
        None,
        None,
    )
    .await;
    assert_eq!(reply.bytes, b"not gzipped");
    assert_eq!(header(&reply, "x-frametap-decoded"), Some("false"));
}
