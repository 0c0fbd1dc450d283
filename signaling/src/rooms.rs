//! Rooms over the engine (`/signal/v1`): join with a name, learn who is there and which ICE
//! servers to use, hear who joins and leaves, and relay offers, answers and candidates to a
//! participant by id. Membership is the cluster backend's presence (exact on one node, shared
//! through Redis across nodes); room events go through the engine topic `sig ROOM`, and a relay
//! goes straight to the participant's connection when it is in this process (any shard), else
//! through its own topic `sigp ID` and the broker. An SFU room's media is on one node, the
//! node of its first SFU participant; a participant that joins it elsewhere talks to that
//! node's SFU through the backend ([`crate::sfu::remote`]).
//!
//! Messages, one JSON object per text frame (docs/SIGNALING.md):
//!
//! ```text
//! -> {"type":"join","room":"R"}                     (or "mode":"sfu": media through the SFU)
//! <- {"type":"joined","id":ME,"room":"R","participants":["A","B"],"ice_servers":[...]}
//! <- {"type":"participant-joined","id":"C"}        (everyone in the room, the joiner too)
//! -> {"type":"offer","to":"A","sdp":"..."}          (also "answer", "candidate")
//! <- {"type":"offer","from":ME,"sdp":"..."}          (at A: the message, "to" replaced)
//! -> {"type":"layer","publisher":"A","rid":"h"}   (SFU mode: A's simulcast layer; null: best)
//! -> {"type":"leave"}
//! <- {"type":"left"}                                 (to the leaver)
//! <- {"type":"participant-left","id":"C"}            (to the others)
//! <- {"type":"error","code":N,"message":"..."}
//! ```
//!
//! In SFU mode the participant's one peer connection is with the server, addressed as `"sfu"`:
//! `{"type":"offer","to":"sfu","sdp":...}` is answered by `{"type":"answer","from":"sfu",...}`,
//! and the SFU's own offers (`{"type":"offer","from":"sfu",...}`) are answered with
//! `{"type":"answer","to":"sfu","sdp":...}` ([`crate::sfu`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use c10m_cluster::protocol::valid_name;
use c10m_cluster::{Backend, Done, Outcome, Present};
use c10m_engine::proto::handshake::Request;
use c10m_engine::proto::{CloseCode, Message};
use c10m_engine::server::{
    App, Closed, ConnId, Ctx, Datagram, Handle, SharedFrame, Subscribed, UdpId,
};
use serde_json::{Map, Value};

use crate::ice::IceConfig;
use crate::sfu::{self, Command, RoomChange, SfuShard};

/// Limits of the signaling service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Participants per room (a join past it gets error 3, `room full`). Checked against the
    /// room's presence before joining: two racing joiners may pass it by one.
    pub max_participants: usize,
    /// Largest signaling message, bytes (an SDP with many candidates fits in a few KiB).
    pub max_message: usize,
    /// Malformed messages a connection may send before it is closed with 3501.
    pub max_errors: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_participants: 50,
            max_message: 64 << 10,
            max_errors: 100,
        }
    }
}

/// Error codes sent to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalError {
    /// Not JSON, not an object, or no `type`.
    BadMessage = 1,
    /// A type this service does not know.
    UnknownType = 2,
    /// The room is full.
    RoomFull = 3,
    /// A room or participant name out of bounds.
    BadName = 4,
    /// `join` while in a room.
    AlreadyJoined = 5,
    /// A relay or `leave` while in no room.
    NotJoined = 6,
    /// A relay to a participant that is not in the room.
    NoSuchParticipant = 7,
    /// Larger than the message limit.
    TooLarge = 8,
    /// An SDP the SFU could not take (sent by the SFU with the reason).
    BadSdp = 9,
    /// `"mode":"sfu"` on a server without the SFU, or a shard whose SFU socket failed.
    NoSfu = 10,
    /// The backend (Redis) is unreachable.
    Unavailable = 100,
}

