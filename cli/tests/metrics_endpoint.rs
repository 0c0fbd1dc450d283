//! The metrics endpoint stays up when its clients misbehave: a client trickling its request, a
//! request line that never ends, and more idle connections than it serves at once must not keep
//! `/health` from another client, nor grow the server's memory. The server runs as its own
//! process (`c10m serve --metrics`), so its peak RSS is its own. Waits are for events; the
//! timeouts are only upper bounds that a loaded machine stays far below.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Upper bound for any one answer; the endpoint answers in milliseconds.
const PATIENCE: Duration = Duration::from_secs(30);

/// A `c10m serve --metrics` process: (process, metrics address).
fn start() -> (support::KillOnDrop, SocketAddr) {
    let (server, _, mut lines) =
        support::spawn_serve("", "--listen 127.0.0.1:0 --shards 1 --metrics 127.0.0.1:0");
    let line = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.contains("/metrics")))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || for _ in lines {});
    (server, support::addr_after(&line, "http://"))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Everything the server sends until it closes; a reset ends it too (what came before stays).
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no answer within {PATIENCE:?}: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    read_all(&mut s)
}

fn health(addr: SocketAddr) -> String {
    exchange(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// The process's peak resident set, KiB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_trickling_client_does_not_hold_up_health() {
    let (_server, addr) = start();
    let mut slow = connect(addr);
    slow.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    // One byte at a time, never finishing the head: each read of a server that waits per read
    // would be satisfied, and it would wait on this client for ever.
    let trickler = std::thread::spawn(move || {
        slow.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 512];
        for _ in 0..(PATIENCE.as_millis() / 300) {
            match slow.read(&mut chunk) {
                Ok(0) => return Some(String::from_utf8_lossy(&answer).into_owned()),
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if slow.write_all(b"X").is_err() {
                        return Some(String::from_utf8_lossy(&answer).into_owned());
                    }
                }
                Err(_) => return Some(String::from_utf8_lossy(&answer).into_owned()),
            }
        }
        None
    });
    let answer = health(addr);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    // The trickler itself is cut off by the whole-head deadline (5 s), though it keeps sending.
    let cut = trickler.join().unwrap();
    let cut = cut.expect("the trickling client was never cut off");
    assert!(cut.is_empty() || cut.starts_with("HTTP/1.1 408"), "{cut}");
}

#[test]
fn an_endless_request_line_is_refused_without_growing_memory() {
    let (server, addr) = start();
    let pid = server.0.id();
    // A client that stops after 16 KiB of an unfinished head gets a clean 431.
    let mut s = connect(addr);
    s.write_all(b"GET /").unwrap();
    s.write_all(&[b'a'; 16 * 1024]).unwrap();
    let answer = read_all(&mut s);
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{answer:?}"
    );

    let before = peak_rss_kb(pid);
    // One that keeps sending, 1 MiB at a time with no newline, up to 64 MiB: refused and cut
    // off (the 431 may be lost to the reset its unread bytes cause).
    let mut s = connect(addr);
    s.write_all(b"GET /").unwrap();
    let mib = vec![b'a'; 1 << 20];
    let mut sent = 0;
    while sent < 64 && s.write_all(&mib).is_ok() {
        sent += 1;
    }
    assert!(sent < 64, "the server took 64 MiB of request line");
    let answer = read_all(&mut s);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer:?}"
    );
    let grown = peak_rss_kb(pid).saturating_sub(before);
    assert!(grown < 8 * 1024, "peak RSS grew by {grown} KiB");
    assert!(health(addr).starts_with("HTTP/1.1 200 OK"));
}

#[test]
fn idle_clients_beyond_the_cap_do_not_lock_out_health() {
    let (_server, addr) = start();
    // Three times the 64 clients served at once, connected and silent.
    let mut idle: Vec<TcpStream> = (0..192).map(|_| connect(addr)).collect();
    let answer = health(addr);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    // The first ones gave way: answered 503, or closed.
    let first = read_all(&mut idle[0]);
    assert!(
        first.is_empty() || first.starts_with("HTTP/1.1 503"),
        "{first}"
    );
}

#[test]
fn clear_answers_for_other_paths_and_methods() {
    let (_server, addr) = start();
    let not_found = exchange(addr, "GET /nope HTTP/1.1\r\n\r\n");
    assert!(
        not_found.starts_with("HTTP/1.1 404 Not Found"),
        "{not_found}"
    );
    let post = exchange(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed"),
        "{post}"
    );
    assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
    let head = exchange(addr, "HEAD /health HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head:?}");
    let query = exchange(addr, "GET /health?probe=1 HTTP/1.1\r\n\r\n");
    assert!(query.ends_with("ok\n"), "{query}");
    let bad = exchange(addr, "NOT HTTP\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400 Bad Request"), "{bad}");
    let metrics = exchange(addr, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(
        metrics.contains("c10m_connections{shard=\"0\"} 0"),
        "{metrics}"
    );
}
