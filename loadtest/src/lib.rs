//! `c10m-loadtest`: the bundled load generator.
//!
//! It opens, holds and drives more connections than one process may own, on the engine's own
//! sans-IO protocol core in the client role:
//!
//! ```text
//!   parent (run.rs) ── plans ──► worker process 0..P (procs.rs, wire.rs; or this process)
//!                                  └─ threads 0..T: mio poll, edge-triggered, slab of clients,
//!                                     one read buffer (worker/event_loop.rs)
//!   worker ── JSON lines: ready, a tick per second (counters + V2 histograms), done ──► parent
//!   parent: merge by second (tick.rs), sample /proc (sysmon.rs), CPU over wall-clock windows
//!           (cpu.rs), progress line (collect.rs), report: text, JSON, HTML (report/)
//! ```
//!
//! Latency is kept in HdrHistograms (microseconds). In fixed-rate modes (echo `--msg-rate`,
//! broadcast) every message carries its intended send time, and latency is measured from it, so
//! a stalled sender or server cannot hide delay (coordinated omission).
//!
//! The only `unsafe` code is the handful of libc calls in `sys.rs`, each argued.
#![deny(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod clocks;
pub mod collect;
pub mod counters;
pub mod cpu;
pub mod error;
pub mod failover;
pub mod hist;
pub mod logging;
pub mod payload;
pub mod plan;
mod procs;
pub mod report;
pub mod run;
pub mod seqtrack;
pub mod sfu;
pub mod socketio;
#[allow(unsafe_code)] // setrlimit, setsockopt, clock_gettime, sysconf
mod sys;
pub mod sysmon;
pub mod tick;
pub mod v1;
pub mod wire;
pub mod worker;

pub use error::Error;
pub use run::{main_entry, run};
