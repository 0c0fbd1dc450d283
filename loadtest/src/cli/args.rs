//! The clap (derive) description of the command line. Every flag is optional here: what is not
//! given keeps the scenario's default from [`Options::new`], so defaults are written once.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use super::options::{EchoMode, Options, Protocol, ScenarioKind};
use super::{Command, ParseError, Problem, addrs, values};

/// Shown after a scenario's `--help`.
const AFTER_HELP: &str = "\
Counts (-n, --max-pending, --procs, --threads, --size, --window, --publishers) take 1000000,
1_000_000, 1,000,000, 1m, 20k or 1.5k; rates take a count or a decimal (2.5). Times: a bare
number is seconds; also 500ms, 10s, 2m.

Exit status: 0 when every connection opened and nothing was lost, mismatched or refused;
1 when the run finished with failures (the report says which); 2 on bad usage; 3 when the run
could not be carried out.";

/// Shown after `c10m-loadtest --help`, which lists the scenarios, not their flags.
const AFTER_TOP_HELP: &str = "\
Every scenario takes the same flags: c10m-loadtest <SCENARIO> --help lists them.
Example: c10m-loadtest idle -n 1m --rate 20k --duration 60 --source-ips 127.0.0.2-127.0.0.254
Across nodes (c10m serve --broker redis://...): c10m-loadtest broadcast
  --subscriber-targets 127.0.0.1:9001-9002 --publisher-targets 127.0.0.1:9003

Exit status: 0 when every connection opened and nothing was lost, mismatched or refused;
1 when the run finished with failures (the report says which); 2 on bad usage; 3 when the run
could not be carried out.";

/// How log lines (warnings about the run's machinery, not the report) are written on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

/// c10m-loadtest: opens, holds and drives huge connection counts against a WebSocket server,
/// and reports latency, errors, memory and CPU.
#[derive(Debug, Parser)]
#[command(
    name = "c10m-loadtest",
    version,
    override_usage = "c10m-loadtest <SCENARIO> [OPTIONS]",
    subcommand_value_name = "SCENARIO",
    subcommand_help_heading = "Scenarios",
    after_help = AFTER_TOP_HELP,
    arg_required_else_help = true,
    args_conflicts_with_subcommands = true,
    // A flag given twice keeps its last value, as the hand-written parser did.
    args_override_self = true
)]
struct Cli {
    /// Run as a worker process of a parent; the plan arrives on stdin.
    #[arg(long, hide = true)]
    worker: bool,

    /// Log lines on stderr: human or json (RUST_LOG filters them; warnings by default)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT",
        hide_possible_values = true
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    scenario: Option<Scenario>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Open N connections at a controlled rate; connect and handshake latency, errors
    Connect(RunArgs),
    /// Hold N connections for --duration, answering pings; who survived, why others closed
    Idle(RunArgs),
    /// Each connection keeps --window messages in flight, or sends --msg-rate per second (fixed
    /// rate, latency from the intended send time); messages/s, round trip
    Echo(RunArgs),
    /// N subscribers on a /pubsub topic, --publishers P at --publish-rate each; deliveries/s,
    /// delivery latency (from the intended publish time), missing, duplicated and reordered
    /// messages per subscriber. Across nodes: --subscriber-targets and --publisher-targets
    Broadcast(RunArgs),
    /// A broadcast during which the node --kill-pid is killed (SIGKILL) at --kill-at; its
    /// subscribers reconnect to the other --subscriber-targets with exponential backoff; how
    /// long each was away, what it lost, and (--protocol v1) what it recovered
    Failover(RunArgs),
    /// Rooms of webrtc-rs participants through c10m's SFU (c10m serve --sfu-udp): publishers
    /// send one video stream each, subscribers receive; forwarded packets/s, loss, latency,
    /// server CPU per forwarded packet
    Sfu(SfuArgs),
}

