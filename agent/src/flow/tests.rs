//! Flow table behaviour, driven by hand-built packets with capture timestamps (no sleeps).

use palisade_wire::{Event, EventKind, Severity};

use super::*;
use crate::packet::tcp_flags::{ACK, FIN, PSH, RST, SYN};
use crate::packet::{proto, PacketMeta};

const SEC: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * SEC;

fn table(config: FlowConfig) -> FlowTable {
    FlowTable::new(config, "probe-1")
}

fn packet(
    ts: i64,
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    ip_proto: u8,
) -> PacketMeta<'static> {
    let mut p = PacketMeta::empty(ts);
    p.src_ip = Some(src.parse().unwrap());
    p.dst_ip = Some(dst.parse().unwrap());
    p.src_port = sport;
    p.dst_port = dport;
    p.ip_proto = ip_proto;
    p.wire_len = 60;
    p
}

const CLIENT: &str = "10.0.0.1";
const SERVER: &str = "10.0.0.2";

/// A TCP segment between CLIENT:51234 and SERVER:80, `from_client` picking the direction.
fn tcp(ts: i64, from_client: bool, flags: u8, payload: &'static [u8]) -> PacketMeta<'static> {
    let mut p = if from_client {
        packet(ts, CLIENT, 51234, SERVER, 80, proto::TCP)
    } else {
        packet(ts, SERVER, 80, CLIENT, 51234, proto::TCP)
    };
    p.tcp_flags = flags;
    p.payload = payload;
    p.wire_len = 54 + payload.len() as u32;
    p
}

fn feed(t: &mut FlowTable, packets: &[PacketMeta<'_>]) -> Vec<FlowUpdate> {
    packets.iter().map(|p| t.observe(p).unwrap()).collect()
}

fn flow_details(e: &Event) -> &serde_json::Value {
    &e.palisade.as_ref().unwrap()["flow"]
}

fn handshake(ts: i64) -> Vec<PacketMeta<'static>> {
    vec![
        tcp(ts, true, SYN, b""),
        tcp(ts + 1_000_000, false, SYN | ACK, b""),
        tcp(ts + 2_000_000, true, ACK, b""),
    ]
}

#[test]
fn both_directions_count_on_one_flow() {
    let mut t = table(FlowConfig::default());
    let mut packets = handshake(T0);
    packets.push(tcp(
        T0 + 3_000_000,
        true,
        ACK | PSH,
        b"GET / HTTP/1.1\r\n\r\n",
    ));
    packets.push(tcp(
        T0 + 4_000_000,
        false,
        ACK | PSH,
        b"HTTP/1.1 200 OK\r\n\r\nhello",
    ));
    let updates = feed(&mut t, &packets);
    assert!(updates[0].new_flow);
    assert!(updates[1..]
        .iter()
        .all(|u| !u.new_flow && u.id == updates[0].id));
    let dirs: Vec<_> = updates.iter().map(|u| u.direction).collect();
    use Direction::{Originator as O, Responder as R};
    assert_eq!(dirs, [O, R, O, O, R]);

    let flow = t.get(updates[0].id).unwrap();
    assert_eq!(flow.originator(), (CLIENT.parse().unwrap(), 51234));
    assert_eq!(flow.responder(), (SERVER.parse().unwrap(), 80));
    assert_eq!(flow.packets(O), 3);
    assert_eq!(flow.packets(R), 2);
    assert_eq!(flow.bytes(O), 54 * 3 + 18);
    assert_eq!(flow.bytes(R), 54 * 2 + 24);
    assert_eq!(flow.payload_bytes(O), 18);
    assert_eq!(flow.payload_bytes(R), 24);
    assert_eq!(flow.first_seen(), T0);
    assert_eq!(flow.last_seen(), T0 + 4_000_000);
    assert_eq!(flow.conn_state(), ConnState::S1);
    assert_eq!(t.stats().active, 1);
    assert_eq!(t.stats().created, 1);
}

#[test]
fn handshake_and_fin_close_is_sf_after_the_linger() {
    let mut t = table(FlowConfig::default());
    let mut packets = handshake(T0);
    packets.extend([
        tcp(T0 + 3_000_000, true, ACK | PSH, b"hello"),
        tcp(T0 + 4_000_000, false, ACK, b""),
        tcp(T0 + 5_000_000, false, ACK | PSH, b"world!"),
        tcp(T0 + 6_000_000, true, FIN | ACK, b""),
        tcp(T0 + 7_000_000, false, FIN | ACK, b""),
        tcp(T0 + 8_000_000, true, ACK, b""),
    ]);
    let updates = feed(&mut t, &packets);
    let flow = t.get(updates[0].id).unwrap();
    assert_eq!(flow.history(), "ShADadFf");
    assert_eq!(flow.conn_state(), ConnState::Sf);

    let mut out = Vec::new();
    t.expire(T0 + 4 * SEC, &mut out);
    assert!(
        out.is_empty(),
        "closed flows linger for tcp_close_linger_secs"
    );
    t.expire(T0 + 6 * SEC, &mut out);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    let d = flow_details(e);
    assert_eq!(d["state"], "SF");
    assert_eq!(d["history"], "ShADadFf");
    assert_eq!(d["end_reason"], "fin");
    assert_eq!(d["payload_bytes"]["orig"], 5);
    assert_eq!(d["payload_bytes"]["resp"], 6);
    assert!(t.get(updates[0].id).is_none(), "stale handles find nothing");
    assert_eq!(t.stats().active, 0);
    assert_eq!(t.stats().emitted, 1);
}

#[test]
fn flow_record_has_ecs_fields() {
    let mut t = table(FlowConfig::default());
    let mut packets = handshake(T0);
    let mut data = tcp(T0 + 3_000_000, true, ACK | PSH, b"GET / HTTP/1.1\r\n\r\n");
    data.app.protocol = Some("http");
    packets.push(data);
    packets.push(tcp(T0 + 1_200_000_000, false, RST, b""));
    feed(&mut t, &packets);
    let mut out = Vec::new();
    t.flush_all(&mut out);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.kind(), EventKind::Flow);
    assert_eq!(e.event.severity, Severity::Info);
    assert_eq!(e.timestamp.0, T0);
    assert_eq!(e.event.category, ["network"]);
    assert_eq!(e.event.kind_type, ["connection", "end"]);
    assert_eq!(e.event.action.as_deref(), Some("flow"));
    let src = e.source.as_ref().unwrap();
    assert_eq!(src.ip, Some(CLIENT.parse().unwrap()));
    assert_eq!(src.port, Some(51234));
    assert_eq!(src.packets, Some(3));
    assert_eq!(src.bytes, Some(54 * 3 + 18));
    let dst = e.destination.as_ref().unwrap();
    assert_eq!(dst.ip, Some(SERVER.parse().unwrap()));
    assert_eq!(dst.port, Some(80));
    assert_eq!(dst.packets, Some(2));
    let net = e.network.as_ref().unwrap();
    assert_eq!(net.transport.as_deref(), Some("tcp"));
    assert_eq!(net.protocol.as_deref(), Some("http"));
    assert_eq!(net.packets, Some(5));
    assert_eq!(net.bytes, Some(54 * 5 + 18));
    let cid = community_id_v1(
        0,
        CLIENT.parse().unwrap(),
        SERVER.parse().unwrap(),
        51234,
        80,
        6,
    );
    assert_eq!(net.community_id, cid);
    let d = flow_details(e);
    assert_eq!(d["state"], "RSTR");
    assert_eq!(d["end_reason"], "rst");
    assert_eq!(d["vlan"], serde_json::Value::Null);
    assert!((d["duration_secs"].as_f64().unwrap() - 1.2).abs() < 1e-9);
    assert_eq!(
        e.message.as_deref(),
        Some("tcp 10.0.0.1:51234 -> 10.0.0.2:80 RSTR 5 pkts 288 B 1.2 s")
    );
    // The record survives the wire format.
    let mut sealed = e.clone();
    sealed.seal(1);
    let back: Event = serde_json::from_slice(&sealed.to_json()).unwrap();
    assert_eq!(back, sealed);
}

