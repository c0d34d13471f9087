//! `cargo xtask run [-- SERVE ARGS]`: start `frametap-api` and `frametap-agent serve`
//! on the same data dir, then say what runs and how to use it.
//!
//! The agent alone resolves its configuration (flags, `--config FILE` or
//! `FRAMETAP_CONFIG`, defaults): `frametap-agent config SERVE ARGS` prints the result
//! as JSON, and everything here (the API's data dir, the banner) comes from that.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{Result, step};

/// Where `cargo xtask run` serves the API (given to it explicitly, so the banner is
/// right by construction).
const API_LISTEN: &str = "127.0.0.1:8889";
/// `frametap-agent`'s default cgroup, to leave out a flag that would repeat it.
const DEFAULT_CGROUP: &str = "frametap";

/// What the banner needs of the agent's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub cgroups: Vec<String>,
    pub ports: Vec<u16>,
    pub exclude: Vec<String>,
    pub include: Vec<String>,
    pub listen: String,
    pub data_dir: PathBuf,
}

impl Effective {
    /// From the JSON `frametap-agent config` prints (the config file's keys).
    pub fn from_json(text: &str) -> Result<Self> {
        let json: Value = serde_json::from_str(text)
            .map_err(|e| format!("frametap-agent config printed no JSON ({e}): {text}"))?;
        let strings = |key: &str| -> Result<Vec<String>> {
            json[key]
                .as_array()
                .ok_or_else(|| format!("frametap-agent config: no list {key:?}"))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("frametap-agent config: {key:?} holds {v}"))
                })
                .collect()
        };
        let string = |key: &str| -> Result<String> {
            json[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("frametap-agent config: no {key:?}"))
        };
        let ports = json["ports"]
            .as_array()
            .ok_or("frametap-agent config: no list \"ports\"")?
            .iter()
            .map(|p| {
                p.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| format!("frametap-agent config: port {p}"))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cgroups: strings("cgroup")?,
            ports,
            exclude: strings("exclude")?,
            include: strings("include")?,
            listen: string("listen")?,
            data_dir: PathBuf::from(string("data-dir")?),
        })
    }

    fn host_wide(&self) -> bool {
        self.cgroups.iter().any(|c| c == "/")
    }
}

/// How to sign in to the API that `run` started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// Generated (or kept) by the API in this file.
    TokenFile { token: String, file: PathBuf },
    /// Given to the API through `FRAMETAP_API_TOKEN`.
    FromEnv,
}

/// A word as the shell reads it back.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A request that the capture applies to: plain HTTP on port 80 when it is captured,
/// else HTTPS on 443 (trusting frametap's CA), else the first captured port.
fn example_request(cfg: &Effective) -> String {
    if cfg.ports.contains(&80) || cfg.ports.is_empty() {
        "curl http://example.com/".to_string()
    } else if cfg.ports.contains(&443) {
        format!(
            "curl --cacert {} https://example.com/",
            shell_word(&cfg.data_dir.join("ca.pem").display().to_string())
        )
    } else {
        format!("curl http://example.com:{}/", cfg.ports[0])
    }
}

