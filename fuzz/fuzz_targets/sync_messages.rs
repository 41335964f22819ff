#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_replicator::fuzzing::sync_messages(data));
