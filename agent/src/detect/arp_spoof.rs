//! ARP spoofing detection from ARP sender fields:
//! - an IP whose MAC changes (the last MAC seen per IP is kept; a different one alerts with old
//!   and new MAC),
//! - gratuitous ARP storms: more than N gratuitous announcements (sender IP equal to target IP,
//!   or a reply sent to broadcast, which no request asked for) from one MAC within a window,
//! - optionally, replies that answer no request this sensor saw (off by default: a sensor that
//!   sees only one direction of a link would flag every reply).
//!
//! ARP probes (sender IP 0.0.0.0, RFC 5227) carry no binding and are ignored.

use std::net::{IpAddr, Ipv4Addr};

use palisade_wire::event::Endpoint;
use palisade_wire::{Event, Severity};
use serde_json::json;

use super::window::{rfc3339, secs_to_nanos, AlertGate, BoundedMap, LastSeen, TumblingCount};
use super::{AlertBuilder, Detector};
use crate::packet::{mac_string, ArpMeta, PacketMeta};

/// Rule id of the IP-to-MAC change alert.
pub const RULE_MAC_CHANGE: &str = "palisade.net.arp_spoof.mac_change";
/// Rule id of the gratuitous ARP storm alert.
pub const RULE_GRATUITOUS_STORM: &str = "palisade.net.arp_spoof.gratuitous_storm";
/// Rule id of the unsolicited reply alert.
pub const RULE_UNSOLICITED_REPLY: &str = "palisade.net.arp_spoof.unsolicited_reply";

const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

/// How many announced IPs a storm alert lists as a sample.
const SAMPLE_LEN: usize = 10;

/// Settings of the ARP spoofing detector.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArpSpoofConfig {
    /// Run this detector.
    pub enabled: bool,
    /// How long an IP-to-MAC binding is remembered without being seen again. A MAC change
    /// after this is a new binding, not an alert.
    pub binding_ttl_secs: u64,
    /// Window gratuitous announcements are counted in.
    pub gratuitous_window_secs: u64,
    /// Gratuitous announcements from one MAC within the window that are still normal; one more
    /// is a storm.
    pub gratuitous_max_per_window: u64,
    /// Alert on replies that answer no request seen within `request_timeout_secs`.
    pub unsolicited_reply_alerts: bool,
    /// How long after a request a reply still counts as its answer.
    pub request_timeout_secs: u64,
    /// Minimum time between two alerts of one rule for one IP (MAC change) or MAC (storm,
    /// unsolicited reply).
    pub realert_secs: u64,
    /// Most IP-to-MAC bindings tracked at once; the least recently seen are evicted first.
    pub max_tracked_ips: usize,
    /// Most MACs with gratuitous / unsolicited counters tracked at once.
    pub max_tracked_macs: usize,
    /// Most outstanding requests remembered for reply matching.
    pub max_pending_requests: usize,
}

impl Default for ArpSpoofConfig {
    fn default() -> Self {
        ArpSpoofConfig {
            enabled: true,
            // Longer than any host's ARP cache (minutes) and a typical DHCP renewal, so a spoof
            // after a quiet spell still meets the binding it overrides.
            binding_ttl_secs: 4 * 3600,
            // Hosts announce 1-3 times on link-up or failover (Linux arp_notify, RFC 5227 §2.4).
            gratuitous_window_secs: 10,
            // Twice the most a well-behaved host sends on one event.
            gratuitous_max_per_window: 5,
            unsolicited_reply_alerts: false,
            // Replies come back in milliseconds; retries are one second apart.
            request_timeout_secs: 5,
            // A poisoning tool re-sends every few seconds; one alert per 5 minutes is enough.
            realert_secs: 300,
            // A /18 worth of addresses: larger than any one broadcast domain should be.
            max_tracked_ips: 16_384,
            max_tracked_macs: 4096,
            max_pending_requests: 4096,
        }
    }
}

/// The last MAC seen for one IP.
#[derive(Debug)]
struct Binding {
    mac: [u8; 6],
    first_seen: i64,
    last_seen: i64,
    changes: u64,
    gate: AlertGate,
}

impl LastSeen for Binding {
    fn last_seen(&self) -> i64 {
        self.last_seen
    }
}

