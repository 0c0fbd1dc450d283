//! `c10m-loadtest sfu`: rooms of webrtc-rs participants through c10m's SFU. In each room
//! `--publishers` send one video stream each at `--rate` packets a second of `--size` bytes, and
//! `--subscribers` only receive (their own tracks are offered but never sent). Every forwarded
//! packet carries (publisher, sequence, send time), so each subscriber counts, per publisher,
//! what arrived of what was sent during the measured window: forwarded packets a second, loss,
//! one-way latency through the SFU (client loop included), and with `--server-pid` the server's
//! CPU per forwarded packet and its memory.
//!
//! One thread drives every participant (`client.rs`), so the figures hold while the load
//! generator's own core is not saturated: the report gives its CPU beside the server's. With
//! `--verified N`, only N subscribers per room decrypt and check each packet; the others count
//! packets by their RTP headers (which SRTP leaves in the clear): unique sequence numbers per
//! SSRC among the packets whose marker bit is set, which the publishers set on the measured
//! window's packets only. Their count is what the SFU delivered to them; whether it delivered
//! the right bytes is what the verified subscribers check.

pub mod client;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde::Serialize;

use crate::clocks::{Clocks, SystemClocks};
use client::SfuClient;

/// What `c10m-loadtest sfu` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct SfuOptions {
    /// The servers: participant `j` of room `r` joins through `targets[(r + j) % len]` (one
    /// server, or the nodes of a cluster).
    pub targets: Vec<SocketAddr>,
    /// Its signaling route.
    pub path: String,
    /// Rooms.
    pub rooms: u32,
    /// Publishers per room.
    pub publishers: u32,
    /// Subscribers per room.
    pub subscribers: u32,
    /// Of those, how many decrypt and check every packet (the others count them by their
    /// RTP headers: [`SfuClient::count_by_header`]).
    pub verified: u32,
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
    /// Of those, the ones that checked every packet (latency comes from them alone).
    pub verified: u32,
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
    /// Interarrival jitter (RFC 3550) at the end of the window, as the load generator saw the
    /// packets arrive, over the checked streams: the mean, microseconds.
    pub jitter_mean_us: f64,
    /// The largest.
    pub jitter_max_us: f64,
    /// From a checked subscriber's connection (ICE, DTLS) to the first keyframe it received
    /// (its tracks negotiated, the SFU's keyframe request answered): the median, milliseconds.
    pub keyframe_delay_p50_ms: f64,
    /// The longest.
    pub keyframe_delay_max_ms: f64,
    /// Checked subscribers that received no keyframe.
    pub keyframes_missing: u64,
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

/// Bytes at the start of a video payload: publisher index (4; its top bit marks a keyframe,
/// sent in answer to the SFU's keyframe request), sequence (8), send time in microseconds since
/// the run's start (8).
const STAMP: usize = 20;

/// The keyframe bit of a stamp's publisher field.
const KEYFRAME: u32 = 1 << 31;

/// What a stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    publisher: u32,
    seq: u64,
    sent_us: u64,
    keyframe: bool,
}

fn stamp(s: Stamp, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size.max(STAMP)];
    let publisher = s.publisher | if s.keyframe { KEYFRAME } else { 0 };
    p[0..4].copy_from_slice(&publisher.to_le_bytes());
    p[4..12].copy_from_slice(&s.seq.to_le_bytes());
    p[12..20].copy_from_slice(&s.sent_us.to_le_bytes());
    p
}

fn unstamp(p: &[u8]) -> Option<Stamp> {
    let publisher = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?);
    Some(Stamp {
        publisher: publisher & !KEYFRAME,
        seq: u64::from_le_bytes(p.get(4..12)?.try_into().ok()?),
        sent_us: u64::from_le_bytes(p.get(12..20)?.try_into().ok()?),
        keyframe: publisher & KEYFRAME != 0,
    })
}

/// RFC 3550's interarrival jitter of one stream, in microseconds.
#[derive(Debug, Default, Clone, Copy)]
struct Jitter {
    last: Option<(u64, u64)>,
    jitter: f64,
}