/// `c10m-loadtest sfu`'s flags.
#[derive(Debug, Args)]
struct SfuArgs {
    /// The server's IP:PORT (loopback); several, comma-separated, spread each room's
    /// participants over them (nodes of one cluster: a room's media stays on one node)
    #[arg(long, value_name = "ADDR[,ADDR...]", default_value = "127.0.0.1:9001", value_delimiter = ',', num_args = 1..)]
    target: Vec<SocketAddr>,
    /// The signaling route
    #[arg(long, value_name = "PATH", default_value = "/signal/v1")]
    path: String,
    /// Rooms
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rooms: u32,
    /// Publishers per room (one video stream each)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    publishers: u32,
    /// Subscribers per room (receive only)
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10000))]
    subscribers: u32,
    /// Subscribers per room that decrypt and check every packet (publisher, sequence, latency);
    /// the others count the packets they receive by their RTP headers alone (SSRC, sequence
    /// number, a marker bit set on the measured window's packets), which costs the load
    /// generator a fraction as much, so that more streams can be driven (default: all)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    verified: Option<u32>,
    /// Video packets a second per publisher (50 x 1,200 B is about 500 kbit/s)
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
    rate: u32,
    /// Video payload bytes per packet (at least 20: publisher, sequence, send time)
    #[arg(long, value_name = "BYTES", default_value_t = 1200, value_parser = clap::value_parser!(u16).range(20..=1400))]
    size: u16,
    /// The measured window (after every subscriber receives every publisher): 10, 10s, 500ms
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = values::duration_ms)]
    duration: u64,
    /// The server's pid: its CPU per forwarded packet and its memory
    #[arg(long, value_name = "PID", value_parser = values::pid)]
    server_pid: Option<u32>,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

/// `--protocol` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    /// The /pubsub text protocol.
    Pubsub,
    /// The client protocol /connection/v1.
    V1,
    /// Socket.IO against benches/socketio (a peer, for comparison).
    Socketio,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::Pubsub => Protocol::Pubsub,
            ProtocolArg::V1 => Protocol::V1,
            ProtocolArg::Socketio => Protocol::SocketIo,
        }
    }
}

/// Addresses from one `--target` value.
#[derive(Clone, Debug)]
struct Targets(Vec<SocketAddr>);

/// Addresses from one `--source-ips` value.
#[derive(Clone, Debug)]
struct Sources(Vec<IpAddr>);

/// Pids from one `--server-pid` value.
#[derive(Clone, Debug)]
struct Pids(Vec<u32>);

fn targets(text: &str) -> Result<Targets, Problem> {
    addrs::parse_targets(text).map(Targets)
}

fn sources(text: &str) -> Result<Sources, Problem> {
    addrs::parse_ips(text).map(Sources)
}

fn pids(text: &str) -> Result<Pids, Problem> {
    values::pids(text).map(Pids)
}

