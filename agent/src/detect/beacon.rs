//! Beaconing detection: one host connecting to one destination (IP, port, transport) at a
//! steady period, as command-and-control implants do. A new connection is a TCP SYN without ACK,
//! or the first UDP packet of the pair after a silence of at least `min_gap_secs`; bursts closer
//! than that (SYN retransmissions, a query and its retries) are one connection. The last
//! `max_intervals` inter-arrival times per pair are kept, and a pair alerts when enough of them
//! have a low coefficient of variation (stddev / mean) and a mean inside the configured band.
//!
//! Most pairs connect once, so a pair starts in a cheap candidate table and only moves to the
//! interval table at its second connection; a flood of one-off connections therefore never pushes
//! pairs with history out. The candidate table is direct-mapped (a key's slot is fixed by its
//! hash, a colliding key replaces it) rather than least-recently-seen: under heavy churn LRU
//! would flush a slow beacon's first sighting every period without fail, while a slot survives
//! `n` new pairs with probability about `exp(-n / slots)`, and every beacon connection retries.
//! The slot hash is keyed by the agent id, so replays on one agent evict identically.

use std::collections::VecDeque;
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher};
use std::net::IpAddr;

use palisade_wire::{Event, Severity};
use serde_json::json;

use super::window::{nanos_to_secs, rfc3339, secs_to_nanos, AlertGate, BoundedMap, LastSeen};
use super::{AlertBuilder, Detector};
use crate::packet::{proto, tcp_flags, PacketMeta};

/// Rule id of the beaconing alert.
pub const RULE_PERIODIC: &str = "palisade.net.beacon.periodic";

/// How many recent intervals an alert lists.
const SAMPLE_LEN: usize = 10;

/// Settings of the beaconing detector.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeaconConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Intervals (connections after the first) a pair needs before it can alert.
    pub min_intervals: usize,
    /// Most recent intervals kept per pair; the statistics use all kept intervals.
    pub max_intervals: usize,
    /// Largest coefficient of variation (stddev / mean of the intervals) still called periodic.
    pub max_jitter_ratio: f64,
    /// Shortest mean interval that alerts; faster repetition is polling or streaming.
    pub min_interval_secs: u64,
    /// Longest mean interval that alerts; a silence longer than this also restarts the pair's
    /// interval history.
    pub max_interval_secs: u64,
    /// Silence after which a packet of the pair starts a new connection (UDP), and the least
    /// time between two SYNs counted as separate connections (TCP).
    pub min_gap_secs: u64,
    /// Minimum time between two alerts for one pair.
    pub realert_secs: u64,
    /// Most pairs with interval history tracked at once; least recently seen evicted first.
    pub max_tracked_pairs: usize,
    /// Slots of the table of pairs seen only once (direct-mapped: a new pair replaces the one in
    /// its slot). Allocated up front, about 80 B each.
    pub candidate_slots: usize,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        BeaconConfig {
            enabled: true,
            // Eight steady intervals by chance is rare; fewer alerts on ordinary retry loops.
            min_intervals: 8,
            // Half an hour of history at a one-minute period; 32 x 8 B per pair.
            max_intervals: 32,
            // Cobalt Strike's default jitter is 0%; operators add 10-20%, which a 0.1 bar still
            // catches at the low end without flagging human-driven traffic (CV well above 0.5).
            max_jitter_ratio: 0.1,
            // Below ten seconds it is keep-alive or polling, which has its own signatures.
            min_interval_secs: 10,
            // Hourly check-ins are common for implants; beyond that history is too sparse.
            max_interval_secs: 3600,
            // Retransmissions and DNS retries arrive within a few seconds of each other.
            min_gap_secs: 5,
            // One alert per hour per pair is plenty for a steady implant.
            realert_secs: 3600,
            // 16 Ki pairs x ~400 B is about 6 MiB.
            max_tracked_pairs: 16_384,
            // 128 Ki slots x ~80 B is about 10 MiB; an hourly beacon's first sighting survives
            // an hour of 36 new pairs per second with even odds, and each connection retries.
            candidate_slots: 131_072,
        }
    }
}

