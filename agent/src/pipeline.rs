//! The network pipeline: raw packet → decode → [`PacketMeta`] → flow table → detectors → events.
//! One pipeline per capture source; it runs on capture time (packet timestamps), so a replayed
//! file gives the same flows and alerts every time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use palisade_wire::{Event, EventKind};
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
#[cfg(feature = "yara")]
use crate::detect::yara::YaraDetector;
use crate::detect::yara_config::YaraConfig;
use crate::detect::Detector;
use crate::flow::{FlowConfig, FlowTable};
use crate::packet::{AppMeta, ArpMeta, DnsName, PacketMeta};
use crate::tls_hello::{self, HelloAssembler};

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

impl DetectConfig {
    /// Names of the detectors, as `Detector::name` gives them and `[detect.NAME]` spells them.
    pub const NAMES: [&'static str; 8] = [
        "port_scan",
        "flood",
        "arp_spoof",
        "beacon",
        "dns_tunnel",
        "ioc",
        "pii",
        "yara",
    ];

    /// Turns detector `name` off; an error names the detectors there are.
    pub fn disable(&mut self, name: &str) -> Result<(), String> {
        let enabled = match name {
            "port_scan" => &mut self.port_scan.enabled,
            "flood" => &mut self.flood.enabled,
            "arp_spoof" => &mut self.arp_spoof.enabled,
            "beacon" => &mut self.beacon.enabled,
            "dns_tunnel" => &mut self.dns_tunnel.enabled,
            "ioc" => &mut self.ioc.enabled,
            "pii" => &mut self.pii.enabled,
            "yara" => &mut self.yara.enabled,
            _ => {
                return Err(format!(
                    "unknown detector {name:?} (expected one of {})",
                    Self::NAMES.join(", ")
                ))
            }
        };
        *enabled = false;
        Ok(())
    }
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

/// Per-packet counts, kept in plain fields and published to [`NetCounters`] on every tick and
/// at the end: an atomic add per packet per counter was measurable at a million packets/s,
/// and heartbeats only need them once a second.
#[derive(Debug, Default)]
struct Counts {
    packets: u64,
    bytes: u64,
    malformed: u64,
    alerts: u64,
}

/// One capture's processing state.
pub struct Pipeline {
    link: LinkType,
    stats: DecodeStats,
    flows: FlowTable,
    detectors: Vec<Box<dyn Detector>>,
    last_tick: i64,
    community_id_seed: u16,
    counts: Counts,
    /// TLS ClientHellos split over several segments, being put back together.
    hellos: HelloAssembler,
    /// Whether alerts go to `out`; when false they are counted and dropped.
    emit_alerts: bool,
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
/// Split ClientHellos collected at once, and how long (capture time) one may take to complete.
const HELLOS_IN_PROGRESS: usize = 4096;
const HELLO_TIMEOUT_NANOS: i64 = 10 * TICK_NANOS;

/// Most flow records built per batch when a tick or the end of input ends many flows at once
/// (see [`Pipeline::finish_batched`]): a few MB of records at a time, whatever the table holds.
const BATCH_FLOWS: usize = 1024;

/// The `deliver` of the unbatched calls: everything stays in `out` for the caller.
fn keep_all(_: &mut Vec<Event>) -> Result<(), std::convert::Infallible> {
    Ok(())
}

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
        #[cfg(feature = "yara")]
        d.push(Box::new(
            YaraDetector::new(config.yara.clone(), agent_id, community_id_seed)
                .map_err(|e| e.to_string())
                .map_err(detector_err("yara"))?,
        ));
        #[cfg(not(feature = "yara"))]
        {
            let _ = community_id_seed;
            return Err(detector_err("yara")(
                "this build has no YARA-X (cargo feature `yara`); set [detect.yara] enabled = false"
                    .into(),
            ));
        }
    }
    Ok(d)
}

