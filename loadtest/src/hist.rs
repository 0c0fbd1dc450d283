//! Latency histograms (HdrHistogram, microseconds) and their wire form: the V2 serializer, then
//! base64, so a worker process can ship them to its parent inside a JSON line.

use std::fmt;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

/// Largest value tracked: 100 s. Larger values are recorded as 100 s (and stay visible as max).
pub const MAX_US: u64 = 100_000_000;
/// Significant figures kept (0.1% precision).
const SIGFIG: u8 = 3;

/// Why a histogram operation failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum HistError {
    /// The bounds were refused (never, for the constants above; see the unit test).
    Create(hdrhistogram::CreationError),
    /// Two histograms could not be added (the other one's range is wider).
    Add(hdrhistogram::AdditionError),
    /// Serialization failed.
    Serialize(hdrhistogram::serialization::V2SerializeError),
    /// The base64 text was not base64.
    Base64(base64::DecodeError),
    /// The bytes were not a V2 histogram.
    Deserialize(hdrhistogram::serialization::DeserializeError),
}

impl fmt::Display for HistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistError::Create(e) => write!(f, "cannot create histogram: {e:?}"),
            HistError::Add(e) => write!(f, "cannot merge histograms: {e:?}"),
            HistError::Serialize(e) => write!(f, "cannot serialize histogram: {e:?}"),
            HistError::Base64(e) => write!(f, "histogram is not base64: {e}"),
            HistError::Deserialize(e) => write!(f, "not a V2 histogram: {e:?}"),
        }
    }
}

impl std::error::Error for HistError {}

/// A histogram of microseconds.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Hist {
    /// An empty histogram covering 1 us .. [`MAX_US`] at 3 significant figures.
    pub fn new() -> Result<Self, HistError> {
        Histogram::new_with_bounds(1, MAX_US, SIGFIG)
            .map(Hist)
            .map_err(HistError::Create)
    }

    /// Records one value (clamped into range).
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Hist) -> Result<(), HistError> {
        self.0.add(&other.0).map_err(HistError::Add)
    }

    /// Returns the values recorded so far and starts empty again (an interval histogram).
    pub fn take(&mut self) -> Hist {
        let taken = self.clone();
        self.0.reset();
        taken
    }

    /// The value at quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    /// The summary the reports print.
    pub fn summary(&self) -> Summary {
        if self.0.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.0.len(),
            min_us: self.0.min(),
            mean_us: self.0.mean(),
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            p999_us: self.quantile(0.999),
            max_us: self.0.max(),
        }
    }

    /// V2-serialized, base64-encoded.
    pub fn to_base64(&self) -> Result<String, HistError> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut bytes)
            .map_err(HistError::Serialize)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// The inverse of [`Hist::to_base64`].
    pub fn from_base64(text: &str) -> Result<Self, HistError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(HistError::Base64)?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(HistError::Deserialize)?;
        // Re-home the values into our own bounds so later merges cannot fail on a range.
        let mut ours = Hist::new()?;
        for v in h.iter_recorded() {
            ours.0
                .saturating_record_n(v.value_iterated_to().clamp(1, MAX_US), v.count_at_value());
        }
        Ok(ours)
    }
}

impl PartialEq for Hist {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// The histograms every worker keeps, per interval and in total.
#[derive(Clone, Debug, PartialEq)]
pub struct Hists {
    /// TCP connect: `connect()` called to socket writable.
    pub connect: Hist,
    /// WebSocket handshake: upgrade request written to `101` parsed.
    pub handshake: Hist,
    /// Echo round trip, or broadcast delivery (publish intent to receipt).
    pub latency: Hist,
    /// Failover: a subscriber's time away, from its connection dropping to its subscription
    /// being live again (on another node).
    pub reconnect: Hist,
}

impl Hists {
    /// Empty histograms.
    pub fn new() -> Result<Self, HistError> {
        Ok(Hists {
            connect: Hist::new()?,
            handshake: Hist::new()?,
            latency: Hist::new()?,
            reconnect: Hist::new()?,
        })
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Hists) -> Result<(), HistError> {
        self.connect.merge(&other.connect)?;
        self.handshake.merge(&other.handshake)?;
        self.latency.merge(&other.latency)?;
        self.reconnect.merge(&other.reconnect)
    }

