//! Fuzz harnesses for what the client protocol reads from untrusted peers: its commands (JSON
//! text frames) and its connection tokens (JWTs). Kept in the library so each `cargo fuzz`
//! target is one line and a unit test replays every committed corpus input.
//!
//! Compiled only under `cfg(fuzzing)` (set by cargo-fuzz) and in tests.

// A harness reports a broken invariant by panicking: that is the fuzzer's finding.
#![allow(clippy::expect_used)]

use crate::protocol::{
    Command, ErrorCode, StreamPos, error_reply, publication_push, push_str, valid_name,
};
use crate::token::Verifier;

/// A command frame: parsing never panics; every string the server echoes back (channel,
/// user, epoch, data) is re-encoded as JSON that reads back to the same value.
pub fn command(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cmd) = serde_json::from_str::<Command<'_>>(text) else {
        return;
    };
    for name in [cmd.channel.as_deref(), cmd.user.as_deref()]
        .into_iter()
        .flatten()
    {
        let valid = valid_name(name);
        assert!(!valid || (!name.is_empty() && !name.contains(' ')));
        let mut quoted = String::new();
        push_str(&mut quoted, name);
        let back: String = serde_json::from_str(&quoted).expect("push_str writes JSON strings");
        assert_eq!(back, name);
    }
    if let Some(key) = cmd.idempotency_key.as_deref() {
        let _ = crate::idempotency::valid_key(key);
    }
    if let (Some(channel), Some(payload)) = (cmd.channel.as_deref(), cmd.data) {
        let epoch = cmd.since.as_ref().map_or("e", |s: &StreamPos| &s.epoch);
        let push = publication_push(channel, 1, epoch, payload.get());
        // Read back with the data left raw: it may nest deeper than a parse into a tree
        // allows (serde_json stops at 128 levels; the server relays it as it came).
        #[derive(serde::Deserialize)]
        struct Push<'a> {
            r#type: String,
            channel: String,
            offset: u64,
            epoch: String,
            #[serde(borrow)]
            data: &'a serde_json::value::RawValue,
        }
        let p: Push<'_> = serde_json::from_str(&push).expect("a publication push is JSON");
        assert_eq!(
            (
                p.r#type.as_str(),
                p.channel.as_str(),
                p.offset,
                p.epoch.as_str()
            ),
            ("pub", channel, 1, epoch)
        );
        assert_eq!(p.data.get(), payload.get());
    }
    let reply: serde_json::Value =
        serde_json::from_str(&error_reply(cmd.id, ErrorCode::BadRequest)).expect("JSON");
    assert_eq!(reply["id"].as_u64(), Some(cmd.id));
}

/// A connection token: never panics, and nothing but a token signed with the secret verifies
/// (arbitrary bytes cannot be a valid HS256 signature of it).
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let verifier = Verifier::hs256(b"fuzzing secret").expect("an HS256 key");
    assert!(verifier.verify(text).is_err(), "a forged token verified");
}

#[cfg(test)]
mod tests {
    //! Replays the committed corpora (fuzz/corpus/protocol_command, fuzz/corpus/token).
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    fn replay(target: &str, run: impl Fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            run(&std::fs::read(entry.path()).unwrap());
            n += 1;
        }
        n
    }

    #[test]
    fn harnesses_take_simple_inputs() {
        super::command(
            br#"{"id":3,"method":"publish","channel":"a\u0000b","data":{"x":[1,"\ud83d\ude00"]},"since":{"offset":1,"epoch":"\"q"}}"#,
        );
        super::token(b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.AAAA");
        super::token(b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.");
    }

    #[test]
    fn committed_corpora_replay_cleanly() {
        let n = replay("protocol_command", super::command) + replay("token", super::token);
        assert!(n > 50, "only {n} corpus inputs found under fuzz/corpus");
    }
}
