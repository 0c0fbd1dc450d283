//! Payload masking (RFC 6455 section 5.3).
//!
//! Every client-to-server frame is XOR-ed with a 4-byte key. Masking sits on the hot path of every
//! frame the server reads, so [`apply_mask`] works on 64-byte blocks against a precomputed 64-byte
//! pattern: fixed-size arrays let the compiler turn the inner loop into SIMD XORs without any
//! `unsafe`. [`apply_mask_bytewise`] is the obviously-correct reference it is tested against.

//= https://www.rfc-editor.org/rfc/rfc6455#section-5.3
//# Octet i of the transformed data ("transformed-octet-i") is the XOR of
//# octet i of the original data ("original-octet-i") with octet at index
//# i modulo 4 of the masking key ("masking-key-octet-j")

/// Block size of the fast path. A multiple of 4, so the key lines up again after every block.
const BLOCK: usize = 64;

/// XORs `buf` in place with `key`, starting at key index 0. Masking twice restores the input.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    if buf.len() < 16 {
        apply_mask_bytewise(buf, key);
        return;
    }
    let mut pattern = [0u8; BLOCK];
    for (i, p) in pattern.iter_mut().enumerate() {
        *p = key[i & 3];
    }
    let mut blocks = buf.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for (b, p) in block.iter_mut().zip(pattern.iter()) {
            *b ^= *p;
        }
    }
    // Every block is a multiple of 4 long, so the tail starts at key index 0 again.
    for (b, p) in blocks.into_remainder().iter_mut().zip(pattern.iter()) {
        *b ^= *p;
    }
}

/// The byte-at-a-time definition from the RFC; the reference for tests and tiny payloads.
#[inline]
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_bytewise_at_every_length_and_alignment() {
        let key = [0x6d, 0xb6, 0xb2, 0x80];
        let source: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        for align in 0..16 {
            for len in 0..=64 + 70 {
                let mut fast = source.clone();
                let mut slow = source.clone();
                apply_mask(&mut fast[align..align + len], key);
                apply_mask_bytewise(&mut slow[align..align + len], key);
                assert_eq!(fast, slow, "len {len} align {align}");
            }
        }
    }

    #[test]
    fn masking_is_an_involution() {
        let key = [1, 2, 3, 4];
        let original: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut buf = original.clone();
        apply_mask(&mut buf, key);
        assert_ne!(buf, original);
        apply_mask(&mut buf, key);
        assert_eq!(buf, original);
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 section 5.7: "Hello" masked with 37 fa 21 3d.
        let mut buf = *b"Hello";
        apply_mask(&mut buf, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(buf, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }
}
