//! The network pipeline: raw packet → decode → [`PacketMeta`] → flow table → detectors → events.
//! One pipeline per capture source; it runs on capture time (packet timestamps), so a replayed
//! file gives the same flows and alerts every time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use palisade_wire::Event;
use serde::Deserialize;

use crate::capture::RawPacket;
use crate::decode::{self, App, DecodeStats, Decoded, LinkHeader, LinkType, L4};
use crate::detect::arp_spoof::{ArpSpoofConfig, ArpSpoofDetector};
use crate::detect::beacon::{BeaconConfig, BeaconDetector};
use crate::detect::dns_tunnel::{DnsTunnelConfig, DnsTunnelDetector};
use crate::detect::flood::{FloodConfig, FloodDetector};
use crate::detect::ioc::{IocConfig, IocDetector};
use crate::detect::pii::{PiiConfig, PiiDetector};
use crate::detect::port_scan::{PortScanConfig, PortScanDetector};
use crate::detect::yara::{YaraConfig, YaraDetector};
use crate::detect::Detector;
use crate::flow::{FlowConfig, FlowTable};
use crate::packet::{AppMeta, ArpMeta, DnsName, PacketMeta};

/// `[detect.*]`: one table per detector; every detector is on by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Horizontal and vertical port scans.
    pub port_scan: PortScanConfig,
    /// SYN and connection floods.
    pub flood: FloodConfig,
    /// ARP spoofing and gratuitous ARP storms.
    pub arp_spoof: ArpSpoofConfig,
    /// Periodic (beaconing) connections.
    pub beacon: BeaconConfig,
    /// DNS tunnelling and exfiltration.
    pub dns_tunnel: DnsTunnelConfig,
    /// Indicator-of-compromise lists.
    pub ioc: IocConfig,
    /// Sensitive personal data in clear text.
    pub pii: PiiConfig,
    /// YARA-X rules over reassembled TCP streams and UDP payloads.
    pub yara: YaraConfig,
}

/// Pipeline set-up errors.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The capture's link type is not one the decoder reads.
    #[error(
        "unsupported link type {0} (supported: Ethernet 1, Linux cooked 113/276, raw IP 12/14/101)"
    )]
    LinkType(i32),
    /// A detector refused its configuration.
    #[error("detector {detector}: {reason}")]
    Detector {
        /// Which detector.
        detector: &'static str,
        /// Why.
        reason: String,
    },
    /// The flow config is invalid.
    #[error("flow config: {0}")]
    Flow(String),
}

/// Counters shared with heartbeats.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Packets processed.
    pub packets: AtomicU64,
    /// Bytes (wire length) processed.
    pub bytes: AtomicU64,
    /// Packets that did not decode fully.
    pub malformed: AtomicU64,
    /// Alerts raised.
    pub alerts: AtomicU64,
    /// Flow records emitted.
    pub flows: AtomicU64,
    /// Flows currently tracked.
    pub active_flows: AtomicU64,
    /// Flows evicted by the cap.
    pub flows_evicted: AtomicU64,
    /// libpcap: packets dropped (buffer full).
    pub capture_dropped: AtomicU64,
    /// libpcap: packets dropped by the interface.
    pub capture_if_dropped: AtomicU64,
    /// libpcap: packets received.
    pub capture_received: AtomicU64,
}

