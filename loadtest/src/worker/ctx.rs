//! What a thread counts and what its connections do with messages: the scenario logic, apart
//! from the sockets. Everything here takes the connection's state and the protocol core as
//! arguments and appends bytes to send to `out`.

use std::sync::Arc;

use c10m_engine::proto::{Connection, Message};

use super::client::{App, Role};
use crate::counters::Counters;
use crate::hist::Hists;
use crate::payload::{self, EchoFormat, EchoHeader, Published};
use crate::plan::{Plan, ScenarioPlan};
use crate::seqtrack::{Arrival, Track};

/// A thread's counters, histograms and scratch space.
#[derive(Debug)]
pub struct Ctx {
    /// The process plan.
    pub plan: Arc<Plan>,
    /// Counts for the current second.
    pub counters: Counters,
    /// Latencies for the current second.
    pub hists: Hists,
    /// Now (us).
    pub now: u64,
    /// In the drive phase: send, and count receipts toward rates.
    pub driving: bool,
    /// Open connections.
    pub open: u64,
    /// Connections connecting or handshaking.
    pub pending: usize,
    /// Echo messages sent and not yet answered.
    pub in_flight: u64,
    /// Subscribers still waiting for end markers.
    pub incomplete_subs: u64,
    echo: Option<EchoFormat>,
    window: u32,
    topic: String,
    size: usize,
    msg: Vec<u8>,
    text: String,
}

impl Ctx {
    /// A thread's context.
    pub fn new(plan: Arc<Plan>, hists: Hists) -> Self {
        let (echo, window, topic, size) = match &plan.scenario {
            ScenarioPlan::Echo { size, mode } => (
                Some(EchoFormat::new(*size)),
                match mode {
                    crate::cli::EchoMode::Window(w) => *w,
                    crate::cli::EchoMode::Rate(_) => 0,
                },
                String::new(),
                *size,
            ),
            ScenarioPlan::Broadcast { size, topic, .. } => (None, 0, topic.clone(), *size),
            _ => (None, 0, String::new(), 0),
        };
        Ctx {
            plan,
            counters: Counters::default(),
            hists,
            now: 0,
            driving: false,
            open: 0,
            pending: 0,
            in_flight: 0,
            incomplete_subs: 0,
            echo,
            window,
            topic,
            size,
            msg: Vec::new(),
            text: String::new(),
        }
    }

    /// Echo messages kept in flight per connection (0 in fixed-rate mode).
    pub fn window(&self) -> u32 {
        self.window
    }

    /// The handshake completed.
    pub fn on_established(&mut self, app: &mut App) {
        self.counters.established += 1;
        self.open += 1;
        self.pending = self.pending.saturating_sub(1);
        if app.role == Role::Subscriber {
            let n = self.plan.total_publishers as usize;
            app.track = Some(vec![Track::default(); n].into_boxed_slice());
        }
    }

    /// The drive phase begins: subscribers open now are the ones whose losses count.
    pub fn on_go(&mut self, app: &mut App) {
        self.counters.open_at_go += 1;
        if app.role == Role::Subscriber {
            app.at_go = true;
            app.awaiting = self.plan.total_publishers > 0;
            self.counters.subscribers_at_go += 1;
            if app.awaiting {
                self.incomplete_subs += 1;
            }
        }
    }

    /// Sends one echo request stamped `stamp_us`.
    pub fn send_echo(
        &mut self,
        app: &mut App,
        conn: &mut Connection,
        out: &mut Vec<u8>,
        stamp_us: u64,
    ) {
        let Some(fmt) = &self.echo else {
            return;
        };
        let header = EchoHeader {
            conn: app.index as u32,
            seq: app.sent,
            stamp_us,
        };
        fmt.encode(header, &mut self.msg);
        if conn.send_binary(&self.msg, out).is_ok() {
            app.sent += 1;
            self.in_flight += 1;
            self.counters.sent += 1;
            self.counters.bytes_sent += self.msg.len() as u64;
        }
    }

    /// Publishes one message intended for `stamp_us`.
    pub fn publish(
        &mut self,
        app: &mut App,
        conn: &mut Connection,
        out: &mut Vec<u8>,
        stamp_us: u64,
    ) {
        let Role::Publisher(id) = app.role else {
            return;
        };
        payload::write_publish(
            &mut self.text,
            &self.topic,
            self.size,
            id,
            app.sent,
            stamp_us,
        );
        if conn.send_text(&self.text, out).is_ok() {
            app.sent += 1;
            self.counters.sent += 1;
            self.counters.bytes_sent += self.text.len() as u64;
        }
    }

    /// Publishes the end marker: how many messages this publisher sent.
    pub fn publish_end(&mut self, app: &mut App, conn: &mut Connection, out: &mut Vec<u8>) {
        let Role::Publisher(id) = app.role else {
            return;
        };
        payload::write_end(&mut self.text, &self.topic, id, app.sent);
        let _ = conn.send_text(&self.text, out);
    }

