//! Where the collector reads time: the wall clock and the CPU time of processes. A trait, so
//! tests can script a run (a stall, a process that exits) without sleeping or burning CPU.

use std::fmt;

use nix::time::ClockId;
use nix::unistd::Pid;

use crate::sys;

/// The clocks the collector reads.
pub trait Clocks: fmt::Debug + Send {
    /// `CLOCK_MONOTONIC`, in microseconds (the clock worker processes count seconds on).
    fn now_us(&self) -> u64;
    /// CPU time process `pid` has used since it started, all its threads together (ended ones
    /// included), in nanoseconds; `None` when it cannot be read (gone, or never existed).
    fn cpu_ns(&self, pid: u32) -> Option<u64>;
}

/// The host's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClocks;

impl Clocks for SystemClocks {
    fn now_us(&self) -> u64 {
        sys::monotonic_us()
    }

    fn cpu_ns(&self, pid: u32) -> Option<u64> {
        // clock_getcpuclockid(3): the kernel's process CPU clock, read in nanoseconds from the
        // scheduler's runtime (not /proc's utime + stime, which are rounded to clock ticks).
        // Any process of the same pid namespace may read it; it stays readable until the
        // process is reaped.
        let pid = Pid::from_raw(i32::try_from(pid).ok()?);
        let ts = ClockId::pid_cpu_clock_id(pid).and_then(ClockId::now).ok()?;
        let secs = u64::try_from(ts.tv_sec()).ok()?;
        let nanos = u64::try_from(ts.tv_nsec()).ok()?;
        Some(secs * 1_000_000_000 + nanos)
    }
}

#[cfg(test)]
pub mod fake {
    //! Scripted clocks for tests.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::Clocks;

    #[derive(Debug, Default)]
    struct State {
        now_us: u64,
        cpu_ns: BTreeMap<u32, u64>,
    }

    /// Clocks a test moves by hand; clones share them.
    #[derive(Clone, Debug, Default)]
    pub struct FakeClocks(Arc<Mutex<State>>);

    impl FakeClocks {
        fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
            f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
        }

        /// Moves the wall clock forward by `us` while processes run: each `(pid, cores)` uses
        /// `cores` CPUs all along (so their CPU time grows by `cores * us`).
        pub fn run(&self, us: u64, busy: &[(u32, f64)]) {
            self.with(|s| {
                s.now_us += us;
                for &(pid, cores) in busy {
                    *s.cpu_ns.entry(pid).or_default() += (us as f64 * 1_000.0 * cores) as u64;
                }
            });
        }

        /// A process exits and is reaped: its clock can no longer be read.
        pub fn reap(&self, pid: u32) {
            self.with(|s| s.cpu_ns.remove(&pid));
        }

        /// A process appears, having used `cpu_ns` already (a pid read for the first time).
        pub fn spawn(&self, pid: u32, cpu_ns: u64) {
            self.with(|s| s.cpu_ns.insert(pid, cpu_ns));
        }
    }

    impl Clocks for FakeClocks {
        fn now_us(&self) -> u64 {
            self.with(|s| s.now_us)
        }

        fn cpu_ns(&self, pid: u32) -> Option<u64> {
            self.with(|s| s.cpu_ns.get(&pid).copied())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_refuses_a_missing_one() {
        let c = SystemClocks;
        let me = std::process::id();
        let before = c.cpu_ns(me).unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(c.cpu_ns(me).unwrap() > before);
        assert_eq!(c.cpu_ns(u32::MAX), None);
        assert!(c.now_us() > 0);
    }
}
