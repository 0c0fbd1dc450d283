//! Counters per shard (written only by their shard, read by the metrics endpoint) and the
//! plain-HTTP `/metrics` (Prometheus text format) and `/health` endpoint.
//!
//! The endpoint is for scrapers and health checks, and must stay up when a client misbehaves:
//! one thread runs a non-blocking loop (mio) over at most [`MAX_CLIENTS`] clients at once, so a
//! client that trickles its request holds nobody else up. Each client has [`HEAD_DEADLINE`] to
//! send its whole request head (408 after), at most [`HEAD_LIMIT`] bytes of it (431 beyond),
//! and [`ANSWER_DEADLINE`] to take the answer. When every slot is taken, the client that has
//! spent longest on its request head gives way to the new one (503), so idle connections
//! cannot lock a health check out. Memory is bounded by the clients times the head limit,
//! plus the answers being written.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::app::Why;

/// One shard's counters.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Open connections (handshaking included).
    pub connections: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// WebSocket handshakes completed.
    pub opened: AtomicU64,
    /// Connections closed, by [`Why`].
    pub closed: [AtomicU64; Why::ALL.len()],
    /// Handshakes refused or malformed.
    pub handshake_failures: AtomicU64,
    /// accept() errors (EMFILE, ENFILE...).
    pub accept_errors: AtomicU64,
    /// Mail to this shard dropped at `mailbox_limit` (publishes, sends, posts).
    pub mail_dropped: AtomicU64,
    /// Subscriptions refused by `max_subscriptions_per_connection` or `max_topics_per_shard`.
    pub subscriptions_refused: AtomicU64,
    /// Connections refused because the shard was full (`max_connections_per_shard`): answered
    /// 503 and closed.
    pub refused: AtomicU64,
    /// Connections refused with 429: their source held `max_connections_per_source`.
    pub refused_source_connections: AtomicU64,
    /// Connections refused with 429: their source opened `max_handshakes_per_source_per_sec`
    /// in the last second.
    pub refused_source_rate: AtomicU64,
    /// Connections refused with 503: the process accepted `max_handshakes_per_sec` in the
    /// last second.
    pub refused_global_rate: AtomicU64,
    /// Bytes of unfinished input held (partial frames, request heads, fragmented messages).
    pub partial_input_bytes: AtomicU64,
    /// Messages received.
    pub messages_in: AtomicU64,
    /// Messages sent (a broadcast counts once per recipient).
    pub messages_out: AtomicU64,
    /// Bytes read from sockets.
    pub bytes_in: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_out: AtomicU64,
    /// Bytes waiting in write queues.
    pub write_queue_bytes: AtomicU64,
    /// io_uring: multishot receives that ended because every provided buffer was in use (they
    /// are armed again once buffers come back).
    pub recv_buffers_exhausted: AtomicU64,
    /// io_uring: receives that landed in a provided buffer behind an earlier receive's bytes
    /// (incremental consumption packing small receives together).
    pub recv_buffers_shared: AtomicU64,
    /// io_uring: connections parked on a poll instead of an armed receive.
    pub recv_parked: AtomicU64,
    /// io_uring: receives cancelled to park their connection (sweeps; a handshake that came in
    /// pieces). New and woken connections are parked without one. A cancel that loses the race
    /// with input is counted too.
    pub recv_cancels: AtomicU64,
    /// io_uring: connections whose socket is in the registered file table (those that talk).
    pub ring_files: AtomicU64,
    /// io_uring: registered-file-table updates the kernel refused.
    pub ring_errors: AtomicU64,
    /// io_uring: operations submitted whose last completion has not arrived.
    pub io_in_flight: AtomicU64,
    /// The server clock (ms since start) at the end of the shard's last loop iteration: an
    /// idle shard still runs one every [`HEARTBEAT_MS`], so a stale value means a stuck shard.
    pub loop_at_ms: AtomicU64,
    /// The shard's thread ended (stopped, failed or panicked).
    pub stopped: AtomicBool,
}

