//! The web UI's files: served without the token (they hold no data) with the right
//! types and a strict Content-Security-Policy, while the API itself still asks for it.

use axum::http::{StatusCode, header};

use crate::state::AppState;
use crate::ui::{CONTENT_SECURITY_POLICY, asset_names};
use crate::{AuthConfig, router};

use super::{Fixture, TOKEN, send_raw, send_with};

fn app(fx: &Fixture) -> axum::Router {
    router(AppState {
        auth: AuthConfig {
            token: Some(TOKEN.into()),
        },
        ..fx.state()
    })
}

#[tokio::test]
async fn the_page_and_its_files_are_served_without_the_token_under_a_strict_policy() {
    let fx = Fixture::new();
    let app = app(&fx);
    let page = send_raw(&app, "GET", "/", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.content_type(), Some("text/html; charset=utf-8"));
    let html = String::from_utf8(page.bytes.clone()).unwrap();
    assert!(
        html.contains(r#"<script type="module" src="/ui/app.js">"#),
        "{html}"
    );
    for name in asset_names() {
        let reply = send_raw(&app, "GET", &format!("/ui/{name}"), None, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        let expected = if name.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "text/javascript; charset=utf-8"
        };
        assert_eq!(reply.content_type(), Some(expected), "{name}");
        assert_eq!(
            reply.headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
    // Only its own origin: no inline script or style, nothing from elsewhere.
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
    }
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    assert!(!html.contains("http://") && !html.contains("https://"));

    let unknown = send_with(&app, "GET", "/ui/nothing.js", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown.error().contains("nothing.js"),
        "{}",
        unknown.error()
    );
    let post = send_with(&app, "POST", "/", None).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    // The API still needs the token.
    let api = send_with(&app, "GET", "/api/traffic", None).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
}

/// Every module a file imports is one the server has (a missing one would leave the
/// page blank), and no file loads anything from another origin.
#[tokio::test]
async fn every_import_of_the_ui_is_served() {
    let fx = Fixture::new();
    let app = app(&fx);
    let names: Vec<&str> = asset_names().collect();
    for name in names.iter().filter(|n| n.ends_with(".js")) {
        let reply = send_raw(&app, "GET", &format!("/ui/{name}"), None, None).await;
        let source = String::from_utf8(reply.bytes).unwrap();
        for line in source.lines().filter(|l| l.starts_with("import ")) {
            let module = line
                .rsplit_once("from \"./")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(m, _)| m)
                .unwrap_or_else(|| panic!("{name}: an import not from this directory: {line}"));
            assert!(
                names.contains(&module),
                "{name} imports {module}, not served"
            );
        }
        assert!(
            !source.contains("http://") && !source.contains("https://"),
            "{name}"
        );
    }
}
