//! The socket side of a worker thread: completing connects and sending the upgrade request,
//! reading into the thread's one buffer and running the handshake check and the protocol core
//! in place, writing (queueing only what the socket refuses), and ending connections.

use std::io::{self, Read as _, Write as _};

use c10m_engine::proto::handshake::{ClientHandshake, ClientRequest};
use c10m_engine::proto::{Connection, Event, Read, State};
use mio::net::TcpStream;

use super::Loop;
use crate::clock::Clock;
use crate::worker::client::{Client, Phase, Role};
use crate::worker::reason::Reason;

/// Reads per connection per wake-up before the others get a turn.
const READS_PER_TURN: usize = 16;

impl Loop {
    /// A connecting socket became writable (or failed): check, then send the upgrade request.
    pub(super) fn on_connect_event(&mut self, slot: usize) {
        let now = self.ctx.now;
        let Some(c) = self.clients.get_mut(slot) else {
            return;
        };
        let Phase::Connecting { since_us } = c.phase else {
            return;
        };
        match c.sock.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                c.ending = Some(Reason::Connect(e));
                return;
            }
        }
        // The server it reached names the Host header (and, under TLS, the server's
        // certificate unless a name was given).
        let peer = match c.sock.peer_addr() {
            Ok(peer) => peer,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => {
                c.ending = Some(Reason::Connect(e));
                return;
            }
        };
        let host = peer.to_string();
        if let Some(tls) = &self.tls {
            match tls.session(peer) {
                Ok(session) => c.tls = Some(session),
                Err(e) => {
                    c.ending = Some(Reason::Connect(e));
                    return;
                }
            }
        }
        // A subscriber coming back is counted among the reconnects, not the run's connections.
        if !c.app.returning() {
            self.ctx.counters.connected += 1;
            self.ctx.hists.connect.record(now.saturating_sub(since_us));
        }
        let mut random = [0u8; 24];
        if let Err(e) = getrandom::fill(&mut random) {
            c.ending = Some(Reason::Connect(io::Error::other(e)));
            return;
        }
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&random[..16]);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&random[16..]);
        let path = if c.app.role == Role::Subscriber {
            &self.sub_path
        } else {
            &self.ctx.plan.path
        };
        let request = ClientRequest {
            host: &host,
            path,
            deflate: self.ctx.plan.deflate,
            ..ClientRequest::default()
        };
        self.out.clear();
        let hs = ClientHandshake::start(&request, nonce, &mut self.out);
        c.phase = Phase::Handshake {
            since_us: now,
            hs: Box::new(hs),
            seed: u64::from_le_bytes(seed),
        };
        self.flush(slot);
    }

    /// Reads what the socket has (up to a turn's worth) and processes it. `to_the_end`: the
    /// event also carried the peer's FIN or an error, which only a read to EOF observes, so a
    /// short read does not end the turn.
    pub(super) fn on_readable(&mut self, slot: usize, to_the_end: bool) {
        let tls = self.tls.is_some();
        for _ in 0..READS_PER_TURN {
            let Some(c) = self.clients.get_mut(slot) else {
                return;
            };
            if c.ending.is_some() || matches!(c.phase, Phase::Connecting { .. }) {
                return;
            }
            let read = match &mut c.tls {
                None => c.sock.read(&mut self.buf),
                Some(tls) => {
                    let read = super::super::tls::read(tls, &mut c.sock, &mut self.buf, &mut c.wq);
                    if !c.wq.is_empty() {
                        drain_queue(c);
                    }
                    read
                }
            };
            let n = match read {
                Ok(0) => {
                    c.ending = Some(match &c.phase {
                        Phase::Handshake { .. } => Reason::HandshakeEof,
                        Phase::Open(conn) if matches!(conn.state(), State::CloseSent { .. }) => {
                            Reason::CloseNoReply
                        }
                        _ => Reason::Eof,
                    });
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    c.ending = Some(match &c.phase {
                        Phase::Open(conn) if matches!(conn.state(), State::CloseSent { .. }) => {
                            Reason::CloseNoReply
                        }
                        Phase::Open(_) => Reason::Io(e),
                        _ => Reason::Connect(e),
                    });
                    return;
                }
            };
            self.ctx.counters.bytes_read += n as u64;
            self.process(slot, n);
            self.flush(slot);
            if self.clients.get(slot).is_none_or(|c| c.ending.is_some()) {
                return;
            }
            // A short read emptied the receive queue: skip the read that would only say
            // EAGAIN. Data arriving later raises a new edge (EPOLLET fires on every arrival).
            // Under TLS a short read says only that one record ended.
            if n < self.buf.len() && !to_the_end && !tls {
                return;
            }
        }
        self.again.push(slot);
    }

    /// Runs the handshake check and the protocol core over `n` fresh bytes in the thread's
    /// buffer (after any carried partial frame) and keeps only an unfinished tail.
    fn process(&mut self, slot: usize, n: usize) {
        let Loop {
            clients,
            buf,
            out,
            ctx,
            proto,
            ..
        } = self;
        let Some(c) = clients.get_mut(slot) else {
            return;
        };
        let mut carried = std::mem::take(&mut c.rbuf);
        let input: &mut [u8] = if carried.is_empty() {
            &mut buf[..n]
        } else {
            carried.extend_from_slice(&buf[..n]);
            &mut carried[..]
        };
        let now_ms = Clock::ms(ctx.now);
        let mut at = 0;
        let mut want = 0;
        while c.ending.is_none() && at < input.len() {
            match &mut c.phase {
                Phase::Connecting { .. } => break,
                Phase::Handshake { since_us, hs, seed } => match hs.parse_response(&input[at..]) {
                    Ok(None) => break,
                    Ok(Some((response, used))) => {
                        at += used;
                        if !c.app.returning() {
                            ctx.hists
                                .handshake
                                .record(ctx.now.saturating_sub(*since_us));
                        }
                        let mut conn = Connection::client(proto.clone(), *seed, now_ms);
                        conn.set_deflate(response.deflate);
                        ctx.on_established(&mut c.app, &mut conn, out);
                        c.phase = Phase::Open(conn);
                    }
                    Err(e) => c.ending = Some(Reason::Handshake(e)),
                },
                Phase::Open(conn) => {
                    let we_closed = matches!(conn.state(), State::CloseSent { .. });
                    match conn.recv(&mut input[at..], out, now_ms) {
                        Ok(Read::Incomplete { frame_len }) => {
                            want = frame_len.unwrap_or(0);
                            break;
                        }
                        Ok(Read::Frame { consumed, event }) => {
                            at += consumed;
                            match event {
                                Some(Event::Message(m)) => {
                                    if let Some(why) = ctx.on_message(&mut c.app, conn, &m, out) {
                                        c.ending = Some(why);
                                    }
                                }
                                Some(Event::Ping(_)) => ctx.counters.pings += 1,
                                Some(Event::Pong(_)) => ctx.counters.pongs += 1,
                                Some(Event::Close(frame)) => {
                                    c.ending = Some(if we_closed {
                                        Reason::ClosedByUs
                                    } else {
                                        Reason::ServerClose(frame.map(|f| f.code.0))
                                    });
                                }
                                None => {}
                            }
                        }
                        Err(e) => c.ending = Some(Reason::Protocol(e)),
                    }
                }
            }
        }
        if c.ending.is_some() || at >= input.len() {
            c.rbuf = Vec::new();
            return;
        }
        if carried.is_empty() {
            let mut tail = Vec::with_capacity(want.max(n - at));
            tail.extend_from_slice(&buf[at..n]);
            c.rbuf = tail;
        } else {
            carried.drain(..at);
            if want > carried.capacity() {
                carried.reserve_exact(want - carried.len());
            }
            c.rbuf = carried;
        }
    }

    /// Writes the thread's output buffer to `slot`, queueing what the socket does not take.
    pub(super) fn flush(&mut self, slot: usize) {
        if self.out.is_empty() {
            return;
        }
        if let Some(c) = self.clients.get_mut(slot) {
            if let Some(tls) = &mut c.tls {
                if let Err(e) = super::super::tls::seal(tls, &self.out, &mut c.wq) {
                    c.ending.get_or_insert(Reason::Io(e));
                }
                drain_queue(c);
            } else if c.wq.is_empty() {
                match write_some(&mut c.sock, &self.out) {
                    Ok(n) if n < self.out.len() => c.wq.extend_from_slice(&self.out[n..]),
                    Ok(_) => {}
                    Err(e) => {
                        c.ending.get_or_insert(Reason::Io(e));
                    }
                }
            } else {
                c.wq.extend_from_slice(&self.out);
                drain_queue(c);
            }
        }
        self.out.clear();
    }

    pub(super) fn write_queued(&mut self, slot: usize) {
        if let Some(c) = self.clients.get_mut(slot) {
            if !c.wq.is_empty() {
                drain_queue(c);
            }
        }
    }

    /// Ends the connection if something marked it.
    pub(super) fn settle(&mut self, slot: usize) {
        if self.clients.get(slot).is_some_and(|c| c.ending.is_some()) {
            self.end(slot);
        }
    }

    /// Removes a connection and counts why it ended. Dropping the socket closes it, which also
    /// takes it out of the epoll set. A subscriber coming back after a drop is counted among
    /// the reconnects, not the run's connections; one that may reconnect waits to (`after`).
    pub(super) fn end(&mut self, slot: usize) {
        let Some(mut c) = self.clients.try_remove(slot) else {
            return;
        };
        let mut reason = c.ending.take().unwrap_or(Reason::Cancelled);
        let returning = c.app.returning();
        let retry = self.may_reconnect(&c.app, &reason);
        let ctx = &mut self.ctx;
        let was_open = match &c.phase {
            Phase::Connecting { .. } => {
                ctx.pending = ctx.pending.saturating_sub(1);
                ctx.counters.connect_failed += u64::from(!returning);
                false
            }
            Phase::Handshake { .. } => {
                ctx.pending = ctx.pending.saturating_sub(1);
                ctx.counters.handshake_failed += u64::from(!returning);
                false
            }
            Phase::Open(conn) => {
                if c.app.subscribing() {
                    ctx.pending = ctx.pending.saturating_sub(1);
                }
                if matches!(conn.state(), State::CloseSent { .. }) && !reason.is_ours() {
                    reason = Reason::CloseNoReply;
                }
                if reason.is_ours() {
                    ctx.counters.closed_by_us += 1;
                } else if !retry {
                    ctx.counters.closed_early += 1;
                }
                true
            }
        };
        self.after(c.app, reason, was_open);
    }
}

/// Writes as much of `bytes` as the socket takes now.
fn write_some(sock: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < bytes.len() {
        match sock.write(&bytes[at..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Writes a connection's queued output; an emptied queue gives its memory back.
fn drain_queue(c: &mut Client) {
    match write_some(&mut c.sock, &c.wq) {
        Ok(n) => {
            c.wq.drain(..n);
            if c.wq.is_empty() {
                c.wq = Vec::new();
            }
        }
        Err(e) => {
            c.ending.get_or_insert(Reason::Io(e));
        }
    }
}
