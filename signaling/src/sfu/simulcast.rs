//! Simulcast: a publisher may send its video as several layers (encodings of one track at
//! different resolutions, told apart by their RTP stream id, the `rid`, and arriving under
//! their own SSRCs). Each subscriber receives one layer at a time: the one it asked for while
//! that layer is being sent, else the best one sent that fits its share of its bandwidth
//! estimate ([`super::estimate`]). "Best" is the widest, as its last keyframe says (bitrates
//! would mislead as a ranking, since an encoder starves its upper layers while its own estimate
//! ramps up); "fits" compares the layer's bitrate over the last second with the share, with
//! headroom for a move up so that a subscriber near the line does not flip between two layers.
//! A subscriber with no estimate yet gets the widest layer sent. A change of layer
//! happens on a keyframe of the new one (asked for with a PLI), and the subscriber's outgoing
//! sequence numbers and timestamps continue across it ([`super::rewrite`]).
//!
//! A track without simulcast is the one-layer case of the same code: its layer is always the
//! target, so every packet is forwarded.

use std::time::{Duration, Instant};

/// A layer with no packet for this long is taken as no longer sent (the publisher's encoder
/// pauses upper layers when its bandwidth drops).
pub const STALE: Duration = Duration::from_millis(1000);

/// The window a layer's bitrate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_millis(1000);

/// A move to a wider layer needs its bitrate within this fraction of the subscriber's share
/// (staying on a layer, or moving down, needs it within the share).
pub const UP_HEADROOM: f64 = 0.8;

/// The longest `rid` taken from a subscriber's layer request (RFC 8851 sets no bound; browsers
/// use one to three characters).
pub const MAX_RID: usize = 32;

/// Whether a subscriber's `rid` is one a layer could have: 1 to [`MAX_RID`] alphanumerics,
/// `-` or `_` (RFC 8851's grammar).
pub fn valid_rid(rid: &str) -> bool {
    !rid.is_empty()
        && rid.len() <= MAX_RID
        && rid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A participant's answer to a renegotiation, as the SFU's peer connection takes it: in each
/// media section with simulcast (`a=rid`), the stream and SSRC lines are left out.
///
/// Why: on every remote description, webrtc-rs (`rtc` 0.21.1, `start_rtp`) rebuilds the
/// receiver of each section that names a track and has `a=rid`, with its layers' SSRCs unknown
/// again, to be learned from the MID/RID header extensions of the next packets. Chromium stops
/// sending those extensions once a receiver report acknowledges the stream, so after the first
/// renegotiation a simulcast publisher's video would no longer be recognised and would stop.
/// Without a track named in the section, the receiver built at the first negotiation is kept,
/// SSRCs and all; its stream and track ids cannot change in a renegotiation anyway.
pub fn keep_simulcast_receivers(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut section: Vec<&str> = Vec::new();
    let flush = |section: &mut Vec<&str>, out: &mut String| {
        let simulcast = section.iter().any(|l| l.starts_with("a=rid:"));
        for l in section.drain(..) {
            let named = l.starts_with("a=msid:")
                || l.starts_with("a=ssrc:")
                || l.starts_with("a=ssrc-group:");
            if !(simulcast && named) {
                out.push_str(l);
            }
        }
    };
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        section.push(line);
    }
    flush(&mut section, &mut out);
    out
}

/// One layer of a published track.
#[derive(Debug)]
pub struct Layer {
    /// Its RTP stream id (empty for a track without simulcast).
    pub rid: String,
    /// The SSRC it arrives with.
    pub ssrc: u32,
    /// When a keyframe of it was last asked for.
    pub last_pli: Option<Instant>,
    /// A request held back by the rate limit: when it goes out (unless a keyframe of the
    /// layer arrives first).
    pub pli_due: Option<Instant>,
    last_seen: Instant,
    /// The width of its last keyframe.
    width: Option<u16>,
    /// Bytes of payload since `window_start`.
    window_bytes: u64,
    window_start: Instant,
    /// Its bitrate over the last full window, in bits per second (`None` before one).
    bitrate: Option<f64>,
}

impl Layer {
    /// A layer whose first packet just arrived.
    pub fn new(rid: String, ssrc: u32, now: Instant) -> Layer {
        Layer {
            rid,
            ssrc,
            last_pli: None,
            pli_due: None,
            last_seen: now,
            width: None,
            window_bytes: 0,
            window_start: now,
            bitrate: None,
        }
    }

