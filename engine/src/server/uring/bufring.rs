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
//! # When the buffers run out
//!
//! Large messages from many connections at once can take every buffer: a multishot receive
//! that finds the ring empty ends with ENOBUFS. Re-arming every such receive at the end of the
//! batch, as this backend once did, was a storm: their data was still waiting, so the next
//! batch ran dry again and each batch cost a failed receive per waiting connection, many per
//! message echoed. Three things replace it:
//!
//! - **Receives that ran dry wait in a queue** ([`Starved`]) and are armed again, oldest
//!   first, only as far as the free bytes in the ring are expected to carry them (the recent
//!   bytes per receive, weighted by bytes), and at least one per batch so the queue always
//!   moves. One that finds the ring empty again goes back to the end of the queue. A message
//!   then costs at most about one failed receive, not one per waiting connection per batch,
//!   and meanwhile its data waits in the socket, as it does under epoll.
//! - **The ring grows under sustained exhaustion and shrinks when quiet.** A registered ring
//!   cannot be resized, but it need not be full: it is registered with `cap` slots and offers
//!   only `serving` buffers. Receives that ran out in [`GROW_AFTER`] batches in a row double
//!   `serving`, up to `cap`, by offering buffers not offered before (one that ran out once, a
//!   burst of handshakes, is the queue's business). A period in which nothing ran out and the
//!   buffers never held more than a quarter of the ring halves it, down to the base: buffers
//!   past `serving` are not offered again when they come back, and their pages are given back
//!   to the kernel (`MADV_DONTNEED`); under DEFER_TASKRUN, so are those of retired buffers
//!   the kernel has not touched yet. The buffers are one anonymous mapping of `cap x size`
//!   bytes whose pages exist only once written: a cap never reached costs address space, not
//!   memory. One group whose offered part varies was chosen over registering a second,
//!   bigger group: no receive has to be tracked by the group it was armed on, and no group
//!   has to drain before its memory can go. The cap is small on purpose (1 MiB by default):
//!   the kernel writes a receive into the ring and the shard reads it right after, which is
//!   fast while the ring stays in the core's cache; a ring of several MiB ran out less often
//!   but cost more per message than one that ran out and queued (docs/ARCHITECTURE.md).
//! - **A receive that ran past the end of its buffer into the next one is joined, not
//!   copied.** Buffer `b + 1` lies right after buffer `b` in memory, and the kernel hands out
//!   buffers in ring order, which is the order they were offered. A multishot receive whose
//!   completion used up buffer `b` and whose next completion starts buffer `b + 1` has
//!   received one contiguous run of bytes, which is processed in place in one piece
//!   ([`BufRing::continues`], [`BufRing::join`]). A frame larger than a buffer (16 KiB
//!   messages in 16 KiB buffers) then no longer has its first part copied into the
//!   connection's partial-frame buffer on every message.
//!
//! A fourth option was weighed and left out: a single-shot receive straight into the partial
//! frame buffer of a connection in the middle of a large frame. Its first part still lands in
//! the ring and is copied, the buffer has to outlive the connection (a slab like the sends'),
//! and joining adjacent buffers removed the copy for the common case without any of that.
//!
//! Memory: a ring of `cap` slots (16 bytes each), and `cap x size` bytes of address space for
//! the buffers, of which the pages of the buffers in service are touched.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;
use io_uring::types::BufRingEntry;

const PAGE: usize = 4096;
/// `IOU_PBUF_RING_INC` from the kernel's uapi (not in the io-uring crate's API).
const IOU_PBUF_RING_INC: u16 = 2;
/// How long the ring must go without running out, and without ever holding more than a quarter
/// of its bytes, before it is halved.
const QUIET_MS: u64 = 1_000;
/// Consecutive batches in which receives ran out that make the ring grow: a burst of
/// handshakes that runs the ring dry once is served by the queue of starved receives, a
/// stream of large messages that runs it dry batch after batch needs more buffers.
const GROW_AFTER: u8 = 3;

/// How many buffers a ring starts with and may grow to (powers of two, `base <= cap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// Buffers offered at first, and the fewest after shrinking.
    pub base: u16,
    /// The most buffers ever offered at once (the ring's slots).
    pub cap: u16,
}