/// The normalized view of a decoded packet.
///
/// Takes the decoded packet by reference and builds the result in one expression: `Decoded`
/// and `PacketMeta` are a few hundred bytes each, and copying them (and dropping a default
/// `AppMeta` that was then overwritten) was a measurable share of the per-packet cost.
#[inline(always)]
pub fn packet_meta<'a>(ts: i64, wire_len: u32, d: &Decoded<'a>) -> PacketMeta<'a> {
    let (src_mac, dst_mac) = match d.link {
        LinkHeader::Ethernet { dst, src } => (Some(src.0), Some(dst.0)),
        LinkHeader::Sll { src, .. } => (src.map(|m| m.0), None),
        LinkHeader::None => (None, None),
    };
    let (src_port, dst_port, tcp_flags, tcp_seq, payload) = match &d.l4 {
        Some(L4::Tcp(t)) => (
            t.src_port,
            t.dst_port,
            (t.flags.0 & 0x3f) as u8,
            t.seq,
            t.payload,
        ),
        Some(L4::Udp(u)) => (u.src_port, u.dst_port, 0, 0, u.payload),
        Some(L4::Icmp(i)) | Some(L4::Icmpv6(i)) => {
            (u16::from(i.icmp_type), u16::from(i.code), 0, 0, i.body)
        }
        None => (0, 0, 0, 0, &[][..]),
    };
    PacketMeta {
        ts,
        wire_len,
        vlan: d.vlan[0],
        src_mac,
        dst_mac,
        arp: d.arp.map(|a| ArpMeta {
            op: a.op,
            sender_mac: a.sender_mac.0,
            sender_ip: a.sender_ip,
            target_mac: a.target_mac.0,
            target_ip: a.target_ip,
        }),
        src_ip: d.ip.as_ref().map(|ip| ip.src),
        dst_ip: d.ip.as_ref().map(|ip| ip.dst),
        ip_proto: d.ip.as_ref().map_or(0, |ip| ip.protocol),
        src_port,
        dst_port,
        tcp_flags,
        tcp_seq,
        payload,
        fragment: d
            .ip
            .as_ref()
            .is_some_and(|ip| ip.fragment.is_some_and(|f| f.offset != 0)),
        app: app_meta(&d.app),
    }
}

