//! Admission: whether a new TCP connection may have a slot, decided right after `accept` and
//! before any per-connection state exists.
//!
//! Three limits, each off at 0:
//! - **connections per source**: open connections from one address;
//! - **handshakes per second per source**: new connections from one address, a token bucket
//!   holding one second's worth (a burst of the rate, then the rate);
//! - **handshakes per second**: new connections to the whole process, a bucket per shard
//!   holding its share of the rate (shards accept independently; the kernel spreads
//!   connections over them evenly).
//!
//! A source is an IPv4 address, or the /64 prefix of an IPv6 address (a single host commonly
//! holds a whole /64; IPv4-mapped IPv6 addresses count as IPv4). A refused connection gets
//! one non-blocking write of a fixed answer, 429 for a source over its limits and 503 for the
//! process over its rate, and is closed.
//!
//! Sources live in a table striped by address hash, each stripe a mutex around a map: an
//! accept from one shard and a close on another touch one stripe. The table is bounded
//! ([`MAX_SOURCES`]): sources that hold no connection and whose bucket has refilled are
//! forgotten when a stripe fills (at most once per [`PURGE_EVERY_MS`] per stripe, so a flood
//! of new addresses cannot make every accept scan a stripe). When a stripe is still full, a
//! new address is admitted untracked (its connections are not counted): failing open keeps a
//! flood of addresses from locking everyone out, and the process-wide rate still applies.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// The three limits (0: off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Open connections one source may hold.
    pub connections_per_source: u32,
    /// New connections per second one source may open (a burst of as many).
    pub handshakes_per_source_per_sec: u32,
    /// New connections per second to the process (a burst of as many).
    pub handshakes_per_sec: u32,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its source holds `connections_per_source` connections.
    SourceConnections,
    /// Its source opened `handshakes_per_source_per_sec` connections in the last second.
    SourceRate,
    /// The process accepted `handshakes_per_sec` connections in the last second.
    GlobalRate,
}

impl Refusal {
    /// The HTTP answer written before closing.
    pub fn answer(self) -> &'static [u8] {
        match self {
            Refusal::SourceConnections => {
                b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Refusal::SourceRate => {
                b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\
                Retry-After: 1\r\nConnection: close\r\n\r\n"
            }
            Refusal::GlobalRate => {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\
                Retry-After: 1\r\nConnection: close\r\n\r\n"
            }
        }
    }
}

/// Stripes of the source table.
const STRIPES: usize = 64;

/// Sources tracked at most (a map entry each: address, connections, bucket).
pub const MAX_SOURCES: usize = 1 << 18;

/// A full stripe forgets idle sources at most this often.
pub const PURGE_EVERY_MS: u64 = 100;

/// A token bucket holding one second of `rate`, in thousandths of a token, on a clock in ms.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    milli: u64,
    at: u64,
}

impl Bucket {
    /// A full bucket at time `now`.
    pub fn full(rate: u32, now: u64) -> Self {
        Bucket {
            milli: u64::from(rate) * 1000,
            at: now,
        }
    }

    /// Refills for the time since the last call, then takes a token if there is one.
    pub fn take(&mut self, rate: u32, now: u64) -> bool {
        let cap = u64::from(rate) * 1000;
        let elapsed = now.saturating_sub(self.at);
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(u64::from(rate)))
            .min(cap);
        self.at = self.at.max(now);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// Whether it has refilled completely by `now` (a second after its last use at the latest).
    fn refilled(&self, rate: u32, now: u64) -> bool {
        let missing = (u64::from(rate) * 1000).saturating_sub(self.milli);
        now.saturating_sub(self.at).saturating_mul(u64::from(rate)) >= missing
    }
}

#[derive(Debug)]
struct Source {
    connections: u32,
    bucket: Bucket,
}

#[derive(Debug, Default)]
struct Stripe {
    sources: HashMap<IpAddr, Source>,
    purged_at: Option<u64>,
}

/// The process-wide per-source table (shared by the shards).
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
}

impl Admission {
    /// A table for these limits.
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Whether sources are tracked at all (otherwise the peer address is not even read).
    pub fn per_source(&self) -> bool {
        self.limits.connections_per_source > 0 || self.limits.handshakes_per_source_per_sec > 0
    }

    /// Whether a source's connections are counted (then [`Admission::release`] must follow
    /// every admitted connection's close).
    pub fn counts_connections(&self) -> bool {
        self.limits.connections_per_source > 0
    }

