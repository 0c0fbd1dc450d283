//! One second of a worker's life, and the merging of seconds from many sources (threads of a
//! process, or processes of a run) into one timeline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::counters::Counters;
use crate::hist::{HistError, Hists, WireHists};

/// What happened during second `k` (counted from the run's epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    /// Second index.
    pub k: u64,
    /// Events during the second.
    pub counters: Counters,
    /// Latencies recorded during the second.
    pub hists: Hists,
    /// Connections open at its end (a gauge: sources add up, seconds do not).
    pub open: u64,
    /// Event-loop threads behind this tick.
    pub threads: u32,
    /// Resident memory of the worker processes (bytes), at its end.
    pub rss_bytes: u64,
}

impl Tick {
    /// An empty second.
    pub fn empty(k: u64) -> Result<Self, HistError> {
        Ok(Tick {
            k,
            counters: Counters::default(),
            hists: Hists::new()?,
            open: 0,
            threads: 0,
            rss_bytes: 0,
        })
    }

    /// Adds another source's same second.
    pub fn merge(&mut self, other: &Tick) -> Result<(), HistError> {
        self.counters.merge(&other.counters);
        self.hists.merge(&other.hists)?;
        self.open += other.open;
        self.threads += other.threads;
        self.rss_bytes += other.rss_bytes;
        Ok(())
    }
}

/// The wire form of [`Tick`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireTick {
    /// [`Tick::k`].
    pub k: u64,
    /// [`Tick::counters`].
    pub counters: Counters,
    /// [`Tick::hists`], V2 + base64.
    pub hists: WireHists,
    /// [`Tick::open`].
    pub open: u64,
    /// [`Tick::threads`].
    pub threads: u32,
    /// [`Tick::rss_bytes`].
    pub rss_bytes: u64,
}

impl WireTick {
    /// Encodes.
    pub fn encode(t: &Tick) -> Result<Self, HistError> {
        Ok(WireTick {
            k: t.k,
            counters: t.counters.clone(),
            hists: WireHists::encode(&t.hists)?,
            open: t.open,
            threads: t.threads,
            rss_bytes: t.rss_bytes,
        })
    }

    /// Decodes.
    pub fn decode(&self) -> Result<Tick, HistError> {
        Ok(Tick {
            k: self.k,
            counters: self.counters.clone(),
            hists: self.hists.decode()?,
            open: self.open,
            threads: self.threads,
            rss_bytes: self.rss_bytes,
        })
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Source {
    /// Highest second reported.
    last: Option<u64>,
    /// Reports nothing more.
    done: bool,
}

/// Merges the seconds of several sources; a second is complete once every source still running
/// has reported it (or a later one).
#[derive(Debug)]
pub struct TickMerger {
    sources: Vec<Source>,
    pending: BTreeMap<u64, Tick>,
}

impl TickMerger {
    /// For `n` sources.
    pub fn new(n: usize) -> Self {
        TickMerger {
            sources: vec![Source::default(); n],
            pending: BTreeMap::new(),
        }
    }

    /// Adds a source's second.
    pub fn push(&mut self, source: usize, tick: Tick) -> Result<(), HistError> {
        if let Some(s) = self.sources.get_mut(source) {
            s.last = Some(s.last.map_or(tick.k, |l| l.max(tick.k)));
        }
        match self.pending.get_mut(&tick.k) {
            Some(t) => t.merge(&tick)?,
            None => {
                self.pending.insert(tick.k, tick);
            }
        }
        Ok(())
    }

    /// A source reports nothing more.
    pub fn done(&mut self, source: usize) {
        if let Some(s) = self.sources.get_mut(source) {
            s.done = true;
        }
    }

    /// Every source is done (the run is over).
    pub fn done_all(&mut self) {
        self.sources.iter_mut().for_each(|s| s.done = true);
    }

    /// Whether every source is done.
    pub fn all_done(&self) -> bool {
        self.sources.iter().all(|s| s.done)
    }

    /// The complete seconds, in order.
    pub fn complete(&mut self) -> Vec<Tick> {
        let horizon = self
            .sources
            .iter()
            .filter(|s| !s.done)
            .map(|s| s.last)
            .min();
        let mut out = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let ready = match horizon {
                None => true,        // every source is done
                Some(None) => false, // a running source has not reported yet
                Some(Some(h)) => *entry.key() <= h,
            };
            if !ready {
                break;
            }
            out.push(entry.remove());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(k: u64, sent: u64, open: u64) -> Tick {
        let mut t = Tick::empty(k).unwrap();
        t.counters.sent = sent;
        t.open = open;
        t.hists.latency.record(100 * (k + 1));
        t
    }

    #[test]
    fn a_second_completes_when_every_running_source_reported_it() {
        let mut m = TickMerger::new(2);
        m.push(0, tick(0, 1, 10)).unwrap();
        assert!(m.complete().is_empty());
        m.push(1, tick(0, 2, 20)).unwrap();
        let done = m.complete();
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].counters.sent, done[0].open), (3, 30));
        assert_eq!(done[0].hists.latency.count(), 2);
        // Source 0 runs ahead; source 1 finishes without reporting second 2.
        m.push(0, tick(1, 1, 10)).unwrap();
        m.push(0, tick(2, 1, 10)).unwrap();
        m.push(1, tick(1, 5, 0)).unwrap();
        assert_eq!(m.complete().iter().map(|t| t.k).collect::<Vec<_>>(), [1]);
        m.done(1);
        assert_eq!(m.complete().iter().map(|t| t.k).collect::<Vec<_>>(), [2]);
        m.done(0);
        assert!(m.all_done());
    }

    #[test]
    fn wire_round_trip() {
        let t = tick(3, 7, 9);
        let text = serde_json::to_string(&WireTick::encode(&t).unwrap()).unwrap();
        let back: WireTick = serde_json::from_str(&text).unwrap();
        assert_eq!(back.decode().unwrap(), t);
    }
}
