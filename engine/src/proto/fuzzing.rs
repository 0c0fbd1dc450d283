//! Fuzz harnesses, kept in the library so `cargo fuzz` targets stay one line each and unit
//! tests can replay every committed crash input. Each asserts the core's invariants: never
//! consume more bytes than given, never panic, and a closed connection stays closed.
//!
//! Compiled only under `cfg(fuzzing)` (set by cargo-fuzz) and in tests.

use std::sync::Arc;

use super::handshake::{self, Accept, ClientHandshake, ClientRequest, Limits};
use super::{CloseCode, Config, Connection, Error, Event, Message, OpCode, Read, State};

/// Server and client handshake parsing of arbitrary bytes.
pub fn handshake(data: &[u8]) {
    let limits = Limits {
        max_header_bytes: 1024,
    };
    // The plain-page path: a path that is a prefix of the input's bytes, never a panic.
    if let Some((path, _)) = handshake::plain_request(data) {
        assert!(path.len() < data.len());
    }
    match handshake::parse_request(data, limits) {
        Ok(Some((req, used))) => {
            assert!(used <= data.len());
            let _ = (req.path(), req.query(), req.origin(), req.host());
            let _ = req.protocols().count() + req.extensions().count();
            let mut out = Vec::new();
            handshake::write_accept(
                &req,
                &Accept {
                    protocol: req.protocols().next(),
                    ..Accept::default()
                },
                &mut out,
            );
            assert!(out.starts_with(b"HTTP/1.1 101 "));
        }
        Ok(None) => assert!(data.len() <= limits.max_header_bytes),
        Err(e) => {
            let mut out = Vec::new();
            handshake::write_reject(&e, &mut out);
            assert!(out.starts_with(b"HTTP/1.1 4"));
        }
    }
    let mut sink = Vec::new();
    let client = ClientHandshake::start(
        &ClientRequest {
            host: "h",
            path: "/",
            ..ClientRequest::default()
        },
        [0; 16],
        &mut sink,
    );
    if let Ok(Some((_, used))) = client.parse_response(data) {
        assert!(used <= data.len());
    }
}

/// Arbitrary bytes into a connection of either role, delivered in two reads split at a point the
/// input chooses. Limits are small so the 1009 paths are reachable.
pub fn frames(data: &[u8], server: bool) {
    frames_with(data, server, None);
}

/// permessage-deflate: an offer (the input up to its first newline) is accepted or declined
/// without a panic, and an accepted one's answer reads back to the same agreement; the rest is
/// fed as frames to a server that negotiated the extension (compressed messages, RSV1 in the
/// wrong places, inflate bombs against an 8 KiB message limit).
pub fn deflate(data: &[u8]) {
    let (offer, frames) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Some(n) = super::deflate::negotiate([offer]) {
        let again = super::deflate::negotiate([n.response.as_bytes()]).map(|m| m.deflate);
        assert_eq!(again, Some(n.deflate), "{}", n.response);
        assert_eq!(
            super::deflate::client_accepts(Some(n.response.as_bytes())).map(|d| d.is_some()),
            Ok(true)
        );
    }
    frames_with(
        frames,
        true,
        Some(super::deflate::Deflate { window_bits: 15 }),
    );
}

fn frames_with(data: &[u8], server: bool, deflate: Option<super::deflate::Deflate>) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let config = Arc::new(Config {
        max_frame_size: 4096,
        max_message_size: 8192,
        ..Config::default()
    });
    let mut conn = if server {
        Connection::server(config, 0)
    } else {
        Connection::client(config, 1, 0)
    };
    conn.set_deflate(deflate);
    let split = usize::from(split).min(data.len());
    let mut input = data[..split].to_vec();
    let mut out = Vec::new();
    let failed = feed(&mut conn, &mut input, &mut out) || {
        input.extend_from_slice(&data[split..]);
        feed(&mut conn, &mut input, &mut out)
    };
    if failed {
        assert_eq!(conn.state(), State::Closed);
        assert!(
            !conn.is_reassembling(),
            "a failed connection frees its buffer"
        );
        assert_eq!(
            conn.recv(&mut [0x81, 0x80, 0, 0, 0, 0], &mut out, 0),
            Err(Error::Closed)
        );
    }
}

/// Reads every frame in `input`, dropping consumed bytes; true when the connection ended.
fn feed(conn: &mut Connection, input: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    loop {
        let len = input.len();
        match conn.recv(input, out, 0) {
            Ok(Read::Incomplete { frame_len }) => {
                if let Some(need) = frame_len {
                    assert!(need > len, "incomplete although {need} <= {len}");
                }
                return false;
            }
            Ok(Read::Frame { consumed, event }) => {
                assert!(
                    consumed > 0 && consumed <= len,
                    "consumed {consumed} of {len}"
                );
                let closed = matches!(event, Some(Event::Close(_)));
                input.drain(..consumed);
                if closed {
                    assert_eq!(conn.state(), State::Closed);
                    return true;
                }
            }
            Err(_) => return true,
        }
    }
}

