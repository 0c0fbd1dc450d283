//! One worker thread: a mio poll (epoll, edge-triggered), its client connections in a slab,
//! one read buffer shared by all of them, and the stages of a run:
//!
//! ```text
//!   Ramp ──(all opened, or ramp deadline)──► Ready ──(go time)──► Drive ──(duration)──►
//!   Drain ──(replies/deliveries in, or drain limit)──► Closing ──(closed, or close limit)──► done
//! ```
//!
//! A subscriber that subscribes with a command is pending (the ramp is not over) until the
//! server confirms it. In failover, a subscriber whose connection drops during Drive or Drain
//! waits (exponential backoff) and reconnects to another target (`reconnect.rs`).
//!
//! Once a second (on the run's shared epoch) it sends its counts and interval histograms to the
//! process controller.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::Duration;

use c10m_engine::proto::{self, CloseCode, State};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

mod reconnect;
mod sockets;

use super::client::{App, Client, Phase, Role};
use super::connect;
use super::ctx::Ctx;
use super::reason::Reason;
use super::{ReadyInfo, Shared, ThreadMsg};
use crate::cli::{Backoff, EchoMode};
use crate::clock::Clock;
use crate::error::Error;
use crate::hist::Hists;
use crate::plan::{Plan, ScenarioPlan, Share};
use crate::tick::Tick;

/// The thread's read buffer.
const READ_BUF: usize = 256 * 1024;
/// How often timeouts and protocol timers are checked.
const SWEEP_US: u64 = 200_000;
/// Longest sleep, so flags set by other threads are seen.
const MAX_WAIT_US: u64 = 50_000;
/// Unsent output past which a fixed-rate sender skips (and counts) messages.
const WQ_LIMIT: usize = 1 << 20;
/// Catch-up messages per connection per turn when behind a fixed-rate schedule.
const BURST: u32 = 64;
/// Schedule entries handled per turn.
const HEAP_POPS: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Ramp,
    Ready,
    Drive,
    Drain,
    Closing,
    Finished,
}

/// A worker thread's state.
#[derive(Debug)]
pub struct Loop {
    id: usize,
    share: Share,
    proto: Arc<proto::Config>,
    poll: Poll,
    clients: Slab<Client>,
    buf: Vec<u8>,
    out: Vec<u8>,
    again: Vec<usize>,
    scratch: Vec<usize>,
    ctx: Ctx,
    shared: Arc<Shared>,
    tx: Sender<ThreadMsg>,
    clock: Clock,
    role: Role,
    sub_path: String,
    /// wss://: what every session shares.
    tls: Option<super::tls::Tls>,
    ramp_next: u64,
    ramp_total: u64,
    ramp_start: u64,
    ramp_interval_us: f64,
    /// Fixed-rate sends: (due us, slot, global index).
    heap: BinaryHeap<Reverse<(u64, usize, u64)>>,
    /// Failover: how dropped subscribers retry (None: they do not).
    reconnect: Option<Backoff>,
    /// Failover: subscribers waiting to reconnect, soonest first.
    away: BinaryHeap<Reverse<reconnect::Waiting>>,
    /// Jitter for the backoff (xorshift).
    rng: u64,
    msg_interval_us: u64,
    stage: Stage,
    stage_until: u64,
    tick_k: u64,
    next_sweep: u64,
}

