//! The engine: a sharded, thread-per-core WebSocket server on edge-triggered epoll (mio) or
//! io_uring, chosen at start-up.
//!
//! ```text
//!   Server::start ──► N shard threads, each:
//!      SO_REUSEPORT listener ─► accept ─► slab slot (ConnId = shard | generation | slot)
//!      backend: epoll (read into the shard's one buffer) or io_uring (multishot receive into
//!          the shard's provided-buffer ring) ─► Shard::process ─► proto::Connection
//!          ─► App callbacks (on_open / on_message / on_close) ─► Ctx: send, close, topics, post
//!      timer wheel (handshake, ping, idle, close deadlines)
//!      mailbox + waker (publishes, sends and posts from other shards)
//! ```
//!
//! The backend seam: a backend's loop (`epoll.rs`, `uring/`) accepts, hands received bytes to
//! `Shard::process`, and wakes on mail; the write path in `core.rs` (`Io`) writes with syscalls
//! under epoll and queues sends under io_uring. The protocol core and the application API do
//! not see which runs.

mod admission;
mod app;
mod app_timer;
mod broker;
mod budget;
mod config;
mod conn;
mod core;
mod ctx;
mod epoll;
mod handle;
#[cfg(test)]
mod harness;
mod id;
mod mailbox;
mod metrics;
mod shard;
mod timer;
mod tls;
mod topics;
mod udp;
mod upgrade;
#[allow(unsafe_code)] // the one place: see uring/mod.rs
mod uring;
mod write;
mod writeq;

