#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| c10m_signaling::fuzzing::vp8(data));
