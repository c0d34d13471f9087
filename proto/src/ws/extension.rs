//! Extension negotiation: what the server's `Sec-WebSocket-Extensions` accepted.

use std::fmt;

/// Negotiated permessage-deflate parameters (RFC 7692), from the server's 101 response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// The server starts every message with an empty LZ77 window.
    pub server_no_context_takeover: bool,
    /// The client starts every message with an empty LZ77 window.
    pub client_no_context_takeover: bool,
    /// Window the server compresses with (8-15); inflating needs no more than 15.
    pub server_max_window_bits: u8,
    /// Window the client compresses with (8-15).
    pub client_max_window_bits: u8,
}

impl Default for DeflateConfig {
    /// What a bare `permessage-deflate` acceptance means.
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// Everything the server's response accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NegotiatedExtensions {
    /// Present when permessage-deflate was accepted.
    pub deflate: Option<DeflateConfig>,
    /// Names of the other accepted extensions. They may own RSV bits and
    /// reserved opcodes, so a direction must not judge those (see
    /// [`WsDirection::with_foreign_extensions`](super::WsDirection::with_foreign_extensions)).
    pub others: Vec<String>,
}

/// Why a `Sec-WebSocket-Extensions` value cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtensionError {
    /// The value does not follow the header's grammar.
    Malformed { at: usize, expected: &'static str },
    /// permessage-deflate accepted more than once.
    DuplicateDeflate,
    /// A permessage-deflate parameter given twice.
    DuplicateParameter(String),
    /// A parameter RFC 7692 does not define for a response.
    UnknownParameter(String),
    /// A value on a parameter that takes none.
    UnexpectedValue(String),
    /// No value on a parameter that needs one.
    MissingValue(String),
    /// A window size outside 8-15, or not written as a plain decimal.
    InvalidWindowBits { parameter: String, value: String },
}

impl fmt::Display for ExtensionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { at, expected } => {
                write!(
                    f,
                    "malformed Sec-WebSocket-Extensions at byte {at}: expected {expected}"
                )
            }
            Self::DuplicateDeflate => write!(f, "permessage-deflate accepted more than once"),
            Self::DuplicateParameter(name) => {
                write!(
                    f,
                    "permessage-deflate parameter {name} given more than once"
                )
            }
            Self::UnknownParameter(name) => {
                write!(f, "unknown permessage-deflate response parameter {name}")
            }
            Self::UnexpectedValue(name) => {
                write!(f, "permessage-deflate parameter {name} takes no value")
            }
            Self::MissingValue(name) => {
                write!(f, "permessage-deflate parameter {name} needs a value")
            }
            Self::InvalidWindowBits { parameter, value } => {
                write!(
                    f,
                    "permessage-deflate {parameter}={value:?} is not a window size from 8 to 15"
                )
            }
        }
    }
}

impl std::error::Error for ExtensionError {}

/// Parse the `Sec-WebSocket-Extensions` header value of the server's 101 response.
/// `Ok(None)` when permessage-deflate was not accepted; `Err` for a malformed or
/// unsupported acceptance. Other extensions listed alongside are ignored here; use
/// [`negotiate_extensions`] to learn about them.
pub fn negotiate_deflate(header_value: &str) -> Result<Option<DeflateConfig>, ExtensionError> {
    Ok(negotiate_extensions(header_value)?.deflate)
}

/// Parse the `Sec-WebSocket-Extensions` header value of the server's 101 response
/// into permessage-deflate's parameters and the names of the other extensions.
/// Several header lines may be joined with commas first, as HTTP allows.
pub fn negotiate_extensions(header_value: &str) -> Result<NegotiatedExtensions, ExtensionError> {
    let mut negotiated = NegotiatedExtensions::default();
    for element in parse_extension_list(header_value)? {
        if element.name.eq_ignore_ascii_case("permessage-deflate") {
            if negotiated.deflate.is_some() {
                return Err(ExtensionError::DuplicateDeflate);
            }
            negotiated.deflate = Some(deflate_config(&element.params)?);
        } else {
            negotiated.others.push(element.name);
        }
    }
    Ok(negotiated)
}

