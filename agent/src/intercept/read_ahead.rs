//! The socket under each TLS leg, read ahead in large chunks.
//!
//! rustls asks for at most 4 KiB per read, so without a buffer a 16 KiB record costs
//! five read(2) calls. Unlike tokio's `BufReader`, the buffer here exists only while
//! it holds bytes, and is never zeroed: an idle connection (most of the thousands an
//! agent may hold) keeps no buffer at all.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at most at once.
pub const CHUNK: usize = 64 * 1024;

pub struct ReadAhead<S> {
    inner: S,
    /// Bytes read from `inner` and not yet handed out: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos == this.buf.len() {
            // Large reads need no buffer of ours.
            if out.remaining() >= CHUNK {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.buf.reserve_exact(CHUNK);
            let mut ahead = ReadBuf::uninit(&mut this.buf.spare_capacity_mut()[..CHUNK]);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut ahead))?;
            let n = ahead.filled().len();
            // SAFETY: the first `n` bytes of the spare capacity were filled by the read
            // (ReadBuf tracks what was initialised), and `buf` was empty before.
            unsafe { this.buf.set_len(n) };
            this.pos = 0;
        }
        let n = (this.buf.len() - this.pos).min(out.remaining());
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        if this.pos == this.buf.len() {
            // Drained: hand the memory back rather than keep it for an idle peer.
            this.buf = Vec::new();
            this.pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn small_reads_see_every_byte_in_order_and_keep_no_buffer_when_drained() {
        let (mut writer, reader) = tokio::io::duplex(1 << 20);
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let feed = tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
        });
        let mut ahead = ReadAhead::new(reader);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while got.len() < expected.len() {
            let n = ahead.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
            if ahead.pos == ahead.buf.len() {
                assert_eq!(ahead.buf.capacity(), 0, "a drained buffer is released");
            }
        }
        feed.await.unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn large_reads_go_straight_to_the_socket_and_eof_is_passed_on() {
        let (mut writer, reader) = tokio::io::duplex(1 << 20);
        writer.write_all(b"hello").await.unwrap();
        drop(writer);
        let mut ahead = ReadAhead::new(reader);
        let mut big = vec![0u8; CHUNK];
        assert_eq!(ahead.read(&mut big).await.unwrap(), 5);
        assert_eq!(&big[..5], b"hello");
        assert_eq!(ahead.buf.capacity(), 0);
        assert_eq!(ahead.read(&mut big).await.unwrap(), 0);
        let mut small = [0u8; 16];
        assert_eq!(ahead.read(&mut small).await.unwrap(), 0);
    }
}
