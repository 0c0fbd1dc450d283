//! Per-connection limits and timers, shared by every connection of a server.

/// Limits and timers of the protocol core. Times are milliseconds on the caller's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest accepted frame payload; bigger frames close with 1009.
    pub max_frame_size: usize,
    /// Largest accepted message, fragments added up; bigger messages close with 1009.
    pub max_message_size: usize,
    /// Answer pings automatically (section 5.5.2 requires an answer).
    pub auto_pong: bool,
    /// Ping a peer that has sent nothing for this long.
    pub ping_interval_ms: Option<u64>,
    /// Close a peer that has sent nothing (pongs included) for this long.
    pub idle_timeout_ms: Option<u64>,
    /// After sending a close frame, wait this long for the peer's before giving up.
    pub close_timeout_ms: u64,
}

impl Default for Config {
    /// 16 MiB frames and messages (the largest Autobahn case is 16 MiB), automatic pongs, no
    /// keepalive, and 5 s for the close handshake.
    fn default() -> Self {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            auto_pong: true,
            ping_interval_ms: None,
            idle_timeout_ms: None,
            close_timeout_ms: 5_000,
        }
    }
}
