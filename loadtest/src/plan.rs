//! From [`Options`] to per-process [`Plan`]s: how many processes and threads, which
//! connections each one opens, from which source address to which target, and when.
//!
//! Connection `g` (a global index) binds source `sources[g % S]` and connects to target
//! `targets[(g / S) % T]`, so every (source, target) pair carries about N / (S x T)
//! connections. Publishers take the indices after the N regular connections; publisher `j`
//! connects to `publisher_targets[j % P]` (the subscribers' targets unless told otherwise).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cli::{Backoff, EchoMode, Options, Protocol, ScenarioKind};

/// File descriptors each worker process keeps for itself (epoll, pipes, stdio, /proc reads).
pub const RESERVED_FDS: u64 = 64;
/// Connections one (source, destination) pair holds before connect() slows sharply (measured
/// on Linux 6.x: past ~14-16k).
pub const PER_TUPLE_SOFT_LIMIT: u64 = 14_000;
/// Time between the last worker reporting ready and the synchronized start of the drive phase.
pub const GO_DELAY_US: u64 = 200_000;
/// Slack on top of the planned phases before a worker gives up on its own.
const HARD_SLACK_US: u64 = 15_000_000;

/// What a scenario does once connections are open.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioPlan {
    /// Nothing: open, then close.
    Connect,
    /// Hold and answer pings.
    Idle,
    /// Echo messages.
    Echo {
        /// Message size.
        size: usize,
        /// Window or fixed rate.
        mode: EchoMode,
    },
    /// Publish to subscribers.
    Broadcast {
        /// Payload size.
        size: usize,
        /// Topic.
        topic: String,
        /// Messages per second per publisher.
        publish_rate: f64,
        /// What subscribers and publishers speak.
        protocol: Protocol,
        /// Subscribers subscribe with a command and are ready once it is confirmed.
        confirm: bool,
        /// Failover: dropped subscribers reconnect, retrying with this backoff.
        reconnect: Option<Backoff>,
    },
}

/// wss://: how the server's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsPlan {
    /// Trust anchors (PEM); `None`: the certificate is not verified (`--tls-insecure`).
    pub ca: Option<PathBuf>,
    /// The name checked and sent as SNI (default: the target's address).
    pub server_name: Option<String>,
}

/// Everything one worker process needs; serialized to a child as its first stdin line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// This process's index.
    pub index: usize,
    /// How many worker processes there are.
    pub procs: usize,
    /// What to do.
    pub scenario: ScenarioPlan,
    /// Servers (broadcast: the subscribers').
    pub targets: Vec<SocketAddr>,
    /// The publishers' servers.
    pub publisher_targets: Vec<SocketAddr>,
    /// Source addresses (empty: kernel's choice).
    pub sources: Vec<IpAddr>,
    /// Request path (broadcast subscribers add `?topic=`).
    pub path: String,
    /// First global index of this process's regular connections.
    pub first: u64,
    /// How many regular connections this process opens.
    pub count: u64,
    /// Regular connections in the whole run.
    pub total: u64,
    /// Global ids of the publishers this process runs.
    pub publishers: Vec<u32>,
    /// Publishers in the whole run.
    pub total_publishers: u32,
    /// Event-loop threads.
    pub threads: usize,
    /// Connections per second per thread.
    pub rate_per_thread: f64,
    /// Connects/handshakes in progress per thread.
    pub max_pending: usize,
    /// Per-connection connect+handshake limit.
    pub connect_timeout_ms: u64,
    /// Drive phase.
    pub duration_ms: u64,
    /// Drain limit.
    pub drain_ms: u64,
    /// Close limit.
    pub close_timeout_ms: u64,
    /// Client pings.
    pub ping_interval_ms: Option<u64>,
    /// Client idle timeout.
    pub idle_timeout_ms: Option<u64>,
    /// Offer permessage-deflate.
    pub deflate: bool,
    /// Speak wss://.
    pub tls: Option<TlsPlan>,
    /// Second 0 of the run (monotonic us), shared by every process.
    pub epoch_us: u64,
    /// When to stop opening connections.
    pub ramp_deadline_us: u64,
    /// When to stop whatever happens.
    pub hard_deadline_us: u64,
}

/// One thread's share of a process's connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// Its first global index.
    pub first: u64,
    /// Distance between its indices.
    pub stride: u64,
    /// How many regular connections.
    pub count: u64,
    /// Its publishers.
    pub publishers: Vec<u32>,
}

