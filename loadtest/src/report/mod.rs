//! The final report: built once from the merged totals, the timeline and the host samples;
//! rendered as text, JSON ([`Report`] serialized as is) or HTML.

mod html;
mod svg;
mod text;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::{EchoMode, Options, Protocol, ScenarioKind};
use crate::collect::{Collector, Second};
use crate::counters::{Counters, Gap};
use crate::failover::KillOutcome;
use crate::hist::{Hists, Summary};
use crate::plan::Layout;
use crate::worker::Totals;

pub use html::render as html;
pub use text::render as text;

/// A busiest worker process at or above this share of its threads' capacity is saturated.
pub const SATURATED_PCT: f64 = 90.0;
/// Other work on the host above this share of one core in some second is worth a warning.
pub const OTHERS_PCT: f64 = 50.0;

/// What was asked for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    /// Scenario name.
    pub scenario: &'static str,
    /// Targets (broadcast: the subscribers').
    pub targets: Vec<String>,
    /// Broadcast: the publishers' targets.
    pub publisher_targets: Vec<String>,
    /// Broadcast: what subscribers and publishers speak (`pubsub`, `v1`).
    pub protocol: &'static str,
    /// Broadcast: whether subscriptions were made by command and confirmed before publishing.
    pub confirmed_subscriptions: bool,
    /// Source addresses used.
    pub source_addresses: usize,
    /// Request path.
    pub path: String,
    /// Connections asked for (broadcast: subscribers).
    pub connections: u64,
    /// Publishers (broadcast).
    pub publishers: u32,
    /// Connections per second asked for.
    pub rate: f64,
    /// Drive phase (s).
    pub duration_s: f64,
    /// Worker processes.
    pub procs: usize,
    /// Threads per process.
    pub threads: usize,
    /// Message size.
    pub size: usize,
    /// Echo mode or broadcast rate, in words.
    pub load: String,
}

/// How the connections fared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Connections {
    /// Asked for, publishers included.
    pub requested: u64,
    /// `connect()` calls.
    pub attempted: u64,
    /// TCP connected.
    pub connected: u64,
    /// Handshakes completed.
    pub established: u64,
    /// Failed before TCP completed.
    pub connect_failed: u64,
    /// Failed in the handshake.
    pub handshake_failed: u64,
    /// Open at the start of the drive phase.
    pub open_at_go: u64,
    /// Still open at its end.
    pub survived: u64,
    /// Ended before the load generator closed them.
    pub closed_early: u64,
    /// Closed by the load generator at the end.
    pub closed_by_us: u64,
    /// Most open at once (at the end of the ramp, or of any second).
    pub peak_open: u64,
    /// Why connections ended.
    pub reasons: BTreeMap<String, u64>,
    /// Pings received (and answered).
    pub pings_answered: u64,
}

/// Messages, when the scenario sends any.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Messages {
    /// Sent.
    pub sent: u64,
    /// Received.
    pub received: u64,
    /// Sent per second of the drive phase.
    pub sent_per_s: f64,
    /// Received per second of the drive phase (receipts during it).
    pub received_per_s: f64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Not sent because a write queue was full (fixed-rate mode).
    pub skipped_backpressure: u64,
    /// Messages the scenario did not expect.
    pub unexpected: u64,
    /// What the latency measures.
    pub latency_kind: &'static str,
    /// Whether latency is measured from intended send times (coordinated omission corrected).
    pub corrected_for_coordinated_omission: bool,
    /// Latency.
    pub latency: Summary,
    /// Largest lag behind the fixed-rate schedule (us).
    pub schedule_lag_max_us: u64,
}

/// Echo checks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Echo {
    /// Replies that matched.
    pub matched: u64,
    /// Replies that did not.
    pub mismatched: u64,
    /// Requests never answered.
    pub unanswered: u64,
}

