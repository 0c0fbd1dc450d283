//! A participant of a c10m SFU room: signaling over `/signal/v1` (tungstenite) and a webrtc-rs
//! sans-IO peer connection (`rtc`, full ICE, the controlling side) on its own UDP socket,
//! driven by [`SfuClient::step`]. It publishes an Opus and a VP8 track (sendonly), answers the
//! SFU's offers, and hands what it receives to the caller. Used by `c10m-loadtest sfu` and by
//! the tests.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use c10m_signaling::sfu::keyframe::{KeyframeRequests, is_keyframe_request};
use c10m_signaling::sfu::peer::{codec, host_candidate};
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use serde_json::{Value, json};
use tungstenite::Message;

type Ws = tungstenite::WebSocket<TcpStream>;

/// How often [`SfuClient::step`] reads the signaling socket.
const SIGNALING_POLL: Duration = Duration::from_millis(5);

/// Why a participant stopped.
pub type ClientError = String;

/// A track this client publishes.
#[derive(Debug)]
struct Sender {
    id: RTCRtpSenderId,
    kind: RtpCodecKind,
    /// Its encodings: (rid, SSRC, last sequence number); one with an empty rid without
    /// simulcast.
    layers: Vec<(String, u32, u16)>,
}

/// What a subscriber counting by header has seen.
#[derive(Debug, Default)]
struct ByHeader {
    /// The SSRCs RTP arrived on.
    ssrcs: Vec<u32>,
    /// (SSRC, sequence number) of the packets with the marker bit set.
    marked: HashSet<(u32, u16)>,
}

/// Whether a datagram is RTP (RFC 5761: version 2, and a second byte that is not an RTCP
/// packet type), with a whole fixed header.
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] & 0xc0 == 0x80 && !(64..=95).contains(&(d[1] & 0x7f))
}

/// The simulcast layers a [`SfuClient::join_simulcast`] participant publishes its video as.
pub const LAYERS: [&str; 2] = ["h", "f"];

/// The header extension ids a simulcast layer's packets carry (the MID and the RID: how the
/// SFU learns which SSRC is which layer), as this client's offer numbered them.
#[derive(Debug, Clone, Copy)]
struct LayerExtensions {
    mid: u8,
    rid: u8,
}

/// One participant.
pub struct SfuClient {
    ws: Ws,
    /// Its participant id.
    pub id: String,
    pc: RTCPeerConnection,
    udp: UdpSocket,
    local: SocketAddr,
    senders: Vec<Sender>,
    /// With simulcast: the extension ids and the video section's mid.
    simulcast: Option<(LayerExtensions, String)>,
    /// Percent of incoming SRTP/SRTCP datagrams dropped (a lossy path), and how many arrived.
    loss_percent: u32,
    datagrams_in: u64,
    /// Counting received RTP by header instead of handing it to the peer connection.
    by_header: Option<ByHeader>,
    /// The peer connection's next timer, as of the last step.
    next_timer: Option<Instant>,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// When they first were.
    pub connected_at: Option<Instant>,
    /// Keyframe requests (PLI, FIR) received from the SFU and not yet taken.
    keyframe_requests: u64,
    /// The connection failed.
    pub failed: bool,
    /// Remote tracks opened (the others' tracks the SFU forwards).
    pub tracks_opened: u64,
    /// RTP packets received.
    pub rtp_received: u64,
    /// Offers of the SFU answered.
    pub offers_answered: u64,
    /// Errors the server sent.
    pub errors: Vec<String>,
    /// The payloads of the video packets received since the last [`SfuClient::take_video`]
    /// (kept only with [`SfuClient::keep_video`]).
    video: Vec<Bytes>,
    keep_video: bool,
    /// When the signaling socket is read next (every few milliseconds, not every step: with
    /// hundreds of participants in one loop, a read per step is most of the loop's syscalls).
    next_signaling: Instant,
}

impl std::fmt::Debug for SfuClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuClient")
            .field("id", &self.id)
            .field("connected", &self.connected)
            .field("rtp_received", &self.rtp_received)
            .finish_non_exhaustive()
    }
}

fn peer_connection() -> Result<RTCPeerConnection, ClientError> {
    let mut media = MediaEngine::default();
    for (kind, pt) in [(RtpCodecKind::Audio, 111), (RtpCodecKind::Video, 96)] {
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: codec(kind),
                    payload_type: pt,
                },
                kind,
            )
            .map_err(|e| e.to_string())?;
    }
    // Keyframe requests from the SFU reach this client (a publisher answers them).
    let registry = Registry::new().with(Slot::from(14_000), KeyframeRequests::default());
    let registry =
        register_default_interceptors(registry, &mut media).map_err(|e| e.to_string())?;
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    RTCPeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .map_err(|e| e.to_string())
}

