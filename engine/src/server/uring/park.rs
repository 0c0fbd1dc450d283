//! Parking: a silent connection trades its armed receive for a one-shot registration in an
//! epoll instance the ring polls (far cheaper for the kernel), and gets a receive again when
//! input comes. Sweeps find the silent ones; new and woken connections are parked at once when
//! their first input leaves nothing to do.

use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{opcode, types};
use nix::sys::epoll::{EpollEvent, EpollFlags, EpollTimeout};

use super::super::conn::Phase;
use super::super::metrics::ShardStats;
use super::super::shard::Shard;
use super::conn::Watch;
use super::{Uring, cancel, live, tag, uio};

impl Uring {
    /// The epoll instance of parked connections is readable: every connection it reports
    /// (input, FIN, or an error to read) gets a receive again, which reads whatever it was.
    pub(super) fn unpark_ready(&mut self, shard: &mut Shard) {
        let mut events = std::mem::take(&mut self.parked_events);
        while let Some(epoll) = &self.parked {
            let n = match epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => 0,
            };
            for event in &events[..n] {
                let data = event.data();
                self.unpark(shard, data as u32, (data >> 32) as u32);
            }
            if n < events.len() {
                break;
            }
        }
        self.parked_events = events;
    }

    /// Gives a parked connection its receive back (epoll reported it).
    pub(super) fn unpark(&mut self, shard: &mut Shard, slot: u32, generation: u32) {
        if !live(shard, slot, generation) {
            return;
        }
        let conn = &mut shard.core.io.conns[slot as usize];
        if conn.ring.watch != Watch::Parked {
            return;
        }
        conn.ring.watch = Watch::Woken;
        conn.ring.active = true;
        ShardStats::sub(&shard.core.io.stats.recv_parked, 1);
        self.arm_recv(shard, slot, generation);
    }

    /// Parks a connection that has no receive armed (it was cancelled, or a single-shot one
    /// completed): it waits, one-shot, in the epoll instance (an epoll registration costs the
    /// kernel far less than an armed receive). If that fails, its receive is armed again
    /// instead.
    pub(super) fn park(&mut self, shard: &mut Shard, slot: u32, generation: u32) {
        let conn = &mut shard.core.io.conns[slot as usize];
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
        let mut event = EpollEvent::new(flags, (u64::from(generation) << 32) | u64::from(slot));
        let registered = self.parked.as_ref().is_some_and(|epoll| {
            // Registered since an earlier parking (one-shot leaves it disarmed), or new.
            match epoll.modify(&conn.sock, &mut event) {
                Ok(()) => true,
                Err(nix::errno::Errno::ENOENT) => epoll.add(&conn.sock, event).is_ok(),
                Err(_) => false,
            }
        });
        if registered {
            conn.ring.watch = Watch::Parked;
            ShardStats::add(&shard.core.io.stats.recv_parked, 1);
            uio(shard).set_file(slot, -1);
        } else {
            // Out of epoll watches (fs.epoll.max_user_watches) or memory: parking would fail
            // again at every sweep, so this shard stops parking; the rest keep their receive.
            conn.ring.watch = Watch::Receive;
            conn.ring.active = true;
            self.park_ms = 0;
            ShardStats::add(&shard.core.io.stats.ring_errors, 1);
            self.arm_recv(shard, slot, generation);
        }
    }

    pub(super) fn arm_parked(&mut self, shard: &mut Shard) {
        let Some(epoll) = &self.parked else {
            return;
        };
        if self.parked_armed {
            return;
        }
        let fd = epoll.0.as_raw_fd();
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(tag::PARKED);
        uio(shard).push(entry);
        self.parked_armed = true;
    }

    /// Whether a connection whose handshake this input completed, or which was woken from
    /// parking by input that carried no message (a heartbeat's pong), should be parked at once
    /// rather than at the next sweep: it is open and nothing is left over. Most connections of
    /// a large fleet are idle, and the kernel keeps a request for every receive that was ever
    /// armed at the same time as the others (its request cache), so receives should stay armed
    /// for connections that talk, not for every connection that arrived or answered a ping
    /// within a sweep period.
    pub(super) fn quiet(&self, shard: &Shard, slot: u32, generation: u32) -> bool {
        self.park_ms != 0 && quiet_conn(shard, slot, generation)
    }

    /// Cancels a quiet connection's multishot receive; it is parked when the cancel completes.
    pub(super) fn cancel_to_park(&mut self, shard: &mut Shard, slot: u32, generation: u32) {
        shard.core.io.conns[slot as usize].ring.watch = Watch::Parking;
        ShardStats::add(&shard.core.io.stats.recv_cancels, 1);
        uio(shard).push(cancel(tag::recv(slot, generation)));
    }

    /// How long the loop may wait: `timeout`, cut short by the next parking sweep.
    pub(super) fn until_sweep(&self, shard: &Shard, timeout: Option<Duration>) -> Option<Duration> {
        if self.park_ms == 0 {
            return timeout;
        }
        let sweep = Duration::from_millis(self.next_sweep.saturating_sub(shard.now()));
        Some(timeout.map_or(sweep, |t| t.min(sweep)))
    }
}

