//! The io_uring backend: one ring per shard, owned by the shard's thread and driven by its own
//! completion loop (the `io-uring` crate, no runtime on top: see docs/ARCHITECTURE.md).
//!
//! - One multishot accept on the shard's listener.
//! - A receive per connection that talks (multishot; single-shot for new and woken ones),
//!   into a provided-buffer ring shared by the shard ([`bufring`]): a connection holds a
//!   buffer only while its completion is processed. Silent connections are parked on an
//!   epoll instance instead.
//! - A registered file table that holds the sockets of connections that talk.
//! - Sends are writev of the cork or of shared chunks off the write queue, one in flight per
//!   connection ([`sends`]); their bytes live in a slab until the last completion arrives.
//! - Entries are gathered during an iteration and submitted together with the wait.
//! - Cross-shard wake-ups: a read kept pending on the shard's eventfd.
//! - SINGLE_ISSUER + DEFER_TASKRUN when the kernel has them (COOP_TASKRUN, then none, if not).
//!
//! A connection's socket is shut down before it is closed, so receives and sends still pending
//! on it complete; their late completions carry the slot's old generation and are recognised.

pub mod bufring;
mod conn;
mod park;
mod probe;
pub mod sends;
pub mod tag;
mod udp;
mod write;

pub use conn::{RingConn, Watch};
use park::{park_silent, talking};
pub use probe::probe;
use probe::{DEFER_TASKRUN, build_ring};

use std::io;
use std::mem::ManuallyDrop;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent};

use super::config::ServerConfig;
use super::metrics::ShardStats;
use super::shard::{Next, Shard};
use super::write::Sink;
use bufring::{BufRing, Change, Sizing, Starved};
use sends::UringIo;

/// Submission queue entries per ring; the completion queue is four times larger.
const RING_ENTRIES: u32 = 4096;
/// Provided-buffer group id (one group per ring).
const GROUP: u16 = 0;
/// Completions handled between pushes of the entries they produce.
const CQE_BATCH: usize = 256;
/// Bytes of received data processed per loop iteration before the loop goes round (submits,
/// runs timers, flushes, reads completions again). Bounds how far a write queue can grow
/// between two slow-consumer checks, as the per-turn read limit does under epoll.
const INPUT_PER_ITERATION: usize = 256 << 10;
/// Gathered entries past this are pushed to the kernel mid-iteration; the staging vector's
/// capacity is trimmed back to this.
const SQE_KEEP: usize = 1024;
/// At shutdown, how long to wait for operations still in flight to complete.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Provided buffers a shard starts with when they are consumed incrementally: the ring then
/// only has to hold the bytes received between two turns of the loop (16 x 16 KiB = 256 KiB
/// held 1,000 and 5,000 busy connections sending small messages without running out).
const RING_BUFFERS_INCREMENTAL: u16 = 16;
/// Provided buffers a shard starts with where the kernel cannot consume them incrementally
/// (before Linux 6.12): every receive takes a whole buffer.
const RING_BUFFERS_WHOLE: u16 = 256;
/// Bytes of provided buffers a shard's ring may grow to when receives run out of them (large
/// messages from many connections): the ring grows up to this many bytes' worth of buffers
/// and shrinks back when quiet (see [`bufring`]).
const RING_BYTES_CAP: usize = 1 << 20;

/// The shard's provided buffers, registered with `ring`: `--ring-buffers` of them, always;
/// else 16 consumed incrementally or, where the kernel cannot, 256 consumed whole, each
/// growing on exhaustion up to [`RING_BYTES_CAP`] and shrinking back when quiet.
fn shard_buffers(ring: &IoUring, config: &ServerConfig) -> io::Result<BufRing> {
    let growing = |base: u16| {
        let fit = RING_BYTES_CAP / (config.ring_buffer_size.max(1) as usize);
        // The largest power of two that fits, at least the base, at most 32768.
        let cap = (1u16 << fit.clamp(1, 32768).ilog2()).max(base);
        Sizing { base, cap }
    };
    let (incremental, whole) = config.ring_buffers.map_or_else(
        || {
            (
                growing(RING_BUFFERS_INCREMENTAL),
                growing(RING_BUFFERS_WHOLE),
            )
        },
        |n| (Sizing::fixed(n), Sizing::fixed(n)),
    );
    BufRing::new(
        &ring.submitter(),
        incremental,
        whole,
        config.ring_buffer_size,
        GROUP,
    )
}

