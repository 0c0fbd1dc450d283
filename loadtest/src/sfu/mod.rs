//! `c10m-loadtest sfu`: rooms of webrtc-rs participants through c10m's SFU. In each room
//! `--publishers` send one video stream each at `--rate` packets a second of `--size` bytes, and
//! `--subscribers` only receive (their own tracks are offered but never sent). Every forwarded
//! packet carries (publisher, sequence, send time), so each subscriber counts, per publisher,
//! what arrived of what was sent during the measured window: forwarded packets a second, loss,
//! one-way latency through the SFU (client loop included), and with `--server-pid` the server's
//! CPU per forwarded packet and its memory.
//!
//! One thread drives every participant (`client.rs`), so the figures hold while the load
//! generator's own core is not saturated: the report gives its CPU beside the server's.

pub mod client;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde::Serialize;

use crate::clocks::{Clocks, SystemClocks};
use client::SfuClient;

/// What `c10m-loadtest sfu` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct SfuOptions {
    /// The server.
    pub target: SocketAddr,
    /// Its signaling route.
    pub path: String,
    /// Rooms.
    pub rooms: u32,
    /// Publishers per room.
    pub publishers: u32,
    /// Subscribers per room.
    pub subscribers: u32,
    /// Video packets a second per publisher.
    pub rate: u32,
    /// Video payload bytes.
    pub size: usize,
    /// The measured window.
    pub duration: Duration,
    /// The server process (CPU and memory).
    pub server_pid: Option<u32>,
    /// Print JSON instead of text.
    pub json: bool,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct SfuReport {
    /// Rooms, publishers and subscribers per room.
    pub rooms: u32,
    /// Publishers per room.
    pub publishers: u32,
    /// Subscribers per room.
    pub subscribers: u32,
    /// Forwarded video streams (publisher -> subscriber pairs, every room).
    pub streams: u64,
    /// Video packets sent by the publishers in the window.
    pub sent: u64,
    /// Of those, received by subscribers (counted once per subscriber).
    pub received: u64,
    /// Expected: sent times the subscribers of each publisher's room.
    pub expected: u64,
    /// Forwarded packets received a second.
    pub received_per_s: f64,
    /// Lost, as a share of expected (0.01 = 1%).
    pub loss: f64,
    /// Publisher to subscriber, microseconds.
    pub latency_p50_us: u64,
    /// 99th percentile.
    pub latency_p99_us: u64,
    /// The window, seconds.
    pub duration_s: f64,
    /// Server CPU seconds in the window (with --server-pid).
    pub server_cpu_s: Option<f64>,
    /// Server CPU per forwarded packet received, microseconds.
    pub server_cpu_us_per_packet: Option<f64>,
    /// The server's resident memory at the end, bytes.
    pub server_rss_bytes: Option<u64>,
    /// This process's CPU seconds in the window.
    pub loadgen_cpu_s: f64,
    /// Whether nothing was lost (and every participant connected).
    pub ok: bool,
}

/// Bytes at the start of a video payload: publisher index (4), sequence (8), send time in
/// microseconds since the run's start (8).
const STAMP: usize = 20;

fn stamp(publisher: u32, seq: u64, sent_us: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size.max(STAMP)];
    p[0..4].copy_from_slice(&publisher.to_le_bytes());
    p[4..12].copy_from_slice(&seq.to_le_bytes());
    p[12..20].copy_from_slice(&sent_us.to_le_bytes());
    p
}

fn unstamp(p: &[u8]) -> Option<(u32, u64, u64)> {
    let publisher = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?);
    let seq = u64::from_le_bytes(p.get(4..12)?.try_into().ok()?);
    let sent = u64::from_le_bytes(p.get(12..20)?.try_into().ok()?);
    Some((publisher, seq, sent))
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// One room's participants.
struct Room {
    publishers: Vec<(u32, SfuClient)>,
    subscribers: Vec<SfuClient>,
}

impl Room {
    fn participants(&self) -> impl Iterator<Item = &SfuClient> {
        self.publishers
            .iter()
            .map(|(_, c)| c)
            .chain(self.subscribers.iter())
    }
}

