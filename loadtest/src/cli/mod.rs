//! Command-line flags to [`Options`]: parsing and validation, with errors as data.

pub mod addrs;
mod usage;
pub mod values;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use usage::USAGE;

/// Most connections one run may open (all processes together).
pub const MAX_CONNECTIONS: u64 = 10_000_000;
/// Longest drive phase.
pub const MAX_DURATION_MS: u64 = 24 * 3_600_000;
/// Most publishers.
pub const MAX_PUBLISHERS: u32 = 1_000;
/// Largest message.
pub const MAX_SIZE: usize = 16 << 20;

/// What a flag value got wrong.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// No such flag.
    Unknown,
    /// The flag needs a value.
    MissingValue,
    /// Not a whole number.
    NotANumber(String),
    /// Not a duration.
    NotADuration(String),
    /// Not an IP address or IP:PORT.
    NotAnAddress(String),
    /// A range whose end is before its start.
    BadRange(String),
    /// A list that expands past this many entries.
    TooMany(usize),
    /// An empty list.
    Empty,
    /// Outside the allowed range.
    OutOfRange {
        /// The value given.
        value: f64,
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// A non-loopback address without `--allow-remote`.
    NotLoopback(IpAddr),
    /// Not a valid topic name.
    BadTopic(String),
    /// Not one of the scenarios.
    UnknownScenario(String),
    /// No scenario given.
    NoScenario,
    /// The flag does not apply to this scenario, or conflicts with another.
    Conflict(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unknown => write!(f, "unknown option"),
            Problem::MissingValue => write!(f, "needs a value"),
            Problem::NotANumber(v) => write!(f, "not a number: {v}"),
            Problem::NotADuration(v) => write!(f, "not a duration: {v} (try 10, 10s, 500ms, 2m)"),
            Problem::NotAnAddress(v) => write!(f, "not an address: {v}"),
            Problem::BadRange(v) => write!(f, "range ends before it starts: {v}"),
            Problem::TooMany(n) => write!(f, "expands to more than {n} entries"),
            Problem::Empty => write!(f, "empty list"),
            Problem::OutOfRange { value, min, max } => {
                write!(f, "{value} is outside {min}..={max}")
            }
            Problem::NotLoopback(ip) => write!(
                f,
                "{ip} is not a loopback address; pass --allow-remote to load another host"
            ),
            Problem::BadTopic(t) => write!(f, "bad topic {t:?}: use 1-128 of [A-Za-z0-9._-]"),
            Problem::UnknownScenario(s) => {
                write!(f, "unknown scenario {s:?} (connect, idle, echo, broadcast)")
            }
            Problem::NoScenario => write!(f, "no scenario given (connect, idle, echo, broadcast)"),
            Problem::Conflict(why) => write!(f, "{why}"),
        }
    }
}

/// A usage error: which flag, and what is wrong with it.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageError {
    /// The flag (`--rate`), or the argument.
    pub flag: String,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.problem)
    }
}

impl std::error::Error for UsageError {}

/// The four scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// Open connections.
    Connect,
    /// Hold connections.
    Idle,
    /// Echo messages.
    Echo,
    /// Publish to subscribers.
    Broadcast,
}

impl ScenarioKind {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Connect => "connect",
            ScenarioKind::Idle => "idle",
            ScenarioKind::Echo => "echo",
            ScenarioKind::Broadcast => "broadcast",
        }
    }
}

/// How echo connections send.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EchoMode {
    /// Keep this many messages in flight (closed loop: latency from the actual send).
    Window(u32),
    /// Send this many messages per second (open loop: latency from the intended send time).
    Rate(f64),
}

