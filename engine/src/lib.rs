//! c10m: a WebSocket engine for millions of concurrent connections per host.
//!
//! - [`proto`]: the sans-IO RFC 6455 core (handshake, frames, connection state machine).
//! - [`blocking`]: a minimal thread-per-connection echo server over `std::net`, the reference
//!   harness for the core until the sharded event loop lands.
#![deny(unsafe_code)]

pub mod blocking;
pub mod proto;
