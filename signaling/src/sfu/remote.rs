//! An SFU room with participants on other nodes. A room's media lives on one node: the node
//! of its first SFU participant (the room's presence says which). A participant that joins on
//! another node keeps its signaling connection there; its node forwards what it says to the
//! SFU as a [`Command`] in JSON through the media node's inbox
//! ([`Backend::to_node`](c10m_cluster::Backend::to_node)), and the SFU answers through the
//! participant's own topic (`sigp ID`), which the broker carries to its connection
//! ([`Reply::Remote`]). Media then flows between the participant and the media node's UDP
//! socket directly: the SFU's answer names it as the only candidate.

use c10m_engine::server::ConnId;
use serde_json::{Value, json};

use super::Command;

/// Where the SFU's signaling messages to a participant go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Its connection, in this process.
    Conn(ConnId),
    /// A participant on another node: published to its topic (`sigp ID`).
    Remote(String),
}

impl Command {
    /// The command as a message to the media node ([`Command::from_json`] reads it back).
    /// `None` for a join of a local connection, which has no meaning elsewhere.
    pub fn to_json(&self) -> Option<String> {
        let v = match self {
            Command::Join { room, id, conn } => {
                if !matches!(conn, Reply::Remote(_)) {
                    return None;
                }
                json!({"sfu": "join", "room": room, "id": id})
            }
            Command::Offer { room, id, sdp } => {
                json!({"sfu": "offer", "room": room, "id": id, "sdp": sdp})
            }
            Command::Answer { room, id, sdp } => {
                json!({"sfu": "answer", "room": room, "id": id, "sdp": sdp})
            }
            Command::Layer {
                room,
                id,
                publisher,
                rid,
            } => {
                json!({"sfu": "layer", "room": room, "id": id, "publisher": publisher, "rid": rid})
            }
            Command::Leave { room, id } => json!({"sfu": "leave", "room": room, "id": id}),
        };
        Some(v.to_string())
    }

    /// A command from another node: its participant's replies go to its topic. `None` for
    /// anything malformed (a node sends only what [`Command::to_json`] wrote).
    pub fn from_json(text: &str) -> Option<Command> {
        let v: Value = serde_json::from_str(text).ok()?;
        let field = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
        let room = field("room").filter(|r| c10m_cluster::protocol::valid_name(r))?;
        let id = field("id").filter(|i| c10m_cluster::protocol::valid_name(i))?;
        Some(match v.get("sfu").and_then(Value::as_str)? {
            "join" => Command::Join {
                room,
                conn: Reply::Remote(id.clone()),
                id,
            },
            "offer" => Command::Offer {
                room,
                id,
                sdp: field("sdp")?,
            },
            "answer" => Command::Answer {
                room,
                id,
                sdp: field("sdp")?,
            },
            "layer" => Command::Layer {
                room,
                id,
                publisher: field("publisher")?,
                rid: match v.get("rid") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(r)) if super::simulcast::valid_rid(r) => Some(r.clone()),
                    Some(_) => return None,
                },
            },
            "leave" => Command::Leave { room, id },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_cross_to_the_media_node_and_back() {
        let join = Command::Join {
            room: "r".into(),
            id: "n1-2".into(),
            conn: Reply::Remote("n1-2".into()),
        };
        let offer = Command::Offer {
            room: "r".into(),
            id: "n1-2".into(),
            sdp: "v=0\r\n".into(),
        };
        let layer = Command::Layer {
            room: "r".into(),
            id: "n1-2".into(),
            publisher: "n2-1".into(),
            rid: Some("h".into()),
        };
        let best = Command::Layer {
            room: "r".into(),
            id: "n1-2".into(),
            publisher: "n2-1".into(),
            rid: None,
        };
        let leave = Command::Leave {
            room: "r".into(),
            id: "n1-2".into(),
        };
        for c in [join, offer, layer, best, leave] {
            let text = c.to_json().expect("a remote command");
            let back = Command::from_json(&text).expect("reads back");
            assert_eq!(format!("{back:?}"), format!("{c:?}"));
        }
        // A local connection's join does not cross.
        let local = Command::Join {
            room: "r".into(),
            id: "n1-2".into(),
            conn: Reply::Conn(ConnId::from_u64(1)),
        };
        assert_eq!(local.to_json(), None);
    }

    #[test]
    fn malformed_commands_are_refused() {
        for text in [
            "",
            "[]",
            r#"{"sfu":"join","room":"r"}"#,
            r#"{"sfu":"join","room":"bad room","id":"a"}"#,
            r#"{"sfu":"offer","room":"r","id":"a"}"#,
            r#"{"sfu":"layer","room":"r","id":"a","publisher":"b","rid":7}"#,
            r#"{"sfu":"dance","room":"r","id":"a"}"#,
        ] {
            assert!(Command::from_json(text).is_none(), "{text}");
        }
    }
}
