//! Port-scan detection: per source IP, the distinct (destination, port) probes seen within a
//! sliding window. One target probed on many ports is a vertical scan, one port probed on many
//! targets a horizontal scan; each has its own threshold and its own rate limit. Only probe-like
//! packets count (SYN without ACK, the FIN / NULL / Xmas stealth combinations, UDP), and a probe
//! the target answered (SYN-ACK, or UDP back from the probed port) is a working connection, not
//! a probe, so ordinary clients never accumulate.

use std::net::IpAddr;

use palisade_wire::event::Endpoint;
use palisade_wire::{Event, Severity};
use serde_json::json;

use super::window::{secs_to_nanos, AlertGate, BoundedMap, FastMap, LastSeen, TumblingCount};
use super::{AlertBuilder, Detector};
use crate::packet::{proto, tcp_flags, PacketMeta};

/// Rule id of the vertical scan alert (one target, many ports).
pub const RULE_VERTICAL: &str = "palisade.net.port_scan.vertical";
/// Rule id of the horizontal scan alert (one port, many targets).
pub const RULE_HORIZONTAL: &str = "palisade.net.port_scan.horizontal";

/// How many ports or hosts an alert lists as a sample.
const SAMPLE_LEN: usize = 10;

/// Settings of the port-scan detector.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortScanConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Length of the sliding window probes are counted in; also the minimum time between two
    /// alerts of one kind for one source.
    pub window_secs: u64,
    /// Distinct ports probed on one target within the window that make a vertical scan.
    pub vertical_min_distinct_ports: u32,
    /// Distinct targets probed on one port within the window that make a horizontal scan.
    pub horizontal_min_distinct_hosts: u32,
    /// Keep counting probes the target answered (SYN-ACK, or UDP back). Off by default so that
    /// busy clients and resolvers, whose connections succeed, are not scanners.
    pub count_answered_probes: bool,
    /// Most sources tracked at once; the least recently seen are evicted first.
    pub max_tracked_sources: usize,
    /// Most probes remembered per source; the oldest are evicted first.
    pub max_probes_per_source: usize,
}

impl Default for PortScanConfig {
    fn default() -> Self {
        PortScanConfig {
            enabled: true,
            // nmap's default timing finishes 1000 ports in seconds; a minute also catches the
            // slower -T2 pace for the first thresholds' worth of probes.
            window_secs: 60,
            // No ordinary client has 50 unanswered connection attempts to one host in a minute.
            vertical_min_distinct_ports: 50,
            // Nor 50 unanswered attempts on one port across hosts (worm-style sweeps are faster).
            horizontal_min_distinct_hosts: 50,
            count_answered_probes: false,
            // 4096 sources x 1024 probes x ~64 B bounds the worst case near 256 MiB, reached only
            // by thousands of simultaneous scanners; typical use is a few KiB.
            max_tracked_sources: 4096,
            // Comfortably above both thresholds, so a cap eviction never hides a scan.
            max_probes_per_source: 1024,
        }
    }
}

/// How a probe looked on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Syn,
    Fin,
    Null,
    Xmas,
    Udp,
}

impl ProbeKind {
    const ALL: [ProbeKind; 5] = [
        ProbeKind::Syn,
        ProbeKind::Fin,
        ProbeKind::Null,
        ProbeKind::Xmas,
        ProbeKind::Udp,
    ];

