//! c10m past one process: brokers behind the engine's broker seam
//! ([`c10m_engine::server::Broker`]).
//!
//! - [`RedisBroker`]: topics across processes and hosts through Redis pub/sub. One thread per
//!   process runs the Redis client (a current-thread runtime); shards hand it commands through
//!   a channel and never wait for Redis. A process subscribes in Redis only to the topics it
//!   has local subscribers for (the engine's registry reports a topic's first and last
//!   subscriber), publishes are pipelined in batches on one connection, and every message
//!   Redis delivers is handed to local fan-out once, still encoded as the WebSocket frame the
//!   publishing process built: a message is encoded once in the whole cluster.
//!
//! ```text
//!   shard ──publish/subscribed/unsubscribed──► channel ──► broker thread ──PUBLISH (pipelined)──► Redis
//!   shard ◄──Mail::Publish (one per shard with subscribers)── Handle::deliver ◄──message── SUBSCRIBE ◄─┘
//! ```
#![deny(unsafe_code)]

//! - The client protocol (`/connection/v1`, [`Service`]): tokens checked at upgrade, channels
//!   with history and recovery, presence, messages to users with offline inboxes, token
//!   refresh, server pings. Its state lives in a [`Backend`]: this process's memory
//!   ([`Memory`], one node) or Redis (several).

mod app;
mod backend;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
mod history;
mod idempotency;
mod memory;
pub mod protocol;
mod redis_backend;
mod redis_broker;
pub mod shard;
pub mod token;

pub use app::{ClientApp, Service, Settings};

/// A new id for this process (time and pid): unique across nodes and restarts, part of every
/// client and participant id it gives out.
pub fn new_node_id() -> String {
    memory::new_epoch()
}
pub use backend::{Backend, Done, HistoryReply, Outcome, Present, channel_topic, user_topic};
pub use history::Bounds;
pub use memory::{Limits, Memory};
pub use redis_backend::{RedisBackend, RedisLimits};
pub use redis_broker::{BrokerStats, RedisBroker, RedisBrokerError};
