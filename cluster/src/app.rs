//! The client protocol's application (`/connection/v1`): tokens checked at upgrade, channels
//! with history and recovery, presence, publishing, messages to users with offline inboxes,
//! token refresh, and server pings. docs/PROTOCOL.md is the reference.
//!
//! Each connection's [`Session`] is its engine-owned state. Live publications reach
//! subscribers through the engine's topics, encoded once per process; everything that needs
//! the backend answers through `on_post` ([`Outcome`]).

use std::any::Any;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, OnceLock};

use c10m_engine::proto::handshake::Request;
use c10m_engine::proto::{CloseCode, Message};
use c10m_engine::server::{
    Accept, App, Closed, ConnId, Ctx, Handle, SharedFrame, Subscribed, TimerId, Upgrade,
    UpgradeRequest,
};

use crate::backend::{Backend, Done, HistoryReply, Outcome, Present, channel_topic, user_topic};
use crate::protocol::{
    self, Command, ErrorCode, StreamPos, close, error_reply, push_publication, push_str,
    result_reply, valid_name,
};
use crate::token::{Claims, Verifier, now_secs};

/// The client protocol's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Channels one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Largest `data` in a publish or send, bytes of JSON.
    pub max_data: usize,
    /// Publications a subscribe may recover, and a history read may return.
    pub max_history: usize,
    /// Interval of the server's `ping` pushes, ms (clients reply `pong`; a client silent past
    /// the engine's idle timeout is closed).
    pub ping_interval_ms: u64,
    /// Malformed commands a connection may send before it is closed with 3501.
    pub max_errors: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_subscriptions: 256,
            max_data: 64 << 10,
            max_history: 100,
            ping_interval_ms: 25_000,
            max_errors: 100,
        }
    }
}

/// Everything the shards' apps share: settings, the token verifier, the backend (made once the
/// server runs, from its handle), and this process's id (part of every client id).
pub struct Service {
    settings: Settings,
    verifier: Option<Arc<Verifier>>,
    make_backend: Box<dyn Fn(Handle) -> Arc<dyn Backend> + Send + Sync>,
    backend: OnceLock<Arc<dyn Backend>>,
    node: String,
    tokens: OnceLock<Sender<(ConnId, String, Done)>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("settings", &self.settings)
            .field("tokens", &self.verifier.is_some())
            .field("node", &self.node)
            .finish()
    }
}

impl Service {
    /// A service with `settings`, tokens checked by `verifier` (`None`: anonymous
    /// connections, no user), and its backend made by `make_backend` once the server runs.
    pub fn new(
        settings: Settings,
        verifier: Option<Verifier>,
        make_backend: impl Fn(Handle) -> Arc<dyn Backend> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Service {
            settings,
            verifier: verifier.map(Arc::new),
            make_backend: Box::new(make_backend),
            backend: OnceLock::new(),
            node: crate::memory::new_epoch(),
            tokens: OnceLock::new(),
        })
    }

    /// The app factory for [`Routes::route`](c10m_engine::server::Routes::route).
    pub fn app(self: &Arc<Self>) -> impl Fn(u16) -> Box<dyn App> + Send + Sync + 'static {
        let service = self.clone();
        move |_| {
            Box::new(ClientApp {
                service: service.clone(),
                done: None,
            })
        }
    }

    fn backend(&self, handle: &Handle) -> &Arc<dyn Backend> {
        self.backend
            .get_or_init(|| (self.make_backend)(handle.clone()))
    }

    /// The thread that checks tokens at upgrade (started with the first one), so a slow
    /// signature check (RS256) never holds a shard.
    fn tokens(&self) -> Option<&Sender<(ConnId, String, Done)>> {
        let verifier = self.verifier.clone()?;
        Some(self.tokens.get_or_init(|| {
            let (tx, rx) = channel::<(ConnId, String, Done)>();
            let spawned = std::thread::Builder::new()
                .name("c10m-tokens".into())
                .spawn(move || {
                    while let Ok((conn, token, done)) = rx.recv() {
                        let result = verifier.verify(&token).map_err(|e| e.status());
                        done.post(conn, Outcome::Verified { conn, result });
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the token thread: upgrades will time out");
            }
            tx
        }))
    }
}

/// A connection's state, owned by the engine.
#[derive(Debug, Default)]
struct Session {
    user: String,
    client: String,
    /// Token expiry (seconds since the epoch); 0: none.
    expires: u64,
    expiry_timer: Option<TimerId>,
    /// Channels subscribed to (bounded by `max_subscriptions`, so a scan is cheap).
    subs: Vec<String>,
    /// Subscribes waiting for the broker: (channel, command id, recovery position).
    waiting: Vec<(String, u64, Option<StreamPos>)>,
    errors: u32,
}

/// Timer token of the shard's ping; connections' expiry timers use their id.
const PING: u64 = u64::MAX;

/// The app on one shard.
pub struct ClientApp {
    service: Arc<Service>,
    done: Option<Done>,
}

impl std::fmt::Debug for ClientApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientApp").finish_non_exhaustive()
    }
}

