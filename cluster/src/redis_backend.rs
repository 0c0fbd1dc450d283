//! The client protocol's state in Redis, shared by every node.
//!
//! - **History**: per channel a stream `c10m:h:{channel}` (entry ids `0-OFFSET`, trimmed to
//!   the history size) and a hash `c10m:m:{channel}` with its epoch and top offset. A publish is
//!   one script: it takes the next offset, appends, and `PUBLISH`es the publication already
//!   encoded as a WebSocket frame, so offsets and delivery order agree and every node relays
//!   the same bytes (encoded once in the cluster). Both keys expire after the history TTL; when
//!   they are gone (expired, or Redis restarted without persistence) the next read or publish
//!   starts a new epoch, and a reader of the old one is told it cannot recover. A channel gets
//!   its epoch when first read, so a subscriber that saw it empty can recover from offset 0.
//! - **Presence**: per channel a sorted set `c10m:p:{channel}` of `client\tuser` scored by
//!   expiry. Each node refreshes its own entries every third of the TTL; a dead node's entries
//!   expire within the TTL and are dropped when read. A claim on a channel is one script on
//!   the same set: it adds the claimant only when no live entry is there, so of two nodes
//!   claiming at once one holds it. The claim lasts one TTL; the holder keeps it by joining
//!   the channel, which makes it one of the node's refreshed entries.
//! - **Users**: per user a sorted set `c10m:u:{user}` of connection ids scored by expiry,
//!   refreshed the same way. A message to a user is published to the user's channel when the
//!   set has a live member, else appended to the user's inbox `c10m:i:{user}` (bounded,
//!   expiring), which the user's next connection takes whole, in order.
//!
//! One thread per process runs the client (a current-thread runtime and an auto-reconnecting
//! connection); shards send it commands and get outcomes posted back. While Redis is
//! unreachable, commands are answered [`ErrorCode::Unavailable`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use c10m_engine::server::{ConnId, SharedFrame};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::backend::{Backend, Done, HistoryReply, Outcome, Present, channel_topic, user_topic};
use crate::protocol::{ErrorCode, StreamPos, message_push, push_str};
use crate::redis_broker::{CHANNEL_PREFIX, RedisBrokerError};

/// Limits and lifetimes of what Redis keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisLimits {
    /// Publications kept per channel.
    pub history_size: usize,
    /// How long a channel's history (and epoch) lives after its last publish.
    pub history_ttl: Duration,
    /// How long a presence or user entry lives unless its node refreshes it.
    pub presence_ttl: Duration,
    /// Messages kept per offline user.
    pub inbox_size: usize,
    /// How long they wait.
    pub inbox_ttl: Duration,
}

impl Default for RedisLimits {
    fn default() -> Self {
        RedisLimits {
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            presence_ttl: Duration::from_secs(30),
            inbox_size: 100,
            inbox_ttl: Duration::from_secs(86_400),
        }
    }
}

const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if ARGV[7] ~= '' then
  local seen = redis.call('GET', KEYS[3])
  if seen and epoch then
    return {tonumber(seen), epoch}
  end
end
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'top', 1)
if ARGV[7] ~= '' then
  redis.call('SET', KEYS[3], offset, 'PX', ARGV[7])
end
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '0-' .. offset, 'd', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local body = ARGV[6] .. offset .. ',"epoch":"' .. epoch .. '","data":' .. ARGV[2] .. '}'
local n = #body
local head
if n < 126 then
  head = string.char(129, n)
elseif n < 65536 then
  head = string.char(129, 126, math.floor(n / 256), n % 256)
else
  head = string.char(129, 127, 0, 0, 0, 0, math.floor(n / 16777216) % 256,
    math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end
redis.call('PUBLISH', ARGV[1], head .. body)
return {offset, epoch}
"#;

/// A channel's position and the publications after an offset, read at one instant. A channel
/// that has none gets its epoch here, not at its first publish: a subscriber that saw it empty
/// and comes back with `{offset: 0, epoch}` then recovers what was published meanwhile.
const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
local top = redis.call('HGET', KEYS[2], 'top') or '0'
return {epoch, top, redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])}
"#;

const SEND: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 0
"#;

