//! WebRTC signaling for c10m: rooms over the engine with relay of offers, answers and ICE
//! candidates between participants ([`rooms`]), and the ICE servers (STUN, TURN with REST
//! credentials) each participant is handed at join ([`ice`]). Membership lives in the cluster
//! backend, so a room spans shards on one node and nodes joined by Redis.
#![deny(unsafe_code)]

#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
pub mod ice;
pub mod rooms;
pub mod sfu;

pub use ice::{IceConfig, turn_credentials};
pub use rooms::{Limits, RoomsApp, SignalError, Signaling};
