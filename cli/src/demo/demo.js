// The c10m demo room: camera and microphone, one tile per remote participant, join/leave and
// mute, over the signaling service at /signal/v1 (docs/SIGNALING.md). Media flows between
// browsers (a mesh: each pair has a peer connection; the newcomer makes the offers) with the
// ICE servers the server hands out at join, TURN included when configured.
// With ?sfu=1 media goes through the server's SFU instead: one peer connection with the server
// (addressed as "sfu"), which forwards everyone's tracks, each in a stream named by its
// publisher's id, and renegotiates (the server offers) as participants come and go. With
// &simulcast=1 the camera is published in two simulcast layers ("h": half the resolution, "f":
// full) and each remote tile has a layer choice: auto (the best the publisher sends), f or h;
// the server switches on the next keyframe of the chosen layer.
const params = new URLSearchParams(location.search);
const room = params.get("room") || "demo";
const relayOnly = params.get("relay") === "1";
const sfuMode = params.get("sfu") === "1";
const simulcast = sfuMode && params.get("simulcast") === "1";
// The simulcast layers published through the SFU, by RTP stream id.
const LAYERS = [
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 300_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_200_000 },
];
const $ = (id) => document.getElementById(id);
$("room").textContent = `room: ${room}`;

let ws = null;
let me = null;
let local = null;
let iceServers = [];
const peers = new Map(); // id -> { pc, tile }
let speaker = null; // SFU mode: the active speaker's id
let sfu = null; // SFU mode: the peer connection with the server
let queue = Promise.resolve(); // signaling messages are handled one at a time, in order
let joinedAt = null; // when the server said "joined" (performance.now())
const firstFrames = new Map(); // remote id -> when its first video frame was presented

function status(text) { $("status").textContent = text; }

function send(msg) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); }

function tile(id) {
  let t = document.querySelector(`.tile[data-peer="${CSS.escape(id)}"]`);
  if (t) return t;
  t = document.createElement("div");
  t.className = "tile";
  t.dataset.peer = id;
  const v = document.createElement("video");
  v.autoplay = true;
  v.playsInline = true;
  v.setAttribute("data-remote", id);
  const first = (now) => { if (!firstFrames.has(id)) firstFrames.set(id, now); };
  if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(first);
  const label = document.createElement("span");
  label.textContent = id.slice(-6);
  t.append(v, label);
  if (sfuMode) {
    // The layer of this participant's video to receive (when it publishes simulcast).
    const choice = document.createElement("select");
    choice.className = "layer";
    for (const rid of ["auto", ...LAYERS.map((l) => l.rid).reverse()]) choice.add(new Option(rid, rid));
    choice.onchange = () => chooseLayer(id, choice.value === "auto" ? null : choice.value);
    t.append(choice);
  }
  $("tiles").append(t);
  return t;
}

function peer(id) {
  let p = peers.get(id);
  if (p) return p;
  const pc = new RTCPeerConnection({
    iceServers,
    iceTransportPolicy: relayOnly ? "relay" : "all",
  });
  for (const track of local.getTracks()) pc.addTrack(track, local);
  pc.onicecandidate = (e) => {
    if (e.candidate) send({ type: "candidate", to: id, candidate: e.candidate.toJSON() });
  };
  pc.ontrack = (e) => {
    const v = tile(id).querySelector("video");
    if (v.srcObject !== e.streams[0]) v.srcObject = e.streams[0];
  };
  p = { pc, pending: [] };
  peers.set(id, p);
  return p;
}

function drop(id) {
  const p = peers.get(id);
  if (p) p.pc.close();
  peers.delete(id);
  document.querySelector(`.tile[data-peer="${CSS.escape(id)}"]`)?.remove();
}

async function call(id) {
  const { pc } = peer(id);
  await pc.setLocalDescription(await pc.createOffer());
  send({ type: "offer", to: id, sdp: pc.localDescription.sdp });
}

// SFU mode: publish our tracks (sendonly) in the first offer; the tracks of the others arrive
// in the server's later offers, each in a stream whose id is its publisher's.
async function startSfu() {
  const pc = new RTCPeerConnection({
    iceServers,
    iceTransportPolicy: relayOnly ? "relay" : "all",
  });
  sfu = pc;
  for (const track of local.getTracks()) {
    const init = { direction: "sendonly", streams: [local] };
    if (simulcast && track.kind === "video") init.sendEncodings = LAYERS;
    pc.addTransceiver(track, init);
  }
  pc.ontrack = (e) => {
    const stream = e.streams[0];
    if (!stream) return;
    const v = tile(stream.id).querySelector("video");
    if (v.srcObject !== stream) v.srcObject = stream;
  };
  await pc.setLocalDescription(await pc.createOffer());
  send({ type: "offer", to: "sfu", sdp: pc.localDescription.sdp });
}