/// A claim on a channel: its live holder (the least member, when a race left several), else
/// the claimant, added with its expiry. KEYS[1] the presence set; ARGV: now, expiry, member.
const CLAIM: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local held = redis.call('ZRANGE', KEYS[1], 0, -1)
if #held == 0 then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return ARGV[3]
end
table.sort(held)
return held[1]
"#;

const ONLINE: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local waiting = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return waiting
"#;

enum Command {
    Publish(Done, ConnId, u64, String, String, Option<String>),
    History(Done, ConnId, u64, String, Option<StreamPos>, usize, bool),
    Join(String, String),
    Leave(String, String),
    Presence(Done, ConnId, u64, String),
    /// A claim on a channel: who asks, the command's id, the channel, the claimant's member.
    Claim(Done, ConnId, u64, String, String),
    Online(Done, ConnId, String),
    Offline(String, String),
    Send(Done, ConnId, u64, String, String),
    /// To a node's inbox: its id, the payload.
    ToNode(String, String),
}

/// The Redis backend.
#[derive(Debug)]
pub struct RedisBackend {
    commands: UnboundedSender<Command>,
    connected: Arc<AtomicBool>,
    /// The Redis instances, for a node's inbox listener (a connection of its own: it blocks).
    clients: Vec<redis::Client>,
    /// The runtime's handle, for that listener.
    runtime: tokio::runtime::Handle,
}

impl RedisBackend {
    /// A backend on the Redis at `url`, or several separated by commas (channels and users
    /// spread over them as the broker spreads their topics); its thread connects (and
    /// reconnects) on its own.
    pub fn new(url: &str, limits: RedisLimits) -> Result<Arc<Self>, RedisBrokerError> {
        let mut clients = Vec::new();
        for u in crate::shard::urls(url) {
            clients.push(redis::Client::open(u).map_err(RedisBrokerError::Url)?);
        }
        let (tx, rx) = unbounded_channel();
        let connected = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RedisBrokerError::Start)?;
        let flag = connected.clone();
        let handle = runtime.handle().clone();
        let theirs = clients.clone();
        std::thread::Builder::new()
            .name("c10m-redis-state".into())
            .spawn(move || runtime.block_on(run(theirs, rx, limits, flag)))
            .map_err(RedisBrokerError::Start)?;
        Ok(Arc::new(RedisBackend {
            commands: tx,
            connected,
            clients,
            runtime: handle,
        }))
    }

    /// Whether Redis answered the last command.
    pub fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    fn issue(&self, command: Command) {
        let _ = self.commands.send(command);
    }
}

/// The node's own presence and user entries (by Redis instance), refreshed while it lives.
#[derive(Default)]
struct Owned {
    presence: HashSet<(usize, String, String)>,
    users: HashSet<(usize, String, String)>,
}

async fn run(
    clients: Vec<redis::Client>,
    mut rx: UnboundedReceiver<Command>,
    limits: RedisLimits,
    connected: Arc<AtomicBool>,
) {
    let mut cons = Vec::new();
    for client in clients {
        match connect(client, &mut rx).await {
            Some(c) => cons.push(c),
            None => return,
        }
    }
    serve(cons, rx, limits, connected).await;
}

/// Connects to one Redis, answering what comes meanwhile as unavailable; `None` once the
/// server is gone.
async fn connect(
    client: redis::Client,
    rx: &mut UnboundedReceiver<Command>,
) -> Option<ConnectionManager> {
    loop {
        match ConnectionManager::new(client.clone()).await {
            Ok(c) => return Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Redis for the client protocol's state");
                // Answer what comes meanwhile as unavailable.
                let wait = tokio::time::sleep(Duration::from_millis(500));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        c = rx.recv() => match c {
                            Some(c) => unavailable(c),
                            None => return None,
                        },
                    }
                }
            }
        }
    }
}

