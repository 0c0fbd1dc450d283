//! One room's media: its participants' peer connections and the forwarding between them.
//! Every publisher's track goes to every other participant (a sendonly transceiver each, its
//! own SSRC); RTP is forwarded with its SSRC and payload type rewritten and its header
//! extensions dropped (their ids are per connection); a subscriber's keyframe request goes to
//! the publisher as a PLI, at most one per [`PLI_INTERVAL`] per published track; a subscriber
//! that connects, or whose new tracks were just answered, has a keyframe asked for each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use serde_json::Value;

use super::keyframe::is_keyframe_request;
use super::peer::Peer;
use super::simulcast::{self, Layer, Verdict};
use super::speaker::{Speakers, level, speaker_message};
use super::vp8;
use super::{Reply, Ssrcs};

/// At most one keyframe request per published layer in this interval.
pub const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// At most this many simulcast layers per published track (browsers send up to three).
pub const MAX_LAYERS: usize = 4;

/// What a pass over a room produced: datagrams to send, signaling messages to participants.
#[derive(Debug, Default)]
pub struct Output {
    /// (to, payload).
    pub datagrams: Vec<(SocketAddr, BytesMut)>,
    /// (connection, JSON text).
    pub messages: Vec<(Reply, String)>,
}

/// A signaling message from the SFU to a participant.
pub fn sdp_message(kind: &str, sdp: String) -> String {
    format!(
        "{{\"type\":{},\"from\":\"sfu\",\"sdp\":{}}}",
        Value::String(kind.to_owned()),
        Value::String(sdp)
    )
}

/// An error from the SFU (code 9: the SDP was refused).
pub fn sdp_error(detail: &str) -> String {
    format!(
        "{{\"type\":\"error\",\"code\":9,\"message\":{}}}",
        Value::String(format!("bad sdp: {detail}"))
    )
}

/// A room's participants with the SFU.
#[derive(Debug, Default)]
pub struct Room {
    /// In join order.
    pub peers: Vec<Peer>,
    /// Who is speaking.
    pub speakers: Speakers,
    /// Per participant, kept between passes (no allocation per datagram batch): whether a
    /// pass wrote to it, and whether it was already processed.
    dirty: Vec<bool>,
    done: Vec<bool>,
    /// The earliest held-back keyframe request of any layer (`Layer::pli_due`), so the
    /// room's next deadline needs no pass over every layer; it may have been answered by a
    /// keyframe since, which only costs one pass when it comes.
    held_pli: Option<Instant>,
}

