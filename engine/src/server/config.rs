//! Server settings: command-line flags, `C10M_*` environment variables or a TOML file map onto
//! [`ServerConfig`].
//!
//! Numbers are written the same way everywhere (flag, variable, TOML string; a TOML integer is
//! fine too): counts in the project's one grammar ([`c10m_sysctl::parse_count`]: `1000000`,
//! `1_000_000`, `1m`, `20k`), sizes in bytes and times in milliseconds as whole numbers with
//! the same separators but no `k`/`m`/`g` suffix, which would be ambiguous for a size (is `16m`
//! 16,000,000 bytes or 16 MiB?). [`ServerConfig::validate`] checks the limits the engine can
//! run with, so a bad value is refused at start-up rather than failing a shard later.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use c10m_sysctl::{CountError, parse_count};
use serde::{Deserialize, Deserializer, Serialize};

use crate::proto;

/// Which I/O backend the shards run on.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// Edge-triggered epoll through mio: readiness, then `read`/`writev` syscalls.
    #[default]
    Epoll,
    /// io_uring: multishot accept and receive into a provided-buffer ring, batched sends.
    Uring,
    /// io_uring when the kernel offers what it needs, else epoll (the reason is reported).
    Auto,
}

impl std::str::FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "epoll" => Ok(IoMode::Epoll),
            "uring" | "io_uring" => Ok(IoMode::Uring),
            "auto" => Ok(IoMode::Auto),
            other => Err(format!(
                "unknown I/O backend {other:?} (epoll, uring or auto)"
            )),
        }
    }
}

/// The largest `max_frame_size` and `max_message_size`: a frame and its header must fit in one
/// buffer (a `Vec` holds at most `isize::MAX` bytes), or a peer announcing such a frame would
/// make its shard ask for an impossible allocation.
pub const MAX_PAYLOAD_LIMIT: usize = isize::MAX as usize - proto::frame::MAX_HEADER_LEN;

/// The longest time setting, in milliseconds (about 34 years): deadlines are the shard's clock
/// plus a setting, in `u64` milliseconds, and must not overflow.
pub const MAX_MILLIS: u64 = 1 << 40;

/// Longest `write_delay_ms`: a delivery should not wait longer than a second to be written.
pub const MAX_WRITE_DELAY_MS: u64 = 1_000;

/// The most shards: a [`ConnId`](super::ConnId) holds the shard in 10 bits.
pub const MAX_SHARDS: usize = 1 << super::id::SHARD_BITS;

/// The most connections per shard: a [`ConnId`](super::ConnId) holds the slot in 24 bits.
pub const MAX_CONNECTIONS_PER_SHARD: usize = 1 << super::id::SLOT_BITS;

/// The most provided buffers per io_uring buffer ring (a power of two).
pub const MAX_RING_BUFFERS: u16 = 32_768;