/// Marks its shard stopped when dropped: held by the shard's thread for its whole life.
#[derive(Debug)]
pub struct StoppedOnDrop(pub Arc<ShardStats>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.stopped.store(true, Relaxed);
    }
}

/// The longest an idle shard sleeps before running its loop (and saying it is alive).
pub const HEARTBEAT_MS: u64 = 1_000;

/// A shard whose loop has not run for this long is reported stuck by `/health` (503).
pub const STUCK_MS: u64 = 10_000;

impl ShardStats {
    /// Adds `n` to a counter. Only the shard's own thread writes its counters, so this is a
    /// plain load and store, not a locked read-modify-write (which costs tens of cycles on
    /// x86, several times per message); readers on other threads see each value whole.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Relaxed);
    }

    /// Subtracts `n` from a gauge (single writer, like [`ShardStats::add`]).
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_sub(n), Relaxed);
    }
}

/// Renders every shard's counters in Prometheus text format.
pub fn render(shards: &[Arc<ShardStats>]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, get: &dyn Fn(&ShardStats) -> u64| {
        let _ = writeln!(out, "# HELP c10m_{name} {help}\n# TYPE c10m_{name} {kind}");
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(out, "c10m_{name}{{shard=\"{i}\"}} {}", get(s));
        }
    };
    family("connections", "gauge", "Open connections.", &|s| {
        s.connections.load(Relaxed)
    });
    family(
        "accepted_total",
        "counter",
        "TCP connections accepted.",
        &|s| s.accepted.load(Relaxed),
    );
    family(
        "opened_total",
        "counter",
        "WebSocket handshakes completed.",
        &|s| s.opened.load(Relaxed),
    );
    family(
        "handshake_failures_total",
        "counter",
        "Handshakes refused or malformed.",
        &|s| s.handshake_failures.load(Relaxed),
    );
    family(
        "accept_errors_total",
        "counter",
        "accept() failures (EMFILE, ENFILE...).",
        &|s| s.accept_errors.load(Relaxed),
    );
    family(
        "mail_dropped_total",
        "counter",
        "Publishes, sends and posts to this shard dropped because its mailbox held mailbox_limit.",
        &|s| s.mail_dropped.load(Relaxed),
    );
    family(
        "subscriptions_refused_total",
        "counter",
        "Subscriptions refused by max_subscriptions_per_connection or max_topics_per_shard.",
        &|s| s.subscriptions_refused.load(Relaxed),
    );
    family(
        "refused_total",
        "counter",
        "Connections refused with 503 because the shard held max_connections_per_shard.",
        &|s| s.refused.load(Relaxed),
    );
    family(
        "partial_input_bytes",
        "gauge",
        "Bytes of unfinished input held: partial frames, request heads, fragmented messages (the process may hold max_reassembly_bytes).",
        &|s| s.partial_input_bytes.load(Relaxed),
    );
    family(
        "refused_source_connections_total",
        "counter",
        "Connections refused with 429 because their source held max_connections_per_source.",
        &|s| s.refused_source_connections.load(Relaxed),
    );
    family(
        "refused_source_rate_total",
        "counter",
        "Connections refused with 429 because their source was over max_handshakes_per_source_per_sec.",
        &|s| s.refused_source_rate.load(Relaxed),
    );
    family(
        "refused_global_rate_total",
        "counter",
        "Connections refused with 503 because the process was over max_handshakes_per_sec.",
        &|s| s.refused_global_rate.load(Relaxed),
    );
    family("messages_in_total", "counter", "Messages received.", &|s| {
        s.messages_in.load(Relaxed)
    });
    family("messages_out_total", "counter", "Messages sent.", &|s| {
        s.messages_out.load(Relaxed)
    });
    family("bytes_in_total", "counter", "Bytes read.", &|s| {
        s.bytes_in.load(Relaxed)
    });
    family("bytes_out_total", "counter", "Bytes written.", &|s| {
        s.bytes_out.load(Relaxed)
    });
    family(
        "write_queue_bytes",
        "gauge",
        "Bytes waiting in write queues.",
        &|s| s.write_queue_bytes.load(Relaxed),
    );
    family(
        "recv_buffers_exhausted_total",
        "counter",
        "io_uring: receives paused because every provided buffer was in use.",
        &|s| s.recv_buffers_exhausted.load(Relaxed),
    );
    family(
        "recv_buffers_shared_total",
        "counter",
        "io_uring: receives packed into a provided buffer behind an earlier one.",
        &|s| s.recv_buffers_shared.load(Relaxed),
    );
    family(
        "recv_parked",
        "gauge",
        "io_uring: silent connections parked on a poll instead of an armed receive.",
        &|s| s.recv_parked.load(Relaxed),
    );
    family(
        "recv_cancels_total",
        "counter",
        "io_uring: receives cancelled to park their connection.",
        &|s| s.recv_cancels.load(Relaxed),
    );
    family(
        "ring_files",
        "gauge",
        "io_uring: connections whose socket is in the registered file table.",
        &|s| s.ring_files.load(Relaxed),
    );
    family(
        "ring_errors_total",
        "counter",
        "io_uring: registered-file-table updates the kernel refused.",
        &|s| s.ring_errors.load(Relaxed),
    );
    family(
        "io_in_flight",
        "gauge",
        "io_uring: operations submitted and not yet completed.",
        &|s| s.io_in_flight.load(Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP c10m_closed_total Connections closed, by reason.\n# TYPE c10m_closed_total counter"
    );
    for (i, s) in shards.iter().enumerate() {
        for why in Why::ALL {
            let _ = writeln!(
                out,
                "c10m_closed_total{{shard=\"{i}\",reason=\"{}\"}} {}",
                why.label(),
                s.closed[why.index()].load(Relaxed)
            );
        }
    }
    out
}

