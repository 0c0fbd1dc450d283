//! The client protocol `/connection/v1` (docs/PROTOCOL.md) as the load generator speaks it:
//! the frames it reads (the `connected`, `ping` and `pub` pushes, and replies to its
//! `subscribe` and `publish` commands) and the commands it writes. Broadcast payloads travel
//! as the publications' `data`, a JSON string ([`crate::payload`]).
//!
//! A subscriber keeps the position (epoch, offset) of the last publication it handled; after
//! a reconnect it subscribes with `since` and gets what it missed in the reply. Live pushes may
//! arrive before that reply: they are held until it, and any publication whose offset was
//! handled already (in the same epoch) is dropped, as the protocol prescribes
//! (`worker/sub.rs` does it).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The answer to a server's `ping` push.
pub const PONG: &str = "{\"method\":\"pong\"}";

/// One publication: a live push, or an entry of a subscribe reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication<'a> {
    /// Its offset in the channel's epoch.
    pub offset: u64,
    /// Its `data` when that is a JSON string (the load generator's payloads are).
    pub data: Option<Cow<'a, str>>,
}

/// A live `pub` push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push<'a> {
    /// The channel.
    pub channel: Cow<'a, str>,
    /// The epoch the offset belongs to.
    pub epoch: Cow<'a, str>,
    /// The publication.
    pub publication: Publication<'a>,
}

/// What a reply's `result` holds (the fields of a subscribe or publish result).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply<'a> {
    /// Subscribe: the channel's epoch.
    pub epoch: Option<Cow<'a, str>>,
    /// Subscribe: the offset of the channel's last publication; publish: the new one's.
    pub offset: Option<u64>,
    /// Subscribe with `since`: whether everything after it was recovered.
    pub recovered: Option<bool>,
    /// Subscribe: the recovered publications, in order.
    pub publications: Vec<Publication<'a>>,
}

/// A frame from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `{"type":"connected",...}`.
    Connected,
    /// `{"type":"ping"}`: answer [`PONG`].
    Ping,
    /// `{"type":"pub",...}`.
    Pub(Push<'a>),
    /// `{"id":N,"result":{...}}`.
    Result {
        /// The command's id.
        id: u64,
        /// Its result.
        reply: Reply<'a>,
    },
    /// `{"id":N,"error":{"code":C,...}}`.
    Error {
        /// The command's id.
        id: u64,
        /// The error code.
        code: u16,
    },
    /// Valid JSON of another kind (a `message` push).
    Other,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<ResultBody<'a>>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ResultBody<'a> {
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default, borrow)]
    publications: Vec<PublicationBody<'a>>,
}

#[derive(Deserialize)]
struct PublicationBody<'a> {
    offset: u64,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: u16,
}

/// A JSON string's contents, borrowed when it has no escapes.
fn string_of(raw: &RawValue) -> Option<Cow<'_, str>> {
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(raw.get())
            .ok()
            .map(Cow::Owned),
    }
}

/// Parses one text frame; `None` when it is not JSON of the protocol's shape.
pub fn parse(bytes: &[u8]) -> Option<Frame<'_>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let m: Incoming<'_> = serde_json::from_str(text).ok()?;
    if let Some(id) = m.id {
        if let Some(e) = m.error {
            return Some(Frame::Error { id, code: e.code });
        }
        let r = m.result?;
        return Some(Frame::Result {
            id,
            reply: Reply {
                epoch: r.epoch,
                offset: r.offset,
                recovered: r.recovered,
                publications: r
                    .publications
                    .into_iter()
                    .map(|p| Publication {
                        offset: p.offset,
                        data: string_of(p.data),
                    })
                    .collect(),
            },
        });
    }
    Some(match m.kind.as_deref()? {
        "connected" => Frame::Connected,
        "ping" => Frame::Ping,
        "pub" => Frame::Pub(Push {
            channel: m.channel?,
            epoch: m.epoch?,
            publication: Publication {
                offset: m.offset?,
                data: m.data.and_then(string_of),
            },
        }),
        _ => Frame::Other,
    })
}