/// Gratuitous / unsolicited counters for one sender MAC.
#[derive(Debug, Default)]
struct MacState {
    gratuitous: TumblingCount,
    sample_ips: Vec<Ipv4Addr>,
    storm_alerted_window: Option<i64>,
    storm_gate: AlertGate,
    unsolicited_gate: AlertGate,
    last_seen: i64,
}

impl LastSeen for MacState {
    fn last_seen(&self) -> i64 {
        self.last_seen
    }
}

/// Time a request (requester IP, asked-for IP) was seen.
#[derive(Debug)]
struct Pending(i64);

impl LastSeen for Pending {
    fn last_seen(&self) -> i64 {
        self.0
    }
}

fn sender_endpoint(arp: &ArpMeta) -> Endpoint {
    Endpoint {
        ip: Some(IpAddr::V4(arp.sender_ip)),
        mac: Some(mac_string(arp.sender_mac)),
        ..Default::default()
    }
}

/// Detects ARP cache poisoning and gratuitous ARP storms.
#[derive(Debug)]
pub struct ArpSpoofDetector {
    config: ArpSpoofConfig,
    agent_id: String,
    binding_ttl: i64,
    gratuitous_window: i64,
    request_timeout: i64,
    realert: i64,
    bindings: BoundedMap<Ipv4Addr, Binding>,
    macs: BoundedMap<[u8; 6], MacState>,
    pending: BoundedMap<(Ipv4Addr, Ipv4Addr), Pending>,
}

impl ArpSpoofDetector {
    /// A detector with `config`, alerting as `agent_id`.
    pub fn new(config: ArpSpoofConfig, agent_id: &str) -> Self {
        ArpSpoofDetector {
            binding_ttl: secs_to_nanos(config.binding_ttl_secs),
            gratuitous_window: secs_to_nanos(config.gratuitous_window_secs).max(1),
            request_timeout: secs_to_nanos(config.request_timeout_secs),
            realert: secs_to_nanos(config.realert_secs),
            bindings: BoundedMap::new(config.max_tracked_ips),
            macs: BoundedMap::new(config.max_tracked_macs),
            pending: BoundedMap::new(config.max_pending_requests),
            agent_id: agent_id.to_string(),
            config,
        }
    }

    fn check_binding(&mut self, ts: i64, arp: &ArpMeta, out: &mut Vec<Event>) {
        let ttl = self.binding_ttl;
        let binding = self.bindings.get_or_insert_with(arp.sender_ip, || Binding {
            mac: arp.sender_mac,
            first_seen: ts,
            last_seen: ts,
            changes: 0,
            gate: AlertGate::default(),
        });
        if ts.saturating_sub(binding.last_seen) > ttl {
            // Not yet expired by a tick, but stale: a fresh binding, not a change.
            binding.mac = arp.sender_mac;
            binding.first_seen = ts;
        }
        binding.last_seen = ts;
        if binding.mac == arp.sender_mac {
            return;
        }
        let old_mac = binding.mac;
        let old_first_seen = binding.first_seen;
        binding.mac = arp.sender_mac;
        binding.first_seen = ts;
        binding.changes += 1;
        let changes = binding.changes;
        let Some(suppressed) = binding.gate.try_fire(ts, self.realert) else {
            return;
        };
        let evidence = json!({
            "ip": arp.sender_ip.to_string(),
            "old_mac": mac_string(old_mac),
            "new_mac": mac_string(arp.sender_mac),
            "old_mac_first_seen": rfc3339(old_first_seen),
            "arp_op": arp.op,
            "changes": changes,
            "suppressed": suppressed,
        });
        out.push(
            AlertBuilder::new(
                &self.agent_id,
                ts,
                RULE_MAC_CHANGE,
                "ARP binding changed (possible ARP spoofing)",
                Severity::High,
            )
            .source(sender_endpoint(arp))
            .finish(
                format!(
                    "{} moved from {} to {}",
                    arp.sender_ip,
                    mac_string(old_mac),
                    mac_string(arp.sender_mac)
                ),
                evidence,
            ),
        );
    }

