#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_agent::decode::fuzzing::app_protocols(data));
