//! A provided-buffer ring: one per shard, shared by every connection's multishot receive. The
//! kernel picks a free buffer when data arrives, so a connection owns a buffer only while its
//! completion is being processed; the shard hands the buffer back right after.
//!
//! Memory: `entries` ring slots (16 bytes each) and `entries x size` bytes of buffers, both
//! allocated here, page-aligned, and registered with the ring under group id `group`.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

const PAGE: usize = 4096;

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
    /// Buffer group id given to receives.
    pub group: u16,
}

impl BufRing {
    /// Allocates `entries` buffers of `size` bytes (entries a power of two, 1..=32768), registers
    /// them with the ring behind `submitter` as group `group`, and offers all of them.
    pub fn new(submitter: &Submitter<'_>, entries: u16, size: u32, group: u16) -> io::Result<Self> {
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
            group,
        };
        // SAFETY: `ring` points to `entries` zeroed, page-aligned slots that live until `this`
        // is dropped, which happens only after the group is unregistered and every receive has
        // completed (the owner leaks it otherwise, see `Uring`), or, if registration fails
        // here, without the kernel ever having seen it.
        unsafe { submitter.register_buf_ring_with_flags(ring as u64, entries, group, 0)? };
        for bid in 0..entries {
            this.offer(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The `len` bytes the kernel just received into buffer `bid`.
    pub fn filled(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let bid = usize::from(bid % self.entries);
        let len = len.min(self.size);
        // SAFETY: buffer `bid` lies inside the `entries x size` allocation owned by self. The
        // kernel handed it to us with this completion and will not write it again until
        // `recycle` offers it back; `&mut self` makes this the only view of it.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.add(bid * self.size), len) }
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.offer(bid % self.entries);
        self.publish();
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