impl Share {
    /// Global index of its `i`-th regular connection.
    pub fn index(&self, i: u64) -> u64 {
        self.first + i * self.stride
    }
}

impl Plan {
    /// Thread `t`'s share: every `threads`-th connection from `first + t`, and every
    /// `threads`-th publisher.
    pub fn share(&self, t: usize) -> Share {
        let threads = self.threads.max(1) as u64;
        let t64 = t as u64;
        let count = if self.count > t64 {
            (self.count - t64).div_ceil(threads)
        } else {
            0
        };
        Share {
            first: self.first + t64,
            stride: threads,
            count,
            publishers: self
                .publishers
                .iter()
                .skip(t)
                .step_by(self.threads.max(1))
                .copied()
                .collect(),
        }
    }

    /// Source and target of global connection index `g` (publishers: `total + id`).
    pub fn addrs(&self, g: u64) -> (Option<IpAddr>, SocketAddr) {
        let s = self.sources.len() as u64;
        let source = (s > 0).then(|| self.sources[(g % s) as usize]);
        if g >= self.total && !self.publisher_targets.is_empty() {
            let p = self.publisher_targets.len() as u64;
            return (
                source,
                self.publisher_targets[((g - self.total) % p) as usize],
            );
        }
        let t = self.targets.len().max(1) as u64;
        let target = self.targets[((g / s.max(1)) % t) as usize];
        (source, target)
    }

    /// Global connection index of publisher `id`.
    pub fn publisher_index(&self, id: u32) -> u64 {
        self.total + u64::from(id)
    }
}

