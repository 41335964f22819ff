//! Byte layouts of store keys. Everything big-endian so sled's byte order is time order.
//!
//! ```text
//! primary  ev/<day>   ts(8) | agent_len(1) | agent | seq(8)            -> event JSON
//! agent    ag/<day>   agent | 0x00 | seq(8)                            -> primary key
//! kind     kd/<day>   kind(1) | primary key                             -> ()
//! severity sv/<day>   severity(1) | primary key                         -> ()
//! src ip   si/<day>   ip as 16 bytes (IPv4 mapped) | primary key        -> ()
//! ```
//! `ts` is nanoseconds since the epoch with the sign bit flipped, so negative times sort first.

use std::net::IpAddr;

pub(crate) fn ts_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn ts_from(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// The primary key of one event.
pub(crate) fn primary(ts: i64, agent: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + agent.len());
    k.extend_from_slice(&ts_bytes(ts));
    // Agent ids are at most 64 bytes (checked when the batch is decoded).
    k.push(agent.len() as u8);
    k.extend_from_slice(agent.as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Splits a primary key into (ts, agent, seq).
pub(crate) fn split_primary(k: &[u8]) -> Option<(i64, &str, u64)> {
    let ts: [u8; 8] = k.get(..8)?.try_into().ok()?;
    let len = *k.get(8)? as usize;
    let agent = std::str::from_utf8(k.get(9..9 + len)?).ok()?;
    let seq: [u8; 8] = k.get(9 + len..17 + len)?.try_into().ok()?;
    if k.len() != 17 + len {
        return None;
    }
    Some((ts_from(ts), agent, u64::from_be_bytes(seq)))
}

/// The dedup/agent index key.
pub(crate) fn by_agent(agent: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + agent.len());
    k.extend_from_slice(agent.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A one-byte-prefixed index key (kind, severity).
pub(crate) fn prefixed(prefix: &[u8], primary: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + primary.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(primary);
    k
}

pub(crate) fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_round_trip_and_order() {
        let k = primary(-5, "a-1", 9);
        assert_eq!(split_primary(&k), Some((-5, "a-1", 9)));
        assert!(primary(-5, "z", 0) < primary(3, "a", 0));
        assert!(primary(3, "a", 0) < primary(4, "a", 0));
        assert_eq!(split_primary(&k[..k.len() - 1]), None);
    }
}
