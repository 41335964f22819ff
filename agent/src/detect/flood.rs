//! Flood detection per destination host, over tumbling windows of capture time:
//! - SYN flood: SYNs per second to one destination above a threshold, whatever their sources
//!   (spoofed floods use a fresh source per packet). Evidence carries the SYN / SYN-ACK and
//!   SYN / ACK ratios (a flood leaves most handshakes unanswered or unfinished) and how many
//!   distinct sources took part.
//! - Connection flood from one source: SYNs per second from one source to one destination.
//! - Connection flood in total: connections the destination accepted (SYN-ACKs it sent) per
//!   second, which catches full-handshake floods that keep the SYN / SYN-ACK ratio near one.
//!
//! Each rule alerts at most once per key per `realert_secs`; the next alert says how many windows
//! over the threshold were suppressed in between.

use std::net::IpAddr;

use palisade_wire::event::Endpoint;
use palisade_wire::{Event, Severity};
use serde_json::json;

use super::window::{
    rfc3339, secs_to_nanos, AlertGate, BoundedMap, FastSet, LastSeen, TumblingCount,
};
use super::{AlertBuilder, Detector};
use crate::packet::{tcp_flags, PacketMeta};

/// Rule id of the SYN flood alert.
pub const RULE_SYN: &str = "palisade.net.flood.syn";
/// Rule id of the per-source connection flood alert.
pub const RULE_CONN_SOURCE: &str = "palisade.net.flood.connection_source";
/// Rule id of the total (accepted) connection flood alert.
pub const RULE_CONN_TOTAL: &str = "palisade.net.flood.connection_total";

/// How many sources an alert lists as a sample.
const SAMPLE_LEN: usize = 10;

/// Settings of the flood detector.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Length of the tumbling window rates are measured over; thresholds are per second and
    /// compared as `rate x window_secs` events within one window.
    pub window_secs: u64,
    /// SYNs per second to one destination, from any sources, that make a SYN flood.
    pub syn_flood_min_per_sec: u64,
    /// SYNs per second from one source to one destination that make a connection flood.
    pub conn_flood_per_source_min_per_sec: u64,
    /// Connections per second one destination accepts (SYN-ACKs it sends) that make a
    /// connection flood.
    pub conn_flood_total_min_per_sec: u64,
    /// Minimum time between two alerts of one rule for one destination (or source and
    /// destination pair).
    pub realert_secs: u64,
    /// Most destinations tracked at once; the least recently seen are evicted first.
    pub max_tracked_destinations: usize,
    /// Most (source, destination) pairs tracked at once; the least recently seen are evicted
    /// first.
    pub max_tracked_pairs: usize,
    /// Distinct sources counted exactly per destination window; beyond this the count is a
    /// lower bound (`distinct_sources_capped` in the evidence).
    pub max_distinct_sources: usize,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            enabled: true,
            // Long enough to smooth normal bursts (a page load opens a few dozen connections in
            // under a second), short enough to alert within seconds of a flood starting.
            window_secs: 5,
            // Extranet servers see tens to hundreds of new connections per second; a thousand
            // SYNs per second sustained over five seconds is an attack or a misconfiguration.
            syn_flood_min_per_sec: 1000,
            // A single legitimate client (even a proxy) rarely opens 100 connections per second
            // to one server; load tools and flooders do.
            conn_flood_per_source_min_per_sec: 100,
            // Twice the SYN flood bar: the server is coping, so only a clear excess is news.
            conn_flood_total_min_per_sec: 2000,
            // One alert a minute per target keeps a long flood to a handful of alerts.
            realert_secs: 60,
            // Destinations are the protected hosts; 4096 covers a segment with room to spare.
            max_tracked_destinations: 4096,
            // Pairs grow with clients x servers; 64 Ki pairs at ~100 B is about 6 MiB.
            max_tracked_pairs: 65_536,
            // 4096 destinations x 256 sources x ~24 B bounds the source sets near 25 MiB.
            max_distinct_sources: 256,
        }
    }
}

/// Counters for one destination's current window.
#[derive(Debug, Default)]
struct Destination {
    window_start: i64,
    syn: u64,
    syn_ack: u64,
    ack: u64,
    sources: FastSet<IpAddr>,
    sources_capped: bool,
    syn_alerted: bool,
    total_alerted: bool,
    syn_gate: AlertGate,
    total_gate: AlertGate,
    last_seen: i64,
}

impl LastSeen for Destination {
    fn last_seen(&self) -> i64 {
        self.last_seen
    }
}

impl Destination {
    fn roll(&mut self, ts: i64, window: i64) {
        if ts.saturating_sub(self.window_start) >= window {
            self.window_start = ts;
            self.syn = 0;
            self.syn_ack = 0;
            self.ack = 0;
            self.sources.clear();
            self.sources_capped = false;
            self.syn_alerted = false;
            self.total_alerted = false;
        }
        self.last_seen = ts;
    }