/// Source, destination, destination port, transport.
type PairKey = (IpAddr, IpAddr, u16, u8);

/// A pair seen connecting once so far.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    first_seen: i64,
    last_conn: i64,
    last_packet: i64,
}

/// The direct-mapped candidate table.
#[derive(Debug)]
struct CandidateSlots {
    slots: Vec<Option<(PairKey, Candidate)>>,
    seed: u64,
    evictions: u64,
}

impl CandidateSlots {
    fn new(slots: usize, agent_id: &str) -> Self {
        let mut h = DefaultHasher::new();
        agent_id.hash(&mut h);
        CandidateSlots {
            slots: vec![None; slots.max(1)],
            seed: h.finish(),
            evictions: 0,
        }
    }

    fn index(&self, key: &PairKey) -> usize {
        // Runs for every SYN and UDP packet: foldhash (seeded, a few ns) rather than SipHash,
        // which was ~3 % of a replay. Fixed seed per agent, so a replay maps pairs to the
        // same slots every time.
        let h = foldhash::fast::FixedState::with_seed(self.seed).hash_one(key);
        let len = self.slots.len() as u64;
        // The remainder is below `slots.len()`, so it fits usize.
        usize::try_from(h % len).unwrap_or(0)
    }

    /// The live candidate for `key` (entries not seen since `stale_before` are gone).
    fn get_mut(&mut self, key: &PairKey, stale_before: i64) -> Option<&mut Candidate> {
        let i = self.index(key);
        match self.slots.get_mut(i) {
            Some(Some((k, c))) if k == key && c.last_packet >= stale_before => Some(c),
            _ => None,
        }
    }

    /// Puts `key` in its slot, replacing (and counting) a live different occupant.
    fn insert(&mut self, key: PairKey, candidate: Candidate, stale_before: i64) {
        let i = self.index(&key);
        if let Some(slot) = self.slots.get_mut(i) {
            if let Some((k, c)) = slot {
                if *k != key && c.last_packet >= stale_before {
                    self.evictions += 1;
                }
            }
            *slot = Some((key, candidate));
        }
    }

    fn remove(&mut self, key: &PairKey) {
        let i = self.index(key);
        if let Some(slot) = self.slots.get_mut(i) {
            if slot.as_ref().is_some_and(|(k, _)| k == key) {
                *slot = None;
            }
        }
    }
}

/// A pair with interval history.
#[derive(Debug)]
struct Pair {
    first_seen: i64,
    last_conn: i64,
    last_packet: i64,
    connections: u64,
    intervals: VecDeque<i64>,
    gate: AlertGate,
}

impl LastSeen for Pair {
    fn last_seen(&self) -> i64 {
        self.last_packet
    }
}

