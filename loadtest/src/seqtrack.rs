//! Sequence tracking for one (subscriber, publisher) pair: which numbers arrived, in what
//! order, with a 64-number window to tell a late arrival from a duplicate. A number is
//! confirmed missing once it leaves the window unreceived (or at the end); consecutive missing
//! numbers are reported as one run.

/// What one arrival was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next number, or a higher one (numbers skipped over may still arrive late).
    InOrder,
    /// A number below the highest seen that had not arrived yet (reordered).
    Late,
    /// A number already received.
    Duplicate,
    /// More than 63 below the highest seen: it was already counted missing, and duplicate or
    /// late cannot be told apart.
    Stale,
}

const NO_END: u64 = u64::MAX;
const WINDOW: u64 = 64;

/// The state for one pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Track {
    /// One more than the highest number seen (0 before any).
    next: u64,
    /// Bit i set: number `next - 1 - i` arrived.
    window: u64,
    /// Distinct numbers received.
    unique: u64,
    /// How many the publisher says it sent ([`NO_END`] until its end marker arrives).
    end: u64,
    /// A run of missing numbers not reported yet: first and length.
    run: (u64, u64),
    /// Duplicates received.
    pub duplicates: u64,
    /// Late arrivals received.
    pub reordered: u64,
    /// Stale arrivals received.
    pub stale: u64,
}

impl Default for Track {
    fn default() -> Self {
        Track {
            next: 0,
            window: 0,
            unique: 0,
            end: NO_END,
            run: (0, 0),
            duplicates: 0,
            reordered: 0,
            stale: 0,
        }
    }
}

impl Track {
    /// Records the arrival of `seq`; runs of numbers confirmed missing go to `gaps` as
    /// `(first, len)`.
    pub fn arrive(&mut self, seq: u64, gaps: &mut dyn FnMut(u64, u64)) -> Arrival {
        if seq >= self.next {
            self.advance(seq + 1, gaps);
            self.window |= 1;
            self.unique += 1;
            return Arrival::InOrder;
        }
        let behind = self.next - 1 - seq;
        if behind >= WINDOW {
            self.stale += 1;
            return Arrival::Stale;
        }
        let bit = 1u64 << behind;
        if self.window & bit != 0 {
            self.duplicates += 1;
            Arrival::Duplicate
        } else {
            self.window |= bit;
            self.unique += 1;
            self.reordered += 1;
            Arrival::Late
        }
    }

    /// Moves the window so that `new_next - 1` is its newest number, confirming as missing
    /// every number that leaves it unreceived.
    fn advance(&mut self, new_next: u64, gaps: &mut dyn FnMut(u64, u64)) {
        let old_next = self.next;
        let shift = new_next - old_next;
        // Old window bits that fall out, oldest first: positions 63 down to 64 - shift.
        let low = WINDOW.saturating_sub(shift);
        for i in (low..WINDOW).rev() {
            if i < old_next && self.window & (1u64 << i) == 0 {
                self.hole(old_next - 1 - i, 1, gaps);
            }
        }
        // Numbers skipped over that never even enter the new window.
        let skipped_end = new_next.saturating_sub(WINDOW); // first number inside the new window
        if skipped_end > old_next {
            self.hole(old_next, skipped_end - old_next, gaps);
        }
        self.window = if shift >= WINDOW {
            0
        } else {
            self.window << shift
        };
        self.next = new_next;
    }

    fn hole(&mut self, first: u64, len: u64, gaps: &mut dyn FnMut(u64, u64)) {
        let (start, n) = self.run;
        if n > 0 && start + n == first {
            self.run.1 += len;
        } else {
            if n > 0 {
                gaps(start, n);
            }
            self.run = (first, len);
        }
    }

    /// The publisher's end marker: it sent `count` messages.
    pub fn end(&mut self, count: u64) {
        self.end = count;
    }

    /// Whether the end marker arrived.
    pub fn complete(&self) -> bool {
        self.end != NO_END
    }

    /// Distinct numbers received.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// Reports every run still unreported: holes left in the window and, once the end marker
    /// says how many were sent, the tail never received. Call once, at the end.
    pub fn finish(&mut self, gaps: &mut dyn FnMut(u64, u64)) {
        let top = if self.complete() {
            self.end.max(self.next)
        } else {
            self.next
        };
        // Push every number up to `top` out of a copy's window; this track's counts stay.
        let mut probe = *self;
        probe.advance(top + WINDOW, gaps);
        if probe.run.1 > 0 {
            gaps(probe.run.0, probe.run.1);
        }
        self.run = (0, 0);
    }

