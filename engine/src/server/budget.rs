//! The process's budget for partial input: bytes held in connections' partial-frame and
//! request-head buffers and in fragmented messages being reassembled, added up over every
//! connection of every shard (`max_reassembly_bytes`).
//!
//! Per connection the protocol limits what one message may hold (`max_message_size`), and an
//! unfinished message lives as long as its sender keeps it alive (a byte of a fragment before
//! each idle timeout). Without a budget across connections, a few thousand such senders hold
//! gigabytes. A shard counts a connection's held bytes after processing its input; a
//! connection whose growth would pass the budget is closed with 1013 (try again later) and its
//! buffers dropped, so what the others hold is untouched.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Bytes of partial input held across the process, against a limit.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Budget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes `n` more bytes; `false`, with nothing taken, when that would pass the limit.
    pub fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Relaxed, Relaxed, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `n` bytes taken before.
    pub fn give(&self, n: usize) {
        self.used.fetch_sub(n, Relaxed);
    }

    /// Bytes taken now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_limit_and_no_further() {
        let b = Budget::new(100);
        assert!(b.take(60));
        assert!(!b.take(41), "past the limit: nothing taken");
        assert_eq!(b.used(), 60);
        assert!(b.take(40));
        b.give(100);
        assert_eq!(b.used(), 0);
        assert!(!b.take(usize::MAX), "no overflow");
    }
}
