//! TLS ClientHello sniffing: is a new connection TLS at all, and which server name
//! (SNI) and application protocols (ALPN) is the client asking for?
//!
//! The agent calls [`sniff`] with everything the client has sent so far, until the
//! answer is something other than [`Sniff::NeedMore`]. The function keeps no state:
//! calling it again with a longer buffer is how more bytes are fed in. It only reads
//! the records that carry the ClientHello (RFC 8446 sections 4.1.2 and 5.1,
//! RFC 6066 section 3, RFC 7301 section 3.1) and never looks past them.

/// Largest ClientHello accepted, counted as the bytes of the TLS records carrying it.
/// Real ones are well below 2 KiB (post-quantum key shares included); anything this
/// big is hostile, and the caller has to buffer it while waiting.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// TLS record header: content type, legacy version (2 bytes), length (2 bytes).
const RECORD_HEADER_LEN: usize = 5;
/// RFC 8446 section 5.1: a plaintext record carries at most 2^14 bytes.
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const RECORD_VERSION_MAJOR: u8 = 0x03;
/// Handshake header: message type (1 byte), length (3 bytes).
const HANDSHAKE_HEADER_LEN: usize = 4;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXTENSION_SERVER_NAME: u16 = 0;
const EXTENSION_ALPN: u16 = 16;
const SERVER_NAME_TYPE_HOST_NAME: u8 = 0;
/// RFC 8446 section 4.1.2: `legacy_session_id<0..32>`.
const MAX_SESSION_ID_LEN: usize = 32;
const RANDOM_LEN: usize = 32;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// So far a plausible ClientHello; call again with more bytes.
    NeedMore,
    /// The bytes cannot be the start of a TLS handshake record.
    NotTls,
    /// A complete ClientHello.
    Hello(ClientHello),
    /// TLS handshake records that do not hold a valid ClientHello; the text says why.
    Malformed(&'static str),
}

/// The parts of a ClientHello the agent needs to decide how to handle a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, if the client sent one.
    pub sni: Option<String>,
    /// The protocols of the ALPN extension in the client's order of preference
    /// (empty without the extension).
    pub alpn: Vec<Vec<u8>>,
    /// Bytes of the TLS records that carried the ClientHello, record headers
    /// included: the connection's bytes from this offset on come after the hello.
    pub hello_len: usize,
    /// `legacy_version` of the hello (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
}

/// Looks at the first bytes a client sent.
///
/// [`Sniff::NotTls`] as soon as the bytes cannot be a TLS handshake record (first
/// byte 0x16, version major 0x03); [`Sniff::NeedMore`] until the whole ClientHello
/// has arrived (it may span several handshake records); [`Sniff::Malformed`] for a
/// TLS record that is not a valid ClientHello or is larger than
/// [`MAX_CLIENT_HELLO`]. Once the answer is not `NeedMore`, longer buffers with the
/// same beginning give the same answer.
pub fn sniff(buf: &[u8]) -> Sniff {
    match buf {
        [] | [CONTENT_TYPE_HANDSHAKE] => return Sniff::NeedMore,
        [CONTENT_TYPE_HANDSHAKE, RECORD_VERSION_MAJOR, ..] => {}
        _ => return Sniff::NotTls,
    }
    // The handshake message, reassembled only when it spans records; a hello in a
    // single record (the usual case) is parsed where it lies.
    let mut joined: Vec<u8> = Vec::new();
    let mut offset = 0;
    loop {
        let record = &buf[offset..];
        match record.first() {
            None => return Sniff::NeedMore,
            Some(&CONTENT_TYPE_HANDSHAKE) => {}
            Some(_) => {
                return Sniff::Malformed("ClientHello interrupted by a non-handshake record");
            }
        }
        if record
            .get(1)
            .is_some_and(|&major| major != RECORD_VERSION_MAJOR)
        {
            return Sniff::Malformed("handshake record with a version other than 3.x");
        }
        let Some(header) = record.get(..RECORD_HEADER_LEN) else {
            return Sniff::NeedMore;
        };
        let payload_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if payload_len == 0 {
            return Sniff::Malformed("empty handshake record");
        }
        if payload_len > MAX_RECORD_PAYLOAD {
            return Sniff::Malformed("handshake record longer than 2^14 bytes");
        }
        let record_end = offset + RECORD_HEADER_LEN + payload_len;
        if record_end > MAX_CLIENT_HELLO {
            return Sniff::Malformed("ClientHello larger than MAX_CLIENT_HELLO");
        }
        let available =
            &record[RECORD_HEADER_LEN..record.len().min(RECORD_HEADER_LEN + payload_len)];
        let record_complete = available.len() == payload_len;
        let message: &[u8] = if offset == 0 {
            available
        } else {
            joined.extend_from_slice(available);
            &joined
        };
        match check_handshake_header(message) {
            Err(reason) => return Sniff::Malformed(reason),
            Ok(Some(message_len)) if record_complete && message.len() >= message_len => {
                return match parse_client_hello(&message[HANDSHAKE_HEADER_LEN..message_len]) {
                    Ok((sni, alpn, legacy_version)) => Sniff::Hello(ClientHello {
                        sni,
                        alpn,
                        hello_len: record_end,
                        legacy_version,
                    }),
                    Err(reason) => Sniff::Malformed(reason),
                };
            }
            Ok(_) => {}
        }
        if !record_complete {
            return Sniff::NeedMore;
        }
        if offset == 0 {
            joined.extend_from_slice(available);
        }
        offset = record_end;
    }
}

