//! One shard: a thread with its own listener (`SO_REUSEPORT`), its connections in a slab, a
//! timer wheel, and a mailbox for the other shards. The I/O loop around it is a backend:
//! `epoll.rs` (edge-triggered readiness through mio) or `uring/` (completions from io_uring).
//!
//! A backend's loop: wait; accept; hand each connection's fresh bytes to [`Shard::process`]
//! (the protocol core runs on them in place) and then [`Shard::after_input`]; read mail on a
//! wake-up; call [`Shard::end_of_iteration`] (timers, gathered output, reaping).

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use slab::Slab;

use super::Routes;
use super::admission::Refusal;
use super::app::{App, Closed, Why};
use super::app_timer::AppTimers;
use super::config::ServerConfig;
use super::conn::{Answer, Conn, NO_TIMER, Phase};
use super::core::Core;
use super::ctx::Ctx;
use super::handle::Handle;
use super::id::ConnId;
use super::mailbox::Mail;
use super::metrics::{HEARTBEAT_MS, ShardStats};
use super::timer::Entry;
use super::timer::TimerWheel;
use super::tls::{Opened, Sessions};
use super::topics::Topics;
use super::udp::Udp;
use super::udp::{BATCH, Received, UdpId};
use super::upgrade::{DEFERRED_INPUT_MAX, Upgrade, UpgradeRequest};
use super::write::Out;
use super::write::{Io, Sink};
use crate::proto::deflate;
use crate::proto::handshake::{self, Accept, Limits};
use crate::proto::{CloseCode, Connection, Error, Event, HandshakeError, Read, State, TimeoutKind};

/// The answer to a connection the shard has no room for.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\
Retry-After: 1\r\nConnection: close\r\n\r\n";

/// How long accept pauses after EMFILE/ENFILE before trying again.
pub const ACCEPT_BACKOFF_MS: u64 = 100;

/// A shard's state, whatever the backend.
pub struct Shard {
    pub(crate) core: Core,
    pub(crate) apps: Vec<Box<dyn App>>,
    pub(crate) routes: Arc<Routes>,
    pub(crate) mail: Receiver<Mail>,
    pub(crate) clock: Instant,
    pub(crate) accept_paused_until: Option<u64>,
    pub(crate) draining_until: Option<u64>,
}

/// What processing a connection's input did, for the backend (io_uring parks a connection
/// whose input opened it or carried no message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Processed {
    /// Whole messages delivered to the application.
    pub messages: u32,
    /// The opening handshake completed.
    pub opened: bool,
}

/// Mail handled per loop iteration before connections get their turn again.
const MAIL_PER_ITERATION: usize = 4096;

/// The least a partial frame's buffer grows by.
const GROW_STEP: usize = 64 << 10;

/// Batches read from one UDP socket per readiness report before others get a turn.
const UDP_TURNS: usize = 8;

/// What the loop does after an iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep going.
    Continue,
    /// Drained (or out of time): every connection is gone; stop.
    Stop,
}