async fn serve(
    cons: Vec<ConnectionManager>,
    mut rx: UnboundedReceiver<Command>,
    limits: RedisLimits,
    connected: Arc<AtomicBool>,
) {
    connected.store(true, Relaxed);
    let n = cons.len();
    let on_channel = |channel: &str| crate::shard::redis_for(&channel_topic(channel), n);
    let on_user = |user: &str| crate::shard::redis_for(&user_topic(user), n);
    let owned = Arc::new(Mutex::new(Owned::default()));
    let publish = Arc::new(redis::Script::new(PUBLISH));
    let send = Arc::new(redis::Script::new(SEND));
    let read = Arc::new(redis::Script::new(READ));
    let online = Arc::new(redis::Script::new(ONLINE));
    let claim = Arc::new(redis::Script::new(CLAIM));
    // Refresh this node's entries every third of their lifetime.
    {
        let mut cons = cons.clone();
        let owned = owned.clone();
        let connected = connected.clone();
        tokio::spawn(async move {
            let every = limits.presence_ttl / 3;
            loop {
                tokio::time::sleep(every).await;
                let expiry = now_ms() + limits.presence_ttl.as_millis() as u64;
                let mut pipes: Vec<redis::Pipeline> = cons.iter().map(|_| redis::pipe()).collect();
                {
                    let o = lock(&owned);
                    for (i, channel, member) in &o.presence {
                        pipes[*i]
                            .zadd(presence_key(channel), member, expiry)
                            .ignore();
                    }
                    for (i, user, member) in &o.users {
                        pipes[*i].zadd(user_key(user), member, expiry).ignore();
                    }
                }
                let mut ok = true;
                for (pipe, con) in pipes.iter().zip(cons.iter_mut()) {
                    ok &= pipe.exec_async(con).await.is_ok();
                }
                connected.store(ok, Relaxed);
            }
        });
    }
    // This process, in the members it adds to users' sets (unique across nodes and restarts).
    let node = crate::memory::new_epoch();
    while let Some(command) = rx.recv().await {
        let i = match &command {
            Command::Publish(_, _, _, c, ..)
            | Command::History(_, _, _, c, ..)
            | Command::Join(c, _)
            | Command::Leave(c, _)
            | Command::Presence(_, _, _, c)
            | Command::Claim(_, _, _, c, _) => on_channel(c),
            Command::Online(_, _, u) | Command::Offline(u, _) | Command::Send(_, _, _, u, _) => {
                on_user(u)
            }
            Command::ToNode(node, _) => crate::shard::redis_for(&inbox_topic(node), n),
        };
        let mut con = cons[i].clone();
        let owned = owned.clone();
        let connected = connected.clone();
        let (publish, send, online) = (publish.clone(), send.clone(), online.clone());
        let (read, claim) = (read.clone(), claim.clone());
        let node = node.clone();
        // Each command runs as its own task; the connection keeps them in the order they were
        // issued, so a publisher's publications keep their order.
        tokio::spawn(async move {
            let ok = match command {
                Command::Publish(done, conn, id, channel, data, key) => {
                    let mut prefix = String::from("{\"type\":\"pub\",\"channel\":");
                    push_str(&mut prefix, &channel);
                    prefix.push_str(",\"offset\":");
                    let result: redis::RedisResult<(u64, String)> = publish
                        .key(history_key(&channel))
                        .key(meta_key(&channel))
                        .key(idempotency_key(&channel, key.as_deref().unwrap_or("")))
                        .arg(format!("{CHANNEL_PREFIX}{}", channel_topic(&channel)))
                        .arg(&data)
                        .arg(limits.history_size)
                        .arg(limits.history_ttl.as_secs().max(1))
                        // Used only if the channel has no epoch (new, expired, or Redis lost
                        // it): fresh every time, so a lost stream never gets its old epoch.
                        .arg(crate::memory::new_epoch())
                        .arg(&prefix)
                        .arg(if key.is_some() {
                            crate::idempotency::WINDOW_MS.to_string()
                        } else {
                            String::new()
                        })
                        .invoke_async(&mut con)
                        .await;
                    let ok = result.is_ok();
                    let result = result.map(|r| r.0).map_err(|_| ErrorCode::Unavailable);
                    done.post(conn, Outcome::Published { conn, id, result });
                    ok
                }
                Command::History(done, conn, id, channel, since, limit, subscribe) => {
                    let result = history(&mut con, &read, &channel, since, limit, limits).await;
                    let ok = result.is_ok();
                    let result = result.map_err(|_| ErrorCode::Unavailable);
                    done.post(
                        conn,
                        Outcome::History {
                            conn,
                            id,
                            channel,
                            subscribe,
                            result,
                        },
                    );
                    ok
                }
                Command::Join(channel, member) => {
                    let expiry = now_ms() + limits.presence_ttl.as_millis() as u64;
                    let key = presence_key(&channel);
                    // Owned before the write is answered: a leave issued meanwhile (its task
                    // runs after this one's first step) finds the entry and removes it, where
                    // adding it afterwards would bring it back, refreshed for good.
                    lock(&owned).presence.insert((i, channel, member.clone()));
                    let r: redis::RedisResult<()> = redis::cmd("ZADD")
                        .arg(key)
                        .arg(expiry)
                        .arg(&member)
                        .exec_async(&mut con)
                        .await;
                    r.is_ok()
                }
                Command::Leave(channel, client) => {
                    let member = {
                        let mut o = lock(&owned);
                        let found = o
                            .presence
                            .iter()
                            .find(|(_, c, m)| {
                                *c == channel && m.split('\t').next() == Some(&client)
                            })
                            .cloned();
                        if let Some(f) = &found {
                            o.presence.remove(f);
                        }
                        found.map(|f| f.2)
                    };
                    match member {
                        Some(m) => redis::cmd("ZREM")
                            .arg(presence_key(&channel))
                            .arg(m)
                            .exec_async(&mut con)
                            .await
                            .is_ok(),
                        None => true,
                    }
                }
                Command::Presence(done, conn, id, channel) => {
                    let key = presence_key(&channel);
                    let mut pipe = redis::pipe();
                    pipe.cmd("ZREMRANGEBYSCORE")
                        .arg(&key)
                        .arg("-inf")
                        .arg(now_ms())
                        .ignore();
                    pipe.cmd("ZRANGE").arg(&key).arg(0).arg(-1);
                    let r: redis::RedisResult<(Vec<String>,)> = pipe.query_async(&mut con).await;
                    let ok = r.is_ok();
                    let result = r
                        .map(|(members,)| {
                            let mut clients: Vec<Present> =
                                members.iter().filter_map(|m| present_of(m)).collect();
                            clients.sort();
                            clients
                        })
                        .map_err(|_| ErrorCode::Unavailable);
                    done.post(conn, Outcome::Presence { conn, id, result });
                    ok
                }
                Command::Claim(done, conn, id, channel, member) => {
                    let expiry = now_ms() + limits.presence_ttl.as_millis() as u64;
                    let r: redis::RedisResult<String> = claim
                        .key(presence_key(&channel))
                        .arg(now_ms())
                        .arg(expiry)
                        .arg(&member)
                        .invoke_async(&mut con)
                        .await;
                    let ok = r.is_ok();
                    // A won claim is not refreshed: it lasts one TTL unless its holder joins
                    // the channel, so a claim whose joiner went away expires.
                    let result = r
                        .ok()
                        .and_then(|held| present_of(&held))
                        .map(|holder| vec![holder])
                        .ok_or(ErrorCode::Unavailable);
                    done.post(conn, Outcome::Presence { conn, id, result });
                    ok
                }
                Command::Online(done, conn, user) => {
                    let member = format!("{:x}", conn.as_u64());
                    let node_member = format!("{node}-{member}");
                    let expiry = now_ms() + limits.presence_ttl.as_millis() as u64;
                    let r: redis::RedisResult<Vec<String>> = online
                        .key(user_key(&user))
                        .key(inbox_key(&user))
                        .arg(expiry)
                        .arg(&node_member)
                        .invoke_async(&mut con)
                        .await;
                    lock(&owned).users.insert((i, user, node_member));
                    match r {
                        Ok(messages) => {
                            if !messages.is_empty() {
                                done.post(conn, Outcome::Inbox { conn, messages });
                            }
                            true
                        }
                        Err(_) => false,
                    }
                }
                Command::Offline(user, conn_hex) => {
                    let node_member = format!("{node}-{conn_hex}");
                    lock(&owned)
                        .users
                        .remove(&(i, user.clone(), node_member.clone()));
                    redis::cmd("ZREM")
                        .arg(user_key(&user))
                        .arg(node_member)
                        .exec_async(&mut con)
                        .await
                        .is_ok()
                }
                Command::Send(done, conn, id, user, data) => {
                    let push = message_push(&data);
                    let frame = SharedFrame::text(&push);
                    let r: redis::RedisResult<u8> = send
                        .key(user_key(&user))
                        .key(inbox_key(&user))
                        .arg(now_ms())
                        .arg(format!("{CHANNEL_PREFIX}{}", user_topic(&user)))
                        .arg(frame.bytes().as_ref())
                        .arg(&push)
                        .arg(limits.inbox_size)
                        .arg(limits.inbox_ttl.as_millis() as u64)
                        .invoke_async(&mut con)
                        .await;
                    let ok = r.is_ok();
                    let result = r.map(|n| n == 1).map_err(|_| ErrorCode::Unavailable);
                    done.post(conn, Outcome::Sent { conn, id, result });
                    ok
                }
                Command::ToNode(node, payload) => {
                    let key = node_inbox_key(&node);
                    redis::pipe()
                        .rpush(&key, &payload)
                        .ignore()
                        .pexpire(&key, NODE_INBOX_TTL_MS as i64)
                        .ignore()
                        .exec_async(&mut con)
                        .await
                        .is_ok()
                }
            };
            connected.store(ok, Relaxed);
        });
    }
}

