//! An exhausted fd table must not spin the accept loop: the server runs as its own process
//! under `ulimit -n 64`, is offered more connections than it can accept, and must pause after
//! each failed accept instead of retrying at once (the failures it counts stay at a few per
//! second), and accept again once fds free up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| l.starts_with(name))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn handshake(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    (&buf == b"HTTP/1.1 101").then_some(s)
}

#[test]
fn emfile_pauses_accepting_instead_of_spinning() {
    let (server, addr, mut lines) = support::spawn_serve(
        "ulimit -n 64 &&",
        "--listen 127.0.0.1:0 --shards 1 --metrics 127.0.0.1:0",
    );
    let metrics_line = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.contains("/metrics")))
        .unwrap()
        .unwrap();
    let metrics: SocketAddr = support::addr_after(&metrics_line, "http://");
    std::thread::spawn(move || for _ in lines {});

    // Fill the fd table: the kernel completes TCP handshakes into the backlog even when the
    // server cannot accept them.
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(addr).unwrap());
    }
    // While the table stays full, every accept fails. A loop that pauses 100 ms after a
    // failure fails a few times a second; a spinning one, hundreds of thousands of times. The
    // bound below is checked against the time that really passed, so a slow or loaded machine
    // (fewer attempts) cannot fail it.
    let exhausted = Instant::now();
    std::thread::sleep(Duration::from_secs(2));

    // Free the fds: the server must accept and serve again.
    drop(held);
    let mut served = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(s) = handshake(addr) {
            served = Some(s);
            break;
        }
    }
    assert!(
        served.is_some(),
        "server did not recover after fds were freed"
    );
    let errors = metric(metrics, "c10m_accept_errors_total");
    let window_ms = exhausted.elapsed().as_millis() as u64;
    assert!(errors > 0, "EMFILE was not counted");
    assert!(
        errors <= window_ms / 10,
        "{errors} failed accepts in {window_ms} ms: the accept loop spins"
    );
    drop(server);
}
