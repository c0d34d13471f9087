//! `--passthrough`: destinations relayed without interception (certificate-pinned
//! apps), by SNI name, `*.suffix`, or destination network.
use std::net::SocketAddr;

/// Hosts relayed without interception (certificate-pinned apps): exact names,
/// `*.suffix` wildcards, or CIDRs of the destination.
#[derive(Clone, Debug, Default)]
pub struct Passthrough {
    pub names: Vec<String>,
    pub networks: Vec<ipnet::IpNet>,
}

impl Passthrough {
    pub fn parse(items: &[String]) -> Result<Self, String> {
        let mut p = Self::default();
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if let Ok(net) = crate::config::parse_cidr(item) {
                p.networks.push(net);
            } else if item
                .trim_start_matches("*.")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                p.names.push(item.to_ascii_lowercase());
            } else {
                return Err(format!("{item:?} is not a host name, *.domain or CIDR"));
            }
        }
        Ok(p)
    }

    pub fn matches(&self, sni: Option<&str>, dst: SocketAddr) -> bool {
        if self.networks.iter().any(|n| n.contains(&dst.ip())) {
            return true;
        }
        let Some(sni) = sni.map(str::to_ascii_lowercase) else {
            return false;
        };
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => sni.ends_with(&format!(".{suffix}")),
            None => *n == sni,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_matching() {
        let p = Passthrough::parse(&[
            "pinned.example.com".into(),
            "*.bank.test".into(),
            "10.9.0.0/16".into(),
        ])
        .unwrap();
        let dst: SocketAddr = "10.1.1.1:443".parse().unwrap();
        assert!(p.matches(Some("pinned.example.com"), dst));
        assert!(p.matches(Some("API.Bank.test"), dst));
        assert!(!p.matches(Some("bank.test"), dst));
        assert!(!p.matches(Some("other.com"), dst));
        assert!(p.matches(None, "10.9.3.4:443".parse().unwrap()));
        assert!(Passthrough::parse(&["bad host!".into()]).is_err());
    }
}
