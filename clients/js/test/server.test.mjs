// The client against one real `c10m serve` (state in memory, HS256 tokens): connecting,
// publish/subscribe with offsets, history, presence, messages to users, error replies, and a
// token that would have expired without a new one.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { C10mError } from "../c10m.js";
import { client, connected, sleep, startNode, stopAll, token, waitFor, withTimeout } from "./support.mjs";

let node;
const clients = [];
const open = async (user, options = {}) => {
  const c = client(node.url, { token: token(user), ...options });
  clients.push(c);
  await connected(c);
  return c;
};
const channel = (name) => `${name}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;

before(async () => {
  node = await startNode();
});
after(async () => {
  for (const c of clients) c.disconnect();
  await stopAll();
});

test("connects with a token and gets connected: user, client id, expiry, ping interval", async () => {
  const t = token("alice", 600);
  const c = client(node.url, { token: t });
  clients.push(c);
  const info = await connected(c);
  assert.equal(info.user, "alice");
  assert.match(info.client, /.+-.+/);
  assert.equal(info.expires, JSON.parse(Buffer.from(t.split(".")[1], "base64url")).exp);
  assert.equal(info.pingMs, 25000);
  assert.equal(c.state, "connected");
});

test("an expired token is replaced through getToken before connecting (the server would answer 401)", async () => {
  let issued = 0;
  const c = client(node.url, { token: token("bob", -60), getToken: async () => (issued++, token("bob", 600)) });
  clients.push(c);
  await connected(c);
  assert.equal(issued, 1);
});

test("publish and subscribe: offsets 1, 2, ... in order, data as published, history and its bounds", async () => {
  const ch = channel("news");
  const sub = await open("sub");
  const pub = await open("pub");
  const got = [];
  const s = sub.subscribe(ch, { onPublication: (p) => got.push(p) });
  const sv = await withTimeout(s.once("subscribed"), 3000, "subscribed");
  assert.equal(sv.offset, 0);
  assert.equal(sv.recovering, false);
  const results = [];
  for (let i = 1; i <= 20; i++) results.push(await pub.publish(ch, { n: i, text: `hi ${i}` }));
  assert.deepEqual(results, Array.from({ length: 20 }, (_, i) => ({ offset: i + 1 })));
  await waitFor(() => got.length >= 20, 3000, "20 publications");
  assert.deepEqual(got.map((p) => p.offset), Array.from({ length: 20 }, (_, i) => i + 1));
  assert.deepEqual(got.map((p) => p.data.n), Array.from({ length: 20 }, (_, i) => i + 1));
  assert.ok(got.every((p) => p.epoch === sv.epoch && p.channel === ch));
  assert.deepEqual(s.position, { epoch: sv.epoch, offset: 20 });

  const h = await pub.history(ch, { since: { offset: 15, epoch: sv.epoch }, limit: 3 });
  assert.deepEqual(h.publications.map((p) => p.offset), [16, 17, 18]);
  assert.deepEqual(h.publications[0].data, { n: 16, text: "hi 16" });
  assert.equal(h.offset, 20);

  // A second subscriber that starts from a known position gets what it missed, then live ones.
  const late = await open("late");
  const lateGot = [];
  const ls = late.subscribe(ch, { since: { epoch: sv.epoch, offset: 17 }, onPublication: (p) => lateGot.push(p.offset) });
  const lsv = await withTimeout(ls.once("subscribed"), 3000, "subscribed");
  assert.equal(lsv.recovered, true);
  await pub.publish(ch, { n: 21 });
  await waitFor(() => lateGot.length >= 4, 3000, "4 publications");
  assert.deepEqual(lateGot, [18, 19, 20, 21]);
  await s.unsubscribe();
  await pub.publish(ch, { n: 22 });
  await waitFor(() => lateGot.length >= 5, 3000, "publication 22");
  assert.equal(got.length, 21, "nothing after unsubscribe");
});

test("presence lists subscribers; send reaches every connection of a user", async () => {
  const ch = channel("room");
  const carol = await open("carol");
  const dave = await open("dave");
  const s = carol.subscribe(ch);
  await withTimeout(s.once("subscribed"), 3000, "subscribed");
  const p = await dave.presence(ch);
  assert.deepEqual(p.clients, [{ client: carol.info.client, user: "carol" }]);
  const messages = [];
  carol.on("message", (m) => messages.push(m));
  assert.deepEqual(await dave.send("carol", { text: "psst" }), { online: true });
  await waitFor(() => messages.length === 1, 3000, "the message");
  assert.deepEqual(messages, [{ data: { text: "psst" } }]);
});

test("messages to an offline user wait in its inbox and arrive in order when it connects", async () => {
  const sender = await open("sender");
  const user = `offline${Date.now()}`;
  for (let i = 1; i <= 3; i++) assert.deepEqual(await sender.send(user, { i }), { online: false });
  const c = client(node.url, { token: token(user) });
  clients.push(c);
  const messages = [];
  c.on("message", (m) => messages.push(m.data.i));
  await connected(c);
  await waitFor(() => messages.length >= 3, 3000, "the inbox");
  assert.deepEqual(messages, [1, 2, 3]);
});

test("a publish retried with its idempotency key publishes once", async () => {
  const c = await open("ida");
  const first = await c.publish("idem", { n: 1 }, { idempotencyKey: "k1" });
  const again = await c.publish("idem", { n: 1 }, { idempotencyKey: "k1" });
  const other = await c.publish("idem", { n: 2 }, { idempotencyKey: "k2" });
  assert.equal(again.offset, first.offset);
  assert.equal(other.offset, first.offset + 1);
  const { offset } = await c.history("idem");
  assert.equal(offset, other.offset, "nothing more was published");
});

test("error replies reject with {code, message}; a refused subscription says why", async () => {
  const c = await open("erin");
  await assert.rejects(c.publish("bad name", 1), (e) => e instanceof C10mError && e.code === 4 && e.message === "bad channel or user name");
  await assert.rejects(c.publish("x".repeat(256), 1), (e) => e.code === 4);
  await assert.rejects(c.publish("big", "y".repeat(70 << 10)), (e) => e.code === 8 && e.message === "too large");
  await assert.rejects(c.send("nobody here", 1), (e) => e.code === 4);
  const s = c.subscribe("bad name");
  const ended = await withTimeout(s.once("unsubscribed"), 3000, "the refusal");
  assert.equal(ended.code, 4);
  assert.equal(c.getSubscription("bad name"), null);
  assert.equal(c.state, "connected");
});

test("token refresh before expiry keeps the connection past the first token's expiry", async () => {
  const ttl = 3;
  const first = token("frank", ttl);
  const firstExp = JSON.parse(Buffer.from(first.split(".")[1], "base64url")).exp;
  const events = [];
  const refreshes = [];
  const c = client(node.url, {
    token: first,
    getToken: async () => token("frank", ttl),
  });
  clients.push(c);
  c.on("disconnected", (e) => events.push(e));
  c.on("refreshed", (e) => refreshes.push({ ...e, at: Date.now() }));
  // The control: the same token without getToken is closed with 3500 at its expiry.
  const control = client(node.url, { token: token("gina", ttl) });
  clients.push(control);
  const controlClosed = control.once("disconnected");
  await Promise.all([connected(c), connected(control)]);
  const id = c.info.client;
  const closed = await withTimeout(controlClosed, (ttl + 2) * 1000, "the control's 3500");
  assert.deepEqual(closed, { code: 3500, reason: "token expired", reconnect: false });
  await waitFor(() => refreshes.length >= 2 && Date.now() > firstExp * 1000 + 1200, (ttl + 5) * 1000, "two refreshes");
  assert.deepEqual(events, [], "no disconnect");
  assert.equal(c.info.client, id, "the same connection");
  assert.ok(refreshes[0].at < firstExp * 1000, "the first refresh came before the first expiry");
  assert.ok(refreshes[1].expires > firstExp);
  assert.deepEqual(await c.publish(channel("still"), 1), { offset: 1 });
  await sleep(10);
});
