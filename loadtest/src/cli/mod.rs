//! The command line: clap (derive) turns the arguments into [`Options`], then
//! [`Options::validate`] checks the limits. Usage errors are data: clap's own error (unknown
//! flag, with a suggestion; a value that does not parse, naming the flag) or a [`UsageError`]
//! (a limit or policy), both exit status 2.

pub mod addrs;
mod args;
mod options;
pub mod values;

use std::fmt;
use std::net::IpAddr;

use c10m_sysctl::CountError;

pub use args::LogFormat;
pub use options::{Backoff, EchoMode, Options, Protocol, ScenarioKind, valid_topic};

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
    /// Not a count in the project's one grammar (`1000000`, `1_000_000`, `1m`, `20k`).
    Count(CountError),
    /// Not a positive, finite rate.
    NotARate(String),
    /// Not a whole number (a process id).
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
    /// The flag conflicts with another.
    Conflict(&'static str),
    /// Not a process this run may act on (failover's `--kill-pid`), and why.
    NotTheNode(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Count(e) => e.fmt(f),
            Problem::NotARate(v) => {
                write!(
                    f,
                    "not a rate: {v} (a positive number per second: 2.5, 5000, 20k)"
                )
            }
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
            Problem::Conflict(why) => write!(f, "{why}"),
            Problem::NotTheNode(why) => write!(f, "not a node of this run: {why}"),
        }
    }
}

// clap shows it after "invalid value '...' for '--flag <N>': ".
impl std::error::Error for Problem {}

/// A usage error found after parsing: which flag, and what is wrong with it.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageError {
    /// The flag (`--rate`).
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

/// Why the command line was not run.
#[non_exhaustive]
#[derive(Debug)]
pub enum ParseError {
    /// clap stopped: `--help` or `--version` (exit status 0, printed on stdout), or an unknown
    /// flag, a bad value, a missing scenario (exit status 2, on stderr).
    Clap(clap::Error),
    /// The flags parsed but break a limit or the loopback policy (exit status 2).
    Usage {
        /// The scenario whose flags they are (its usage line is printed with the error).
        scenario: ScenarioKind,
        /// What is wrong.
        error: UsageError,
    },
}

impl ParseError {
    /// The exit status: 0 after help or the version, 2 for a usage error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ParseError::Clap(e) => u8::try_from(e.exit_code()).unwrap_or(2),
            ParseError::Usage { .. } => 2,
        }
    }

    /// Prints it the way clap prints its own errors (with the usage line and a pointer to
    /// `--help`), so every usage error reads the same.
    pub fn print(&self) {
        let shown = match self {
            ParseError::Clap(e) => e.print(),
            ParseError::Usage { scenario, error } => args::command_of(*scenario)
                .error(clap::error::ErrorKind::ValueValidation, error)
                .print(),
        };
        // Printing to a closed stdout/stderr has nowhere left to report.
        drop(shown);
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Clap(e) => e.fmt(f),
            ParseError::Usage { error, .. } => error.fmt(f),
        }
    }
}

impl std::error::Error for ParseError {}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run as a worker process of a parent (hidden; the plan arrives on stdin).
    Worker {
        /// How the worker writes its log lines (the parent passes its own).
        log_format: LogFormat,
    },
    /// Run a scenario.
    Run(Box<Options>),
    /// Run `sfu` (its own flags and report).
    Sfu(crate::sfu::SfuOptions),
}