fn lock(owned: &Mutex<Owned>) -> std::sync::MutexGuard<'_, Owned> {
    owned.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Answers a command that cannot reach Redis.
fn unavailable(command: Command) {
    let e = Err(ErrorCode::Unavailable);
    match command {
        Command::Publish(done, conn, id, ..) => {
            done.post(
                conn,
                Outcome::Published {
                    conn,
                    id,
                    result: Err(ErrorCode::Unavailable),
                },
            );
        }
        Command::History(done, conn, id, channel, _, _, subscribe) => done.post(
            conn,
            Outcome::History {
                conn,
                id,
                channel,
                subscribe,
                result: Err(ErrorCode::Unavailable),
            },
        ),
        Command::Presence(done, conn, id, _) | Command::Claim(done, conn, id, ..) => {
            done.post(
                conn,
                Outcome::Presence {
                    conn,
                    id,
                    result: Err(ErrorCode::Unavailable),
                },
            );
        }
        Command::Send(done, conn, id, ..) => done.post(
            conn,
            Outcome::Sent {
                conn,
                id,
                result: e,
            },
        ),
        Command::Join(..)
        | Command::Leave(..)
        | Command::Online(..)
        | Command::Offline(..)
        | Command::ToNode(..) => {}
    }
}

/// How long a node's inbox lives after the last message to it: a dead node's inbox goes.
const NODE_INBOX_TTL_MS: u64 = 30_000;

