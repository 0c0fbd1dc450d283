// The client in headless Chromium (Debian's /usr/bin/chromium driven by playwright-core; no
// browser download): a page served by a tiny static server imports clients/js/c10m.js as an ES
// module with no build step, connects to a c10m node (Redis, two nodes) with 3-second tokens it
// gets from node (refreshed before they expire), subscribes, receives what node publishes, and
// survives a kill -9 of its node: it reconnects to the other and recovers what it missed.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { chromium } from "playwright-core";

import { client, connected, exited, sleep, startNode, startRedis, stopAll, token, waitFor } from "./support.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>c10m client test</title>
<link rel="icon" href="data:,">
<script type="module">
  import { Client } from "/c10m.js";
  const log = (window.log = { events: [], pubs: [] });
  window.start = (urls, channel) => {
    const c = new Client(urls, {
      getToken: () => window.issueToken(),
      backoffBase: 100,
      backoffCap: 1000,
      random: () => 0.99,
    });
    for (const type of ["connected", "disconnected", "refreshed", "error"]) {
      c.on(type, (e) => log.events.push({ type, at: Date.now(), e: JSON.parse(JSON.stringify(e ?? null)) }));
    }
    c.subscribe(channel, {
      onPublication: (p) => log.pubs.push({ offset: p.offset, seq: p.data.seq }),
      onSubscribed: (e) => log.events.push({ type: "subscribed", at: Date.now(), e }),
      onUnrecovered: (e) => log.events.push({ type: "unrecovered", at: Date.now(), e }),
    });
    c.connect();
    window.client = c;
  };
  window.ready = true;
</script>`;

const servers = [];
let browser;
after(async () => {
  await browser?.close();
  for (const s of servers) s.close();
  await stopAll();
});

function serveStatic() {
  const js = readFileSync(new URL("../c10m.js", import.meta.url));
  const server = createServer((req, res) => {
    if (req.url === "/c10m.js") {
      res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" });
      res.end(js);
    } else if (req.url === "/" || req.url === "/index.html") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(PAGE);
    } else {
      res.writeHead(404).end();
    }
  });
  servers.push(server);
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${server.address().port}/`)));
}

test("headless Chromium: subscribe, receive, refresh the token, survive kill -9 of its node with recovery", async () => {
  const redis = await startRedis();
  const [a, b] = await Promise.all([startNode({ broker: redis.url }), startNode({ broker: redis.url })]);
  const base = await serveStatic();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ], // playwright gives it a fresh profile directory
  });
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && pageErrors.push(m.text()));
  const TTL = 3;
  const issued = [];
  await page.exposeFunction("issueToken", () => {
    const t = token("browser", TTL);
    issued.push(JSON.parse(Buffer.from(t.split(".")[1], "base64url")).exp);
    return t;
  });
  await page.goto(base);
  await page.waitForFunction(() => window.ready === true);

  const ch = `browser-${Date.now()}`;
  const pub = client(b.url, { token: token("publisher", 600) });
  try {
    await connected(pub);
    await page.evaluate(([urls, channel]) => window.start(urls, channel), [[a.url, b.url], ch]);
    const log = () => page.evaluate(() => window.log);
    await waitFor(async () => (await log()).events.some((e) => e.type === "subscribed"), 5000, "subscribed in the page");

    const N = 300;
    const published = [];
    let killedAt = 0;
    for (let seq = 1; seq <= N; seq++) {
      published.push((await pub.publish(ch, { seq })).offset);
      if (seq === 60) {
        await waitFor(async () => (await log()).pubs.length >= 30, 3000, "30 publications in the page");
        process.kill(a.pid, "SIGKILL");
        killedAt = Date.now();
        await exited(a.proc);
      }
      await sleep(15);
    }
    await waitFor(async () => (await log()).pubs.length >= N, 10000, `all ${N} publications in the page`);
    await sleep(200);
    const { events, pubs } = await log();

    assert.deepEqual(pubs.map((p) => p.seq), Array.from({ length: N }, (_, i) => i + 1), "each once, in order");
    assert.deepEqual(pubs.map((p) => p.offset), published);
    const kinds = events.filter((e) => e.type !== "refreshed").map((e) => e.type);
    assert.deepEqual(kinds, ["connected", "subscribed", "disconnected", "connected", "subscribed"]);
    const [disc] = events.filter((e) => e.type === "disconnected");
    assert.equal(disc.e.code, 1006);
    assert.equal(disc.e.reconnect, true);
    const resub = events.filter((e) => e.type === "subscribed")[1];
    assert.equal(resub.e.recovering, true);
    assert.equal(resub.e.recovered, true);
    assert.ok(resub.at - killedAt < 2000, `resubscribed ${resub.at - killedAt} ms after the kill`);
    // The connection made after the kill outlives the token it was made with (the reconnect
    // reuses the token unless it is about to expire): refreshed in time, never closed.
    const last = events.filter((e) => e.type === "connected").at(-1);
    const deadline = last.e.expires * 1000;
    assert.ok(issued.includes(last.e.expires));
    await waitFor(() => Date.now() > deadline + 1000, 5000, "the token's expiry");
    await pub.publish(ch, { seq: N + 1 });
    await waitFor(async () => (await log()).pubs.length > N, 3000, "a publication after the expiry");
    const later = (await log()).events;
    assert.deepEqual(later.filter((e) => e.type !== "refreshed").map((e) => e.type), kinds, "no disconnect since");
    const refreshed = later.filter((e) => e.type === "refreshed" && e.at >= last.at);
    assert.ok(refreshed.length >= 1 && refreshed[0].at < deadline, "refreshed before the token expired");
    assert.ok(refreshed[0].e.expires > last.e.expires);
    assert.deepEqual(pageErrors, []);
  } finally {
    pub.disconnect();
  }
});