/// Slots of each shard's registered file table: room for twice the shard's share of
/// RLIMIT_NOFILE (connections spread unevenly), at most 65,536 (the table costs the kernel 8
/// bytes a slot) and never more than RLIMIT_NOFILE, which the kernel enforces. Connections in
/// slots past it use their plain descriptor.
fn file_table_size(shards: usize) -> u32 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct through the valid pointer it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    let nofile = limit.rlim_cur.min(1 << 16);
    let share = (nofile / shards.max(1) as u64).saturating_mul(2);
    share.clamp(64.min(nofile), nofile) as u32
}

/// What the io_uring loop owns besides the shard.
///
/// The memory the kernel writes into (the provided buffers, the eventfd read's buffer) is freed
/// only once [`Uring::finish`] has seen every operation complete (`clean`); on any other way
/// out (an error, a panic in an application) it is leaked, never freed under the kernel. The
/// memory it reads (sends' bytes, iovecs and message headers, file-table update values) lives
/// in [`UringIo`], which is leaked on those paths too.
pub struct Uring {
    ring: IoUring,
    bufs: ManuallyDrop<BufRing>,
    wake_buf: ManuallyDrop<Box<[u8; 8]>>,
    clean: bool,
    listener: Option<TcpListener>,
    waker: RawFd,
    accept_armed: bool,
    stopping: bool,
    /// Receives that ended for lack of buffers, to arm again as buffers come back.
    starved: Starved,
    cqes: Vec<(u64, i32, u32)>,
    /// Next completion of `cqes` to handle.
    cqe_at: usize,
    /// The setup flags the ring got.
    pub flags: &'static str,
    /// Slots of the registered file table (0: none).
    fixed_files: u32,
    /// Parking: the sweep's period in ms (0: never), and when the next one is due.
    park_ms: u64,
    next_sweep: u64,
    /// Where a sweep that reached its cancellation budget goes on, next iteration.
    sweep_from: Option<usize>,
    /// The epoll instance parked connections wait in (one-shot), itself watched by a
    /// multishot poll on the ring; `None` when parking is off.
    parked: Option<Epoll>,
    parked_armed: bool,
    parked_events: Vec<EpollEvent>,
    /// UDP sockets of the shard's applications, watched edge-triggered; the ring polls it.
    udp: Option<Epoll>,
    udp_armed: bool,
    /// UDP sockets with datagrams left over after their turn.
    udp_again: Vec<u32>,
}

impl Uring {
    /// Slots of the registered file table (connections below this can be put in it).
    pub fn fixed_files(&self) -> u32 {
        self.fixed_files
    }

    /// How long a connection stays silent before it is parked (0: parking is off).
    pub fn park_ms(&self) -> u64 {
        self.park_ms
    }

    /// Whether receives consume the provided buffers incrementally (Linux 6.12).
    pub fn incremental(&self) -> bool {
        self.bufs.incremental()
    }

    /// Provided buffers in the shard's ring now (it grows when receives run out of them).
    pub fn buffers(&self) -> u16 {
        self.bufs.entries()
    }
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("flags", &self.flags)
            .field("bufs", &*self.bufs)
            .field("accept_armed", &self.accept_armed)
            .finish()
    }
}

impl Uring {
    /// Builds the ring and its buffers on the calling (shard) thread. `listener` must be in
    /// blocking mode and `waker` a blocking eventfd: the ring waits on them, not the thread.
    pub fn new(config: &ServerConfig, listener: TcpListener, waker: RawFd) -> io::Result<Self> {
        let (ring, flags) = build_ring()?;
        let bufs = shard_buffers(&ring, config)?;
        let fixed_files = config
            .ring_files
            .unwrap_or_else(|| file_table_size(config.shard_count()));
        let fixed_files =
            if fixed_files > 0 && ring.submitter().register_files_sparse(fixed_files).is_ok() {
                fixed_files
            } else {
                0
            };
        // Parking needs an epoll instance; without one, connections just keep their receive.
        let parked = (config.ring_park_ms > 0)
            .then(|| Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok())
            .flatten();
        Ok(Uring {
            ring,
            bufs: ManuallyDrop::new(bufs),
            wake_buf: ManuallyDrop::new(Box::new([0; 8])),
            clean: false,
            listener: Some(listener),
            waker,
            accept_armed: false,
            stopping: false,
            starved: Starved::default(),
            cqes: Vec::with_capacity(CQE_BATCH),
            cqe_at: 0,
            flags,
            fixed_files,
            park_ms: if parked.is_some() {
                config.ring_park_ms
            } else {
                0
            },
            next_sweep: config.ring_park_ms,
            sweep_from: None,
            parked,
            parked_armed: false,
            parked_events: vec![EpollEvent::empty(); 256],
            udp: None,
            udp_armed: false,
            udp_again: Vec::new(),
        })
    }