impl Jitter {
    /// A packet sent at `sent` arrived at `at` (microseconds).
    fn record(&mut self, sent: u64, at: u64) {
        if let Some((s0, a0)) = self.last {
            let d = (at as f64 - a0 as f64) - (sent as f64 - s0 as f64);
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.last = Some((sent, at));
    }
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
        let mut joined = r as usize;
        let mut target = || {
            let t = o.targets[joined % o.targets.len().max(1)];
            joined += 1;
            t
        };
        for _ in 0..o.publishers {
            ssrc += 2;
            room.publishers.push((
                next_publisher,
                SfuClient::join(target(), &o.path, &name, ssrc)?,
            ));
            next_publisher += 1;
        }
        for s in 0..o.subscribers {
            ssrc += 2;
            let mut c = SfuClient::join(target(), &o.path, &name, ssrc)?;
            if s < o.verified {
                c.keep_video();
            } else {
                c.count_by_header();
            }
            room.subscribers.push(c);
        }
        rooms.push(room);
    }
    let mut driver = Driver::new(&rooms)?;
    // Per checked subscriber: from its connection to its first keyframe.
    let mut key_delay: HashMap<(usize, usize), Duration> = HashMap::new();
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
                        publish(p, *i, seq.entry(*i).or_default(), us(now), o.size, false);
                    }
                }
            }
        }
        driver.turn(&mut rooms, next_send)?;
        let mut ready = true;
        for (r, room) in rooms.iter_mut().enumerate() {
            for (s, sub) in room.subscribers.iter_mut().enumerate() {
                for p in sub.take_video() {
                    if let Some(st) = unstamp(&p) {
                        *seen[r][s].entry(st.publisher).or_default() += 1;
                        if st.keyframe {
                            first_keyframe(&mut key_delay, sub.connected_at, (r, s));
                        }
                    }
                }
                if let Some(ssrcs) = sub.header_ssrcs() {
                    // Counted by header: a stream from each publisher (SSRCs, not ids).
                    for (k, _) in ssrcs.iter().enumerate() {
                        seen[r][s].entry(k as u32).or_default();
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
    let mut jitter: HashMap<(usize, usize, u32), Jitter> = HashMap::new();
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
                    publish(p, *i, seq.entry(*i).or_default(), us(now), o.size, true);
                    sent += 1;
                    expected += subs;
                }
            }
        }
        let until = if now < window_end {
            next_send
        } else {
            drain_end
        };
        driver.turn(&mut rooms, until)?;
        let at = us(Instant::now());
        for (r, room) in rooms.iter_mut().enumerate() {
            for (s, sub) in room.subscribers.iter_mut().enumerate() {
                for p in sub.take_video() {
                    let Some(st) = unstamp(&p) else {
                        continue;
                    };
                    if st.keyframe {
                        first_keyframe(&mut key_delay, sub.connected_at, (r, s));
                    }
                    if first.get(&st.publisher).is_some_and(|f| st.seq >= *f) {
                        got.entry((r, s, st.publisher)).or_default().push(st.seq);
                        let _ = latency.record(at.saturating_sub(st.sent_us).max(1));
                        jitter
                            .entry((r, s, st.publisher))
                            .or_default()
                            .record(st.sent_us, at);
                    }
                }
            }
        }
    }
    let cpu1 = o.server_pid.and_then(|p| clocks.cpu_ns(p));
    let own1 = clocks.cpu_ns(std::process::id());
    let by_header: u64 = rooms
        .iter()
        .flat_map(|r| r.subscribers.iter())
        .map(SfuClient::marked_received)
        .sum();
    let received: u64 = got
        .values_mut()
        .map(|v| {
            v.sort_unstable();
            v.dedup();
            v.len() as u64
        })
        .sum::<u64>()
        + by_header;
    let duration_s = o.duration.as_secs_f64();
    let jitters: Vec<f64> = jitter.values().map(|j| j.jitter).collect();
    let mut delays: Vec<f64> = key_delay
        .values()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    delays.sort_by(f64::total_cmp);
    let checked = u64::from(o.rooms) * u64::from(o.verified);
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
        verified: o.verified,
        streams: u64::from(o.rooms) * u64::from(o.publishers) * u64::from(o.subscribers),
        sent,
        received,
        expected,
        received_per_s: received as f64 / duration_s,
        loss,
        latency_p50_us: latency.value_at_quantile(0.5),
        latency_p99_us: latency.value_at_quantile(0.99),
        jitter_mean_us: jitters.iter().sum::<f64>() / jitters.len().max(1) as f64,
        jitter_max_us: jitters.iter().copied().fold(0.0, f64::max),
        keyframe_delay_p50_ms: delays.get(delays.len() / 2).copied().unwrap_or(0.0),
        keyframe_delay_max_ms: delays.last().copied().unwrap_or(0.0),
        keyframes_missing: checked.saturating_sub(delays.len() as u64),
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

/// Publisher `p` (index `publisher`) sends its next video packet: sequence `seq` (advanced),
/// stamped with `sent_us`, `size` bytes, a keyframe if the SFU asked for one, the RTP marker
/// bit as `marked` (set on the measured window's packets only).
fn publish(
    p: &mut SfuClient,
    publisher: u32,
    seq: &mut u64,
    sent_us: u64,
    size: usize,
    marked: bool,
) {
    *seq += 1;
    let st = Stamp {
        publisher,
        seq: *seq,
        sent_us,
        keyframe: p.take_keyframe_request(),
    };
    p.send_marked(RtpCodecKind::Video, &stamp(st, size), marked);
}

