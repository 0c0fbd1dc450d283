//! Counters per shard (written only by their shard, read by the metrics endpoint) and the
//! plain-HTTP `/metrics` (Prometheus text format) and `/health` endpoint.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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
}

impl ShardStats {
    /// Adds `n` to a counter (single writer: relaxed is enough).
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Relaxed);
    }

    /// Subtracts `n` from a gauge.
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
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

/// Serves `/metrics` and `/health` on `listener` until the process exits (one short request
/// per connection; this is for scrapers, not for load).
pub fn serve(listener: TcpListener, shards: Vec<Arc<ShardStats>>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let _ = answer(stream, &shards);
            }
            // EMFILE and friends: wait for fds to free up rather than spin.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn answer(stream: TcpStream, shards: &[Arc<ShardStats>]) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, kind, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", render(shards)),
        "/health" => ("200 OK", "text/plain", "ok\n".to_owned()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