    fn count_gratuitous(&mut self, ts: i64, arp: &ArpMeta, out: &mut Vec<Event>) {
        let window = self.gratuitous_window;
        let max = self.config.gratuitous_max_per_window;
        let state = self
            .macs
            .get_or_insert_with(arp.sender_mac, MacState::default);
        state.last_seen = ts;
        if state.gratuitous.roll(ts, window) {
            state.sample_ips.clear();
        }
        let count = state.gratuitous.add(ts, window);
        if state.sample_ips.len() < SAMPLE_LEN && !state.sample_ips.contains(&arp.sender_ip) {
            state.sample_ips.push(arp.sender_ip);
        }
        let window_start = state.gratuitous.start();
        if count <= max || state.storm_alerted_window == Some(window_start) {
            return;
        }
        state.storm_alerted_window = Some(window_start);
        let Some(suppressed) = state.storm_gate.try_fire(ts, self.realert) else {
            return;
        };
        let evidence = json!({
            "mac": mac_string(arp.sender_mac),
            "gratuitous": count,
            "threshold": max,
            "window_secs": self.config.gratuitous_window_secs,
            "window_start": rfc3339(window_start),
            "sample_ips": state.sample_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "suppressed_windows": suppressed,
        });
        out.push(
            AlertBuilder::new(
                &self.agent_id,
                ts,
                RULE_GRATUITOUS_STORM,
                "Gratuitous ARP storm",
                Severity::Medium,
            )
            .source(sender_endpoint(arp))
            .finish(
                format!(
                    "{} sent {count} gratuitous ARPs within {}s",
                    mac_string(arp.sender_mac),
                    self.config.gratuitous_window_secs
                ),
                evidence,
            ),
        );
    }

    fn check_unsolicited(&mut self, ts: i64, arp: &ArpMeta, out: &mut Vec<Event>) {
        let solicited = self
            .pending
            .get(&(arp.target_ip, arp.sender_ip))
            .is_some_and(|asked| ts.saturating_sub(asked.0) <= self.request_timeout);
        if solicited {
            return;
        }
        let state = self
            .macs
            .get_or_insert_with(arp.sender_mac, MacState::default);
        state.last_seen = ts;
        let Some(suppressed) = state.unsolicited_gate.try_fire(ts, self.realert) else {
            return;
        };
        let evidence = json!({
            "mac": mac_string(arp.sender_mac),
            "claimed_ip": arp.sender_ip.to_string(),
            "target_ip": arp.target_ip.to_string(),
            "target_mac": mac_string(arp.target_mac),
            "request_timeout_secs": self.config.request_timeout_secs,
            "suppressed": suppressed,
        });
        out.push(
            AlertBuilder::new(
                &self.agent_id,
                ts,
                RULE_UNSOLICITED_REPLY,
                "Unsolicited ARP reply",
                Severity::Medium,
            )
            .source(sender_endpoint(arp))
            .destination(Endpoint {
                ip: Some(IpAddr::V4(arp.target_ip)),
                mac: Some(mac_string(arp.target_mac)),
                ..Default::default()
            })
            .finish(
                format!(
                    "{} claimed {} to {} without a request",
                    mac_string(arp.sender_mac),
                    arp.sender_ip,
                    arp.target_ip
                ),
                evidence,
            ),
        );
    }
}

/// Gratuitous: announces the sender's own address, or a reply nobody asked for (broadcast).
fn is_gratuitous(arp: &ArpMeta) -> bool {
    arp.sender_ip == arp.target_ip
        || (arp.op == OP_REPLY && (arp.target_mac == [0xff; 6] || arp.target_mac == [0; 6]))
}

