//! A worker process: event-loop threads that hold the connections, and a controller that
//! merges their seconds, hands them to a [`Sink`] with the process's own CPU and memory, and
//! waits at the ready barrier for the go time.
//!
//! ```text
//!   thread 0..T: Loop (mio, slab, one read buffer) ──Tick/Ready/Done──► controller
//!   controller: TickMerger ─► + getrusage, VmRSS ─► Sink (the run's collector, or stdout lines
//!               to the parent process)
//!   go: Shared::go_at_us, set by the sink (in process) or by the parent's `go` line (worker)
//! ```

mod client;
mod connect;
mod ctx;
mod event_loop;
pub mod reason;
mod sub;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::counters::Counters;
use crate::error::Error;
use crate::hist::{Hists, WireHists};
use crate::plan::Plan;
use crate::sys;
use crate::sysmon;
use crate::tick::{Tick, TickMerger};

/// Builds the wss:// client configuration once, for its errors.
pub fn check_tls(plan: &crate::plan::TlsPlan) -> Result<(), Error> {
    tls::Tls::new(plan).map(drop)
}

/// Flags every thread of a process reads.
#[derive(Debug, Default)]
pub struct Shared {
    /// When the drive phase starts (monotonic us); 0 until decided.
    pub go_at_us: AtomicU64,
    /// Stop now: close everything and report.
    pub abort: AtomicBool,
}

impl Shared {
    /// Sets the go time.
    pub fn go(&self, at_us: u64) {
        self.go_at_us.store(at_us.max(1), Ordering::Release);
    }

    /// Asks every thread to stop.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }
}

/// What was open when the ramp ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// Threads that reported.
    pub threads: u64,
    /// Open connections.
    pub open: u64,
    /// Of which subscribers.
    pub subscribers: u64,
    /// Of which publishers.
    pub publishers: u64,
}

impl ReadyInfo {
    /// Adds another report.
    pub fn merge(&mut self, o: &ReadyInfo) {
        self.threads += o.threads;
        self.open += o.open;
        self.subscribers += o.subscribers;
        self.publishers += o.publishers;
    }
}

/// From a thread to its controller.
#[derive(Debug)]
pub enum ThreadMsg {
    /// The ramp is over.
    Ready(usize, ReadyInfo),
    /// One second.
    Tick(usize, Box<Tick>),
    /// The thread ended, with an error if it failed.
    Done(usize, Option<String>),
}

/// Where a process's results go.
pub trait Sink {
    /// Every thread finished its ramp. The sink may set the go time in `shared`.
    fn ready(&mut self, info: ReadyInfo, shared: &Shared) -> Result<(), Error>;
    /// One complete second of this process.
    fn tick(&mut self, tick: &Tick) -> Result<(), Error>;
    /// Called at least every 100 ms while the process runs, whatever its threads are doing.
    fn idle(&mut self) {}
}

/// A process's whole run.
#[derive(Clone, Debug, PartialEq)]
pub struct Totals {
    /// All counts.
    pub counters: Counters,
    /// All latencies.
    pub hists: Hists,
    /// The ramp's outcome.
    pub ready: ReadyInfo,
    /// Threads that failed, and why.
    pub errors: Vec<String>,
}

impl Totals {
    /// Nothing yet.
    pub fn new() -> Result<Self, Error> {
        Ok(Totals {
            counters: Counters::default(),
            hists: Hists::new()?,
            ready: ReadyInfo::default(),
            errors: Vec::new(),
        })
    }

    /// Adds another process's totals.
    pub fn merge(&mut self, o: &Totals) -> Result<(), Error> {
        self.counters.merge(&o.counters);
        self.hists.merge(&o.hists)?;
        self.ready.merge(&o.ready);
        self.errors.extend(o.errors.iter().cloned());
        Ok(())
    }
}

/// The wire form of [`Totals`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireTotals {
    /// [`Totals::counters`].
    pub counters: Counters,
    /// [`Totals::hists`], V2 + base64.
    pub hists: WireHists,
    /// [`Totals::ready`].
    pub ready: ReadyInfo,
    /// [`Totals::errors`].
    pub errors: Vec<String>,
}

