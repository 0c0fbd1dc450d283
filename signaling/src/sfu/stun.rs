//! Routing a datagram to its peer connection: the server's half of a STUN binding request's
//! USERNAME (`server-ufrag:client-ufrag`, RFC 8445 section 7.2.2) names the participant; every
//! other datagram (DTLS, SRTP, SRTCP) is routed by the source address its STUN came from.

/// STUN's magic cookie (RFC 5389 section 6).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// The USERNAME attribute.
const USERNAME: u16 = 0x0006;
/// A STUN header's length.
const HEADER: usize = 20;

/// Whether `data` looks like a STUN message (RFC 7983: first byte 0-3, the magic cookie).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= HEADER && data[0] < 4 && data[4..8] == MAGIC_COOKIE
}

/// The server's ufrag from a STUN message's USERNAME: the part before the colon. `None` when
/// the message is not STUN, has no USERNAME, or is malformed.
pub fn server_ufrag(data: &[u8]) -> Option<&str> {
    if !is_stun(data) {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let end = HEADER.checked_add(declared)?.min(data.len());
    let mut at = HEADER;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([data[at], data[at + 1]]);
        let len = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        let value = data.get(at + 4..at + 4 + len)?;
        if kind == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next().filter(|u| !u.is_empty());
        }
        // Attributes are padded to four bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attrs {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn finds_the_server_ufrag_after_other_attributes() {
        let msg = binding(&[(0x8022, b"abc"), (USERNAME, b"srv1:cli2")]);
        assert_eq!(server_ufrag(&msg), Some("srv1"));
    }

    #[test]
    fn no_username_or_not_stun_is_none() {
        assert_eq!(server_ufrag(&binding(&[(0x8022, b"abc")])), None);
        // A DTLS record (first byte 22) and an RTP packet (first byte 0x80).
        assert_eq!(server_ufrag(&[22; 40]), None);
        assert_eq!(server_ufrag(&[0x80; 40]), None);
    }

    #[test]
    fn truncated_attributes_are_none_not_a_panic() {
        let mut msg = binding(&[(USERNAME, b"srv1:cli2")]);
        msg.truncate(HEADER + 6);
        assert_eq!(server_ufrag(&msg), None);
        for cut in 0..msg.len() {
            let _ = server_ufrag(&msg[..cut]);
        }
        // A length pointing past the end.
        let mut long = binding(&[(USERNAME, b"srv1:cli2")]);
        long[HEADER + 2] = 0xff;
        assert_eq!(server_ufrag(&long), None);
    }
}