impl SignalError {
    fn message(self) -> &'static str {
        match self {
            SignalError::BadMessage => "bad message",
            SignalError::UnknownType => "unknown type",
            SignalError::RoomFull => "room full",
            SignalError::BadName => "bad room or participant name",
            SignalError::AlreadyJoined => "already in a room",
            SignalError::NotJoined => "not in a room",
            SignalError::NoSuchParticipant => "no such participant in this room",
            SignalError::TooLarge => "message too large",
            SignalError::BadSdp => "bad sdp",
            SignalError::NoSfu => "no SFU on this server",
            SignalError::Unavailable => "unavailable, retry later",
        }
    }

    pub(crate) fn json(self) -> String {
        format!(
            "{{\"type\":\"error\",\"code\":{},\"message\":\"{}\"}}",
            self as u16,
            self.message()
        )
    }
}

/// Request tag of the presence read that completes a join.
const JOIN: u64 = 1;
/// Request tag of the claim on a room's media that completes an SFU join.
const JOIN_CLAIM: u64 = 2;

/// What the shards' signaling apps share.
pub struct Signaling {
    limits: Limits,
    ice: IceConfig,
    make_backend: Box<dyn Fn(Handle) -> Arc<dyn Backend> + Send + Sync>,
    backend: OnceLock<Arc<dyn Backend>>,
    node: String,
    /// This process's participants: id -> (connection, room).
    local: Mutex<HashMap<String, (ConnId, String)>>,
    /// The SFU's settings, if it runs.
    sfu: Option<sfu::SfuOptions>,
}

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signaling")
            .field("limits", &self.limits)
            .field("ice", &self.ice)
            .finish_non_exhaustive()
    }
}

impl Signaling {
    /// A signaling service whose membership lives in the backend `make_backend` makes once the
    /// server runs (the same backend as the client protocol's, or its own).
    pub fn new(
        limits: Limits,
        ice: IceConfig,
        make_backend: impl Fn(Handle) -> Arc<dyn Backend> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Signaling {
            limits,
            ice,
            make_backend: Box::new(make_backend),
            backend: OnceLock::new(),
            node: c10m_cluster::new_node_id(),
            local: Mutex::default(),
            sfu: None,
        })
    }

    /// The same service with the SFU on: each shard binds a UDP socket at `addr` (port
    /// `addr.port() + shard`, or any free port for 0) for the media of the rooms it owns.
    pub fn with_sfu(
        limits: Limits,
        ice: IceConfig,
        sfu: sfu::SfuOptions,
        make_backend: impl Fn(Handle) -> Arc<dyn Backend> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Signaling {
            limits,
            ice,
            make_backend: Box::new(make_backend),
            backend: OnceLock::new(),
            node: c10m_cluster::new_node_id(),
            local: Mutex::default(),
            sfu: Some(sfu),
        })
    }

    /// The app factory for [`Routes::route`](c10m_engine::server::Routes::route).
    pub fn app(self: &Arc<Self>) -> impl Fn(u16) -> Box<dyn App> + Send + Sync + 'static {
        let service = self.clone();
        move |_| {
            Box::new(RoomsApp {
                service: service.clone(),
                done: None,
                sfu: None,
            })
        }
    }

    fn backend(&self, handle: &Handle) -> &Arc<dyn Backend> {
        self.backend
            .get_or_init(|| (self.make_backend)(handle.clone()))
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ConnId, String)>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's state.
#[derive(Debug, Default)]
struct Participant {
    id: String,
    room: Option<String>,
    /// A join waiting for the room's presence.
    joining: Option<String>,
    /// Joined (or joining) in SFU mode: media through the server.
    sfu: bool,
    /// In SFU mode, the node whose SFU carries the room's media when it is not this one.
    media: Option<String>,
    /// The room's presence, while the claim on its media completes an SFU join.
    present: Option<Vec<Present>>,
    /// The topics of a join the broker has not confirmed yet: the join is announced once
    /// none is left ([`RoomsApp::announce`]).
    unconfirmed: Vec<String>,
    /// The others in the room, for the `joined` of a join waiting for its topics.
    others: Vec<String>,
    errors: u32,
}

