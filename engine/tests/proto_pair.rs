//! Deterministic client/server pairs joined in memory: no sockets, no sleeps. One test per rule
//! of the protocol core.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use c10m_engine::proto::{
    CapacityError, Config, Error, OpCode, ProtocolError, State, TimeoutKind, UsageError,
};
use support::{Ev, Pair, close_code_in, frame, raw_frame};

fn pair() -> Pair {
    Pair::new(Config::default())
}

/// Sends raw bytes to a fresh server; returns its events, error and the close code it sent.
fn server_gets(bytes: &[u8], config: Config) -> (Vec<Ev>, Option<Error>, Option<u16>) {
    let mut p = Pair::new(config);
    p.to_server.extend_from_slice(bytes);
    let (events, err) = p.server_reads();
    let code = close_code_in(&p.to_client);
    (events, err, code)
}

#[test]
fn text_and_binary_flow_both_ways() {
    let mut p = pair();
    p.client.send_text("hello", &mut p.to_server).unwrap();
    p.client
        .send_binary(&[0, 1, 2, 255], &mut p.to_server)
        .unwrap();
    p.client.send_text("", &mut p.to_server).unwrap();
    assert_eq!(
        p.server_reads(),
        (
            vec![
                Ev::Text("hello".into()),
                Ev::Binary(vec![0, 1, 2, 255]),
                Ev::Text("".into())
            ],
            None
        )
    );
    assert!(p.to_server.is_empty());
    p.server.send_text("κόσμε", &mut p.to_client).unwrap();
    let big = vec![7u8; 70_000];
    p.server.send_binary(&big, &mut p.to_client).unwrap();
    assert_eq!(
        p.client_reads(),
        (vec![Ev::Text("κόσμε".into()), Ev::Binary(big)], None)
    );
}

#[test]
fn a_short_buffer_consumes_nothing_until_the_frame_is_whole() {
    let mut p = pair();
    let mut wire = Vec::new();
    p.client
        .send_text("split across many reads", &mut wire)
        .unwrap();
    for i in 0..wire.len() {
        p.to_server.push(wire[i]);
        let (events, err) = p.server_reads();
        assert_eq!(err, None);
        if i + 1 < wire.len() {
            assert!(
                events.is_empty(),
                "event after {} of {} bytes",
                i + 1,
                wire.len()
            );
            assert_eq!(p.to_server.len(), i + 1, "bytes consumed early");
        } else {
            assert_eq!(events, vec![Ev::Text("split across many reads".into())]);
        }
    }
}

#[test]
fn fragments_reassemble_with_control_frames_between_them() {
    let mut p = pair();
    let out = &mut p.to_server;
    p.client
        .send_frame(OpCode::Text, false, "frag".as_bytes(), out)
        .unwrap();
    p.client.ping(b"p1", out).unwrap();
    p.client
        .send_frame(OpCode::Continuation, false, "men".as_bytes(), out)
        .unwrap();
    p.client.pong(b"unsolicited", out).unwrap();
    p.client
        .send_frame(OpCode::Continuation, true, "ted".as_bytes(), out)
        .unwrap();
    let (events, err) = p.server_reads();
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            Ev::Ping(b"p1".to_vec()),
            Ev::Pong(b"unsolicited".to_vec()),
            Ev::Text("fragmented".into())
        ]
    );
    assert!(
        !p.server.is_reassembling(),
        "the reassembly buffer is freed once the message completes"
    );
    // The automatic pong echoes the ping's payload.
    assert_eq!(p.client_reads(), (vec![Ev::Pong(b"p1".to_vec())], None));
}

#[test]
fn multibyte_characters_split_across_fragments() {
    let mut p = pair();
    let text = "€𝄞";
    let bytes = text.as_bytes();
    let out = &mut p.to_server;
    p.client
        .send_frame(OpCode::Text, false, &bytes[..1], out)
        .unwrap();
    p.client
        .send_frame(OpCode::Continuation, false, &bytes[1..5], out)
        .unwrap();
    p.client
        .send_frame(OpCode::Continuation, true, &bytes[5..], out)
        .unwrap();
    assert_eq!(p.server_reads(), (vec![Ev::Text(text.into())], None));
}

