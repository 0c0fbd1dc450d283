//! What a run is told ([`Options`]), its defaults per scenario and its limits. The command line
//! ([`super::args`]) only overlays the flags given onto [`Options::new`], so each default lives
//! here once.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::{
    LogFormat, MAX_CONNECTIONS, MAX_DURATION_MS, MAX_PUBLISHERS, MAX_SIZE, Problem, UsageError,
    addrs,
};

/// The five scenarios.
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
    /// Broadcast while one node is killed: its subscribers reconnect to the others.
    Failover,
}

impl ScenarioKind {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Connect => "connect",
            ScenarioKind::Idle => "idle",
            ScenarioKind::Echo => "echo",
            ScenarioKind::Broadcast => "broadcast",
            ScenarioKind::Failover => "failover",
        }
    }

    /// Whether it publishes to subscribers (broadcast and failover).
    pub fn is_broadcast(self) -> bool {
        matches!(self, ScenarioKind::Broadcast | ScenarioKind::Failover)
    }
}

/// What subscribers and publishers speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// The built-in `/pubsub` text protocol (`sub`, `pub`, `msg`): no history, so a subscriber
    /// that was away misses what was published meanwhile.
    #[default]
    Pubsub,
    /// The client protocol `/connection/v1` (JSON; docs/PROTOCOL.md): offsets and epochs, and a
    /// subscriber that comes back recovers what it missed from the channel's history. The
    /// server must accept anonymous connections (no token key).
    V1,
    /// Socket.IO (Engine.IO 4, WebSocket transport) against the peer program in
    /// `benches/socketio/` (events `sub`, `subscribed`, `pub`, `msg`): no history.
    SocketIo,
}

impl Protocol {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pubsub => "pubsub",
            Protocol::V1 => "v1",
            Protocol::SocketIo => "socketio",
        }
    }

    /// The request path it is served on by `c10m serve`.
    pub fn default_path(self) -> &'static str {
        match self {
            Protocol::Pubsub => "/pubsub",
            Protocol::V1 => "/connection/v1",
            Protocol::SocketIo => crate::socketio::PATH,
        }
    }
}

/// How a dropped subscriber retries (failover): attempt `k` (from 0) waits a random time in
/// `[0, min(max, base x 2^k)]` (exponential backoff with full jitter, as clients should).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    /// The first attempt's bound (ms).
    pub base_ms: u64,
    /// The largest bound (ms).
    pub max_ms: u64,
}

