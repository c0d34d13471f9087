//! Settings of `frametap-agent serve`: command line first, then the TOML config
//! file, then defaults. Everything is validated here, before anything is attached.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use anyhow::{Context as _, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CGROUP: &str = "frametap";
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];
pub const DEFAULT_LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 15001);
pub const DEFAULT_DATA_DIR: &str = "/var/lib/frametap";
pub const MAX_PORTS: usize = capture_common::SELECTED_PORTS_CAPACITY as usize;
/// Most `--exclude` or `--include` networks (the capacity of each eBPF trie).
pub const MAX_NETWORKS: usize = capture_common::EXCLUDED_CAPACITY as usize;

/// A set of destination ports, parsed from "80,443" or "8000-8010" lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortList(pub BTreeSet<u16>);

impl FromStr for PortList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut ports = BTreeSet::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
                None => {
                    let p = parse_port(item)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(format!("port range {item:?} runs backwards"));
            }
            ports.extend(lo..=hi);
            if ports.len() > MAX_PORTS {
                return Err(format!("at most {MAX_PORTS} ports can be selected"));
            }
        }
        if ports.is_empty() {
            return Err("no port given (expected e.g. 80,443 or 8000-8010)".into());
        }
        Ok(Self(ports))
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("{s:?} is not a TCP port (1-65535)")),
    }
}

/// A destination network (`--exclude`, `--include`); a bare address means a single
/// host. An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) becomes the IPv4
/// network it stands for, because the eBPF side matches mapped destinations as IPv4.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net = if let Ok(net) = s.parse::<IpNet>() {
        net.trunc()
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        IpNet::from(ip)
    } else {
        return Err(format!(
            "{s:?} is not a CIDR (e.g. 10.0.0.0/8, fd00::/8) or an IP address"
        ));
    };
    Ok(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).expect("prefix <= 32"),
            None => net,
        },
        _ => net,
    })
}

/// Networks from the command line and the config file together (both lists apply),
/// duplicates dropped; at most [`MAX_NETWORKS`] of each address family.
fn networks(
    cli: Option<Vec<IpNet>>,
    file: Option<Vec<IpNet>>,
    key: &str,
) -> anyhow::Result<Vec<IpNet>> {
    let mut nets: Vec<IpNet> = cli.into_iter().chain(file).flatten().collect();
    let mut seen = BTreeSet::new();
    nets.retain(|n| seen.insert(*n));
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        let n = nets.iter().filter(|n| n.addr().is_ipv4() == v4).count();
        if n > MAX_NETWORKS {
            bail!("--{key}: at most {MAX_NETWORKS} {family} networks, got {n}");
        }
    }
    Ok(nets)
}