/// One capture's processing state.
pub struct Pipeline {
    link: LinkType,
    stats: DecodeStats,
    flows: FlowTable,
    detectors: Vec<Box<dyn Detector>>,
    last_tick: i64,
    community_id_seed: u16,
    counters: Arc<NetCounters>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("link", &self.link)
            .field(
                "detectors",
                &self.detectors.iter().map(|d| d.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

const TICK_NANOS: i64 = 1_000_000_000;

fn detector_err(detector: &'static str) -> impl FnOnce(String) -> PipelineError {
    move |reason| PipelineError::Detector { detector, reason }
}

/// Builds the enabled detectors from their configs; `community_id_seed` is the flows' seed (for
/// alerts raised after the packet that caused them).
pub fn detectors(
    config: &DetectConfig,
    agent_id: &str,
    community_id_seed: u16,
) -> Result<Vec<Box<dyn Detector>>, PipelineError> {
    let mut d: Vec<Box<dyn Detector>> = Vec::new();
    if config.port_scan.enabled {
        d.push(Box::new(PortScanDetector::new(
            config.port_scan.clone(),
            agent_id,
        )));
    }
    if config.flood.enabled {
        d.push(Box::new(FloodDetector::new(config.flood.clone(), agent_id)));
    }
    if config.arp_spoof.enabled {
        d.push(Box::new(ArpSpoofDetector::new(
            config.arp_spoof.clone(),
            agent_id,
        )));
    }
    if config.beacon.enabled {
        d.push(Box::new(BeaconDetector::new(
            config.beacon.clone(),
            agent_id,
        )));
    }
    if config.dns_tunnel.enabled {
        d.push(Box::new(
            DnsTunnelDetector::new(config.dns_tunnel.clone(), agent_id)
                .map_err(|e| e.to_string())
                .map_err(detector_err("dns_tunnel"))?,
        ));
    }
    if config.ioc.enabled {
        d.push(Box::new(
            IocDetector::new(config.ioc.clone(), agent_id)
                .map_err(|e| e.to_string())
                .map_err(detector_err("ioc"))?,
        ));
    }
    if config.pii.enabled {
        d.push(Box::new(
            PiiDetector::new(config.pii.clone(), agent_id)
                .map_err(|e| e.to_string())
                .map_err(detector_err("pii"))?,
        ));
    }
    if config.yara.enabled {
        d.push(Box::new(
            YaraDetector::new(config.yara.clone(), agent_id, community_id_seed)
                .map_err(|e| e.to_string())
                .map_err(detector_err("yara"))?,
        ));
    }
    Ok(d)
}

/// The normalized view of a decoded packet.
pub fn packet_meta<'a>(ts: i64, wire_len: u32, d: Decoded<'a>) -> PacketMeta<'a> {
    let mut p = PacketMeta::empty(ts);
    p.wire_len = wire_len;
    p.vlan = d.vlan[0];
    match d.link {
        LinkHeader::Ethernet { dst, src } => {
            p.src_mac = Some(src.0);
            p.dst_mac = Some(dst.0);
        }
        LinkHeader::Sll { src, .. } => p.src_mac = src.map(|m| m.0),
        LinkHeader::None => {}
    }
    if let Some(a) = d.arp {
        p.arp = Some(ArpMeta {
            op: a.op,
            sender_mac: a.sender_mac.0,
            sender_ip: a.sender_ip,
            target_mac: a.target_mac.0,
            target_ip: a.target_ip,
        });
    }
    if let Some(ip) = &d.ip {
        p.src_ip = Some(ip.src);
        p.dst_ip = Some(ip.dst);
        p.ip_proto = ip.protocol;
        p.fragment = ip.fragment.is_some_and(|f| f.offset != 0);
    }
    match &d.l4 {
        Some(L4::Tcp(t)) => {
            p.src_port = t.src_port;
            p.dst_port = t.dst_port;
            p.tcp_flags = (t.flags.0 & 0x3f) as u8;
            p.tcp_seq = t.seq;
            p.payload = t.payload;
        }
        Some(L4::Udp(u)) => {
            p.src_port = u.src_port;
            p.dst_port = u.dst_port;
            p.payload = u.payload;
        }
        Some(L4::Icmp(i)) | Some(L4::Icmpv6(i)) => {
            p.src_port = u16::from(i.icmp_type);
            p.dst_port = u16::from(i.code);
            p.payload = i.body;
        }
        None => {}
    }
    p.app = match d.app {
        Some(App::Dns(dns)) => AppMeta {
            protocol: Some("dns"),
            dns_questions: dns
                .questions
                .into_iter()
                .map(|q| DnsName {
                    name: q.name.to_ascii_lowercase(),
                    rtype: q.qtype,
                })
                .collect(),
            dns_rcode: dns.response.then_some(dns.rcode),
            dns_response: dns.response,
            ..AppMeta::default()
        },
        Some(App::Http(decode::http::Http::Request(r))) => AppMeta {
            protocol: Some("http"),
            http_host: r.host,
            http_uri: Some(r.target),
            http_method: Some(r.method),
            http_user_agent: r.user_agent,
            ..AppMeta::default()
        },
        Some(App::Http(decode::http::Http::Response(r))) => AppMeta {
            protocol: Some("http"),
            http_status: Some(r.status),
            ..AppMeta::default()
        },
        Some(App::TlsClientHello(ch)) => {
            let ja3 = ch.ja3();
            AppMeta {
                protocol: Some("tls"),
                tls_sni: ch.server_name.map(str::to_ascii_lowercase),
                tls_ja3: Some(ja3.hash),
                tls_ja4: Some(ch.ja4()),
                ..AppMeta::default()
            }
        }
        Some(App::TlsClientHelloPartial { .. }) => AppMeta {
            protocol: Some("tls"),
            ..AppMeta::default()
        },
        None => AppMeta::default(),
    };
    p
}

impl Pipeline {
    /// A pipeline for a capture of DLT `linktype`.
    pub fn new(
        flow: &FlowConfig,
        detect: &DetectConfig,
        agent_id: &str,
        linktype: i32,
        counters: Arc<NetCounters>,
    ) -> Result<Self, PipelineError> {
        let link = u32::try_from(linktype)
            .ok()
            .and_then(LinkType::from_dlt)
            .ok_or(PipelineError::LinkType(linktype))?;
        flow.validate()
            .map_err(|e| PipelineError::Flow(e.to_string()))?;
        Ok(Pipeline {
            link,
            stats: DecodeStats::default(),
            flows: FlowTable::new(flow.clone(), agent_id),
            detectors: detectors(detect, agent_id, flow.community_id_seed)?,
            last_tick: i64::MIN,
            community_id_seed: flow.community_id_seed,
            counters,
        })
    }