/// Most clients served at once.
pub const MAX_CLIENTS: usize = 64;
/// Largest request head (request line and headers); a longer one is answered 431.
pub const HEAD_LIMIT: usize = 8 * 1024;
/// Time a client has, from its connect, to send its whole request head; then 408.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Time a client has to take its answer.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// After the answer, input is read and dropped until the client closes (or this long, or
/// [`LINGER_BYTES`]), so that closing with unread input does not reset the connection before
/// the client has read its answer (a 431 to a client still sending, say).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// After an accept error (EMFILE...), wait this long before trying again rather than spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(usize::MAX);

/// What the endpoint reports: every shard's counters, and the broker (its counters, and
/// whether it reaches the other processes: `/health` says `degraded` when it does not).
pub struct Source {
    /// Per-shard counters.
    pub shards: Vec<Arc<ShardStats>>,
    /// The broker, if the server has one.
    pub broker: Option<Arc<dyn super::Broker>>,
    /// When the server started: the shards' clock.
    pub started: Instant,
}

impl Source {
    fn metrics(&self) -> String {
        let mut text = render(&self.shards);
        if let Some(b) = &self.broker {
            text.push_str(&b.metrics());
        }
        text
    }

    /// The status and body of `/health`: 503 when a shard has stopped or its loop has not run
    /// for [`STUCK_MS`]; degraded (still 200: a liveness probe must not restart a server that
    /// serves its own clients) while the broker is away; else ok.
    fn health(&self) -> (&'static str, String) {
        let now = self.started.elapsed().as_millis() as u64;
        for (i, s) in self.shards.iter().enumerate() {
            if s.stopped.load(Relaxed) {
                return (
                    "503 Service Unavailable",
                    format!("unhealthy: shard {i} stopped\n"),
                );
            }
            let silent = now.saturating_sub(s.loop_at_ms.load(Relaxed));
            if silent >= STUCK_MS {
                return (
                    "503 Service Unavailable",
                    format!("unhealthy: shard {i} has not run its loop for {silent} ms\n"),
                );
            }
        }
        match &self.broker {
            Some(b) if !b.healthy() => (
                "200 OK",
                "degraded: the broker cannot reach the other processes\n".into(),
            ),
            _ => ("200 OK", "ok\n".into()),
        }
    }
}