/// What `cargo xtask run` prints once the API and the agent are both up. Pure, so
/// that what it says is tested against the configuration it describes.
pub fn banner(cfg: &Effective, agent: &Path, sign_in: &SignIn, sudo: bool) -> String {
    let ports = cfg
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let data_dir = cfg.data_dir.display().to_string();
    let mut out = String::from("frametap is running.\n");
    let whom = if cfg.host_wide() {
        "every process of this network namespace (host-wide)".to_string()
    } else {
        let quoted: Vec<String> = cfg.cgroups.iter().map(|c| format!("`{c}`")).collect();
        let (noun, pronoun) = if cfg.cgroups.len() == 1 {
            ("cgroup", "its")
        } else {
            ("cgroups", "their")
        };
        format!(
            "processes in the {noun} {} and {pronoun} descendants",
            list(&quoted)
        )
    };
    out += &format!("  Captured: TCP connects to ports {ports} from {whom}");
    if !cfg.include.is_empty() {
        out += &format!(", only to {}", list(&cfg.include));
    }
    if !cfg.exclude.is_empty() {
        out += &format!(", except to {}", list(&cfg.exclude));
    }
    out += &format!(", relayed through {}.\n", cfg.listen);
    out += &format!("  Data dir: {data_dir} (the CA to trust is {data_dir}/ca.pem).\n");

    let request = example_request(cfg);
    if cfg.host_wide() {
        out += &format!("  Try it from another terminal:\n      {request}\n");
    } else {
        let mut exec = vec![
            format!(
                "{}{}",
                if sudo { "sudo " } else { "" },
                shell_word(&agent.display().to_string())
            ),
            "exec".to_string(),
        ];
        // Any captured cgroup works; the default one needs no flag.
        if !cfg.cgroups.iter().any(|c| c == DEFAULT_CGROUP) {
            exec.push(format!("--cgroup {}", shell_word(&cfg.cgroups[0])));
        }
        out += &format!(
            "  Capture one command from another terminal:\n      {} -- {request}\n",
            exec.join(" ")
        );
    }

    let api = format!("http://{API_LISTEN}/api");
    match sign_in {
        SignIn::TokenFile { token, file } => {
            out += &format!(
                "  API: {api}, token {token} (kept in {}):\n      curl -H \"Authorization: Bearer {token}\" {api}/traffic\n",
                file.display()
            );
        }
        SignIn::FromEnv => {
            out += &format!(
                "  API: {api}, with the token from FRAMETAP_API_TOKEN:\n      curl -H \"Authorization: Bearer $FRAMETAP_API_TOKEN\" {api}/traffic\n"
            );
        }
    }
    out += "Stop both with Ctrl-C.";
    out
}

/// Start both, print the banner, wait for the agent to end, then stop the API.
pub fn run(agent: &Path, api: &Path, serve_args: &[&str]) -> Result {
    let cfg = effective_config(agent, serve_args)?;
    let data_dir = cfg.data_dir.display().to_string();

    step(&format!(
        "{} --data-dir {data_dir} --listen {API_LISTEN}",
        api.display()
    ));
    let mut api_process = Command::new(api)
        .args(["--data-dir", &data_dir, "--listen", API_LISTEN])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", api.display()))?;
    let result = wait_for_api(&mut api_process)
        .and_then(|()| sign_in(&cfg.data_dir))
        .and_then(|sign_in| serve(agent, serve_args, &cfg, &sign_in, &mut api_process));
    terminate(&api_process);
    let _ = api_process.wait();
    result
}

/// The agent's own view of `serve SERVE ARGS` (FRAMETAP_CONFIG is inherited).
fn effective_config(agent: &Path, serve_args: &[&str]) -> Result<Effective> {
    let out = Command::new(agent)
        .arg("config")
        .args(serve_args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {} config: {e}", agent.display()))?;
    if !out.status.success() {
        return Err(format!(
            "the agent refused these settings (see above): serve {}",
            serve_args.join(" ")
        ));
    }
    Effective::from_json(&String::from_utf8_lossy(&out.stdout))
}

/// Wait until the API is up: it prints its sign-in line on stdout once it listens
/// (passed through here, with whatever follows), or its port answers.
fn wait_for_api(api: &mut Child) -> Result {
    let stdout = api.stdout.take().expect("piped");
    let (said_something, first_line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            println!("{line}");
            let _ = std::io::stdout().flush();
            let _ = said_something.send(());
        }
    });
    let address = API_LISTEN.parse().expect("a socket address");
    loop {
        api_alive(api)?;
        if first_line.try_recv().is_ok()
            || TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn api_alive(api: &mut Child) -> Result {
    match api.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(st)) => Err(format!(
            "frametap-api stopped ({st}); see its message above"
        )),
        Err(e) => Err(format!("frametap-api: {e}")),
    }
}