/// The settings of `frametap-agent serve`, defined once: each field is a command-line
/// flag (`--data-dir DIR`) and a key of the TOML config file (`data-dir = "DIR"`),
/// read by the same parser. A repeatable flag is a list in the file. Two exceptions:
/// `--config` names the file (command line or `FRAMETAP_CONFIG` only), and `rules`
/// (`[[rules]]` tables) is file-only. Unknown keys are an error so that a typo is not
/// silently ignored. `None` means "not given": [`ServeConfig::resolve`] falls back
/// from the command line to the file, then to the default.
#[derive(Clone, Debug, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeOptions {
    /// cgroup v2 path to capture, relative to the cgroup2 mount; its descendants are
    /// captured too. Repeatable, or a comma list (a path containing a comma goes in
    /// the config file). "/" captures the whole host. Default: "frametap" (created if
    /// missing).
    #[arg(long, value_name = "PATH", value_delimiter = ',')]
    pub cgroup: Option<Vec<String>>,
    /// A container to capture, by name or id (Docker or Podman, through their API
    /// socket; by id alone without one). Repeatable. A container started later under
    /// that name is captured too. With only containers given, no other cgroup is.
    #[arg(long, value_name = "NAME_OR_ID")]
    pub container: Option<Vec<String>>,
    /// Destination ports to capture: a list such as 80,443 or a range 8000-8010.
    /// Repeatable. Default: 80,443.
    #[arg(long, value_name = "PORTS")]
    pub ports: Option<Vec<PortList>>,
    /// Destination network never captured (CIDR or single address). Repeatable, or a
    /// comma list; the file's list and the command line's both apply. Wins over
    /// --include.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, value_delimiter = ',')]
    #[serde(default, deserialize_with = "de::cidrs")]
    pub exclude: Option<Vec<IpNet>>,
    /// Capture only destinations in this network (CIDR or single address).
    /// Repeatable, or a comma list; the file's list and the command line's both
    /// apply. Default: every destination.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, value_delimiter = ',')]
    #[serde(default, deserialize_with = "de::cidrs")]
    pub include: Option<Vec<IpNet>>,
    /// IPv4 loopback address the redirected connections are sent to; IPv6 ones go to
    /// [::1] on the same port. Default: 127.0.0.1:15001.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    #[serde(default, deserialize_with = "de::listen")]
    pub listen: Option<SocketAddr>,
    /// Where the agent keeps its state. Default: /var/lib/frametap.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file; its keys are listed below. Flags given on the command line
    /// win over it.
    #[arg(long, value_name = "FILE", env = "FRAMETAP_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Log lines as text or JSON (one object per line). Default: text.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Worker threads, each with its own listener (SO_REUSEPORT) and event loop, so a
    /// connection stays on one core for its whole life. Default: one per CPU.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// On SIGINT/SIGTERM, how many seconds open connections may still run after new
    /// ones stopped being captured. Default: 5.
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
    /// How many seconds a captured TLS connection may take to finish its handshakes
    /// (the client's with frametap, frametap's with the server) after its
    /// ClientHello; then it is closed and recorded as timed out. Default: 10.
    #[arg(long, value_name = "SECONDS")]
    pub handshake_timeout: Option<u64>,
    /// After one side of a captured connection closed its half, how many seconds
    /// the other side may stay silent before frametap closes the connection (as
    /// HAProxy's `timeout client-fin` does); bytes moving restart the clock.
    /// 0: never. Default: 120.
    #[arg(long, value_name = "SECONDS")]
    pub half_open_timeout: Option<u64>,
    /// PEM file of extra CA certificates trusted for upstream servers, on top of the
    /// system trust store (for private CAs). Repeatable; the file's list and the
    /// command line's both apply.
    #[arg(long, value_name = "PEM")]
    pub upstream_ca: Option<Vec<PathBuf>>,
    /// Do not verify upstream TLS certificates. Dangerous: anyone on the path could
    /// impersonate the servers. Off by default.
    #[arg(long)]
    #[serde(default)]
    pub insecure_upstream: bool,
    /// Relay TLS to this host without interception (certificate-pinned apps): a name
    /// from SNI, `*.domain`, or a destination CIDR. Repeatable, or a comma list; the
    /// file's list and the command line's both apply.
    #[arg(long, value_name = "HOST|CIDR", value_delimiter = ',')]
    pub passthrough: Option<Vec<String>>,
    /// Common name of the CA created on first start. Default: "frametap CA".
    #[arg(long, value_name = "NAME")]
    pub ca_name: Option<String>,
    /// Most payload bytes stored per WebSocket frame (the true length is always
    /// recorded, with a truncated flag). Default: 1MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de::size")]
    pub max_frame_payload: Option<u64>,
    /// Most bytes stored of each HTTP request and response body, as they stream
    /// through (the true size is always recorded, with a truncated flag). 0 turns
    /// body recording off. Default: 1MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_or_zero)]
    #[serde(default, deserialize_with = "de::size_or_zero")]
    pub max_body_size: Option<u64>,
    /// Delete recorded traffic older than this (e.g. 7d, 12h; a bare number is
    /// seconds). Default: keep.
    #[arg(long, value_name = "AGE", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub retention_max_age: Option<Duration>,
    /// Delete the oldest recorded traffic while the store is bigger than this (e.g.
    /// 10GiB). Default: no limit.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de::size")]
    pub retention_max_size: Option<u64>,
    /// Message rules (`[[rules]]` tables), tried in order. Config file only.
    #[arg(skip)]
    pub rules: Option<Vec<frametap_control::Rule>>,
}

impl ServeOptions {
    /// The options of a config file.
    pub fn load_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The keys a config file may hold, in the order of `serve --help`: every long
    /// flag but `--config`, then `rules`.
    pub fn file_keys() -> Vec<String> {
        use clap::Args as _;
        let command = Self::augment_args(clap::Command::new("serve"));
        command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|long| *long != "config")
            .map(str::to_string)
            .chain(["rules".to_string()])
            .collect()
    }
}

/// What `serve --help` says about the config file, from [`ServeOptions::file_keys`].
pub fn config_file_help() -> String {
    let keys = ServeOptions::file_keys()
        .into_iter()
        .filter(|k| k != "rules")
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "Config file (--config FILE or FRAMETAP_CONFIG): TOML with the keys {keys}, each \
         meaning what its flag means (repeatable flags are lists: ports = [80, \"8000-8010\"]), \
         and [[rules]] tables (message rules). Flags given on the command line win over \
         the file; for exclude, include, upstream-ca and passthrough both lists apply. \
         `frametap-agent config [OPTIONS]` prints the resulting configuration as JSON."
    )
}

