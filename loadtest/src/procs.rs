//! Running a plan over several worker processes: each is this executable with `--worker`,
//! under its own fd limit. The parent holds no connections; it reads their lines, merges their
//! seconds and totals, and starts every drive phase at one go time.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::cli::LogFormat;
use crate::collect::Collector;
use crate::error::{self, Error, WorkerProblem};
use crate::plan::{GO_DELAY_US, Plan};
use crate::sys;
use crate::wire::{self, Down, Up};
use crate::worker::Totals;

enum Event {
    Line(Box<Up>),
    Bad(serde_json::Error),
    Eof,
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: bool,
    eof: bool,
    totals: bool,
}

/// Runs every plan in its own process and returns the merged totals. Workers write their log
/// lines in `log_format`, like this process.
pub fn run(
    exe: &std::path::Path,
    plans: Vec<Plan>,
    collector: &mut Collector,
    log_format: LogFormat,
) -> Result<Totals, Error> {
    let hard_deadline = plans.iter().map(|p| p.hard_deadline_us).max().unwrap_or(0);
    let (tx, rx) = mpsc::channel();
    let mut workers: Vec<Worker> = Vec::with_capacity(plans.len());
    for (i, plan) in plans.into_iter().enumerate() {
        let threads = plan.threads;
        let spawned = Command::new(exe)
            .args(["--worker", "--log-format", log_format.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                stop(&mut workers);
                return Err(Error::Worker {
                    index: i,
                    problem: WorkerProblem::Spawn(e),
                });
            }
        };
        collector.loadgen_started(child.id(), threads);
        let mut stdin = child.stdin.take();
        let first = wire::line(&Down::Plan(Box::new(plan)))?;
        if let Some(s) = stdin.as_mut() {
            s.write_all(first.as_bytes())
                .and_then(|()| s.flush())
                .map_err(error::io("send a plan to a worker"))?;
        }
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("c10m-lt-read-{i}"))
                .spawn(move || {
                    for text in BufReader::new(out).lines() {
                        let event = match text {
                            Ok(t) => match serde_json::from_str::<Up>(&t) {
                                Ok(up) => Event::Line(Box::new(up)),
                                Err(e) => Event::Bad(e),
                            },
                            Err(_) => break,
                        };
                        if tx.send((i, event)).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((i, Event::Eof));
                })
                .map_err(error::io("start a worker reader"))?;
        }
        workers.push(Worker {
            child,
            stdin,
            ready: false,
            eof: false,
            totals: false,
        });
    }
    drop(tx);
    let mut totals = Totals::new()?;
    let mut go_sent = false;
    loop {
        let event = rx
            .recv_timeout(Duration::from_millis(100))
            .map(|(i, e)| match e {
                Event::Line(up) => (i, Ok(*up)),
                Event::Bad(e) => (i, Err(Some(e))),
                Event::Eof => (i, Err(None)),
            });
        match event {
            Ok((i, Ok(Up::Ready(info)))) => {
                collector.on_ready(&info);
                workers[i].ready = true;
            }
            Ok((i, Ok(Up::Tick(t)))) => collector.push(i, t.decode()?)?,
            Ok((i, Ok(Up::Done(t)))) => {
                totals.merge(&t.decode()?)?;
                workers[i].totals = true;
            }
            Ok((i, Ok(Up::Error(text)))) => {
                totals.errors.push(
                    Error::Worker {
                        index: i,
                        problem: WorkerProblem::Reported(text),
                    }
                    .to_string(),
                );
            }
            Ok((i, Err(Some(e)))) => {
                totals.errors.push(
                    Error::Worker {
                        index: i,
                        problem: WorkerProblem::BadLine(e),
                    }
                    .to_string(),
                );
            }
            Ok((i, Err(None))) => {
                workers[i].eof = true;
                workers[i].ready = true;
                collector.source_done(i);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        collector.poll();
        if !go_sent && workers.iter().all(|w| w.ready) {
            go_sent = true;
            let at_us = sys::monotonic_us() + GO_DELAY_US;
            collector.going(at_us);
            let go = wire::line(&Down::Go { at_us })?;
            for (i, w) in workers.iter_mut().enumerate().filter(|(_, w)| !w.eof) {
                if let Some(s) = w.stdin.as_mut() {
                    // A worker that cannot be told is gone; its end of output follows and is
                    // reported with the totals.
                    if let Err(e) = s.write_all(go.as_bytes()).and_then(|()| s.flush()) {
                        tracing::warn!(worker = i, error = %e, "could not send the go time");
                    }
                }
            }
        }
        if workers.iter().all(|w| w.eof) {
            break;
        }
        if sys::monotonic_us() > hard_deadline + 20_000_000 {
            totals
                .errors
                .push("workers overran the run's hard deadline and were killed".into());
            stop(&mut workers);
            break;
        }
    }
    for (i, w) in workers.iter_mut().enumerate() {
        w.stdin = None;
        let status = w.child.wait().ok();
        if !w.totals {
            totals.errors.push(
                Error::Worker {
                    index: i,
                    problem: WorkerProblem::Exited(status),
                }
                .to_string()
                    + "; its connections are missing from the totals",
            );
        }
    }
    Ok(totals)
}

/// Kills the workers started so far (only processes this run started).
fn stop(workers: &mut [Worker]) {
    for w in workers.iter_mut() {
        w.stdin = None;
        // kill(2) fails only for a worker that has exited already, which wait() then reaps.
        if let Err(e) = w.child.kill() {
            tracing::debug!(pid = w.child.id(), error = %e, "kill");
        }
        if let Err(e) = w.child.wait() {
            tracing::warn!(pid = w.child.id(), error = %e, "could not reap a worker process");
        }
    }
}
