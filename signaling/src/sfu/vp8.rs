//! The one fact the SFU reads from VP8 payloads: whether a packet starts a keyframe (RFC 7741).
//! A simulcast layer switch may only happen there, since the new layer's earlier frames cannot
//! be decoded without it.
//!
//! ```text
//! payload descriptor  |X|R|N|S|R| PID |       S: start of a partition, PID: its index
//!   if X              |I|L|T|K| RSV   |
//!   if I              |M| PictureID   |  (and a second byte when M)
//!   if L              |   TL0PICIDX   |
//!   if T or K         |TID|Y| KEYIDX  |
//! payload header      |Size0|H| VER |P|  P = 0: a keyframe (first byte of the frame)
//! ```

/// The length of a payload's descriptor when the payload starts a frame (S set, partition 0);
/// `None` otherwise or when truncated.
fn frame_start(payload: &[u8]) -> Option<usize> {
    let &first = payload.first()?;
    if first & 0x10 == 0 || first & 0x07 != 0 {
        return None;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let &ext = payload.get(at)?;
        at += 1;
        if ext & 0x80 != 0 {
            let &pid = payload.get(at)?;
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    (at < payload.len()).then_some(at)
}

/// Whether a VP8 RTP payload is the first packet of a keyframe. Malformed or truncated
/// payloads are not keyframes.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    frame_start(payload).is_some_and(|at| payload[at] & 0x01 == 0)
}

/// The width of the keyframe a VP8 RTP payload starts (from the keyframe header: the 3-byte
/// frame tag, the start code 9d 01 2a, then the width in 14 bits, little-endian); `None` for
/// other payloads or when the header is cut short.
pub fn keyframe_width(payload: &[u8]) -> Option<u16> {
    let at = frame_start(payload)?;
    let header = payload.get(at..at + 8)?;
    if header[0] & 0x01 != 0 || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    Some(u16::from_le_bytes([header[6], header[7]]) & 0x3fff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_told_from_other_frames() {
        // S=1, PID=0, no extension; payload header P=0 (key), then P=1 (inter).
        assert!(starts_keyframe(&[0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a]));
        assert!(!starts_keyframe(&[0x10, 0x51, 0x02, 0x00]));
        // A packet in the middle of a frame (S=0) is never the start of one.
        assert!(!starts_keyframe(&[0x00, 0x50]));
        // A later partition (PID=1) is not the frame's start.
        assert!(!starts_keyframe(&[0x11, 0x50]));
    }

    #[test]
    fn the_extensions_are_skipped() {
        // X, I with a 15-bit picture id (M), L, T: the payload header is the sixth byte.
        assert!(starts_keyframe(&[
            0x90,
            0xe0,
            0x80 | 0x12,
            0x34,
            0x05,
            0x40,
            0x9c
        ]));
        assert!(!starts_keyframe(&[
            0x90,
            0xe0,
            0x80 | 0x12,
            0x34,
            0x05,
            0x40,
            0x9d
        ]));
        // X, I with a 7-bit picture id: the payload header is the fourth byte.
        assert!(starts_keyframe(&[0x90, 0x80, 0x12, 0x9c]));
        // K alone also takes a byte.
        assert!(starts_keyframe(&[0x90, 0x10, 0x00, 0x9c]));
    }

    #[test]
    fn a_keyframe_tells_its_width() {
        // 640 x 480 (0x280, with a scaling field of 1 in the top bits to be ignored).
        let key = [
            0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x42, 0xe0, 0x01,
        ];
        assert_eq!(keyframe_width(&key), Some(0x0280));
        // An inter frame, a wrong start code and a cut header tell nothing.
        let mut inter = key;
        inter[1] |= 0x01;
        assert_eq!(keyframe_width(&inter), None);
        let mut wrong = key;
        wrong[5] = 0x02;
        assert_eq!(keyframe_width(&wrong), None);
        assert_eq!(keyframe_width(&key[..8]), None);
    }

    #[test]
    fn truncated_payloads_are_not_keyframes() {
        for p in [
            &[][..],
            &[0x10],
            &[0x90],
            &[0x90, 0x80],
            &[0x90, 0x80, 0x80],
            &[0x90, 0xe0, 0x80, 0x34, 0x05, 0x40],
        ] {
            assert!(!starts_keyframe(p), "{p:?}");
        }
    }
}
