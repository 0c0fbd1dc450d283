//! Shared test helpers: a frame-building DSL for scripted peers, and two connections joined by
//! in-memory buffers with a virtual clock.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use c10m_engine::proto::frame::FrameHeader;
use c10m_engine::proto::mask::apply_mask;
use c10m_engine::proto::{CloseCode, Config, Connection, Error, Event, Message, OpCode, Read};

/// Builds raw frames, including ones no correct endpoint would send.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: Vec<u8>,
}

pub fn frame(opcode: OpCode) -> FrameBuilder {
    raw_frame(opcode as u8)
}

/// A frame with any opcode nibble, reserved ones included.
pub fn raw_frame(opcode: u8) -> FrameBuilder {
    FrameBuilder {
        fin: true,
        rsv: 0,
        opcode,
        mask: Some([0x11, 0x22, 0x33, 0x44]),
        payload: Vec::new(),
    }
}

impl FrameBuilder {
    pub fn fin(mut self, fin: bool) -> Self {
        self.fin = fin;
        self
    }
    pub fn rsv(mut self, rsv: u8) -> Self {
        self.rsv = rsv;
        self
    }
    pub fn unmasked(mut self) -> Self {
        self.mask = None;
        self
    }
    pub fn payload(mut self, p: impl AsRef<[u8]>) -> Self {
        self.payload = p.as_ref().to_vec();
        self
    }
    pub fn close(self, code: u16, reason: &[u8]) -> Self {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        self.payload(p)
    }
    pub fn bytes(&self) -> Vec<u8> {
        // Encode with a valid opcode, then patch in the requested nibble.
        let header = FrameHeader {
            fin: self.fin,
            rsv: self.rsv,
            opcode: OpCode::Binary,
            mask: self.mask,
            payload_len: self.payload.len() as u64,
        };
        let mut out = header.encode().to_vec();
        out[0] = (out[0] & 0xF0) | (self.opcode & 0x0F);
        let start = out.len();
        out.extend_from_slice(&self.payload);
        if let Some(key) = self.mask {
            apply_mask(&mut out[start..], key);
        }
        out
    }
}

/// An event with its payload copied out, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl From<Event<'_>> for Ev {
    fn from(e: Event<'_>) -> Self {
        match e {
            Event::Message(Message::Text(t)) => Ev::Text(t.into_owned()),
            Event::Message(Message::Binary(b)) => Ev::Binary(b.into_owned()),
            Event::Ping(p) => Ev::Ping(p.to_vec()),
            Event::Pong(p) => Ev::Pong(p.to_vec()),
            Event::Close(f) => Ev::Close(f.map(|f| (f.code.0, f.reason.to_owned()))),
        }
    }
}

/// Feeds `input` to `conn`, returning every event, the bytes left over, and the error if the
/// connection failed. Replies go to `out`.
pub fn drain(
    conn: &mut Connection,
    input: &mut Vec<u8>,
    out: &mut Vec<u8>,
    now: u64,
) -> (Vec<Ev>, Option<Error>) {
    let mut events = Vec::new();
    loop {
        match conn.recv(input, out, now) {
            Ok(Read::Incomplete { .. }) => return (events, None),
            Ok(Read::Frame { consumed, event }) => {
                let closed = matches!(event, Some(Event::Close(_)));
                if let Some(e) = event {
                    events.push(e.into());
                }
                input.drain(..consumed);
                if closed {
                    return (events, None);
                }
            }
            Err(e) => return (events, Some(e)),
        }
    }
}

/// The close code of the first close frame in a server's output, read by a client.
pub fn close_code_in(server_output: &[u8]) -> Option<u16> {
    let mut client = Connection::client(Arc::new(Config::default()), 7, 0);
    let mut input = server_output.to_vec();
    let mut sink = Vec::new();
    let (events, _) = drain(&mut client, &mut input, &mut sink, 0);
    events.into_iter().find_map(|e| match e {
        Ev::Close(Some((code, _))) => Some(code),
        Ev::Close(None) => Some(CloseCode(1005).0),
        _ => None,
    })
}

/// A client and a server joined by two byte queues, with a virtual clock.
pub struct Pair {
    pub client: Connection,
    pub server: Connection,
    /// Bytes in flight client -> server.
    pub to_server: Vec<u8>,
    /// Bytes in flight server -> client.
    pub to_client: Vec<u8>,
    pub now: u64,
}

impl Pair {
    pub fn new(config: Config) -> Self {
        let config = Arc::new(config);
        Pair {
            client: Connection::client(config.clone(), 0x5eed, 0),
            server: Connection::server(config, 0),
            to_server: Vec::new(),
            to_client: Vec::new(),
            now: 0,
        }
    }

    /// Delivers everything in flight to the server; its replies queue for the client.
    pub fn server_reads(&mut self) -> (Vec<Ev>, Option<Error>) {
        drain(
            &mut self.server,
            &mut self.to_server,
            &mut self.to_client,
            self.now,
        )
    }

    /// Delivers everything in flight to the client; its replies queue for the server.
    pub fn client_reads(&mut self) -> (Vec<Ev>, Option<Error>) {
        drain(
            &mut self.client,
            &mut self.to_client,
            &mut self.to_server,
            self.now,
        )
    }
}

/// A tungstenite client that has completed the opening handshake on `path` (reads time out
/// after 10 s, so a hung server fails the test instead of stalling it).
pub fn connect(
    addr: std::net::SocketAddr,
    path: &str,
) -> tungstenite::WebSocket<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let (ws, response) = tungstenite::client(format!("ws://{addr}{path}"), stream).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The I/O backend every engine test runs under: `C10M_TEST_IO=epoll|uring` (default epoll).
/// `scripts/test.sh` runs the engine's tests once under each.
pub fn io_backend() -> &'static str {
    match std::env::var("C10M_TEST_IO").as_deref() {
        Err(_) | Ok("" | "epoll") => "epoll",
        Ok("uring") => "uring",
        Ok(other) => panic!("C10M_TEST_IO={other:?}: expected epoll or uring"),
    }
}