impl WireTotals {
    /// Encodes.
    pub fn encode(t: &Totals) -> Result<Self, Error> {
        Ok(WireTotals {
            counters: t.counters.clone(),
            hists: WireHists::encode(&t.hists)?,
            ready: t.ready,
            errors: t.errors.clone(),
        })
    }

    /// Decodes.
    pub fn decode(&self) -> Result<Totals, Error> {
        Ok(Totals {
            counters: self.counters.clone(),
            hists: self.hists.decode()?,
            ready: self.ready,
            errors: self.errors.clone(),
        })
    }
}

/// Runs `plan` in this process: starts its threads, feeds `sink`, returns the totals.
pub fn run_process(plan: Plan, shared: Arc<Shared>, sink: &mut dyn Sink) -> Result<Totals, Error> {
    let threads = plan.threads.max(1);
    let hard_deadline = plan.hard_deadline_us;
    let plan = Arc::new(plan);
    let clock = Clock::new();
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let (thread_plan, thread_shared, tx) = (plan.clone(), shared.clone(), tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("c10m-lt-{}-{t}", plan.index))
            .spawn(move || {
                let result =
                    event_loop::Loop::new(t, thread_plan, thread_shared, tx.clone(), clock)
                        .and_then(event_loop::Loop::run);
                let _ = tx.send(ThreadMsg::Done(t, result.err().map(|e| e.to_string())));
            });
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.abort();
                for h in handles {
                    let _ = h.join();
                }
                return Err(Error::Io {
                    what: "start an event-loop thread",
                    source: e,
                });
            }
        }
    }
    drop(tx);
    let mut merger = TickMerger::new(threads);
    let mut totals = Totals::new()?;
    let mut reported = vec![false; threads];
    let mut ready_sent = false;
    let mut result = Ok(());
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ThreadMsg::Tick(t, tick)) => merger.push(t, *tick)?,
            Ok(ThreadMsg::Ready(t, info)) => {
                totals.ready.merge(&info);
                if let Some(r) = reported.get_mut(t) {
                    *r = true;
                }
            }
            Ok(ThreadMsg::Done(t, err)) => {
                merger.done(t);
                if let Some(r) = reported.get_mut(t) {
                    *r = true;
                }
                if let Some(e) = err {
                    totals.errors.push(format!("thread {t}: {e}"));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        sink.idle();
        if !ready_sent && reported.iter().all(|r| *r) {
            ready_sent = true;
            if let Err(e) = sink.ready(totals.ready, &shared) {
                shared.abort();
                result = Err(e);
            }
        }
        for tick in merger.complete() {
            let tick = with_process_figures(tick, threads);
            totals.counters.merge(&tick.counters);
            totals.hists.merge(&tick.hists)?;
            if result.is_ok() {
                if let Err(e) = sink.tick(&tick) {
                    shared.abort();
                    result = Err(e);
                }
            }
        }
        if sys::monotonic_us() > hard_deadline + 10_000_000 {
            shared.abort();
        }
    }
    for h in handles {
        if h.join().is_err() {
            totals.errors.push("an event-loop thread panicked".into());
        }
    }
    for tick in merger.complete() {
        let tick = with_process_figures(tick, threads);
        totals.counters.merge(&tick.counters);
        totals.hists.merge(&tick.hists)?;
        if result.is_ok() {
            result = sink.tick(&tick);
        }
    }
    result.map(|()| totals)
}

/// Adds this process's threads and memory. Its CPU time is read by the collector, over wall
/// time (`cpu.rs`): a second reported late would otherwise carry the CPU of the whole delay.
fn with_process_figures(mut tick: Tick, threads: usize) -> Tick {
    tick.threads = u32::try_from(threads).unwrap_or(u32::MAX);
    tick.rss_bytes = sysmon::self_rss_bytes().unwrap_or(0);
    tick
}
