//! API token authentication for every `/api` route.
//!
//! The API shows captured traffic (cookies, bearer tokens, message contents), so by
//! default it asks for a token: `Authorization: Bearer <token>` or `?token=<token>`
//! (for browsers and `EventSource`-style clients that cannot set headers). The token is
//! kept in `<data-dir>/api-token` ([`load_or_create_token`]), readable only by its owner.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::query::QueryParams;

/// Name of the token file inside the data dir.
pub const TOKEN_FILE_NAME: &str = "api-token";

/// Random bytes in a new token (hex-encoded, so tokens are 64 characters).
const TOKEN_BYTES: usize = 32;

/// Longest token file read; a real one is 65 bytes.
const MAX_TOKEN_FILE_LEN: u64 = 4096;

/// Who may call the API.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The token every request must carry; `None` disables authentication (an
    /// explicit choice of the operator, e.g. `--no-auth`).
    pub token: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    // Never print the token itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.token.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthConfig").field("token", &token).finish()
    }
}

impl AuthConfig {
    /// Checks the credentials of a request: the `Authorization: Bearer` header or the
    /// `token` query parameter must equal the configured token (compared in constant
    /// time). Public so other transports on the same port (Socket.IO) can reuse it.
    pub fn check(&self, headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let expected = expected.as_bytes();
        let mut offered = false;
        for value in headers.get_all(header::AUTHORIZATION) {
            offered = true;
            if let Some(token) = value.to_str().ok().and_then(bearer_token)
                && bool::from(token.as_bytes().ct_eq(expected))
            {
                return Ok(());
            }
        }
        let params = QueryParams::parse(query);
        for token in params.all("token") {
            offered = true;
            if bool::from(token.as_bytes().ct_eq(expected)) {
                return Ok(());
            }
        }
        let problem = if offered {
            "wrong API token"
        } else {
            "missing API token"
        };
        Err(ApiError::Unauthorized(format!(
            "{problem}: send `Authorization: Bearer <token>` (or add `?token=<token>` to the \
             URL). The token is in <data-dir>/{TOKEN_FILE_NAME}, and frametap-api prints it \
             when it starts."
        )))
    }
}

/// The token of an `Authorization` header value using the Bearer scheme (the scheme
/// name is case-insensitive, RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
        .filter(|t| !t.is_empty())
}

/// Middleware: rejects requests without the right token with 401.
pub(crate) async fn require_token(
    State(auth): State<AuthConfig>,
    request: Request,
    next: Next,
) -> Response {
    match auth.check(request.headers(), request.uri().query()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Path of the token file in `data_dir`.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE_NAME)
}

/// Returns the API token kept in `<data_dir>/api-token`, creating the file (mode 0600,
/// 32 random bytes hex-encoded) if it does not exist. Refuses a token file that group
/// or others can access, a symlink, or an empty one.
pub fn load_or_create_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(data_dir);
    if let Some(token) = read_token(&path)? {
        return Ok(token);
    }
    fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "cannot create data dir {} for the API token: check that its parent exists and \
             is writable",
            data_dir.display()
        )
    })?;
    let token = new_token()?;
    // Write a private temporary file, then hard-link it into place: the token file
    // appears complete or not at all, and a concurrent creator's file is never replaced.
    let temp = data_dir.join(format!(
        ".{TOKEN_FILE_NAME}.{}.{}",
        std::process::id(),
        &new_token()?[..8]
    ));
    let written = write_private(&temp, &token);
    let linked = written.and_then(|()| {
        fs::hard_link(&temp, &path).or_else(|e| match e.kind() {
            // Another process created it first: use theirs.
            ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
    });
    let _ = fs::remove_file(&temp);
    linked.with_context(|| format!("cannot create API token file {}", path.display()))?;
    read_token(&path)?.with_context(|| {
        format!(
            "API token file {} vanished right after being created",
            path.display()
        )
    })
}

/// 32 random bytes, hex-encoded.
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for the API token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates `path` (it must not exist) with mode 0600 and writes `token` to it.
fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()
}

