//! HPACK (RFC 7541) decoding, for reading the header blocks of one direction of an
//! HTTP/2 connection. Sans-IO: a header block in, its fields out, in order; the
//! dynamic table kept in step with the encoder's across blocks.
//!
//! Written here rather than taken from a crate: `loona-hpack` (the maintained one)
//! builds a hash map for every Huffman-coded string it decodes, which made HPACK
//! about half of the agent's CPU per HTTP/2 request (BENCHMARKS.md), and the faster
//! crates either copy the rest of the block for every field (quadratic in the
//! block's length) or cannot start a table at 4,096 bytes while allowing larger
//! size updates, which an observer needs: it never knows what the receiver allowed.
//! `loona-hpack` stays as the reference the tests and the fuzz target compare with.
use std::collections::VecDeque;
use std::sync::LazyLock;

#[cfg(test)]
mod tests;

/// The dynamic table's size before any size update (SETTINGS_HEADER_TABLE_SIZE's
/// default, RFC 9113 §6.5.2).
pub const INITIAL_TABLE_SIZE: usize = 4096;
/// Largest dynamic table a size update may ask for. The receiver's SETTINGS bound
/// it for the peers; an observer bounds it to keep its memory per connection small
/// (browsers allow 65,536).
pub const MAX_TABLE_SIZE: usize = 1 << 20;

/// Why a header block cannot be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HpackError {
    /// An index that neither table has.
    BadIndex(usize),
    /// The block ends inside a field.
    Truncated,
    /// An integer beyond any sensible size.
    IntegerOverflow,
    /// A Huffman-coded string that is not valid (EOS, bad padding).
    BadHuffman,
    /// A size update above what this decoder keeps ([`MAX_TABLE_SIZE`]).
    TableTooLarge(usize),
}

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HpackError::BadIndex(i) => write!(f, "index {i} is in neither table"),
            HpackError::Truncated => f.write_str("the block ends inside a field"),
            HpackError::IntegerOverflow => f.write_str("an integer too large"),
            HpackError::BadHuffman => f.write_str("a Huffman-coded string is invalid"),
            HpackError::TableTooLarge(n) => write!(
                f,
                "a dynamic table size update to {n} bytes (frametap keeps at most {MAX_TABLE_SIZE})"
            ),
        }
    }
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Code lengths of the Huffman code, symbols 0 to 256 (EOS), RFC 7541 Appendix B.
/// The code is canonical: codes follow from the lengths (shorter first, then by
/// symbol), which the tests check against the RFC's examples.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const EOS: u16 = 256;
/// A child that is a symbol rather than a node.
const LEAF: u16 = 0x8000;

/// The Huffman code as a binary tree: node `i` has children `tree[i][bit]`, each a
/// node index or `LEAF | symbol`. Built once, from the lengths.
static HUFFMAN_TREE: LazyLock<Vec<[u16; 2]>> = LazyLock::new(|| {
    let mut symbols: Vec<u16> = (0..=EOS).collect();
    symbols.sort_by_key(|&s| (HUFFMAN_LENGTHS[usize::from(s)], s));
    let mut tree = vec![[0u16; 2]];
    let (mut code, mut previous_len) = (0u32, 0u8);
    for (i, &symbol) in symbols.iter().enumerate() {
        let len = HUFFMAN_LENGTHS[usize::from(symbol)];
        if i > 0 {
            code = (code + 1) << (len - previous_len);
        }
        previous_len = len;
        let mut node = 0usize;
        for depth in (0..len).rev() {
            let bit = ((code >> depth) & 1) as usize;
            if depth == 0 {
                tree[node][bit] = LEAF | symbol;
            } else {
                if tree[node][bit] == 0 {
                    tree.push([0; 2]);
                    tree[node][bit] = (tree.len() - 1) as u16;
                }
                node = usize::from(tree[node][bit]);
            }
        }
    }
    tree
});

