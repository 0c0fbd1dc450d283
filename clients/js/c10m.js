// A client for c10m's client protocol, version 1 (`/connection/v1`; docs/PROTOCOL.md is the
// reference). One ES module with no dependencies and no build step: a browser imports it with
// `<script type="module">`, node 22+ with its global WebSocket, node 20 with the `ws` package
// passed as `options.WebSocket`.
//
// What it does for an application:
// - connects with a token (`?token=`), fetched with `getToken()` for the first connect, for the
//   reconnect after a 3500 close (token expired) and for `refresh` at ~80% of its lifetime;
// - answers the server's pings and treats a server silent for `ping_ms` + `pingMargin` as gone;
// - reconnects with exponential backoff and full jitter (random in [0, min(cap, base * 2^n)]),
//   except after 3501 (a client bug), 1009, other 3500-3999 codes, or `disconnect()`;
// - keeps subscriptions across reconnects: each resubscribes with the position of the last
//   publication it handled and delivers what was missed, then live publications, with no gap
//   and no duplicate; when the server cannot bridge the gap it emits `unrecovered`.
//
// Events are plain callbacks (`on(type, fn)` returns a function that removes `fn`); see
// clients/js/README.md for each event's payload.

/**
 * Event payloads (for editors; the module has no build step, so these are JSDoc only).
 * @typedef {{client: string, user: string, expires: number, pingMs: number}} ConnectedEvent
 * @typedef {{code: number, reason: string, reconnect: boolean}} DisconnectedEvent
 * @typedef {{data: any}} MessageEvent
 * @typedef {{expires: number}} RefreshedEvent
 * @typedef {{type: "token"|"url"|"transport"|"protocol"|"server"|"refresh"|"handler", error?: any, code?: number, message?: string, event?: string}} ErrorEvent
 * @typedef {{channel: string, epoch: string, offset: number, data: any}} Publication
 * @typedef {{channel: string, epoch: string, offset: number, recovering: boolean, recovered: boolean}} SubscribedEvent
 * @typedef {{channel: string, since: {offset: number, epoch: string}, epoch: string, offset: number, publications: {offset: number, data: any}[]}} UnrecoveredEvent
 */

/** Error codes of rejections made by the client itself (the server's are 1-100). */
export const ClientError = Object.freeze({
  /** No reply within the command's timeout. */
  TIMEOUT: -1,
  /** The connection ended before the reply: the command may or may not have been applied. */
  CONNECTION_CLOSED: -2,
  /** The client is disconnected (`disconnect()`, or a close after which it does not reconnect). */
  DISCONNECTED: -3,
});

/** Close codes of the protocol (docs/PROTOCOL.md, "Tokens, pings and closing"). */
export const CloseCode = Object.freeze({
  TOKEN_EXPIRED: 3500,
  BAD_REQUESTS: 3501,
  TOO_LARGE: 1009,
  /** Also used by the client for a heartbeat or connect timeout (reason says which). */
  ABNORMAL: 1006,
});

/** A command's rejection: `code` is the server's error code or one of `ClientError`. */
export class C10mError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "C10mError";
    this.code = code;
  }
}

const DEFAULTS = Object.freeze({
  token: null,
  getToken: null,
  WebSocket: null,
  /** Reconnect backoff: delay of attempt n is random in [0, min(backoffCap, backoffBase * 2^n)]. */
  backoffBase: 1000,
  backoffCap: 30000,
  /** Command timeout, and the time the server has to send `connected` after a connect. */
  timeout: 10000,
  /** Silence tolerated past the server's `ping_ms` before the connection counts as dead. */
  pingMargin: 10000,
  /** Refresh the token when this share of its remaining lifetime has passed. */
  refreshRatio: 0.8,
  random: Math.random,
});

/** The reconnect delay before attempt `attempt` (0 for the first): full jitter. */
export function backoffDelay(attempt, base = 1000, cap = 30000, random = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 52));
  return Math.floor(random() * ceiling);
}

/** The `exp` claim of a JWT (seconds since the epoch), or 0 when it cannot be read. */
export function tokenExpiry(token) {
  try {
    const part = String(token).split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const exp = JSON.parse(json).exp;
    return Number.isFinite(exp) ? exp : 0;
  } catch {
    return 0;
  }
}