/// Everything `c10m serve` can be told. Times are milliseconds, sizes bytes.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address every shard listens on (with `SO_REUSEPORT`).
    pub listen: SocketAddr,
    /// Number of shards (threads); 0 means one per available core. At most [`MAX_SHARDS`].
    #[serde(deserialize_with = "de::count")]
    pub shards: usize,
    /// Pin shard `i` to core `i % cores`.
    pub pin: bool,
    /// permessage-deflate (RFC 7692) for clients that offer it; off by default. Neither side
    /// keeps a compression context between messages (the server answers
    /// `server_no_context_takeover` and `client_no_context_takeover`), so an idle connection
    /// holds nothing for it and a shared frame is compressed once for every subscriber.
    pub deflate: bool,
    /// permessage-deflate on these request paths only (exact, query ignored), with `deflate`
    /// off: a chatty text route compressed, a binary one left alone. `deflate` on covers every
    /// path.
    pub deflate_paths: Vec<String>,
    /// Listen backlog per shard (capped by net.core.somaxconn).
    #[serde(deserialize_with = "de::count")]
    pub backlog: i32,
    /// Largest frame payload accepted (1009 beyond). At most [`MAX_PAYLOAD_LIMIT`].
    #[serde(deserialize_with = "de::bytes")]
    pub max_frame_size: usize,
    /// Largest message accepted, fragments added up (1009 beyond). At most
    /// [`MAX_PAYLOAD_LIMIT`].
    #[serde(deserialize_with = "de::bytes")]
    pub max_message_size: usize,
    /// Largest HTTP request head (431 beyond).
    #[serde(deserialize_with = "de::bytes")]
    pub max_header_bytes: usize,
    /// Time a client has to complete its opening handshake.
    #[serde(deserialize_with = "de::millis")]
    pub handshake_timeout_ms: u64,
    /// Ping a connection that has been silent this long; 0 disables pings.
    #[serde(deserialize_with = "de::millis")]
    pub ping_interval_ms: u64,
    /// Close a connection silent (pongs included) this long; 0 disables the idle timeout.
    #[serde(deserialize_with = "de::millis")]
    pub idle_timeout_ms: u64,
    /// Time the peer has to answer our close frame.
    #[serde(deserialize_with = "de::millis")]
    pub close_timeout_ms: u64,
    /// A connection whose unsent output exceeds this many bytes when more is sent to it is a
    /// slow consumer: it is closed (reported with code 1008) and counted. One message may
    /// always be queued on top, so memory per connection is bounded by this plus one message.
    #[serde(deserialize_with = "de::bytes")]
    pub write_queue_limit: usize,
    /// Output for connections other than the one whose input is being processed (fan-out,
    /// sends from other shards or threads) waits up to this long to be written, so that
    /// several deliveries to one connection share one write (Centrifugo's `write_delay`);
    /// 0 writes at the end of every loop iteration. A connection's queue past 64 KiB is
    /// written at once; replies to a connection's own input never wait. At most 1,000.
    #[serde(deserialize_with = "de::millis")]
    pub write_delay_ms: u64,
    /// Most connections per shard; further accepts are closed at once. At most
    /// [`MAX_CONNECTIONS_PER_SHARD`].
    #[serde(deserialize_with = "de::count")]
    pub max_connections_per_shard: usize,
    /// Open connections one source address (an IPv6 /64) may hold; past it new ones are
    /// answered 429 and closed before any state is allocated (counted). 0: no limit.
    #[serde(deserialize_with = "de::count")]
    pub max_connections_per_source: u32,
    /// New connections per second one source address may open, in a burst of as many; past it
    /// 429 (counted). 0: no limit.
    #[serde(deserialize_with = "de::count")]
    pub max_handshakes_per_source_per_sec: u32,
    /// New connections per second to the process (each shard takes its share), in a burst of
    /// as many; past it 503 (counted). 0: no limit.
    #[serde(deserialize_with = "de::count")]
    pub max_handshakes_per_sec: u32,
    /// Bytes of unfinished input the whole process may hold: partial frames, request heads
    /// and fragmented messages being reassembled, over every connection. A connection whose
    /// growth would pass it is closed with 1013 (counted as `overloaded`).
    #[serde(deserialize_with = "de::bytes")]
    pub max_reassembly_bytes: usize,
    /// On SIGTERM/SIGINT, how long connections get to finish their close handshake.
    #[serde(deserialize_with = "de::millis")]
    pub drain_timeout_ms: u64,
    /// Size of each shard's shared read buffer (epoll; at least 4096 is used).
    #[serde(deserialize_with = "de::bytes")]
    pub read_buffer_size: usize,
    /// Timer wheel resolution; at least 1.
    #[serde(deserialize_with = "de::millis")]
    pub timer_tick_ms: u64,
    /// Origins allowed to connect (browsers send `Origin`); empty allows any. Others get 403,
    /// and so does a request without an `Origin` (or with one that is not UTF-8) when the list
    /// is not empty.
    pub allowed_origins: Vec<String>,
    /// Plain-HTTP address for `/metrics` (Prometheus) and `/health`; none by default.
    pub metrics: Option<SocketAddr>,
    /// Topics one connection may subscribe to; past it a subscribe is refused (counted).
    pub max_subscriptions_per_connection: usize,
    /// Topics one shard may hold (each costs its name and a subscriber list); past it a
    /// subscribe to a new topic is refused (counted).
    pub max_topics_per_shard: usize,
    /// Mail (publishes, sends, posts from other shards and threads) one shard may have queued;
    /// past it such mail is dropped and counted (`c10m_mail_dropped_total`).
    pub mailbox_limit: usize,
    /// Where publishes cross processes: `redis://HOST:PORT[/DB]`; none (the default) keeps
    /// them in this process. The engine does not read it: the `c10m` binary builds the broker
    /// from it and hands it to [`start_with_broker`](super::start_with_broker).
    pub broker: Option<String>,
    /// The client protocol (`/connection/v1`): the HS256 secret its connection tokens are
    /// signed with. Read by the `c10m` binary. With neither this nor `token_rs256_key`,
    /// connections are anonymous (no user).
    pub token_hs256_secret: Option<String>,
    /// The client protocol: a PEM file with the RSA public key RS256 tokens are checked with.
    /// Read by the `c10m` binary.
    pub token_rs256_key: Option<std::path::PathBuf>,
    /// wss://: a PEM file with the certificate chain, the server's own certificate first.
    /// Given with `tls_key`, every connection speaks TLS (rustls; ALPN `http/1.1`); both are
    /// read again on [`ServerHandle::reload_tls`](super::ServerHandle::reload_tls) (SIGHUP in
    /// `c10m serve`).
    pub tls_cert: Option<std::path::PathBuf>,
    /// wss://: a PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<std::path::PathBuf>,
    /// The client protocol: publications kept per channel for history and recovery. Read by
    /// the `c10m` binary.
    pub history_size: usize,
    /// The client protocol: how long a channel's history lives after its last publish, ms.
    pub history_ttl_ms: u64,
    /// The client protocol across nodes: how long a presence or user entry lives unless its
    /// node refreshes it (a killed node's entries expire within this), ms.
    pub presence_ttl_ms: u64,
    /// The client protocol: interval of its JSON `ping` pushes, ms (a browser cannot see
    /// WebSocket pings; a client that hears nothing for twice this reconnects). Read by the
    /// `c10m` binary.
    pub protocol_ping_interval_ms: u64,
    /// Signaling (`/signal/v1`): STUN URLs handed to participants at join. Read by the `c10m`
    /// binary.
    pub stun_url: Vec<String>,
    /// Signaling: TURN URLs handed to participants with REST credentials (needs
    /// `turn_secret`). Read by the `c10m` binary.
    pub turn_url: Vec<String>,
    /// Signaling: the secret shared with the TURN server (coturn `static-auth-secret`).
    pub turn_secret: Option<String>,
    /// Signaling: how long TURN credentials last, seconds.
    pub turn_ttl_secs: u64,
    /// Signaling: the SFU's UDP address (rooms joined with `"mode":"sfu"`); shard i binds
    /// port + i (0: any free port per shard). An explicit IP: it is the ICE candidate handed
    /// to participants. None (the default) runs no SFU. Read by the `c10m` binary.
    pub sfu_udp: Option<SocketAddr>,
    /// Signaling: estimate each SFU participant's bandwidth (transport-wide feedback, GCC) and
    /// fit its simulcast layers to it; on by default (off: less CPU per forwarded packet, and
    /// the widest layer sent to everyone who asks for none). Read by the `c10m` binary.
    pub sfu_bandwidth_estimate: bool,
    /// The I/O backend.
    pub io: IoMode,
    /// io_uring: provided buffers per shard (a power of two, at most [`MAX_RING_BUFFERS`]).
    /// Sized for the bytes received between two turns of the loop, not for connections: an
    /// idle connection holds none. `None`: 16 where the kernel consumes them incrementally
    /// (Linux 6.12), growing while receives keep running out of them (up to 1 MiB of buffers)
    /// and shrinking back when quiet; else 256. A number fixes the count.
    #[serde(deserialize_with = "de::count_some")]
    pub ring_buffers: Option<u16>,
    /// io_uring: bytes per provided buffer; at least 1.
    #[serde(deserialize_with = "de::bytes")]
    pub ring_buffer_size: u32,
    /// io_uring: slots of each shard's registered file table (a connection in a slot below it
    /// is named by table index rather than descriptor while it talks, not while parked);
    /// `None` sizes it from RLIMIT_NOFILE, 0 registers none.
    #[serde(deserialize_with = "de::count_some")]
    pub ring_files: Option<u32>,
    /// io_uring: a connection silent for this long (up to twice this) is parked: its multishot
    /// receive, which holds ~650 bytes of kernel memory, gives way to a one-shot registration
    /// in an epoll instance the ring watches, until input comes. 0 never parks.
    #[serde(deserialize_with = "de::millis")]
    pub ring_park_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            shards: 0,
            pin: false,
            deflate: false,
            deflate_paths: Vec::new(),
            backlog: 4096,
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            max_header_bytes: 8 * 1024,
            handshake_timeout_ms: 10_000,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 75_000,
            close_timeout_ms: 5_000,
            write_queue_limit: 1 << 20,
            write_delay_ms: 0,
            max_connections_per_shard: 1 << 24,
            max_connections_per_source: 0,
            max_reassembly_bytes: 1 << 30,
            max_handshakes_per_source_per_sec: 0,
            max_handshakes_per_sec: 0,
            drain_timeout_ms: 5_000,
            read_buffer_size: 64 * 1024,
            timer_tick_ms: 100,
            allowed_origins: Vec::new(),
            metrics: None,
            max_subscriptions_per_connection: 1024,
            max_topics_per_shard: 1_000_000,
            mailbox_limit: 1_000_000,
            broker: None,
            token_hs256_secret: None,
            token_rs256_key: None,
            tls_cert: None,
            tls_key: None,
            history_size: 100,
            history_ttl_ms: 300_000,
            presence_ttl_ms: 30_000,
            protocol_ping_interval_ms: 25_000,
            stun_url: Vec::new(),
            turn_url: Vec::new(),
            turn_secret: None,
            turn_ttl_secs: 86_400,
            sfu_udp: None,
            sfu_bandwidth_estimate: true,
            io: IoMode::default(),
            ring_buffers: None,
            ring_buffer_size: 16 * 1024,
            ring_files: None,
            ring_park_ms: 1_000,
        }
    }
}

