#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_agent::reassembly::fuzzing::stream_reassembly(data));
