//! TLS interception: the agent's certificate authority, leaf certificates minted
//! per server name, and the rustls configurations of both legs.
//!
//! * Client leg: the agent is the server. Its certificate for `example.com` is a leaf
//!   signed by the frametap CA (ECDSA P-256), which the user trusts on the captured
//!   hosts. All leaves reuse one key pair (as mitmproxy does), so minting costs a
//!   signature only, and they are cached.
//! * Server leg: the agent is a client that verifies the real server against the
//!   system trust store (plus `--upstream-ca`), unless `--insecure-upstream`.
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{
        CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, pem::PemObject as _,
    },
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tracing::warn;

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// How many minted leaves are kept (per server name and ALPN choice).
pub const LEAF_CACHE_CAPACITY: usize = 1024;
const CA_VALIDITY_DAYS: i64 = 3650;
const LEAF_VALIDITY_DAYS: i64 = 30;
/// Leaves start a little in the past so clocks that lag behind still accept them.
const LEAF_BACKDATE: Duration = Duration::from_secs(3600);

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The frametap CA: loaded from the data dir, or created there on first start.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_path: PathBuf,
    cert_der: CertificateDer<'static>,
}

impl CertificateAuthority {
    pub fn load_or_create(data_dir: &Path, name: &str) -> anyhow::Result<Self> {
        let cert_path = data_dir.join(CA_CERT_FILE);
        let key_path = data_dir.join(CA_KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            return Self::load(&cert_path, &key_path);
        }
        frametap_store::data_dir::create(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "frametap");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key)?;
        // The key first, created 0600 from the start: it never exists with wider rights.
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, cert.pem())
            .with_context(|| format!("cannot write {}", cert_path.display()))?;
        // The certificate is public: captured applications, whoever runs them, read
        // it to trust the CA (whatever the umask).
        std::fs::set_permissions(
            &cert_path,
            std::fs::Permissions::from_mode(frametap_store::data_dir::PUBLIC_FILE_MODE),
        )
        .with_context(|| format!("cannot make {} readable", cert_path.display()))?;
        Self::load(&cert_path, &key_path)
    }

    fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read_to_string(cert_path).with_context(|| {
            format!(
                "cannot read the CA certificate {} (remove {} too to make a new CA)",
                cert_path.display(),
                key_path.display()
            )
        })?;
        let mode = std::fs::metadata(key_path)
            .with_context(|| format!("cannot read the CA key {}", key_path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "the CA key {} is readable by others (mode {:o}): run `chmod 600 {}`",
                key_path.display(),
                mode & 0o777,
                key_path.display()
            );
        }
        let key_pem = std::fs::read_to_string(key_path)?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .with_context(|| format!("{} is not a CA certificate", cert_path.display()))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .with_context(|| format!("{} holds no certificate", cert_path.display()))?;
        Ok(Self {
            issuer,
            cert_pem,
            cert_path: cert_path.to_path_buf(),
            cert_der,
        })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

/// Who a leaf certificate is for: a DNS name from SNI, or the IP address the client
/// connected to when it sent no SNI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LeafSubject {
    Dns(String),
    Ip(IpAddr),
}

impl LeafSubject {
    pub fn label(&self) -> String {
        match self {
            Self::Dns(d) => d.clone(),
            Self::Ip(ip) => ip.to_string(),
        }
    }
}

/// Mints and caches leaf certificates signed by the CA.
pub struct LeafMinter {
    ca: CertificateAuthority,
    leaf_key: KeyPair,
    signing_key: Arc<dyn rustls::sign::SigningKey>,
    cache: Mutex<LeafCache>,
}

struct LeafCache {
    map: HashMap<LeafSubject, Arc<CertifiedKey>>,
    order: VecDeque<LeafSubject>,
}

