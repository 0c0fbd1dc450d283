//! Failover: a subscriber whose connection drops during the drive (or the drain) waits a
//! random time in `[0, min(max, base x 2^attempt)]` (exponential backoff with full jitter, as a
//! client should, so that a node's subscribers do not all come back in the same millisecond),
//! then connects to another of the subscribers' targets and subscribes again. It keeps its
//! trackers, so what it missed while away is counted against it, and a `v1` subscriber
//! resubscribes from its last position and recovers what it missed.
//!
//! Attempt `k` of subscriber `i`, which dropped from target `home` of `T`, goes to target
//! `(home + 1 + (i + k) mod (T - 1)) mod T`: never back to the node that dropped it, spread
//! over the others, and to the next one when an attempt fails.

use std::cmp::{Ordering, Reverse};

use super::{Loop, Stage};
use crate::worker::client::{App, Role};
use crate::worker::reason::Reason;
use crate::worker::sub::{Away, SubState};

/// A subscriber waiting to reconnect.
#[derive(Debug)]
pub(super) struct Waiting {
    due_us: u64,
    app: App,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due_us, self.app.index).cmp(&(other.due_us, other.app.index))
    }
}

/// A nonzero seed for the jitter.
pub(super) fn seed() -> u64 {
    let mut b = [0u8; 8];
    // Without the OS's randomness the jitter is merely the same in every run.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) | 1
}

/// The target index attempt `k` of subscriber `index` uses, after dropping from `home` of
/// `targets`.
pub(super) fn next_target(home: u32, index: u64, k: u32, targets: usize) -> u32 {
    if targets < 2 {
        return 0;
    }
    let others = (targets - 1) as u64;
    let pick = index.wrapping_add(u64::from(k)) % others;
    ((u64::from(home) + 1 + pick) % targets as u64) as u32
}

impl Loop {
    /// Whether a connection that ended for `reason` is followed by a reconnect.
    pub(super) fn may_reconnect(&self, app: &App, reason: &Reason) -> bool {
        self.reconnect.is_some()
            && app.role == Role::Subscriber
            && app.at_go
            && matches!(self.stage, Stage::Drive | Stage::Drain)
            && !reason.is_ours()
            && !matches!(reason, Reason::Cancelled)
    }

    /// What becomes of a connection's scenario state once its socket is gone: it is settled
    /// (counted, with why it ended), or, for a subscriber that may come back, it waits.
    pub(super) fn after(&mut self, mut app: App, reason: Reason, was_open: bool) {
        if !self.may_reconnect(&app, &reason) {
            self.ctx.counters.reason(&reason.label());
            self.ctx.on_gone(&mut app, was_open);
            return;
        }
        if was_open {
            self.ctx.open = self.ctx.open.saturating_sub(1);
        }
        let label = if app.returning() {
            self.ctx.counters.reconnect_failed += 1;
            format!("reconnect failed: {}", reason.label())
        } else {
            self.ctx.counters.drops += 1;
            let home = self.target_index(&app);
            let since_us = self.ctx.now;
            if let Some(sub) = app.sub.as_deref_mut() {
                sub.away = Some(Box::new(Away {
                    since_us,
                    attempts: 0,
                    home,
                }));
            }
            format!("dropped, reconnecting: {}", reason.label())
        };
        self.ctx.counters.reason(&label);
        self.wait_to_reconnect(app);
    }

    /// The index in the plan's targets of the server `app` is on.
    fn target_index(&self, app: &App) -> u32 {
        let (_, target) = self.addrs_of(app);
        let at = self.ctx.plan.targets.iter().position(|t| *t == target);
        at.map_or(0, |i| i as u32)
    }

    fn wait_to_reconnect(&mut self, mut app: App) {
        let Some(backoff) = self.reconnect else {
            return;
        };
        let targets = self.ctx.plan.targets.len();
        let jitter = self.random();
        let index = app.index;
        let Some(sub) = app.sub.as_deref_mut() else {
            return;
        };
        let Some(away) = sub.away.as_deref_mut() else {
            return;
        };
        let bound_us = backoff.bound_ms(away.attempts).saturating_mul(1_000);
        let delay_us = jitter % (bound_us + 1);
        sub.target = Some(next_target(away.home, index, away.attempts, targets));
        away.attempts += 1;
        sub.state = SubState::Off;
        sub.held.clear();
        self.away.push(Reverse(Waiting {
            due_us: self.ctx.now + delay_us,
            app,
        }));
    }

    /// Starts the reconnects that are due.
    pub(super) fn reconnect_due(&mut self) {
        let now = self.ctx.now;
        while self.away.peek().is_some_and(|Reverse(w)| w.due_us <= now) {
            if let Some(Reverse(w)) = self.away.pop() {
                self.open(w.app);
            }
        }
    }

    /// When the next reconnect is due (`u64::MAX`: none waits).
    pub(super) fn next_reconnect(&self) -> u64 {
        self.away.peek().map_or(u64::MAX, |Reverse(w)| w.due_us)
    }

    /// The run is closing: subscribers still waiting are settled as they are.
    pub(super) fn give_up_reconnecting(&mut self) {
        while let Some(Reverse(mut w)) = self.away.pop() {
            self.ctx
                .counters
                .reason("reconnect: still away when the run ended");
            self.ctx.on_gone(&mut w.app, false);
        }
    }

    /// xorshift64: jitter needs no more.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_avoid_the_home_node_and_spread_over_the_others() {
        // Two targets: always the other one.
        for k in 0..4 {
            assert_eq!(next_target(0, 7, k, 2), 1);
            assert_eq!(next_target(1, 7, k, 2), 0);
        }
        // Three targets, dropped from 1: subscribers split over 0 and 2, and a failed attempt
        // moves on to the other.
        let first: Vec<u32> = (0..4).map(|i| next_target(1, i, 0, 3)).collect();
        assert_eq!(first, [2, 0, 2, 0]);
        assert_eq!(next_target(1, 0, 1, 3), 0);
        assert_eq!(next_target(0, 5, 0, 1), 0, "one target: the same");
    }
}
