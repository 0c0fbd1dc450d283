//! Where the collector reads time: the wall clock and the CPU time of processes. A trait, so
//! tests can script a run (a stall, a process that exits) without sleeping or burning CPU.

use std::fmt;

use nix::time::ClockId;
use nix::unistd::Pid;

use crate::{sys, sysmon};

/// The clocks the collector reads.
pub trait Clocks: fmt::Debug + Send {
    /// `CLOCK_MONOTONIC`, in microseconds (the clock worker processes count seconds on).
    fn now_us(&self) -> u64;
    /// CPU time process `pid` has used since it started, all its threads together (ended ones
    /// included), in nanoseconds; `None` when it cannot be read (gone, or never existed).
    fn cpu_ns(&self, pid: u32) -> Option<u64>;
    /// The host's CPU time since boot, when it can be read.
    fn host_cpu(&self) -> Option<HostCpu>;
}

/// The host's CPU time since boot (`/proc/stat`), all CPUs together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCpu {
    /// Busy (us).
    pub busy_us: u64,
    /// Busy plus idle (us).
    pub total_us: u64,
    /// CPUs counted in it.
    pub cpus: u32,
}

impl HostCpu {
    /// The busy share between this reading and a `later` one, in percent of one CPU (at most
    /// 100 x CPUs: busy time is a part of the total).
    pub fn busy_pct_until(&self, later: &HostCpu) -> f64 {
        let busy = later.busy_us.saturating_sub(self.busy_us);
        let total = later.total_us.saturating_sub(self.total_us);
        if total == 0 {
            0.0
        } else {
            busy.min(total) as f64 / total as f64 * 100.0 * f64::from(later.cpus)
        }
    }
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

    fn host_cpu(&self) -> Option<HostCpu> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let (busy, total, cpus) = sysmon::parse_proc_stat(&text)?;
        let us_per_tick = 1_000_000 / sys::clock_ticks_per_sec().max(1);
        Some(HostCpu {
            busy_us: busy * us_per_tick,
            total_us: total * us_per_tick,
            cpus,
        })
    }
}

#[cfg(test)]
pub mod fake {
    //! Scripted clocks for tests.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::{Clocks, HostCpu};

    #[derive(Debug, Default)]
    struct State {
        now_us: u64,
        cpu_ns: BTreeMap<u32, u64>,
        busy_ns: u64,
        cpus: u32,
    }

    /// Clocks a test moves by hand; clones share them.
    #[derive(Clone, Debug, Default)]
    pub struct FakeClocks(Arc<Mutex<State>>);

    impl FakeClocks {
        /// A host of `cpus` CPUs, idle, at time 0.
        pub fn with_cpus(cpus: u32) -> Self {
            let c = FakeClocks::default();
            c.with(|s| s.cpus = cpus);
            c
        }

        fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
            f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
        }

        /// Moves the wall clock forward by `us` while processes run: each `(pid, cores)` uses
        /// `cores` CPUs all along (so their CPU time grows by `cores * us`).
        pub fn run(&self, us: u64, busy: &[(u32, f64)]) {
            self.with(|s| {
                s.now_us += us;
                for &(pid, cores) in busy {
                    let ns = (us as f64 * 1_000.0 * cores) as u64;
                    *s.cpu_ns.entry(pid).or_default() += ns;
                    s.busy_ns += ns;
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

        fn host_cpu(&self) -> Option<HostCpu> {
            self.with(|s| {
                (s.cpus > 0).then_some(HostCpu {
                    busy_us: s.busy_ns / 1_000,
                    total_us: s.now_us * u64::from(s.cpus),
                    cpus: s.cpus,
                })
            })
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
        let host = c.host_cpu().unwrap();
        assert!(host.cpus >= 1 && host.total_us > host.busy_us && host.busy_us > 0);
    }
}
