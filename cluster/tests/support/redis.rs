//! A redis-server of a test's own (Debian's, installed by scripts/test.sh; a missing one fails
//! the test, never skips it). Shared by the cluster crate's tests and the binary's.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A redis-server of the test's own, on a free port, stopped on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::start_on(port)
    }

    pub fn start_on(port: u16) -> Redis {
        let dir = std::env::temp_dir().join(format!("c10m-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): scripts/test.sh installs it (Debian's redis-server)")
            });
        let redis = Redis { child, port, dir };
        let deadline = Instant::now() + WAIT;
        while redis.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::yield_now();
        }
        redis
    }

    /// The redis-server process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stalls it (SIGSTOP): connections stay open and nothing is answered.
    pub fn stall(&self) {
        self.signal("STOP");
    }

    /// Lets a stalled Redis go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command (as a RESP array) on a fresh connection; the answer is to be read.
    fn send(&self, args: &[&str]) -> std::io::Result<BufReader<TcpStream>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(WAIT))?;
        let mut line = String::new();
        for a in args {
            line.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        write!(s, "*{}\r\n{line}", args.len())?;
        Ok(BufReader::new(s))
    }

    /// Sends one command and returns the first line of the answer (None if Redis cannot be
    /// reached).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut first = String::new();
        self.send(args).ok()?.read_line(&mut first).ok()?;
        Some(first.trim_end().to_string())
    }

    /// Sends one command and returns its whole answer: a bulk string's or an integer's text,
    /// an array's items (bulk strings or integers), or nothing for a nil.
    pub fn query(&self, args: &[&str]) -> Vec<String> {
        let mut reader = self.send(args).unwrap();
        let mut read_line = || {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            l.trim_end_matches("\r\n").to_owned()
        };
        let item = |head: String, read_line: &mut dyn FnMut() -> String| {
            if let Some(n) = head.strip_prefix(':') {
                return n.to_owned();
            }
            assert!(
                head.starts_with('$'),
                "unexpected answer to {args:?}: {head:?}"
            );
            read_line()
        };
        let first = read_line();
        if first == "$-1" {
            return Vec::new();
        }
        if let Some(n) = first.strip_prefix('*') {
            let n: usize = n.parse().unwrap();
            return (0..n)
                .map(|_| {
                    let head = read_line();
                    item(head, &mut read_line)
                })
                .collect();
        }
        vec![item(first, &mut read_line)]
    }

    /// How many connections subscribe to the channel of `topic`.
    pub fn subscribers(&self, topic: &str) -> u64 {
        // `PUBSUB NUMSUB ch` answers [ch, count].
        let answer = self.query(&["PUBSUB", "NUMSUB", &format!("c10m:{topic}")]);
        answer[1].parse().unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
