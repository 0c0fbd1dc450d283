//! Output handed to the kernel under io_uring. A send owns its bytes (a cork buffer and shared
//! chunks) and their iovec array in a slab until its last completion arrives, whatever becomes
//! of the connection meanwhile; entries wait in `sqes` until the loop submits them.
//!
//! A connection whose slot is below [`UringIo::fixed_files`] can have its socket in the ring's
//! registered file table, at the index of its slot, and its entries then name it there: the
//! kernel skips looking the descriptor up (and taking a reference to its file) for every send.
//! The loop puts a connection in the table while it talks and takes it out when it is parked
//! (an entry costs the kernel a 32-byte node, which an idle fleet should not pay). The table is
//! kept in step by FILES_UPDATE entries gathered in the same queue as the sends, so a send
//! names the socket that was in the slot when the send was gathered, never the next one's.

use std::os::fd::RawFd;

use bytes::Bytes;
use io_uring::{opcode, squeue};
use slab::Slab;

use super::tag;

/// What an entry names: a descriptor, or a slot of the registered file table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A plain descriptor.
    Fd(RawFd),
    /// An index into the ring's registered file table.
    Fixed(u32),
}

/// Builds `$build` with `$fd` bound to the io-uring type for `$target` (the crate's own
/// target type cannot be named).
macro_rules! on_target {
    ($target:expr, |$fd:ident| $build:expr) => {
        match $target {
            $crate::server::uring::sends::Target::Fd(raw) => {
                let $fd = io_uring::types::Fd(raw);
                $build
            }
            $crate::server::uring::sends::Target::Fixed(index) => {
                let $fd = io_uring::types::Fixed(index);
                $build
            }
        }
    };
}

/// One send in flight.
#[derive(Debug)]
struct SendOp {
    slot: u32,
    generation: u32,
    fd: RawFd,
    /// A cork buffer moved in whole (written first).
    owned: Vec<u8>,
    /// Shared chunks taken off the write queue (written after `owned`).
    chunks: Vec<Bytes>,
    /// The iovecs the kernel reads; rebuilt for the rest after a short send.
    iov: Vec<libc::iovec>,
    /// The message header of a multi-part send, boxed so it stays put while the op moves
    /// around the slab before submission.
    msg: Option<Box<libc::msghdr>>,
    /// Bytes already written.
    done: usize,
    /// [`UringIo::enters`] when it was last submitted.
    pushed_at: u64,
    total: usize,
}

// SAFETY: the raw pointers in `iov` and `msg` point only into `owned`, `chunks` and `iov`,
// which the op owns and which move with it (their heap memory does not move); nothing else
// aliases them. A shard
// is built on one thread and then moved, whole, to its own.
unsafe impl Send for SendOp {}

impl SendOp {
    fn build_iov(&mut self) {
        self.iov.clear();
        let mut skip = self.done;
        let parts = std::iter::once(&self.owned[..]).chain(self.chunks.iter().map(|c| &c[..]));
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let rest = &part[skip..];
            skip = 0;
            self.iov.push(libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            });
        }
    }
}

/// What a send's completion meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// Not a send this shard knows (cannot happen unless the kernel misbehaves).
    Stale,
    /// The socket took part of it; the caller resumes it with [`UringIo::resume`] if the
    /// connection is still there, else frees it with [`UringIo::release`].
    Partial {
        /// Connection slot.
        slot: u32,
        /// Its generation when the send was made.
        generation: u32,
        /// Bytes written by this completion.
        written: usize,
    },
    /// The send is over: fully written, or failed.
    Done {
        /// Connection slot.
        slot: u32,
        /// Its generation when the send was made.
        generation: u32,
        /// Bytes written by this completion.
        written: usize,
        /// The socket reported an error (reset, broken pipe, canceled).
        failed: bool,
    },
}

