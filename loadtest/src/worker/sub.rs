//! A subscriber: its trackers (one per publisher), its subscription, its position in a `v1`
//! channel, and, in failover, its time away. This state outlives a connection: a subscriber
//! that drops keeps it while it waits, reconnects (to another node) and subscribes again, so
//! what it missed meanwhile shows in its trackers.
//!
//! ```text
//!   Off ──handshake──► Subscribing (command sent; ready once confirmed) ──► Live
//!    ▲                  `sub T` → `ok sub T` (/pubsub)                       │
//!    │                  `subscribe` [since] → reply (v1)                     │
//!    └──────────────────────── connection dropped (failover) ◄───────────────┘
//! ```
//!
//! Without `--confirm-subscriptions` on one target, a `/pubsub` subscriber subscribes on open
//! (`?topic=`) and is Live at once.

use c10m_engine::proto::{Connection, Message};

use super::client::App;
use super::ctx::Ctx;
use super::reason::Reason;
use crate::cli::Protocol;
use crate::payload::{self, Published};
use crate::seqtrack::{Arrival, Track};
use crate::socketio;
use crate::v1::{self, Frame, Reply};

/// Where a subscriber's subscription stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubState {
    /// No connection, or one not open yet.
    Off,
    /// The subscribe command went out at `since_us`; no answer yet.
    Subscribing {
        /// When it was sent.
        since_us: u64,
    },
    /// Deliveries flow.
    Live,
}

/// A subscriber whose connection dropped, until it is subscribed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Away {
    /// When the connection dropped (us).
    pub since_us: u64,
    /// Reconnect attempts so far.
    pub attempts: u32,
    /// Index (in the plan's targets) of the server it dropped from; attempts go elsewhere.
    pub home: u32,
}

/// A `v1` publication that arrived before the subscribe reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    epoch: String,
    offset: u64,
    data: Option<String>,
}

/// A subscriber's state.
#[derive(Clone, Debug)]
pub struct Sub {
    /// One tracker per publisher.
    pub tracks: Box<[Track]>,
    /// The subscription.
    pub state: SubState,
    /// v1: the last publication handled, (epoch, offset): where a resubscribe recovers from.
    pub pos: Option<(Box<str>, u64)>,
    /// v1: publications held until the subscribe reply.
    pub held: Vec<Held>,
    /// Failover: set from a drop until subscribed again.
    pub away: Option<Box<Away>>,
    /// Failover: how often it came back.
    pub returns: u32,
    /// The server it uses now (an index into the plan's targets), when not its planned one.
    pub target: Option<u32>,
}

impl Sub {
    /// A subscriber of `publishers` publishers, not connected yet.
    pub fn new(publishers: u32) -> Self {
        Sub {
            tracks: vec![Track::default(); publishers as usize].into_boxed_slice(),
            state: SubState::Off,
            pos: None,
            held: Vec::new(),
            away: None,
            returns: 0,
            target: None,
        }
    }

    /// When its unanswered subscribe command went out.
    pub fn subscribing_since(&self) -> Option<u64> {
        match self.state {
            SubState::Subscribing { since_us } => Some(since_us),
            _ => None,
        }
    }

    /// Whether it ever dropped.
    pub fn dropped(&self) -> bool {
        self.returns > 0 || self.away.is_some()
    }

    /// Messages missed, over every publisher.
    pub fn missing(&self) -> u64 {
        self.tracks.iter().map(Track::missing).sum()
    }
}

/// How a v1 publication relates to the position: deliver it, or drop it as handled already.
fn accept(pos: &mut Option<(Box<str>, u64)>, epoch: &str, offset: u64) -> bool {
    match pos {
        Some((e, o)) if &**e == epoch => {
            if offset <= *o {
                return false;
            }
            *o = offset;
        }
        // A first publication, or a new epoch (the history was lost: what came before it
        // cannot be recovered, and the trackers count it missing).
        _ => *pos = Some((epoch.into(), offset)),
    }
    true
}

impl Ctx {
    /// The subscriber's connection just opened: subscribe with a command when the plan
    /// confirms subscriptions (or it is coming back), else it subscribed on open (`?topic=`).
    /// Returns whether it is ready (live) already.
    pub(super) fn start_subscription(
        &mut self,
        app: &mut App,
        conn: &mut Connection,
        out: &mut Vec<u8>,
    ) -> bool {
        let returning = app.returning();
        let Some(sub) = app.sub.as_deref_mut() else {
            return true;
        };
        if !self.confirm && !returning {
            sub.state = SubState::Live;
            return true;
        }
        match self.protocol {
            Protocol::Pubsub => {
                self.text.clear();
                self.text.push_str("sub ");
                self.text.push_str(&self.topic);
            }
            Protocol::V1 => {
                let since = sub.pos.as_ref().map(|(e, o)| (&**e, *o));
                v1::write_subscribe(&mut self.text, 1, &self.topic, since);
            }
            Protocol::SocketIo => socketio::write_subscribe(&mut self.text, &self.topic),
        }
        sub.state = SubState::Subscribing { since_us: self.now };
        if let Err(e) = conn.send_text(&self.text, out) {
            tracing::debug!(error = %e, "subscribe command not sent");
        }
        false
    }

