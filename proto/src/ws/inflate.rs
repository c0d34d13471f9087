//! Bounded-memory raw DEFLATE decompression for permessage-deflate.

use flate2::{Decompress, FlushDecompress, Status};

/// Size of the reused output buffer. Whatever a message inflates to passes
/// through it in pieces, so a deflate bomb costs CPU, never memory.
const SCRATCH_LEN: usize = 16 * 1024;

/// One direction's decompressor. The LZ77 window carries over from message to
/// message unless the sender negotiated no_context_takeover.
pub(crate) struct Inflater {
    decompress: Decompress,
    scratch: Box<[u8]>,
}

impl Inflater {
    pub(crate) fn new() -> Self {
        // Raw DEFLATE; a 32 KiB window covers every max_window_bits from 8 to 15.
        Self {
            decompress: Decompress::new(false),
            scratch: vec![0; SCRATCH_LEN].into_boxed_slice(),
        }
    }

    /// Inflates `input`, handing every piece of output to `sink` in order.
    /// Returns the decompressor's explanation when the data is corrupt.
    pub(crate) fn inflate(
        &mut self,
        mut input: &[u8],
        sink: &mut impl FnMut(&[u8]),
    ) -> Result<(), String> {
        loop {
            let in_before = self.decompress.total_in();
            let out_before = self.decompress.total_out();
            let status = self
                .decompress
                .decompress(input, &mut self.scratch, FlushDecompress::None)
                .map_err(|error| error.to_string())?;
            let consumed =
                usize::try_from(self.decompress.total_in() - in_before).unwrap_or(input.len());
            let produced = usize::try_from(self.decompress.total_out() - out_before).unwrap_or(0);
            if let Some(output) = self.scratch.get(..produced)
                && !output.is_empty()
            {
                sink(output);
            }
            input = input.get(consumed..).unwrap_or_default();
            match status {
                // A block with BFINAL set ends the DEFLATE stream (RFC 7692
                // 7.2.3.4); whatever follows starts a new one.
                Status::StreamEnd => {
                    self.decompress.reset(false);
                    if input.is_empty() {
                        return Ok(());
                    }
                }
                // Done when a call produced nothing more: the input is used up (or
                // cannot be used yet). Output short of the buffer does not mean
                // nothing is pending: the decompressor may hold back what wraps
                // around its window until it is called again, input or not.
                Status::Ok | Status::BufError => {
                    if produced == 0 && (input.is_empty() || consumed == 0) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Forgets the LZ77 window: the next message starts from scratch.
    pub(crate) fn reset(&mut self) {
        self.decompress.reset(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_all(inflater: &mut Inflater, input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        inflater.inflate(input, &mut |piece| out.extend_from_slice(piece))?;
        Ok(out)
    }

    /// However the compressed bytes are cut, the output is the same (the frame-level
    /// case the `ws_frames` fuzz target found is in `direction.rs`).
    #[test]
    fn output_does_not_depend_on_how_the_input_is_cut() {
        let message: Vec<u8> = (0..200_000u32)
            .map(|i| {
                if i % 1000 < 600 {
                    0xff
                } else {
                    (i % 251) as u8
                }
            })
            .collect();
        let mut compress = flate2::Compress::new(flate2::Compression::default(), false);
        let mut compressed = Vec::with_capacity(message.len());
        compress
            .compress_vec(&message, &mut compressed, flate2::FlushCompress::Sync)
            .unwrap();
        for piece in [1, 7, 16, 4096, compressed.len()] {
            let mut inflater = Inflater::new();
            let mut out = Vec::new();
            for chunk in compressed.chunks(piece) {
                inflater
                    .inflate(chunk, &mut |p| out.extend_from_slice(p))
                    .unwrap();
            }
            assert_eq!(out.len(), message.len(), "pieces of {piece} bytes");
            assert!(out == message, "pieces of {piece} bytes");
        }
    }

    #[test]
    fn rfc7692_hello_with_trailer() {
        let mut inflater = Inflater::new();
        let mut out =
            inflate_all(&mut inflater, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap();
        out.extend(inflate_all(&mut inflater, &[0x00, 0x00, 0xff, 0xff]).unwrap());
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn context_is_kept_until_reset() {
        let mut inflater = Inflater::new();
        inflate_all(
            &mut inflater,
            &[
                0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff,
            ],
        )
        .unwrap();
        let second = [0xf2, 0x00, 0x11, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff];
        assert_eq!(inflate_all(&mut inflater, &second).unwrap(), b"Hello");
        inflater.reset();
        // The back-reference now points before the stream's start: zlib reports
        // that, miniz_oxide reads its zeroed window. "Hello" it cannot be.
        assert_ne!(
            inflate_all(&mut inflater, &second).ok(),
            Some(b"Hello".to_vec())
        );
    }

    #[test]
    fn bfinal_block_is_followed_by_a_fresh_stream() {
        let mut inflater = Inflater::new();
        let out = inflate_all(
            &mut inflater,
            &[
                0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
            ],
        )
        .unwrap();
        assert_eq!(out, b"Hello");
        let again = inflate_all(
            &mut inflater,
            &[
                0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff,
            ],
        );
        assert_eq!(again.unwrap(), b"Hello");
    }

    #[test]
    fn large_output_arrives_in_scratch_sized_pieces() {
        // 200 KiB of zeros: a few hundred bytes of DEFLATE.
        let mut compressor = flate2::Compress::new(flate2::Compression::best(), false);
        let mut compressed = Vec::with_capacity(4096);
        compressor
            .compress_vec(
                &vec![0u8; 200 * 1024],
                &mut compressed,
                flate2::FlushCompress::Sync,
            )
            .unwrap();
        assert!(compressed.len() < 4096);
        let mut inflater = Inflater::new();
        let mut total = 0usize;
        let mut largest_piece = 0usize;
        inflater
            .inflate(&compressed, &mut |piece| {
                assert!(piece.iter().all(|&b| b == 0));
                total += piece.len();
                largest_piece = largest_piece.max(piece.len());
            })
            .unwrap();
        assert_eq!(total, 200 * 1024);
        assert!(largest_piece <= SCRATCH_LEN);
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut inflater = Inflater::new();
        // BTYPE 11 is reserved.
        assert!(inflate_all(&mut inflater, &[0xff, 0xff, 0xff]).is_err());
    }
}