impl Sizing {
    /// A ring that never grows.
    pub fn fixed(buffers: u16) -> Self {
        Sizing {
            base: buffers,
            cap: buffers,
        }
    }
}

/// The ring and its buffers.
#[derive(Debug)]
pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    /// An anonymous mapping of `slots x size` bytes; buffer `bid` starts at `bid x size`.
    bufs: *mut u8,
    bufs_len: usize,
    /// Slots in the ring: the most buffers that can be offered at once.
    slots: u16,
    size: usize,
    /// Our copy of the tail the kernel reads (the next slot to fill).
    tail: u16,
    /// With incremental consumption, where the next completion in each buffer starts; empty
    /// without it.
    offsets: Box<[u32]>,
    /// Whether each buffer is offered to the kernel (or being consumed by it): from its offer
    /// until its last piece is done.
    offered: Box<[bool]>,
    /// Buffers below this are offered again when they come back; the rest are retired.
    serving: u16,
    /// The fewest buffers in service.
    base: u16,
    /// Bytes offered and not yet received into, as far as the completions processed tell.
    free: usize,
    /// A receive ran out of buffers since the last [`BufRing::adapt`].
    exhausted: bool,
    /// Batches in a row in which receives ran out.
    streak: u8,
    /// The most bytes the buffers held at once since `quiet_since`.
    peak_held: usize,
    /// When the current quiet period began (the shard's clock, ms).
    quiet_since: u64,
    /// Buffer group id given to receives.
    pub group: u16,
}

/// What [`BufRing::adapt`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// More buffers are offered.
    Grew,
    /// Buffers past the new count are retired as they come back.
    Shrank,
}

impl BufRing {
    /// Maps buffers of `size` bytes, registers a ring for them with the ring behind
    /// `submitter` as group `group`, and offers the base count: `incremental` sizing for
    /// buffers consumed incrementally, or, when the kernel refuses that (before Linux 6.12),
    /// `whole` for buffers consumed one per receive ([`BufRing::incremental`] tells which).
    /// Counts are powers of two up to 32768.
    pub fn new(
        submitter: &Submitter<'_>,
        incremental: Sizing,
        whole: Sizing,
        size: u32,
        group: u16,
    ) -> io::Result<Self> {
        Self::register(submitter, incremental, size, group, IOU_PBUF_RING_INC)
            .or_else(|_| Self::register(submitter, whole, size, group, 0))
    }

