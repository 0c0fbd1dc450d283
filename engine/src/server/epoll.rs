//! The epoll backend: edge-triggered readiness through mio, then `read` into the shard's one
//! buffer and `write`/`writev` from the cork and the write queues.

use std::io::{self, Read as _, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::app::Why;
use super::metrics::ShardStats;
use super::shard::{Next, Shard};
use super::write::Io;
use crate::proto::CloseCode;

/// The listener's token.
pub const LISTENER: Token = Token(usize::MAX - 1);
/// The token of the mailbox waker.
pub const WAKER: Token = Token(usize::MAX - 2);

/// Tokens from here up are UDP sockets (slot = token - UDP_BASE); connections' slots stay far
/// below.
const UDP_BASE: usize = usize::MAX / 2;

/// Reads per connection per wake-up before others get a turn (edge-triggered: the rest is
/// picked up on the next iteration without waiting for a new event).
const READS_PER_TURN: usize = 16;

/// What the epoll loop owns besides the shard.
#[derive(Debug)]
pub struct Epoll {
    /// The shard's poll (its waker is registered under [`WAKER`]).
    pub poll: Poll,
    /// The shard's listener, registered under [`LISTENER`]; dropped when draining.
    pub listener: Option<TcpListener>,
    /// The shared read buffer.
    pub buf: Vec<u8>,
    /// Connections with input left over after their turn.
    again: Vec<usize>,
    /// UDP sockets with datagrams left over after their turn.
    udp_again: Vec<u32>,
}

impl Epoll {
    /// A driver over `poll` and `listener` (already registered) with a `buf_size` read buffer.
    pub fn new(poll: Poll, listener: TcpListener, buf_size: usize) -> Self {
        Epoll {
            poll,
            listener: Some(listener),
            buf: vec![0; buf_size],
            again: Vec::new(),
            udp_again: Vec::new(),
        }
    }

    /// Runs the shard until shut down and drained.
    pub fn run(mut self, shard: &mut Shard) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut expired = Vec::new();
        let mut ready = Vec::new();
        loop {
            self.watch_udp(shard);
            let timeout = if self.again.is_empty() && self.udp_again.is_empty() {
                shard.poll_timeout()
            } else {
                Some(std::time::Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            shard.core.now = shard.now();
            ready.clear();
            // Left over from a used-up turn: read until the socket says WouldBlock.
            ready.extend(self.again.drain(..).map(|slot| (slot, true)));
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(shard),
                    WAKER => shard.read_mail(),
                    Token(t) if t >= UDP_BASE => self.udp_again.push((t - UDP_BASE) as u32),
                    Token(slot) => {
                        if event.is_writable() {
                            shard.core.io.drain(slot);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            ready.push((slot, event.is_read_closed() || event.is_error()));
                        }
                    }
                }
            }
            for &(slot, to_the_end) in &ready {
                self.on_readable(shard, slot, to_the_end);
            }
            let mut udp = std::mem::take(&mut self.udp_again);
            udp.sort_unstable();
            udp.dedup();
            udp.retain(|&socket| shard.udp_readable(socket));
            self.udp_again = udp;
            if shard.draining() {
                if let Some(mut l) = self.listener.take() {
                    let _ = self.poll.registry().deregister(&mut l);
                }
            }
            if shard.accept_resumes() {
                self.accept(shard);
            }
            if shard.end_of_iteration(&mut expired) == Next::Stop {
                return Ok(());
            }
        }
    }

    /// Watches the UDP sockets applications bound since the last call (edge-triggered, like
    /// connections: a socket is read until it is dry or its turn is used up). A socket that
    /// cannot be registered is reported and never read.
    fn watch_udp(&mut self, shard: &mut Shard) {
        for (slot, fd) in shard.core.udp.take_fresh() {
            let token = Token(UDP_BASE + slot as usize);
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut SourceFd(&fd), token, Interest::READABLE)
            {
                tracing::error!(shard = shard.core.shard, error = %e, "cannot watch a UDP socket");
                continue;
            }
            // Datagrams may have arrived before the registration.
            self.udp_again.push(slot);
        }
    }

    fn accept(&mut self, shard: &mut Shard) {
        if shard.accept_paused() {
            return;
        }
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let sock = match listener.accept() {
                Ok((sock, _)) => sock,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted =>
                {
                    continue;
                }
                Err(e) => {
                    shard.accept_failed(&e);
                    return;
                }
            };
            // mio accepted it non-blocking (accept4 with SOCK_NONBLOCK); keep it as a plain std
            // socket in the slot.
            let sock = std::net::TcpStream::from(OwnedFd::from(sock));
            let Some(slot) = shard.adopt(sock) else {
                continue;
            };
            let fd = shard.core.io.conns[slot].sock.as_raw_fd();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), Token(slot), interest)
                .is_err()
            {
                shard.abandon(slot);
            }
        }
    }

    /// Reads everything the socket has (up to a turn's worth) and processes it.
    ///
    /// A read shorter than the buffer drained the socket's receive queue, and with
    /// edge-triggered epoll any later data raises a new event, so the read that would only say
    /// WouldBlock is skipped — unless the event also reported the peer's FIN or an error
    /// (`to_the_end`), which only a read to EOF observes.
    fn on_readable(&mut self, shard: &mut Shard, slot: usize, to_the_end: bool) {
        for _ in 0..READS_PER_TURN {
            if !shard.reading(slot) {
                return;
            }
            let sock = &shard.core.io.conns[slot].sock;
            let n = match (&*sock).read(&mut self.buf) {
                Ok(0) => {
                    shard.input_ended(slot);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    shard.input_ended(slot);
                    return;
                }
            };
            let drained = n < self.buf.len();
            let _ = shard.process(slot, &mut self.buf[..n]);
            shard.after_input(slot);
            if drained && !to_the_end {
                return;
            }
        }
        // Turn used up with input possibly pending: continue next iteration.
        self.again.push(slot);
    }
}

