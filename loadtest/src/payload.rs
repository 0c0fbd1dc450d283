//! What the load generator puts in its messages, so every reply can be checked and timed
//! without per-message state on the sending side.
//!
//! Echo (binary, `size` bytes):
//! ```text
//!   0..4    connection index (u32, little endian)
//!   4..12   sequence number of this connection's message (u64 LE)
//!   12..20  timestamp, microseconds on CLOCK_MONOTONIC (u64 LE): the intended send time in
//!           fixed-rate mode, the actual one otherwise
//!   20..    a fixed pattern, checked on return
//! ```
//! 20 bytes of header, so the smallest message is the 20 B of the classic small-message echo
//! benchmark; a corrupted header shows up as a connection or sequence mismatch.
//!
//! Broadcast (text, on `/pubsub`): the publisher sends `pub TOPIC P.SEQ.STAMP.xxxx` (padded
//! with `x` to `size` payload bytes) and, once it is done, `pub TOPIC P.end.COUNT`; subscribers
//! receive the same payload as `msg TOPIC ...`. On `/connection/v1` the same payload is the
//! publication's `data`, a JSON string (no character in it needs escaping):
//! `{"id":N,"method":"publish","channel":"TOPIC","data":"P.SEQ.STAMP.xxxx"}`.

use std::fmt::Write as _;

/// Smallest echo message: the header.
pub const ECHO_HEADER: usize = 20;

/// The fields of an echo message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoHeader {
    /// Connection index (low 32 bits of the global index).
    pub conn: u32,
    /// Sequence number.
    pub seq: u64,
    /// Timestamp (us).
    pub stamp_us: u64,
}

/// Encodes and checks echo messages of one size.
#[derive(Clone, Debug)]
pub struct EchoFormat {
    template: Vec<u8>,
}

impl EchoFormat {
    /// A format for `size`-byte messages (at least [`ECHO_HEADER`]).
    pub fn new(size: usize) -> Self {
        let size = size.max(ECHO_HEADER);
        let template = (0..size)
            .map(|i| {
                if i < ECHO_HEADER {
                    0
                } else {
                    (i % 251) as u8 ^ 0x5a
                }
            })
            .collect();
        EchoFormat { template }
    }

    /// Message size.
    pub fn size(&self) -> usize {
        self.template.len()
    }

    /// Writes one message into `buf` (cleared first).
    pub fn encode(&self, h: EchoHeader, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self.template);
        buf[0..4].copy_from_slice(&h.conn.to_le_bytes());
        buf[4..12].copy_from_slice(&h.seq.to_le_bytes());
        buf[12..20].copy_from_slice(&h.stamp_us.to_le_bytes());
    }

    /// Reads a returned message: `None` unless the size and pattern are intact.
    pub fn decode(&self, payload: &[u8]) -> Option<EchoHeader> {
        if payload.len() != self.template.len()
            || payload[ECHO_HEADER..] != self.template[ECHO_HEADER..]
        {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&payload[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut c = [0u8; 4];
        c.copy_from_slice(&payload[0..4]);
        Some(EchoHeader {
            conn: u32::from_le_bytes(c),
            seq: u64_at(4),
            stamp_us: u64_at(12),
        })
    }
}

/// A broadcast payload, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// A data message.
    Data {
        /// Publisher id.
        publisher: u32,
        /// Its sequence number (from 0).
        seq: u64,
        /// Intended publish time (us).
        stamp_us: u64,
    },
    /// The publisher is done and sent `count` data messages.
    End {
        /// Publisher id.
        publisher: u32,
        /// Data messages it sent.
        count: u64,
    },
}

/// Appends the `pub` command of a data message whose payload is padded to `size` bytes.
pub fn write_publish(
    out: &mut String,
    topic: &str,
    size: usize,
    publisher: u32,
    seq: u64,
    stamp_us: u64,
) {
    out.clear();
    let _ = write!(out, "pub {topic} ");
    let start = out.len();
    let _ = write!(out, "{publisher}.{seq}.{stamp_us}.");
    let len = out.len() - start;
    out.extend(std::iter::repeat_n('x', size.saturating_sub(len)));
}

/// Appends the `pub` command of a publisher's end marker.
pub fn write_end(out: &mut String, topic: &str, publisher: u32, count: u64) {
    out.clear();
    let _ = write!(out, "pub {topic} {publisher}.end.{count}");
}

/// Appends the `v1` publish command (id `id`) of a data message padded to `size` bytes.
pub fn write_publish_v1(
    out: &mut String,
    topic: &str,
    size: usize,
    id: u64,
    (publisher, seq, stamp_us): (u32, u64, u64),
) {
    out.clear();
    let _ = write!(
        out,
        "{{\"id\":{id},\"method\":\"publish\",\"channel\":\"{topic}\",\"data\":\""
    );
    let start = out.len();
    let _ = write!(out, "{publisher}.{seq}.{stamp_us}.");
    let len = out.len() - start;
    out.extend(std::iter::repeat_n('x', size.saturating_sub(len)));
    out.push_str("\"}");
}

/// Appends the `v1` publish command (id `id`) of a publisher's end marker.
pub fn write_end_v1(out: &mut String, topic: &str, id: u64, publisher: u32, count: u64) {
    out.clear();
    let _ = write!(
        out,
        "{{\"id\":{id},\"method\":\"publish\",\"channel\":\"{topic}\",\"data\":\"{publisher}.end.{count}\"}}"
    );
}

