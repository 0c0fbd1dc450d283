//! CPU use over the run's seconds: the server processes, the load generator's own processes and
//! the whole host, each measured over a window of wall-clock time.
//!
//! A window is closed at each second boundary of the run (the collector polls often, whatever
//! the workers are doing), or when a second is reported before its window was closed. A second
//! gets the use measured over the window that covers it: seconds that workers report late, all
//! at once (as when a million connections close at the end of a hold and the event loops are
//! busy), still get the CPU used while they ran, not the CPU of the whole delay.
//!
//! # Why no figure can exceed (CPUs x 100%)
//!
//! Every figure is CPU time divided by the wall time it was used in, both measured, never a
//! nominal second:
//! - A process's CPU time comes from its kernel CPU clock in nanoseconds ([`Clocks::cpu_ns`]),
//!   read at the end of the previous window and at the end of this one. Only a process read at
//!   both ends adds to a window: one that vanished adds nothing, and one read for the first time
//!   (a pid that was unreadable, or reused) only sets its starting point, so CPU time used before
//!   the window never lands in it. The only exception is a process this run started after the
//!   previous reading ([`CpuMonitor::started`]), whose whole CPU time lies inside the window.
//! - The wall time runs from just before the previous reading to just after this one, so it
//!   contains both reads of every process; a pid is counted once however often it is listed.
//! - The kernel adds a running thread's time to its process clock at scheduler ticks (at most
//!   10 ms apart for any HZ >= 100), so a reading can lag by up to one tick per CPU; the window
//!   is lengthened by [`ACCOUNTING_LAG_US`] to cover that. (A CPU in nohz_full mode can lag
//!   longer; this load generator's hosts do not isolate CPUs.)
//!
//! Distinct processes cannot together run on more CPUs than the host has, so the CPU time a
//! group gains between two readings is at most CPUs x (wall time + lag), and the percentage at
//! most CPUs x 100. The host figure is the busy share of `/proc/stat`'s time of all CPUs, times
//! the number of CPUs listed there, which is bounded the same way. Nothing is clamped.

use std::collections::VecDeque;

use crate::clocks::{Clocks, HostCpu};

/// How long a running thread's CPU time may go unaccounted in its process clock: one scheduler
/// tick at the slowest HZ (100).
pub const ACCOUNTING_LAG_US: u64 = 10_000;

/// CPU use over one window, in percent of one CPU (a busy 2-CPU host: 200).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// The server processes together.
    pub server_pct: f64,
    /// The load generator's processes together.
    pub loadgen_pct: f64,
    /// The busiest worker process, percent of its event-loop threads' capacity.
    pub busiest_pct: f64,
    /// The whole host.
    pub host_pct: f64,
}

/// A process whose CPU time is followed.
#[derive(Clone, Copy, Debug)]
struct Proc {
    pid: u32,
    /// Its event-loop threads (0: it runs none, as the parent of worker processes).
    threads: u32,
    /// Its CPU time at the previous reading, when it was read then.
    last_ns: Option<u64>,
}

/// Processes whose CPU time is added up.
#[derive(Clone, Debug, Default)]
struct Group {
    procs: Vec<Proc>,
    total_ns: u64,
}

impl Group {
    fn add(&mut self, pid: u32, threads: u32, last_ns: Option<u64>) {
        // Listed twice, a process's time would count twice.
        if !self.procs.iter().any(|p| p.pid == pid) {
            self.procs.push(Proc {
                pid,
                threads,
                last_ns,
            });
        }
    }

    /// Reads every process: the CPU time the group used since the previous reading, and the
    /// most any process used per event-loop thread.
    fn read(&mut self, clocks: &dyn Clocks) -> (u64, u64) {
        let (mut sum, mut busiest) = (0u64, 0u64);
        for p in &mut self.procs {
            let now = clocks.cpu_ns(p.pid);
            if let (Some(now), Some(last)) = (now, p.last_ns) {
                let used = now.saturating_sub(last);
                sum += used;
                if p.threads > 0 {
                    busiest = busiest.max(used / u64::from(p.threads));
                }
            }
            p.last_ns = now;
        }
        self.total_ns += sum;
        (sum, busiest)
    }
}

