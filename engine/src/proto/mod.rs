//! The sans-IO RFC 6455 core.
//!
//! This module contains no networking code and reads no clock. Bytes come in as a caller-owned
//! `&mut [u8]` (payloads are unmasked in place and handed out as borrowed slices), events come
//! out as values, bytes to send are appended to a caller's `Vec<u8>`, and time is passed in as
//! milliseconds on the caller's monotonic clock.
//!
//! ```text
//!            ┌──────────────── handshake ───────────────┐
//!  bytes ──► │ parse_request ─► Request ─► write_accept │ ──► 101 / 4xx bytes
//!            └──────────────────────────────────────────┘
//!            ┌──────────────── Connection ──────────────┐
//!  bytes ──► │ recv(&mut [u8]) ─► Read::Frame { event } │ ──► pongs, close replies
//!  app   ──► │ send_text / send_binary / close / ping   │ ──► frames
//!  timer ──► │ poll_timeout / handle_timeout(now)       │ ──► pings, idle close
//!            └──────────────────────────────────────────┘
//! ```
//!
//! The engine (or the blocking reference server, or a test pairing two connections in memory)
//! supplies the I/O around it.
#![forbid(unsafe_code)]

pub mod close;
mod config;
mod conn;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
mod message;
pub mod utf8;

#[cfg(any(fuzzing, test))]
pub mod fuzzing;

pub use close::{CloseCode, CloseFrame};
pub use config::Config;
pub use conn::{Connection, Role, State};
pub use error::{CapacityError, Error, HandshakeError, ProtocolError, TimeoutKind, UsageError};
pub use frame::{FrameHeader, HeaderBuf, OpCode};
pub use message::{Event, Message, Read};