impl Loop {
    /// Thread `id` of a process running `plan`.
    pub fn new(
        id: usize,
        plan: Arc<Plan>,
        shared: Arc<Shared>,
        tx: Sender<ThreadMsg>,
        clock: Clock,
    ) -> Result<Self, Error> {
        let share = plan.share(id);
        let proto = Arc::new(proto::Config {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            auto_pong: true,
            ping_interval_ms: plan.ping_interval_ms,
            idle_timeout_ms: plan.idle_timeout_ms,
            close_timeout_ms: plan.close_timeout_ms,
        });
        let (role, sub_path, msg_rate, reconnect) = match &plan.scenario {
            ScenarioPlan::Connect | ScenarioPlan::Idle => (Role::Plain, String::new(), None, None),
            ScenarioPlan::Echo { mode, .. } => (
                Role::Echo,
                String::new(),
                match mode {
                    EchoMode::Rate(r) => Some(*r),
                    EchoMode::Window(_) => None,
                },
                None,
            ),
            ScenarioPlan::Broadcast {
                topic,
                publish_rate,
                confirm,
                reconnect,
                ..
            } => (
                Role::Subscriber,
                // Subscribed on open, unless by a command the server confirms.
                if *confirm {
                    plan.path.clone()
                } else {
                    format!("{}?topic={topic}", plan.path)
                },
                Some(*publish_rate),
                *reconnect,
            ),
        };
        let tls = plan.tls.as_ref().map(super::tls::Tls::new).transpose()?;
        let now = clock.now_us();
        let poll = Poll::new().map_err(crate::error::io("create epoll instance"))?;
        let ramp_total = share.publishers.len() as u64 + share.count;
        Ok(Loop {
            id,
            proto,
            poll,
            clients: Slab::new(),
            buf: vec![0; READ_BUF],
            out: Vec::with_capacity(64 * 1024),
            again: Vec::new(),
            scratch: Vec::new(),
            ctx: Ctx::new(plan.clone(), Hists::new()?),
            shared,
            tx,
            clock,
            role,
            sub_path,
            tls,
            ramp_next: 0,
            ramp_total,
            ramp_start: now,
            ramp_interval_us: 1e6 / plan.rate_per_thread.max(1e-3),
            heap: BinaryHeap::new(),
            reconnect,
            away: BinaryHeap::new(),
            rng: reconnect::seed(),
            msg_interval_us: msg_rate.map_or(0, |r| ((1e6 / r) as u64).max(1)),
            stage: Stage::Ramp,
            stage_until: 0,
            tick_k: now.saturating_sub(plan.epoch_us) / 1_000_000,
            next_sweep: now + SWEEP_US,
            share,
        })
    }