/// The flags every scenario takes (each says which scenario it is for).
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
struct RunArgs {
    /// IP:PORT or IP:PORT-PORT, comma-separated (default 127.0.0.1:9001); connections are
    /// spread over them
    #[arg(long, alias = "targets", value_name = "ADDR[,ADDR]", value_parser = targets,
          help_heading = "Where and how many")]
    target: Option<Targets>,
    /// Broadcast, failover: the subscribers' servers (instead of --target), spread as --target
    #[arg(long, value_name = "ADDR[,ADDR]", value_parser = targets, conflicts_with = "target",
          help_heading = "Where and how many")]
    subscriber_targets: Option<Targets>,
    /// Broadcast, failover: the publishers' servers (default: the subscribers'); publisher j
    /// connects to the j-th, round-robin
    #[arg(long, value_name = "ADDR[,ADDR]", value_parser = targets,
          help_heading = "Where and how many")]
    publisher_targets: Option<Targets>,
    /// Permit non-loopback targets and source addresses (refused otherwise)
    #[arg(long, help_heading = "Where and how many")]
    allow_remote: bool,
    /// Request path (default /echo; broadcast: /pubsub)
    #[arg(long, value_name = "PATH", help_heading = "Where and how many")]
    path: Option<String>,
    /// Connections (broadcast: subscribers) (default 1000; at most 10M): 30000, 30_000, 30k, 1m
    #[arg(short = 'n', long, value_name = "N", value_parser = values::count,
          help_heading = "Where and how many")]
    connections: Option<u64>,
    /// Connections opened per second, all processes together (default 5000)
    #[arg(long, value_name = "R", value_parser = values::rate, help_heading = "Where and how many")]
    rate: Option<f64>,
    /// Connects/handshakes in progress at once, per thread (default 1000)
    #[arg(long, value_name = "N", value_parser = values::count,
          help_heading = "Where and how many")]
    max_pending: Option<u64>,
    /// Bind sources round-robin over these, with IP_BIND_ADDRESS_NO_PORT: 127.0.0.2-127.0.0.254,
    /// 127.0.0.2-9, comma lists. One (source, target) pair slows sharply past ~15k connections
    /// on Linux
    #[arg(long, value_name = "LIST", value_parser = sources, help_heading = "Where and how many")]
    source_ips: Option<Sources>,
    /// Worker processes, each under its own fd limit (default: as many as the fd limit needs;
    /// 1 runs in this process)
    #[arg(long, value_name = "P", value_parser = values::count,
          help_heading = "Where and how many")]
    procs: Option<u64>,
    /// Event-loop threads per process (default: cores / processes, at least 1)
    #[arg(long, value_name = "T", value_parser = values::count,
          help_heading = "Where and how many")]
    threads: Option<u64>,

    /// Hold/drive time after every connection is open (default 10s; connect: 0); at most 24h
    #[arg(long, value_name = "D", value_parser = values::duration_ms, help_heading = "Time")]
    duration: Option<u64>,
    /// Stop opening connections after this (default: N/rate + 30s)
    #[arg(long, value_name = "D", value_parser = values::duration_ms, help_heading = "Time")]
    ramp_timeout: Option<u64>,
    /// Per-connection limit for TCP connect plus handshake (default 10s)
    #[arg(long, value_name = "D", value_parser = values::duration_ms, help_heading = "Time")]
    connect_timeout: Option<u64>,
    /// After driving, wait at most this long for replies/deliveries (default 5s)
    #[arg(long, value_name = "D", value_parser = values::duration_ms, help_heading = "Time")]
    drain: Option<u64>,
    /// Time the server has to answer our close frames (default 2s plus 1s per 10,000
    /// connections)
    #[arg(long, value_name = "D", value_parser = values::duration_ms, help_heading = "Time")]
    close_timeout: Option<u64>,
    /// Also send pings from the client when the server is silent this long
    #[arg(long, value_name = "D", value_parser = values::duration_ms, help_heading = "Time")]
    ping_interval: Option<u64>,
    /// Close connections on which nothing arrived for this long
    #[arg(long, value_name = "D", value_parser = values::duration_ms, help_heading = "Time")]
    idle_timeout: Option<u64>,

    /// Message payload size (echo: at least 20; default 64)
    #[arg(long, value_name = "BYTES", value_parser = values::count, help_heading = "Messages")]
    size: Option<u64>,
    /// Echo: messages in flight per connection (default 1)
    #[arg(long, value_name = "W", value_parser = values::count, conflicts_with = "msg_rate",
          help_heading = "Messages")]
    window: Option<u64>,
    /// Echo: messages per second per connection, fixed rate (instead of --window)
    #[arg(long, value_name = "R", value_parser = values::rate, help_heading = "Messages")]
    msg_rate: Option<f64>,
    /// Broadcast: publishing connections (default 1; at most 1000)
    #[arg(long, value_name = "P", value_parser = values::count, help_heading = "Messages")]
    publishers: Option<u64>,
    /// Broadcast: messages per second per publisher (default 10)
    #[arg(long, value_name = "R", value_parser = values::rate, help_heading = "Messages")]
    publish_rate: Option<f64>,
    /// Broadcast: topic name, [A-Za-z0-9._-]{1,128} (default bench)
    #[arg(long, value_name = "T", help_heading = "Messages")]
    topic: Option<String>,
    /// Broadcast: pubsub (the /pubsub text protocol), v1 (the client protocol
    /// /connection/v1, with offsets and recovery; the server must allow anonymous connections)
    /// or socketio (a Socket.IO peer, benches/socketio) (default pubsub; the default --path
    /// follows)
    #[arg(
        long,
        value_enum,
        value_name = "P",
        hide_possible_values = true,
        help_heading = "Messages"
    )]
    protocol: Option<ProtocolArg>,
    /// Broadcast: subscribe with a command and start publishing only once every subscription
    /// is confirmed live in every process (always with more than one target, and with v1)
    #[arg(long, help_heading = "Messages")]
    confirm_subscriptions: bool,
    /// Offer permessage-deflate (no context on either side): messages are compressed when the
    /// server accepts (c10m serve --deflate)
    #[arg(long, help_heading = "Messages")]
    deflate: bool,

    /// Speak wss:// (rustls, ALPN http/1.1); the server's certificate is checked against
    /// --tls-ca, or not at all with --tls-insecure
    #[arg(long, requires = "tls_trust", help_heading = "TLS")]
    tls: bool,
    /// PEM file of the certificates to trust (a self-signed server's own certificate)
    #[arg(
        long,
        value_name = "FILE",
        group = "tls_trust",
        requires = "tls",
        help_heading = "TLS"
    )]
    tls_ca: Option<PathBuf>,
    /// Accept any server certificate (benchmarks on loopback); the handshake is otherwise real
    #[arg(long, group = "tls_trust", requires = "tls", help_heading = "TLS")]
    tls_insecure: bool,
    /// The name the certificate must carry, sent as SNI (default: the target's address)
    #[arg(long, value_name = "NAME", requires = "tls", help_heading = "TLS")]
    tls_server_name: Option<String>,

    /// Failover: the server process to kill with SIGKILL (it must listen on a subscriber
    /// target, and on no publisher target)
    #[arg(long, value_name = "PID", value_parser = values::pid, help_heading = "Failover")]
    kill_pid: Option<u32>,
    /// Failover: the servers behind the subscribers' targets when those are a load balancer
    /// (nginx): --kill-pid must listen on one of these instead
    #[arg(long, value_name = "ADDR[,ADDR]", value_parser = targets, help_heading = "Failover")]
    upstreams: Option<Targets>,
    /// Failover: when to kill it, after publishing began (default: a third of --duration)
    #[arg(long, value_name = "D", value_parser = values::duration_ms, help_heading = "Failover")]
    kill_at: Option<u64>,
    /// Failover: a dropped subscriber's first retry waits up to this; each further one twice
    /// as long (full jitter) (default 1s)
    #[arg(long, value_name = "D", value_parser = values::duration_ms, help_heading = "Failover")]
    reconnect_base: Option<u64>,
    /// Failover: the longest wait between retries (default 30s)
    #[arg(long, value_name = "D", value_parser = values::duration_ms, help_heading = "Failover")]
    reconnect_max: Option<u64>,

    /// Print the final report as JSON on stdout (the text report goes to stderr)
    #[arg(long, help_heading = "Output")]
    json: bool,
    /// Write a self-contained HTML report with charts over time
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    html: Option<PathBuf>,
    /// Sample these server processes' RSS and CPU, and the kernel's socket memory
    /// (/proc/meminfo Slab, /proc/net/sockstat): bytes per connection
    #[arg(long, alias = "server-pids", value_name = "PID[,PID]", value_parser = pids,
          help_heading = "Output")]
    server_pid: Option<Pids>,
    /// No progress line on stderr
    #[arg(short, long, help_heading = "Output")]
    quiet: bool,
}