/// A config that cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is not valid TOML for [`ServerConfig`] (a number in a TOML string that is not
    /// in the grammar is reported here, with its line).
    Toml(toml::de::Error),
    /// One of two settings that go together was given without the other.
    Unpaired {
        /// The setting given (`tls_cert`).
        given: &'static str,
        /// The one missing (`tls_key`).
        missing: &'static str,
    },
    /// A setting is outside what the engine can run with ([`ServerConfig::validate`]).
    Invalid {
        /// The setting's TOML key (`max_frame_size`).
        key: &'static str,
        /// What is wrong with its value.
        problem: ValueError,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io(e) => write!(f, "cannot read config: {e}"),
            ConfigError::Toml(e) => write!(f, "invalid config: {e}"),
            ConfigError::Invalid { key, problem } => write!(f, "{key}: {problem}"),
            ConfigError::Unpaired { given, missing } => write!(
                f,
                "{given} is given without {missing}: give both (--{} and --{}) or neither",
                given.replace('_', "-"),
                missing.replace('_', "-")
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io(e) => Some(e),
            ConfigError::Toml(e) => Some(e),
            ConfigError::Invalid { problem, .. } => Some(problem),
            ConfigError::Unpaired { .. } => None,
        }
    }
}

/// A numeric setting's value that cannot be used: not in the grammar, or out of range.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a number in the count grammar.
    NotANumber(CountError),
    /// A size or a time written with a `k`, `m` or `g` suffix: ambiguous, so refused.
    Suffix(String),
    /// Larger than the setting takes.
    TooLarge {
        /// The value given.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// Smaller than the setting takes.
    TooSmall {
        /// The value given.
        value: u64,
        /// The smallest allowed.
        min: u64,
    },
    /// Not a power of two, or beyond `max`.
    NotAPowerOfTwo {
        /// The value given.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// Not below another setting it must stay under.
    NotBelow {
        /// The value given.
        value: u64,
        /// The other setting.
        other: &'static str,
        /// Its value.
        limit: u64,
    },
    /// A request path that does not start with `/` (or holds a `?`).
    NotAPath(String),
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::NotANumber(e) => write!(f, "{e}"),
            ValueError::Suffix(text) => write!(
                f,
                "'{text}': sizes and times are written in full (16777216 or 16_777_216): \
                 k, m and g are for counts"
            ),
            ValueError::TooLarge { value, max } => {
                write!(f, "{value} is too large (at most {max})")
            }
            ValueError::TooSmall { value, min } => {
                write!(f, "{value} is too small (at least {min})")
            }
            ValueError::NotAPowerOfTwo { value, max } => {
                write!(f, "{value} is not a power of two up to {max}")
            }
            ValueError::NotBelow {
                value,
                other,
                limit,
            } => write!(f, "{value} must be below {other} ({limit})"),
            ValueError::NotAPath(text) => {
                write!(f, "'{text}' is not a request path (/name, without a query)")
            }
        }
    }
}

