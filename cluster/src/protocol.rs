//! The client protocol, version 1 (`/connection/v1`): one JSON object per WebSocket text
//! frame. docs/PROTOCOL.md is the reference; this module is its parser and encoder.
//!
//! Commands (client to server) carry an `id` the reply repeats and a `method`:
//! `subscribe`, `unsubscribe`, `publish`, `history`, `presence`, `send`, `refresh`, `pong`.
//! Replies are `{"id":N,"result":{...}}` or `{"id":N,"error":{"code":C,"message":"..."}}`.
//! Pushes (server to client, no id) have a `type`: `connected`, `pub`, `message`, `ping`.
//!
//! Parsing never panics and never trusts sizes: a frame that is not one of the commands gets
//! an error reply naming what is wrong.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The protocol's version, in the path and in the `connected` push.
pub const VERSION: u32 = 1;

/// Where a channel's stream stands: its epoch (changes when history is lost: a Redis restart
/// without persistence, a new process with in-memory history) and the offset of its last
/// publication (offsets start at 1 and grow by 1 per publication in an epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPos {
    /// The offset of the last publication seen.
    pub offset: u64,
    /// The epoch it belongs to.
    pub epoch: String,
}

/// A command from a client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command<'a> {
    /// Repeated in the reply; 0 or absent for commands that get none (`pong`).
    #[serde(default)]
    pub id: u64,
    /// What to do.
    pub method: &'a str,
    /// The channel (`subscribe`, `unsubscribe`, `publish`, `history`, `presence`).
    #[serde(default, borrow)]
    pub channel: Option<std::borrow::Cow<'a, str>>,
    /// The payload (`publish`, `send`): any JSON value, relayed as it came.
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    /// Recovery position (`subscribe`) or start (`history`): publications after it.
    #[serde(default)]
    pub since: Option<StreamPos>,
    /// Most publications returned (`history`).
    #[serde(default)]
    pub limit: Option<usize>,
    /// The recipient user (`send`).
    #[serde(default, borrow)]
    pub user: Option<std::borrow::Cow<'a, str>>,
    /// Makes a `publish` safe to retry: another with the same key on the same channel within
    /// 5 minutes publishes nothing and gets the first one's offset.
    #[serde(default, borrow)]
    pub idempotency_key: Option<std::borrow::Cow<'a, str>>,
    /// A new token (`refresh`).
    #[serde(default, borrow)]
    pub token: Option<std::borrow::Cow<'a, str>>,
}

/// Error codes in replies. Below 100: the request was wrong; 100 and up: the server could not
/// do it now (retry later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame is not a command (not JSON, unknown fields, wrong types).
    BadRequest = 1,
    /// The method is not one of the protocol's.
    UnknownMethod = 2,
    /// A field the method needs is missing.
    MissingField = 3,
    /// A channel or user name out of bounds (empty, too long, control characters).
    BadName = 4,
    /// Already subscribed to that channel.
    AlreadySubscribed = 5,
    /// Not subscribed to that channel.
    NotSubscribed = 6,
    /// Past the subscriptions a connection may hold.
    TooManySubscriptions = 7,
    /// The data is larger than the limit.
    TooLarge = 8,
    /// The token is invalid, expired, or for another user.
    BadToken = 9,
    /// An unsubscribe came before the subscribe it cancels was answered.
    Unsubscribed = 10,
    /// The backend (Redis) is unreachable or failed.
    Unavailable = 100,
}

impl ErrorCode {
    /// The text sent with it.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad request",
            ErrorCode::UnknownMethod => "unknown method",
            ErrorCode::MissingField => "missing field",
            ErrorCode::BadName => "bad channel or user name",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::NotSubscribed => "not subscribed",
            ErrorCode::TooManySubscriptions => "too many subscriptions",
            ErrorCode::TooLarge => "too large",
            ErrorCode::BadToken => "bad token",
            ErrorCode::Unsubscribed => "unsubscribed before the subscription completed",
            ErrorCode::Unavailable => "unavailable, retry later",
        }
    }
}

