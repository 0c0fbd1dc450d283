//! The application API: a handler runs on its shard's thread and reacts to connections through
//! a [`Ctx`](super::Ctx).

use std::any::Any;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

use super::id::ConnId;
use super::udp::{Datagram, UdpId};
use super::upgrade::{Upgrade, UpgradeRequest};
use crate::proto::deflate::{self, Deflate};
use crate::proto::frame::{FrameHeader, server_header};
use crate::proto::handshake::Request;
use crate::proto::{CloseCode, Message, OpCode};

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Why {
    /// The peer sent a close frame (the handshake completed).
    PeerClosed,
    /// We closed it and the peer answered, or the answer timed out.
    LocalClosed,
    /// The peer broke the protocol (1002, 1007, 1009 sent).
    ProtocolError,
    /// The peer was silent past the idle timeout.
    IdleTimeout,
    /// The opening handshake did not complete in time.
    HandshakeTimeout,
    /// The opening handshake was refused (an HTTP error was sent).
    HandshakeFailed,
    /// Output piled up past the write-queue limit.
    SlowConsumer,
    /// The TCP connection ended without a close handshake (reset, EOF).
    Io,
    /// The server is shutting down (1001 sent).
    Shutdown,
    /// A plain HTTP request for a page was answered; there was no WebSocket.
    Page,
    /// Its partial input would have taken the process past `max_reassembly_bytes` (1013
    /// sent: try again later).
    Overloaded,
}

impl Why {
    /// Every reason, for metrics.
    pub const ALL: [Why; 11] = [
        Why::PeerClosed,
        Why::LocalClosed,
        Why::ProtocolError,
        Why::IdleTimeout,
        Why::HandshakeTimeout,
        Why::HandshakeFailed,
        Why::SlowConsumer,
        Why::Io,
        Why::Shutdown,
        Why::Page,
        Why::Overloaded,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Why::PeerClosed => "peer_closed",
            Why::LocalClosed => "local_closed",
            Why::ProtocolError => "protocol_error",
            Why::IdleTimeout => "idle_timeout",
            Why::HandshakeTimeout => "handshake_timeout",
            Why::HandshakeFailed => "handshake_failed",
            Why::SlowConsumer => "slow_consumer",
            Why::Io => "io",
            Why::Shutdown => "shutdown",
            Why::Page => "page",
            Why::Overloaded => "overloaded",
        }
    }

    /// Index into per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a connection ended, as reported to [`App::on_close`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Why.
    pub why: Why,
    /// The close code that ended it: the peer's for [`Why::PeerClosed`], ours otherwise
    /// (1008 for a slow consumer, 1006 when the transport simply ended).
    pub code: CloseCode,
}

/// A server frame encoded once and shared by reference: a broadcast costs one allocation and
/// one encoding whatever the number of recipients. For permessage-deflate connections it is
/// also compressed once, on first need, and that copy shared the same way (across shards
/// too: clones share it).
#[derive(Clone, Debug)]
pub struct SharedFrame {
    plain: Bytes,
    deflated: Arc<OnceLock<Option<Bytes>>>,
}

impl PartialEq for SharedFrame {
    fn eq(&self, other: &Self) -> bool {
        self.plain == other.plain
    }
}

impl Eq for SharedFrame {}

impl SharedFrame {
    /// A text message frame.
    pub fn text(text: &str) -> Self {
        Self::encode(OpCode::Text, text.as_bytes())
    }

    /// A binary message frame.
    pub fn binary(data: &[u8]) -> Self {
        Self::encode(OpCode::Binary, data)
    }

    /// A frame for a message.
    pub fn message(msg: &Message<'_>) -> Self {
        let op = if msg.is_text() {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        Self::encode(op, msg.as_bytes())
    }

    /// A text frame made of several parts, concatenated once (`msg topic payload`). The
    /// parts must make valid UTF-8 together (RFC 6455 section 5.6); a receiver closes with 1007
    /// otherwise.
    pub fn text_parts(parts: &[&[u8]]) -> Self {
        Self::encode_parts(OpCode::Text, parts)
    }

    /// A binary frame made of several parts, concatenated once.
    pub fn binary_parts(parts: &[&[u8]]) -> Self {
        Self::encode_parts(OpCode::Binary, parts)
    }

    fn encode(op: OpCode, payload: &[u8]) -> Self {
        Self::encode_parts(op, &[payload])
    }

    fn encode_parts(op: OpCode, parts: &[&[u8]]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let header = server_header(op, true, len);
        let mut buf = BytesMut::with_capacity(header.len() + len);
        buf.extend_from_slice(&header);
        for p in parts {
            buf.extend_from_slice(p);
        }
        Self::new(buf.freeze())
    }

    fn new(plain: Bytes) -> Self {
        SharedFrame {
            plain,
            deflated: Arc::default(),
        }
    }

    /// The encoded bytes (header and payload).
    pub fn bytes(&self) -> &Bytes {
        &self.plain
    }

    /// The bytes to send to a connection with this permessage-deflate agreement: the frame
    /// compressed (once for every recipient) when the connection compresses with a full
    /// window, else the plain frame (always allowed).
    pub fn bytes_for(&self, deflate: Option<Deflate>) -> &Bytes {
        if deflate.is_none_or(|d| d.window_bits != 15) {
            return &self.plain;
        }
        let deflated = self.deflated.get_or_init(|| {
            let op = FrameHeader::parse(&self.plain).ok()??.0.opcode;
            let mut z = Vec::new();
            deflate::compress(self.payload(), 15, &mut z);
            let header = FrameHeader {
                fin: true,
                rsv: 0b100,
                opcode: op,
                mask: None,
                payload_len: z.len() as u64,
            }
            .encode();
            let mut buf = BytesMut::with_capacity(header.len() + z.len());
            buf.extend_from_slice(&header);
            buf.extend_from_slice(&z);
            Some(buf.freeze())
        });
        deflated.as_ref().unwrap_or(&self.plain)
    }

    /// A frame encoded elsewhere (another process, through a broker), checked: one whole,
    /// final, unmasked text or binary frame with no reserved bits, and nothing after it.
    /// `None` otherwise. Nothing is copied.
    pub fn from_encoded(bytes: Bytes) -> Option<Self> {
        let (header, len) = FrameHeader::parse(&bytes).ok()??;
        let whole = header.fin
            && header.rsv == 0
            && header.mask.is_none()
            && matches!(header.opcode, OpCode::Text | OpCode::Binary)
            && u64::try_from(bytes.len() - len).ok() == Some(header.payload_len);
        whole.then(|| Self::new(bytes))
    }

    /// The payload (the frame without its header).
    pub fn payload(&self) -> &[u8] {
        // The header is 2, 4 or 10 bytes by the payload's length (frames are built here or
        // checked by `from_encoded`, never masked).
        let header = match self.plain.get(1).map(|b| b & 0x7f) {
            Some(126) => 4,
            Some(127) => 10,
            _ => 2,
        };
        self.plain.get(header..).unwrap_or_default()
    }
}

/// Why a send did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No such connection: it closed, or the id is stale (its slot was reused).
    Gone,
    /// The connection is closing; no more data may be sent.
    Closing,
    /// A limit refused it (`max_subscriptions_per_connection`, `max_topics_per_shard`).
    Limit,
}

