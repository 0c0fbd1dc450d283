//! Publishes made safe to retry: a publish may carry an `idempotency_key`, and another
//! publish to the same channel with the same key within [`WINDOW_MS`] publishes nothing and
//! gets the first one's offset. A client told "unavailable" (100) cannot know whether its
//! publish happened (a stalled Redis runs it once it resumes); retrying with the same key
//! makes that harmless.
//!
//! In memory, per channel: the keys seen, bounded in count ([`MAX_KEYS`], the oldest
//! forgotten first) and age. In Redis: a key `c10m:k:{channel}:{key}` holding the offset,
//! set in the publish script and expiring after the window.

use std::collections::{HashMap, VecDeque};

/// How long a key is remembered, ms (Centrifugo's default too).
pub const WINDOW_MS: u64 = 300_000;

/// Keys remembered per channel in memory at most.
pub const MAX_KEYS: usize = 10_000;

/// Longest key, bytes.
pub const MAX_KEY_LEN: usize = 128;

/// The keys of one channel's recent publishes.
#[derive(Debug, Default)]
pub struct Seen {
    offsets: HashMap<Box<str>, u64>,
    /// (time, key), oldest first.
    order: VecDeque<(u64, Box<str>)>,
}

impl Seen {
    /// The offset of the publish made with `key` within the window before `now_ms`.
    pub fn get(&mut self, key: &str, now_ms: u64) -> Option<u64> {
        self.expire(now_ms);
        self.offsets.get(key).copied()
    }

    /// Remembers that the publish made with `key` at `now_ms` got `offset`.
    pub fn insert(&mut self, key: &str, offset: u64, now_ms: u64) {
        self.expire(now_ms);
        if self.offsets.len() >= MAX_KEYS {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.offsets.remove(&oldest);
            }
        }
        let key: Box<str> = key.into();
        self.offsets.insert(key.clone(), offset);
        self.order.push_back((now_ms, key));
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.order.front() {
            if now_ms.saturating_sub(*at) < WINDOW_MS {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.offsets.remove(&key);
            }
        }
    }
}

/// Whether `key` may be an idempotency key: 1 to [`MAX_KEY_LEN`] bytes, no control
/// characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && !key.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_remembered_within_the_window_and_forgotten_after() {
        let mut seen = Seen::default();
        assert_eq!(seen.get("a", 0), None);
        seen.insert("a", 7, 1_000);
        assert_eq!(seen.get("a", 1_000 + WINDOW_MS - 1), Some(7));
        assert_eq!(seen.get("a", 1_000 + WINDOW_MS), None);
        assert!(seen.order.is_empty());
    }

    #[test]
    fn past_the_bound_the_oldest_key_goes_first() {
        let mut seen = Seen::default();
        for i in 0..MAX_KEYS as u64 + 1 {
            seen.insert(&i.to_string(), i, 0);
        }
        assert_eq!(seen.get("0", 0), None);
        assert_eq!(seen.get("1", 0), Some(1));
        assert_eq!(seen.get(&MAX_KEYS.to_string(), 0), Some(MAX_KEYS as u64));
    }

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(valid_key("retry-1"));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(MAX_KEY_LEN + 1)));
        assert!(!valid_key("a\nb"));
    }
}
