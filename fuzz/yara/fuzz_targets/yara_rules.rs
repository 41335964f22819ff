#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_agent::yara_rules::fuzzing::yara_rules(data));