/// A WebSocket application. One instance per shard, created by the factory given to the
/// server; every callback runs on that shard's thread, so no locking is needed. Work from other
/// threads reaches it through a [`Handle`](super::Handle) (`post`, `send`, `accept_upgrade`).
pub trait App: 'static {
    /// The largest message this application takes, when it is smaller than the server's
    /// `max_message_size` (which applies otherwise): a bigger one, or a frame announcing more,
    /// closes its connection with 1009 before it is buffered. Asked once per shard, at start.
    /// Default: the server's limit.
    fn max_message_size(&self) -> Option<usize> {
        None
    }

    /// The shard started (before it accepts): bind UDP sockets, schedule timers.
    fn on_start(&mut self, ctx: &mut super::Ctx<'_>) {
        let _ = ctx;
    }

    /// Decides whether to open the WebSocket: the request (path, query, headers, `Origin`) is
    /// borrowed from the read buffer; its connection's id and peer address come with it.
    /// Answer at once, or [`Upgrade::Defer`] and answer later. Default: accept.
    fn on_upgrade(&mut self, ctx: &mut super::Ctx<'_>, upgrade: &UpgradeRequest<'_>) -> Upgrade {
        let _ = (ctx, upgrade);
        Upgrade::accept()
    }

    /// The WebSocket is open.
    fn on_open(&mut self, ctx: &mut super::Ctx<'_>, id: ConnId, request: &Request<'_>) {
        let _ = (ctx, id, request);
    }

    /// A whole message arrived; its payload is borrowed (unmasked in place) unless it came in
    /// fragments.
    fn on_message(&mut self, ctx: &mut super::Ctx<'_>, id: ConnId, message: Message<'_>);

    /// The connection is gone; its id is stale from now on. Its state
    /// ([`Ctx::state`](super::Ctx::state)) can still be read here and is dropped after.
    fn on_close(&mut self, ctx: &mut super::Ctx<'_>, id: ConnId, closed: Closed) {
        let _ = (ctx, id, closed);
    }

    /// A subscription [`Ctx::subscribe`](super::Ctx::subscribe) reported
    /// [`Subscribed::Pending`](super::Subscribed::Pending) is live: the broker confirmed its
    /// topic upstream.
    fn on_subscribed(&mut self, ctx: &mut super::Ctx<'_>, id: ConnId, topic: &str) {
        let _ = (ctx, id, topic);
    }

    /// Something another shard or thread posted to this app ([`super::Ctx::post`],
    /// [`super::Handle::post`]).
    fn on_post(&mut self, ctx: &mut super::Ctx<'_>, payload: Box<dyn Any + Send>) {
        let _ = (ctx, payload);
    }

    /// A timer this app scheduled with [`super::Ctx::set_timer`] came due.
    fn on_timer(&mut self, ctx: &mut super::Ctx<'_>, token: u64) {
        let _ = (ctx, token);
    }

    /// Datagrams arrived on a UDP socket this app bound with [`super::Ctx::bind_udp`].
    fn on_datagrams(
        &mut self,
        ctx: &mut super::Ctx<'_>,
        socket: UdpId,
        datagrams: &[Datagram<'_>],
    ) {
        let _ = (ctx, socket, datagrams);
    }

    /// The shard is stopping (after its connections were closed).
    fn on_stop(&mut self, ctx: &mut super::Ctx<'_>) {
        let _ = ctx;
    }
}

/// Builds one app instance per shard (the argument is the shard index).
pub type AppFactory = std::sync::Arc<dyn Fn(u16) -> Box<dyn App> + Send + Sync>;