/// A joined participant's id, room, whether its media goes through the SFU, and the node of
/// that SFU when it is another one.
fn joined(ctx: &mut Ctx<'_>, id: ConnId) -> Option<(String, String, bool, Option<String>)> {
    ctx.state::<Participant>(id)
        .and_then(|p| Some((p.id.clone(), p.room.clone()?, p.sfu, p.media.clone())))
}

/// What starts the `user` of an SFU participant's presence entry; the node whose SFU carries
/// the room's media follows.
const SFU_MEMBER: &str = "sfu:";

fn room_channel(room: &str) -> String {
    format!("sig:{room}")
}

/// The channel whose holder ([`Backend::claim`]) is the node carrying the room's media: the
/// node of the room's first SFU join, while its SFU has the room and the node lives.
fn media_channel(room: &str) -> String {
    format!("sigm:{room}")
}

fn room_topic(room: &str) -> String {
    format!("sig {room}")
}

pub(crate) fn participant_topic(id: &str) -> String {
    format!("sigp {id}")
}

/// The app on one shard.
pub struct RoomsApp {
    service: Arc<Signaling>,
    done: Option<Done>,
    /// This shard's SFU (when the service runs one and its socket bound).
    sfu: Option<SfuShard>,
}

impl std::fmt::Debug for RoomsApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomsApp").finish_non_exhaustive()
    }
}

impl RoomsApp {
    fn done(&mut self, ctx: &Ctx<'_>) -> Done {
        self.done
            .get_or_insert_with(|| Done {
                handle: ctx.handle(),
                app: ctx.app_id(),
            })
            .clone()
    }

    fn backend(&self, ctx: &Ctx<'_>) -> Arc<dyn Backend> {
        self.service.backend(&ctx.handle()).clone()
    }

    fn fail(&mut self, ctx: &mut Ctx<'_>, id: ConnId, e: SignalError) {
        let _ = ctx.send_text(id, &e.json());
        let max = self.service.limits.max_errors;
        if let Some(p) = ctx.state::<Participant>(id) {
            p.errors += 1;
            if p.errors > max {
                let _ = ctx.close(id, CloseCode(3501), "too many bad messages");
            }
        }
    }

    fn on_text(&mut self, ctx: &mut Ctx<'_>, id: ConnId, text: &str) {
        let Ok(Value::Object(mut msg)) = serde_json::from_str::<Value>(text) else {
            return self.fail(ctx, id, SignalError::BadMessage);
        };
        let Some(kind) = msg.get("type").and_then(Value::as_str).map(str::to_owned) else {
            return self.fail(ctx, id, SignalError::BadMessage);
        };
        match kind.as_str() {
            "join" => {
                let Some(room) = msg
                    .get("room")
                    .and_then(Value::as_str)
                    .filter(|r| valid_name(r))
                else {
                    return self.fail(ctx, id, SignalError::BadName);
                };
                let room = room.to_owned();
                let sfu = match msg.get("mode") {
                    None => false,
                    Some(Value::String(m)) if m == "mesh" => false,
                    Some(Value::String(m)) if m == "sfu" => true,
                    Some(_) => return self.fail(ctx, id, SignalError::BadMessage),
                };
                if sfu && self.service.sfu.is_none() {
                    return self.fail(ctx, id, SignalError::NoSfu);
                }
                let Some(p) = ctx.state::<Participant>(id) else {
                    return;
                };
                if p.room.is_some() || p.joining.is_some() {
                    return self.fail(ctx, id, SignalError::AlreadyJoined);
                }
                p.joining = Some(room.clone());
                p.sfu = sfu;
                let done = self.done(ctx);
                self.backend(ctx)
                    .presence(&done, id, JOIN, &room_channel(&room));
            }
            "leave" => {
                if self.leave(ctx, id) {
                    let _ = ctx.send_text(id, "{\"type\":\"left\"}");
                } else {
                    self.fail(ctx, id, SignalError::NotJoined);
                }
            }
            "offer" | "answer" | "candidate" => self.relay(ctx, id, &mut msg),
            "layer" => self.layer(ctx, id, &msg),
            _ => self.fail(ctx, id, SignalError::UnknownType),
        }
    }

