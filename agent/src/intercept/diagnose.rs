//! TLS handshake failures in plain words, with what to do about them: for the 502
//! body a client gets, the recorded error and the log line.
//!
//! Two sides fail differently. The upstream leg fails when the real server's
//! certificate does not verify (a private CA, a self-signed or expired certificate)
//! or the server refuses the handshake; the client leg fails when the captured
//! application does not trust the frametap CA (it answers the minted certificate with
//! an alert, or just hangs up). Pure functions of the error: no I/O.
use std::{fmt::Write as _, io, net::SocketAddr, path::Path};

use rustls::{AlertDescription, CertificateError, Error as TlsError};

/// The server a connection was meant for, as the messages name it.
#[derive(Clone, Debug)]
pub struct Upstream<'a> {
    pub sni: Option<&'a str>,
    pub addr: SocketAddr,
}

impl Upstream<'_> {
    /// `name (ip:port)` with SNI, `ip:port` without.
    pub fn label(&self) -> String {
        match self.sni {
            Some(name) => format!("{name} ({})", self.addr),
            None => self.addr.to_string(),
        }
    }

    /// What to pass to `--passthrough` for this server.
    pub fn passthrough_arg(&self) -> String {
        match self.sni {
            Some(name) => name.to_string(),
            None => self.addr.ip().to_string(),
        }
    }
}

/// What kind of upstream failure it was: it decides the advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamKind {
    /// The server's certificate chains to no CA frametap trusts.
    UntrustedIssuer,
    /// Another certificate problem (name, validity period, purpose, revocation).
    Certificate,
    /// The server accepts none of the application protocols offered.
    NoCommonProtocol,
    /// The server refused or broke the handshake for another reason.
    Handshake,
}

/// Why the upstream handshake failed, and what fixes it.
#[derive(Clone, Debug)]
pub struct UpstreamFailure {
    pub kind: UpstreamKind,
    /// The first line: who, and why in plain words.
    pub summary: String,
    /// One line per fix, best first.
    pub fixes: Vec<String>,
}

impl UpstreamFailure {
    /// The text of the 502 body: one line each.
    pub fn body(&self) -> String {
        let mut body = format!("frametap: {}\n", self.summary);
        for fix in &self.fixes {
            let _ = writeln!(body, "{fix}");
        }
        body
    }

    /// One line, for the recorded error and the log.
    pub fn one_line(&self) -> String {
        let mut line = self.summary.clone();
        for fix in &self.fixes {
            line.push(' ');
            line.push_str(fix);
        }
        line
    }
}

/// The rustls error inside an I/O error from tokio-rustls, if that is what it is.
fn tls_error(err: &io::Error) -> Option<&TlsError> {
    err.get_ref()?.downcast_ref::<TlsError>()
}

/// The peer hung up (or reset) in the middle of the handshake.
fn hung_up(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Whether the server refused every application protocol offered (TLS alert
/// `no_application_protocol`).
pub fn is_no_common_protocol(err: &io::Error) -> bool {
    matches!(
        tls_error(err),
        Some(TlsError::AlertReceived(
            AlertDescription::NoApplicationProtocol
        ))
    )
}

/// Explains an upstream handshake failure. `offered` is the ALPN list frametap sent.
pub fn upstream_failure(
    err: &io::Error,
    upstream: &Upstream<'_>,
    offered: &[String],
) -> UpstreamFailure {
    let host = upstream.label();
    let pass = upstream.passthrough_arg();
    let (kind, why) = match tls_error(err) {
        Some(TlsError::InvalidCertificate(cert)) => certificate(cert),
        Some(TlsError::AlertReceived(AlertDescription::NoApplicationProtocol)) => (
            UpstreamKind::NoCommonProtocol,
            format!(
                "the server accepts none of the application protocols offered ({}) (alert NoApplicationProtocol)",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            ),
        ),
        Some(TlsError::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown),
        )) => (
            UpstreamKind::Handshake,
            format!(
                "the server wants a client certificate (mutual TLS), which frametap cannot present (alert {alert:?})"
            ),
        ),
        Some(TlsError::AlertReceived(
            alert @ (AlertDescription::HandshakeFailure
            | AlertDescription::ProtocolVersion
            | AlertDescription::InsufficientSecurity),
        )) => (
            UpstreamKind::Handshake,
            format!(
                "the server refused the handshake (alert {alert:?}: no TLS version or cipher suite in \
                 common, or it wants a client certificate)"
            ),
        ),
        Some(TlsError::AlertReceived(alert)) => (
            UpstreamKind::Handshake,
            format!("the server refused the handshake (alert {alert:?})"),
        ),
        Some(TlsError::PeerIncompatible(why)) => (
            UpstreamKind::Handshake,
            format!("the server's TLS is incompatible with frametap's ({why:?})"),
        ),
        Some(other) => (UpstreamKind::Handshake, format!("TLS error: {other}")),
        None if hung_up(err) => (
            UpstreamKind::Handshake,
            format!("the server closed the connection during the TLS handshake ({err})"),
        ),
        None => (UpstreamKind::Handshake, err.to_string()),
    };
    let mut fixes = Vec::new();
    if kind == UpstreamKind::UntrustedIssuer {
        fixes.push(
            "If this server uses a private CA, start frametap-agent with --upstream-ca <that CA's PEM file>."
                .to_string(),
        );
    }
    fixes.push(format!(
        "If the application pins this server's certificate, or must not be intercepted, add --passthrough {pass} to relay it untouched."
    ));
    if matches!(
        kind,
        UpstreamKind::UntrustedIssuer | UpstreamKind::Certificate
    ) {
        fixes.push(
            "Only as a last resort: --insecure-upstream turns off certificate verification for every server (dangerous)."
                .to_string(),
        );
    }
    UpstreamFailure {
        kind,
        summary: format!("upstream TLS failed for {host}: {why}."),
        fixes,
    }
}

