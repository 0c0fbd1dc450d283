//! Audio levels and the active speaker of a room. Publishers' audio carries the RFC 6464 level
//! extension (`urn:ietf:params:rtp-hdrext:ssrc-audio-level`: one byte, the level in -dBov,
//! 0 the loudest and 127 silence), which browsers add by themselves once it is negotiated. The
//! SFU averages each participant's loudness over a window of [`SPEAKER_INTERVAL`] and, when the
//! loudest above [`MIN_LOUDNESS`] changes, tells the room.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The header extension carrying audio levels.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// How often the active speaker is decided (and so at most how often it changes).
pub const SPEAKER_INTERVAL: Duration = Duration::from_millis(500);

/// The least average loudness (127 minus the level in -dBov) that makes a speaker: below it a
/// participant is silent (a muted microphone sends level 127).
pub const MIN_LOUDNESS: u64 = 20;

/// The id an SDP gives the audio level extension (its `a=extmap` line).
pub fn audio_level_id(sdp: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.trim_end().strip_prefix("a=extmap:")?;
        let (id, uri) = rest.split_once(' ')?;
        let id = id.split('/').next()?;
        (uri.split_whitespace().next() == Some(AUDIO_LEVEL_URI))
            .then(|| id.parse().ok())
            .flatten()
    })
}

/// The level (0 loudest, 127 silent) in an audio level extension's payload.
pub fn level(extension: &[u8]) -> Option<u8> {
    extension.first().map(|b| b & 0x7f)
}

/// A room's loudness tally and its current speaker.
#[derive(Debug, Default)]
pub struct Speakers {
    /// Per participant in this window: (loudness summed, packets).
    window: HashMap<String, (u64, u64)>,
    current: Option<String>,
    window_start: Option<Instant>,
}

impl Speakers {
    /// One audio packet of `participant` at `level`.
    pub fn record(&mut self, participant: &str, level: u8) {
        let loudness = 127u64.saturating_sub(u64::from(level.min(127)));
        match self.window.get_mut(participant) {
            Some((sum, n)) => {
                *sum += loudness;
                *n += 1;
            }
            None => {
                self.window.insert(participant.to_owned(), (loudness, 1));
            }
        }
    }

    /// Once a window has passed: the new active speaker, if the loudest participant (above
    /// [`MIN_LOUDNESS`]) is not the current one. Starts the next window.
    pub fn decide(&mut self, now: Instant) -> Option<String> {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_duration_since(start) < SPEAKER_INTERVAL {
            return None;
        }
        self.window_start = Some(now);
        let loudest = self
            .window
            .drain()
            .map(|(id, (sum, n))| (sum / n.max(1), id))
            .filter(|(avg, _)| *avg >= MIN_LOUDNESS)
            .max()
            .map(|(_, id)| id)?;
        if self.current.as_deref() == Some(loudest.as_str()) {
            return None;
        }
        self.current = Some(loudest.clone());
        Some(loudest)
    }

    /// `participant` left.
    pub fn forget(&mut self, participant: &str) {
        self.window.remove(participant);
        if self.current.as_deref() == Some(participant) {
            self.current = None;
        }
    }

    /// The current active speaker.
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }
}

/// The signaling message announcing the active speaker.
pub fn speaker_message(id: &str) -> String {
    format!(
        "{{\"type\":\"active-speaker\",\"id\":{}}}",
        serde_json::Value::String(id.to_owned())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_id_comes_from_the_extmap_line() {
        let sdp = "v=0\r\na=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
                   a=extmap:1/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(audio_level_id(sdp), Some(1));
        assert_eq!(audio_level_id("a=extmap:4 urn:other\r\n"), None);
        assert_eq!(level(&[0x80 | 30]), Some(30));
        assert_eq!(level(&[]), None);
    }

    #[test]
    fn the_loudest_becomes_the_speaker_once_a_window_has_passed() {
        let t0 = Instant::now();
        let mut s = Speakers::default();
        assert_eq!(s.decide(t0), None);
        for _ in 0..10 {
            s.record("a", 127); // muted
            s.record("b", 40);
            s.record("c", 70);
        }
        // Not before the window ends.
        assert_eq!(s.decide(t0 + SPEAKER_INTERVAL / 2), None);
        assert_eq!(s.decide(t0 + SPEAKER_INTERVAL), Some("b".into()));
        assert_eq!(s.current(), Some("b"));
        // The same speaker again is no news.
        s.record("b", 40);
        assert_eq!(s.decide(t0 + SPEAKER_INTERVAL * 2), None);
        // Silence changes nothing.
        s.record("a", 127);
        s.record("b", 127);
        assert_eq!(s.decide(t0 + SPEAKER_INTERVAL * 3), None);
        assert_eq!(s.current(), Some("b"));
        s.record("c", 10);
        assert_eq!(s.decide(t0 + SPEAKER_INTERVAL * 4), Some("c".into()));
        s.forget("c");
        assert_eq!(s.current(), None);
    }
}
