//! The `c10m` command: `c10m serve` and `c10m doctor`.

use std::path::Path;
use std::process::ExitCode;

use c10m_engine::server::{self, Routes, ServerConfig, apps};

const USAGE: &str = "\
usage: c10m <command> [options]

commands:
  serve    run the WebSocket server (apps: /echo, /pubsub)
  doctor   check this host's limits for a target connection count

c10m serve [options]
  --config FILE             read settings from a TOML file (keys as below, with _ for -);
                            flags given as well override it
  --listen ADDR             address to listen on (default 127.0.0.1:9001)
  --shards N                shards (threads, one SO_REUSEPORT listener each); 0 = one per core (default 0)
  --pin                     pin shard i to core i
  --max-frame-size BYTES    largest frame accepted, else close 1009 (default 16777216)
  --max-message-size BYTES  largest message accepted, else close 1009 (default 16777216)
  --max-header-bytes BYTES  largest HTTP request head, else 431 (default 8192)
  --handshake-timeout-ms MS time to finish the opening handshake (default 10000)
  --ping-interval-ms MS     ping a connection silent this long; 0 = never (default 30000)
  --idle-timeout-ms MS      close a connection silent this long (1001); 0 = never (default 75000)
  --close-timeout-ms MS     time the peer has to answer our close frame (default 5000)
  --write-queue-limit BYTES close a slow consumer whose unsent output exceeds this (default 1048576)
  --max-connections-per-shard N  refuse connections beyond this per shard (default 16777216)
  --drain-timeout-ms MS     on SIGTERM/SIGINT, time to close connections with 1001 (default 5000)
  --allowed-origin ORIGIN   allow this Origin only (repeatable; default: any origin)
  --metrics ADDR            serve /metrics (Prometheus) and /health over plain HTTP on ADDR
  --io epoll|uring|auto     I/O backend: edge-triggered epoll, io_uring, or io_uring when the
                            kernel offers it and epoll otherwise (default epoll)
  --ring-buffers N          io_uring: provided receive buffers per shard, a power of two (default
                            16 where receives fill them incrementally, Linux 6.12; else 256)
  --ring-buffer-size BYTES  io_uring: bytes per receive buffer (default 16384)
  --ring-files N            io_uring: registered file slots per shard; 0 = none (default: twice
                            the shard's share of RLIMIT_NOFILE, at most 65536)
  --ring-park-ms MS         io_uring: park a connection silent this long (up to twice), trading
                            its armed receive for an epoll registration; 0 = never (default 1000)

  /echo echoes every message. /pubsub speaks a text protocol: `sub T`, `unsub T`, `pub T PAYLOAD`
  (subscribers receive `msg T PAYLOAD`); `/pubsub?topic=T` subscribes on open. See docs/ARCHITECTURE.md.

c10m doctor [--connections N]
  --connections N           target number of concurrent connections (default 1000000)
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

/// Splits `--name value` / `--name=value` pairs; `--pin` takes no value.
fn pairs(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(name) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg}"));
        };
        if let Some((n, v)) = name.split_once('=') {
            out.push((n.to_owned(), v.to_owned()));
        } else if name == "pin" || name == "help" {
            out.push((name.to_owned(), String::new()));
        } else {
            let value = it.next().ok_or(format!("--{name} needs a value"))?;
            out.push((name.to_owned(), value.clone()));
        }
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .replace('_', "")
        .parse()
        .map_err(|_| format!("--{name}: not a number: {value}"))
}

