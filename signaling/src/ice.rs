//! The ICE servers handed to each participant at join: STUN URLs as given, and TURN with
//! time-limited REST credentials (the scheme coturn calls `use-auth-secret`): the username is
//! `EXPIRY:ID`, the password `base64(HMAC-SHA1(secret, username))`, so a TURN server sharing
//! the secret checks them with no call back to us, and they stop working at `EXPIRY`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Where clients find STUN and TURN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceConfig {
    /// STUN URLs (`stun:HOST:PORT`).
    pub stun: Vec<String>,
    /// TURN URLs (`turn:HOST:PORT?transport=udp`); they get credentials when `turn_secret` is
    /// set.
    pub turn: Vec<String>,
    /// The secret shared with the TURN server.
    pub turn_secret: Option<String>,
    /// How long TURN credentials last, seconds.
    pub turn_ttl_secs: u64,
}

impl IceConfig {
    /// The `iceServers` JSON array for participant `id` at `now_secs`.
    pub fn servers_json(&self, id: &str, now_secs: u64) -> String {
        let mut out = String::from("[");
        let mut first = true;
        let mut push = |entry: String| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&entry);
        };
        if !self.stun.is_empty() {
            push(format!("{{\"urls\":{}}}", json_list(&self.stun)));
        }
        if let (false, Some(secret)) = (self.turn.is_empty(), &self.turn_secret) {
            let (username, credential) =
                turn_credentials(secret, id, now_secs + self.turn_ttl_secs);
            push(format!(
                "{{\"urls\":{},\"username\":{},\"credential\":{}}}",
                json_list(&self.turn),
                json_str(&username),
                json_str(&credential)
            ));
        }
        out.push(']');
        out
    }
}

/// TURN REST credentials valid until `expiry` (seconds since the epoch).
pub fn turn_credentials(secret: &str, id: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{id}");
    let credential = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(username.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes a key of any length; this cannot happen.
        Err(_) => String::new(),
    };
    (username, credential)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_follow_the_rest_scheme() {
        // The value coturn's turnutils and the TURN REST draft compute for this input.
        let (user, pass) = turn_credentials("north", "alice", 1_700_000_000);
        assert_eq!(user, "1700000000:alice");
        let mut mac = Hmac::<Sha1>::new_from_slice(b"north").unwrap();
        mac.update(b"1700000000:alice");
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(pass, expected);
        assert_eq!(pass.len(), 28, "base64 of 20 bytes");
    }

    #[test]
    fn servers_json_lists_stun_and_turn_with_credentials() {
        let c = IceConfig {
            stun: vec!["stun:127.0.0.1:3478".into()],
            turn: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            turn_secret: Some("s".into()),
            turn_ttl_secs: 600,
        };
        let v: serde_json::Value = serde_json::from_str(&c.servers_json("p1", 1000)).unwrap();
        assert_eq!(v[0]["urls"][0], "stun:127.0.0.1:3478");
        assert_eq!(v[1]["username"], "1600:p1");
        assert!(v[1]["credential"].as_str().unwrap().len() == 28);
        assert_eq!(IceConfig::default().servers_json("x", 0), "[]");
    }
}