/// A closed window: the seconds before `end` not covered by an earlier one, and their use.
#[derive(Clone, Copy, Debug)]
struct Window {
    end: u64,
    usage: Usage,
}

/// Measures CPU use over windows of the run (see the module docs).
#[derive(Debug)]
pub struct CpuMonitor {
    clocks: Box<dyn Clocks>,
    epoch_us: u64,
    server: Group,
    loadgen: Group,
    /// The wall clock just before the previous reading.
    since_us: u64,
    host_last: Option<HostCpu>,
    /// The first second no window covers yet.
    next: u64,
    windows: VecDeque<Window>,
}

impl CpuMonitor {
    /// Second 0 starts at `epoch_us`; takes the first reading of the servers and the host now.
    pub fn new(clocks: Box<dyn Clocks>, epoch_us: u64, server_pids: &[u32]) -> Self {
        let since_us = clocks.now_us();
        let mut server = Group::default();
        for &pid in server_pids {
            server.add(pid, 0, clocks.cpu_ns(pid));
        }
        let host_last = clocks.host_cpu();
        CpuMonitor {
            clocks,
            epoch_us,
            server,
            loadgen: Group::default(),
            since_us,
            host_last,
            next: 0,
            windows: VecDeque::new(),
        }
    }

    /// A load-generator process that is running already (this one): counted from now on.
    /// `threads`: its event-loop threads (0: none).
    pub fn follow(&mut self, pid: u32, threads: u32) {
        let now = self.clocks.cpu_ns(pid);
        self.loadgen.add(pid, threads, now);
    }

    /// A load-generator process this run has just started, after the previous reading: all of
    /// its CPU time is counted.
    pub fn started(&mut self, pid: u32, threads: u32) {
        self.loadgen.add(pid, threads, Some(0));
    }

    /// Closes a window if a second boundary has passed since the last one. Call it often (the
    /// collector's loops do, every 100 ms at most), so windows stay near one second.
    pub fn poll(&mut self) {
        let passed = self.passed();
        if passed > self.next {
            self.close(passed);
        }
    }

    /// The use over second `k`: the window that covers it. If none does yet, one is closed now
    /// over every second that has passed (at least through `k`), so seconds reported together
    /// after a stall share its average instead of the first one taking it all.
    /// Seconds are asked for in order; windows before `k` are dropped.
    pub fn usage(&mut self, k: u64) -> Usage {
        if k >= self.next {
            self.close(self.passed().max(k + 1));
        }
        while self.windows.front().is_some_and(|w| w.end <= k) {
            self.windows.pop_front();
        }
        self.windows
            .front()
            .map_or_else(Usage::default, |w| w.usage)
    }

    /// A last reading, for the totals (the run is over).
    pub fn finish(&mut self) {
        self.close(self.next);
    }

    /// Server CPU time measured so far (s).
    pub fn server_cpu_s(&self) -> f64 {
        self.server.total_ns as f64 / 1e9
    }

    /// Load-generator CPU time measured so far (s).
    pub fn loadgen_cpu_s(&self) -> f64 {
        self.loadgen.total_ns as f64 / 1e9
    }

    /// CPUs the host's `/proc/stat` lists, when it could be read.
    pub fn host_cpus(&self) -> Option<u32> {
        self.host_last.map(|h| h.cpus)
    }

    /// Whole seconds since the epoch.
    fn passed(&self) -> u64 {
        self.clocks.now_us().saturating_sub(self.epoch_us) / 1_000_000
    }