/// Broadcast delivery checks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Broadcast {
    /// Publishers open at the start.
    pub publishers: u64,
    /// Subscribers open when publishing began.
    pub subscribers: u64,
    /// Messages published.
    pub published: u64,
    /// published x subscribers.
    pub expected_deliveries: u64,
    /// First deliveries.
    pub deliveries: u64,
    /// Deliveries per second of the drive phase.
    pub deliveries_per_s: f64,
    /// expected - deliveries: every message some subscriber never got.
    pub missing: u64,
    /// Missing as counted by subscribers from their publishers' end markers.
    pub missing_seen_by_subscribers: u64,
    /// Duplicate deliveries.
    pub duplicates: u64,
    /// Deliveries after a higher sequence number.
    pub reordered: u64,
    /// Too late to tell duplicate from reordered.
    pub stale: u64,
    /// Subscribers that missed something.
    pub subscribers_with_missing: u64,
    /// Subscribers that received a duplicate.
    pub subscribers_with_duplicates: u64,
    /// Subscribers that saw reordering.
    pub subscribers_with_reordering: u64,
    /// Subscribers without every end marker.
    pub subscribers_incomplete: u64,
    /// Most messages one subscriber missed.
    pub max_missing_per_subscriber: u64,
    /// Gap examples.
    pub gaps: Vec<Gap>,
    /// Distinct gaps beyond the examples.
    pub gaps_not_listed: u64,
    /// Subscriptions the server confirmed (by command).
    pub subscriptions_confirmed: u64,
    /// v1: publishes acknowledged with an offset.
    pub publish_acks: u64,
    /// v1: publishes answered with an error.
    pub publish_errors: u64,
    /// v1: publications dropped as already handled (by offset): the protocol's own
    /// deduplication after a resubscribe, not a fault.
    pub offsets_skipped: u64,
}

/// Failover: the kill, and how the subscribers that were on the killed node fared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failover {
    /// The kill.
    pub kill: KillOutcome,
    /// How dropped subscribers retried.
    pub backoff: String,
    /// Subscriber connections that dropped.
    pub drops: u64,
    /// Subscribers that dropped at least once.
    pub subscribers_dropped: u64,
    /// Subscribers live again after a drop (on another node).
    pub resubscribed: u64,
    /// Subscribers still away when the run ended.
    pub gave_up: u64,
    /// Connection attempts to come back.
    pub reconnect_attempts: u64,
    /// Of which failed.
    pub reconnect_failed: u64,
    /// Time away: from the drop to the subscription being live again.
    pub time_away: Summary,
    /// Messages the dropped subscribers missed (from the publishers' sequence numbers).
    pub lost: u64,
    /// Dropped subscribers that missed something.
    pub subscribers_with_loss: u64,
    /// Most one dropped subscriber missed.
    pub max_lost_per_subscriber: u64,
    /// Messages missed by subscribers that never dropped.
    pub lost_by_others: u64,
    /// v1: publications recovered from history in subscribe replies.
    pub recovered: u64,
    /// v1: resubscribes the server could not recover (history trimmed, new epoch).
    pub recovery_refused: u64,
    /// Duplicates delivered to the application (after the protocol's deduplication).
    pub duplicates: u64,
    /// What the figures mean for this protocol.
    pub note: &'static str,
}

/// Memory per connection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Memory {
    /// Open connections when measured.
    pub connections: u64,
    /// Server RSS before connecting (bytes).
    pub server_rss_before: u64,
    /// Server RSS at the peak.
    pub server_rss_peak: u64,
    /// Server user-space bytes per connection.
    pub server_bytes_per_connection: f64,
    /// Kernel slab before connecting.
    pub kernel_slab_before: u64,
    /// Kernel slab at the peak.
    pub kernel_slab_peak: u64,
    /// Kernel bytes per connection; on loopback this covers both ends' sockets (client and
    /// server), since both live in this kernel.
    pub kernel_bytes_per_connection: f64,
    /// TCP sockets in use at the peak (/proc/net/sockstat).
    pub tcp_sockets_in_use: u64,
    /// Pages charged to TCP buffers at the peak.
    pub tcp_buffer_pages: u64,
    /// Load-generator RSS at the peak (all worker processes).
    pub loadgen_rss: u64,
    /// Load-generator bytes per connection.
    pub loadgen_bytes_per_connection: f64,
}

