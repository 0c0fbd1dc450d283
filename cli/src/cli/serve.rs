//! `c10m serve`: one settings struct behind flags, `C10M_*` variables and the TOML file, mapped
//! onto the engine's [`ServerConfig`], then the server run until SIGTERM or SIGINT.
//!
//! Every field of [`ServeArgs`] but `--config` and `--print-config` is a key of
//! [`ServerConfig`], with the flag `--key-with-dashes` and the variable `C10M_KEY` (the engine's
//! integration tests check that no key lacks either). Each is an `Option` here, so what was not
//! given on the command line or in the environment keeps the TOML file's value, else the
//! engine's default: flag > variable > file > default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use c10m_cluster::token::Verifier;
use c10m_cluster::{
    Backend, Bounds, Limits, Memory, RedisBackend, RedisBroker, RedisLimits, Service, Settings,
};
use c10m_engine::server::{self, Broker, Handle, IoMode, Routes, ServerConfig, apps};
use c10m_signaling::{IceConfig, Limits as SignalingLimits, Signaling};
use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use super::usage_error;

/// A line of the banner on stdout. A closed stdout (`c10m serve | head -1`) must not stop the
/// server, as `println!` would by panicking on the broken pipe: the line is dropped instead.
macro_rules! banner {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The demo room page and its script, served at /demo/.
const DEMO_HTML: &str = include_str!("../demo/index.html");
const DEMO_JS: &str = include_str!("../demo/demo.js");

/// Shown after `c10m serve --help`.
const AFTER_HELP: &str = "\
Every setting is a flag, an environment variable (C10M_ and its TOML key in capitals:
C10M_MAX_FRAME_SIZE) and a key of the --config TOML file (the flag's name with _ for -;
--allowed-origin is the list allowed_origins, C10M_ALLOWED_ORIGINS a comma-separated list;
--deflate-path likewise deflate_paths, C10M_DEFLATE_PATHS).
Precedence, highest first: flag > environment variable > TOML file > default.
--print-config shows what is in effect.

Counts (N) take 1000000, 1_000_000, 1,000,000, 1m, 20k or 1.5k. BYTES and MS are whole
numbers with the same separators (16_777_216) but no k/m/g, which would be ambiguous for a
size; the TOML file takes these as strings or plain integers.

Apps: /echo echoes every message. /pubsub speaks a text protocol: `sub T`, `unsub T`,
`pub T PAYLOAD` (subscribers receive `msg T PAYLOAD`); `/pubsub?topic=T` subscribes on open.
See docs/ARCHITECTURE.md.";

/// A clap value parser for a count setting of type `$t` (the one grammar: `1m`, `20k`).
macro_rules! count {
    ($t:ty) => {
        |text: &str| ServerConfig::parse_count::<$t>(text)
    };
}

/// A clap value parser for a size or time setting of type `$t` (`16_777_216`, no suffix).
macro_rules! whole {
    ($t:ty) => {
        |text: &str| ServerConfig::parse_whole::<$t>(text)
    };
}

/// `c10m serve`'s settings. Each doc line is the flag's help; defaults are added from
/// `ServerConfig::default()` by [`with_defaults`].
#[derive(Args, Debug, Clone, Default)]
#[command(after_help = AFTER_HELP)]
pub struct ServeArgs {
    /// Read settings from this TOML file (keys as the flags, with _ for -)
    #[arg(long, env = "C10M_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the settings in effect (flags, variables, file and defaults merged) as TOML, and
    /// exit without serving
    #[arg(long)]
    pub print_config: bool,

    /// Address to listen on
    #[arg(long, env = "C10M_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Shards (threads, one SO_REUSEPORT listener each); 0 = one per core
    #[arg(long, env = "C10M_SHARDS", value_name = "N", value_parser = count!(usize))]
    pub shards: Option<usize>,

    /// Pin shard i to core i (--pin alone is --pin=true)
    #[arg(
        long,
        env = "C10M_PIN",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub pin: Option<bool>,

