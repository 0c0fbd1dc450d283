//! The run's collector: merges the seconds of every worker process, samples the host's memory
//! as each second completes and CPU use over wall-clock windows (`cpu.rs`), keeps the timeline,
//! prints the progress line.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::clocks::{Clocks, SystemClocks};
use crate::cpu::CpuMonitor;
use crate::error::Error;
use crate::hist::Summary;
use crate::sysmon::{Sample, Sampler};
use crate::tick::{Tick, TickMerger};
use crate::worker::{ReadyInfo, Shared, Sink};

/// One second of the whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the start.
    pub t: u64,
    /// Connections open at its end.
    pub open: u64,
    /// Connections attempted during it.
    pub attempted: u64,
    /// Handshakes completed during it.
    pub established: u64,
    /// Connects and handshakes that failed during it.
    pub failed: u64,
    /// Open connections that ended early during it.
    pub closed_early: u64,
    /// Messages sent during it.
    pub sent: u64,
    /// Messages received during it.
    pub received: u64,
    /// Handshake latency during it.
    pub handshake: Summary,
    /// Message latency during it.
    pub latency: Summary,
    /// Load-generator CPU (its processes, this one included), percent of one core. Like every
    /// CPU figure here: measured over the wall time of the window that covers the second.
    pub cpu_pct: f64,
    /// The busiest worker process, percent of its event-loop threads' capacity.
    pub busiest_proc_pct: f64,
    /// Load-generator resident memory.
    pub rss_bytes: u64,
    /// Host figures at its end.
    pub host: Sample,
    /// Server CPU during it, percent of one core (when sampled).
    pub server_cpu_pct: f64,
    /// The whole host's CPU during it, percent of one core (all cores: 100 x cores).
    pub host_cpu_pct: f64,
}

/// Collects a run.
#[derive(Debug)]
pub struct Collector {
    merger: TickMerger,
    /// The seconds so far.
    pub timeline: Vec<Second>,
    sampler: Sampler,
    /// Host figures before the first connection.
    pub baseline: Sample,
    /// Host figures at the second with the most open connections, and that count.
    pub peak: Option<(u64, Sample)>,
    cpu: CpuMonitor,
    /// Load-generator CPU time over the run (s), set by [`Collector::finish`].
    pub loadgen_cpu_s: f64,
    /// Server CPU time over the run (s), set by [`Collector::finish`].
    pub server_cpu_s: f64,
    /// CPUs of the host, when `/proc/stat` could be read.
    pub host_cpus: Option<u32>,
    quiet: bool,
    /// What was open at the end of the ramp, all processes together.
    pub ready: ReadyInfo,
    /// Sources that reported ready.
    pub ready_sources: usize,
    /// When the drive phase starts (monotonic us), once decided; 0 until then.
    go: Arc<AtomicU64>,
}

impl Collector {
    /// For `sources` worker processes whose second 0 starts at `epoch_us`; takes the baseline
    /// sample now.
    pub fn new(sources: usize, sampler: Sampler, epoch_us: u64, quiet: bool) -> Self {
        Self::with_clocks(sources, sampler, Box::new(SystemClocks), epoch_us, quiet)
    }