/// Runs the scenario.
pub fn run(o: &SfuOptions) -> Result<SfuReport, String> {
    let clocks = SystemClocks;
    let start = Instant::now();
    let us = |t: Instant| t.duration_since(start).as_micros() as u64;
    let mut rooms = Vec::new();
    let mut next_publisher = 0u32;
    let mut ssrc = 0x10_0000u32;
    for r in 0..o.rooms {
        let name = format!("lt{}-{r}", std::process::id());
        let mut room = Room {
            publishers: Vec::new(),
            subscribers: Vec::new(),
        };
        for _ in 0..o.publishers {
            ssrc += 2;
            room.publishers.push((
                next_publisher,
                SfuClient::join(o.target, &o.path, &name, ssrc)?,
            ));
            next_publisher += 1;
        }
        for _ in 0..o.subscribers {
            ssrc += 2;
            let mut c = SfuClient::join(o.target, &o.path, &name, ssrc)?;
            c.keep_video();
            room.subscribers.push(c);
        }
        rooms.push(room);
    }
    // Warm-up: everyone connected and every subscriber receiving every publisher of its room.
    let interval = Duration::from_secs_f64(1.0 / f64::from(o.rate.max(1)));
    let mut seq: HashMap<u32, u64> = HashMap::new();
    let mut next_send = Instant::now();
    let warm_deadline = Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<Vec<HashMap<u32, u64>>> = rooms
        .iter()
        .map(|r| vec![HashMap::new(); r.subscribers.len()])
        .collect();
    loop {
        if Instant::now() >= warm_deadline {
            let everyone = || rooms.iter().flat_map(Room::participants);
            let connected = everyone().filter(|c| c.connected).count();
            let failed = everyone().filter(|c| c.failed).count();
            let receiving: usize = seen.iter().flatten().filter(|m| !m.is_empty()).count();
            return Err(format!(
                "warm-up: not every subscriber received every publisher within 20 s \
                 ({connected} participants connected, {failed} failed, {receiving} subscribers receiving)"
            ));
        }
        let now = Instant::now();
        if now >= next_send {
            next_send += interval;
            for r in &mut rooms {
                for (i, p) in &mut r.publishers {
                    if p.connected {
                        let s = seq.entry(*i).or_default();
                        *s += 1;
                        p.send(RtpCodecKind::Video, &stamp(*i, *s, us(now), o.size));
                    }
                }
            }
        }
        step_all(&mut rooms)?;
        let mut ready = true;
        for (r, room) in rooms.iter_mut().enumerate() {
            for (s, sub) in room.subscribers.iter_mut().enumerate() {
                for p in sub.take_video() {
                    if let Some((publisher, _, _)) = unstamp(&p) {
                        *seen[r][s].entry(publisher).or_default() += 1;
                    }
                }
                ready &= seen[r][s].len() == room.publishers.len();
            }
        }
        if ready {
            break;
        }
    }
    // The window: sequence numbers from here on count.
    let first: HashMap<u32, u64> = seq.iter().map(|(k, v)| (*k, v + 1)).collect();
    let cpu0 = o.server_pid.and_then(|p| clocks.cpu_ns(p));
    let own0 = clocks.cpu_ns(std::process::id());
    let window_start = Instant::now();
    let window_end = window_start + o.duration;
    next_send = window_start;
    // Per (room, subscriber, publisher): sequence numbers received in the window.
    let mut got: HashMap<(usize, usize, u32), Vec<u64>> = HashMap::new();
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut sent = 0u64;
    let mut expected = 0u64;
    let drain_end = window_end + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        if now >= drain_end {
            break;
        }
        if now < window_end && now >= next_send {
            next_send += interval;
            for r in &mut rooms {
                let subs = r.subscribers.len() as u64;
                for (i, p) in &mut r.publishers {
                    let s = seq.entry(*i).or_default();
                    *s += 1;
                    p.send(RtpCodecKind::Video, &stamp(*i, *s, us(now), o.size));
                    sent += 1;
                    expected += subs;
                }
            }
        }
        let busy = step_all(&mut rooms)?;
        let at = us(Instant::now());
        for (r, room) in rooms.iter_mut().enumerate() {
            for (s, sub) in room.subscribers.iter_mut().enumerate() {
                for p in sub.take_video() {
                    let Some((publisher, n, sent_us)) = unstamp(&p) else {
                        continue;
                    };
                    if first.get(&publisher).is_some_and(|f| n >= *f) {
                        got.entry((r, s, publisher)).or_default().push(n);
                        let _ = latency.record(at.saturating_sub(sent_us).max(1));
                    }
                }
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let cpu1 = o.server_pid.and_then(|p| clocks.cpu_ns(p));
    let own1 = clocks.cpu_ns(std::process::id());
    let received: u64 = got
        .values_mut()
        .map(|v| {
            v.sort_unstable();
            v.dedup();
            v.len() as u64
        })
        .sum();
    let duration_s = o.duration.as_secs_f64();
    let server_cpu_s = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
        _ => None,
    };
    let loss = if expected == 0 {
        0.0
    } else {
        expected.saturating_sub(received) as f64 / expected as f64
    };
    let report = SfuReport {
        rooms: o.rooms,
        publishers: o.publishers,
        subscribers: o.subscribers,
        streams: u64::from(o.rooms) * u64::from(o.publishers) * u64::from(o.subscribers),
        sent,
        received,
        expected,
        received_per_s: received as f64 / duration_s,
        loss,
        latency_p50_us: latency.value_at_quantile(0.5),
        latency_p99_us: latency.value_at_quantile(0.99),
        duration_s,
        server_cpu_s,
        server_cpu_us_per_packet: server_cpu_s.map(|c| c * 1e6 / received.max(1) as f64),
        server_rss_bytes: o.server_pid.and_then(rss_bytes),
        loadgen_cpu_s: match (own0, own1) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9,
            _ => 0.0,
        },
        ok: received == expected && expected > 0,
    };
    for room in rooms {
        for (_, p) in room.publishers {
            p.leave();
        }
        for s in room.subscribers {
            s.leave();
        }
    }
    Ok(report)
}

