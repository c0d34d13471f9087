//! Content codings (RFC 9110 section 8.4): the agent stores bodies as they were
//! sent, Content-Encoding and all; the API undoes gzip, deflate and br for people
//! (the body endpoints by default, HAR's `text`). Decoding is best effort: a body
//! the agent stored only a prefix of decodes as far as it goes, and one that is not
//! what its header claims is shown as sent.

use std::io::{BufRead, BufReader, Read};

/// A coding the API can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// HTTP's "deflate": zlib-wrapped, though some servers send it raw.
    Deflate,
    Brotli,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }
}

/// The codings of a Content-Encoding value in the order they were applied
/// (`identity` left out); `Err(name)` for the first one the API cannot undo.
pub fn codings(content_encoding: Option<&str>) -> Result<Vec<Coding>, String> {
    let Some(value) = content_encoding else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.eq_ignore_ascii_case("identity"))
        .map(|name| match name.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            "br" => Ok(Coding::Brotli),
            _ => Err(name.to_owned()),
        })
        .collect()
}

/// Reads `raw` with `codings` undone, the last applied first.
pub fn decoder<'a>(
    raw: Box<dyn Read + Send + 'a>,
    codings: &[Coding],
) -> Box<dyn Read + Send + 'a> {
    codings
        .iter()
        .rev()
        .fold(raw, |inner, coding| match coding {
            Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
            Coding::Deflate => Box::new(Inflate::new(inner)),
            Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(inner, 16 * 1024)),
        })
}

/// `bytes` with `codings` undone, at most `limit` bytes of it (and whether there
/// was more); `None` when they do not decode at all. Decoding stops quietly at an
/// error after some output: a stored prefix of a compressed body ends that way.
pub fn decode(bytes: &[u8], codings: &[Coding], limit: usize) -> Option<(Vec<u8>, bool)> {
    if codings.is_empty() {
        let end = bytes.len().min(limit);
        return Some((bytes[..end].to_vec(), bytes.len() > limit));
    }
    let mut reader = decoder(Box::new(bytes), codings);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Some((out, false)),
            Ok(n) => {
                if out.len() + n > limit {
                    out.extend_from_slice(&buf[..limit - out.len()]);
                    return Some((out, true));
                }
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) if out.is_empty() => return None,
            Err(_) => return Some((out, false)),
        }
    }
}

/// HTTP deflate: zlib when the first two bytes are a zlib header, raw deflate
/// otherwise (decided on the first read).
enum Inflate<R: Read> {
    Undecided(Option<BufReader<R>>),
    Zlib(flate2::read::ZlibDecoder<BufReader<R>>),
    Raw(flate2::read::DeflateDecoder<BufReader<R>>),
}

impl<R: Read> Inflate<R> {
    fn new(inner: R) -> Self {
        Inflate::Undecided(Some(BufReader::new(inner)))
    }
}

impl<R: Read> Read for Inflate<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self {
                Inflate::Zlib(d) => return d.read(buf),
                Inflate::Raw(d) => return d.read(buf),
                Inflate::Undecided(inner) => {
                    let mut reader = inner.take().expect("decided once");
                    let head = reader.fill_buf()?;
                    let zlib = head.len() >= 2
                        && head[0] & 0x0f == 8
                        && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
                    *self = if zlib {
                        Inflate::Zlib(flate2::read::ZlibDecoder::new(reader))
                    } else {
                        Inflate::Raw(flate2::read::DeflateDecoder::new(reader))
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        brotli::BrotliCompress(&mut &data[..], &mut out, &Default::default()).unwrap();
        out
    }

    const TEXT: &[u8] = b"{\"greeting\":\"hello, hello, hello, hello\"}";

    #[test]
    fn content_encoding_lists_are_read_in_order() {
        assert_eq!(codings(None), Ok(vec![]));
        assert_eq!(codings(Some("identity")), Ok(vec![]));
        assert_eq!(
            codings(Some("deflate, GZIP ,br")),
            Ok(vec![Coding::Deflate, Coding::Gzip, Coding::Brotli])
        );
        assert_eq!(codings(Some("x-gzip")), Ok(vec![Coding::Gzip]));
        assert_eq!(codings(Some("gzip, zstd")), Err("zstd".into()));
    }

    #[test]
    fn every_coding_decodes() {
        for (coding, encoded) in [
            (Coding::Gzip, gzip(TEXT)),
            (Coding::Deflate, zlib(TEXT)),
            (Coding::Deflate, raw_deflate(TEXT)),
            (Coding::Brotli, brotli(TEXT)),
        ] {
            assert_eq!(
                decode(&encoded, &[coding], 1 << 20),
                Some((TEXT.to_vec(), false)),
                "{coding:?}"
            );
        }
        // Applied in order, undone in reverse.
        let twice = gzip(&brotli(TEXT));
        assert_eq!(
            decode(&twice, &[Coding::Brotli, Coding::Gzip], 1 << 20),
            Some((TEXT.to_vec(), false))
        );
    }

    #[test]
    fn prefixes_decode_as_far_as_they_go_and_limits_hold() {
        let long: Vec<u8> = (0..200_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let encoded = gzip(&long);
        let (prefix, more) =
            decode(&encoded[..encoded.len() / 2], &[Coding::Gzip], usize::MAX).unwrap();
        assert!(!more);
        assert!(
            !prefix.is_empty() && long.starts_with(&prefix),
            "{}",
            prefix.len()
        );
        let (limited, more) = decode(&encoded, &[Coding::Gzip], 1000).unwrap();
        assert_eq!((limited.as_slice(), more), (&long[..1000], true));
        assert_eq!(decode(b"abcdef", &[], 4), Some((b"abcd".to_vec(), true)));
    }

    #[test]
    fn what_is_not_what_it_claims_does_not_decode() {
        assert_eq!(decode(b"plain text, not gzip", &[Coding::Gzip], 100), None);
        assert_eq!(decode(b"\xff\xff\xff\xff", &[Coding::Brotli], 100), None);
    }
}
