//! The connection state machine: bytes in, events out, bytes to send appended to the caller's
//! buffer, time passed in.
//!
//! ```text
//!   socket bytes ──► recv(&mut input, &mut out, now) ──► Read::Frame { consumed, event }
//!                                     │
//!                                     └─► pongs, close replies, error closes appended to `out`
//!   application ──► send_text / send_binary / ping / close ──► frames appended to `out`
//!   timer wheel ──► poll_timeout() / handle_timeout(now, &mut out)
//! ```
//!
//! The core never touches a socket or a clock. An idle connection holds no buffer: a fragmented
//! message in progress is the only thing it ever allocates for.

use std::borrow::Cow;
use std::sync::Arc;

use super::close::{CloseCode, CloseFrame, truncate_reason};
use super::config::Config;
use super::deflate::{self, Deflate, InflateError};
use super::error::{CapacityError, Error, ProtocolError, TimeoutKind, UsageError};
use super::frame::{FrameHeader, HeaderBuf, OpCode};
use super::mask::apply_mask;
use super::message::{Event, Message, Read};
use super::utf8::Utf8Validator;

/// Which end of the connection we are; it decides who masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Sends masked frames, receives unmasked ones.
    Client,
}

/// Where the close handshake stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's until `deadline`.
    CloseSent {
        /// When to give up waiting (caller's clock, ms).
        deadline: u64,
    },
    /// Finished: flush what is in the output and close the transport.
    Closed,
}

/// A fragmented message being reassembled: the only per-connection buffer the core owns.
#[derive(Debug)]
struct Reassembly {
    text: bool,
    /// permessage-deflate: `data` is the compressed payload, inflated when the message ends.
    compressed: bool,
    data: Vec<u8>,
    utf8: Utf8Validator,
}

/// One WebSocket connection after the opening handshake.
#[derive(Debug)]
pub struct Connection {
    config: Arc<Config>,
    reassembly: Option<Box<Reassembly>>,
    /// xorshift64* state for client masking keys; unused by servers.
    rng: u64,
    last_recv: u64,
    last_ping: u64,
    state: State,
    role: Role,
    /// We sent a non-final data frame and owe its continuation.
    sending_fragmented: bool,
    /// permessage-deflate, when negotiated: RSV1 marks compressed messages both ways.
    deflate: Option<Deflate>,
}

impl Connection {
    /// A server-side connection whose handshake completed at `now`.
    pub fn server(config: Arc<Config>, now: u64) -> Self {
        Self::new(config, Role::Server, 0, now)
    }

    /// A client-side connection; `seed` feeds the masking-key generator (use OS randomness).
    pub fn client(config: Arc<Config>, seed: u64, now: u64) -> Self {
        // xorshift must not start at zero.
        Self::new(config, Role::Client, seed | 1, now)
    }

    fn new(config: Arc<Config>, role: Role, rng: u64, now: u64) -> Self {
        Connection {
            config,
            reassembly: None,
            rng,
            last_recv: now,
            last_ping: now,
            state: State::Open,
            role,
            sending_fragmented: false,
            deflate: None,
        }
    }

    /// Turns permessage-deflate on, as the handshake negotiated it
    /// ([`deflate::negotiate`], [`deflate::client_accepts`]).
    pub fn set_deflate(&mut self, deflate: Option<Deflate>) {
        self.deflate = deflate;
    }

