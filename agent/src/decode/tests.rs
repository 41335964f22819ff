//! Whole-packet tests of [`decode`]: every layer of real-shaped frames, truncation at every byte,
//! and pseudo-random and mutated input that must never panic.

use std::collections::HashSet;

use super::build::{self, HelloSpec};
use super::ip::proto;
use super::*;

fn tls_frame(hello: &HelloSpec) -> Vec<u8> {
    let seg = build::tcp(
        51000,
        443,
        build::PSH | build::ACK,
        &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        &hello.record(),
    );
    build::eth(ETHERTYPE_IPV4, &build::ipv4(proto::TCP, &seg))
}

fn dns_frame() -> Vec<u8> {
    build::eth_vlan(
        &[(0x8100, 10)],
        ETHERTYPE_IPV4,
        &build::ipv4_udp_dns_query(),
    )
}

fn arp_frame() -> Vec<u8> {
    build::eth(ETHERTYPE_ARP, &build::arp())
}

fn ipv6_http_frame() -> Vec<u8> {
    let request =
        b"GET /login HTTP/1.1\r\nHost: intranet.example\r\nUser-Agent: probe-test\r\n\r\n";
    let seg = build::tcp(50000, 80, build::PSH | build::ACK, &[], request);
    let exts = [build::ext(proto::HOPOPT, &[1, 4, 0, 0, 0, 0])];
    build::eth(ETHERTYPE_IPV6, &build::ipv6_chain(&exts, proto::TCP, &seg))
}

fn dns_response_frame() -> Vec<u8> {
    let seg = build::udp(53, 53000, &build::dns_response());
    build::eth(ETHERTYPE_IPV4, &build::ipv4(proto::UDP, &seg))
}

fn icmp_frame() -> Vec<u8> {
    build::eth(
        ETHERTYPE_IPV4,
        &build::ipv4(proto::ICMP, &build::icmp(8, 0, &[0, 1, 0, 2])),
    )
}

/// Every well-formed frame the tests build, with its link type.
fn valid_frames() -> Vec<(LinkType, Vec<u8>)> {
    vec![
        (LinkType::Ethernet, tls_frame(&build::small_hello())),
        (LinkType::Ethernet, dns_frame()),
        (LinkType::Ethernet, dns_response_frame()),
        (LinkType::Ethernet, arp_frame()),
        (LinkType::Ethernet, ipv6_http_frame()),
        (LinkType::Ethernet, icmp_frame()),
        (
            LinkType::LinuxSll,
            build::sll(0, ETHERTYPE_IPV4, &build::ipv4_udp_dns_query()),
        ),
        (
            LinkType::RawIp,
            build::ipv6_tcp(&[2, 4, 5, 0xa0], b"HTTP/1.1 200 OK\r\n\r\n"),
        ),
    ]
}

#[test]
fn tls_client_hello_over_tcp_decodes_every_layer() {
    let frame = tls_frame(&build::small_hello());
    let d = decode(LinkType::Ethernet, &frame);
    assert_eq!(d.malformed, None);
    assert_eq!(d.len, frame.len());
    assert_eq!(d.ether_type, Some(ETHERTYPE_IPV4));
    let tuple = d.five_tuple().unwrap();
    assert_eq!(
        tuple,
        FiveTuple {
            src: build::SRC_V4,
            dst: build::DST_V4,
            src_port: 51000,
            dst_port: 443,
            protocol: proto::TCP
        }
    );
    let Some(L4::Tcp(tcp)) = d.l4 else {
        panic!("no tcp: {d:?}")
    };
    assert!(tcp.flags.contains(TcpFlags::PSH | TcpFlags::ACK));
    assert_eq!(tcp.options().map(|o| o.kind).collect::<Vec<_>>(), [1, 1, 8]);
    let Some(App::TlsClientHello(hello)) = d.app else {
        panic!("no hello: {d:?}")
    };
    assert_eq!(hello.server_name, Some("example.com"));
    assert_eq!(
        hello.supported_versions.iter().collect::<Vec<_>>(),
        [0x0304, 0x0303]
    );
    assert!(hello.ja4().starts_with("t13d0306h2_"));
    assert_eq!(hello.ja3().hash.len(), 32);
}

#[test]
fn client_hello_split_over_segments_is_reported_partial() {
    let record = build::small_hello().record();
    let seg = build::tcp(51000, 443, build::ACK, &[], &record[..40]);
    let packet = build::ipv4(proto::TCP, &seg);
    let d = decode(LinkType::RawIp, &packet);
    assert_eq!(
        d.app,
        Some(App::TlsClientHelloPartial {
            needed: record.len()
        })
    );
    assert_eq!(d.malformed, None);
}

