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
    println!("c10m: listening on ws://{local}/echo (reference echo server, thread per connection)");
    match EchoServer::default().run(listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c10m: {e}");
            ExitCode::FAILURE
        }
    }
}

fn doctor(_args: &[String]) -> ExitCode {
    eprintln!("c10m doctor: not wired yet");
    ExitCode::FAILURE
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("c10m: {msg}\n\n{USAGE}");
    ExitCode::from(2)
}