/// Checks as much of the handshake header as has arrived; returns the length of the
/// whole handshake message (header included) once it is known.
fn check_handshake_header(message: &[u8]) -> Result<Option<usize>, &'static str> {
    if message
        .first()
        .is_some_and(|&kind| kind != HANDSHAKE_CLIENT_HELLO)
    {
        return Err("first handshake message is not a ClientHello");
    }
    let Some(&[_, a, b, c]) = message.get(..HANDSHAKE_HEADER_LEN) else {
        return Ok(None);
    };
    let body_len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    let message_len = HANDSHAKE_HEADER_LEN + body_len;
    // Every record adds a header, so a message this long cannot fit the limit.
    if message_len > MAX_CLIENT_HELLO - RECORD_HEADER_LEN {
        return Err("ClientHello larger than MAX_CLIENT_HELLO");
    }
    Ok(Some(message_len))
}

type HelloFields = (Option<String>, Vec<Vec<u8>>, u16);

/// Parses the body of a ClientHello handshake message.
fn parse_client_hello(body: &[u8]) -> Result<HelloFields, &'static str> {
    let mut reader = Reader::new(body);
    let legacy_version = reader
        .u16()
        .ok_or("ClientHello truncated in legacy_version")?;
    reader
        .take(RANDOM_LEN)
        .ok_or("ClientHello truncated in random")?;
    let session_id = reader
        .u8_prefixed()
        .ok_or("ClientHello truncated in legacy_session_id")?;
    if session_id.len() > MAX_SESSION_ID_LEN {
        return Err("legacy_session_id longer than 32 bytes");
    }
    let cipher_suites = reader
        .u16_prefixed()
        .ok_or("ClientHello truncated in cipher_suites")?;
    if cipher_suites.is_empty() || cipher_suites.len() % 2 != 0 {
        return Err("cipher_suites is empty or has an odd length");
    }
    let compression = reader
        .u8_prefixed()
        .ok_or("ClientHello truncated in compression methods")?;
    if compression.is_empty() {
        return Err("no compression methods");
    }
    let mut sni = None;
    let mut alpn = Vec::new();
    // Hellos from before TLS 1.2 may end here, without an extensions block.
    if reader.is_empty() {
        return Ok((sni, alpn, legacy_version));
    }
    let extensions = reader
        .u16_prefixed()
        .ok_or("ClientHello truncated in extensions")?;
    if !reader.is_empty() {
        return Err("bytes after the ClientHello extensions");
    }
    let mut extensions = Reader::new(extensions);
    let (mut seen_server_name, mut seen_alpn) = (false, false);
    while !extensions.is_empty() {
        let kind = extensions.u16().ok_or("extension truncated in its type")?;
        let data = extensions
            .u16_prefixed()
            .ok_or("extension truncated in its data")?;
        match kind {
            EXTENSION_SERVER_NAME => {
                if std::mem::replace(&mut seen_server_name, true) {
                    return Err("duplicate server_name extension");
                }
                sni = parse_server_name(data)?;
            }
            EXTENSION_ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Err("duplicate ALPN extension");
                }
                alpn = parse_alpn(data)?;
            }
            _ => {}
        }
    }
    Ok((sni, alpn, legacy_version))
}