fn send_json(ws: &mut Ws, v: Value) -> Result<(), ClientError> {
    match ws.send(Message::text(v.to_string())) {
        Ok(()) => Ok(()),
        // Queued in tungstenite: flushed by the next step.
        Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(format!("signaling: {e}")),
    }
}

/// `s` as a URL query value: every byte but the unreserved ones (RFC 3986) percent-encoded.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl SfuClient {
    /// Joins `room` through the SFU of the server at `server` (`path`: its signaling route) and
    /// sends its offer: an audio and a video track, sendonly, SSRCs `ssrc_base` and
    /// `ssrc_base + 1`.
    pub fn join(
        server: SocketAddr,
        path: &str,
        room: &str,
        ssrc_base: u32,
    ) -> Result<SfuClient, ClientError> {
        Self::join_with(server, path, room, ssrc_base, false)
    }

    /// As [`SfuClient::join`], with the video published as the simulcast [`LAYERS`] (SSRCs
    /// `ssrc_base + 1` and `ssrc_base + 2`), sent with [`SfuClient::send_layer`].
    pub fn join_simulcast(
        server: SocketAddr,
        path: &str,
        room: &str,
        ssrc_base: u32,
    ) -> Result<SfuClient, ClientError> {
        Self::join_with(server, path, room, ssrc_base, true)
    }

    fn join_with(
        server: SocketAddr,
        path: &str,
        room: &str,
        ssrc_base: u32,
        simulcast: bool,
    ) -> Result<SfuClient, ClientError> {
        let io = |e: std::io::Error| format!("signaling: {e}");
        let stream = TcpStream::connect(server).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        // The room in the URL too, as the demo page does: a load balancer in front of a cluster
        // routes a room's participants to one node by it (deploy/nginx.conf).
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("ws://{server}{path}{sep}room={}", query_escape(room));
        let (mut ws, _) =
            tungstenite::client(url, stream).map_err(|e| format!("signaling handshake: {e}"))?;
        send_json(
            &mut ws,
            json!({"type": "join", "room": room, "mode": "sfu"}),
        )?;
        let id = loop {
            let Message::Text(t) = ws.read().map_err(|e| format!("signaling: {e}"))? else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
            match v["type"].as_str() {
                Some("joined") => break v["id"].as_str().unwrap_or_default().to_owned(),
                Some("error") => return Err(format!("join refused: {v}")),
                _ => {}
            }
        };
        // From here on the signaling socket is polled.
        ws.get_mut().set_nonblocking(true).map_err(io)?;
        let mut pc = peer_connection()?;
        let mut senders = Vec::new();
        for (i, kind) in [RtpCodecKind::Audio, RtpCodecKind::Video]
            .into_iter()
            .enumerate()
        {
            let rids: Vec<&str> = if simulcast && kind == RtpCodecKind::Video {
                LAYERS.to_vec()
            } else {
                vec![""]
            };
            let layers: Vec<(String, u32, u16)> = rids
                .iter()
                .enumerate()
                .map(|(l, rid)| (rid.to_string(), ssrc_base.wrapping_add((i + l) as u32), 0))
                .collect();
            let encodings = layers
                .iter()
                .map(|(rid, ssrc, _)| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: rid.clone(),
                        ssrc: Some(*ssrc),
                        ..Default::default()
                    },
                    codec: codec(kind),
                    ..Default::default()
                })
                .collect();
            let track = MediaStreamTrack::new(
                id.clone(),
                format!("{id}-{i}"),
                format!("{id} {i}"),
                kind,
                encodings,
            );
            let t = pc
                .add_transceiver_from_track(
                    track,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Sendonly,
                        streams: vec![id.clone()],
                        send_encodings: Vec::new(),
                    }),
                )
                .map_err(|e| e.to_string())?;
            senders.push(Sender {
                id: RTCRtpSenderId::from(t),
                kind,
                layers,
            });
        }
        let udp = UdpSocket::bind(SocketAddr::new(server.ip(), 0)).map_err(io)?;
        udp.set_nonblocking(true).map_err(io)?;
        let local = udp.local_addr().map_err(io)?;
        let offer = pc.create_offer(None).map_err(|e| e.to_string())?;
        pc.set_local_description(Instant::now(), offer)
            .map_err(|e| e.to_string())?;
        let init = host_candidate(local)?;
        pc.add_local_candidate(init).map_err(|e| e.to_string())?;
        let sdp = pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or("no local description")?;
        let simulcast = if simulcast {
            Some(layer_extensions(&sdp).ok_or("the offer numbers no MID/RID extensions")?)
        } else {
            None
        };
        send_json(&mut ws, json!({"type": "offer", "to": "sfu", "sdp": sdp}))?;
        Ok(SfuClient {
            simulcast,
            loss_percent: 0,
            datagrams_in: 0,
            by_header: None,
            next_timer: None,
            ws,
            id,
            pc,
            udp,
            local,
            senders,
            connected: false,
            connected_at: None,
            keyframe_requests: 0,
            failed: false,
            tracks_opened: 0,
            rtp_received: 0,
            offers_answered: 0,
            errors: Vec::new(),
            video: Vec::new(),
            keep_video: false,
            next_signaling: Instant::now(),
        })
    }

    /// Keeps the payloads of received video packets for [`SfuClient::take_video`].
    pub fn keep_video(&mut self) {
        self.keep_video = true;
    }

    /// Whether the SFU asked for a keyframe since the last call.
    pub fn take_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_requests) > 0
    }

    /// Counts received RTP by its header (SRTP leaves it in the clear) instead of decrypting
    /// it: the SSRCs it arrives on, and the distinct sequence numbers per SSRC of the packets
    /// whose marker bit is set ([`SfuClient::marked_received`]). RTCP, STUN and DTLS still go
    /// to the peer connection.
    pub fn count_by_header(&mut self) {
        self.by_header = Some(ByHeader::default());
    }

    /// The SSRCs RTP arrived on, when counting by header.
    pub fn header_ssrcs(&self) -> Option<&[u32]> {
        self.by_header.as_ref().map(|h| h.ssrcs.as_slice())
    }

    /// Distinct marked packets received, when counting by header (0 otherwise).
    pub fn marked_received(&self) -> u64 {
        self.by_header.as_ref().map_or(0, |h| h.marked.len() as u64)
    }

    /// The payloads of the video packets received since the last call.
    pub fn take_video(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.video)
    }

    /// Does what is due: signaling, datagrams, timers, events. Whether anything happened.
    pub fn step(&mut self) -> Result<bool, ClientError> {
        let signaling = Instant::now() >= self.next_signaling;
        if signaling {
            self.next_signaling = Instant::now() + SIGNALING_POLL;
        }
        self.step_ready(true, signaling)
    }

    /// The UDP socket's and the signaling socket's fds, for a caller that waits for their
    /// readiness (edge-triggered: [`SfuClient::step_ready`] reads each until it would block)
    /// instead of stepping every client in turn.
    pub fn fds(&self) -> (std::os::fd::RawFd, std::os::fd::RawFd) {
        use std::os::fd::AsRawFd;
        (self.udp.as_raw_fd(), self.ws.get_ref().as_raw_fd())
    }

    /// When the peer connection's next timer is due (as of the last step).
    pub fn next_timer(&self) -> Option<Instant> {
        self.next_timer
    }

    /// Does what is due: the UDP socket's datagrams when `udp`, the signaling socket when
    /// `signaling`, the peer connection's timers, events and writes. Whether anything happened.
    pub fn step_ready(&mut self, udp: bool, signaling: bool) -> Result<bool, ClientError> {
        let mut busy = false;
        if signaling {
            busy = self.signaling()?;
        }
        let mut buf = [0u8; 2048];
        let mut reading = udp;
        while reading {
            match self.udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    busy = true;
                    if self.lost(buf[0]) {
                        continue;
                    }
                    if self.connected
                        && let Some(h) = self.by_header.as_mut()
                        && is_rtp(&buf[..n])
                    {
                        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                        if !h.ssrcs.contains(&ssrc) {
                            h.ssrcs.push(ssrc);
                        }
                        if buf[1] & 0x80 != 0 {
                            h.marked
                                .insert((ssrc, u16::from_be_bytes([buf[2], buf[3]])));
                        }
                        self.rtp_received += 1;
                        continue;
                    }
                    let _ = self.pc.handle_read(TaggedBytesMut {
                        now: Instant::now(),
                        transport: TransportContext {
                            local_addr: self.local,
                            peer_addr: from,
                            transport_protocol: TransportProtocol::UDP,
                            ecn: None,
                        },
                        message: BytesMut::from(&buf[..n]),
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => reading = false,
                Err(e) => return Err(format!("udp: {e}")),
            }
        }
        let now = Instant::now();
        if self.pc.poll_timeout().is_some_and(|t| t <= now) {
            let _ = self.pc.handle_timeout(now);
        }
        while let Some(event) = self.pc.poll_event() {
            busy = true;
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => {
                    self.connected = s == RTCPeerConnectionState::Connected;
                    if self.connected && self.connected_at.is_none() {
                        self.connected_at = Some(Instant::now());
                    }
                    self.failed |= s == RTCPeerConnectionState::Failed;
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(_)) => {
                    self.tracks_opened += 1;
                }
                _ => {}
            }
        }
        while let Some(m) = self.pc.poll_read() {
            match m.message {
                RTCMessage::RtpPacket(_, packet) => {
                    self.rtp_received += 1;
                    if self.keep_video && packet.header.payload_type == 96 {
                        self.video.push(packet.payload);
                    }
                }
                RTCMessage::RtcpPacket(_, packets)
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) =>
                {
                    self.keyframe_requests += 1;
                }
                _ => {}
            }
        }
        self.flush();
        self.next_timer = self.pc.poll_timeout();
        Ok(busy)
    }

    fn flush(&mut self) {
        while let Some(w) = self.pc.poll_write() {
            let _ = self.udp.send_to(&w.message, w.transport.peer_addr);
        }
    }

    fn signaling(&mut self) -> Result<bool, ClientError> {
        let mut busy = false;
        match self.ws.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("signaling: {e}")),
        }
        loop {
            let text = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                    return Ok(busy);
                }
                Err(e) => return Err(format!("signaling: {e}")),
            };
            busy = true;
            let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let sdp = v["sdp"].as_str().map(str::to_owned);
            match (v["type"].as_str(), v["from"].as_str(), sdp) {
                (Some("answer"), Some("sfu"), Some(sdp)) => {
                    let answer = RTCSessionDescription::answer(sdp).map_err(|e| e.to_string())?;
                    self.pc
                        .set_remote_description(Instant::now(), answer)
                        .map_err(|e| e.to_string())?;
                }
                (Some("offer"), Some("sfu"), Some(sdp)) => {
                    let offer = RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?;
                    self.pc
                        .set_remote_description(Instant::now(), offer)
                        .map_err(|e| e.to_string())?;
                    let answer = self.pc.create_answer(None).map_err(|e| e.to_string())?;
                    self.pc
                        .set_local_description(Instant::now(), answer)
                        .map_err(|e| e.to_string())?;
                    let sdp = self
                        .pc
                        .local_description()
                        .map(|d| d.sdp)
                        .ok_or("no local description")?;
                    send_json(
                        &mut self.ws,
                        json!({"type": "answer", "to": "sfu", "sdp": sdp}),
                    )?;
                    self.offers_answered += 1;
                }
                (Some("error"), ..) => self.errors.push(v.to_string()),
                _ => {}
            }
        }
    }

    /// Sends a signaling message (a `layer` request, for instance); errors in reply land in
    /// [`SfuClient::errors`].
    pub fn signal(&mut self, v: Value) -> Result<(), ClientError> {
        send_json(&mut self.ws, v)
    }

    /// Sends one RTP packet on each published track: a VP8 payload that starts a keyframe and
    /// an Opus one of silence (the SFU forwards without decoding).
    pub fn send_media(&mut self) {
        self.send(RtpCodecKind::Audio, &[0xf8, 0xff, 0xfe]);
        self.send(
            RtpCodecKind::Video,
            &[0x10, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 0, 0, 0],
        );
    }

    /// Sends one RTP packet with `payload` on the published video track.
    pub fn send_video(&mut self, payload: &[u8]) {
        self.send(RtpCodecKind::Video, payload);
    }

    /// Sends one RTP packet with `payload` on the published track of `kind`.
    pub fn send(&mut self, kind: RtpCodecKind, payload: &[u8]) {
        self.send_on(kind, "", payload, true);
    }

    /// As [`SfuClient::send`], with the RTP marker bit as given (subscribers counting by
    /// header count only marked packets).
    pub fn send_marked(&mut self, kind: RtpCodecKind, payload: &[u8], marker: bool) {
        self.send_on(kind, "", payload, marker);
    }

    /// Sends one RTP packet with `payload` on simulcast layer `rid` of the published video
    /// (a [`SfuClient::join_simulcast`] participant), tagged with its MID and RID.
    pub fn send_layer(&mut self, rid: &str, payload: &[u8]) {
        self.send_on(RtpCodecKind::Video, rid, payload, true);
    }

    fn send_on(&mut self, kind: RtpCodecKind, rid: &str, payload: &[u8], marker: bool) {
        let now = Instant::now();
        let tags = self.simulcast.as_ref().filter(|_| !rid.is_empty());
        if let Some(s) = self.senders.iter_mut().find(|s| s.kind == kind)
            && let Some(layer) = s.layers.iter_mut().find(|l| l.0 == rid)
        {
            layer.2 = layer.2.wrapping_add(1);
            let mut p = rtc::rtp::Packet::default();
            p.header.version = 2;
            p.header.ssrc = layer.1;
            p.header.sequence_number = layer.2;
            p.header.timestamp = u32::from(layer.2).wrapping_mul(3000);
            p.header.payload_type = if kind == RtpCodecKind::Video { 96 } else { 111 };
            p.header.marker = marker;
            if let Some((ids, mid)) = tags {
                let _ = p
                    .header
                    .set_extension(ids.mid, Bytes::copy_from_slice(mid.as_bytes()));
                let _ = p
                    .header
                    .set_extension(ids.rid, Bytes::copy_from_slice(rid.as_bytes()));
            }
            p.payload = Bytes::copy_from_slice(payload);
            if let Some(mut sender) = self.pc.rtp_sender(s.id) {
                let _ = sender.write_rtp(now, p);
            }
        }
        self.flush();
    }

    /// Drops `percent` of the SRTP and SRTCP datagrams that arrive from now on, spread evenly
    /// (a lossy path: the SFU learns of it from this client's transport-wide feedback).
    pub fn set_loss(&mut self, percent: u32) {
        self.loss_percent = percent.min(100);
    }

    /// Whether a datagram starting with `first` is lost to [`SfuClient::set_loss`] (RTP and
    /// RTCP start with 128..=191; STUN and DTLS are never dropped).
    fn lost(&mut self, first: u8) -> bool {
        if self.loss_percent == 0 || !(128..=191).contains(&first) {
            return false;
        }
        self.datagrams_in += 1;
        let n = self.datagrams_in;
        let p = u64::from(self.loss_percent);
        (n * p) / 100 != ((n - 1) * p) / 100
    }

    /// Leaves the room (a `leave`, then the signaling connection and the peer connection close).
    pub fn leave(mut self) {
        let _ = send_json(&mut self.ws, json!({"type": "leave"}));
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
        let _ = self.pc.close();
        self.flush();
    }
}

