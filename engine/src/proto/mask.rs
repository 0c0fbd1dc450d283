//! Payload masking (RFC 6455 section 5.3).
//!
//! Every client-to-server frame is XOR-ed with a 4-byte key. Masking sits on the hot path of every
//! frame the server reads, so [`apply_mask`] works on 64-byte blocks (long payloads) and 8-byte
//! words (the rest), plain safe loops that the compiler turns into SIMD XORs without `unsafe`. [`apply_mask_bytewise`] is the obviously-correct reference it is tested against.

//= https://www.rfc-editor.org/rfc/rfc6455#section-5.3
//# Octet i of the transformed data ("transformed-octet-i") is the XOR of
//# octet i of the original data ("original-octet-i") with octet at index
//# i modulo 4 of the masking key ("masking-key-octet-j")

/// XORs `buf` in place with `key`, starting at key index 0. Masking twice restores the input.
///
/// Long payloads go through 64-byte blocks against a 64-byte pattern (fixed-size arrays, which
/// the compiler turns into wide SIMD XORs); the rest through 8-byte words against the key
/// repeated twice. Both are plain safe loops. Block and word sizes are multiples of 4, so the key
/// lines up again at every step.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let word = [a, b, c, d, a, b, c, d];
    let mut rest = buf;
    if rest.len() >= BLOCK_THRESHOLD {
        let mut pattern = [0u8; 64];
        for p in pattern.chunks_exact_mut(8) {
            p.copy_from_slice(&word);
        }
        let mut blocks = rest.chunks_exact_mut(64);
        for block in &mut blocks {
            for (x, p) in block.iter_mut().zip(pattern.iter()) {
                *x ^= *p;
            }
        }
        rest = blocks.into_remainder();
    }
    let word = u64::from_ne_bytes(word);
    let mut words = rest.chunks_exact_mut(8);
    for w in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(w);
        w.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    apply_mask_bytewise(words.into_remainder(), key);
}

/// From this length on the 64-byte block loop wins (measured with `cargo bench --bench codec`).
const BLOCK_THRESHOLD: usize = 256;

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
        let source: Vec<u8> = (0..1000u32).map(|i| (i * 37 + 11) as u8).collect();
        // Every length through both paths (words below BLOCK_THRESHOLD, blocks + words above).
        for align in 0..16 {
            for len in (0..=BLOCK_THRESHOLD + 140).chain([511, 512, 513, 700, 960]) {
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
