// Failover with recovery across nodes: a Redis and two `c10m serve --broker` nodes. A subscriber
// on node A, a publisher on node B publishing at ~200/s; A is killed with SIGKILL mid-stream.
// The subscriber reconnects to B (small backoff), resubscribes from its position, and every
// publication arrives exactly once and in order, including those made while it was away.
import { after, test } from "node:test";
import assert from "node:assert/strict";

import { client, connected, exited, sleep, startNode, startRedis, stopAll, token, waitFor, withTimeout } from "./support.mjs";

after(stopAll);

test("kill -9 of the subscriber's node: it reconnects to the other, recovers, 0 lost, 0 duplicated", async (t) => {
  const redis = await startRedis();
  const [a, b] = await Promise.all([startNode({ broker: redis.url }), startNode({ broker: redis.url })]);
  const ch = `failover-${Date.now()}`;
  const N = 400;

  let tokens = 0;
  const sub = client([a.url, b.url], {
    getToken: async () => (tokens++, token("watcher", 600)),
    backoffBase: 100,
    backoffCap: 1000,
    random: () => 0.99, // the first reconnect waits ~100 ms: publications land meanwhile
  });
  const pub = client(b.url, { token: token("publisher", 600) });
  const seqs = [];
  const offsets = [];
  const events = [];
  let away = null; // [disconnected at, subscribed again at]
  sub.on("disconnected", (e) => {
    events.push({ disconnected: e });
    away = [Date.now(), 0];
  });
  sub.on("connected", (e) => events.push({ connected: e.client }));
  try {
    await Promise.all([connected(sub), connected(pub)]);
    const firstClient = sub.info.client;
    const s = sub.subscribe(ch, {
      onPublication: (p) => {
        seqs.push(p.data.seq);
        offsets.push(p.offset);
      },
      onSubscribed: (e) => {
        events.push({ subscribed: e });
        if (away) away[1] = Date.now();
      },
      onUnrecovered: (e) => events.push({ unrecovered: e }),
    });
    await withTimeout(s.once("subscribed"), 3000, "subscribed");

    const published = []; // [seq, offset, published at]
    let killedAt = 0;
    for (let seq = 1; seq <= N; seq++) {
      const { offset } = await pub.publish(ch, { seq });
      published.push([seq, offset, Date.now()]);
      if (seq === 100) {
        // Only once the subscriber has had some: it then has a position to recover from.
        await waitFor(() => seqs.length >= 50, 3000, "50 publications before the kill");
        process.kill(a.pid, "SIGKILL");
        killedAt = Date.now();
        await exited(a.proc);
      }
      await sleep(5);
    }
    await waitFor(() => seqs.length >= N, 10000, `all ${N} publications (have ${seqs.length})`);
    await sleep(200); // a duplicate would come now

    const counts = new Map();
    for (const x of seqs) counts.set(x, (counts.get(x) ?? 0) + 1);
    const lost = published.filter(([x]) => !counts.has(x)).length;
    const duplicated = [...counts.values()].filter((n) => n > 1).length;
    assert.equal(lost, 0, "lost");
    assert.equal(duplicated, 0, "duplicated");
    assert.deepEqual(seqs, published.map(([x]) => x), "in publish order");
    assert.deepEqual(offsets, published.map(([, o]) => o), "offsets as published");

    // What happened in between: one disconnect (1006, reconnect), a reconnect to B within the
    // backoff bound, a recovering subscribe that recovered, and publications made meanwhile.
    const kinds = events.map((e) => Object.keys(e)[0]);
    assert.deepEqual(kinds, ["connected", "subscribed", "disconnected", "connected", "subscribed"]);
    assert.deepEqual(events[2].disconnected, { code: 1006, reason: "", reconnect: true });
    assert.notEqual(events[3].connected, firstClient);
    assert.equal(events[4].subscribed.recovering, true);
    assert.equal(events[4].subscribed.recovered, true);
    const reconnectMs = away[1] - killedAt;
    assert.ok(reconnectMs < 1500, `resubscribed ${reconnectMs} ms after the kill`);
    const meanwhile = published.filter(([, , t]) => t > away[0] && t < away[1]).length;
    assert.ok(meanwhile > 0, "publications were made while the subscriber was away");
    assert.equal(tokens, 1, "a reconnect after 1006 reuses the token");
    t.diagnostic(`reconnected and resubscribed in ${reconnectMs} ms; ${meanwhile} publications made meanwhile, recovered`);
  } finally {
    sub.disconnect();
    pub.disconnect();
  }
});
