//! One client connection's state. Small on purpose: an idle open connection holds its socket,
//! the protocol core's state and a few counters; no buffers (`rbuf` holds only a partial frame,
//! `wq` only output the socket would not take yet).

use c10m_engine::proto::Connection;
use c10m_engine::proto::handshake::ClientHandshake;
use mio::net::TcpStream;

use super::reason::Reason;
use super::sub::Sub;

/// What the connection does in its scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opens and holds (connect, idle).
    Plain,
    /// Sends messages and checks their echoes.
    Echo,
    /// Receives a topic's messages.
    Subscriber,
    /// Publishes to the topic, as this publisher id.
    Publisher(u32),
}

/// Where the connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// `connect()` was called at `since_us`.
    Connecting {
        /// When.
        since_us: u64,
    },
    /// The upgrade request was written at `since_us`.
    Handshake {
        /// When.
        since_us: u64,
        /// What the answer must contain.
        hs: Box<ClientHandshake>,
        /// Seed for the masking keys once open.
        seed: u64,
    },
    /// A WebSocket.
    Open(Connection),
}

/// The scenario's per-connection state.
#[derive(Debug)]
pub struct App {
    /// Global connection index.
    pub index: u64,
    /// Role.
    pub role: Role,
    /// Messages sent (the next sequence number).
    pub sent: u64,
    /// Echo replies received (the next sequence number expected back).
    pub answered: u64,
    /// Subscriber: its trackers, subscription and reconnects (kept across connections).
    pub sub: Option<Box<Sub>>,
    /// Subscriber: open at the start of the drive phase and still waiting for end markers.
    pub awaiting: bool,
    /// Subscriber: was open when publishing began (its losses count).
    pub at_go: bool,
}

impl App {
    /// Fresh state; a subscriber tracks `publishers` publishers.
    pub fn new(index: u64, role: Role, publishers: u32) -> Self {
        App {
            index,
            role,
            sent: 0,
            answered: 0,
            sub: (role == Role::Subscriber).then(|| Box::new(Sub::new(publishers))),
            awaiting: false,
            at_go: false,
        }
    }

    /// A subscriber coming back after a drop (this connection is a reconnect attempt).
    pub fn returning(&self) -> bool {
        self.sub.as_ref().is_some_and(|s| s.away.is_some())
    }

    /// A subscriber whose subscribe command is not confirmed yet.
    pub fn subscribing(&self) -> bool {
        self.sub
            .as_ref()
            .is_some_and(|s| s.subscribing_since().is_some())
    }
}

/// A slab entry.
#[derive(Debug)]
pub struct Client {
    /// The socket, registered edge-triggered for reads and writes.
    pub sock: TcpStream,
    /// Connecting, handshaking or open.
    pub phase: Phase,
    /// A partial frame (or response head) carried between reads; unallocated otherwise.
    pub rbuf: Vec<u8>,
    /// Output the socket has not taken yet (ciphertext under TLS); unallocated otherwise.
    pub wq: Vec<u8>,
    /// wss://: the TLS session (set once the socket connected).
    pub tls: Option<Box<rustls::ClientConnection>>,
    /// Scenario state.
    pub app: App,
    /// Set when the connection must be ended after the current step.
    pub ending: Option<Reason>,
}

impl Client {
    /// A connection whose `connect()` was just called.
    pub fn connecting(sock: TcpStream, now_us: u64, app: App) -> Self {
        Client {
            sock,
            phase: Phase::Connecting { since_us: now_us },
            rbuf: Vec::new(),
            wq: Vec::new(),
            tls: None,
            app,
            ending: None,
        }
    }

    /// Whether the WebSocket is open.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_client_is_small() {
        // Socket, protocol state, counters and empty (unallocated) buffers.
        let size = std::mem::size_of::<Client>();
        assert!(size <= 256, "Client is {size} bytes");
    }
}