/// Serves `/metrics` and `/health` on `listener` until the process exits.
/// Sets the endpoint up on the calling thread: its epoll instance and registration take fds
/// now, so a process whose fd table is already full (or fills right after start-up) fails to
/// start instead of losing its metrics listener on the endpoint's own thread later.
pub fn endpoint(listener: TcpListener, source: Source) -> io::Result<Endpoint> {
    Endpoint::new(listener, source)
}

/// Where a client is in its one exchange.
#[derive(Debug)]
enum Phase {
    /// Reading the request head into the buffer.
    Head(Vec<u8>),
    /// Writing the answer; `at` bytes are out.
    Answer { out: Vec<u8>, at: usize },
    /// Answer written and the write side shut: dropping input until the client closes;
    /// `dropped` bytes so far.
    Linger { dropped: usize },
}

#[derive(Debug)]
struct Client {
    stream: TcpStream,
    phase: Phase,
    /// When it connected (the oldest reader gives way when the slots are full).
    since: Instant,
    /// When the current phase must be over.
    deadline: Instant,
}

/// What a client's input or deadline led to.
enum Next {
    Keep,
    Close,
}

/// The metrics and health endpoint: one thread, one poll, a bounded set of clients.
pub struct Endpoint {
    poll: Poll,
    listener: mio::net::TcpListener,
    clients: Slab<Client>,
    source: Source,
    /// After an accept error: when to try again (edge-triggered readiness will not say).
    accept_retry: Option<Instant>,
}