impl Shard {
    /// Shard `index`: its core (connections, topics, timers), its apps (one per route), its
    /// mailbox. `clock` is the server's start, the zero of the shard clock.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: u16,
        config: Arc<ServerConfig>,
        proto: Arc<crate::proto::Config>,
        handle: Handle,
        stats: Arc<ShardStats>,
        (apps, routes): (Vec<Box<dyn App>>, Arc<Routes>),
        mail: Receiver<Mail>,
        clock: Instant,
    ) -> Self {
        let io = Io {
            conns: Slab::new(),
            generations: Vec::new(),
            cork: Vec::with_capacity(64 << 10),
            corked: None,
            stats,
            limit: config.write_queue_limit,
            dead: Vec::new(),
            dirty: Vec::new(),
            delay_ms: config.write_delay_ms,
            flush_due: None,
            sink: Sink::Syscalls,
            tls: handle
                .shared
                .tls
                .clone()
                .map(|acceptor| Box::new(Sessions::new(acceptor))),
        };
        let core = Core {
            shard: index,
            io,
            topics: Topics::default(),
            timers: TimerWheel::new(config.timer_tick_ms),
            app_timers: AppTimers::default(),
            udp: Udp::default(),
            answered: Vec::new(),
            pending: HashMap::new(),
            gate: super::admission::Gate::new(
                handle.shared.admission.clone(),
                handle.shared.peers.len(),
            ),
            handle,
            config,
            app_protos: Vec::new(),
            proto,
            now: 0,
            current_app: 0,
            scratch: Vec::new(),
        };
        Shard {
            core,
            apps,
            routes,
            mail,
            clock,
            accept_paused_until: None,
            draining_until: None,
        }
    }

    /// The shard clock, ms since the server started.
    pub fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Whether a graceful shutdown has begun (the backend stops accepting).
    pub fn draining(&self) -> bool {
        self.draining_until.is_some()
    }

    /// Whether accepting is paused after an accept error, or stopped by a drain.
    pub fn accept_paused(&self) -> bool {
        self.accept_paused_until.is_some() || self.draining_until.is_some()
    }

    /// The pause after an accept error is over: accepting resumes (returns true once).
    pub fn accept_resumes(&mut self) -> bool {
        if self.accept_paused_until.is_some_and(|t| self.core.now >= t) {
            self.accept_paused_until = None;
            return true;
        }
        false
    }

    /// An accept failed with `e` (EMFILE, ENFILE, ENOBUFS, ENOMEM): the backlog keeps the
    /// connection; pause instead of spinning on an accept that cannot succeed.
    pub fn accept_failed(&mut self, e: &io::Error) {
        let stats = &self.core.io.stats;
        ShardStats::add(&stats.accept_errors, 1);
        if stats.accept_errors.load(Ordering::Relaxed) == 1 {
            tracing::warn!(
                shard = self.core.shard,
                error = %e,
                backoff_ms = ACCEPT_BACKOFF_MS,
                "accept failed; pausing accepts, a backoff at a time"
            );
        }
        self.accept_paused_until = Some(self.core.now + ACCEPT_BACKOFF_MS);
    }

    /// Takes a freshly accepted socket into the slab; `None` when the shard is full (the
    /// socket is closed).
    pub fn adopt(&mut self, sock: TcpStream) -> Option<usize> {
        let io = &mut self.core.io;
        if io.conns.len() >= self.core.config.max_connections_per_shard {
            // Refused before any state is allocated for it, with an answer the client (or a
            // load balancer) can act on; one attempt to write it, never a wait.
            ShardStats::add(&io.stats.refused, 1);
            if io.stats.refused.load(Ordering::Relaxed) == 1 {
                tracing::warn!(
                    shard = self.core.shard,
                    limit = self.core.config.max_connections_per_shard,
                    "shard full: refusing connections with 503 (counted in c10m_refused_total)"
                );
            }
            if io.tls.is_none() {
                // (A TLS client could not read a plain answer: it is only closed.)
                let _ = sock.set_nonblocking(true);
                let _ = (&sock).write(REFUSED);
            }
            return None;
        }
        if let Err(refusal) = self
            .core
            .gate
            .admit(&sock, io.conns.vacant_key(), self.core.now)
        {
            let stats = &io.stats;
            let counter = match refusal {
                Refusal::SourceConnections => &stats.refused_source_connections,
                Refusal::SourceRate => &stats.refused_source_rate,
                Refusal::GlobalRate => &stats.refused_global_rate,
            };
            ShardStats::add(counter, 1);
            if io.tls.is_none() {
                let _ = sock.set_nonblocking(true);
                let _ = (&sock).write(refusal.answer());
            }
            return None;
        }
        let _ = sock.set_nodelay(true);
        let entry = io.conns.vacant_entry();
        let slot = entry.key();
        if let Some(tls) = io.tls.as_deref_mut() {
            if let Err(e) = tls.start(slot) {
                tracing::error!(shard = self.core.shard, error = %e, "cannot start a TLS session");
                self.core.gate.closed(slot, self.core.now);
                return None;
            }
        }
        if slot >= io.generations.len() {
            io.generations.resize(slot + 1, 0);
        }
        let generation = ConnId::next_generation(io.generations[slot]);
        io.generations[slot] = generation;
        let deadline = self.core.now + self.core.config.handshake_timeout_ms;
        entry.insert(Conn::new(sock, generation, deadline));
        ShardStats::add(&io.stats.accepted, 1);
        ShardStats::add(&io.stats.connections, 1);
        self.core.arm(slot);
        Some(slot)
    }

    /// Forgets a connection the backend could not set up (no `on_close`: it never opened).
    pub fn abandon(&mut self, slot: usize) {
        if self.core.io.conns.try_remove(slot).is_some() {
            if let Some(tls) = self.core.io.tls.as_deref_mut() {
                tls.end(slot);
            }
            ShardStats::sub(&self.core.io.stats.connections, 1);
            self.core.gate.closed(slot, self.core.now);
        }
    }

    /// The connection's input ended (EOF) or failed.
    pub fn input_ended(&mut self, slot: usize) {
        self.core.io.kill(slot, Why::Io, CloseCode(1006));
    }

    /// After a connection's input was processed: writes its cork, and starts ending it if the
    /// protocol said so.
    pub fn after_input(&mut self, slot: usize) {
        self.core.io.flush_cork();
        if let Some(conn) = self.core.io.conns.get(slot) {
            if let (Some((why, code)), false) = (conn.ending, conn.dead) {
                self.core.io.finish(slot, why, code);
                self.core.arm(slot);
            }
        }
    }

    /// Whether the connection still takes input.
    pub fn reading(&self, slot: usize) -> bool {
        self.core.io.conns.get(slot).is_some_and(|c| !c.dead)
    }

    /// Timers, gathered output, reaping, and the drain deadline: the end of every iteration.
    pub fn end_of_iteration(&mut self, expired: &mut Vec<Entry>) -> Next {
        ShardStats::set(&self.core.io.stats.loop_at_ms, self.core.now);
        self.core.timers.advance(self.core.now, expired);
        for entry in expired.drain(..) {
            self.on_timer(entry);
        }
        while let Some(due) = self.core.app_timers.pop_due(self.core.now) {
            if let Some(app) = self.apps.get_mut(usize::from(due.app)) {
                self.core.current_app = due.app;
                app.on_timer(
                    &mut Ctx {
                        core: &mut self.core,
                    },
                    due.token,
                );
            }
        }
        self.apply_answers();
        self.core.io.flush_gathered(self.core.now);
        self.core.udp.flush();
        self.reap();
        if let Some(deadline) = self.draining_until {
            if self.core.io.conns.is_empty() {
                return Next::Stop;
            }
            if self.core.now >= deadline {
                self.close_all();
                return Next::Stop;
            }
        }
        Next::Continue
    }

    /// Drops every connection at once (end of the drain, or the loop failed).
    pub fn close_all(&mut self) {
        let slots: Vec<usize> = self.core.io.conns.iter().map(|(s, _)| s).collect();
        for slot in slots {
            self.core
                .io
                .kill(slot, Why::Shutdown, CloseCode::GOING_AWAY);
        }
        self.reap();
    }

    /// How long the backend may sleep: until the next timer, accept resumption or drain
    /// deadline, and at most [`HEARTBEAT_MS`] (an idle shard still shows `/health` it runs).
    pub fn poll_timeout(&self) -> Option<Duration> {
        let now = self.now();
        let mut wait = Some(
            self.core
                .timers
                .next_wake(now)
                .map_or(HEARTBEAT_MS, |w| w.min(HEARTBEAT_MS)),
        );
        let app_timer = self.core.app_timers.next_deadline();
        let flush = self.core.io.flush_wait(now).map(|d| now + d);
        for t in [
            self.accept_paused_until,
            self.draining_until,
            app_timer,
            flush,
        ]
        .into_iter()
        .flatten()
        {
            let d = t.saturating_sub(now);
            wait = Some(wait.map_or(d, |w| w.min(d)));
        }
        wait.map(Duration::from_millis)
    }

    /// Runs the protocol on `fresh` bytes just received (after any carried partial frame), in
    /// place, and keeps what remains incomplete. The caller's buffer is free again on return.
    pub fn process(&mut self, slot: usize, fresh: &mut [u8]) -> Processed {
        if self.core.io.tls.as_ref().is_some_and(|t| t.has(slot)) {
            return self.process_tls(slot, fresh);
        }
        let done = self.process_input(slot, fresh);
        self.count_partial_input(slot);
        done
    }

    /// wss://: `cipher` goes through the connection's TLS session, and the plaintext out of
    /// it through the protocol as in [`Shard::process`]. A TLS failure ends the connection
    /// once the alert rustls queued is written; `close_notify` ends its input.
    fn process_tls(&mut self, slot: usize, cipher: &[u8]) -> Processed {
        let Some(tls) = self.core.io.tls.as_deref_mut() else {
            return Processed::default();
        };
        let mut plain = tls.take_plain();
        let opened = tls.open(slot, cipher, &mut plain);
        let done = self.process_input(slot, &mut plain);
        self.count_partial_input(slot);
        if let Some(tls) = self.core.io.tls.as_deref_mut() {
            tls.restore_plain(plain);
        }
        let failed = match opened {
            Opened::Open => return done,
            Opened::Ended => {
                self.input_ended(slot);
                return done;
            }
            Opened::HandshakeFailed => {
                ShardStats::add(&self.core.io.stats.handshake_failures, 1);
                Why::HandshakeFailed
            }
            Opened::Failed => Why::ProtocolError,
        };
        if let Some(conn) = self.core.io.conns.get_mut(slot) {
            conn.ending.get_or_insert((failed, CloseCode(1006)));
        }
        done
    }

    /// Counts what the connection holds of unfinished input against the process's budget
    /// (`budget.rs`); past it, the connection is closed with 1013 and its buffer dropped.
    fn count_partial_input(&mut self, slot: usize) {
        let Some(conn) = self.core.io.conns.get_mut(slot) else {
            return;
        };
        let reassembly = match &conn.phase {
            Phase::Open(p) => p.held(),
            Phase::Handshake { .. } => 0,
        };
        let held = u32::try_from(conn.rbuf.capacity() + reassembly).unwrap_or(u32::MAX);
        let counted = conn.held;
        let budget = &self.core.handle.shared.partial_input;
        let stats = &self.core.io.stats;
        if held <= counted {
            budget.give((counted - held) as usize);
            ShardStats::sub(&stats.partial_input_bytes, u64::from(counted - held));
            conn.held = held;
            return;
        }
        if budget.take((held - counted) as usize) {
            ShardStats::add(&stats.partial_input_bytes, u64::from(held - counted));
            conn.held = held;
            return;
        }
        if conn.dead || conn.ending.is_some() {
            return; // on its way out: reaping gives back what it holds
        }
        conn.rbuf = Vec::new();
        let open = matches!(conn.phase, Phase::Open(_));
        let id = ConnId::new(self.core.shard, slot as u32, conn.generation);
        if open {
            let _ = self
                .core
                .close_local(id, CloseCode(1013), "server over its input budget");
            self.core.io.finish(slot, Why::Overloaded, CloseCode(1013));
        } else {
            self.core.io.kill(slot, Why::Overloaded, CloseCode(1006));
        }
    }

    fn process_input(&mut self, slot: usize, fresh: &mut [u8]) -> Processed {
        ShardStats::add(&self.core.io.stats.bytes_in, fresh.len() as u64);
        let mut done = Processed::default();
        let Shard {
            core, apps, routes, ..
        } = self;
        let Some(conn) = core.io.conns.get_mut(slot) else {
            return done;
        };
        core.io.corked = Some(slot);
        let mut carried = std::mem::take(&mut conn.rbuf);
        let was_carried = !carried.is_empty();
        let input: &mut [u8] = if was_carried {
            carried.extend_from_slice(fresh);
            &mut carried[..]
        } else {
            fresh
        };
        let mut at = 0;
        let mut want = 0;
        loop {
            let Some(conn) = core.io.conns.get_mut(slot) else {
                return done;
            };
            if conn.dead || conn.ending.is_some() {
                at = input.len();
                break;
            }
            let id = ConnId::new(core.shard, slot as u32, conn.generation);
            let app = usize::from(conn.app);
            let now = core.now;
            let proto = match &mut conn.phase {
                Phase::Open(p) => p,
                Phase::Handshake {
                    answer: Answer::Waiting,
                    ..
                } => {
                    // The application is deciding: keep the request (and anything after it,
                    // within bounds) for when it answers.
                    if input.len() - at > core.config.max_header_bytes + DEFERRED_INPUT_MAX {
                        ShardStats::add(&core.io.stats.handshake_failures, 1);
                        core.io.kill(slot, Why::HandshakeFailed, CloseCode(1006));
                        at = input.len();
                    }
                    break;
                }
                Phase::Handshake { .. } => {
                    match handshake(core, apps, routes, slot, &input[at..]) {
                        Handshake::Open(used) => {
                            at += used;
                            done.opened = true;
                            continue;
                        }
                        Handshake::Wait => break,
                        Handshake::Refused => {
                            at = input.len();
                            break;
                        }
                    }
                }
            };
            let we_closed = matches!(proto.state(), State::CloseSent { .. });
            match proto.recv(&mut input[at..], &mut core.io.cork, now) {
                Ok(Read::Incomplete { frame_len }) => {
                    want = frame_len.unwrap_or(0);
                    break;
                }
                Ok(Read::Frame { consumed, event }) => {
                    at += consumed;
                    match event {
                        Some(Event::Message(message)) => {
                            ShardStats::add(&core.io.stats.messages_in, 1);
                            done.messages += 1;
                            core.current_app = app as u8;
                            apps[app].on_message(&mut Ctx { core }, id, message);
                        }
                        Some(Event::Close(frame)) => {
                            let code = frame.map_or(CloseCode(1005), |f| f.code);
                            let why = if we_closed {
                                Why::LocalClosed
                            } else {
                                Why::PeerClosed
                            };
                            // The close reply is in the cork; the server closes TCP first once it
                            // is written (section 7.1.1).
                            core.io.conns[slot].ending = Some((why, code));
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    let code = e.close_code().unwrap_or(CloseCode(1006));
                    let why = if matches!(e, Error::Closed) {
                        Why::LocalClosed
                    } else {
                        Why::ProtocolError
                    };
                    core.io.conns[slot].ending = Some((why, code));
                    at = input.len();
                    break;
                }
            }
        }
        // Keep only the unfinished tail; an idle connection holds no buffer.
        let Some(conn) = core.io.conns.get_mut(slot) else {
            return done;
        };
        if at >= input.len() {
            conn.rbuf = Vec::new();
            return done;
        }
        let tail_len = input.len() - at;
        // Room for the announced frame, but never more than twice what has arrived (plus
        // a read's worth): a 14-byte header announcing 16 MiB must not reserve 16 MiB before
        // any of it is sent. The buffer grows with the bytes instead.
        let room = |have: usize| want.min(have.saturating_mul(2).max(GROW_STEP));
        if !was_carried {
            let mut tail = Vec::with_capacity(room(tail_len).max(tail_len));
            tail.extend_from_slice(&input[at..]);
            conn.rbuf = tail;
        } else {
            carried.drain(..at);
            let target = room(carried.len());
            if target > carried.capacity() {
                carried.reserve_exact(target - carried.len());
            }
            conn.rbuf = carried;
        }
        done
    }

    /// Answers the deferred upgrades the application decided this iteration: each request is
    /// parsed again from the connection's buffer and answered as the application said.
    fn apply_answers(&mut self) {
        while let Some(slot) = self.core.answered.pop() {
            if self.reading(slot) {
                let _ = self.process(slot, &mut []);
                self.after_input(slot);
            }
        }
    }

    /// Calls every application's `on_start` (before the backend's loop), after reading its
    /// message limit.
    pub fn start_apps(&mut self) {
        let base = self.core.proto.clone();
        self.core.app_protos = self
            .apps
            .iter()
            .map(|app| match app.max_message_size() {
                Some(max) if max < base.max_message_size => Arc::new(crate::proto::Config {
                    max_message_size: max,
                    max_frame_size: base.max_frame_size.min(max),
                    ..(*base).clone()
                }),
                _ => base.clone(),
            })
            .collect();
        for (i, app) in self.apps.iter_mut().enumerate() {
            self.core.current_app = i as u8;
            app.on_start(&mut Ctx {
                core: &mut self.core,
            });
        }
    }

    /// Calls every application's `on_stop` (after the backend's loop) and sends what they
    /// queued last.
    pub fn stop_apps(&mut self) {
        for (i, app) in self.apps.iter_mut().enumerate() {
            self.core.current_app = i as u8;
            app.on_stop(&mut Ctx {
                core: &mut self.core,
            });
        }
        self.core.udp.flush();
    }

    /// A UDP socket is readable: hands its datagrams to its application, a batch at a time,
    /// for a bounded number of batches. True when it may hold more (its turn was used up: the
    /// backend calls again next iteration); false when it was read dry or is gone.
    pub fn udp_readable(&mut self, socket: u32) -> bool {
        let id = UdpId(socket);
        for _ in 0..UDP_TURNS {
            let Some(app) = self.core.udp.app(id) else {
                return false;
            };
            let n = match self.core.udp.receive(id) {
                Received::Empty => return false,
                Received::Batch(n) => n,
            };
            let Some(batch) = self.core.udp.take_batch() else {
                return false;
            };
            let datagrams = batch.datagrams();
            if let Some(a) = self.apps.get_mut(usize::from(app)) {
                self.core.current_app = app;
                a.on_datagrams(
                    &mut Ctx {
                        core: &mut self.core,
                    },
                    id,
                    &datagrams,
                );
            }
            drop(datagrams);
            self.core.udp.restore(batch);
            if (1..BATCH).contains(&n) {
                return false;
            }
        }
        true
    }

    fn on_timer(&mut self, entry: Entry) {
        let slot = entry.slot as usize;
        let now = self.core.now;
        let Some(conn) = self.core.io.conns.get_mut(slot) else {
            return;
        };
        if conn.dead || conn.timer_tick != entry.tick {
            return;
        }
        conn.timer_tick = NO_TIMER;
        if let Some((why, code)) = conn.ending {
            // Its output did not drain within the close timeout: drop it.
            self.core.io.kill(slot, why, code);
            return;
        }
        match &mut conn.phase {
            Phase::Handshake { deadline, .. } => {
                if now >= *deadline {
                    ShardStats::add(&self.core.io.stats.handshake_failures, 1);
                    self.core
                        .io
                        .kill(slot, Why::HandshakeTimeout, CloseCode(1006));
                    return;
                }
            }
            Phase::Open(proto) => {
                let mut out = std::mem::take(&mut self.core.scratch);
                out.clear();
                let result = proto.handle_timeout(now, &mut out);
                self.core.io.output(slot, Out::Slices(&[&out]));
                self.core.scratch = out;
                match result {
                    Ok(()) => {}
                    Err(Error::Timeout(TimeoutKind::Idle)) => {
                        self.core
                            .io
                            .finish(slot, Why::IdleTimeout, CloseCode::GOING_AWAY);
                    }
                    Err(_) => {
                        let why = if self.draining_until.is_some() {
                            Why::Shutdown
                        } else {
                            Why::LocalClosed
                        };
                        self.core.io.kill(slot, why, CloseCode(1006));
                        return;
                    }
                }
            }
        }
        self.core.arm(slot);
    }

    /// Handles everything in the mailbox (the backend was woken).
    pub fn read_mail(&mut self) {
        self.core.me().pending.store(false, Ordering::Release);
        let dropped = self.core.me().dropped.load(Ordering::Relaxed);
        ShardStats::set(&self.core.io.stats.mail_dropped, dropped);
        let mut budget = MAIL_PER_ITERATION;
        while let Ok(mail) = self.mail.try_recv() {
            self.core.me().queued.fetch_sub(1, Ordering::Relaxed);
            budget -= 1;
            if budget == 0 {
                // The rest waits for the next iteration (connections get their turn first);
                // the loop will not sleep, it has woken itself.
                self.core.me().wake();
                self.handle_mail(mail);
                break;
            }
            self.handle_mail(mail);
        }
    }

    fn handle_mail(&mut self, mail: Mail) {
        {
            match mail {
                Mail::Publish { topic, frame } => {
                    self.core.publish_local(&topic, &frame);
                }
                Mail::Send { id, frame } => {
                    let _ = self.core.send_frame_local(id, &frame);
                }
                Mail::Close { id, code, reason } => {
                    let _ = self.core.close_local(id, code, &reason);
                }
                Mail::Post { app, payload } => {
                    if let Some(a) = self.apps.get_mut(usize::from(app)) {
                        self.core.current_app = app;
                        a.on_post(
                            &mut Ctx {
                                core: &mut self.core,
                            },
                            payload,
                        );
                    }
                }
                Mail::Live { topic } => self.topics_live(&topic),
                Mail::Answer { id, upgrade } => {
                    let _ = self.core.answer(id, upgrade);
                }
                Mail::Shutdown => self.shutdown(),
            }
        }
    }

    /// The broker confirmed `topic`: each connection that subscribed while it was pending and
    /// still is subscribed hears `on_subscribed`.
    fn topics_live(&mut self, topic: &str) {
        let Some(waiting) = self.core.pending.remove(topic) else {
            return;
        };
        for id in waiting {
            let Some(slot) = self.core.io.lookup(self.core.shard, id) else {
                continue;
            };
            if !self.core.is_subscribed(slot, topic) {
                continue;
            }
            let app = self.core.io.conns[slot].app;
            if let Some(a) = self.apps.get_mut(usize::from(app)) {
                self.core.current_app = app;
                a.on_subscribed(
                    &mut Ctx {
                        core: &mut self.core,
                    },
                    id,
                    topic,
                );
            }
        }
    }

    /// Stops accepting (the backend sees [`Shard::draining`]) and starts the close handshake
    /// with 1001 on every connection.
    fn shutdown(&mut self) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(self.core.now + self.core.config.drain_timeout_ms);
        let slots: Vec<(usize, u32, bool)> = self
            .core
            .io
            .conns
            .iter()
            .map(|(s, c)| (s, c.generation, matches!(c.phase, Phase::Open(_))))
            .collect();
        for (slot, generation, open) in slots {
            if open {
                let id = ConnId::new(self.core.shard, slot as u32, generation);
                let _ = self
                    .core
                    .close_local(id, CloseCode::GOING_AWAY, "server shutdown");
                if let Some(c) = self.core.io.conns.get_mut(slot) {
                    c.ending
                        .get_or_insert((Why::Shutdown, CloseCode::GOING_AWAY));
                }
            } else {
                self.core
                    .io
                    .kill(slot, Why::Shutdown, CloseCode::GOING_AWAY);
            }
        }
    }

    /// Removes dead connections: the application hears `on_close`, topics forget them, the
    /// socket closes.
    fn reap(&mut self) {
        while let Some(slot) = self.core.io.dead.pop() {
            let Some(conn) = self.core.io.conns.get(slot) else {
                continue;
            };
            let (mut why, code) = conn.ending.unwrap_or((Why::Io, CloseCode(1006)));
            if self.draining_until.is_some() && why == Why::LocalClosed {
                why = Why::Shutdown;
            }
            let was_open = matches!(conn.phase, Phase::Open(_));
            let id = ConnId::new(self.core.shard, slot as u32, conn.generation);
            let app = usize::from(conn.app);
            if was_open {
                self.core.current_app = app as u8;
                self.apps[app].on_close(
                    &mut Ctx {
                        core: &mut self.core,
                    },
                    id,
                    Closed { why, code },
                );
            }
            self.core.unsubscribe_all(slot);
            let conn = self.core.io.conns.remove(slot);
            if let Some(tls) = self.core.io.tls.as_deref_mut() {
                tls.end(slot);
            }
            // Counted before the socket closes, so a peer that sees the close sees it counted.
            let stats = &self.core.io.stats;
            ShardStats::sub(&stats.write_queue_bytes, conn.queued() as u64);
            ShardStats::sub(&stats.connections, 1);
            ShardStats::add(&stats.closed[why.index()], 1);
            ShardStats::sub(&stats.partial_input_bytes, u64::from(conn.held));
            self.core
                .handle
                .shared
                .partial_input
                .give(conn.held as usize);
            self.core.gate.closed(slot, self.core.now);
            self.core.io.sink.release(slot, conn, stats);
        }
    }
}

