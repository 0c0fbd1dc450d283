//! Server settings: command-line flags or a TOML file map onto [`ServerConfig`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::proto;

/// Which I/O backend the shards run on.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
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

/// Everything `c10m serve` can be told. Times are milliseconds.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address every shard listens on (with `SO_REUSEPORT`).
    pub listen: SocketAddr,
    /// Number of shards (threads); 0 means one per available core.
    pub shards: usize,
    /// Pin shard `i` to core `i % cores`.
    pub pin: bool,
    /// Listen backlog per shard (capped by net.core.somaxconn).
    pub backlog: i32,
    /// Largest frame payload accepted (1009 beyond).
    pub max_frame_size: usize,
    /// Largest message accepted, fragments added up (1009 beyond).
    pub max_message_size: usize,
    /// Largest HTTP request head (431 beyond).
    pub max_header_bytes: usize,
    /// Time a client has to complete its opening handshake.
    pub handshake_timeout_ms: u64,
    /// Ping a connection that has been silent this long; 0 disables pings.
    pub ping_interval_ms: u64,
    /// Close a connection silent (pongs included) this long; 0 disables the idle timeout.
    pub idle_timeout_ms: u64,
    /// Time the peer has to answer our close frame.
    pub close_timeout_ms: u64,
    /// A connection whose unsent output exceeds this many bytes when more is sent to it is a
    /// slow consumer: it is closed (reported with code 1008) and counted. One message may
    /// always be queued on top, so memory per connection is bounded by this plus one message.
    pub write_queue_limit: usize,
    /// Most connections per shard; further accepts are closed at once.
    pub max_connections_per_shard: usize,
    /// On SIGTERM/SIGINT, how long connections get to finish their close handshake.
    pub drain_timeout_ms: u64,
    /// Size of each shard's shared read buffer.
    pub read_buffer_size: usize,
    /// Timer wheel resolution.
    pub timer_tick_ms: u64,
    /// Origins allowed to connect (browsers send `Origin`); empty allows any. Others get 403.
    pub allowed_origins: Vec<String>,
    /// Plain-HTTP address for `/metrics` (Prometheus) and `/health`; none by default.
    pub metrics: Option<SocketAddr>,
    /// The I/O backend.
    pub io: IoMode,
    /// io_uring: provided buffers per shard (a power of two, at most 32768). Sized for the bytes
    /// received between two turns of the loop, not for connections: an idle connection holds
    /// none. `None`: 16 where the kernel consumes them incrementally (Linux 6.12), else 256.
    pub ring_buffers: Option<u16>,
    /// io_uring: bytes per provided buffer.
    pub ring_buffer_size: u32,
    /// io_uring: slots of each shard's registered file table (a connection in a slot below it
    /// is named by table index rather than descriptor while it talks, not while parked);
    /// `None` sizes it from RLIMIT_NOFILE, 0 registers none.
    pub ring_files: Option<u32>,
    /// io_uring: a connection silent for this long (up to twice this) is parked: its multishot
    /// receive, which holds ~650 bytes of kernel memory, gives way to a one-shot registration
    /// in an epoll instance the ring watches, until input comes. 0 never parks.
    pub ring_park_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            shards: 0,
            pin: false,
            backlog: 4096,
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            max_header_bytes: 8 * 1024,
            handshake_timeout_ms: 10_000,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 75_000,
            close_timeout_ms: 5_000,
            write_queue_limit: 1 << 20,
            max_connections_per_shard: 1 << 24,
            drain_timeout_ms: 5_000,
            read_buffer_size: 64 * 1024,
            timer_tick_ms: 100,
            allowed_origins: Vec::new(),
            metrics: None,
            io: IoMode::default(),
            ring_buffers: None,
            ring_buffer_size: 16 * 1024,
            ring_files: None,
            ring_park_ms: 1_000,
        }
    }
}

/// A config file that could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is not valid TOML for [`ServerConfig`].
    Toml(toml::de::Error),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Io(e) => write!(f, "cannot read config: {e}"),
            ConfigError::Toml(e) => write!(f, "invalid config: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

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
}