#[test]
fn resets_give_rej_rsto_rstr() {
    let cases: [(Vec<PacketMeta<'static>>, &str); 3] = [
        (
            vec![tcp(T0, true, SYN, b""), tcp(T0 + 1, false, RST | ACK, b"")],
            "REJ",
        ),
        (
            {
                let mut v = handshake(T0);
                v.push(tcp(T0 + 3_000_000, true, RST, b""));
                v
            },
            "RSTO",
        ),
        (
            {
                let mut v = handshake(T0);
                v.push(tcp(T0 + 3_000_000, false, RST, b""));
                v
            },
            "RSTR",
        ),
    ];
    for (packets, want) in cases {
        let mut t = table(FlowConfig::default());
        feed(&mut t, &packets);
        let mut out = Vec::new();
        t.expire(T0 + 10 * SEC, &mut out);
        assert_eq!(out.len(), 1, "{want}");
        assert_eq!(flow_details(&out[0])["state"], want);
        assert_eq!(flow_details(&out[0])["end_reason"], "rst");
    }
}

#[test]
fn unanswered_syn_expires_as_s0_after_the_unestablished_timeout() {
    let mut t = table(FlowConfig::default());
    feed(
        &mut t,
        &[tcp(T0, true, SYN, b""), tcp(T0 + SEC, true, SYN, b"")],
    );
    let mut out = Vec::new();
    t.expire(T0 + 30 * SEC, &mut out);
    assert!(out.is_empty(), "30 s after the last SYN, not the first");
    t.expire(T0 + 31 * SEC, &mut out);
    assert_eq!(out.len(), 1);
    let d = flow_details(&out[0]);
    assert_eq!(d["state"], "S0");
    assert_eq!(d["history"], "S");
    assert_eq!(d["end_reason"], "idle");
    assert_eq!(out[0].source.as_ref().unwrap().packets, Some(2));
    assert_eq!(out[0].destination.as_ref().unwrap().packets, Some(0));
}

#[test]
fn established_tcp_waits_for_the_longer_idle_timeout() {
    let mut t = table(FlowConfig::default());
    feed(&mut t, &handshake(T0));
    let mut out = Vec::new();
    t.expire(T0 + 299 * SEC, &mut out);
    assert!(out.is_empty());
    t.expire(T0 + 301 * SEC, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(flow_details(&out[0])["state"], "S1");
}

#[test]
fn active_timeout_splits_a_long_flow() {
    let config = FlowConfig {
        active_timeout_secs: 10,
        ..FlowConfig::default()
    };
    let mut t = table(config);
    let mut out = Vec::new();
    // A UDP stream, one packet a second for 25 s, ticking like the pipeline does.
    let mut id = None;
    for s in 0..25 {
        let u = t
            .observe(&packet(
                T0 + s * SEC,
                "10.0.0.5",
                5004,
                "10.0.0.6",
                5004,
                proto::UDP,
            ))
            .unwrap();
        assert_eq!(u.new_flow, s == 0, "second {s}");
        id = Some(u.id);
        t.expire(T0 + s * SEC + SEC / 2, &mut out);
    }
    assert_eq!(out.len(), 2, "records at 10 s and 20 s");
    for e in &out {
        assert_eq!(flow_details(e)["end_reason"], "active");
    }
    assert_eq!(out[0].timestamp.0, T0);
    assert_eq!(out[0].source.as_ref().unwrap().packets, Some(11));
    assert_eq!(out[1].timestamp.0, T0 + 11 * SEC);
    assert_eq!(out[1].source.as_ref().unwrap().packets, Some(10));
    // Still the same flow, still in the table.
    assert!(t.get(id.unwrap()).is_some());
    t.flush_all(&mut out);
    assert_eq!(out.len(), 3);
    assert_eq!(flow_details(&out[2])["end_reason"], "shutdown");
    assert_eq!(out[2].source.as_ref().unwrap().packets, Some(4));
    let total: u64 = out
        .iter()
        .map(|e| e.network.as_ref().unwrap().packets.unwrap())
        .sum();
    assert_eq!(total, 25);
}

#[test]
fn max_flows_evicts_the_least_recently_seen() {
    let config = FlowConfig {
        max_flows: 3,
        ..FlowConfig::default()
    };
    let mut t = table(config);
    let udp = |ts: i64, sport: u16| packet(ts, "10.0.0.1", sport, "10.0.0.9", 53, proto::UDP);
    let a = t.observe(&udp(T0, 1001)).unwrap().id;
    let b = t.observe(&udp(T0 + 1, 1002)).unwrap().id;
    // TCP flows are on another idle list; eviction still compares last-seen across lists.
    let c = t.observe(&tcp(T0 + 2, true, SYN, b"")).unwrap().id;
    // Touch `a`: `b` is now the least recently seen.
    t.observe(&udp(T0 + 3, 1001)).unwrap();
    let d = t.observe(&udp(T0 + 4, 1004)).unwrap().id;
    assert!(t.get(b).is_none(), "b was evicted");
    assert!(t.get(a).is_some() && t.get(c).is_some() && t.get(d).is_some());
    assert_eq!(t.stats().evicted, 1);
    assert_eq!(t.stats().active, 3);
    // Then `c` (TCP, seen at +2) is the oldest.
    t.observe(&udp(T0 + 5, 1005)).unwrap();
    assert!(t.get(c).is_none());
    assert_eq!(t.stats().evicted, 2);

    let mut out = Vec::new();
    t.expire(T0 + 6, &mut out);
    assert_eq!(
        out.len(),
        2,
        "evicted flows are reported on the next expire"
    );
    let evicted: Vec<_> = out
        .iter()
        .map(|e| flow_details(e)["end_reason"].clone())
        .collect();
    assert_eq!(evicted, ["evicted", "evicted"]);
    assert_eq!(out[0].source.as_ref().unwrap().port, Some(1002));
    assert_eq!(out[1].source.as_ref().unwrap().port, Some(51234));
}

#[test]
fn sample_rate_emits_one_in_n_records() {
    let config = FlowConfig {
        sample_rate: 10,
        ..FlowConfig::default()
    };
    let mut t = table(config);
    for i in 0..1000u16 {
        t.observe(&packet(
            T0,
            "10.0.0.1",
            1000 + i,
            "10.0.0.2",
            53,
            proto::UDP,
        ))
        .unwrap();
    }
    let mut out = Vec::new();
    t.flush_all(&mut out);
    assert_eq!(out.len(), 100);
    let stats = t.stats();
    assert_eq!(stats.emitted, 100);
    assert_eq!(stats.sampled_out, 900);
    assert_eq!(stats.created, 1000);
}

#[test]
fn community_ids_of_flow_records_match_the_spec_vectors() {
    // (src, sport, dst, dport, proto, expected) for the first packet of each flow; the reply
    // direction is also fed so the originator must stay the first sender.
    let cases = [
        (
            "1.2.3.4",
            1122,
            "5.6.7.8",
            3344,
            proto::TCP,
            "1:wCb3OG7yAFWelaUydu0D+125CLM=",
        ),
        (
            "5.6.7.8",
            3344,
            "1.2.3.4",
            1122,
            proto::TCP,
            "1:wCb3OG7yAFWelaUydu0D+125CLM=",
        ),
        (
            "1.2.3.4",
            1122,
            "5.6.7.8",
            3344,
            proto::UDP,
            "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
        ),
        (
            "1.2.3.4",
            8,
            "5.6.7.8",
            0,
            proto::ICMP,
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
        ),
        (
            "5.6.7.8",
            0,
            "1.2.3.4",
            0,
            proto::ICMP,
            "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
        ),
        (
            "10.0.0.1",
            11,
            "10.0.0.2",
            0,
            proto::ICMP,
            "1:YHxtAirCG//0OzkcVAukqKQN9xM=",
        ),
        (
            "fe80:1:203:405:607:809:a0b:c0d",
            128,
            "fe80:1011:1213:1415:1617:1819:1a1b:1c1d",
            0,
            proto::ICMPV6,
            "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=",
        ),
        (
            "2001:470:e5bf:dead:4957:2174:e82c:4887",
            63943,
            "2607:f8b0:400c:c03::1a",
            25,
            proto::TCP,
            "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
        ),
        (
            "8.8.8.8",
            53,
            "192.168.1.52",
            54585,
            proto::UDP,
            "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
        ),
    ];
    for (src, sport, dst, dport, ip_proto, want) in cases {
        let mut t = table(FlowConfig::default());
        t.observe(&packet(T0, src, sport, dst, dport, ip_proto))
            .unwrap();
        let mut out = Vec::new();
        t.flush_all(&mut out);
        assert_eq!(out.len(), 1);
        let net = out[0].network.as_ref().unwrap();
        assert_eq!(
            net.community_id.as_deref(),
            Some(want),
            "{src}:{sport} -> {dst}:{dport}"
        );
    }
}

#[test]
fn icmp_echo_and_reply_are_one_flow() {
    let mut t = table(FlowConfig::default());
    let req = t
        .observe(&packet(T0, "1.2.3.4", 8, "5.6.7.8", 0, proto::ICMP))
        .unwrap();
    let rep = t
        .observe(&packet(T0 + 1, "5.6.7.8", 0, "1.2.3.4", 0, proto::ICMP))
        .unwrap();
    assert_eq!(req.id, rep.id);
    assert_eq!(rep.direction, Direction::Responder);
    let mut out = Vec::new();
    t.expire(T0 + 31 * SEC, &mut out);
    assert_eq!(out.len(), 1);
    let net = out[0].network.as_ref().unwrap();
    assert_eq!(net.transport.as_deref(), Some("icmp"));
    assert_eq!(net.packets, Some(2));
    assert_eq!(flow_details(&out[0])["state"], "OTH");
}

#[test]
fn vlans_separate_identical_five_tuples() {
    let mut t = table(FlowConfig::default());
    let mut a = tcp(T0, true, SYN, b"");
    a.vlan = Some(10);
    let mut b = tcp(T0, true, SYN, b"");
    b.vlan = Some(20);
    let c = tcp(T0, true, SYN, b"");
    let ids: Vec<_> = feed(&mut t, &[a, b, c]).iter().map(|u| u.id).collect();
    assert_ne!(ids[0], ids[1]);
    assert_ne!(ids[0], ids[2]);
    assert_ne!(ids[1], ids[2]);
    assert_eq!(t.stats().active, 3);
    let mut out = Vec::new();
    t.flush_all(&mut out);
    let mut vlans: Vec<_> = out
        .iter()
        .map(|e| flow_details(e)["vlan"].clone())
        .collect();
    vlans.sort_by_key(|v| v.as_u64());
    assert_eq!(vlans, [serde_json::Value::Null, 10.into(), 20.into()]);
}

#[test]
fn new_syn_after_close_starts_a_new_flow() {
    let mut t = table(FlowConfig::default());
    let first = feed(
        &mut t,
        &[tcp(T0, true, SYN, b""), tcp(T0 + 1, false, RST | ACK, b"")],
    );
    let retry = t.observe(&tcp(T0 + SEC, true, SYN, b"")).unwrap();
    assert!(retry.new_flow);
    assert_ne!(retry.id, first[0].id);
    let mut out = Vec::new();
    t.expire(T0 + 2 * SEC, &mut out);
    assert_eq!(out.len(), 1, "the rejected attempt");
    assert_eq!(flow_details(&out[0])["state"], "REJ");
    t.flush_all(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(flow_details(&out[1])["state"], "S0");
    assert_eq!(flow_details(&out[1])["end_reason"], "shutdown");
}

#[test]
fn a_packet_after_the_idle_timeout_starts_a_new_flow_even_without_expire() {
    let mut t = table(FlowConfig::default());
    let udp = |ts| packet(ts, "10.0.0.1", 5000, "10.0.0.2", 53, proto::UDP);
    let a = t.observe(&udp(T0)).unwrap();
    let b = t.observe(&udp(T0 + 61 * SEC)).unwrap();
    assert!(b.new_flow);
    assert_ne!(a.id, b.id);
    let mut out = Vec::new();
    t.expire(T0 + 62 * SEC, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(flow_details(&out[0])["end_reason"], "idle");
    assert_eq!(out[0].timestamp.0, T0);
}

#[test]
fn non_ip_and_fragments_are_counted_not_tracked() {
    let mut t = table(FlowConfig::default());
    assert!(t.observe(&PacketMeta::empty(T0)).is_none());
    let mut frag = packet(T0, "10.0.0.1", 0, "10.0.0.2", 0, proto::UDP);
    frag.fragment = true;
    assert!(t.observe(&frag).is_none());
    let stats = t.stats();
    assert_eq!((stats.ignored, stats.fragments, stats.active), (1, 1, 0));
}

#[test]
fn config_is_strict_and_validated() {
    let c: FlowConfig = toml::from_str("max_flows = 10\nsample_rate = 4").unwrap();
    assert_eq!(c.max_flows, 10);
    assert_eq!(c.sample_rate, 4);
    assert_eq!(c.udp_idle_timeout_secs, 60);
    assert!(c.validate().is_ok());
    assert!(toml::from_str::<FlowConfig>("flow_timeout = 3").is_err());
    let zero = FlowConfig {
        sample_rate: 0,
        ..FlowConfig::default()
    };
    assert_eq!(zero.validate().unwrap_err().field, "sample_rate");
    let no_idle = FlowConfig {
        udp_idle_timeout_secs: 0,
        ..FlowConfig::default()
    };
    assert!(no_idle
        .validate()
        .unwrap_err()
        .to_string()
        .contains("udp_idle_timeout_secs"));
}

/// Flows of every kind of ending at one tick: UDP going idle, closed TCP past the linger,
/// evictions waiting in `pending`, and long flows at the active timeout.
fn busy_table() -> (FlowTable, i64) {
    let mut t = table(FlowConfig {
        max_flows: 500,
        active_timeout_secs: 20,
        ..FlowConfig::default()
    });
    for n in 0..700u16 {
        let ts = T0 + i64::from(n) * 1_000_000;
        let mut p = packet(ts, CLIENT, 1000 + n, SERVER, 53, proto::UDP);
        t.observe(&p).unwrap();
        if n % 3 == 0 {
            // A TCP flow on the same ports, closed by FINs.
            for (flags, from_client) in [(SYN, true), (SYN | ACK, false), (FIN | ACK, true)] {
                p = packet(ts + 1, CLIENT, 1000 + n, SERVER, 80, proto::TCP);
                if !from_client {
                    p = packet(ts + 2, SERVER, 80, CLIENT, 1000 + n, proto::TCP);
                }
                p.tcp_flags = flags;
                t.observe(&p).unwrap();
            }
            let mut fin = packet(ts + 3, SERVER, 80, CLIENT, 1000 + n, proto::TCP);
            fin.tcp_flags = FIN | ACK;
            t.observe(&fin).unwrap();
        }
    }
    (t, T0 + 61 * SEC)
}

#[test]
fn expire_in_steps_emits_what_one_expire_does() {
    let (mut whole, now) = busy_table();
    let mut expected = Vec::new();
    whole.expire(now, &mut expected);
    assert!(expected.len() > 300, "{}", expected.len());

    let (mut stepped, now) = busy_table();
    let mut got = Vec::new();
    let mut steps = 0;
    loop {
        let mut batch = Vec::new();
        let done = stepped.expire_some(now, &mut batch, 64);
        assert!(batch.len() <= 64);
        got.append(&mut batch);
        steps += 1;
        if done {
            break;
        }
    }
    assert!(steps > 4, "{steps}");
    assert_eq!(got, expected);
    assert_eq!(stepped.stats(), whole.stats());
}

#[test]
fn flush_in_steps_and_uncounted_records_match_flush_all() {
    let (mut whole, _) = busy_table();
    let mut expected = Vec::new();
    whole.flush_all(&mut expected);

    let (mut stepped, _) = busy_table();
    let mut got = Vec::new();
    while !stepped.flush(&mut got, 50) {}
    assert_eq!(got, expected);
    assert_eq!(stepped.stats(), whole.stats());

    // Not building records still counts every one of them.
    let (mut counted, _) = busy_table();
    counted.set_build_records(false);
    let mut none = Vec::new();
    counted.flush_all(&mut none);
    assert!(none.is_empty());
    assert_eq!(counted.stats(), whole.stats());
    assert_eq!(counted.stats().emitted, expected.len() as u64);
}