fn send(ctx: &mut Ctx<'_>, id: ConnId, text: &str) {
    let _ = ctx.send_text(id, text);
}

impl ClientApp {
    fn done(&mut self, ctx: &Ctx<'_>) -> Done {
        self.done
            .get_or_insert_with(|| Done {
                handle: ctx.handle(),
                app: ctx.app_id(),
            })
            .clone()
    }

    fn backend(&self, ctx: &Ctx<'_>) -> Arc<dyn Backend> {
        self.service.backend(&ctx.handle()).clone()
    }

    fn fail(&mut self, ctx: &mut Ctx<'_>, id: ConnId, cmd_id: u64, code: ErrorCode) {
        send(ctx, id, &error_reply(cmd_id, code));
        let max = self.service.settings.max_errors;
        if let Some(s) = ctx.state::<Session>(id) {
            s.errors += 1;
            if s.errors > max {
                let _ = ctx.close(id, CloseCode(close::BAD_REQUESTS), "too many bad requests");
            }
        }
    }

    /// Opens the session: its expiry timer, its user's topic and inbox, the `connected` push.
    fn start_session(&mut self, ctx: &mut Ctx<'_>, id: ConnId, claims: Option<Claims>) {
        let (user, expires) = claims.map_or((String::new(), 0), |c| (c.user, c.expires));
        let client = format!("{}-{:x}", self.service.node, id.as_u64());
        let expiry_timer = (expires > 0).then(|| {
            let after = expires.saturating_sub(now_secs()).saturating_mul(1000);
            ctx.set_timer(after, id.as_u64())
        });
        let mut push = String::from("{\"type\":\"connected\",\"version\":");
        push.push_str(&protocol::VERSION.to_string());
        push.push_str(",\"client\":");
        push_str(&mut push, &client);
        push.push_str(",\"user\":");
        push_str(&mut push, &user);
        push.push_str(&format!(
            ",\"expires\":{expires},\"ping_ms\":{}}}",
            self.service.settings.ping_interval_ms
        ));
        let _ = ctx.set_state(
            id,
            Session {
                user: user.clone(),
                client,
                expires,
                expiry_timer,
                ..Session::default()
            },
        );
        send(ctx, id, &push);
        if !user.is_empty() {
            // Online (and the inbox taken) once messages to the user reach this connection:
            // at once, or when the broker confirms the user's topic.
            if matches!(
                ctx.subscribe(id, &user_topic(&user)),
                Ok(Subscribed::Live | Subscribed::Already)
            ) {
                let done = self.done(ctx);
                self.backend(ctx).online(&done, id, &user);
            }
        }
    }