/// Everything a run is told.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Scenario.
    pub scenario: ScenarioKind,
    /// Servers to connect to.
    pub targets: Vec<SocketAddr>,
    /// Source addresses to bind (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// Non-loopback addresses permitted.
    pub allow_remote: bool,
    /// Request path.
    pub path: String,
    /// Connections (broadcast: subscribers).
    pub connections: u64,
    /// Connections per second.
    pub rate: f64,
    /// Connects/handshakes in progress per thread.
    pub max_pending: usize,
    /// Drive phase length.
    pub duration_ms: u64,
    /// Ramp limit (None: derived).
    pub ramp_timeout_ms: Option<u64>,
    /// Per-connection connect+handshake limit.
    pub connect_timeout_ms: u64,
    /// Drain limit.
    pub drain_ms: u64,
    /// Close handshake limit (None: derived from the connection count).
    pub close_timeout_ms: Option<u64>,
    /// Worker processes (0: automatic).
    pub procs: usize,
    /// Threads per process (0: automatic).
    pub threads: usize,
    /// Message size.
    pub size: usize,
    /// Echo sending mode.
    pub echo: EchoMode,
    /// Broadcast publishers.
    pub publishers: u32,
    /// Messages per second per publisher.
    pub publish_rate: f64,
    /// Broadcast topic.
    pub topic: String,
    /// Client pings.
    pub ping_interval_ms: Option<u64>,
    /// Client idle timeout.
    pub idle_timeout_ms: Option<u64>,
    /// JSON report on stdout.
    pub json: bool,
    /// HTML report file.
    pub html: Option<PathBuf>,
    /// No progress line.
    pub quiet: bool,
    /// Server processes to sample.
    pub server_pids: Vec<u32>,
    /// The executable started as a worker process (default: this one). Set by tests, whose own
    /// executable is the test harness.
    pub worker_exe: Option<PathBuf>,
}

impl Options {
    /// Defaults for a scenario.
    pub fn new(scenario: ScenarioKind) -> Self {
        Options {
            scenario,
            targets: vec![SocketAddr::from(([127, 0, 0, 1], 9001))],
            sources: Vec::new(),
            allow_remote: false,
            path: match scenario {
                ScenarioKind::Broadcast => "/pubsub".into(),
                _ => "/echo".into(),
            },
            connections: 1_000,
            rate: 5_000.0,
            max_pending: 1_000,
            duration_ms: match scenario {
                ScenarioKind::Connect => 0,
                _ => 10_000,
            },
            ramp_timeout_ms: None,
            connect_timeout_ms: 10_000,
            drain_ms: 5_000,
            close_timeout_ms: None,
            procs: 0,
            threads: 0,
            size: 64,
            echo: EchoMode::Window(1),
            publishers: 1,
            publish_rate: 10.0,
            topic: "bench".into(),
            ping_interval_ms: None,
            idle_timeout_ms: None,
            json: false,
            html: None,
            quiet: false,
            server_pids: Vec::new(),
            worker_exe: None,
        }
    }

    /// The ramp limit: the given one, or the ideal ramp time plus 30 s.
    pub fn ramp_timeout_ms(&self) -> u64 {
        self.ramp_timeout_ms.unwrap_or_else(|| {
            let total = self.connections + u64::from(self.publishers_if_any());
            (total as f64 / self.rate * 1_000.0) as u64 + 30_000
        })
    }

    /// The close limit: the given one, or 2 s plus 1 s per 10,000 connections (every
    /// connection is closed at once at the end, and the server answers them one by one).
    pub fn close_timeout_ms(&self) -> u64 {
        self.close_timeout_ms
            .unwrap_or(2_000 + (self.connections + u64::from(self.publishers_if_any())) / 10)
    }

    /// Publishers, in the broadcast scenario only.
    pub fn publishers_if_any(&self) -> u32 {
        if self.scenario == ScenarioKind::Broadcast {
            self.publishers
        } else {
            0
        }
    }