/// The token in `path`, `None` if the file does not exist.
fn read_token(path: &Path) -> anyhow::Result<Option<String>> {
    let shown = path.display();
    let file: File = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!("refusing API token file {shown}: it is a symlink; replace it with a file")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read API token file {shown}")),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat API token file {shown}"))?;
    if !meta.is_file() {
        bail!("refusing API token file {shown}: it is not a regular file");
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "refusing API token file {shown}: group or others can access it (mode {mode:03o}); \
             run `chmod 600 {shown}`, or delete it to get a new token"
        );
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE_LEN)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read API token file {shown} (is it text?)"))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("API token file {shown} is empty: delete it to get a new token");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "API token file {shown} holds spaces or non-ASCII characters, which an HTTP \
             header cannot carry: delete it to get a new token"
        );
    }
    Ok(Some(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_then_reloads_a_private_token() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let token = load_or_create_token(&data).unwrap();
        assert_eq!(token.len(), 64);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(mode(&token_path(&data)), 0o600);
        assert_eq!(load_or_create_token(&data).unwrap(), token);
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(TOKEN_FILE_NAME)]);
        // A second data dir gets a different token.
        assert_ne!(
            load_or_create_token(&dir.path().join("other")).unwrap(),
            token
        );
    }

    #[test]
    fn reads_a_hand_written_token_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        write_private(&token_path(dir.path()), "  s3cret-Token \n").unwrap();
        assert_eq!(load_or_create_token(dir.path()).unwrap(), "s3cret-Token");
    }

    #[test]
    fn refuses_a_token_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_path(dir.path());
        load_or_create_token(dir.path()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(err.contains("644"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(load_or_create_token(dir.path()).is_err());
    }

    #[test]
    fn refuses_empty_symlinked_and_odd_token_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_path(dir.path());
        write_private(&path, " \n").unwrap();
        let err = load_or_create_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");

        fs::remove_file(&path).unwrap();
        write_private(&path, "two words").unwrap();
        assert!(load_or_create_token(dir.path()).is_err());

        fs::remove_file(&path).unwrap();
        let target = dir.path().join("elsewhere");
        write_private(&target, "abc").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = load_or_create_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
    }

    #[test]
    fn check_accepts_either_form_and_rejects_the_rest() {
        let auth = AuthConfig {
            token: Some("tok123".into()),
        };
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        let none = HeaderMap::new();
        assert!(auth.check(&headers("Bearer tok123"), None).is_ok());
        assert!(auth.check(&headers("bearer   tok123"), None).is_ok());
        assert!(auth.check(&none, Some("a=1&token=tok123")).is_ok());
        assert!(
            auth.check(&headers("Bearer wrong"), Some("token=tok123"))
                .is_ok()
        );

        let missing = auth.check(&none, Some("a=1")).unwrap_err();
        assert_eq!(missing.status(), 401);
        assert!(
            missing.message().starts_with("missing API token"),
            "{missing}"
        );
        assert!(missing.message().contains("Authorization: Bearer <token>"));
        assert!(missing.message().contains("<data-dir>/api-token"));
        for bad in [
            "Bearer tok12",
            "Bearer tok1234",
            "Basic tok123",
            "tok123",
            "Bearer ",
        ] {
            let err = auth.check(&headers(bad), None).unwrap_err();
            assert!(
                err.message().starts_with("wrong API token"),
                "{bad:?}: {err}"
            );
        }
        assert!(auth.check(&none, Some("token=")).is_err());
        assert!(auth.check(&none, Some("token=TOK123")).is_err());

        let open = AuthConfig { token: None };
        assert!(open.check(&none, None).is_ok());
        assert!(!format!("{auth:?}").contains("tok123"));
    }
}
