#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_replicator::fuzzing::peer_blobs_parse(data));