    fn relay(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: &mut Map<String, Value>) {
        let Some(to) = msg.remove("to").and_then(|v| v.as_str().map(str::to_owned)) else {
            return self.fail(ctx, id, SignalError::NoSuchParticipant);
        };
        if to == "sfu" {
            return self.relay_to_sfu(ctx, id, msg);
        }
        let Some((me, room)) = ctx
            .state::<Participant>(id)
            .and_then(|p| Some((p.id.clone(), p.room.clone()?)))
        else {
            return self.fail(ctx, id, SignalError::NotJoined);
        };
        msg.insert("from".into(), Value::String(me));
        let text = Value::Object(std::mem::take(msg)).to_string();
        let target = self.service.local().get(&to).cloned();
        match target {
            // In this process: straight to its connection (mail when it is on another shard).
            Some((conn, their_room)) if their_room == room => {
                if ctx.send_text(conn, &text).is_err() {
                    self.fail(ctx, id, SignalError::NoSuchParticipant);
                }
            }
            Some(_) => self.fail(ctx, id, SignalError::NoSuchParticipant),
            // Perhaps on another node: its own topic, through the broker.
            None if ctx.handle().has_broker() && valid_name(&to) => {
                ctx.publish(&participant_topic(&to), &SharedFrame::text(&text));
            }
            None => self.fail(ctx, id, SignalError::NoSuchParticipant),
        }
    }

