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
use serde::Deserialize;

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

/// Networks from the command line, then from the config file `key`; at most
/// [`MAX_NETWORKS`] of each address family, duplicates dropped.
fn networks(cli: Vec<IpNet>, file: Option<Vec<String>>, key: &str) -> anyhow::Result<Vec<IpNet>> {
    let mut nets = cli;
    for e in file.unwrap_or_default() {
        nets.push(
            parse_cidr(&e)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("config file: {key}"))?,
        );
    }
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

/// The `[serve]`-level keys of the TOML config file. Unknown keys are an error so
/// that a typo is not silently ignored.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub cgroup: Option<Vec<String>>,
    pub ports: Option<Vec<u16>>,
    pub exclude: Option<Vec<String>>,
    pub include: Option<Vec<String>>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<String>,
    pub upstream_ca: Option<Vec<PathBuf>>,
    pub insecure_upstream: Option<bool>,
    pub passthrough: Option<Vec<String>>,
    pub ca_name: Option<String>,
    pub max_frame_payload: Option<String>,
    pub retention_max_age: Option<String>,
    pub retention_max_size: Option<String>,
    /// Message rules (`[[rules]]` tables), tried in order.
    pub rules: Option<Vec<frametap_control::Rule>>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// What the command line gave (None: not given, fall back to the file).
#[derive(Debug, Default, Clone)]
pub struct CliServe {
    pub cgroup: Vec<String>,
    pub ports: Vec<PortList>,
    pub exclude: Vec<IpNet>,
    pub include: Vec<IpNet>,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub upstream_ca: Vec<PathBuf>,
    pub insecure_upstream: bool,
    pub passthrough: Vec<String>,
    pub ca_name: Option<String>,
    pub max_frame_payload: Option<u64>,
    pub retention_max_age: Option<Duration>,
    pub retention_max_size: Option<u64>,
}

pub const DEFAULT_CA_NAME: &str = "frametap CA";
pub const DEFAULT_MAX_FRAME_PAYLOAD: u64 = 1024 * 1024;

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
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{s:?} is zero or too large"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Validated settings of a serving agent.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    /// cgroup paths relative to the cgroup2 mount, "/" for host-wide.
    pub cgroups: Vec<String>,
    pub ports: BTreeSet<u16>,
    pub exclude: Vec<IpNet>,
    /// When not empty, only destinations inside these networks are captured
    /// (exclusions still win).
    pub include: Vec<IpNet>,
    pub listen: SocketAddrV4,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub upstream_ca: Vec<PathBuf>,
    pub insecure_upstream: bool,
    pub passthrough: Vec<String>,
    pub ca_name: String,
    pub max_frame_payload: u64,
    pub retention_max_age: Option<Duration>,
    pub retention_max_size: Option<u64>,
    /// Message rules from the config file (compiled and checked).
    pub rules: Vec<frametap_control::Rule>,
}