    fn on_command(&mut self, ctx: &mut Ctx<'_>, id: ConnId, cmd: Command<'_>) {
        let settings = self.service.settings.clone();
        let n = cmd.id;
        let channel = cmd.channel.as_deref();
        let need_channel = || match channel {
            None => Err(ErrorCode::MissingField),
            Some(c) if !valid_name(c) => Err(ErrorCode::BadName),
            Some(c) => Ok(c.to_owned()),
        };
        match cmd.method {
            "pong" => {}
            "subscribe" => {
                let channel = match need_channel() {
                    Ok(c) => c,
                    Err(e) => return self.fail(ctx, id, n, e),
                };
                let Some(s) = ctx.state::<Session>(id) else {
                    return;
                };
                if s.subs.contains(&channel) {
                    return self.fail(ctx, id, n, ErrorCode::AlreadySubscribed);
                }
                if s.subs.len() >= settings.max_subscriptions {
                    return self.fail(ctx, id, n, ErrorCode::TooManySubscriptions);
                }
                s.subs.push(channel.clone());
                let who = Present {
                    client: s.client.clone(),
                    user: s.user.clone(),
                };
                self.backend(ctx).join(&channel, &who);
                match ctx.subscribe(id, &channel_topic(&channel)) {
                    Ok(Subscribed::Pending) => {
                        if let Some(s) = ctx.state::<Session>(id) {
                            s.waiting.push((channel, n, cmd.since));
                        }
                    }
                    Ok(_) => self.read_for_subscribe(ctx, id, n, &channel, cmd.since),
                    Err(_) => {
                        // The engine's limits (per connection, per shard) refused it.
                        let client = ctx.state::<Session>(id).map(|s| {
                            s.subs.retain(|c| *c != channel);
                            s.client.clone()
                        });
                        if let Some(client) = client {
                            self.backend(ctx).leave(&channel, &client);
                        }
                        self.fail(ctx, id, n, ErrorCode::TooManySubscriptions);
                    }
                }
            }
            "unsubscribe" => {
                let channel = match need_channel() {
                    Ok(c) => c,
                    Err(e) => return self.fail(ctx, id, n, e),
                };
                let Some(s) = ctx.state::<Session>(id) else {
                    return;
                };
                let Some(i) = s.subs.iter().position(|c| *c == channel) else {
                    return self.fail(ctx, id, n, ErrorCode::NotSubscribed);
                };
                s.subs.swap_remove(i);
                // A subscribe still waiting for the broker is answered too, before this.
                let cancelled = s.waiting.iter().find(|w| w.0 == channel).map(|w| w.1);
                s.waiting.retain(|w| w.0 != channel);
                let client = s.client.clone();
                let _ = ctx.unsubscribe(id, &channel_topic(&channel));
                self.backend(ctx).leave(&channel, &client);
                if let Some(sub) = cancelled {
                    // Not a client error: it does not count against the budget.
                    send(ctx, id, &error_reply(sub, ErrorCode::Unsubscribed));
                }
                send(ctx, id, &result_reply(n, "{}"));
            }
            "publish" => {
                let channel = match need_channel() {
                    Ok(c) => c,
                    Err(e) => return self.fail(ctx, id, n, e),
                };
                let Some(data) = cmd.data else {
                    return self.fail(ctx, id, n, ErrorCode::MissingField);
                };
                if data.get().len() > settings.max_data {
                    return self.fail(ctx, id, n, ErrorCode::TooLarge);
                }
                let key = cmd.idempotency_key.as_deref();
                if key.is_some_and(|k| !crate::idempotency::valid_key(k)) {
                    return self.fail(ctx, id, n, ErrorCode::BadRequest);
                }
                let done = self.done(ctx);
                self.backend(ctx)
                    .publish(&done, id, n, &channel, data.get(), key);
            }
            "history" => {
                let channel = match need_channel() {
                    Ok(c) => c,
                    Err(e) => return self.fail(ctx, id, n, e),
                };
                let limit = cmd
                    .limit
                    .unwrap_or(settings.max_history)
                    .min(settings.max_history);
                let done = self.done(ctx);
                self.backend(ctx)
                    .history(&done, id, n, &channel, cmd.since, limit, false);
            }
            "presence" => {
                let channel = match need_channel() {
                    Ok(c) => c,
                    Err(e) => return self.fail(ctx, id, n, e),
                };
                let done = self.done(ctx);
                self.backend(ctx).presence(&done, id, n, &channel);
            }
            "send" => {
                let user = match cmd.user.as_deref() {
                    None => return self.fail(ctx, id, n, ErrorCode::MissingField),
                    Some(u) if !valid_name(u) => return self.fail(ctx, id, n, ErrorCode::BadName),
                    Some(u) => u.to_owned(),
                };
                let Some(data) = cmd.data else {
                    return self.fail(ctx, id, n, ErrorCode::MissingField);
                };
                if data.get().len() > settings.max_data {
                    return self.fail(ctx, id, n, ErrorCode::TooLarge);
                }
                let done = self.done(ctx);
                self.backend(ctx).send(&done, id, n, &user, data.get());
            }
            "refresh" => self.refresh(ctx, id, n, cmd.token.as_deref()),
            _ => self.fail(ctx, id, n, ErrorCode::UnknownMethod),
        }
    }

    /// The subscription is live: read what the client missed (or just the stream's position)
    /// to answer its subscribe.
    fn read_for_subscribe(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        n: u64,
        channel: &str,
        since: Option<StreamPos>,
    ) {
        // Without a position there is nothing to recover: only the position is read.
        let limit = if since.is_some() {
            self.service.settings.max_history
        } else {
            0
        };
        let done = self.done(ctx);
        self.backend(ctx)
            .history(&done, id, n, channel, since, limit, true);
    }

