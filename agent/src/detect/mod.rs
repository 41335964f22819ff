//! Network detectors. Each is a component built from a strict config (`#[serde(deny_unknown_fields)]`,
//! a doc comment on every field, on by default) that observes [`PacketMeta`]s in capture-time order
//! and emits alert [`Event`]s. Time always comes from the packets (`PacketMeta::ts`) or from
//! [`Detector::on_tick`], never from the wall clock, so a replayed capture gives the same alerts
//! every time. State is bounded: every table has a cap, and evictions are counted.

pub mod arp_spoof;
pub mod beacon;
pub mod dns_tunnel;
pub mod flood;
pub mod ioc;
pub mod pii;
pub mod port_scan;
pub mod window;
#[cfg(feature = "yara")]
pub mod yara;
pub mod yara_config;

use palisade_wire::event::{Endpoint, Network, Rule};
use palisade_wire::{Event, EventKind, Severity, Timestamp};

use crate::packet::PacketMeta;

/// A network detector.
pub trait Detector: Send {
    /// Short stable name (`port_scan`, `syn_flood`, …), used in config and metrics.
    fn name(&self) -> &'static str;
    /// Observes one packet; pushes any alerts onto `out`.
    fn on_packet(&mut self, packet: &PacketMeta<'_>, out: &mut Vec<Event>);
    /// Capture time has reached `now` (ns); expire windows. Called at least once per second of
    /// capture time and once at the end of a replay.
    fn on_tick(&mut self, now: i64, out: &mut Vec<Event>) {
        let _ = (now, out);
    }
    /// End of input (a replay's last packet, or shutdown): scan or report whatever is still held,
    /// and wait for work in flight. Defaults to a last [`Detector::on_tick`].
    fn on_finish(&mut self, now: i64, out: &mut Vec<Event>) {
        self.on_tick(now, out);
    }
    /// Work counters worth reporting at the end of a replay and in heartbeats (e.g. YARA scans,
    /// bytes and time spent); `None` when the detector has none beyond alerts.
    fn summary(&self) -> Option<serde_json::Value> {
        None
    }
    /// Entries evicted from bounded state since start (for heartbeats).
    fn evictions(&self) -> u64 {
        0
    }
}

/// Builds an alert event with the fields every network alert carries: rule id and name,
/// severity, time from the capture, the 5-tuple when known, and the evidence under
/// `palisade.evidence`.
#[derive(Debug, Clone)]
pub struct AlertBuilder {
    event: Event,
}

impl AlertBuilder {
    /// A new alert from `agent_id` at capture time `ts`.
    pub fn new(
        agent_id: &str,
        ts: i64,
        rule_id: &str,
        rule_name: &str,
        severity: Severity,
    ) -> Self {
        let mut event = Event::new(agent_id, EventKind::Alert, severity);
        event.timestamp = Timestamp(ts);
        event.rule = Some(Rule {
            id: Some(rule_id.to_string()),
            name: Some(rule_name.to_string()),
            category: Some("network".to_string()),
            ruleset: Some("palisade-net".to_string()),
        });
        event.event.category = vec!["network".into(), "intrusion_detection".into()];
        event.event.kind_type = vec!["info".into()];
        event.event.action = Some(rule_id.to_string());
        AlertBuilder { event }
    }

    /// Sets the source and destination from a packet (IPs, ports, transport).
    pub fn flow_of(mut self, p: &PacketMeta<'_>) -> Self {
        self.event.source = Some(Endpoint {
            ip: p.src_ip,
            port: (p.src_port != 0).then_some(p.src_port),
            mac: p.src_mac.map(crate::packet::mac_string),
            ..Default::default()
        });
        self.event.destination = Some(Endpoint {
            ip: p.dst_ip,
            port: (p.dst_port != 0).then_some(p.dst_port),
            mac: p.dst_mac.map(crate::packet::mac_string),
            ..Default::default()
        });
        self.event.network = Some(Network {
            transport: transport_name(p.ip_proto).map(str::to_string),
            protocol: p.app.protocol.map(str::to_string),
            ..Default::default()
        });
        self
    }