impl RunArgs {
    /// The scenario's defaults with the flags given laid over them.
    fn into_options(self, scenario: ScenarioKind) -> Options {
        // Counts past the field's type become its maximum, which validate() then refuses.
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let mut o = Options::new(scenario);
        if let Some(Targets(t)) = self.target.or(self.subscriber_targets) {
            o.targets = t;
        }
        if let Some(Targets(t)) = self.publisher_targets {
            o.publisher_targets = t;
        }
        if let Some(Sources(s)) = self.source_ips {
            o.sources = s;
        }
        o.allow_remote = self.allow_remote;
        let path_given = self.path.is_some();
        if let Some(p) = self.path {
            o.path = p;
        }
        set(&mut o.connections, self.connections);
        set(&mut o.rate, self.rate);
        set(&mut o.max_pending, self.max_pending.map(size));
        set(&mut o.procs, self.procs.map(size));
        set(&mut o.threads, self.threads.map(size));
        set(&mut o.duration_ms, self.duration);
        if self.ramp_timeout.is_some() {
            o.ramp_timeout_ms = self.ramp_timeout;
        }
        set(
            &mut o.connect_timeout_ms,
            self.connect_timeout.map(|d| d.max(1)),
        );
        set(&mut o.drain_ms, self.drain);
        if self.close_timeout.is_some() {
            o.close_timeout_ms = self.close_timeout;
        }
        if let Some(d) = self.ping_interval {
            o.ping_interval_ms = Some(d.max(1));
        }
        if let Some(d) = self.idle_timeout {
            o.idle_timeout_ms = Some(d.max(1));
        }
        set(&mut o.size, self.size.map(size));
        // clap refuses --window together with --msg-rate.
        if let Some(w) = self.window {
            o.echo = EchoMode::Window(u32::try_from(w).unwrap_or(u32::MAX));
        }
        if let Some(r) = self.msg_rate {
            o.echo = EchoMode::Rate(r);
        }
        set(
            &mut o.publishers,
            self.publishers
                .map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
        );
        set(&mut o.publish_rate, self.publish_rate);
        if let Some(t) = self.topic {
            o.topic = t;
        }
        if let Some(p) = self.protocol {
            o.protocol = p.into();
            if !path_given && scenario.is_broadcast() {
                o.path = o.protocol.default_path().into();
            }
        }
        o.confirm_subscriptions = self.confirm_subscriptions;
        o.deflate = self.deflate;
        if self.tls {
            o.tls = Some(crate::plan::TlsPlan {
                ca: self.tls_ca,
                server_name: self.tls_server_name,
            });
        }
        o.kill_pid = self.kill_pid;
        if let Some(Targets(t)) = self.upstreams {
            o.upstreams = t;
        }
        o.kill_at_ms = self.kill_at;
        set(&mut o.reconnect.base_ms, self.reconnect_base);
        set(&mut o.reconnect.max_ms, self.reconnect_max);
        o.json = self.json;
        o.html = self.html;
        if let Some(Pids(p)) = self.server_pid {
            o.server_pids = p;
        }
        o.quiet = self.quiet;
        o
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// A scenario's clap command, for formatting errors found after parsing like clap's own
/// (with that scenario's usage line).
pub(super) fn command_of(scenario: ScenarioKind) -> clap::Command {
    let mut top = Cli::command();
    // Building sets the subcommands' full names (`c10m-loadtest echo`) for their usage lines.
    top.build();
    top.find_subcommand(scenario.name()).cloned().unwrap_or(top)
}

/// Parses and validates the arguments (without the program name).
pub(super) fn parse<I, T>(args: I) -> Result<Command, ParseError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let name = std::iter::once(OsString::from("c10m-loadtest"));
    let cli = Cli::try_parse_from(name.chain(args.into_iter().map(Into::into)))
        .map_err(ParseError::Clap)?;
    let (scenario, args) = match cli.scenario {
        Some(Scenario::Connect(a)) => (ScenarioKind::Connect, a),
        Some(Scenario::Idle(a)) => (ScenarioKind::Idle, a),
        Some(Scenario::Echo(a)) => (ScenarioKind::Echo, a),
        Some(Scenario::Broadcast(a)) => (ScenarioKind::Broadcast, a),
        Some(Scenario::Failover(a)) => (ScenarioKind::Failover, a),
        Some(Scenario::Sfu(a)) => {
            if a.target.iter().any(|t| !t.ip().is_loopback()) {
                return Err(ParseError::Clap(Cli::command().error(
                    clap::error::ErrorKind::ValueValidation,
                    "sfu: every --target must be a loopback address",
                )));
            }
            return Ok(Command::Sfu(crate::sfu::SfuOptions {
                targets: a.target,
                path: a.path,
                rooms: a.rooms,
                publishers: a.publishers,
                subscribers: a.subscribers,
                verified: a.verified.unwrap_or(a.subscribers).min(a.subscribers),
                rate: a.rate,
                size: usize::from(a.size),
                duration: std::time::Duration::from_millis(a.duration),
                server_pid: a.server_pid,
                json: a.json,
            }));
        }
        None if cli.worker => {
            return Ok(Command::Worker {
                log_format: cli.log_format,
            });
        }
        None => {
            // Only `--log-format` alone gets here (no arguments at all prints the help).
            return Err(ParseError::Clap(Cli::command().error(
                clap::error::ErrorKind::MissingSubcommand,
                "no scenario given (connect, idle, echo, broadcast, failover, sfu)",
            )));
        }
    };
    let mut options = args.into_options(scenario);
    options.log_format = cli.log_format;
    options
        .validate()
        .map_err(|error| ParseError::Usage { scenario, error })?;
    Ok(Command::Run(Box::new(options)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clap_description_is_consistent() {
        Cli::command().debug_assert();
    }
}