    fn refresh(&mut self, ctx: &mut Ctx<'_>, id: ConnId, n: u64, token: Option<&str>) {
        let Some(verifier) = self.service.verifier.clone() else {
            return self.fail(ctx, id, n, ErrorCode::BadToken);
        };
        let Some(token) = token else {
            return self.fail(ctx, id, n, ErrorCode::MissingField);
        };
        let claims = match verifier.verify(token) {
            Ok(c) => c,
            Err(_) => return self.fail(ctx, id, n, ErrorCode::BadToken),
        };
        let Some(s) = ctx.state::<Session>(id) else {
            return;
        };
        if s.user != claims.user {
            return self.fail(ctx, id, n, ErrorCode::BadToken);
        }
        s.expires = claims.expires;
        let old = s.expiry_timer.take();
        if let Some(t) = old {
            ctx.cancel_timer(t);
        }
        let after = claims
            .expires
            .saturating_sub(now_secs())
            .saturating_mul(1000);
        let timer = ctx.set_timer(after, id.as_u64());
        if let Some(s) = ctx.state::<Session>(id) {
            s.expiry_timer = Some(timer);
        }
        send(
            ctx,
            id,
            &result_reply(n, &format!("{{\"expires\":{}}}", claims.expires)),
        );
    }

    fn on_outcome(&mut self, ctx: &mut Ctx<'_>, outcome: Outcome) {
        match outcome {
            Outcome::Verified { conn, result } => match result {
                Ok(claims) => {
                    // The claims go with the connection: on_open starts its session from them.
                    let _ = ctx.set_state(conn, Pending(claims));
                    let _ = ctx.accept_upgrade(conn, Accept::default());
                }
                Err(status) => {
                    let _ = ctx.reject_upgrade(conn, status);
                }
            },
            Outcome::Published { conn, id, result } => match result {
                Ok(offset) => send(
                    ctx,
                    conn,
                    &result_reply(id, &format!("{{\"offset\":{offset}}}")),
                ),
                Err(e) => send(ctx, conn, &error_reply(id, e)),
            },
            Outcome::History {
                conn,
                id,
                channel,
                subscribe,
                result,
            } => {
                if subscribe
                    && !ctx
                        .state::<Session>(conn)
                        .is_some_and(|s| s.subs.contains(&channel))
                {
                    // Unsubscribed meanwhile: the subscribe still gets its answer.
                    return send(ctx, conn, &error_reply(id, ErrorCode::Unsubscribed));
                }
                match result {
                    Ok(reply) => send(
                        ctx,
                        conn,
                        &result_reply(id, &history_json(&reply, subscribe)),
                    ),
                    Err(e) => send(ctx, conn, &error_reply(id, e)),
                }
            }
            Outcome::Presence { conn, id, result } => match result {
                Ok(clients) => {
                    let mut out = String::from("{\"clients\":[");
                    for (i, p) in clients.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str("{\"client\":");
                        push_str(&mut out, &p.client);
                        out.push_str(",\"user\":");
                        push_str(&mut out, &p.user);
                        out.push('}');
                    }
                    out.push_str("]}");
                    send(ctx, conn, &result_reply(id, &out));
                }
                Err(e) => send(ctx, conn, &error_reply(id, e)),
            },
            Outcome::Sent { conn, id, result } => match result {
                Ok(online) => send(
                    ctx,
                    conn,
                    &result_reply(id, &format!("{{\"online\":{online}}}")),
                ),
                Err(e) => send(ctx, conn, &error_reply(id, e)),
            },
            Outcome::Inbox { conn, messages } => {
                for m in messages {
                    send(ctx, conn, &m);
                }
            }
            // The client protocol sends nothing to other nodes.
            Outcome::Node { .. } => {}
        }
    }
}

/// A token's claims between its check and the connection's open.
#[derive(Debug)]
struct Pending(Claims);

fn history_json(reply: &HistoryReply, subscribe: bool) -> String {
    let mut out = String::from("{\"epoch\":");
    push_str(&mut out, &reply.top.epoch);
    out.push_str(",\"offset\":");
    out.push_str(&reply.top.offset.to_string());
    if subscribe {
        out.push_str(",\"recovered\":");
        out.push_str(if reply.recovered { "true" } else { "false" });
    }
    out.push_str(",\"publications\":[");
    for (i, (offset, data)) in reply.publications.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_publication(&mut out, *offset, data);
    }
    out.push_str("]}");
    out
}