#[test]
fn client_initiated_close_handshake() {
    let mut p = pair();
    p.client
        .close(
            c10m_engine::proto::CloseCode::NORMAL,
            "bye",
            &mut p.to_server,
            p.now,
        )
        .unwrap();
    assert!(matches!(p.client.state(), State::CloseSent { .. }));
    // Data may no longer be sent after our close.
    assert_eq!(
        p.client.send_text("late", &mut p.to_server),
        Err(Error::Usage(UsageError::CloseSent))
    );
    let (events, err) = p.server_reads();
    assert_eq!(
        (events, err),
        (vec![Ev::Close(Some((1000, "bye".into())))], None)
    );
    assert_eq!(p.server.state(), State::Closed);
    let (events, err) = p.client_reads();
    assert_eq!(
        (events, err),
        (vec![Ev::Close(Some((1000, String::new())))], None)
    );
    assert_eq!(p.client.state(), State::Closed);
    assert_eq!(
        p.server.send_text("x", &mut p.to_client),
        Err(Error::Closed)
    );
}

#[test]
fn server_initiated_close_and_empty_close_bodies() {
    let mut p = pair();
    p.server
        .close(
            c10m_engine::proto::CloseCode::GOING_AWAY,
            "shutdown",
            &mut p.to_client,
            0,
        )
        .unwrap();
    assert_eq!(
        p.client_reads().0,
        vec![Ev::Close(Some((1001, "shutdown".into())))]
    );
    assert_eq!(
        p.server_reads().0,
        vec![Ev::Close(Some((1001, String::new())))]
    );
    assert_eq!(
        (p.client.state(), p.server.state()),
        (State::Closed, State::Closed)
    );

    // A close without a body is answered without one.
    let (events, err, code) = server_gets(&frame(OpCode::Close).bytes(), Config::default());
    assert_eq!((events, err), (vec![Ev::Close(None)], None));
    assert_eq!(code, Some(1005), "reply carries no status code");
}

#[test]
fn data_after_our_close_is_still_delivered() {
    let mut p = pair();
    p.server
        .close(
            c10m_engine::proto::CloseCode::NORMAL,
            "",
            &mut p.to_client,
            0,
        )
        .unwrap();
    p.client.send_text("in flight", &mut p.to_server).unwrap();
    assert_eq!(p.server_reads().0, vec![Ev::Text("in flight".into())]);
    // No pong once we have sent a close (section 5.5.2 only requires it before a close is received,
    // but nothing may follow our close frame).
    p.to_server.extend(frame(OpCode::Ping).payload("x").bytes());
    assert_eq!(p.server_reads().0, vec![Ev::Ping(b"x".to_vec())]);
    assert!(p.to_client.len() < 10, "only the close frame was written");
}

#[test]
fn protocol_violations_close_with_1002() {
    let mut started = frame(OpCode::Text).fin(false).payload("a").bytes();
    started.extend(frame(OpCode::Binary).payload("b").bytes());
    let cases: Vec<(&str, Vec<u8>, ProtocolError)> = vec![
        (
            "rsv1",
            frame(OpCode::Text).rsv(0b100).payload("x").bytes(),
            ProtocolError::ReservedBits(4),
        ),
        (
            "rsv3",
            frame(OpCode::Ping).rsv(0b001).bytes(),
            ProtocolError::ReservedBits(1),
        ),
        (
            "opcode 3",
            raw_frame(3).bytes(),
            ProtocolError::UnknownOpcode(3),
        ),
        (
            "opcode 0xB",
            raw_frame(0xB).bytes(),
            ProtocolError::UnknownOpcode(0xB),
        ),
        (
            "unmasked",
            frame(OpCode::Text).unmasked().payload("x").bytes(),
            ProtocolError::UnmaskedFrame,
        ),
        (
            "fragmented ping",
            frame(OpCode::Ping).fin(false).bytes(),
            ProtocolError::FragmentedControl,
        ),
        (
            "long ping",
            frame(OpCode::Ping).payload([0u8; 126]).bytes(),
            ProtocolError::ControlTooLong(126),
        ),
        (
            "stray continuation",
            frame(OpCode::Continuation).payload("x").bytes(),
            ProtocolError::UnexpectedContinuation,
        ),
        (
            "interleaved message",
            started,
            ProtocolError::ExpectedContinuation,
        ),
        (
            "close body of 1",
            frame(OpCode::Close).payload([3]).bytes(),
            ProtocolError::CloseBodyTooShort,
        ),
        (
            "close 1005",
            frame(OpCode::Close).close(1005, b"").bytes(),
            ProtocolError::InvalidCloseCode(1005),
        ),
        (
            "close 999",
            frame(OpCode::Close).close(999, b"").bytes(),
            ProtocolError::InvalidCloseCode(999),
        ),
        (
            "close 5000",
            frame(OpCode::Close).close(5000, b"").bytes(),
            ProtocolError::InvalidCloseCode(5000),
        ),
    ];
    for (name, bytes, expected) in cases {
        let (_, err, code) = server_gets(&bytes, Config::default());
        assert_eq!(err, Some(Error::Protocol(expected)), "{name}");
        assert_eq!(code, Some(1002), "{name}");
    }
}

