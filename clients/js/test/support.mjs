// What the tests share: HS256 tokens made with node's crypto, `c10m serve` and redis-server
// processes started on free ports (each pid appended to $C10M_JS_PIDS, so scripts/test-js.sh
// kills them on exit even when a test dies), and bounded waits.
import { spawn } from "node:child_process";
import { appendFileSync, mkdtempSync } from "node:fs";
import { createHmac, randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";

import { Client } from "../c10m.js";

export const BIN = process.env.C10M_BIN || new URL("../../../target/release/c10m", import.meta.url).pathname;
export const SECRET = process.env.C10M_TOKEN_HS256_SECRET || randomBytes(16).toString("hex");

const b64url = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");

/** An HS256 JWT for `sub`, expiring in `ttl` seconds (negative: already expired). */
export function token(sub, ttl = 3600, secret = SECRET) {
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url({ sub, exp: Math.floor(Date.now() / 1000) + ttl })}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/** A client of `url` (or list of URLs) with the ws package and small backoff settings. */
export function client(url, options = {}) {
  return new Client(url, { WebSocket, backoffBase: 100, backoffCap: 1000, timeout: 5000, ...options });
}

const started = new Set();
process.on("exit", () => {
  for (const p of started) {
    try {
      p.kill("SIGKILL");
    } catch {
      // gone
    }
  }
});

function track(proc) {
  started.add(proc);
  proc.on("exit", () => started.delete(proc));
  if (process.env.C10M_JS_PIDS) appendFileSync(process.env.C10M_JS_PIDS, `${proc.pid}\n`);
  return proc;
}

/** Kills every process this file started (SIGKILL), and waits for them to exit. */
export async function stopAll() {
  const exits = [...started].map((p) => new Promise((r) => p.once("exit", r)));
  for (const p of started) p.kill("SIGKILL");
  await Promise.all(exits);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Waits until `cond()` is truthy (polled every 20 ms); fails after `ms`. */
export async function waitFor(cond, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with the first line of `proc`'s output matching `re` (its match), or fails. */
function lineMatching(proc, re, ms, what) {
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => done(new Error(`${what}: no ${re} within ${ms} ms; output:\n${out}`)), ms);
    const onData = (chunk) => {
      out += chunk;
      const m = out.match(re);
      if (m) done(null, m);
    };
    const onExit = (code) => done(new Error(`${what} exited (${code}) before ${re}; output:\n${out}`));
    function done(err, m) {
      clearTimeout(timer);
      proc.stdout.off("data", onData);
      proc.stderr.off("data", onData);
      proc.off("exit", onExit);
      if (err) reject(err);
      else resolve(m);
    }
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    proc.on("exit", onExit);
  });
}

/** A redis-server on a free port, without persistence. */
export async function startRedis() {
  for (let tries = 0; ; tries++) {
    const port = await freePort();
    const dir = mkdtempSync(join(process.env.C10M_JS_WORK || tmpdir(), "c10m-js-redis-"));
    const proc = track(
      spawn("redis-server", ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no", "--dir", dir], {
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    proc.stdout.setEncoding("utf8");
    proc.stderr.setEncoding("utf8");
    try {
      await lineMatching(proc, /Ready to accept connections/, 10000, "redis-server");
      proc.stdout.resume();
      proc.stderr.resume();
      return { port, url: `redis://127.0.0.1:${port}`, proc };
    } catch (e) {
      proc.kill("SIGKILL");
      if (tries >= 3) throw e;
    }
  }
}

/** `c10m serve` on 127.0.0.1:0 with HS256 tokens; `url` is its /connection/v1 address. */
export async function startNode({ broker, args = [] } = {}) {
  const argv = ["serve", "--listen", "127.0.0.1:0", "--shards", "1", ...args];
  if (broker) argv.push("--broker", broker);
  const proc = track(
    spawn(BIN, argv, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, C10M_TOKEN_HS256_SECRET: SECRET, C10M_LOG_LEVEL: "warn" },
    }),
  );
  proc.stdout.setEncoding("utf8");
  proc.stderr.setEncoding("utf8");
  const m = await lineMatching(proc, /c10m: client protocol on (ws:\/\/[0-9.:]+\/connection\/v1) \(/, 10000, "c10m serve");
  proc.stdout.resume();
  proc.stderr.resume();
  return { url: m[1], proc, pid: proc.pid };
}

/** Resolves when `proc` has exited. */
export function exited(proc) {
  return proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : new Promise((r) => proc.once("exit", r));
}

/** A connected client (rejects if `connected` does not come within 5 s). */
export async function connected(c) {
  const ready = c.once("connected");
  c.connect();
  return withTimeout(ready, 5000, "connected");
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}