    /// The same, reading time from `clocks`; second 0 of the run starts at `epoch_us`.
    pub fn with_clocks(
        sources: usize,
        sampler: Sampler,
        clocks: Box<dyn Clocks>,
        epoch_us: u64,
        quiet: bool,
    ) -> Self {
        let baseline = sampler.sample();
        let cpu = CpuMonitor::new(clocks, epoch_us, sampler.pids());
        Collector {
            merger: TickMerger::new(sources),
            timeline: Vec::new(),
            host_cpus: cpu.host_cpus(),
            cpu,
            loadgen_cpu_s: 0.0,
            server_cpu_s: 0.0,
            baseline,
            sampler,
            peak: None,
            quiet,
            ready: ReadyInfo::default(),
            ready_sources: 0,
            go: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The drive phase starts at `at_us` (monotonic).
    pub fn going(&self, at_us: u64) {
        self.go.store(at_us.max(1), Ordering::Release);
    }

    /// Where the go time appears once decided (0 until then), for whoever acts on it (the
    /// failover's killer).
    pub fn go_time(&self) -> Arc<AtomicU64> {
        self.go.clone()
    }

    /// A load-generator process running already (this one), with `threads` event-loop
    /// threads (0: none): its CPU time counts from now.
    pub fn loadgen_running(&mut self, pid: u32, threads: usize) {
        self.cpu
            .follow(pid, u32::try_from(threads).unwrap_or(u32::MAX));
    }

    /// A worker process this run has just started: all its CPU time counts.
    pub fn loadgen_started(&mut self, pid: u32, threads: usize) {
        self.cpu
            .started(pid, u32::try_from(threads).unwrap_or(u32::MAX));
    }

    /// Closes a CPU window when a second has passed; the loops that feed the collector call it
    /// at least every 100 ms, so windows follow the clock even while workers are late.
    pub fn poll(&mut self) {
        self.cpu.poll();
    }

    /// A source finished its ramp.
    pub fn on_ready(&mut self, info: &ReadyInfo) {
        self.ready.merge(info);
        self.ready_sources += 1;
    }

    /// A source's second.
    pub fn push(&mut self, source: usize, tick: Tick) -> Result<(), Error> {
        self.merger.push(source, tick)?;
        self.drain();
        Ok(())
    }

    /// A source ended.
    pub fn source_done(&mut self, source: usize) {
        self.merger.done(source);
        self.drain();
    }

    /// Ends the run: every source is done.
    pub fn finish(&mut self) {
        self.merger.done_all();
        self.drain();
        self.cpu.finish();
        self.loadgen_cpu_s = self.cpu.loadgen_cpu_s();
        self.server_cpu_s = self.cpu.server_cpu_s();
        if !self.quiet {
            eprintln!();
        }
    }

    fn drain(&mut self) {
        for tick in self.merger.complete() {
            let second = self.second(&tick);
            if !self.quiet {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{}\x1b[K", progress_line(&second));
                let _ = err.flush();
            }
            self.timeline.push(second);
        }
    }

    fn second(&mut self, tick: &Tick) -> Second {
        let host = self.sampler.sample();
        let cpu = self.cpu.usage(tick.k);
        if self.peak.is_none_or(|(open, _)| tick.open >= open) {
            self.peak = Some((tick.open, host));
        }
        let c = &tick.counters;
        Second {
            t: tick.k,
            open: tick.open,
            attempted: c.attempted,
            established: c.established,
            failed: c.connect_failed + c.handshake_failed,
            closed_early: c.closed_early,
            sent: c.sent,
            received: c.received,
            handshake: tick.hists.handshake.summary(),
            latency: tick.hists.latency.summary(),
            cpu_pct: cpu.loadgen_pct,
            busiest_proc_pct: cpu.busiest_pct,
            rss_bytes: tick.rss_bytes,
            host,
            server_cpu_pct: cpu.server_pct,
            host_cpu_pct: cpu.host_pct,
        }
    }
}

/// The live progress line.
pub fn progress_line(s: &Second) -> String {
    let mut line = format!(
        "[{:>4}s] open {:>8} | +{}/s opened, {} failed, {} closed early | sent {}/s, received {}/s",
        s.t, s.open, s.established, s.failed, s.closed_early, s.sent, s.received
    );
    if s.latency.count > 0 {
        line.push_str(&format!(
            " | p50 {} p99 {}",
            crate::report::fmt_us(s.latency.p50_us),
            crate::report::fmt_us(s.latency.p99_us)
        ));
    }
    line.push_str(&format!(
        " | cpu {:.0}% (host {:.0}%)",
        s.cpu_pct, s.host_cpu_pct
    ));
    if s.host.servers_alive > 0 {
        line.push_str(&format!(
            " | server {:.0}% {}",
            s.server_cpu_pct,
            crate::report::fmt_bytes(s.host.server_rss_bytes)
        ));
    }
    line
}

/// The sink of a run held in this process: feeds the collector, starts the drive phase as
/// soon as every thread is ready.
#[derive(Debug)]
pub struct LocalSink<'a> {
    /// Where seconds go.
    pub collector: &'a mut Collector,
}

/// In-process go delay: enough for every thread to see it before it passes.
const LOCAL_GO_DELAY_US: u64 = 20_000;

impl Sink for LocalSink<'_> {
    fn idle(&mut self) {
        self.collector.poll();
    }

    fn ready(&mut self, info: ReadyInfo, shared: &Shared) -> Result<(), Error> {
        self.collector.on_ready(&info);
        let at = crate::sys::monotonic_us() + LOCAL_GO_DELAY_US;
        shared.go(at);
        self.collector.going(at);
        Ok(())
    }

    fn tick(&mut self, tick: &Tick) -> Result<(), Error> {
        self.collector.push(0, tick.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_carry_rates_cpu_and_the_peak() {
        use crate::clocks::fake::FakeClocks;
        let clocks = FakeClocks::with_cpus(4);
        let sampler = Sampler::new(Vec::new());
        let mut c = Collector::with_clocks(2, sampler, Box::new(clocks.clone()), 0, true);
        // This process (no event loops) and two workers of two threads each.
        clocks.spawn(1, 0);
        c.loadgen_running(1, 0);
        for pid in [2, 3] {
            clocks.spawn(pid, 0);
            c.loadgen_started(pid, 2);
        }
        clocks.run(1_000_000, &[(2, 0.5), (3, 1.0)]);
        for (source, open) in [(0, 10), (1, 5)] {
            let mut t = Tick::empty(0).unwrap();
            t.open = open;
            t.counters.sent = 7;
            c.push(source, t).unwrap();
        }
        c.finish();
        assert_eq!(c.timeline.len(), 1);
        let s = &c.timeline[0];
        assert_eq!((s.open, s.sent), (15, 14));
        // 1.5 s of CPU over 1 s (and the 10 ms the kernel may lag).
        assert!((s.cpu_pct - 150.0).abs() < 2.0, "{s:?}");
        assert!((s.busiest_proc_pct - 50.0).abs() < 1.0, "{s:?}");
        assert!((s.host_cpu_pct - 150.0).abs() < 1e-9, "{s:?}");
        assert!((c.loadgen_cpu_s - 1.5).abs() < 1e-9);
        assert_eq!(c.host_cpus, Some(4));
        assert_eq!(c.peak.unwrap().0, 15);
        assert!(progress_line(s).contains("open       15"));
    }

    /// The report of a 1,000,000-connection hold on 2 cores showed the server at 2276% of a
    /// core: when the hold ended, the workers were busy closing connections and reported ten
    /// seconds at once, and the server's CPU of those ten seconds went to the first of them.
    /// A server process read for the first time (here: unreadable at the start) must not bring
    /// its whole past CPU time into one second either.
    #[test]
    fn seconds_reported_late_show_cpu_a_host_can_give() {
        use crate::clocks::fake::FakeClocks;
        const CORES: f64 = 2.0;
        let (server, late) = (u32::MAX - 1, u32::MAX - 2);
        let clocks = FakeClocks::default();
        clocks.spawn(server, 0);
        let sampler = Sampler::new(vec![server, late]);
        let mut c = Collector::with_clocks(1, sampler, Box::new(clocks.clone()), 0, true);
        clocks.run(1_000_000, &[(server, 1.0)]);
        c.push(0, Tick::empty(0).unwrap()).unwrap();
        // The worker stalls for ten seconds while the server works on both cores; a second
        // server process shows up with 50 s of CPU behind it.
        clocks.spawn(late, 50_000_000_000);
        clocks.run(10_000_000, &[(server, CORES)]);
        for k in 1..=10 {
            c.push(0, Tick::empty(k).unwrap()).unwrap();
        }
        c.finish();
        let pct: Vec<f64> = c.timeline.iter().map(|s| s.server_cpu_pct).collect();
        assert_eq!(pct.len(), 11);
        assert!((pct[0] - 100.0).abs() < 1.0, "{pct:?}");
        for p in &pct {
            assert!(*p <= CORES * 100.0, "more than {CORES} cores: {pct:?}");
        }
        // The stall's seconds show its average: both cores.
        assert!(pct[1..].iter().all(|p| (p - 200.0).abs() < 2.0), "{pct:?}");
    }
}
