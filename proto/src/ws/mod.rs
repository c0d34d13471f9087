//! WebSocket frames (RFC 6455) and permessage-deflate (RFC 7692), for recording.
//!
//! The agent forwards every byte unchanged and feeds the same bytes to one
//! [`WsDirection`] per direction, which reports what they mean: each frame,
//! each reassembled message, and at most one protocol error, after which that
//! direction stops parsing (the real peer decides what to do about it).
//! [`encode_message`] produces the wire bytes of messages frametap injects or
//! rewrites; parsing never changes a byte. Memory stays bounded
//! whatever arrives: payloads are kept up to a cap and the rest only counted.

mod direction;
mod encode;
mod error;
mod events;
mod extension;
mod inflate;
mod mask;

pub use direction::{DEFAULT_PAYLOAD_CAP, WsDirection};
pub use encode::{Deflater, close_payload, encode_frame, encode_message};
pub use error::{ProtocolError, is_valid_close_code};
pub use events::{Message, RecordedFrame, WsEvent};
pub use extension::{
    DeflateConfig, ExtensionError, NegotiatedExtensions, negotiate_deflate, negotiate_extensions,
};
pub use mask::apply_mask;
