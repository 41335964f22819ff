#![no_main]
libfuzzer_sys::fuzz_target!(
    |data: &[u8]| palisade_agent::capture::pcap_file::fuzzing::pcap_file(data)
);