/// Builds the server config from `--config` and the flags.
fn server_config(args: &[String]) -> Result<ServerConfig, String> {
    let pairs = pairs(args)?;
    let mut config = match pairs.iter().find(|(n, _)| n == "config") {
        Some((_, path)) => {
            ServerConfig::from_file(Path::new(path)).map_err(|e| format!("{path}: {e}"))?
        }
        None => ServerConfig::default(),
    };
    let mut origins = Vec::new();
    for (name, value) in &pairs {
        let v = value.as_str();
        match name.as_str() {
            "config" => {}
            "listen" => {
                config.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: not an address: {v}"))?
            }
            "shards" => config.shards = number(name, v)?,
            "pin" => config.pin = true,
            "max-frame-size" => config.max_frame_size = number(name, v)?,
            "max-message-size" => config.max_message_size = number(name, v)?,
            "max-header-bytes" => config.max_header_bytes = number(name, v)?,
            "handshake-timeout-ms" => config.handshake_timeout_ms = number(name, v)?,
            "ping-interval-ms" => config.ping_interval_ms = number(name, v)?,
            "idle-timeout-ms" => config.idle_timeout_ms = number(name, v)?,
            "close-timeout-ms" => config.close_timeout_ms = number(name, v)?,
            "write-queue-limit" => config.write_queue_limit = number(name, v)?,
            "max-connections-per-shard" => config.max_connections_per_shard = number(name, v)?,
            "drain-timeout-ms" => config.drain_timeout_ms = number(name, v)?,
            "allowed-origin" => origins.push(v.to_owned()),
            "io" => config.io = v.parse().map_err(|e| format!("--io: {e}"))?,
            "ring-buffers" => config.ring_buffers = Some(number(name, v)?),
            "ring-buffer-size" => config.ring_buffer_size = number(name, v)?,
            "ring-files" => config.ring_files = Some(number(name, v)?),
            "ring-park-ms" => config.ring_park_ms = number(name, v)?,
            "metrics" => {
                config.metrics = Some(
                    v.parse()
                        .map_err(|_| format!("--metrics: not an address: {v}"))?,
                )
            }
            other => return Err(format!("unknown option --{other}")),
        }
    }
    if !origins.is_empty() {
        config.allowed_origins = origins;
    }
    Ok(config)
}

fn serve(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let config = match server_config(args) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("c10m: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let routes = Routes::new()
        .route("/echo", |_| Box::new(apps::Echo))
        .route("/pubsub", |_| Box::new(apps::PubSub));
    let drain = config.drain_timeout_ms;
    let shards = config.shard_count();
    let handle = match server::start(config, routes) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("c10m: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = handle.local_addr();
    println!("c10m: listening on ws://{addr}/echo and ws://{addr}/pubsub");
    println!("c10m: {shards} shard(s), SO_REUSEPORT");
    println!("c10m: backend: {}", handle.backend());
    if let Some(m) = handle.metrics_addr() {
        println!("c10m: metrics on http://{m}/metrics, health on http://{m}/health");
    }
    preflight(shards);
    if let Some(sig) = signals.forever().next() {
        println!("c10m: signal {sig}: closing connections with 1001 (drain up to {drain} ms)");
    }
    handle.shutdown();
    match handle.join() {
        Ok(()) => {
            println!("c10m: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("c10m: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `c10m doctor`: the host's limits against a target, from the same table scripts/tune.sh uses.
/// Exits 0 when every setting is ok, 1 when some are low, 2 on bad input or unreadable /proc.
fn doctor(args: &[String]) -> ExitCode {
    let pairs = match pairs(args) {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    let mut target = 1_000_000u64;
    for (name, value) in &pairs {
        match name.as_str() {
            "connections" => match number(name, &value.replace(',', "")) {
                Ok(n) => target = n,
                Err(e) => return usage_error(&e),
            },
            other => return usage_error(&format!("unknown option --{other}")),
        }
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
fn preflight(shards: usize) {
    match c10m_sysctl::Host::read() {
        Ok(host) => {
            let ceiling = c10m_sysctl::process_ceiling(&host);
            println!(
                "c10m: fd limit {} (soft) / {} (hard): this process holds at most ~{} connections over {shards} shard(s)",
                ceiling.soft, ceiling.hard, ceiling.connections
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