    /// A data message arrived.
    pub fn on_message(
        &mut self,
        app: &mut App,
        conn: &mut Connection,
        message: &Message<'_>,
        out: &mut Vec<u8>,
    ) {
        match app.role {
            Role::Echo => self.on_echo(app, conn, message.as_bytes(), out),
            Role::Subscriber => self.on_delivery(app, message.as_bytes()),
            Role::Plain | Role::Publisher(_) => self.counters.unexpected += 1,
        }
    }

    fn count_received(&mut self) {
        self.counters.received += 1;
        if self.driving {
            self.counters.received_in_drive += 1;
        }
    }

    fn on_echo(&mut self, app: &mut App, conn: &mut Connection, bytes: &[u8], out: &mut Vec<u8>) {
        self.count_received();
        self.in_flight = self.in_flight.saturating_sub(1);
        let decoded = self.echo.as_ref().and_then(|f| f.decode(bytes));
        match decoded {
            Some(h) if h.conn == app.index as u32 && h.seq == app.answered => {
                self.counters.echo_ok += 1;
                self.hists
                    .latency
                    .record(self.now.saturating_sub(h.stamp_us));
                app.answered += 1;
            }
            Some(h) if h.conn == app.index as u32 && h.seq > app.answered && h.seq < app.sent => {
                // Skipped replies: resynchronize so one loss is one mismatch, and stop
                // waiting for the skipped ones.
                self.counters.echo_mismatch += 1;
                self.in_flight = self.in_flight.saturating_sub(h.seq - app.answered);
                app.answered = h.seq + 1;
            }
            _ => self.counters.echo_mismatch += 1,
        }
        if self.driving && self.window > 0 {
            let now = self.now;
            self.send_echo(app, conn, out, now);
        }
    }

    fn on_delivery(&mut self, app: &mut App, bytes: &[u8]) {
        let Some(tracks) = app.track.as_deref_mut() else {
            self.counters.unexpected += 1;
            return;
        };
        match payload::parse_delivery(bytes, &self.topic) {
            Some(Published::Data {
                publisher,
                seq,
                stamp_us,
            }) => {
                let Some(track) = tracks.get_mut(publisher as usize) else {
                    self.counters.unexpected += 1;
                    return;
                };
                self.counters.received += 1;
                if self.driving {
                    self.counters.received_in_drive += 1;
                }
                let counters = &mut self.counters;
                let counted = app.at_go;
                let arrival = track.arrive(seq, &mut |first, len| {
                    if counted {
                        counters.gap(publisher, first, len, 1);
                    }
                });
                match arrival {
                    Arrival::InOrder => {
                        self.counters.deliveries += 1;
                        self.hists.latency.record(self.now.saturating_sub(stamp_us));
                    }
                    Arrival::Late => {
                        self.counters.deliveries += 1;
                        self.counters.reordered += 1;
                        self.hists.latency.record(self.now.saturating_sub(stamp_us));
                    }
                    Arrival::Duplicate => self.counters.duplicates += 1,
                    Arrival::Stale => self.counters.stale += 1,
                }
            }
            Some(Published::End { publisher, count }) => {
                match tracks.get_mut(publisher as usize) {
                    Some(track) => track.end(count),
                    None => self.counters.unexpected += 1,
                }
                if app.awaiting && tracks.iter().all(Track::complete) {
                    app.awaiting = false;
                    self.incomplete_subs = self.incomplete_subs.saturating_sub(1);
                }
            }
            None => self.counters.unexpected += 1,
        }
    }

    /// The connection is gone (for whatever reason): settle what it still owes.
    pub fn on_gone(&mut self, app: &mut App, was_open: bool) {
        if was_open {
            self.open = self.open.saturating_sub(1);
        }
        match app.role {
            Role::Echo => {
                let unanswered = app.sent.saturating_sub(app.answered);
                self.counters.echo_unanswered += unanswered;
                self.in_flight = self.in_flight.saturating_sub(unanswered);
            }
            Role::Subscriber => self.settle_subscriber(app),
            Role::Plain | Role::Publisher(_) => {}
        }
    }

    fn settle_subscriber(&mut self, app: &mut App) {
        if app.awaiting {
            self.incomplete_subs = self.incomplete_subs.saturating_sub(1);
        }
        let (true, Some(tracks)) = (app.at_go, app.track.as_deref_mut()) else {
            return;
        };
        let c = &mut self.counters;
        let missing: u64 = tracks.iter().map(Track::missing).sum();
        c.missing += missing;
        c.max_missing_per_sub = c.max_missing_per_sub.max(missing);
        c.subs_with_missing += u64::from(missing > 0);
        c.subs_with_duplicates += u64::from(tracks.iter().any(|t| t.duplicates > 0));
        c.subs_with_reordering += u64::from(tracks.iter().any(|t| t.reordered > 0));
        c.subs_incomplete += u64::from(!tracks.iter().all(Track::complete));
        for (p, t) in tracks.iter_mut().enumerate() {
            t.finish(&mut |first, len| c.gap(p as u32, first, len, 1));
        }
    }
}
