// The demo room (c10m serve's /demo/ over /signal/v1) in headless Chromium with fake camera and
// microphone: three participants each decode both others' video and receive their audio, a
// leaver's tile disappears, and twenty join/leave cycles of a fourth renegotiate cleanly (it
// decodes the others and they decode it).
// With `sfu`, the same through the server's SFU (/demo/?sfu=1): one peer connection per page,
// with the server, which forwards the others' tracks and renegotiates as they come and go.
// Usage: node demo.mjs http://127.0.0.1:PORT [relay] [sfu]
// Exits 0 when every check holds, 1 otherwise (each failure printed).
import { chromium } from "playwright-core";

const base = process.argv[2];
const flags = process.argv.slice(3);
const relay = flags.includes("relay");
const sfu = flags.includes("sfu");
if (!base || flags.some((f) => f !== "relay" && f !== "sfu")) {
  console.error("usage: node demo.mjs http://HOST:PORT [relay] [sfu]");
  process.exit(2);
}
const room = `t${Date.now()}`;
const url = `${base}/demo/?room=${room}&autojoin=1${relay ? "&relay=1" : ""}${sfu ? "&sfu=1" : ""}`;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
  ],
});

let failed = 0;
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failed += 1;
}

// Decoded video frames and received audio bytes per remote participant of a page (audio: the
// inbound RTP of the audio tracks in that participant's tile, from any peer connection).
async function media(page) {
  return page.evaluate(async () => {
    const audioBytes = new Map(); // track id -> bytes received
    for (const pc of window.c10mDemo.pcs()) {
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") {
          audioBytes.set(s.trackIdentifier, (audioBytes.get(s.trackIdentifier) ?? 0) + s.bytesReceived);
        }
      });
    }
    const out = {};
    for (const v of document.querySelectorAll("video[data-remote]")) {
      const audio = (v.srcObject?.getAudioTracks() ?? []).reduce((n, t) => n + (audioBytes.get(t.id) ?? 0), 0);
      out[v.getAttribute("data-remote")] = { frames: v.getVideoPlaybackQuality().totalVideoFrames, audio };
    }
    return out;
  });
}

// What a page's peer connections say, printed when a media check fails: connection states and,
// per inbound stream, packets, frames and keyframe requests.
async function diagnose(page, i) {
  const lines = await page.evaluate(async () => {
    const out = [];
    for (const pc of window.c10mDemo.pcs()) {
      out.push(`pc ${pc.connectionState}/${pc.iceConnectionState}`);
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp") {
          out.push(`  in ${s.kind} ssrc ${s.ssrc}: ${s.packetsReceived} packets, ${s.packetsLost} lost, ` +
            `${s.framesDecoded ?? "-"} frames (${s.keyFramesDecoded ?? "-"} key), ${s.pliCount ?? "-"} PLI, ${s.nackCount ?? "-"} NACK`);
        }
      });
    }
    return out;
  });
  for (const l of lines) console.log(`     page ${i}: ${l}`);
}

// Waits (bounded, 30 s) until `cond(page)` holds.
async function until(page, what, cond) {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (await cond(page)) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  check(false, `${what} (timed out)`);
  return false;
}