fn certificate(err: &CertificateError) -> (UpstreamKind, String) {
    use CertificateError as C;
    match err {
        C::UnknownIssuer => (
            UpstreamKind::UntrustedIssuer,
            "its certificate is issued by a certificate authority frametap does not trust \
             (UnknownIssuer: a private CA, or a self-signed certificate)"
                .into(),
        ),
        C::BadSignature => (
            UpstreamKind::UntrustedIssuer,
            "its certificate's signature does not verify with any CA frametap trusts \
             (BadSignature: another CA of the same name?)"
                .into(),
        ),
        C::NotValidForName => (
            UpstreamKind::Certificate,
            "its certificate is not valid for the name the client asked for (NotValidForName)"
                .into(),
        ),
        C::NotValidForNameContext {
            expected,
            presented,
        } => (
            UpstreamKind::Certificate,
            format!(
                "its certificate is not valid for {} but for {} (NotValidForName)",
                expected.to_str(),
                if presented.is_empty() {
                    "no name".to_string()
                } else {
                    presented.join(", ")
                }
            ),
        ),
        C::Expired | C::ExpiredContext { .. } => (
            UpstreamKind::Certificate,
            "its certificate has expired (Expired)".into(),
        ),
        C::NotValidYet | C::NotValidYetContext { .. } => (
            UpstreamKind::Certificate,
            "its certificate is not valid yet (NotValidYet: check this host's clock)".into(),
        ),
        C::Revoked => (
            UpstreamKind::Certificate,
            "its certificate is revoked (Revoked)".into(),
        ),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => (
            UpstreamKind::Certificate,
            "its certificate is not meant for TLS servers (InvalidPurpose)".into(),
        ),
        other => (
            UpstreamKind::Certificate,
            format!("its certificate was refused ({other})"),
        ),
    }
}

/// Why the client leg's handshake failed.
#[derive(Clone, Debug)]
pub struct ClientFailure {
    /// The client (most likely) does not trust the frametap CA.
    pub distrusts_ca: bool,
    /// One line, for the record and the log.
    pub text: String,
}