    /// Processes one packet; flow records and alerts go to `out`.
    pub fn process(&mut self, raw: RawPacket<'_>, out: &mut Vec<Event>) {
        let decoded = decode::decode(self.link, raw.data);
        self.stats.record(&decoded);
        if decoded.malformed.is_some() {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.packets.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(u64::from(raw.wire_len), Ordering::Relaxed);
        let meta = packet_meta(raw.ts, raw.wire_len, decoded);
        let before = out.len();
        let update = self.flows.observe(&meta);
        for d in &mut self.detectors {
            d.on_packet(&meta, out);
        }
        // Alerts about this packet's flow carry its community id.
        if out.len() > before {
            let cid = update
                .and_then(|u| self.flows.get(u.id))
                .map(|f| f.community_id(self.community_id_seed));
            for e in &mut out[before..] {
                if let (Some(cid), Some(net)) = (&cid, e.network.as_mut()) {
                    if net.community_id.is_none() {
                        net.community_id = Some(cid.clone());
                    }
                }
            }
            self.counters
                .alerts
                .fetch_add((out.len() - before) as u64, Ordering::Relaxed);
        }
        if raw.ts >= self.last_tick.saturating_add(TICK_NANOS) {
            self.tick(raw.ts, out);
        }
    }

    /// Capture time reached `now`: expire flows and detector windows.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Event>) {
        self.last_tick = now;
        self.advance(now, false, out);
    }

    /// End of input: emit every open flow and final detector state.
    pub fn finish(&mut self, now: i64, out: &mut Vec<Event>) {
        let before = out.len();
        for d in &mut self.detectors {
            d.on_finish(now, out);
        }
        self.counters
            .alerts
            .fetch_add((out.len() - before) as u64, Ordering::Relaxed);
        self.advance(now, true, out);
    }

    fn advance(&mut self, now: i64, flush_all_flows: bool, out: &mut Vec<Event>) {
        let before = out.len();
        for d in &mut self.detectors {
            d.on_tick(now, out);
        }
        let alerts = out.len() - before;
        let flows_before = out.len();
        if flush_all_flows {
            self.flows.flush_all(out);
        } else {
            self.flows.expire(now, out);
        }
        self.account(alerts as u64, (out.len() - flows_before) as u64);
    }

    fn account(&self, alerts: u64, flows: u64) {
        let c = &self.counters;
        c.alerts.fetch_add(alerts, Ordering::Relaxed);
        c.flows.fetch_add(flows, Ordering::Relaxed);
        let s = self.flows.stats();
        c.active_flows.store(s.active, Ordering::Relaxed);
        c.flows_evicted.store(s.evicted, Ordering::Relaxed);
    }

    /// Decoder counters.
    pub fn decode_stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// Names of the detectors running.
    pub fn detector_names(&self) -> Vec<&'static str> {
        self.detectors.iter().map(|d| d.name()).collect()
    }
}