impl Endpoint {
    fn new(listener: TcpListener, source: Source) -> io::Result<Endpoint> {
        listener.set_nonblocking(true)?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Endpoint {
            poll,
            listener,
            clients: Slab::with_capacity(MAX_CLIENTS),
            source,
            accept_retry: None,
        })
    }

    /// Serves until the poll itself fails (logged; accept errors are retried, not fatal).
    pub fn serve(mut self) {
        if let Err(error) = self.run() {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(MAX_CLIENTS + 1);
        loop {
            let now = Instant::now();
            let next = self
                .clients
                .iter()
                .map(|(_, c)| c.deadline)
                .chain(self.accept_retry)
                .min();
            let timeout = next.map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut accept = self.accept_retry.is_some_and(|t| Instant::now() >= t);
            for event in &events {
                match event.token() {
                    LISTENER => accept = true,
                    Token(key) => self.on_ready(key),
                }
            }
            if accept {
                self.accept();
            }
            self.expire(Instant::now());
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accept_retry = None;
                    self.admit(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    if self.accept_retry.is_none() {
                        tracing::warn!(%error, "metrics endpoint: accept failed; retrying");
                    }
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Takes a new client, making room if every slot is taken.
    fn admit(&mut self, mut stream: TcpStream) {
        if self.clients.len() >= MAX_CLIENTS {
            let oldest_reader = self
                .clients
                .iter()
                .filter(|(_, c)| matches!(c.phase, Phase::Head(_)))
                .min_by_key(|(_, c)| c.since)
                .map(|(key, _)| key);
            match oldest_reader {
                Some(key) => {
                    let mut evicted = self.clients.remove(key);
                    refuse(&mut evicted.stream, "503 Service Unavailable");
                    let _ = self.poll.registry().deregister(&mut evicted.stream);
                }
                None => {
                    refuse(&mut stream, "503 Service Unavailable");
                    return;
                }
            }
        }
        let entry = self.clients.vacant_entry();
        let token = Token(entry.key());
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, token, interest)
            .is_err()
        {
            return;
        }
        let now = Instant::now();
        let key = entry.key();
        entry.insert(Client {
            stream,
            phase: Phase::Head(Vec::new()),
            since: now,
            deadline: now + HEAD_DEADLINE,
        });
        // Readiness is edge-triggered: the request may already be waiting.
        self.on_ready(key);
    }

    fn on_ready(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if let Next::Close = client.progress(&self.source) {
            self.close(key);
        }
    }

    /// Answers 408 to clients out of time for their head; closes the others out of time.
    fn expire(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(key, _)| key)
            .collect();
        for key in late {
            let Some(client) = self.clients.get_mut(key) else {
                continue;
            };
            if matches!(client.phase, Phase::Head(_)) {
                client.answer(respond(
                    "408 Request Timeout",
                    "text/plain",
                    "request timeout\n",
                    true,
                ));
                if let Next::Keep = client.progress(&self.source) {
                    continue;
                }
            }
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if self.clients.contains(key) {
            let mut client = self.clients.remove(key);
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
    }
}

impl Client {
    /// Reads, answers and writes as far as the socket allows.
    fn progress(&mut self, source: &Source) -> Next {
        loop {
            match &mut self.phase {
                Phase::Head(head) => match read_head(&mut self.stream, head) {
                    Ok(Some(reply)) => self.answer(reply.bytes(source)),
                    Ok(None) => return Next::Keep,
                    Err(()) => return Next::Close,
                },
                Phase::Answer { out, at } => {
                    while *at < out.len() {
                        match self.stream.write(&out[*at..]) {
                            Ok(0) => return Next::Close,
                            Ok(n) => *at += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return Next::Close,
                        }
                    }
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.phase = Phase::Linger { dropped: 0 };
                    self.deadline = Instant::now() + LINGER;
                }
                Phase::Linger { dropped } => {
                    let mut scratch = [0u8; 4096];
                    loop {
                        match self.stream.read(&mut scratch) {
                            Ok(0) => return Next::Close,
                            Ok(n) => {
                                *dropped += n;
                                if *dropped > LINGER_BYTES {
                                    return Next::Close;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return Next::Close,
                        }
                    }
                }
            }
        }
    }

    fn answer(&mut self, out: Vec<u8>) {
        self.phase = Phase::Answer { out, at: 0 };
        self.deadline = Instant::now() + ANSWER_DEADLINE;
    }
}

/// The answer a request head gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// `/metrics`, with the body unless the method was HEAD.
    Metrics { body: bool },
    /// `/health`, with the body unless the method was HEAD.
    Health { body: bool },
    /// Any other answer, with its status and body (`Allow` goes with a 405).
    Fixed {
        status: &'static str,
        body: &'static str,
    },
}

impl Reply {
    fn bytes(self, source: &Source) -> Vec<u8> {
        match self {
            Reply::Metrics { body } => {
                let text = source.metrics();
                respond("200 OK", "text/plain; version=0.0.4", &text, body)
            }
            Reply::Health { body } => {
                let (status, text) = source.health();
                respond(status, "text/plain", &text, body)
            }
            Reply::Fixed { status, body } => respond(status, "text/plain", body, true),
        }
    }
}

const TOO_LARGE: Reply = Reply::Fixed {
    status: "431 Request Header Fields Too Large",
    body: "request head too large\n",
};

/// Reads what the socket has into `head`. `Ok(Some)` once the head is complete (or refused),
/// `Ok(None)` while more is needed, `Err` when the client is gone.
fn read_head(stream: &mut TcpStream, head: &mut Vec<u8>) -> Result<Option<Reply>, ()> {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(()),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(()),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(head) {
            Ok(httparse::Status::Complete(_)) => {
                let path = request.path.unwrap_or("");
                let path = path.split('?').next().unwrap_or(path);
                return Ok(Some(route(request.method.unwrap_or(""), path)));
            }
            // Not complete within the limit: refused, whatever would have followed.
            Ok(httparse::Status::Partial) if head.len() > HEAD_LIMIT => return Ok(Some(TOO_LARGE)),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Ok(Some(TOO_LARGE)),
            Err(_) => {
                return Ok(Some(Reply::Fixed {
                    status: "400 Bad Request",
                    body: "bad request\n",
                }));
            }
        }
    }
}

/// The reply to `method path`: GET or HEAD of `/metrics` or `/health`, else 404 or 405.
fn route(method: &str, path: &str) -> Reply {
    let body = method != "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Reply::Metrics { body },
        ("GET" | "HEAD", "/health") => Reply::Health { body },
        (_, "/metrics" | "/health") => Reply::Fixed {
            status: "405 Method Not Allowed",
            body: "method not allowed: use GET or HEAD\n",
        },
        _ => Reply::Fixed {
            status: "404 Not Found",
            body: "not found: /metrics and /health are served here\n",
        },
    }
}

fn respond(status: &str, kind: &str, body: &str, with_body: bool) -> Vec<u8> {
    //= https://www.rfc-editor.org/rfc/rfc9110#section-15.5.6
    //# The origin server MUST generate an Allow header field in a 405 response containing a
    //# list of the target resource's currently supported methods.
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{allow}\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// A best-effort short answer to a client about to be dropped (the socket is non-blocking;
/// what does not fit is lost, and the client sees the close anyway).
fn refuse(stream: &mut TcpStream, status: &str) {
    let _ = stream.write(&respond(status, "text/plain", "busy\n", true));
    let _ = stream.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_statuses() {
        assert_eq!(route("GET", "/metrics"), Reply::Metrics { body: true });
        assert_eq!(route("HEAD", "/health"), Reply::Health { body: false });
        let status = |r: Reply| match r {
            Reply::Fixed { status, .. } => status,
            _ => "200",
        };
        assert_eq!(status(route("POST", "/metrics")), "405 Method Not Allowed");
        assert_eq!(status(route("GET", "/")), "404 Not Found");
        let none = Source {
            shards: Vec::new(),
            broker: None,
            started: Instant::now(),
        };
        let out = String::from_utf8(route("DELETE", "/health").bytes(&none)).unwrap();
        assert!(out.contains("\r\nAllow: GET, HEAD\r\n"), "{out}");
        let head = String::from_utf8(Reply::Health { body: false }.bytes(&none)).unwrap();
        assert!(
            head.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
    }

    #[test]
    fn health_follows_the_shards_loops() {
        let shards: Vec<Arc<ShardStats>> = (0..2).map(|_| Arc::default()).collect();
        let started = Instant::now() - Duration::from_secs(60);
        let source = Source {
            shards: shards.clone(),
            broker: None,
            started,
        };
        let beat = |s: &ShardStats| {
            s.loop_at_ms
                .store(started.elapsed().as_millis() as u64, Relaxed)
        };
        shards.iter().for_each(|s| beat(s));
        assert_eq!(source.health(), ("200 OK", "ok\n".to_string()));
        // Shard 1's loop last ran 20 s ago.
        shards[1].loop_at_ms.store(40_000, Relaxed);
        let (status, body) = source.health();
        assert_eq!(status, "503 Service Unavailable");
        assert!(
            body.starts_with("unhealthy: shard 1 has not run its loop"),
            "{body}"
        );
        beat(&shards[1]);
        shards[0].stopped.store(true, Relaxed);
        assert_eq!(
            source.health(),
            (
                "503 Service Unavailable",
                "unhealthy: shard 0 stopped\n".to_string()
            )
        );
        let reply = String::from_utf8(Reply::Health { body: true }.bytes(&source)).unwrap();
        assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    }
}
