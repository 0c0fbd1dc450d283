//! [`RedisBroker`]: the engine's broker seam on Redis pub/sub.
//!
//! One thread per process owns two Redis connections: a multiplexed one for `PUBLISH` and a
//! pub/sub one for `SUBSCRIBE`. Shards reach it through an unbounded channel (a send is a
//! queue push and, when the thread sleeps, one wake-up), so a shard never waits for Redis.
//!
//! - **Publishes** are taken from the channel as a batch, everything queued at that moment, and
//!   sent as one pipeline: under load one round trip carries many messages. Commands keep their
//!   order: a subscription change in the middle of a batch ends the batch.
//! - **Subscriptions** follow the engine's registry: a topic's first subscriber in the process
//!   makes the broker `SUBSCRIBE`, and once Redis confirms it the engine is told
//!   ([`Handle::confirm`]), so a subscriber hears `ok` only when it will receive what any node
//!   publishes from then on. The last unsubscriber makes it `UNSUBSCRIBE`.
//! - **Deliveries**: each message Redis sends is checked to be one whole WebSocket frame and
//!   handed to [`Handle::deliver`], one mailbox message per shard that has subscribers.
//! - **Redis lost**: the thread reconnects with backoff (100 ms doubling to 2 s), subscribes
//!   again to every topic the process needs, and reports itself unhealthy meanwhile. A message
//!   published while Redis is unreachable reaches this process's subscribers only (counted in
//!   [`BrokerStats::local_only`]); what other processes published meanwhile is lost to this
//!   one (history and recovery are the answer to that).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use c10m_engine::server::{Broker, Handle, SharedFrame};
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Channel names in Redis: this prefix, then the topic.
pub const CHANNEL_PREFIX: &str = "c10m:";
/// Publishes sent in one pipeline at most.
const BATCH_MAX: usize = 1024;
/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why a broker could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum RedisBrokerError {
    /// The address is not a Redis URL (`redis://HOST:PORT[/DB]`).
    Url(redis::RedisError),
    /// The broker's thread or runtime could not start.
    Start(std::io::Error),
}

impl std::fmt::Display for RedisBrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisBrokerError::Url(e) => write!(f, "not a Redis URL (redis://HOST:PORT[/DB]): {e}"),
            RedisBrokerError::Start(e) => write!(f, "cannot start the Redis broker thread: {e}"),
        }
    }
}

impl std::error::Error for RedisBrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedisBrokerError::Url(e) => Some(e),
            RedisBrokerError::Start(e) => Some(e),
        }
    }
}

/// Counters of a broker, readable from any thread.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Redis instances connected with their subscriptions restored.
    pub connected: AtomicU64,
    /// Redis instances the broker spreads topics over.
    pub instances: AtomicU64,
    /// Messages published to Redis.
    pub published: AtomicU64,
    /// Messages Redis delivered and the broker handed to local fan-out.
    pub delivered: AtomicU64,
    /// Messages published while Redis was unreachable: delivered in this process only.
    pub local_only: AtomicU64,
    /// Messages whose pipeline failed when Redis went away (lost).
    pub dropped: AtomicU64,
    /// Messages from Redis that were not a whole WebSocket frame (dropped).
    pub malformed: AtomicU64,
    /// Connections to Redis made (the first one and every reconnection).
    pub connects: AtomicU64,
}

enum Command {
    Attach(Handle),
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
    Publish(Arc<str>, Bytes),
}

/// Topics across processes through Redis pub/sub.
#[derive(Debug)]
pub struct RedisBroker {
    /// One queue per Redis instance.
    commands: Vec<UnboundedSender<Command>>,
    stats: Arc<BrokerStats>,
}