/// CPU use.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cpu {
    /// Cores on this host.
    pub cores: usize,
    /// Load-generator CPU time, all processes (s).
    pub loadgen_cpu_s: f64,
    /// Highest one-second load-generator CPU, percent of one core.
    pub loadgen_peak_pct: f64,
    /// Highest one-second use of its threads by the busiest worker process (percent).
    pub busiest_process_peak_pct: f64,
    /// Seconds in which a worker process was saturated.
    pub saturated_seconds: u64,
    /// Server CPU time during the run (s), when sampled.
    pub server_cpu_s: f64,
    /// Highest one-second server CPU, percent of one core.
    pub server_peak_pct: f64,
    /// Highest one-second CPU of the whole host, percent of one core.
    pub host_peak_pct: f64,
    /// Highest one-second CPU of everything else on the host (other processes, interrupts,
    /// steal; the server too when it is not sampled), percent of one core.
    pub others_peak_pct: f64,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Settings.
    pub settings: Settings,
    /// Wall time of the run (s).
    pub elapsed_s: f64,
    /// Connections.
    pub connections: Connections,
    /// TCP connect latency.
    pub connect_latency: Summary,
    /// Handshake latency.
    pub handshake_latency: Summary,
    /// Messages.
    pub messages: Option<Messages>,
    /// Echo checks.
    pub echo: Option<Echo>,
    /// Broadcast checks.
    pub broadcast: Option<Broadcast>,
    /// Failover.
    pub failover: Option<Failover>,
    /// Memory, when a server pid was given.
    pub memory: Option<Memory>,
    /// CPU.
    pub cpu: Cpu,
    /// Why the run is not clean (empty when it is).
    pub failures: Vec<String>,
    /// Things worth knowing that do not make the run fail.
    pub warnings: Vec<String>,
    /// Errors of worker processes or threads.
    pub errors: Vec<String>,
    /// Whether every connection opened and nothing was lost, refused or mismatched.
    pub ok: bool,
    /// One entry per second.
    pub timeline: Vec<Second>,
}

/// What a report is built from.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The options.
    pub options: &'a Options,
    /// Processes and threads.
    pub layout: Layout,
    /// Merged totals.
    pub totals: &'a Totals,
    /// Timeline and samples.
    pub collector: &'a Collector,
    /// Wall time (s).
    pub elapsed_s: f64,
    /// Warnings gathered before the run.
    pub warnings: Vec<String>,
    /// Cores on the host.
    pub cores: usize,
    /// Failover: what the kill did.
    pub kill: Option<&'a KillOutcome>,
}