impl Detector for ArpSpoofDetector {
    fn name(&self) -> &'static str {
        "arp_spoof"
    }

    fn on_packet(&mut self, p: &PacketMeta<'_>, out: &mut Vec<Event>) {
        if !self.config.enabled {
            return;
        }
        let Some(arp) = p.arp else {
            return;
        };
        if arp.sender_ip.is_unspecified() || (arp.op != OP_REQUEST && arp.op != OP_REPLY) {
            return;
        }
        self.check_binding(p.ts, &arp, out);
        let gratuitous = is_gratuitous(&arp);
        if gratuitous {
            self.count_gratuitous(p.ts, &arp, out);
        }
        if arp.op == OP_REQUEST && !gratuitous {
            self.pending
                .get_or_insert_with((arp.sender_ip, arp.target_ip), || Pending(p.ts))
                .0 = p.ts;
        } else if arp.op == OP_REPLY && !gratuitous && self.config.unsolicited_reply_alerts {
            self.check_unsolicited(p.ts, &arp, out);
        }
    }

    fn on_tick(&mut self, now: i64, _out: &mut Vec<Event>) {
        self.bindings
            .expire_before(now.saturating_sub(self.binding_ttl));
        self.macs
            .expire_before(now.saturating_sub(self.gratuitous_window.max(self.realert)));
        self.pending
            .expire_before(now.saturating_sub(self.request_timeout));
    }

    fn evictions(&self) -> u64 {
        self.bindings.evictions() + self.macs.evictions() + self.pending.evictions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{evidence, rule, run};

    const SEC: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * SEC;
    const GATEWAY_MAC: [u8; 6] = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
    const ATTACKER_MAC: [u8; 6] = [0xde, 0xad, 0xbe, 0xef, 0x00, 0x01];
    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];

    fn ip(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, d)
    }

    fn arp(
        ts: i64,
        op: u16,
        sender_mac: [u8; 6],
        sender_ip: Ipv4Addr,
        target_mac: [u8; 6],
        target_ip: Ipv4Addr,
    ) -> PacketMeta<'static> {
        let mut p = PacketMeta::empty(ts);
        p.src_mac = Some(sender_mac);
        p.arp = Some(ArpMeta {
            op,
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        });
        p
    }

    /// The gateway answers a client's request, as on any healthy LAN.
    fn exchange(ts: i64) -> [PacketMeta<'static>; 2] {
        [
            arp(ts, OP_REQUEST, CLIENT_MAC, ip(20), [0; 6], ip(1)),
            arp(ts + 1000, OP_REPLY, GATEWAY_MAC, ip(1), CLIENT_MAC, ip(20)),
        ]
    }

    #[test]
    fn gateway_mac_change_alerts_with_old_and_new_mac() {
        let mut det = ArpSpoofDetector::new(ArpSpoofConfig::default(), "probe-1");
        let mut packets = exchange(T0).to_vec();
        // The attacker poisons the client every 2 s for a minute.
        for i in 0..30 {
            packets.push(arp(
                T0 + 10 * SEC + i * 2 * SEC,
                OP_REPLY,
                ATTACKER_MAC,
                ip(1),
                CLIENT_MAC,
                ip(20),
            ));
        }
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(rule(a), RULE_MAC_CHANGE);
        assert_eq!(a.event.severity, Severity::High);
        let ev = evidence(a);
        assert_eq!(ev["ip"], "10.0.0.1");
        assert_eq!(ev["old_mac"], "00-11-22-33-44-55");
        assert_eq!(ev["new_mac"], "DE-AD-BE-EF-00-01");
        assert_eq!(
            a.source.as_ref().and_then(|s| s.mac.as_deref()),
            Some("DE-AD-BE-EF-00-01")
        );
    }

    #[test]
    fn flip_flopping_binding_is_rate_limited_and_counts_suppressed() {
        let mut det = ArpSpoofDetector::new(ArpSpoofConfig::default(), "probe-1");
        let mut packets = Vec::new();
        // The real gateway and the attacker alternate every 10 s for 10 minutes.
        for i in 0..60 {
            let mac = if i % 2 == 0 {
                GATEWAY_MAC
            } else {
                ATTACKER_MAC
            };
            packets.push(arp(
                T0 + i * 10 * SEC,
                OP_REPLY,
                mac,
                ip(1),
                CLIENT_MAC,
                ip(20),
            ));
        }
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 2);
        assert_eq!(evidence(&alerts[1])["suppressed"], 29);
        assert_eq!(evidence(&alerts[1])["changes"], 31);
    }

    #[test]
    fn single_reannouncement_and_normal_exchanges_do_not_alert() {
        let config = ArpSpoofConfig {
            unsolicited_reply_alerts: true,
            ..ArpSpoofConfig::default()
        };
        let mut det = ArpSpoofDetector::new(config, "probe-1");
        let mut packets = Vec::new();
        for i in 0..20 {
            packets.extend(exchange(T0 + i * 30 * SEC));
        }
        // The gateway reboots and announces itself three times, as Linux does.
        for i in 0..3 {
            packets.push(arp(
                T0 + 700 * SEC + i * SEC,
                OP_REQUEST,
                GATEWAY_MAC,
                ip(1),
                [0; 6],
                ip(1),
            ));
        }
        // An RFC 5227 probe from a host checking for conflicts.
        packets.push(arp(
            T0 + 800 * SEC,
            OP_REQUEST,
            CLIENT_MAC,
            Ipv4Addr::UNSPECIFIED,
            [0; 6],
            ip(30),
        ));
        let alerts = run(&mut det, &packets);
        assert!(alerts.is_empty(), "{alerts:#?}");
    }

    #[test]
    fn gratuitous_storm_alerts_once_per_window() {
        let mut det = ArpSpoofDetector::new(ArpSpoofConfig::default(), "probe-1");
        // 20 gratuitous replies in 4 s claiming 20 addresses.
        let packets: Vec<_> = (0..20u8)
            .map(|i| {
                arp(
                    T0 + i64::from(i) * 200_000_000,
                    OP_REPLY,
                    ATTACKER_MAC,
                    ip(100 + i),
                    [0xff; 6],
                    ip(100 + i),
                )
            })
            .collect();
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        assert_eq!(rule(&alerts[0]), RULE_GRATUITOUS_STORM);
        let ev = evidence(&alerts[0]);
        assert_eq!(ev["gratuitous"], 6);
        assert_eq!(ev["threshold"], 5);
        assert_eq!(ev["window_secs"], 10);
        assert_eq!(ev["sample_ips"].as_array().map(Vec::len), Some(6));
    }

    #[test]
    fn unsolicited_reply_alerts_only_when_enabled() {
        let poison = [arp(T0, OP_REPLY, ATTACKER_MAC, ip(1), CLIENT_MAC, ip(20))];
        let mut off = ArpSpoofDetector::new(ArpSpoofConfig::default(), "probe-1");
        assert!(run(&mut off, &poison).is_empty());

        let config = ArpSpoofConfig {
            unsolicited_reply_alerts: true,
            ..ArpSpoofConfig::default()
        };
        let mut on = ArpSpoofDetector::new(config, "probe-1");
        let alerts = run(&mut on, &poison);
        assert_eq!(alerts.len(), 1);
        assert_eq!(rule(&alerts[0]), RULE_UNSOLICITED_REPLY);
        assert_eq!(evidence(&alerts[0])["claimed_ip"], "10.0.0.1");
    }

    #[test]
    fn binding_expires_so_a_reassigned_address_does_not_alert() {
        let mut det = ArpSpoofDetector::new(ArpSpoofConfig::default(), "probe-1");
        let mut out = Vec::new();
        det.on_packet(&exchange(T0)[1], &mut out);
        det.on_tick(T0 + 5 * 3600 * SEC, &mut out);
        assert_eq!(det.bindings.len(), 0);
        let moved = arp(
            T0 + 5 * 3600 * SEC,
            OP_REPLY,
            ATTACKER_MAC,
            ip(1),
            CLIENT_MAC,
            ip(20),
        );
        det.on_packet(&moved, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn binding_cap_evictions_are_counted() {
        let config = ArpSpoofConfig {
            max_tracked_ips: 8,
            ..ArpSpoofConfig::default()
        };
        let mut det = ArpSpoofDetector::new(config, "probe-1");
        let packets: Vec<_> = (0..40u8)
            .map(|i| {
                arp(
                    T0 + i64::from(i),
                    OP_REQUEST,
                    CLIENT_MAC,
                    ip(i + 1),
                    [0; 6],
                    ip(200),
                )
            })
            .collect();
        assert!(run(&mut det, &packets).is_empty());
        assert_eq!(det.bindings.evictions(), 32);
        assert!(det.evictions() >= 32);
    }

    #[test]
    fn config_rejects_unknown_fields() {
        assert!(toml::from_str::<ArpSpoofConfig>("ttl = 1").is_err());
        let c: ArpSpoofConfig = toml::from_str("gratuitous_max_per_window = 2").expect("parse");
        assert_eq!(c.gratuitous_max_per_window, 2);
        assert!(c.enabled && !c.unsolicited_reply_alerts);
    }
}