/// An arbitrary sequence of operations on a client/server pair joined in memory. Both ends are
/// correct implementations, so beyond "no panic" the harness checks delivery: every message the
/// client completes reaches the server intact and in order, unless raw bytes were injected.
pub fn operations(data: &[u8]) {
    let config = Arc::new(Config {
        max_frame_size: 1 << 16,
        max_message_size: 1 << 16,
        ping_interval_ms: Some(50),
        idle_timeout_ms: Some(200),
        close_timeout_ms: 100,
        ..Config::default()
    });
    let mut client = Connection::client(config.clone(), 9, 0);
    let mut server = Connection::server(config, 0);
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let mut now = 0u64;
    let mut sent: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut received: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut partial: Option<(bool, Vec<u8>)> = None;
    let mut injected = false;
    let mut ops = data.chunks(4);
    while let Some(&[op, a, b, c]) = ops.next() {
        let len = usize::from(a) | (usize::from(b & 0x3) << 8);
        let payload: Vec<u8> = (0..len).map(|i| c.wrapping_add(i as u8)).collect();
        match op % 12 {
            0 | 1 => {
                let text = op % 2 == 0;
                let body = if text {
                    vec![b'a' + c % 26; len]
                } else {
                    payload
                };
                if partial.is_none()
                    && client
                        .send_frame(
                            if text { OpCode::Text } else { OpCode::Binary },
                            true,
                            &body,
                            &mut to_server,
                        )
                        .is_ok()
                {
                    sent.push((text, body));
                }
            }
            2 => {
                // Start or continue a fragmented message; b's top bit finishes it.
                let fin = b & 0x80 != 0;
                let (opcode, text) = match &partial {
                    None => (OpCode::Text, true),
                    Some((text, _)) => (OpCode::Continuation, *text),
                };
                let body = vec![b'x'; len];
                if client
                    .send_frame(opcode, fin, &body, &mut to_server)
                    .is_ok()
                {
                    let mut whole = partial.take().map_or(Vec::new(), |(_, d)| d);
                    whole.extend_from_slice(&body);
                    if fin {
                        sent.push((text, whole))
                    } else {
                        partial = Some((text, whole))
                    }
                }
            }
            3 => {
                let _ = client.ping(&payload[..len.min(125)], &mut to_server);
            }
            4 => {
                let _ = server.send_binary(&payload, &mut to_client);
            }
            5 => {
                let code = CloseCode(1000 + u16::from(c % 16));
                let _ = if b & 1 == 0 {
                    client.close(code, "bye", &mut to_server, now)
                } else {
                    server.close(code, "bye", &mut to_client, now)
                };
            }
            6 | 7 => {
                let n = len.min(to_server.len());
                let mut chunk = to_server.drain(..n).collect::<Vec<u8>>();
                deliver(&mut server, &mut chunk, &mut to_client, now, &mut received);
                // Put back what was not consumed.
                chunk.extend_from_slice(&to_server);
                to_server = chunk;
            }
            8 => {
                let n = len.min(to_client.len());
                let mut chunk = to_client.drain(..n).collect::<Vec<u8>>();
                deliver(
                    &mut client,
                    &mut chunk,
                    &mut to_server,
                    now,
                    &mut Vec::new(),
                );
                chunk.extend_from_slice(&to_client);
                to_client = chunk;
            }
            9 => now += u64::from(a),
            10 => {
                let _ = server.handle_timeout(now, &mut to_client);
                let _ = client.handle_timeout(now, &mut to_server);
                if let Some(t) = server.poll_timeout() {
                    assert!(server.state() != State::Closed && t >= now.saturating_sub(1 << 20));
                }
            }
            _ => {
                injected = true;
                to_server.extend_from_slice(&payload[..len.min(32)]);
            }
        }
    }
    if !injected {
        assert!(received.len() <= sent.len());
        assert_eq!(
            &sent[..received.len()],
            &received[..],
            "server received something other than what was sent"
        );
    }
}

/// Feeds `input` to `conn`, keeping the bytes not consumed in `input`.
fn deliver(
    conn: &mut Connection,
    input: &mut Vec<u8>,
    out: &mut Vec<u8>,
    now: u64,
    got: &mut Vec<(bool, Vec<u8>)>,
) {
    loop {
        match conn.recv(input, out, now) {
            Ok(Read::Frame { consumed, event }) => {
                if let Some(Event::Message(m)) = &event {
                    got.push((m.is_text(), m.as_bytes().to_vec()));
                }
                if let Some(Event::Message(Message::Text(t))) = &event {
                    assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                }
                input.drain(..consumed);
            }
            Ok(Read::Incomplete { .. }) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Replays every committed fuzz corpus and crash input through the harnesses.
    use std::path::Path;

    fn replay(target: &str, run: impl Fn(&[u8])) -> usize {
        let mut count = 0;
        for dir in ["corpus", "artifacts", "regressions"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz")
                .join(dir)
                .join(target);
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    run(&bytes);
                    count += 1;
                }
            }
        }
        count
    }

    #[test]
    fn harnesses_accept_simple_inputs() {
        super::handshake(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
        super::frames(
            &[
                3, 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
            true,
        );
        super::frames(&[1, 0x81, 0x05, b'h', b'e', b'l', b'l', b'o'], false);
        super::operations(&[
            0, 10, 0, 7, 1, 3, 0, 9, 6, 255, 3, 0, 5, 0, 0, 0, 8, 255, 3, 0,
        ]);
    }

    #[test]
    fn committed_corpora_replay_cleanly() {
        let n = replay("handshake", super::handshake)
            + replay("frames_server", |d| super::frames(d, true))
            + replay("frames_client", |d| super::frames(d, false))
            + replay("operations", super::operations)
            + replay("deflate", super::deflate);
        // The corpora are committed with the fuzz targets; an empty replay means they went missing.
        assert!(n > 100, "only {n} corpus inputs found under fuzz/");
    }
}