/// [`Uring::quiet`]'s verdict on the connection itself (parking being on): open, nothing left
/// over from its input, not ending, and its input watched by a receive.
fn quiet_conn(shard: &Shard, slot: u32, generation: u32) -> bool {
    if !live(shard, slot, generation) {
        return false;
    }
    let conn = &shard.core.io.conns[slot as usize];
    conn.rbuf.is_empty()
        && conn.ending.is_none()
        && matches!(conn.phase, Phase::Open(_))
        && matches!(conn.ring.watch, Watch::Receive | Watch::Woken)
}

/// Receives a sweep cancels per loop iteration: each cancellation brings two completions, so a
/// shard whose connections all fell silent at once does not flood its completion queue, and
/// the entries gathered in one iteration stay few (1,024 at a time grew the staging vector
/// past its kept size and left ~230 KiB of freed heap behind in RSS at 15,000 connections).
const SWEEP_CANCELS: usize = 256;

/// The parking sweep, from slot `from` on: an open connection that received nothing since the
/// last sweep has its multishot receive cancelled; when the cancellation completes it is parked
/// (see [`Watch`]). Each connection's `active` mark is cleared for the next sweep as it is
/// visited. Returns where to go on if the budget ran out first.
pub(super) fn park_silent(shard: &mut Shard, from: usize) -> Option<usize> {
    let io = &mut shard.core.io;
    let ring = io.sink.ring()?;
    let mut budget = SWEEP_CANCELS;
    let mut resume = None;
    for (slot, conn) in io.conns.iter_mut().filter(|(slot, _)| *slot >= from) {
        let open = matches!(conn.phase, Phase::Open(_));
        let receiving = matches!(conn.ring.watch, Watch::Receive | Watch::Woken);
        if open && !conn.ring.active && !conn.dead && receiving {
            if budget == 0 {
                resume = Some(slot);
                break;
            }
            budget -= 1;
            conn.ring.watch = Watch::Parking;
            ring.push(cancel(tag::recv(slot as u32, conn.generation)));
        }
        conn.ring.active = false;
    }
    ShardStats::add(&io.stats.recv_cancels, (SWEEP_CANCELS - budget) as u64);
    resume
}