    /// permessage-deflate (RFC 7692) for clients that offer it (--deflate alone is
    /// --deflate=true): neither side keeps a compression context between messages, a
    /// published message is compressed once for all its subscribers (default: off)
    #[arg(
        long,
        env = "C10M_DEFLATE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub deflate: Option<bool>,
    /// permessage-deflate on this request path only (repeatable; --deflate covers all)
    #[arg(
        long = "deflate-path",
        env = "C10M_DEFLATE_PATHS",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub deflate_paths: Vec<String>,

    /// Listen backlog per shard (the kernel caps it at net.core.somaxconn)
    #[arg(long, env = "C10M_BACKLOG", value_name = "N", value_parser = count!(i32))]
    pub backlog: Option<i32>,

    /// Largest frame accepted, else close 1009
    #[arg(long, env = "C10M_MAX_FRAME_SIZE", value_name = "BYTES", value_parser = whole!(usize))]
    pub max_frame_size: Option<usize>,

    /// Largest message accepted, fragments added up, else close 1009
    #[arg(long, env = "C10M_MAX_MESSAGE_SIZE", value_name = "BYTES", value_parser = whole!(usize))]
    pub max_message_size: Option<usize>,

    /// Largest HTTP request head, else 431
    #[arg(long, env = "C10M_MAX_HEADER_BYTES", value_name = "BYTES", value_parser = whole!(usize))]
    pub max_header_bytes: Option<usize>,

    /// Time to finish the opening handshake
    #[arg(long, env = "C10M_HANDSHAKE_TIMEOUT_MS", value_name = "MS", value_parser = whole!(u64))]
    pub handshake_timeout_ms: Option<u64>,

    /// Ping a connection silent this long; 0 = never
    #[arg(long, env = "C10M_PING_INTERVAL_MS", value_name = "MS", value_parser = whole!(u64))]
    pub ping_interval_ms: Option<u64>,

    /// Close a connection silent this long (1001); 0 = never
    #[arg(long, env = "C10M_IDLE_TIMEOUT_MS", value_name = "MS", value_parser = whole!(u64))]
    pub idle_timeout_ms: Option<u64>,

    /// Time the peer has to answer our close frame
    #[arg(long, env = "C10M_CLOSE_TIMEOUT_MS", value_name = "MS", value_parser = whole!(u64))]
    pub close_timeout_ms: Option<u64>,

    /// Close a slow consumer whose unsent output exceeds this
    #[arg(long, env = "C10M_WRITE_QUEUE_LIMIT", value_name = "BYTES", value_parser = whole!(usize))]
    pub write_queue_limit: Option<usize>,

