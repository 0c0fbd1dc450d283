//! A provided-buffer ring: one per shard, shared by every connection's multishot receive. The
//! kernel picks a free buffer when data arrives, so a connection owns a buffer only while its
//! completion is being processed; the shard hands the buffer back right after.
//!
//! With incremental consumption (IOU_PBUF_RING_INC, Linux 6.12) a receive takes only the bytes
//! it needs from the buffer at the head of the ring, and the next receive, from any connection,
//! continues in the same buffer. Small receives then pack one after another into few buffers:
//! the memory the kernel writes stays in cache, fewer pages are ever touched, and the ring is
//! sized for bytes in flight rather than for receives in flight. A completion flagged
//! `IORING_CQE_F_BUF_MORE` says the kernel still uses the rest of its buffer; the buffer goes
//! back to the ring once the completion without that flag has been processed. Completions are
//! processed in the order they were posted, which is the order the kernel filled the buffer, so
//! each buffer's read offset is all the bookkeeping needed.
//!
//! Memory: `entries` ring slots (16 bytes each) and `entries x size` bytes of buffers, both
//! allocated here, page-aligned, and registered with the ring under group id `group`.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

const PAGE: usize = 4096;
/// `IOU_PBUF_RING_INC` from the kernel's uapi (not in the io-uring crate's API).
const IOU_PBUF_RING_INC: u16 = 2;

/// The ring and its buffers.
#[derive(Debug)]
pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    entries: u16,
    size: usize,
    /// Our copy of the tail the kernel reads (the next slot to fill).
    tail: u16,
    /// With incremental consumption, where the next completion in each buffer starts; empty
    /// without it.
    offsets: Box<[u32]>,
    /// Buffer group id given to receives.
    pub group: u16,
}

impl BufRing {
    /// Allocates buffers of `size` bytes, registers them with the ring behind `submitter` as
    /// group `group`, and offers all of them: `incremental` of them consumed incrementally, or,
    /// when the kernel refuses that (before Linux 6.12), `whole` of them consumed a buffer per
    /// receive ([`BufRing::incremental`] tells which). Counts are powers of two up to 32768.
    pub fn new(
        submitter: &Submitter<'_>,
        incremental: u16,
        whole: u16,
        size: u32,
        group: u16,
    ) -> io::Result<Self> {
        Self::register(submitter, incremental, size, group, IOU_PBUF_RING_INC)
            .or_else(|_| Self::register(submitter, whole, size, group, 0))
    }