    fn evidence(&self, window_secs: u64) -> serde_json::Value {
        let mut sample: Vec<IpAddr> = self.sources.iter().copied().collect();
        sample.sort_unstable();
        sample.truncate(SAMPLE_LEN);
        json!({
            "window_secs": window_secs,
            "window_start": rfc3339(self.window_start),
            "syn": self.syn,
            "syn_ack": self.syn_ack,
            "ack": self.ack,
            "syn_per_syn_ack": ratio(self.syn, self.syn_ack),
            "syn_per_ack": ratio(self.syn, self.ack),
            "distinct_sources": self.sources.len(),
            "distinct_sources_capped": self.sources_capped,
            "sample_sources": sample.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })
    }
}

/// SYN count of one (source, destination) pair.
#[derive(Debug, Default)]
struct Pair {
    syn: TumblingCount,
    alerted_window: Option<i64>,
    gate: AlertGate,
    last_seen: i64,
}

impl LastSeen for Pair {
    fn last_seen(&self) -> i64 {
        self.last_seen
    }
}

/// `a / b`, or `null` when `b` is zero (an infinite ratio is not valid JSON).
fn ratio(a: u64, b: u64) -> serde_json::Value {
    if b == 0 {
        serde_json::Value::Null
    } else {
        // Evidence precision is ample in f64.
        json!(a as f64 / b as f64)
    }
}

fn endpoint(ip: IpAddr) -> Endpoint {
    Endpoint {
        ip: Some(ip),
        ..Default::default()
    }
}

/// Detects SYN floods and connection floods.
#[derive(Debug)]
pub struct FloodDetector {
    config: FloodConfig,
    agent_id: String,
    window: i64,
    realert: i64,
    destinations: BoundedMap<IpAddr, Destination>,
    pairs: BoundedMap<(IpAddr, IpAddr), Pair>,
}

impl FloodDetector {
    /// A detector with `config`, alerting as `agent_id`.
    pub fn new(config: FloodConfig, agent_id: &str) -> Self {
        FloodDetector {
            window: secs_to_nanos(config.window_secs).max(1),
            realert: secs_to_nanos(config.realert_secs),
            destinations: BoundedMap::new(config.max_tracked_destinations),
            pairs: BoundedMap::new(config.max_tracked_pairs),
            agent_id: agent_id.to_string(),
            config,
        }
    }

    fn per_window(&self, per_sec: u64) -> u64 {
        per_sec.saturating_mul(self.config.window_secs.max(1))
    }

    fn on_syn(&mut self, p: &PacketMeta<'_>, src: IpAddr, dst: IpAddr, out: &mut Vec<Event>) {
        let (window, realert, window_secs) = (self.window, self.realert, self.config.window_secs);
        let syn_bar = self.per_window(self.config.syn_flood_min_per_sec);
        let pair_bar = self.per_window(self.config.conn_flood_per_source_min_per_sec);
        let max_sources = self.config.max_distinct_sources;

        let d = self
            .destinations
            .get_or_insert_with(dst, Destination::default);
        d.roll(p.ts, window);
        d.syn += 1;
        if d.sources.len() < max_sources {
            d.sources.insert(src);
        } else if !d.sources.contains(&src) {
            d.sources_capped = true;
        }
        if d.syn >= syn_bar && !d.syn_alerted {
            d.syn_alerted = true;
            if let Some(suppressed) = d.syn_gate.try_fire(p.ts, realert) {
                let mut evidence = d.evidence(window_secs);
                evidence["threshold_per_sec"] = json!(self.config.syn_flood_min_per_sec);
                evidence["suppressed_windows"] = json!(suppressed);
                let message = format!(
                    "SYN flood: {} SYNs to {dst} from {}{} sources within {window_secs}s",
                    d.syn,
                    if d.sources_capped { "at least " } else { "" },
                    d.sources.len(),
                );
                out.push(
                    AlertBuilder::new(&self.agent_id, p.ts, RULE_SYN, "SYN flood", Severity::High)
                        .destination(Endpoint {
                            ip: Some(dst),
                            port: (p.dst_port != 0).then_some(p.dst_port),
                            ..Default::default()
                        })
                        .finish(message, evidence),
                );
            }
        }

        let pair = self.pairs.get_or_insert_with((src, dst), Pair::default);
        pair.last_seen = p.ts;
        let count = pair.syn.add(p.ts, window);
        let window_start = pair.syn.start();
        if count >= pair_bar && pair.alerted_window != Some(window_start) {
            pair.alerted_window = Some(window_start);
            if let Some(suppressed) = pair.gate.try_fire(p.ts, realert) {
                let evidence = json!({
                    "window_secs": window_secs,
                    "window_start": rfc3339(window_start),
                    "syn": count,
                    "threshold_per_sec": self.config.conn_flood_per_source_min_per_sec,
                    "suppressed_windows": suppressed,
                });
                out.push(
                    AlertBuilder::new(
                        &self.agent_id,
                        p.ts,
                        RULE_CONN_SOURCE,
                        "Connection flood from one source",
                        Severity::High,
                    )
                    .flow_of(p)
                    .finish(
                        format!("{src} opened {count} connections to {dst} within {window_secs}s"),
                        evidence,
                    ),
                );
            }
        }
    }