/// "127.0.0.1:15001"; which addresses the agent accepts is checked in `resolve`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not ADDRESS:PORT (e.g. 127.0.0.1:15001)"))
}

/// Config file values read with the command line's parsers.
mod de {
    use std::{net::SocketAddr, time::Duration};

    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, de::Error as _};

    /// A size or a duration may be written as a number or as a string ("64KiB").
    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum Scalar {
        Number(u64),
        Text(String),
    }

    impl Scalar {
        pub fn text(self) -> String {
            match self {
                Scalar::Number(n) => n.to_string(),
                Scalar::Text(t) => t,
            }
        }
    }

    fn parsed<'de, D: Deserializer<'de>, T>(
        d: D,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, D::Error> {
        Option::<Scalar>::deserialize(d)?
            .map(|v| parse(&v.text()).map_err(D::Error::custom))
            .transpose()
    }

    pub fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<IpNet>>, D::Error> {
        Option::<Vec<String>>::deserialize(d)?
            .map(|list| {
                list.iter()
                    .map(|s| super::parse_cidr(s).map_err(D::Error::custom))
                    .collect()
            })
            .transpose()
    }

    pub fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_listen(&s).map_err(D::Error::custom))
            .transpose()
    }

    pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        parsed(d, super::parse_size)
    }

    pub fn size_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        parsed(d, super::parse_size_or_zero)
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        parsed(d, super::parse_duration)
    }
}

/// In the config file, a port list is a number or a string of the command line's
/// form: `ports = [80, 443, "8000-8010"]`.
impl<'de> Deserialize<'de> for PortList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = de::Scalar::deserialize(d)?.text();
        text.parse().map_err(serde::de::Error::custom)
    }
}

pub const DEFAULT_CA_NAME: &str = "frametap CA";
pub const DEFAULT_MAX_FRAME_PAYLOAD: u64 = 1024 * 1024;
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1024 * 1024;

/// "90s", "30m", "12h", "7d" (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 3600s, 30m, 12h, 7d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    if secs == 0 {
        return Err(format!("{s:?} must be more than zero"));
    }
    Ok(Duration::from_secs(secs))
}

/// "1048576", "512KiB", "100MiB", "10GiB", "500MB", "2GB".
pub fn parse_size(s: &str) -> Result<u64, String> {
    match parse_size_or_zero(s)? {
        0 => Err(format!("{:?} is zero or too large", s.trim())),
        n => Ok(n),
    }
}

/// [`parse_size`], where zero (`0`, `0MiB`) is allowed: it means "off".
pub fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1MiB, 500MB, 10GiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use KiB, MiB, GiB, MB, GB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is zero or too large"))
}

pub use frametap_logging::LogFormat;

pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// Validated settings of a serving agent. Serialized (`frametap-agent config`) with
/// the config file's keys, so the JSON read back as a config file gives the same
/// settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServeConfig {
    /// cgroup paths relative to the cgroup2 mount, "/" for host-wide.
    #[serde(rename = "cgroup")]
    pub cgroups: Vec<String>,
    /// `--container` names and ids, kept attached while running.
    #[serde(rename = "container")]
    pub containers: Vec<String>,
    pub ports: BTreeSet<u16>,
    pub exclude: Vec<IpNet>,
    /// When not empty, only destinations inside these networks are captured
    /// (exclusions still win).
    pub include: Vec<IpNet>,
    pub listen: SocketAddrV4,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub workers: usize,
    #[serde(serialize_with = "ser::seconds")]
    pub shutdown_grace: Duration,
    #[serde(serialize_with = "ser::seconds")]
    pub handshake_timeout: Duration,
    /// `None`: half-open connections are kept as long as they last.
    #[serde(serialize_with = "ser::opt_seconds")]
    pub half_open_timeout: Option<Duration>,
    pub upstream_ca: Vec<PathBuf>,
    pub insecure_upstream: bool,
    pub passthrough: Vec<String>,
    pub ca_name: String,
    pub max_frame_payload: u64,
    /// Bytes of each HTTP request and response body stored; 0: none.
    pub max_body_size: u64,
    #[serde(serialize_with = "ser::opt_seconds")]
    pub retention_max_age: Option<Duration>,
    pub retention_max_size: Option<u64>,
    /// Message rules from the config file (compiled and checked).
    pub rules: Vec<frametap_control::Rule>,
}

mod ser {
    use std::time::Duration;

    use serde::Serializer;

    pub fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn opt_seconds<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
}