/// Appends a `subscribe` command for `channel` (id `id`), recovering after `since` (epoch,
/// offset) when given.
pub fn write_subscribe(out: &mut String, id: u64, channel: &str, since: Option<(&str, u64)>) {
    out.clear();
    let _ = write!(
        out,
        "{{\"id\":{id},\"method\":\"subscribe\",\"channel\":{}",
        json_string(channel)
    );
    if let Some((epoch, offset)) = since {
        let _ = write!(
            out,
            ",\"since\":{{\"offset\":{offset},\"epoch\":{}}}",
            json_string(epoch)
        );
    }
    out.push('}');
}

fn json_string(s: &str) -> String {
    // Escaping a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_parse_and_borrow() {
        let f = parse(
            br#"{"type":"pub","channel":"bench","offset":17,"epoch":"e1","data":"0.5.99.xx"}"#,
        )
        .unwrap();
        let Frame::Pub(p) = f else { panic!("{f:?}") };
        assert_eq!((p.channel.as_ref(), p.epoch.as_ref()), ("bench", "e1"));
        assert_eq!(p.publication.offset, 17);
        assert!(matches!(
            p.publication.data,
            Some(Cow::Borrowed("0.5.99.xx"))
        ));
        assert_eq!(parse(br#"{"type":"ping"}"#), Some(Frame::Ping));
        assert_eq!(
            parse(br#"{"type":"connected","version":1,"client":"c","user":"","expires":0,"ping_ms":25000}"#),
            Some(Frame::Connected)
        );
        assert_eq!(
            parse(br#"{"type":"message","data":{"a":1}}"#),
            Some(Frame::Other)
        );
        // Data that is not a string is kept as no data, not refused.
        let Some(Frame::Pub(p)) =
            parse(br#"{"type":"pub","channel":"c","offset":1,"epoch":"e","data":{"x":1}}"#)
        else {
            panic!()
        };
        assert_eq!(p.publication.data, None);
    }

    #[test]
    fn replies_parse() {
        let f = parse(
            br#"{"id":3,"result":{"epoch":"e","offset":9,"recovered":true,"publications":[{"offset":8,"data":"a"},{"offset":9,"data":"b\"c"}]}}"#,
        )
        .unwrap();
        let Frame::Result { id, reply } = f else {
            panic!("{f:?}")
        };
        assert_eq!(id, 3);
        assert_eq!(
            (reply.epoch.as_deref(), reply.offset, reply.recovered),
            (Some("e"), Some(9), Some(true))
        );
        let data: Vec<_> = reply
            .publications
            .iter()
            .map(|p| (p.offset, p.data.as_deref()))
            .collect();
        assert_eq!(data, [(8, Some("a")), (9, Some("b\"c"))]);
        assert_eq!(
            parse(br#"{"id":4,"result":{"offset":12}}"#),
            Some(Frame::Result {
                id: 4,
                reply: Reply {
                    offset: Some(12),
                    ..Reply::default()
                }
            })
        );
        assert_eq!(
            parse(br#"{"id":5,"error":{"code":100,"message":"unavailable, retry later"}}"#),
            Some(Frame::Error { id: 5, code: 100 })
        );
        for bad in [&b""[..], b"{", b"[1]", b"{\"type\":\"pub\"}", b"\xff"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn subscribe_commands() {
        let mut s = String::new();
        write_subscribe(&mut s, 1, "bench", None);
        assert_eq!(s, r#"{"id":1,"method":"subscribe","channel":"bench"}"#);
        write_subscribe(&mut s, 2, "bench", Some(("18edb1", 41)));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["since"]["offset"], 41);
        assert_eq!(v["since"]["epoch"], "18edb1");
        assert_eq!(v["id"], 2);
    }
}
