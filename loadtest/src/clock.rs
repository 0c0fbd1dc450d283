//! Time for the load generator: one monotonic clock read through [`Instant`], offered in two
//! units. Milliseconds go into the protocol core (its timers); microseconds stamp messages and
//! measure latency. The microsecond values are on the host's `CLOCK_MONOTONIC` scale, so worker
//! processes agree on them.

use std::time::Instant;

use crate::sys;

/// A monotonic clock shared by the threads of one process.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    origin_us: u64,
}

impl Clock {
    /// Anchors an [`Instant`] to the host's monotonic microsecond count.
    pub fn new() -> Self {
        let origin = Instant::now();
        let origin_us = sys::monotonic_us();
        Clock { origin, origin_us }
    }

    /// Now, in microseconds on the host's monotonic scale.
    pub fn now_us(&self) -> u64 {
        self.origin_us + self.origin.elapsed().as_micros() as u64
    }

    /// Milliseconds for the protocol core, from a microsecond reading.
    pub fn ms(us: u64) -> u64 {
        us / 1_000
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_raw_monotonic_clock() {
        let c = Clock::new();
        let a = c.now_us();
        let raw = sys::monotonic_us();
        // Both read CLOCK_MONOTONIC; they differ only by the time between the two calls.
        assert!(raw.abs_diff(a) < 50_000, "{a} vs {raw}");
        assert_eq!(Clock::ms(12_345_678), 12_345);
    }
}
