//! Parent and worker processes talk in JSON lines.
//!
//! ```text
//!   parent ─stdin──► worker: {"plan": Plan}, later {"go": {"at_us": T}} or "abort"; EOF = abort
//!   worker ─stdout─► parent: {"ready": ..}, {"tick": ..} once a second, then {"done": ..}
//!                            or {"error": ".."}
//! ```
//! Histograms travel V2-serialized and base64-encoded inside the tick and done lines.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{self, Error};
use crate::plan::Plan;
use crate::tick::{Tick, WireTick};
use crate::worker::{self, ReadyInfo, Shared, Sink, WireTotals};

/// From a worker to its parent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Up {
    /// The ramp is over.
    Ready(ReadyInfo),
    /// One second.
    Tick(WireTick),
    /// The whole run.
    Done(WireTotals),
    /// The worker failed.
    Error(String),
}

/// From the parent to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Down {
    /// What to do (first line).
    Plan(Box<Plan>),
    /// Start the drive phase at this monotonic time.
    Go {
        /// When (us).
        at_us: u64,
    },
    /// Stop now.
    Abort,
}

/// Encodes one line (with its newline).
pub fn line<T: Serialize>(msg: &T) -> Result<String, Error> {
    let mut text = serde_json::to_string(msg).map_err(error::json("encode a report line"))?;
    text.push('\n');
    Ok(text)
}

/// Writes report lines to stdout.
#[derive(Debug)]
struct StdoutSink;

impl StdoutSink {
    fn send(&self, msg: &Up) -> Result<(), Error> {
        let text = line(msg)?;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(error::io("write to the parent"))
    }
}

impl Sink for StdoutSink {
    fn ready(&mut self, info: ReadyInfo, _shared: &Shared) -> Result<(), Error> {
        self.send(&Up::Ready(info))
    }

    fn tick(&mut self, tick: &Tick) -> Result<(), Error> {
        self.send(&Up::Tick(WireTick::encode(tick)?))
    }
}

/// `c10m-loadtest --worker`: reads a plan from stdin, runs it, reports on stdout.
pub fn worker_main() -> ExitCode {
    // The parent laid the plan out for the raised limit; if raising fails, connections past
    // the old one fail and the report counts them.
    if let Err(e) = crate::sys::raise_nofile() {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
    let sink = StdoutSink;
    match worker_run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Err(send) = sink.send(&Up::Error(e.to_string())) {
                // The parent is gone or not reading: stderr (shared with it) is all that is left.
                tracing::error!(error = %e, report = %send, "worker failed and could not tell the parent");
            }
            ExitCode::from(3)
        }
    }
}

fn worker_run() -> Result<(), Error> {
    let mut stdin = std::io::stdin().lock();
    let mut first = String::new();
    stdin
        .read_line(&mut first)
        .map_err(error::io("read the plan"))?;
    let plan = match serde_json::from_str::<Down>(&first).map_err(error::json("read the plan"))? {
        Down::Plan(p) => *p,
        Down::Go { .. } | Down::Abort => {
            return Err(Error::Json {
                what: "read the plan",
                source: serde::de::Error::custom("the first line must be the plan"),
            });
        }
    };
    drop(stdin);
    let shared = Arc::new(Shared::default());
    let commands = shared.clone();
    // Commands from the parent; its end (the parent died) stops the run.
    std::thread::Builder::new()
        .name("c10m-lt-stdin".into())
        .spawn(move || {
            for text in std::io::stdin().lock().lines() {
                match text.map(|t| serde_json::from_str::<Down>(&t)) {
                    Ok(Ok(Down::Go { at_us })) => commands.go(at_us),
                    Ok(Ok(Down::Abort)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            commands.abort();
        })
        .map_err(error::io("start the command reader"))?;
    let mut sink = StdoutSink;
    let totals = worker::run_process(plan, shared, &mut sink)?;
    sink.send(&Up::Done(WireTotals::encode(&totals)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let up = Up::Ready(ReadyInfo {
            threads: 2,
            open: 10,
            subscribers: 9,
            publishers: 1,
        });
        let text = line(&up).unwrap();
        assert!(text.ends_with('\n') && !text[..text.len() - 1].contains('\n'));
        assert_eq!(serde_json::from_str::<Up>(&text).unwrap(), up);
        let go = line(&Down::Go { at_us: 5 }).unwrap();
        assert_eq!(go, "{\"go\":{\"at_us\":5}}\n");
        assert_eq!(
            serde_json::from_str::<Down>("\"abort\"").unwrap(),
            Down::Abort
        );
    }
}