    /// A message for the SFU: offers and answers go to the shard that owns the room's media;
    /// candidates are dropped (the SFU is ICE-lite: it learns the participant's address from
    /// its connectivity checks).
    fn relay_to_sfu(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: &mut Map<String, Value>) {
        let Some((me, room, sfu, media)) = joined(ctx, id) else {
            return self.fail(ctx, id, SignalError::NotJoined);
        };
        if !sfu {
            return self.fail(ctx, id, SignalError::NoSuchParticipant);
        }
        let offer = msg.get("type").and_then(Value::as_str) == Some("offer");
        if msg.get("type").and_then(Value::as_str) == Some("candidate") {
            return;
        }
        let Some(sdp) = msg.remove("sdp").and_then(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        }) else {
            return self.fail(ctx, id, SignalError::BadMessage);
        };
        let command = if offer {
            Command::Offer { room, id: me, sdp }
        } else {
            Command::Answer { room, id: me, sdp }
        };
        self.sfu_command(ctx, media.as_deref(), command);
    }

    /// A subscriber's choice of a publisher's simulcast layer (SFU mode):
    /// `{"type":"layer","publisher":ID,"rid":"h"}`, `"rid":null` (or absent) for the best one
    /// sent.
    fn layer(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: &Map<String, Value>) {
        let Some((me, room, sfu, media)) = joined(ctx, id) else {
            return self.fail(ctx, id, SignalError::NotJoined);
        };
        if !sfu {
            return self.fail(ctx, id, SignalError::NoSfu);
        }
        let Some(publisher) = msg
            .get("publisher")
            .and_then(Value::as_str)
            .filter(|p| valid_name(p))
        else {
            return self.fail(ctx, id, SignalError::BadMessage);
        };
        let rid = match msg.get("rid") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) if sfu::simulcast::valid_rid(r) => Some(r.clone()),
            Some(_) => return self.fail(ctx, id, SignalError::BadMessage),
        };
        let command = Command::Layer {
            room,
            id: me,
            publisher: publisher.to_owned(),
            rid,
        };
        self.sfu_command(ctx, media.as_deref(), command);
    }

    /// Hands a command to the shard that owns its room's media: on this node, or through the
    /// backend to node `media`'s.
    fn sfu_command(&mut self, ctx: &mut Ctx<'_>, media: Option<&str>, command: Command) {
        if let Some(node) = media {
            if let Some(text) = command.to_json() {
                self.backend(ctx).to_node(node, &text);
            }
            return;
        }
        let shard = sfu::room_shard(command.room(), ctx.shards());
        if shard == ctx.shard() {
            self.run_sfu(ctx, command);
        } else {
            let _ = ctx.post(shard, Box::new(command));
        }
    }

    /// Carries out a command on this shard's SFU. A room that opens here keeps the claim on
    /// the room's media (the join that chose this node made it, lasting one TTL) by joining
    /// the media channel, refreshed while the node lives; a room that closes lets it go, so
    /// the next first join may take the room elsewhere. A claim whose joiner went away before
    /// its room opened expires.
    fn run_sfu(&mut self, ctx: &mut Ctx<'_>, command: Command) {
        let Some(s) = &mut self.sfu else {
            return;
        };
        let room = command.room().to_owned();
        let node = self.service.node.clone();
        match s.command(ctx, command) {
            RoomChange::Opened => self.backend(ctx).join(
                &media_channel(&room),
                &Present {
                    client: node,
                    user: String::new(),
                },
            ),
            RoomChange::Closed => self.backend(ctx).leave(&media_channel(&room), &node),
            RoomChange::Same => {}
        }
    }

    /// Leaves the room, if in one: presence, topics, the others told. False if in none.
    fn leave(&mut self, ctx: &mut Ctx<'_>, id: ConnId) -> bool {
        let Some(p) = ctx.state::<Participant>(id) else {
            return false;
        };
        let Some(room) = p.room.take() else {
            return false;
        };
        let me = p.id.clone();
        let media = p.media.take();
        // A join still waiting for its topics was never announced: no one is told it left.
        let announced = p.unconfirmed.is_empty();
        p.unconfirmed.clear();
        p.others.clear();
        if std::mem::take(&mut p.sfu) {
            let command = Command::Leave {
                room: room.clone(),
                id: me.clone(),
            };
            self.sfu_command(ctx, media.as_deref(), command);
        }
        self.service.local().remove(&me);
        self.backend(ctx).leave(&room_channel(&room), &me);
        let _ = ctx.unsubscribe(id, &room_topic(&room));
        let _ = ctx.unsubscribe(id, &participant_topic(&me));
        if announced {
            let left = format!(
                "{{\"type\":\"participant-left\",\"id\":{}}}",
                Value::String(me)
            );
            ctx.publish(&room_topic(&room), &SharedFrame::text(&left));
        }
        true
    }

    /// The room's presence came back: join if there is room.
    fn complete_join(&mut self, ctx: &mut Ctx<'_>, id: ConnId, present: Vec<Present>) {
        let Some(p) = ctx.state::<Participant>(id) else {
            return;
        };
        if p.joining.is_none() {
            return;
        }
        if present.len() >= self.service.limits.max_participants {
            p.joining = None;
            return self.fail(ctx, id, SignalError::RoomFull);
        }
        let node = self.service.node.clone();
        if !p.sfu {
            return self.finish_join(ctx, id, present, node);
        }
        // One room's media is on one node: the holder of the room's media channel, which
        // this node claims (two first joins on two nodes at once get the same holder).
        p.present = Some(present);
        let room = p.joining.clone().unwrap_or_default();
        let done = self.done(ctx);
        let me = Present {
            client: node,
            user: String::new(),
        };
        self.backend(ctx)
            .claim(&done, id, JOIN_CLAIM, &media_channel(&room), &me);
    }

    /// The claim on the room's media came back: the SFU join completes with its holder.
    fn complete_sfu_join(&mut self, ctx: &mut Ctx<'_>, id: ConnId, holder: Vec<Present>) {
        let Some(present) = ctx.state::<Participant>(id).and_then(|p| p.present.take()) else {
            return;
        };
        match holder.into_iter().next() {
            Some(media) => self.finish_join(ctx, id, present, media.client),
            None => self.join_failed(ctx, id),
        }
    }

    /// A join's read or claim could not be answered (the backend is unavailable).
    fn join_failed(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if let Some(p) = ctx.state::<Participant>(id) {
            p.joining = None;
            p.present = None;
        }
        self.fail(ctx, id, SignalError::Unavailable);
    }

    /// Joins the room whose presence was `present`, its media (in SFU mode) on node `media`.
    /// The join is announced once the joiner's topics are live: with a broker, what the
    /// others (or another node's SFU) send the joiner as soon as they hear of it would be lost
    /// while Redis is not yet subscribed to its topic (an SFU's answer was, and the client met
    /// the SFU's next offer with its own still unanswered).
    fn finish_join(&mut self, ctx: &mut Ctx<'_>, id: ConnId, present: Vec<Present>, media: String) {
        let node = &self.service.node;
        let Some(p) = ctx.state::<Participant>(id) else {
            return;
        };
        let Some(room) = p.joining.take() else {
            return;
        };
        if p.sfu && media != *node {
            tracing::debug!(%room, media, "SFU join: the room's media is on another node");
            p.media = Some(media);
        }
        p.room = Some(room.clone());
        let me = p.id.clone();
        p.others = present
            .into_iter()
            .map(|x| x.client)
            .filter(|c| *c != me)
            .collect();
        self.service.local().insert(me.clone(), (id, room.clone()));
        let mut unconfirmed = Vec::new();
        for topic in [room_topic(&room), participant_topic(&me)] {
            if matches!(ctx.subscribe(id, &topic), Ok(Subscribed::Pending)) {
                unconfirmed.push(topic);
            }
        }
        let ready = unconfirmed.is_empty();
        if let Some(p) = ctx.state::<Participant>(id) {
            p.unconfirmed = unconfirmed;
        }
        if ready {
            self.announce(ctx, id);
        }
    }

    /// A joiner's topics are live: it enters the room's presence, the SFU (in SFU mode) hears
    /// of it, it gets `joined`, and the room `participant-joined`.
    fn announce(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let Some(p) = ctx.state::<Participant>(id) else {
            return;
        };
        let Some(room) = p.room.clone() else {
            return;
        };
        let me = p.id.clone();
        let sfu = p.sfu;
        let remote = p.media.clone();
        let others = std::mem::take(&mut p.others);
        let media = remote.as_deref().unwrap_or(&self.service.node);
        self.backend(ctx).join(
            &room_channel(&room),
            &Present {
                client: me.clone(),
                user: if sfu {
                    format!("{SFU_MEMBER}{media}")
                } else {
                    String::new()
                },
            },
        );
        let others: Vec<Value> = others.into_iter().map(Value::String).collect();
        let ice = self
            .service
            .ice
            .servers_json(&me, c10m_cluster::token::now_secs());
        let mode = if sfu { "sfu" } else { "mesh" };
        let joined = format!(
            "{{\"type\":\"joined\",\"id\":{},\"room\":{},\"mode\":\"{mode}\",\"participants\":{},\"ice_servers\":{ice}}}",
            Value::String(me.clone()),
            Value::String(room.clone()),
            Value::Array(others)
        );
        if sfu {
            let conn = match remote {
                Some(_) => sfu::Reply::Remote(me.clone()),
                None => sfu::Reply::Conn(id),
            };
            let command = Command::Join {
                room: room.clone(),
                id: me.clone(),
                conn,
            };
            self.sfu_command(ctx, remote.as_deref(), command);
        }
        let _ = ctx.send_text(id, &joined);
        let event = format!(
            "{{\"type\":\"participant-joined\",\"id\":{}}}",
            Value::String(me)
        );
        ctx.publish(&room_topic(&room), &SharedFrame::text(&event));
    }
}