    /// Refuse connections beyond this many per shard
    #[arg(
        long,
        env = "C10M_MAX_CONNECTIONS_PER_SHARD",
        value_name = "N",
        value_parser = count!(usize)
    )]
    pub max_connections_per_shard: Option<usize>,

    /// Open connections one source address (IPv6: its /64) may hold; past it 429 (0: no
    /// limit)
    #[arg(long, env = "C10M_MAX_CONNECTIONS_PER_SOURCE", value_name = "N", value_parser = count!(u32))]
    pub max_connections_per_source: Option<u32>,

    /// New connections per second one source address may open (a burst of as many); past it
    /// 429 (0: no limit)
    #[arg(long, env = "C10M_MAX_HANDSHAKES_PER_SOURCE_PER_SEC", value_name = "N", value_parser = count!(u32))]
    pub max_handshakes_per_source_per_sec: Option<u32>,

    /// New connections per second to the whole process (a burst of as many); past it 503
    /// (0: no limit)
    #[arg(long, env = "C10M_MAX_HANDSHAKES_PER_SEC", value_name = "N", value_parser = count!(u32))]
    pub max_handshakes_per_sec: Option<u32>,

    /// Bytes of unfinished input (partial frames, fragmented messages) the whole process may
    /// hold; a connection that would pass it is closed with 1013
    #[arg(long, env = "C10M_MAX_REASSEMBLY_BYTES", value_name = "BYTES", value_parser = whole!(usize))]
    pub max_reassembly_bytes: Option<usize>,

    /// Topics one connection may subscribe to (past it: refused, counted)
    #[arg(
        long,
        env = "C10M_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        value_name = "N",
        value_parser = count!(usize)
    )]
    pub max_subscriptions_per_connection: Option<usize>,

    /// Topics one shard may hold (past it: a subscribe to a new topic is refused, counted)
    #[arg(long, env = "C10M_MAX_TOPICS_PER_SHARD", value_name = "N", value_parser = count!(usize))]
    pub max_topics_per_shard: Option<usize>,

    /// Mail one shard may have queued (publishes, sends, posts); past it such mail is dropped
    /// and counted
    #[arg(long, env = "C10M_MAILBOX_LIMIT", value_name = "N", value_parser = count!(usize))]
    pub mailbox_limit: Option<usize>,

    /// On SIGTERM/SIGINT, time to close connections with 1001
    #[arg(long, env = "C10M_DRAIN_TIMEOUT_MS", value_name = "MS", value_parser = whole!(u64))]
    pub drain_timeout_ms: Option<u64>,

    /// Each shard's read buffer (epoll; at least 4096 is used)
    #[arg(long, env = "C10M_READ_BUFFER_SIZE", value_name = "BYTES", value_parser = whole!(usize))]
    pub read_buffer_size: Option<usize>,

    /// Let deliveries to a connection wait up to this long so several share one write (fan-out
    /// at many messages a second costs less CPU, each waits at most this much longer;
    /// default 0: written at the end of each loop iteration; at most 1000)
    #[arg(long, env = "C10M_WRITE_DELAY_MS", value_name = "MS", value_parser = whole!(u64))]
    pub write_delay_ms: Option<u64>,

    /// Timer wheel resolution (handshake, ping, idle and close deadlines)
    #[arg(long, env = "C10M_TIMER_TICK_MS", value_name = "MS", value_parser = whole!(u64))]
    pub timer_tick_ms: Option<u64>,

    /// Allow this Origin only (repeatable; default: any origin). With it, a request without
    /// an Origin header is refused (403) too
    #[arg(
        long = "allowed-origin",
        env = "C10M_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Serve /metrics (Prometheus) and /health over plain HTTP on ADDR (default: none). /health
    /// answers 503 when a shard has stopped or its loop has not run for 10 s, "degraded" (200)
    /// while the broker is away, else "ok"
    #[arg(long, env = "C10M_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Carry publishes across processes and hosts through this Redis (redis://HOST:PORT[/DB]);
    /// default: none, publishes stay in this process
    #[arg(long, env = "C10M_BROKER", value_name = "URL")]
    pub broker: Option<String>,

    /// The client protocol (/connection/v1): the HS256 secret its tokens are signed with
    /// (default: none; with no token key, connections are anonymous)
    #[arg(
        long,
        env = "C10M_TOKEN_HS256_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub token_hs256_secret: Option<String>,

    /// The client protocol: a PEM file with the RSA public key its RS256 tokens are checked
    /// with (default: none)
    #[arg(long, env = "C10M_TOKEN_RS256_KEY", value_name = "FILE")]
    pub token_rs256_key: Option<PathBuf>,

    /// Serve wss:// (TLS) with this PEM certificate chain, the server's certificate first
    /// (needs --tls-key; both are read again on SIGHUP; default: none, ws://)
    #[arg(long, env = "C10M_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// wss://: the PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "C10M_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// The client protocol: publications kept per channel for history and recovery
    #[arg(long, env = "C10M_HISTORY_SIZE", value_name = "N", value_parser = count!(usize))]
    pub history_size: Option<usize>,

    /// The client protocol: how long a channel's history lives after its last publish
    #[arg(long, env = "C10M_HISTORY_TTL_MS", value_name = "MS", value_parser = whole!(u64))]
    pub history_ttl_ms: Option<u64>,

    /// The client protocol across nodes: how long a presence or user entry lives unless its
    /// node refreshes it (a killed node's entries expire within this)
    #[arg(long, env = "C10M_PRESENCE_TTL_MS", value_name = "MS", value_parser = whole!(u64))]
    pub presence_ttl_ms: Option<u64>,

    /// The client protocol: interval of its JSON ping pushes (clients that hear nothing for
    /// twice this reconnect)
    #[arg(long, env = "C10M_PROTOCOL_PING_INTERVAL_MS", value_name = "MS", value_parser = whole!(u64))]
    pub protocol_ping_interval_ms: Option<u64>,

    /// Signaling (/signal/v1): a STUN URL handed to participants (repeatable)
    #[arg(long, env = "C10M_STUN_URL", value_name = "URL", value_delimiter = ',')]
    pub stun_url: Vec<String>,

    /// Signaling: a TURN URL handed to participants with REST credentials (repeatable; needs
    /// --turn-secret)
    #[arg(long, env = "C10M_TURN_URL", value_name = "URL", value_delimiter = ',')]
    pub turn_url: Vec<String>,

    /// Signaling: the secret shared with the TURN server (coturn's static-auth-secret)
    #[arg(
        long,
        env = "C10M_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,

    /// Signaling: how long TURN credentials last
    #[arg(long, env = "C10M_TURN_TTL_SECS", value_name = "SECS", value_parser = whole!(u64))]
    pub turn_ttl_secs: Option<u64>,

    /// Signaling: run the SFU for rooms joined with "mode":"sfu", on UDP at ADDR (an explicit
    /// IP, the candidate participants are given); shard i binds port + i, port 0 any free
    /// port (default: no SFU)
    #[arg(long, env = "C10M_SFU_UDP", value_name = "ADDR")]
    pub sfu_udp: Option<SocketAddr>,

    /// Signaling: estimate each SFU participant's bandwidth from its transport-wide feedback
    /// and fit its simulcast layers to it; =false saves CPU per forwarded packet and sends the
    /// widest layer to everyone who asks for none (default: true)
    #[arg(
        long,
        env = "C10M_SFU_BANDWIDTH_ESTIMATE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub sfu_bandwidth_estimate: Option<bool>,

    /// I/O backend: edge-triggered epoll, io_uring, or io_uring when the kernel offers it and
    /// epoll otherwise
    #[arg(long, env = "C10M_IO", value_name = "BACKEND", value_parser = io_mode())]
    pub io: Option<IoMode>,

    /// io_uring: provided receive buffers per shard, a power of two up to 32768 (default: 16
    /// where receives fill them incrementally, Linux 6.12; else 256)
    #[arg(long, env = "C10M_RING_BUFFERS", value_name = "N", value_parser = count!(u16))]
    pub ring_buffers: Option<u16>,

    /// io_uring: bytes per receive buffer
    #[arg(long, env = "C10M_RING_BUFFER_SIZE", value_name = "BYTES", value_parser = whole!(u32))]
    pub ring_buffer_size: Option<u32>,

    /// io_uring: registered file slots per shard; 0 = none (default: twice the shard's share
    /// of RLIMIT_NOFILE, at most 65536)
    #[arg(long, env = "C10M_RING_FILES", value_name = "N", value_parser = count!(u32))]
    pub ring_files: Option<u32>,

    /// io_uring: park a connection silent this long (up to twice), trading its armed receive
    /// for an epoll registration; 0 = never
    #[arg(long, env = "C10M_RING_PARK_MS", value_name = "MS", value_parser = whole!(u64))]
    pub ring_park_ms: Option<u64>,
}

