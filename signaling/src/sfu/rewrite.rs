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
}

/// The timestamp step between the previous source's last packet and the next source's first:
/// 20 ms of 90 kHz video or of 48 kHz audio would do; one value keeps it simple and monotonic.
pub const TS_GAP: u32 = 3000;

impl Rewrite {
    /// The next packet comes from a new source (the next publisher on this SSRC).
    pub fn new_source(&mut self) {
        self.seq_offset = None;
    }

    /// The outgoing (sequence number, timestamp) of a source packet.
    pub fn apply(&mut self, seq: u16, ts: u32) -> (u16, u32) {
        let seq_offset = match self.seq_offset {
            Some(o) => o,
            None => {
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
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_source_goes_out_unchanged() {
        let mut r = Rewrite::default();
        assert_eq!(r.apply(100, 5000), (100, 5000));
        assert_eq!(r.apply(101, 8000), (101, 8000));
    }

    #[test]
    fn the_next_source_continues_the_stream() {
        let mut r = Rewrite::default();
        r.apply(65_534, 10);
        r.apply(65_535, 3010);
        r.new_source();
        // The new source starts anywhere: it continues one past the last, a gap later.
        assert_eq!(r.apply(7, 999_999), (0, 3010 + TS_GAP));
        assert_eq!(r.apply(8, 999_999 + 3000), (1, 3010 + TS_GAP + 3000));
        // A late packet of the source keeps its place and does not move the end back.
        assert_eq!(r.apply(6, 999_999 - 3000), (65_535, 3010 + TS_GAP - 3000));
        r.new_source();
        assert_eq!(r.apply(500, 0), (2, 3010 + TS_GAP + 3000 + TS_GAP));
    }
}
