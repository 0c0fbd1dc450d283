//! One participant's peer connection with the SFU (a sans-IO `rtc` peer connection) and its
//! negotiation: the participant offers first (its own audio and video, sendonly) and the SFU
//! answers; after that only the SFU offers, each time the tracks forwarded to the participant
//! change, one offer at a time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rtc::interceptor::{CongestionControlBuilder, Registry, Slot, TwccSenderBuilder};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;

use super::Reply;
use super::estimate::{self, Estimate};
use super::keyframe::KeyframeRequests;
use super::rewrite::Rewrite;
use super::simulcast::{Layer, Selection};

/// Why a description was refused.
pub type SdpError = String;

/// A track this participant publishes.
#[derive(Debug)]
pub struct Published {
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// Its receiver in this peer connection (keyframe requests go out through it).
    pub receiver: RTCRtpReceiverId,
    /// Its layers (one without simulcast), in the order they started.
    pub layers: Vec<Layer>,
}

/// A track of another participant forwarded to this one.
#[derive(Debug)]
pub struct Forward {
    /// Its sender in this peer connection.
    pub sender: RTCRtpSenderId,
    /// The SSRC it goes out with.
    pub ssrc: u32,
    /// The payload type this participant negotiated for its codec (known after the answer).
    pub payload_type: Option<u8>,
    /// The sender's track id (keyframe requests arrive under it).
    pub track_id: String,
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// Its sequence numbers and timestamps, continuous across the publishers and layers it
    /// carried.
    pub rewrite: Rewrite,
    /// Which of the track's simulcast layers it carries.
    pub selection: Selection,
}

/// A media section whose publisher left: inactive until the next publisher of its kind.
#[derive(Debug)]
pub struct Free {
    sender: RTCRtpSenderId,
    kind: RtpCodecKind,
    ssrc: u32,
    rewrite: Rewrite,
}

/// A participant's peer connection.
pub struct Peer {
    /// The participant's signaling id (also the stream id of its tracks at the others).
    pub id: String,
    /// Where its signaling messages go.
    pub conn: Reply,
    pub(super) pc: RTCPeerConnection,
    /// The server's ICE ufrag, once answered (STUN from the participant carries it).
    pub ufrag: Option<String>,
    /// The participant's first offer was answered.
    pub negotiated: bool,
    /// An offer of the SFU awaits its answer.
    pub offering: bool,
    /// The forwarded tracks changed since the last offer.
    pub renegotiate: bool,
    /// ICE and DTLS are up: media can flow.
    pub connected: bool,
    /// Where its media comes from (the address its last STUN request came from).
    pub addr: Option<SocketAddr>,
    /// Its tracks, by the track id `rtc` reports them under.
    pub published: HashMap<String, Published>,
    /// Others' tracks forwarded to it, by (publisher id, publisher's track id).
    pub forwards: HashMap<(String, String), Forward>,
    /// Transceivers whose forwarded track went (its publisher left), reused for the next track
    /// of their kind: a participant that stays while others come and go keeps as many media
    /// sections as tracks it receives at once, not one per track it ever received.
    pub free: Vec<Free>,
    /// The simulcast layer (`rid`) it asked for, by publisher (absent: the best one sent).
    pub wants: HashMap<String, String>,
    /// The id its audio level extension was negotiated with (its audio then says how loud).
    pub audio_level_id: Option<u8>,
    /// Its connection's next timer, as of the last pass over it (every operation on the
    /// connection is followed by a pass, so the shard's timer needs no call into each one).
    pub deadline: Option<Instant>,
    /// The bandwidth estimate of the path to it (from its transport-wide feedback).
    pub estimate: Estimate,
    /// How many of `forwards` are video (kept by `add_forward` and `remove_forwards_of`: the
    /// share of the estimate is read per forwarded simulcast packet).
    video_forwards: usize,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("ufrag", &self.ufrag)
            .field("negotiated", &self.negotiated)
            .field("offering", &self.offering)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn vp8() -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![fb("ccm", "fir"), fb("nack", ""), fb("nack", "pli")],
    }
}

/// The codec forwarded for a kind: one codec per kind (Opus, VP8), so no transcoding and no
/// payload mapping beyond the payload type number.
pub fn codec(kind: RtpCodecKind) -> RTCRtpCodec {
    if kind == RtpCodecKind::Audio {
        opus()
    } else {
        vp8()
    }
}

