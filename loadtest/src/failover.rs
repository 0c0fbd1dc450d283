//! Failover, the parent's side: which node `--kill-pid` is (the addresses it listens on,
//! read from /proc), and the thread that kills it with SIGKILL `--kill-at` after the drive
//! phase began.
//!
//! A load generator that sends SIGKILL must not hit the wrong process: the pid must listen on
//! one of the subscribers' targets and on none of the publishers', and it must still be the
//! same process (its start time in /proc/PID/stat) when the signal goes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::sys;

/// The TCP addresses process `pid` listens on (sockets among its open files in LISTEN state).
pub fn listening(pid: u32) -> io::Result<Vec<SocketAddr>> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(link) = std::fs::read_link(entry?.path()) else {
            continue; // closed meanwhile
        };
        let link = link.to_string_lossy();
        if let Some(n) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            if let Ok(inode) = n.parse::<u64>() {
                inodes.push(inode);
            }
        }
    }
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = match std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.extend(
            text.lines()
                .skip(1)
                .filter_map(parse_listener)
                .filter(|(_, inode)| inodes.contains(inode))
                .map(|(addr, _)| addr),
        );
    }
    Ok(out)
}

/// One line of /proc/net/tcp{,6}: the local address and inode of a listening socket.
fn parse_listener(line: &str) -> Option<(SocketAddr, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    if f.len() < 10 || f[3] != "0A" {
        return None;
    }
    let (ip, port) = f[1].split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The address is printed as 32-bit words in the kernel's (host) byte order.
    let words: Vec<[u8; 4]> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::to_le_bytes))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match words.as_slice() {
        [w] => IpAddr::V4(Ipv4Addr::from(*w)),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(*w);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((SocketAddr::new(ip, port), f[9].parse().ok()?))
}

/// Whether a socket listening on `listener` takes connections to `target`.
pub fn serves(listener: SocketAddr, target: SocketAddr) -> bool {
    listener.port() == target.port()
        && (listener.ip() == target.ip()
            || (listener.ip().is_unspecified() && listener.is_ipv4() == target.is_ipv4()))
}

/// The start time of `pid` (clock ticks since boot, /proc/PID/stat field 22): a pid reused by
/// another process has another.
pub fn start_time(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After "PID (COMM) ", whose COMM may hold spaces and parentheses.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    rest.split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/stat"))
}

/// The node to kill, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its process.
    pub pid: u32,
    /// Its start time, to recognise it when the signal goes.
    pub started: u64,
    /// The subscriber targets it serves.
    pub targets: Vec<SocketAddr>,
}

/// Why `--kill-pid` cannot be the node to kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeError {
    /// Its /proc entries could not be read.
    Unreadable(String),
    /// It listens on no subscriber target.
    NotATarget(Vec<SocketAddr>),
    /// It serves a publisher target too (publishers do not reconnect).
    ServesPublishers(SocketAddr),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Unreadable(e) => write!(f, "cannot read it in /proc: {e}"),
            NodeError::NotATarget(l) => {
                let on: Vec<String> = l.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "it listens on no subscriber target (it listens on {}); refusing to kill it",
                    if on.is_empty() {
                        "no TCP port".into()
                    } else {
                        on.join(", ")
                    }
                )
            }
            NodeError::ServesPublishers(a) => write!(
                f,
                "it serves the publisher target {a}; publishers must be on nodes that stay up"
            ),
        }
    }
}

/// Checks that `pid` serves some of `subscriber_targets` and none of `publisher_targets`.
pub fn node(
    pid: u32,
    subscriber_targets: &[SocketAddr],
    publisher_targets: &[SocketAddr],
) -> Result<Node, NodeError> {
    let unreadable = |e: io::Error| NodeError::Unreadable(e.to_string());
    let started = start_time(pid).map_err(unreadable)?;
    let listeners = listening(pid).map_err(unreadable)?;
    let serves_any = |t: &SocketAddr| listeners.iter().any(|l| serves(*l, *t));
    if let Some(p) = publisher_targets.iter().find(|t| serves_any(t)) {
        return Err(NodeError::ServesPublishers(*p));
    }
    let targets: Vec<SocketAddr> = subscriber_targets
        .iter()
        .copied()
        .filter(serves_any)
        .collect();
    if targets.is_empty() {
        return Err(NodeError::NotATarget(listeners));
    }
    Ok(Node {
        pid,
        started,
        targets,
    })
}

