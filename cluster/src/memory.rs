//! The client protocol's state in this process's memory: the one-node case, which needs
//! nothing but the binary. Histories start a new epoch with every process (a restart loses
//! them, and recovering clients are told). Presence and users are exact (connections leave
//! when they close), inboxes bounded in count and age.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use c10m_engine::server::{ConnId, Handle, SharedFrame};

use crate::backend::{Backend, Done, Outcome, Present, channel_topic, user_topic};
use crate::history::{Bounds, Log};
use crate::idempotency::Seen;
use crate::protocol::{StreamPos, message_push, publication_push};

/// Limits on what the memory backend keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Each channel's history.
    pub history: Bounds,
    /// Messages kept per offline user.
    pub inbox_size: usize,
    /// How long one waits, ms.
    pub inbox_ttl_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            history: Bounds {
                size: 100,
                ttl_ms: 300_000,
            },
            inbox_size: 100,
            inbox_ttl_ms: 86_400_000,
        }
    }
}

#[derive(Default)]
struct State {
    logs: HashMap<String, Log>,
    presence: HashMap<String, BTreeMap<String, String>>,
    online: HashMap<String, usize>,
    inboxes: HashMap<String, VecDeque<(u64, String)>>,
    /// Idempotency keys of recent publishes, by channel.
    seen: HashMap<String, Seen>,
}

/// The in-memory backend.
pub struct Memory {
    handle: Handle,
    epoch: String,
    limits: Limits,
    clock: Instant,
    state: Mutex<State>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl Memory {
    /// A backend for the server behind `handle`, with a fresh epoch.
    pub fn new(handle: Handle, limits: Limits) -> Self {
        Memory {
            handle,
            epoch: new_epoch(),
            limits,
            clock: Instant::now(),
            state: Mutex::default(),
        }
    }

    fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new epoch: the process's start time and id, so two processes or two runs never share one.
pub fn new_epoch() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", nanos, std::process::id())
}

impl Backend for Memory {
    fn publish(
        &self,
        done: &Done,
        conn: ConnId,
        id: u64,
        channel: &str,
        data: &str,
        key: Option<&str>,
    ) {
        let now = self.now();
        let offset = 'publish: {
            let mut state = self.state();
            if let Some(key) = key {
                let seen = state.seen.entry(channel.to_owned()).or_default();
                if let Some(offset) = seen.get(key, now) {
                    break 'publish offset;
                }
            }
            let offset = state.logs.entry(channel.to_owned()).or_default().append(
                data,
                now,
                self.limits.history,
            );
            // Delivered under the lock: pushes leave in offset order whoever publishes.
            let push = publication_push(channel, offset, &self.epoch, data);
            self.handle
                .deliver(&channel_topic(channel), &SharedFrame::text(&push));
            if let Some(key) = key {
                state
                    .seen
                    .entry(channel.to_owned())
                    .or_default()
                    .insert(key, offset, now);
            }
            offset
        };
        done.post(
            conn,
            Outcome::Published {
                conn,
                id,
                result: Ok(offset),
            },
        );
    }

    fn history(
        &self,
        done: &Done,
        conn: ConnId,
        id: u64,
        channel: &str,
        since: Option<StreamPos>,
        limit: usize,
        subscribe: bool,
    ) {
        let now = self.now();
        let reply = {
            let mut state = self.state();
            let bounds = self.limits.history;
            match state.logs.get_mut(channel) {
                Some(log) => log.read(&self.epoch, since.as_ref(), limit, now, bounds),
                None => Log::default().read(&self.epoch, since.as_ref(), limit, now, bounds),
            }
        };
        done.post(
            conn,
            Outcome::History {
                conn,
                id,
                channel: channel.to_owned(),
                subscribe,
                result: Ok(reply),
            },
        );
    }

    fn join(&self, channel: &str, who: &Present) {
        self.state()
            .presence
            .entry(channel.to_owned())
            .or_default()
            .insert(who.client.clone(), who.user.clone());
    }

    fn leave(&self, channel: &str, client: &str) {
        let mut state = self.state();
        if let Some(p) = state.presence.get_mut(channel) {
            p.remove(client);
            if p.is_empty() {
                state.presence.remove(channel);
            }
        }
    }

    fn claim(&self, done: &Done, conn: ConnId, id: u64, channel: &str, who: &Present) {
        let holder = {
            let state = self.state();
            match state
                .presence
                .get(channel)
                .and_then(|p| p.first_key_value())
            {
                Some((client, user)) => Present {
                    client: client.clone(),
                    user: user.clone(),
                },
                None => who.clone(),
            }
        };
        done.post(
            conn,
            Outcome::Presence {
                conn,
                id,
                result: Ok(vec![holder]),
            },
        );
    }

    fn presence(&self, done: &Done, conn: ConnId, id: u64, channel: &str) {
        let clients = self
            .state()
            .presence
            .get(channel)
            .map(|p| {
                p.iter()
                    .map(|(client, user)| Present {
                        client: client.clone(),
                        user: user.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        done.post(
            conn,
            Outcome::Presence {
                conn,
                id,
                result: Ok(clients),
            },
        );
    }

    fn online(&self, done: &Done, conn: ConnId, user: &str) {
        let now = self.now();
        let waiting = {
            let mut state = self.state();
            *state.online.entry(user.to_owned()).or_default() += 1;
            state.inboxes.remove(user).unwrap_or_default()
        };
        let ttl = self.limits.inbox_ttl_ms;
        let messages: Vec<String> = waiting
            .into_iter()
            .filter(|(at, _)| now.saturating_sub(*at) <= ttl)
            .map(|(_, push)| push)
            .collect();
        if !messages.is_empty() {
            done.post(conn, Outcome::Inbox { conn, messages });
        }
    }

    fn offline(&self, _conn: ConnId, user: &str) {
        let mut state = self.state();
        if let Some(n) = state.online.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.online.remove(user);
            }
        }
    }

    fn send(&self, done: &Done, conn: ConnId, id: u64, user: &str, data: &str) {
        let push = message_push(data);
        let online = {
            let mut state = self.state();
            if state.online.contains_key(user) {
                self.handle
                    .deliver(&user_topic(user), &SharedFrame::text(&push));
                true
            } else {
                let now = self.now();
                let inbox = state.inboxes.entry(user.to_owned()).or_default();
                inbox.push_back((now, push));
                while inbox.len() > self.limits.inbox_size {
                    inbox.pop_front();
                }
                false
            }
        };
        done.post(
            conn,
            Outcome::Sent {
                conn,
                id,
                result: Ok(online),
            },
        );
    }
}
