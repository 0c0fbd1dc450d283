//! What a thread counts and what its connections do with messages: the scenario logic, apart
//! from the sockets. Everything here takes the connection's state and the protocol core as
//! arguments and appends bytes to send to `out`. Subscribers' logic is in `sub.rs`.

use std::sync::Arc;

use c10m_engine::proto::{Connection, Message};

use super::client::{App, Role};
use super::reason::Reason;
use crate::cli::Protocol;
use crate::counters::Counters;
use crate::hist::Hists;
use crate::payload::{self, EchoFormat, EchoHeader};
use crate::plan::{Plan, ScenarioPlan};
use crate::socketio;
use crate::v1::{self, Frame};

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
    /// Broadcast: the topic.
    pub(super) topic: String,
    size: usize,
    /// Broadcast: what subscribers and publishers speak.
    pub(super) protocol: Protocol,
    /// Broadcast: subscribers subscribe with a command and are ready once it is confirmed.
    pub(super) confirm: bool,
    msg: Vec<u8>,
    /// Scratch space for text frames.
    pub(super) text: String,
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
        let (protocol, confirm) = match &plan.scenario {
            ScenarioPlan::Broadcast {
                protocol, confirm, ..
            } => (*protocol, *confirm),
            _ => (Protocol::Pubsub, false),
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
            protocol,
            confirm,
            msg: Vec::new(),
            text: String::new(),
        }
    }

    /// Echo messages kept in flight per connection (0 in fixed-rate mode).
    pub fn window(&self) -> u32 {
        self.window
    }

    /// The handshake completed. A subscriber that subscribes with a command stays pending
    /// until the server confirms it.
    pub fn on_established(&mut self, app: &mut App, conn: &mut Connection, out: &mut Vec<u8>) {
        if !app.returning() {
            self.counters.established += 1;
        }
        self.open += 1;
        if self.protocol == Protocol::SocketIo && app.role != Role::Echo {
            // Socket.IO: join the main namespace before anything else; a subscriber
            // subscribes once it is answered.
            let _ = conn.send_text(socketio::CONNECT, out);
            if app.role == Role::Subscriber {
                return;
            }
        }
        if app.role != Role::Subscriber || self.start_subscription(app, conn, out) {
            self.pending = self.pending.saturating_sub(1);
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
        match self.protocol {
            Protocol::Pubsub => payload::write_publish(
                &mut self.text,
                &self.topic,
                self.size,
                id,
                app.sent,
                stamp_us,
            ),
            Protocol::V1 => payload::write_publish_v1(
                &mut self.text,
                &self.topic,
                self.size,
                app.sent + 1,
                (id, app.sent, stamp_us),
            ),
            Protocol::SocketIo => payload::write_publish_socketio(
                &mut self.text,
                &self.topic,
                self.size,
                (id, app.sent, stamp_us),
            ),
        }
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
        match self.protocol {
            Protocol::Pubsub => payload::write_end(&mut self.text, &self.topic, id, app.sent),
            Protocol::V1 => {
                payload::write_end_v1(&mut self.text, &self.topic, app.sent + 1, id, app.sent)
            }
            Protocol::SocketIo => {
                payload::write_end_socketio(&mut self.text, &self.topic, id, app.sent)
            }
        }
        let _ = conn.send_text(&self.text, out);
    }

    /// A data message arrived; returns why the connection must end, if it must.
    pub fn on_message(
        &mut self,
        app: &mut App,
        conn: &mut Connection,
        message: &Message<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Reason> {
        match (app.role, self.protocol) {
            (Role::Echo, _) => self.on_echo(app, conn, message.as_bytes(), out),
            (Role::Subscriber, Protocol::Pubsub) => {
                return self.on_pubsub_subscriber(app, message.as_bytes());
            }
            (Role::Subscriber, Protocol::V1) => {
                return self.on_v1_subscriber(app, conn, message, out);
            }
            (Role::Subscriber, Protocol::SocketIo) => {
                return self.on_socketio_subscriber(app, conn, message, out);
            }
            (Role::Publisher(_), Protocol::V1) => self.on_v1_publisher(conn, message, out),
            (Role::Publisher(_), Protocol::SocketIo) => {
                self.on_socketio_publisher(conn, message, out)
            }
            (Role::Plain | Role::Publisher(_), _) => self.counters.unexpected += 1,
        }
        None
    }

    /// A `v1` publisher's frame: acknowledgements of its publishes, pings.
    fn on_v1_publisher(&mut self, conn: &mut Connection, message: &Message<'_>, out: &mut Vec<u8>) {
        match v1::parse(message.as_bytes()) {
            Some(Frame::Connected) => {}
            Some(Frame::Ping) => {
                let _ = conn.send_text(v1::PONG, out);
            }
            Some(Frame::Result { .. }) => self.counters.publish_acks += 1,
            Some(Frame::Error { .. }) => self.counters.publish_errors += 1,
            _ => self.counters.unexpected += 1,
        }
    }

    /// A Socket.IO publisher's frame: the open packets, pings.
    fn on_socketio_publisher(
        &mut self,
        conn: &mut Connection,
        message: &Message<'_>,
        out: &mut Vec<u8>,
    ) {
        match socketio::parse(message.as_bytes()) {
            Some(socketio::Frame::Open | socketio::Frame::Connected) => {}
            Some(socketio::Frame::Ping) => {
                let _ = conn.send_text(socketio::PONG, out);
            }
            _ => self.counters.unexpected += 1,
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
}
