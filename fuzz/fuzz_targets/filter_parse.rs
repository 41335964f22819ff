#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_collector::query::fuzzing::filter_parse(data));