/// Parses the server_name extension (RFC 6066 section 3) of a ClientHello and
/// returns its host name.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    let mut reader = Reader::new(data);
    let list = reader.u16_prefixed().ok_or("server_name list truncated")?;
    if !reader.is_empty() {
        return Err("bytes after the server_name list");
    }
    if list.is_empty() {
        return Err("empty server_name list");
    }
    let mut list = Reader::new(list);
    let mut host_name = None;
    while !list.is_empty() {
        let name_type = list.u8().ok_or("server_name entry truncated")?;
        let name = list.u16_prefixed().ok_or("server_name entry truncated")?;
        if name_type != SERVER_NAME_TYPE_HOST_NAME {
            continue;
        }
        if host_name.is_some() {
            return Err("more than one host_name in server_name");
        }
        // RFC 6066: an ASCII host name; spaces and control bytes have no place in it.
        if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
            return Err("server_name host_name is empty or not printable ASCII");
        }
        host_name = Some(name.iter().copied().map(char::from).collect());
    }
    Ok(host_name)
}

/// Parses the ALPN extension (RFC 7301 section 3.1): a non-empty list of non-empty
/// protocol names.
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut reader = Reader::new(data);
    let list = reader.u16_prefixed().ok_or("ALPN list truncated")?;
    if !reader.is_empty() {
        return Err("bytes after the ALPN list");
    }
    if list.is_empty() {
        return Err("empty ALPN list");
    }
    let mut list = Reader::new(list);
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let protocol = list.u8_prefixed().ok_or("ALPN protocol name truncated")?;
        if protocol.is_empty() {
            return Err("empty ALPN protocol name");
        }
        protocols.push(protocol.to_vec());
    }
    Ok(protocols)
}