/// The MID and RID header extension ids an offer numbered, and its video section's mid.
fn layer_extensions(sdp: &str) -> Option<(LayerExtensions, String)> {
    let id_of = |uri: &str| {
        sdp.lines().find_map(|l| {
            let rest = l.strip_prefix("a=extmap:")?;
            let (id, u) = rest.split_once(' ')?;
            (u.trim() == uri).then(|| id.split('/').next()?.parse::<u8>().ok())?
        })
    };
    let mid = id_of("urn:ietf:params:rtp-hdrext:sdes:mid")?;
    let rid = id_of("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id")?;
    let video = sdp.split("m=").find(|s| s.starts_with("video"))?;
    let video_mid = video
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))?
        .trim()
        .to_owned();
    Some((LayerExtensions { mid, rid }, video_mid))
}

/// Steps every client until `done` holds or `limit` passes; whether it held.
pub fn drive(
    clients: &mut [&mut SfuClient],
    limit: Duration,
    mut done: impl FnMut(&[&mut SfuClient]) -> bool,
) -> Result<bool, ClientError> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let mut busy = false;
        for c in clients.iter_mut() {
            busy |= c.step()?;
        }
        if done(clients) {
            return Ok(true);
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_is_told_from_rtcp_and_short_datagrams() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96 | 0x80;
        assert!(is_rtp(&rtp));
        // RTCP sender report (200) and receiver report (201).
        let mut rtcp = rtp;
        rtcp[1] = 200;
        assert!(!is_rtp(&rtcp));
        rtcp[1] = 201;
        assert!(!is_rtp(&rtcp));
        // Not version 2, or cut short.
        let mut v1 = rtp;
        v1[0] = 0x40;
        assert!(!is_rtp(&v1));
        assert!(!is_rtp(&rtp[..11]));
    }

    #[test]
    fn a_room_in_the_url_keeps_unreserved_bytes_and_escapes_the_rest() {
        assert_eq!(query_escape("lt12-0_a.b~"), "lt12-0_a.b~");
        assert_eq!(query_escape("a&b=c#d%"), "a%26b%3Dc%23d%25");
        assert_eq!(query_escape("é"), "%C3%A9");
    }
}
