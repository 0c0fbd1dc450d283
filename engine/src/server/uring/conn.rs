//! io_uring's per-connection state, kept in the shared connection slot ([`super::super::conn::Conn`])
//! but read and written only by the io_uring backend.

/// io_uring: how a connection's input is watched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Watch {
    /// A multishot receive is armed (or about to be).
    #[default]
    Receive,
    /// Its receive is being cancelled so that the connection can be parked.
    Parking,
    /// Parked: registered one-shot in the shard's epoll instance until input comes; no
    /// receive is armed.
    Parked,
    /// New, or woken from parking: a single-shot receive is armed. If the input it brings
    /// completes the handshake or carries no message (a heartbeat's pong, say), and leaves
    /// nothing over, the connection is parked again at once; otherwise it gets a multishot
    /// receive.
    Woken,
}

/// What io_uring keeps per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConn {
    /// The key of the send in flight (when `Conn::sending`).
    pub send_key: u32,
    /// How its input is watched.
    pub watch: Watch,
    /// Input arrived since the last parking sweep.
    pub active: bool,
}

impl Default for RingConn {
    fn default() -> Self {
        RingConn {
            send_key: 0,
            watch: Watch::Receive,
            active: true,
        }
    }
}