#[test]
fn dns_query_over_vlan_decodes_every_layer() {
    let frame = dns_frame();
    let d = decode(LinkType::Ethernet, &frame);
    assert_eq!(d.malformed, None);
    assert_eq!(d.vlan, [Some(10), None]);
    let Some(App::Dns(dns)) = &d.app else {
        panic!("no dns: {d:?}")
    };
    assert_eq!(dns.questions[0].name, "www.example.com");
    assert_eq!(d.five_tuple().unwrap().dst_port, 53);
}

#[test]
fn http_request_over_ipv6_decodes_every_layer() {
    let frame = ipv6_http_frame();
    let d = decode(LinkType::Ethernet, &frame);
    assert_eq!(d.malformed, None);
    assert_eq!(d.ip.unwrap().version, IpVersion::V6);
    let Some(App::Http(Http::Request(req))) = d.app else {
        panic!("no http: {d:?}")
    };
    assert_eq!((req.method, req.target), ("GET", "/login"));
    assert_eq!(
        (req.host, req.user_agent),
        (Some("intranet.example"), Some("probe-test"))
    );
}

#[test]
fn http_response_is_recognised_on_any_port() {
    let packet = build::ipv6_tcp(
        &[],
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: /\r\n\r\n",
    );
    let d = decode(LinkType::RawIp, &packet);
    let Some(App::Http(Http::Response(resp))) = d.app else {
        panic!("no http: {d:?}")
    };
    assert_eq!(resp.status, 301);
}

#[test]
fn bad_application_data_is_malformed_with_lower_layers_kept() {
    let seg = build::udp(53000, 53, &[0; 5]);
    let packet = build::ipv4(proto::UDP, &seg);
    let d = decode(LinkType::RawIp, &packet);
    assert_eq!(d.malformed, Some(Malformed::BadDns));
    assert!(d.l4.is_some() && d.app.is_none());

    let seg = build::tcp(1, 80, build::ACK, &[], b"GET / HTTP/9.9\r\n");
    let packet = build::ipv4(proto::TCP, &seg);
    let d = decode(LinkType::RawIp, &packet);
    assert_eq!(d.malformed, Some(Malformed::BadHttp));
    assert!(d.l4.is_some());
}

/// Each prefix of a complete frame must decode without panicking and say it is malformed; the
/// whole frame must decode cleanly.
fn assert_every_truncation_is_malformed(link: LinkType, frame: &[u8]) {
    assert_eq!(decode(link, frame).malformed, None, "{frame:02x?}");
    for len in 0..frame.len() {
        let d = decode(link, &frame[..len]);
        assert!(
            d.malformed.is_some(),
            "prefix of {len}/{} bytes decoded as whole: {d:?}",
            frame.len()
        );
    }
}

#[test]
fn truncation_at_every_byte_of_tcp_tls_is_malformed() {
    assert_every_truncation_is_malformed(LinkType::Ethernet, &tls_frame(&build::small_hello()));
}

#[test]
fn truncation_at_every_byte_of_udp_dns_is_malformed() {
    assert_every_truncation_is_malformed(LinkType::Ethernet, &dns_frame());
    assert_every_truncation_is_malformed(LinkType::Ethernet, &dns_response_frame());
}

#[test]
fn truncation_at_every_byte_of_arp_is_malformed() {
    assert_every_truncation_is_malformed(LinkType::Ethernet, &arp_frame());
}

#[test]
fn truncation_at_every_byte_of_ipv6_is_malformed() {
    assert_every_truncation_is_malformed(LinkType::Ethernet, &ipv6_http_frame());
    assert_every_truncation_is_malformed(
        LinkType::LinuxSll,
        &build::sll(0, ETHERTYPE_IPV6, &build::ipv6_tcp(&[], b"")),
    );
}

#[test]
fn cutting_the_application_data_in_a_consistent_packet_never_panics() {
    // Here the IP and UDP/TCP lengths agree with the shortened data, so only the application
    // parser sees the cut: DNS must call it malformed, TLS a partial record.
    let msg = build::dns_response();
    for len in 1..msg.len() {
        let seg = build::udp(53, 40000, &msg[..len]);
        let packet = build::ipv4(proto::UDP, &seg);
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.malformed, Some(Malformed::BadDns), "DNS cut at {len}");
    }
    let record = build::small_hello().record();
    for len in 5..record.len() {
        let seg = build::tcp(40000, 443, build::ACK, &[], &record[..len]);
        let packet = build::ipv4(proto::TCP, &seg);
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(
            d.app,
            Some(App::TlsClientHelloPartial {
                needed: record.len()
            }),
            "TLS cut at {len}"
        );
    }
}

