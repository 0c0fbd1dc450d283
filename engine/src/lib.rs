//! c10m: a WebSocket engine for millions of concurrent connections per host.
//!
//! - [`proto`]: the sans-IO RFC 6455 core (handshake, frames, connection state machine). No I/O,
//!   no clock, no `unsafe`.
//! - [`server`]: the sharded thread-per-core engine around it (mio, edge-triggered epoll), with
//!   the application API, topics, heartbeats and backpressure; built-in apps in
//!   [`server::apps`].
#![deny(unsafe_code)]

pub mod proto;
pub mod server;
