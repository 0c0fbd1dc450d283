//! Across `c10m serve` processes joined by a real redis-server (the cluster crate's test
//! helper: a missing redis-server fails the test, never skips it): a cross-node broadcast
//! delivers every message once and in order on `/pubsub` and on the client protocol, and a
//! failover run kills one node mid-run and reports its subscribers' return, with 0 lost and 0
//! duplicated on `/connection/v1` and the loss window counted per subscriber on `/pubsub`.
//!
//! The `c10m` binary belongs to another package, so cargo gives this test no path to it: the
//! test builds it (`cargo build -p c10m`, a no-op when it is up to date) into this test's
//! target directory and profile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../../cluster/tests/support/redis.rs"]
mod redis_server;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use c10m_loadtest::cli::{Backoff, Options, Protocol, ScenarioKind};
use c10m_loadtest::report::Report;
use redis_server::Redis;

/// `target/<profile>/c10m`, built by cargo for this test's profile.
fn c10m() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/<this test>
        let profile = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
        let target = profile.parent().unwrap();
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-q", "-p", "c10m", "--bin", "c10m", "--target-dir"])
            .arg(target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cannot run cargo to build c10m");
        assert!(status.success(), "cargo build -p c10m failed: {status}");
        let bin = profile.join("c10m");
        assert!(
            bin.is_file(),
            "cargo build -p c10m left no binary at {}",
            bin.display()
        );
        bin
    })
}