impl Backoff {
    /// The bound of attempt `k` (ms).
    pub fn bound_ms(&self, k: u32) -> u64 {
        let doubled = self.base_ms.saturating_mul(1u64 << k.min(40));
        doubled.min(self.max_ms).max(1)
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
    /// Servers to connect to (broadcast: the subscribers' servers).
    pub targets: Vec<SocketAddr>,
    /// Broadcast: the publishers' servers (empty: the same as `targets`).
    pub publisher_targets: Vec<SocketAddr>,
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
    /// Broadcast: what subscribers and publishers speak.
    pub protocol: Protocol,
    /// Broadcast: subscribers subscribe with a command and count as open once the server says
    /// the subscription is live everywhere (always with more than one target, and in `v1`).
    pub confirm_subscriptions: bool,
    /// Offer permessage-deflate.
    pub deflate: bool,
    /// Speak wss:// (None: ws://).
    pub tls: Option<crate::plan::TlsPlan>,
    /// Failover: the server process to kill (SIGKILL).
    pub kill_pid: Option<u32>,
    /// Failover: the servers behind the subscribers' targets (a load balancer's upstreams);
    /// empty: the targets are the servers.
    pub upstreams: Vec<SocketAddr>,
    /// Failover: when to kill it, after the drive phase began (None: a third of the way in).
    pub kill_at_ms: Option<u64>,
    /// Failover: how dropped subscribers retry.
    pub reconnect: Backoff,
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
    /// How log lines are written (worker processes are told the same).
    pub log_format: LogFormat,
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
            publisher_targets: Vec::new(),
            sources: Vec::new(),
            allow_remote: false,
            path: if scenario.is_broadcast() {
                Protocol::Pubsub.default_path().into()
            } else {
                "/echo".into()
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
            protocol: Protocol::Pubsub,
            confirm_subscriptions: false,
            deflate: false,
            tls: None,
            kill_pid: None,
            upstreams: Vec::new(),
            kill_at_ms: None,
            // The client policy: 1 s doubling, capped at 30 s.
            reconnect: Backoff {
                base_ms: 1_000,
                max_ms: 30_000,
            },
            ping_interval_ms: None,
            idle_timeout_ms: None,
            json: false,
            html: None,
            quiet: false,
            server_pids: Vec::new(),
            log_format: LogFormat::Human,
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

    /// Publishers, in the broadcast scenarios only.
    pub fn publishers_if_any(&self) -> u32 {
        if self.scenario.is_broadcast() {
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
        addrs::check_loopback(
            self.publisher_targets.iter().map(SocketAddr::ip),
            self.allow_remote,
        )
        .map_err(|p| err("--publisher-targets", p))?;
        addrs::check_loopback(self.sources.iter().copied(), self.allow_remote)
            .map_err(|p| err("--source-ips", p))?;
        self.validate_failover()?;
        if self.sources.iter().any(|s| {
            self.targets
                .iter()
                .chain(&self.publisher_targets)
                .any(|t| t.is_ipv4() != s.is_ipv4())
        }) {
            return Err(err(
                "--source-ips",
                Problem::Conflict("source and target addresses must be of one family"),
            ));
        }
        Ok(())
    }
}

impl Options {
    /// The publishers' servers.
    pub fn publisher_targets(&self) -> &[SocketAddr] {
        if self.publisher_targets.is_empty() {
            &self.targets
        } else {
            &self.publisher_targets
        }
    }

    /// Whether subscribers subscribe with a command and wait for the server's confirmation:
    /// when asked, in `v1` (which has no other way), in failover, and whenever subscribers and
    /// publishers use more than one server between them (with a broker, a subscription made on
    /// open is live in other processes only once the broker confirmed it).
    pub fn confirms_subscriptions(&self) -> bool {
        let mut all: Vec<SocketAddr> = self
            .targets
            .iter()
            .chain(self.publisher_targets())
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        self.confirm_subscriptions
            || matches!(self.protocol, Protocol::V1 | Protocol::SocketIo)
            || self.scenario == ScenarioKind::Failover
            || all.len() > 1
    }

    /// When the node is killed, after the drive phase began (ms).
    pub fn kill_at_ms(&self) -> u64 {
        self.kill_at_ms.unwrap_or(self.duration_ms / 3)
    }

    fn validate_failover(&self) -> Result<(), UsageError> {
        let err = |flag: &str, problem| UsageError {
            flag: flag.to_owned(),
            problem,
        };
        if self.scenario != ScenarioKind::Failover {
            return Ok(());
        }
        match self.kill_pid {
            None => {
                return Err(err(
                    "--kill-pid",
                    Problem::Conflict("failover needs --kill-pid: the server process to kill"),
                ));
            }
            Some(pid) if pid <= 1 || pid == std::process::id() => {
                return Err(err(
                    "--kill-pid",
                    Problem::Conflict("refusing to kill init or this process"),
                ));
            }
            Some(_) => {}
        }
        if self.kill_at_ms() >= self.duration_ms {
            return Err(err(
                "--kill-at",
                Problem::OutOfRange {
                    value: self.kill_at_ms() as f64,
                    min: 0.0,
                    max: self.duration_ms.saturating_sub(1) as f64,
                },
            ));
        }
        if self.reconnect.base_ms == 0 || self.reconnect.max_ms < self.reconnect.base_ms {
            return Err(err(
                "--reconnect-max",
                Problem::Conflict("the backoff needs 0 < --reconnect-base <= --reconnect-max"),
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
