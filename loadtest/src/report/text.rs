//! The final report as text.

use std::fmt::Write as _;

use super::{Report, fmt_bytes, fmt_us};
use crate::hist::Summary;

fn latency_line(out: &mut String, name: &str, s: &Summary) {
    if s.count == 0 {
        let _ = writeln!(out, "  {name:<11} (none recorded)");
        return;
    }
    let _ = writeln!(
        out,
        "  {name:<11} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
        fmt_us(s.p50_us),
        fmt_us(s.p90_us),
        fmt_us(s.p99_us),
        fmt_us(s.p999_us),
        fmt_us(s.max_us),
        s.count
    );
}

fn failover(o: &mut String, f: &super::Failover) {
    let k = &f.kill;
    let _ = writeln!(o, "\nfailover");
    match (k.killed_after_s, &k.error) {
        (Some(at), _) => {
            let _ = writeln!(
                o,
                "  SIGKILL to pid {} (node {}) {:.2} s into publishing (planned {:.2} s)",
                k.pid,
                k.node.join(","),
                at,
                k.planned_s
            );
        }
        (None, e) => {
            let _ = writeln!(
                o,
                "  pid {} NOT killed: {}",
                k.pid,
                e.as_deref().unwrap_or("unknown")
            );
        }
    }
    let _ = writeln!(o, "  reconnect: {}", f.backoff);
    let _ = writeln!(
        o,
        "  subscribers dropped {} ({} drop(s))  back {}  not back {}  attempts {} (failed {})",
        f.subscribers_dropped,
        f.drops,
        f.resubscribed,
        f.gave_up,
        f.reconnect_attempts,
        f.reconnect_failed
    );
    latency_line(o, "time away", &f.time_away);
    let _ = writeln!(
        o,
        "  lost by dropped subscribers {} ({} of them lost some, at most {} each)  lost by the others {}",
        f.lost, f.subscribers_with_loss, f.max_lost_per_subscriber, f.lost_by_others
    );
    let _ = writeln!(
        o,
        "  recovered {}  recovery refused {}  duplicates {}",
        f.recovered, f.recovery_refused, f.duplicates
    );
    let _ = writeln!(o, "  ({})", f.note);
}

