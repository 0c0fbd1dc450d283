//! The engine: a sharded, thread-per-core WebSocket server on edge-triggered epoll (mio).
//!
//! ```text
//!   Server::start ──► N shard threads, each:
//!      SO_REUSEPORT listener ─► accept ─► slab slot (ConnId = shard | generation | slot)
//!      epoll (mio, edge-triggered) ─► read into the shard's one buffer ─► proto::Connection
//!          ─► App callbacks (on_open / on_message / on_close) ─► Ctx: send, close, topics, post
//!      timer wheel (handshake, ping, idle, close deadlines)
//!      mailbox + Waker (publishes, sends and posts from other shards)
//! ```
//!
//! The backend seam: everything socket-specific is in `shard.rs` (readiness, `read`, `accept`)
//! and `core.rs` (`Io::output`, the write path); the protocol core and the application API do
//! not see it.

mod app;
mod config;
mod conn;
mod core;
mod id;
mod metrics;
mod shard;
mod timer;
mod topics;
mod writeq;

pub mod apps;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Instant;

use mio::{Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

pub use app::{App, AppFactory, Closed, SendError, SharedFrame, Upgrade, Why};
pub use config::{ConfigError, ServerConfig};
pub use core::Ctx;
pub use id::ConnId;
pub use metrics::ShardStats;

use core::{Core, Io, Mail, Peer};
use shard::{Shard, WAKER};
use timer::TimerWheel;
use topics::Topics;

/// Applications by request path.
pub struct Routes {
    entries: Vec<(String, AppFactory)>,
}

impl Routes {
    /// No routes.
    pub fn new() -> Self {
        Routes {
            entries: Vec::new(),
        }
    }

    /// Serves `path` (exact match, query ignored) with apps built by `factory`, one per shard.
    pub fn route(
        mut self,
        path: &str,
        factory: impl Fn(u16) -> Box<dyn App> + Send + Sync + 'static,
    ) -> Self {
        self.entries.push((path.to_owned(), Arc::new(factory)));
        self
    }

    /// The index of the app serving `path`.
    pub fn find(&self, path: &str) -> Option<usize> {
        self.entries.iter().position(|(p, _)| p == path)
    }

    /// The routed paths.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(p, _)| p.as_str())
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.paths()).finish()
    }
}

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    peers: Arc<Vec<Peer>>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    stats: Vec<Arc<ShardStats>>,
    metrics_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("shards", &self.threads.len())
            .finish()
    }
}

impl ServerHandle {
    /// The address every shard listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Per-shard counters.
    pub fn stats(&self) -> &[Arc<ShardStats>] {
        &self.stats
    }

    /// The Prometheus text of every counter.
    pub fn render_metrics(&self) -> String {
        metrics::render(&self.stats)
    }

    /// Starts a graceful shutdown: stop accepting, close every connection with 1001, drain.
    pub fn shutdown(&self) {
        for peer in self.peers.iter() {
            peer.send(Mail::Shutdown);
        }
    }

    /// Waits for every shard to finish.
    pub fn join(self) -> io::Result<()> {
        for t in self.threads {
            t.join()
                .map_err(|_| io::Error::other("a shard panicked"))??;
        }
        Ok(())
    }
}

/// Binds one `SO_REUSEPORT` listener per shard on `addr` (the first fixes the port when `addr`
/// asks for port 0).
fn listeners(addr: SocketAddr, n: usize, backlog: i32) -> io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Starts the shards and returns at once.
pub fn start(config: ServerConfig, routes: Routes) -> io::Result<ServerHandle> {
    let config = Arc::new(config);
    let n = config.shard_count().clamp(1, usize::from(u16::MAX));
    if routes.entries.len() > usize::from(u8::MAX) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "at most 255 routes",
        ));
    }
    let listeners = listeners(config.listen, n, config.backlog)?;
    let local_addr = listeners[0].local_addr()?;
    let mut polls = Vec::with_capacity(n);
    let mut peers = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (tx, rx) = std::sync::mpsc::channel();
        peers.push(Peer {
            tx,
            waker,
            pending: AtomicBool::new(false),
        });
        inboxes.push(rx);
        polls.push(poll);
    }
    let peers = Arc::new(peers);
    let routes = Arc::new(routes);
    let proto = config.proto();
    let clock = Instant::now();
    let mut threads = Vec::with_capacity(n);
    let mut stats = Vec::with_capacity(n);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    for (i, ((poll, std_listener), mail)) in
        polls.into_iter().zip(listeners).zip(inboxes).enumerate()
    {
        let shard_stats = Arc::new(ShardStats::default());
        stats.push(shard_stats.clone());
        let mut listener = mio::net::TcpListener::from_std(std_listener);
        poll.registry()
            .register(&mut listener, Token(usize::MAX - 1), Interest::READABLE)?;
        let core = Core {
            shard: i as u16,
            io: Io {
                conns: Slab::new(),
                generations: Vec::new(),
                cork: Vec::with_capacity(64 << 10),
                corked: None,
                stats: shard_stats,
                limit: config.write_queue_limit,
                dead: Vec::new(),
                dirty: Vec::new(),
            },
            topics: Topics::default(),
            timers: TimerWheel::new(config.timer_tick_ms),
            peers: peers.clone(),
            config: config.clone(),
            proto: proto.clone(),
            now: 0,
            current_app: 0,
            scratch: Vec::new(),
        };
        let routes = routes.clone();
        let buf_size = config.read_buffer_size.max(4096);
        let pin = config.pin.then_some(i % cores);
        let thread = std::thread::Builder::new()
            .name(format!("c10m-shard-{i}"))
            .spawn(move || {
                if let Some(cpu) = pin {
                    pin_to(cpu);
                }
                // Apps are built on their shard's thread, so they need not be Send.
                let apps = routes.entries.iter().map(|(_, f)| f(i as u16)).collect();
                let shard = Shard {
                    poll,
                    listener: Some(listener),
                    core,
                    apps,
                    routes,
                    buf: vec![0; buf_size],
                    mail,
                    clock,
                    again: Vec::new(),
                    accept_paused_until: None,
                    draining_until: None,
                };
                shard.run()
            })?;
        threads.push(thread);
    }
    let metrics_addr = match config.metrics {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)?;
            let bound = listener.local_addr()?;
            let all = stats.clone();
            std::thread::Builder::new()
                .name("c10m-metrics".into())
                .spawn(move || metrics::serve(listener, all))?;
            Some(bound)
        }
        None => None,
    };
    Ok(ServerHandle {
        local_addr,
        peers,
        threads,
        stats,
        metrics_addr,
    })
}

/// Pins the calling thread to one CPU (best effort).
fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}
