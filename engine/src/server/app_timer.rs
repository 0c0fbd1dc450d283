//! Timers applications schedule on their own shard ([`Ctx::set_timer`](super::Ctx::set_timer)):
//! a min-heap of deadlines, fired by the shard at the end of a loop iteration. Cancelling
//! forgets the timer at once; its heap entry is dropped when its deadline passes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// A scheduled application timer, for [`Ctx::cancel_timer`](super::Ctx::cancel_timer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// A timer that came due: which application, and the token it gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// The application that scheduled it.
    pub app: u8,
    /// Its token.
    pub token: u64,
}

/// The shard's application timers.
#[derive(Debug, Default)]
pub struct AppTimers {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    live: HashMap<u64, Due>,
    next: u64,
}

impl AppTimers {
    /// Schedules `due` at `deadline` (ms on the shard clock).
    pub fn set(&mut self, deadline: u64, due: Due) -> TimerId {
        let id = self.next;
        self.next += 1;
        self.heap.push(Reverse((deadline, id)));
        self.live.insert(id, due);
        TimerId(id)
    }

    /// Forgets a timer; false if it already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let cancelled = self.live.remove(&id.0).is_some();
        if self.live.is_empty() {
            self.heap.clear();
        }
        cancelled
    }

    /// The next timer due at or before `now`, in deadline order (then scheduling order).
    pub fn pop_due(&mut self, now: u64) -> Option<Due> {
        while let Some(&Reverse((deadline, id))) = self.heap.peek() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if let Some(due) = self.live.remove(&id) {
                return Some(due);
            }
        }
        None
    }

    /// The earliest deadline in the heap. It may belong to a cancelled timer: the shard then
    /// wakes once for nothing, and [`AppTimers::pop_due`] drops the entry.
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((deadline, _))| *deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_in_deadline_order_and_skip_cancelled() {
        let mut t = AppTimers::default();
        let due = |token| Due { app: 0, token };
        t.set(30, due(3));
        let b = t.set(10, due(1));
        t.set(20, due(2));
        t.set(10, due(11));
        assert!(t.cancel(b));
        assert!(!t.cancel(b));
        assert_eq!(t.next_deadline(), Some(10));
        let c = t.set(1, due(0));
        assert!(t.cancel(c));
        assert_eq!(
            t.next_deadline(),
            Some(1),
            "a cancelled timer may wake the shard once"
        );
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(25), Some(due(11)));
        assert_eq!(t.pop_due(25), Some(due(2)));
        assert_eq!(t.pop_due(25), None);
        assert_eq!(t.next_deadline(), Some(30));
        assert_eq!(t.pop_due(30), Some(due(3)));
        assert_eq!(t.next_deadline(), None);
    }
}