/// The epoll half of the write path: output is written with syscalls at once.
impl Io {
    /// epoll: when nothing is queued ahead of it, writes the cork straight to the socket and
    /// queues only what the socket did not take; false (nothing done) otherwise.
    pub(super) fn write_cork(&mut self, slot: usize) -> bool {
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        if conn.dead || conn.queued() > 0 {
            return false;
        }
        match write_some(&mut conn.sock, &self.cork) {
            Ok(written) => {
                ShardStats::add(&self.stats.bytes_out, written as u64);
                if written < self.cork.len() {
                    conn.wq
                        .get_or_insert_with(Box::default)
                        .push_slice(&self.cork[written..]);
                    conn.backlogged = true;
                    ShardStats::add(
                        &self.stats.write_queue_bytes,
                        (self.cork.len() - written) as u64,
                    );
                }
            }
            Err(_) => self.kill(slot, Why::Io, CloseCode(1006)),
        }
        true
    }

    /// epoll: writes as much of `slot`'s write queue as the socket takes (with `writev`). Frees
    /// the queue once empty and finishes a connection that was only waiting for its output.
    pub(super) fn drain_syscalls(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.dead {
            return;
        }
        if let Some(wq) = conn.wq.as_mut() {
            let before = wq.len();
            let result = wq.flush_to(&mut conn.sock);
            let after = wq.len();
            ShardStats::sub(&self.stats.write_queue_bytes, (before - after) as u64);
            ShardStats::add(&self.stats.bytes_out, (before - after) as u64);
            match result {
                Ok(true) => {
                    conn.wq = None;
                    conn.backlogged = false;
                }
                Ok(false) => {
                    conn.backlogged = true;
                    return;
                }
                Err(_) => {
                    self.kill(slot, Why::Io, CloseCode(1006));
                    return;
                }
            }
        }
        if let Some((why, code)) = conn.ending {
            self.kill(slot, why, code);
        }
    }
}

/// Writes as much of `data` as the socket takes; returns how much that was.
fn write_some(w: &mut impl Write, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match w.write(&data[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
