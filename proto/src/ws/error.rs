//! Protocol violations a direction can report.

use std::fmt;

/// Why a direction stopped parsing. The agent still forwards the bytes; the real
/// peer decides what to do about them. Each variant is one RFC 6455 / RFC 7692
/// rule the sender broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// An opcode RFC 6455 reserves for future use (3-7, 11-15).
    ReservedOpcode(u8),
    /// RSV bits set that no negotiated extension claims.
    ReservedBitsWithoutExtension { rsv1: bool, rsv2: bool, rsv3: bool },
    /// RSV1 on a control frame: permessage-deflate never compresses those.
    CompressedControlFrame { opcode: u8 },
    /// RSV1 on a continuation frame: permessage-deflate marks only a message's first frame.
    CompressedContinuation,
    /// A control frame with a payload over 125 bytes.
    ControlFrameTooLong { opcode: u8, len: u64 },
    /// A control frame without FIN: control frames cannot be fragmented.
    FragmentedControlFrame { opcode: u8 },
    /// A continuation frame while no fragmented message is open.
    ContinuationWithoutMessage,
    /// A new text or binary frame while a fragmented message is still open.
    DataFrameInsideMessage { opcode: u8 },
    /// A client frame without a masking key.
    UnmaskedClientFrame,
    /// A server frame with a masking key.
    MaskedServerFrame,
    /// A 64-bit payload length with its most significant bit set.
    LengthMsbSet(u64),
    /// A close frame whose body is a single byte (a code needs two).
    CloseBodyTooShort,
    /// A close code that must not appear on the wire (RFC 6455 section 7.4).
    InvalidCloseCode(u16),
    /// A close reason that is not UTF-8.
    InvalidCloseReasonUtf8,
    /// A text message that is not UTF-8.
    InvalidTextUtf8,
    /// The permessage-deflate data did not inflate.
    InflateFailed(String),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedOpcode(opcode) => write!(f, "reserved opcode {opcode:#x}"),
            Self::ReservedBitsWithoutExtension { rsv1, rsv2, rsv3 } => {
                let names = [(rsv1, "RSV1"), (rsv2, "RSV2"), (rsv3, "RSV3")]
                    .iter()
                    .filter(|(set, _)| **set)
                    .map(|(_, name)| *name)
                    .collect::<Vec<_>>()
                    .join(", ");
                write!(
                    f,
                    "reserved bits set without a negotiated extension: {names}"
                )
            }
            Self::CompressedControlFrame { opcode } => {
                write!(
                    f,
                    "control frame (opcode {opcode:#x}) has RSV1 set; control frames are never compressed"
                )
            }
            Self::CompressedContinuation => write!(
                f,
                "continuation frame has RSV1 set; only a message's first frame carries it"
            ),
            Self::ControlFrameTooLong { opcode, len } => write!(
                f,
                "control frame (opcode {opcode:#x}) has a {len}-byte payload; at most 125 are allowed"
            ),
            Self::FragmentedControlFrame { opcode } => {
                write!(
                    f,
                    "control frame (opcode {opcode:#x}) without FIN; control frames cannot be fragmented"
                )
            }
            Self::ContinuationWithoutMessage => {
                write!(
                    f,
                    "continuation frame without a fragmented message to continue"
                )
            }
            Self::DataFrameInsideMessage { opcode } => write!(
                f,
                "new data frame (opcode {opcode:#x}) while a fragmented message is still open"
            ),
            Self::UnmaskedClientFrame => write!(f, "client frame is not masked"),
            Self::MaskedServerFrame => write!(f, "server frame is masked"),
            Self::LengthMsbSet(len) => {
                write!(
                    f,
                    "64-bit payload length {len:#x} has its most significant bit set"
                )
            }
            Self::CloseBodyTooShort => {
                write!(f, "close frame body of 1 byte; a close code takes 2")
            }
            Self::InvalidCloseCode(code) => {
                write!(f, "close code {code} is not allowed on the wire")
            }
            Self::InvalidCloseReasonUtf8 => write!(f, "close reason is not valid UTF-8"),
            Self::InvalidTextUtf8 => write!(f, "text message is not valid UTF-8"),
            Self::InflateFailed(reason) => {
                write!(f, "permessage-deflate data did not inflate: {reason}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Whether `code` may be sent in a close frame (RFC 6455 section 7.4 and the IANA
/// registry): 1000-1003 and 1007-1014 are defined, 3000-4999 belong to libraries
/// and applications. 1004 is reserved, 1005, 1006 and 1015 are only for local
/// reporting, everything else is unassigned.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_validity_follows_rfc6455_section_7_4() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(is_valid_close_code(code), "{code} should be valid");
        }
        for code in [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_close_code(code), "{code} should be invalid");
        }
    }

    #[test]
    fn display_names_the_violation() {
        assert_eq!(
            ProtocolError::ReservedOpcode(3).to_string(),
            "reserved opcode 0x3"
        );
        assert_eq!(
            ProtocolError::ReservedBitsWithoutExtension {
                rsv1: true,
                rsv2: false,
                rsv3: true
            }
            .to_string(),
            "reserved bits set without a negotiated extension: RSV1, RSV3"
        );
        assert_eq!(
            ProtocolError::InvalidCloseCode(1005).to_string(),
            "close code 1005 is not allowed on the wire"
        );
        assert_eq!(
            ProtocolError::ControlFrameTooLong {
                opcode: 9,
                len: 126
            }
            .to_string(),
            "control frame (opcode 0x9) has a 126-byte payload; at most 125 are allowed"
        );
        assert!(
            ProtocolError::InflateFailed("corrupt".into())
                .to_string()
                .contains("corrupt")
        );
    }
}