/// Sends in flight and submission entries waiting for the loop.
#[derive(Debug, Default)]
pub struct UringIo {
    sends: Slab<SendOp>,
    /// Entries to submit at the next `submit`; every one ends in exactly one final completion.
    pub sqes: Vec<squeue::Entry>,
    /// Operations submitted (or about to be) whose final completion has not arrived.
    pub in_flight: usize,
    /// Cork buffers back from finished sends, reused instead of allocated.
    spare: Vec<Vec<u8>>,
    /// Times the loop has entered the kernel to submit and wait.
    pub enters: u64,
    /// Slots below this can have their socket in the registered file table (0: no table).
    pub fixed_files: u32,
    /// Which slots have their socket in the table now, a bit each (grown as slots are used).
    in_table: Vec<u64>,
    /// How many bits of `in_table` are set.
    pub table_len: u32,
    /// The kernel refused a table update: no socket is put in the table any more, and sends
    /// name descriptors (those still in it are taken out as their connections park or end).
    table_refused: bool,
    /// The descriptors FILES_UPDATE entries read, each boxed so it stays put until the
    /// kernel has taken it, and freed when its entry completes (the key is in its tag).
    file_updates: Slab<Box<RawFd>>,
    /// Descriptors of ended connections (and the listener), closed after the next submission:
    /// a socket is shut down when its connection ends (which completes the operations still
    /// pending on it) and its descriptor kept here until entries already gathered for it have
    /// been submitted, so that no entry can name a descriptor number the process (any shard)
    /// has reused for another socket meanwhile.
    pub graveyard: Vec<std::os::fd::OwnedFd>,
}

/// Spare buffers kept, and the smallest and largest one kept (a small send's bytes were
/// copied into a buffer of their size, too small to become a cork).
const SPARE_BUFFERS: usize = 64;
const SPARE_MIN: usize = 16 << 10;
const SPARE_CAPACITY: usize = 256 << 10;

impl UringIo {
    /// Queues an entry for submission; its final completion is counted back by the loop.
    pub fn push(&mut self, entry: squeue::Entry) {
        self.sqes.push(entry);
        self.in_flight += 1;
    }

    /// How entries for the connection in `slot`, whose descriptor is `fd`, name its socket.
    pub fn target(&self, slot: u32, fd: RawFd) -> Target {
        if self.in_table(slot) && !self.table_refused {
            Target::Fixed(slot)
        } else {
            Target::Fd(fd)
        }
    }

    /// Whether the socket of `slot` is in the registered file table.
    pub fn in_table(&self, slot: u32) -> bool {
        let (word, bit) = (slot as usize / 64, slot % 64);
        self.in_table.get(word).is_some_and(|w| w >> bit & 1 == 1)
    }

    /// An ended connection's socket: out of the file table, shut down, and into the graveyard.
    pub fn bury(&mut self, slot: u32, sock: std::net::TcpStream) {
        self.set_file(slot, -1);
        let _ = sock.shutdown(std::net::Shutdown::Both);
        self.graveyard.push(sock.into());
    }

    /// Puts `fd` at `slot` in the registered file table (or takes the slot's socket out, with
    /// -1), in order with the entries already gathered. No-op for a slot outside the table, or
    /// one that already is as asked.
    pub fn set_file(&mut self, slot: u32, fd: RawFd) {
        if slot >= self.fixed_files
            || self.in_table(slot) == (fd >= 0)
            || (fd >= 0 && self.table_refused)
        {
            return;
        }
        let word = slot as usize / 64;
        if self.in_table.len() <= word {
            self.in_table.resize(word + 1, 0);
        }
        self.in_table[word] ^= 1 << (slot % 64);
        if fd >= 0 {
            self.table_len += 1;
        } else {
            self.table_len -= 1;
        }
        let value = Box::new(fd);
        let entry = opcode::FilesUpdate::new(&*value, 1)
            .offset(slot as i32)
            .build();
        let key = self.file_updates.insert(value);
        self.push(entry.user_data(tag::files(key)));
    }

    /// FILES_UPDATE `key` completed with `result` (slots updated, or `-errno`). Returns whether
    /// it failed; then the table is no longer used for sends.
    pub fn file_updated(&mut self, key: usize, result: i32) -> bool {
        self.file_updates.try_remove(key);
        if self.file_updates.is_empty() && self.file_updates.capacity() > 1024 {
            self.file_updates = Slab::new();
        }
        self.table_refused |= result < 0;
        result < 0
    }

