//! The SFU: a selective forwarding unit on webrtc-rs's sans-IO core (the `rtc` crate), driven
//! by the shard that owns the room. Each shard running signaling binds one UDP socket
//! ([`Ctx::bind_udp`]); a room's media lives on the shard its name hashes to
//! ([`room_shard`]), so every packet of a room is read, forwarded and written on one thread
//! with no hop and no task per connection. Signaling reaches that shard through
//! [`Ctx::post`] as a [`Command`].
//!
//! Demultiplexing: the SFU is ICE-lite and has one candidate per shard (its socket), so a
//! participant's STUN binding request names its peer connection by the server's ufrag (see
//! [`stun`]); every address such a request came from then routes everything else from it (DTLS,
//! SRTP, SRTCP). Timers: the earliest deadline of the shard's connections is one engine timer
//! ([`Ctx::set_timer`]).
//!
//! Negotiation: one peer connection per participant. The participant offers first (its audio
//! and video, sendonly); after that the SFU is the only offerer: each time the tracks
//! forwarded to a participant change (someone published, someone left), it sends a new offer
//! once the previous one is answered.

pub mod estimate;
pub mod keyframe;
pub mod peer;
pub mod remote;
pub mod rewrite;
pub mod room;
pub mod routes;
pub mod simulcast;
pub mod speaker;
pub mod stun;
pub mod vp8;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use c10m_engine::server::{Ctx, Datagram, SharedFrame, TimerId, UdpId};

use peer::Peer;
pub use remote::Reply;
use room::{Output, Room};
use routes::Routes;

/// The token of the SFU's engine timer.
pub const TIMER: u64 = 0x5f0;

/// What signaling asks of the shard that owns a room's media.
#[derive(Debug)]
pub enum Command {
    /// Participant `id` joined `room` in SFU mode.
    Join {
        /// The room.
        room: String,
        /// The participant.
        id: String,
        /// Where its signaling messages go (SDP goes back there).
        conn: Reply,
    },
    /// The participant's offer (its first and only one).
    Offer {
        /// The room.
        room: String,
        /// The participant.
        id: String,
        /// The SDP.
        sdp: String,
    },
    /// The participant's answer to the SFU's offer.
    Answer {
        /// The room.
        room: String,
        /// The participant.
        id: String,
        /// The SDP.
        sdp: String,
    },
    /// The participant asks for `publisher`'s simulcast layer `rid` (`None`: the best sent).
    Layer {
        /// The room.
        room: String,
        /// The participant (the subscriber).
        id: String,
        /// Whose video.
        publisher: String,
        /// The layer's RTP stream id.
        rid: Option<String>,
    },
    /// The participant left (or its connection closed).
    Leave {
        /// The room.
        room: String,
        /// The participant.
        id: String,
    },
}

impl Command {
    /// The room it concerns.
    pub fn room(&self) -> &str {
        match self {
            Command::Join { room, .. }
            | Command::Offer { room, .. }
            | Command::Answer { room, .. }
            | Command::Layer { room, .. }
            | Command::Leave { room, .. } => room,
        }
    }
}

/// What a command did to its room on this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomChange {
    /// Its first participant joined: the room opened here.
    Opened,
    /// Its last participant left: the room closed here.
    Closed,
    /// Neither.
    Same,
}

/// The shard that owns `room`'s media (FNV-1a of its name).
pub fn room_shard(room: &str, shards: u16) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in room.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(shards.max(1))) as u16
}

/// The address shard `shard` binds for the SFU's base address `base`: the same address with
/// port `base + shard` (port 0: any free port).
pub fn shard_addr(base: SocketAddr, shard: u16) -> SocketAddr {
    let mut addr = base;
    if base.port() != 0 {
        addr.set_port(base.port().saturating_add(shard));
    }
    addr
}

/// The SSRCs of forwarded tracks: random (keyed per shard), never zero.
#[derive(Debug, Default)]
pub struct Ssrcs {
    random: RandomState,
    counter: u64,
}

impl Ssrcs {
    /// The next SSRC.
    pub fn fresh(&mut self) -> u32 {
        self.counter += 1;
        (self.random.hash_one(self.counter) as u32).max(1)
    }
}

/// One shard's SFU.
pub struct SfuShard {
    /// Whether participants' bandwidth is estimated ([`estimate`]).
    bandwidth_estimate: bool,
    socket: UdpId,
    local: SocketAddr,
    rooms: HashMap<String, Room>,
    /// Which participant a datagram is from.
    routes: Routes,
    /// The armed engine timer and its deadline.
    timer: Option<(Instant, TimerId)>,
    ssrcs: Ssrcs,
}

impl std::fmt::Debug for SfuShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuShard")
            .field("local", &self.local)
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

/// How the SFU runs.
#[derive(Debug, Clone, Copy)]
pub struct SfuOptions {
    /// Its UDP address: shard i binds port + i (an explicit IP, the participants' candidate).
    pub udp: SocketAddr,
    /// Estimate each participant's bandwidth from its transport-wide feedback and fit its
    /// simulcast layers to it ([`estimate`]); off, the widest layer sent goes to everyone
    /// who asks for none, and each forwarded packet costs less.
    pub bandwidth_estimate: bool,
}

