// The demo room (c10m serve's /demo/ over /signal/v1) in headless Chromium with fake camera and
// microphone: three participants each decode both others' video and receive their audio, a
// leaver's tile disappears, and twenty join/leave cycles of a fourth renegotiate cleanly (it
// decodes the others and they decode it).
// With `sfu`, the same through the server's SFU (/demo/?sfu=1): one peer connection per page,
// with the server, which forwards the others' tracks and renegotiates as they come and go;
// the active speaker is announced.
// With `simulcast` (through the SFU), two pages instead: both publish their camera in two
// simulcast layers ("h", half size, and "f"), and page 0 asks for page 1's "h", then "f", then
// the best one sent (&simulcast=1); the three-page run above publishes one layer.
// Usage: node demo.mjs http://127.0.0.1:PORT [relay] [sfu] [simulcast]
// Exits 0 when every check holds, 1 otherwise (each failure printed).
import { chromium } from "playwright-core";

const base = process.argv[2];
const flags = process.argv.slice(3);
const relay = flags.includes("relay");
const simulcast = flags.includes("simulcast");
const sfu = flags.includes("sfu") || simulcast;
if (!base || flags.some((f) => !["relay", "sfu", "simulcast"].includes(f))) {
  console.error("usage: node demo.mjs http://HOST:PORT [relay] [sfu] [simulcast]");
  process.exit(2);
}
const room = `t${Date.now()}`;
const url = `${base}/demo/?room=${room}&autojoin=1${relay ? "&relay=1" : ""}` +
  `${sfu ? "&sfu=1" : ""}${simulcast ? "&simulcast=1" : ""}`;

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

// Simulcast through the SFU: page 0 asks for page 1's "h" layer, then its "f", then the best one
// sent; each time what page 0 decodes has the width page 1 sends on that layer (read from page
// 1's own outbound stats, so a resolution its encoder adapts under load still matches), and it
// keeps decoding across the switches.
async function simulcastChecks() {
  const pages = [];
  for (let i = 0; i < 2; i++) {
    const page = await browser.newPage();
    page.on("pageerror", (e) => check(false, `page ${i} error: ${e.message}`));
    await page.goto(url);
    await until(page, `page ${i} joined`, (p) => p.evaluate(() => !!window.c10mDemo?.me));
    pages.push(page);
  }
  const ids = await Promise.all(pages.map((p) => p.evaluate(() => window.c10mDemo.me)));
  const decoding = await until(pages[0], "page 0 decodes page 1", async (p) =>
    ((await media(p))[ids[1]]?.frames ?? 0) > 10);
  if (!decoding) await diagnose(pages[0], 0);
  const sentWidth = (rid) => pages[1].evaluate(async (r) => {
    let w = null;
    (await window.c10mDemo.pcs()[0].getStats()).forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video" && s.rid === r) w = s.frameWidth ?? null;
    });
    return w;
  }, rid);
  const seenWidth = () => pages[0].evaluate((id) =>
    document.querySelector(`video[data-remote="${id}"]`)?.videoWidth ?? 0, ids[1]);
  const widths = {};
  for (const rid of ["h", "f"]) {
    await pages[0].evaluate(([id, r]) => window.c10mDemo.layer(id, r), [ids[1], rid]);
    const ok = await until(pages[0], `page 0 decodes page 1's layer ${rid}`, async () => {
      const [sent, seen] = [await sentWidth(rid), await seenWidth()];
      widths[rid] = { sent, seen };
      return sent > 0 && seen === sent;
    });
    if (!ok) await diagnose(pages[0], 0);
  }
  console.log(`     widths sent by page 1 and decoded by page 0, per layer: ${JSON.stringify(widths)}`);
  check(widths.h?.seen === widths.h?.sent && widths.f?.seen === widths.f?.sent && widths.h.sent < widths.f.sent,
    "page 0 receives the layer of page 1 it asks for, h then f");
  // Back to the best one sent: the widest.
  await pages[0].evaluate((id) => window.c10mDemo.layer(id, null), ids[1]);
  const before = await media(pages[0]);
  const best = await until(pages[0], "page 0 decodes page 1's widest layer and keeps decoding", async (p) =>
    ((await media(p))[ids[1]]?.frames ?? 0) > (before[ids[1]]?.frames ?? 0) + 10 &&
    (await seenWidth()) === (await sentWidth("f")));
  check(best, "with no layer asked for, page 0 receives page 1's widest");
  // And the other way round, page 1 decodes page 0 (both publish simulcast).
  check(await until(pages[1], "page 1 decodes page 0", async (p) =>
    ((await media(p))[ids[0]]?.frames ?? 0) > 10), "page 1 decodes page 0");
}

try {
  if (simulcast) {
    await simulcastChecks();
    await browser.close();
    process.exit(failed === 0 ? 0 : 1);
  }
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
  const firsts = []; // per cycle: ms from the late joiner's join to its last first frame
  for (let n = 0; n < 20; n++) {
    await cycler.goto(url);
    const ok = await until(cycler, `cycle ${n}: the fourth decodes both others`, async (p) => {
      const m = await media(p);
      const ids = Object.keys(m).filter((id) => m[id].frames > 0);
      // The count of frames can rise before the page's frame callback runs: wait for both.
      const shown = await p.evaluate(() => Object.keys(window.c10mDemo.firstFrames()).length);
      return ids.length === 2 && shown === 2;
    });
    const shown = await cycler.evaluate(() => window.c10mDemo.firstFrames());
    if (Object.keys(shown).length === 2) firsts.push(Math.max(...Object.values(shown)));
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
  // A late joiner's first frame: from its join to the first frame of each of the two others,
  // the later of the two, per cycle; the median of the cycles within 2 s (a median, so that one
  // cycle slowed by a loaded machine does not decide).
  firsts.sort((a, b) => a - b);
  const median = firsts.length ? firsts[Math.floor(firsts.length / 2)] : Infinity;
  console.log(`     late joiner, join to first frame of both others: median ${median.toFixed(0)} ms, ` +
    `max ${(firsts.at(-1) ?? Infinity).toFixed(0)} ms over ${firsts.length} cycles`);
  check(firsts.length === 20 && median <= 2000, `a late joiner's first frames within 2 s (median of ${firsts.length} cycles)`);
} catch (e) {
  check(false, `exception: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed === 0 ? 0 : 1);
