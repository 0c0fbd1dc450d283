//! Per-shard topic tables. Each shard knows only its own subscribers; a publish reaches other
//! shards as one mailbox message per shard, never one per subscriber.
//!
//! Removal is O(1): a connection remembers, for each of its topics, its index in that topic's
//! subscriber list; `swap_remove` moves one other subscriber, whose index the caller fixes.

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

/// A subscriber: slab slot and generation of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sub {
    /// Slab slot.
    pub slot: u32,
    /// Generation of the connection in that slot.
    pub generation: u32,
}

/// One entry of a connection's membership list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The topic.
    pub topic: u32,
    /// This connection's index in the topic's subscriber list.
    pub index: u32,
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    subs: Vec<Sub>,
}

/// The shard's topics.
#[derive(Debug, Default)]
pub struct Topics {
    by_name: HashMap<Arc<str>, u32>,
    topics: Slab<Topic>,
    /// Topics this shard gained (`true`) or lost (`false`) since the last
    /// [`Topics::take_changes`]: what the process-wide registry hears.
    changes: Vec<(Arc<str>, bool)>,
}

/// A subscriber whose index changed because another left; update its membership entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Its slot.
    pub slot: u32,
    /// The topic.
    pub topic: u32,
    /// Its new index.
    pub index: u32,
}

/// A subscription refused by a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// The connection holds `max_subscriptions_per_connection` already.
    Connection,
    /// The shard holds `max_topics_per_shard` topics already (and this would be a new one).
    Shard,
}

/// Where `topic` is, or would go, in a membership list sorted by topic id.
fn search(membership: &[Membership], topic: u32) -> Result<usize, usize> {
    membership.binary_search_by_key(&topic, |m| m.topic)
}

impl Topics {
    /// Subscribes `sub` to `name`; `Ok(false)` when it already was. A connection's membership
    /// list is kept sorted by topic id, so the check is a binary search, and both the list and
    /// the shard's topics are bounded (`limits`: per connection, per shard).
    pub fn subscribe(
        &mut self,
        name: &str,
        sub: Sub,
        membership: &mut Vec<Membership>,
        limits: (usize, usize),
    ) -> Result<bool, Full> {
        let existing = self.by_name.get(name).copied();
        let at = match existing.map(|id| search(membership, id)) {
            Some(Ok(_)) => return Ok(false),
            Some(Err(at)) => Some(at),
            None => None,
        };
        if membership.len() >= limits.0 {
            return Err(Full::Connection);
        }
        let id = match existing {
            Some(id) => id,
            None if self.topics.len() >= limits.1 => return Err(Full::Shard),
            None => {
                let name: Arc<str> = Arc::from(name);
                let id = self.topics.insert(Topic {
                    name: name.clone(),
                    subs: Vec::new(),
                }) as u32;
                self.by_name.insert(name.clone(), id);
                self.changes.push((name, true));
                id
            }
        };
        let at = at.unwrap_or_else(|| search(membership, id).unwrap_or_else(|e| e));
        let subs = &mut self.topics[id as usize].subs;
        membership.insert(
            at,
            Membership {
                topic: id,
                index: subs.len() as u32,
            },
        );
        subs.push(sub);
        Ok(true)
    }

    /// Unsubscribes the owner of `membership` from `name`. Returns `None` when it was not
    /// subscribed, else the subscriber that moved (if any).
    pub fn unsubscribe(
        &mut self,
        name: &str,
        membership: &mut Vec<Membership>,
    ) -> Option<Option<Moved>> {
        let &id = self.by_name.get(name)?;
        let pos = search(membership, id).ok()?;
        let m = membership.remove(pos);
        Some(self.remove_at(m))
    }

    /// Removes every subscription in `membership` (on close). Calls `moved` for each subscriber
    /// whose index changed.
    pub fn remove_all(&mut self, membership: &mut Vec<Membership>, mut moved: impl FnMut(Moved)) {
        for m in membership.drain(..) {
            if let Some(mv) = self.remove_at(m) {
                moved(mv);
            }
        }
    }

    fn remove_at(&mut self, m: Membership) -> Option<Moved> {
        let topic = self.topics.get_mut(m.topic as usize)?;
        let index = m.index as usize;
        if index >= topic.subs.len() {
            return None;
        }
        topic.subs.swap_remove(index);
        let moved = topic.subs.get(index).map(|s| Moved {
            slot: s.slot,
            topic: m.topic,
            index: m.index,
        });
        if topic.subs.is_empty() {
            let topic = self.topics.remove(m.topic as usize);
            self.by_name.remove(&topic.name);
            self.changes.push((topic.name, false));
        }
        moved
    }