/// `--io`: the names `ServerConfig` reads, offered as clap's possible values (so a typo gets a
/// suggestion); `io_uring` is an alias of `uring`.
fn io_mode() -> impl TypedValueParser<Value = IoMode> {
    PossibleValuesParser::new([
        PossibleValue::new("epoll"),
        PossibleValue::new("uring").alias("io_uring"),
        PossibleValue::new("auto"),
    ])
    .try_map(|name| name.parse::<IoMode>())
}

/// Adds `[default: X]` to each setting's help, X from `ServerConfig::default()`: the defaults
/// are written once, in the engine.
pub fn with_defaults(serve: clap::Command) -> clap::Command {
    let Ok(defaults) = toml::Table::try_from(ServerConfig::default()) else {
        return serve;
    };
    let ids: Vec<String> = serve
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    ids.into_iter().fold(serve, |serve, id| {
        let shown = match defaults.get(&id) {
            Some(toml::Value::String(s)) => s.clone(),
            Some(toml::Value::Integer(n)) => n.to_string(),
            Some(toml::Value::Boolean(b)) => b.to_string(),
            _ => return serve,
        };
        serve.mut_arg(id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {shown}]"))
        })
    })
}

impl ServeArgs {
    /// The engine's config: the TOML file (if any) over the defaults, then every setting
    /// given as a flag or variable over that, validated.
    pub fn config(&self) -> Result<ServerConfig, server::ConfigError> {
        let mut c = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        macro_rules! given {
            ($($key:ident),* $(,)?) => {$(
                if let Some(value) = self.$key {
                    c.$key = value;
                }
            )*};
        }
        given!(
            listen,
            shards,
            pin,
            deflate,
            backlog,
            max_frame_size,
            max_message_size,
            max_header_bytes,
            handshake_timeout_ms,
            ping_interval_ms,
            idle_timeout_ms,
            close_timeout_ms,
            write_queue_limit,
            write_delay_ms,
            max_connections_per_shard,
            max_connections_per_source,
            max_handshakes_per_source_per_sec,
            max_handshakes_per_sec,
            max_reassembly_bytes,
            max_subscriptions_per_connection,
            max_topics_per_shard,
            mailbox_limit,
            drain_timeout_ms,
            read_buffer_size,
            timer_tick_ms,
            io,
            ring_buffer_size,
            ring_park_ms,
            history_size,
            history_ttl_ms,
            presence_ttl_ms,
            protocol_ping_interval_ms,
            turn_ttl_secs,
        );
        if !self.stun_url.is_empty() {
            c.stun_url = self.stun_url.clone();
        }
        if !self.turn_url.is_empty() {
            c.turn_url = self.turn_url.clone();
        }
        if self.turn_secret.is_some() {
            c.turn_secret = self.turn_secret.clone();
        }
        if self.metrics.is_some() {
            c.metrics = self.metrics;
        }
        if self.sfu_udp.is_some() {
            c.sfu_udp = self.sfu_udp;
        }
        if let Some(b) = self.sfu_bandwidth_estimate {
            c.sfu_bandwidth_estimate = b;
        }
        if self.broker.is_some() {
            c.broker = self.broker.clone();
        }
        if self.token_hs256_secret.is_some() {
            c.token_hs256_secret = self.token_hs256_secret.clone();
        }
        if self.token_rs256_key.is_some() {
            c.token_rs256_key = self.token_rs256_key.clone();
        }
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert.clone();
        }
        if self.tls_key.is_some() {
            c.tls_key = self.tls_key.clone();
        }
        if self.ring_buffers.is_some() {
            c.ring_buffers = self.ring_buffers;
        }
        if self.ring_files.is_some() {
            c.ring_files = self.ring_files;
        }
        if !self.allowed_origins.is_empty() {
            c.allowed_origins = self.allowed_origins.clone();
        }
        if !self.deflate_paths.is_empty() {
            c.deflate_paths = self.deflate_paths.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

/// Runs `c10m serve` until SIGTERM or SIGINT (a second one while draining exits at once, with
/// status 130); SIGHUP reloads the TLS certificate and key.
pub fn run(args: &ServeArgs) -> ExitCode {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => return config_error(args, &e),
    };
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let verifier = match token_verifier(&config) {
        Ok(v) => v,
        Err(e) => return usage_error(e),
    };
    let tokens = match (&config.token_hs256_secret, &config.token_rs256_key) {
        (Some(_), _) => "HS256 tokens",
        (None, Some(_)) => "RS256 tokens",
        (None, None) => "anonymous, no tokens",
    };
    let settings = Settings {
        max_history: config.history_size,
        ping_interval_ms: config.protocol_ping_interval_ms,
        ..Settings::default()
    };
    let history = Bounds {
        size: config.history_size,
        ttl_ms: config.history_ttl_ms,
    };
    // One backend for the client protocol and signaling, made once the server runs.
    type Maker = Arc<dyn Fn(Handle) -> Arc<dyn Backend> + Send + Sync>;
    let (make, state): (Maker, &str) = match &config.broker {
        None => {
            let made: Arc<OnceLock<Arc<dyn Backend>>> = Arc::default();
            let limits = Limits {
                history,
                ..Limits::default()
            };
            let make = move |handle: Handle| {
                made.get_or_init(|| Arc::new(Memory::new(handle, limits)))
                    .clone()
            };
            (Arc::new(make), "in memory")
        }
        Some(url) => match RedisBackend::new(
            url,
            RedisLimits {
                history_size: config.history_size,
                history_ttl: Duration::from_millis(config.history_ttl_ms),
                presence_ttl: Duration::from_millis(config.presence_ttl_ms),
                ..RedisLimits::default()
            },
        ) {
            Ok(backend) => (
                Arc::new(move |_: Handle| backend.clone() as Arc<dyn Backend>),
                "in Redis",
            ),
            Err(e) => {
                return usage_error(format_args!("invalid broker (--broker, C10M_BROKER): {e}"));
            }
        },
    };
    let service = {
        let make = make.clone();
        Service::new(settings, verifier, move |h| make(h))
    };
    let ice = IceConfig {
        stun: config.stun_url.clone(),
        turn: config.turn_url.clone(),
        turn_secret: config.turn_secret.clone(),
        turn_ttl_secs: config.turn_ttl_secs,
    };
    if !ice.turn.is_empty() && ice.turn_secret.is_none() {
        return usage_error("--turn-url needs --turn-secret (REST credentials)");
    }
    let signaling = match config.sfu_udp {
        Some(addr) if addr.ip().is_unspecified() => {
            return usage_error(format_args!(
                "--sfu-udp {addr}: give an explicit IP (it is the ICE candidate participants connect to)"
            ));
        }
        Some(udp) => Signaling::with_sfu(
            SignalingLimits::default(),
            ice,
            c10m_signaling::sfu::SfuOptions {
                udp,
                bandwidth_estimate: config.sfu_bandwidth_estimate,
            },
            move |h| make(h),
        ),
        None => Signaling::new(SignalingLimits::default(), ice, move |h| make(h)),
    };
    let routes = Routes::new()
        .route("/echo", |_| Box::new(apps::Echo))
        .route("/pubsub", |_| Box::new(apps::PubSub))
        .route("/connection/v1", service.app())
        .route("/signal/v1", signaling.app())
        .page("/demo/", "text/html; charset=utf-8", DEMO_HTML)
        .page("/demo/demo.js", "text/javascript; charset=utf-8", DEMO_JS);
    let drain_ms = config.drain_timeout_ms;
    let shards = config.shard_count();
    let listen = config.listen;
    let sfu_udp = config.sfu_udp;
    let broker: Option<Arc<dyn Broker>> = match &config.broker {
        None => None,
        Some(url) => match RedisBroker::new(url) {
            Ok(b) => Some(b),
            Err(e) => {
                return usage_error(format_args!("invalid broker (--broker, C10M_BROKER): {e}"));
            }
        },
    };
    let broker_line = config
        .broker
        .as_deref()
        .map_or_else(|| "in-process".to_string(), |url| format!("Redis at {url}"));
    // The SFU's sockets are bound by the shards once they run, where a failure could only be
    // logged: a port another process holds is refused here, before anything starts.
    if let Some(base) = sfu_udp.filter(|a| a.port() != 0) {
        for shard in 0..shards {
            let addr =
                c10m_signaling::sfu::shard_addr(base, u16::try_from(shard).unwrap_or(u16::MAX));
            if let Err(e) = std::net::UdpSocket::bind(addr) {
                tracing::error!(%addr, shard, error = %e, "cannot bind the SFU's UDP socket (--sfu-udp)");
                return ExitCode::FAILURE;
            }
        }
    }
    let handle = match server::start_with_broker(config, routes, broker) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(%listen, error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    // The banner is output, not a log: scripts and tests read the addresses from stdout.
    let addr = handle.local_addr();
    let (ws, http) = if handle.tls() {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    banner!("c10m: listening on {ws}://{addr}/echo and {ws}://{addr}/pubsub");
    banner!("c10m: {shards} shard(s), SO_REUSEPORT");
    banner!("c10m: backend: {}", handle.backend());
    banner!("c10m: broker: {broker_line}");
    banner!("c10m: client protocol on {ws}://{addr}/connection/v1 ({tokens}, state {state})");
    banner!(
        "c10m: signaling on {ws}://{addr}/signal/v1, demo room on {http}://{addr}/demo/?room=NAME"
    );
    if let Some(sfu) = sfu_udp {
        banner!(
            "c10m: SFU on udp://{sfu} (shard i at port + i), demo with http://{addr}/demo/?room=NAME&sfu=1"
        );
    }
    if let Some(m) = handle.metrics_addr() {
        banner!("c10m: metrics on http://{m}/metrics, health on http://{m}/health");
    }
    tracing::info!(
        %addr,
        shards,
        backend = handle.backend(),
        metrics = handle.metrics_addr().map(|m| m.to_string()),
        "serving"
    );
    preflight(shards);
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGHUP {
            reload_tls(&handle);
            continue;
        }
        tracing::info!(signal, drain_ms, "closing connections with 1001");
        break;
    }
    // A second signal while draining: the operator does not want to wait.
    // (SIGHUP still only reloads.)
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal == signal_hook::consts::SIGHUP {
                continue;
            }
            tracing::warn!(signal, "a second signal: exiting at once, without draining");
            std::process::exit(130);
        }
    });
    handle.shutdown();
    match handle.join() {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "a shard failed");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP: the TLS certificate and key read again; new handshakes use them, open connections
