//! c10m: a WebSocket engine for millions of concurrent connections per host.
//!
//! - [`proto`]: the sans-IO RFC 6455 core (handshake, frames, connection state machine). No I/O,
//!   no clock, no `unsafe`.
//! - [`server`]: the sharded thread-per-core engine around it (edge-triggered epoll through mio,
//!   or io_uring), with the application API, topics, heartbeats and backpressure; built-in apps
//!   in [`server::apps`].
//!
//! `unsafe` is denied everywhere but in one module, `server::uring` (the provided-buffer ring,
//! submission of entries that point at our memory, descriptors from accept), where every block
//! names its guarantee in a `// SAFETY:` comment.
#![deny(unsafe_code)]

pub mod proto;
pub mod server;