#[test]
fn a_masked_server_frame_fails_the_client() {
    let mut p = pair();
    p.to_client.extend(frame(OpCode::Text).payload("x").bytes());
    assert_eq!(
        p.client_reads().1,
        Some(Error::Protocol(ProtocolError::MaskedFrame))
    );
    assert_eq!(close_code_in_client_output(&p.to_server), Some(1002));
}

fn close_code_in_client_output(bytes: &[u8]) -> Option<u16> {
    let mut p = pair();
    p.to_server.extend_from_slice(bytes);
    p.server_reads().0.into_iter().find_map(|e| match e {
        Ev::Close(Some((code, _))) => Some(code),
        _ => None,
    })
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let (_, err, code) = server_gets(
        &frame(OpCode::Text).payload(b"\xce\xba\xff").bytes(),
        Config::default(),
    );
    assert_eq!((err, code), (Some(Error::InvalidUtf8), Some(1007)));
    let (_, err, code) = server_gets(
        &frame(OpCode::Close).close(1000, b"\xff").bytes(),
        Config::default(),
    );
    assert_eq!((err, code), (Some(Error::InvalidUtf8), Some(1007)));
}

#[test]
fn invalid_utf8_fails_fast_on_the_fragment_that_breaks_it() {
    // Section 8.1 / Autobahn 6.4.x: the server must not wait for the final fragment.
    let mut bytes = frame(OpCode::Text).fin(false).payload("κόσμε").bytes();
    bytes.extend(
        frame(OpCode::Continuation)
            .fin(false)
            .payload(b"\xf4\x90\x80\x80")
            .bytes(),
    );
    let (_, err, code) = server_gets(&bytes, Config::default());
    assert_eq!((err, code), (Some(Error::InvalidUtf8), Some(1007)));
    // A message that ends inside a code point fails at its final fragment.
    let mut bytes = frame(OpCode::Text).fin(false).payload(b"a\xe2").bytes();
    bytes.extend(frame(OpCode::Continuation).payload(b"\x82").bytes());
    let (_, err, code) = server_gets(&bytes, Config::default());
    assert_eq!((err, code), (Some(Error::InvalidUtf8), Some(1007)));
}

#[test]
fn size_limits_close_with_1009_before_the_payload_arrives() {
    let config = Config {
        max_frame_size: 100,
        max_message_size: 150,
        ..Config::default()
    };
    // Only the header of a 101-byte frame: the limit is enforced without buffering the payload.
    let whole = frame(OpCode::Binary).payload([0u8; 101]).bytes();
    let (_, err, code) = server_gets(&whole[..8], config.clone());
    assert_eq!(
        err,
        Some(Error::Capacity(CapacityError::FrameTooLong {
            size: 101,
            max: 100
        }))
    );
    assert_eq!(code, Some(1009));
    // Fragments that add up past the message limit.
    let mut bytes = frame(OpCode::Binary).fin(false).payload([0u8; 100]).bytes();
    bytes.extend(frame(OpCode::Continuation).payload([0u8; 51]).bytes());
    let (_, err, code) = server_gets(&bytes, config);
    assert_eq!(
        err,
        Some(Error::Capacity(CapacityError::MessageTooLong {
            size: 151,
            max: 150
        }))
    );
    assert_eq!(code, Some(1009));
}

#[test]
fn a_failed_connection_reads_nothing_more() {
    let mut p = pair();
    p.to_server.extend(raw_frame(4).bytes());
    p.to_server
        .extend(frame(OpCode::Text).payload("after").bytes());
    let (events, err) = p.server_reads();
    assert!(events.is_empty());
    assert!(err.is_some());
    assert_eq!(p.server.state(), State::Closed);
    let (events, err) = p.server_reads();
    assert_eq!((events, err), (vec![], Some(Error::Closed)));
}