    /// Admits a new connection from `ip` at `now` (ms, one clock for every shard), counting it
    /// against its source; or says why not.
    pub fn admit(&self, ip: IpAddr, now: u64) -> Result<(), Refusal> {
        if !self.per_source() {
            return Ok(());
        }
        let key = source_of(ip);
        let limits = self.limits;
        let mut stripe = self.stripe(&key);
        if !stripe.sources.contains_key(&key) && stripe.sources.len() >= MAX_SOURCES / STRIPES {
            stripe.purge(limits.handshakes_per_source_per_sec, now);
            if stripe.sources.len() >= MAX_SOURCES / STRIPES {
                return Ok(()); // untracked: see the module's documentation
            }
        }
        let rate = limits.handshakes_per_source_per_sec;
        let source = stripe.sources.entry(key).or_insert_with(|| Source {
            connections: 0,
            bucket: Bucket::full(rate, now),
        });
        let max = limits.connections_per_source;
        if max > 0 && source.connections >= max {
            return Err(Refusal::SourceConnections);
        }
        if rate > 0 && !source.bucket.take(rate, now) {
            return Err(Refusal::SourceRate);
        }
        if max > 0 {
            source.connections += 1;
        }
        Ok(())
    }

    /// A connection admitted from `ip` closed.
    pub fn release(&self, ip: IpAddr, now: u64) {
        if !self.counts_connections() {
            return;
        }
        let key = source_of(ip);
        let rate = self.limits.handshakes_per_source_per_sec;
        let mut stripe = self.stripe(&key);
        let Some(source) = stripe.sources.get_mut(&key) else {
            return; // admitted untracked
        };
        source.connections = source.connections.saturating_sub(1);
        if source.connections == 0 && (rate == 0 || source.bucket.refilled(rate, now)) {
            stripe.sources.remove(&key);
        }
    }

    /// Sources tracked now.
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.stripes.iter().map(|s| lock(s).sources.len()).sum()
    }

    /// Connections counted against `ip`'s source.
    #[cfg(test)]
    pub fn connections_of(&self, ip: IpAddr) -> u32 {
        let key = source_of(ip);
        self.stripe(&key)
            .sources
            .get(&key)
            .map_or(0, |s| s.connections)
    }

    fn stripe(&self, key: &IpAddr) -> std::sync::MutexGuard<'_, Stripe> {
        let i = (self.hasher.hash_one(key) as usize) % STRIPES;
        lock(&self.stripes[i])
    }
}

impl Stripe {
    /// Forgets sources with no connection whose bucket has refilled (a new one would be the
    /// same), at most once per [`PURGE_EVERY_MS`].
    fn purge(&mut self, rate: u32, now: u64) {
        if self
            .purged_at
            .is_some_and(|at| now.saturating_sub(at) < PURGE_EVERY_MS)
        {
            return;
        }
        self.purged_at = Some(now);
        self.sources
            .retain(|_, s| s.connections > 0 || (rate > 0 && !s.bucket.refilled(rate, now)));
    }
}

/// A shard's side of admission: the shared table, its share of the process-wide rate, and
/// the source of each connection it counted (only while sources' connections are counted, so
/// a server without per-source limits spends nothing per connection on them).
#[derive(Debug)]
pub struct Gate {
    shared: std::sync::Arc<Admission>,
    /// This shard's share of `handshakes_per_sec` and its bucket.
    global: Option<(u32, Bucket)>,
    peers: HashMap<usize, IpAddr>,
}

impl Gate {
    /// The gate of one of `shards` shards.
    pub fn new(shared: std::sync::Arc<Admission>, shards: usize) -> Self {
        let rate = shared.limits.handshakes_per_sec;
        let shards = u32::try_from(shards.max(1)).unwrap_or(u32::MAX);
        let global = (rate > 0).then(|| {
            let share = rate.div_ceil(shards);
            (share, Bucket::full(share, 0))
        });
        Gate {
            shared,
            global,
            peers: HashMap::new(),
        }
    }

    /// Whether a new connection on `sock` may have slot `slot` at `now`.
    pub fn admit(
        &mut self,
        sock: &std::net::TcpStream,
        slot: usize,
        now: u64,
    ) -> Result<(), Refusal> {
        if let Some((rate, bucket)) = &mut self.global
            && !bucket.take(*rate, now)
        {
            return Err(Refusal::GlobalRate);
        }
        if !self.shared.per_source() {
            return Ok(());
        }
        // A socket whose peer is gone already has nothing to count against.
        let Ok(peer) = sock.peer_addr() else {
            return Ok(());
        };
        self.shared.admit(peer.ip(), now)?;
        if self.shared.counts_connections() {
            self.peers.insert(slot, peer.ip());
        }
        Ok(())
    }