/// The token a request carries: `?token=` in the query (browsers cannot set headers on a
/// WebSocket), or `Authorization: Bearer`.
fn token_of<'a>(request: &'a Request<'a>) -> Option<&'a str> {
    let from_query = request
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("token=")));
    from_query.or_else(|| {
        request
            .header("authorization")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    })
}

impl App for ClientApp {
    /// Twice the largest `data`: a command a little over the limit gets its error reply
    /// (code 8); one far over it closes with 1009 before it is buffered.
    fn max_message_size(&self) -> Option<usize> {
        Some(self.service.settings.max_data.saturating_mul(2).max(4096))
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_>) {
        // The backend exists once the first shard runs (it needs the server's handle).
        let _ = self.backend(ctx);
        let _ = self.done(ctx);
        let every = self.service.settings.ping_interval_ms;
        if every > 0 {
            ctx.set_timer(every, PING);
        }
    }

    fn on_upgrade(&mut self, ctx: &mut Ctx<'_>, upgrade: &UpgradeRequest<'_>) -> Upgrade {
        let done = self.done(ctx);
        let service = self.service.clone();
        let Some(tokens) = service.tokens() else {
            return Upgrade::accept();
        };
        let Some(token) = token_of(upgrade.request()) else {
            return Upgrade::Reject(401);
        };
        if tokens.send((upgrade.id(), token.to_owned(), done)).is_err() {
            return Upgrade::Reject(503);
        }
        Upgrade::Defer
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &Request<'_>) {
        let claims = ctx.take_state::<Pending>(id).map(|p| p.0);
        self.start_session(ctx, id, claims);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        let parsed = std::str::from_utf8(message.as_bytes())
            .ok()
            .and_then(|text| serde_json::from_str::<Command<'_>>(text).ok());
        match parsed {
            Some(cmd) => self.on_command(ctx, id, cmd),
            None => self.fail(ctx, id, 0, ErrorCode::BadRequest),
        }
    }

    fn on_subscribed(&mut self, ctx: &mut Ctx<'_>, id: ConnId, topic: &str) {
        if let Some(user) = topic.strip_prefix("v1u ") {
            let done = self.done(ctx);
            self.backend(ctx).online(&done, id, user);
            return;
        }
        let Some(channel) = topic.strip_prefix("v1 ") else {
            return;
        };
        let Some(s) = ctx.state::<Session>(id) else {
            return;
        };
        let ready: Vec<_> = s
            .waiting
            .iter()
            .filter(|w| w.0 == channel)
            .cloned()
            .collect();
        s.waiting.retain(|w| w.0 != channel);
        for (channel, n, since) in ready {
            self.read_for_subscribe(ctx, id, n, &channel, since);
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: Closed) {
        let Some(s) = ctx.take_state::<Session>(id) else {
            return;
        };
        if let Some(t) = s.expiry_timer {
            ctx.cancel_timer(t);
        }
        let backend = self.backend(ctx);
        for channel in &s.subs {
            backend.leave(channel, &s.client);
        }
        if !s.user.is_empty() {
            backend.offline(id, &s.user);
        }
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_>, payload: Box<dyn Any + Send>) {
        if let Ok(outcome) = payload.downcast::<Outcome>() {
            self.on_outcome(ctx, *outcome);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, token: u64) {
        if token == PING {
            ctx.send_all(&SharedFrame::text("{\"type\":\"ping\"}"));
            ctx.set_timer(self.service.settings.ping_interval_ms, PING);
            return;
        }
        let id = ConnId::from_u64(token);
        let expired = ctx
            .state::<Session>(id)
            .is_some_and(|s| s.expires > 0 && s.expires <= now_secs());
        if expired {
            let _ = ctx.close(id, CloseCode(close::TOKEN_EXPIRED), "token expired");
        } else if let Some(s) = ctx.state::<Session>(id) {
            // Fired a little early (the clock's rounding): look again at the deadline.
            if s.expires > 0 {
                let after = s
                    .expires
                    .saturating_sub(now_secs())
                    .max(1)
                    .saturating_mul(1000);
                let t = ctx.set_timer(after, token);
                if let Some(s) = ctx.state::<Session>(id) {
                    s.expiry_timer = Some(t);
                }
            }
        }
    }
}