    /// Runs the shard until shut down and drained, then waits for every operation in flight.
    pub fn run(mut self, shard: &mut Shard) -> io::Result<()> {
        let mut io = UringIo::default();
        io.fixed_files = self.fixed_files;
        shard.core.io.sink = Sink::Ring(Box::new(io));
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.serve(shard))) {
            Ok(result) => {
                let finished = self.finish(shard);
                result.and(finished)
            }
            Err(panic) => {
                // An application panicked mid-iteration; the shard's state is suspect, so
                // nothing more is done with it. Sends still in flight keep their bytes: leak
                // them (and, through `clean` staying false, the buffers) rather than free them
                // under the kernel.
                std::mem::forget(std::mem::replace(&mut shard.core.io.sink, Sink::Syscalls));
                std::panic::resume_unwind(panic)
            }
        }
    }

    fn serve(&mut self, shard: &mut Shard) -> io::Result<()> {
        self.arm_accept(shard);
        self.arm_wake(shard);
        self.arm_parked(shard);
        let mut expired = Vec::new();
        loop {
            self.watch_udp(shard);
            let timeout = if self.leftover() || !self.udp_again.is_empty() {
                Some(Duration::ZERO)
            } else {
                self.until_sweep(shard, shard.poll_timeout())
            };
            if let Err(e) = self.submit_and_wait(shard, timeout) {
                break Err(e);
            }
            shard.core.now = shard.now();
            if let Err(e) = self.complete(shard) {
                break Err(e);
            }
            let mut udp = std::mem::take(&mut self.udp_again);
            udp.sort_unstable();
            udp.dedup();
            udp.retain(|&socket| shard.udp_readable(socket));
            self.udp_again = udp;
            if self.park_ms > 0 {
                if let Some(from) = self.sweep_from {
                    self.sweep_from = park_silent(shard, from);
                } else if shard.core.now >= self.next_sweep {
                    self.next_sweep = shard.core.now + self.park_ms;
                    self.sweep_from = park_silent(shard, 0);
                }
            }
            if shard.draining() {
                self.stop_accepting(shard);
            } else {
                shard.accept_resumes();
                self.arm_accept(shard);
            }
            if shard.end_of_iteration(&mut expired) == Next::Stop {
                break Ok(());
            }
            let (in_flight, files) = (uio(shard).in_flight, uio(shard).table_len);
            ShardStats::set(&shard.core.io.stats.io_in_flight, in_flight as u64);
            ShardStats::set(&shard.core.io.stats.ring_files, u64::from(files));
        }
    }

    /// Moves the gathered entries into the submission queue, submitting (without waiting)
    /// whenever it is full. Entries that found no room stay gathered for the next round; none
    /// is ever pushed twice.
    fn push_sqes(&mut self, shard: &mut Shard) -> io::Result<()> {
        let io = uio(shard);
        let mut at = 0;
        let mut result = Ok(());
        while at < io.sqes.len() {
            {
                let mut sq = self.ring.submission();
                while at < io.sqes.len() {
                    // SAFETY: every entry points only at memory that outlives its operation:
                    // a send's bytes, iovecs and msghdr stay in the send slab, and the value a
                    // FILES_UPDATE reads stays boxed in `file_updates`, until their
                    // completion; receives use the provided buffers and the eventfd read
                    // `wake_buf`, freed only after every operation has completed. On an error
                    // or a panic all of it is leaked instead (see `Uring` and `Uring::run`).
                    // Sockets are shut down, not just closed, so no operation waits forever,
                    // and a descriptor closes only after its entries were submitted.
                    if unsafe { sq.push(&io.sqes[at]) }.is_err() {
                        break;
                    }
                    at += 1;
                }
            }
            if at < io.sqes.len() {
                match self.ring.submit() {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    // Out of resources or completions backed up: the rest waits a round.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY)) => {
                        break;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        io.sqes.drain(..at);
        // A burst (a broadcast to every connection, a wave of accepts) must not pin its
        // high-water mark.
        if io.sqes.capacity() > SQE_KEEP {
            io.sqes.shrink_to(SQE_KEEP);
        }
        result
    }

    /// Submits what the iteration gathered and waits for a completion or `timeout`.
    fn submit_and_wait(&mut self, shard: &mut Shard, timeout: Option<Duration>) -> io::Result<()> {
        self.push_sqes(shard)?;
        uio(shard).enters += 1;
        let submitter = self.ring.submitter();
        let waited = match timeout {
            None => submitter.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args(1, &args)
            }
        };
        let result = match waited {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        };
        // Once every entry gathered so far has been issued (without SQPOLL, entering the
        // kernel issues them and resolves their descriptors), the descriptors of ended
        // connections can close.
        if result.is_ok() && uio(shard).sqes.is_empty() && self.ring.submission().is_empty() {
            uio(shard).graveyard.clear();
        }
        result
    }

    /// Reads every completion in the queue and handles the sends among them, then the rest in
    /// order, up to [`INPUT_PER_ITERATION`] bytes received; what is left waits for the next
    /// iteration (which then does not sleep). Entries the completions produce go to the kernel
    /// once enough have gathered.
    ///
    /// With DEFER_TASKRUN, completions are posted only while the loop is in the kernel, so the
    /// queue read here is everything the last entry produced. Once its sends are accounted
    /// for, a send still in flight that was submitted by that entry or an earlier one is one
    /// the socket had no room for ([`UringIo::stalled`]), which the slow-consumer check needs;
    /// and the input budget bounds how much a queue can grow before that check sees it.
    fn complete(&mut self, shard: &mut Shard) -> io::Result<()> {
        let mut cqes = std::mem::take(&mut self.cqes);
        let fresh = cqes.len();
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let is_send = |data: u64| matches!(tag::decode(data), Some(tag::Op::Send(_)));
        let is_recv = |data: u64| matches!(tag::decode(data), Some(tag::Op::Recv { .. }));
        for &(data, result, flags) in cqes[fresh..].iter().filter(|c| is_send(c.0)) {
            self.on_completion(shard, data, result, flags);
        }
        // What the provided buffers hold now: every byte received and not processed yet.
        let held: usize = cqes[self.cqe_at..]
            .iter()
            .filter(|c| is_recv(c.0))
            .map(|c| usize::try_from(c.1).unwrap_or(0))
            .sum();
        let mut budget = INPUT_PER_ITERATION;
        let mut handled = 0;
        while self.cqe_at < cqes.len() && budget > 0 {
            let (data, result, flags) = cqes[self.cqe_at];
            if is_send(data) {
                self.cqe_at += 1;
                continue;
            }
            if let Some(tag::Op::Recv { slot, generation }) = tag::decode(data) {
                // The completions that continue this one in the next buffer, joined to it.
                let run = &cqes[self.cqe_at..self.cqe_at + self.recv_run(&cqes[self.cqe_at..])];
                self.cqe_at += run.len();
                for &(_, result, _) in run {
                    budget = budget.saturating_sub(usize::try_from(result).unwrap_or(0));
                }
                // Only the last of a run can end the receive.
                if run.last().is_some_and(|c| !cqueue::more(c.2)) {
                    op_ended(shard);
                }
                self.on_recv(shard, slot, generation, run);
            } else {
                self.cqe_at += 1;
                self.on_completion(shard, data, result, flags);
            }
            handled += 1;
            if handled % CQE_BATCH == 0 && uio(shard).sqes.len() >= SQE_KEEP {
                self.push_sqes(shard)?;
            }
        }
        if self.cqe_at == cqes.len() {
            cqes.clear();
            self.cqe_at = 0;
            if cqes.capacity() > 4 * CQE_BATCH {
                cqes = Vec::with_capacity(CQE_BATCH);
            }
        }
        self.cqes = cqes;
        // Under DEFER_TASKRUN the kernel runs receives only inside io_uring_enter: once every
        // completion read has been handled, nothing it wrote into the buffers is unread.
        let settled = !self.leftover() && self.flags == DEFER_TASKRUN;
        let change = self.bufs.adapt(shard.core.now, held, settled);
        if change != Change::None {
            tracing::debug!(
                shard = shard.core.shard,
                buffers = self.bufs.entries(),
                "provided buffers {}",
                if change == Change::Grew {
                    "grew"
                } else {
                    "shrank"
                }
            );
        }
        // With completions left over, buffers are still held by them: wait until they are
        // processed (the next iteration does not sleep).
        if !self.leftover() {
            self.feed_starved(shard);
        }
        Ok(())
    }

    /// How many completions at the start of `cqes` (a receive's first) are one run of bytes:
    /// each of the receive's completions after the first continues the one before it in the
    /// next buffer (see [`BufRing::continues`]).
    fn recv_run(&self, cqes: &[(u64, i32, u32)]) -> usize {
        let mut run = 1;
        while let (Some(&(data, result, flags)), Some(&(next_data, next_result, next_flags))) =
            (cqes.get(run - 1), cqes.get(run))
        {
            let joins = next_data == data
                && cqueue::more(flags)
                && result > 0
                && next_result > 0
                && match (
                    cqueue::buffer_select(flags),
                    cqueue::buffer_select(next_flags),
                ) {
                    (Some(bid), Some(next)) => {
                        self.bufs
                            .continues(bid, result as usize, buf_more(flags), next)
                    }
                    _ => false,
                };
            if !joins {
                break;
            }
            run += 1;
        }
        run
    }

    /// Arms receives that ran out of buffers, oldest first, as far as the free buffers are
    /// expected to carry them (at least one: see [`Starved::budget`]).
    fn feed_starved(&mut self, shard: &mut Shard) {
        let mut budget = self
            .starved
            .budget(self.bufs.available(), self.bufs.buffer_size());
        while budget > 0 {
            let Some((slot, generation)) = self.starved.pop() else {
                break;
            };
            if !live(shard, slot, generation) {
                continue;
            }
            if shard.core.io.conns[slot as usize].ring.watch == Watch::Parking {
                // A sweep found it silent while it waited and cancelled a receive it did not
                // have: park it (registering checks readiness, so waiting data wakes it).
                self.park(shard, slot, generation);
                continue;
            }
            self.arm_recv(shard, slot, generation);
            budget -= 1;
        }
    }

    /// Completions read but not handled yet (the last iteration used up its input budget).
    fn leftover(&self) -> bool {
        self.cqe_at < self.cqes.len()
    }

    fn on_completion(&mut self, shard: &mut Shard, data: u64, result: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more {
            op_ended(shard);
        }
        match tag::decode(data) {
            Some(tag::Op::Accept) => self.on_accept(shard, result, more),
            Some(tag::Op::Wake) => {
                if !self.stopping {
                    shard.read_mail();
                    self.arm_wake(shard);
                }
            }
            Some(tag::Op::Recv { slot, generation }) => {
                self.on_recv(shard, slot, generation, &[(data, result, flags)]);
            }
            Some(tag::Op::Send(key)) => shard.core.io.on_sent(key, result),
            Some(tag::Op::Parked) => {
                if !more {
                    self.parked_armed = false;
                }
                if !self.stopping {
                    self.unpark_ready(shard);
                    self.arm_parked(shard);
                }
            }
            Some(tag::Op::Udp) => {
                if !more {
                    self.udp_armed = false;
                }
                if !self.stopping {
                    self.udp_ready();
                    self.arm_udp(shard);
                }
            }
            Some(tag::Op::Files(key)) => {
                if uio(shard).file_updated(key, result) {
                    // Entries gathered since may name the slot and fail, ending that
                    // connection with an error; from now on sends name descriptors.
                    ShardStats::add(&shard.core.io.stats.ring_errors, 1);
                }
            }
            Some(tag::Op::Cancel) | None => {}
        }
    }

    fn on_accept(&mut self, shard: &mut Shard, result: i32, more: bool) {
        if !more {
            self.accept_armed = false;
        }
        if result >= 0 {
            // SAFETY: a non-negative accept result is a new descriptor the kernel just opened
            // for this process; nothing else owns it.
            let sock = unsafe { TcpStream::from_raw_fd(result) };
            if shard.draining() || self.stopping {
                return;
            }
            if let Some(slot) = shard.adopt(sock) {
                let conn = &mut shard.core.io.conns[slot];
                if self.park_ms > 0 {
                    // Its first receive is single-shot: the handshake completes it.
                    conn.ring.watch = Watch::Woken;
                }
                let generation = conn.generation;
                self.arm_recv(shard, slot as u32, generation);
            }
            return;
        }
        match -result {
            libc::ECANCELED | libc::EINTR | libc::ECONNABORTED | libc::EAGAIN => {}
            errno => shard.accept_failed(&io::Error::from_raw_os_error(errno)),
        }
    }

    /// A receive's completion, or a run of them that filled adjacent buffers one after the
    /// other (see [`Uring::recv_run`]): their bytes are processed as one piece.
    fn on_recv(&mut self, shard: &mut Shard, slot: u32, generation: u32, run: &[(u64, i32, u32)]) {
        let Some(&(_, result, first_flags)) = run.first() else {
            return;
        };
        // The last completion of the run says whether the receive goes on.
        let flags = run.last().map_or(first_flags, |c| c.2);
        let is_live = live(shard, slot, generation);
        let bid = cqueue::buffer_select(first_flags);
        if result > 0 {
            let mut park_now = false;
            if let Some(bid) = bid {
                let mut piece = self.bufs.take(bid, result as usize, buf_more(first_flags));
                for &(_, result, flags) in &run[1..] {
                    let next = cqueue::buffer_select(flags).unwrap_or_default();
                    let next = self.bufs.take(next, result as usize, buf_more(flags));
                    self.bufs.join(&mut piece, next);
                }
                if piece.shared() {
                    ShardStats::add(&shard.core.io.stats.recv_buffers_shared, 1);
                }
                self.starved.received(piece.received());
                if is_live {
                    let conn = &mut shard.core.io.conns[slot as usize];
                    conn.ring.active = true;
                    // A single-shot receive: the connection is new or was just woken.
                    let first = conn.ring.watch == Watch::Woken;
                    let done = shard.process(slot as usize, self.bufs.bytes(&piece));
                    shard.after_input(slot as usize);
                    let no_message = first && done.messages == 0;
                    let quiet = (done.opened || no_message) && self.quiet(shard, slot, generation);
                    if first {
                        // Parked below, or given its multishot receive there.
                        park_now = quiet;
                    } else if quiet && cqueue::more(flags) {
                        self.cancel_to_park(shard, slot, generation);
                    }
                }
                self.bufs.done(piece);
            } else if is_live {
                shard.input_ended(slot as usize);
            }
            if !cqueue::more(flags) && live(shard, slot, generation) {
                if park_now {
                    self.park(shard, slot, generation);
                } else {
                    // The receive ended with data (a single-shot one, or not by the cancel):
                    // a multishot receive is armed, and a parking that raced with it is called
                    // off. (Data that came with more to follow leaves a parking on; the
                    // connection is parked and woken again by its next input.)
                    shard.core.io.conns[slot as usize].ring.watch = Watch::Receive;
                    self.arm_recv(shard, slot, generation);
                }
            }
            talking(shard, slot, generation);
            return;
        }
        if let Some(bid) = bid {
            let piece = self.bufs.take(bid, 0, buf_more(flags));
            self.bufs.done(piece);
        }
        if result == -libc::ENOBUFS {
            ShardStats::add(&shard.core.io.stats.recv_buffers_exhausted, 1);
            self.bufs.ran_out();
        }
        if !is_live {
            return;
        }
        let parking = shard.core.io.conns[slot as usize].ring.watch == Watch::Parking;
        if parking && (result == -libc::ECANCELED || result == -libc::ENOBUFS) {
            self.park(shard, slot, generation);
        } else if result == -libc::ENOBUFS {
            // Every buffer was taken: the receive waits for buffers to come back, in turn
            // (arming it again at once would most likely fail again, see `bufring`).
            self.starved.push(slot, generation);
        } else {
            // 0: the peer's FIN. Negative: reset or another error.
            shard.input_ended(slot as usize);
        }
    }

    fn arm_accept(&mut self, shard: &mut Shard) {
        let Some(listener) = &self.listener else {
            return;
        };
        if self.accept_armed || shard.accept_paused() {
            return;
        }
        let entry = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(tag::ACCEPT);
        uio(shard).push(entry);
        self.accept_armed = true;
    }

    /// Arms the connection's multishot receive. It names the socket by descriptor even inside
    /// the file table: it looks the file up once, when armed, so the table would save it
    /// little, and before Linux 6.13 a long-lived request on a table slot held back the
    /// release of every file removed from the table after it.
    ///
    /// A connection that is new or was just woken ([`Watch::Woken`]) gets a single-shot receive
    /// instead: a pong or a handshake completes it, and the connection is parked again with
    /// no cancel, its request freed at once.
    fn arm_recv(&mut self, shard: &mut Shard, slot: u32, generation: u32) {
        let conn = &shard.core.io.conns[slot as usize];
        let fd = types::Fd(conn.sock.as_raw_fd());
        let entry = if conn.ring.watch == Watch::Woken {
            // Length 0: as much as the selected buffer holds.
            opcode::Recv::new(fd, std::ptr::null_mut(), 0)
                .buf_group(self.bufs.group)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        } else {
            opcode::RecvMulti::new(fd, self.bufs.group).build()
        };
        let entry = entry.user_data(tag::recv(slot, generation));
        uio(shard).push(entry);
    }

    fn arm_wake(&mut self, shard: &mut Shard) {
        let entry = opcode::Read::new(types::Fd(self.waker), self.wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(tag::WAKE);
        uio(shard).push(entry);
    }

    fn stop_accepting(&mut self, shard: &mut Shard) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        if self.accept_armed {
            uio(shard).push(cancel(tag::ACCEPT));
        }
        uio(shard).graveyard.push(listener.into());
    }

    /// Closes what is left and waits until every operation has completed, so no buffer is
    /// freed while the kernel may still use it. Operations that never complete, or a ring that
    /// fails meanwhile, are an error, and their memory is leaked rather than freed under the
    /// kernel.
    fn finish(&mut self, shard: &mut Shard) -> io::Result<()> {
        self.stopping = true;
        shard.close_all();
        self.stop_accepting(shard);
        uio(shard).push(cancel(tag::WAKE));
        if self.parked_armed {
            uio(shard).push(cancel(tag::PARKED));
        }
        if self.udp_armed {
            uio(shard).push(cancel(tag::UDP));
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut failed = None;
        while uio(shard).in_flight > 0 && Instant::now() < deadline {
            let step = self
                .submit_and_wait(shard, Some(Duration::from_millis(50)))
                .and_then(|()| self.complete(shard));
            if let Err(e) = step {
                failed = Some(e);
                break;
            }
            // Completions may end connections (a send's error): reap them too.
            shard.close_all();
        }
        let left = uio(shard).in_flight;
        if left > 0 || failed.is_some() {
            std::mem::forget(std::mem::replace(&mut shard.core.io.sink, Sink::Syscalls));
            return Err(failed.unwrap_or_else(|| {
                io::Error::other(format!(
                    "io_uring: {left} operations still in flight after {} ms at shutdown",
                    SHUTDOWN_GRACE.as_millis()
                ))
            }));
        }
        let _ = self.ring.submitter().unregister_buf_ring(GROUP);
        uio(shard).graveyard.clear();
        self.clean = true;
        Ok(())
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        if self.clean {
            // SAFETY: `finish` saw every operation complete and unregistered the buffer group,
            // so the kernel holds no reference to this memory; each is dropped once, here, and
            // never used again.
            unsafe {
                ManuallyDrop::drop(&mut self.bufs);
                ManuallyDrop::drop(&mut self.wake_buf);
            }
        }
        // Otherwise both are leaked on purpose: an operation may still write into them.
    }
}

/// The shard's io_uring state (created by [`Uring::run`]).
fn uio(shard: &mut Shard) -> &mut UringIo {
    let sink = &mut shard.core.io.sink;
    if let Sink::Syscalls = sink {
        *sink = Sink::Ring(Box::default());
    }
    match sink {
        Sink::Ring(ring) => ring,
        Sink::Syscalls => unreachable!("set just above"),
    }
}

/// An operation's last completion arrived.
fn op_ended(shard: &mut Shard) {
    let io = uio(shard);
    debug_assert!(io.in_flight > 0, "a completion nobody was waiting for");
    io.in_flight = io.in_flight.saturating_sub(1);
}

/// `IORING_CQE_F_BUF_MORE`: the kernel goes on using the rest of this completion's buffer.
const CQE_F_BUF_MORE: u32 = 1 << 4;

fn buf_more(flags: u32) -> bool {
    flags & CQE_F_BUF_MORE != 0
}

/// An entry cancelling the operation tagged `target`.
fn cancel(target: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(target)
        .build()
        .user_data(tag::CANCEL)
}

/// The connection in `slot` is the one a completion was armed for, and still reads.
fn live(shard: &Shard, slot: u32, generation: u32) -> bool {
    shard.core.io.live(slot, generation).is_some()
}
