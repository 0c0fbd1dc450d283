//! Sequence number and timestamp rewriting for one forwarded stream. A subscriber's outgoing
//! SSRC outlives the publisher it carries: when a publisher leaves, its media section at the
//! subscriber goes inactive and is given to the next publisher of that kind, under the same
//! SSRC. The receiver must then see one continuous stream, so each source's numbers are
//! shifted to continue where the previous source stopped (one past its last sequence number,
//! one frame's worth of timestamp later), as a simulcast layer switch also needs.

/// The offsets of the current source onto the outgoing stream.
#[derive(Debug, Default, Clone)]
pub struct Rewrite {
    /// Added to the source's sequence numbers, once the source's first packet is seen.
    seq_offset: Option<u16>,
    /// Added to the source's timestamps.
    ts_offset: u32,
    /// The last outgoing sequence number and timestamp, if any packet went out.
    last: Option<(u16, u32)>,
    /// The current source's first sequence number, when a source went before it (a packet
    /// of the current source from before that would land on the previous one's numbers).
    start: Option<u16>,
}

/// The timestamp step between the previous source's last packet and the next source's first:
/// 20 ms of 90 kHz video or of 48 kHz audio would do; one value keeps it simple and monotonic.
pub const TS_GAP: u32 = 3000;

/// How far (in sequence numbers) past a source's first packet a packet from before it is
/// still looked for; beyond, every sequence number is the source's own (the space wraps).
pub const LATE_WINDOW: u16 = 1024;

impl Rewrite {
    /// The next packet comes from a new source (the next publisher on this SSRC).
    pub fn new_source(&mut self) {
        self.seq_offset = None;
    }

    /// The outgoing (sequence number, timestamp) of a source packet; `None` for a late
    /// packet from before the source's first when another source went before it (its numbers
    /// belong to that source).
    pub fn apply(&mut self, seq: u16, ts: u32) -> Option<(u16, u32)> {
        if let (Some(_), Some(start)) = (self.seq_offset, self.start) {
            let ahead = seq.wrapping_sub(start);
            if ahead >= 0x8000 {
                return None;
            }
            // Far enough in that no late packet from before it can still come.
            if ahead >= LATE_WINDOW {
                self.start = None;
            }
        }
        let seq_offset = match self.seq_offset {
            Some(o) => o,
            None => {
                self.start = self.last.map(|_| seq);
                let (seq_offset, ts_offset) = match self.last {
                    Some((last_seq, last_ts)) => (
                        last_seq.wrapping_add(1).wrapping_sub(seq),
                        last_ts.wrapping_add(TS_GAP).wrapping_sub(ts),
                    ),
                    None => (0, 0),
                };
                self.seq_offset = Some(seq_offset);
                self.ts_offset = ts_offset;
                seq_offset
            }
        };
        let out = (
            seq.wrapping_add(seq_offset),
            ts.wrapping_add(self.ts_offset),
        );
        // The latest in sequence order (a late packet does not move it back).
        let newer = self
            .last
            .is_none_or(|(s, _)| out.0.wrapping_sub(s) < 0x8000 && out.0 != s);
        if newer {
            self.last = Some(out);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_source_goes_out_unchanged() {
        let mut r = Rewrite::default();
        assert_eq!(r.apply(100, 5000), Some((100, 5000)));
        assert_eq!(r.apply(101, 8000), Some((101, 8000)));
        // A late packet of the first source still goes.
        assert_eq!(r.apply(99, 2000), Some((99, 2000)));
    }

    #[test]
    fn the_next_source_continues_the_stream() {
        let mut r = Rewrite::default();
        r.apply(65_534, 10);
        r.apply(65_535, 3010);
        r.new_source();
        // The new source starts anywhere: it continues one past the last, a gap later.
        assert_eq!(r.apply(7, 999_999), Some((0, 3010 + TS_GAP)));
        assert_eq!(r.apply(9, 999_999 + 3000), Some((2, 3010 + TS_GAP + 3000)));
        // A late packet of the source keeps its place and does not move the end back.
        assert_eq!(r.apply(8, 999_999 + 3000), Some((1, 3010 + TS_GAP + 3000)));
        // One from before the source's first would land on the previous source's numbers.
        assert_eq!(r.apply(6, 999_999 - 3000), None);
        r.new_source();
        assert_eq!(r.apply(500, 0), Some((3, 3010 + TS_GAP + 3000 + TS_GAP)));
        // Long after the source's start, the whole sequence space is its own again.
        for seq in 501..=500 + LATE_WINDOW {
            assert!(r.apply(seq, 0).is_some());
        }
        assert!(r.apply(500 + 0x8000 + 10, 0).is_some());
    }
}
