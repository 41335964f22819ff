#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_collector::api::fuzzing::api_request(data));