/// What the kill did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KillOutcome {
    /// The process.
    pub pid: u32,
    /// The subscriber targets it served.
    pub node: Vec<String>,
    /// When it was to be killed, after the drive phase began (s).
    pub planned_s: f64,
    /// When SIGKILL went, after the drive phase began (s); None: it did not.
    pub killed_after_s: Option<f64>,
    /// Why it was not killed.
    pub error: Option<String>,
}

/// The thread that kills the node.
#[derive(Debug)]
pub struct Killer {
    thread: JoinHandle<KillOutcome>,
    stop: Arc<AtomicBool>,
}

impl Killer {
    /// Kills `node` `at_ms` after the go time, which `go` holds once decided (0 until then).
    pub fn start(node: Node, at_ms: u64, go: Arc<AtomicU64>) -> io::Result<Killer> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("c10m-lt-killer".into())
            .spawn(move || run(&node, at_ms, &go, &stopped))?;
        Ok(Killer { thread, stop })
    }

    /// Stops waiting (if it still does) and says what happened.
    pub fn finish(self) -> KillOutcome {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| KillOutcome {
            error: Some("the killer thread panicked".into()),
            ..KillOutcome::default()
        })
    }
}

const STEP: Duration = Duration::from_millis(2);

fn run(node: &Node, at_ms: u64, go: &AtomicU64, stop: &AtomicBool) -> KillOutcome {
    let mut outcome = KillOutcome {
        pid: node.pid,
        node: node.targets.iter().map(ToString::to_string).collect(),
        planned_s: at_ms as f64 / 1e3,
        ..KillOutcome::default()
    };
    let go_at = loop {
        if stop.load(Ordering::Relaxed) {
            outcome.error = Some("the run ended before publishing began".into());
            return outcome;
        }
        match go.load(Ordering::Acquire) {
            0 => std::thread::sleep(STEP),
            t => break t,
        }
    };
    let due = go_at + at_ms * 1_000;
    loop {
        let now = sys::monotonic_us();
        if now >= due {
            break;
        }
        if stop.load(Ordering::Relaxed) {
            outcome.error = Some("the run ended before the kill time".into());
            return outcome;
        }
        std::thread::sleep(STEP.min(Duration::from_micros(due - now)));
    }
    if start_time(node.pid).ok() != Some(node.started) {
        outcome.error = Some(format!(
            "pid {} is gone or now another process; not killed",
            node.pid
        ));
        return outcome;
    }
    let pid = Pid::from_raw(i32::try_from(node.pid).unwrap_or(i32::MAX));
    match kill(pid, Signal::SIGKILL) {
        Ok(()) => {
            outcome.killed_after_s = Some(sys::monotonic_us().saturating_sub(go_at) as f64 / 1e6);
        }
        Err(e) => outcome.error = Some(format!("kill -9 {}: {e}", node.pid)),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines() {
        let v4 = "   0: 0100007F:4A39 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_listener(v4),
            Some(("127.0.0.1:19001".parse().unwrap(), 4242))
        );
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(parse_listener(&established), None);
        let v6 = "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_listener(v6),
            Some(("[::1]:8080".parse().unwrap(), 77))
        );
        assert_eq!(parse_listener("  sl  local_address rem_address   st"), None);
    }

    #[test]
    fn listeners_serve_their_targets() {
        let t: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        assert!(serves("127.0.0.1:9001".parse().unwrap(), t));
        assert!(serves("0.0.0.0:9001".parse().unwrap(), t));
        assert!(!serves("127.0.0.1:9002".parse().unwrap(), t));
        assert!(!serves("127.0.0.2:9001".parse().unwrap(), t));
        assert!(!serves("[::]:9001".parse().unwrap(), t));
    }

    #[test]
    fn this_process_is_found_by_its_listener_and_never_by_another() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let me = std::process::id();
        assert!(listening(me).unwrap().contains(&addr));
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let n = node(me, &[other, addr], &[other]).unwrap();
        assert_eq!(n.targets, [addr]);
        assert_eq!(n.started, start_time(me).unwrap());
        // (Other tests of this process open listeners meanwhile: the list is not compared.)
        assert!(matches!(
            node(me, &[other], &[]),
            Err(NodeError::NotATarget(_))
        ));
        assert_eq!(
            node(me, &[addr], &[addr]),
            Err(NodeError::ServesPublishers(addr))
        );
        assert!(matches!(
            node(u32::MAX - 3, &[addr], &[]),
            Err(NodeError::Unreadable(_))
        ));
    }
}