/// The application facts of a decoded packet.
fn app_meta<'a>(app: &Option<App<'a>>) -> AppMeta<'a> {
    match app {
        Some(App::Dns(dns)) => AppMeta {
            protocol: Some("dns"),
            dns_questions: dns
                .questions
                .iter()
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
    }
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
            counts: Counts::default(),
            hellos: HelloAssembler::new(HELLOS_IN_PROGRESS, HELLO_TIMEOUT_NANOS),
            emit_alerts: true,
            counters,
        })
    }

    /// Only emit events of `kind` (all when `None`). Events of other kinds are still counted
    /// (in [`NetCounters`] and the flow table's stats) but not delivered; flow records that
    /// would be dropped are not even built.
    pub fn set_kind_filter(&mut self, kind: Option<EventKind>) {
        let wants = |k: EventKind| kind.is_none_or(|want| want == k);
        self.flows.set_build_records(wants(EventKind::Flow));
        self.emit_alerts = wants(EventKind::Alert);
    }

    /// Processes one packet; flow records and alerts go to `out`.
    pub fn process(&mut self, raw: RawPacket<'_>, out: &mut Vec<Event>) {
        let Ok(()) = self.process_batched(raw, out, &mut keep_all);
    }

    /// Like [`Pipeline::process`], but when the packet's capture time runs a tick, the flow
    /// records it expires go to `deliver` in batches of at most [`BATCH_FLOWS`] (a tick can
    /// end tens of thousands of flows at once). `deliver` is expected to drain `out`.
    pub fn process_batched<E>(
        &mut self,
        raw: RawPacket<'_>,
        out: &mut Vec<Event>,
        deliver: &mut impl FnMut(&mut Vec<Event>) -> Result<(), E>,
    ) -> Result<(), E> {
        let decoded = decode::decode(self.link, raw.data);
        self.stats.record(&decoded);
        self.counts.malformed += u64::from(decoded.malformed.is_some());
        self.counts.packets += 1;
        self.counts.bytes += u64::from(raw.wire_len);
        let partial_hello = match &decoded.app {
            Some(App::TlsClientHelloPartial { needed }) => Some(*needed),
            _ => None,
        };
        let mut meta = packet_meta(raw.ts, raw.wire_len, &decoded);
        if let Some(record) = self.hellos.observe(&meta, partial_hello) {
            // The last segment of a split ClientHello: the flow and the detectors see the
            // whole hello's SNI and fingerprints on this packet.
            tls_hello::fill_app(&mut meta.app, &record);
        }
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
            self.take_alerts(out, before);
        }
        if raw.ts >= self.last_tick.saturating_add(TICK_NANOS) {
            self.tick_batched(raw.ts, out, deliver)?;
        }
        Ok(())
    }

    /// Capture time reached `now`: expire flows and detector windows.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Event>) {
        let Ok(()) = self.tick_batched(now, out, &mut keep_all);
    }

    fn tick_batched<E>(
        &mut self,
        now: i64,
        out: &mut Vec<Event>,
        deliver: &mut impl FnMut(&mut Vec<Event>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.last_tick = now;
        let before = out.len();
        for d in &mut self.detectors {
            d.on_tick(now, out);
        }
        self.take_alerts(out, before);
        self.hellos.expire(now);
        while !self.flows.expire_some(now, out, BATCH_FLOWS) {
            deliver(out)?;
        }
        self.publish();
        Ok(())
    }

    /// End of input: emit every open flow and final detector state.
    pub fn finish(&mut self, now: i64, out: &mut Vec<Event>) {
        let Ok(()) = self.finish_batched(now, out, &mut keep_all);
    }

    /// End of input, streamed: like [`Pipeline::finish`], but hands `out` to `deliver` after
    /// the detectors' final alerts and after each batch of at most [`BATCH_FLOWS`] flow
    /// records, so a table of 100 k open flows never sits in memory as records all at once.
    /// `deliver` is expected to drain `out`. Stops at `deliver`'s first error.
    pub fn finish_batched<E>(
        &mut self,
        now: i64,
        out: &mut Vec<Event>,
        deliver: &mut impl FnMut(&mut Vec<Event>) -> Result<(), E>,
    ) -> Result<(), E> {
        let before = out.len();
        for d in &mut self.detectors {
            d.on_finish(now, out);
        }
        for d in &mut self.detectors {
            d.on_tick(now, out);
        }
        self.take_alerts(out, before);
        loop {
            let done = self.flows.flush(out, BATCH_FLOWS);
            self.publish();
            deliver(out)?;
            if done {
                return Ok(());
            }
        }
    }

    /// Counts the alerts in `out[from..]` and drops them when alerts are filtered out.
    fn take_alerts(&mut self, out: &mut Vec<Event>, from: usize) {
        self.counts.alerts += (out.len() - from) as u64;
        if !self.emit_alerts {
            out.truncate(from);
        }
    }

    /// Publishes the counts to the shared counters (on every tick and at the end).
    fn publish(&self) {
        let c = &self.counters;
        let n = &self.counts;
        c.packets.store(n.packets, Ordering::Relaxed);
        c.bytes.store(n.bytes, Ordering::Relaxed);
        c.malformed.store(n.malformed, Ordering::Relaxed);
        c.alerts.store(n.alerts, Ordering::Relaxed);
        let s = self.flows.stats();
        c.flows.store(s.emitted, Ordering::Relaxed);
        c.active_flows.store(s.active, Ordering::Relaxed);
        c.flows_evicted.store(s.evicted, Ordering::Relaxed);
    }

    /// Decoder counters.
    pub fn decode_stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// [`Detector::summary`] of each detector that has one, by name.
    pub fn detector_summaries(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.detectors
            .iter()
            .filter_map(|d| Some((d.name(), d.summary()?)))
            .collect()
    }

    /// Names of the detectors running.
    pub fn detector_names(&self) -> Vec<&'static str> {
        self.detectors.iter().map(|d| d.name()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::capture::craft::{self, Endpoint, ACK, FIN, SYN};

    const T0: i64 = 1_700_000_000 * TICK_NANOS;

    /// 3000 closed TCP connections (all still in the table at the end, within the close
    /// linger: more than two finish batches) and a vertical port scan (alerts).
    fn frames() -> Vec<(i64, Vec<u8>)> {
        let mut v = Vec::new();
        let server = |n: u32| Endpoint::new(Ipv4Addr::new(10, 200, (n % 250) as u8, 1), 80);
        for n in 0..3000u32 {
            let t = T0 + i64::from(n) * 200_000;
            let c = Endpoint::new(Ipv4Addr::from(0x0a00_0000 + n), 40_000);
            v.push((t, craft::tcp(c, server(n), SYN, 1, 0, b"")));
            v.push((t + 1, craft::tcp(server(n), c, SYN | ACK, 1, 2, b"")));
            v.push((
                t + 2,
                craft::tcp(c, server(n), ACK, 2, 2, b"GET / HTTP/1.1\r\n\r\n"),
            ));
            v.push((t + 3, craft::tcp(c, server(n), FIN | ACK, 20, 2, b"")));
            v.push((t + 4, craft::tcp(server(n), c, FIN | ACK, 2, 21, b"")));
        }
        let scanner = Endpoint::new(Ipv4Addr::new(10, 1, 0, 66), 50_000);
        for port in 1..=200u16 {
            let target = Endpoint::new(Ipv4Addr::new(10, 1, 0, 20), port);
            v.push((
                T0 + 5 + i64::from(port),
                craft::tcp(scanner, target, SYN, 1, 0, b""),
            ));
        }
        v.sort_by_key(|(t, _)| *t);
        v
    }

    struct Run {
        events: Vec<Event>,
        finish_batches: Vec<usize>,
        counters: [u64; 5],
    }

    /// A pipeline with the signature-based detectors off (no files needed), keeping `kind`.
    fn test_pipeline(kind: Option<EventKind>, counters: Arc<NetCounters>) -> Pipeline {
        let mut detect = DetectConfig::default();
        detect.disable("ioc").unwrap();
        detect.disable("yara").unwrap();
        let mut p = Pipeline::new(&FlowConfig::default(), &detect, "test", 1, counters).unwrap();
        p.set_kind_filter(kind);
        p
    }

    fn run(kind: Option<EventKind>) -> Run {
        let counters = Arc::new(NetCounters::default());
        let mut p = test_pipeline(kind, counters.clone());
        let mut events = Vec::new();
        let mut out = Vec::new();
        let mut last = T0;
        for (ts, f) in frames() {
            let raw = RawPacket {
                ts,
                wire_len: f.len() as u32,
                data: &f,
            };
            p.process(raw, &mut out);
            events.append(&mut out);
            last = ts;
        }
        let mut finish_batches = Vec::new();
        p.finish_batched(last, &mut out, &mut |batch: &mut Vec<Event>| {
            finish_batches.push(batch.len());
            events.append(batch);
            Ok::<(), ()>(())
        })
        .unwrap();
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Run {
            events,
            finish_batches,
            counters: [
                c(&counters.packets),
                c(&counters.bytes),
                c(&counters.malformed),
                c(&counters.flows),
                c(&counters.alerts),
            ],
        }
    }

    fn count(events: &[Event], kind: EventKind) -> u64 {
        events.iter().filter(|e| e.kind() == kind).count() as u64
    }

    #[test]
    fn kind_filter_delivers_only_that_kind_and_counts_everything() {
        let all = run(None);
        let [packets, _, _, flows, alerts] = all.counters;
        assert_eq!(packets, frames().len() as u64);
        assert!(flows > 3000, "{flows}");
        assert!(alerts > 0);
        // Every record counted was delivered, and only those.
        assert_eq!(count(&all.events, EventKind::Flow), flows);
        assert_eq!(count(&all.events, EventKind::Alert), alerts);

        let alerts_only = run(Some(EventKind::Alert));
        assert_eq!(alerts_only.counters, all.counters);
        assert_eq!(count(&alerts_only.events, EventKind::Flow), 0);
        let alert_events: Vec<&Event> = all
            .events
            .iter()
            .filter(|e| e.kind() == EventKind::Alert)
            .collect();
        assert_eq!(alerts_only.events.iter().collect::<Vec<_>>(), alert_events);

        let flows_only = run(Some(EventKind::Flow));
        assert_eq!(flows_only.counters, all.counters);
        assert_eq!(count(&flows_only.events, EventKind::Alert), 0);
        assert_eq!(count(&flows_only.events, EventKind::Flow), flows);
    }

    #[test]
    fn finish_hands_open_flows_over_in_bounded_batches() {
        let r = run(Some(EventKind::Flow));
        assert!(r.finish_batches.len() >= 3, "{:?}", r.finish_batches);
        assert!(r.finish_batches.iter().all(|&n| n <= BATCH_FLOWS));
        assert!(r.finish_batches.iter().sum::<usize>() >= 3000);

        // `finish` (one Vec) gives the same events as the batched end.
        let mut p = test_pipeline(Some(EventKind::Flow), Arc::new(NetCounters::default()));
        let mut events = Vec::new();
        let mut last = T0;
        for (ts, f) in frames() {
            let raw = RawPacket {
                ts,
                wire_len: f.len() as u32,
                data: &f,
            };
            p.process(raw, &mut events);
            last = ts;
        }
        p.finish(last, &mut events);
        assert_eq!(events, r.events);
    }

    #[test]
    fn disable_names_every_detector_and_rejects_others() {
        let mut d = DetectConfig::default();
        for name in DetectConfig::NAMES {
            d.disable(name).unwrap();
        }
        assert!(detectors(&d, "test", 0).unwrap().is_empty());
        assert!(d.disable("nope").unwrap_err().contains("port_scan"));
    }
}
