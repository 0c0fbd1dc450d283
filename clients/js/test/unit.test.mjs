// The client's logic against a fake server (test/fake.mjs) and as pure functions: backoff,
// heartbeat timeout, what each close code leads to, buffering and de-duplication around a
// subscribe reply, gaps, commands (results, errors, timeouts, queueing).
import { after, test } from "node:test";
import assert from "node:assert/strict";

import { backoffDelay, C10mError, ClientError, shouldReconnect, tokenExpiry } from "../c10m.js";
import { FakeServer } from "./fake.mjs";
import { client as makeClient, sleep, token, waitFor, withTimeout } from "./support.mjs";

// Every client is disconnected at the end, so a broken reconnect policy fails a test instead of
// keeping the process alive.
const made = [];
const client = (...args) => {
  const c = makeClient(...args);
  made.push(c);
  return c;
};
after(() => made.forEach((c) => c.disconnect()));

test("backoff: full jitter in [0, min(cap, base * 2^attempt)), doubling from base to cap", () => {
  const top = () => 1 - Number.EPSILON;
  const ceilings = [0, 1, 2, 3, 4, 5, 6, 40].map((n) => backoffDelay(n, 1000, 30000, top));
  assert.deepEqual(ceilings, [999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
  for (let n = 0; n < 8; n++) assert.equal(backoffDelay(n, 1000, 30000, () => 0), 0);
  // Uniform over the range: the mean of many draws is near half the ceiling.
  const draws = Array.from({ length: 4000 }, () => backoffDelay(3, 1000, 30000));
  assert.ok(draws.every((d) => d >= 0 && d < 8000));
  const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
  assert.ok(mean > 3600 && mean < 4400, `mean ${mean}`);
});

test("close codes: reconnect after 1001/1006/3000-3499, not after 3501, 1009 or other 35xx-39xx", () => {
  for (const code of [1000, 1001, 1006, 3000, 3499, 3500]) assert.equal(shouldReconnect(code), true, code);
  for (const code of [1009, 3501, 3502, 3999]) assert.equal(shouldReconnect(code), false, code);
});

test("tokenExpiry reads a JWT's exp", () => {
  const t = token("x", 100);
  assert.ok(Math.abs(tokenExpiry(t) - (Date.now() / 1000 + 100)) < 2);
  assert.equal(tokenExpiry("not a token"), 0);
});

test("reconnect delays follow the backoff and reset after a successful connect", async () => {
  // Connections 1-4 are dropped before `connected`; 5 connects, then is dropped; 6 connects.
  const server = await FakeServer.start((conn) => {
    if (server.connections.length === 5 || server.connections.length >= 6) conn.connected();
    if (server.connections.length < 5) conn.ws.terminate();
    if (server.connections.length === 5) setTimeout(() => conn.ws.terminate(), 50);
  });
  const c = client(server.url, { token: "t", backoffBase: 50, backoffCap: 250, random: () => 0.99 });
  try {
    c.connect();
    await waitFor(() => server.connections.length >= 6 && c.state === "connected", 5000, "6 connections");
    const t = server.connections.map((x) => x.openedAt);
    const gaps = t.slice(1).map((x, i) => x - t[i]);
    // After failures 1-4: ~49, ~99, ~198, ~247 (capped); after the connected one: ~49 again.
    const expected = [49, 99, 198, 247];
    expected.forEach((e, i) => assert.ok(gaps[i] >= e - 5 && gaps[i] < e + 150, `gap ${i}: ${gaps[i]} for ${e}`));
    assert.ok(gaps[4] - 50 < 49 + 150, `after a connect the backoff restarts: ${gaps[4]}`);
    assert.ok(gaps[4] >= 49 + 50 - 5, `gap 4: ${gaps[4]}`);
  } finally {
    c.disconnect();
    await server.close();
  }
});

test("heartbeat: pongs answer pings; a server silent past ping_ms + margin is left and reconnected", async () => {
  let silentSince = 0;
  const server = await FakeServer.start((conn) => {
    conn.connected({ pingMs: 300 });
    if (server.connections.length > 1) return; // the reconnect: just connected
    // Pings for 1.2 s (longer than ping + margin: the client must not leave), then silence.
    const timer = setInterval(() => {
      if (Date.now() - conn.openedAt > 1200) {
        clearInterval(timer);
        silentSince = Date.now();
        return;
      }
      conn.send({ type: "ping" });
    }, 300);
  });
  const c = client(server.url, { token: "t", pingMargin: 200, backoffBase: 10 });
  const closes = [];
  c.on("disconnected", (e) => closes.push({ ...e, at: Date.now() }));
  try {
    c.connect();
    await waitFor(() => closes.length > 0, 4000, "the heartbeat timeout");
    const first = server.connections[0];
    assert.ok(silentSince > 0, "the client left while pings still came");
    const pongs = first.received.filter((m) => m.method === "pong").length;
    assert.ok(pongs >= 3, `pongs: ${pongs}`);
    assert.deepEqual(
      { code: closes[0].code, reason: closes[0].reason, reconnect: closes[0].reconnect },
      { code: 1006, reason: "heartbeat timeout", reconnect: true },
    );
    // The last ping came at silentSince - ~300 ms; the timeout is 300 + 200 after it.
    const after = closes[0].at - (silentSince - 300);
    assert.ok(after >= 450 && after < 900, `left ${after} ms after the last ping`);
    await waitFor(() => c.state === "connected" && server.connections.length === 2, 2000, "the reconnect");
  } finally {
    c.disconnect();
    await server.close();
  }
});

test("3501 and 1009 end the client; 3500 reconnects with a new token from getToken; 3000 reconnects", async () => {
  const script = []; // close code for connection i (undefined: stay)
  const server = await FakeServer.start((conn) => {
    conn.connected();
    const code = script[server.connections.length - 1];
    if (code) setTimeout(() => conn.ws.close(code, "by script"), 20);
  });
  let issued = 0;
  const getToken = async () => token("u", 60) + "#" + ++issued;
  try {
    for (const code of [3501, 1009]) {
      script.length = 0;
      script[server.connections.length] = code;
      const before = server.connections.length;
      const c = client(server.url, { getToken, backoffBase: 10 });
      const closed = c.once("disconnected");
      c.connect();
      const e = await withTimeout(closed, 2000, `close ${code}`);
      assert.deepEqual(e, { code, reason: "by script", reconnect: false });
      await sleep(200);
      assert.equal(server.connections.length, before + 1, `no reconnect after ${code}`);
      assert.equal(c.state, "disconnected");
      await assert.rejects(c.publish("ch", 1), (err) => err instanceof C10mError && err.code === ClientError.DISCONNECTED);
    }
    for (const code of [3500, 3000]) {
      script.length = 0;
      script[server.connections.length] = code;
      const before = server.connections.length;
      const issuedBefore = issued;
      const c = client(server.url, { getToken, backoffBase: 10 });
      const events = [];
      c.on("disconnected", (e) => events.push(e));
      c.connect();
      await waitFor(() => server.connections.length === before + 2 && c.state === "connected", 2000, `reconnect after ${code}`);
      assert.deepEqual(events, [{ code, reason: "by script", reconnect: true }]);
      const [a, b] = server.connections.slice(before);
      if (code === 3500) {
        assert.equal(issued, issuedBefore + 2, "one token to connect, one after 3500");
        assert.notEqual(a.token, b.token);
      } else {
        assert.equal(issued, issuedBefore + 1, "the same token for an ordinary reconnect");
        assert.equal(a.token, b.token);
      }
      c.disconnect();
    }
    // 3500 without getToken: nothing to reconnect with.
    script.length = 0;
    script[server.connections.length] = 3500;
    const c = client(server.url, { token: token("u", 60), backoffBase: 10 });
    const closed = c.once("disconnected");
    c.connect();
    assert.equal((await withTimeout(closed, 2000, "close 3500")).reconnect, false);
  } finally {
    await server.close();
  }
});

test("disconnect() stops reconnecting and rejects what waits", async () => {
  const server = await FakeServer.start((conn) => conn.connected());
  const c = client(server.url, { token: "t", backoffBase: 10 });
  try {
    await withTimeout(new Promise((r) => { c.on("connected", r); c.connect(); }), 2000, "connected");
    const pending = c.publish("ch", 1); // never answered
    const events = [];
    c.on("disconnected", (e) => events.push(e));
    c.disconnect();
    await assert.rejects(pending, (e) => e.code === ClientError.DISCONNECTED);
    await sleep(200);
    assert.equal(server.connections.length, 1);
    assert.deepEqual(events, [{ code: 1000, reason: "disconnect called", reconnect: false }]);
  } finally {
    await server.close();
  }
});

test("live pushes before the subscribe reply are buffered; recovered, then live, without duplicates", async () => {
  const E = "ep1";
  const server = await FakeServer.start((conn) => {
    conn.connected();
    conn.on("subscribe", (cmd) => {
      assert.deepEqual(cmd.since, { offset: 2, epoch: E });
      // Live 4, 5, 6 arrive before the reply, which recovers 3, 4, 5.
      conn.pub("news", E, 4);
      conn.pub("news", E, 5);
      conn.pub("news", E, 6);
      conn.pub("other", E, 1); // another channel: not ours
      conn.reply(cmd.id, { epoch: E, offset: 5, recovered: true, publications: [3, 4, 5].map((o) => ({ offset: o, data: o })) });
      conn.pub("news", E, 6); // a duplicate
      conn.pub("news", E, 7);
    });
  });
  const c = client(server.url, { token: "t" });
  const got = [];
  const subscribed = [];
  try {
    c.subscribe("news", { since: { epoch: E, offset: 2 }, onPublication: (p) => got.push(p), onSubscribed: (e) => subscribed.push(e) });
    c.connect();
    await waitFor(() => got.length >= 5, 2000, "5 publications");
    await sleep(100);
    assert.deepEqual(got.map((p) => p.offset), [3, 4, 5, 6, 7]);
    assert.deepEqual(got[0], { channel: "news", epoch: E, offset: 3, data: 3 });
    assert.deepEqual(subscribed, [{ channel: "news", epoch: E, offset: 5, recovering: true, recovered: true }]);
    assert.deepEqual(c.getSubscription("news").position, { epoch: E, offset: 7 });
  } finally {
    c.disconnect();
    await server.close();
  }
});

test("a gap in live publications makes the subscription recover from its position", async () => {
  const E = "ep1";
  const server = await FakeServer.start((conn) => {
    conn.connected();
    let n = 0;
    conn.on("unsubscribe", (cmd) => conn.reply(cmd.id, {}));
    conn.on("subscribe", (cmd) => {
      n += 1;
      if (n === 1) {
        assert.equal(cmd.since, undefined);
        conn.reply(cmd.id, { epoch: E, offset: 10, recovered: true, publications: [] });
        conn.pub("news", E, 11);
        conn.pub("news", E, 13); // 12 lost on the way
        conn.pub("news", E, 14);
      } else {
        assert.deepEqual(cmd.since, { offset: 11, epoch: E });
        conn.reply(cmd.id, { epoch: E, offset: 14, recovered: true, publications: [12, 13, 14].map((o) => ({ offset: o, data: o })) });
        conn.pub("news", E, 15);
      }
    });
  });
  const c = client(server.url, { token: "t" });
  const got = [];
  try {
    c.subscribe("news", { onPublication: (p) => got.push(p.offset) });
    c.connect();
    await waitFor(() => got.length >= 5, 2000, "5 publications");
    await sleep(100);
    assert.deepEqual(got, [11, 12, 13, 14, 15]);
    const methods = server.connections[0].received.map((m) => m.method);
    assert.deepEqual(methods, ["subscribe", "unsubscribe", "subscribe"]);
  } finally {
    c.disconnect();
    await server.close();
  }
});

test("recovered: false emits unrecovered and continues from the channel's position", async () => {
  const server = await FakeServer.start((conn) => {
    conn.connected();
    conn.on("subscribe", (cmd) => {
      conn.pub("news", "new", 10); // before the reply, at the position: dropped
      conn.reply(cmd.id, { epoch: "new", offset: 10, recovered: false, publications: [] });
      conn.pub("news", "new", 11);
    });
  });
  const c = client(server.url, { token: "t" });
  const got = [];
  const unrecovered = [];
  try {
    c.subscribe("news", {
      since: { epoch: "old", offset: 5 },
      onPublication: (p) => got.push(p.offset),
      onUnrecovered: (e) => unrecovered.push(e),
    });
    c.connect();
    await waitFor(() => got.length >= 1, 2000, "a publication");
    await sleep(100);
    assert.deepEqual(unrecovered, [{ channel: "news", since: { offset: 5, epoch: "old" }, epoch: "new", offset: 10, publications: [] }]);
    assert.deepEqual(got, [11]);
  } finally {
    c.disconnect();
    await server.close();
  }
});

test("commands: results resolve, errors reject with {code, message}, silence times out, calls wait for the connection", async () => {
  const server = await FakeServer.start((conn) => {
    setTimeout(() => conn.connected(), 100); // calls made before this wait for it
    conn.on("publish", (cmd) => {
      if (cmd.channel === "bad name") conn.send({ id: cmd.id, error: { code: 4, message: "bad channel or user name" } });
      else if (cmd.channel !== "silent") conn.reply(cmd.id, { offset: 1 });
    });
    conn.on("history", (cmd) => conn.reply(cmd.id, { epoch: "e", offset: 0, publications: [], echo: cmd }));
  });
  const c = client(server.url, { token: "t", timeout: 300 });
  try {
    c.connect();
    const early = c.publish("ok", { a: 1 });
    assert.deepEqual(await early, { offset: 1 });
    await assert.rejects(c.publish("bad name", 1), (e) => e instanceof C10mError && e.code === 4 && e.message === "bad channel or user name");
    const t0 = Date.now();
    await assert.rejects(c.publish("silent", 1), (e) => e.code === ClientError.TIMEOUT);
    assert.ok(Date.now() - t0 >= 290);
    const h = await c.history("ch", { since: { offset: 3, epoch: "e" }, limit: 2 });
    assert.deepEqual(h.echo, { id: h.echo.id, method: "history", channel: "ch", since: { offset: 3, epoch: "e" }, limit: 2 });
    const sent = server.connections[0].received.find((m) => m.channel === "ok");
    assert.deepEqual(sent, { id: sent.id, method: "publish", channel: "ok", data: { a: 1 } });
  } finally {
    c.disconnect();
    await server.close();
  }
});
