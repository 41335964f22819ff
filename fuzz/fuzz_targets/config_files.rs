#![no_main]
// `data[0]` picks the program whose config loader reads the rest.
libfuzzer_sys::fuzz_target!(|data: &[u8]| match data.split_first() {
    Some((s, rest)) if s % 2 == 0 => palisade_agent::config::fuzzing::agent_config(rest),
    Some((_, rest)) => palisade_collector::config::fuzzing::collector_config(rest),
    None => {}
});