    fn name(self) -> &'static str {
        match self {
            ProbeKind::Syn => "syn",
            ProbeKind::Fin => "fin",
            ProbeKind::Null => "null",
            ProbeKind::Xmas => "xmas",
            ProbeKind::Udp => "udp",
        }
    }

    /// The probe type of a packet, or `None` when it is not probe-like.
    fn of(p: &PacketMeta<'_>) -> Option<Self> {
        if p.fragment {
            return None;
        }
        match p.ip_proto {
            proto::UDP => Some(ProbeKind::Udp),
            proto::TCP => match p.tcp_flags & 0x3f {
                tcp_flags::SYN => Some(ProbeKind::Syn),
                tcp_flags::FIN => Some(ProbeKind::Fin),
                0 => Some(ProbeKind::Null),
                f if f == tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG => Some(ProbeKind::Xmas),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A probed endpoint: target address, transport, port.
type Target = (IpAddr, u8, u16);

#[derive(Debug, Clone, Copy)]
struct Probe {
    ts: i64,
    kind: ProbeKind,
}

/// Everything remembered about one probing source.
#[derive(Debug, Default)]
struct Source {
    probes: FastMap<Target, Probe>,
    /// Distinct (transport, port) probed per target.
    ports_per_target: FastMap<IpAddr, u32>,
    /// Distinct targets probed per (transport, port).
    hosts_per_port: FastMap<(u8, u16), u32>,
    /// ICMP port-unreachable replies sent to this source (supporting evidence for UDP scans).
    unreachable: TumblingCount,
    last_seen: i64,
    vertical_gate: AlertGate,
    horizontal_gate: AlertGate,
}

impl LastSeen for Source {
    fn last_seen(&self) -> i64 {
        self.last_seen
    }
}

impl Source {
    fn add(&mut self, target: Target, probe: Probe) {
        if self.probes.insert(target, probe).is_some() {
            // A retransmission refreshes the probe; it is not a new one.
            return;
        }
        *self.ports_per_target.entry(target.0).or_insert(0) += 1;
        *self.hosts_per_port.entry((target.1, target.2)).or_insert(0) += 1;
    }

    fn remove(&mut self, target: &Target) -> bool {
        if self.probes.remove(target).is_none() {
            return false;
        }
        decrement(&mut self.ports_per_target, target.0);
        decrement(&mut self.hosts_per_port, (target.1, target.2));
        true
    }

    /// Removes probes older than `cutoff`.
    fn expire(&mut self, cutoff: i64) {
        let stale: Vec<Target> = self
            .probes
            .iter()
            .filter(|(_, p)| p.ts < cutoff)
            .map(|(t, _)| *t)
            .collect();
        for t in &stale {
            self.remove(t);
        }
    }

    /// Drops the oldest eighth of the probes; returns how many.
    fn evict_oldest(&mut self) -> u64 {
        let count = (self.probes.len() / 8).max(1);
        let mut ages: Vec<(i64, Target)> = self.probes.iter().map(|(t, p)| (p.ts, *t)).collect();
        if count < ages.len() {
            ages.select_nth_unstable_by_key(count - 1, |(ts, _)| *ts);
        }
        for (_, t) in ages.iter().take(count) {
            self.remove(t);
        }
        count as u64
    }

    fn kind_counts<'a>(&self, probes: impl Iterator<Item = &'a Probe>) -> serde_json::Value {
        let mut counts = [0u64; ProbeKind::ALL.len()];
        for p in probes {
            if let Some(i) = ProbeKind::ALL.iter().position(|k| *k == p.kind) {
                counts[i] += 1;
            }
        }
        let map: serde_json::Map<String, serde_json::Value> = ProbeKind::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.name().to_string(), json!(n)))
            .collect();
        serde_json::Value::Object(map)
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut FastMap<K, u32>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// Whether `p` is an ICMP / ICMPv6 port-unreachable message.
fn is_port_unreachable(p: &PacketMeta<'_>) -> bool {
    // `PacketMeta` carries the ICMP type in `src_port` and the code in `dst_port`.
    match p.ip_proto {
        proto::ICMP => p.src_port == 3 && p.dst_port == 3,
        proto::ICMPV6 => p.src_port == 1 && p.dst_port == 4,
        _ => false,
    }
}

/// Detects vertical and horizontal port scans.
#[derive(Debug)]
pub struct PortScanDetector {
    config: PortScanConfig,
    agent_id: String,
    window: i64,
    sources: BoundedMap<IpAddr, Source>,
    probe_evictions: u64,
}

impl PortScanDetector {
    /// A detector with `config`, alerting as `agent_id`.
    pub fn new(config: PortScanConfig, agent_id: &str) -> Self {
        PortScanDetector {
            window: secs_to_nanos(config.window_secs).max(1),
            sources: BoundedMap::new(config.max_tracked_sources),
            agent_id: agent_id.to_string(),
            probe_evictions: 0,
            config,
        }
    }

    /// A reply from a probed endpoint: the probe was a working connection.
    fn on_answer(&mut self, p: &PacketMeta<'_>, scanner: IpAddr, target: IpAddr) {
        let answered = (p.ip_proto == proto::TCP
            && p.tcp_flags_are(tcp_flags::SYN | tcp_flags::ACK))
            || p.ip_proto == proto::UDP;
        if !answered {
            return;
        }
        if let Some(src) = self.sources.get_mut(&scanner) {
            src.remove(&(target, p.ip_proto, p.src_port));
        }
    }

    fn check(&mut self, p: &PacketMeta<'_>, src_ip: IpAddr, target: Target, out: &mut Vec<Event>) {
        let Some(src) = self.sources.get_mut(&src_ip) else {
            return;
        };
        let (dst_ip, transport, port) = target;
        let ports = src.ports_per_target.get(&dst_ip).copied().unwrap_or(0);
        if ports >= self.config.vertical_min_distinct_ports {
            if let Some(suppressed) = src.vertical_gate.try_fire(p.ts, self.window) {
                let mut sample: Vec<u16> = src
                    .probes
                    .keys()
                    .filter(|t| t.0 == dst_ip)
                    .map(|t| t.2)
                    .collect();
                sample.sort_unstable();
                sample.dedup();
                sample.truncate(SAMPLE_LEN);
                let kinds = src.kind_counts(
                    src.probes
                        .iter()
                        .filter(|(t, _)| t.0 == dst_ip)
                        .map(|(_, p)| p),
                );
                let evidence = json!({
                    "scan_type": "vertical",
                    "target": dst_ip.to_string(),
                    "distinct_ports": ports,
                    "threshold": self.config.vertical_min_distinct_ports,
                    "window_secs": self.config.window_secs,
                    "probe_types": kinds,
                    "sample_ports": sample,
                    "icmp_port_unreachable": src.unreachable.count(),
                    "suppressed": suppressed,
                });
                out.push(
                    AlertBuilder::new(
                        &self.agent_id,
                        p.ts,
                        RULE_VERTICAL,
                        "Vertical port scan",
                        Severity::Medium,
                    )
                    .source(endpoint(src_ip, None))
                    .destination(endpoint(dst_ip, None))
                    .finish(
                        format!(
                            "{src_ip} probed {ports} ports on {dst_ip} within {}s",
                            self.config.window_secs
                        ),
                        evidence,
                    ),
                );
            }
        }
        let hosts = src
            .hosts_per_port
            .get(&(transport, port))
            .copied()
            .unwrap_or(0);
        if hosts >= self.config.horizontal_min_distinct_hosts {
            if let Some(suppressed) = src.horizontal_gate.try_fire(p.ts, self.window) {
                let mut sample: Vec<IpAddr> = src
                    .probes
                    .keys()
                    .filter(|t| t.1 == transport && t.2 == port)
                    .map(|t| t.0)
                    .collect();
                sample.sort_unstable();
                sample.truncate(SAMPLE_LEN);
                let kinds = src.kind_counts(
                    src.probes
                        .iter()
                        .filter(|(t, _)| t.1 == transport && t.2 == port)
                        .map(|(_, p)| p),
                );
                let transport_name = super::transport_name(transport).unwrap_or("unknown");
                let evidence = json!({
                    "scan_type": "horizontal",
                    "port": port,
                    "transport": transport_name,
                    "distinct_hosts": hosts,
                    "threshold": self.config.horizontal_min_distinct_hosts,
                    "window_secs": self.config.window_secs,
                    "probe_types": kinds,
                    "sample_hosts": sample.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "icmp_port_unreachable": src.unreachable.count(),
                    "suppressed": suppressed,
                });
                out.push(
                    AlertBuilder::new(
                        &self.agent_id,
                        p.ts,
                        RULE_HORIZONTAL,
                        "Horizontal port scan",
                        Severity::Medium,
                    )
                    .source(endpoint(src_ip, None))
                    .destination(Endpoint {
                        port: Some(port),
                        ..Default::default()
                    })
                    .finish(
                        format!(
                            "{src_ip} probed {transport_name}/{port} on {hosts} hosts within {}s",
                            self.config.window_secs
                        ),
                        evidence,
                    ),
                );
            }
        }
    }
}

fn endpoint(ip: IpAddr, port: Option<u16>) -> Endpoint {
    Endpoint {
        ip: Some(ip),
        port,
        ..Default::default()
    }
}

impl Detector for PortScanDetector {
    fn name(&self) -> &'static str {
        "port_scan"
    }

    fn on_packet(&mut self, p: &PacketMeta<'_>, out: &mut Vec<Event>) {
        if !self.config.enabled {
            return;
        }
        let (Some(src_ip), Some(dst_ip)) = (p.src_ip, p.dst_ip) else {
            return;
        };
        if is_port_unreachable(p) {
            let window = self.window;
            if let Some(scanner) = self.sources.get_mut(&dst_ip) {
                scanner.unreachable.add(p.ts, window);
            }
            return;
        }
        if !self.config.count_answered_probes {
            self.on_answer(p, dst_ip, src_ip);
        }
        let Some(kind) = ProbeKind::of(p) else {
            return;
        };
        let target: Target = (dst_ip, p.ip_proto, p.dst_port);
        let max_probes = self.config.max_probes_per_source.max(1);
        let src = self.sources.get_or_insert_with(src_ip, Source::default);
        src.last_seen = p.ts;
        if src.probes.len() >= max_probes && !src.probes.contains_key(&target) {
            self.probe_evictions += src.evict_oldest();
        }
        src.add(target, Probe { ts: p.ts, kind });
        self.check(p, src_ip, target, out);
    }

    fn on_tick(&mut self, now: i64, _out: &mut Vec<Event>) {
        let cutoff = now.saturating_sub(self.window);
        self.sources.retain(|_, src| {
            src.expire(cutoff);
            // Keep a source while its rate limit still matters, so a slow scan spanning the
            // window is not re-alerted as soon as its probes age out.
            !src.probes.is_empty() || src.last_seen >= cutoff
        });
    }

    fn evictions(&self) -> u64 {
        self.sources.evictions() + self.probe_evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{evidence, ip, rule, run, tcp, SEC, T0};

    #[test]
    fn vertical_syn_scan_of_200_ports_alerts_once_with_evidence() {
        let mut det = PortScanDetector::new(PortScanConfig::default(), "probe-1");
        let scanner = ip(10, 0, 0, 66);
        let target = ip(10, 0, 0, 5);
        let packets: Vec<_> = (0..200u16)
            .map(|i| {
                tcp(
                    T0 + i64::from(i) * 25_000_000,
                    scanner,
                    target,
                    40000,
                    1 + i,
                    tcp_flags::SYN,
                )
            })
            .collect();
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(rule(a), RULE_VERTICAL);
        assert_eq!(a.source.as_ref().and_then(|s| s.ip), Some(scanner));
        assert_eq!(a.destination.as_ref().and_then(|d| d.ip), Some(target));
        let ev = evidence(a);
        assert_eq!(ev["distinct_ports"], 50);
        assert_eq!(ev["threshold"], 50);
        assert_eq!(ev["window_secs"], 60);
        assert_eq!(ev["probe_types"]["syn"], 50);
        assert_eq!(ev["sample_ports"], json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
        assert_eq!(ev["suppressed"], 0);
    }

    #[test]
    fn long_scan_realerts_once_per_window_with_suppressed_count() {
        let mut det = PortScanDetector::new(PortScanConfig::default(), "probe-1");
        let scanner = ip(10, 0, 0, 66);
        let target = ip(10, 0, 0, 5);
        // 65 s of probes, 20 per second: one alert at start, one after the window.
        let packets: Vec<_> = (0..1300u32)
            .map(|i| {
                let port = u16::try_from(i % 60000 + 1).expect("port");
                tcp(
                    T0 + i64::from(i) * SEC / 20,
                    scanner,
                    target,
                    40000,
                    port,
                    tcp_flags::SYN,
                )
            })
            .collect();
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 2);
        assert!(evidence(&alerts[1])["suppressed"].as_u64().expect("count") > 1000);
    }

    #[test]
    fn horizontal_scan_of_445_across_100_hosts() {
        let mut det = PortScanDetector::new(PortScanConfig::default(), "probe-1");
        let scanner = ip(10, 0, 0, 66);
        let packets: Vec<_> = (0..100u8)
            .map(|i| {
                tcp(
                    T0 + i64::from(i) * 10_000_000,
                    scanner,
                    ip(10, 0, 1, i),
                    40000,
                    445,
                    tcp_flags::SYN,
                )
            })
            .collect();
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1);
        assert_eq!(rule(&alerts[0]), RULE_HORIZONTAL);
        let ev = evidence(&alerts[0]);
        assert_eq!(ev["port"], 445);
        assert_eq!(ev["transport"], "tcp");
        assert_eq!(ev["distinct_hosts"], 50);
        assert_eq!(ev["sample_hosts"].as_array().map(Vec::len), Some(10));
    }

    #[test]
    fn stealth_probe_types_are_classified() {
        let mut det = PortScanDetector::new(PortScanConfig::default(), "probe-1");
        let scanner = ip(10, 0, 0, 66);
        let target = ip(10, 0, 0, 5);
        let xmas = tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG;
        let flags = [tcp_flags::FIN, 0, xmas];
        let mut packets = Vec::new();
        for port in 1..=60u16 {
            packets.push(tcp(
                T0 + i64::from(port) * 1_000_000,
                scanner,
                target,
                40000,
                port,
                flags[usize::from(port % 3)],
            ));
        }
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1);
        let kinds = &evidence(&alerts[0])["probe_types"];
        // Ports 1..=50: 17 with port%3==1 (NULL), 17 ==2 (Xmas), 16 ==0 (FIN).
        assert_eq!(kinds["fin"], 16);
        assert_eq!(kinds["null"], 17);
        assert_eq!(kinds["xmas"], 17);
        assert!(kinds.get("syn").is_none());
    }

    #[test]
    fn udp_scan_counts_port_unreachable_replies() {
        let mut det = PortScanDetector::new(PortScanConfig::default(), "probe-1");
        let scanner = ip(10, 0, 0, 66);
        let target = ip(10, 0, 0, 5);
        let mut packets = Vec::new();
        for port in 1..=50u16 {
            let ts = T0 + i64::from(port) * 1_000_000;
            let mut probe = PacketMeta::empty(ts);
            probe.src_ip = Some(scanner);
            probe.dst_ip = Some(target);
            probe.ip_proto = proto::UDP;
            probe.src_port = 50000;
            probe.dst_port = port;
            packets.push(probe);
            let mut icmp = PacketMeta::empty(ts + 1000);
            icmp.src_ip = Some(target);
            icmp.dst_ip = Some(scanner);
            icmp.ip_proto = proto::ICMP;
            icmp.src_port = 3;
            icmp.dst_port = 3;
            if port < 50 {
                packets.push(icmp);
            }
        }
        let alerts = run(&mut det, &packets);
        assert_eq!(alerts.len(), 1);
        let ev = evidence(&alerts[0]);
        assert_eq!(ev["probe_types"]["udp"], 50);
        assert_eq!(ev["icmp_port_unreachable"], 49);
    }

    #[test]
    fn normal_browsing_with_completed_handshakes_does_not_alert() {
        let mut det = PortScanDetector::new(PortScanConfig::default(), "probe-1");
        let client = ip(10, 0, 0, 20);
        let mut packets = Vec::new();
        // 30 connections over 3 minutes to 30 servers on 80/443/8080, each answered.
        for i in 0..30u8 {
            let ts = T0 + i64::from(i) * 6 * SEC;
            let server = ip(93, 184, 0, i);
            let port = [80, 443, 8080][usize::from(i % 3)];
            let sport = 50000 + u16::from(i);
            packets.push(tcp(ts, client, server, sport, port, tcp_flags::SYN));
            packets.push(tcp(
                ts + 20_000_000,
                server,
                client,
                port,
                sport,
                tcp_flags::SYN | tcp_flags::ACK,
            ));
            packets.push(tcp(
                ts + 40_000_000,
                client,
                server,
                sport,
                port,
                tcp_flags::ACK,
            ));
            packets.push(tcp(
                ts + 50_000_000,
                client,
                server,
                sport,
                port,
                tcp_flags::ACK | tcp_flags::PSH,
            ));
        }
        let alerts = run(&mut det, &packets);
        assert!(alerts.is_empty(), "{alerts:#?}");
        assert_eq!(det.evictions(), 0);
    }

    #[test]
    fn answered_resolver_queries_are_not_a_horizontal_scan() {
        let mut det = PortScanDetector::new(PortScanConfig::default(), "probe-1");
        let resolver = ip(10, 0, 0, 53);
        let mut packets = Vec::new();
        for i in 0..120u8 {
            let ts = T0 + i64::from(i) * 100_000_000;
            let server = ip(198, 51, 100, i);
            let mut q = PacketMeta::empty(ts);
            q.src_ip = Some(resolver);
            q.dst_ip = Some(server);
            q.ip_proto = proto::UDP;
            q.src_port = 33000;
            q.dst_port = 53;
            let mut r = q.clone();
            r.ts = ts + 5_000_000;
            r.src_ip = Some(server);
            r.dst_ip = Some(resolver);
            r.src_port = 53;
            r.dst_port = 33000;
            packets.push(q);
            packets.push(r);
        }
        assert!(run(&mut det, &packets).is_empty());
    }

    #[test]
    fn slow_probes_expire_before_reaching_threshold() {
        let mut det = PortScanDetector::new(PortScanConfig::default(), "probe-1");
        let scanner = ip(10, 0, 0, 66);
        let target = ip(10, 0, 0, 5);
        // One probe every 2 s: never more than 30 inside a 60 s window.
        let packets: Vec<_> = (0..200u16)
            .map(|i| {
                tcp(
                    T0 + i64::from(i) * 2 * SEC,
                    scanner,
                    target,
                    40000,
                    1 + i,
                    tcp_flags::SYN,
                )
            })
            .collect();
        assert!(run(&mut det, &packets).is_empty());
        let mut out = Vec::new();
        det.on_tick(T0 + 1000 * SEC, &mut out);
        assert_eq!(det.sources.len(), 0, "idle source state is dropped");
    }

    #[test]
    fn source_cap_evictions_are_counted() {
        let config = PortScanConfig {
            max_tracked_sources: 8,
            ..PortScanConfig::default()
        };
        let mut det = PortScanDetector::new(config, "probe-1");
        let target = ip(10, 0, 0, 5);
        let packets: Vec<_> = (0..32u8)
            .map(|i| {
                tcp(
                    T0 + i64::from(i),
                    ip(10, 1, 0, i),
                    target,
                    40000,
                    22,
                    tcp_flags::SYN,
                )
            })
            .collect();
        run(&mut det, &packets);
        assert!(det.sources.len() <= 8);
        assert_eq!(det.evictions(), 24);
    }

    #[test]
    fn per_source_probe_cap_evictions_are_counted() {
        let config = PortScanConfig {
            max_probes_per_source: 64,
            vertical_min_distinct_ports: 1000,
            ..PortScanConfig::default()
        };
        let mut det = PortScanDetector::new(config, "probe-1");
        let packets: Vec<_> = (0..200u16)
            .map(|i| {
                tcp(
                    T0 + i64::from(i),
                    ip(10, 0, 0, 66),
                    ip(10, 0, 0, 5),
                    40000,
                    1 + i,
                    tcp_flags::SYN,
                )
            })
            .collect();
        assert!(run(&mut det, &packets).is_empty());
        assert!(det.evictions() > 0);
        let src = det.sources.get(&ip(10, 0, 0, 66)).expect("source");
        assert!(src.probes.len() <= 64);
        assert_eq!(
            src.ports_per_target.get(&ip(10, 0, 0, 5)).copied(),
            Some(u32::try_from(src.probes.len()).expect("len"))
        );
    }

    #[test]
    fn config_rejects_unknown_fields_and_fills_defaults() {
        let c: PortScanConfig = toml::from_str("window_secs = 30").expect("parse");
        assert_eq!(c.window_secs, 30);
        assert_eq!(c.vertical_min_distinct_ports, 50);
        assert!(c.enabled);
        assert!(toml::from_str::<PortScanConfig>("window = 30").is_err());
    }
}