fn per_s(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn per_conn(after: u64, before: u64, conns: u64) -> f64 {
    if conns == 0 {
        0.0
    } else {
        (after as f64 - before as f64) / conns as f64
    }
}

impl Report {
    /// Builds the report.
    pub fn build(i: Inputs<'_>) -> Report {
        let o = i.options;
        let c = &i.totals.counters;
        let h = &i.totals.hists;
        let duration_s = o.duration_ms as f64 / 1e3;
        let requested = o.connections + u64::from(o.publishers_if_any());
        let broadcasting = o.scenario.is_broadcast();
        let settings = Settings {
            scenario: o.scenario.name(),
            targets: o.targets.iter().map(ToString::to_string).collect(),
            publisher_targets: if broadcasting {
                o.publisher_targets()
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            } else {
                Vec::new()
            },
            protocol: if broadcasting { o.protocol.name() } else { "" },
            confirmed_subscriptions: broadcasting && o.confirms_subscriptions(),
            source_addresses: o.sources.len(),
            path: o.path.clone(),
            connections: o.connections,
            publishers: o.publishers_if_any(),
            rate: o.rate,
            duration_s,
            procs: i.layout.procs,
            threads: i.layout.threads,
            size: o.size,
            load: match o.scenario {
                ScenarioKind::Echo => match o.echo {
                    EchoMode::Window(w) => format!("window of {w} message(s) per connection"),
                    EchoMode::Rate(r) => format!("{r} message(s)/s per connection, fixed rate"),
                },
                ScenarioKind::Broadcast | ScenarioKind::Failover => format!(
                    "{} publisher(s) at {}/s each, topic {}",
                    o.publishers, o.publish_rate, o.topic
                ),
                ScenarioKind::Connect | ScenarioKind::Idle => "none".into(),
            },
        };
        // Open at the end of some second, or all at once when the ramp ended.
        let peak_open = i
            .collector
            .timeline
            .iter()
            .map(|s| s.open)
            .max()
            .unwrap_or(0)
            .max(i.collector.ready.open);
        let connections = Connections {
            requested,
            attempted: c.attempted,
            connected: c.connected,
            established: c.established,
            connect_failed: c.connect_failed,
            handshake_failed: c.handshake_failed,
            open_at_go: c.open_at_go,
            survived: c.survived,
            closed_early: c.closed_early,
            closed_by_us: c.closed_by_us,
            peak_open,
            reasons: c.reasons.clone(),
            pings_answered: c.pings,
        };
        let sends = o.scenario == ScenarioKind::Echo || broadcasting;
        let fixed_rate = match o.scenario {
            ScenarioKind::Echo => matches!(o.echo, EchoMode::Rate(_)),
            ScenarioKind::Broadcast | ScenarioKind::Failover => true,
            _ => false,
        };
        let messages = sends.then(|| Messages {
            sent: c.sent,
            received: c.received,
            sent_per_s: per_s(c.sent, duration_s),
            received_per_s: per_s(c.received_in_drive, duration_s),
            bytes_sent: c.bytes_sent,
            skipped_backpressure: c.skipped_backpressure,
            unexpected: c.unexpected,
            latency_kind: if o.scenario == ScenarioKind::Echo {
                "round trip"
            } else {
                "delivery (publish to receipt)"
            },
            corrected_for_coordinated_omission: fixed_rate,
            latency: h.latency.summary(),
            schedule_lag_max_us: c.lag_max_us,
        });
        let echo = (o.scenario == ScenarioKind::Echo).then_some(Echo {
            matched: c.echo_ok,
            mismatched: c.echo_mismatch,
            unanswered: c.echo_unanswered,
        });
        let broadcast = broadcasting.then(|| broadcast(c, i.collector, duration_s));
        let failover = (o.scenario == ScenarioKind::Failover).then(|| failover(o, c, h, i.kill));
        let memory = memory(i.collector);
        let cpu = cpu(i.collector, i.cores);
        let mut report = Report {
            settings,
            elapsed_s: i.elapsed_s,
            connections,
            connect_latency: h.connect.summary(),
            handshake_latency: h.handshake.summary(),
            messages,
            echo,
            broadcast,
            failover,
            memory,
            cpu,
            failures: Vec::new(),
            warnings: i.warnings,
            errors: i.totals.errors.clone(),
            ok: false,
            timeline: i.collector.timeline.clone(),
        };
        report.failures = report.find_failures();
        report.add_warnings();
        report.ok = report.failures.is_empty();
        report
    }

    fn find_failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let c = &self.connections;
        if c.established < c.requested {
            f.push(format!(
                "{} of {} connections opened",
                c.established, c.requested
            ));
        }
        if c.connect_failed + c.handshake_failed > 0 {
            f.push(format!(
                "{} connect and {} handshake failures",
                c.connect_failed, c.handshake_failed
            ));
        }
        if c.closed_early > 0 {
            f.push(format!("{} connections closed early", c.closed_early));
        }
        if let Some(e) = &self.echo {
            if e.mismatched + e.unanswered > 0 {
                f.push(format!(
                    "{} echoes mismatched, {} unanswered",
                    e.mismatched, e.unanswered
                ));
            }
        }
        if let Some(b) = &self.broadcast {
            // In a /pubsub failover, what subscribers missed while away is the protocol's (it
            // has no history), reported in the failover section; anything else is a fault.
            let missing = match &self.failover {
                Some(fo) if self.settings.protocol != Protocol::V1.name() => fo.lost_by_others,
                _ => b.missing,
            };
            if missing + b.duplicates + b.reordered + b.stale > 0 {
                f.push(format!(
                    "broadcast: {} missing, {} duplicated, {} reordered, {} stale",
                    missing, b.duplicates, b.reordered, b.stale
                ));
            }
            if b.publish_errors > 0 {
                f.push(format!("{} publishes refused", b.publish_errors));
            }
        }
        if let Some(fo) = &self.failover {
            if let Some(e) = &fo.kill.error {
                f.push(format!("failover: pid {} not killed: {e}", fo.kill.pid));
            } else if fo.drops == 0 {
                f.push("failover: no subscriber was on the killed node".into());
            }
            if fo.gave_up > 0 {
                f.push(format!(
                    "failover: {} subscriber(s) not back when the run ended",
                    fo.gave_up
                ));
            }
            if fo.recovery_refused > 0 {
                f.push(format!(
                    "failover: {} resubscribe(s) could not be recovered",
                    fo.recovery_refused
                ));
            }
        }
        if let Some(m) = &self.messages {
            if m.unexpected + m.skipped_backpressure > 0 {
                f.push(format!(
                    "{} unexpected messages, {} sends skipped for backpressure",
                    m.unexpected, m.skipped_backpressure
                ));
            }
        }
        if !self.errors.is_empty() {
            f.push(format!("{} worker error(s)", self.errors.len()));
        }
        f
    }

    fn add_warnings(&mut self) {
        let cpu = &self.cpu;
        if cpu.saturated_seconds > 0 {
            self.warnings.push(format!(
                "the load generator was CPU-saturated in {} of {} seconds (busiest worker process at \
                 {:.0}% of its threads): figures may measure the load generator, not the server; \
                 add --procs/--threads, or cores",
                cpu.saturated_seconds,
                self.timeline.len(),
                cpu.busiest_process_peak_pct
            ));
        }
        let host_pct = (cpu.loadgen_peak_pct + cpu.server_peak_pct) / cpu.cores.max(1) as f64;
        if cpu.server_peak_pct > 0.0 && host_pct >= SATURATED_PCT {
            self.warnings.push(format!(
                "load generator and server share {} cores and used up to {:.0}% and {:.0}% of one \
                 core: they compete for the CPU",
                cpu.cores, cpu.loadgen_peak_pct, cpu.server_peak_pct
            ));
        }
        if cpu.others_peak_pct >= OTHERS_PCT {
            self.warnings.push(format!(
                "the rest of the host used up to {:.0}% of a core during the run ({}other processes, \
                 interrupts, steal): latency and rates may be disturbed",
                cpu.others_peak_pct,
                if self.memory.is_none() { "the server, " } else { "" }
            ));
        }
        if let Some(fo) = &self.failover {
            if fo.lost > 0 && self.settings.protocol != Protocol::V1.name() {
                self.warnings.push(format!(
                    "/pubsub has no history: the {} subscriber(s) on the killed node missed {} \
                     message(s) while away (at most {} each); --protocol v1 recovers them",
                    fo.subscribers_dropped, fo.lost, fo.max_lost_per_subscriber
                ));
            }
        }
        if let Some(m) = &self.messages {
            if m.schedule_lag_max_us > 10_000 {
                self.warnings.push(format!(
                    "senders fell up to {} behind the fixed-rate schedule; latency is measured from \
                     the intended send times, so that delay is included",
                    fmt_us(m.schedule_lag_max_us)
                ));
            }
        }
    }
}