impl std::error::Error for ValueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ValueError::NotANumber(e) => Some(e),
            _ => None,
        }
    }
}

/// The integer types of numeric settings.
pub trait Int: Copy + TryFrom<u64> {
    /// The type's largest value.
    const MAX: u64;
    /// The value, widened losslessly.
    fn wide(self) -> i128;
}

macro_rules! int {
    ($($t:ty),*) => { $(impl Int for $t {
        const MAX: u64 = <$t>::MAX as u64;
        fn wide(self) -> i128 {
            self as i128
        }
    })* };
}
int!(u16, u32, u64, usize, i32);

fn narrow<T: Int>(value: u64) -> Result<T, ValueError> {
    T::try_from(value).map_err(|_| ValueError::TooLarge { value, max: T::MAX })
}

impl ServerConfig {
    /// Parses a TOML document (keys as the field names; all optional).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(ConfigError::Toml)
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(ConfigError::Io)?;
        Self::from_toml(&text)
    }

    /// The settings as a TOML document that [`ServerConfig::from_toml`] reads back (settings
    /// that are `None` are left out).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot write the settings: {e}\n"))
    }

    /// Parses a count setting (`shards`, `backlog`, `max_connections_per_shard`,
    /// `ring_buffers`, `ring_files`) in the one grammar: `1000000`, `1_000_000`, `1m`, `20k`.
    pub fn parse_count<T: Int>(text: &str) -> Result<T, ValueError> {
        narrow(parse_count(text).map_err(ValueError::NotANumber)?)
    }

    /// Parses a size in bytes or a time in milliseconds: a whole number, with `_` or `,`
    /// separators allowed, and no suffix.
    pub fn parse_whole<T: Int>(text: &str) -> Result<T, ValueError> {
        if text.trim_end().ends_with(|c: char| c.is_ascii_alphabetic()) {
            return match parse_count(text) {
                Ok(_) => Err(ValueError::Suffix(text.to_owned())),
                Err(e) => Err(ValueError::NotANumber(e)),
            };
        }
        Self::parse_count(text)
    }

    /// Checks every limit the engine relies on: sizes a buffer can hold, times that cannot
    /// overflow a deadline, counts a connection id can name, a power of two where io_uring
    /// needs one. `c10m serve` calls it before starting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn at_most<T: Int>(key: &'static str, value: T, max: u64) -> Result<(), ConfigError> {
            let v = value.wide();
            if v > i128::from(max) {
                let value = u64::try_from(v).unwrap_or(u64::MAX);
                return Err(ConfigError::Invalid {
                    key,
                    problem: ValueError::TooLarge { value, max },
                });
            }
            Ok(())
        }
        fn at_least<T: Int>(key: &'static str, value: T, min: u64) -> Result<(), ConfigError> {
            let v = value.wide();
            if v < i128::from(min) {
                let value = u64::try_from(v).unwrap_or(0);
                return Err(ConfigError::Invalid {
                    key,
                    problem: ValueError::TooSmall { value, min },
                });
            }
            Ok(())
        }
        at_most("shards", self.shards, MAX_SHARDS as u64)?;
        at_least("backlog", self.backlog, 0)?;
        at_most(
            "max_frame_size",
            self.max_frame_size,
            MAX_PAYLOAD_LIMIT as u64,
        )?;
        at_most(
            "max_message_size",
            self.max_message_size,
            MAX_PAYLOAD_LIMIT as u64,
        )?;
        at_most(
            "max_header_bytes",
            self.max_header_bytes,
            MAX_PAYLOAD_LIMIT as u64,
        )?;
        at_most(
            "max_connections_per_shard",
            self.max_connections_per_shard,
            MAX_CONNECTIONS_PER_SHARD as u64,
        )?;
        let times = [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("ping_interval_ms", self.ping_interval_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("close_timeout_ms", self.close_timeout_ms),
            ("drain_timeout_ms", self.drain_timeout_ms),
            ("timer_tick_ms", self.timer_tick_ms),
            ("ring_park_ms", self.ring_park_ms),
            ("history_ttl_ms", self.history_ttl_ms),
            ("presence_ttl_ms", self.presence_ttl_ms),
            ("protocol_ping_interval_ms", self.protocol_ping_interval_ms),
        ];
        for (key, ms) in times {
            at_most(key, ms, MAX_MILLIS)?;
        }
        at_least("timer_tick_ms", self.timer_tick_ms, 1)?;
        at_most("write_delay_ms", self.write_delay_ms, MAX_WRITE_DELAY_MS)?;
        // Connection deadlines live in the timer wheel, whose wrapping ticks reach only so far.
        let horizon = self
            .timer_tick_ms
            .saturating_mul(super::timer::MAX_TICKS_AHEAD)
            .min(MAX_MILLIS);
        for (key, ms) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("ping_interval_ms", self.ping_interval_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("close_timeout_ms", self.close_timeout_ms),
        ] {
            at_most(key, ms, horizon)?;
        }
        // Zero would refuse every frame, every handshake or every connection.
        at_least("max_frame_size", self.max_frame_size, 1)?;
        at_least("max_message_size", self.max_message_size, 1)?;
        at_least("handshake_timeout_ms", self.handshake_timeout_ms, 1)?;
        at_least(
            "max_connections_per_shard",
            self.max_connections_per_shard,
            1,
        )?;
        // A client that is pinged no sooner than it is timed out is closed while healthy.
        if self.ping_interval_ms > 0
            && self.idle_timeout_ms > 0
            && self.ping_interval_ms >= self.idle_timeout_ms
        {
            return Err(ConfigError::Invalid {
                key: "ping_interval_ms",
                problem: ValueError::NotBelow {
                    value: self.ping_interval_ms,
                    other: "idle_timeout_ms",
                    limit: self.idle_timeout_ms,
                },
            });
        }
        at_least("mailbox_limit", self.mailbox_limit, 1)?;
        at_least(
            "protocol_ping_interval_ms",
            self.protocol_ping_interval_ms,
            1,
        )?;
        at_most("history_size", self.history_size, 1_000_000)?;
        // Entries are refreshed every third of it, in whole milliseconds.
        at_least("presence_ttl_ms", self.presence_ttl_ms, 3)?;
        at_least("ring_buffer_size", self.ring_buffer_size, 1)?;
        if let Some(n) = self.ring_buffers
            && (!n.is_power_of_two() || n > MAX_RING_BUFFERS)
        {
            return Err(ConfigError::Invalid {
                key: "ring_buffers",
                problem: ValueError::NotAPowerOfTwo {
                    value: u64::from(n),
                    max: u64::from(MAX_RING_BUFFERS),
                },
            });
        }
        if let Some(bad) = self
            .deflate_paths
            .iter()
            .find(|p| !p.starts_with('/') || p.contains('?'))
        {
            return Err(ConfigError::Invalid {
                key: "deflate_paths",
                problem: ValueError::NotAPath(bad.clone()),
            });
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(ConfigError::Unpaired {
                given: "tls_cert",
                missing: "tls_key",
            }),
            (None, Some(_)) => Err(ConfigError::Unpaired {
                given: "tls_key",
                missing: "tls_cert",
            }),
            _ => Ok(()),
        }
    }

    /// Settings that work but probably do not say what was meant, one sentence each, for the
    /// operator's log at start-up.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_frame_size > self.max_message_size {
            out.push(format!(
                "max_frame_size ({}) is above max_message_size ({}): frames are limited to the \
                 message size",
                self.max_frame_size, self.max_message_size
            ));
        }
        out
    }

    /// The limits on new connections.
    pub fn admission(&self) -> super::admission::Limits {
        super::admission::Limits {
            connections_per_source: self.max_connections_per_source,
            handshakes_per_source_per_sec: self.max_handshakes_per_source_per_sec,
            handshakes_per_sec: self.max_handshakes_per_sec,
        }
    }

    /// The shard count after resolving 0 to the core count.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The protocol core's settings derived from this config.
    pub fn proto(&self) -> Arc<proto::Config> {
        let nonzero = |ms: u64| (ms > 0).then_some(ms);
        Arc::new(proto::Config {
            max_frame_size: self.max_frame_size,
            max_message_size: self.max_message_size,
            auto_pong: true,
            ping_interval_ms: nonzero(self.ping_interval_ms),
            idle_timeout_ms: nonzero(self.idle_timeout_ms),
            close_timeout_ms: self.close_timeout_ms,
        })
    }
}