    /// Checks limits and the loopback policy.
    pub fn validate(&self) -> Result<(), UsageError> {
        let err = |flag: &str, problem| UsageError {
            flag: flag.to_owned(),
            problem,
        };
        let range = |flag: &str, value: f64, min: f64, max: f64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(err(flag, Problem::OutOfRange { value, min, max }))
            }
        };
        range(
            "--connections",
            self.connections as f64,
            1.0,
            MAX_CONNECTIONS as f64,
        )?;
        range(
            "--duration",
            self.duration_ms as f64,
            0.0,
            MAX_DURATION_MS as f64,
        )?;
        range("--max-pending", self.max_pending as f64, 1.0, 1e6)?;
        range("--procs", self.procs as f64, 0.0, 1024.0)?;
        range("--threads", self.threads as f64, 0.0, 256.0)?;
        range("--size", self.size as f64, 0.0, MAX_SIZE as f64)?;
        range(
            "--publishers",
            f64::from(self.publishers),
            1.0,
            f64::from(MAX_PUBLISHERS),
        )?;
        range("--publish-rate", self.publish_rate, 0.001, 1e6)?;
        range("--rate", self.rate, 0.001, 1e7)?;
        match self.echo {
            EchoMode::Window(w) => range("--window", f64::from(w), 1.0, 10_000.0)?,
            EchoMode::Rate(r) => range("--msg-rate", r, 0.001, 1e6)?,
        }
        if self.scenario == ScenarioKind::Echo && self.size < crate::payload::ECHO_HEADER {
            return Err(err(
                "--size",
                Problem::OutOfRange {
                    value: self.size as f64,
                    min: crate::payload::ECHO_HEADER as f64,
                    max: MAX_SIZE as f64,
                },
            ));
        }
        if !valid_topic(&self.topic) {
            return Err(err("--topic", Problem::BadTopic(self.topic.clone())));
        }
        if !self.path.starts_with('/') || self.path.contains(char::is_whitespace) {
            return Err(err("--path", Problem::NotAnAddress(self.path.clone())));
        }
        if self.targets.is_empty() {
            return Err(err("--target", Problem::Empty));
        }
        addrs::check_loopback(self.targets.iter().map(SocketAddr::ip), self.allow_remote)
            .map_err(|p| err("--target", p))?;
        addrs::check_loopback(self.sources.iter().copied(), self.allow_remote)
            .map_err(|p| err("--source-ips", p))?;
        if self
            .sources
            .iter()
            .any(|s| self.targets.iter().any(|t| t.is_ipv4() != s.is_ipv4()))
        {
            return Err(err(
                "--source-ips",
                Problem::Conflict("source and target addresses must be of one family"),
            ));
        }
        Ok(())
    }
}

