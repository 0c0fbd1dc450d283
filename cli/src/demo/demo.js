// The c10m demo room: camera and microphone, one tile per remote participant, join/leave and
// mute, over the signaling service at /signal/v1 (docs/SIGNALING.md). Media flows between
// browsers (a mesh: each pair has a peer connection; the newcomer makes the offers) with the
// ICE servers the server hands out at join, TURN included when configured.
const params = new URLSearchParams(location.search);
const room = params.get("room") || "demo";
const relayOnly = params.get("relay") === "1";
const $ = (id) => document.getElementById(id);
$("room").textContent = `room: ${room}`;

let ws = null;
let me = null;
let local = null;
let iceServers = [];
const peers = new Map(); // id -> { pc, tile }

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
  const label = document.createElement("span");
  label.textContent = id.slice(-6);
  t.append(v, label);
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

async function onSignal(msg) {
  switch (msg.type) {
    case "joined":
      me = msg.id;
      iceServers = msg.ice_servers || [];
      status(`joined as ${me.slice(-6)} with ${msg.participants.length} other(s)`);
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
  ws = new WebSocket(`${scheme}://${location.host}/signal/v1`);
  ws.onopen = () => send({ type: "join", room });
  ws.onmessage = (e) => onSignal(JSON.parse(e.data)).catch((err) => status(String(err)));
  ws.onclose = () => { status("disconnected"); for (const id of [...peers.keys()]) drop(id); $("join").disabled = false; };
  $("leave").disabled = false;
  $("mute").disabled = false;
}

function leave() {
  send({ type: "leave" });
  for (const id of [...peers.keys()]) drop(id);
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
window.c10mDemo = { peers, get me() { return me; }, leave };
