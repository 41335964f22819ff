//! The bidirectional flow table (like Zeek's `conn.log` or Suricata's flow records): turns
//! [`PacketMeta`](crate::packet::PacketMeta)s into flows keyed by VLAN, protocol and the two
//! endpoints, tracks per-direction counts, the TCP state machine and flag history, and emits
//! one `EventKind::Flow` record per finished flow (or per active-timeout slice of a long one),
//! carrying the Zeek `conn_state`, `history` and the community id.
//!
//! - [`key`]: the direction-free [`FlowKey`] and ICMP type/code mapping.
//! - [`state`]: TCP endpoint states, [`ConnState`], [`History`].
//! - [`community_id`]: community id v1.
//! - [`table`]: the [`FlowTable`] itself (O(1) per packet, bounded, LRU eviction).
//! - `record`: a finished flow as an ECS event.
//!
//! Time is capture time only (`PacketMeta::ts` and the `now_ns` given to
//! [`FlowTable::expire`]), so a replay gives the same records every time.

pub mod community_id;
pub mod key;
mod list;
mod record;
pub mod state;
pub mod table;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use community_id::community_id_v1;
pub use key::{Direction, FlowKey};
pub use state::{ConnState, History, TcpEndpoint};
pub use table::{EndReason, Flow, FlowId, FlowTable, FlowUpdate};

/// Flow table settings (`[flow]` in the agent config). Idle timeouts differ by protocol state,
/// as in Zeek and Suricata: unanswered TCP attempts and one-shot protocols go quickly,
/// established TCP connections may sit quiet for minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Seconds without a packet before an established (or mid-stream) TCP flow ends.
    pub tcp_idle_timeout_secs: u64,
    /// Seconds without a packet before a TCP flow whose handshake never completed ends
    /// (an unanswered SYN is recorded as `S0` after this long).
    pub tcp_unestablished_timeout_secs: u64,
    /// Seconds a TCP flow closed by FINs from both sides, or by a RST, is kept for stray
    /// packets (final ACKs, retransmitted RSTs) before its record is emitted.
    pub tcp_close_linger_secs: u64,
    /// Seconds without a packet before a UDP flow ends.
    pub udp_idle_timeout_secs: u64,
    /// Seconds without a packet before an ICMP, ICMPv6 or other IP protocol flow ends.
    pub other_idle_timeout_secs: u64,
    /// Seconds after which a long flow emits a record (`end_reason: active`) and goes on
    /// counting in a new one; 0 disables.
    pub active_timeout_secs: u64,
    /// Most flows tracked at once; when full, the least recently seen flow is emitted
    /// (`end_reason: evicted`) and counted in the `evicted` statistic.
    pub max_flows: u64,
    /// Emit one flow record in this many (1 = all). Chosen per flow, so every record of a
    /// sampled flow is kept; alerts are never sampled.
    pub sample_rate: u64,
    /// Community id seed; 0 unless every tool in the deployment agrees on another.
    pub community_id_seed: u16,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            tcp_idle_timeout_secs: 300,
            tcp_unestablished_timeout_secs: 30,
            tcp_close_linger_secs: 5,
            udp_idle_timeout_secs: 60,
            other_idle_timeout_secs: 30,
            active_timeout_secs: 3600,
            max_flows: 200_000,
            sample_rate: 1,
            community_id_seed: 0,
        }
    }
}

/// A flow setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid flow setting {field} = {value}: {reason}")]
pub struct FlowConfigError {
    /// The option's name.
    pub field: &'static str,
    /// The rejected value.
    pub value: u64,
    /// What it must be.
    pub reason: &'static str,
}

/// Longest timeout accepted: anything longer would overflow nanoseconds in an `i64`
/// (about 292 years), and is meaningless anyway.
const MAX_TIMEOUT_SECS: u64 = 100 * 365 * 86_400;

impl FlowConfig {
    /// Checks every setting; `FlowTable::new` clamps instead of failing.
    pub fn validate(&self) -> Result<(), FlowConfigError> {
        let timeouts = [
            ("tcp_idle_timeout_secs", self.tcp_idle_timeout_secs),
            (
                "tcp_unestablished_timeout_secs",
                self.tcp_unestablished_timeout_secs,
            ),
            ("tcp_close_linger_secs", self.tcp_close_linger_secs),
            ("udp_idle_timeout_secs", self.udp_idle_timeout_secs),
            ("other_idle_timeout_secs", self.other_idle_timeout_secs),
        ];
        for (field, value) in timeouts {
            if value == 0 || value > MAX_TIMEOUT_SECS {
                return Err(FlowConfigError {
                    field,
                    value,
                    reason: "must be between 1 and 3153600000 seconds",
                });
            }
        }
        if self.active_timeout_secs > MAX_TIMEOUT_SECS {
            return Err(FlowConfigError {
                field: "active_timeout_secs",
                value: self.active_timeout_secs,
                reason: "must be at most 3153600000 seconds (0 disables)",
            });
        }
        if self.max_flows == 0 || self.max_flows > u64::from(u32::MAX - 1) {
            return Err(FlowConfigError {
                field: "max_flows",
                value: self.max_flows,
                reason: "must be between 1 and 4294967294",
            });
        }
        if self.sample_rate == 0 {
            return Err(FlowConfigError {
                field: "sample_rate",
                value: 0,
                reason: "must be at least 1 (1 keeps every record)",
            });
        }
        Ok(())
    }
}

/// Flow table counters, for heartbeats and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowStats {
    /// Flows in the table now.
    pub active: u64,
    /// Flows created since start.
    pub created: u64,
    /// Flow records emitted.
    pub emitted: u64,
    /// Flows pushed out by `max_flows`.
    pub evicted: u64,
    /// Flow records dropped by `sample_rate`.
    pub sampled_out: u64,
    /// Packets that belong to no flow (non-IP such as ARP, mixed address families).
    pub ignored: u64,
    /// Non-first IP fragments (no ports, so not attributed to a flow).
    pub fragments: u64,
}
