//! The physical floor of relaying an echoed message through a TLS-terminating
//! proxy: the CPU that two TLS decryptions and two encryptions of its bytes cost
//! with the agent's own rustls provider, plus one copy of the payload per
//! direction. Measured in this process on one thread, between a client and a
//! server connection joined by memory, so no socket or scheduler is counted.
use std::{
    io::{Read as _, Write as _},
    sync::Arc,
};

use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
};

/// CPU time of this thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A client and a server connection past their handshake, with the agent's
/// provider on both ends (the suite they agree on is the one the agent's legs use
/// with peers of the same defaults).
fn connected_pair() -> anyhow::Result<(ClientConnection, ServerConnection)> {
    let provider = frametap_agent::tls::provider();
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["floor.test".to_string()])?.self_signed(&key)?;
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone())?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut c = ClientConnection::new(Arc::new(client), ServerName::try_from("floor.test")?)?;
    let mut s = ServerConnection::new(Arc::new(server))?;
    let mut wire = Vec::new();
    while c.is_handshaking() || s.is_handshaking() {
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire)?;
        }
        s.read_tls(&mut wire.as_slice())?;
        s.process_new_packets()?;
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire)?;
        }
        c.read_tls(&mut wire.as_slice())?;
        c.process_new_packets()?;
    }
    Ok((c, s))
}

/// Moves `payload` from `from` to `to` through TLS records and copies it once more.
fn relay(
    from: &mut rustls::Connection,
    to: &mut rustls::Connection,
    payload: &[u8],
    wire: &mut Vec<u8>,
    plain: &mut [u8],
    copy: &mut [u8],
) -> anyhow::Result<()> {
    from.writer().write_all(payload)?;
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire)?;
    }
    let mut rest = wire.as_slice();
    let mut got = 0;
    while got < payload.len() {
        if !rest.is_empty() {
            to.read_tls(&mut rest)?;
        }
        to.process_new_packets()?;
        // rustls takes at most 4 KiB per read_tls: no plaintext until a record is whole.
        match to.reader().read(&mut plain[got..]) {
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if rest.is_empty() && got < payload.len() && !to.wants_read() {
            anyhow::bail!("the floor measurement lost bytes in rustls");
        }
    }
    copy.copy_from_slice(plain);
    Ok(())
}

pub struct Floor {
    /// CPU seconds per echoed message (both directions).
    pub per_echo: f64,
    pub suite: String,
}

/// The floor for echoing `size`-byte messages, measured for at least `budget`
/// CPU seconds.
pub fn per_echo(size: usize, budget: f64) -> anyhow::Result<Floor> {
    let (c, s) = connected_pair()?;
    let suite = c
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let (mut c, mut s) = (rustls::Connection::from(c), rustls::Connection::from(s));
    // A whole message is handed over at once, as the agent's reads of up to 64 KiB are.
    c.set_buffer_limit(None);
    s.set_buffer_limit(None);
    let payload = vec![0x5a; size];
    let (mut wire, mut plain, mut copy) = (Vec::new(), vec![0; size], vec![0; size]);
    let mut echo = || -> anyhow::Result<()> {
        relay(&mut c, &mut s, &payload, &mut wire, &mut plain, &mut copy)?;
        relay(&mut s, &mut c, &payload, &mut wire, &mut plain, &mut copy)
    };
    // Warm the buffers and caches first.
    for _ in 0..10 {
        echo()?;
    }
    let started = thread_cpu_seconds();
    let mut echoes = 0u64;
    while thread_cpu_seconds() - started < budget {
        for _ in 0..16 {
            echo()?;
        }
        echoes += 16;
    }
    Ok(Floor {
        per_echo: (thread_cpu_seconds() - started) / echoes as f64,
        suite,
    })
}

/// CPU seconds per echoed message of `size` bytes that writing both directions'
/// payloads into new page-cache pages of a file in `dir` costs (what a write-ahead
/// log on that filesystem must at least pay), measured for at least `budget` CPU
/// seconds. Files are rotated and deleted every 8 MiB, as the agent's WAL files
/// are, so the pages written are fresh ones.
pub fn page_cache_per_echo(dir: &std::path::Path, size: usize, budget: f64) -> anyhow::Result<f64> {
    const FILE_BYTES: usize = 8 << 20;
    let payload = vec![0x5a; size];
    let scratch = tempfile::tempdir_in(dir)?;
    let mut file_no = 0u64;
    let open_next = |n: &mut u64| -> anyhow::Result<std::fs::File> {
        let path = scratch.path().join(format!("log-{n}"));
        let _ = std::fs::remove_file(scratch.path().join(format!("log-{}", n.wrapping_sub(2))));
        *n += 1;
        Ok(std::fs::File::create(path)?)
    };
    let mut file = open_next(&mut file_no)?;
    let mut written = 0usize;
    let started = thread_cpu_seconds();
    let mut echoes = 0u64;
    while thread_cpu_seconds() - started < budget {
        for _ in 0..2 {
            file.write_all(&payload)?;
            written += size;
            if written >= FILE_BYTES {
                file = open_next(&mut file_no)?;
                written = 0;
            }
        }
        echoes += 1;
    }
    Ok((thread_cpu_seconds() - started) / echoes as f64)
}

/// CPU seconds per byte of writing into memory the first time after it was mapped,
/// and of writing into the same memory again: in a VM whose host backs guest pages
/// on first touch (and takes back what the guest reports free), the first is what
/// filling fresh page-cache pages for a log costs.
pub fn first_touch_per_byte() -> anyhow::Result<(f64, f64)> {
    const BYTES: usize = 256 << 20;
    // SAFETY: a private anonymous mapping of our own, unmapped below.
    let region = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if region == libc::MAP_FAILED {
        anyhow::bail!("mmap: {}", std::io::Error::last_os_error());
    }
    let timed = |value: u8| {
        let started = thread_cpu_seconds();
        // SAFETY: the whole mapping is ours and writable.
        unsafe { std::ptr::write_bytes(region.cast::<u8>(), value, BYTES) };
        (thread_cpu_seconds() - started) / BYTES as f64
    };
    let first = timed(1);
    let again = timed(2);
    // SAFETY: unmapping what was mapped above, no reference to it is left.
    unsafe { libc::munmap(region, BYTES) };
    Ok((first, again))
}