    /// Runs every stage, then reports the last partial second.
    pub fn run(mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        let mut ready = Vec::new();
        loop {
            self.ctx.now = self.clock.now_us();
            self.advance();
            self.emit_ticks();
            if self.stage == Stage::Finished {
                break;
            }
            let timeout = self.timeout();
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.abandon();
                    return Err(Error::Io {
                        what: "epoll_wait",
                        source: e,
                    });
                }
            }
            self.ctx.now = self.clock.now_us();
            ready.clear();
            // Left over from a used-up turn: read until the socket says WouldBlock.
            ready.extend(self.again.drain(..).map(|slot| (slot, true)));
            for event in events.iter() {
                let slot = event.token().0;
                let connecting = self
                    .clients
                    .get(slot)
                    .is_some_and(|c| matches!(c.phase, Phase::Connecting { .. }));
                if connecting {
                    self.on_connect_event(slot);
                    if event.is_readable() {
                        ready.push((slot, event.is_read_closed() || event.is_error()));
                    }
                } else {
                    if event.is_writable() {
                        self.write_queued(slot);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        ready.push((slot, event.is_read_closed() || event.is_error()));
                    }
                }
                self.settle(slot);
            }
            ready.sort_unstable();
            // One entry per slot; keep "read to the end" if any event asked for it.
            ready.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    earlier.1 |= later.1;
                }
                same
            });
            for &(slot, to_the_end) in &ready {
                self.on_readable(slot, to_the_end);
                self.settle(slot);
            }
        }
        self.send_tick();
        Ok(())
    }

    /// Ends everything at once (after a fatal poll error) and reports what was counted.
    fn abandon(&mut self) {
        let slots: Vec<usize> = self.clients.iter().map(|(s, _)| s).collect();
        for slot in slots {
            if let Some(c) = self.clients.get_mut(slot) {
                c.ending.get_or_insert(Reason::Cancelled);
            }
            self.end(slot);
        }
        if self.stage < Stage::Ready {
            self.send_ready();
        }
        self.send_tick();
    }

    // ----- stages -------------------------------------------------------------------------

    fn advance(&mut self) {
        let now = self.ctx.now;
        let plan = self.ctx.plan.clone();
        let abort = self.shared.abort.load(Ordering::Relaxed) || now >= plan.hard_deadline_us;
        if abort && self.stage < Stage::Closing {
            if self.stage == Stage::Ramp {
                self.send_ready();
            }
            self.begin_close();
        }
        match self.stage {
            Stage::Ramp => {
                self.ramp();
                let opened = self.ramp_next == self.ramp_total && self.ctx.pending == 0;
                if opened || now >= plan.ramp_deadline_us {
                    if !opened {
                        self.cancel_ramp();
                    }
                    self.send_ready();
                    self.stage = Stage::Ready;
                }
            }
            Stage::Ready => {
                let go = self.shared.go_at_us.load(Ordering::Acquire);
                if go != 0 && now >= go {
                    self.go(go);
                }
            }
            Stage::Drive => {
                self.reconnect_due();
                self.send_due();
                if now >= self.stage_until {
                    // Everything intended before the end is sent (late) before stopping.
                    while self
                        .heap
                        .peek()
                        .is_some_and(|Reverse((due, _, _))| *due < self.stage_until)
                    {
                        self.send_due();
                    }
                    self.end_drive();
                }
            }
            Stage::Drain => {
                self.reconnect_due();
                if self.drained() || now >= self.stage_until {
                    self.begin_close();
                }
            }
            Stage::Closing => {
                if self.clients.is_empty() || now >= self.stage_until {
                    self.close_rest();
                    self.stage = Stage::Finished;
                }
            }
            Stage::Finished => {}
        }
        if now >= self.next_sweep {
            self.sweep();
            self.next_sweep = now + SWEEP_US;
        }
    }

    fn ramp(&mut self) {
        while self.ramp_next < self.ramp_total && self.ctx.pending < self.ctx.plan.max_pending {
            let due = self.ramp_start + (self.ramp_next as f64 * self.ramp_interval_us) as u64;
            if due > self.ctx.now {
                break;
            }
            let i = self.ramp_next;
            self.ramp_next += 1;
            self.open_one(i);
        }
    }

    fn open_one(&mut self, i: u64) {
        let pubs = self.share.publishers.len() as u64;
        let (index, role) = if i < pubs {
            let id = self.share.publishers[i as usize];
            (self.ctx.plan.publisher_index(id), Role::Publisher(id))
        } else {
            (self.share.index(i - pubs), self.role)
        };
        let app = App::new(index, role, self.ctx.plan.total_publishers);
        self.open(app);
    }

    /// Starts a connection for `app` (a new one, or a subscriber coming back).
    fn open(&mut self, app: App) {
        let (source, target) = self.addrs_of(&app);
        if app.returning() {
            self.ctx.counters.reconnect_attempts += 1;
        } else {
            self.ctx.counters.attempted += 1;
        }
        let mut sock = match connect::start(source, target) {
            Ok(s) => s,
            Err(e) => return self.not_opened(app, Reason::Connect(e)),
        };
        let entry = self.clients.vacant_entry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut sock, Token(entry.key()), interest)
        {
            return self.not_opened(app, Reason::Connect(e));
        }
        entry.insert(Client::connecting(sock, self.ctx.now, app));
        self.ctx.pending += 1;
    }

    /// A connection could not even be started.
    fn not_opened(&mut self, app: App, reason: Reason) {
        if !app.returning() {
            self.ctx.counters.connect_failed += 1;
        }
        self.after(app, reason, false);
    }

    /// Source and target of a connection: its planned ones, or, for a subscriber that moved,
    /// the target it moved to.
    pub(super) fn addrs_of(&self, app: &App) -> (Option<std::net::IpAddr>, std::net::SocketAddr) {
        let plan = &self.ctx.plan;
        let (source, planned) = plan.addrs(app.index);
        let moved = app
            .sub
            .as_ref()
            .and_then(|s| s.target)
            .and_then(|t| plan.targets.get(t as usize));
        (source, moved.copied().unwrap_or(planned))
    }

    /// The ramp deadline passed: what is still connecting is cancelled, what was never started
    /// is counted.
    fn cancel_ramp(&mut self) {
        let skipped = self.ramp_total - self.ramp_next;
        if skipped > 0 {
            self.ctx
                .counters
                .reason_n("not attempted: ramp timeout", skipped);
            self.ramp_next = self.ramp_total;
        }
        let slots: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.is_open() || c.app.subscribing())
            .map(|(s, _)| s)
            .collect();
        for slot in slots {
            if let Some(c) = self.clients.get_mut(slot) {
                let reason = if c.is_open() {
                    Reason::SubscribeTimeout
                } else {
                    Reason::Cancelled
                };
                c.ending.get_or_insert(reason);
            }
            self.end(slot);
        }
    }

    fn send_ready(&mut self) {
        let mut info = ReadyInfo {
            threads: 1,
            ..ReadyInfo::default()
        };
        for (_, c) in self.clients.iter().filter(|(_, c)| c.is_open()) {
            info.open += 1;
            match c.app.role {
                Role::Subscriber => info.subscribers += 1,
                Role::Publisher(_) => info.publishers += 1,
                _ => {}
            }
        }
        let _ = self.tx.send(ThreadMsg::Ready(self.id, info));
    }

    fn go(&mut self, go_at: u64) {
        self.ctx.driving = true;
        self.stage = Stage::Drive;
        self.stage_until = go_at + self.ctx.plan.duration_ms * 1_000;
        let interval = self.msg_interval_us;
        let publishers = u64::from(self.ctx.plan.total_publishers.max(1));
        let mut slots = std::mem::take(&mut self.scratch);
        slots.clear();
        slots.extend(
            self.clients
                .iter()
                .filter(|(_, c)| c.is_open())
                .map(|(s, _)| s),
        );
        for &slot in &slots {
            let Some(c) = self.clients.get_mut(slot) else {
                continue;
            };
            self.ctx.on_go(&mut c.app);
            let Phase::Open(conn) = &mut c.phase else {
                continue;
            };
            let index = c.app.index;
            match c.app.role {
                Role::Echo if self.ctx.window() > 0 => {
                    for _ in 0..self.ctx.window() {
                        let now = self.ctx.now;
                        self.ctx.send_echo(&mut c.app, conn, &mut self.out, now);
                    }
                }
                Role::Echo => {
                    // Spread the connections' phases over one interval.
                    let offset = (index.wrapping_mul(7_919) % 1_000) * interval / 1_000;
                    self.heap.push(Reverse((go_at + offset, slot, index)));
                }
                Role::Publisher(id) => {
                    let offset = u64::from(id) * interval / publishers;
                    self.heap.push(Reverse((go_at + offset, slot, index)));
                }
                Role::Plain | Role::Subscriber => {}
            }
            self.flush(slot);
            self.settle(slot);
        }
        self.scratch = slots;
    }

    /// Sends what the fixed-rate schedule says is due, stamped with the intended time.
    fn send_due(&mut self) {
        let now = self.ctx.now;
        let interval = self.msg_interval_us.max(1);
        for _ in 0..HEAP_POPS {
            let Some(&Reverse((due, slot, index))) = self.heap.peek() else {
                break;
            };
            if due > now || due >= self.stage_until {
                break;
            }
            self.heap.pop();
            let Some(c) = self.clients.get_mut(slot) else {
                continue;
            };
            if c.app.index != index || c.ending.is_some() {
                continue;
            }
            let Phase::Open(conn) = &mut c.phase else {
                continue;
            };
            let lag = now - due;
            self.ctx.counters.lag_max_us = self.ctx.counters.lag_max_us.max(lag);
            let mut t = due;
            let mut n = 0;
            while t <= now && t < self.stage_until && n < BURST {
                if c.wq.len() > WQ_LIMIT {
                    self.ctx.counters.skipped_backpressure += 1;
                } else if c.app.role == Role::Echo {
                    self.ctx.send_echo(&mut c.app, conn, &mut self.out, t);
                } else {
                    self.ctx.publish(&mut c.app, conn, &mut self.out, t);
                }
                t += interval;
                n += 1;
            }
            self.heap.push(Reverse((t, slot, index)));
            self.flush(slot);
            self.settle(slot);
        }
    }

    fn end_drive(&mut self) {
        self.ctx.driving = false;
        self.ctx.counters.survived += self.ctx.open;
        self.heap.clear();
        let mut slots = std::mem::take(&mut self.scratch);
        slots.clear();
        slots.extend(
            self.clients
                .iter()
                .filter(|(_, c)| matches!(c.app.role, Role::Publisher(_)) && c.is_open())
                .map(|(s, _)| s),
        );
        for &slot in &slots {
            if let Some(c) = self.clients.get_mut(slot) {
                if let Phase::Open(conn) = &mut c.phase {
                    self.ctx.publish_end(&mut c.app, conn, &mut self.out);
                }
            }
            self.flush(slot);
            self.settle(slot);
        }
        self.scratch = slots;
        match self.ctx.plan.scenario {
            ScenarioPlan::Echo { .. } | ScenarioPlan::Broadcast { .. } => {
                self.stage = Stage::Drain;
                self.stage_until = self.ctx.now + self.ctx.plan.drain_ms * 1_000;
            }
            ScenarioPlan::Connect | ScenarioPlan::Idle => self.begin_close(),
        }
    }

    fn drained(&self) -> bool {
        match self.ctx.plan.scenario {
            ScenarioPlan::Echo { .. } => self.ctx.in_flight == 0,
            ScenarioPlan::Broadcast { .. } => self.ctx.incomplete_subs == 0,
            ScenarioPlan::Connect | ScenarioPlan::Idle => true,
        }
    }

    fn begin_close(&mut self) {
        self.ctx.driving = false;
        self.heap.clear();
        self.stage = Stage::Closing;
        self.give_up_reconnecting();
        self.stage_until = self.ctx.now + self.ctx.plan.close_timeout_ms * 1_000;
        let now_ms = Clock::ms(self.ctx.now);
        let slots: Vec<usize> = self.clients.iter().map(|(s, _)| s).collect();
        for slot in slots {
            if let Some(c) = self.clients.get_mut(slot) {
                match &mut c.phase {
                    Phase::Open(conn) => {
                        if conn.state() == State::Open {
                            let _ = conn.close(CloseCode::NORMAL, "", &mut self.out, now_ms);
                        }
                    }
                    Phase::Connecting { .. } | Phase::Handshake { .. } => {
                        c.ending.get_or_insert(Reason::Cancelled);
                    }
                }
            }
            self.flush(slot);
            self.settle(slot);
        }
    }

    fn close_rest(&mut self) {
        let slots: Vec<usize> = self.clients.iter().map(|(s, _)| s).collect();
        for slot in slots {
            if let Some(c) = self.clients.get_mut(slot) {
                let reason = if c.is_open() {
                    Reason::CloseNoReply
                } else {
                    Reason::Cancelled
                };
                c.ending.get_or_insert(reason);
            }
            self.end(slot);
        }
    }

    /// Connect/handshake timeouts and the protocol core's timers (client pings, idle timeout,
    /// close handshake).
    fn sweep(&mut self) {
        let now = self.ctx.now;
        let now_ms = Clock::ms(now);
        let limit = self.ctx.plan.connect_timeout_ms * 1_000;
        let mut slots = std::mem::take(&mut self.scratch);
        slots.clear();
        for (slot, c) in self.clients.iter_mut() {
            match &c.phase {
                Phase::Connecting { since_us } if now.saturating_sub(*since_us) > limit => {
                    c.ending.get_or_insert(Reason::ConnectTimeout);
                    slots.push(slot);
                }
                Phase::Handshake { since_us, .. } if now.saturating_sub(*since_us) > limit => {
                    c.ending.get_or_insert(Reason::HandshakeTimeout);
                    slots.push(slot);
                }
                Phase::Open(_)
                    if c.app
                        .sub
                        .as_ref()
                        .and_then(|s| s.subscribing_since())
                        .is_some_and(|since| now.saturating_sub(since) > limit) =>
                {
                    c.ending.get_or_insert(Reason::SubscribeTimeout);
                    slots.push(slot);
                }
                Phase::Open(conn) if conn.poll_timeout().is_some_and(|t| t <= now_ms) => {
                    slots.push(slot);
                }
                _ => {}
            }
        }
        for &slot in &slots {
            if let Some(c) = self.clients.get_mut(slot) {
                if let (Phase::Open(conn), None) = (&mut c.phase, &c.ending) {
                    if let Err(e) = conn.handle_timeout(now_ms, &mut self.out) {
                        c.ending = Some(match e {
                            proto::Error::Timeout(proto::TimeoutKind::CloseHandshake) => {
                                Reason::CloseNoReply
                            }
                            e => Reason::Protocol(e),
                        });
                    }
                }
            }
            self.flush(slot);
            self.settle(slot);
        }
        self.scratch = slots;
    }

    // ----- ticks and sleeping -------------------------------------------------------------

    fn emit_ticks(&mut self) {
        let epoch = self.ctx.plan.epoch_us;
        while self.ctx.now >= epoch + (self.tick_k + 1) * 1_000_000 {
            self.send_tick();
        }
    }

    fn send_tick(&mut self) {
        let tick = Tick {
            k: self.tick_k,
            counters: std::mem::take(&mut self.ctx.counters),
            hists: self.ctx.hists.take(),
            open: self.ctx.open,
            threads: 1,
            rss_bytes: 0,
        };
        let _ = self.tx.send(ThreadMsg::Tick(self.id, Box::new(tick)));
        self.tick_k += 1;
    }

    fn timeout(&self) -> Duration {
        if !self.again.is_empty() {
            return Duration::ZERO;
        }
        let now = self.ctx.now;
        let plan = &self.ctx.plan;
        let mut wake = (now + MAX_WAIT_US)
            .min(plan.epoch_us + (self.tick_k + 1) * 1_000_000)
            .min(self.next_sweep);
        match self.stage {
            Stage::Ramp => {
                if self.ramp_next < self.ramp_total && self.ctx.pending < plan.max_pending {
                    let due =
                        self.ramp_start + (self.ramp_next as f64 * self.ramp_interval_us) as u64;
                    wake = wake.min(due);
                }
                wake = wake.min(plan.ramp_deadline_us);
            }
            Stage::Ready => {
                let go = self.shared.go_at_us.load(Ordering::Acquire);
                wake = wake.min(if go != 0 { go } else { now + 5_000 });
            }
            Stage::Drive => {
                if let Some(Reverse((due, _, _))) = self.heap.peek() {
                    wake = wake.min(*due);
                }
                wake = wake.min(self.stage_until).min(self.next_reconnect());
            }
            Stage::Drain => wake = wake.min(self.stage_until).min(self.next_reconnect()),
            Stage::Closing => wake = wake.min(self.stage_until),
            Stage::Finished => wake = now,
        }
        Duration::from_micros(wake.saturating_sub(now))
    }
}