fn broadcast(c: &Counters, col: &Collector, duration_s: f64) -> Broadcast {
    let expected = c.sent * c.subscribers_at_go;
    Broadcast {
        publishers: col.ready.publishers,
        subscribers: c.subscribers_at_go,
        published: c.sent,
        expected_deliveries: expected,
        deliveries: c.deliveries,
        deliveries_per_s: per_s(c.received_in_drive, duration_s),
        missing: expected.saturating_sub(c.deliveries),
        missing_seen_by_subscribers: c.missing,
        duplicates: c.duplicates,
        reordered: c.reordered,
        stale: c.stale,
        subscribers_with_missing: c.subs_with_missing,
        subscribers_with_duplicates: c.subs_with_duplicates,
        subscribers_with_reordering: c.subs_with_reordering,
        subscribers_incomplete: c.subs_incomplete,
        max_missing_per_subscriber: c.max_missing_per_sub,
        gaps: c.gaps.clone(),
        gaps_not_listed: c.gaps_dropped,
        subscriptions_confirmed: c.subscribed,
        publish_acks: c.publish_acks,
        publish_errors: c.publish_errors,
        offsets_skipped: c.offsets_skipped,
    }
}

fn failover(o: &Options, c: &Counters, h: &Hists, kill: Option<&KillOutcome>) -> Failover {
    Failover {
        kill: kill.cloned().unwrap_or_else(|| KillOutcome {
            pid: o.kill_pid.unwrap_or(0),
            error: Some("no kill was attempted".into()),
            ..KillOutcome::default()
        }),
        backoff: format!(
            "first retry within {}, doubling up to {} (full jitter), to the other subscriber targets",
            fmt_us(o.reconnect.base_ms * 1_000),
            fmt_us(o.reconnect.max_ms * 1_000)
        ),
        drops: c.drops,
        subscribers_dropped: c.subs_dropped,
        resubscribed: c.resubscribed,
        gave_up: c.reconnect_gave_up,
        reconnect_attempts: c.reconnect_attempts,
        reconnect_failed: c.reconnect_failed,
        time_away: h.reconnect.summary(),
        lost: c.lost_by_dropped,
        subscribers_with_loss: c.dropped_subs_with_loss,
        max_lost_per_subscriber: c.max_lost_per_dropped_sub,
        lost_by_others: c.missing.saturating_sub(c.lost_by_dropped),
        recovered: c.recovered,
        recovery_refused: c.recovery_refused,
        duplicates: c.duplicates,
        note: match o.protocol {
            Protocol::SocketIo => {
                "Socket.IO has no history: a subscriber misses what is published while it is away"
            }
            Protocol::Pubsub => {
                "/pubsub has no history: a subscriber misses what is published while it is away \
                 (lost, counted per subscriber from each publisher's sequence numbers)"
            }
            Protocol::V1 => {
                "v1 resubscribes from the last offset handled: what was published while away \
                 comes back from the channel's history (recovered), within its size and TTL"
            }
        },
    }
}