    /// The server confirmed the subscription: the subscriber is ready (counted out of the
    /// pending connections), and one coming back records its time away.
    fn subscribed(&mut self, app: &mut App) {
        let Some(sub) = app.sub.as_deref_mut() else {
            return;
        };
        sub.state = SubState::Live;
        self.pending = self.pending.saturating_sub(1);
        self.counters.subscribed += 1;
        if let Some(away) = sub.away.take() {
            sub.returns += 1;
            self.counters.resubscribed += 1;
            self.hists
                .reconnect
                .record(self.now.saturating_sub(away.since_us));
        }
    }

    /// A `/pubsub` subscriber's message: `ok sub T`, `msg T PAYLOAD`, or an `err`.
    pub(super) fn on_pubsub_subscriber(&mut self, app: &mut App, bytes: &[u8]) -> Option<Reason> {
        let subscribing = app.subscribing();
        if subscribing {
            if let Some(topic) = bytes.strip_prefix(b"ok sub ") {
                if topic == self.topic.as_bytes() {
                    self.subscribed(app);
                    return None;
                }
            }
            if bytes.starts_with(b"err ") {
                self.counters.unexpected += 1;
                return Some(Reason::SubscribeRefused(None));
            }
        }
        match payload::parse_delivery(bytes, &self.topic) {
            Some(p) => self.deliver(app, p, false),
            None => self.counters.unexpected += 1,
        }
        None
    }