    /// Sets `network.transport` from an IP protocol number.
    pub fn transport(mut self, ip_proto: u8) -> Self {
        self.event
            .network
            .get_or_insert_with(Network::default)
            .transport = transport_name(ip_proto).map(str::to_string);
        self
    }

    /// Sets just the source endpoint.
    pub fn source(mut self, ep: Endpoint) -> Self {
        self.event.source = Some(ep);
        self
    }

    /// Sets just the destination endpoint.
    pub fn destination(mut self, ep: Endpoint) -> Self {
        self.event.destination = Some(ep);
        self
    }

    /// Sets `network.community_id`.
    pub fn community_id(mut self, id: String) -> Self {
        self.event
            .network
            .get_or_insert_with(Network::default)
            .community_id = Some(id);
        self
    }

    /// The human-readable line and the evidence (counts, masked samples, matched rule).
    pub fn finish(mut self, message: impl Into<String>, evidence: serde_json::Value) -> Event {
        self.event.message = Some(message.into());
        self.event.palisade = Some(serde_json::json!({ "evidence": evidence }));
        self.event
    }
}

/// `tcp`, `udp`, `icmp`, `ipv6-icmp` for an IP protocol number.
pub fn transport_name(proto: u8) -> Option<&'static str> {
    match proto {
        crate::packet::proto::TCP => Some("tcp"),
        crate::packet::proto::UDP => Some("udp"),
        crate::packet::proto::ICMP => Some("icmp"),
        crate::packet::proto::ICMPV6 => Some("ipv6-icmp"),
        _ => None,
    }
}

/// Packet builders shared by the detectors' tests.
#[cfg(test)]
pub(crate) mod testkit {
    use std::net::{IpAddr, Ipv4Addr};

    use palisade_wire::Event;

    use super::Detector;
    use crate::packet::{proto, PacketMeta};

    /// Feeds `packets` to `det` in order, ticking once per second of capture time in between,
    /// as the pipeline does; returns every alert.
    pub fn run(det: &mut dyn Detector, packets: &[PacketMeta<'_>]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut next_tick = packets.first().map_or(0, |p| p.ts) + SEC;
        for p in packets {
            while p.ts >= next_tick {
                det.on_tick(next_tick, &mut out);
                next_tick += SEC;
            }
            det.on_packet(p, &mut out);
        }
        out
    }

    /// An alert's rule id ("" when none).
    pub fn rule(e: &Event) -> &str {
        e.rule.as_ref().and_then(|r| r.id.as_deref()).unwrap_or("")
    }

    /// The rule ids of `events`, in order.
    pub fn rule_ids(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| rule(e).to_string())
            .filter(|r| !r.is_empty())
            .collect()
    }

    /// An alert's `palisade.evidence`.
    pub fn evidence(e: &Event) -> &serde_json::Value {
        &e.palisade.as_ref().expect("palisade")["evidence"]
    }

    /// One second in nanoseconds.
    pub const SEC: i64 = 1_000_000_000;
    /// A capture start time.
    pub const T0: i64 = 1_700_000_000 * SEC;

    /// An IPv4 address.
    pub fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// A TCP packet with `flags`.
    pub fn tcp(
        ts: i64,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        flags: u8,
    ) -> PacketMeta<'static> {
        let mut p = PacketMeta::empty(ts);
        p.src_ip = Some(src);
        p.dst_ip = Some(dst);
        p.ip_proto = proto::TCP;
        p.src_port = sport;
        p.dst_port = dport;
        p.tcp_flags = flags;
        p
    }

    /// A UDP packet.
    pub fn udp(ts: i64, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> PacketMeta<'static> {
        let mut p = tcp(ts, src, dst, sport, dport, 0);
        p.ip_proto = proto::UDP;
        p
    }
}
