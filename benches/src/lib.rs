//! Benchmark-only crate: peers (tungstenite today; tokio-tungstenite and fastwebsockets echo
//! servers with the engine) are dependencies here and nowhere else.
//!
//! Shared helpers for building the inputs the benchmarks parse.

/// `count` masked client frames of `size` bytes each, as a server reads them off the wire.
pub fn masked_binary_frames(count: usize, size: usize) -> Vec<u8> {
    use c10m_engine::proto::OpCode;
    use c10m_engine::proto::frame::FrameHeader;
    use c10m_engine::proto::mask::apply_mask;
    let mut out = Vec::with_capacity(count * (size + 14));
    for i in 0..count {
        let key = (i as u32).wrapping_mul(0x9E37_79B9).to_be_bytes();
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: Some(key),
            payload_len: size as u64,
        };
        out.extend_from_slice(&header.encode());
        let start = out.len();
        out.extend((0..size).map(|j| (j % 251) as u8));
        apply_mask(&mut out[start..], key);
    }
    out
}