    fn register(
        submitter: &Submitter<'_>,
        sizing: Sizing,
        size: u32,
        group: u16,
        flags: u16,
    ) -> io::Result<Self> {
        let Sizing { base, cap } = sizing;
        let power = |n: u16| n.is_power_of_two() && n <= 32768;
        if !power(base) || !power(cap) || base > cap || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring buffers: a power of two up to 32768, each at least 1 byte",
            ));
        }
        let size = size as usize;
        let ring_bytes = usize::from(cap) * std::mem::size_of::<BufRingEntry>();
        let ring_layout = Layout::from_size_align(ring_bytes.max(PAGE), PAGE)
            .map_err(|_| io::Error::other("buffer ring layout"))?;
        let bufs_len = usize::from(cap)
            .checked_mul(size)
            .ok_or_else(|| io::Error::other("buffer ring too large"))?;
        // SAFETY: the layout has a non-zero size (at least a page) and a valid power-of-two
        // alignment, as alloc_zeroed requires.
        let ring = unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        if ring.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        // SAFETY: a fresh private anonymous mapping (no address hint, no descriptor) of a
        // non-zero length; it aliases nothing. MAP_NORESERVE: only the pages written count.
        let bufs = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bufs_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if bufs == libc::MAP_FAILED {
            let error = io::Error::last_os_error();
            // SAFETY: `ring` came from alloc_zeroed with this layout, is non-null and freed
            // once, here; the kernel has not seen it.
            unsafe { dealloc(ring.cast(), ring_layout) };
            return Err(error);
        }
        // Transparent huge pages would make the first byte written into a buffer cost 2 MiB,
        // and keep a retired buffer's pages from being given back on their own. Advice only:
        // a kernel without THP refuses it, which changes nothing.
        // SAFETY: the range is exactly the mapping just created.
        let _ = unsafe { libc::madvise(bufs, bufs_len, libc::MADV_NOHUGEPAGE) };
        let mut this = BufRing {
            ring,
            ring_layout,
            bufs: bufs.cast(),
            bufs_len,
            slots: cap,
            size,
            tail: 0,
            offsets: Box::default(),
            offered: vec![false; usize::from(cap)].into_boxed_slice(),
            serving: base,
            base,
            free: 0,
            exhausted: false,
            streak: 0,
            peak_held: 0,
            quiet_since: 0,
            group,
        };
        // SAFETY: `ring` points to `cap` zeroed, page-aligned slots that live until `this`
        // is dropped, which happens only after the group is unregistered and every receive has
        // completed (the owner leaks it otherwise, see `Uring`), or, if registration fails
        // here, without the kernel ever having seen it.
        unsafe { submitter.register_buf_ring_with_flags(ring as u64, cap, group, flags)? };
        if flags & IOU_PBUF_RING_INC != 0 {
            this.offsets = vec![0; usize::from(cap)].into_boxed_slice();
        }
        for bid in 0..base {
            this.offer(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Whether receives consume buffers incrementally.
    pub fn incremental(&self) -> bool {
        !self.offsets.is_empty()
    }

    /// How many buffers are in service now.
    pub fn entries(&self) -> u16 {
        self.serving
    }

    /// Bytes per buffer.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// Bytes offered to the kernel and not yet received into, as far as the completions
    /// processed so far tell.
    pub fn available(&self) -> usize {
        self.free
    }

    /// Accounts for a completion that received `len` bytes into buffer `bid`, `more` telling
    /// whether it carried `IORING_CQE_F_BUF_MORE`. Returns the piece to process; once it has
    /// been, [`BufRing::done`] hands the buffer back if this was its last piece.
    /// Completions must be taken in the order they were posted.
    pub fn take(&mut self, bid: u16, len: usize, more: bool) -> Piece {
        let bid = bid % self.slots;
        let Some(offset) = self.offsets.get_mut(usize::from(bid)) else {
            // A buffer per receive: all of it is gone, whatever the receive used.
            self.free = self.free.saturating_sub(self.size);
            return Piece {
                bid,
                start: 0,
                len: len.min(self.size),
                buffers: 1,
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
        self.free = self.free.saturating_sub(len);
        Piece {
            bid,
            start,
            len,
            buffers: 1,
            last,
        }
    }

    /// Whether a completion of the same multishot receive that follows one which received
    /// `len` bytes into buffer `bid`, and that used buffer `next`, continues it in memory: the
    /// first used its buffer up to the end (not flagged `IORING_CQE_F_BUF_MORE`), and the
    /// second starts at the beginning of the buffer right after it. Call it before taking
    /// either completion.
    pub fn continues(&self, bid: u16, len: usize, more: bool, next: u16) -> bool {
        let (bid, next) = (bid % self.slots, next % self.slots);
        let start = self
            .offsets
            .get(usize::from(bid))
            .map_or(0, |&o| o as usize);
        let next_start = self
            .offsets
            .get(usize::from(next))
            .map_or(0, |&o| o as usize);
        !more
            && len > 0
            && start + len == self.size
            && u32::from(bid) + 1 == u32::from(next)
            && next_start == 0
    }

    /// Makes `piece` one with `next`, the piece right after it in memory (see
    /// [`BufRing::continues`]): its bytes are then processed together, and `done` hands back
    /// both buffers.
    pub fn join(&mut self, piece: &mut Piece, next: Piece) {
        debug_assert!(
            piece.last
                && piece.start + piece.len == usize::from(piece.buffers) * self.size
                && u32::from(piece.bid) + u32::from(piece.buffers) == u32::from(next.bid)
                && next.start == 0,
            "joined pieces are not contiguous: {piece:?} then {next:?}"
        );
        piece.len += next.len;
        piece.buffers += 1;
        piece.last = next.last;
    }

    /// The bytes of `piece`.
    pub fn bytes(&mut self, piece: &Piece) -> &mut [u8] {
        // SAFETY: `take` bounded `start + len` by `size` and `bid` by `slots`, and `join`
        // only appends the buffers that follow, each up to `size`, so the range lies inside
        // the `slots x size` mapping owned by self. The kernel wrote it before posting the
        // completions and writes neither it nor anything before it in these buffers again
        // until `done` offers them back (with incremental consumption it goes on writing only
        // past the end of the last piece); `&mut self` makes this the only view of it.
        unsafe {
            let at = self
                .bufs
                .add(usize::from(piece.bid) * self.size + piece.start);
            std::slice::from_raw_parts_mut(at, piece.len)
        }
    }

    /// `piece` has been processed: the buffers it used up go back to the kernel, or are
    /// retired if the ring shrank past them.
    pub fn done(&mut self, piece: Piece) {
        let used_up = piece.buffers - u16::from(!piece.last);
        for bid in piece.bid..piece.bid + used_up {
            self.give_back(bid);
        }
        if used_up > 0 {
            self.publish();
        }
    }

    /// A receive found no buffer: the ring grows at the next [`BufRing::adapt`].
    pub fn ran_out(&mut self) {
        self.exhausted = true;
    }

    /// At the end of a batch of completions, at time `now` (ms), whose start found `held`
    /// bytes received and not processed yet: grows the ring if receives ran out in this batch
    /// and the ones before it ([`GROW_AFTER`]), and halves it after a quiet period.
    ///
    /// `settled` says that the kernel has written nothing into the buffers that has not been
    /// processed: every completion it posted has been, and it cannot run a receive before
    /// the next `io_uring_enter` (DEFER_TASKRUN, on this thread). Then the pages of retired
    /// buffers still offered to the kernel are given back at once, not when traffic brings
    /// them back, which a shard that fell silent after a burst would never see.
    pub fn adapt(&mut self, now: u64, held: usize, settled: bool) -> Change {
        self.peak_held = self.peak_held.max(held);
        if !std::mem::take(&mut self.exhausted) {
            self.streak = 0;
        } else {
            self.quiet_since = now;
            self.peak_held = 0;
            self.streak = self.streak.saturating_add(1);
            if self.streak < GROW_AFTER || self.serving == self.slots {
                return Change::None;
            }
            self.streak = 0;
            let from = self.serving;
            self.serving = (self.serving * 2).min(self.slots);
            for bid in from..self.serving {
                // One still on its way back from before a shrink is offered already.
                if !self.offered[usize::from(bid)] {
                    self.offer(bid);
                }
            }
            self.publish();
            return Change::Grew;
        }
        if now.saturating_sub(self.quiet_since) < QUIET_MS {
            return Change::None;
        }
        let quiet = self.peak_held.saturating_mul(4) <= usize::from(self.serving) * self.size;
        self.quiet_since = now;
        self.peak_held = 0;
        if !quiet || self.serving == self.base {
            return Change::None;
        }
        self.serving = (self.serving / 2).max(self.base);
        // Retired buffers that are back give their pages back now, a run of them at a time;
        // so do those still offered but untouched, when nothing unprocessed can be in them.
        let idle = |this: &Self, bid: u16| {
            let bid = usize::from(bid);
            !this.offered[bid] || (settled && this.offsets.get(bid).is_none_or(|&o| o == 0))
        };
        let mut bid = self.serving;
        while bid < self.slots {
            let from = bid;
            while bid < self.slots && idle(self, bid) {
                bid += 1;
            }
            self.release(from, bid);
            bid += 1;
        }
        Change::Shrank
    }

    /// A buffer whose last piece is done: offered again, or retired.
    fn give_back(&mut self, bid: u16) {
        self.offered[usize::from(bid)] = false;
        if bid < self.serving {
            self.offer(bid);
        } else {
            self.release(bid, bid + 1);
        }
    }

    /// Gives the whole pages of buffers `from..to` back to the kernel: reading them later
    /// gives zeros, and writing them takes fresh pages. None of them may hold bytes not yet
    /// processed, nor be written by the kernel while this runs (see the safety comment).
    fn release(&mut self, from: u16, to: u16) {
        let start = usize::from(from) * self.size;
        let end = usize::from(to) * self.size;
        let (first, last) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if first >= last {
            return;
        }
        // SAFETY: [first, last) is page-aligned and inside the buffers' mapping (`to` is at
        // most `slots`), which stays mapped, so no access through any pointer into it can
        // fault: MADV_DONTNEED on private anonymous memory only makes it read as zeros. No
        // data is lost: the callers pass buffers that are not offered (the kernel cannot
        // select them, and their last piece is done), or offered ones the kernel has not
        // written since they were offered and cannot write during this call (`adapt` with
        // `settled`: receives run only inside io_uring_enter on this thread); a receive that
        // writes into them later writes into fresh pages.
        let _ = unsafe {
            libc::madvise(
                self.bufs.add(first).cast(),
                last - first,
                libc::MADV_DONTNEED,
            )
        };
    }

    fn offer(&mut self, bid: u16) {
        debug_assert!(
            !self.offered[usize::from(bid)],
            "buffer {bid} offered twice"
        );
        let index = usize::from(self.tail & (self.slots - 1));
        // SAFETY: `index < slots`, so the slot is inside the ring allocation. The kernel
        // reads only slots below the published tail, and this one is at the tail, not yet
        // published. At most `slots` buffers are offered at once (each at most once), so the
        // tail never laps a slot the kernel has not consumed.
        let slot = unsafe { &mut *self.ring.add(index) };
        // SAFETY: `bid < slots`, so the buffer's address is inside the buffers' mapping.
        let addr = unsafe { self.bufs.add(usize::from(bid) * self.size) };
        slot.set_addr(addr as u64);
        slot.set_len(self.size as u32);
        slot.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.offered[usize::from(bid)] = true;
        if let Some(offset) = self.offsets.get_mut(usize::from(bid)) {
            *offset = 0;
        }
        self.free += self.size;
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

/// A part of one buffer, or of adjacent buffers, that a receive filled: from
/// [`BufRing::take`], grown by [`BufRing::join`].
#[derive(Debug)]
#[must_use = "a piece's buffer returns to the kernel only through BufRing::done"]
pub struct Piece {
    bid: u16,
    start: usize,
    len: usize,
    /// Buffers spanned, from `bid` on; all but the last are used up.
    buffers: u16,
    /// The last buffer is used up too.
    last: bool,
}

impl Piece {
    /// The piece lies behind an earlier receive's bytes in the same buffer.
    pub fn shared(&self) -> bool {
        self.start > 0
    }

    /// Bytes in the piece.
    pub fn received(&self) -> usize {
        self.len
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the ring came from alloc_zeroed with this layout and the buffers from mmap
        // with this length (both checked in `register`); each is freed once. The kernel no
        // longer uses them: a BufRing is dropped only after its group is unregistered and
        // every receive has completed (owners leak it otherwise), or when registration failed.
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            libc::munmap(self.bufs.cast(), self.bufs_len);
        }
    }
}

/// Connections whose receive ended for lack of buffers, oldest first, with what one receive
/// is expected to take from the ring.
///
/// That expectation is a moving average of the bytes handed to the shard per receive
/// completion (adjacent pieces joined), weighted by bytes: a connection that ran dry in the
/// middle of a large message has a large message's worth waiting, and a few such runs among
/// many small ones must not make the queue arm ten receives where the buffers carry one (each
/// of the others would only run dry again at once).
#[derive(Debug)]
pub struct Starved {
    queue: VecDeque<(u32, u32)>,
    /// Moving averages of len² and len over receive completions, in units that keep them
    /// well inside `u64`.
    squares: u64,
    bytes: u64,
}

impl Default for Starved {
    fn default() -> Self {
        Starved {
            queue: VecDeque::new(),
            squares: 4096 * 4096,
            bytes: 4096,
        }
    }
}

/// Entries of a [`Starved`] queue's buffer kept once it is empty again.
const STARVED_KEEP: usize = 1024;

impl Starved {
    /// The receive of the connection in `slot` (of `generation`) ran out of buffers.
    pub fn push(&mut self, slot: u32, generation: u32) {
        self.queue.push_back((slot, generation));
    }

    /// Records a receive completion that handed `len` bytes to the shard.
    pub fn received(&mut self, len: usize) {
        let len = len.min(1 << 24) as u64;
        self.squares = self.squares - self.squares / 16 + len * len / 16;
        self.bytes = self.bytes - self.bytes / 16 + len / 16;
    }

    /// Bytes the receive of a connection that waits here is expected to take.
    fn per_receive(&self) -> usize {
        (self.squares / self.bytes.max(1)) as usize
    }

    /// How many waiting receives to arm when `free` bytes of the ring are free, of `size`
    /// per buffer: as many as those bytes are expected to carry, at least one while any
    /// wait, so the queue always moves (buffers come back only as completions arrive).
    pub fn budget(&self, free: usize, size: usize) -> usize {
        if self.queue.is_empty() {
            return 0;
        }
        let per = self.per_receive().clamp(64, size.max(64));
        (free / per).max(1)
    }

    /// The receive that has waited longest.
    pub fn pop(&mut self) -> Option<(u32, u32)> {
        let next = self.queue.pop_front();
        if self.queue.is_empty() && self.queue.capacity() > STARVED_KEEP {
            self.queue = VecDeque::new();
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::{BufRing, Change, GROW_AFTER, QUIET_MS, Sizing, Starved};

    /// A ring of `sizing` 4 KiB buffers registered with a fresh io_uring, or `None` where
    /// io_uring or provided-buffer rings are unavailable. No receive ever uses it: the tests
    /// drive the bookkeeping as completions would.
    fn ring(sizing: Sizing) -> Option<(io_uring::IoUring, BufRing)> {
        let ring = io_uring::IoUring::new(8).ok()?;
        let bufs = BufRing::new(&ring.submitter(), sizing, sizing, 4096, 3).ok()?;
        Some((ring, bufs))
    }

    /// Whether the first page of buffer `bid` is in memory.
    fn resident(bufs: &BufRing, bid: usize) -> bool {
        let mut vec = 0u8;
        // SAFETY: the address is page-aligned (4 KiB buffers) and inside the mapping, and
        // mincore writes one byte per page of the one-page range into `vec`.
        let r = unsafe { libc::mincore(bufs.bufs.add(bid * 4096).cast(), 4096, &mut vec) };
        assert_eq!(r, 0);
        vec & 1 == 1
    }

    /// Writes into buffer `bid` as a receive would.
    fn touch(bufs: &mut BufRing, bid: usize) {
        // SAFETY: inside the mapping; no receive is ever armed on this ring.
        unsafe { bufs.bufs.add(bid * 4096).write(1) };
    }

    fn unregister(ring: io_uring::IoUring, bufs: BufRing) {
        ring.submitter().unregister_buf_ring(3).unwrap();
        drop(bufs);
    }

    /// Receives run out in `GROW_AFTER` batches in a row, at `now`.
    fn run_out(bufs: &mut BufRing, now: u64) -> Change {
        for _ in 1..GROW_AFTER {
            bufs.ran_out();
            assert_eq!(bufs.adapt(now, 0, true), Change::None);
        }
        bufs.ran_out();
        bufs.adapt(now, 0, true)
    }

    #[test]
    fn the_ring_grows_on_exhaustion_up_to_its_cap_and_shrinks_when_quiet() {
        let Some((ring, mut bufs)) = ring(Sizing { base: 4, cap: 16 }) else {
            eprintln!("no io_uring buffer ring here: skipped");
            return;
        };
        assert_eq!((bufs.entries(), bufs.available()), (4, 4 * 4096));
        // Nothing ran out: nothing changes, however busy.
        assert_eq!(bufs.adapt(10, 4 * 4096, true), Change::None);
        // Running out once in a while is the queue's business, not a reason to grow.
        for now in 11..20 {
            bufs.ran_out();
            assert_eq!(bufs.adapt(now, 0, true), Change::None);
            assert_eq!(bufs.adapt(now, 0, true), Change::None);
        }
        assert_eq!(run_out(&mut bufs, 20), Change::Grew);
        assert_eq!((bufs.entries(), bufs.available()), (8, 8 * 4096));
        assert_eq!(run_out(&mut bufs, 30), Change::Grew);
        assert_eq!(run_out(&mut bufs, 40), Change::None, "at the cap");
        assert_eq!(bufs.entries(), 16);
        // Holding more than a quarter of the ring is not quiet.
        assert_eq!(bufs.adapt(40 + QUIET_MS, 5 * 4096, true), Change::None);
        // Buffer 12 has been partly received into: it cannot be released while offered. The
        // other retired ones are untouched as far as the kernel is concerned: their pages go.
        for bid in 0..16 {
            touch(&mut bufs, bid);
        }
        let piece = bufs.take(12, 100, true);
        bufs.done(piece);
        assert_eq!(bufs.adapt(40 + 2 * QUIET_MS, 4096, true), Change::Shrank);
        assert_eq!(bufs.entries(), 8);
        let kept: Vec<_> = (0..16).filter(|&bid| resident(&bufs, bid)).collect();
        assert_eq!(kept, [0, 1, 2, 3, 4, 5, 6, 7, 12]);
        // It is retired when it comes back, not offered again, and its pages go then.
        let piece = bufs.take(12, 3996, false);
        bufs.done(piece);
        assert!(!bufs.offered[12]);
        assert!(!resident(&bufs, 12));
        let piece = bufs.take(3, 4096, false);
        bufs.done(piece);
        assert!(bufs.offered[3], "a buffer in service is offered again");
        // Not settled: buffers still offered keep their pages (the kernel may have written
        // into them since the last completions were read).
        touch(&mut bufs, 6);
        assert_eq!(bufs.adapt(40 + 3 * QUIET_MS, 0, false), Change::Shrank);
        assert!(resident(&bufs, 6));
        assert_eq!(
            bufs.adapt(40 + 4 * QUIET_MS, 0, true),
            Change::None,
            "at the base"
        );
        assert_eq!(bufs.entries(), 4);
        // Growing again offers the retired buffer 12 but not the ones still offered.
        assert_eq!(run_out(&mut bufs, 40 + 5 * QUIET_MS), Change::Grew);
        assert_eq!(run_out(&mut bufs, 40 + 5 * QUIET_MS), Change::Grew);
        assert!(bufs.offered.iter().all(|&o| o));
        unregister(ring, bufs);
    }

    #[test]
    fn completions_that_continue_into_the_next_buffer_are_joined() {
        let Some((ring, mut bufs)) = ring(Sizing::fixed(4)) else {
            eprintln!("no io_uring buffer ring here: skipped");
            return;
        };
        // 1,000 bytes into buffer 0, then a receive that fills the rest of it and goes on at
        // the start of buffer 1.
        let piece = bufs.take(0, 1000, true);
        bufs.done(piece);
        assert!(bufs.continues(0, 3096, false, 1));
        assert!(
            !bufs.continues(0, 3000, false, 1),
            "buffer 0 is not used up"
        );
        assert!(
            !bufs.continues(0, 3096, true, 1),
            "the kernel goes on in buffer 0"
        );
        assert!(
            !bufs.continues(0, 3096, false, 2),
            "buffer 2 is not next in memory"
        );
        let mut piece = bufs.take(0, 3096, false);
        let next = bufs.take(1, 500, true);
        bufs.join(&mut piece, next);
        assert!(piece.shared());
        assert_eq!(piece.received(), 3596);
        let base = bufs.bufs;
        assert_eq!(
            bufs.bytes(&piece).as_ptr(),
            base.wrapping_add(1000).cast_const()
        );
        assert_eq!(bufs.bytes(&piece).len(), 3596);
        bufs.done(piece);
        // Buffer 0 is back; buffer 1 is still being filled.
        assert_eq!(bufs.available(), 4 * 4096 - 500);
        assert!(
            !bufs.continues(3, 4096, false, 4),
            "no buffer past the last"
        );
        unregister(ring, bufs);
    }

    #[test]
    fn starved_receives_are_armed_in_proportion_to_free_bytes() {
        let mut starved = Starved::default();
        assert_eq!(starved.budget(1 << 20, 16384), 0, "nothing waits");
        for slot in 0..100 {
            starved.push(slot, 0);
        }
        for _ in 0..64 {
            starved.received(16384);
        }
        let budget = starved.budget(256 << 10, 16384);
        assert!((16..=20).contains(&budget), "{budget}");
        // Small receives among large ones: the large ones decide.
        for _ in 0..64 {
            starved.received(8000);
            starved.received(16384);
            starved.received(100);
            starved.received(100);
        }
        let budget = starved.budget(256 << 10, 16384);
        assert!((16..=30).contains(&budget), "{budget}");
        // Then small ones only: it comes down (slowly: large runs weigh more).
        for _ in 0..256 {
            starved.received(125);
        }
        let budget = starved.budget(256 << 10, 16384);
        assert!(budget > 1000, "{budget}");
        assert_eq!(starved.budget(0, 16384), 1, "the queue must move");
        assert_eq!(starved.pop(), Some((0, 0)), "oldest first");
    }
}