pub mod apps;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use mio::{Interest, Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

pub use app::{App, AppFactory, Closed, SendError, SharedFrame, Why};
pub use app_timer::TimerId;
pub use broker::{Broker, Subscribed};
pub use config::{ConfigError, IoMode, ServerConfig, ValueError};
pub use ctx::Ctx;
pub use handle::{AppId, Handle};
pub use id::ConnId;
pub use metrics::ShardStats;
pub use tls::TlsError;
pub use udp::{Datagram, UdpError, UdpId, UdpStats};
pub use upgrade::{Accept, DEFERRED_INPUT_MAX, Upgrade, UpgradeRequest};

use broker::Registry;
use epoll::{Epoll, LISTENER, WAKER};
use handle::Shared;
use mailbox::{Peer, Waker as ShardWaker};
use shard::Shard;

/// Applications by request path, and a few plain pages served on the same port.
pub struct Routes {
    entries: Vec<(String, AppFactory)>,
    pages: Vec<Page>,
}

/// A page answered to a plain `GET` (a demo, a client library): its path, type and body.
#[derive(Clone, Debug)]
pub struct Page {
    /// The request path (exact; the query is ignored).
    pub path: String,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: bytes::Bytes,
}

impl Routes {
    /// No routes.
    pub fn new() -> Self {
        Routes {
            entries: Vec::new(),
            pages: Vec::new(),
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

    /// Answers a plain `GET path` (or `HEAD`) with `body`. For small static files (a demo page, a
    /// client library); the connection closes after the answer.
    pub fn page(
        mut self,
        path: &str,
        content_type: &'static str,
        body: impl Into<bytes::Bytes>,
    ) -> Self {
        self.pages.push(Page {
            path: path.to_owned(),
            content_type,
            body: body.into(),
        });
        self
    }

    /// The page served at `path`.
    pub fn find_page(&self, path: &str) -> Option<&Page> {
        self.pages.iter().find(|p| p.path == path)
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
    handle: Handle,
    threads: Vec<JoinHandle<io::Result<()>>>,
    stats: Vec<Arc<ShardStats>>,
    metrics_addr: Option<SocketAddr>,
    backend: String,
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

    /// Which I/O backend runs and why, for the start-up banner.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Per-shard counters.
    pub fn stats(&self) -> &[Arc<ShardStats>] {
        &self.stats
    }

    /// The Prometheus text of every counter.
    pub fn render_metrics(&self) -> String {
        metrics::render(&self.stats)
    }

    /// Whether connections speak TLS (wss://).
    pub fn tls(&self) -> bool {
        self.handle.shared.tls.is_some()
    }

    /// Reads the TLS certificate and key again (SIGHUP in `c10m serve`): new handshakes use
    /// the new pair, open connections stay open with theirs. On an error the pair in use
    /// stays. `Ok(false)` when the server does not speak TLS.
    pub fn reload_tls(&self) -> Result<bool, TlsError> {
        match &self.handle.shared.tls {
            Some(acceptor) => acceptor.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// The server for other threads: send, close, publish, post, answer deferred upgrades.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Starts a graceful shutdown: stop accepting, close every connection with 1001, drain.
    pub fn shutdown(&self) {
        self.handle.shutdown();
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

/// The backend `config.io` resolves to on this host, with the reason.
fn choose_backend(config: &ServerConfig) -> io::Result<(bool, String)> {
    match config.io {
        IoMode::Epoll => Ok((false, "epoll (mio, edge-triggered): --io epoll".into())),
        IoMode::Uring => match uring::probe(config) {
            Ok(()) => Ok((true, "--io uring".into())),
            Err(why) => Err(io::Error::other(format!("--io uring: {why}"))),
        },
        IoMode::Auto => match uring::probe(config) {
            Ok(()) => Ok((true, "--io auto: the kernel supports it".into())),
            Err(why) => Ok((
                false,
                format!("epoll (mio, edge-triggered): --io auto: io_uring unavailable: {why}"),
            )),
        },
    }
}

/// Starts the shards with the in-process broker and returns once each has set up its I/O.
pub fn start(config: ServerConfig, routes: Routes) -> io::Result<ServerHandle> {
    start_with_broker(config, routes, None)
}

/// Starts the shards with `broker` under subscribe and publish (`None`: the in-process
/// broker); the broker is attached (given a [`Handle`]) before any shard accepts.
pub fn start_with_broker(
    config: ServerConfig,
    routes: Routes,
    broker: Option<Arc<dyn Broker>>,
) -> io::Result<ServerHandle> {
    // A library caller gets the same checks as the command line (a frame limit near 2^64
    // would otherwise overflow a shard's arithmetic later).
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let config = Arc::new(config);
    let n = config.shard_count().clamp(1, usize::from(u16::MAX));
    if routes.entries.len() > usize::from(u8::MAX) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "at most 255 routes",
        ));
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            Some(Arc::new(tls::Acceptor::new(cert, key).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, e)
            })?))
        }
        _ => None,
    };
    let (use_uring, why) = choose_backend(&config)?;
    let listeners = listeners(config.listen, n, config.backlog)?;
    let local_addr = listeners[0].local_addr()?;
    let mut polls = Vec::with_capacity(n);
    let mut peers = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = std::sync::mpsc::channel();
        let waker = if use_uring {
            // Blocking: the ring waits for it to become readable; writers never block (the
            // counter would have to reach 2^64 - 2).
            let fd = nix::sys::eventfd::EventFd::from_value_and_flags(
                0,
                nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            polls.push(None);
            ShardWaker::EventFd(fd)
        } else {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            polls.push(Some(poll));
            ShardWaker::Mio(waker)
        };
        peers.push(Peer::new(tx, waker, config.mailbox_limit));
        inboxes.push(rx);
    }
    let handle = Handle {
        shared: Arc::new(Shared {
            peers,
            registry: Registry::new(broker.is_some()),
            broker: broker.clone(),
            paths: routes.paths().map(str::to_owned).collect(),
            admission: Arc::new(admission::Admission::new(config.admission())),
            partial_input: budget::Budget::new(config.max_reassembly_bytes),
            tls,
        }),
    };
    if let Some(b) = &broker {
        b.attach(handle.clone());
    }
    let routes = Arc::new(routes);
    let proto = config.proto();
    let clock = Instant::now();
    let mut threads = Vec::with_capacity(n);
    let mut stats = Vec::with_capacity(n);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<String>>();
    for (i, ((poll, std_listener), mail)) in
        polls.into_iter().zip(listeners).zip(inboxes).enumerate()
    {
        let shard_stats = Arc::new(ShardStats::default());
        stats.push(shard_stats.clone());
        let handle = handle.clone();
        let proto = proto.clone();
        let shard_stats = shard_stats.clone();
        let routes = routes.clone();
        let config = config.clone();
        let pin = config.pin.then_some(i % cores);
        let ready = ready_tx.clone();
        let waker_fd = match &handle.shared.peers[i].waker {
            ShardWaker::EventFd(fd) => Some(std::os::fd::AsRawFd::as_raw_fd(fd)),
            ShardWaker::Mio(_) => None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("c10m-shard-{i}"))
            .spawn(move || {
                // The thread's end, however it comes (a panic included), is what /health sees.
                let _stopped = metrics::StoppedOnDrop(shard_stats.clone());
                if let Some(cpu) = pin {
                    pin_to(cpu);
                }
                // The backend is set up on its shard's thread (an io_uring with SINGLE_ISSUER
                // belongs to the thread that made it).
                let backend = match (poll, waker_fd) {
                    (Some(poll), _) => {
                        let mut listener = mio::net::TcpListener::from_std(std_listener);
                        poll.registry()
                            .register(&mut listener, LISTENER, Interest::READABLE)
                            .map(|()| {
                                let size = config.read_buffer_size.max(4096);
                                Backend::Epoll(Epoll::new(poll, listener, size))
                            })
                    }
                    (None, Some(waker)) => std_listener
                        .set_nonblocking(false)
                        .and_then(|()| uring::Uring::new(&config, std_listener, waker))
                        .map(|u| Backend::Uring(Box::new(u))),
                    (None, None) => Err(io::Error::other("shard without a backend")),
                };
                let backend = match backend {
                    Ok(b) => {
                        let _ = ready.send(Ok(b.describe(&config)));
                        b
                    }
                    Err(e) => {
                        let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                drop(ready);
                // Apps and the core are built on their shard's thread, so they need not be
                // Send.
                let apps = routes.entries.iter().map(|(_, f)| f(i as u16)).collect();
                let mut shard = Shard::new(
                    i as u16,
                    config.clone(),
                    proto,
                    handle,
                    shard_stats,
                    (apps, routes),
                    mail,
                    clock,
                );
                shard.core.now = shard.now();
                shard.start_apps();
                let result = match backend {
                    Backend::Epoll(e) => e.run(&mut shard),
                    Backend::Uring(u) => u.run(&mut shard),
                };
                shard.stop_apps();
                result
            })?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut setup = None;
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(s)) => setup = Some(s),
            Ok(Err(e)) => {
                handle.shutdown();
                return Err(e);
            }
            Err(_) => {
                handle.shutdown();
                return Err(io::Error::other("a shard ended during set-up"));
            }
        }
    }
    let backend = match (use_uring, setup) {
        (true, Some(s)) => format!("{s}; {why}"),
        _ => why,
    };
    let metrics_addr = match config.metrics {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)?;
            let bound = listener.local_addr()?;
            let endpoint = metrics::endpoint(
                listener,
                metrics::Source {
                    shards: stats.clone(),
                    broker,
                    started: clock,
                },
            )?;
            std::thread::Builder::new()
                .name("c10m-metrics".into())
                .spawn(move || endpoint.serve())?;
            Some(bound)
        }
        None => None,
    };
    Ok(ServerHandle {
        local_addr,
        handle,
        threads,
        stats,
        metrics_addr,
        backend,
    })
}

/// A shard's I/O loop.
enum Backend {
    Epoll(Epoll),
    Uring(Box<uring::Uring>),
}

impl Backend {
    fn describe(&self, config: &ServerConfig) -> String {
        match self {
            Backend::Epoll(_) => "epoll (mio, edge-triggered)".into(),
            Backend::Uring(u) => format!(
                "io_uring (multishot accept and receive, {} x {} B provided buffers per shard{}, \
                 {} registered file slots for connections that talk, {}, {})",
                u.buffers(),
                config.ring_buffer_size,
                if u.incremental() {
                    " consumed incrementally"
                } else {
                    ""
                },
                u.fixed_files(),
                match u.park_ms() {
                    0 => "no parking".to_string(),
                    ms => format!("silent connections parked after {ms} ms"),
                },
                u.flags
            ),
        }
    }
}

/// Pins the calling thread to one CPU (best effort).
fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}
