#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_agent::integrity::db::fuzzing::baseline_file(data));
