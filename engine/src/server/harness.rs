//! A deterministic shard for tests: no backend thread, no wall clock, no sleeps.
//!
//! The test owns a [`Shard`] and drives it the way a backend would: it hands it connections,
//! feeds it the bytes a peer wrote ([`Harness::pump`]), and runs the end of a loop iteration at
//! a clock value it chooses ([`Harness::at`]). Connections are Unix socket pairs seen by the
//! shard as its usual stream type: a write on one end is in the other's receive queue when the
//! write returns, so what the shard reads and what the peer reads back never depend on timing,
//! and a peer that does not read fills the shard's send buffer at once (slow consumers).
//! Timers, heartbeats, the write path and deferred upgrades are tested through it in
//! `harness/tests.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::Instant;

use super::broker::Registry;
use super::handle::{Handle, Shared};
use super::id::ConnId;
use super::mailbox::{Peer, Waker};
use super::metrics::ShardStats;
use super::shard::{Next, Shard};
use super::timer::Entry;
use super::{App, Routes, ServerConfig};

#[cfg(test)]
mod tests;

/// One shard driven by hand.
pub struct Harness {
    /// The shard under test.
    pub shard: Shard,
    expired: Vec<Entry>,
    buf: Vec<u8>,
}

/// The peer's end of a connection.
pub struct Client {
    /// The shard's slot for it.
    pub slot: usize,
    /// The peer's socket (non-blocking).
    pub sock: UnixStream,
}

impl Harness {
    /// A shard (index 0 of 1) serving `app` at `/`, with `config`.
    pub fn new(
        config: ServerConfig,
        app: impl Fn() -> Box<dyn App> + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = channel();
        let waker = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .expect("eventfd");
        let routes = Routes::new().route("/", move |_| app());
        let handle = Handle {
            shared: Arc::new(Shared {
                peers: vec![Peer::new(tx, Waker::EventFd(waker), config.mailbox_limit)],
                registry: Registry::new(false),
                broker: None,
                paths: routes.paths().map(str::to_owned).collect(),
                admission: Arc::new(super::admission::Admission::new(config.admission())),
                partial_input: super::budget::Budget::new(config.max_reassembly_bytes),
                tls: None,
            }),
        };
        let config = Arc::new(config);
        let proto = config.proto();
        let apps = routes.entries.iter().map(|(_, f)| f(0)).collect();
        let mut shard = Shard::new(
            0,
            config,
            proto,
            handle,
            Arc::new(ShardStats::default()),
            (apps, Arc::new(routes)),
            rx,
            Instant::now(),
        );
        shard.start_apps();
        Harness {
            shard,
            expired: Vec::new(),
            buf: vec![0; 64 << 10],
        }
    }

    /// A new connection, as if just accepted.
    pub fn connect(&mut self) -> Client {
        self.try_connect().expect("room in the shard")
    }

    /// A new connection; `Err` with the peer's end when the shard refused it.
    pub fn try_connect(&mut self) -> Result<Client, UnixStream> {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_nonblocking(true).expect("nonblocking");
        theirs.set_nonblocking(true).expect("nonblocking");
        // The shard only reads, writes, shuts down and asks for the peer's address (which a
        // Unix socket does not have: `None`), all of which work on any stream socket.
        let sock = TcpStream::from(OwnedFd::from(ours));
        match self.shard.adopt(sock) {
            Some(slot) => Ok(Client { slot, sock: theirs }),
            None => Err(theirs),
        }
    }

    /// A connection with its opening handshake done; the peer has read the 101.
    pub fn open(&mut self) -> (Client, ConnId) {
        let mut peer = self.connect();
        peer.write(UPGRADE);
        self.pump(&peer);
        let head = peer.read_all();
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let id = self.id(&peer);
        (peer, id)
    }

    /// The id of a connection.
    pub fn id(&self, peer: &Client) -> ConnId {
        let generation = self.shard.core.io.conns[peer.slot].generation;
        ConnId::new(0, peer.slot as u32, generation)
    }

    /// Reads what the peer wrote and processes it, as a backend does on input (then the end of
    /// the iteration at the current clock).
    pub fn pump(&mut self, peer: &Client) {
        loop {
            if !self.shard.reading(peer.slot) {
                break;
            }
            let sock = &self.shard.core.io.conns[peer.slot].sock;
            match (&*sock).read(&mut self.buf) {
                Ok(0) => {
                    self.shard.input_ended(peer.slot);
                    break;
                }
                Ok(n) => {
                    let _ = self.shard.process(peer.slot, &mut self.buf[..n]);
                    self.shard.after_input(peer.slot);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.shard.input_ended(peer.slot);
                    break;
                }
            }
        }
        self.tick();
    }

    /// Sets the shard clock to `now_ms` and ends a loop iteration there: timers due by then
    /// fire, gathered output is written, dead connections are reaped.
    pub fn at(&mut self, now_ms: u64) -> Next {
        assert!(now_ms >= self.shard.core.now, "the clock goes forward");
        self.shard.core.now = now_ms;
        self.tick()
    }

    /// Ends a loop iteration at the current clock (mail first, as a wake-up would).
    pub fn tick(&mut self) -> Next {
        self.shard.read_mail();
        self.shard.end_of_iteration(&mut self.expired)
    }

    /// Whether the shard still holds the connection.
    pub fn holds(&self, peer: &Client) -> bool {
        self.shard.core.io.conns.contains(peer.slot)
    }

    /// A counter of the shard.
    pub fn stat(&self, get: impl Fn(&ShardStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        get(&self.shard.core.io.stats).load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Client {
    /// Writes all of `bytes` (the socket buffer is far larger than any test's input).
    pub fn write(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("peer write");
    }

    /// Everything the shard has written so far.
    pub fn read_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 16 << 10];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("peer read: {e}"),
            }
        }
        out
    }

    /// Whether the shard closed its end (a read returns end of file).
    pub fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.sock.read(&mut byte), Ok(0))
    }
}

/// An upgrade request for `/`.
pub const UPGRADE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