    /// permessage-deflate, if negotiated.
    pub fn deflate(&self) -> Option<Deflate> {
        self.deflate
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The close-handshake state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the connection is finished.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes held for a fragmented message being reassembled (its buffer's capacity).
    pub fn held(&self) -> usize {
        self.reassembly.as_ref().map_or(0, |r| r.data.capacity())
    }

    /// Whether a fragmented message is being reassembled (and so a buffer is held).
    pub fn is_reassembling(&self) -> bool {
        self.reassembly.is_some()
    }

    /// The shared configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reads at most one frame from the front of `input`, unmasking its payload in place.
    ///
    /// Poll this after every read from the transport, dropping `consumed` bytes each time, until
    /// it returns [`Read::Incomplete`]. Replies the protocol requires (pongs, the answer to a
    /// close, the close frame of a protocol error) are appended to `out`; flush `out` after.
    ///
    /// On `Err` the connection is closed: the close frame carrying [`Error::close_code`] has
    /// already been appended to `out`.
    pub fn recv<'a>(
        &mut self,
        input: &'a mut [u8],
        out: &mut Vec<u8>,
        now: u64,
    ) -> Result<Read<'a>, Error> {
        if self.state == State::Closed {
            return Err(Error::Closed);
        }
        let (header, header_len) = match FrameHeader::parse(input) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(Read::Incomplete { frame_len: None }),
            Err(e) => return Err(self.fail(e.into(), out)),
        };
        if let Err(e) = self.check_header(&header) {
            return Err(self.fail(e, out));
        }
        // check_header bounded payload_len by max_frame_size, a usize.
        let payload_len = header.payload_len as usize;
        let frame_len = header_len + payload_len;
        if input.len() < frame_len {
            return Ok(Read::Incomplete {
                frame_len: Some(frame_len),
            });
        }
        let payload = &mut input[header_len..frame_len];
        if let Some(key) = header.mask {
            apply_mask(payload, key);
        }
        self.last_recv = now;
        match self.on_frame(header, payload, out) {
            Ok(event) => Ok(Read::Frame {
                consumed: frame_len,
                event,
            }),
            Err(e) => Err(self.fail(e, out)),
        }
    }

    /// Every rule that can be checked from the header alone, so a bad frame fails before its
    /// payload is buffered.
    fn check_header(&self, h: &FrameHeader) -> Result<(), Error> {
        //= https://www.rfc-editor.org/rfc/rfc6455#section-5.2
        //# If a nonzero value is received and none of the negotiated extensions defines the
        //# meaning of such a nonzero value, the receiving endpoint MUST _Fail the WebSocket
        //# Connection_.
        //= https://www.rfc-editor.org/rfc/rfc7692#section-6.1
        //# [...] the "Per-Message Compressed" bit [RSV1] [...] is set on the first frame of
        //# a compressed message; an endpoint MUST _Fail the WebSocket Connection_ if it
        //# receives a frame with RSV1 set on a control frame or a non-first fragment.
        let rsv1_allowed = self.deflate.is_some()
            && h.rsv == 0b100
            && matches!(h.opcode, OpCode::Text | OpCode::Binary);
        if h.rsv != 0 && !rsv1_allowed {
            return Err(ProtocolError::ReservedBits(h.rsv).into());
        }
        //= https://www.rfc-editor.org/rfc/rfc6455#section-5.1
        //# The server MUST close the connection upon receiving a frame that is not masked.
        //# [...] A client MUST close a connection if it detects a masked frame.
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame.into()),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame.into()),
            _ => {}
        }
        if h.opcode.is_control() {
            //= https://www.rfc-editor.org/rfc/rfc6455#section-5.5
            //# All control frames MUST have a payload length of 125 bytes or less
            //# and MUST NOT be fragmented.
            if !h.fin {
                return Err(ProtocolError::FragmentedControl.into());
            }
            if h.payload_len > 125 {
                return Err(ProtocolError::ControlTooLong(h.payload_len).into());
            }
            return Ok(());
        }
        let max_frame = self.config.max_frame_size;
        if h.payload_len > max_frame as u64 {
            return Err(CapacityError::FrameTooLong {
                size: h.payload_len,
                max: max_frame,
            }
            .into());
        }
        let so_far = match (h.opcode, &self.reassembly) {
            (OpCode::Continuation, None) => {
                return Err(ProtocolError::UnexpectedContinuation.into());
            }
            (OpCode::Continuation, Some(r)) => r.data.len() as u64,
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation.into()),
            (_, None) => 0,
        };
        let size = so_far + h.payload_len;
        let max_message = self.config.max_message_size;
        if size > max_message as u64 {
            return Err(CapacityError::MessageTooLong {
                size,
                max: max_message,
            }
            .into());
        }
        Ok(())
    }

    fn on_frame<'a>(
        &mut self,
        h: FrameHeader,
        payload: &'a mut [u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<Event<'a>>, Error> {
        let payload: &'a [u8] = payload;
        let compressed = h.rsv & 0b100 != 0;
        Ok(match h.opcode {
            OpCode::Text | OpCode::Binary if h.fin && compressed => {
                let text = h.opcode == OpCode::Text;
                Some(Event::Message(self.inflate_message(text, payload)?))
            }
            OpCode::Text | OpCode::Binary if h.fin => {
                Some(Event::Message(if h.opcode == OpCode::Text {
                    let text = std::str::from_utf8(payload).map_err(|_| Error::InvalidUtf8)?;
                    Message::Text(Cow::Borrowed(text))
                } else {
                    Message::Binary(Cow::Borrowed(payload))
                }))
            }
            OpCode::Text | OpCode::Binary => {
                let text = h.opcode == OpCode::Text;
                let mut r = Box::new(Reassembly {
                    text,
                    compressed,
                    data: Vec::with_capacity(payload.len()),
                    utf8: Utf8Validator::default(),
                });
                if text && !compressed {
                    r.utf8.feed(payload).map_err(|_| Error::InvalidUtf8)?;
                }
                r.data.extend_from_slice(payload);
                self.reassembly = Some(r);
                None
            }
            OpCode::Continuation => {
                let Some(r) = self.reassembly.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation.into());
                };
                //= https://www.rfc-editor.org/rfc/rfc6455#section-8.1
                //# When an endpoint is to interpret a byte stream as UTF-8 but finds
                //# that the byte stream is not, in fact, a valid UTF-8 stream, that
                //# endpoint MUST _Fail the WebSocket Connection_.
                if r.text && !r.compressed {
                    r.utf8.feed(payload).map_err(|_| Error::InvalidUtf8)?;
                }
                r.data.extend_from_slice(payload);
                if !h.fin {
                    return Ok(None);
                }
                let Some(r) = self.reassembly.take() else {
                    return Err(ProtocolError::UnexpectedContinuation.into());
                };
                if r.compressed {
                    return Ok(Some(Event::Message(self.inflate_message(r.text, &r.data)?)));
                }
                let Reassembly {
                    text, data, utf8, ..
                } = *r;
                Some(Event::Message(if text {
                    utf8.finish().map_err(|_| Error::InvalidUtf8)?;
                    // Validated fragment by fragment above; this second pass is the price of
                    // keeping the core free of `unsafe` (fragmented text only).
                    let text = String::from_utf8(data).map_err(|_| Error::InvalidUtf8)?;
                    Message::Text(Cow::Owned(text))
                } else {
                    Message::Binary(Cow::Owned(data))
                }))
            }
            OpCode::Ping => {
                //= https://www.rfc-editor.org/rfc/rfc6455#section-5.5.2
                //# Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
                //# response, unless it already received a Close frame.
                if self.config.auto_pong && self.state == State::Open {
                    self.write_frame(OpCode::Pong, true, payload, out);
                }
                Some(Event::Ping(payload))
            }
            OpCode::Pong => Some(Event::Pong(payload)),
            OpCode::Close => {
                let frame = parse_close_body(payload)?;
                //= https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1
                //# If an endpoint receives a Close frame and did not previously send a
                //# Close frame, the endpoint MUST send a Close frame in response.
                if self.state == State::Open {
                    match frame {
                        Some(f) => self.write_close(f.code, "", out),
                        None => self.write_frame(OpCode::Close, true, &[], out),
                    }
                }
                self.state = State::Closed;
                self.reassembly = None;
                Some(Event::Close(frame))
            }
        })
    }

    /// A compressed message, inflated within the message limit and checked as UTF-8 if text.
    fn inflate_message(&self, text: bool, compressed: &[u8]) -> Result<Message<'static>, Error> {
        let max = self.config.max_message_size;
        let data = deflate::inflate(compressed, max).map_err(|e| match e {
            InflateError::TooLarge => Error::from(CapacityError::MessageTooLong {
                size: max as u64 + 1,
                max,
            }),
            InflateError::Invalid => ProtocolError::InvalidCompressedData.into(),
        })?;
        Ok(if text {
            Message::Text(Cow::Owned(
                String::from_utf8(data).map_err(|_| Error::InvalidUtf8)?,
            ))
        } else {
            Message::Binary(Cow::Owned(data))
        })
    }

    /// Fails the connection: sends the error's close code (if any and if we still may) and
    /// closes. Returns the error for the caller to propagate.
    fn fail(&mut self, e: Error, out: &mut Vec<u8>) -> Error {
        if let (Some(code), State::Open) = (e.close_code(), self.state) {
            let reason = match e {
                Error::Timeout(TimeoutKind::Idle) => "idle timeout",
                _ => "",
            };
            self.write_close(code, reason, out);
        }
        self.state = State::Closed;
        self.reassembly = None;
        e
    }

    /// Sends a whole text message.
    pub fn send_text(&mut self, text: &str, out: &mut Vec<u8>) -> Result<(), Error> {
        self.send_frame(OpCode::Text, true, text.as_bytes(), out)
    }

    /// Sends a whole binary message.
    pub fn send_binary(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.send_frame(OpCode::Binary, true, data, out)
    }

    /// Sends a ping (at most 125 bytes).
    pub fn ping(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.send_frame(OpCode::Ping, true, payload, out)
    }

    /// Sends an unsolicited pong (at most 125 bytes), a unidirectional heartbeat.
    pub fn pong(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.send_frame(OpCode::Pong, true, payload, out)
    }

    /// Sends one frame; `fin = false` starts or continues a fragmented message, which must be
    /// finished with `OpCode::Continuation` frames before another message starts. Control frames
    /// may be sent between fragments. Use [`Connection::close`] for close frames.
    pub fn send_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        self.check_send(opcode, fin, payload.len())?;
        // A whole message is compressed when permessage-deflate is on; fragmented ones go
        // uncompressed (RSV1 clear), which is always allowed.
        match self.deflate {
            Some(d) if fin && matches!(opcode, OpCode::Text | OpCode::Binary) => {
                let mut z = Vec::new();
                deflate::compress(payload, d.window_bits, &mut z);
                self.write_frame_rsv(opcode, true, 0b100, &z, out);
            }
            _ => self.write_frame(opcode, fin, payload, out),
        }
        Ok(())
    }

    /// The header of a data frame whose payload the caller sends itself, uncopied (for example
    /// a shared `Bytes` as a second iovec). Servers only: client payloads must be masked.
    pub fn data_header(
        &mut self,
        opcode: OpCode,
        fin: bool,
        len: usize,
    ) -> Result<HeaderBuf, Error> {
        if self.role == Role::Client {
            return Err(UsageError::MaskRequired.into());
        }
        self.check_send(opcode, fin, len)?;
        Ok(FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask: None,
            payload_len: len as u64,
        }
        .encode())
    }

    /// Whether data messages may still be sent.
    pub fn can_send(&self) -> bool {
        self.state == State::Open
    }

    fn check_send(&mut self, opcode: OpCode, fin: bool, len: usize) -> Result<(), Error> {
        match self.state {
            State::Closed => return Err(Error::Closed),
            State::CloseSent { .. } => return Err(UsageError::CloseSent.into()),
            State::Open => {}
        }
        if opcode.is_control() {
            if opcode == OpCode::Close || !fin {
                return Err(UsageError::FragmentOrder.into());
            }
            if len > 125 {
                return Err(UsageError::ControlTooLong.into());
            }
            return Ok(());
        }
        let continuation = opcode == OpCode::Continuation;
        if continuation != self.sending_fragmented {
            return Err(UsageError::FragmentOrder.into());
        }
        self.sending_fragmented = !fin;
        Ok(())
    }

    /// Starts the close handshake. A second call while waiting for the peer is a no-op.
    pub fn close(
        &mut self,
        code: CloseCode,
        reason: &str,
        out: &mut Vec<u8>,
        now: u64,
    ) -> Result<(), Error> {
        if !code.is_valid_on_wire() {
            return Err(UsageError::InvalidCloseCode(code.0).into());
        }
        match self.state {
            State::Closed => Err(Error::Closed),
            State::CloseSent { .. } => Ok(()),
            State::Open => {
                self.write_close(code, reason, out);
                self.state = State::CloseSent {
                    deadline: now + self.config.close_timeout_ms,
                };
                Ok(())
            }
        }
    }

    /// When [`Connection::handle_timeout`] should next be called, if ever. Poll after every
    /// `recv`, `close` and `handle_timeout`. A caller may also call `handle_timeout` late or
    /// early: it checks the real deadlines, so a coarse timer wheel needs no rescheduling on
    /// every read.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::Closed => None,
            State::CloseSent { deadline } => Some(deadline),
            State::Open => {
                let idle = self.config.idle_timeout_ms.map(|t| self.last_recv + t);
                let ping = self
                    .config
                    .ping_interval_ms
                    .map(|p| self.last_recv.max(self.last_ping) + p);
                match (idle, ping) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Runs the timers: pings a quiet peer, fails an idle one (close 1001), and gives up on a
    /// close handshake the peer never answered. `Err` means the connection is now closed.
    pub fn handle_timeout(&mut self, now: u64, out: &mut Vec<u8>) -> Result<(), Error> {
        match self.state {
            State::Closed => Err(Error::Closed),
            State::CloseSent { deadline } => {
                if now >= deadline {
                    self.state = State::Closed;
                    self.reassembly = None;
                    return Err(Error::Timeout(TimeoutKind::CloseHandshake));
                }
                Ok(())
            }
            State::Open => {
                if let Some(t) = self.config.idle_timeout_ms {
                    if now >= self.last_recv + t {
                        return Err(self.fail(Error::Timeout(TimeoutKind::Idle), out));
                    }
                }
                if let Some(p) = self.config.ping_interval_ms {
                    if now >= self.last_recv.max(self.last_ping) + p {
                        self.write_frame(OpCode::Ping, true, &[], out);
                        self.last_ping = now;
                    }
                }
                Ok(())
            }
        }
    }

    fn write_close(&mut self, code: CloseCode, reason: &str, out: &mut Vec<u8>) {
        let reason = truncate_reason(reason);
        let mut body = [0u8; 125];
        body[..2].copy_from_slice(&code.0.to_be_bytes());
        body[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
        self.write_frame(OpCode::Close, true, &body[..2 + reason.len()], out);
    }

    fn write_frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8], out: &mut Vec<u8>) {
        self.write_frame_rsv(opcode, fin, 0, payload, out);
    }

    fn write_frame_rsv(
        &mut self,
        opcode: OpCode,
        fin: bool,
        rsv: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let mask = match self.role {
            Role::Server => None,
            Role::Client => Some(self.next_mask()),
        };
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        out.extend_from_slice(&header.encode());
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut out[start..], key);
        }
    }

    /// xorshift64*: masking keys need to be unpredictable to intermediaries, not cryptographic
    /// (section 10.3); the seed comes from the OS.
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let [a, b, c, d, ..] = word.to_be_bytes();
        [a, b, c, d]
    }
}

/// Parses and validates a close frame's body (section 5.5.1).
fn parse_close_body(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, Error> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::CloseBodyTooShort.into()),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0).into());
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Error::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}