    /// The connection in `slot` is gone.
    pub fn closed(&mut self, slot: usize, now: u64) {
        if let Some(ip) = self.peers.remove(&slot) {
            self.shared.release(ip, now);
        }
    }
}

fn lock(m: &Mutex<Stripe>) -> std::sync::MutexGuard<'_, Stripe> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The source an address counts against: IPv4 as it is (IPv4-mapped IPv6 included), IPv6 by
/// its /64 prefix.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_holds_at_most_its_connections_and_gets_them_back_on_close() {
        let a = Admission::new(Limits {
            connections_per_source: 2,
            ..Limits::default()
        });
        assert_eq!(a.admit(ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(a.admit(ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(a.admit(ip("10.0.0.1"), 0), Err(Refusal::SourceConnections));
        // Another source is not affected.
        assert_eq!(a.admit(ip("10.0.0.2"), 0), Ok(()));
        a.release(ip("10.0.0.1"), 5);
        assert_eq!(a.connections_of(ip("10.0.0.1")), 1);
        assert_eq!(a.admit(ip("10.0.0.1"), 5), Ok(()));
        for _ in 0..2 {
            a.release(ip("10.0.0.1"), 6);
        }
        a.release(ip("10.0.0.2"), 6);
        assert_eq!(a.sources(), 0, "sources without connections are forgotten");
    }

    #[test]
    fn a_source_opens_a_burst_of_its_rate_then_the_rate() {
        let a = Admission::new(Limits {
            handshakes_per_source_per_sec: 10,
            ..Limits::default()
        });
        let src = ip("192.0.2.7");
        for _ in 0..10 {
            assert_eq!(a.admit(src, 1_000), Ok(()));
        }
        assert_eq!(a.admit(src, 1_000), Err(Refusal::SourceRate));
        // A token every 100 ms.
        assert_eq!(a.admit(src, 1_099), Err(Refusal::SourceRate));
        assert_eq!(a.admit(src, 1_100), Ok(()));
        assert_eq!(a.admit(src, 1_150), Err(Refusal::SourceRate));
        // Refused attempts cost nothing: after a second the burst is back.
        let mut admitted = 0;
        for _ in 0..20 {
            admitted += u32::from(a.admit(src, 2_100).is_ok());
        }
        assert_eq!(admitted, 10);
    }

    #[test]
    fn ipv6_sources_are_their_64_prefix_and_mapped_ipv4_is_ipv4() {
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(source_of(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        let a = Admission::new(Limits {
            connections_per_source: 1,
            ..Limits::default()
        });
        assert_eq!(a.admit(ip("2001:db8::1"), 0), Ok(()));
        assert_eq!(
            a.admit(ip("2001:db8::ffff:2"), 0),
            Err(Refusal::SourceConnections)
        );
        assert_eq!(a.admit(ip("2001:db8:0:1::1"), 0), Ok(()));
    }

    #[test]
    fn the_table_is_bounded_and_a_flood_of_addresses_fails_open() {
        let a = Admission::new(Limits {
            handshakes_per_source_per_sec: 1,
            ..Limits::default()
        });
        // Far more addresses than the table holds, all within one millisecond: no purge can
        // free anything (every bucket is empty), so the table stops growing and the rest are
        // admitted untracked.
        let n = MAX_SOURCES as u32 * 2;
        for i in 0..n {
            let addr = IpAddr::V4((0x0a00_0000 + i).into());
            assert_eq!(a.admit(addr, 7), Ok(()));
        }
        assert!(a.sources() <= MAX_SOURCES, "{}", a.sources());
        // A second later every bucket has refilled: full stripes forget them for new sources.
        for i in 0..STRIPES as u32 * 8 {
            let addr = IpAddr::V4((0x0b00_0000 + i).into());
            assert_eq!(a.admit(addr, 1_007), Ok(()));
        }
        assert!(a.sources() < MAX_SOURCES / 2, "{}", a.sources());
    }

    #[test]
    fn a_bucket_never_overflows_whatever_the_clock_says() {
        let mut b = Bucket::full(u32::MAX, 0);
        assert!(b.take(u32::MAX, u64::MAX));
        assert!(
            b.take(u32::MAX, 0),
            "a clock going back takes from what is there"
        );
        let mut b = Bucket::full(1, 0);
        assert!(b.take(1, 0));
        assert!(!b.take(1, 999));
        assert!(b.take(1, 1_000));
    }
}