/// A `c10m serve --broker` process, killed when dropped (if the test did not kill it).
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start(redis: &Redis) -> Node {
        let mut child = Command::new(c10m())
            .args(["serve", "--listen", "127.0.0.1:0", "--shards", "2", "--io"])
            .arg(std::env::var("C10M_TEST_IO").unwrap_or_else(|_| "epoll".into()))
            .args(["--broker", &redis.url()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let addr = first
            .split("ws://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .parse()
            .unwrap();
        // The broker line says the node joined Redis; the rest of the banner is not needed.
        let broker = lines
            .by_ref()
            .map(Result::unwrap)
            .find(|l| l.contains("broker:"))
            .unwrap();
        assert!(broker.contains("Redis at redis://"), "{broker}");
        std::thread::spawn(move || for _ in lines {});
        Node { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PER_PUBLISHER: u64 = 200;
const RATE: f64 = 100.0;

/// Subscribers on `subs`, publishers on `pubs`, 2 s of publishing at 100/s per publisher.
fn options(scenario: ScenarioKind, protocol: Protocol, subs: &[&Node], pubs: &[&Node]) -> Options {
    let mut o = support::options(scenario, subs[0].addr, 120);
    o.targets = subs.iter().map(|n| n.addr).collect();
    o.publisher_targets = pubs.iter().map(|n| n.addr).collect();
    o.protocol = protocol;
    o.path = protocol.default_path().into();
    o.publishers = 2;
    o.publish_rate = RATE;
    o.duration_ms = 2_000;
    o.size = 48;
    o.topic = format!("cluster-{}", protocol.name());
    o
}

fn assert_delivered_once_in_order(r: &Report, subscribers: u64, publishers: u64) {
    let b = r.broadcast.as_ref().unwrap();
    assert_eq!((b.subscribers, b.publishers), (subscribers, publishers));
    assert_eq!(b.published, PER_PUBLISHER * publishers, "{b:#?}");
    assert_eq!(b.deliveries, b.published * subscribers, "{b:#?}");
    assert_eq!((b.missing, b.missing_seen_by_subscribers), (0, 0), "{b:#?}");
    assert_eq!((b.duplicates, b.reordered, b.stale), (0, 0, 0), "{b:#?}");
    assert_eq!(b.subscribers_incomplete, 0, "every end marker arrived");
    assert_eq!(r.messages.as_ref().unwrap().latency.count, b.deliveries);
}

fn cross_node(protocol: Protocol) {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis), Node::start(&redis));
    // Every subscriber on A, every publisher on B: each delivery crossed Redis.
    let r = support::run(&options(ScenarioKind::Broadcast, protocol, &[&a], &[&b]));
    support::assert_clean_connections(&r, 122);
    assert_delivered_once_in_order(&r, 120, 2);
    assert!(r.settings.confirmed_subscriptions);
    let bc = r.broadcast.as_ref().unwrap();
    assert_eq!(bc.subscriptions_confirmed, 120, "subscribed by command");
    if protocol == Protocol::V1 {
        assert_eq!(
            bc.publish_acks,
            2 * (PER_PUBLISHER + 1),
            "data and end markers"
        );
        assert_eq!(bc.publish_errors, 0);
    }
    assert!(r.ok, "{:?}", r.failures);
}

#[test]
fn a_cross_node_pubsub_broadcast_delivers_once_and_in_order() {
    cross_node(Protocol::Pubsub);
}

#[test]
fn a_cross_node_v1_broadcast_delivers_once_and_in_order() {
    cross_node(Protocol::V1);
}

/// Subscribers on A and B, publishers on B; A is killed 0.7 s into publishing.
fn failover(protocol: Protocol) -> Report {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis), Node::start(&redis));
    let mut o = options(ScenarioKind::Failover, protocol, &[&a, &b], &[&b]);
    o.kill_pid = Some(a.pid());
    o.kill_at_ms = Some(700);
    o.reconnect = Backoff {
        base_ms: 100,
        max_ms: 1_000,
    };
    let r = support::run(&o);
    let f = r.failover.as_ref().unwrap();
    assert!(f.kill.killed_after_s.is_some(), "{:?}", f.kill);
    assert_eq!(f.kill.node, [a.addr.to_string()]);
    // Subscribers alternate between the two targets: half were on A, and each came back once.
    assert_eq!((f.drops, f.subscribers_dropped), (60, 60), "{f:#?}");
    assert_eq!((f.resubscribed, f.gave_up), (60, 0), "{f:#?}");
    assert_eq!(f.reconnect_attempts, 60 + f.reconnect_failed, "{f:#?}");
    assert_eq!(f.time_away.count, 60);
    assert_eq!(f.lost_by_others, 0, "subscribers on B lost nothing");
    assert_eq!(f.duplicates, 0);
    let c = &r.connections;
    assert_eq!((c.established, c.closed_early), (122, 0), "{c:#?}");
    assert_eq!(c.reasons.get("closed by load generator"), Some(&122));
    r
}

#[test]
fn a_killed_node_s_v1_subscribers_come_back_and_recover_everything() {
    let r = failover(Protocol::V1);
    assert_delivered_once_in_order(&r, 120, 2);
    let f = r.failover.as_ref().unwrap();
    assert_eq!(
        (f.lost, f.subscribers_with_loss, f.recovery_refused),
        (0, 0, 0)
    );
    assert!(
        f.recovered > 0,
        "what was published while away came back: {f:#?}"
    );
    assert!(r.ok, "{:?}", r.failures);
}

#[test]
fn a_killed_node_s_pubsub_subscribers_come_back_and_their_loss_is_counted() {
    let r = failover(Protocol::Pubsub);
    let f = r.failover.as_ref().unwrap();
    let b = r.broadcast.as_ref().unwrap();
    assert_eq!(f.recovered, 0, "/pubsub has no history");
    // What the dropped subscribers missed is exactly what was not delivered.
    assert_eq!(b.missing, f.lost, "{b:#?}\n{f:#?}");
    assert_eq!(b.deliveries + f.lost, b.published * 120);
    assert!(f.subscribers_with_loss <= 60);
    assert!(f.max_lost_per_subscriber <= f.lost);
    assert_eq!((b.duplicates, b.reordered, b.stale), (0, 0, 0), "{b:#?}");
    // The loss window is the protocol's, not a fault: the run passes and says so.
    assert!(r.ok, "{:?}", r.failures);
    if f.lost > 0 {
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("/pubsub has no history")),
            "{:?}",
            r.warnings
        );
    }
}