impl Peer {
    /// A peer connection for participant `id`, ICE-lite on `local` (no mDNS, no gathering:
    /// its one candidate is the SFU's socket); `bandwidth_estimate`: with send-side bandwidth
    /// estimation ([`estimate`]; without it the estimate stays unknown).
    pub fn new(
        id: String,
        conn: Reply,
        now: Instant,
        bandwidth_estimate: bool,
    ) -> Result<Peer, String> {
        let mut media = MediaEngine::default();
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus(),
                    payload_type: 111,
                },
                RtpCodecKind::Audio,
            )
            .map_err(|e| e.to_string())?;
        media
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: vp8(),
                    payload_type: 96,
                },
                RtpCodecKind::Video,
            )
            .map_err(|e| e.to_string())?;
        // Audio levels from publishers (the active speaker).
        media
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: super::speaker::AUDIO_LEVEL_URI.to_owned(),
                },
                RtpCodecKind::Audio,
                Some(RTCRtpTransceiverDirection::Recvonly),
            )
            .map_err(|e| e.to_string())?;
        // NACK generation and answers, receiver reports, TWCC feedback; keyframe requests
        // marked so they reach the SFU instead of ending in the chain.
        // Send-side bandwidth estimation on what the SFU sends it: a transport-wide sequence
        // number on every outgoing packet, and GCC on the feedback ([`estimate`]); no pacer.
        let (gcc, estimate) = estimate::estimator();
        let mut registry = Registry::new().with(Slot::from(14_000), KeyframeRequests::default());
        if bandwidth_estimate {
            registry = registry
                .with(Slot::TwccSender, TwccSenderBuilder::new().build())
                .with(
                    Slot::CongestionControl,
                    CongestionControlBuilder::new(gcc).build(),
                );
        }
        let registry =
            register_default_interceptors(registry, &mut media).map_err(|e| e.to_string())?;
        let settings = SettingEngineBuilder::new()
            .with_lite(true)
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .build();
        let pc = RTCPeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(|e| e.to_string())?;
        Ok(Peer {
            id,
            conn,
            pc,
            ufrag: None,
            negotiated: false,
            offering: false,
            renegotiate: false,
            connected: false,
            addr: None,
            published: HashMap::new(),
            forwards: HashMap::new(),
            free: Vec::new(),
            wants: HashMap::new(),
            audio_level_id: None,
            deadline: None,
            estimate,
            video_forwards: 0,
        })
    }

    /// Answers the participant's offer; the answer's SDP. Only the first offer is taken (after
    /// it, the SFU is the only offerer).
    pub fn offer(
        &mut self,
        sdp: String,
        local: SocketAddr,
        now: Instant,
    ) -> Result<String, SdpError> {
        if self.negotiated {
            return Err("already negotiated: the SFU makes the offers from now on".into());
        }
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?;
        self.pc
            .set_remote_description(now, offer)
            .map_err(|e| e.to_string())?;
        let init = host_candidate(local)?;
        self.pc
            .add_local_candidate(init)
            .map_err(|e| e.to_string())?;
        let answer = self.pc.create_answer(None).map_err(|e| e.to_string())?;
        self.pc
            .set_local_description(now, answer)
            .map_err(|e| e.to_string())?;
        let sdp = self
            .pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or("no local description")?;
        // Without the SFU's ICE username in the answer, no STUN check could be routed to
        // this participant and its media would never flow: refuse the offer instead (found
        // by fuzzing: an offer whose sections webrtc-rs answers without ICE attributes).
        let Some(ufrag) = ice_ufrag(&sdp) else {
            return Err("the offer left no media section with ICE to answer".into());
        };
        self.ufrag = Some(ufrag.to_owned());
        self.audio_level_id = super::speaker::audio_level_id(&sdp);
        self.negotiated = true;
        Ok(sdp)
    }

    /// Takes the participant's answer to the SFU's offer.
    pub fn answer(&mut self, sdp: String, now: Instant) -> Result<(), SdpError> {
        tracing::debug!(id = %self.id, offering = self.offering, "SFU: answer");
        if !self.offering {
            return Err("no offer of the SFU is waiting for an answer".into());
        }
        let sdp = super::simulcast::keep_simulcast_receivers(&sdp);
        let answer = RTCSessionDescription::answer(sdp).map_err(|e| e.to_string())?;
        self.pc
            .set_remote_description(now, answer)
            .map_err(|e| e.to_string())?;
        self.offering = false;
        Ok(())
    }

    /// An offer, when the forwarded tracks changed and no other offer is out.
    pub fn next_offer(&mut self, now: Instant) -> Option<Result<String, SdpError>> {
        if self.renegotiate && (self.offering || !self.negotiated) {
            tracing::debug!(id = %self.id, offering = self.offering, negotiated = self.negotiated, "SFU: offer deferred");
        }
        if !self.negotiated || self.offering || !self.renegotiate {
            return None;
        }
        tracing::debug!(id = %self.id, "SFU: offer made");
        self.renegotiate = false;
        let made = (|| {
            let offer = self.pc.create_offer(None).map_err(|e| e.to_string())?;
            self.pc
                .set_local_description(now, offer)
                .map_err(|e| e.to_string())?;
            self.pc
                .local_description()
                .map(|d| d.sdp)
                .ok_or_else(|| "no local description".to_owned())
        })();
        if made.is_ok() {
            self.offering = true;
        }
        Some(made)
    }

    /// Starts forwarding `publisher`'s track `track` (of `kind`) to this participant: a
    /// sendonly transceiver whose stream id is the publisher's id.
    pub fn add_forward(
        &mut self,
        publisher: &str,
        track: &str,
        kind: RtpCodecKind,
        ssrc: u32,
    ) -> Result<(), String> {
        let key = (publisher.to_owned(), track.to_owned());
        if self.forwards.contains_key(&key) {
            return Ok(());
        }
        let kind_name = if kind == RtpCodecKind::Audio {
            "audio"
        } else {
            "video"
        };
        // A media section left by a publisher of this kind is reused, SSRC and all, so a
        // participant that stays while others come and go keeps as many sections as tracks it
        // receives at once.
        let reused = self
            .free
            .iter()
            .position(|f| f.kind == kind)
            .map(|i| self.free.remove(i));
        let ssrc = reused.as_ref().map_or(ssrc, |f| f.ssrc);
        let track_id = format!("{publisher}-{kind_name}-{ssrc:08x}");
        let media = MediaStreamTrack::new(
            publisher.to_owned(),
            track_id.clone(),
            format!("{publisher} {kind_name}"),
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
        let (sender, rewrite) = match reused {
            Some(mut free) => {
                // Sending first: rtc hands out the sender of a sending transceiver only.
                if let Some(mut t) = self.pc.rtp_transceiver(free.sender.into()) {
                    t.set_direction(RTCRtpTransceiverDirection::Sendonly);
                }
                let mut s = self
                    .pc
                    .rtp_sender(free.sender)
                    .ok_or("a reused media section has no sender")?;
                s.replace_track(media).map_err(|e| e.to_string())?;
                s.set_streams(vec![publisher.to_owned()]);
                free.rewrite.new_source();
                (free.sender, free.rewrite)
            }
            None => {
                let transceiver = self
                    .pc
                    .add_transceiver_from_track(
                        media,
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Sendonly,
                            streams: vec![publisher.to_owned()],
                            send_encodings: Vec::new(),
                        }),
                    )
                    .map_err(|e| e.to_string())?;
                (RTCRtpSenderId::from(transceiver), Rewrite::default())
            }
        };
        if kind == RtpCodecKind::Video {
            self.video_forwards += 1;
        }
        self.forwards.insert(
            key,
            Forward {
                sender,
                ssrc,
                payload_type: None,
                track_id,
                kind,
                rewrite,
                selection: Selection {
                    want: self.wants.get(publisher).cloned(),
                    current: None,
                },
            },
        );
        self.renegotiate = true;
        Ok(())
    }

    /// Its share of its bandwidth estimate for one forwarded video track: the estimate, less a
    /// tenth for audio and RTCP, split evenly over the video it receives; `None` without an
    /// estimate.
    pub fn video_share(&self) -> Option<f64> {
        let bps = self.estimate.bits_per_second()?;
        Some(bps * 0.9 / self.video_forwards.max(1) as f64)
    }

    /// Asks for `publisher`'s simulcast layer `rid` (`None`: the best one sent).
    pub fn want_layer(&mut self, publisher: &str, rid: Option<String>) {
        match &rid {
            Some(r) => self.wants.insert(publisher.to_owned(), r.clone()),
            None => self.wants.remove(publisher),
        };
        for ((p, _), f) in &mut self.forwards {
            if p == publisher {
                f.selection.want.clone_from(&rid);
            }
        }
    }

    /// Stops forwarding every track of `publisher` to this participant.
    pub fn remove_forwards_of(&mut self, publisher: &str) {
        self.wants.remove(publisher);
        let gone: Vec<(String, String)> = self
            .forwards
            .keys()
            .filter(|(p, _)| p == publisher)
            .cloned()
            .collect();
        for key in gone {
            if let Some(f) = self.forwards.remove(&key) {
                if f.kind == RtpCodecKind::Video {
                    self.video_forwards -= 1;
                }
                if let Some(mut t) = self.pc.rtp_transceiver(f.sender.into()) {
                    t.set_direction(RTCRtpTransceiverDirection::Inactive);
                }
                self.free.push(Free {
                    sender: f.sender,
                    kind: f.kind,
                    ssrc: f.ssrc,
                    rewrite: f.rewrite,
                });
                self.renegotiate = true;
            }
        }
    }

    /// The payload type this participant negotiated for `kind`'s codec on a forward's sender.
    pub fn payload_type(&mut self, sender: RTCRtpSenderId, kind: RtpCodecKind) -> Option<u8> {
        let mime = codec(kind).mime_type;
        let mut s = self.pc.rtp_sender(sender)?;
        s.get_parameters()
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
            .map(|c| c.payload_type)
    }

    /// Closes the peer connection.
    pub fn close(&mut self) {
        let _ = self.pc.close();
    }
}

/// The ICE host candidate of a UDP socket at `local` (the SFU's, or a test participant's).
pub fn host_candidate(local: SocketAddr) -> Result<RTCIceCandidateInit, String> {
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
    .map_err(|e| e.to_string())?;
    RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(|e| e.to_string())
}

/// The `a=ice-ufrag` of an SDP.
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .filter(|u| !u.is_empty())
}