    /// Takes the interval recorded so far.
    pub fn take(&mut self) -> Hists {
        Hists {
            connect: self.connect.take(),
            handshake: self.handshake.take(),
            latency: self.latency.take(),
            reconnect: self.reconnect.take(),
        }
    }
}

/// The wire form of [`Hists`]: base64 V2 strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHists {
    /// [`Hists::connect`].
    pub connect: String,
    /// [`Hists::handshake`].
    pub handshake: String,
    /// [`Hists::latency`].
    pub latency: String,
    /// [`Hists::reconnect`].
    pub reconnect: String,
}

impl WireHists {
    /// Encodes.
    pub fn encode(h: &Hists) -> Result<Self, HistError> {
        Ok(WireHists {
            connect: h.connect.to_base64()?,
            handshake: h.handshake.to_base64()?,
            latency: h.latency.to_base64()?,
            reconnect: h.reconnect.to_base64()?,
        })
    }

    /// Decodes.
    pub fn decode(&self) -> Result<Hists, HistError> {
        Ok(Hists {
            connect: Hist::from_base64(&self.connect)?,
            handshake: Hist::from_base64(&self.handshake)?,
            latency: Hist::from_base64(&self.latency)?,
            reconnect: Hist::from_base64(&self.reconnect)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(values: impl IntoIterator<Item = u64>) -> Hist {
        let mut h = Hist::new().unwrap();
        values.into_iter().for_each(|v| h.record(v));
        h
    }

    #[test]
    fn serialization_round_trips() {
        let h = filled((1..=10_000).map(|v| v * 37));
        let text = h.to_base64().unwrap();
        let back = Hist::from_base64(&text).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.count(), 10_000);
        assert!(Hist::from_base64("not base64!").is_err());
        assert!(Hist::from_base64("AAAA").is_err());
    }

    #[test]
    fn merging_serialized_parts_equals_recording_everything_in_one() {
        // Three "worker processes" each see a third of the values.
        let all: Vec<u64> = (0..30_000u64).map(|i| 1 + (i * 7919) % 250_000).collect();
        let whole = filled(all.iter().copied());
        let mut merged = Hist::new().unwrap();
        for part in all.chunks(10_000) {
            let wire = filled(part.iter().copied()).to_base64().unwrap();
            merged.merge(&Hist::from_base64(&wire).unwrap()).unwrap();
        }
        assert_eq!(merged, whole);
        assert_eq!(merged.summary(), whole.summary());
        assert_eq!(merged.count(), 30_000);
    }

    #[test]
    fn summary_percentiles_are_within_precision() {
        let h = filled(1..=100_000);
        let s = h.summary();
        assert_eq!(s.count, 100_000);
        assert_eq!(s.min_us, 1);
        let close = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(close(s.p50_us, 50_000), "{s:?}");
        assert!(close(s.p90_us, 90_000), "{s:?}");
        assert!(close(s.p99_us, 99_000), "{s:?}");
        assert!(close(s.p999_us, 99_900), "{s:?}");
        assert!(close(s.max_us, 100_000), "{s:?}");
        assert_eq!(Hist::new().unwrap().summary(), Summary::default());
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let h = filled([0, MAX_US * 10]);
        assert_eq!(h.count(), 2);
        assert!(h.summary().max_us >= MAX_US);
    }

    #[test]
    fn take_leaves_an_empty_interval() {
        let mut h = filled([5, 6, 7]);
        let first = h.take();
        assert_eq!((first.count(), h.count()), (3, 0));
        h.record(9);
        assert_eq!(h.take().count(), 1);
    }

    #[test]
    fn wire_hists_round_trip() {
        let mut hs = Hists::new().unwrap();
        hs.connect.record(100);
        hs.latency.record(2_000);
        let back = WireHists::encode(&hs).unwrap().decode().unwrap();
        assert_eq!(back, hs);
    }
}