/// Bounds-checked big-endian reads; every read returns `None` instead of running
/// past the end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.rest.len() {
            return None;
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|bytes| bytes[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .map(|bytes| u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn u8_prefixed(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A vector with a two-byte length prefix.
    fn u16_prefixed(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first flight of `openssl s_client -servername example.com -alpn h2,http/1.1`
    /// (OpenSSL 3.0), captured from a socket: one record, TLS 1.3 hello with an
    /// x25519 key share.
    const OPENSSL_HELLO: [u8; 335] = [
        0x16, 0x03, 0x01, 0x01, 0x4a, 0x01, 0x00, 0x01, 0x46, 0x03, 0x03, 0x78, 0x8a, 0x71, 0x15,
        0x87, 0x95, 0x2d, 0xf3, 0x17, 0xb2, 0x94, 0xea, 0xa6, 0x2d, 0xcd, 0xe5, 0xe7, 0x9c, 0x22,
        0x36, 0x48, 0xa4, 0x59, 0x4a, 0x2f, 0x38, 0xcb, 0x5e, 0xcf, 0xe0, 0x88, 0xf4, 0x20, 0x5b,
        0x8e, 0x50, 0x10, 0xd2, 0x46, 0x67, 0xd8, 0xe1, 0xd9, 0x14, 0x69, 0xe1, 0xe2, 0x71, 0xf9,
        0x1c, 0xb8, 0x6b, 0xdd, 0x91, 0x13, 0x4d, 0x32, 0x3c, 0x9e, 0xfc, 0x9a, 0x36, 0xec, 0xfb,
        0xc9, 0x00, 0x3e, 0x13, 0x02, 0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9f,
        0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa, 0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0xc0, 0x24, 0xc0,
        0x28, 0x00, 0x6b, 0xc0, 0x23, 0xc0, 0x27, 0x00, 0x67, 0xc0, 0x0a, 0xc0, 0x14, 0x00, 0x39,
        0xc0, 0x09, 0xc0, 0x13, 0x00, 0x33, 0x00, 0x9d, 0x00, 0x9c, 0x00, 0x3d, 0x00, 0x3c, 0x00,
        0x35, 0x00, 0x2f, 0x00, 0xff, 0x01, 0x00, 0x00, 0xbf, 0x00, 0x00, 0x00, 0x10, 0x00, 0x0e,
        0x00, 0x00, 0x0b, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x63, 0x6f, 0x6d, 0x00,
        0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x16, 0x00, 0x14, 0x00, 0x1d,
        0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01,
        0x03, 0x01, 0x04, 0x00, 0x23, 0x00, 0x00, 0x00, 0x10, 0x00, 0x0e, 0x00, 0x0c, 0x02, 0x68,
        0x32, 0x08, 0x68, 0x74, 0x74, 0x70, 0x2f, 0x31, 0x2e, 0x31, 0x00, 0x16, 0x00, 0x00, 0x00,
        0x17, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x2a, 0x00, 0x28, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03,
        0x08, 0x07, 0x08, 0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05, 0x08,
        0x06, 0x04, 0x01, 0x05, 0x01, 0x06, 0x01, 0x03, 0x03, 0x03, 0x01, 0x03, 0x02, 0x04, 0x02,
        0x05, 0x02, 0x06, 0x02, 0x00, 0x2b, 0x00, 0x09, 0x08, 0x03, 0x04, 0x03, 0x03, 0x03, 0x02,
        0x03, 0x01, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00,
        0x1d, 0x00, 0x20, 0x43, 0xf0, 0xc8, 0x1a, 0xdb, 0xa4, 0x5f, 0x3b, 0x1c, 0x44, 0x7f, 0x71,
        0xea, 0x46, 0x31, 0x1d, 0xdf, 0xff, 0x22, 0x38, 0x35, 0x46, 0x95, 0xb6, 0x0e, 0xbf, 0x3b,
        0xd0, 0x15, 0x34, 0x9e, 0x71,
    ];

    fn expect_hello(buf: &[u8]) -> ClientHello {
        match sniff(buf) {
            Sniff::Hello(hello) => hello,
            other => panic!("expected a ClientHello, got {other:?}"),
        }
    }

    fn with_len_u16(bytes: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(with_len_u16(data));
        out
    }

    fn server_name_extension(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![SERVER_NAME_TYPE_HOST_NAME];
        entry.extend(with_len_u16(name));
        extension(EXTENSION_SERVER_NAME, &with_len_u16(&entry))
    }

    fn alpn_extension(protocols: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for protocol in protocols {
            list.push(u8::try_from(protocol.len()).unwrap());
            list.extend_from_slice(protocol);
        }
        extension(EXTENSION_ALPN, &with_len_u16(&list))
    }

    /// A ClientHello body; `extensions: None` leaves the extensions block out.
    fn hello_body(extensions: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([0x5a; RANDOM_LEN]);
        body.push(0); // empty legacy_session_id
        body.extend(with_len_u16(&[0x13, 0x01, 0x00, 0x2f]));
        body.extend([1, 0]); // compression: null only
        if let Some(extensions) = extensions {
            body.extend(with_len_u16(extensions));
        }
        body
    }

    fn handshake_message(kind: u8, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut message = vec![kind, len[1], len[2], len[3]];
        message.extend_from_slice(body);
        message
    }

    /// Wraps `message` in handshake records, cutting it before each offset in `cuts`.
    fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&message.len())) {
            out.extend([CONTENT_TYPE_HANDSHAKE, 0x03, 0x01]);
            out.extend(with_len_u16(&message[start..end]));
            start = end;
        }
        out
    }

    /// Once `sniff` answers something other than NeedMore for a prefix, the whole
    /// buffer must get the same answer; and no prefix may panic.
    fn assert_prefixes_consistent(buf: &[u8]) {
        let full = sniff(buf);
        for end in 0..=buf.len() {
            let answer = sniff(&buf[..end]);
            if answer != Sniff::NeedMore {
                assert_eq!(answer, full, "prefix of {end} bytes decided differently");
            }
            if let Sniff::Hello(hello) = answer {
                assert!(hello.hello_len <= end);
            }
        }
    }

    #[test]
    fn real_openssl_hello_yields_sni_alpn_and_length() {
        let hello = expect_hello(&OPENSSL_HELLO);
        assert_eq!(hello.sni.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(hello.hello_len, OPENSSL_HELLO.len());
        assert_eq!(hello.legacy_version, 0x0303);
    }

    #[test]
    fn every_truncation_of_a_hello_needs_more() {
        for end in 0..OPENSSL_HELLO.len() {
            assert_eq!(sniff(&OPENSSL_HELLO[..end]), Sniff::NeedMore, "{end} bytes");
        }
    }

    #[test]
    fn bytes_after_the_hello_are_not_part_of_it() {
        let mut buf = OPENSSL_HELLO.to_vec();
        // A ChangeCipherSpec record and some application data follow.
        buf.extend([0x14, 0x03, 0x03, 0x00, 0x01, 0x01, 0x17, 0x03, 0x03]);
        let hello = expect_hello(&buf);
        assert_eq!(hello.hello_len, OPENSSL_HELLO.len());
        assert_eq!(hello.sni.as_deref(), Some("example.com"));
    }

    #[test]
    fn hand_built_hello_with_sni_and_alpn() {
        let mut extensions = server_name_extension(b"example.com");
        extensions.extend(extension(43, &[2, 0x03, 0x04])); // supported_versions: TLS 1.3
        extensions.extend(alpn_extension(&[b"h2", b"http/1.1"]));
        let buf = records(
            &handshake_message(HANDSHAKE_CLIENT_HELLO, &hello_body(Some(&extensions))),
            &[],
        );
        let hello = expect_hello(&buf);
        assert_eq!(hello.sni.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(hello.hello_len, buf.len());
        assert_prefixes_consistent(&buf);
    }

    #[test]
    fn hello_without_extensions() {
        let buf = records(
            &handshake_message(HANDSHAKE_CLIENT_HELLO, &hello_body(None)),
            &[],
        );
        assert_eq!(
            sniff(&buf),
            Sniff::Hello(ClientHello {
                sni: None,
                alpn: Vec::new(),
                hello_len: buf.len(),
                legacy_version: 0x0303,
            })
        );
        // An empty extensions block is just as valid.
        let buf = records(
            &handshake_message(HANDSHAKE_CLIENT_HELLO, &hello_body(Some(&[]))),
            &[],
        );
        let hello = expect_hello(&buf);
        assert_eq!((hello.sni, hello.alpn.len()), (None, 0));
    }

    #[test]
    fn hello_split_across_two_records() {
        let message = &OPENSSL_HELLO[RECORD_HEADER_LEN..];
        // Cuts inside the handshake header, inside the body, and just before its end.
        for cut in [1, 2, 3, 4, 5, 40, 150, message.len() - 1] {
            let buf = records(message, &[cut]);
            let hello = expect_hello(&buf);
            assert_eq!(hello.hello_len, buf.len(), "cut at {cut}");
            assert_eq!(hello.sni.as_deref(), Some("example.com"));
            assert_eq!(hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
            for end in 0..buf.len() {
                assert_eq!(
                    sniff(&buf[..end]),
                    Sniff::NeedMore,
                    "cut {cut}, {end} bytes"
                );
            }
        }
    }

    #[test]
    fn hello_spanning_many_records() {
        // A padding extension makes the hello larger than one record can carry.
        let mut extensions = extension(21, &vec![0; 20_000]);
        extensions.extend(server_name_extension(b"big.example"));
        let message = handshake_message(HANDSHAKE_CLIENT_HELLO, &hello_body(Some(&extensions)));
        let buf = records(&message, &[MAX_RECORD_PAYLOAD, 16_500, 16_501]);
        let hello = expect_hello(&buf);
        assert_eq!(hello.sni.as_deref(), Some("big.example"));
        assert_eq!(hello.hello_len, buf.len());
        assert_eq!(sniff(&buf[..buf.len() - 1]), Sniff::NeedMore);
    }

    #[test]
    fn other_protocols_are_not_tls() {
        assert_eq!(sniff(b""), Sniff::NeedMore);
        assert_eq!(sniff(&[0x16]), Sniff::NeedMore);
        assert_eq!(
            sniff(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
            Sniff::NotTls
        );
        assert_eq!(sniff(b"SSH-2.0-OpenSSH_9.6\r\n"), Sniff::NotTls);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Sniff::NotTls);
        // An SSLv2-style hello and a handshake byte followed by a non-3.x version.
        assert_eq!(sniff(&[0x80, 0x2e, 0x01, 0x03, 0x01]), Sniff::NotTls);
        assert_eq!(sniff(&[0x16, 0x02]), Sniff::NotTls);
        assert_eq!(sniff(&[0x17, 0x03, 0x03, 0x00, 0x10]), Sniff::NotTls);
    }

    #[test]
    fn invalid_records_are_malformed() {
        let hello_message = handshake_message(HANDSHAKE_CLIENT_HELLO, &hello_body(None));
        let server_hello = records(&handshake_message(0x02, &hello_body(None)), &[]);
        assert!(matches!(sniff(&server_hello[..6]), Sniff::Malformed(_)));

        assert!(matches!(
            sniff(&[0x16, 0x03, 0x01, 0x00, 0x00]),
            Sniff::Malformed(_)
        ));
        assert!(matches!(
            sniff(&[0x16, 0x03, 0x01, 0x40, 0x01]),
            Sniff::Malformed(_)
        ));

        // Second record is application data, not the rest of the hello.
        let mut interrupted = records(&hello_message[..10], &[]);
        interrupted.extend([0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
        assert!(matches!(sniff(&interrupted), Sniff::Malformed(_)));

        // A declared handshake length beyond the limit is refused before it arrives.
        let huge = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00];
        assert!(matches!(sniff(&huge), Sniff::Malformed(_)));
    }

    #[test]
    fn invalid_hello_bodies_are_malformed() {
        let malformed = |body: &[u8]| {
            let buf = records(&handshake_message(HANDSHAKE_CLIENT_HELLO, body), &[]);
            let answer = sniff(&buf);
            assert!(matches!(answer, Sniff::Malformed(_)), "{answer:?}");
            assert_prefixes_consistent(&buf);
        };
        let valid = hello_body(None);
        malformed(&valid[..10]); // truncated random
        let mut long_session_id = valid.clone();
        long_session_id[2 + RANDOM_LEN] = 33;
        long_session_id.splice(3 + RANDOM_LEN..3 + RANDOM_LEN, [0; 33]);
        malformed(&long_session_id);
        let mut extra = hello_body(Some(&[]));
        extra.push(0);
        malformed(&extra); // bytes after the extensions

        let mut overrun = server_name_extension(b"example.com");
        overrun[5] += 1; // server_name list claims one byte more than it has
        malformed(&hello_body(Some(&overrun)));
        malformed(&hello_body(Some(&server_name_extension(b"exa mple.com"))));
        malformed(&hello_body(Some(&server_name_extension(b""))));
        let mut twice = server_name_extension(b"a.example");
        twice.extend(server_name_extension(b"b.example"));
        malformed(&hello_body(Some(&twice)));
        malformed(&hello_body(Some(&alpn_extension(&[b"h2", b""]))));
        malformed(&hello_body(Some(&alpn_extension(&[]))));
        malformed(&hello_body(Some(&[0x00, 0x10, 0x00]))); // extension cut in its length
    }

    #[test]
    fn unknown_server_name_types_are_skipped() {
        let mut list = vec![7, 0, 2, b'x', b'y', SERVER_NAME_TYPE_HOST_NAME];
        list.extend(with_len_u16(b"example.org"));
        let extensions = extension(EXTENSION_SERVER_NAME, &with_len_u16(&list));
        let buf = records(
            &handshake_message(HANDSHAKE_CLIENT_HELLO, &hello_body(Some(&extensions))),
            &[],
        );
        assert_eq!(expect_hello(&buf).sni.as_deref(), Some("example.org"));
    }

    #[test]
    fn corrupted_hellos_never_panic_and_stay_consistent() {
        // Every byte of the real hello replaced by a few telling values.
        for position in 0..OPENSSL_HELLO.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut buf = OPENSSL_HELLO.to_vec();
                buf[position] = value;
                if let Sniff::Hello(hello) = sniff(&buf) {
                    assert!(hello.hello_len <= buf.len());
                }
            }
        }
        let mut buf = OPENSSL_HELLO.to_vec();
        buf[100] = 0xff;
        assert_prefixes_consistent(&buf);
        assert_prefixes_consistent(&OPENSSL_HELLO);
    }
}