impl SfuShard {
    /// Binds the shard's socket at `addr` (an explicit address: it is the candidate the
    /// participants are given); `bandwidth_estimate`: see [`SfuOptions`].
    pub fn bind(
        ctx: &mut Ctx<'_>,
        addr: SocketAddr,
        bandwidth_estimate: bool,
    ) -> io::Result<SfuShard> {
        if addr.ip().is_unspecified() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the SFU's UDP address must be an explicit IP (it is the ICE candidate)",
            ));
        }
        let socket = ctx.bind_udp(addr)?;
        let local = ctx.udp_addr(socket).unwrap_or(addr);
        Ok(SfuShard {
            bandwidth_estimate,
            socket,
            local,
            rooms: HashMap::new(),
            routes: Routes::default(),
            timer: None,
            ssrcs: Ssrcs::default(),
        })
    }

    /// The socket's address (the candidate participants connect to).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Participants with a peer connection on this shard.
    pub fn participants(&self) -> usize {
        self.rooms.values().map(|r| r.peers.len()).sum()
    }

    /// Rooms with media on this shard.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Carries out a command from signaling; says whether it opened or closed its room here.
    pub fn command(&mut self, ctx: &mut Ctx<'_>, command: Command) -> RoomChange {
        let now = Instant::now();
        let mut out = Output::default();
        let room_name = command.room().to_owned();
        let mut change = RoomChange::Same;
        match command {
            Command::Join { room, id, conn } => {
                match Peer::new(id.clone(), conn.clone(), now, self.bandwidth_estimate) {
                    Ok(peer) => {
                        if !self.rooms.contains_key(&room) {
                            change = RoomChange::Opened;
                        }
                        let r = self.rooms.entry(room).or_default();
                        if r.find(&id).is_none() {
                            r.peers.push(peer);
                        }
                    }
                    Err(e) => out.messages.push((conn, room::sdp_error(&e))),
                }
            }
            Command::Offer { room, id, sdp } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.offer(&id, sdp, self.local, now, &mut out, &mut self.ssrcs);
                    if let Some(u) = r.find(&id).and_then(|i| r.peers[i].ufrag.clone()) {
                        self.routes.set_ufrag((room, id), u);
                    }
                }
            }
            Command::Answer { room, id, sdp } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.answer(&id, sdp, now, &mut out);
                }
            }
            Command::Layer {
                room,
                id,
                publisher,
                rid,
            } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.want_layer(&id, &publisher, rid, &mut out);
                }
            }
            Command::Leave { room, id } => {
                if let Some(r) = self.rooms.get_mut(&room)
                    && let Some(peer) = r.leave(&id)
                {
                    self.routes.forget(&(room.clone(), peer.id.clone()));
                    if r.peers.is_empty() {
                        self.rooms.remove(&room);
                        change = RoomChange::Closed;
                    }
                }
            }
        }
        if let Some(r) = self.rooms.get_mut(&room_name) {
            r.pump(now, &mut out, &mut self.ssrcs);
        }
        self.finish(ctx, out);
        change
    }

    /// Datagrams arrived on a socket of this app.
    pub fn datagrams(&mut self, ctx: &mut Ctx<'_>, socket: UdpId, datagrams: &[Datagram<'_>]) {
        if socket != self.socket {
            return;
        }
        let now = Instant::now();
        // Which participants read something, by room.
        let mut touched: HashMap<String, Vec<usize>> = HashMap::new();
        for d in datagrams {
            let route = match stun::server_ufrag(d.data) {
                Some(ufrag) => {
                    let Some(route) = self.routes.by_ufrag(ufrag).cloned() else {
                        continue;
                    };
                    // The participant's addresses: learned from its STUN (ICE-lite answers
                    // every valid check; the browser picks the pair its media takes).
                    self.routes.learn(d.from, &route);
                    route
                }
                None => match self.routes.by_addr(&d.from) {
                    Some(route) => route.clone(),
                    None => continue,
                },
            };
            let (room, id) = &route;
            if let Some(r) = self.rooms.get_mut(room)
                && let Some(i) = r.find(id)
            {
                r.read(i, self.local, d.from, d.data, now);
                touched.entry(room.clone()).or_default().push(i);
            }
        }
        let mut out = Output::default();
        for (room, peers) in &touched {
            if let Some(r) = self.rooms.get_mut(room) {
                r.pump_peers(peers, now, &mut out, &mut self.ssrcs);
            }
        }
        self.finish(ctx, out);
    }

    /// The engine timer fired: runs every connection that is due.
    pub fn timer(&mut self, ctx: &mut Ctx<'_>) {
        self.timer = None;
        let now = Instant::now();
        let mut out = Output::default();
        for r in self.rooms.values_mut() {
            if r.next_timeout().is_some_and(|t| t <= now) {
                let due = r.timeout(now);
                r.pump_peers(&due, now, &mut out, &mut self.ssrcs);
            }
        }
        self.finish(ctx, out);
    }

    /// Sends what a pass produced and arms the timer for the earliest deadline.
    fn finish(&mut self, ctx: &mut Ctx<'_>, out: Output) {
        for (to, data) in out.datagrams {
            let _ = ctx.send_datagram(self.socket, to, &data);
        }
        for (to, text) in out.messages {
            match to {
                Reply::Conn(conn) => {
                    let _ = ctx.send_text(conn, &text);
                }
                Reply::Remote(id) => {
                    ctx.publish(
                        &crate::rooms::participant_topic(&id),
                        &SharedFrame::text(&text),
                    );
                }
            }
        }
        let next = self.rooms.values().filter_map(Room::next_timeout).min();
        let Some(next) = next else {
            return;
        };
        if let Some((armed, id)) = self.timer {
            if armed <= next {
                return;
            }
            ctx.cancel_timer(id);
        }
        let after = next.saturating_duration_since(Instant::now());
        // Rounded up to the engine's millisecond timers.
        let ms = after
            .as_millis()
            .saturating_add(u128::from(after.subsec_nanos() % 1_000_000 != 0));
        let id = ctx.set_timer(u64::try_from(ms).unwrap_or(u64::MAX), TIMER);
        self.timer = Some((next, id));
    }
}