fn deflate_config(params: &[(String, Option<String>)]) -> Result<DeflateConfig, ExtensionError> {
    let mut config = DeflateConfig::default();
    let mut seen = [false; 4];
    for (name, value) in params {
        let (slot, takes_value) = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, false),
            "client_no_context_takeover" => (1, false),
            "server_max_window_bits" => (2, true),
            "client_max_window_bits" => (3, true),
            _ => return Err(ExtensionError::UnknownParameter(name.clone())),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(ExtensionError::DuplicateParameter(name.clone()));
        }
        match (takes_value, value) {
            (false, Some(_)) => return Err(ExtensionError::UnexpectedValue(name.clone())),
            (true, None) => return Err(ExtensionError::MissingValue(name.clone())),
            (false, None) if slot == 0 => config.server_no_context_takeover = true,
            (false, None) => config.client_no_context_takeover = true,
            (true, Some(value)) => {
                let bits = window_bits(value).ok_or_else(|| ExtensionError::InvalidWindowBits {
                    parameter: name.clone(),
                    value: value.clone(),
                })?;
                if slot == 2 {
                    config.server_max_window_bits = bits;
                } else {
                    config.client_max_window_bits = bits;
                }
            }
        }
    }
    Ok(config)
}

/// RFC 7692 7.1.2: a decimal integer from 8 to 15 without leading zeroes.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u8>()
        .ok()
        .filter(|bits| (8..=15).contains(bits))
}

struct ExtensionElement {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// RFC 6455 section 9.1: `1#extension`, `extension = token *( ";" param )`,
/// `param = token [ "=" (token | quoted-string) ]`, with optional whitespace
/// around the separators and empty list elements tolerated (RFC 7230 7).
fn parse_extension_list(text: &str) -> Result<Vec<ExtensionElement>, ExtensionError> {
    let mut cursor = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let mut elements = Vec::new();
    loop {
        cursor.skip_whitespace();
        if cursor.at_end() {
            return Ok(elements);
        }
        if cursor.eat(b',') {
            continue;
        }
        let name = cursor.token("an extension name")?;
        let mut params = Vec::new();
        loop {
            cursor.skip_whitespace();
            if !cursor.eat(b';') {
                break;
            }
            cursor.skip_whitespace();
            let param = cursor.token("a parameter name")?;
            cursor.skip_whitespace();
            let value = if cursor.eat(b'=') {
                cursor.skip_whitespace();
                Some(cursor.value()?)
            } else {
                None
            };
            params.push((param, value));
        }
        if !cursor.at_end() && !cursor.eat(b',') {
            return Err(cursor.malformed("',' or ';'"));
        }
        elements.push(ExtensionElement { name, params });
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn malformed(&self, expected: &'static str) -> ExtensionError {
        ExtensionError::Malformed {
            at: self.pos,
            expected,
        }
    }

    fn token(&mut self, expected: &'static str) -> Result<String, ExtensionError> {
        let start = self.pos;
        while self.peek().is_some_and(is_token_byte) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.malformed(expected));
        }
        Ok(String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned())
    }

    fn value(&mut self) -> Result<String, ExtensionError> {
        if !self.eat(b'"') {
            return self.token("a parameter value");
        }
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.malformed("a closing '\"'")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&value).into_owned());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(escaped) => value.push(escaped),
                        None => return Err(self.malformed("a character after '\\'")),
                    }
                    self.pos += 1;
                }
                Some(byte) if byte == b'\t' || byte >= 0x20 && byte != 0x7f => {
                    value.push(byte);
                    self.pos += 1;
                }
                Some(_) => return Err(self.malformed("a quoted-string character")),
            }
        }
    }
}