impl ServeConfig {
    /// The settings `serve` runs with: the command line's options over those of the
    /// config file they name (`--config` or `FRAMETAP_CONFIG`), over the defaults.
    pub fn from_command_line(cli: ServeOptions) -> anyhow::Result<Self> {
        let file = match &cli.config {
            Some(path) => ServeOptions::load_file(path)?,
            None => ServeOptions::default(),
        };
        Self::resolve(cli, file)
    }

    /// Command line over file over defaults.
    pub fn resolve(cli: ServeOptions, file: ServeOptions) -> anyhow::Result<Self> {
        let mut containers = cli.container.or(file.container).unwrap_or_default();
        containers.sort();
        containers.dedup();
        let mut cgroups = cli.cgroup.or(file.cgroup).unwrap_or_default();
        if cgroups.is_empty() && containers.is_empty() {
            cgroups.push(DEFAULT_CGROUP.to_string());
        }
        for c in &mut cgroups {
            *c = normalize_cgroup(c)?;
        }
        cgroups.sort();
        cgroups.dedup();

        let ports: BTreeSet<u16> = match cli.ports.or(file.ports) {
            Some(lists) if lists.is_empty() => {
                bail!("ports: no port given (expected e.g. 80,443 or 8000-8010)")
            }
            Some(lists) => lists.into_iter().flat_map(|p| p.0).collect(),
            None => DEFAULT_PORTS.into_iter().collect(),
        };
        if ports.len() > MAX_PORTS {
            bail!(
                "at most {MAX_PORTS} ports can be selected, got {}",
                ports.len()
            );
        }

        let listen = match cli
            .listen
            .or(file.listen)
            .unwrap_or(SocketAddr::V4(DEFAULT_LISTEN))
        {
            SocketAddr::V4(v4) if v4.ip().is_loopback() && v4.port() != 0 => v4,
            other => bail!(
                "--listen {other}: the agent listens on an IPv4 loopback address with a fixed port \
                 (e.g. 127.0.0.1:15001); IPv6 clients are served on [::1] at the same port"
            ),
        };

        // Both lists apply: the command line's and the file's.
        let exclude = networks(cli.exclude, file.exclude, "exclude")?;
        let include = networks(cli.include, file.include, "include")?;
        let upstream_ca = cli
            .upstream_ca
            .into_iter()
            .chain(file.upstream_ca)
            .flatten()
            .collect();
        let passthrough = cli
            .passthrough
            .into_iter()
            .chain(file.passthrough)
            .flatten()
            .collect();

        let rules = cli.rules.or(file.rules).unwrap_or_default();
        frametap_session::rules::RuleBook::new(rules.clone()).map_err(anyhow::Error::msg)?;
        Ok(Self {
            cgroups,
            containers,
            ports,
            exclude,
            include,
            listen,
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            workers: cli
                .workers
                .or(file.workers)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1),
            shutdown_grace: cli
                .shutdown_grace
                .or(file.shutdown_grace)
                .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_secs),
            handshake_timeout: cli
                .handshake_timeout
                .or(file.handshake_timeout)
                .filter(|&s| s > 0)
                .map_or(DEFAULT_HANDSHAKE_TIMEOUT, Duration::from_secs),
            half_open_timeout: match cli.half_open_timeout.or(file.half_open_timeout) {
                Some(0) => None,
                Some(s) => Some(Duration::from_secs(s)),
                None => Some(DEFAULT_HALF_OPEN_TIMEOUT),
            },
            upstream_ca,
            insecure_upstream: cli.insecure_upstream || file.insecure_upstream,
            passthrough,
            ca_name: cli
                .ca_name
                .or(file.ca_name)
                .unwrap_or_else(|| DEFAULT_CA_NAME.to_string()),
            max_frame_payload: cli
                .max_frame_payload
                .or(file.max_frame_payload)
                .unwrap_or(DEFAULT_MAX_FRAME_PAYLOAD),
            max_body_size: cli
                .max_body_size
                .or(file.max_body_size)
                .unwrap_or(DEFAULT_MAX_BODY_SIZE),
            retention_max_age: cli.retention_max_age.or(file.retention_max_age),
            retention_max_size: cli.retention_max_size.or(file.retention_max_size),
            rules,
        })
    }

    pub fn host_wide(&self) -> bool {
        self.cgroups.iter().any(|c| c == "/")
    }

    /// `--include` networks that lie wholly inside an `--exclude` network: nothing
    /// in them is captured, which is worth a warning.
    pub fn include_shadowed_by_exclude(&self) -> Vec<IpNet> {
        self.include
            .iter()
            .filter(|i| self.exclude.iter().any(|e| e.contains(*i)))
            .copied()
            .collect()
    }
}