/// The key of node `node`'s inbox (a list: senders push, the node pops).
fn node_inbox_key(node: &str) -> String {
    format!("c10m:n:{node}")
}

/// What places a node's inbox on one of several Redis instances.
fn inbox_topic(node: &str) -> String {
    format!("node {node}")
}

/// How long a blocking pop of a node's inbox waits in Redis, and how long the client waits
/// for its answer. The client's wait must be the longer: a pop the client gave up on still
/// takes its message off the list in Redis, and that message would be lost (redis-rs gives up
/// after half a second by default).
const INBOX_POP_SECS: u64 = 1;
const INBOX_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Pops node `node`'s inbox for as long as the process lives, posting each message to `done`
/// on shard 0 in order; reconnects (every half second) when Redis is lost.
async fn listen_inbox(client: redis::Client, done: Done, node: String) {
    let key = node_inbox_key(&node);
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(INBOX_ANSWER_WAIT));
    loop {
        let mut con = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Redis for this node's inbox");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            // A blocking pop, on a connection of its own; a second at most so that a lost
            // connection is noticed.
            let popped: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
                .arg(&key)
                .arg(INBOX_POP_SECS)
                .query_async(&mut con)
                .await;
            match popped {
                Ok(Some((_, payload))) => done.post_to(0, Outcome::Node { payload }),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "this node's inbox: Redis lost");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

async fn history(
    con: &mut ConnectionManager,
    read: &redis::Script,
    channel: &str,
    since: Option<StreamPos>,
    limit: usize,
    limits: RedisLimits,
) -> redis::RedisResult<HistoryReply> {
    let after = since.as_ref().map_or(0, |s| s.offset);
    type Entries = Vec<(String, Vec<(String, String)>)>;
    let (epoch, top, entries): (String, u64, Entries) = read
        .key(history_key(channel))
        .key(meta_key(channel))
        .arg(format!("0-{}", after + 1))
        .arg(limit.max(1))
        .arg(crate::memory::new_epoch())
        .arg(limits.history_ttl.as_secs().max(1))
        .invoke_async(con)
        .await?;
    let publications: Vec<(u64, String)> = entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let offset = id.strip_prefix("0-")?.parse().ok()?;
            let data = fields.into_iter().find(|(k, _)| k == "d")?.1;
            Some((offset, data))
        })
        .take(limit)
        .collect();
    let recovered = match &since {
        None => true,
        Some(pos) if pos.epoch != epoch || pos.offset > top => false,
        Some(pos) => match publications.first() {
            Some((first, _)) => *first == pos.offset + 1,
            // Nothing after it: recovered if nothing was published after it.
            None => pos.offset == top || limit == 0,
        },
    };
    Ok(HistoryReply {
        top: StreamPos { offset: top, epoch },
        publications,
        recovered,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn history_key(channel: &str) -> String {
    format!("c10m:h:{channel}")
}

fn meta_key(channel: &str) -> String {
    format!("c10m:m:{channel}")
}

fn idempotency_key(channel: &str, key: &str) -> String {
    // The key may hold ':', so its length comes first: no two (channel, key) pairs share one.
    format!("c10m:k:{}:{channel}:{key}", channel.len())
}

/// The client a presence member (`client\tuser`) stands for.
fn present_of(member: &str) -> Option<Present> {
    let (client, user) = member.split_once('\t')?;
    Some(Present {
        client: client.to_owned(),
        user: user.to_owned(),
    })
}

fn presence_key(channel: &str) -> String {
    format!("c10m:p:{channel}")
}

fn user_key(user: &str) -> String {
    format!("c10m:u:{user}")
}

fn inbox_key(user: &str) -> String {
    format!("c10m:i:{user}")
}

impl Backend for RedisBackend {
    fn publish(
        &self,
        done: &Done,
        conn: ConnId,
        id: u64,
        channel: &str,
        data: &str,
        key: Option<&str>,
    ) {
        self.issue(Command::Publish(
            done.clone(),
            conn,
            id,
            channel.into(),
            data.into(),
            key.map(Into::into),
        ));
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
        let c = Command::History(
            done.clone(),
            conn,
            id,
            channel.into(),
            since,
            limit,
            subscribe,
        );
        self.issue(c);
    }

    fn join(&self, channel: &str, who: &Present) {
        self.issue(Command::Join(
            channel.into(),
            format!("{}\t{}", who.client, who.user),
        ));
    }

    fn leave(&self, channel: &str, client: &str) {
        self.issue(Command::Leave(channel.into(), client.into()));
    }

    fn presence(&self, done: &Done, conn: ConnId, id: u64, channel: &str) {
        self.issue(Command::Presence(done.clone(), conn, id, channel.into()));
    }

    fn claim(&self, done: &Done, conn: ConnId, id: u64, channel: &str, who: &Present) {
        self.issue(Command::Claim(
            done.clone(),
            conn,
            id,
            channel.into(),
            format!("{}\t{}", who.client, who.user),
        ));
    }

    fn online(&self, done: &Done, conn: ConnId, user: &str) {
        self.issue(Command::Online(done.clone(), conn, user.into()));
    }

    fn offline(&self, conn: ConnId, user: &str) {
        self.issue(Command::Offline(
            user.into(),
            format!("{:x}", conn.as_u64()),
        ));
    }

    fn send(&self, done: &Done, conn: ConnId, id: u64, user: &str, data: &str) {
        self.issue(Command::Send(
            done.clone(),
            conn,
            id,
            user.into(),
            data.into(),
        ));
    }

    fn to_node(&self, node: &str, payload: &str) {
        self.issue(Command::ToNode(node.into(), payload.into()));
    }

    fn listen(&self, done: &Done, node: &str) {
        let i = crate::shard::redis_for(&inbox_topic(node), self.clients.len());
        let Some(client) = self.clients.get(i).cloned() else {
            return;
        };
        self.runtime
            .spawn(listen_inbox(client, done.clone(), node.to_owned()));
    }
}
