//! `[detect.yara]`: the configuration of the YARA-X payload detector ([`super::yara`]). Kept apart
//! from the detector so configs parse the same in builds without the `yara` feature, which then
//! refuse `enabled = true` with a clear error.

use std::path::PathBuf;

use serde::Deserialize;

/// Configuration of the YARA-X payload detector (`[detect.yara]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct YaraConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Directory of `*.yar` / `*.yara` rule files. A relative path is taken from the agent's
    /// working directory (from the config file's directory when set in a config file). Default
    /// `signatures/yara`, the set shipped in the repository.
    pub dir: PathBuf,
    /// Watch `dir` and recompile when a rule file changes, without a restart. Default true.
    pub watch: bool,
    /// Quiet time after a change before recompiling. Default 500 ms.
    pub reload_debounce_ms: u64,
    /// Bytes of each TCP direction reassembled and scanned, from its start. Default 65 536.
    pub stream_depth: usize,
    /// Bytes held ahead of a sequence hole before the hole is given up. Default 32 768.
    pub max_out_of_order_bytes: usize,
    /// Bytes already scanned carried in front of the next scan of the same direction, so
    /// patterns straddling two scans match. Default 1 024.
    pub overlap: usize,
    /// Scan UDP payloads (each datagram on its own). Default true.
    pub udp: bool,
    /// Smallest UDP payload scanned. Default 8 bytes.
    pub udp_min_bytes: usize,
    /// TCP streams tracked at once; when full, the longest idle eighth is scanned and dropped
    /// (counted in `evictions`). Default 65 536.
    pub max_streams: usize,
    /// Bytes held for reassembly across all streams; past it, streams are scanned early (oldest
    /// first) to free memory. Default 64 MiB.
    pub memcap_bytes: usize,
    /// A stream idle this long (capture time) is scanned and dropped. Default 30 s.
    pub stream_idle_secs: u64,
    /// Time bound of one scan, whole seconds: a scan is stopped after between this and one
    /// second more (yara-x counts time in whole seconds). Default 1 s.
    pub scan_timeout_secs: u64,
    /// Buffers waiting for the scanner thread. Default 256.
    pub queue_depth: usize,
}

impl Default for YaraConfig {
    fn default() -> Self {
        YaraConfig {
            enabled: true,
            dir: PathBuf::from("signatures/yara"),
            watch: true,
            reload_debounce_ms: 500,
            stream_depth: 64 * 1024,
            max_out_of_order_bytes: 32 * 1024,
            overlap: 1024,
            udp: true,
            udp_min_bytes: 8,
            max_streams: 65_536,
            memcap_bytes: 64 * 1024 * 1024,
            stream_idle_secs: 30,
            scan_timeout_secs: 1,
            queue_depth: 256,
        }
    }
}
