//! A channel's history in memory: the last publications (bounded in count and age) with their
//! offsets, in one epoch. Reading after a position either bridges the gap exactly or says it
//! cannot ([`HistoryReply::recovered`]).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::backend::HistoryReply;
use crate::protocol::StreamPos;

/// Bounds on a channel's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Publications kept.
    pub size: usize,
    /// How long one is kept, ms.
    pub ttl_ms: u64,
}

/// One channel's log.
#[derive(Debug, Default)]
pub struct Log {
    /// Offset of the last publication (0: none yet).
    top: u64,
    /// Kept publications: (offset, data, time appended in ms).
    entries: VecDeque<(u64, Arc<str>, u64)>,
}

impl Log {
    /// Appends a publication at `now_ms`; returns its offset.
    pub fn append(&mut self, data: &str, now_ms: u64, bounds: Bounds) -> u64 {
        self.top += 1;
        self.entries.push_back((self.top, Arc::from(data), now_ms));
        self.trim(now_ms, bounds);
        self.top
    }

    fn trim(&mut self, now_ms: u64, bounds: Bounds) {
        while self.entries.len() > bounds.size {
            self.entries.pop_front();
        }
        while self
            .entries
            .front()
            .is_some_and(|e| now_ms.saturating_sub(e.2) > bounds.ttl_ms)
        {
            self.entries.pop_front();
        }
    }

    /// Publications after `since` (all kept ones when `None`), at most `limit` of them (the
    /// oldest first). `recovered` is whether the reader misses nothing: same epoch, and the
    /// first publication after its offset is still kept (or there is none).
    pub fn read(
        &mut self,
        epoch: &str,
        since: Option<&StreamPos>,
        limit: usize,
        now_ms: u64,
        bounds: Bounds,
    ) -> HistoryReply {
        self.trim(now_ms, bounds);
        let top = StreamPos {
            offset: self.top,
            epoch: epoch.to_owned(),
        };
        let (after, recovered) = match since {
            None => (0, true),
            Some(pos) if pos.epoch != epoch || pos.offset > self.top => (self.top, false),
            Some(pos) => {
                let first_kept = self.entries.front().map_or(self.top + 1, |e| e.0);
                (pos.offset, pos.offset + 1 >= first_kept)
            }
        };
        let publications = self
            .entries
            .iter()
            .filter(|e| e.0 > after)
            .take(limit)
            .map(|e| (e.0, e.1.to_string()))
            .collect();
        HistoryReply {
            top,
            publications,
            recovered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        size: 3,
        ttl_ms: 1_000,
    };

    fn pos(offset: u64, epoch: &str) -> StreamPos {
        StreamPos {
            offset,
            epoch: epoch.into(),
        }
    }

    fn offsets(r: &HistoryReply) -> Vec<u64> {
        r.publications.iter().map(|p| p.0).collect()
    }

    #[test]
    fn a_reader_within_the_kept_window_recovers_exactly() {
        let mut log = Log::default();
        for i in 1..=5 {
            assert_eq!(log.append(&i.to_string(), 0, B), i);
        }
        // Kept: 3, 4, 5.
        let r = log.read("e", Some(&pos(2, "e")), 100, 0, B);
        assert!(r.recovered);
        assert_eq!(offsets(&r), [3, 4, 5]);
        assert_eq!(r.top, pos(5, "e"));
        let r = log.read("e", Some(&pos(5, "e")), 100, 0, B);
        assert!(r.recovered && r.publications.is_empty());
    }

    #[test]
    fn a_gap_past_the_window_or_another_epoch_is_not_recovered() {
        let mut log = Log::default();
        for i in 1..=5 {
            log.append(&i.to_string(), 0, B);
        }
        let trimmed = log.read("e", Some(&pos(1, "e")), 100, 0, B);
        assert!(!trimmed.recovered, "offset 2 was trimmed");
        assert_eq!(offsets(&trimmed), [3, 4, 5], "what is kept is still given");
        let other = log.read("e", Some(&pos(4, "old")), 100, 0, B);
        assert!(!other.recovered && other.publications.is_empty());
        let ahead = log.read("e", Some(&pos(9, "e")), 100, 0, B);
        assert!(
            !ahead.recovered,
            "an offset from the future is another stream"
        );
    }

    #[test]
    fn age_bounds_the_history_too() {
        let mut log = Log::default();
        log.append("a", 0, B);
        log.append("b", 500, B);
        let r = log.read("e", None, 10, 1_200, B);
        assert_eq!(offsets(&r), [2]);
        assert!(log.read("e", None, 10, 1_600, B).publications.is_empty());
        assert_eq!(log.read("e", None, 1, 0, B).top.offset, 2, "the top stays");
    }

    #[test]
    fn limit_takes_the_oldest_first() {
        let mut log = Log::default();
        for i in 1..=3 {
            log.append(&i.to_string(), 0, B);
        }
        assert_eq!(offsets(&log.read("e", None, 2, 0, B)), [1, 2]);
    }
}