    fn register(
        submitter: &Submitter<'_>,
        entries: u16,
        size: u32,
        group: u16,
        flags: u16,
    ) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring buffers: a power of two up to 32768, each at least 1 byte",
            ));
        }
        let size = size as usize;
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let ring_layout = Layout::from_size_align(ring_bytes.max(PAGE), PAGE)
            .map_err(|_| io::Error::other("buffer ring layout"))?;
        let bufs_bytes = usize::from(entries)
            .checked_mul(size)
            .ok_or_else(|| io::Error::other("buffer ring too large"))?;
        let bufs_layout = Layout::from_size_align(bufs_bytes, PAGE)
            .map_err(|_| io::Error::other("buffer ring layout"))?;
        // SAFETY: both layouts have a non-zero size (entries >= 1, size >= 1) and a valid
        // power-of-two alignment, as alloc_zeroed requires.
        let ring = unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if ring.is_null() || bufs.is_null() {
            // SAFETY: each non-null pointer came from alloc_zeroed with this layout and is
            // freed once, here; nothing else has seen it.
            unsafe {
                if !ring.is_null() {
                    dealloc(ring.cast(), ring_layout);
                }
                if !bufs.is_null() {
                    dealloc(bufs, bufs_layout);
                }
            }
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut this = BufRing {
            ring,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            size,
            tail: 0,
            offsets: Box::default(),
            group,
        };
        // SAFETY: `ring` points to `entries` zeroed, page-aligned slots that live until `this`
        // is dropped, which happens only after the group is unregistered and every receive has
        // completed (the owner leaks it otherwise, see `Uring`), or, if registration fails
        // here, without the kernel ever having seen it.
        unsafe { submitter.register_buf_ring_with_flags(ring as u64, entries, group, flags)? };
        if flags & IOU_PBUF_RING_INC != 0 {
            this.offsets = vec![0; usize::from(entries)].into_boxed_slice();
        }
        for bid in 0..entries {
            this.offer(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Whether receives consume buffers incrementally.
    pub fn incremental(&self) -> bool {
        !self.offsets.is_empty()
    }

    /// How many buffers there are.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Accounts for a completion that received `len` bytes into buffer `bid`, `more` telling
    /// whether it carried `IORING_CQE_F_BUF_MORE`. Returns the piece to process; once it has
    /// been, [`BufRing::done`] hands the buffer back if this was its last piece.
    /// Completions must be taken in the order they were posted.
    pub fn take(&mut self, bid: u16, len: usize, more: bool) -> Piece {
        let bid = bid % self.entries;
        let Some(offset) = self.offsets.get_mut(usize::from(bid)) else {
            return Piece {
                bid,
                start: 0,
                len: len.min(self.size),
                last: true,
            };
        };
        let start = (*offset as usize).min(self.size);
        let received = len;
        let len = len.min(self.size - start);
        debug_assert!(
            len > 0 || received == 0,
            "buffer {bid}: {received} bytes received past its end (offset {start})"
        );
        // The kernel commits an incremental buffer only for bytes it received: an empty
        // completion leaves the buffer where it was, so it must not be offered again.
        let last = !more && len > 0;
        if more {
            *offset = (start + len) as u32;
        } else if last {
            *offset = 0;
        }
        Piece {
            bid,
            start,
            len,
            last,
        }
    }

    /// The bytes of `piece`.
    pub fn bytes(&mut self, piece: &Piece) -> &mut [u8] {
        // SAFETY: `take` bounded `start + len` by `size` and `bid` by `entries`, so the range
        // lies inside the `entries x size` allocation owned by self. The kernel wrote it before
        // posting the completion and writes neither it nor anything before it in this buffer
        // again until `done` offers the buffer back (with incremental consumption it goes on
        // writing only past `start + len`); `&mut self` makes this the only view of it.
        unsafe {
            let at = self
                .bufs
                .add(usize::from(piece.bid) * self.size + piece.start);
            std::slice::from_raw_parts_mut(at, piece.len)
        }
    }

    /// `piece` has been processed: its buffer goes back to the kernel if this was its last.
    pub fn done(&mut self, piece: Piece) {
        if piece.last {
            self.offer(piece.bid);
            self.publish();
        }
    }

    fn offer(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        // SAFETY: `index < entries`, so the slot is inside the ring allocation. The kernel
        // reads only slots below the published tail, and this one is at the tail, not yet
        // published.
        let slot = unsafe { &mut *self.ring.add(index) };
        // SAFETY: `bid < entries`, so the buffer's address is inside the buffers allocation.
        let addr = unsafe { self.bufs.add(usize::from(bid) * self.size) };
        slot.set_addr(addr as u64);
        slot.set_len(self.size as u32);
        slot.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the ring base is valid and page-aligned; the tail is the u16 the kernel shares
        // in the first slot's reserved field, naturally aligned, so it may be viewed as an
        // AtomicU16. The release store orders the slot writes before the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

/// A part of a buffer one completion received, from [`BufRing::take`].
#[derive(Debug)]
#[must_use = "a piece's buffer returns to the kernel only through BufRing::done"]
pub struct Piece {
    bid: u16,
    start: usize,
    len: usize,
    last: bool,
}

impl Piece {
    /// The piece lies behind an earlier receive's bytes in the same buffer.
    pub fn shared(&self) -> bool {
        self.start > 0
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both pointers came from alloc_zeroed with these layouts (non-null, checked in
        // `new`) and are freed once. The kernel no longer uses them: a BufRing is dropped only
        // after its group is unregistered and every receive has completed (owners leak it
        // otherwise), or when registration failed.
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}