/// Outcome of feeding bytes to a connection still in its opening handshake.
enum Handshake {
    /// The WebSocket is open; the request head took this many bytes.
    Open(usize),
    /// The head is incomplete: keep the bytes and read more.
    Wait,
    /// An HTTP error answer is in the cork; the connection ends once it is written.
    Refused,
}

/// Handles the opening handshake on `input`: routes by path, checks the origin, asks the
/// application, and answers 101 or an HTTP error.
fn handshake(
    core: &mut Core,
    apps: &mut [Box<dyn App>],
    routes: &Routes,
    slot: usize,
    input: &[u8],
) -> Handshake {
    let limits = Limits {
        max_header_bytes: core.config.max_header_bytes,
    };
    let refuse = |core: &mut Core, e: HandshakeError| {
        handshake::write_reject(&e, &mut core.io.cork);
        ShardStats::add(&core.io.stats.handshake_failures, 1);
        if let Some(c) = core.io.conns.get_mut(slot) {
            c.ending = Some((Why::HandshakeFailed, CloseCode(1006)));
        }
        Handshake::Refused
    };
    let (request, used) = match handshake::parse_request(input, limits) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Handshake::Wait,
        Err(e @ (HandshakeError::NotUpgrade | HandshakeError::Method)) => {
            // A plain GET (or HEAD) may be for one of the few pages served here.
            let page = handshake::plain_request(input)
                .and_then(|(path, head)| Some((routes.find_page(path)?, head)));
            let Some((page, head)) = page else {
                return refuse(core, e);
            };
            let out = &mut core.io.cork;
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: ");
            out.extend_from_slice(page.content_type.as_bytes());
            out.extend_from_slice(b"\r\nContent-Length: ");
            out.extend_from_slice(page.body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n");
            if !head {
                out.extend_from_slice(&page.body);
            }
            if let Some(c) = core.io.conns.get_mut(slot) {
                c.ending = Some((Why::Page, CloseCode(1006)));
            }
            return Handshake::Refused;
        }
        Err(e) => return refuse(core, e),
    };
    let Some(app) = routes.find(request.path()) else {
        return refuse(core, HandshakeError::Rejected(404));
    };
    let origins = &core.config.allowed_origins;
    // With an allowlist, a request must name an allowed origin: one without an Origin
    // header (or with one that is not UTF-8) is refused too, or a non-browser client could
    // pass by leaving it out.
    if !origins.is_empty()
        && !request
            .origin()
            .is_some_and(|o| origins.iter().any(|a| a == o))
    {
        return refuse(core, HandshakeError::OriginRejected);
    }
    // The application's answer: given earlier (a deferred upgrade, parsed again now), or
    // asked for now.
    let given = match core.io.conns.get_mut(slot).map(|c| &mut c.phase) {
        Some(Phase::Handshake { answer, .. }) => std::mem::take(answer),
        _ => return Handshake::Refused,
    };
    let upgrade = match given {
        Answer::Given(upgrade) => *upgrade,
        Answer::Ask | Answer::Waiting => {
            let conn = &core.io.conns[slot];
            let id = ConnId::new(core.shard, slot as u32, conn.generation);
            let peer = conn.sock.peer_addr().ok();
            core.current_app = app as u8;
            let asked = UpgradeRequest {
                id,
                peer,
                request: &request,
            };
            apps[app].on_upgrade(&mut Ctx { core }, &asked)
        }
    };
    if core.io.conns.get(slot).is_none_or(|c| c.dead) {
        // The application closed it while deciding.
        return Handshake::Refused;
    }
    let accept = match upgrade {
        Upgrade::Accept(accept) if accept.well_formed() => accept,
        Upgrade::Accept(_) => return refuse(core, HandshakeError::Rejected(500)),
        Upgrade::Reject(status) if (400..=599).contains(&status) => {
            return refuse(core, HandshakeError::Rejected(status));
        }
        Upgrade::Reject(_) => return refuse(core, HandshakeError::Rejected(500)),
        Upgrade::Defer => {
            if let Some(Phase::Handshake { answer, .. }) =
                core.io.conns.get_mut(slot).map(|c| &mut c.phase)
            {
                *answer = Answer::Waiting;
            }
            return Handshake::Wait;
        }
    };
    // permessage-deflate, when on (for every path or for this one) and offered.
    let path = request.path();
    let wanted = core.config.deflate || core.config.deflate_paths.iter().any(|p| p == path);
    let deflate = if wanted {
        deflate::negotiate(
            request
                .headers()
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
                .map(|h| h.value),
        )
    } else {
        None
    };
    let mut headers: Vec<(&str, &str)> = accept
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Some(n) = &deflate {
        headers.push(("Sec-WebSocket-Extensions", &n.response));
    }
    handshake::write_accept(
        &request,
        &Accept {
            protocol: accept.protocol.as_deref(),
            headers: &headers,
            ..Accept::default()
        },
        &mut core.io.cork,
    );
    let now = core.now;
    let Some(conn) = core.io.conns.get_mut(slot) else {
        return Handshake::Refused;
    };
    let proto = core.app_protos.get(app).unwrap_or(&core.proto).clone();
    let mut connection = Connection::server(proto, now);
    connection.set_deflate(deflate.map(|n| n.deflate));
    conn.phase = Phase::Open(connection);
    conn.app = app as u8;
    conn.timer_tick = NO_TIMER;
    let id = ConnId::new(core.shard, slot as u32, conn.generation);
    ShardStats::add(&core.io.stats.opened, 1);
    core.arm(slot);
    core.current_app = app as u8;
    apps[app].on_open(&mut Ctx { core }, id, &request);
    Handshake::Open(used)
}