/// Why a run cannot be laid out on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// One process would hold more connections than its fd limit allows.
    TooManyPerProcess {
        /// Connections per process.
        per_process: u64,
        /// What one process can hold.
        limit: u64,
        /// Processes needed.
        need: u64,
    },
    /// A (source, target) pair would need more ports than the ephemeral range has.
    PortsExhausted {
        /// Connections per pair.
        per_pair: u64,
        /// Ports in the ephemeral range.
        ports: u64,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::TooManyPerProcess {
                per_process,
                limit,
                need,
            } => write!(
                f,
                "{per_process} connections per process exceed the {limit} one process can hold \
                 under its fd limit; use --procs {need} or more (or leave --procs out)"
            ),
            PlanError::PortsExhausted { per_pair, ports } => write!(
                f,
                "{per_pair} connections per (source address, target) pair exceed the {ports} \
                 ephemeral ports; add --source-ips or targets"
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// Processes and threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Worker processes (1: run in this process).
    pub procs: usize,
    /// Threads per process.
    pub threads: usize,
}

/// Every connection of the run, publishers included.
pub fn total_connections(o: &Options) -> u64 {
    o.connections + u64::from(o.publishers_if_any())
}

/// Chooses processes and threads for a fd limit `fd_limit` per process, `cores` cores and an
/// ephemeral port range of `ports` ports.
pub fn layout(o: &Options, fd_limit: u64, cores: usize, ports: u64) -> Result<Layout, PlanError> {
    let total = total_connections(o);
    let per_proc_cap = fd_limit.saturating_sub(RESERVED_FDS).max(1);
    let need = total.div_ceil(per_proc_cap).max(1);
    let procs = if o.procs == 0 { need } else { o.procs as u64 };
    let per_process = total.div_ceil(procs);
    if per_process > per_proc_cap {
        return Err(PlanError::TooManyPerProcess {
            per_process,
            limit: per_proc_cap,
            need,
        });
    }
    let pairs = (o.sources.len().max(1) * o.targets.len().max(1)) as u64;
    let per_pair = o.connections.div_ceil(pairs) + u64::from(o.publishers_if_any());
    if per_pair > ports {
        return Err(PlanError::PortsExhausted { per_pair, ports });
    }
    let procs = procs as usize;
    let threads = if o.threads > 0 {
        o.threads
    } else {
        (cores / procs).max(1)
    };
    Ok(Layout { procs, threads })
}

/// Advice that does not stop a run.
pub fn warnings(o: &Options) -> Vec<String> {
    let mut w = Vec::new();
    let pairs = (o.sources.len().max(1) * o.targets.len().max(1)) as u64;
    let per_pair = total_connections(o).div_ceil(pairs);
    if per_pair > PER_TUPLE_SOFT_LIMIT {
        w.push(format!(
            "{per_pair} connections per (source address, target) pair: connect() slows sharply \
             past ~{PER_TUPLE_SOFT_LIMIT}; spread with --source-ips 127.0.0.2-127.0.0.254 or more targets"
        ));
    }
    w
}

/// The plans of a run laid out as `layout`, with second 0 at `epoch_us`.
pub fn plans(o: &Options, layout: Layout, epoch_us: u64) -> Vec<Plan> {
    let scenario = match o.scenario {
        ScenarioKind::Connect => ScenarioPlan::Connect,
        ScenarioKind::Idle => ScenarioPlan::Idle,
        ScenarioKind::Echo => ScenarioPlan::Echo {
            size: o.size,
            mode: o.echo,
        },
        ScenarioKind::Broadcast | ScenarioKind::Failover => ScenarioPlan::Broadcast {
            size: o.size,
            topic: o.topic.clone(),
            publish_rate: o.publish_rate,
            protocol: o.protocol,
            confirm: o.confirms_subscriptions(),
            reconnect: (o.scenario == ScenarioKind::Failover).then_some(o.reconnect),
        },
    };
    let procs = layout.procs.max(1) as u64;
    let ramp_us = o.ramp_timeout_ms() * 1_000;
    let ramp_deadline_us = epoch_us + ramp_us;
    let after_ramp_us =
        GO_DELAY_US + (o.duration_ms + o.drain_ms + o.close_timeout_ms()) * 1_000 + HARD_SLACK_US;
    let all_threads = (procs * layout.threads.max(1) as u64) as f64;
    (0..procs)
        .map(|p| {
            let first = o.connections * p / procs;
            let end = o.connections * (p + 1) / procs;
            Plan {
                index: p as usize,
                procs: procs as usize,
                scenario: scenario.clone(),
                targets: o.targets.clone(),
                publisher_targets: o.publisher_targets().to_vec(),
                sources: o.sources.clone(),
                path: o.path.clone(),
                first,
                count: end - first,
                total: o.connections,
                publishers: (0..o.publishers_if_any())
                    .filter(|j| u64::from(*j) % procs == p)
                    .collect(),
                total_publishers: o.publishers_if_any(),
                threads: layout.threads.max(1),
                rate_per_thread: o.rate / all_threads,
                max_pending: o.max_pending,
                connect_timeout_ms: o.connect_timeout_ms,
                duration_ms: o.duration_ms,
                drain_ms: o.drain_ms,
                close_timeout_ms: o.close_timeout_ms(),
                ping_interval_ms: o.ping_interval_ms,
                idle_timeout_ms: o.idle_timeout_ms,
                deflate: o.deflate,
                tls: o.tls.clone(),
                epoch_us,
                ramp_deadline_us,
                hard_deadline_us: ramp_deadline_us + after_ramp_us,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn opts(scenario: ScenarioKind, n: u64) -> Options {
        let mut o = Options::new(scenario);
        o.connections = n;
        o
    }

    #[test]
    fn layout_follows_the_fd_limit() {
        let o = opts(ScenarioKind::Idle, 30_000);
        let l = layout(&o, 20_000, 2, 1_000_000).unwrap();
        assert_eq!(
            l,
            Layout {
                procs: 2,
                threads: 1
            }
        );
        let small = opts(ScenarioKind::Idle, 100);
        assert_eq!(
            layout(&small, 20_000, 2, 28_232).unwrap(),
            Layout {
                procs: 1,
                threads: 2
            }
        );
        let mut forced = o.clone();
        forced.procs = 1;
        assert_eq!(
            layout(&forced, 20_000, 2, 1_000_000),
            Err(PlanError::TooManyPerProcess {
                per_process: 30_000,
                limit: 19_936,
                need: 2
            })
        );
        forced.procs = 3;
        forced.threads = 4;
        assert_eq!(
            layout(&forced, 20_000, 2, 1_000_000).unwrap(),
            Layout {
                procs: 3,
                threads: 4
            }
        );
    }

    #[test]
    fn ports_per_pair_are_checked() {
        let mut o = opts(ScenarioKind::Idle, 60_000);
        o.procs = 4;
        assert_eq!(
            layout(&o, 20_000, 2, 28_232),
            Err(PlanError::PortsExhausted {
                per_pair: 60_000,
                ports: 28_232
            })
        );
        o.sources = crate::cli::addrs::parse_ips("127.0.0.2-3").unwrap();
        assert!(layout(&o, 20_000, 2, 28_232).is_err(), "30k per pair");
        o.sources = crate::cli::addrs::parse_ips("127.0.0.2-4").unwrap();
        assert!(layout(&o, 20_000, 2, 28_232).is_ok());
        assert_eq!(warnings(&o).len(), 1, "20k per pair is past the soft limit");
        o.sources = crate::cli::addrs::parse_ips("127.0.0.2-9").unwrap();
        assert!(warnings(&o).is_empty());
    }

    #[test]
    fn every_connection_is_planned_exactly_once() {
        let mut o = opts(ScenarioKind::Broadcast, 1_003);
        o.publishers = 5;
        let layout = Layout {
            procs: 3,
            threads: 2,
        };
        let plans = plans(&o, layout, 1_000);
        let mut seen = BTreeSet::new();
        let mut pubs = BTreeSet::new();
        for p in &plans {
            assert_eq!(p.total, 1_003);
            for t in 0..p.threads {
                let s = p.share(t);
                for i in 0..s.count {
                    let g = s.index(i);
                    assert!((p.first..p.first + p.count).contains(&g));
                    assert!(seen.insert(g), "{g} twice");
                }
                for id in s.publishers {
                    assert!(pubs.insert(id));
                }
            }
        }
        assert_eq!(seen.len(), 1_003);
        assert_eq!(pubs, (0..5).collect());
        assert_eq!(plans[0].rate_per_thread, 5_000.0 / 6.0);
        assert!(plans[0].hard_deadline_us > plans[0].ramp_deadline_us);
    }

    #[test]
    fn addresses_spread_evenly_over_sources_and_targets() {
        let mut o = opts(ScenarioKind::Idle, 12_000);
        o.sources = crate::cli::addrs::parse_ips("127.0.0.2-5").unwrap();
        o.targets = crate::cli::addrs::parse_targets("127.0.0.1:9001-9003").unwrap();
        let plan = &plans(
            &o,
            Layout {
                procs: 1,
                threads: 1,
            },
            0,
        )[0];
        let mut per_pair = BTreeMap::new();
        for g in 0..12_000 {
            let (s, t) = plan.addrs(g);
            *per_pair.entry((s.unwrap(), t)).or_insert(0) += 1;
        }
        assert_eq!(per_pair.len(), 12);
        assert!(per_pair.values().all(|&n| n == 1_000), "{per_pair:?}");
        let no_sources = &plans(
            &opts(ScenarioKind::Idle, 10),
            Layout {
                procs: 1,
                threads: 1,
            },
            0,
        )[0];
        assert_eq!(no_sources.addrs(7).0, None);
    }

    #[test]
    fn publishers_go_to_their_own_targets() {
        let mut o = opts(ScenarioKind::Broadcast, 10);
        o.publishers = 3;
        o.targets = crate::cli::addrs::parse_targets("127.0.0.1:9001-9002").unwrap();
        o.publisher_targets = crate::cli::addrs::parse_targets("127.0.0.1:9003-9004").unwrap();
        let plan = &plans(
            &o,
            Layout {
                procs: 1,
                threads: 1,
            },
            0,
        )[0];
        let port = |g: u64| plan.addrs(g).1.port();
        assert_eq!(
            (0..4).map(port).collect::<Vec<_>>(),
            [9001, 9002, 9001, 9002]
        );
        let pubs: Vec<u16> = (0..3).map(|id| port(plan.publisher_index(id))).collect();
        assert_eq!(pubs, [9003, 9004, 9003]);
        let ScenarioPlan::Broadcast {
            confirm, reconnect, ..
        } = &plan.scenario
        else {
            panic!("{:?}", plan.scenario)
        };
        assert!(*confirm, "subscribers and publishers on several servers");
        assert_eq!(*reconnect, None, "only failover reconnects");
    }

    #[test]
    fn plan_survives_json() {
        let o = opts(ScenarioKind::Echo, 10);
        let p = plans(
            &o,
            Layout {
                procs: 1,
                threads: 1,
            },
            5,
        )[0]
        .clone();
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), p);
    }
}