/// Explains a failed client-leg handshake: most often the client does not trust the
/// frametap CA, which it says with an alert, or by hanging up right after it got the
/// certificate. `host` names the certificate's subject; `ca` is the CA file to install.
pub fn client_failure(err: &io::Error, host: &str, ca: &Path) -> ClientFailure {
    let how = match tls_error(err) {
        Some(TlsError::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::DecryptError),
        )) => Some(format!(
            "it answered the certificate for {host} with alert {alert:?}"
        )),
        None if hung_up(err) => Some(format!(
            "it closed the connection right after receiving the certificate for {host}"
        )),
        _ => None,
    };
    match how {
        Some(how) => ClientFailure {
            distrusts_ca: true,
            text: format!(
                "client TLS handshake failed: the client does not trust the frametap CA ({how}): \
                 install {} (see `frametap-agent ca`) or add the host to --passthrough",
                ca.display()
            ),
        },
        None => ClientFailure {
            distrusts_ca: false,
            text: format!("client TLS handshake failed: {err}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(e: TlsError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    fn upstream() -> Upstream<'static> {
        Upstream {
            sni: Some("chat.internal"),
            addr: "10.1.2.3:8443".parse().unwrap(),
        }
    }

    #[test]
    fn a_private_ca_names_the_host_the_reason_and_the_fixes_in_order() {
        let f = upstream_failure(
            &tls(TlsError::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
            &upstream(),
            &["http/1.1".into()],
        );
        assert_eq!(f.kind, UpstreamKind::UntrustedIssuer);
        let body = f.body();
        let lines: Vec<&str> = body.lines().collect();
        assert!(
            lines[0].starts_with("frametap: upstream TLS failed for chat.internal (10.1.2.3:8443): its certificate is issued by a certificate authority frametap does not trust"),
            "{body}"
        );
        assert!(lines[1].contains("--upstream-ca"), "{body}");
        assert!(lines[2].contains("--passthrough chat.internal"), "{body}");
        assert!(lines[3].contains("--insecure-upstream") && lines[3].contains("last resort"));
        assert_eq!(lines.len(), 4);
        let line = f.one_line();
        assert!(
            !line.contains('\n')
                && line.contains("UnknownIssuer")
                && line.contains("--upstream-ca")
        );
    }

    #[test]
    fn other_upstream_failures_get_only_the_fixes_that_apply() {
        let no_sni = Upstream {
            sni: None,
            addr: "10.1.2.3:443".parse().unwrap(),
        };
        let f = upstream_failure(
            &tls(TlsError::AlertReceived(
                AlertDescription::NoApplicationProtocol,
            )),
            &no_sni,
            &["h2".into(), "http/1.1".into()],
        );
        assert_eq!(f.kind, UpstreamKind::NoCommonProtocol);
        assert!(f.summary.contains("10.1.2.3:443") && f.summary.contains("(h2, http/1.1)"));
        assert_eq!(f.fixes.len(), 1);
        assert!(
            f.fixes[0].contains("--passthrough 10.1.2.3 "),
            "{:?}",
            f.fixes
        );
        assert!(is_no_common_protocol(&tls(TlsError::AlertReceived(
            AlertDescription::NoApplicationProtocol
        ))));

        let expired = upstream_failure(
            &tls(TlsError::InvalidCertificate(CertificateError::Expired)),
            &upstream(),
            &[],
        );
        assert_eq!(expired.kind, UpstreamKind::Certificate);
        assert!(expired.summary.contains("expired"));
        assert!(!expired.one_line().contains("--upstream-ca"));
        assert!(expired.one_line().contains("--insecure-upstream"));

        let hung_up = upstream_failure(
            &io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"),
            &upstream(),
            &[],
        );
        assert!(
            hung_up.summary.contains("closed the connection"),
            "{}",
            hung_up.summary
        );
        assert!(!hung_up.one_line().contains("--insecure-upstream"));
    }

    #[test]
    fn a_client_that_distrusts_the_ca_is_told_what_to_install() {
        let ca = Path::new("/var/lib/frametap/ca.pem");
        for err in [
            tls(TlsError::AlertReceived(AlertDescription::UnknownCA)),
            tls(TlsError::AlertReceived(AlertDescription::BadCertificate)),
            tls(TlsError::AlertReceived(
                AlertDescription::CertificateUnknown,
            )),
            tls(TlsError::AlertReceived(AlertDescription::DecryptError)),
            io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"),
            io::Error::from(io::ErrorKind::ConnectionReset),
        ] {
            let f = client_failure(&err, "chat.internal", ca);
            assert!(f.distrusts_ca, "{err}");
            assert!(
                f.text.starts_with(
                    "client TLS handshake failed: the client does not trust the frametap CA"
                ) && f
                    .text
                    .contains("install /var/lib/frametap/ca.pem (see `frametap-agent ca`)")
                    && f.text.contains("--passthrough"),
                "{}",
                f.text
            );
        }
        let garbage = client_failure(&tls(TlsError::DecryptError), "chat.internal", ca);
        assert!(!garbage.distrusts_ca);
        assert!(garbage.text.starts_with("client TLS handshake failed: "));
    }
}