/** Whether the client should reconnect after the server closed with `code`. */
export function shouldReconnect(code) {
  if (code === CloseCode.BAD_REQUESTS || code === CloseCode.TOO_LARGE) return false;
  if (code === CloseCode.TOKEN_EXPIRED) return true; // with a new token, if it can get one
  return !(code >= 3500 && code <= 3999);
}

class Emitter {
  #handlers = new Map();

  /** Calls `fn(payload)` on each `type` event; returns a function that stops it. */
  on(type, fn) {
    if (typeof fn !== "function") throw new TypeError("handler must be a function");
    let set = this.#handlers.get(type);
    if (!set) this.#handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
  }

  /** Resolves with the next `type` event's payload. */
  once(type) {
    return new Promise((resolve) => {
      const stop = this.on(type, (payload) => {
        stop();
        resolve(payload);
      });
    });
  }

  // A throwing handler must not break the client's state machine: it is reported as an
  // `error` event (or on the console when that throws too).
  _emit(type, payload) {
    const set = this.#handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (error) {
        if (type === "error") console.error("c10m: an error handler threw", error);
        else this._emit("error", { type: "handler", event: type, error });
      }
    }
  }
}

/**
 * A channel's subscription. It lives until `unsubscribe()`: across reconnects it resubscribes
 * from `position` (the last publication handled: `{epoch, offset}`).
 * Events: `publication`, `subscribed`, `unrecovered`, `unsubscribed`, `error`.
 */
export class Subscription extends Emitter {
  constructor(client, channel, options = {}) {
    super();
    this.channel = channel;
    /** "subscribing" (waiting for a reply, live pushes buffered), "subscribed", "unsubscribed". */
    this.state = "unsubscribed";
    /** Position of the last publication handled, `{epoch, offset}`, or null before the first reply. */
    this.position = options.since ? { epoch: options.since.epoch, offset: options.since.offset } : null;
    this._client = client;
    this._buffer = [];
    this._retryTimer = null;
    this._retries = 0;
    const handlers = {
      publication: options.onPublication,
      subscribed: options.onSubscribed,
      unrecovered: options.onUnrecovered,
      unsubscribed: options.onUnsubscribed,
      error: options.onError,
    };
    for (const [type, fn] of Object.entries(handlers)) if (fn) this.on(type, fn);
  }

  /** Stops the subscription (and tells the server when connected). Resolves when done. */
  unsubscribe() {
    return this._client._unsubscribe(this);
  }
}

/**
 * The client. `url` is a `ws://` URL of `/connection/v1`, a list of them (each reconnect tries
 * the next) or a function `(attempt) => url` (may be async).
 * Events: `connected`, `disconnected`, `message`, `refreshed`, `error`.
 */