/// Parses the arguments (without the program name).
pub fn parse<I, T>(args: I) -> Result<Command, ParseError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    args::parse(args)
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn run(s: &str) -> Options {
        match parse(args(s)) {
            Ok(Command::Run(options)) => *options,
            other => panic!("{s}: {other:?}"),
        }
    }

    /// A limit or policy broken: the flag and the problem.
    fn problem(s: &str) -> (String, Problem) {
        match parse(args(s)) {
            Err(ParseError::Usage { error, .. }) => (error.flag, error.problem),
            other => panic!("{s}: {other:?}"),
        }
    }

    /// Refused by clap: its kind and the text it prints.
    fn refused(s: &str) -> (ErrorKind, String) {
        match parse(args(s)) {
            Err(e @ ParseError::Clap(_)) => {
                assert_eq!(e.exit_code(), 2, "{s}");
                let ParseError::Clap(c) = e else {
                    unreachable!()
                };
                (c.kind(), c.render().to_string())
            }
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn defaults_per_scenario() {
        let o = run("connect");
        assert_eq!(o, Options::new(ScenarioKind::Connect));
        assert_eq!(o.duration_ms, 0);
        assert_eq!(o.path, "/echo");
        assert_eq!(
            o.targets,
            ["127.0.0.1:9001".parse::<std::net::SocketAddr>().unwrap()]
        );
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
        assert_eq!(o.html, Some(std::path::PathBuf::from("out.html")));
        assert_eq!(o.ping_interval_ms, Some(500));
        assert_eq!(run("echo --window 8").echo, EchoMode::Window(8));
        // Aliases, short forms and repeated flags (the last one counts) as before.
        let o = run("idle --targets 127.0.0.1:80 --server-pids 7 -q -n 5 -n 6");
        assert_eq!((o.targets.len(), o.server_pids.as_slice()), (1, &[7][..]));
        assert!(o.quiet);
        assert_eq!(o.connections, 6);
    }

    #[test]
    fn sfu_spreads_over_several_loopback_targets() {
        match parse(args("sfu --target 127.0.0.1:9001,127.0.0.1:9002 --rooms 2")) {
            Ok(Command::Sfu(o)) => {
                assert_eq!(o.targets.len(), 2);
                assert_eq!(o.rooms, 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(args("sfu --target 127.0.0.1:9001,10.0.0.1:9002")).is_err());
    }

    #[test]
    fn counts_take_the_project_grammar() {
        assert_eq!(run("idle --connections 1m").connections, 1_000_000);
        assert_eq!(run("idle --connections 1_000_000").connections, 1_000_000);
        assert_eq!(run("idle --connections=1,000,000").connections, 1_000_000);
        assert_eq!(run("idle -n 20k").connections, 20_000);
        assert_eq!(run("idle -n 1.5k").connections, 1_500);
        assert_eq!(run("idle --rate 20k").rate, 20_000.0);
        assert_eq!(run("idle --rate 2.5").rate, 2.5);
        assert_eq!(run("idle --max-pending 2k").max_pending, 2_000);
        assert_eq!(run("echo --size 16k").size, 16_000);
        assert_eq!(run("echo --window 1_000").echo, EchoMode::Window(1_000));
        assert_eq!(run("broadcast --publishers 1k").publishers, 1_000);
        let (kind, text) = refused("idle -n 1x");
        assert_eq!(kind, ErrorKind::ValueValidation);
        assert!(
            text.contains("--connections") && text.contains("not a count"),
            "{text}"
        );
        let (_, text) = refused("idle -n 1.0001k");
        assert!(text.contains("not a whole number"), "{text}");
    }

    #[test]
    fn mistyped_flags_get_a_suggestion() {
        let (kind, text) = refused("echo --conections 1m");
        assert_eq!(kind, ErrorKind::UnknownArgument);
        assert!(
            text.contains("similar argument exists: '--connections'"),
            "{text}"
        );
        let (kind, text) = refused("echoo");
        assert_eq!(kind, ErrorKind::InvalidSubcommand);
        assert!(text.contains("similar subcommand exists: 'echo'"), "{text}");
    }

    #[test]
    fn usage_errors_name_the_flag() {
        assert_eq!(
            refused("").0,
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(refused("flood").0, ErrorKind::InvalidSubcommand);
        assert_eq!(refused("--log-format json").0, ErrorKind::MissingSubcommand);
        assert_eq!(refused("echo --bogus 1").0, ErrorKind::UnknownArgument);
        assert_eq!(refused("echo stray").0, ErrorKind::UnknownArgument);
        let (kind, text) = refused("echo --rate");
        assert_eq!(kind, ErrorKind::InvalidValue);
        assert!(text.contains("--rate"), "{text}");
        let (kind, text) = refused("echo --rate x");
        assert_eq!(kind, ErrorKind::ValueValidation);
        assert!(
            text.contains("--rate") && text.contains("not a rate: x"),
            "{text}"
        );
        let (_, text) = refused("idle --duration 25h");
        assert!(text.contains("not a duration: 25h"), "{text}");
        assert_eq!(
            refused("echo --window 2 --msg-rate 3").0,
            ErrorKind::ArgumentConflict
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
        assert_eq!(problem("echo --size 8").0, "--size");
        assert_eq!(problem("echo -n 0").0, "--connections");
        assert_eq!(problem("echo -n 11m").0, "--connections");
        assert_eq!(problem("idle --duration 1441m").0, "--duration");
        assert_eq!(problem("broadcast --topic a?b").0, "--topic");
        assert_eq!(problem("broadcast --publishers 0").0, "--publishers");
        assert_eq!(
            problem("echo --source-ips ::1").1,
            Problem::Conflict("source and target addresses must be of one family")
        );
        assert_eq!(
            parse(args("echo -n 0")).unwrap_err().to_string(),
            "--connections: 0 is outside 1..=10000000"
        );
    }

    #[test]
    fn cross_node_and_failover_flags() {
        let o = run("broadcast --subscriber-targets 127.0.0.1:9001-9002 \
             --publisher-targets 127.0.0.1:9003 --protocol v1");
        assert_eq!(o.targets.len(), 2);
        assert_eq!(
            o.publisher_targets(),
            ["127.0.0.1:9003".parse::<std::net::SocketAddr>().unwrap()]
        );
        assert_eq!(
            (o.protocol, o.path.as_str()),
            (Protocol::V1, "/connection/v1")
        );
        assert!(o.confirms_subscriptions(), "v1 and more than one target");
        // One target: subscribed on open unless asked.
        let one = run("broadcast --target 127.0.0.1:9001");
        assert_eq!(one.publisher_targets(), one.targets.as_slice());
        assert!(!one.confirms_subscriptions());
        assert!(run("broadcast --confirm-subscriptions").confirms_subscriptions());
        assert_eq!(run("broadcast --protocol v1 --path /x").path, "/x");
        assert_eq!(run("echo --protocol v1").path, "/echo", "broadcast only");
        assert_eq!(
            refused("broadcast --target 127.0.0.1:1 --subscriber-targets 127.0.0.1:2").0,
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            problem("broadcast --publisher-targets 10.0.0.1:80").0,
            "--publisher-targets"
        );
        let f = run("failover --kill-pid 4242 --duration 6 --reconnect-base 100ms");
        assert_eq!((f.kill_pid, f.kill_at_ms()), (Some(4242), 2_000));
        assert!(f.upstreams.is_empty(), "the targets are the servers");
        let behind = run("failover --kill-pid 4242 --upstreams 127.0.0.1:9001-9002");
        assert_eq!(
            behind.upstreams,
            [
                "127.0.0.1:9001".parse::<std::net::SocketAddr>().unwrap(),
                "127.0.0.1:9002".parse::<std::net::SocketAddr>().unwrap()
            ]
        );
        assert_eq!(
            (f.reconnect.base_ms, f.reconnect.max_ms, f.path.as_str()),
            (100, 30_000, "/pubsub")
        );
        assert!(f.confirms_subscriptions());
        assert_eq!(f.publishers_if_any(), 1);
        assert_eq!(problem("failover").0, "--kill-pid");
        assert_eq!(problem("failover --kill-pid 1").0, "--kill-pid");
        assert_eq!(
            problem("failover --kill-pid 9 --duration 3 --kill-at 3").0,
            "--kill-at"
        );
        assert_eq!(
            problem("failover --kill-pid 9 --reconnect-base 2s --reconnect-max 1s").0,
            "--reconnect-max"
        );
        // The flags are accepted (and ignored) by a broadcast without a kill.
        assert_eq!(run("broadcast --kill-at 1").kill_at_ms, Some(1_000));
    }

    #[test]
    fn remote_needs_the_explicit_flag() {
        let o = run("echo --target 10.1.2.3:80 --allow-remote");
        assert!(o.allow_remote);
    }

    #[test]
    fn help_version_worker_and_log_format() {
        for (line, kind) in [
            ("--help", ErrorKind::DisplayHelp),
            ("echo --help", ErrorKind::DisplayHelp),
            ("help echo", ErrorKind::DisplayHelp),
            ("--version", ErrorKind::DisplayVersion),
        ] {
            match parse(args(line)) {
                Err(ParseError::Clap(e)) => {
                    assert_eq!(e.kind(), kind, "{line}");
                    assert_eq!(ParseError::Clap(e).exit_code(), 0, "{line}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        let Err(ParseError::Clap(help)) = parse(args("echo --help")) else {
            panic!("no help")
        };
        let help = help.render().to_string();
        for flag in [
            "--source-ips",
            "--msg-rate",
            "--server-pid",
            "Exit status",
            "1m",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
        assert_eq!(
            parse(args("--worker")).unwrap(),
            Command::Worker {
                log_format: LogFormat::Human
            }
        );
        assert_eq!(
            parse(args("--worker --log-format json")).unwrap(),
            Command::Worker {
                log_format: LogFormat::Json
            }
        );
        assert_eq!(run("idle --log-format json").log_format, LogFormat::Json);
        assert_eq!(run("idle").log_format, LogFormat::Human);
    }
}
