//! The command line the agent suggests at start for capturing one command. It has to
//! work exactly as printed: the binary as the user's shell finds it, `sudo` when the
//! agent itself was started through sudo, a captured cgroup (quoted for the shell),
//! and a URL on a captured port (HTTPS with the agent's CA, so curl trusts it).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// How to invoke this binary from a shell: `frametap-agent` when `PATH` finds this
/// very file under that name, its absolute path otherwise (say, a build directory).
pub fn invocation() -> String {
    const NAME: &str = "frametap-agent";
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return NAME.to_string();
    };
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<PathBuf>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(NAME))
        .find(|candidate| candidate.is_file());
    match on_path.and_then(|p| std::fs::canonicalize(p).ok()) {
        Some(found) if found == me => NAME.to_string(),
        _ => quote(&me.display().to_string()),
    }
}

/// Was this process started through sudo by someone else? Then their shell is
/// probably not root, and `exec` (which creates a cgroup) needs sudo too.
pub fn started_through_sudo() -> bool {
    std::env::var_os("SUDO_USER").is_some_and(|u| !u.is_empty() && u != "root")
}

/// `frametap-agent exec --cgroup CGROUP -- curl URL`, for the first captured cgroup.
pub fn exec_hint(
    program: &str,
    sudo: bool,
    cgroup: &str,
    ports: &BTreeSet<u16>,
    ca_path: &Path,
) -> String {
    let curl = if ports.contains(&80) {
        "curl http://example.com/".to_string()
    } else if ports.contains(&443) {
        format!(
            "curl --cacert {} https://example.com/",
            quote(&ca_path.display().to_string())
        )
    } else {
        let port = ports.first().copied().unwrap_or(80);
        format!("curl http://example.com:{port}/")
    };
    format!(
        "{}{program} exec --cgroup {} -- {curl}",
        if sudo { "sudo " } else { "" },
        quote(cgroup)
    )
}

/// Quote for a POSIX shell when needed.
fn quote(s: &str) -> String {
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(p: &[u16]) -> BTreeSet<u16> {
        p.iter().copied().collect()
    }

    #[test]
    fn plain_http_when_port_80_is_captured() {
        assert_eq!(
            exec_hint(
                "frametap-agent",
                false,
                "frametap",
                &ports(&[80, 443]),
                Path::new("/var/lib/frametap/ca.pem")
            ),
            "frametap-agent exec --cgroup frametap -- curl http://example.com/"
        );
    }

    #[test]
    fn https_trusts_the_ca_and_odd_names_are_quoted() {
        assert_eq!(
            exec_hint(
                "/opt/frametap/frametap-agent",
                true,
                "system.slice/my app.service",
                &ports(&[443]),
                Path::new("/tmp/data dir/ca.pem")
            ),
            "sudo /opt/frametap/frametap-agent exec --cgroup 'system.slice/my app.service' -- \
             curl --cacert '/tmp/data dir/ca.pem' https://example.com/"
        );
    }

    #[test]
    fn other_ports_use_the_first_captured_one() {
        let hint = exec_hint(
            "frametap-agent",
            false,
            "ft",
            &ports(&[8443, 8080]),
            Path::new("/ca.pem"),
        );
        assert!(hint.ends_with("-- curl http://example.com:8080/"), "{hint}");
    }

    #[test]
    fn invocation_names_a_file_that_exists() {
        let inv = invocation();
        // The test binary is not frametap-agent on PATH: an absolute path comes back.
        assert!(Path::new(&inv).is_absolute(), "{inv}");
        assert!(Path::new(&inv).is_file(), "{inv}");
    }
}
