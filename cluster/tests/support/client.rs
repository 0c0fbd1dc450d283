//! A client of the client protocol for tests (shared by the cluster crate's tests and the
//! binary's): HS256 tokens, reading the next JSON frame (server pings skipped), and calling a
//! command to get its reply.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;
use tungstenite::Message;

/// A WebSocket client.
pub type Ws = tungstenite::WebSocket<TcpStream>;

/// An HS256 token for `user` signed with `secret`, expiring `expires_in` seconds from now
/// (negative: already expired).
pub fn token(secret: &[u8], user: &str, expires_in: i64) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let exp = (now + expires_in) as u64;
    encode(
        &Header::new(Algorithm::HS256),
        &Claims { sub: user, exp },
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

/// The next JSON frame that is not a server ping.
pub fn next(ws: &mut Ws) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "ping" {
                    return v;
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Sends a command and returns its reply; pushes that come first are skipped.
pub fn call(ws: &mut Ws, cmd: Value) -> Value {
    let id = cmd["id"].as_u64().unwrap();
    ws.send(Message::text(cmd.to_string())).unwrap();
    loop {
        let v = next(ws);
        if v["id"].as_u64() == Some(id) {
            return v;
        }
    }
}