impl RedisBroker {
    /// A broker for the Redis at `url` (`redis://HOST:PORT[/DB]`), or several separated by
    /// commas (topics spread over them, [`crate::shard::redis_for`]). Its thread starts at
    /// once and connects in the background: the server starts even when Redis is down, and
    /// serves local traffic until Redis is back.
    pub fn new(url: &str) -> Result<Arc<Self>, RedisBrokerError> {
        let mut clients = Vec::new();
        for u in crate::shard::urls(url) {
            clients.push(redis::Client::open(u).map_err(RedisBrokerError::Url)?);
        }
        if clients.is_empty() {
            let none = redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no URL"));
            return Err(RedisBrokerError::Url(none));
        }
        let stats = Arc::new(BrokerStats::default());
        stats.instances.store(clients.len() as u64, Relaxed);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RedisBrokerError::Start)?;
        let mut commands = Vec::new();
        let mut loops = Vec::new();
        for client in clients {
            let (tx, rx) = unbounded_channel();
            commands.push(tx);
            loops.push(run(client, rx, stats.clone()));
        }
        std::thread::Builder::new()
            .name("c10m-redis".into())
            .spawn(move || runtime.block_on(futures_util::future::join_all(loops)))
            .map_err(RedisBrokerError::Start)?;
        Ok(Arc::new(RedisBroker { commands, stats }))
    }

    /// The broker's counters.
    pub fn stats(&self) -> &Arc<BrokerStats> {
        &self.stats
    }

    /// Whether every Redis is reachable and every needed subscription is in place.
    pub fn healthy(&self) -> bool {
        self.stats.connected.load(Relaxed) == self.commands.len() as u64
    }

    /// Queues `command` for the Redis that carries `topic`.
    fn send(&self, topic: &str, command: Command) {
        let i = crate::shard::redis_for(topic, self.commands.len());
        // The thread lives as long as the process: a send can only fail once it is gone.
        let _ = self.commands[i].send(command);
    }
}

impl Broker for RedisBroker {
    fn attach(&self, handle: Handle) {
        for c in &self.commands {
            let _ = c.send(Command::Attach(handle.clone()));
        }
    }

    fn subscribed(&self, topic: &str) {
        self.send(topic, Command::Subscribe(Arc::from(topic)));
    }

    fn unsubscribed(&self, topic: &str) {
        self.send(topic, Command::Unsubscribe(Arc::from(topic)));
    }

    fn publish(&self, topic: &str, frame: &SharedFrame) {
        self.send(
            topic,
            Command::Publish(Arc::from(topic), frame.bytes().clone()),
        );
    }

    fn healthy(&self) -> bool {
        RedisBroker::healthy(self)
    }

    fn metrics(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP c10m_broker_{name} {help}\n# TYPE c10m_broker_{name} {kind}\nc10m_broker_{name} {value}\n"
            ));
        };
        metric(
            "connected",
            "gauge",
            "Redis instances reachable with their subscriptions in place.",
            s.connected.load(Relaxed),
        );
        metric(
            "published_total",
            "counter",
            "Messages published to Redis.",
            s.published.load(Relaxed),
        );
        metric(
            "delivered_total",
            "counter",
            "Messages from Redis handed to local fan-out.",
            s.delivered.load(Relaxed),
        );
        metric(
            "local_only_total",
            "counter",
            "Messages published while Redis was unreachable, delivered in this process only.",
            s.local_only.load(Relaxed),
        );
        metric(
            "dropped_total",
            "counter",
            "Messages whose pipeline failed when Redis went away.",
            s.dropped.load(Relaxed),
        );
        metric(
            "malformed_total",
            "counter",
            "Messages from Redis that were not a whole WebSocket frame.",
            s.malformed.load(Relaxed),
        );
        metric(
            "connects_total",
            "counter",
            "Connections to Redis made.",
            s.connects.load(Relaxed),
        );
        out
    }
}

fn channel(topic: &str) -> String {
    format!("{CHANNEL_PREFIX}{topic}")
}