    /// Whether the owner of `membership` is subscribed to `name`.
    pub fn contains(&self, name: &str, membership: &[Membership]) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|id| search(membership, *id).is_ok())
    }

    /// The topics gained and lost since the last call, in order.
    pub fn take_changes(&mut self) -> std::vec::Drain<'_, (Arc<str>, bool)> {
        self.changes.drain(..)
    }

    /// This shard's subscribers of `name`.
    pub fn subscribers(&self, name: &str) -> &[Sub] {
        match self.by_name.get(name) {
            Some(&id) => &self.topics[id as usize].subs,
            None => &[],
        }
    }

    /// Whether there are none.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }
}

/// Applies a [`Moved`] to the moved subscriber's membership list.
pub fn fix_membership(membership: &mut [Membership], moved: Moved) {
    if let Ok(i) = search(membership, moved.topic) {
        membership[i].index = moved.index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMIT: (usize, usize) = (usize::MAX, usize::MAX);

    fn sub(slot: u32) -> Sub {
        Sub {
            slot,
            generation: 1,
        }
    }

    #[test]
    fn memberships_stay_sorted_and_bounded() {
        let mut t = Topics::default();
        let mut m = Vec::new();
        for i in (0..50).rev() {
            assert_eq!(
                t.subscribe(&format!("t{i}"), sub(0), &mut m, (50, 1000)),
                Ok(true)
            );
        }
        assert!(
            m.windows(2).all(|w| w[0].topic < w[1].topic),
            "sorted by topic id"
        );
        assert!(t.contains("t7", &m));
        assert_eq!(
            t.subscribe("t7", sub(0), &mut m, (50, 1000)),
            Ok(false),
            "already"
        );
        assert_eq!(
            t.subscribe("t50", sub(0), &mut m, (50, 1000)),
            Err(Full::Connection)
        );
        assert!(
            t.subscribers("t50").is_empty(),
            "no topic made for a refused one"
        );
        let mut other = Vec::new();
        assert_eq!(
            t.subscribe("new", sub(1), &mut other, (50, 50)),
            Err(Full::Shard)
        );
        assert_eq!(
            t.subscribe("t3", sub(1), &mut other, (50, 50)),
            Ok(true),
            "an existing topic"
        );
        assert!(t.unsubscribe("t7", &mut m).is_some());
        assert!(!t.contains("t7", &m));
        assert!(m.windows(2).all(|w| w[0].topic < w[1].topic));
    }

    #[test]
    fn subscribe_unsubscribe_and_index_fixups() {
        let mut t = Topics::default();
        let mut members: Vec<Vec<Membership>> = vec![Vec::new(); 4];
        for slot in 0..4u32 {
            assert_eq!(
                t.subscribe("news", sub(slot), &mut members[slot as usize], NO_LIMIT),
                Ok(true)
            );
        }
        assert_eq!(
            t.subscribe("news", sub(0), &mut members[0], NO_LIMIT),
            Ok(false)
        );
        assert_eq!(t.subscribers("news").len(), 4);
        // Slot 0 leaves; slot 3 moves into index 0.
        let moved = t.unsubscribe("news", &mut members[0]).unwrap().unwrap();
        assert_eq!(
            moved,
            Moved {
                slot: 3,
                topic: moved.topic,
                index: 0
            }
        );
        fix_membership(&mut members[3], moved);
        // Slot 3 leaves through its fixed index: the right entry goes.
        let mut m3 = std::mem::take(&mut members[3]);
        t.remove_all(&mut m3, |mv| {
            fix_membership(&mut members[mv.slot as usize], mv)
        });
        let slots: Vec<u32> = t.subscribers("news").iter().map(|s| s.slot).collect();
        assert_eq!(slots.len(), 2);
        assert!(slots.contains(&1) && slots.contains(&2));
        assert_eq!(
            t.unsubscribe("news", &mut members[0]),
            None,
            "not subscribed"
        );
        for slot in [1usize, 2] {
            let mut m = std::mem::take(&mut members[slot]);
            t.remove_all(&mut m, |mv| {
                fix_membership(&mut members[mv.slot as usize], mv)
            });
        }
        assert!(t.is_empty(), "an empty topic is dropped");
        assert!(t.subscribers("news").is_empty());
    }
}