// Asks the SFU for `id`'s simulcast layer `rid` (null: the best one it sends).
function chooseLayer(id, rid) {
  send({ type: "layer", publisher: id, rid });
  const choice = document.querySelector(`.tile[data-peer="${CSS.escape(id)}"] select.layer`);
  if (choice) choice.value = rid ?? "auto";
}

async function onSfuSignal(msg) {
  if (msg.type === "offer") {
    await sfu.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    await sfu.setLocalDescription(await sfu.createAnswer());
    send({ type: "answer", to: "sfu", sdp: sfu.localDescription.sdp });
  } else if (msg.type === "answer") {
    await sfu.setRemoteDescription({ type: "answer", sdp: msg.sdp });
  }
}

async function onSignal(msg) {
  if (msg.from === "sfu" && sfu) return onSfuSignal(msg);
  switch (msg.type) {
    case "joined":
      joinedAt = performance.now();
      firstFrames.clear();
      me = msg.id;
      iceServers = msg.ice_servers || [];
      status(`joined as ${me.slice(-6)} with ${msg.participants.length} other(s)${sfuMode ? " through the SFU" : ""}`);
      if (sfuMode) {
        await startSfu();
        break;
      }
      // The newcomer offers to everyone already there.
      for (const id of msg.participants) await call(id);
      break;
    case "participant-joined":
      if (msg.id !== me) status(`${msg.id.slice(-6)} joined`);
      break;
    case "participant-left":
      drop(msg.id);
      status(`${msg.id.slice(-6)} left`);
      break;
    case "offer": {
      const p = peer(msg.from);
      await p.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
      for (const c of p.pending.splice(0)) await p.pc.addIceCandidate(c);
      await p.pc.setLocalDescription(await p.pc.createAnswer());
      send({ type: "answer", to: msg.from, sdp: p.pc.localDescription.sdp });
      break;
    }
    case "answer": {
      const p = peers.get(msg.from);
      if (!p) break;
      await p.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      for (const c of p.pending.splice(0)) await p.pc.addIceCandidate(c);
      break;
    }
    case "candidate": {
      const p = peer(msg.from);
      if (p.pc.remoteDescription) await p.pc.addIceCandidate(msg.candidate);
      else p.pending.push(msg.candidate);
      break;
    }
    case "active-speaker":
      // Through the SFU: the loudest participant (it may be us: only others have a tile).
      speaker = msg.id;
      for (const t of document.querySelectorAll(".tile")) {
        t.classList.toggle("speaking", t.getAttribute("data-peer") === speaker);
      }
      break;
    case "error":
      status(`error ${msg.code}: ${msg.message}`);
      break;
  }
}

async function join() {
  $("join").disabled = true;
  local = local || await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  $("local").srcObject = local;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // The room in the URL too: a load balancer routes by it, so that every participant of a room
  // reaches the node whose SFU carries it (deploy/nginx.conf).
  ws = new WebSocket(`${scheme}://${location.host}/signal/v1?room=${encodeURIComponent(room)}`);
  ws.onopen = () => send(sfuMode ? { type: "join", room, mode: "sfu" } : { type: "join", room });
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    queue = queue.then(() => onSignal(msg)).catch((err) => status(String(err)));
  };
  ws.onclose = () => { status("disconnected"); dropAll(); $("join").disabled = false; };
  $("leave").disabled = false;
  $("mute").disabled = false;
}

function dropAll() {
  for (const id of [...peers.keys()]) drop(id);
  sfu?.close();
  sfu = null;
  for (const t of document.querySelectorAll(".tile[data-peer]")) t.remove();
}

function leave() {
  send({ type: "leave" });
  dropAll();
  ws?.close();
  ws = null;
  $("leave").disabled = true;
  $("join").disabled = false;
}

$("join").onclick = () => join().catch((err) => status(String(err)));
$("leave").onclick = leave;
$("mute").onclick = () => {
  for (const t of local.getAudioTracks()) t.enabled = !t.enabled;
  $("mute").textContent = local.getAudioTracks()[0]?.enabled ? "Mute" : "Unmute";
};
// For tests and scripts: join at once with ?autojoin=1.
if (params.get("autojoin") === "1") $("join").click();
window.c10mDemo = {
  peers,
  get me() { return me; },
  get speaker() { return speaker; },
  // Mutes or unmutes this page's microphone (the Mute button).
  mute(on) { for (const t of local.getAudioTracks()) t.enabled = !on; },
  // Every peer connection of this page (one per remote in a mesh, the one with the SFU).
  pcs() { return sfu ? [sfu] : [...peers.values()].map((p) => p.pc); },
  leave,
  // Per remote participant, ms from this page's join to its first video frame shown.
  firstFrames() {
    return Object.fromEntries([...firstFrames].map(([id, t]) => [id, t - joinedAt]));
  },
  // SFU mode: receive participant `id`'s simulcast layer `rid` (null: the best it sends).
  layer: chooseLayer,
};