/// Appends the Socket.IO `pub` event of a data message padded to `size` bytes.
pub fn write_publish_socketio(
    out: &mut String,
    topic: &str,
    size: usize,
    (publisher, seq, stamp_us): (u32, u64, u64),
) {
    crate::socketio::begin_publish(out, topic);
    let start = out.len();
    let _ = write!(out, "{publisher}.{seq}.{stamp_us}.");
    let len = out.len() - start;
    out.extend(std::iter::repeat_n('x', size.saturating_sub(len)));
    crate::socketio::end_publish(out);
}

/// Appends the Socket.IO `pub` event of a publisher's end marker.
pub fn write_end_socketio(out: &mut String, topic: &str, publisher: u32, count: u64) {
    crate::socketio::begin_publish(out, topic);
    let _ = write!(out, "{publisher}.end.{count}");
    crate::socketio::end_publish(out);
}

/// Parses a broadcast payload (what follows `pub TOPIC ` or `msg TOPIC `).
pub fn parse_payload(payload: &[u8]) -> Option<Published> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(4, '.');
    let publisher = parts.next()?.parse().ok()?;
    let second = parts.next()?;
    let third = parts.next()?;
    if second == "end" {
        return Some(Published::End {
            publisher,
            count: third.parse().ok()?,
        });
    }
    // A data message always has the trailing dot (padding may be empty).
    let padding = parts.next()?;
    if padding.bytes().any(|b| b != b'x') {
        return None;
    }
    Some(Published::Data {
        publisher,
        seq: second.parse().ok()?,
        stamp_us: third.parse().ok()?,
    })
}

/// Parses a delivery `msg TOPIC PAYLOAD` for `topic`.
pub fn parse_delivery(text: &[u8], topic: &str) -> Option<Published> {
    let rest = text.strip_prefix(b"msg ")?;
    let rest = rest.strip_prefix(topic.as_bytes())?;
    parse_payload(rest.strip_prefix(b" ")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trip_and_corruption() {
        let f = EchoFormat::new(64);
        let h = EchoHeader {
            conn: 7,
            seq: 1 << 40,
            stamp_us: 123_456_789,
        };
        let mut buf = Vec::new();
        f.encode(h, &mut buf);
        assert_eq!(buf.len(), 64);
        assert_eq!(f.decode(&buf), Some(h));
        for i in 0..buf.len() {
            if (0..ECHO_HEADER).contains(&i) {
                continue; // header fields: any value decodes, the caller compares them
            }
            let mut bad = buf.clone();
            bad[i] ^= 1;
            assert_eq!(f.decode(&bad), None, "byte {i} flipped");
        }
        assert_eq!(f.decode(&buf[..63]), None);
        assert_eq!(EchoFormat::new(3).size(), ECHO_HEADER);
    }

    #[test]
    fn publish_and_delivery_round_trip() {
        let mut s = String::new();
        write_publish(&mut s, "bench", 40, 3, 17, 999);
        let payload = s.strip_prefix("pub bench ").unwrap();
        assert_eq!(payload.len(), 40);
        let want = Published::Data {
            publisher: 3,
            seq: 17,
            stamp_us: 999,
        };
        assert_eq!(parse_payload(payload.as_bytes()), Some(want));
        let delivered = format!("msg bench {payload}");
        assert_eq!(parse_delivery(delivered.as_bytes(), "bench"), Some(want));
        assert_eq!(parse_delivery(delivered.as_bytes(), "other"), None);
        assert_eq!(parse_delivery(delivered.as_bytes(), "benc"), None);
        // A payload longer than `size` is not padded, and still parses.
        write_publish(&mut s, "t", 1, 1, 2, 3);
        assert_eq!(s, "pub t 1.2.3.");
        assert!(parse_payload(b"1.2.3.").is_some());
    }

    #[test]
    fn v1_commands_carry_the_same_payload_as_json_data() {
        let mut s = String::new();
        write_publish_v1(&mut s, "bench", 40, 9, (3, 17, 999));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            (v["id"].as_u64(), v["method"].as_str()),
            (Some(9), Some("publish"))
        );
        assert_eq!(v["channel"], "bench");
        let data = v["data"].as_str().unwrap();
        assert_eq!(data.len(), 40);
        assert_eq!(
            parse_payload(data.as_bytes()),
            Some(Published::Data {
                publisher: 3,
                seq: 17,
                stamp_us: 999
            })
        );
        write_end_v1(&mut s, "t", 10, 2, 50);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["data"], "2.end.50");
        assert_eq!(v["id"], 10);
    }

    #[test]
    fn end_markers_and_garbage() {
        let mut s = String::new();
        write_end(&mut s, "t", 2, 50);
        assert_eq!(s, "pub t 2.end.50");
        assert_eq!(
            parse_payload(b"2.end.50"),
            Some(Published::End {
                publisher: 2,
                count: 50
            })
        );
        for bad in [
            &b""[..],
            b"x",
            b"1.2",
            b"1.2.3",
            b"1.a.3.",
            b"1.2.3.xy",
            b"\xff.1.2.",
        ] {
            assert_eq!(parse_payload(bad), None, "{bad:?}");
        }
    }
}