/// Mean and population standard deviation of intervals, in seconds.
fn mean_stddev(intervals: &VecDeque<i64>) -> (f64, f64) {
    let n = intervals.len() as f64;
    let mean = intervals.iter().map(|&i| nanos_to_secs(i)).sum::<f64>() / n;
    let var = intervals
        .iter()
        .map(|&i| (nanos_to_secs(i) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

/// Detects periodic connections.
#[derive(Debug)]
pub struct BeaconDetector {
    config: BeaconConfig,
    agent_id: String,
    min_gap: i64,
    max_interval: i64,
    realert: i64,
    candidates: CandidateSlots,
    pairs: BoundedMap<PairKey, Pair>,
}

impl BeaconDetector {
    /// A detector with `config`, alerting as `agent_id`.
    pub fn new(config: BeaconConfig, agent_id: &str) -> Self {
        BeaconDetector {
            min_gap: secs_to_nanos(config.min_gap_secs),
            max_interval: secs_to_nanos(config.max_interval_secs),
            realert: secs_to_nanos(config.realert_secs),
            candidates: CandidateSlots::new(config.candidate_slots, agent_id),
            pairs: BoundedMap::new(config.max_tracked_pairs),
            agent_id: agent_id.to_string(),
            config,
        }
    }

    /// Whether a packet at `ts` starts a new connection, given the last connection start and
    /// the last packet of the pair.
    fn is_new_connection(&self, tcp: bool, ts: i64, last_conn: i64, last_packet: i64) -> bool {
        let reference = if tcp { last_conn } else { last_packet };
        ts.saturating_sub(reference) >= self.min_gap
    }

    fn evaluate(&self, p: &PacketMeta<'_>, pair: &mut Pair, out: &mut Vec<Event>) {
        let c = &self.config;
        if pair.intervals.len() < c.min_intervals.max(1) {
            return;
        }
        let (mean, stddev) = mean_stddev(&pair.intervals);
        if mean <= 0.0 {
            return;
        }
        let jitter = stddev / mean;
        // Config seconds fit f64 exactly for any realistic value.
        let in_band = mean >= c.min_interval_secs as f64 && mean <= c.max_interval_secs as f64;
        if jitter > c.max_jitter_ratio || !in_band {
            return;
        }
        let Some(suppressed) = pair.gate.try_fire(p.ts, self.realert) else {
            return;
        };
        let recent: Vec<f64> = pair
            .intervals
            .iter()
            .rev()
            .take(SAMPLE_LEN)
            .rev()
            .map(|&i| nanos_to_secs(i))
            .collect();
        let evidence = json!({
            "mean_interval_secs": mean,
            "stddev_secs": stddev,
            "jitter_ratio": jitter,
            "intervals": pair.intervals.len(),
            "connections": pair.connections,
            "first_seen": rfc3339(pair.first_seen),
            "last_seen": rfc3339(p.ts),
            "recent_intervals_secs": recent,
            "max_jitter_ratio": c.max_jitter_ratio,
            "min_interval_secs": c.min_interval_secs,
            "max_interval_secs": c.max_interval_secs,
            "min_intervals": c.min_intervals,
            "suppressed": suppressed,
        });
        let (src, dst) = (
            p.src_ip.map(|i| i.to_string()).unwrap_or_default(),
            p.dst_ip.map(|i| i.to_string()).unwrap_or_default(),
        );
        out.push(
            AlertBuilder::new(
                &self.agent_id,
                p.ts,
                RULE_PERIODIC,
                "Periodic connections (beaconing)",
                Severity::Medium,
            )
            .flow_of(p)
            .finish(
                format!(
                    "{src} connects to {dst}:{} every {mean:.1}s (jitter {:.1}%, {} intervals)",
                    p.dst_port,
                    jitter * 100.0,
                    pair.intervals.len()
                ),
                evidence,
            ),
        );
    }
}

impl Detector for BeaconDetector {
    fn name(&self) -> &'static str {
        "beacon"
    }

    fn on_packet(&mut self, p: &PacketMeta<'_>, out: &mut Vec<Event>) {
        if !self.config.enabled || p.fragment {
            return;
        }
        let tcp = p.tcp_flags_are(tcp_flags::SYN);
        if !tcp && p.ip_proto != proto::UDP {
            return;
        }
        let (Some(src), Some(dst)) = (p.src_ip, p.dst_ip) else {
            return;
        };
        let key: PairKey = (src, dst, p.dst_port, p.ip_proto);
        let ts = p.ts;

        if let Some(mut pair) = self.pairs.remove(&key) {
            if self.is_new_connection(tcp, ts, pair.last_conn, pair.last_packet) {
                let interval = ts.saturating_sub(pair.last_conn);
                if interval > self.max_interval {
                    // The rhythm broke; an outlier this large would hide any later period.
                    pair.intervals.clear();
                } else {
                    if pair.intervals.len() >= self.config.max_intervals.max(1) {
                        pair.intervals.pop_front();
                    }
                    pair.intervals.push_back(interval);
                }
                pair.last_conn = ts;
                pair.connections += 1;
                pair.last_packet = ts;
                self.evaluate(p, &mut pair, out);
            } else {
                pair.last_packet = ts;
            }
            // Re-inserting a key just removed never evicts.
            self.pairs.get_or_insert_with(key, || pair);
            return;
        }

        let stale_before = ts.saturating_sub(self.max_interval);
        let Some(candidate) = self.candidates.get_mut(&key, stale_before).copied() else {
            let fresh = Candidate {
                first_seen: ts,
                last_conn: ts,
                last_packet: ts,
            };
            self.candidates.insert(key, fresh, stale_before);
            return;
        };
        if !self.is_new_connection(tcp, ts, candidate.last_conn, candidate.last_packet) {
            if let Some(c) = self.candidates.get_mut(&key, stale_before) {
                c.last_packet = ts;
            }
            return;
        }
        self.candidates.remove(&key);
        let interval = ts.saturating_sub(candidate.last_conn);
        let mut intervals = VecDeque::with_capacity(self.config.max_intervals.clamp(1, 64));
        if interval <= self.max_interval {
            intervals.push_back(interval);
        }
        self.pairs.get_or_insert_with(key, || Pair {
            first_seen: candidate.first_seen,
            last_conn: ts,
            last_packet: ts,
            connections: 2,
            intervals,
            gate: AlertGate::default(),
        });
    }

    fn on_tick(&mut self, now: i64, _out: &mut Vec<Event>) {
        // A pair silent for longer than the longest period has lost its rhythm. Candidates
        // age out lazily on lookup, so the tick does not sweep their slots.
        self.pairs
            .expire_before(now.saturating_sub(self.max_interval));
    }

    fn evictions(&self) -> u64 {
        self.pairs.evictions() + self.candidates.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{evidence, ip, run, tcp, udp, SEC, T0};

    fn syn(ts: i64, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> PacketMeta<'static> {
        tcp(ts, src, dst, sport, dport, tcp_flags::SYN)
    }

    /// A small deterministic generator, so "random" tests replay identically.
    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *state >> 33
    }

    #[test]
    fn sixty_second_beacon_with_one_second_jitter_alerts_once() {
        let mut det = BeaconDetector::new(BeaconConfig::default(), "probe-1");
        let (implant, c2) = (ip(10, 0, 0, 7), ip(203, 0, 113, 9));
        let mut packets = Vec::new();
        let mut ts = T0;
        for i in 0..20u16 {
            // Deterministic -1 s .. +1 s jitter.
            let jitter = (i64::from(i * 7 % 5) - 2) * SEC / 2;
            ts += 60 * SEC + jitter;
            packets.push(syn(ts, implant, c2, 40000 + i, 443));
            // A SYN retransmission one second later is the same connection.
            packets.push(syn(ts + SEC, implant, c2, 40000 + i, 443));
        }
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(
            a.rule.as_ref().and_then(|r| r.id.as_deref()),
            Some(RULE_PERIODIC)
        );
        assert_eq!(a.source.as_ref().and_then(|s| s.ip), Some(implant));
        assert_eq!(a.destination.as_ref().and_then(|d| d.port), Some(443));
        let ev = evidence(a);
        assert_eq!(ev["intervals"], 8);
        assert_eq!(ev["connections"], 9);
        let mean = ev["mean_interval_secs"].as_f64().expect("mean");
        assert!((59.0..=61.0).contains(&mean), "mean {mean}");
        assert!(ev["jitter_ratio"].as_f64().expect("jitter") < 0.02);
        assert_eq!(ev["first_seen"], rfc3339(packets[0].ts));
    }

    #[test]
    fn udp_beacon_with_retries_counts_sessions_not_packets() {
        let mut det = BeaconDetector::new(BeaconConfig::default(), "probe-1");
        let (implant, resolver) = (ip(10, 0, 0, 7), ip(10, 0, 0, 53));
        let mut packets = Vec::new();
        for i in 0..12 {
            let ts = T0 + i * 300 * SEC;
            packets.push(udp(ts, implant, resolver, 5353, 53));
            packets.push(udp(ts + SEC, implant, resolver, 5353, 53));
            packets.push(udp(ts + 2 * SEC, implant, resolver, 5353, 53));
        }
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1);
        let ev = evidence(&alerts[0]);
        assert_eq!(ev["mean_interval_secs"], 300.0);
        assert_eq!(ev["jitter_ratio"], 0.0);
    }

    #[test]
    fn random_intervals_do_not_alert() {
        let mut det = BeaconDetector::new(BeaconConfig::default(), "probe-1");
        let (host, server) = (ip(10, 0, 0, 7), ip(198, 51, 100, 1));
        let mut state = 42;
        let mut ts = T0;
        let mut packets = Vec::new();
        for i in 0..100u16 {
            ts += i64::try_from(10 + lcg(&mut state) % 600).expect("secs") * SEC;
            packets.push(syn(ts, host, server, 30000 + i, 443));
        }
        assert!(run(&mut det, &packets).is_empty());
    }

    #[test]
    fn browsing_varied_destinations_does_not_alert() {
        let mut det = BeaconDetector::new(BeaconConfig::default(), "probe-1");
        let host = ip(10, 0, 0, 7);
        let packets: Vec<_> = (0..30u8)
            .map(|i| {
                syn(
                    T0 + i64::from(i) * 60 * SEC,
                    host,
                    ip(93, 184, 0, i % 10),
                    30000,
                    [80, 443][usize::from(i % 2)],
                )
            })
            .collect();
        assert!(run(&mut det, &packets).is_empty());
    }

    #[test]
    fn steady_but_too_fast_polling_does_not_alert() {
        let mut det = BeaconDetector::new(BeaconConfig::default(), "probe-1");
        let packets: Vec<_> = (0..50u16)
            .map(|i| {
                syn(
                    T0 + i64::from(i) * 6 * SEC,
                    ip(10, 0, 0, 7),
                    ip(10, 0, 0, 8),
                    30000 + i,
                    8080,
                )
            })
            .collect();
        assert!(run(&mut det, &packets).is_empty());
    }

    #[test]
    fn stopped_beacon_state_expires_without_alert() {
        let mut det = BeaconDetector::new(BeaconConfig::default(), "probe-1");
        let packets: Vec<_> = (0..5u16)
            .map(|i| {
                syn(
                    T0 + i64::from(i) * 60 * SEC,
                    ip(10, 0, 0, 7),
                    ip(203, 0, 113, 9),
                    30000 + i,
                    443,
                )
            })
            .collect();
        assert!(run(&mut det, &packets).is_empty());
        assert_eq!(det.pairs.len(), 1);
        let mut out = Vec::new();
        det.on_tick(T0 + 2 * 3600 * SEC, &mut out);
        assert!(out.is_empty());
        assert!(det.pairs.is_empty());
    }

    #[test]
    fn candidate_churn_evictions_are_counted_and_beacon_survives() {
        let config = BeaconConfig {
            candidate_slots: 4096,
            ..BeaconConfig::default()
        };
        let mut det = BeaconDetector::new(config, "probe-1");
        let (implant, c2) = (ip(10, 0, 0, 7), ip(203, 0, 113, 9));
        let mut packets = Vec::new();
        for i in 0..12u16 {
            let ts = T0 + i64::from(i) * 60 * SEC;
            packets.push(syn(ts, implant, c2, 40000 + i, 443));
            // 100 one-off connections between each beacon.
            for j in 0..100u8 {
                packets.push(syn(
                    ts + SEC + i64::from(j),
                    ip(10, 1, 0, j),
                    ip(93, 184, 0, u8::try_from(i).expect("u8")),
                    1234,
                    80,
                ));
            }
        }
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1, "the beacon survives the churn");
        // 1200 one-off pairs in 4096 slots collide about 150 times.
        assert!(det.evictions() > 50, "{}", det.evictions());
    }

    #[test]
    fn config_rejects_unknown_fields() {
        assert!(toml::from_str::<BeaconConfig>("min_connections = 3").is_err());
        let c: BeaconConfig = toml::from_str("max_jitter_ratio = 0.2").expect("parse");
        assert_eq!(c.max_jitter_ratio, 0.2);
        assert_eq!(c.min_intervals, 8);
    }
}