/// Decodes a Huffman-coded string (RFC 7541 §5.2) onto `out`.
pub fn huffman_decode(data: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let tree = &*HUFFMAN_TREE;
    let mut node = 0usize;
    // Bits read since the last symbol, and whether all of them were 1s (padding
    // must be a prefix of EOS, at most 7 bits).
    let (mut pending, mut all_ones) = (0u32, true);
    for &byte in data {
        for shift in (0..8).rev() {
            let bit = (byte >> shift) & 1;
            pending += 1;
            all_ones &= bit == 1;
            let child = tree[node][usize::from(bit)];
            if child & LEAF != 0 {
                let symbol = child & !LEAF;
                if symbol == EOS {
                    return Err(HpackError::BadHuffman);
                }
                out.push(symbol as u8);
                (node, pending, all_ones) = (0, 0, true);
            } else {
                node = usize::from(child);
            }
        }
    }
    if pending > 7 || !all_ones {
        return Err(HpackError::BadHuffman);
    }
    Ok(())
}

/// Reads an integer with an `n`-bit prefix (RFC 7541 §5.1) from `block` at `*at`.
fn integer(block: &[u8], at: &mut usize, n: u8) -> Result<usize, HpackError> {
    let max_prefix = (1usize << n) - 1;
    let first = *block.get(*at).ok_or(HpackError::Truncated)?;
    *at += 1;
    let mut value = usize::from(first) & max_prefix;
    if value < max_prefix {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let byte = *block.get(*at).ok_or(HpackError::Truncated)?;
        *at += 1;
        // Four continuation bytes reach 2^28 + the prefix: more is never sensible.
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// A dynamic table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// One direction's HPACK decoding context.
pub struct HpackDecoder {
    /// Newest first.
    dynamic: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    scratch: [Vec<u8>; 2],
}

impl Default for HpackDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HpackDecoder {
    pub fn new() -> Self {
        HpackDecoder {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: INITIAL_TABLE_SIZE,
            scratch: [Vec::new(), Vec::new()],
        }
    }

    /// The dynamic table's current size limit.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Decodes one whole header block, calling `field(name, value)` for each field in
    /// order. After an error the context may be out of step with the encoder's: stop
    /// decoding this direction.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut at = 0;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                let index = integer(block, &mut at, 7)?;
                let (name, value) = self.entry(index)?;
                field(name, value);
            } else if first & 0xe0 == 0x20 {
                let size = integer(block, &mut at, 5)?;
                if size > MAX_TABLE_SIZE {
                    return Err(HpackError::TableTooLarge(size));
                }
                self.max_size = size;
                self.evict_to(size);
            } else {
                // Literal: with incremental indexing (01), never indexed (0001) or
                // without indexing (0000).
                let indexing = first & 0xc0 == 0x40;
                let prefix = if indexing { 6 } else { 4 };
                let index = integer(block, &mut at, prefix)?;
                let [mut name, mut value] = std::mem::take(&mut self.scratch);
                name.clear();
                value.clear();
                let read = (|| {
                    if index == 0 {
                        string(block, &mut at, &mut name)?;
                    } else {
                        name.extend_from_slice(self.entry(index)?.0);
                    }
                    string(block, &mut at, &mut value)
                })();
                if read.is_ok() {
                    field(&name, &value);
                    if indexing {
                        self.insert(&name, &value);
                    }
                }
                self.scratch = [name, value];
                read?;
            }
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((name.as_bytes(), value.as_bytes()))
            }
            _ => index
                .checked_sub(62)
                .and_then(|i| self.dynamic.get(i))
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(HpackError::BadIndex(index)),
        }
    }

    /// RFC 7541 §4.4: make room by evicting the oldest entries; an entry larger than
    /// the table empties it and is not added.
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + 32;
        if size > self.max_size {
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - size);
        self.dynamic.push_front((name.into(), value.into()));
        self.size += size;
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let Some((n, v)) = self.dynamic.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
    }
}

/// Reads a string literal (RFC 7541 §5.2) onto `out`.
fn string(block: &[u8], at: &mut usize, out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = block.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let bytes = block
        .get(*at..at.checked_add(len).ok_or(HpackError::Truncated)?)
        .ok_or(HpackError::Truncated)?;
    *at += len;
    if huffman {
        huffman_decode(bytes, out)
    } else {
        out.extend_from_slice(bytes);
        Ok(())
    }
}
