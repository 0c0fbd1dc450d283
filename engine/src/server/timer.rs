//! A hashed timer wheel per shard: O(1) to schedule, and each tick touches only the entries
//! due in that bucket, never every connection.
//!
//! Entries are lazy: a connection keeps at most one live entry, recorded as the tick it is
//! filed under. Activity does not reschedule anything; when an entry fires, the shard asks the
//! connection for its real next deadline (which may have moved later) and files it again. An
//! entry whose tick no longer matches the connection's is stale and dropped.

/// Ticks per wheel revolution; entries further out wait for later revolutions.
const BUCKETS: usize = 512;

/// An entry: the slot and the absolute tick it was filed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Slab slot of the connection.
    pub slot: u32,
    /// Absolute tick the entry is due at.
    pub tick: u32,
}

/// The wheel. Time is milliseconds on the shard's clock, rounded up to `tick_ms`.
#[derive(Debug)]
pub struct TimerWheel {
    buckets: Vec<Vec<Entry>>,
    tick_ms: u64,
    /// The next tick to process.
    cursor: u32,
    len: usize,
}

impl TimerWheel {
    /// A wheel with the given resolution.
    pub fn new(tick_ms: u64) -> Self {
        TimerWheel {
            buckets: vec![Vec::new(); BUCKETS],
            tick_ms: tick_ms.max(1),
            cursor: 0,
            len: 0,
        }
    }

    /// The tick a deadline falls in (rounded up, never before the cursor).
    pub fn tick_of(&self, deadline_ms: u64) -> u32 {
        let tick = deadline_ms.div_ceil(self.tick_ms).min(u64::from(u32::MAX)) as u32;
        tick.max(self.cursor)
    }

    /// Files `slot` for `deadline_ms`; returns the tick to remember on the connection.
    pub fn schedule(&mut self, slot: u32, deadline_ms: u64) -> u32 {
        let tick = self.tick_of(deadline_ms);
        self.buckets[tick as usize % BUCKETS].push(Entry { slot, tick });
        self.len += 1;
        tick
    }

    /// Whether nothing is filed.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Milliseconds until the next tick boundary after `now_ms` (for the poll timeout), or `None`
    /// when nothing is filed.
    pub fn next_wake(&self, now_ms: u64) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let due = u64::from(self.cursor) * self.tick_ms;
        Some(due.saturating_sub(now_ms))
    }

    /// Moves every entry due at or before `now_ms` into `expired`. Entries filed for a later
    /// revolution stay where they are.
    pub fn advance(&mut self, now_ms: u64, expired: &mut Vec<Entry>) {
        let now_tick = (now_ms / self.tick_ms).min(u64::from(u32::MAX)) as u32;
        // Never spin more than one revolution: past that every bucket has been visited.
        let mut visited = 0;
        while self.cursor <= now_tick && visited < BUCKETS {
            let bucket = &mut self.buckets[self.cursor as usize % BUCKETS];
            let before = bucket.len();
            let limit = now_tick;
            bucket.retain(|e| {
                if e.tick <= limit {
                    expired.push(*e);
                    false
                } else {
                    true
                }
            });
            self.len -= before - bucket.len();
            // Connections accepted in a burst share a deadline, so a bucket can swell to a whole
            // burst for one tick; keeping that capacity in all 512 buckets would cost ~40 bytes
            // per connection. An emptied bucket gives its memory back.
            if bucket.is_empty() && bucket.capacity() > 64 {
                *bucket = Vec::new();
            }
            self.cursor += 1;
            visited += 1;
        }
        if self.cursor <= now_tick {
            self.cursor = now_tick + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_only_when_due() {
        let mut w = TimerWheel::new(100);
        let t1 = w.schedule(1, 250);
        let t2 = w.schedule(2, 1_000);
        let t3 = w.schedule(3, 100 * 600); // beyond one revolution
        assert_eq!((t1, t2, t3), (3, 10, 600));
        let mut out = Vec::new();
        w.advance(299, &mut out);
        assert!(out.is_empty());
        w.advance(300, &mut out);
        assert_eq!(out, vec![Entry { slot: 1, tick: 3 }]);
        out.clear();
        w.advance(10_000, &mut out);
        assert_eq!(
            out,
            vec![Entry { slot: 2, tick: 10 }],
            "the far entry waits for its revolution"
        );
        out.clear();
        w.advance(60_000, &mut out);
        assert_eq!(out, vec![Entry { slot: 3, tick: 600 }]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_deadline_in_the_past_fires_on_the_next_advance() {
        let mut w = TimerWheel::new(10);
        let mut out = Vec::new();
        w.advance(1_000, &mut out);
        w.schedule(7, 5);
        w.advance(1_000, &mut out);
        assert!(out.is_empty(), "cursor moved past 1000");
        w.advance(1_010, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn emptied_buckets_release_a_burst() {
        let mut w = TimerWheel::new(100);
        for slot in 0..10_000 {
            w.schedule(slot, 500);
        }
        let mut out = Vec::new();
        w.advance(500, &mut out);
        assert_eq!(out.len(), 10_000);
        let held: usize = w.buckets.iter().map(Vec::capacity).sum();
        assert!(
            held <= 64 * BUCKETS,
            "{held} entries of capacity kept after the burst fired"
        );
    }

    #[test]
    fn next_wake_points_at_the_cursor() {
        let mut w = TimerWheel::new(100);
        assert_eq!(w.next_wake(0), None);
        w.schedule(1, 450);
        assert_eq!(w.next_wake(0), Some(0));
        let mut out = Vec::new();
        w.advance(120, &mut out);
        assert_eq!(w.next_wake(120), Some(80));
    }
}