fn memory(col: &Collector) -> Option<Memory> {
    let (open, peak) = col.peak?;
    if peak.servers_alive == 0 {
        return None;
    }
    let base = &col.baseline;
    let loadgen_rss = col
        .timeline
        .iter()
        .find(|s| s.open == open)
        .map_or(0, |s| s.rss_bytes);
    Some(Memory {
        connections: open,
        server_rss_before: base.server_rss_bytes,
        server_rss_peak: peak.server_rss_bytes,
        server_bytes_per_connection: per_conn(peak.server_rss_bytes, base.server_rss_bytes, open),
        kernel_slab_before: base.slab_bytes,
        kernel_slab_peak: peak.slab_bytes,
        kernel_bytes_per_connection: per_conn(peak.slab_bytes, base.slab_bytes, open),
        tcp_sockets_in_use: peak.sockstat.tcp_inuse,
        tcp_buffer_pages: peak.sockstat.tcp_mem_pages,
        loadgen_rss,
        loadgen_bytes_per_connection: per_conn(loadgen_rss, 0, open),
    })
}

fn cpu(col: &Collector, cores: usize) -> Cpu {
    let t = &col.timeline;
    let max = |f: fn(&Second) -> f64| t.iter().map(f).fold(0.0, f64::max);
    Cpu {
        // The host's CPUs, which its figures are shares of, rather than the ones this process
        // may use (fewer under taskset or a cgroup).
        cores: col
            .host_cpus
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(cores),
        // Sums of measured CPU time, not of per-second rates: a window's seconds share one rate.
        loadgen_cpu_s: col.loadgen_cpu_s,
        loadgen_peak_pct: max(|s| s.cpu_pct),
        busiest_process_peak_pct: max(|s| s.busiest_proc_pct),
        saturated_seconds: t
            .iter()
            .filter(|s| s.busiest_proc_pct >= SATURATED_PCT)
            .count() as u64,
        server_cpu_s: col.server_cpu_s,
        server_peak_pct: max(|s| s.server_cpu_pct),
        host_peak_pct: max(|s| s.host_cpu_pct),
        others_peak_pct: max(|s| (s.host_cpu_pct - s.cpu_pct - s.server_cpu_pct).max(0.0)),
    }
}

/// Microseconds for people: `850us`, `1.25ms`, `3.4s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// Bytes for people: `512 B`, `3.2 KiB`, `120.5 MiB`.
pub fn fmt_bytes(b: u64) -> String {
    let f = b as f64;
    if f < 1024.0 {
        format!("{b} B")
    } else if f < 1024.0 * 1024.0 {
        format!("{:.1} KiB", f / 1024.0)
    } else if f < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", f / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", f / 1024.0 / 1024.0 / 1024.0)
    }
}

#[cfg(test)]
mod tests;
