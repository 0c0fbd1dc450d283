//! A whole run: lay it out, run it in this process or in worker processes, build the report,
//! write it out.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use crate::cli::{self, Command, Options, Problem, ScenarioKind, UsageError};
use crate::collect::{Collector, LocalSink};
use crate::error::{self, Error};
use crate::failover::{self, Killer};
use crate::plan;
use crate::report::{self, Inputs, Report};
use crate::sys;
use crate::sysmon::Sampler;
use crate::wire;
use crate::worker::{self, Shared};

/// The ephemeral port range's size (`net.ipv4.ip_local_port_range`).
fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

/// Runs `options` and returns the report.
pub fn run(options: &Options) -> Result<Report, Error> {
    options.validate()?;
    // Failover: the node to kill must be one of the run's, checked before anything starts.
    let node = match (options.scenario, options.kill_pid) {
        (ScenarioKind::Failover, Some(pid)) => Some(
            failover::node(
                pid,
                if options.upstreams.is_empty() {
                    &options.targets
                } else {
                    &options.upstreams
                },
                options.publisher_targets(),
            )
            .map_err(|e| {
                Error::Usage(UsageError {
                    flag: "--kill-pid".into(),
                    problem: Problem::NotTheNode(e.to_string()),
                })
            })?,
        ),
        _ => None,
    };
    // wss://: an unreadable --tls-ca or a bad --tls-server-name stops the run before it starts.
    if let Some(tls) = &options.tls {
        crate::worker::check_tls(tls)?;
    }
    let (fd_limit, _) = sys::raise_nofile().map_err(error::io("read the fd limit"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let layout = plan::layout(
        options,
        fd_limit,
        cores,
        ephemeral_ports().unwrap_or(28_232),
    )?;
    let warnings = plan::warnings(options);
    let started = Instant::now();
    let epoch_us = sys::monotonic_us();
    let plans = plan::plans(options, layout, epoch_us);
    let sampler = Sampler::new(options.server_pids.clone());
    let mut collector = Collector::new(plans.len(), sampler, epoch_us, options.quiet);
    // This process is part of the load generator: it runs the event loops when there is one
    // plan, and merges the workers' seconds otherwise (workers join as they start).
    let own_threads = match plans.as_slice() {
        [only] => only.threads,
        _ => 0,
    };
    collector.loadgen_running(std::process::id(), own_threads);
    let killer = match node {
        Some(n) => Some(
            Killer::start(n, options.kill_at_ms(), collector.go_time())
                .map_err(error::io("start the failover's killer thread"))?,
        ),
        None => None,
    };
    let totals = drive(options, plans, &mut collector);
    // Whatever happened, the killer stops waiting before the run returns.
    let kill = killer.map(Killer::finish);
    let totals = totals?;
    collector.finish();
    Ok(Report::build(Inputs {
        options,
        layout,
        totals: &totals,
        collector: &collector,
        elapsed_s: started.elapsed().as_secs_f64(),
        warnings,
        cores,
        kill: kill.as_ref(),
    }))
}

/// Runs the plans in this process (one) or in worker processes (more).
fn drive(
    options: &Options,
    plans: Vec<plan::Plan>,
    collector: &mut Collector,
) -> Result<worker::Totals, Error> {
    if plans.len() == 1 {
        let shared = Arc::new(Shared::default());
        let mut sink = LocalSink { collector };
        let plan =
            plans
                .into_iter()
                .next()
                .ok_or(Error::Plan(plan::PlanError::TooManyPerProcess {
                    per_process: 0,
                    limit: 0,
                    need: 1,
                }))?;
        worker::run_process(plan, shared, &mut sink)
    } else {
        let exe = match &options.worker_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(error::io("find this executable"))?,
        };
        crate::procs::run(&exe, plans, collector, options.log_format)
    }
}

/// Writes the text report (stdout, or stderr with `--json`), the JSON and the HTML file.
pub fn write_outputs(options: &Options, report: &Report) -> Result<(), Error> {
    let text = report::text(report);
    if options.json {
        eprint!("{text}");
        let json =
            serde_json::to_string_pretty(report).map_err(error::json("encode the report"))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{json}").map_err(error::io("write the report"))?;
    } else {
        print!("{text}");
    }
    if let Some(path) = &options.html {
        std::fs::write(path, report::html(report)).map_err(error::io("write the HTML report"))?;
    }
    Ok(())
}

/// `c10m-loadtest sfu`: runs it and prints its report.
fn sfu_main(o: &crate::sfu::SfuOptions) -> ExitCode {
    let report = match crate::sfu::run(o) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("c10m-loadtest: sfu: {e}");
            return ExitCode::from(3);
        }
    };
    if o.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("c10m-loadtest: {e}");
                return ExitCode::from(3);
            }
        }
    } else {
        println!("{}", report.text());
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The command-line program: parse, run, report; the exit status says how it went.
pub fn main_entry(args: &[String]) -> ExitCode {
    let options = match cli::parse(args) {
        Ok(Command::Worker { log_format }) => {
            crate::logging::init(log_format);
            return wire::worker_main();
        }
        Ok(Command::Run(o)) => o,
        Ok(Command::Sfu(o)) => return sfu_main(&o),
        Err(e) => {
            // Help and the version on stdout (status 0), usage errors on stderr (status 2).
            e.print();
            return ExitCode::from(e.exit_code());
        }
    };
    crate::logging::init(options.log_format);
    // The outcome of the run, like the report, is for the user: plain lines, not log events.
    let report = match run(&options) {
        Ok(r) => r,
        Err(e @ (Error::Usage(_) | Error::Plan(_))) => {
            eprintln!("c10m-loadtest: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("c10m-loadtest: {e}");
            return ExitCode::from(3);
        }
    };
    if let Err(e) = write_outputs(&options, &report) {
        eprintln!("c10m-loadtest: {e}");
        return ExitCode::from(3);
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