/// Close codes the server ends a connection with. 3000-3499: the client should reconnect
/// (with backoff); 3500-3999: it should not, until what is wrong is fixed. (A shutdown or a
/// silent client gets the engine's 1001: reconnect.)
pub mod close {
    /// The token expired and was not refreshed: get a new token, then reconnect.
    pub const TOKEN_EXPIRED: u16 = 3500;
    /// Too many malformed commands: do not reconnect (a client bug).
    pub const BAD_REQUESTS: u16 = 3501;
}

/// Longest channel or user name, in bytes.
pub const MAX_NAME: usize = 255;

/// Whether a channel or user name is acceptable: 1 to [`MAX_NAME`] bytes, no control
/// characters, no spaces (names are also engine topics and Redis channel suffixes).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && !name.chars().any(|c| c.is_control() || c == ' ')
}

/// Appends `s` as a JSON string.
pub fn push_str(out: &mut String, s: &str) {
    // serde_json's escaping of a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// `{"id":N,"error":{"code":C,"message":"..."}}`
pub fn error_reply(id: u64, code: ErrorCode) -> String {
    format!(
        "{{\"id\":{id},\"error\":{{\"code\":{},\"message\":\"{}\"}}}}",
        code as u16,
        code.message()
    )
}

/// `{"id":N,"result":RESULT}` where `result` is already JSON.
pub fn result_reply(id: u64, result: &str) -> String {
    format!("{{\"id\":{id},\"result\":{result}}}")
}

/// One publication in a reply's list: `{"offset":N,"data":DATA}`.
pub fn push_publication(out: &mut String, offset: u64, data: &str) {
    out.push_str("{\"offset\":");
    out.push_str(&offset.to_string());
    out.push_str(",\"data\":");
    out.push_str(data);
    out.push('}');
}

/// The live push of a publication: `{"type":"pub","channel":C,"offset":N,"epoch":E,"data":D}`.
/// Built once per process for all its subscribers.
pub fn publication_push(channel: &str, offset: u64, epoch: &str, data: &str) -> String {
    let mut out = String::with_capacity(64 + channel.len() + data.len());
    out.push_str("{\"type\":\"pub\",\"channel\":");
    push_str(&mut out, channel);
    out.push_str(",\"offset\":");
    out.push_str(&offset.to_string());
    out.push_str(",\"epoch\":");
    push_str(&mut out, epoch);
    out.push_str(",\"data\":");
    out.push_str(data);
    out.push('}');
    out
}

/// A message sent to a user: `{"type":"message","data":D}`.
pub fn message_push(data: &str) -> String {
    format!("{{\"type\":\"message\",\"data\":{data}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_borrow() {
        let c: Command<'_> = serde_json::from_str(
            r#"{"id":7,"method":"publish","channel":"news","data":{"a":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!((c.id, c.method), (7, "publish"));
        assert_eq!(c.channel.as_deref(), Some("news"));
        assert_eq!(c.data.unwrap().get(), r#"{"a":[1,2]}"#);
        let c: Command<'_> = serde_json::from_str(
            r#"{"id":1,"method":"subscribe","channel":"n","since":{"offset":3,"epoch":"e"}}"#,
        )
        .unwrap();
        assert_eq!(
            c.since,
            Some(StreamPos {
                offset: 3,
                epoch: "e".into()
            })
        );
    }

    #[test]
    fn bad_commands_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "[]",
            "null",
            r#"{"method":1}"#,
            r#"{"id":-1,"method":"x"}"#,
            r#"{"method":"x","surprise":true}"#,
            r#"{"id":1}"#,
        ] {
            assert!(serde_json::from_str::<Command<'_>>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_bounded() {
        assert!(valid_name("news"));
        assert!(valid_name(&"a".repeat(MAX_NAME)));
        assert!(!valid_name(&"a".repeat(MAX_NAME + 1)));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a\nb"));
    }

    #[test]
    fn pushes_are_json() {
        let p = publication_push("c\"h", 5, "ep", r#"{"x":1}"#);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["channel"], "c\"h");
        assert_eq!(v["offset"], 5);
        assert_eq!(v["data"]["x"], 1);
        let e: serde_json::Value =
            serde_json::from_str(&error_reply(3, ErrorCode::BadName)).unwrap();
        assert_eq!(e["error"]["code"], 4);
    }
}