    /// A packet of `bytes` arrived on this layer; `width`: it starts a keyframe that wide.
    pub fn record(&mut self, width: Option<u16>, bytes: usize, now: Instant) {
        self.last_seen = now;
        if width.is_some() {
            self.width = width;
        }
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            self.bitrate = Some(self.window_bytes as f64 * 8.0 / elapsed.as_secs_f64());
            self.window_bytes = 0;
            self.window_start = now;
        }
        self.window_bytes += bytes as u64;
    }

    /// Its bitrate over the last full window, in bits per second.
    pub fn bitrate(&self) -> Option<f64> {
        self.bitrate
    }

    /// Whether it is being sent.
    pub fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_seen) < STALE
    }
}

/// The SSRC of the layer a subscriber should receive: the one named `want` while it is sent;
/// else the widest layer sent whose bitrate fits `share` (the subscriber's share of its
/// bandwidth estimate; `None`: no estimate, everything fits), a layer wider than `current`
/// (the one it receives) fitting only with [`UP_HEADROOM`]; else the narrowest sent. A layer
/// whose keyframe was not seen yet counts as narrowest, one whose bitrate is not known yet as
/// fitting; among equals, the first. `None` while no layer is sent.
pub fn target(
    layers: &[Layer],
    want: Option<&str>,
    share: Option<f64>,
    current: Option<u32>,
    now: Instant,
) -> Option<u32> {
    if let [only] = layers {
        return Some(only.ssrc);
    }
    if let Some(rid) = want
        && let Some(l) = layers.iter().find(|l| l.rid == rid && l.live(now))
    {
        return Some(l.ssrc);
    }
    let current_width = current.and_then(|c| layers.iter().find(|l| l.ssrc == c).map(|l| l.width));
    let fits = |l: &Layer| {
        let (Some(share), Some(rate)) = (share, l.bitrate) else {
            return true;
        };
        let headroom = match current_width {
            Some(w) if l.width > w => UP_HEADROOM,
            _ => 1.0,
        };
        rate <= share * headroom
    };
    let mut best: Option<&Layer> = None;
    let mut narrowest: Option<&Layer> = None;
    for l in layers.iter().filter(|l| l.live(now)) {
        if fits(l) && best.is_none_or(|b| l.width > b.width) {
            best = Some(l);
        }
        if narrowest.is_none_or(|n| l.width < n.width) {
            narrowest = Some(l);
        }
    }
    best.or(narrowest).map(|l| l.ssrc)
}

/// What happens to one packet at one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded, on the layer already forwarded.
    Forward,
    /// Forwarded: the first packet of a new layer (its stream continues the previous one).
    Switch,
    /// Not forwarded (another layer's, or the target's before its keyframe).
    Drop,
}

/// A subscriber's choice of layer for one forwarded track.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    /// The `rid` it asked for (`None`: the best one sent).
    pub want: Option<String>,
    /// The SSRC of the layer it receives.
    pub current: Option<u32>,
}

impl Selection {
    /// A packet of layer `ssrc` while the target is `target`; `keyframe`: it starts one.
    /// The first layer is taken at once (the subscriber asks for a keyframe itself, and one is
    /// asked for it when it connects); later ones only at a keyframe.
    pub fn packet(&mut self, ssrc: u32, target: Option<u32>, keyframe: bool) -> Verdict {
        match self.current {
            Some(c) if c == ssrc => Verdict::Forward,
            None if target == Some(ssrc) => {
                self.current = Some(ssrc);
                Verdict::Forward
            }
            Some(_) if target == Some(ssrc) && keyframe => {
                self.current = Some(ssrc);
                Verdict::Switch
            }
            _ => Verdict::Drop,
        }
    }