    /// Messages missed: of the publisher's count when its end marker arrived, else below the
    /// highest number seen.
    pub fn missing(&self) -> u64 {
        let top = if self.complete() {
            self.end.max(self.next)
        } else {
            self.next
        };
        top.saturating_sub(self.unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seqs`, then `end` (if any), then finishes; returns the track, the arrivals and
    /// every gap reported.
    fn run(seqs: &[u64], end: Option<u64>) -> (Track, Vec<Arrival>, Vec<(u64, u64)>) {
        let mut t = Track::default();
        let mut gaps = Vec::new();
        let seen = seqs
            .iter()
            .map(|&s| t.arrive(s, &mut |f, l| gaps.push((f, l))))
            .collect();
        if let Some(n) = end {
            t.end(n);
        }
        let missing = t.missing();
        t.finish(&mut |f, l| gaps.push((f, l)));
        assert_eq!(
            gaps.iter().map(|g| g.1).sum::<u64>(),
            missing,
            "gaps add up to missing"
        );
        (t, seen, gaps)
    }

    #[test]
    fn in_order_stream_is_clean() {
        let (t, seen, gaps) = run(&(0..1000).collect::<Vec<_>>(), Some(1000));
        assert!(seen.iter().all(|a| *a == Arrival::InOrder));
        assert_eq!((t.missing(), t.duplicates, t.reordered), (0, 0, 0));
        assert!(gaps.is_empty());
    }

    #[test]
    fn a_skipped_number_is_one_gap() {
        let seqs: Vec<u64> = (0..200).filter(|&s| s != 5).collect();
        let (t, _, gaps) = run(&seqs, Some(200));
        assert_eq!(gaps, [(5, 1)]);
        assert_eq!((t.missing(), t.unique()), (1, 199));
        // Short stream: the hole is still in the window at the end.
        let (_, _, gaps) = run(&[0, 1, 2, 4, 5], Some(6));
        assert_eq!(gaps, [(3, 1)]);
    }

    #[test]
    fn long_runs_are_reported_once() {
        let seqs: Vec<u64> = (0..10).chain(110..300).collect();
        let (t, _, gaps) = run(&seqs, Some(300));
        assert_eq!(gaps, [(10, 100)]);
        assert_eq!(t.missing(), 100);
        let (_, _, gaps) = run(&(0..10).collect::<Vec<_>>(), Some(500));
        assert_eq!(gaps, [(10, 490)], "tail loss");
    }

    #[test]
    fn late_arrival_fills_the_hole_and_counts_as_reordered() {
        let (t, seen, gaps) = run(&[0, 2, 1, 3], Some(4));
        assert_eq!(seen[2], Arrival::Late);
        assert_eq!((t.missing(), t.reordered, t.duplicates), (0, 1, 0));
        assert!(gaps.is_empty());
    }

    #[test]
    fn duplicates_are_told_from_late_arrivals() {
        let (t, seen, gaps) = run(&[0, 1, 1, 2, 0, 5, 3], None);
        assert_eq!(seen[2], Arrival::Duplicate);
        assert_eq!(seen[4], Arrival::Duplicate);
        assert_eq!(seen[6], Arrival::Late);
        assert_eq!((t.duplicates, t.reordered, t.missing()), (2, 1, 1));
        assert_eq!(gaps, [(4, 1)]);
    }

    #[test]
    fn window_edges() {
        let mut t = Track::default();
        let mut gaps = Vec::new();
        let mut g = |f, l| gaps.push((f, l));
        t.arrive(0, &mut g);
        t.arrive(64, &mut g);
        // 63 behind is still inside the window; 64 behind is stale.
        assert_eq!(t.arrive(1, &mut g), Arrival::Late);
        assert_eq!(t.arrive(0, &mut g), Arrival::Stale);
        t.finish(&mut g);
        assert_eq!(gaps, [(2, 62)]);
    }

    #[test]
    fn without_an_end_marker_tail_loss_is_unknown() {
        let (t, _, gaps) = run(&[0, 1, 2], None);
        assert!(!t.complete());
        assert_eq!((t.missing(), gaps.len()), (0, 0));
        let (t, _, gaps) = run(&[], Some(4));
        assert_eq!((t.missing(), gaps), (4, vec![(0, 4)]));
    }
}