impl App for RoomsApp {
    /// Messages up to four times the limit are read and answered error 8 (too large); past
    /// that the engine closes the connection with 1009 before buffering them.
    fn max_message_size(&self) -> Option<usize> {
        Some(self.service.limits.max_message.saturating_mul(4))
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        let _ = self.backend(ctx);
        let done = self.done(ctx);
        // Participants of this node's SFU rooms that joined on other nodes.
        if self.service.sfu.is_some() && ctx.shard() == 0 {
            self.backend(ctx).listen(&done, &self.service.node);
        }
        if let Some(options) = self.service.sfu {
            let addr = sfu::shard_addr(options.udp, ctx.shard());
            match SfuShard::bind(ctx, addr, options.bandwidth_estimate) {
                Ok(s) => {
                    tracing::info!(shard = ctx.shard(), addr = %s.local_addr(), "SFU listening");
                    self.sfu = Some(s);
                }
                Err(e) => tracing::error!(shard = ctx.shard(), %addr, error = %e, "SFU socket"),
            }
        }
    }

    fn on_datagrams(&mut self, ctx: &mut Ctx<'_>, socket: UdpId, datagrams: &[Datagram<'_>]) {
        if let Some(s) = &mut self.sfu {
            s.datagrams(ctx, socket, datagrams);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, token: u64) {
        if token == sfu::TIMER
            && let Some(s) = &mut self.sfu
        {
            s.timer(ctx);
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &Request<'_>) {
        let me = format!("{}-{:x}", self.service.node, id.as_u64());
        let _ = ctx.set_state(
            id,
            Participant {
                id: me,
                ..Participant::default()
            },
        );
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        if message.as_bytes().len() > self.service.limits.max_message {
            return self.fail(ctx, id, SignalError::TooLarge);
        }
        match std::str::from_utf8(message.as_bytes()) {
            Ok(text) => self.on_text(ctx, id, text),
            Err(_) => self.fail(ctx, id, SignalError::BadMessage),
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: Closed) {
        self.leave(ctx, id);
    }

    fn on_subscribed(&mut self, ctx: &mut Ctx<'_>, id: ConnId, topic: &str) {
        let Some(p) = ctx.state::<Participant>(id) else {
            return;
        };
        let before = p.unconfirmed.len();
        p.unconfirmed.retain(|t| t != topic);
        if before > 0 && p.unconfirmed.is_empty() {
            self.announce(ctx, id);
        }
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_>, payload: Box<dyn Any + Send>) {
        let payload = match payload.downcast::<Command>() {
            Ok(command) => return self.run_sfu(ctx, *command),
            Err(other) => other,
        };
        let Ok(outcome) = payload.downcast::<Outcome>() else {
            return;
        };
        // From another node: a command for this node's SFU.
        if let Outcome::Node { payload } = *outcome {
            match Command::from_json(&payload) {
                Some(command) => self.sfu_command(ctx, None, command),
                None => tracing::debug!(len = payload.len(), "a malformed SFU command from a node"),
            }
            return;
        }
        if let Outcome::Presence { conn, id, result } = *outcome {
            match (id, result) {
                (JOIN, Ok(present)) => self.complete_join(ctx, conn, present),
                (JOIN_CLAIM, Ok(holder)) => self.complete_sfu_join(ctx, conn, holder),
                (JOIN | JOIN_CLAIM, Err(_)) => self.join_failed(ctx, conn),
                _ => {}
            }
        }
    }
}