fn sign_in(data_dir: &Path) -> Result<SignIn> {
    if std::env::var_os("FRAMETAP_API_TOKEN").is_some_and(|t| !t.is_empty()) {
        return Ok(SignIn::FromEnv);
    }
    let file = data_dir.join("api-token");
    let token = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read the API token {}: {e}", file.display()))?;
    Ok(SignIn::TokenFile {
        token: token.trim().to_string(),
        file,
    })
}

/// Run the agent; once it has attached (its state file names its pid) and the API is
/// still up, print the banner. Returns when the agent exits.
fn serve(
    agent: &Path,
    serve_args: &[&str],
    cfg: &Effective,
    sign_in: &SignIn,
    api: &mut Child,
) -> Result {
    step(&format!(
        "{} serve {}",
        agent.display(),
        serve_args.join(" ")
    ));
    let mut child = Command::new(agent)
        .arg("serve")
        .args(serve_args)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", agent.display()))?;
    // The agent's log passes through unchanged; the line it logs once its programs
    // are attached says it is capturing.
    let (attached_tx, attached_rx) = std::sync::mpsc::channel();
    let log = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        let mut stderr = std::io::stderr();
        for line in BufReader::new(log).lines().map_while(|l| l.ok()) {
            let _ = writeln!(stderr, "{line}");
            if says_attached(&line) {
                let _ = attached_tx.send(());
            }
        }
    });
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return if st.success() {
                Ok(())
            } else {
                Err(format!("frametap-agent serve ended ({st})"))
            };
        }
        if attached_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            break;
        }
    }
    if let Err(e) = api_alive(api) {
        terminate(&child);
        let _ = child.wait();
        return Err(e);
    }
    eprintln!("\n{}\n", banner(cfg, agent, sign_in, on_path("sudo")));
    let st = child.wait().map_err(|e| e.to_string())?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("frametap-agent serve ended ({st})"))
    }
}

/// Whether an agent log line (text or JSON) is the one it logs once attached.
fn says_attached(line: &str) -> bool {
    line.contains("capturing outbound TCP connects")
}

/// SIGTERM, with the shell's own kill: procps (/usr/bin/kill) is not on every Debian.
fn terminate(child: &Child) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status();
}