fn step_all(rooms: &mut [Room]) -> Result<bool, String> {
    let mut busy = false;
    for r in rooms {
        for (_, p) in &mut r.publishers {
            busy |= p.step()?;
            // Publishers receive the other publishers' media too; nothing keeps it.
        }
        for s in &mut r.subscribers {
            busy |= s.step()?;
        }
    }
    Ok(busy)
}

impl SfuReport {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut t = format!(
            "sfu: {} room(s) x {} publisher(s) x {} subscriber(s): {} forwarded video streams\n",
            self.rooms, self.publishers, self.subscribers, self.streams
        );
        t += &format!(
            "  packets: {} sent, {} of {} expected received ({:.3}% lost), {:.0}/s forwarded over {:.1} s\n",
            self.sent,
            self.received,
            self.expected,
            self.loss * 100.0,
            self.received_per_s,
            self.duration_s
        );
        t += &format!(
            "  latency publisher -> subscriber: p50 {} us, p99 {} us\n",
            self.latency_p50_us, self.latency_p99_us
        );
        if let (Some(cpu), Some(per)) = (self.server_cpu_s, self.server_cpu_us_per_packet) {
            t += &format!(
                "  server CPU: {cpu:.2} s ({:.0}% of a core), {per:.2} us per forwarded packet\n",
                cpu / self.duration_s * 100.0
            );
        }
        if let Some(rss) = self.server_rss_bytes {
            t += &format!("  server RSS: {:.1} MiB\n", rss as f64 / 1048576.0);
        }
        t += &format!(
            "  load generator CPU: {:.2} s ({:.0}% of a core)\n",
            self.loadgen_cpu_s,
            self.loadgen_cpu_s / self.duration_s * 100.0
        );
        t += if self.ok {
            "RESULT: OK"
        } else {
            "RESULT: FAILED (packets lost)"
        };
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back() {
        let p = stamp(7, 123_456_789_012, 42, 1200);
        assert_eq!(p.len(), 1200);
        assert_eq!(unstamp(&p), Some((7, 123_456_789_012, 42)));
        assert_eq!(unstamp(&p[..10]), None);
        assert_eq!(stamp(1, 2, 3, 5).len(), STAMP);
    }
}