#[test]
fn usage_errors_write_nothing_and_leave_the_connection_open() {
    let mut p = pair();
    let out = &mut p.to_client;
    assert_eq!(
        p.server.ping(&[0; 126], out),
        Err(Error::Usage(UsageError::ControlTooLong))
    );
    assert_eq!(
        p.server.send_frame(OpCode::Continuation, true, b"x", out),
        Err(Error::Usage(UsageError::FragmentOrder))
    );
    p.server
        .send_frame(OpCode::Binary, false, b"a", out)
        .unwrap();
    assert_eq!(
        p.server.send_text("b", out),
        Err(Error::Usage(UsageError::FragmentOrder))
    );
    p.server
        .send_frame(OpCode::Continuation, true, b"c", out)
        .unwrap();
    let invalid = c10m_engine::proto::CloseCode(1005);
    assert_eq!(
        p.server.close(invalid, "", out, 0),
        Err(Error::Usage(UsageError::InvalidCloseCode(1005)))
    );
    assert_eq!(
        p.client.data_header(OpCode::Text, true, 1),
        Err(Error::Usage(UsageError::MaskRequired))
    );
    assert_eq!(p.client_reads(), (vec![Ev::Binary(b"ac".to_vec())], None));
    assert_eq!(p.server.state(), State::Open);
}

#[test]
fn zero_copy_header_plus_payload_decodes() {
    let mut p = pair();
    let shared = bytes::Bytes::from_static(b"broadcast payload");
    let header = p
        .server
        .data_header(OpCode::Text, true, shared.len())
        .unwrap();
    p.to_client.extend_from_slice(&header);
    p.to_client.extend_from_slice(&shared);
    assert_eq!(
        p.client_reads(),
        (vec![Ev::Text("broadcast payload".into())], None)
    );
}

#[test]
fn keepalive_pings_a_quiet_peer_and_closes_an_idle_one() {
    let config = Config {
        ping_interval_ms: Some(1_000),
        idle_timeout_ms: Some(2_500),
        ..Config::default()
    };
    let mut p = Pair::new(config);
    assert_eq!(p.server.poll_timeout(), Some(1_000));
    // Early: nothing happens.
    p.server.handle_timeout(999, &mut p.to_client).unwrap();
    assert!(p.to_client.is_empty());
    p.server.handle_timeout(1_000, &mut p.to_client).unwrap();
    p.now = 1_000;
    assert_eq!(p.client_reads().0, vec![Ev::Ping(vec![])]);
    // The client's automatic pong counts as activity and pushes both deadlines out.
    p.now = 1_200;
    p.server_reads();
    assert_eq!(p.server.poll_timeout(), Some(2_200));
    // Now the client goes silent: one more ping at 2_200, then the idle close at 3_700.
    p.server.handle_timeout(2_200, &mut p.to_client).unwrap();
    assert_eq!(p.server.poll_timeout(), Some(3_200));
    p.server.handle_timeout(3_200, &mut p.to_client).unwrap();
    assert_eq!(p.server.poll_timeout(), Some(3_700));
    assert_eq!(
        p.server.handle_timeout(3_700, &mut p.to_client),
        Err(Error::Timeout(TimeoutKind::Idle))
    );
    assert_eq!(p.server.state(), State::Closed);
    assert_eq!(p.server.poll_timeout(), None);
    let events = p.client_reads().0;
    assert_eq!(
        events.last(),
        Some(&Ev::Close(Some((1001, "idle timeout".into()))))
    );
}

#[test]
fn an_unanswered_close_times_out() {
    let config = Config {
        close_timeout_ms: 500,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    p.server
        .close(
            c10m_engine::proto::CloseCode::NORMAL,
            "",
            &mut p.to_client,
            100,
        )
        .unwrap();
    assert_eq!(p.server.poll_timeout(), Some(600));
    p.server.handle_timeout(599, &mut p.to_client).unwrap();
    assert_eq!(
        p.server.handle_timeout(600, &mut p.to_client),
        Err(Error::Timeout(TimeoutKind::CloseHandshake))
    );
    assert_eq!(p.server.state(), State::Closed);
}

#[test]
fn client_frames_are_masked_with_varying_keys() {
    let mut p = pair();
    let mut a = Vec::new();
    let mut b = Vec::new();
    p.client.send_text("same", &mut a).unwrap();
    p.client.send_text("same", &mut b).unwrap();
    assert_eq!(a[1] & 0x80, 0x80, "mask bit set");
    assert_ne!(a[2..6], b[2..6], "a fresh key per frame");
    assert_ne!(&a[6..], b"same", "payload masked on the wire");
}
