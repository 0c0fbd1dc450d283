//! One connection's slot in the shard's slab: small and fixed. An idle, open connection owns
//! no buffer at all; `rbuf` holds only a partial frame (or handshake head), `wq` exists only
//! while output is backed up, and `topics` only once it subscribes.

use std::any::Any;
use std::net::TcpStream;

use super::app::Why;
use super::topics::Membership;
use super::upgrade::Upgrade;
use super::uring::RingConn;
use super::writeq::WriteQueue;
use crate::proto::{CloseCode, Connection};

/// No timer entry filed.
pub const NO_TIMER: u32 = super::timer::NO_TICK;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Waiting for the HTTP upgrade request, or the application's answer to it, until
    /// `deadline` (ms).
    Handshake {
        /// When to give up.
        deadline: u64,
        /// Where the application's answer stands.
        answer: Answer,
    },
    /// A WebSocket.
    Open(Connection),
}

/// The application's answer to a connection's upgrade request.
#[derive(Debug, Default)]
pub enum Answer {
    /// Not asked yet: the request has not arrived whole.
    #[default]
    Ask,
    /// Deferred: the request waits in the connection's read buffer.
    Waiting,
    /// Given after a deferral; applied when the request is parsed again.
    Given(Box<Upgrade>),
}

/// The slab entry.
#[derive(Debug)]
pub struct Conn {
    /// The socket: non-blocking and registered edge-triggered under epoll; blocking under
    /// io_uring (the ring waits for readiness, not the thread).
    pub sock: TcpStream,
    /// Handshake or open.
    pub phase: Phase,
    /// A partial frame or request head carried between reads; empty (unallocated) otherwise.
    pub rbuf: Vec<u8>,
    /// Output the socket would not take yet.
    pub wq: Option<Box<WriteQueue>>,
    /// The application's state for this connection ([`Ctx::set_state`](super::Ctx::set_state)),
    /// dropped when the connection is reaped. Boxed twice to keep the slot one word wider, not
    /// two, for the connections that have none.
    #[allow(clippy::box_collection, clippy::redundant_allocation)]
    pub state: Option<Box<Box<dyn Any>>>,
    /// Topics this connection is subscribed to on this shard.
    pub topics: Vec<Membership>,
    /// Generation of this slot when the connection was accepted.
    pub generation: u32,
    /// Index of the application serving it.
    pub app: u8,
    /// Tick of its live timer entry, or [`NO_TIMER`].
    pub timer_tick: u32,
    /// Bytes of partial input (`rbuf`) and reassembly counted against the process's budget
    /// ([`ServerConfig::max_reassembly_bytes`](super::ServerConfig)).
    pub held: u32,
    /// Set when the connection must end once its output is flushed (or at once when `dead`).
    pub ending: Option<(Why, CloseCode)>,
    /// Queued for removal at the end of this loop iteration; nothing more is read or written.
    pub dead: bool,
    /// The socket refused part of the queue; the next writable event (epoll) or the send's
    /// completion (io_uring) flushes it.
    pub backlogged: bool,
    /// io_uring: a send is in flight; the queue waits for its completion.
    pub sending: bool,
    /// io_uring's own per-connection state (how its input is watched, its send's key).
    pub ring: RingConn,
}

impl Conn {
    /// A freshly accepted connection.
    pub fn new(sock: TcpStream, generation: u32, deadline: u64) -> Self {
        Conn {
            sock,
            phase: Phase::Handshake {
                deadline,
                answer: Answer::Ask,
            },
            rbuf: Vec::new(),
            wq: None,
            state: None,
            topics: Vec::new(),
            generation,
            app: 0,
            timer_tick: NO_TIMER,
            held: 0,
            ending: None,
            dead: false,
            backlogged: false,
            sending: false,
            ring: RingConn::default(),
        }
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.wq.as_ref().map_or(0, |q| q.len())
    }

    /// Output is queued or in flight.
    pub fn has_output(&self) -> bool {
        self.sending || self.queued() > 0
    }

    /// The protocol state, once open.
    pub fn proto(&mut self) -> Option<&mut Connection> {
        match &mut self.phase {
            Phase::Open(c) => Some(c),
            Phase::Handshake { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_stays_small() {
        // The user-space budget is 256 bytes per idle connection, slab slot, timer entry and
        // allocator overhead included; the slot itself must leave room for the rest.
        // A slab entry is the value plus the vacant-slot tag; measure the value and add a word.
        let slot = std::mem::size_of::<Conn>() + std::mem::size_of::<usize>();
        println!(
            "slab slot: ~{slot} bytes (Conn {} bytes)",
            std::mem::size_of::<Conn>()
        );
        assert!(slot <= 168, "slab slot grew to {slot} bytes");
    }
}