impl LeafMinter {
    pub fn new(ca: CertificateAuthority) -> anyhow::Result<Self> {
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signing_key = provider()
            .key_provider
            .load_private_key(der)
            .context("rustls cannot use the leaf key")?;
        Ok(Self {
            ca,
            leaf_key,
            signing_key,
            cache: Mutex::new(LeafCache {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        })
    }

    /// The certificate for `subject`, from the cache or freshly minted.
    pub fn leaf(&self, subject: &LeafSubject) -> anyhow::Result<Arc<CertifiedKey>> {
        if let Some(hit) = self.lock().map.get(subject) {
            return Ok(Arc::clone(hit));
        }
        let minted = Arc::new(self.mint(subject)?);
        let mut cache = self.lock();
        if !cache.map.contains_key(subject) {
            if cache.order.len() >= LEAF_CACHE_CAPACITY
                && let Some(oldest) = cache.order.pop_front()
            {
                cache.map.remove(&oldest);
            }
            cache.order.push_back(subject.clone());
            cache.map.insert(subject.clone(), Arc::clone(&minted));
        }
        Ok(minted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeafCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The CA certificate file that captured applications must trust.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca.cert_path
    }

    fn mint(&self, subject: &LeafSubject) -> anyhow::Result<CertifiedKey> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, subject.label());
        dn.push(DnType::OrganizationName, "frametap");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![match subject {
            LeafSubject::Dns(name) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .with_context(|| format!("{name:?} is not a DNS name"))?,
            ),
            LeafSubject::Ip(ip) => SanType::IpAddress(*ip),
        }];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now + time::Duration::days(LEAF_VALIDITY_DAYS);
        let serial: [u8; 16] = rand_serial();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&self.leaf_key, &self.ca.issuer)?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.ca.cert_der().clone()],
            Arc::clone(&self.signing_key),
        ))
    }
}

/// 16 random bytes (positive) for certificate serial numbers.
fn rand_serial() -> [u8; 16] {
    let mut s = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut s)
        .expect("system randomness");
    s[0] &= 0x7f;
    s
}

/// Serves one fixed certificate (the leaf minted for this connection).
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Client-leg configs by leaf subject and the ALPN protocol they select.
type ClientLegConfigs = HashMap<(LeafSubject, Option<&'static [u8]>), Arc<ServerConfig>>;

/// rustls configurations of both legs, shared by all connections.
pub struct TlsContext {
    pub minter: LeafMinter,
    upstream: Arc<ClientConfig>,
    upstream_http11: Arc<ClientConfig>,
    server_configs: Mutex<ClientLegConfigs>,
    key_log: Option<Arc<dyn rustls::KeyLog>>,
}

pub struct UpstreamTrust {
    pub extra_ca_files: Vec<PathBuf>,
    pub insecure: bool,
}

impl TlsContext {
    pub fn new(minter: LeafMinter, trust: &UpstreamTrust) -> anyhow::Result<Self> {
        // SSLKEYLOGFILE, as browsers and curl honour it: keys of both legs.
        let key_log: Option<Arc<dyn rustls::KeyLog>> = std::env::var_os("SSLKEYLOGFILE")
            .map(|_| Arc::new(rustls::KeyLogFile::new()) as Arc<dyn rustls::KeyLog>);
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let mut config = if trust.insecure {
            warn!(
                "--insecure-upstream: upstream certificates are NOT verified; anyone on the path can impersonate servers"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyServerCert(provider())))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(root_store(&trust.extra_ca_files)?)
                .with_no_client_auth()
        };
        if let Some(k) = &key_log {
            config.key_log = Arc::clone(k);
        }
        let mut http11 = config.clone();
        http11.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            minter,
            upstream: Arc::new(config),
            upstream_http11: Arc::new(http11),
            server_configs: Mutex::new(HashMap::new()),
            key_log,
        })
    }

    /// Client config for the upstream leg: offer http/1.1 only when the client offered ALPN.
    pub fn upstream_config(&self, alpn_http11: bool) -> Arc<ClientConfig> {
        Arc::clone(if alpn_http11 {
            &self.upstream_http11
        } else {
            &self.upstream
        })
    }

    /// Client config for the upstream leg offering exactly `alpn` (the client's own
    /// list, to learn what the server picks for it).
    pub fn upstream_config_offering(&self, alpn: &[Vec<u8>]) -> Arc<ClientConfig> {
        let mut config = (*self.upstream).clone();
        config.alpn_protocols = alpn.to_vec();
        Arc::new(config)
    }

    /// Server config for the client leg, presenting a leaf for `subject` and selecting
    /// `alpn` (`http/1.1` or `h2`: what the server selected) when the client offers it.
    pub fn client_leg_config(
        &self,
        subject: &LeafSubject,
        alpn: Option<&'static [u8]>,
    ) -> anyhow::Result<Arc<ServerConfig>> {
        let key = (subject.clone(), alpn);
        if let Some(c) = self.lock_configs().get(&key) {
            return Ok(Arc::clone(c));
        }
        let leaf = self.minter.leaf(subject)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(FixedCert(leaf)));
        config.alpn_protocols = alpn.into_iter().map(<[u8]>::to_vec).collect();
        if let Some(k) = &self.key_log {
            config.key_log = Arc::clone(k);
        }
        let config = Arc::new(config);
        let mut configs = self.lock_configs();
        if configs.len() >= LEAF_CACHE_CAPACITY {
            configs.clear();
        }
        configs.insert(key, Arc::clone(&config));
        Ok(config)
    }

    fn lock_configs(&self) -> std::sync::MutexGuard<'_, ClientLegConfigs> {
        self.server_configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// The name the upstream leg verifies: the client's SNI, else the IP it dialled.