try {
  const pages = [];
  for (let i = 0; i < 3; i++) {
    const page = await browser.newPage();
    page.on("pageerror", (e) => check(false, `page ${i} error: ${e.message}`));
    await page.goto(url);
    await until(page, `page ${i} joined`, (p) => p.evaluate(() => !!window.c10mDemo?.me));
    pages.push(page);
  }
  // Everyone decodes both others' video, rising, and receives their audio.
  for (const [i, page] of pages.entries()) {
    await until(page, `page ${i} has two remote tiles`, async (p) =>
      (await p.locator("video[data-remote]").count()) === 2);
    const first = await media(page);
    const decoding = await until(page, `page ${i} decodes and hears both others`, async (p) => {
      const now = await media(p);
      const ids = Object.keys(now).filter((id) => now[id].frames !== undefined);
      return ids.length === 2 && ids.every((id) =>
        now[id].frames > (first[id]?.frames ?? 0) + 10 && now[id].audio > 0);
    });
    if (!decoding) await diagnose(page, i);
    const a = await media(page);
    await new Promise((r) => setTimeout(r, 2000));
    const b = await media(page);
    const rates = Object.keys(b).map((id) => ((b[id].frames - (a[id]?.frames ?? 0)) / 2).toFixed(1));
    console.log(`     page ${i}: frames per second decoded from each remote: ${rates.join(", ")}`);
    check(Object.keys(b).every((id) => b[id].frames > a[id].frames), `page ${i}: both remote videos keep decoding`);
  }
  if (relay) {
    // Forced through TURN: every connection's selected pair uses a relayed local candidate.
    const types = await pages[0].evaluate(async () => {
      const out = [];
      for (const pc of window.c10mDemo.pcs()) {
        const stats = await pc.getStats();
        let pair = null;
        stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
        out.push(pair ? stats.get(pair.localCandidateId)?.candidateType : "none");
      }
      return out;
    });
    const pcs = sfu ? 1 : 2;
    check(types.length === pcs && types.every((t) => t === "relay"), `media flows through TURN (local candidates: ${types.join(", ")})`);
  }
  if (sfu) {
    // The active speaker: with only page 0's microphone on, the others are told page 0
    // speaks; then with only page 2's, page 2 (levels from the audio level extension).
    const ids = await Promise.all(pages.map((p) => p.evaluate(() => window.c10mDemo.me)));
    const told = (i, who) => until(pages[i], `page ${i} is told page ${who} speaks`, (p) =>
      p.evaluate((id) => window.c10mDemo.speaker === id, ids[who]));
    const mute = (i, on) => pages[i].evaluate((m) => window.c10mDemo.mute(m), on);
    await mute(1, true);
    await mute(2, true);
    const first = (await told(1, 0)) && (await told(2, 0));
    await mute(0, true);
    await mute(2, false);
    const second = (await told(0, 2)) && (await told(1, 2));
    check(first && second, "the active speaker follows the one microphone on");
    for (const i of [0, 1, 2]) await mute(i, false);
  }
  // The third leaves: its tile disappears from the others.
  const leaver = await pages[2].evaluate(() => window.c10mDemo.me);
  await pages[2].evaluate(() => window.c10mDemo.leave());
  for (const i of [0, 1]) {
    await until(pages[i], `page ${i} drops the leaver's tile`, async (p) =>
      (await p.locator(`video[data-remote="${leaver}"]`).count()) === 0);
  }
  check(true, "a leaver's tile disappears");
  // Twenty join/leave cycles of a fourth participant: each time both others see it and it sees
  // them decode, then it leaves and its tile goes.
  const cycler = await browser.newPage();
  cycler.on("pageerror", (e) => check(false, `cycler error: ${e.message}`));
  let clean = 0;
  for (let n = 0; n < 20; n++) {
    await cycler.goto(url);
    const ok = await until(cycler, `cycle ${n}: the fourth decodes both others`, async (p) => {
      const m = await media(p);
      const ids = Object.keys(m).filter((id) => m[id].frames > 0);
      return ids.length === 2;
    });
    const id = await cycler.evaluate(() => window.c10mDemo.me);
    // And a participant that stays decodes it (through the SFU: on the media section the
    // previous cycler left, reused).
    const seen = await until(pages[0], `cycle ${n}: page 0 decodes the fourth`, async (p) =>
      ((await media(p))[id]?.frames ?? 0) > 0);
    await cycler.evaluate(() => window.c10mDemo.leave());
    const gone = await until(pages[0], `cycle ${n}: its tile goes`, async (p) =>
      (await p.locator(`video[data-remote="${id}"]`).count()) === 0);
    if (ok && seen && gone) clean += 1;
  }
  check(clean === 20, `twenty join/leave cycles renegotiated cleanly (${clean}/20)`);
} catch (e) {
  check(false, `exception: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed === 0 ? 0 : 1);
