//! Unit tests of [`super`] (filter).
use super::*;
use crate::ids::TrafficId;

fn entry(pid: Option<u32>, process: Option<&str>, status: Option<u16>) -> TrafficEntry {
    TrafficEntry {
        id: TrafficId(1),
        timestamp_ms: 1,
        conn_id: 1,
        method: "POST".into(),
        url: "https://API.example.com/v1/login".into(),
        protocol: "https".into(),
        host: "API.example.com".into(),
        path: "/v1/login".into(),
        status,
        request_headers: Vec::new(),
        response_headers: Vec::new(),
        remote_address: "10.0.0.1:443".into(),
        tls_version: None,
        duration_ms: None,
        error: None,
        client_address: "10.0.0.2:5000".into(),
        pid,
        process: process.map(str::to_owned),
        sni: None,
        ..TrafficEntry::default()
    }
}

#[test]
fn containers_match_by_id_prefix_and_host_entries_never() {
    let mut e = entry(Some(42), Some("curl"), None);
    let by = |ids: &[&str]| TrafficFilter {
        containers: Some(ids.iter().map(|s| s.to_string()).collect()),
        ..TrafficFilter::default()
    };
    assert!(!by(&["ab12"]).matches(&e), "not in a container");
    e.container_id = Some("AB12cd34".into());
    assert!(by(&["ab12"]).matches(&e));
    assert!(by(&["x", "ab12cd34"]).matches(&e));
    assert!(!by(&["cd34"]).matches(&e));
    e.container_name = Some("Web".into());
    assert!(by(&["web"]).matches(&e));
    assert!(!by(&["we"]).matches(&e), "names match whole");
}

#[test]
fn every_condition_must_hold() {
    let e = entry(Some(42), Some("curl"), Some(404));
    assert!(TrafficFilter::default().matches(&e));
    assert!(TrafficFilter::default().is_empty());
    let f = TrafficFilter {
        methods: Some(vec!["GET".into(), "post".into()]),
        search: Some("api.example".into()),
        protocols: Some(vec!["https".into()]),
        pids: Some(vec![7, 42]),
        processes: Some(vec!["CURL".into()]),
        statuses: Some(vec![StatusMatch::Class(4)]),
        has_error: Some(false),
        error_contains: None,
        containers: None,
    };
    assert!(!f.is_empty());
    assert!(f.matches(&e));
    for broken in [
        TrafficFilter {
            pids: Some(vec![7]),
            ..f.clone()
        },
        TrafficFilter {
            processes: Some(vec!["wget".into()]),
            ..f.clone()
        },
        TrafficFilter {
            statuses: Some(vec![StatusMatch::Class(5), StatusMatch::Code(403)]),
            ..f.clone()
        },
        TrafficFilter {
            has_error: Some(true),
            ..f.clone()
        },
        TrafficFilter {
            methods: Some(vec!["GET".into()]),
            ..f.clone()
        },
    ] {
        assert!(!broken.matches(&e), "{broken:?}");
    }
    // Unknown process, pid or status never match a filter on them.
    let bare = entry(None, None, None);
    for f in [
        TrafficFilter {
            pids: Some(vec![42]),
            ..TrafficFilter::default()
        },
        TrafficFilter {
            processes: Some(vec!["curl".into()]),
            ..TrafficFilter::default()
        },
        TrafficFilter {
            statuses: Some(vec![StatusMatch::Class(4)]),
            ..TrafficFilter::default()
        },
    ] {
        assert!(!f.matches(&bare), "{f:?}");
    }
}

#[test]
fn errors_by_presence_and_text() {
    let mut failed = entry(None, None, None);
    failed.error = Some("Upstream TLS failed: certificate expired".into());
    let ok = entry(None, None, Some(200));
    let has = TrafficFilter {
        has_error: Some(true),
        ..TrafficFilter::default()
    };
    assert!(has.matches(&failed) && !has.matches(&ok));
    let text = TrafficFilter {
        error_contains: Some("tls failed".into()),
        ..TrafficFilter::default()
    };
    assert!(text.matches(&failed) && !text.matches(&ok));
    let other = TrafficFilter {
        error_contains: Some("reset".into()),
        ..TrafficFilter::default()
    };
    assert!(!other.matches(&failed));
}

#[test]
fn statuses_by_code_and_class() {
    assert!(StatusMatch::Class(2).matches(204));
    assert!(!StatusMatch::Class(2).matches(301));
    assert!(StatusMatch::Code(301).matches(301));
    assert!(!StatusMatch::Code(301).matches(302));
}

#[test]
fn filters_cross_the_socket_as_json() {
    let f = TrafficFilter {
        pids: Some(vec![1]),
        statuses: Some(vec![StatusMatch::Code(500), StatusMatch::Class(4)]),
        ..TrafficFilter::default()
    };
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(
        json,
        r#"{"pids":[1],"statuses":[{"code":500},{"class":4}]}"#
    );
    assert_eq!(serde_json::from_str::<TrafficFilter>(&json).unwrap(), f);
    assert_eq!(
        serde_json::from_str::<TrafficFilter>("{}").unwrap(),
        TrafficFilter::default()
    );
}

#[test]
fn search_ignores_case_with_and_without_ascii() {
    assert!(contains_ignoring_case(
        "wss://Chat.Example.com/",
        "chat.example"
    ));
    assert!(contains_ignoring_case("anything", ""));
    assert!(!contains_ignoring_case("ws", "wss"));
    assert!(contains_ignoring_case("https://MÜNCHEN.de/", "münchen"));
    assert!(!contains_ignoring_case("https://munchen.de/", "münchen"));
}
