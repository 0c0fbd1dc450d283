#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| c10m_signaling::fuzzing::node_command(data));