/// TOML numbers: an integer, or a string in the grammar of the flags.
mod de {
    use super::*;

    struct Number {
        count: bool,
    }

    impl serde::de::Visitor<'_> for Number {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.count {
                f.write_str("a whole number, or a count such as \"1m\" or \"1_000_000\"")
            } else {
                f.write_str("a whole number, or a string such as \"16_777_216\"")
            }
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            let parsed = if self.count {
                ServerConfig::parse_count::<u64>(v)
            } else {
                ServerConfig::parse_whole::<u64>(v)
            };
            parsed.map_err(E::custom)
        }
    }

    fn number<'de, D: Deserializer<'de>, T: Int>(d: D, count: bool) -> Result<T, D::Error> {
        let n = d.deserialize_any(Number { count })?;
        narrow(n).map_err(serde::de::Error::custom)
    }

    pub(super) fn count<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<T, D::Error> {
        number(d, true)
    }

    pub(super) fn count_some<'de, D: Deserializer<'de>, T: Int>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        number(d, true).map(Some)
    }

    pub(super) fn bytes<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<T, D::Error> {
        number(d, false)
    }

    pub(super) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        number(d, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c =
            ServerConfig::from_toml("listen = \"0.0.0.0:80\"\nshards = 3\nping_interval_ms = 0\n")
                .unwrap();
        assert_eq!(c.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(c.shards, 3);
        assert_eq!(c.proto().ping_interval_ms, None);
        assert_eq!(c.max_header_bytes, 8192);
        assert!(ServerConfig::from_toml("lisen = \"x\"").is_err());
    }

    #[test]
    fn toml_numbers_take_the_flag_grammar_as_strings() {
        let c = ServerConfig::from_toml(
            "shards = \"1k\"\nmax_connections_per_shard = \"1_000_000\"\nring_buffers = 64\n\
             ring_files = \"20k\"\nmax_frame_size = \"1_048_576\"\nidle_timeout_ms = \"90,000\"\n",
        )
        .unwrap();
        assert_eq!(c.shards, 1000);
        assert_eq!(c.max_connections_per_shard, 1_000_000);
        assert_eq!(c.ring_buffers, Some(64));
        assert_eq!(c.ring_files, Some(20_000));
        assert_eq!(c.max_frame_size, 1 << 20);
        assert_eq!(c.idle_timeout_ms, 90_000);
        for bad in [
            "shards = \"lots\"",
            "shards = -1",
            "max_frame_size = \"16m\"",
            "ring_buffers = 70000",
            "backlog = \"3g\"",
        ] {
            assert!(ServerConfig::from_toml(bad).is_err(), "{bad}");
        }
        let e = ServerConfig::from_toml("max_frame_size = \"16m\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("k, m and g are for counts"), "{e}");
    }

    #[test]
    fn the_settings_round_trip_through_toml() {
        let mut c = ServerConfig {
            shards: 7,
            ring_buffers: Some(128),
            metrics: Some("127.0.0.1:9100".parse().unwrap()),
            sfu_udp: Some("127.0.0.1:40000".parse().unwrap()),
            allowed_origins: vec!["https://a.example".into()],
            io: IoMode::Uring,
            ..ServerConfig::default()
        };
        assert_eq!(ServerConfig::from_toml(&c.to_toml()).unwrap(), c);
        c = ServerConfig::default();
        assert_eq!(ServerConfig::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn flag_grammar() {
        assert_eq!(ServerConfig::parse_count::<usize>("1k"), Ok(1000));
        assert_eq!(ServerConfig::parse_count::<u16>("64"), Ok(64));
        assert_eq!(
            ServerConfig::parse_count::<u16>("70k"),
            Err(ValueError::TooLarge {
                value: 70_000,
                max: 65_535
            })
        );
        assert_eq!(
            ServerConfig::parse_whole::<usize>("16_777_216"),
            Ok(16 << 20)
        );
        assert_eq!(
            ServerConfig::parse_whole::<usize>("16m"),
            Err(ValueError::Suffix("16m".into()))
        );
        assert!(matches!(
            ServerConfig::parse_whole::<u64>("16x"),
            Err(ValueError::NotANumber(_))
        ));
    }

    #[test]
    fn validate_refuses_what_would_overflow() {
        assert!(ServerConfig::default().validate().is_ok());
        let refused = |c: ServerConfig| match c.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let d = ServerConfig::default;
        let huge = ServerConfig {
            max_frame_size: 1 << 63,
            ..d()
        };
        assert_eq!(refused(huge), "max_frame_size");
        assert!(
            ServerConfig {
                max_frame_size: MAX_PAYLOAD_LIMIT,
                ..d()
            }
            .validate()
            .is_ok()
        );
        let message = ServerConfig {
            max_message_size: usize::MAX,
            ..d()
        };
        assert_eq!(refused(message), "max_message_size");
        let ping = ServerConfig {
            ping_interval_ms: u64::MAX,
            ..d()
        };
        assert_eq!(refused(ping), "ping_interval_ms");
        let tick = ServerConfig {
            timer_tick_ms: 0,
            ..d()
        };
        assert_eq!(refused(tick), "timer_tick_ms");
        let shards = ServerConfig {
            shards: 70_000,
            ..d()
        };
        assert_eq!(refused(shards), "shards");
        let ring = ServerConfig {
            ring_buffers: Some(100),
            ..d()
        };
        assert_eq!(refused(ring), "ring_buffers");
        let backlog = ServerConfig { backlog: -1, ..d() };
        assert_eq!(refused(backlog), "backlog");
    }

    #[test]
    fn validate_refuses_what_cannot_work() {
        let d = ServerConfig::default;
        let refused = |c: ServerConfig| match c.validate() {
            Err(e @ ConfigError::Invalid { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        };
        let zero = |c: ServerConfig, key: &str| {
            assert!(
                refused(c).starts_with(&format!("{key}: 0 is too small")),
                "{key}"
            )
        };
        zero(
            ServerConfig {
                max_frame_size: 0,
                ..d()
            },
            "max_frame_size",
        );
        zero(
            ServerConfig {
                max_message_size: 0,
                ..d()
            },
            "max_message_size",
        );
        zero(
            ServerConfig {
                handshake_timeout_ms: 0,
                ..d()
            },
            "handshake_timeout_ms",
        );
        zero(
            ServerConfig {
                max_connections_per_shard: 0,
                ..d()
            },
            "max_connections_per_shard",
        );
        let ping = ServerConfig {
            ping_interval_ms: 5_000,
            idle_timeout_ms: 5_000,
            ..d()
        };
        assert_eq!(
            refused(ping),
            "ping_interval_ms: 5000 must be below idle_timeout_ms (5000)"
        );
        // Either one off is fine.
        for (p, i) in [(0, 5_000), (5_000, 0), (4_999, 5_000)] {
            let c = ServerConfig {
                ping_interval_ms: p,
                idle_timeout_ms: i,
                ..d()
            };
            assert!(c.validate().is_ok(), "{p} {i}");
        }
        // A 1 ms tick: deadlines at most 2^30 ticks ahead (12.4 days).
        let far = ServerConfig {
            timer_tick_ms: 1,
            idle_timeout_ms: (1 << 30) + 1,
            ..d()
        };
        assert!(refused(far).starts_with("idle_timeout_ms: "));
        assert!(
            ServerConfig {
                timer_tick_ms: 1,
                idle_timeout_ms: 1 << 30,
                ..d()
            }
            .validate()
            .is_ok()
        );
        // A frame limit above the message limit works, with a warning.
        let frame = ServerConfig {
            max_message_size: 65_536,
            ..d()
        };
        assert!(frame.validate().is_ok());
        assert_eq!(frame.warnings().len(), 1);
        assert!(d().warnings().is_empty());
        let e = ServerConfig {
            max_frame_size: 1 << 63,
            ..d()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "max_frame_size: 9223372036854775808 is too large (at most 9223372036854775793)"
        );
    }
}