impl ServeConfig {
    /// Command line over file over defaults.
    pub fn resolve(cli: CliServe, file: FileConfig) -> anyhow::Result<Self> {
        let mut cgroups = if !cli.cgroup.is_empty() {
            cli.cgroup
        } else {
            file.cgroup.unwrap_or_default()
        };
        if cgroups.is_empty() {
            cgroups.push(DEFAULT_CGROUP.to_string());
        }
        for c in &mut cgroups {
            *c = normalize_cgroup(c)?;
        }
        cgroups.sort();
        cgroups.dedup();

        let ports: BTreeSet<u16> = if !cli.ports.is_empty() {
            cli.ports.into_iter().flat_map(|p| p.0).collect()
        } else if let Some(p) = file.ports {
            let list = p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
            PortList::from_str(&list)
                .map_err(anyhow::Error::msg)
                .context("config file: ports")?
                .0
        } else {
            DEFAULT_PORTS.into_iter().collect()
        };
        if ports.len() > MAX_PORTS {
            bail!(
                "at most {MAX_PORTS} ports can be selected, got {}",
                ports.len()
            );
        }

        let exclude = networks(cli.exclude, file.exclude, "exclude")?;
        let include = networks(cli.include, file.include, "include")?;

        let listen = match cli.listen {
            Some(l) => l,
            None => match file.listen {
                Some(l) => l
                    .parse::<SocketAddr>()
                    .with_context(|| format!("config file: listen {l:?} is not ADDRESS:PORT"))?,
                None => SocketAddr::V4(DEFAULT_LISTEN),
            },
        };
        let listen = match listen {
            SocketAddr::V4(v4) if v4.ip().is_loopback() && v4.port() != 0 => v4,
            other => bail!(
                "--listen {other}: the agent listens on an IPv4 loopback address with a fixed port \
                 (e.g. 127.0.0.1:15001); IPv6 clients are served on [::1] at the same port"
            ),
        };

        let log_format = match (cli.log_format, file.log_format.as_deref()) {
            (Some(f), _) => f,
            (None, None) => LogFormat::Text,
            (None, Some("text")) => LogFormat::Text,
            (None, Some("json")) => LogFormat::Json,
            (None, Some(other)) => bail!("config file: log-format {other:?} is not text or json"),
        };

        let file_size = |v: Option<String>, key: &str| -> anyhow::Result<Option<u64>> {
            v.map(|v| parse_size(&v).map_err(anyhow::Error::msg))
                .transpose()
                .with_context(|| format!("config file: {key}"))
        };
        let max_frame_payload = match cli.max_frame_payload {
            Some(v) => v,
            None => file_size(file.max_frame_payload, "max-frame-payload")?
                .unwrap_or(DEFAULT_MAX_FRAME_PAYLOAD),
        };
        let retention_max_age = match cli.retention_max_age {
            Some(v) => Some(v),
            None => file
                .retention_max_age
                .map(|v| parse_duration(&v).map_err(anyhow::Error::msg))
                .transpose()
                .context("config file: retention-max-age")?,
        };
        let retention_max_size = match cli.retention_max_size {
            Some(v) => Some(v),
            None => file_size(file.retention_max_size, "retention-max-size")?,
        };
        let mut upstream_ca = cli.upstream_ca;
        upstream_ca.extend(file.upstream_ca.unwrap_or_default());
        let mut passthrough = cli.passthrough;
        passthrough.extend(file.passthrough.unwrap_or_default());

        let rules = file.rules.unwrap_or_default();
        crate::rules::RuleBook::new(rules.clone()).map_err(anyhow::Error::msg)?;
        Ok(Self {
            cgroups,
            ports,
            exclude,
            include,
            listen,
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            log_format,
            upstream_ca,
            insecure_upstream: cli.insecure_upstream || file.insecure_upstream.unwrap_or(false),
            passthrough,
            ca_name: cli
                .ca_name
                .or(file.ca_name)
                .unwrap_or_else(|| DEFAULT_CA_NAME.to_string()),
            max_frame_payload,
            retention_max_age,
            retention_max_size,
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
        let c = ServeConfig::resolve(CliServe::default(), FileConfig::default()).unwrap();
        assert!(c.include.is_empty(), "capture every destination by default");

        let file: FileConfig =
            toml::from_str("include = [\"10.1.2.0/24\", \"fd00::/64\"]\nexclude = [\"10.1.2.7\"]")
                .unwrap();
        let cli = CliServe {
            include: vec![
                parse_cidr("192.168.0.0/16").unwrap(),
                parse_cidr("10.1.2.9/24").unwrap(),
            ],
            ..Default::default()
        };
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

        let file: FileConfig =
            toml::from_str("include = [\"10.1.2.0/24\"]\nexclude = [\"10.0.0.0/8\"]").unwrap();
        let c = ServeConfig::resolve(CliServe::default(), file).unwrap();
        assert_eq!(c.include_shadowed_by_exclude(), nets(&["10.1.2.0/24"]));

        let file: FileConfig = toml::from_str("include = [\"10.0.0.0/33\"]").unwrap();
        let err = ServeConfig::resolve(CliServe::default(), file).unwrap_err();
        assert!(
            format!("{err:#}").contains("config file: include"),
            "{err:#}"
        );

        let too_many = CliServe {
            include: (0..=MAX_NETWORKS as u32)
                .map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
                .collect(),
            ..Default::default()
        };
        let err = ServeConfig::resolve(too_many, FileConfig::default()).unwrap_err();
        assert!(
            err.to_string().contains("at most 1024 IPv4 networks"),
            "{err}"
        );
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
        let c = ServeConfig::resolve(CliServe::default(), FileConfig::default()).unwrap();
        assert_eq!(c.cgroups, vec!["frametap"]);
        assert_eq!(c.ports, BTreeSet::from([80, 443]));
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(!c.host_wide());
    }

    #[test]
    fn file_then_cli_precedence() {
        let file: FileConfig = toml::from_str(
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
        let c = ServeConfig::resolve(CliServe::default(), file).unwrap();
        assert_eq!(c.cgroups, vec!["/", "svc/web"]);
        assert!(c.host_wide());
        assert_eq!(c.ports, BTreeSet::from([8443]));
        assert_eq!(c.exclude, vec!["10.9.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(c.listen.to_string(), "127.0.0.2:16000");
        assert_eq!(c.log_format, LogFormat::Json);

        let file: FileConfig =
            toml::from_str("ports = [8443]\nlisten = \"127.0.0.2:16000\"").unwrap();
        let cli = CliServe {
            ports: vec!["80".parse().unwrap()],
            listen: Some("127.0.0.1:15002".parse().unwrap()),
            ..Default::default()
        };
        let c = ServeConfig::resolve(cli, file).unwrap();
        assert_eq!(c.ports, BTreeSet::from([80]));
        assert_eq!(c.listen.port(), 15002);
    }

    #[test]
    fn file_errors_are_reported() {
        assert!(toml::from_str::<FileConfig>("prots = [80]").is_err());
        let file: FileConfig = toml::from_str("ports = [0]").unwrap();
        let err = ServeConfig::resolve(CliServe::default(), file).unwrap_err();
        assert!(format!("{err:#}").contains("not a TCP port"), "{err:#}");
        let file: FileConfig = toml::from_str("exclude = [\"10.0.0.0/99\"]").unwrap();
        assert!(ServeConfig::resolve(CliServe::default(), file).is_err());
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
    }

    #[test]
    fn rules_from_file_are_compiled_before_anything_starts() {
        let file: FileConfig = toml::from_str(
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
        let c = ServeConfig::resolve(CliServe::default(), file).unwrap();
        assert_eq!(c.rules.len(), 2);
        let file: FileConfig =
            toml::from_str("[[rules]]\nregex = \"(\"\naction = { kind = \"drop\" }\n").unwrap();
        let err = ServeConfig::resolve(CliServe::default(), file).unwrap_err();
        assert!(
            format!("{err:#}").contains("rule 1 in the config file"),
            "{err:#}"
        );
        assert!(toml::from_str::<FileConfig>("[[rules]]\nation = 1\n").is_err());
    }

    #[test]
    fn interception_settings_from_file() {
        let file: FileConfig = toml::from_str(
            r#"
            upstream-ca = ["/etc/ssl/private-ca.pem"]
            passthrough = ["*.bank.test"]
            max-frame-payload = "64KiB"
            retention-max-age = "7d"
            retention-max-size = "10GiB"
            "#,
        )
        .unwrap();
        let c = ServeConfig::resolve(CliServe::default(), file).unwrap();
        assert_eq!(
            c.upstream_ca,
            vec![PathBuf::from("/etc/ssl/private-ca.pem")]
        );
        assert_eq!(c.passthrough, vec!["*.bank.test"]);
        assert_eq!(c.max_frame_payload, 64 * 1024);
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
            let cli = CliServe {
                listen: Some(bad.parse().unwrap()),
                ..Default::default()
            };
            assert!(
                ServeConfig::resolve(cli, FileConfig::default()).is_err(),
                "{bad}"
            );
        }
    }
}