#[test]
fn pseudo_random_buffers_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_dec0de);
    let mut buf = Vec::with_capacity(2048);
    let mut stats = DecodeStats::default();
    for _ in 0..200_000 {
        let len = match rng.u8(..) {
            0..=127 => rng.usize(..64),
            128..=239 => rng.usize(..600),
            _ => rng.usize(..2048),
        };
        buf.clear();
        buf.extend((0..len).map(|_| rng.u8(..)));
        // Nudge a share of buffers past the first layers so the deeper parsers see them too.
        if len > 40 && rng.bool() {
            buf[0] = if rng.bool() { 0x45 } else { 0x60 };
        }
        fuzzing::packet_decode(&buf);
        stats.record(&decode(LinkType::RawIp, &buf));
    }
    assert_eq!(stats.packets, 200_000);
    assert!(stats.malformed_total() > 0);
}

#[test]
fn mutations_of_valid_packets_never_panic() {
    let mut rng = fastrand::Rng::with_seed(42);
    let frames = valid_frames();
    let mut stats = DecodeStats::default();
    let mut buf = Vec::new();
    for _ in 0..200_000 {
        let (link, frame) = &frames[rng.usize(..frames.len())];
        buf.clear();
        buf.extend_from_slice(frame);
        for _ in 0..rng.usize(1..=4) {
            let at = rng.usize(..buf.len().max(1));
            match rng.u8(..6) {
                0 => buf.truncate(at),
                1 if !buf.is_empty() => {
                    buf.remove(at);
                }
                2 => buf.insert(at.min(buf.len()), rng.u8(..)),
                // Interesting values: lengths, counts and offsets near their limits.
                3 if at < buf.len() => buf[at] = [0, 1, 0x7f, 0x80, 0xc0, 0xff][rng.usize(..6)],
                _ if at < buf.len() => buf[at] ^= 1 << rng.u8(..8),
                _ => {}
            }
        }
        let d = decode(*link, &buf);
        stats.record(&d);
        if let Some(App::TlsClientHello(hello)) = &d.app {
            let _ = (hello.ja3(), hello.ja4());
        }
    }
    // The mutations must have reached the application parsers, not only broken the headers.
    assert!(
        stats.dns > 1000 && stats.tls_client_hello > 1000 && stats.http > 1000,
        "{stats:?}"
    );
    assert!(stats.malformed(Malformed::BadDns) > 0 && stats.malformed(Malformed::BadTls) > 0);
}

#[test]
fn stats_count_protocols_fragments_and_malformed_reasons() {
    let mut stats = DecodeStats::default();
    let mut total_bytes = 0;
    for (link, frame) in valid_frames() {
        stats.record(&decode(link, &frame));
        total_bytes += frame.len() as u64;
    }
    let fragment = build::ipv4_with(proto::UDP, &[], 9, 5, &[0; 16]);
    stats.record(&decode(LinkType::RawIp, &fragment));
    stats.record(&decode(LinkType::Ethernet, &[0; 10]));
    stats.record(&decode(LinkType::Ethernet, &[0; 13]));

    assert_eq!(stats.packets, 11);
    assert_eq!(stats.bytes, total_bytes + fragment.len() as u64 + 10 + 13);
    assert_eq!((stats.vlan, stats.arp), (1, 1));
    assert_eq!((stats.ipv4, stats.ipv6, stats.ipv4_fragments), (6, 2, 1));
    assert_eq!((stats.tcp, stats.udp, stats.icmp), (3, 3, 1));
    assert_eq!((stats.dns, stats.http, stats.tls_client_hello), (3, 2, 1));
    assert_eq!(stats.malformed(Malformed::TruncatedEthernet), 2);
    assert_eq!(stats.malformed_total(), 2);

    let mut merged = stats.clone();
    merged.merge(&stats);
    assert_eq!(merged.packets, 22);
    assert_eq!(merged.malformed(Malformed::TruncatedEthernet), 4);
    let named: Vec<(&str, u64)> = merged
        .malformed_counts()
        .filter(|&(_, n)| n > 0)
        .map(|(m, n)| (m.name(), n))
        .collect();
    assert_eq!(named, [("truncated_ethernet", 4)]);
}

#[test]
fn malformed_reasons_have_unique_names_and_indexes() {
    let names: HashSet<&str> = Malformed::ALL.iter().map(|m| m.name()).collect();
    assert_eq!(names.len(), Malformed::ALL.len());
    for (i, m) in Malformed::ALL.iter().enumerate() {
        assert_eq!(m.index(), i);
        assert_eq!(m.to_string(), m.name());
    }
}

#[test]
fn decoding_the_common_path_borrows_from_the_packet() {
    let frame = tls_frame(&build::small_hello());
    let d = decode(LinkType::Ethernet, &frame);
    let payload = d.payload().unwrap();
    let range = frame.as_ptr_range();
    assert!(range.contains(&payload.as_ptr()));
    let Some(App::TlsClientHello(hello)) = d.app else {
        panic!("no hello")
    };
    assert!(range.contains(&hello.server_name.unwrap().as_ptr()));
}
