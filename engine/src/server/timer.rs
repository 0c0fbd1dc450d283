//! A hashed timer wheel per shard: O(1) to schedule, and each tick touches only the entries
//! due in that bucket, never every connection.
//!
//! Entries are lazy: a connection keeps at most one live entry, recorded as the tick it is
//! filed under. Activity does not reschedule anything; when an entry fires, the shard asks the
//! connection for its real next deadline (which may have moved later) and files it again. An
//! entry whose tick no longer matches the connection's is stale and dropped.
//!
//! Ticks are `u32` and wrap (after 49.7 days at a 1 ms tick): they are compared as sequence
//! numbers ([`earlier`]), which holds while every deadline is less than 2^31 ticks ahead of the
//! wheel; [`ServerConfig::validate`](super::ServerConfig::validate) keeps time settings within
//! [`MAX_TICKS_AHEAD`].

/// Ticks per wheel revolution; entries further out wait for later revolutions.
const BUCKETS: usize = 512;

/// The furthest a deadline may lie ahead of now, in ticks (a quarter of the wrapping range).
pub const MAX_TICKS_AHEAD: u64 = 1 << 30;

/// The tick that never names a filed entry (a connection without a timer).
pub const NO_TICK: u32 = u32::MAX;

/// Whether tick `a` comes before tick `b`, across the wrap.
pub fn earlier(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// An entry: the slot and the (wrapping) tick it was filed for.
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

    /// The tick a deadline falls in (rounded up, never before the cursor, never [`NO_TICK`]).
    pub fn tick_of(&self, deadline_ms: u64) -> u32 {
        // Truncation is the wrap: ticks are compared as sequence numbers.
        let tick = deadline_ms.div_ceil(self.tick_ms) as u32;
        let tick = if earlier(tick, self.cursor) {
            self.cursor
        } else {
            tick
        };
        if tick == NO_TICK { 0 } else { tick }
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
        let now_tick = now_ms / self.tick_ms;
        let ahead = i64::from(self.cursor.wrapping_sub(now_tick as u32) as i32);
        let due = u64::try_from(now_tick as i64 + ahead).unwrap_or(0) * self.tick_ms;
        Some(due.saturating_sub(now_ms))
    }

    /// Moves every entry due at or before `now_ms` into `expired`. Entries filed for a later
    /// revolution stay where they are.
    pub fn advance(&mut self, now_ms: u64, expired: &mut Vec<Entry>) {
        let now_tick = (now_ms / self.tick_ms) as u32;
        if self.len == 0 {
            // Nothing to fire: catch up at once, however long the shard slept.
            self.cursor = now_tick.wrapping_add(1);
            return;
        }
        // Never spin more than one revolution: past that every bucket has been visited.
        let mut visited = 0;
        while !earlier(now_tick, self.cursor) && visited < BUCKETS {
            let bucket = &mut self.buckets[self.cursor as usize % BUCKETS];
            let before = bucket.len();
            let limit = now_tick;
            bucket.retain(|e| {
                if !earlier(limit, e.tick) {
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
            self.cursor = self.cursor.wrapping_add(1);
            visited += 1;
        }
        if !earlier(now_tick, self.cursor) {
            self.cursor = now_tick.wrapping_add(1);
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

    #[test]
    fn ticks_wrap_without_spinning_or_losing_entries() {
        // A 1 ms tick wraps u32 after 49.7 days of uptime.
        let mut w = TimerWheel::new(1);
        let mut out = Vec::new();
        let start = (1u64 << 32) - 5;
        w.advance(start, &mut out);
        let t1 = w.schedule(1, start + 3);
        let t2 = w.schedule(2, start + 10); // past the wrap
        assert!(earlier(t1, t2) && t2 < t1, "t2 wrapped: {t1} {t2}");
        assert_eq!(w.next_wake(start), Some(1));
        w.advance(start + 3, &mut out);
        assert_eq!(out, vec![Entry { slot: 1, tick: t1 }]);
        out.clear();
        assert_eq!(w.next_wake(start + 3), Some(1));
        w.advance(start + 9, &mut out);
        assert!(out.is_empty(), "not yet due across the wrap");
        w.advance(start + 10, &mut out);
        assert_eq!(out, vec![Entry { slot: 2, tick: t2 }]);
        assert!(w.is_empty());
        // A deadline whose tick would be the no-timer value is filed one tick later.
        let mut w = TimerWheel::new(1);
        w.advance(u64::from(u32::MAX) - 1, &mut out);
        assert_ne!(w.schedule(3, u64::from(u32::MAX)), NO_TICK);
    }
}