/// Topic names the load generator uses: safe in a query string and in `/pubsub` commands.
pub fn valid_topic(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Print the help text.
    Help,
    /// Run as a worker process of a parent (hidden; the plan arrives on stdin).
    Worker,
    /// Run a scenario.
    Run(Box<Options>),
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let err = |flag: &str, problem| UsageError {
        flag: flag.to_owned(),
        problem,
    };
    if args
        .iter()
        .any(|a| a == "-h" || a == "--help" || a == "help")
    {
        return Ok(Command::Help);
    }
    if args.first().map(String::as_str) == Some("--worker") {
        return Ok(Command::Worker);
    }
    let Some(first) = args.first() else {
        return Err(err("scenario", Problem::NoScenario));
    };
    let scenario = match first.as_str() {
        "connect" => ScenarioKind::Connect,
        "idle" => ScenarioKind::Idle,
        "echo" => ScenarioKind::Echo,
        "broadcast" => ScenarioKind::Broadcast,
        other if other.starts_with('-') => return Err(err("scenario", Problem::NoScenario)),
        other => return Err(err("scenario", Problem::UnknownScenario(other.to_owned()))),
    };
    let mut o = Options::new(scenario);
    let mut window = None;
    let mut msg_rate = None;
    let mut it = args[1..].iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let name = if name == "-n" { "--connections" } else { name };
        match name {
            "--json" => o.json = true,
            "--quiet" | "-q" => o.quiet = true,
            "--allow-remote" => o.allow_remote = true,
            _ => {
                let value = match inline {
                    Some(v) => v,
                    None => match it.next() {
                        Some(v) => v.clone(),
                        None => {
                            return Err(err(
                                name,
                                if name.starts_with('-') {
                                    Problem::MissingValue
                                } else {
                                    Problem::Unknown
                                },
                            ));
                        }
                    },
                };
                let v = value.as_str();
                let at = |p| err(name, p);
                match name {
                    "--target" | "--targets" => o.targets = addrs::parse_targets(v).map_err(at)?,
                    "--source-ips" => o.sources = addrs::parse_ips(v).map_err(at)?,
                    "--path" => o.path = v.to_owned(),
                    "--connections" => o.connections = values::count(v).map_err(at)?,
                    "--rate" => o.rate = values::rate(v).map_err(at)?,
                    "--max-pending" => o.max_pending = values::count(v).map_err(at)? as usize,
                    "--duration" => o.duration_ms = values::duration_ms(v).map_err(at)?,
                    "--ramp-timeout" => {
                        o.ramp_timeout_ms = Some(values::duration_ms(v).map_err(at)?)
                    }
                    "--connect-timeout" => {
                        o.connect_timeout_ms = values::duration_ms(v).map_err(at)?.max(1)
                    }
                    "--drain" => o.drain_ms = values::duration_ms(v).map_err(at)?,
                    "--close-timeout" => {
                        o.close_timeout_ms = Some(values::duration_ms(v).map_err(at)?)
                    }
                    "--procs" => o.procs = values::count(v).map_err(at)? as usize,
                    "--threads" => o.threads = values::count(v).map_err(at)? as usize,
                    "--size" => o.size = values::count(v).map_err(at)? as usize,
                    "--window" => window = Some(values::count(v).map_err(at)?),
                    "--msg-rate" => msg_rate = Some(values::rate(v).map_err(at)?),
                    "--publishers" => {
                        o.publishers =
                            u32::try_from(values::count(v).map_err(at)?).unwrap_or(u32::MAX)
                    }
                    "--publish-rate" => o.publish_rate = values::rate(v).map_err(at)?,
                    "--topic" => o.topic = v.to_owned(),
                    "--ping-interval" => {
                        o.ping_interval_ms = Some(values::duration_ms(v).map_err(at)?.max(1))
                    }
                    "--idle-timeout" => {
                        o.idle_timeout_ms = Some(values::duration_ms(v).map_err(at)?.max(1))
                    }
                    "--html" => o.html = Some(PathBuf::from(v)),
                    "--server-pid" | "--server-pids" => {
                        o.server_pids = values::pids(v).map_err(at)?
                    }
                    _ => return Err(err(name, Problem::Unknown)),
                }
            }
        }
    }
    match (window, msg_rate) {
        (Some(_), Some(_)) => {
            return Err(err(
                "--msg-rate",
                Problem::Conflict("--window and --msg-rate exclude each other"),
            ));
        }
        (Some(w), None) => o.echo = EchoMode::Window(u32::try_from(w).unwrap_or(u32::MAX)),
        (None, Some(r)) => o.echo = EchoMode::Rate(r),
        (None, None) => {}
    }
    o.validate()?;
    Ok(Command::Run(Box::new(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn run(s: &str) -> Options {
        match parse(&args(s)) {
            Ok(Command::Run(o)) => *o,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn problem(s: &str) -> (String, Problem) {
        match parse(&args(s)) {
            Err(e) => (e.flag, e.problem),
            ok => panic!("{s}: {ok:?}"),
        }
    }

    #[test]
    fn defaults_per_scenario() {
        let o = run("connect");
        assert_eq!(o.duration_ms, 0);
        assert_eq!(o.path, "/echo");
        assert_eq!(o.targets, ["127.0.0.1:9001".parse::<SocketAddr>().unwrap()]);
        let b = run("broadcast");
        assert_eq!(
            (b.path.as_str(), b.duration_ms, b.publishers),
            ("/pubsub", 10_000, 1)
        );
        assert_eq!(
            b.ramp_timeout_ms(),
            (1001.0 / 5000.0 * 1000.0) as u64 + 30_000
        );
        assert_eq!(b.close_timeout_ms(), 2_100);
        assert_eq!(run("idle -n 1m").close_timeout_ms(), 102_000);
        assert_eq!(run("idle --close-timeout 1s").close_timeout_ms(), 1_000);
    }

    #[test]
    fn flags_and_forms() {
        let o = run(
            "echo -n 30k --rate=2000 --duration 1.5s --msg-rate 10 --size 128 \
             --source-ips 127.0.0.2-127.0.0.254 --target 127.0.0.1:9001-9002 --procs 3 --json \
             --server-pid 10,11 --html out.html --quiet --ping-interval 500ms",
        );
        assert_eq!(o.connections, 30_000);
        assert_eq!(o.rate, 2000.0);
        assert_eq!(o.duration_ms, 1_500);
        assert_eq!(o.echo, EchoMode::Rate(10.0));
        assert_eq!(o.sources.len(), 253);
        assert_eq!(o.targets.len(), 2);
        assert_eq!(o.procs, 3);
        assert!(o.json && o.quiet);
        assert_eq!(o.server_pids, [10, 11]);
        assert_eq!(o.html, Some(PathBuf::from("out.html")));
        assert_eq!(o.ping_interval_ms, Some(500));
        assert_eq!(run("echo --window 8").echo, EchoMode::Window(8));
    }

    #[test]
    fn usage_errors_name_the_flag() {
        assert_eq!(problem(""), ("scenario".into(), Problem::NoScenario));
        assert_eq!(
            problem("flood"),
            ("scenario".into(), Problem::UnknownScenario("flood".into()))
        );
        assert_eq!(
            problem("echo --bogus 1"),
            ("--bogus".into(), Problem::Unknown)
        );
        assert_eq!(
            problem("echo --rate"),
            ("--rate".into(), Problem::MissingValue)
        );
        assert_eq!(
            problem("echo --rate x"),
            ("--rate".into(), Problem::NotANumber("x".into()))
        );
        assert_eq!(
            problem("echo --target 10.1.2.3:80"),
            (
                "--target".into(),
                Problem::NotLoopback("10.1.2.3".parse().unwrap())
            )
        );
        assert_eq!(
            problem("echo --source-ips 192.168.0.1-3"),
            (
                "--source-ips".into(),
                Problem::NotLoopback("192.168.0.1".parse().unwrap())
            )
        );
        assert_eq!(problem("echo --window 2 --msg-rate 3").0, "--msg-rate");
        assert_eq!(problem("echo --size 8").0, "--size");
        assert_eq!(problem("echo -n 0").0, "--connections");
        assert_eq!(problem("echo -n 11m").0, "--connections");
        assert_eq!(
            problem("idle --duration 25h").1,
            Problem::NotADuration("25h".into())
        );
        assert_eq!(problem("idle --duration 1441m").0, "--duration");
        assert_eq!(problem("broadcast --topic a?b").0, "--topic");
        assert_eq!(problem("broadcast --publishers 0").0, "--publishers");
        assert_eq!(
            problem("echo --source-ips ::1").1,
            Problem::Conflict("source and target addresses must be of one family")
        );
        assert_eq!(problem("echo stray").0, "stray");
    }

    #[test]
    fn remote_needs_the_explicit_flag() {
        let o = run("echo --target 10.1.2.3:80 --allow-remote");
        assert!(o.allow_remote);
    }

    #[test]
    fn help_and_worker() {
        assert_eq!(parse(&args("echo --help")), Ok(Command::Help));
        assert_eq!(parse(&args("--worker")), Ok(Command::Worker));
        assert!(USAGE.contains("--source-ips"));
    }
}