/// Renders the report for people.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let s = &r.settings;
    let _ = writeln!(
        o,
        "c10m-loadtest {}: {} connection(s){} to {} ({}), {} process(es) x {} thread(s), {:.1} s drive, {:.1} s total",
        s.scenario,
        s.connections,
        if s.publishers > 0 {
            format!(" + {} publisher(s)", s.publishers)
        } else {
            String::new()
        },
        s.targets.join(","),
        s.path,
        s.procs,
        s.threads,
        s.duration_s,
        r.elapsed_s
    );
    if s.load != "none" {
        let _ = writeln!(o, "  load: {}, {}-byte messages", s.load, s.size);
    }
    if !s.protocol.is_empty() {
        let _ = writeln!(
            o,
            "  protocol {}; subscribers on {}, publishers on {}; subscriptions {}",
            s.protocol,
            s.targets.join(","),
            s.publisher_targets.join(","),
            if s.confirmed_subscriptions {
                "by command, each confirmed before publishing began"
            } else {
                "made on open (?topic=)"
            }
        );
    }
    if s.source_addresses > 0 {
        let _ = writeln!(o, "  source addresses: {}", s.source_addresses);
    }
    let c = &r.connections;
    let _ = writeln!(o, "\nconnections");
    let _ = writeln!(
        o,
        "  requested {}  attempted {}  established {}  failed {} (connect {}, handshake {})",
        c.requested,
        c.attempted,
        c.established,
        c.connect_failed + c.handshake_failed,
        c.connect_failed,
        c.handshake_failed
    );
    let _ = writeln!(
        o,
        "  open at start {}  survived {}  closed early {}  closed by us {}  peak open {}  pings answered {}",
        c.open_at_go, c.survived, c.closed_early, c.closed_by_us, c.peak_open, c.pings_answered
    );
    for (why, n) in &c.reasons {
        let _ = writeln!(o, "  ended: {why}: {n}");
    }
    latency_line(&mut o, "connect", &r.connect_latency);
    latency_line(&mut o, "handshake", &r.handshake_latency);
    if let Some(m) = &r.messages {
        let _ = writeln!(o, "\nmessages");
        let _ = writeln!(
            o,
            "  sent {} ({:.1}/s)  received {} ({:.1}/s during the drive)  bytes sent {}",
            m.sent,
            m.sent_per_s,
            m.received,
            m.received_per_s,
            fmt_bytes(m.bytes_sent)
        );
        if m.skipped_backpressure + m.unexpected > 0 {
            let _ = writeln!(
                o,
                "  skipped (write queue full) {}  unexpected {}",
                m.skipped_backpressure, m.unexpected
            );
        }
        let kind = if m.corrected_for_coordinated_omission {
            "from the intended send time (coordinated omission corrected)"
        } else {
            "from the actual send time (closed loop)"
        };
        let _ = writeln!(o, "  {} latency, {kind}:", m.latency_kind);
        latency_line(&mut o, "latency", &m.latency);
        if m.corrected_for_coordinated_omission {
            let _ = writeln!(
                o,
                "  largest schedule lag {}",
                fmt_us(m.schedule_lag_max_us)
            );
        }
    }
    if let Some(e) = &r.echo {
        let _ = writeln!(
            o,
            "\necho\n  matched {}  mismatched {}  unanswered {}",
            e.matched, e.mismatched, e.unanswered
        );
    }
    if let Some(b) = &r.broadcast {
        let _ = writeln!(o, "\nbroadcast");
        let _ = writeln!(
            o,
            "  publishers {}  subscribers {}  published {}  expected deliveries {}",
            b.publishers, b.subscribers, b.published, b.expected_deliveries
        );
        let _ = writeln!(
            o,
            "  delivered {} ({:.1}/s)  missing {}  duplicated {}  reordered {}  stale {}",
            b.deliveries, b.deliveries_per_s, b.missing, b.duplicates, b.reordered, b.stale
        );
        let _ = writeln!(
            o,
            "  per subscriber: {} missed some (at most {} each), {} got duplicates, {} saw reordering, {} lack an end marker",
            b.subscribers_with_missing,
            b.max_missing_per_subscriber,
            b.subscribers_with_duplicates,
            b.subscribers_with_reordering,
            b.subscribers_incomplete
        );
        for g in &b.gaps {
            let _ = writeln!(
                o,
                "  gap: publisher {} seq {}..{} ({} message(s)) missed by {} subscriber(s)",
                g.publisher,
                g.first_seq,
                g.first_seq + g.len - 1,
                g.len,
                g.subscribers
            );
        }
        if b.gaps_not_listed > 0 {
            let _ = writeln!(o, "  ... and {} more distinct gaps", b.gaps_not_listed);
        }
        if s.confirmed_subscriptions {
            let _ = writeln!(o, "  subscriptions confirmed {}", b.subscriptions_confirmed);
        }
        if s.protocol == "v1" {
            let _ = writeln!(
                o,
                "  publishes acknowledged {}  refused {}  publications dropped as already handled (by offset) {}",
                b.publish_acks, b.publish_errors, b.offsets_skipped
            );
        }
    }
    if let Some(f) = &r.failover {
        failover(&mut o, f);
    }
    if let Some(m) = &r.memory {
        let _ = writeln!(o, "\nmemory at {} open connections", m.connections);
        let _ = writeln!(
            o,
            "  server user space: {} -> {} RSS = {:.0} bytes/connection",
            fmt_bytes(m.server_rss_before),
            fmt_bytes(m.server_rss_peak),
            m.server_bytes_per_connection
        );
        let _ = writeln!(
            o,
            "  kernel (Slab): {} -> {} = {:.0} bytes/connection (both ends when on loopback)",
            fmt_bytes(m.kernel_slab_before),
            fmt_bytes(m.kernel_slab_peak),
            m.kernel_bytes_per_connection
        );
        let _ = writeln!(
            o,
            "  TCP sockets in use {}  TCP buffer pages {}  load generator RSS {} ({:.0} bytes/connection)",
            m.tcp_sockets_in_use,
            m.tcp_buffer_pages,
            fmt_bytes(m.loadgen_rss),
            m.loadgen_bytes_per_connection
        );
    }
    let cpu = &r.cpu;
    let _ = writeln!(o, "\ncpu ({} cores)", cpu.cores);
    let _ = write!(
        o,
        "  load generator {:.2} s (peak {:.0}% of a core; busiest process {:.0}% of its threads)",
        cpu.loadgen_cpu_s, cpu.loadgen_peak_pct, cpu.busiest_process_peak_pct
    );
    if cpu.server_cpu_s > 0.0 || r.memory.is_some() {
        let _ = write!(
            o,
            "; server {:.2} s (peak {:.0}% of a core)",
            cpu.server_cpu_s, cpu.server_peak_pct
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  whole host peak {:.0}% of a core; everything else peak {:.0}%",
        cpu.host_peak_pct, cpu.others_peak_pct
    );
    for w in &r.warnings {
        let _ = writeln!(o, "WARNING: {w}");
    }
    for e in &r.errors {
        let _ = writeln!(o, "ERROR: {e}");
    }
    if r.ok {
        let _ = writeln!(o, "\nRESULT: OK");
    } else {
        let _ = writeln!(o, "\nRESULT: FAILED: {}", r.failures.join("; "));
    }
    o
}
