//! Helpers for tests that run the `c10m` binary: the engine's test helpers (one file, shared
//! with engine/tests), a child process killed on drop, and `c10m serve` started with its
//! address read from its banner.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../engine/tests/support/mod.rs"]
mod engine;

pub use engine::*;

/// A child process killed when dropped, so a failing test never leaves a server behind holding
/// the test runner's output pipes.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `c10m serve` with `args` (and `--io` for [`io_backend`]) through `sh -c` (so a `ulimit` prefix may be given), with its
/// stderr discarded. Returns the process, its WebSocket address, and its remaining stdout lines.
pub fn spawn_serve(
    prefix: &str,
    args: &str,
) -> (
    KillOnDrop,
    std::net::SocketAddr,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let bin = env!("CARGO_BIN_EXE_c10m");
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("{prefix} exec {bin} serve --io {} {args}", io_backend()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = addr_after(&first, "ws://");
    (KillOnDrop(child), addr, lines)
}

/// The `IP:PORT` that follows `scheme` in a line a server printed (`... ws://127.0.0.1:9001/echo`).
pub fn addr_after(line: &str, scheme: &str) -> std::net::SocketAddr {
    let rest = line
        .split(scheme)
        .nth(1)
        .unwrap_or_else(|| panic!("no {scheme} in {line:?}"));
    rest.split('/').next().unwrap().parse().unwrap()
}
