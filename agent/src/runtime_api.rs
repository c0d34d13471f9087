//! The container runtime's API on its Unix socket: Docker's and Podman's (which
//! speaks Docker's API) answer `GET /containers/json` and `GET /containers/{id}/json`
//! alike. Only those two calls are made, as HTTP/1.0 (one request per connection,
//! the body ends with the connection), so no HTTP client library is needed.
use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// Where runtimes put their API socket, in the order they are tried: rootful
/// Podman (`podman.socket`, or `podman system service`), then Docker.
pub const SOCKETS: [&str; 3] = [
    "/run/podman/podman.sock",
    "/var/run/docker.sock",
    "/run/docker.sock",
];

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The first runtime API socket that accepts a connection.
pub fn find_socket() -> Option<PathBuf> {
    SOCKETS
        .iter()
        .map(PathBuf::from)
        .find(|p| UnixStream::connect(p).is_ok())
}

/// A running container as the runtime describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// Its main process (0 when it is not running).
    pub pid: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    id: String,
    name: String,
    state: InspectState,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    #[serde(default)]
    pid: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    id: String,
}

/// `GET /containers/{name_or_id}/json`; `None` when there is no such container.
pub fn inspect(socket: &Path, name_or_id: &str) -> anyhow::Result<Option<Inspected>> {
    if name_or_id.is_empty()
        || !name_or_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        bail!("{name_or_id:?} is not a container name or id (letters, digits, `_`, `.`, `-`)");
    }
    let (status, body) = get(socket, &format!("/containers/{name_or_id}/json"))?;
    match status {
        200 => {
            let i: Inspect = serde_json::from_slice(&body)
                .with_context(|| format!("unexpected answer from {}", socket.display()))?;
            Ok(Some(Inspected {
                id: i.id,
                name: i.name.trim_start_matches('/').to_string(),
                pid: i.state.pid,
            }))
        }
        404 => Ok(None),
        other => bail!(
            "{} answered {other} to inspecting {name_or_id:?}: {}",
            socket.display(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    }
}

/// Every running container, inspected.
pub fn running(socket: &Path) -> anyhow::Result<Vec<Inspected>> {
    let (status, body) = get(socket, "/containers/json")?;
    if status != 200 {
        bail!(
            "{} answered {status} to listing containers",
            socket.display()
        );
    }
    let listed: Vec<Listed> = serde_json::from_slice(&body)
        .with_context(|| format!("unexpected answer from {}", socket.display()))?;
    let mut found = Vec::new();
    for l in listed {
        if let Some(i) = inspect(socket, &l.id)? {
            found.push(i);
        }
    }
    Ok(found)
}

/// One GET over the socket: (status, body).
fn get(socket: &Path, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the container runtime at {}",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = Vec::new();
    stream
        .take(64 << 20)
        .read_to_end(&mut answer)
        .with_context(|| format!("reading the answer of {}", socket.display()))?;
    parse_answer(&answer).with_context(|| format!("unexpected answer from {}", socket.display()))
}

/// Status and body of an HTTP/1.x answer whose body ends with the connection.
fn parse_answer(answer: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(answer)? {
        httparse::Status::Complete(head) => Ok((
            response.code.context("no status code")?,
            answer[head..].to_vec(),
        )),
        httparse::Status::Partial => bail!("the answer ended inside its head"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_split_into_status_and_body() {
        let (status, body) =
            parse_answer(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Id\":1}")
                .unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"{\"Id\":1}"[..]));
        assert!(parse_answer(b"HTTP/1.0 200 OK\r\nContent-").is_err());
    }

    #[test]
    fn an_inspection_gives_id_name_and_pid() {
        let i: Inspect = serde_json::from_str(
            r#"{"Id":"abc","Name":"/web","State":{"Pid":42,"Running":true},"Config":{}}"#,
        )
        .unwrap();
        assert_eq!(
            (i.id.as_str(), i.name.as_str(), i.state.pid),
            ("abc", "/web", 42)
        );
    }

    #[test]
    fn names_that_could_change_the_request_are_refused() {
        let socket = Path::new("/nonexistent.sock");
        for bad in ["", "a/b", "a b", "x\r\nHost: y", "..%2f"] {
            let err = inspect(socket, bad).unwrap_err().to_string();
            assert!(err.contains("is not a container name"), "{bad:?}: {err}");
        }
    }
}
