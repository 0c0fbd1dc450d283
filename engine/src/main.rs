//! The `c10m` command: `c10m serve` and `c10m doctor`.

use std::net::SocketAddr;
use std::process::ExitCode;

use c10m_engine::blocking::EchoServer;

const USAGE: &str = "\
usage: c10m <command> [options]

commands:
  serve    run the WebSocket server
  doctor   check this host's limits for a target connection count

c10m serve [--listen ADDR]
  --listen ADDR       address to listen on (default 127.0.0.1:9001)

  Applications: /echo echoes every message. (This build serves every path with the
  reference echo server over std::net; the sharded event loop replaces it.)

c10m doctor [--connections N]
  --connections N     target number of concurrent connections (default 1000000)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("doctor") => doctor(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Returns the value after `--name`, an error for a flag without one.
fn flag<'a>(args: &'a [String], name: &str) -> Result<Option<&'a str>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .map(|v| Some(v.as_str()))
            .ok_or(format!("{name} needs a value")),
    }
}

fn serve(args: &[String]) -> ExitCode {
    let listen = match flag(args, "--listen") {
        Ok(v) => v.unwrap_or("127.0.0.1:9001"),
        Err(e) => return usage_error(&e),
    };
    if let Some(unknown) = args.iter().step_by(2).find(|a| *a != "--listen") {
        return usage_error(&format!("unknown option {unknown}"));
    }
    let addr: SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(_) => return usage_error(&format!("--listen: not an address: {listen}")),
    };
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("c10m: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().map_or(addr, |a| a);
    preflight();
    println!("c10m: listening on ws://{local}/echo (reference echo server, thread per connection)");
    match EchoServer::default().run(listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c10m: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `c10m doctor`: the host's limits against a target, from the same table scripts/tune.sh uses.
/// Exits 0 when every setting is ok, 1 when some are low, 2 on bad input or unreadable /proc.
fn doctor(args: &[String]) -> ExitCode {
    let target = match flag(args, "--connections") {
        Ok(None) => 1_000_000,
        Ok(Some(v)) => match v.replace(['_', ','], "").parse::<u64>() {
            Ok(n) => n,
            Err(_) => return usage_error(&format!("--connections: not a number: {v}")),
        },
        Err(e) => return usage_error(&e),
    };
    if let Some(unknown) = args.iter().step_by(2).find(|a| *a != "--connections") {
        return usage_error(&format!("unknown option {unknown}"));
    }
    let host = match c10m_sysctl::Host::read() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("c10m doctor: cannot read this host's limits: {e}");
            return ExitCode::from(2);
        }
    };
    let plan = match c10m_sysctl::plan(target, &host) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("c10m doctor: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{plan}");
    let ceiling = c10m_sysctl::process_ceiling(&host);
    println!("\nthis process: {ceiling}");
    if plan.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The start-up preflight of `c10m serve`: warns, never refuses.
fn preflight() {
    match c10m_sysctl::Host::read() {
        Ok(host) => {
            let ceiling = c10m_sysctl::process_ceiling(&host);
            println!(
                "c10m: fd limit {} (soft) / {} (hard)",
                ceiling.soft, ceiling.hard
            );
            if !ceiling.holds(1_000_000) {
                println!("c10m: warning: {ceiling}");
            }
        }
        Err(e) => println!("c10m: warning: preflight could not read host limits: {e}"),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("c10m: {msg}\n\n{USAGE}");
    ExitCode::from(2)
}