/// "/" stays "/", "a/b/" and "/a/b" become "a/b"; ".." is refused.
pub fn normalize_cgroup(path: &str) -> anyhow::Result<String> {
    let trimmed = path.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_string());
    }
    if trimmed
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        bail!(
            "cgroup path {path:?} must be a plain path below the cgroup2 mount (no '..', '.' or '//')"
        );
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        assert_eq!(
            "80,443".parse::<PortList>().unwrap().0,
            BTreeSet::from([80, 443])
        );
        assert_eq!("8000-8002".parse::<PortList>().unwrap().0.len(), 3);
        for bad in ["0", "65536", "http", "", "90-80", "1-2000", "-1"] {
            assert!(bad.parse::<PortList>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.1.2.3/8").unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_cidr("fd00::1").unwrap(),
            "fd00::1/128".parse::<IpNet>().unwrap()
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
        // IPv4-mapped networks are the IPv4 networks they stand for.
        assert_eq!(
            parse_cidr("::ffff:10.1.2.3/104").unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_cidr("::ffff:10.1.2.3").unwrap(),
            "10.1.2.3/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_cidr("::/0").unwrap(),
            "::/0".parse::<IpNet>().unwrap()
        );
    }

    #[test]
    fn include_from_cli_and_file_and_its_limits() {
        let c = ServeConfig::resolve(ServeOptions::default(), ServeOptions::default()).unwrap();
        assert!(c.include.is_empty(), "capture every destination by default");

        let file: ServeOptions =
            toml::from_str("include = [\"10.1.2.0/24\", \"fd00::/64\"]\nexclude = [\"10.1.2.7\"]")
                .unwrap();
        // Comma lists on the command line, as a user types them.
        let cli = command_line(&["--include", "192.168.0.0/16,10.1.2.9/24"]);
        let c = ServeConfig::resolve(cli, file).unwrap();
        let nets = |list: &[&str]| {
            list.iter()
                .map(|n| n.parse::<IpNet>().unwrap())
                .collect::<Vec<_>>()
        };
        // Command line and file together, duplicates once.
        assert_eq!(
            c.include,
            nets(&["192.168.0.0/16", "10.1.2.0/24", "fd00::/64"])
        );
        assert_eq!(c.exclude, nets(&["10.1.2.7/32"]));
        assert!(c.include_shadowed_by_exclude().is_empty());

        let file: ServeOptions =
            toml::from_str("include = [\"10.1.2.0/24\"]\nexclude = [\"10.0.0.0/8\"]").unwrap();
        let c = ServeConfig::resolve(ServeOptions::default(), file).unwrap();
        assert_eq!(c.include_shadowed_by_exclude(), nets(&["10.1.2.0/24"]));

        assert!(toml::from_str::<ServeOptions>("include = [\"10.0.0.0/33\"]").is_err());

        let too_many = ServeOptions {
            include: Some(
                (0..=MAX_NETWORKS as u32)
                    .map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
                    .collect(),
            ),
            ..Default::default()
        };
        let err = ServeConfig::resolve(too_many, ServeOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("at most 1024 IPv4 networks"),
            "{err}"
        );
    }

    #[test]
    fn repeatable_flags_take_comma_lists() {
        let c = ServeConfig::resolve(
            command_line(&[
                "--exclude",
                "10.0.0.0/8,fd00::/8",
                "--cgroup",
                "a,b/c",
                "--passthrough",
                "x.test,*.y.test",
            ]),
            ServeOptions::default(),
        )
        .unwrap();
        assert_eq!(c.exclude.len(), 2);
        assert_eq!(c.cgroups, vec!["a", "b/c"]);
        assert_eq!(c.passthrough, vec!["x.test", "*.y.test"]);
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(normalize_cgroup("/").unwrap(), "/");
        assert_eq!(normalize_cgroup("/a/b/").unwrap(), "a/b");
        assert!(normalize_cgroup("a/../b").is_err());
        assert!(normalize_cgroup("a//b").is_err());
    }

    #[test]
    fn defaults() {
        let c = ServeConfig::resolve(ServeOptions::default(), ServeOptions::default()).unwrap();
        assert_eq!(c.cgroups, vec!["frametap"]);
        assert_eq!(c.ports, BTreeSet::from([80, 443]));
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(!c.host_wide());
    }

    #[test]
    fn containers_alone_capture_no_other_cgroup() {
        let file: ServeOptions = toml::from_str(r#"container = ["web", "db", "web"]"#).unwrap();
        let c = ServeConfig::resolve(ServeOptions::default(), file).unwrap();
        assert_eq!(c.containers, vec!["db", "web"]);
        assert!(c.cgroups.is_empty(), "{:?}", c.cgroups);
        let both = ServeOptions {
            container: Some(vec!["web".into()]),
            cgroup: Some(vec!["svc".into()]),
            ..ServeOptions::default()
        };
        let c = ServeConfig::resolve(both, ServeOptions::default()).unwrap();
        assert_eq!(
            (c.cgroups, c.containers),
            (vec!["svc".to_string()], vec!["web".to_string()])
        );
    }

    #[test]
    fn file_then_cli_precedence() {
        let file: ServeOptions = toml::from_str(
            r#"
            cgroup = ["/svc/web", "/"]
            ports = [8443]
            exclude = ["10.9.0.0/16"]
            listen = "127.0.0.2:16000"
            data-dir = "/tmp/ft"
            log-format = "json"
            "#,
        )
        .unwrap();
        let c = ServeConfig::resolve(ServeOptions::default(), file).unwrap();
        assert_eq!(c.cgroups, vec!["/", "svc/web"]);
        assert!(c.host_wide());
        assert_eq!(c.ports, BTreeSet::from([8443]));
        assert_eq!(c.exclude, vec!["10.9.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(c.listen.to_string(), "127.0.0.2:16000");
        assert_eq!(c.log_format, LogFormat::Json);

        let file: ServeOptions =
            toml::from_str("ports = [8443]\nlisten = \"127.0.0.2:16000\"").unwrap();
        let cli = ServeOptions {
            ports: Some(vec!["80".parse().unwrap()]),
            listen: Some("127.0.0.1:15002".parse().unwrap()),
            ..Default::default()
        };
        let c = ServeConfig::resolve(cli, file).unwrap();
        assert_eq!(c.ports, BTreeSet::from([80]));
        assert_eq!(c.listen.port(), 15002);
    }

    #[test]
    fn file_errors_are_reported() {
        assert!(toml::from_str::<ServeOptions>("prots = [80]").is_err());
        // Values are checked by the command line's parsers as the file is read.
        let err = toml::from_str::<ServeOptions>("ports = [0]").unwrap_err();
        assert!(err.to_string().contains("not a TCP port"), "{err}");
        let err = toml::from_str::<ServeOptions>("exclude = [\"10.0.0.0/99\"]").unwrap_err();
        assert!(err.to_string().contains("is not a CIDR"), "{err}");
        let err = toml::from_str::<ServeOptions>("listen = \"localhost\"").unwrap_err();
        assert!(err.to_string().contains("not ADDRESS:PORT"), "{err}");
        let err = toml::from_str::<ServeOptions>("log-format = \"xml\"").unwrap_err();
        assert!(err.to_string().contains("text"), "{err}");
        let file: ServeOptions = toml::from_str("ports = []").unwrap();
        let err = ServeConfig::resolve(ServeOptions::default(), file).unwrap_err();
        assert!(err.to_string().contains("no port given"), "{err}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("10 GiB").unwrap(), 10 << 30);
        assert!(parse_size("0").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(parse_size_or_zero("0").unwrap(), 0);
        assert_eq!(parse_size_or_zero("0MiB").unwrap(), 0);
        assert_eq!(parse_size_or_zero("64KiB").unwrap(), 64 << 10);
        assert!(parse_size_or_zero("0 parsecs").is_err());
        assert!(parse_size_or_zero("").is_err());
        assert!(parse_size_or_zero("-1").is_err());
    }

    #[test]
    fn rules_from_file_are_compiled_before_anything_starts() {
        let file: ServeOptions = toml::from_str(
            r#"
            [[rules]]
            contains = "password"
            direction = "to-server"
            action = { kind = "drop" }

            [[rules]]
            host = "*.chat.test"
            type = "text"
            action = { kind = "replace", pattern = "secret", replacement = "XXXX" }
            "#,
        )
        .unwrap();
        let c = ServeConfig::resolve(ServeOptions::default(), file).unwrap();
        assert_eq!(c.rules.len(), 2);
        let file: ServeOptions =
            toml::from_str("[[rules]]\nregex = \"(\"\naction = { kind = \"drop\" }\n").unwrap();
        let err = ServeConfig::resolve(ServeOptions::default(), file).unwrap_err();
        assert!(
            format!("{err:#}").contains("rule 1 in the config file"),
            "{err:#}"
        );
        assert!(toml::from_str::<ServeOptions>("[[rules]]\nation = 1\n").is_err());
    }

    #[test]
    fn rule_directions_read_in_either_vocabulary() {
        use frametap_control::InjectDirection;
        let file: ServeOptions = toml::from_str(
            r#"
            [[rules]]
            direction = "to-server"
            action = { kind = "drop" }
            [[rules]]
            direction = "client-to-server"
            action = { kind = "drop" }
            [[rules]]
            direction = "to-client"
            action = { kind = "drop" }
            [[rules]]
            direction = "server-to-client"
            action = { kind = "drop" }
            "#,
        )
        .unwrap();
        let c = ServeConfig::resolve(ServeOptions::default(), file).unwrap();
        let directions: Vec<_> = c.rules.iter().map(|r| r.direction).collect();
        use InjectDirection::{ToClient, ToServer};
        assert_eq!(
            directions,
            [
                Some(ToServer),
                Some(ToServer),
                Some(ToClient),
                Some(ToClient)
            ]
        );
        let err = toml::from_str::<ServeOptions>(
            "[[rules]]\ndirection = \"upstream\"\naction = { kind = \"drop\" }\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("to-server"), "{err}");
    }

    #[test]
    fn interception_settings_from_file() {
        let file: ServeOptions = toml::from_str(
            r#"
            upstream-ca = ["/etc/ssl/private-ca.pem"]
            passthrough = ["*.bank.test"]
            max-frame-payload = "64KiB"
            retention-max-age = "7d"
            retention-max-size = "10GiB"
            "#,
        )
        .unwrap();
        let c = ServeConfig::resolve(ServeOptions::default(), file).unwrap();
        assert_eq!(
            c.upstream_ca,
            vec![PathBuf::from("/etc/ssl/private-ca.pem")]
        );
        assert_eq!(c.passthrough, vec!["*.bank.test"]);
        assert_eq!(c.max_frame_payload, 64 * 1024);
        assert_eq!(c.max_body_size, DEFAULT_MAX_BODY_SIZE);
        assert_eq!(c.retention_max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(c.retention_max_size, Some(10 << 30));
        assert!(!c.insecure_upstream);
        assert_eq!(c.ca_name, DEFAULT_CA_NAME);
    }

    #[test]
    fn listen_must_be_v4_loopback() {
        for bad in [
            "0.0.0.0:15001",
            "10.0.0.1:15001",
            "127.0.0.1:0",
            "[::1]:15001",
        ] {
            let cli = ServeOptions {
                listen: Some(bad.parse().unwrap()),
                ..Default::default()
            };
            assert!(
                ServeConfig::resolve(cli, ServeOptions::default()).is_err(),
                "{bad}"
            );
        }
    }

    /// The field names a `Deserialize` type asks for, as serde hands them to the
    /// deserializer (the keys a config file may hold).
    fn serde_keys<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
        use serde::de::{Error as _, Visitor, value::Error};
        struct Keys(Option<&'static [&'static str]>);
        impl<'de> serde::Deserializer<'de> for &mut Keys {
            type Error = Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
                Err(Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Error> {
                self.0 = Some(fields);
                Err(Error::custom("keys taken"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
                enum identifier ignored_any
            }
        }
        let mut keys = Keys(None);
        let _ = T::deserialize(&mut keys);
        keys.0.expect("a struct").to_vec()
    }

    #[test]
    fn every_flag_is_a_config_key_and_every_key_a_flag() {
        let mut file_keys = serde_keys::<ServeOptions>();
        let mut flag_keys = ServeOptions::file_keys();
        file_keys.sort_unstable();
        flag_keys.sort_unstable();
        assert_eq!(file_keys, flag_keys);
        assert!(flag_keys.contains(&"rules".to_string()));
        assert!(!flag_keys.contains(&"config".to_string()));
        let help = config_file_help();
        for key in ServeOptions::file_keys() {
            assert!(help.contains(&key), "serve --help does not name {key}");
        }
    }

    #[derive(clap::Parser)]
    struct ServeCommandLine {
        #[command(flatten)]
        options: ServeOptions,
    }

    fn command_line(args: &[&str]) -> ServeOptions {
        use clap::Parser as _;
        ServeCommandLine::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap()
            .options
    }

    #[test]
    fn flags_and_keys_read_values_alike() {
        let cli = command_line(&[
            "--cgroup=a",
            "--cgroup=b",
            "--ports=80,8000-8001",
            "--ports=443",
            "--exclude=10.1.2.3/8",
            "--listen=127.0.0.2:16000",
            "--data-dir=/srv/ft",
            "--log-format=json",
            "--workers=3",
            "--shutdown-grace=9",
            "--upstream-ca=/etc/ca.pem",
            "--insecure-upstream",
            "--passthrough=*.bank.test",
            "--ca-name=Test CA",
            "--max-frame-payload=64KiB",
            "--retention-max-age=7d",
            "--retention-max-size=10GiB",
        ]);
        let file: ServeOptions = toml::from_str(
            r#"
            cgroup = ["a", "b"]
            ports = ["80,8000-8001", 443]
            exclude = ["10.1.2.3/8"]
            listen = "127.0.0.2:16000"
            data-dir = "/srv/ft"
            log-format = "json"
            workers = 3
            shutdown-grace = 9
            upstream-ca = ["/etc/ca.pem"]
            insecure-upstream = true
            passthrough = ["*.bank.test"]
            ca-name = "Test CA"
            max-frame-payload = "64KiB"
            retention-max-age = "7d"
            retention-max-size = "10GiB"
            "#,
        )
        .unwrap();
        assert_eq!(cli, file);
    }

    #[test]
    fn command_line_wins_over_the_file_for_every_single_value() {
        let file: ServeOptions = toml::from_str(
            r#"
            data-dir = "/from/file"
            log-format = "json"
            workers = 2
            shutdown-grace = 7
            ca-name = "File CA"
            max-frame-payload = 100
            retention-max-age = 60
            retention-max-size = "1GiB"
            cgroup = ["file"]
            exclude = ["10.0.0.0/8"]
            "#,
        )
        .unwrap();
        let cli = command_line(&[
            "--data-dir=/from/cli",
            "--log-format=text",
            "--workers=4",
            "--shutdown-grace=1",
            "--ca-name=Cli CA",
            "--max-frame-payload=200",
            "--retention-max-age=120",
            "--retention-max-size=2GiB",
            "--cgroup=cli",
            "--exclude=192.168.0.0/16",
        ]);
        let c = ServeConfig::resolve(cli, file).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/cli"));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.workers, 4);
        assert_eq!(c.shutdown_grace, Duration::from_secs(1));
        assert_eq!(c.ca_name, "Cli CA");
        assert_eq!(c.max_frame_payload, 200);
        assert_eq!(c.retention_max_age, Some(Duration::from_secs(120)));
        assert_eq!(c.retention_max_size, Some(2 << 30));
        assert_eq!(c.cgroups, vec!["cli"]);
        // Excluded networks add up.
        assert_eq!(c.exclude.len(), 2);
    }

    #[test]
    fn printed_configuration_reads_back_as_a_config_file() {
        let file: ServeOptions = toml::from_str(
            r#"
            cgroup = ["svc/web"]
            ports = [8443, "9000-9001"]
            exclude = ["10.9.0.0/16"]
            listen = "127.0.0.2:16000"
            data-dir = "/tmp/ft"
            log-format = "json"
            workers = 2
            passthrough = ["*.bank.test"]
            retention-max-age = "1h"
            max-frame-payload = "64KiB"

            [[rules]]
            contains = "password"
            action = { kind = "drop" }
            "#,
        )
        .unwrap();
        let printed = ServeConfig::resolve(ServeOptions::default(), file).unwrap();
        let json = serde_json::to_value(&printed).unwrap();
        let mut printed_keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
        let mut file_keys = ServeOptions::file_keys();
        printed_keys.sort_unstable();
        file_keys.sort_unstable();
        assert_eq!(printed_keys, file_keys);
        assert_eq!(json["data-dir"], "/tmp/ft");
        assert_eq!(json["cgroup"], serde_json::json!(["svc/web"]));
        assert_eq!(json["listen"], "127.0.0.2:16000");
        let again: ServeOptions = serde_json::from_value(json).unwrap();
        assert_eq!(
            ServeConfig::resolve(ServeOptions::default(), again).unwrap(),
            printed
        );
    }

    /// The README's `serve` flag table lists exactly the flags `serve` has.
    #[test]
    fn readme_flag_table_matches_the_flags() {
        let readme = include_str!("../../README.md");
        let header = "| flag | meaning | default |";
        let table = readme
            .split_once(header)
            .expect("README has the serve flag table")
            .1;
        let mut listed: Vec<String> = table
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .flat_map(|row| {
                let first_cell = row.split('|').nth(1).unwrap_or_default();
                first_cell
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .filter_map(|code| code.split_whitespace().next())
                    .filter_map(|flag| flag.strip_prefix("--"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut flags: Vec<String> = {
            use clap::Args as _;
            ServeOptions::augment_args(clap::Command::new("serve"))
                .get_arguments()
                .filter_map(|a| a.get_long())
                .map(str::to_string)
                .collect()
        };
        listed.sort_unstable();
        flags.sort_unstable();
        assert_eq!(listed, flags, "README flag table vs `serve` flags");
    }
}
