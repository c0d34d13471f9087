//! What feeding a read produces besides records: the bytes to forward, and bytes
//! that go to a peer outside the stream's flow; and where masking keys come from.
use frametap_model::Record;

/// What to send on after a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward {
    /// The bytes just read, unchanged.
    AsIs,
    /// These bytes instead (possibly none).
    Bytes(Vec<u8>),
}

/// Bytes (and their records) to write to a side outside the flow of the stream
/// going there: injected messages, and the close frame a close rule sends back.
#[derive(Debug, Default)]
pub struct Outbox {
    pub bytes: Vec<u8>,
    /// Persisted before `bytes` are written.
    pub records: Vec<Record>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Where the masking keys of frames frametap sends toward the server come from
/// (RFC 6455 5.3 asks for unpredictable ones): the agent passes a function that
/// reads the OS's random source; tests and fuzzing pass a fixed one.
pub type MaskKeys = fn() -> [u8; 4];