    /// Reads everything; the seconds from `next` to `end` (if any) get this window's use.
    fn close(&mut self, end: u64) {
        let start_us = self.clocks.now_us();
        let (server_ns, _) = self.server.read(&*self.clocks);
        let (loadgen_ns, busiest_ns) = self.loadgen.read(&*self.clocks);
        let host = self.clocks.host_cpu();
        let done_us = self.clocks.now_us();
        // From before the previous reading to after this one, plus the kernel's lag: the
        // module docs say why no group can use more than CPUs x this.
        let wall_ns = (done_us.saturating_sub(self.since_us) + ACCOUNTING_LAG_US) as f64 * 1e3;
        let pct = |ns: u64| ns as f64 / wall_ns * 100.0;
        let usage = Usage {
            server_pct: pct(server_ns),
            loadgen_pct: pct(loadgen_ns),
            busiest_pct: pct(busiest_ns),
            host_pct: match (self.host_last, host) {
                (Some(a), Some(b)) => a.busy_pct_until(&b),
                _ => 0.0,
            },
        };
        self.since_us = start_us;
        if host.is_some() {
            self.host_last = host;
        }
        if end > self.next {
            self.windows.push_back(Window { end, usage });
            self.next = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clocks::fake::FakeClocks;

    const S: u64 = 1_000_000;

    fn monitor(clocks: &FakeClocks, servers: &[u32]) -> CpuMonitor {
        CpuMonitor::new(Box::new(clocks.clone()), 0, servers)
    }

    #[test]
    fn a_second_gets_the_use_of_the_wall_time_it_covers() {
        let c = FakeClocks::with_cpus(2);
        c.spawn(7, 0);
        let mut m = monitor(&c, &[7]);
        c.run(S, &[(7, 1.5)]);
        m.poll();
        c.run(S, &[(7, 0.5)]);
        m.poll();
        // Reported late: seconds 0 and 1 still get what was used while they ran.
        c.run(3 * S, &[(7, 2.0)]);
        let u0 = m.usage(0);
        assert!((u0.server_pct - 150.0).abs() < 2.0, "{u0:?}");
        assert!((u0.host_pct - 150.0).abs() < 1e-6, "{u0:?}");
        assert!((m.usage(1).server_pct - 50.0).abs() < 1.0);
        m.poll();
        for k in 2..5 {
            assert!((m.usage(k).server_pct - 200.0).abs() < 2.0, "{k}");
        }
        m.finish();
        assert!((m.server_cpu_s() - 8.0).abs() < 1e-9);
        assert_eq!(m.host_cpus(), Some(2));
    }

    #[test]
    fn no_window_gains_cpu_time_from_outside_it() {
        let c = FakeClocks::with_cpus(2);
        c.spawn(8, 0);
        // 9 is unreadable at the start, and listed twice.
        let mut m = monitor(&c, &[8, 9, 9]);
        c.run(S, &[(8, 1.0)]);
        // 9 shows up with 500 s of CPU time behind it: that time is not this window's.
        c.spawn(9, 500 * S * 1_000);
        let u = m.usage(0);
        assert!((u.server_pct - 100.0).abs() < 2.0, "{u:?}");
        // 8 exits; 9 uses both CPUs.
        c.reap(8);
        c.run(S, &[(9, 2.0)]);
        let u = m.usage(1);
        assert!(u.server_pct <= 200.0 && u.server_pct > 195.0, "{u:?}");
    }

    #[test]
    fn processes_started_by_the_run_count_from_their_start() {
        let c = FakeClocks::with_cpus(2);
        let mut m = monitor(&c, &[]);
        c.spawn(1, 3 * S * 1_000); // this process, busy before the run
        m.follow(1, 0);
        c.spawn(2, 0);
        m.started(2, 2);
        c.run(S, &[(1, 0.25), (2, 1.5)]);
        let u = m.usage(0);
        assert!((u.loadgen_pct - 175.0).abs() < 2.0, "{u:?}");
        // Worker 2 used 1.5 of its 2 threads.
        assert!((u.busiest_pct - 75.0).abs() < 1.0, "{u:?}");
        assert!((m.loadgen_cpu_s() - 1.75).abs() < 1e-9);
    }
}
