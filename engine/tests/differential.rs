//! Differential tests against tungstenite, an independent implementation: what one encodes,
//! the other decodes identically, in both roles, fragmented and masked, over random messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::sync::Arc;

use c10m_engine::proto::{Config, Connection, OpCode};
use proptest::prelude::*;
use support::{Ev, drain};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
use tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig};
use tungstenite::{Bytes, Message as TMessage};

/// An in-memory stream: reads drain `input` (WouldBlock when empty), writes land in `output`.
#[derive(Default)]
struct Mem {
    input: VecDeque<u8>,
    output: Vec<u8>,
}

impl io::Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.input.read(buf)
    }
}

impl io::Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tungstenite(role: TRole) -> WebSocket<Mem> {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(64 << 20);
    config.max_frame_size = Some(64 << 20);
    WebSocket::from_raw_socket(Mem::default(), role, Some(config))
}

/// Reads every message tungstenite can decode from its input.
fn tungstenite_reads(ws: &mut WebSocket<Mem>) -> Vec<Ev> {
    let mut events = Vec::new();
    loop {
        match ws.read() {
            Ok(TMessage::Text(t)) => events.push(Ev::Text(t.as_str().to_owned())),
            Ok(TMessage::Binary(b)) => events.push(Ev::Binary(b.to_vec())),
            Ok(TMessage::Ping(p)) => events.push(Ev::Ping(p.to_vec())),
            Ok(TMessage::Pong(p)) => events.push(Ev::Pong(p.to_vec())),
            Ok(TMessage::Close(c)) => events.push(Ev::Close(
                c.map(|c| (c.code.into(), c.reason.as_str().to_owned())),
            )),
            Ok(TMessage::Frame(_)) => unreachable!("tungstenite does not yield raw frames on read"),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return events;
            }
            Err(e) => panic!("tungstenite rejected our bytes: {e}"),
        }
    }
}

/// A message to send, how to cut it into fragments, and whether to slip a ping between them.
#[derive(Clone, Debug)]
struct Planned {
    text: bool,
    payload: Vec<u8>,
    cuts: Vec<usize>,
    ping_inside: bool,
}

impl Planned {
    fn event(&self) -> Ev {
        if self.text {
            Ev::Text(String::from_utf8(self.payload.clone()).unwrap())
        } else {
            Ev::Binary(self.payload.clone())
        }
    }

    /// The fragments' byte ranges (at least one, possibly empty).
    fn pieces(&self) -> Vec<&[u8]> {
        let mut cuts: Vec<usize> = self
            .cuts
            .iter()
            .map(|c| c % (self.payload.len() + 1))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in cuts {
            pieces.push(&self.payload[start..cut]);
            start = cut;
        }
        pieces.push(&self.payload[start..]);
        pieces
    }

    /// What the receiver should report: the ping (sent after the first frame) arrives before a
    /// fragmented message completes, and after an unfragmented one.
    fn expected(&self) -> Vec<Ev> {
        let ping = Ev::Ping(b"between".to_vec());
        match (self.ping_inside, self.pieces().len()) {
            (false, _) => vec![self.event()],
            (true, 1) => vec![self.event(), ping],
            (true, _) => vec![ping, self.event()],
        }
    }
}

fn planned() -> impl Strategy<Value = Planned> {
    let text = any::<String>().prop_map(|s| (true, s.into_bytes()));
    let binary = prop::collection::vec(any::<u8>(), 0..600).prop_map(|b| (false, b));
    let sized = (0usize..3, any::<u8>()).prop_map(|(i, b)| (false, vec![b; [125, 126, 65_536][i]]));
    (
        prop_oneof![4 => text, 4 => binary, 1 => sized],
        prop::collection::vec(any::<usize>(), 0..4),
        any::<bool>(),
    )
        .prop_map(|((text, payload), cuts, ping_inside)| Planned {
            text,
            payload,
            cuts,
            ping_inside,
        })
}

/// Our encoding of `plan`, fragmented as planned.
fn encode_ours(conn: &mut Connection, plan: &Planned, out: &mut Vec<u8>) {
    let pieces = plan.pieces();
    let last = pieces.len() - 1;
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = match (i, plan.text) {
            (0, true) => OpCode::Text,
            (0, false) => OpCode::Binary,
            _ => OpCode::Continuation,
        };
        conn.send_frame(opcode, i == last, piece, out).unwrap();
        if i == 0 && plan.ping_inside {
            conn.ping(b"between", out).unwrap();
        }
    }
}

/// tungstenite's encoding of `plan`, fragmented as planned, through raw frames.
fn encode_tungstenite(ws: &mut WebSocket<Mem>, plan: &Planned) {
    let pieces = plan.pieces();
    let last = pieces.len() - 1;
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = match (i, plan.text) {
            (0, true) => TOpCode::Data(Data::Text),
            (0, false) => TOpCode::Data(Data::Binary),
            _ => TOpCode::Data(Data::Continue),
        };
        let frame = Frame::message(Bytes::copy_from_slice(piece), opcode, i == last);
        ws.write(TMessage::Frame(frame)).unwrap();
        if i == 0 && plan.ping_inside {
            ws.write(TMessage::Frame(Frame::ping(Bytes::from_static(b"between"))))
                .unwrap();
        }
    }
    ws.flush().unwrap();
}