/// The connection in `slot` received input and keeps its receive (it was not parked): it talks,
/// so its socket goes into the registered file table, if there is room and it is not there yet.
/// Connections leave the table when they are parked or end: an entry costs the kernel a 32-byte
/// node, which connections that stay silent between heartbeats should not pay.
pub(super) fn talking(shard: &mut Shard, slot: u32, generation: u32) {
    let io = &mut shard.core.io;
    let Some(conn) = io.live(slot, generation).map(|i| &io.conns[i]) else {
        return;
    };
    if conn.ring.watch == Watch::Receive && matches!(conn.phase, Phase::Open(_)) {
        let fd = conn.sock.as_raw_fd();
        if let Some(ring) = io.sink.ring() {
            ring.set_file(slot, fd);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Parking decisions on the deterministic shard ([`Harness`]): which connections a sweep
    //! cancels the receive of, how far one sweep goes, and which connections are quiet enough
    //! to park at once. The shard writes through an io_uring sink whose entries are only
    //! gathered (never submitted), so the decisions are read from the connections' state and
    //! the entries gathered, with no ring and no timing.
    use super::*;
    use crate::proto::Message;
    use crate::server::harness::{Client, Harness};
    use crate::server::write::Sink;
    use crate::server::{App, ConnId, Ctx, ServerConfig};

    struct Silent;

    impl App for Silent {
        fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: Message<'_>) {}
    }

    /// A shard with `n` open connections (handshakes written through syscalls), then writing
    /// through an io_uring sink.
    fn shard_with(n: usize) -> (Harness, Vec<Client>) {
        let mut h = Harness::new(ServerConfig::default(), || Box::new(Silent));
        let peers = (0..n).map(|_| h.open().0).collect();
        h.shard.core.io.sink = Sink::Ring(Box::default());
        (h, peers)
    }

    fn watch(h: &Harness, peer: &Client) -> Watch {
        h.shard.core.io.conns[peer.slot].ring.watch
    }

    fn gathered(h: &mut Harness) -> usize {
        h.shard.core.io.sink.ring().map_or(0, |r| r.sqes.len())
    }

    #[test]
    fn a_sweep_cancels_the_receives_of_connections_silent_since_the_last_one() {
        let (mut h, peers) = shard_with(3);
        // Not open yet: never parked.
        let half = h.connect();
        // New connections count as active: the first sweep only clears the marks.
        assert_eq!(park_silent(&mut h.shard, 0), None);
        assert_eq!(gathered(&mut h), 0);
        assert!(peers.iter().all(|p| watch(&h, p) == Watch::Receive));
        // Input reached the first one since (the completion handler marks it).
        h.shard.core.io.conns[peers[0].slot].ring.active = true;
        assert_eq!(park_silent(&mut h.shard, 0), None);
        assert_eq!(gathered(&mut h), 2, "one cancel per silent connection");
        assert_eq!(watch(&h, &peers[0]), Watch::Receive);
        assert_eq!(watch(&h, &peers[1]), Watch::Parking);
        assert_eq!(watch(&h, &peers[2]), Watch::Parking);
        assert_eq!(
            watch(&h, &half),
            Watch::Receive,
            "a handshake in progress keeps its receive"
        );
        // Silent through the next period too: now it goes; the others are not cancelled again.
        assert_eq!(park_silent(&mut h.shard, 0), None);
        assert_eq!(gathered(&mut h), 3);
        assert_eq!(watch(&h, &peers[0]), Watch::Parking);
        assert_eq!(watch(&h, &half), Watch::Receive);
    }

    #[test]
    fn a_sweep_stops_at_its_budget_and_resumes_where_it_stopped() {
        let n = SWEEP_CANCELS + 5;
        let (mut h, peers) = shard_with(n);
        assert_eq!(park_silent(&mut h.shard, 0), None, "marks cleared");
        let resume = park_silent(&mut h.shard, 0).expect("the budget ran out");
        assert_eq!(gathered(&mut h), SWEEP_CANCELS);
        let parking = |h: &Harness| {
            peers
                .iter()
                .filter(|p| watch(h, p) == Watch::Parking)
                .count()
        };
        assert_eq!(parking(&h), SWEEP_CANCELS);
        assert_eq!(park_silent(&mut h.shard, resume), None);
        assert_eq!(gathered(&mut h), n);
        assert_eq!(
            parking(&h),
            n,
            "every silent connection, each cancelled once"
        );
    }

    #[test]
    fn only_an_open_connection_with_nothing_left_over_is_quiet() {
        let (mut h, mut peers) = shard_with(3);
        let id = |h: &Harness, p: &Client| h.id(p);
        let quiet = |h: &Harness, p: &Client| {
            let c = id(h, p);
            quiet_conn(&h.shard, c.slot(), c.generation())
        };
        assert!(quiet(&h, &peers[0]));
        // Half a frame read and kept: input is pending, so its receive stays.
        let mut frame = vec![0x81, 0x85, 1, 2, 3, 4];
        frame.extend_from_slice(b"he");
        peers[1].write(&frame);
        h.pump(&peers[1]);
        assert!(!h.shard.core.io.conns[peers[1].slot].rbuf.is_empty());
        assert!(!quiet(&h, &peers[1]));
        // Parked already, or being parked: nothing to decide.
        h.shard.core.io.conns[peers[2].slot].ring.watch = Watch::Parked;
        assert!(!quiet(&h, &peers[2]));
        h.shard.core.io.conns[peers[2].slot].ring.watch = Watch::Parking;
        assert!(!quiet(&h, &peers[2]));
        h.shard.core.io.conns[peers[2].slot].ring.watch = Watch::Woken;
        assert!(quiet(&h, &peers[2]));
        // A handshake in progress is not.
        let half = h.connect();
        let generation = h.shard.core.io.conns[half.slot].generation;
        assert!(!quiet_conn(&h.shard, half.slot as u32, generation));
    }
}
