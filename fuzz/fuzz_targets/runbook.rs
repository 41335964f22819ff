#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_replicator::fuzzing::runbook_parse(data));