export class Client extends Emitter {
  constructor(url, options = {}) {
    super();
    this._opts = { ...DEFAULTS, ...options };
    this._WS = this._opts.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WS !== "function") {
      throw new TypeError("no WebSocket here: pass options.WebSocket (in node 20, the ws package)");
    }
    this._urls = url;
    this._urlIndex = 0;
    /** "disconnected", "connecting" (first connect or reconnecting) or "connected". */
    this.state = "disconnected";
    /** From the `connected` push: `{client, user, expires, pingMs}`; null when not connected. */
    this.info = null;
    this._token = this._opts.token;
    this._needToken = false; // after 3500: the next connect needs a new token
    this._failedAttempts = 0; // attempts that ended before `connected`, in a row
    this._attempt = 0; // reconnects since the last `connected` (the backoff exponent)
    this._connects = 0; // every connect attempt (the URL function's argument)
    this._gen = 0; // bumped by every connect attempt and disconnect(): stale async work stops
    this._ws = null;
    this._nextId = 0;
    this._pending = new Map(); // id -> call sent on the current connection
    this._queue = []; // calls waiting for a connection
    this._subs = new Map(); // channel -> Subscription
    this._timers = { reconnect: null, open: null, heartbeat: null, refresh: null };
  }

  /** Connects (and keeps reconnecting until `disconnect()` or a final close). */
  connect() {
    if (this.state !== "disconnected") return;
    this._attempt = 0;
    this._failedAttempts = 0;
    this.state = "connecting";
    this._open();
  }

  /** Closes the connection and stops reconnecting. Subscriptions are kept for a later `connect()`. */
  disconnect() {
    this._gen++;
    this._clearTimers();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      try {
        ws.close(1000, "client disconnect");
      } catch {
        // already closed
      }
    }
    this._rejectAll(new C10mError(ClientError.DISCONNECTED, "disconnected by the client"));
    this._resetSubscriptions();
    const was = this.state;
    this.state = "disconnected";
    this.info = null;
    if (was !== "disconnected") {
      this._emit("disconnected", { code: 1000, reason: "disconnect called", reconnect: false });
    }
  }

  /** The channel's subscription, or a new one (one per channel). */
  subscribe(channel, options = {}) {
    if (this._subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const sub = new Subscription(this, channel, options);
    this._subs.set(channel, sub);
    sub.state = "subscribing";
    if (this.state === "connected") this._sendSubscribe(sub);
    return sub;
  }

  getSubscription(channel) {
    return this._subs.get(channel) ?? null;
  }

  /**
   * Publishes `data` (any JSON) to `channel`; resolves `{offset}`. `opts.idempotencyKey`
   * makes a retry safe: the same key on the same channel within 5 minutes publishes once and
   * resolves the first offset (retry with it after an error 100 or a timeout).
   */
  publish(channel, data, opts = {}) {
    const cmd = { channel, data };
    if (opts.idempotencyKey !== undefined) cmd.idempotency_key = String(opts.idempotencyKey);
    return this._call("publish", cmd);
  }

  /** The channel's history: `opts` `{since: {offset, epoch}, limit}`; resolves `{epoch, offset, publications}`. */
  history(channel, opts = {}) {
    const fields = { channel };
    if (opts.since) fields.since = { offset: opts.since.offset, epoch: opts.since.epoch };
    if (opts.limit !== undefined) fields.limit = opts.limit;
    return this._call("history", fields);
  }

  /** Who is subscribed to `channel`; resolves `{clients: [{client, user}]}`. */
  presence(channel) {
    return this._call("presence", { channel });
  }

  /** Sends `data` to every connection of `user`; resolves `{online}`. */
  send(user, data) {
    return this._call("send", { user, data });
  }

  // --- connection ------------------------------------------------------------------------

  async _open() {
    const gen = ++this._gen;
    let token = this._token;
    const getToken = this._opts.getToken;
    if (getToken && this._wantsToken(token)) {
      try {
        token = await getToken();
      } catch (error) {
        if (gen !== this._gen) return;
        this._emit("error", { type: "token", error });
        this._scheduleReconnect();
        return;
      }
      if (gen !== this._gen) return;
      if (!token) {
        this._final({ code: CloseCode.TOKEN_EXPIRED, reason: "getToken gave no token", reconnect: false });
        return;
      }
      this._token = token;
      this._needToken = false;
    }
    let url;
    try {
      url = await this._pickUrl();
    } catch (error) {
      if (gen !== this._gen) return;
      this._emit("error", { type: "url", error });
      this._scheduleReconnect();
      return;
    }
    if (gen !== this._gen) return;
    if (token) url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
    let ws;
    try {
      ws = new this._WS(url);
    } catch (error) {
      this._emit("error", { type: "transport", error });
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    // Handlers stay attached for the socket's life (the ws package throws on an 'error' with
    // no listener); events of a socket that is no longer current are ignored.
    ws.onmessage = (ev) => {
      if (ws === this._ws) this._onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws === this._ws) this._closed(ev.code, ev.reason || "");
    };
    ws.onerror = () => {}; // a close event follows
    this._timers.open = setTimeout(() => {
      if (ws === this._ws) this._abort(CloseCode.ABNORMAL, "connect timeout");
    }, this._opts.timeout);
  }

  // A new token before this attempt: none yet, the last close was 3500, the token's own
  // expiry has passed, or two attempts in a row failed before `connected` (a browser cannot
  // see the 401 of a rejected token: the attempt just ends with 1006).
  _wantsToken(token) {
    if (!token || this._needToken) return true;
    const exp = tokenExpiry(token);
    if (exp && exp * 1000 <= Date.now() + 1000) return true;
    return this._failedAttempts >= 2;
  }

  async _pickUrl() {
    const n = this._connects++;
    const urls = this._urls;
    if (typeof urls === "function") return String(await urls(n));
    if (Array.isArray(urls)) return urls[this._urlIndex % urls.length];
    return urls;
  }

  // The client gives up on the current socket (heartbeat or connect timeout): no close
  // handshake with a server that may be gone.
  _abort(code, reason) {
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      try {
        if (typeof ws.terminate === "function") ws.terminate();
        else ws.close(1000, reason);
      } catch {
        // already closed
      }
    }
    this._closed(code, reason);
  }

  _closed(code, reason) {
    const wasConnected = this.state === "connected";
    this._gen++; // replies and refreshes of this connection are moot now
    this._ws = null;
    this._clearTimers();
    this.info = null;
    for (const call of this._pending.values()) {
      clearTimeout(call.timer);
      call.reject(new C10mError(ClientError.CONNECTION_CLOSED, `connection closed (${code}) before the reply`));
    }
    this._pending.clear();
    this._resetSubscriptions();
    if (!wasConnected) this._failedAttempts++;
    let reconnect = shouldReconnect(code);
    if (code === CloseCode.TOKEN_EXPIRED) {
      reconnect = Boolean(this._opts.getToken);
      this._needToken = true;
    }
    if (!reconnect) {
      this._final({ code, reason, reconnect: false });
      return;
    }
    this.state = "connecting";
    this._scheduleReconnect();
    this._emit("disconnected", { code, reason, reconnect: true });
  }

  // Disconnected for good (until connect()): what waits for a connection is rejected.
  _final(event) {
    this._gen++;
    this._clearTimers();
    this._rejectAll(new C10mError(ClientError.DISCONNECTED, `disconnected (${event.code}: ${event.reason})`));
    this.state = "disconnected";
    this._emit("disconnected", event);
  }

  _scheduleReconnect() {
    if (this.state !== "connecting") return;
    const delay = backoffDelay(this._attempt++, this._opts.backoffBase, this._opts.backoffCap, this._opts.random);
    this._urlIndex++;
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      if (this.state === "connecting") this._open();
    }, delay);
  }

  _clearTimers() {
    for (const k of Object.keys(this._timers)) {
      clearTimeout(this._timers[k]);
      this._timers[k] = null;
    }
  }

  _rejectAll(error) {
    for (const call of [...this._pending.values(), ...this._queue]) {
      clearTimeout(call.timer);
      call.reject(error);
    }
    this._pending.clear();
    this._queue = [];
  }

  _armHeartbeat() {
    clearTimeout(this._timers.heartbeat);
    const ping = this.info?.pingMs;
    if (!ping) return;
    this._timers.heartbeat = setTimeout(
      () => this._abort(CloseCode.ABNORMAL, "heartbeat timeout"),
      ping + this._opts.pingMargin,
    );
  }

  _onFrame(data) {
    if (this.state === "connected") this._armHeartbeat();
    if (typeof data !== "string") data = new TextDecoder().decode(data);
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this._emit("error", { type: "protocol", message: "a frame that is not JSON" });
      return;
    }
    if (msg === null || typeof msg !== "object") return;
    if (msg.id !== undefined && (msg.result !== undefined || msg.error !== undefined)) {
      this._onReply(msg);
      return;
    }
    switch (msg.type) {
      case "connected":
        this._onConnected(msg);
        break;
      case "ping":
        this._sendJSON({ method: "pong" });
        break;
      case "pub": {
        const sub = this._subs.get(msg.channel);
        if (sub) this._onPub(sub, { channel: msg.channel, epoch: msg.epoch, offset: msg.offset, data: msg.data });
        break;
      }
      case "message":
        this._emit("message", { data: msg.data });
        break;
      default:
        break; // a push of a later protocol version
    }
  }

  _onConnected(msg) {
    clearTimeout(this._timers.open);
    this._timers.open = null;
    this.info = { client: msg.client, user: msg.user, expires: msg.expires || 0, pingMs: msg.ping_ms || 0 };
    this.state = "connected";
    this._attempt = 0;
    this._failedAttempts = 0;
    this._armHeartbeat();
    this._scheduleRefresh();
    // Subscriptions first, then the commands that waited for a connection, then the event (a
    // handler subscribing now is sent once, by subscribe()).
    for (const sub of this._subs.values()) if (sub.state === "subscribing") this._sendSubscribe(sub);
    const queued = this._queue;
    this._queue = [];
    for (const call of queued) this._sendCall(call);
    this._emit("connected", { ...this.info });
  }

  // --- token refresh -----------------------------------------------------------------------

  _scheduleRefresh() {
    clearTimeout(this._timers.refresh);
    this._timers.refresh = null;
    const expires = this.info?.expires;
    if (!expires || !this._opts.getToken) return;
    const left = expires * 1000 - Date.now();
    this._timers.refresh = setTimeout(() => this._refresh(), Math.max(0, left * this._opts.refreshRatio));
  }

  async _refresh() {
    this._timers.refresh = null;
    const gen = this._gen;
    try {
      const token = await this._opts.getToken();
      if (gen !== this._gen) return;
      if (!token) throw new Error("getToken gave no token");
      const result = await this._call("refresh", { token }, { direct: true });
      if (gen !== this._gen) return;
      this._token = token;
      this.info.expires = result.expires;
      this._scheduleRefresh();
      this._emit("refreshed", { expires: result.expires });
    } catch (error) {
      if (gen !== this._gen) return;
      this._emit("error", { type: "refresh", error });
      // Try again while there is time; past it the server closes with 3500 and the reconnect
      // gets a new token.
      const left = (this.info?.expires ?? 0) * 1000 - Date.now();
      if (left > 2000) this._timers.refresh = setTimeout(() => this._refresh(), Math.min(left / 2, 10000));
    }
  }

  // --- commands ----------------------------------------------------------------------------

  _sendJSON(obj) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(JSON.stringify(obj));
      return true;
    } catch {
      return false;
    }
  }

  // A command: sent now when connected; else waits for the connection (unless `direct`: the
  // subscription and refresh machinery only speak on the current connection).
  _call(method, fields, { direct = false } = {}) {
    return new Promise((resolve, reject) => {
      const call = { id: 0, method, fields, resolve, reject, timer: null };
      if (this.state === "disconnected" || (direct && this.state !== "connected")) {
        reject(new C10mError(ClientError.DISCONNECTED, `${method}: not connected`));
        return;
      }
      call.timer = setTimeout(() => {
        this._pending.delete(call.id);
        const i = this._queue.indexOf(call);
        if (i >= 0) this._queue.splice(i, 1);
        reject(new C10mError(ClientError.TIMEOUT, `${method}: no reply within ${this._opts.timeout} ms`));
      }, this._opts.timeout);
      if (this.state === "connected") this._sendCall(call);
      else this._queue.push(call);
    });
  }

  _sendCall(call) {
    call.id = ++this._nextId;
    this._pending.set(call.id, call);
    this._sendJSON({ id: call.id, method: call.method, ...call.fields });
  }

  _onReply(msg) {
    const call = this._pending.get(msg.id);
    if (!call) {
      // Id 0: the server could not read a command of ours.
      if (msg.error) this._emit("error", { type: "server", code: msg.error.code, message: msg.error.message });
      return;
    }
    this._pending.delete(msg.id);
    clearTimeout(call.timer);
    if (msg.error) call.reject(new C10mError(msg.error.code, msg.error.message));
    else call.resolve(msg.result);
  }

  // --- subscriptions -----------------------------------------------------------------------

  // After a disconnect every live subscription waits to be resubscribed.
  _resetSubscriptions() {
    for (const sub of this._subs.values()) {
      clearTimeout(sub._retryTimer);
      sub._retryTimer = null;
      sub._buffer = [];
      sub.state = "subscribing";
    }
  }

  _sendSubscribe(sub) {
    sub.state = "subscribing";
    sub._buffer = [];
    const since = sub.position ? { offset: sub.position.offset, epoch: sub.position.epoch } : undefined;
    const fields = since ? { channel: sub.channel, since } : { channel: sub.channel };
    const gen = this._gen;
    const current = () => gen === this._gen && this._subs.get(sub.channel) === sub && sub.state === "subscribing";
    this._call("subscribe", fields, { direct: true }).then(
      (result) => {
        if (current()) this._onSubscribed(sub, since, result);
      },
      (error) => {
        if (!current()) return;
        sub._emit("error", { type: "subscribe", code: error.code, message: error.message });
        if (error.code === ClientError.TIMEOUT) {
          // The server may hold the subscription without having answered: start over.
          this._abort(CloseCode.ABNORMAL, "subscribe timed out");
        } else if (error.code >= 100) {
          // The server cannot do it now (Redis unreachable): try again later.
          const delay = backoffDelay(sub._retries++, this._opts.backoffBase, this._opts.backoffCap, this._opts.random);
          sub._retryTimer = setTimeout(() => {
            sub._retryTimer = null;
            if (current() && this.state === "connected") this._sendSubscribe(sub);
          }, delay);
        } else if (error.code > 0) {
          // Refused for good (bad name, too many subscriptions).
          this._subs.delete(sub.channel);
          sub.state = "unsubscribed";
          sub._emit("unsubscribed", { channel: sub.channel, code: error.code, message: error.message });
        }
      },
    );
  }

  // The subscribe reply: recovered publications first (through the same checks as live ones,
  // so a duplicate is dropped and a gap makes a new recovery), then the buffered live pushes.
  _onSubscribed(sub, since, result) {
    sub._retries = 0;
    sub.state = "subscribed";
    const recovered = Boolean(since) && result.recovered === true;
    const event = { channel: sub.channel, epoch: result.epoch, offset: result.offset, recovering: Boolean(since), recovered };
    if (since && !result.recovered) {
      // Cannot bridge the gap: continue from the channel's position; the application reloads.
      sub.position = { epoch: result.epoch, offset: result.offset };
      sub._emit("subscribed", event);
      sub._emit("unrecovered", { channel: sub.channel, since, epoch: result.epoch, offset: result.offset, publications: result.publications ?? [] });
    } else {
      if (!since) sub.position = { epoch: result.epoch, offset: result.offset };
      sub._emit("subscribed", event);
      for (const p of result.publications ?? []) {
        if (sub.state !== "subscribed") break; // a gap started another recovery
        this._onPub(sub, { channel: sub.channel, epoch: result.epoch, offset: p.offset, data: p.data });
      }
    }
    const buffered = sub._buffer;
    sub._buffer = [];
    for (const p of buffered) this._onPub(sub, p);
  }

  _onPub(sub, p) {
    if (sub.state === "subscribing") {
      sub._buffer.push(p);
      return;
    }
    if (sub.state !== "subscribed") return;
    let pos = sub.position;
    // A channel with no publications yet may have no epoch (Redis): the first one sets it.
    if (pos.epoch === "" && pos.offset === 0) pos = sub.position = { epoch: p.epoch, offset: 0 };
    if (p.epoch === pos.epoch && p.offset <= pos.offset) return; // handled already
    if (p.epoch !== pos.epoch || p.offset !== pos.offset + 1) {
      // A gap, or the stream lost its history (new epoch): recover from the position.
      this._resync(sub);
      sub._buffer.push(p);
      return;
    }
    sub.position = { epoch: p.epoch, offset: p.offset };
    sub._emit("publication", p);
  }

  _resync(sub) {
    sub.state = "subscribing";
    sub._buffer = [];
    if (this.state !== "connected") return; // resubscribed on connect
    this._call("unsubscribe", { channel: sub.channel }, { direct: true }).catch(() => {});
    this._sendSubscribe(sub);
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.channel) !== sub) return Promise.resolve();
    this._subs.delete(sub.channel);
    clearTimeout(sub._retryTimer);
    sub._retryTimer = null;
    sub._buffer = [];
    sub.state = "unsubscribed";
    sub._emit("unsubscribed", { channel: sub.channel });
    if (this.state !== "connected") return Promise.resolve();
    return this._call("unsubscribe", { channel: sub.channel }, { direct: true }).then(
      () => {},
      () => {}, // not subscribed (a subscribe still on its way) or the connection went
    );
  }
}
