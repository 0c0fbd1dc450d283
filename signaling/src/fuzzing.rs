//! Fuzz harnesses for what the signaling layer reads from untrusted peers: a participant's SDP
//! offer or answer (into the SFU's webrtc-rs peer connection), the datagrams arriving on the
//! SFU's UDP socket (routed by their STUN username), and the SFU commands other nodes send
//! through the backend. Kept in the library so each `cargo fuzz`
//! target is one line and a unit test replays every committed corpus input.
//!
//! Compiled only under `cfg(fuzzing)` (set by cargo-fuzz) and in tests.

// A harness reports a broken invariant by panicking: that is the fuzzer's finding.
#![allow(clippy::expect_used)]

use std::time::Instant;

use c10m_engine::server::ConnId;

use crate::sfu::peer::{Peer, ice_ufrag};
use crate::sfu::stun::{is_stun, server_ufrag};
use crate::sfu::{Command, Reply};

/// An SDP offer from a participant: answered or refused with an error, never a panic; an
/// answered one names the SFU's ICE username; an answer without an offer out is refused.
pub fn sdp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = Instant::now();
    let mut peer = Peer::new("fuzz".into(), Reply::Conn(ConnId::from_u64(1)), now, true)
        .expect("a peer connection");
    assert!(
        peer.answer(text.to_owned(), now).is_err(),
        "no offer was out"
    );
    if let Ok(answer) = peer.offer(
        text.to_owned(),
        "127.0.0.1:40000".parse().expect("addr"),
        now,
    ) {
        assert!(
            ice_ufrag(&answer).is_some(),
            "an answer without ICE credentials"
        );
    }
}

/// A datagram on the SFU's socket: classified and its username read without a panic; a
/// username is only ever found in what is classified as STUN.
pub fn datagram(data: &[u8]) {
    let stun = is_stun(data);
    if let Some(ufrag) = server_ufrag(data) {
        assert!(stun, "a username in a datagram that is not STUN");
        assert!(!ufrag.is_empty());
    }
}

/// An SFU command from another node: read without a panic, and what is read writes back to
/// the same command (a join's replies go to the participant's topic).
pub fn node_command(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(command) = Command::from_json(text) {
        if let Command::Join { id, conn, .. } = &command {
            assert_eq!(
                conn,
                &Reply::Remote(id.clone()),
                "a remote join answered elsewhere"
            );
        }
        let again = command
            .to_json()
            .expect("a command from a node crosses back");
        let back = Command::from_json(&again).expect("what a node writes reads back");
        assert_eq!(format!("{back:?}"), format!("{command:?}"));
    }
}

/// A video RTP payload (VP8) and a participant's renegotiation answer, as the SFU reads them
/// for simulcast: keyframe and width read without a panic, a width only from a keyframe; the
/// answer's rewriting keeps every line outside the simulcast sections.
pub fn vp8(data: &[u8]) {
    let keyframe = crate::sfu::vp8::starts_keyframe(data);
    if crate::sfu::vp8::keyframe_width(data).is_some() {
        assert!(keyframe, "a width from a payload that starts no keyframe");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let kept = crate::sfu::simulcast::keep_simulcast_receivers(text);
        assert!(kept.len() <= text.len());
        if !text.contains("a=rid:") {
            assert_eq!(kept, text, "rewritten without simulcast");
        }
    }
}

#[cfg(test)]
mod tests {
    //! Replays the committed corpora (fuzz/corpus/sdp, stun, vp8, node_command).
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    fn replay(target: &str, run: impl Fn(&[u8])) -> usize {
        let mut count = 0;
        for dir in ["corpus", "artifacts"] {
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
    fn the_seed_offer_is_answered() {
        // The harness's answered branch is reachable: a browser-like offer (also a seed of
        // the corpus) is answered.
        let offer = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/offer.sdp"),
        )
        .unwrap();
        let now = std::time::Instant::now();
        let mut peer = crate::sfu::peer::Peer::new(
            "t".into(),
            crate::sfu::Reply::Conn(c10m_engine::server::ConnId::from_u64(1)),
            now,
            true,
        )
        .unwrap();
        let answer = peer
            .offer(offer, "127.0.0.1:40000".parse().unwrap(), now)
            .unwrap();
        assert!(answer.contains("a=ice-lite"), "{answer}");
    }

    #[test]
    fn committed_corpora_replay_cleanly() {
        let sdp = replay("sdp", super::sdp);
        let stun = replay("stun", super::datagram);
        let vp8 = replay("vp8", super::vp8);
        let node = replay("node_command", super::node_command);
        // Committed with the targets; an empty replay means they went missing.
        assert!(
            sdp >= 5 && stun >= 5 && vp8 >= 4 && node >= 4,
            "only {sdp} SDP, {stun} STUN, {vp8} VP8 and {node} node command inputs under fuzz/"
        );
    }
}
