//! A participant of an SFU room, for tests: signaling over `/signal/v1` (tungstenite) and a
//! webrtc-rs sans-IO peer connection (`rtc`, full ICE, the controlling side) on its own UDP
//! socket, driven by [`SfuClient::step`]. It publishes an Opus and a VP8 track (sendonly),
//! answers the SFU's offers, and counts what it receives.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use c10m_signaling::sfu::peer::codec;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
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

/// A track this client publishes.
struct Sender {
    id: RTCRtpSenderId,
    kind: RtpCodecKind,
    ssrc: u32,
    seq: u16,
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
    /// ICE and DTLS are up.
    pub connected: bool,
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
}

fn ws_connect(server: SocketAddr) -> Ws {
    let stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut ws = tungstenite::client(format!("ws://{server}/signal/v1"), stream)
        .unwrap()
        .0;
    ws.get_mut().set_nodelay(true).unwrap();
    ws
}

fn peer_connection() -> RTCPeerConnection {
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
            .unwrap();
    }
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    RTCPeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .build(Instant::now())
        .unwrap()
}

impl SfuClient {
    /// Joins `room` through the SFU of the server at `server` and sends its offer (an audio and
    /// a video track, sendonly; `ssrc_base` and `ssrc_base + 1`).
    pub fn join(server: SocketAddr, room: &str, ssrc_base: u32) -> SfuClient {
        let mut ws = ws_connect(server);
        ws.send(Message::text(
            json!({"type": "join", "room": room, "mode": "sfu"}).to_string(),
        ))
        .unwrap();
        let id = loop {
            let Message::Text(t) = ws.read().unwrap() else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            match v["type"].as_str() {
                Some("joined") => break v["id"].as_str().unwrap().to_owned(),
                Some("error") => panic!("join refused: {v}"),
                _ => {}
            }
        };
        // From here on the signaling socket is polled.
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_micros(200)))
            .unwrap();
        let mut pc = peer_connection();
        let mut senders = Vec::new();
        for (i, kind) in [RtpCodecKind::Audio, RtpCodecKind::Video]
            .into_iter()
            .enumerate()
        {
            let ssrc = ssrc_base + i as u32;
            let track = MediaStreamTrack::new(
                id.clone(),
                format!("{id}-{i}"),
                format!("{id} {i}"),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: codec(kind),
                    ..Default::default()
                }],
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
                .unwrap();
            senders.push(Sender {
                id: RTCRtpSenderId::from(t),
                kind,
                ssrc,
                seq: 0,
            });
        }
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        let local = udp.local_addr().unwrap();
        let offer = pc.create_offer(None).unwrap();
        pc.set_local_description(Instant::now(), offer).unwrap();
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .unwrap();
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json().unwrap())
            .unwrap();
        let sdp = pc.local_description().unwrap().sdp;
        ws.send(Message::text(
            json!({"type": "offer", "to": "sfu", "sdp": sdp}).to_string(),
        ))
        .unwrap();
        SfuClient {
            ws,
            id,
            pc,
            udp,
            local,
            senders,
            connected: false,
            failed: false,
            tracks_opened: 0,
            rtp_received: 0,
            offers_answered: 0,
            errors: Vec::new(),
        }
    }

    /// Does what is due: signaling, datagrams, timers, events. Whether anything happened.
    pub fn step(&mut self) -> bool {
        let mut busy = self.signaling();
        let mut buf = [0u8; 2048];
        loop {
            match self.udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    busy = true;
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
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("udp: {e}"),
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
                    self.failed |= s == RTCPeerConnectionState::Failed;
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(_)) => {
                    self.tracks_opened += 1;
                }
                _ => {}
            }
        }
        while let Some(m) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(..) = m.message {
                self.rtp_received += 1;
            }
        }
        self.flush();
        busy
    }

    fn flush(&mut self) {
        while let Some(w) = self.pc.poll_write() {
            let _ = self.udp.send_to(&w.message, w.transport.peer_addr);
        }
    }

    fn signaling(&mut self) -> bool {
        let mut busy = false;
        loop {
            let text = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return busy;
                }
                Err(e) => panic!("signaling: {e}"),
            };
            busy = true;
            let v: Value = serde_json::from_str(&text).unwrap();
            let sdp = v["sdp"].as_str().map(str::to_owned);
            match (v["type"].as_str(), v["from"].as_str(), sdp) {
                (Some("answer"), Some("sfu"), Some(sdp)) => {
                    let answer = RTCSessionDescription::answer(sdp).unwrap();
                    self.pc
                        .set_remote_description(Instant::now(), answer)
                        .unwrap();
                }
                (Some("offer"), Some("sfu"), Some(sdp)) => {
                    let offer = RTCSessionDescription::offer(sdp).unwrap();
                    self.pc
                        .set_remote_description(Instant::now(), offer)
                        .unwrap();
                    let answer = self.pc.create_answer(None).unwrap();
                    self.pc
                        .set_local_description(Instant::now(), answer)
                        .unwrap();
                    let sdp = self.pc.local_description().unwrap().sdp;
                    self.ws
                        .send(Message::text(
                            json!({"type": "answer", "to": "sfu", "sdp": sdp}).to_string(),
                        ))
                        .unwrap();
                    self.offers_answered += 1;
                }
                (Some("error"), ..) => self.errors.push(v.to_string()),
                _ => {}
            }
        }
    }

    /// Sends one RTP packet on each published track (a VP8 payload that starts a keyframe, an
    /// Opus one of silence: the SFU forwards without decoding).
    pub fn send_media(&mut self) {
        let now = Instant::now();
        for s in &mut self.senders {
            s.seq = s.seq.wrapping_add(1);
            let payload: &[u8] = if s.kind == RtpCodecKind::Video {
                &[0x10, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 0, 0, 0]
            } else {
                &[0xf8, 0xff, 0xfe]
            };
            let mut p = rtc::rtp::Packet::default();
            p.header.version = 2;
            p.header.ssrc = s.ssrc;
            p.header.sequence_number = s.seq;
            p.header.timestamp = u32::from(s.seq).wrapping_mul(3000);
            p.header.payload_type = if s.kind == RtpCodecKind::Video {
                96
            } else {
                111
            };
            p.header.marker = true;
            p.payload = Bytes::copy_from_slice(payload);
            if let Some(mut sender) = self.pc.rtp_sender(s.id) {
                let _ = sender.write_rtp(now, p);
            }
        }
        self.flush();
    }

    /// Leaves the room (a `leave`, then the signaling connection and the peer connection close).
    pub fn leave(mut self) {
        let _ = self
            .ws
            .send(Message::text(json!({"type": "leave"}).to_string()));
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
        let _ = self.pc.close();
        self.flush();
    }
}

/// Steps every client until `done` holds or `limit` passes; whether it held.
pub fn drive(
    clients: &mut [&mut SfuClient],
    limit: Duration,
    mut done: impl FnMut(&[&mut SfuClient]) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let mut busy = false;
        for c in clients.iter_mut() {
            busy |= c.step();
        }
        if done(clients) {
            return true;
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    false
}