    /// A SYN-ACK from `server`: it accepted a connection.
    fn on_syn_ack(&mut self, p: &PacketMeta<'_>, server: IpAddr, out: &mut Vec<Event>) {
        let (window, realert, window_secs) = (self.window, self.realert, self.config.window_secs);
        let bar = self.per_window(self.config.conn_flood_total_min_per_sec);
        let d = self
            .destinations
            .get_or_insert_with(server, Destination::default);
        d.roll(p.ts, window);
        d.syn_ack += 1;
        if d.syn_ack >= bar && !d.total_alerted {
            d.total_alerted = true;
            if let Some(suppressed) = d.total_gate.try_fire(p.ts, realert) {
                let mut evidence = d.evidence(window_secs);
                evidence["threshold_per_sec"] = json!(self.config.conn_flood_total_min_per_sec);
                evidence["suppressed_windows"] = json!(suppressed);
                out.push(
                    AlertBuilder::new(
                        &self.agent_id,
                        p.ts,
                        RULE_CONN_TOTAL,
                        "Connection flood",
                        Severity::High,
                    )
                    .destination(endpoint(server))
                    .finish(
                        format!(
                            "{server} accepted {} connections within {window_secs}s",
                            d.syn_ack
                        ),
                        evidence,
                    ),
                );
            }
        }
    }
}

