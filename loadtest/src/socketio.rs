//! Socket.IO (protocol 5 over Engine.IO 4, WebSocket transport only) as the load generator
//! speaks it, to measure a Socket.IO server (with its Redis adapter for several nodes) in the
//! same run as c10m. The server under test is the small program in `benches/socketio/`: a
//! client emits `sub` with a topic and is answered `subscribed`, emits `pub` with a topic and
//! a payload, and every subscriber of the topic receives `msg` with the payload.
//!
//! Frames are Engine.IO packets, one per WebSocket text frame: `0{...}` (open), `2` (ping,
//! answered `3`), and `4` + a Socket.IO packet: `0` (namespace connect, answered `0{"sid"}`) or
//! `2` + a JSON array (an event: its name, then its arguments).

use std::borrow::Cow;

use serde::Deserialize;

/// The request path of the WebSocket transport.
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// Connect to the main namespace (sent first, right after the WebSocket opens).
pub const CONNECT: &str = "40";

/// The answer to a server's ping.
pub const PONG: &str = "3";

/// A frame from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Engine.IO `open`.
    Open,
    /// The namespace's connect answer: events may be emitted now (a Socket.IO server closes a
    /// connection that emits before it).
    Connected,
    /// Engine.IO ping: answer [`PONG`].
    Ping,
    /// The event `subscribed` with its topic.
    Subscribed(Cow<'a, str>),
    /// The event `msg` with its payload.
    Msg(Cow<'a, str>),
    /// Another event, or an error packet.
    Other,
}

#[derive(Deserialize)]
struct Event<'a>(#[serde(borrow)] Cow<'a, str>, #[serde(borrow)] Cow<'a, str>);

/// Reads one server frame; `None` when it is not Socket.IO at all.
pub fn parse(bytes: &[u8]) -> Option<Frame<'_>> {
    let text = std::str::from_utf8(bytes).ok()?;
    match text.as_bytes().first()? {
        b'0' => Some(Frame::Open),
        b'2' => Some(Frame::Ping),
        b'4' => Some(match text.as_bytes().get(1)? {
            b'0' => Frame::Connected,
            b'2' => match serde_json::from_str::<Event<'_>>(&text[2..]) {
                Ok(Event(name, arg)) if name == "msg" => Frame::Msg(arg),
                Ok(Event(name, arg)) if name == "subscribed" => Frame::Subscribed(arg),
                _ => Frame::Other,
            },
            _ => Frame::Other,
        }),
        _ => None,
    }
}

/// Appends the `sub` event for `topic`.
pub fn write_subscribe(out: &mut String, topic: &str) {
    out.clear();
    out.push_str("42[\"sub\",");
    push_json_str(out, topic);
    out.push(']');
}

/// Starts the `pub` event for `topic`: the caller appends the payload's characters (which
/// need no escaping: digits, dots and padding) and then [`end_publish`].
pub fn begin_publish(out: &mut String, topic: &str) {
    out.clear();
    out.push_str("42[\"pub\",");
    push_json_str(out, topic);
    out.push_str(",\"");
}

/// Ends what [`begin_publish`] started.
pub fn end_publish(out: &mut String) {
    out.push_str("\"]");
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames() {
        assert_eq!(
            parse(br#"0{"sid":"a","upgrades":[],"pingInterval":25000}"#),
            Some(Frame::Open)
        );
        assert_eq!(parse(br#"40{"sid":"b"}"#), Some(Frame::Connected));
        assert_eq!(parse(b"2"), Some(Frame::Ping));
        assert_eq!(
            parse(br#"42["msg","0.1.2.xx"]"#),
            Some(Frame::Msg("0.1.2.xx".into()))
        );
        assert_eq!(
            parse(br#"42["subscribed","t"]"#),
            Some(Frame::Subscribed("t".into()))
        );
        assert_eq!(parse(br#"42["other","t"]"#), Some(Frame::Other));
        assert_eq!(parse(br#"42["msg"]"#), Some(Frame::Other));
        assert_eq!(parse(br#"44{"message":"no"}"#), Some(Frame::Other));
        assert_eq!(parse(b"hello"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"4"), None);
    }

    #[test]
    fn client_frames() {
        let mut s = String::new();
        write_subscribe(&mut s, "a\"b");
        assert_eq!(s, r#"42["sub","a\"b"]"#);
        begin_publish(&mut s, "t");
        s.push_str("1.2.3.x");
        end_publish(&mut s);
        assert_eq!(s, r#"42["pub","t","1.2.3.x"]"#);
        let v: serde_json::Value = serde_json::from_str(&s[2..]).unwrap();
        assert_eq!(v, serde_json::json!(["pub", "t", "1.2.3.x"]));
    }

    #[test]
    fn a_published_payload_reads_back_as_delivered() {
        use crate::payload::{
            Published, parse_payload, write_end_socketio, write_publish_socketio,
        };
        let mut s = String::new();
        write_publish_socketio(&mut s, "t", 64, (3, 9, 1234));
        // The server relays the payload as `msg`'s argument.
        let v: serde_json::Value = serde_json::from_str(&s[2..]).unwrap();
        let relayed = format!("42{}", serde_json::json!(["msg", v[2]]));
        let Some(Frame::Msg(data)) = parse(relayed.as_bytes()) else {
            panic!("not a msg: {relayed}");
        };
        assert_eq!(data.len(), 64);
        assert_eq!(
            parse_payload(data.as_bytes()),
            Some(Published::Data {
                publisher: 3,
                seq: 9,
                stamp_us: 1234
            })
        );
        write_end_socketio(&mut s, "t", 3, 10);
        assert_eq!(s, r#"42["pub","t","3.end.10"]"#);
    }
}