    /// A Socket.IO subscriber's frame: `msg` events, the `subscribed` answer, pings.
    pub(super) fn on_socketio_subscriber(
        &mut self,
        app: &mut App,
        conn: &mut Connection,
        message: &Message<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Reason> {
        match socketio::parse(message.as_bytes()) {
            Some(socketio::Frame::Open) => {}
            Some(socketio::Frame::Connected) => {
                if self.start_subscription(app, conn, out) {
                    self.pending = self.pending.saturating_sub(1);
                }
            }
            Some(socketio::Frame::Ping) => {
                let _ = conn.send_text(socketio::PONG, out);
            }
            Some(socketio::Frame::Subscribed(topic))
                if app.subscribing() && topic == self.topic =>
            {
                self.subscribed(app);
            }
            Some(socketio::Frame::Msg(data)) => self.deliver_data(app, Some(&data), false),
            _ => self.counters.unexpected += 1,
        }
        None
    }

    /// A `v1` subscriber's frame: pushes, the subscribe reply, pings.
    pub(super) fn on_v1_subscriber(
        &mut self,
        app: &mut App,
        conn: &mut Connection,
        message: &Message<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Reason> {
        match v1::parse(message.as_bytes()) {
            Some(Frame::Connected) => {}
            Some(Frame::Ping) => {
                let _ = conn.send_text(v1::PONG, out);
            }
            Some(Frame::Pub(push)) if push.channel == self.topic => {
                let Some(sub) = app.sub.as_deref_mut() else {
                    self.counters.unexpected += 1;
                    return None;
                };
                let (epoch, offset) = (push.epoch, push.publication.offset);
                if sub.subscribing_since().is_some() {
                    sub.held.push(Held {
                        epoch: epoch.into_owned(),
                        offset,
                        data: push.publication.data.map(|d| d.into_owned()),
                    });
                } else if accept(&mut sub.pos, &epoch, offset) {
                    self.deliver_data(app, push.publication.data.as_deref(), false);
                } else {
                    self.counters.offsets_skipped += 1;
                }
            }
            Some(Frame::Result { reply, .. }) if app.subscribing() => {
                self.on_subscribe_reply(app, reply);
            }
            Some(Frame::Error { code, .. }) if app.subscribing() => {
                self.counters.unexpected += 1;
                return Some(Reason::SubscribeRefused(Some(code)));
            }
            _ => self.counters.unexpected += 1,
        }
        None
    }

    /// The subscribe reply: what it recovered, in order, then what was held meanwhile, each
    /// dropped if its offset was handled already.
    fn on_subscribe_reply(&mut self, app: &mut App, reply: Reply<'_>) {
        let Some(sub) = app.sub.as_deref_mut() else {
            return;
        };
        // Recovered: the reply bridged the gap since the position. A refused recovery may still
        // carry the history's tail; those are delivered, but not counted as recovered.
        let resubscribe = sub.pos.is_some();
        let refused = resubscribe && reply.recovered == Some(false);
        self.counters.recovery_refused += u64::from(refused);
        let epoch = reply.epoch.as_deref().unwrap_or_default();
        let mut recovered = Vec::with_capacity(reply.publications.len());
        for p in reply.publications {
            if accept(&mut sub.pos, epoch, p.offset) {
                recovered.push(p.data);
            } else {
                self.counters.offsets_skipped += 1;
            }
        }
        // Everything up to the channel's position is handled now, or cannot be recovered.
        let top = reply.offset.unwrap_or(0);
        match &mut sub.pos {
            Some((e, o)) if &**e == epoch => *o = (*o).max(top),
            pos => *pos = Some((epoch.into(), top)),
        }
        let held = std::mem::take(&mut sub.held);
        let mut ready = Vec::with_capacity(held.len());
        for h in held {
            if accept(&mut sub.pos, &h.epoch, h.offset) {
                ready.push(h.data);
            } else {
                self.counters.offsets_skipped += 1;
            }
        }
        self.subscribed(app);
        for data in recovered {
            self.deliver_data(app, data.as_deref(), resubscribe && !refused);
        }
        for data in ready {
            self.deliver_data(app, data.as_deref(), false);
        }
    }

    fn deliver_data(&mut self, app: &mut App, data: Option<&str>, recovered: bool) {
        match data.and_then(|d| payload::parse_payload(d.as_bytes())) {
            Some(p) => self.deliver(app, p, recovered),
            None => self.counters.unexpected += 1,
        }
    }

    /// One broadcast payload reached the subscriber (live, or `recovered` from history).
    fn deliver(&mut self, app: &mut App, published: Published, recovered: bool) {
        let counted = app.at_go;
        let Some(sub) = app.sub.as_deref_mut() else {
            self.counters.unexpected += 1;
            return;
        };
        match published {
            Published::Data {
                publisher,
                seq,
                stamp_us,
            } => {
                let Some(track) = sub.tracks.get_mut(publisher as usize) else {
                    self.counters.unexpected += 1;
                    return;
                };
                self.counters.received += 1;
                if self.driving {
                    self.counters.received_in_drive += 1;
                }
                let counters = &mut self.counters;
                let arrival = track.arrive(seq, &mut |first, len| {
                    if counted {
                        counters.gap(publisher, first, len, 1);
                    }
                });
                match arrival {
                    Arrival::InOrder | Arrival::Late => {
                        self.counters.deliveries += 1;
                        self.counters.reordered += u64::from(arrival == Arrival::Late);
                        self.counters.recovered += u64::from(recovered);
                        self.hists.latency.record(self.now.saturating_sub(stamp_us));
                    }
                    Arrival::Duplicate => self.counters.duplicates += 1,
                    Arrival::Stale => self.counters.stale += 1,
                }
            }
            Published::End { publisher, count } => {
                match sub.tracks.get_mut(publisher as usize) {
                    Some(track) => track.end(count),
                    None => self.counters.unexpected += 1,
                }
                if app.awaiting && sub.tracks.iter().all(Track::complete) {
                    app.awaiting = false;
                    self.incomplete_subs = self.incomplete_subs.saturating_sub(1);
                }
            }
        }
    }

    /// A subscriber is gone for good: what it missed, and, if it ever dropped, how it fared.
    pub(super) fn settle_subscriber(&mut self, app: &mut App) {
        if app.awaiting {
            self.incomplete_subs = self.incomplete_subs.saturating_sub(1);
        }
        let (true, Some(sub)) = (app.at_go, app.sub.as_deref_mut()) else {
            return;
        };
        let c = &mut self.counters;
        let missing = sub.missing();
        c.missing += missing;
        c.max_missing_per_sub = c.max_missing_per_sub.max(missing);
        c.subs_with_missing += u64::from(missing > 0);
        c.subs_with_duplicates += u64::from(sub.tracks.iter().any(|t| t.duplicates > 0));
        c.subs_with_reordering += u64::from(sub.tracks.iter().any(|t| t.reordered > 0));
        c.subs_incomplete += u64::from(!sub.tracks.iter().all(Track::complete));
        if sub.dropped() {
            c.subs_dropped += 1;
            c.lost_by_dropped += missing;
            c.dropped_subs_with_loss += u64::from(missing > 0);
            c.max_lost_per_dropped_sub = c.max_lost_per_dropped_sub.max(missing);
            c.reconnect_gave_up += u64::from(sub.away.is_some());
        }
        for (p, t) in sub.tracks.iter_mut().enumerate() {
            t.finish(&mut |first, len| c.gap(p as u32, first, len, 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_drop_handled_offsets_and_follow_new_epochs() {
        let mut pos = None;
        assert!(accept(&mut pos, "e1", 5));
        assert!(!accept(&mut pos, "e1", 5), "a duplicate offset");
        assert!(!accept(&mut pos, "e1", 3), "an older one");
        assert!(accept(&mut pos, "e1", 7), "a gap is the trackers' business");
        assert!(accept(&mut pos, "e2", 1), "a new epoch starts again");
        assert_eq!(pos, Some(("e2".into(), 1)));
    }

    #[test]
    fn backoff_bounds_double_up_to_the_cap() {
        let b = crate::cli::Backoff {
            base_ms: 100,
            max_ms: 1_000,
        };
        let bounds: Vec<u64> = (0..6).map(|k| b.bound_ms(k)).collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(b.bound_ms(200), 1_000, "no overflow");
    }
}
