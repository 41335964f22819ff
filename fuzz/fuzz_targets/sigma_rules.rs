#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    palisade_collector::correlate::rules::fuzzing::sigma_rules(data)
});