    /// An empty buffer to become the next cork.
    pub fn spare_buffer(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SPARE_MIN))
    }

    /// Sends `owned` then `chunks` to `fd` in one operation; returns the send's key.
    pub fn send(
        &mut self,
        slot: u32,
        generation: u32,
        fd: RawFd,
        owned: Vec<u8>,
        chunks: Vec<Bytes>,
    ) -> u32 {
        let total = owned.len() + chunks.iter().map(Bytes::len).sum::<usize>();
        let key = self.sends.insert(SendOp {
            slot,
            generation,
            fd,
            owned,
            chunks,
            iov: Vec::new(),
            msg: None,
            done: 0,
            pushed_at: 0,
            total,
        });
        self.submit(key);
        key as u32
    }

    /// Whether send `key` is held by the kernel: it was submitted by an earlier entry into the
    /// kernel and its completion, read since, did not come. The socket had no room for it: the
    /// io_uring form of epoll's EAGAIN. (Valid once the completions of the last entry have been
    /// read, as the loop does before anything else.)
    pub fn stalled(&self, key: u32) -> bool {
        self.sends
            .get(key as usize)
            .is_some_and(|op| op.pushed_at < self.enters)
    }

    /// Submits what is left of send `key`: one buffer as a plain send, several as sendmsg,
    /// both with MSG_NOSIGNAL (a reset peer is an error here, never SIGPIPE).
    fn submit(&mut self, key: usize) {
        let target = self.target(self.sends[key].slot, self.sends[key].fd);
        let op = &mut self.sends[key];
        op.pushed_at = self.enters;
        op.build_iov();
        let entry = if let [one] = op.iov[..] {
            on_target!(target, |fd| opcode::Send::new(
                fd,
                one.iov_base as *const u8,
                one.iov_len as u32
            )
            .flags(libc::MSG_NOSIGNAL)
            .build())
        } else {
            // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = op.iov.as_mut_ptr();
            msg.msg_iovlen = op.iov.len() as _;
            let msg = op.msg.insert(Box::new(msg));
            on_target!(target, |fd| opcode::SendMsg::new(
                fd,
                &**msg as *const libc::msghdr
            )
            .flags(libc::MSG_NOSIGNAL as u32)
            .build())
        };
        self.push(entry.user_data(tag::send(key)));
    }

    /// Accounts for a send's completion with result `result` (bytes or `-errno`).
    pub fn complete(&mut self, key: usize, result: i32) -> Sent {
        let Some(op) = self.sends.get_mut(key) else {
            return Sent::Stale;
        };
        let (slot, generation) = (op.slot, op.generation);
        let written = usize::try_from(result).unwrap_or(0);
        if result > 0 && op.done + written < op.total {
            op.done += written;
            return Sent::Partial {
                slot,
                generation,
                written,
            };
        }
        let total = op.total;
        self.release(key);
        Sent::Done {
            slot,
            generation,
            written,
            failed: result <= 0 && total > 0,
        }
    }

    /// Submits the rest of a partial send. Only for a connection still open: its descriptor
    /// number is still its own.
    pub fn resume(&mut self, key: usize) {
        if self.sends.contains(key) {
            self.submit(key);
        }
    }

    /// Frees a send (its cork buffer is kept for reuse).
    pub fn release(&mut self, key: usize) {
        let Some(mut op) = self.sends.try_remove(key) else {
            return;
        };
        let capacity = op.owned.capacity();
        if (SPARE_MIN..=SPARE_CAPACITY).contains(&capacity) && self.spare.len() < SPARE_BUFFERS {
            op.owned.clear();
            self.spare.push(op.owned);
        }
    }

    /// Sends whose completion has not arrived.
    #[cfg(test)]
    pub fn sends_in_flight(&self) -> usize {
        self.sends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov_bytes(op: &SendOp) -> Vec<u8> {
        let mut out = Vec::new();
        for v in &op.iov {
            // SAFETY: every iovec was built from a live slice of `op.owned` or `op.chunks`,
            // which are not touched between build_iov and this read.
            let part = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) };
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn a_short_send_resumes_where_it_stopped() {
        let mut io = UringIo::default();
        io.send(
            7,
            3,
            -1,
            b"head".to_vec(),
            vec![Bytes::from_static(b"0123456789")],
        );
        assert_eq!(io.in_flight, 1);
        assert_eq!(
            io.complete(0, 6),
            Sent::Partial {
                slot: 7,
                generation: 3,
                written: 6
            }
        );
        assert_eq!(io.in_flight, 1, "not resubmitted until the caller says so");
        io.resume(0);
        assert_eq!(iov_bytes(&io.sends[0]), b"23456789");
        assert_eq!(io.in_flight, 2, "the rest was resubmitted");
        assert_eq!(
            io.complete(0, 8),
            Sent::Done {
                slot: 7,
                generation: 3,
                written: 8,
                failed: false
            }
        );
        assert_eq!(io.sends_in_flight(), 0);
        assert_eq!(io.complete(0, 1), Sent::Stale);
    }

    #[test]
    fn only_slots_put_in_the_file_table_are_named_by_index() {
        let mut io = UringIo {
            fixed_files: 100,
            ..UringIo::default()
        };
        assert_eq!(io.target(3, 40), Target::Fd(40), "not in the table yet");
        io.set_file(100, 41);
        assert_eq!(io.in_flight, 0, "no update for a slot past the table");
        assert_eq!(io.target(100, 41), Target::Fd(41));
        io.set_file(3, -1);
        assert_eq!(io.in_flight, 0, "nothing to take out");
        io.set_file(3, 40);
        io.set_file(3, 40);
        assert_eq!(io.in_flight, 1, "put in once");
        assert_eq!(io.target(3, 40), Target::Fixed(3));
        io.set_file(99, 42);
        assert_eq!((io.target(99, 42), io.table_len), (Target::Fixed(99), 2));
        assert_eq!(io.target(35, 43), Target::Fd(43), "a bit of its own");
        io.set_file(99, -1);
        assert_eq!(io.target(99, 42), Target::Fd(42), "taken out");
        assert_eq!((io.target(3, 40), io.table_len), (Target::Fixed(3), 1));

        let keys: Vec<usize> = io
            .sqes
            .iter()
            .map(|e| match tag::decode(e.get_user_data()) {
                Some(tag::Op::Files(key)) => key,
                other => panic!("not a file update: {other:?}"),
            })
            .collect();
        let values: Vec<RawFd> = keys.iter().map(|&k| *io.file_updates[k]).collect();
        assert_eq!(values, [40, 42, -1], "each update reads its own value");
        assert_eq!(io.in_flight, 3);
        assert!(!io.file_updated(keys[1], 1));
        assert_eq!(
            io.file_updates.len(),
            2,
            "kept while their update is pending"
        );
        assert!(
            io.file_updated(keys[0], -libc::EBADF),
            "a refused update is reported"
        );
        assert_eq!(
            io.target(3, 40),
            Target::Fd(40),
            "the table is no longer named"
        );
        io.set_file(7, 44);
        assert_eq!(
            (io.in_flight, io.table_len),
            (3, 1),
            "nothing put in after a refusal"
        );
        io.set_file(3, -1);
        assert_eq!(
            (io.in_flight, io.table_len),
            (4, 0),
            "but sockets are still taken out"
        );
        assert!(!io.file_updated(keys[2], 1));
        assert_eq!(
            io.file_updates.len(),
            1,
            "only the last taking out is pending"
        );
    }

    #[test]
    fn an_error_ends_the_send_and_reports_it() {
        let mut io = UringIo::default();
        io.send(1, 1, -1, b"x".to_vec(), Vec::new());
        assert_eq!(
            io.complete(0, -libc::EPIPE),
            Sent::Done {
                slot: 1,
                generation: 1,
                written: 0,
                failed: true
            }
        );
        assert_eq!(io.sends_in_flight(), 0);
        assert!(io.spare.is_empty(), "a one-byte buffer is no cork to reuse");
    }

    #[test]
    fn a_cork_sized_buffer_comes_back_for_reuse() {
        let mut io = UringIo::default();
        let mut cork = io.spare_buffer();
        cork.extend_from_slice(&[1; 20 << 10]);
        let at = cork.as_ptr();
        io.send(1, 1, -1, cork, Vec::new());
        assert!(matches!(io.complete(0, 20 << 10), Sent::Done { .. }));
        let again = io.spare_buffer();
        assert_eq!(again.as_ptr(), at, "the same buffer, not a new one");
        assert!(again.is_empty());
    }
}
