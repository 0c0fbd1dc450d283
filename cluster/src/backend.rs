//! What the client protocol's app needs from where state lives (this process's memory, or
//! Redis): history with epochs and offsets appended with each publish, presence, users and
//! their offline inboxes. Every operation answers asynchronously: the backend posts an
//! [`Outcome`] to the shard and app that asked ([`Done`]), so a Redis round trip never blocks
//! a shard, and the in-memory backend answers the same way.

use c10m_engine::server::{AppId, ConnId, Handle};

use crate::protocol::{ErrorCode, StreamPos};

/// Where a channel's history stands and what a reader gets from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryReply {
    /// The stream's current position (its last offset, 0 when empty, and epoch).
    pub top: StreamPos,
    /// Publications after the requested position, oldest first: (offset, JSON data).
    pub publications: Vec<(u64, String)>,
    /// The reader's position was bridged: nothing between it and `publications` is missing.
    /// False when the epoch changed or the history was trimmed past it.
    pub recovered: bool,
}

/// One client in a channel's presence.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Present {
    /// The connection's client id (unique in the cluster).
    pub client: String,
    /// Its user ("" for anonymous).
    pub user: String,
}

/// An answer for the app, posted to the shard of the connection that asked.
#[derive(Debug)]
pub enum Outcome {
    /// A publish was appended (and delivered): its offset.
    Published {
        /// Who asked.
        conn: ConnId,
        /// The command's id.
        id: u64,
        /// Offset, or why not.
        result: Result<u64, ErrorCode>,
    },
    /// A history read, for a `history` command or to complete a `subscribe`.
    History {
        /// Who asked.
        conn: ConnId,
        /// The command's id.
        id: u64,
        /// The channel.
        channel: String,
        /// For a subscribe (the reply has `recovered`), or a plain history read.
        subscribe: bool,
        /// The read, or why not.
        result: Result<HistoryReply, ErrorCode>,
    },
    /// A presence read.
    Presence {
        /// Who asked.
        conn: ConnId,
        /// The command's id.
        id: u64,
        /// The clients, or why not.
        result: Result<Vec<Present>, ErrorCode>,
    },
    /// A message to a user was delivered (`true`: some connection of the user is online) or
    /// put in the user's inbox (`false`).
    Sent {
        /// Who asked.
        conn: ConnId,
        /// The command's id.
        id: u64,
        /// Online, or why not.
        result: Result<bool, ErrorCode>,
    },
    /// Messages that waited in a user's inbox, for the connection that just opened, in order.
    Inbox {
        /// The new connection.
        conn: ConnId,
        /// The pushes, each a JSON `message` push.
        messages: Vec<String>,
    },
    /// A message another node sent this one ([`Backend::to_node`]), in the order it sent them.
    Node {
        /// What it sent.
        payload: String,
    },
    /// A token was checked at upgrade.
    Verified {
        /// The connection waiting for its upgrade.
        conn: ConnId,
        /// Its claims, or the HTTP status to refuse it with.
        result: Result<crate::token::Claims, u16>,
    },
}

/// Where an outcome goes: the app `app` on `shard`.
#[derive(Clone, Debug)]
pub struct Done {
    /// The server.
    pub handle: Handle,
    /// The app.
    pub app: AppId,
}

impl Done {
    /// Posts `outcome` to the shard of the connection it concerns.
    pub fn post(&self, conn: ConnId, outcome: Outcome) {
        let _ = self.handle.post(conn.shard(), self.app, Box::new(outcome));
    }

    /// Posts `outcome` to `shard`.
    pub fn post_to(&self, shard: u16, outcome: Outcome) {
        let _ = self.handle.post(shard, self.app, Box::new(outcome));
    }
}

/// State behind the client protocol.
pub trait Backend: Send + Sync + 'static {
    /// Appends `data` (JSON) to `channel`'s history and delivers it to every subscriber in
    /// every process, as one push encoded once per process; posts [`Outcome::Published`].
    /// With `key`, a publish to the same channel with the same key within
    /// [`crate::idempotency::WINDOW_MS`] publishes nothing and gets the first one's offset.
    fn publish(
        &self,
        done: &Done,
        conn: ConnId,
        id: u64,
        channel: &str,
        data: &str,
        key: Option<&str>,
    );

    /// Reads `channel`'s history after `since` (from its start when `None`), at most `limit`
    /// publications; posts [`Outcome::History`].
    #[allow(clippy::too_many_arguments)]
    fn history(
        &self,
        done: &Done,
        conn: ConnId,
        id: u64,
        channel: &str,
        since: Option<StreamPos>,
        limit: usize,
        subscribe: bool,
    );

    /// Adds a client to `channel`'s presence (it expires unless refreshed when the backend
    /// is shared across processes).
    fn join(&self, channel: &str, who: &Present);

    /// Removes a client from `channel`'s presence.
    fn leave(&self, channel: &str, client: &str);

    /// Reads `channel`'s presence; posts [`Outcome::Presence`].
    fn presence(&self, done: &Done, conn: ConnId, id: u64, channel: &str);

    /// Makes `who` the holder of `channel` unless a client already holds it, in one step for
    /// every process sharing the backend (of several holders, the least client id holds);
    /// posts [`Outcome::Presence`] with the holder alone. With a shared backend the claim
    /// lasts one presence TTL; the holder keeps it by joining the channel ([`Backend::join`],
    /// refreshed while its process lives) until it leaves ([`Backend::leave`]). In process
    /// there is no other process to hold anything: the claim records nothing, and the
    /// channel's first client (or `who`) holds.
    fn claim(&self, done: &Done, conn: ConnId, id: u64, channel: &str, who: &Present);

    /// A connection of `user` opened: it counts as online, and what waited in the user's inbox
    /// is posted to it ([`Outcome::Inbox`]).
    fn online(&self, done: &Done, conn: ConnId, user: &str);

    /// A connection of `user` closed.
    fn offline(&self, conn: ConnId, user: &str);

    /// Sends `data` to every connection of `user` in every process, or to its inbox when none
    /// is online; posts [`Outcome::Sent`].
    fn send(&self, done: &Done, conn: ConnId, id: u64, user: &str, data: &str);

    /// Sends `payload` to node `node` (a process's id), which gets it as [`Outcome::Node`] if it
    /// listens ([`Backend::listen`]); a sender's messages arrive in the order it sent them.
    /// Nothing crosses processes without a shared backend: there, this does nothing.
    fn to_node(&self, node: &str, payload: &str) {
        let _ = (node, payload);
    }

    /// Delivers what other nodes send to `node` ([`Backend::to_node`]) to `done` on shard 0, as
    /// [`Outcome::Node`]. Without a shared backend there are no other nodes: nothing comes.
    fn listen(&self, done: &Done, node: &str) {
        let _ = (done, node);
    }
}

/// The engine topic a channel's subscribers share.
pub fn channel_topic(channel: &str) -> String {
    format!("v1 {channel}")
}

/// The engine topic every connection of a user shares.
pub fn user_topic(user: &str) -> String {
    format!("v1u {user}")
}