fn on_path(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "/var/tmp/frametap/target/release/frametap-agent";

    fn token() -> SignIn {
        SignIn::TokenFile {
            token: "abc123".into(),
            file: PathBuf::from("/var/lib/frametap/api-token"),
        }
    }

    fn config(cgroups: &[&str], ports: &[u16], data_dir: &str) -> Effective {
        Effective {
            cgroups: cgroups.iter().map(|c| c.to_string()).collect(),
            ports: ports.to_vec(),
            exclude: vec![],
            include: vec![],
            listen: "127.0.0.1:15001".into(),
            data_dir: PathBuf::from(data_dir),
        }
    }

    #[test]
    fn reads_what_frametap_agent_config_prints() {
        let printed = r#"{
            "cgroup": ["ncft"], "ports": [80, 443], "exclude": ["10.0.0.0/8"], "include": [],
            "listen": "127.0.0.1:15002", "data-dir": "/srv/ft", "log-format": "text",
            "workers": 2, "shutdown-grace": 5, "upstream-ca": [], "insecure-upstream": false,
            "passthrough": [], "ca-name": "frametap CA", "max-frame-payload": 1048576,
            "retention-max-age": null, "retention-max-size": null, "rules": []
        }"#;
        assert_eq!(
            Effective::from_json(printed).unwrap(),
            Effective {
                cgroups: vec!["ncft".into()],
                ports: vec![80, 443],
                exclude: vec!["10.0.0.0/8".into()],
                include: vec![],
                listen: "127.0.0.1:15002".into(),
                data_dir: PathBuf::from("/srv/ft"),
            }
        );
        assert!(Effective::from_json("error: nope").is_err());
        assert!(Effective::from_json("{\"cgroup\": []}").is_err());
    }

    #[test]
    fn default_banner() {
        let text = banner(
            &config(&["frametap"], &[80, 443], "/var/lib/frametap"),
            Path::new(AGENT),
            &token(),
            true,
        );
        assert_eq!(
            text,
            "frametap is running.\n  \
             Captured: TCP connects to ports 80,443 from processes in the cgroup `frametap` and its descendants, relayed through 127.0.0.1:15001.\n  \
             Data dir: /var/lib/frametap (the CA to trust is /var/lib/frametap/ca.pem).\n  \
             Capture one command from another terminal:\n      \
             sudo /var/tmp/frametap/target/release/frametap-agent exec -- curl http://example.com/\n  \
             API: http://127.0.0.1:8889/api, token abc123 (kept in /var/lib/frametap/api-token):\n      \
             curl -H \"Authorization: Bearer abc123\" http://127.0.0.1:8889/api/traffic\n\
             Stop both with Ctrl-C."
        );
    }

    #[test]
    fn sees_the_agents_attached_line_in_text_and_json_logs() {
        assert!(says_attached(
            "2026-11-29T14:00:00Z  INFO frametap_agent: capturing outbound TCP connects from \
             these cgroups (and their descendants) to these ports cgroups=/sys/fs/cgroup/frametap"
        ));
        assert!(says_attached(
            r#"{"timestamp":"2026-11-29T14:00:00Z","level":"INFO","message":"capturing outbound TCP connects from these cgroups (and their descendants) to these ports"}"#
        ));
        assert!(!says_attached(
            "INFO frametap_agent: control socket for frametap-api"
        ));
    }

    #[test]
    fn banner_names_the_effective_cgroup_and_data_dir() {
        let text = banner(
            &config(&["ncft"], &[80], "/tmp/ft data"),
            Path::new(AGENT),
            &token(),
            false,
        );
        assert!(text.contains("in the cgroup `ncft` and"), "{text}");
        assert!(!text.contains("`frametap`"), "{text}");
        assert!(
            text.contains(&format!(
                "\n      {AGENT} exec --cgroup ncft -- curl http://example.com/\n"
            )),
            "{text}"
        );
        assert!(text.contains("Data dir: /tmp/ft data "), "{text}");
        // exec finds the agent through the kernel, whatever its data dir.
        assert!(!text.contains("--data-dir"), "{text}");

        let mut selective = config(&["ncft"], &[80], "/var/lib/frametap");
        selective.include = vec!["10.1.2.0/24".into()];
        selective.exclude = vec!["10.1.2.7/32".into()];
        let text = banner(&selective, Path::new(AGENT), &token(), false);
        assert!(
            text.contains(
                "and its descendants, only to 10.1.2.0/24, except to 10.1.2.7/32, relayed through"
            ),
            "{text}"
        );

        let several = banner(
            &config(&["a/b", "frametap"], &[8080], "/var/lib/frametap"),
            Path::new(AGENT),
            &token(),
            false,
        );
        assert!(
            several.contains("in the cgroups `a/b` and `frametap` and their descendants"),
            "{several}"
        );
        // The default cgroup is captured: exec needs no --cgroup.
        assert!(
            several.contains("frametap-agent exec -- curl http://example.com:8080/"),
            "{several}"
        );
    }

    #[test]
    fn host_wide_needs_no_exec() {
        let mut cfg = config(&["/"], &[443], "/var/lib/frametap");
        cfg.exclude = vec!["10.0.0.0/8".into(), "fd00::/8".into()];
        let text = banner(&cfg, Path::new(AGENT), &SignIn::FromEnv, true);
        assert!(!text.contains(" exec "), "{text}");
        assert!(
            text.contains("every process of this network namespace"),
            "{text}"
        );
        assert!(
            text.contains(", except to 10.0.0.0/8 and fd00::/8,"),
            "{text}"
        );
        assert!(
            text.contains(
                "Try it from another terminal:\n      curl --cacert /var/lib/frametap/ca.pem https://example.com/\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("Bearer $FRAMETAP_API_TOKEN\" http://127.0.0.1:8889/api/traffic"),
            "{text}"
        );
    }

    #[test]
    fn shell_words_survive_the_shell() {
        assert_eq!(
            shell_word("system.slice/nginx.service"),
            "system.slice/nginx.service"
        );
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