pub fn upstream_server_name(subject: &LeafSubject) -> anyhow::Result<ServerName<'static>> {
    Ok(match subject {
        LeafSubject::Dns(d) => ServerName::try_from(d.clone())
            .with_context(|| format!("{d:?} is not a valid server name"))?,
        LeafSubject::Ip(ip) => ServerName::IpAddress((*ip).into()),
    })
}

fn root_store(extra: &[PathBuf]) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        warn!(error = %e, "problem reading the system trust store");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    for path in extra {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read --upstream-ca {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("--upstream-ca {} is not PEM", path.display()))?;
        if certs.is_empty() {
            bail!("--upstream-ca {} holds no certificate", path.display());
        }
        for c in certs {
            roots.add(c).with_context(|| {
                format!("--upstream-ca {}: unusable certificate", path.display())
            })?;
        }
    }
    if added == 0 && extra.is_empty() {
        warn!(
            "no trusted root certificates found: every upstream TLS server will be refused (install ca-certificates or pass --upstream-ca)"
        );
    }
    Ok(roots)
}

mod danger {
    use std::sync::Arc;

    use rustls::{
        DigitallySignedStruct, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
        pki_types::{CertificateDer, ServerName, UnixTime},
    };

    /// `--insecure-upstream`: accepts any certificate (signatures are still checked
    /// so the handshake itself is sound).
    #[derive(Debug)]
    pub struct AcceptAnyServerCert(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyServerCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier as _;

    use super::*;

    #[test]
    fn ca_is_created_once_with_a_private_key_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "frametap test CA").unwrap();
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let cert_mode = std::fs::metadata(dir.path().join(CA_CERT_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(cert_mode & 0o777, 0o644, "the certificate is public");
        let again = CertificateAuthority::load_or_create(dir.path(), "other name").unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem, "the CA is reused, not remade");
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_create(dir.path(), "t").unwrap();
        let key = dir.path().join(CA_KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = CertificateAuthority::load_or_create(dir.path(), "t")
            .err()
            .unwrap();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn leaves_verify_against_the_ca_and_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "t").unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let minter = LeafMinter::new(ca).unwrap();
        let subject = LeafSubject::Dns("ws.example.test".into());
        let a = minter.leaf(&subject).unwrap();
        let b = minter.leaf(&subject).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "second lookup is a cache hit");

        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for (subject, name) in [
            (subject, ServerName::try_from("ws.example.test").unwrap()),
            (
                LeafSubject::Ip("10.1.2.3".parse().unwrap()),
                ServerName::IpAddress("10.1.2.3".parse::<IpAddr>().unwrap().into()),
            ),
        ] {
            let leaf = minter.leaf(&subject).unwrap();
            verifier
                .verify_server_cert(&leaf.cert[0], &leaf.cert[1..], &name, &[], now)
                .unwrap_or_else(|e| panic!("{subject:?}: {e}"));
        }
        // A leaf for one name is no good for another.
        let leaf = minter.leaf(&LeafSubject::Dns("a.test".into())).unwrap();
        assert!(
            verifier
                .verify_server_cert(
                    &leaf.cert[0],
                    &leaf.cert[1..],
                    &ServerName::try_from("b.test").unwrap(),
                    &[],
                    now
                )
                .is_err()
        );
    }

    #[test]
    fn leaf_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let minter =
            LeafMinter::new(CertificateAuthority::load_or_create(dir.path(), "t").unwrap())
                .unwrap();
        for i in 0..LEAF_CACHE_CAPACITY + 10 {
            minter
                .leaf(&LeafSubject::Dns(format!("h{i}.test")))
                .unwrap();
        }
        assert_eq!(minter.lock().map.len(), LEAF_CACHE_CAPACITY);
        assert_eq!(minter.lock().order.len(), LEAF_CACHE_CAPACITY);
    }
}