/// Records checked subscriber `at`'s first keyframe, timed from its connection.
fn first_keyframe(
    delays: &mut HashMap<(usize, usize), Duration>,
    connected_at: Option<Instant>,
    at: (usize, usize),
) {
    if let Some(c) = connected_at {
        delays.entry(at).or_insert_with(|| c.elapsed());
    }
}

/// How often every participant's peer-connection timers are looked at.
const TIMER_TICK: Duration = Duration::from_millis(5);

/// Steps the participants whose sockets are ready (one epoll over every participant's UDP and
/// signaling sockets) or whose timers are due, instead of every participant on every turn:
/// with hundreds of participants, reading each socket in turn only to hear it would block was
/// most of the load generator's work.
struct Driver {
    poll: Poll,
    events: Events,
    /// Participant k: (room, index among its publishers then its subscribers).
    at: Vec<(usize, usize)>,
    next_tick: Instant,
}

impl Driver {
    fn new(rooms: &[Room]) -> Result<Driver, String> {
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let mut at = Vec::new();
        for (r, room) in rooms.iter().enumerate() {
            for (i, c) in room.participants().enumerate() {
                let k = at.len();
                let (udp, ws) = c.fds();
                let interest = Interest::READABLE | Interest::WRITABLE;
                poll.registry()
                    .register(&mut SourceFd(&udp), Token(2 * k), Interest::READABLE)
                    .and_then(|()| {
                        poll.registry()
                            .register(&mut SourceFd(&ws), Token(2 * k + 1), interest)
                    })
                    .map_err(|e| format!("epoll: {e}"))?;
                at.push((r, i));
            }
        }
        Ok(Driver {
            poll,
            events: Events::with_capacity(1024),
            at,
            next_tick: Instant::now(),
        })
    }

    fn client(rooms: &mut [Room], (r, i): (usize, usize)) -> &mut SfuClient {
        let room = &mut rooms[r];
        let publishers = room.publishers.len();
        if i < publishers {
            &mut room.publishers[i].1
        } else {
            &mut room.subscribers[i - publishers]
        }
    }

    /// Waits for readiness until `until` at the latest (and no longer than a timer tick),
    /// then steps what is ready or due. Whether anything happened.
    fn turn(&mut self, rooms: &mut [Room], until: Instant) -> Result<bool, String> {
        let now = Instant::now();
        let wait = until.min(self.next_tick).saturating_duration_since(now);
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("epoll: {e}")),
        }
        let mut busy = false;
        for event in &self.events {
            let Token(t) = event.token();
            let Some(&at) = self.at.get(t / 2) else {
                continue;
            };
            let udp = t % 2 == 0;
            // Publishers receive the other publishers' media too; nothing keeps it.
            busy |= Self::client(rooms, at).step_ready(udp, !udp)?;
        }
        let now = Instant::now();
        if now >= self.next_tick {
            self.next_tick = now + TIMER_TICK;
            for &at in &self.at {
                let c = Self::client(rooms, at);
                if c.next_timer().is_none_or(|t| t <= now) {
                    busy |= c.step_ready(false, false)?;
                }
            }
        }
        Ok(busy)
    }
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
            "  latency publisher -> subscriber: p50 {} us, p99 {} us ({} of {} subscribers per room checked every packet, the others counted them by header)\n",
            self.latency_p50_us, self.latency_p99_us, self.verified, self.subscribers
        );
        t += &format!(
            "  jitter (RFC 3550, as received here): mean {:.0} us, max {:.0} us\n",
            self.jitter_mean_us, self.jitter_max_us
        );
        t += &format!(
            "  keyframe delay, connected to first keyframe: p50 {:.0} ms, max {:.0} ms, {} checked subscriber(s) without one\n",
            self.keyframe_delay_p50_ms, self.keyframe_delay_max_ms, self.keyframes_missing
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
        for keyframe in [false, true] {
            let s = Stamp {
                publisher: 7,
                seq: 123_456_789_012,
                sent_us: 42,
                keyframe,
            };
            let p = stamp(s, 1200);
            assert_eq!(p.len(), 1200);
            assert_eq!(unstamp(&p), Some(s));
            assert_eq!(unstamp(&p[..10]), None);
            assert_eq!(stamp(s, 5).len(), STAMP);
        }
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        // Evenly spaced arrivals: no jitter.
        let mut j = Jitter::default();
        for k in 0..100 {
            j.record(k * 20_000, 5_000 + k * 20_000);
        }
        assert_eq!(j.jitter, 0.0);
        // Every other packet 1 ms late: |D| is 1 ms for each packet after the first, and J
        // converges to it.
        let mut j = Jitter::default();
        for k in 0..400 {
            j.record(k * 20_000, k * 20_000 + (k % 2) * 1_000);
        }
        assert!((j.jitter - 1_000.0).abs() < 1.0, "{}", j.jitter);
    }
}