/// The broker thread: wait for the server's handle, then serve connection after connection.
async fn run(client: redis::Client, mut rx: UnboundedReceiver<Command>, stats: Arc<BrokerStats>) {
    let handle = loop {
        match rx.recv().await {
            Some(Command::Attach(h)) => break h,
            Some(_) => continue,
            None => return,
        }
    };
    let mut topics: HashSet<Arc<str>> = HashSet::new();
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect(&client, &topics, &handle).await {
            Ok((publisher, sink, stream)) => {
                stats.connects.fetch_add(1, Relaxed);
                stats.connected.fetch_add(1, Relaxed);
                tracing::info!(topics = topics.len(), "connected to Redis");
                backoff = BACKOFF_MIN;
                let mut session = Session {
                    publisher,
                    sink,
                    topics: &mut topics,
                    handle: &handle,
                    stats: &stats,
                };
                let ended = session.serve(&mut rx, stream).await;
                stats.connected.fetch_sub(1, Relaxed);
                match ended {
                    Ended::Closed => return,
                    Ended::Lost(e) => tracing::warn!(error = %e, "lost Redis; reconnecting"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "cannot reach Redis")
            }
        }
        // Meanwhile subscriptions change and publishes are lost.
        let deadline = tokio::time::Instant::now() + backoff;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => break,
                Ok(None) => return,
                Ok(Some(command)) => match command {
                    Command::Subscribe(t) => {
                        topics.insert(t);
                    }
                    Command::Unsubscribe(t) => {
                        topics.remove(&t);
                    }
                    Command::Publish(t, bytes) => {
                        if let Some(frame) = SharedFrame::from_encoded(bytes) {
                            handle.deliver(&t, &frame);
                        }
                        stats.local_only.fetch_add(1, Relaxed);
                    }
                    Command::Attach(_) => {}
                },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Opens both connections and subscribes to every topic the process needs, confirming each.
async fn connect(
    client: &redis::Client,
    topics: &HashSet<Arc<str>>,
    handle: &Handle,
) -> redis::RedisResult<(MultiplexedConnection, PubSubSink, PubSubStream)> {
    let publisher = client.get_multiplexed_async_connection().await?;
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    if !topics.is_empty() {
        let channels: Vec<String> = topics.iter().map(|t| channel(t)).collect();
        sink.subscribe(&channels).await?;
    }
    for t in topics {
        handle.confirm(t);
    }
    Ok((publisher, sink, stream))
}

enum Ended {
    /// The server is gone (the channel closed).
    Closed,
    /// Redis was lost.
    Lost(redis::RedisError),
}

struct Session<'a> {
    publisher: MultiplexedConnection,
    sink: PubSubSink,
    topics: &'a mut HashSet<Arc<str>>,
    handle: &'a Handle,
    stats: &'a BrokerStats,
}

impl Session<'_> {
    async fn serve(
        &mut self,
        rx: &mut UnboundedReceiver<Command>,
        mut stream: PubSubStream,
    ) -> Ended {
        let mut pending: Option<Command> = None;
        loop {
            let command = match pending.take() {
                Some(c) => c,
                None => {
                    tokio::select! {
                        command = rx.recv() => match command {
                            Some(c) => c,
                            None => return Ended::Closed,
                        },
                        message = stream.next() => {
                            match message {
                                Some(m) => self.deliver(&m),
                                None => return Ended::Lost(lost("the subscription connection closed")),
                            }
                            continue;
                        }
                    }
                }
            };
            let result = match command {
                Command::Subscribe(t) => self.subscribe(t).await,
                Command::Unsubscribe(t) => {
                    self.topics.remove(&t);
                    self.sink.unsubscribe(channel(&t)).await
                }
                Command::Publish(t, bytes) => {
                    let (result, next) = self.publish_batch(rx, t, bytes).await;
                    pending = next;
                    result
                }
                Command::Attach(_) => Ok(()),
            };
            if let Err(e) = result {
                return Ended::Lost(e);
            }
        }
    }

    async fn subscribe(&mut self, topic: Arc<str>) -> redis::RedisResult<()> {
        // Recorded before Redis answers: a SUBSCRIBE lost with its connection is made again
        // (and confirmed) at the reconnect, instead of leaving its subscribers waiting.
        self.topics.insert(topic.clone());
        self.sink.subscribe(channel(&topic)).await?;
        self.handle.confirm(&topic);
        Ok(())
    }

    /// Publishes `first` and every publish queued behind it (up to [`BATCH_MAX`]) in one
    /// pipeline. Returns the command that ended the batch, if it was not a publish.
    async fn publish_batch(
        &mut self,
        rx: &mut UnboundedReceiver<Command>,
        topic: Arc<str>,
        bytes: Bytes,
    ) -> (redis::RedisResult<()>, Option<Command>) {
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH")
            .arg(channel(&topic))
            .arg(bytes.as_ref())
            .ignore();
        let mut count = 1u64;
        let mut next = None;
        while (count as usize) < BATCH_MAX {
            match rx.try_recv() {
                Ok(Command::Publish(t, b)) => {
                    pipe.cmd("PUBLISH")
                        .arg(channel(&t))
                        .arg(b.as_ref())
                        .ignore();
                    count += 1;
                }
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let result = pipe.exec_async(&mut self.publisher).await;
        match &result {
            Ok(()) => self.stats.published.fetch_add(count, Relaxed),
            Err(_) => self.stats.dropped.fetch_add(count, Relaxed),
        };
        (result, next)
    }

    fn deliver(&self, message: &redis::Msg) {
        let Some(topic) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
            return;
        };
        match SharedFrame::from_encoded(Bytes::copy_from_slice(message.get_payload_bytes())) {
            Some(frame) => {
                self.handle.deliver(topic, &frame);
                self.stats.delivered.fetch_add(1, Relaxed);
            }
            None => {
                self.stats.malformed.fetch_add(1, Relaxed);
            }
        }
    }
}

fn lost(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, what))
}