fn big_config() -> Arc<Config> {
    Arc::new(Config {
        max_frame_size: 64 << 20,
        max_message_size: 64 << 20,
        ..Config::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Our client's masked, fragmented frames decode identically in a tungstenite server.
    #[test]
    fn our_client_to_tungstenite_server(plans in prop::collection::vec(planned(), 1..6), seed: u64) {
        let mut ours = Connection::client(big_config(), seed, 0);
        let mut wire = Vec::new();
        for plan in &plans {
            encode_ours(&mut ours, plan, &mut wire);
        }
        let mut theirs = tungstenite(TRole::Server);
        theirs.get_mut().input.extend(wire);
        let expected: Vec<Ev> = plans.iter().flat_map(Planned::expected).collect();
        prop_assert_eq!(tungstenite_reads(&mut theirs), expected);
    }

    /// Our server's unmasked frames decode identically in a tungstenite client.
    #[test]
    fn our_server_to_tungstenite_client(plans in prop::collection::vec(planned(), 1..6)) {
        let mut ours = Connection::server(big_config(), 0);
        let mut wire = Vec::new();
        for plan in &plans {
            encode_ours(&mut ours, plan, &mut wire);
        }
        let mut theirs = tungstenite(TRole::Client);
        theirs.get_mut().input.extend(wire);
        let expected: Vec<Ev> = plans.iter().flat_map(Planned::expected).collect();
        prop_assert_eq!(tungstenite_reads(&mut theirs), expected);
    }

    /// A tungstenite client's frames decode identically in our server, delivered in random
    /// read-sized chunks; the automatic pongs decode in tungstenite.
    #[test]
    fn tungstenite_client_to_our_server(plans in prop::collection::vec(planned(), 1..6), chunk in 1usize..5000) {
        let mut theirs = tungstenite(TRole::Client);
        for plan in &plans {
            encode_tungstenite(&mut theirs, plan);
        }
        let wire = std::mem::take(&mut theirs.get_mut().output);
        let mut ours = Connection::server(big_config(), 0);
        let mut input = Vec::new();
        let mut replies = Vec::new();
        let mut events = Vec::new();
        for piece in wire.chunks(chunk) {
            input.extend_from_slice(piece);
            let (got, err) = drain(&mut ours, &mut input, &mut replies, 0);
            prop_assert_eq!(err, None);
            events.extend(got);
        }
        prop_assert!(input.is_empty());
        let expected: Vec<Ev> = plans.iter().flat_map(Planned::expected).collect();
        prop_assert_eq!(events, expected);
        let pings = plans.iter().filter(|p| p.ping_inside).count();
        theirs.get_mut().input.extend(replies);
        prop_assert_eq!(tungstenite_reads(&mut theirs), vec![Ev::Pong(b"between".to_vec()); pings]);
    }

    /// A tungstenite server's frames decode identically in our client.
    #[test]
    fn tungstenite_server_to_our_client(plans in prop::collection::vec(planned(), 1..6)) {
        let mut theirs = tungstenite(TRole::Server);
        for plan in &plans {
            encode_tungstenite(&mut theirs, plan);
        }
        let mut input = std::mem::take(&mut theirs.get_mut().output);
        let mut ours = Connection::client(big_config(), 1, 0);
        let (events, err) = drain(&mut ours, &mut input, &mut Vec::new(), 0);
        prop_assert_eq!(err, None);
        let expected: Vec<Ev> = plans.iter().flat_map(Planned::expected).collect();
        prop_assert_eq!(events, expected);
    }

    /// Close frames agree: our close reaches tungstenite with its code and reason, and
    /// tungstenite's close reaches us.
    #[test]
    fn close_frames_agree(code in prop_oneof![1000u16..=1003, 1007u16..=1011, 3000u16..=4999], reason in "[a-zé]{0,40}") {
        let mut ours = Connection::server(big_config(), 0);
        let mut wire = Vec::new();
        ours.close(c10m_engine::proto::CloseCode(code), &reason, &mut wire, 0).unwrap();
        let mut theirs = tungstenite(TRole::Client);
        theirs.get_mut().input.extend(wire);
        prop_assert_eq!(tungstenite_reads(&mut theirs), vec![Ev::Close(Some((code, reason.clone())))]);

        let mut theirs = tungstenite(TRole::Client);
        let frame = tungstenite::protocol::CloseFrame { code: code.into(), reason: reason.clone().into() };
        theirs.close(Some(frame)).unwrap();
        let _ = theirs.flush();
        let mut input = std::mem::take(&mut theirs.get_mut().output);
        let mut ours = Connection::server(big_config(), 0);
        let (events, err) = drain(&mut ours, &mut input, &mut Vec::new(), 0);
        prop_assert_eq!(err, None);
        prop_assert_eq!(events, vec![Ev::Close(Some((code, reason)))]);
    }
}

#[test]
fn large_frames_agree_in_both_directions() {
    // 64-bit lengths and payloads far larger than any read buffer.
    let payload: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut theirs = tungstenite(TRole::Client);
    theirs.send(TMessage::binary(payload.clone())).unwrap();
    let mut input = std::mem::take(&mut theirs.get_mut().output);
    let mut ours = Connection::server(big_config(), 0);
    let (events, err) = drain(&mut ours, &mut input, &mut Vec::new(), 0);
    assert_eq!((events, err), (vec![Ev::Binary(payload.clone())], None));

    let mut wire = Vec::new();
    ours.send_binary(&payload, &mut wire).unwrap();
    theirs.get_mut().input.extend(wire);
    assert_eq!(tungstenite_reads(&mut theirs), vec![Ev::Binary(payload)]);
}

#[test]
fn mem_stream_reports_would_block_when_empty() {
    // The harness itself: an empty input must block, not read zero (EOF), or the tests above
    // would stop reading early without failing.
    let mut m = Mem::default();
    let err = m.read(&mut [0u8; 4]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    m.write_all(b"x").unwrap();
    assert_eq!(m.output, b"x");
}