impl Room {
    /// The index of participant `id`.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.peers.iter().position(|p| p.id == id)
    }

    /// Takes participant `id`'s offer: answers it and, once answered, forwards every track
    /// already published in the room to it.
    pub fn offer(
        &mut self,
        id: &str,
        sdp: String,
        local: SocketAddr,
        now: Instant,
        out: &mut Output,
        ssrc: &mut Ssrcs,
    ) {
        let Some(i) = self.find(id) else {
            return;
        };
        let conn = self.peers[i].conn.clone();
        match self.peers[i].offer(sdp, local, now) {
            Ok(answer) => {
                out.messages.push((conn, sdp_message("answer", answer)));
                let tracks: Vec<(String, String, RtpCodecKind)> = self
                    .peers
                    .iter()
                    .filter(|p| p.id != id)
                    .flat_map(|p| {
                        p.published
                            .iter()
                            .map(|(t, pubd)| (p.id.clone(), t.clone(), pubd.kind))
                    })
                    .collect();
                for (publisher, track, kind) in tracks {
                    let _ = self.peers[i].add_forward(&publisher, &track, kind, ssrc.fresh());
                }
            }
            Err(e) => out.messages.push((conn, sdp_error(&e))),
        }
    }

    /// Takes participant `id`'s answer to the SFU's offer, then asks for keyframes of what it
    /// receives.
    pub fn answer(&mut self, id: &str, sdp: String, now: Instant, out: &mut Output) {
        let Some(i) = self.find(id) else {
            return;
        };
        match self.peers[i].answer(sdp, now) {
            Ok(()) => self.keyframes_for(i, now),
            Err(e) => out
                .messages
                .push((self.peers[i].conn.clone(), sdp_error(&e))),
        }
    }

    /// Removes participant `id`: closes its connection and stops forwarding its tracks.
    pub fn leave(&mut self, id: &str) -> Option<Peer> {
        let i = self.find(id)?;
        let mut peer = self.peers.remove(i);
        peer.close();
        self.speakers.forget(id);
        for p in &mut self.peers {
            p.remove_forwards_of(id);
        }
        Some(peer)
    }

    /// A datagram for participant `i`.
    pub fn read(
        &mut self,
        i: usize,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(i) else {
            return;
        };
        let _ = peer.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: local,
                peer_addr: from,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: BytesMut::from(data),
        });
    }

    /// Runs the timers of the connections that are due, and sends the keyframe requests held
    /// back until now; the indices of the connections touched (to pass over).
    pub fn timeout(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, p) in self.peers.iter_mut().enumerate() {
            if p.deadline.is_some_and(|t| t <= now) {
                let _ = p.pc.handle_timeout(now);
                due.push(i);
            }
        }
        if self.held_pli.is_none_or(|t| t > now) {
            return due;
        }
        let mut held: Vec<(String, String, u32)> = Vec::new();
        let mut later: Option<Instant> = None;
        for p in &self.peers {
            for (track, pubd) in &p.published {
                for l in &pubd.layers {
                    match l.pli_due {
                        Some(t) if t <= now => held.push((p.id.clone(), track.clone(), l.ssrc)),
                        Some(t) => later = Some(later.map_or(t, |e| e.min(t))),
                        None => {}
                    }
                }
            }
        }
        self.held_pli = later;
        for (publisher, track, layer) in held {
            if let Some(k) = self.request_keyframe(&publisher, &track, Some(layer), now)
                && !due.contains(&k)
            {
                due.push(k);
            }
        }
        due
    }

    /// The earliest timer of the room's connections and of its held-back keyframe requests.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter_map(|p| p.deadline)
            .chain(self.held_pli)
            .min()
    }

    /// Processes what every connection has to say (after signaling: offers, answers, joins,
    /// leaves touch more than one).
    pub fn pump(&mut self, now: Instant, out: &mut Output, ssrc: &mut Ssrcs) {
        let all: Vec<usize> = (0..self.peers.len()).collect();
        self.pump_peers(&all, now, out, ssrc);
    }

    /// Processes what connections `peers` have to say (they read datagrams or ran timers):
    /// events (tracks opened, connection state), media to forward, keyframe requests; then
    /// offers to make and datagrams to send of them and of every connection they wrote to.
    /// A packet costs a pass over its publisher and its subscribers, not over the room.
    pub fn pump_peers(
        &mut self,
        peers: &[usize],
        now: Instant,
        out: &mut Output,
        ssrc: &mut Ssrcs,
    ) {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut done = std::mem::take(&mut self.done);
        dirty.clear();
        dirty.resize(self.peers.len(), false);
        done.clear();
        done.resize(self.peers.len(), false);
        for &i in peers {
            if i >= self.peers.len() || done[i] {
                continue;
            }
            done[i] = true;
            dirty[i] = true;
            if self.events(i, now, ssrc) {
                // Tracks opened or a connection came up: forwards and keyframe requests may
                // have touched anyone.
                dirty.fill(true);
            }
            self.reads(i, now, &mut dirty);
        }
        for (i, p) in self.peers.iter_mut().enumerate() {
            if !dirty[i] {
                continue;
            }
            if let Some(made) = p.next_offer(now) {
                let text = match made {
                    Ok(sdp) => sdp_message("offer", sdp),
                    Err(e) => sdp_error(&e),
                };
                out.messages.push((p.conn.clone(), text));
            }
            while let Some(w) = p.pc.poll_write() {
                out.datagrams.push((w.transport.peer_addr, w.message));
            }
            p.deadline = p.pc.poll_timeout();
        }
        self.dirty = dirty;
        self.done = done;
        if let Some(speaker) = self.speakers.decide(now) {
            let text = speaker_message(&speaker);
            for p in &self.peers {
                out.messages.push((p.conn.clone(), text.clone()));
            }
        }
    }

    /// Participant `i`'s events; whether any may have touched other connections.
    fn events(&mut self, i: usize, now: Instant, ssrc: &mut Ssrcs) -> bool {
        let mut opened = Vec::new();
        let mut connected = false;
        {
            let peer = &mut self.peers[i];
            while let Some(event) = peer.pc.poll_event() {
                match event {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                        tracing::debug!(id = %peer.id, ?state, "SFU: peer connection state");
                        let up = state == RTCPeerConnectionState::Connected;
                        connected |= up && !peer.connected;
                        peer.connected = up;
                    }
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                        let Some(kind) = peer
                            .pc
                            .rtp_receiver(init.receiver_id)
                            .map(|r| r.track().kind())
                        else {
                            continue;
                        };
                        tracing::debug!(id = %peer.id, track = %init.track_id, rid = ?init.rid, ssrc = init.ssrc, "SFU: track opened");
                        let layer = Layer::new(init.rid.unwrap_or_default(), init.ssrc, now);
                        match peer.published.get_mut(&init.track_id) {
                            // Another simulcast layer of a track already forwarded.
                            Some(p) => {
                                if p.layers.len() < MAX_LAYERS
                                    && p.layers.iter().all(|l| l.ssrc != layer.ssrc)
                                {
                                    p.layers.push(layer);
                                }
                            }
                            None => {
                                peer.published.insert(
                                    init.track_id.clone(),
                                    super::peer::Published {
                                        kind,
                                        receiver: init.receiver_id,
                                        layers: vec![layer],
                                    },
                                );
                                opened.push((init.track_id, kind));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        let publisher = self.peers[i].id.clone();
        let opened_any = !opened.is_empty();
        for (track, kind) in opened {
            for (j, p) in self.peers.iter_mut().enumerate() {
                if j != i && p.negotiated {
                    let _ = p.add_forward(&publisher, &track, kind, ssrc.fresh());
                }
            }
        }
        if connected {
            self.keyframes_for(i, now);
        }
        connected || opened_any
    }

    /// Participant `i`'s media and RTCP: forwarded (each subscriber's simulcast layer only),
    /// keyframe requests relayed; every connection written to is marked in `dirty`.
    fn reads(&mut self, i: usize, now: Instant, dirty: &mut [bool]) {
        let mut media = Vec::new();
        let mut keyframe_requests = Vec::new();
        while let Some(msg) = self.peers[i].pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(track, packet) => media.push((track, packet)),
                RTCMessage::RtcpPacket(track, packets)
                    if packets.iter().any(|p| is_keyframe_request(p.as_ref())) =>
                {
                    keyframe_requests.push(track);
                }
                _ => {}
            }
        }
        let publisher = self.peers[i].id.clone();
        // Out of the publisher while its subscribers are written to (put back below).
        let mut published = std::mem::take(&mut self.peers[i].published);
        // Layers a subscriber waits to switch to: (track, SSRC).
        let mut wanted: Vec<(String, u32)> = Vec::new();
        for (track, packet) in media {
            let Some(pubd) = published.get_mut(&track) else {
                continue;
            };
            let kind = pubd.kind;
            let ssrc_in = packet.header.ssrc;
            let simulcast = pubd.layers.len() > 1;
            let keyframe = kind == RtpCodecKind::Video && vp8::starts_keyframe(&packet.payload);
            // Only packets of a layer whose opening was seen: rtc hands out a new layer's
            // first packets before its open event (events and media are separate queues), and
            // forwarding them onto the subscriber's SSRC would interleave two layers' sequence
            // numbers there; the receiver's SRTP index then jumps and it rejects the real
            // layer's packets as replays from then on (a stream that stopped after its first
            // keyframe).
            let Some(layer) = pubd.layers.iter_mut().find(|l| l.ssrc == ssrc_in) else {
                continue;
            };
            let width = if keyframe {
                vp8::keyframe_width(&packet.payload)
            } else {
                None
            };
            layer.record(width, packet.payload.len(), now);
            if keyframe {
                // A keyframe answers any request held back by the rate limit.
                layer.pli_due = None;
            }
            if kind == RtpCodecKind::Audio
                && let Some(ext) = self.peers[i].audio_level_id
                && let Some(l) = packet.header.get_extension(ext).and_then(|e| level(&e))
            {
                self.speakers.record(&publisher, l);
            }
            let key = (publisher.clone(), track);
            for (j, sub) in self.peers.iter_mut().enumerate() {
                if j == i || !sub.connected {
                    continue;
                }
                let Some(f) = sub.forwards.get(&key) else {
                    continue;
                };
                let (sender, ssrc, known) = (f.sender, f.ssrc, f.payload_type);
                let Some(pt) = known.or_else(|| sub.payload_type(sender, kind)) else {
                    continue;
                };
                let share = if simulcast { sub.video_share() } else { None };
                let Some(f) = sub.forwards.get_mut(&key) else {
                    continue;
                };
                f.payload_type = Some(pt);
                // Every forward tracks the layer it carries, simulcast or not yet: a track
                // whose second layer opens later must switch to it as a new source (its
                // numbers continued), not take it for the one it was already carrying.
                if !simulcast {
                    f.selection.current = Some(ssrc_in);
                } else {
                    let target = simulcast::target(
                        &pubd.layers,
                        f.selection.want.as_deref(),
                        share,
                        f.selection.current,
                        now,
                    );
                    if let Some(t) = f.selection.waiting_for(target)
                        && !wanted.iter().any(|(k, s)| *s == t && *k == key.1)
                    {
                        wanted.push((key.1.clone(), t));
                    }
                    match f.selection.packet(ssrc_in, target, keyframe) {
                        Verdict::Drop => continue,
                        Verdict::Switch => {
                            tracing::debug!(subscriber = %sub.id, publisher = %publisher, layer = ssrc_in, share = ?share, "SFU: layer switch");
                            f.rewrite.new_source();
                        }
                        Verdict::Forward => {}
                    }
                }
                let Some((seq, ts)) = f
                    .rewrite
                    .apply(packet.header.sequence_number, packet.header.timestamp)
                else {
                    continue;
                };
                let mut out = packet.clone();
                out.header.ssrc = ssrc;
                out.header.payload_type = pt;
                out.header.sequence_number = seq;
                out.header.timestamp = ts;
                out.header.extension = false;
                out.header.extension_profile = 0;
                out.header.extensions.clear();
                out.header.extensions_padding = 0;
                if let Some(mut s) = sub.pc.rtp_sender(sender) {
                    if let Err(e) = s.write_rtp(now, out) {
                        tracing::debug!(subscriber = %sub.id, publisher = %publisher, %e, "SFU: write_rtp");
                    }
                    dirty[j] = true;
                } else {
                    tracing::debug!(subscriber = %sub.id, publisher = %publisher, "SFU: no sender");
                }
            }
        }
        self.peers[i].published = published;
        for (track, layer) in wanted {
            if let Some(k) = self.request_keyframe(&publisher, &track, Some(layer), now) {
                dirty[k] = true;
            }
        }
        // Keyframe requests arrive under the subscriber's sender track id; they go to the
        // layer it receives.
        for track in keyframe_requests {
            let source = self.peers[i]
                .forwards
                .iter()
                .find(|(_, f)| f.track_id == track)
                .map(|(k, f)| (k.clone(), f.selection.current));
            if let Some(((publisher, published), layer)) = source
                && let Some(k) = self.request_keyframe(&publisher, &published, layer, now)
            {
                dirty[k] = true;
            }
        }
    }

    /// Participant `id` asks for `publisher`'s simulcast layer `rid` (`None`: the best sent).
    pub fn want_layer(&mut self, id: &str, publisher: &str, rid: Option<String>, out: &mut Output) {
        let Some(i) = self.find(id) else {
            return;
        };
        if publisher == id || self.find(publisher).is_none() {
            out.messages.push((
                self.peers[i].conn.clone(),
                crate::rooms::SignalError::NoSuchParticipant.json(),
            ));
            return;
        }
        self.peers[i].want_layer(publisher, rid);
    }

    /// Asks for a keyframe of every video track forwarded to participant `i` (every layer:
    /// it may receive any).
    fn keyframes_for(&mut self, i: usize, now: Instant) {
        let keys: Vec<(String, String)> = self.peers[i].forwards.keys().cloned().collect();
        for (publisher, track) in keys {
            self.request_keyframe(&publisher, &track, None, now);
        }
    }

    /// A PLI to `publisher` for layer `layer` (every layer: `None`) of its video track `track`,
    /// for each layer no keyframe was asked of within [`PLI_INTERVAL`].
    /// (The publisher's index when a PLI went out.)
    fn request_keyframe(
        &mut self,
        publisher: &str,
        track: &str,
        layer: Option<u32>,
        now: Instant,
    ) -> Option<usize> {
        let k = self.peers.iter().position(|p| p.id == publisher)?;
        let p = &mut self.peers[k];
        let published = p.published.get_mut(track)?;
        if published.kind != RtpCodecKind::Video {
            return None;
        }
        let mut plis: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::new();
        let mut held: Option<Instant> = None;
        for l in &mut published.layers {
            if layer.is_some_and(|s| s != l.ssrc) {
                continue;
            }
            if let Some(t) = l.last_pli
                && now.saturating_duration_since(t) < PLI_INTERVAL
            {
                // Held back, not dropped: a subscriber whose request falls within the
                // interval of an earlier one may have joined after that keyframe went by.
                let due = *l.pli_due.get_or_insert(t + PLI_INTERVAL);
                held = Some(held.map_or(due, |h| h.min(due)));
                continue;
            }
            l.last_pli = Some(now);
            l.pli_due = None;
            tracing::debug!(publisher, rid = %l.rid, ssrc = l.ssrc, "SFU: PLI");
            plis.push(Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: l.ssrc,
            }));
        }
        if let Some(h) = held {
            self.held_pli = Some(self.held_pli.map_or(h, |e| e.min(h)));
        }
        if plis.is_empty() {
            return None;
        }
        let receiver = published.receiver;
        if let Some(mut r) = p.pc.rtp_receiver(receiver) {
            let _ = r.write_rtcp(now, plis);
        }
        Some(k)
    }
}