    /// The layer a keyframe is needed of: the target, while it is not what is forwarded.
    pub fn waiting_for(&self, target: Option<u32>) -> Option<u32> {
        target.filter(|t| self.current != Some(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(now: Instant) -> Vec<Layer> {
        let low = Layer::new("h".into(), 10, now);
        let high = Layer::new("f".into(), 20, now);
        vec![low, high]
    }

    #[test]
    fn the_widest_layer_sent_is_the_default_and_a_named_one_is_kept_while_sent() {
        let now = Instant::now();
        let mut ls = layers(now);
        // No keyframe seen yet: the first.
        assert_eq!(target(&ls, None, None, None, now), Some(10));
        let t = now + STALE / 2;
        ls[0].record(Some(320), 100, t);
        assert_eq!(target(&ls, None, None, None, t), Some(10));
        ls[1].record(Some(640), 100, t);
        // Later packets without a keyframe keep the width known.
        ls[1].record(None, 100, t);
        assert_eq!(target(&ls, None, None, None, t), Some(20));
        assert_eq!(target(&ls, Some("h"), None, None, t), Some(10));
        assert_eq!(target(&ls, Some("nope"), None, None, t), Some(20));
        // The publisher stops sending the full layer: everyone falls back to what is sent.
        let stale = t + STALE;
        ls[0].record(None, 100, stale);
        assert_eq!(target(&ls, None, None, None, stale), Some(10));
        assert_eq!(target(&ls, Some("f"), None, None, stale), Some(10));
        // Nothing sent at all: no target.
        assert_eq!(target(&ls, None, None, None, stale + STALE), None);
    }

    #[test]
    fn the_estimate_picks_the_widest_layer_that_fits_with_headroom_to_move_up() {
        let now = Instant::now();
        let mut ls = layers(now);
        // A second of packets: h at 200 kbit/s (25 kB), f at 1 Mbit/s (125 kB).
        for (l, bytes, width) in [(0, 25_000, 320), (1, 125_000, 640)] {
            ls[l].record(Some(width), 0, now);
            ls[l].record(None, bytes, now);
            ls[l].record(None, 0, now + RATE_WINDOW);
        }
        let t = now + RATE_WINDOW;
        assert_eq!(ls[1].bitrate(), Some(1_000_000.0));
        // No estimate, or plenty: the widest.
        assert_eq!(target(&ls, None, None, None, t), Some(20));
        assert_eq!(target(&ls, None, Some(5e6), Some(10), t), Some(20));
        // On f, a share just above f's rate keeps it; just below moves down to h.
        assert_eq!(target(&ls, None, Some(1.05e6), Some(20), t), Some(20));
        assert_eq!(target(&ls, None, Some(0.95e6), Some(20), t), Some(10));
        // On h, the same share does not move up: f needs the headroom (1 Mbit/s <= 0.8 x share).
        assert_eq!(target(&ls, None, Some(1.05e6), Some(10), t), Some(10));
        assert_eq!(target(&ls, None, Some(1.3e6), Some(10), t), Some(20));
        // Nothing fits: the narrowest. A layer asked for is kept whatever the estimate.
        assert_eq!(target(&ls, None, Some(1e5), Some(20), t), Some(10));
        assert_eq!(target(&ls, Some("f"), Some(1e5), Some(10), t), Some(20));
    }

    #[test]
    fn one_layer_is_always_the_target() {
        let now = Instant::now();
        let ls = vec![Layer::new(String::new(), 7, now)];
        assert_eq!(
            target(&ls, Some("f"), Some(1.0), None, now + STALE * 10),
            Some(7)
        );
        let mut s = Selection::default();
        assert_eq!(s.packet(7, Some(7), false), Verdict::Forward);
        assert_eq!(s.waiting_for(Some(7)), None);
    }

    #[test]
    fn renegotiation_answers_name_no_track_in_simulcast_sections() {
        let sdp = "v=0\r\ns=-\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s a\r\na=ssrc:1 msid:s a\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:s v\r\na=ssrc-group:SIM 2 3\r\n\
            a=ssrc:2 msid:s v\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send h;f\r\n";
        let kept = keep_simulcast_receivers(sdp);
        // The audio section (no simulcast) is untouched; the video one loses its track lines
        // and keeps everything else.
        assert_eq!(
            kept,
            "v=0\r\ns=-\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:s a\r\na=ssrc:1 msid:s a\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
            a=rid:h send\r\na=rid:f send\r\na=simulcast:send h;f\r\n"
        );
        // Without simulcast nothing changes.
        let plain = "v=0\r\nm=video 9 X 96\r\na=msid:s v\r\n";
        assert_eq!(keep_simulcast_receivers(plain), plain);
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_target() {
        let mut s = Selection::default();
        // Nothing forwarded yet: only the target's packets are taken, keyframe or not.
        assert_eq!(s.packet(10, Some(20), false), Verdict::Drop);
        assert_eq!(s.packet(20, Some(20), false), Verdict::Forward);
        // The subscriber asks for the low layer: the high one goes on until the low one's
        // keyframe, which is the switch; then only the low one goes.
        assert_eq!(s.waiting_for(Some(10)), Some(10));
        assert_eq!(s.packet(10, Some(10), false), Verdict::Drop);
        assert_eq!(s.packet(20, Some(10), true), Verdict::Forward);
        assert_eq!(s.packet(10, Some(10), true), Verdict::Switch);
        assert_eq!(s.waiting_for(Some(10)), None);
        assert_eq!(s.packet(20, Some(10), true), Verdict::Drop);
        assert_eq!(s.packet(10, Some(10), false), Verdict::Forward);
    }
}