impl Detector for FloodDetector {
    fn name(&self) -> &'static str {
        "flood"
    }

    fn on_packet(&mut self, p: &PacketMeta<'_>, out: &mut Vec<Event>) {
        if !self.config.enabled || p.fragment {
            return;
        }
        let (Some(src), Some(dst)) = (p.src_ip, p.dst_ip) else {
            return;
        };
        if p.tcp_flags_are(tcp_flags::SYN) {
            self.on_syn(p, src, dst, out);
        } else if p.tcp_flags_are(tcp_flags::SYN | tcp_flags::ACK) {
            self.on_syn_ack(p, src, out);
        } else if p.tcp_flags_are(tcp_flags::ACK) {
            // Only destinations already under watch: ACKs are most of all TCP traffic.
            let window = self.window;
            if let Some(d) = self.destinations.get_mut(&dst) {
                d.roll(p.ts, window);
                d.ack += 1;
            }
        }
    }

    fn on_tick(&mut self, now: i64, _out: &mut Vec<Event>) {
        // Keep entries while their rate limit can still matter.
        let cutoff = now.saturating_sub(self.window.max(self.realert));
        self.destinations.expire_before(cutoff);
        self.pairs.expire_before(cutoff);
    }

    fn evictions(&self) -> u64 {
        self.destinations.evictions() + self.pairs.evictions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{evidence, ip, rule, run, tcp, SEC, T0};

    #[test]
    fn spoofed_syn_flood_alerts_once_with_ratio_and_sources() {
        let mut det = FloodDetector::new(FloodConfig::default(), "probe-1");
        let victim = ip(10, 0, 0, 80);
        let mut packets = Vec::new();
        // 8000 SYNs in 2 s from 8000 addresses; the server answers one in eight.
        for i in 0..8000u32 {
            let [_, _, c, d] = i.to_be_bytes();
            let src = ip(172, 16, c, d);
            let ts = T0 + i64::from(i) * 250_000;
            packets.push(tcp(ts, src, victim, 1024, 80, tcp_flags::SYN));
            if i % 8 == 0 {
                packets.push(tcp(
                    ts + 1000,
                    victim,
                    src,
                    80,
                    1024,
                    tcp_flags::SYN | tcp_flags::ACK,
                ));
            }
        }
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(rule(a), RULE_SYN);
        assert_eq!(a.event.severity, Severity::High);
        assert_eq!(a.destination.as_ref().and_then(|d| d.ip), Some(victim));
        let ev = evidence(a);
        assert_eq!(ev["syn"], 5000);
        assert_eq!(ev["syn_ack"], 625);
        assert_eq!(ev["syn_per_syn_ack"], 8.0);
        assert_eq!(ev["distinct_sources"], 256);
        assert_eq!(ev["distinct_sources_capped"], true);
        assert_eq!(ev["threshold_per_sec"], 1000);
        assert_eq!(ev["sample_sources"].as_array().map(Vec::len), Some(10));
    }

    #[test]
    fn long_syn_flood_realerts_per_interval_with_suppressed_windows() {
        let mut det = FloodDetector::new(FloodConfig::default(), "probe-1");
        let victim = ip(10, 0, 0, 80);
        // 2000 SYN/s for 70 s: windows of 5 s, alert at 0 s and again after 60 s.
        let packets: Vec<_> = (0..140_000u32)
            .map(|i| {
                let [_, b, c, d] = i.to_be_bytes();
                tcp(
                    T0 + i64::from(i) * 500_000,
                    ip(172, b, c, d),
                    victim,
                    1024,
                    80,
                    tcp_flags::SYN,
                )
            })
            .collect();
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 2);
        assert_eq!(evidence(&alerts[1])["suppressed_windows"], 11);
    }

    #[test]
    fn one_source_connection_flood() {
        let mut det = FloodDetector::new(FloodConfig::default(), "probe-1");
        let attacker = ip(10, 0, 0, 9);
        let server = ip(10, 0, 0, 80);
        let packets: Vec<_> = (0..600u16)
            .map(|i| {
                tcp(
                    T0 + i64::from(i) * 1_000_000,
                    attacker,
                    server,
                    10000 + i,
                    443,
                    tcp_flags::SYN,
                )
            })
            .collect();
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1);
        assert_eq!(rule(&alerts[0]), RULE_CONN_SOURCE);
        assert_eq!(alerts[0].source.as_ref().and_then(|s| s.ip), Some(attacker));
        assert_eq!(evidence(&alerts[0])["syn"], 500);
    }

    #[test]
    fn accepted_connection_flood_in_total() {
        let mut det = FloodDetector::new(FloodConfig::default(), "probe-1");
        let server = ip(10, 0, 0, 80);
        // 12000 accepted connections in 4 s from 400 clients (30 each, below the per-source bar).
        let mut packets = Vec::new();
        for i in 0..12_000u32 {
            let client = ip(
                192,
                168,
                u8::try_from(i % 400 / 200).expect("u8"),
                u8::try_from(i % 200).expect("u8"),
            );
            let ts = T0 + i64::from(i) * 333_000;
            packets.push(tcp(
                ts,
                server,
                client,
                80,
                2000,
                tcp_flags::SYN | tcp_flags::ACK,
            ));
        }
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        assert_eq!(rule(&alerts[0]), RULE_CONN_TOTAL);
        assert_eq!(evidence(&alerts[0])["syn_ack"], 10_000);
    }

    #[test]
    fn busy_server_with_completed_handshakes_does_not_alert() {
        let mut det = FloodDetector::new(FloodConfig::default(), "probe-1");
        let server = ip(10, 0, 0, 80);
        let mut packets = Vec::new();
        // 200 connections per second for 30 s from 50 clients, all completed.
        for i in 0..6000u32 {
            let client = ip(192, 168, 1, u8::try_from(i % 50).expect("u8"));
            let sport = 20000 + u16::try_from(i % 40000).expect("u16");
            let ts = T0 + i64::from(i) * 5_000_000;
            packets.push(tcp(ts, client, server, sport, 443, tcp_flags::SYN));
            packets.push(tcp(
                ts + 100_000,
                server,
                client,
                443,
                sport,
                tcp_flags::SYN | tcp_flags::ACK,
            ));
            packets.push(tcp(
                ts + 200_000,
                client,
                server,
                sport,
                443,
                tcp_flags::ACK,
            ));
        }
        assert!(run(&mut det, &packets).is_empty());
    }

    #[test]
    fn idle_state_expires_and_pair_cap_evictions_are_counted() {
        let config = FloodConfig {
            max_tracked_pairs: 16,
            ..FloodConfig::default()
        };
        let mut det = FloodDetector::new(config, "probe-1");
        let server = ip(10, 0, 0, 80);
        let packets: Vec<_> = (0..64u8)
            .map(|i| {
                tcp(
                    T0 + i64::from(i),
                    ip(192, 168, 2, i),
                    server,
                    1000,
                    80,
                    tcp_flags::SYN,
                )
            })
            .collect();
        assert!(run(&mut det, &packets).is_empty());
        assert_eq!(det.evictions(), 48);
        let mut out = Vec::new();
        det.on_tick(T0 + 3600 * SEC, &mut out);
        assert!(out.is_empty());
        assert!(det.pairs.is_empty() && det.destinations.is_empty());
    }

    #[test]
    fn config_rejects_unknown_fields() {
        assert!(toml::from_str::<FloodConfig>("syn_per_sec = 5").is_err());
        let c: FloodConfig = toml::from_str("enabled = false").expect("parse");
        assert!(!c.enabled);
        assert_eq!(c.window_secs, 5);
    }
}
