//! The run's collector: merges the seconds of every worker process, samples the host once per
//! second, keeps the timeline, prints the progress line.

use std::io::Write as _;

use serde::{Deserialize, Serialize};

use crate::clocks::{Clocks, SystemClocks};
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
    /// Load-generator CPU, all processes, percent of one core.
    pub cpu_pct: f64,
    /// The busiest worker process, percent of its threads' capacity.
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
    clocks: Box<dyn Clocks>,
    last_server_cpu_ns: u64,
    last_host: (u64, u64),
    cores: f64,
    quiet: bool,
    /// What was open at the end of the ramp, all processes together.
    pub ready: ReadyInfo,
    /// Sources that reported ready.
    pub ready_sources: usize,
}

impl Collector {
    /// For `sources` worker processes; takes the baseline sample now.
    pub fn new(sources: usize, sampler: Sampler, quiet: bool) -> Self {
        let epoch_us = crate::sys::monotonic_us();
        Self::with_clocks(sources, sampler, Box::new(SystemClocks), epoch_us, quiet)
    }

    /// The same, reading time from `clocks`; second 0 of the run starts at `epoch_us`.
    pub fn with_clocks(
        sources: usize,
        sampler: Sampler,
        clocks: Box<dyn Clocks>,
        _epoch_us: u64,
        quiet: bool,
    ) -> Self {
        let baseline = sampler.sample();
        let last_server_cpu_ns = server_cpu_ns(&*clocks, sampler.pids());
        Collector {
            merger: TickMerger::new(sources),
            timeline: Vec::new(),
            clocks,
            last_server_cpu_ns,
            last_host: (baseline.host_busy_us, baseline.host_total_us),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            baseline,
            sampler,
            peak: None,
            quiet,
            ready: ReadyInfo::default(),
            ready_sources: 0,
        }
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
        let now_ns = server_cpu_ns(&*self.clocks, self.sampler.pids());
        let server_cpu = now_ns.saturating_sub(self.last_server_cpu_ns) / 1_000;
        self.last_server_cpu_ns = now_ns;
        let busy = host.host_busy_us.saturating_sub(self.last_host.0);
        let total = host.host_total_us.saturating_sub(self.last_host.1);
        self.last_host = (host.host_busy_us, host.host_total_us);
        let host_cpu_pct = if total > 0 {
            busy as f64 / total as f64 * 100.0 * self.cores
        } else {
            0.0
        };
        if self.peak.is_none_or(|(open, _)| tick.open >= open) {
            self.peak = Some((tick.open, host));
        }
        let c = &tick.counters;
        let capacity = f64::from(tick.max_proc_threads.max(1)) * 1e6;
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
            cpu_pct: tick.cpu_us as f64 / 1e4,
            busiest_proc_pct: tick.max_proc_cpu_us as f64 / capacity * 100.0,
            rss_bytes: tick.rss_bytes,
            host,
            server_cpu_pct: if self.sampler.has_servers() {
                server_cpu as f64 / 1e4
            } else {
                0.0
            },
            host_cpu_pct,
        }
    }
}

fn server_cpu_ns(clocks: &dyn Clocks, pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| clocks.cpu_ns(*p)).sum()
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
    fn ready(&mut self, info: ReadyInfo, shared: &Shared) -> Result<(), Error> {
        self.collector.on_ready(&info);
        shared.go(crate::sys::monotonic_us() + LOCAL_GO_DELAY_US);
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
        let mut c = Collector::new(2, Sampler::new(Vec::new()), true);
        for (source, open, cpu) in [(0, 10, 500_000), (1, 5, 1_000_000)] {
            let mut t = Tick::empty(0).unwrap();
            t.open = open;
            t.counters.sent = 7;
            t.cpu_us = cpu;
            t.max_proc_cpu_us = cpu;
            t.max_proc_threads = 2;
            c.push(source, t).unwrap();
        }
        c.finish();
        assert_eq!(c.timeline.len(), 1);
        let s = &c.timeline[0];
        assert_eq!((s.open, s.sent), (15, 14));
        assert!((s.cpu_pct - 150.0).abs() < 1e-9);
        assert!((s.busiest_proc_pct - 50.0).abs() < 1e-9);
        assert_eq!(c.peak.unwrap().0, 15);
        assert!(progress_line(s).contains("open       15"));
    }
}