/// RFC 7230 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        server_no_context_takeover: bool,
        client_no_context_takeover: bool,
        server_max_window_bits: u8,
        client_max_window_bits: u8,
    ) -> DeflateConfig {
        DeflateConfig {
            server_no_context_takeover,
            client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
        }
    }

    #[test]
    fn bare_acceptance_means_defaults() {
        assert_eq!(
            negotiate_deflate("permessage-deflate"),
            Ok(Some(config(false, false, 15, 15)))
        );
        assert_eq!(
            negotiate_deflate("Permessage-Deflate"),
            Ok(Some(DeflateConfig::default()))
        );
    }

    #[test]
    fn no_deflate_means_none() {
        assert_eq!(negotiate_deflate(""), Ok(None));
        assert_eq!(negotiate_deflate("  ,  "), Ok(None));
        assert_eq!(negotiate_deflate("x-webkit-deflate-frame"), Ok(None));
    }

    #[test]
    fn all_parameters() {
        assert_eq!(
            negotiate_deflate(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=8"
            ),
            Ok(Some(config(true, true, 10, 8)))
        );
        assert_eq!(
            negotiate_deflate(
                "permessage-deflate;client_max_window_bits=\"12\";server_no_context_takeover"
            ),
            Ok(Some(config(true, false, 15, 12)))
        );
        assert_eq!(
            negotiate_deflate("permessage-deflate ; server_max_window_bits = 9"),
            Ok(Some(config(false, false, 9, 15)))
        );
    }

    #[test]
    fn other_extensions_are_listed_separately() {
        let negotiated = negotiate_extensions(
            "x-foo; a=\"b,c\", permessage-deflate; client_no_context_takeover, bar",
        )
        .unwrap();
        assert_eq!(negotiated.deflate, Some(config(false, true, 15, 15)));
        assert_eq!(negotiated.others, ["x-foo", "bar"]);
        assert_eq!(
            negotiate_deflate(
                "x-foo; a=\"b,c\", permessage-deflate; client_no_context_takeover, bar"
            ),
            Ok(Some(config(false, true, 15, 15)))
        );
    }

    #[test]
    fn rejects_duplicates() {
        assert_eq!(
            negotiate_deflate("permessage-deflate, permessage-deflate"),
            Err(ExtensionError::DuplicateDeflate)
        );
        assert_eq!(
            negotiate_deflate(
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover"
            ),
            Err(ExtensionError::DuplicateParameter(
                "server_no_context_takeover".into()
            ))
        );
        assert_eq!(
            negotiate_deflate(
                "permessage-deflate; client_max_window_bits=9; client_max_window_bits=9"
            ),
            Err(ExtensionError::DuplicateParameter(
                "client_max_window_bits".into()
            ))
        );
    }

    #[test]
    fn rejects_bad_parameters() {
        assert_eq!(
            negotiate_deflate("permessage-deflate; foo"),
            Err(ExtensionError::UnknownParameter("foo".into()))
        );
        assert_eq!(
            negotiate_deflate("permessage-deflate; server_no_context_takeover=1"),
            Err(ExtensionError::UnexpectedValue(
                "server_no_context_takeover".into()
            ))
        );
        assert_eq!(
            negotiate_deflate("permessage-deflate; client_max_window_bits"),
            Err(ExtensionError::MissingValue(
                "client_max_window_bits".into()
            ))
        );
        for bad in ["7", "16", "010", "08", "", "1x", "+9", "255", "99999999999"] {
            let header = format!("permessage-deflate; server_max_window_bits=\"{bad}\"");
            assert_eq!(
                negotiate_deflate(&header),
                Err(ExtensionError::InvalidWindowBits {
                    parameter: "server_max_window_bits".into(),
                    value: bad.into()
                }),
                "{header}"
            );
        }
    }

    #[test]
    fn rejects_malformed_syntax() {
        assert_eq!(
            negotiate_deflate("permessage-deflate;"),
            Err(ExtensionError::Malformed {
                at: 19,
                expected: "a parameter name"
            })
        );
        assert_eq!(
            negotiate_deflate("permessage-deflate; a=\"unterminated"),
            Err(ExtensionError::Malformed {
                at: 35,
                expected: "a closing '\"'"
            })
        );
        assert_eq!(
            negotiate_deflate("permessage deflate"),
            Err(ExtensionError::Malformed {
                at: 11,
                expected: "',' or ';'"
            })
        );
        assert!(matches!(
            negotiate_deflate("permessage-deflate; a="),
            Err(ExtensionError::Malformed { .. })
        ));
        assert!(matches!(
            negotiate_deflate("=x"),
            Err(ExtensionError::Malformed { .. })
        ));
        // A malformed foreign extension makes the whole header unusable too.
        assert!(matches!(
            negotiate_deflate("permessage-deflate, x; \"q\""),
            Err(ExtensionError::Malformed { .. })
        ));
    }

    #[test]
    fn quoted_values_unescape() {
        assert_eq!(
            negotiate_deflate("permessage-deflate; client_max_window_bits=\"1\\1\""),
            Ok(Some(config(false, false, 15, 11)))
        );
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(
            ExtensionError::InvalidWindowBits {
                parameter: "server_max_window_bits".into(),
                value: "7".into()
            }
            .to_string(),
            "permessage-deflate server_max_window_bits=\"7\" is not a window size from 8 to 15"
        );
    }
}
