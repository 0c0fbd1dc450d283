//! The broker seam under subscribe and publish.
//!
//! Each shard keeps its own topic table; the process keeps one [`Registry`] of which shards
//! have subscribers of which topic. A topic's first subscriber in the process and its last
//! unsubscriber are the events a [`Broker`] hears, so it subscribes upstream (in Redis, say)
//! only to what this process needs. A publish then goes to the broker, and the broker hands
//! every message it receives for a topic back with [`Handle::deliver`](super::Handle::deliver):
//! one mailbox message per shard that has subscribers, the frame encoded once and shared.
//!
//! Without a broker (the default) the process is its own: a publish is delivered at once on
//! the publishing shard and mailed to the other shards that have subscribers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::app::SharedFrame;
use super::handle::Handle;

/// Carries publishes between processes. Its methods are called from shard threads (and from
/// any thread that holds a [`Handle`]): they must not block; hand the work to the broker's
/// own thread or runtime.
pub trait Broker: Send + Sync + 'static {
    /// The server started; `handle` delivers into local fan-out and outlives the shards.
    fn attach(&self, handle: Handle) {
        let _ = handle;
    }

    /// `topic` has its first subscriber in this process. Once the upstream subscription is in
    /// place, the broker calls [`Handle::confirm`](super::Handle::confirm): the subscribers
    /// waiting for it hear [`App::on_subscribed`](super::App::on_subscribed), and a message
    /// published anywhere after that reaches them.
    fn subscribed(&self, topic: &str);

    /// `topic` lost its last subscriber in this process.
    fn unsubscribed(&self, topic: &str);

    /// Whether it reaches the other processes now (`/health` says `degraded` when not).
    fn healthy(&self) -> bool {
        true
    }

    /// Its counters in the Prometheus text format, appended to `/metrics`.
    fn metrics(&self) -> String {
        String::new()
    }

    /// An application published `frame` to `topic`. Local subscribers receive it only when
    /// the broker delivers it back, so every process sees one order per topic.
    fn publish(&self, topic: &str, frame: &SharedFrame);
}

/// Which shards have subscribers of which topic, process-wide. Updated only when a shard's
/// table gains or loses a topic; read on every cross-shard publish.
#[derive(Debug, Default)]
pub struct Registry {
    topics: Mutex<HashMap<Arc<str>, Entry>>,
    /// A broker carries topics: a topic is live only once it confirms.
    upstream: bool,
}

#[derive(Debug, Default)]
struct Entry {
    shards: ShardSet,
    /// The upstream subscription is in place (always, without a broker).
    live: bool,
}

/// Where a connection's new subscription stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Subscribed {
    /// It receives everything published from now on, in every process.
    Live,
    /// It receives what this process publishes; the broker's upstream subscription is not
    /// confirmed yet. [`App::on_subscribed`](super::App::on_subscribed) says when it is.
    Pending,
    /// It was subscribed already.
    Already,
}

/// A set of shard indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSet(Vec<u64>);

impl ShardSet {
    fn insert(&mut self, shard: u16) {
        let (word, bit) = (usize::from(shard) / 64, shard % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    fn remove(&mut self, shard: u16) {
        let (word, bit) = (usize::from(shard) / 64, shard % 64);
        if let Some(w) = self.0.get_mut(word) {
            *w &= !(1 << bit);
        }
    }

    /// Whether it holds no shard.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The shards in it, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u16)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u16 * 64 + b)
        })
    }
}

impl Registry {
    /// A registry for a process with a broker (`upstream`) or without.
    pub fn new(upstream: bool) -> Self {
        Registry {
            topics: Mutex::default(),
            upstream,
        }
    }

    /// `shard` now has subscribers of `topic`; true when the process had none before, and
    /// then `first` runs, under the registry's lock: a broker hears a topic's first and last
    /// subscriber in the order they happened, whatever the shards race.
    pub fn add(&self, topic: &Arc<str>, shard: u16, first: impl FnOnce(&str)) -> bool {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = topics.entry(topic.clone()).or_insert_with(|| Entry {
            shards: ShardSet::default(),
            live: !self.upstream,
        });
        let was_empty = entry.shards.is_empty();
        entry.shards.insert(shard);
        if was_empty {
            first(topic);
        }
        was_empty
    }

    /// `shard` has no subscribers of `topic` left; true when the process has none now, and
    /// then `last` runs under the lock.
    pub fn remove(&self, topic: &str, shard: u16, last: impl FnOnce(&str)) -> bool {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = topics.get_mut(topic) else {
            return false;
        };
        entry.shards.remove(shard);
        if entry.shards.is_empty() {
            topics.remove(topic);
            last(topic);
            return true;
        }
        false
    }

    /// The shards with subscribers of `topic`.
    pub fn shards(&self, topic: &str) -> ShardSet {
        let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        topics
            .get(topic)
            .map(|e| e.shards.clone())
            .unwrap_or_default()
    }

    /// Whether `topic`'s upstream subscription is in place.
    pub fn is_live(&self, topic: &str) -> bool {
        let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        topics.get(topic).is_some_and(|e| e.live)
    }

    /// The broker confirmed `topic`: the shards that have its subscribers, to be told (empty
    /// if it has none any more, or it was live already).
    pub fn confirm(&self, topic: &str) -> ShardSet {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        match topics.get_mut(topic) {
            Some(e) if !e.live => {
                e.live = true;
                e.shards.clone()
            }
            _ => ShardSet::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_per_process() {
        let r = Registry::new(true);
        let t: Arc<str> = Arc::from("room");
        let mut events = Vec::new();
        assert!(r.add(&t, 0, |t| events.push(format!("+{t}"))));
        assert!(!r.add(&t, 3, |t| events.push(format!("+{t}"))));
        assert_eq!(r.shards("room").iter().collect::<Vec<_>>(), vec![0, 3]);
        assert!(!r.remove("room", 0, |t| events.push(format!("-{t}"))));
        assert!(r.remove("room", 3, |t| events.push(format!("-{t}"))));
        assert!(r.shards("room").is_empty());
        assert!(!r.remove("room", 3, |t| events.push(format!("-{t}"))));
        assert_eq!(events, ["+room", "-room"]);
    }

    #[test]
    fn a_topic_is_live_once_confirmed_or_at_once_without_a_broker() {
        let t: Arc<str> = Arc::from("t");
        let r = Registry::new(true);
        r.add(&t, 2, |_| {});
        assert!(!r.is_live("t"));
        assert_eq!(r.confirm("t").iter().collect::<Vec<_>>(), vec![2]);
        assert!(r.is_live("t"));
        assert!(r.confirm("t").is_empty(), "told once");
        assert!(r.confirm("unknown").is_empty());
        let local = Registry::new(false);
        local.add(&t, 0, |_| {});
        assert!(local.is_live("t"));
    }

    #[test]
    fn shard_sets_span_words() {
        let mut s = ShardSet::default();
        for i in [0u16, 63, 64, 200] {
            s.insert(i);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 63, 64, 200]);
        s.remove(64);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 63, 200]);
    }
}