/// stay open. A file that cannot be used keeps the pair in use, with an error logged.
fn reload_tls(handle: &server::ServerHandle) {
    match handle.reload_tls() {
        Ok(true) => {
            tracing::info!("SIGHUP: TLS certificate and key reloaded; new handshakes use them")
        }
        Ok(false) => tracing::info!("SIGHUP: no TLS certificate to reload (serving ws://)"),
        Err(e) => tracing::error!(
            error = %e,
            "SIGHUP: TLS certificate and key not reloaded; the ones in use stay"
        ),
    }
}

/// A config that cannot be used: names the setting the way each source spells it.
fn config_error(args: &ServeArgs, e: &server::ConfigError) -> ExitCode {
    match e {
        server::ConfigError::Invalid { key, problem } => usage_error(format_args!(
            "invalid {key} (--{flag}, C10M_{env}{file}): {problem}",
            flag = key.replace('_', "-"),
            env = key.to_ascii_uppercase(),
            file = if args.config.is_some() {
                format!(" or {key} in the TOML file")
            } else {
                String::new()
            }
        )),
        other => match &args.config {
            Some(path) => usage_error(format_args!("{}: {other}", path.display())),
            None => usage_error(other),
        },
    }
}

/// The start-up preflight of `c10m serve`: warns, never refuses.
fn preflight(shards: usize) {
    match c10m_sysctl::Host::read() {
        Ok(host) => {
            let ceiling = c10m_sysctl::process_ceiling(&host);
            banner!(
                "c10m: fd limit {} (soft) / {} (hard): this process holds at most ~{} connections over {shards} shard(s)",
                ceiling.soft,
                ceiling.hard,
                ceiling.connections
            );
            if !ceiling.holds(1_000_000) {
                tracing::warn!(
                    soft = ceiling.soft,
                    hard = ceiling.hard,
                    connections = ceiling.connections,
                    "{ceiling}"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "preflight could not read host limits"),
    }
}

/// The client protocol's token verifier from the settings (none: anonymous connections).
fn token_verifier(config: &ServerConfig) -> Result<Option<Verifier>, String> {
    match (&config.token_hs256_secret, &config.token_rs256_key) {
        (Some(_), Some(_)) => {
            Err("give one token key: --token-hs256-secret or --token-rs256-key, not both".into())
        }
        (Some(secret), None) => Verifier::hs256(secret.as_bytes())
            .map(Some)
            .map_err(|e| format!("invalid token_hs256_secret: {e}")),
        (None, Some(path)) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read token_rs256_key {}: {e}", path.display()))?;
            Verifier::rs256(&pem)
                .map(Some)
                .map_err(|e| format!("invalid token_rs256_key {}: {e}", path.display()))
        }
        (None, None) => Ok(None),
    }
}
