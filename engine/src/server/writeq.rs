//! The per-connection write queue: allocated at the first backpressure, freed when drained,
//! bounded in bytes.
//!
//! Chunks are `Bytes`, so a broadcast frame shared by many connections is queued by reference,
//! not copied. Small frames are coalesced into the last owned chunk.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes, BytesMut};

/// Pending output of one connection.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Bytes>,
    /// Small writes accumulate here before becoming a chunk.
    tail: BytesMut,
    len: usize,
}

/// Chunks below this size are copied into the coalescing tail.
const COALESCE: usize = 4096;

/// iovecs per writev.
pub const MAX_IOV: usize = 64;

impl WriteQueue {
    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a copy of `data`.
    pub fn push_slice(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if data.len() < COALESCE {
            self.tail.extend_from_slice(data);
        } else {
            self.seal_tail();
            self.chunks.push_back(Bytes::copy_from_slice(data));
        }
    }

    /// Queues a shared chunk without copying it (unless it is small).
    pub fn push_bytes(&mut self, data: Bytes) {
        if data.len() < COALESCE {
            self.push_slice(&data);
            return;
        }
        self.len += data.len();
        self.seal_tail();
        self.chunks.push_back(data);
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    /// Writes as much as the socket takes. `Ok(true)` when the queue is drained.
    pub fn flush_to<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        self.seal_tail();
        while !self.chunks.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n_iov = self.chunks.len().min(MAX_IOV);
            for (slot, chunk) in iov.iter_mut().zip(self.chunks.iter()) {
                *slot = IoSlice::new(chunk);
            }
            let written = match w.write_vectored(&iov[..n_iov]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.consume(written);
        }
        // Drained: give the coalescing buffer's memory back.
        self.tail = BytesMut::new();
        Ok(true)
    }

    /// Takes up to `max` chunks off the front, for a send that owns them until it completes
    /// (io_uring). What is left stays queued behind them.
    pub fn take_chunks(&mut self, max: usize) -> Vec<Bytes> {
        self.seal_tail();
        let n = self.chunks.len().min(max);
        let taken: Vec<Bytes> = self.chunks.drain(..n).collect();
        self.len -= taken.iter().map(Bytes::len).sum::<usize>();
        if self.chunks.is_empty() {
            self.tail = BytesMut::new();
        }
        taken
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call, then blocks after `budget`.
    struct Throttled {
        out: Vec<u8>,
        cap: usize,
        budget: usize,
    }

    impl Write for Throttled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.cap).min(self.budget);
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn drains_in_order_across_partial_writes() {
        let mut q = WriteQueue::default();
        let big = Bytes::from(vec![b'b'; 10_000]);
        q.push_slice(b"head");
        q.push_bytes(big.clone());
        q.push_slice(b"tail");
        assert_eq!(q.len(), 10_008);
        let mut w = Throttled {
            out: Vec::new(),
            cap: 999,
            budget: 5_000,
        };
        assert!(!q.flush_to(&mut w).unwrap());
        assert_eq!(q.len(), 5_008);
        w.budget = usize::MAX;
        assert!(q.flush_to(&mut w).unwrap());
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"tail");
        assert_eq!(w.out, expected);
        assert!(q.is_empty());
    }

    #[test]
    fn taking_chunks_keeps_order_and_length() {
        let mut q = WriteQueue::default();
        q.push_slice(b"small");
        q.push_bytes(Bytes::from(vec![b'x'; 5000]));
        q.push_slice(b"end");
        let first = q.take_chunks(1);
        assert_eq!(&first[0][..], b"small");
        assert_eq!(q.len(), 5003);
        let rest = q.take_chunks(64);
        assert_eq!(rest.len(), 2);
        assert_eq!(&rest[1][..], b"end");
        assert!(q.is_empty());
    }
}
