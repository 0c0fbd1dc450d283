//! Frame headers: all-or-nothing parsing and encoding into a small stack buffer (RFC 6455
//! section 5.2).
//!
//! The parser never consumes part of a header: on a short buffer it returns `Ok(None)` and the
//! caller keeps the bytes. The encoder writes only the header, so a payload (for example a shared
//! `bytes::Bytes`) goes out beside it as a second iovec without being copied.

use super::error::ProtocolError;

/// Frame opcodes defined by RFC 6455.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0x0,
    /// 0x1: a text (UTF-8) message or its first fragment.
    Text = 0x1,
    /// 0x2: a binary message or its first fragment.
    Binary = 0x2,
    /// 0x8: close.
    Close = 0x8,
    /// 0x9: ping.
    Ping = 0x9,
    /// 0xA: pong.
    Pong = 0xA,
}

impl OpCode {
    /// Decodes the low four bits of the first header byte.
    pub fn from_u8(byte: u8) -> Result<Self, ProtocolError> {
        Ok(match byte {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::UnknownOpcode(other)),
        })
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the bits 0b100, 0b010, 0b001.
    pub rsv: u8,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key, present on client-to-server frames.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

/// The longest header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

impl FrameHeader {
    /// Parses a header from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header (nothing is consumed),
    /// and otherwise the header with its length in bytes. Never reads past `buf`.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, len_bytes) = match b1 & 0x7F {
            //= https://www.rfc-editor.org/rfc/rfc6455#section-5.2
            //# If 126, the following 2 bytes interpreted as a 16-bit unsigned
            //# integer are the payload length.  If 127, the following 8 bytes
            //# interpreted as a 64-bit unsigned integer (the most significant bit
            //# MUST be 0) are the payload length.
            126 => match rest {
                [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
                _ => return Ok(None),
            },
            127 => match rest.first_chunk::<8>() {
                Some(bytes) => {
                    let len = u64::from_be_bytes(*bytes);
                    if len >> 63 != 0 {
                        return Err(ProtocolError::LengthOverflow);
                    }
                    (len, 8)
                }
                None => return Ok(None),
            },
            small => (u64::from(small), 0),
        };
        let mask = if masked {
            match rest.get(len_bytes..).and_then(|r| r.first_chunk::<4>()) {
                Some(key) => Some(*key),
                None => return Ok(None),
            }
        } else {
            None
        };
        let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, header_len)))
    }

    /// Encodes the header with the minimal length encoding.
    pub fn encode(&self) -> HeaderBuf {
        let mut buf = [0u8; MAX_HEADER_LEN];
        buf[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x07) << 4) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = 2;
        if self.payload_len < 126 {
            buf[1] = mask_bit | self.payload_len as u8;
        } else if let Ok(short) = u16::try_from(self.payload_len) {
            buf[1] = mask_bit | 126;
            buf[2..4].copy_from_slice(&short.to_be_bytes());
            len = 4;
        } else {
            buf[1] = mask_bit | 127;
            buf[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
            len = 10;
        }
        if let Some(key) = self.mask {
            buf[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        HeaderBuf {
            buf,
            len: len as u8,
        }
    }
}

/// An encoded frame header on the stack; dereferences to its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderBuf {
    buf: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl std::ops::Deref for HeaderBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// The header of an unmasked server frame: what a broadcast encodes once and shares.
pub fn server_header(opcode: OpCode, fin: bool, payload_len: usize) -> HeaderBuf {
    FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: None,
        payload_len: payload_len as u64,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(h: FrameHeader) {
        let bytes = h.encode();
        assert_eq!(FrameHeader::parse(&bytes), Ok(Some((h, bytes.len()))));
        for short in 0..bytes.len() {
            assert_eq!(
                FrameHeader::parse(&bytes[..short]),
                Ok(None),
                "prefix {short} of {h:?}"
            );
        }
    }

    #[test]
    fn header_roundtrips_and_short_buffers_consume_nothing() {
        for len in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                for opcode in [
                    OpCode::Text,
                    OpCode::Binary,
                    OpCode::Continuation,
                    OpCode::Ping,
                ] {
                    roundtrip(FrameHeader {
                        fin: len % 2 == 0,
                        rsv: 0,
                        opcode,
                        mask,
                        payload_len: len,
                    });
                }
            }
        }
        roundtrip(FrameHeader {
            fin: true,
            rsv: 0b101,
            opcode: OpCode::Close,
            mask: None,
            payload_len: 2,
        });
    }

    #[test]
    fn length_encodings_are_minimal() {
        assert_eq!(server_header(OpCode::Text, true, 125).len(), 2);
        assert_eq!(server_header(OpCode::Text, true, 126).len(), 4);
        assert_eq!(server_header(OpCode::Text, true, 65535).len(), 4);
        assert_eq!(server_header(OpCode::Text, true, 65536).len(), 10);
        assert_eq!(&*server_header(OpCode::Text, true, 5), &[0x81, 0x05]);
    }

    #[test]
    fn rejects_unknown_opcodes_and_huge_lengths() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0]),
                Err(ProtocolError::UnknownOpcode(op))
            );
        }
        let mut buf = vec![0x82, 127];
        buf.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(FrameHeader::parse(&buf), Err(ProtocolError::LengthOverflow));
    }

    #[test]
    fn rfc_examples() {
        // Section 5.7: single-frame masked text "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let Ok(Some((h, n))) = FrameHeader::parse(&bytes) else {
            panic!("RFC example rejected")
        };
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
        assert!(h.fin);
        // 256 bytes binary, unmasked.
        let Ok(Some((h, n))) = FrameHeader::parse(&[0x82, 0x7E, 0x01, 0x00]) else {
            panic!("16-bit length rejected")
        };
        assert_eq!((h.payload_len, n, h.opcode), (256, 4, OpCode::Binary));
    }
}
