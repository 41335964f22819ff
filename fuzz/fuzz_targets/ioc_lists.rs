#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_agent::detect::ioc::fuzzing::ioc_lists(data));
