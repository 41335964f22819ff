//! Test-only packet builder: assembles frames layer by layer with correct lengths, so tests
//! state only the fields they care about.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ip::proto;
use super::TcpFlags;

pub const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const SRC_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
pub const DST_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
pub const SRC_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
pub const DST_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

pub const SYN: TcpFlags = TcpFlags::SYN;
pub const ACK: TcpFlags = TcpFlags::ACK;
pub const PSH: TcpFlags = TcpFlags::PSH;

fn be16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub fn eth(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    eth_vlan(&[], ether_type, payload)
}

/// An Ethernet frame with `(tpid, tci)` tags, outermost first.
pub fn eth_vlan(tags: &[(u16, u16)], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = [DST_MAC, SRC_MAC].concat();
    for &(tpid, tci) in tags {
        be16(&mut f, tpid);
        be16(&mut f, tci);
    }
    be16(&mut f, ether_type);
    f.extend_from_slice(payload);
    f
}

pub fn sll(packet_type: u16, ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    be16(&mut f, packet_type);
    be16(&mut f, 1); // ARPHRD_ETHER
    be16(&mut f, 6);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[0, 0]);
    be16(&mut f, ether_type);
    f.extend_from_slice(payload);
    f
}

pub fn sll2(packet_type: u8, ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    be16(&mut f, ether_type);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 3]); // reserved, ifindex 3
    be16(&mut f, 1); // ARPHRD_ETHER
    f.extend_from_slice(&[packet_type, 6]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

pub fn arp() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&SRC_MAC);
    a.extend_from_slice(&[192, 168, 1, 10]);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&[192, 168, 1, 1]);
    a
}

pub fn ipv4(protocol: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(protocol, &[], 0x4242, 0x4000, payload)
}

/// An IPv4 packet with `options` (a multiple of 4 bytes) and the raw flags/offset word.
pub fn ipv4_with(
    protocol: u8,
    options: &[u8],
    id: u16,
    flags_offset: u16,
    payload: &[u8],
) -> Vec<u8> {
    let header_len = 20 + options.len();
    let mut p = vec![0x40 | (header_len / 4) as u8, 0];
    be16(&mut p, (header_len + payload.len()) as u16);
    be16(&mut p, id);
    be16(&mut p, flags_offset);
    p.extend_from_slice(&[64, protocol, 0, 0]);
    p.extend_from_slice(&octets(SRC_V4));
    p.extend_from_slice(&octets(DST_V4));
    p.extend_from_slice(options);
    p.extend_from_slice(payload);
    p
}

/// An IPv6 extension header; its next-header byte is filled in by [`ipv6_chain`].
#[derive(Debug, Clone)]
pub struct Ext {
    kind: u8,
    bytes: Vec<u8>,
}

/// A hop-by-hop, routing or destination-options header with `body` after its two first bytes
/// (`body.len() + 2` a multiple of 8).
pub fn ext(kind: u8, body: &[u8]) -> Ext {
    let units = (body.len() + 2) / 8 - 1;
    Ext {
        kind,
        bytes: [&[0, units as u8][..], body].concat(),
    }
}

/// An authentication header with `body` after its two first bytes (`body.len() + 2` a multiple
/// of 4).
pub fn ah(body: &[u8]) -> Ext {
    let words = (body.len() + 2) / 4 - 2;
    Ext {
        kind: proto::AH,
        bytes: [&[0, words as u8][..], body].concat(),
    }
}

pub fn frag6(offset: u16, more: bool, id: u32) -> Ext {
    let mut bytes = vec![0, 0];
    be16(&mut bytes, offset | u16::from(more));
    bytes.extend_from_slice(&id.to_be_bytes());
    Ext {
        kind: proto::FRAGMENT,
        bytes,
    }
}

/// An IPv6 packet: the extension headers in order, then `payload` of protocol `upper`.
pub fn ipv6_chain(exts: &[Ext], upper: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(upper, |n| n.kind);
        body.push(next);
        body.extend_from_slice(&e.bytes[1..]);
    }
    body.extend_from_slice(payload);
    let first = exts.first().map_or(upper, |e| e.kind);
    let mut p = vec![0x60, 0, 0, 0];
    be16(&mut p, body.len() as u16);
    p.extend_from_slice(&[first, 64]);
    p.extend_from_slice(&octets(SRC_V6));
    p.extend_from_slice(&octets(DST_V6));
    p.extend_from_slice(&body);
    p
}

pub fn ipv6_tcp(options: &[u8], payload: &[u8]) -> Vec<u8> {
    let seg = tcp(40000, 443, SYN, options, payload);
    ipv6_chain(&[], proto::TCP, &seg)
}

/// A TCP segment (seq 1000, ack 2000, window 65535); options are padded to 4 bytes.
pub fn tcp(src: u16, dst: u16, flags: TcpFlags, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut options = options.to_vec();
    options.resize(options.len().div_ceil(4) * 4, 0);
    let mut s = Vec::new();
    be16(&mut s, src);
    be16(&mut s, dst);
    s.extend_from_slice(&1000u32.to_be_bytes());
    s.extend_from_slice(&2000u32.to_be_bytes());
    let words = (20 + options.len()) / 4;
    be16(&mut s, ((words as u16) << 12) | flags.0);
    be16(&mut s, 65535);
    s.extend_from_slice(&[0, 0, 0, 0]);
    s.extend_from_slice(&options);
    s.extend_from_slice(payload);
    s
}

pub fn udp(src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    be16(&mut d, src);
    be16(&mut d, dst);
    be16(&mut d, (8 + payload.len()) as u16);
    be16(&mut d, 0);
    d.extend_from_slice(payload);
    d
}

pub fn icmp(icmp_type: u8, code: u8, body: &[u8]) -> Vec<u8> {
    [&[icmp_type, code, 0, 0][..], body].concat()
}

pub fn dns_header(id: u16, flags: u16, questions: u16, answers: u16) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [id, flags, questions, answers, 0, 0] {
        be16(&mut m, v);
    }
    m
}

pub fn dns_name(name: &str) -> Vec<u8> {
    let mut n = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        n.push(label.len() as u8);
        n.extend_from_slice(label.as_bytes());
    }
    n.push(0);
    n
}

pub fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = dns_header(id, 0x0100, 1, 0);
    m.extend_from_slice(&dns_name(name));
    be16(&mut m, qtype);
    be16(&mut m, 1);
    m
}

fn dns_record(m: &mut Vec<u8>, name: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) {
    m.extend_from_slice(name);
    be16(m, rtype);
    be16(m, 1);
    m.extend_from_slice(&ttl.to_be_bytes());
    be16(m, rdata.len() as u16);
    m.extend_from_slice(rdata);
}

/// A response to `www.example.com A` whose answers use compression the way servers do:
/// CNAME to web.example.com, its A and AAAA, then TXT and MX records for example.com.
pub fn dns_response() -> Vec<u8> {
    let mut m = dns_header(0x1234, 0x8180, 1, 5);
    m.extend_from_slice(&dns_name("www.example.com")); // at 12; "example.com" at 16
    be16(&mut m, 1);
    be16(&mut m, 1);
    let www = [0xc0, 12];
    let example = [0xc0, 16];
    let web_at = m.len() + 12; // where the CNAME's data will start
    dns_record(&mut m, &www, 5, 300, &[3, b'w', b'e', b'b', 0xc0, 16]);
    let web = [0xc0, web_at as u8];
    dns_record(&mut m, &web, 1, 60, &[93, 184, 216, 34]);
    let v6: Ipv6Addr = "2606:2800:220:1::1"
        .parse()
        .unwrap_or(Ipv6Addr::UNSPECIFIED);
    dns_record(&mut m, &web, 28, 60, &v6.octets());
    dns_record(&mut m, &example, 16, 3600, b"\x05hello\x00\x03abc");
    dns_record(
        &mut m,
        &example,
        15,
        3600,
        &[0, 10, 4, b'm', b'a', b'i', b'l', 0xc0, 16],
    );
    m
}

/// IPv4/UDP carrying a DNS query for `www.example.com A`.
pub fn ipv4_udp_dns_query() -> Vec<u8> {
    let msg = dns_query(0xbeef, "www.example.com", 1);
    ipv4(proto::UDP, &udp(53000, 53, &msg))
}

/// A ClientHello to assemble into a TLS record.
#[derive(Debug, Clone)]
pub struct HelloSpec {
    pub record_version: u16,
    pub version: u16,
    pub session_id: Vec<u8>,
    pub ciphers: Vec<u16>,
    pub extensions: Vec<(u16, Vec<u8>)>,
}

impl HelloSpec {
    /// The TLS record holding this ClientHello.
    pub fn record(&self) -> Vec<u8> {
        let mut h = Vec::new();
        be16(&mut h, self.version);
        h.extend_from_slice(&[0x65; 32]);
        h.push(self.session_id.len() as u8);
        h.extend_from_slice(&self.session_id);
        h.extend_from_slice(&u16s16(&self.ciphers));
        h.extend_from_slice(&[1, 0]);
        let mut exts = Vec::new();
        for (kind, data) in &self.extensions {
            be16(&mut exts, *kind);
            exts.extend_from_slice(&prefixed16(data));
        }
        h.extend_from_slice(&prefixed16(&exts));
        let mut hs = vec![1];
        hs.extend_from_slice(&(h.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&h);
        let mut record = vec![22];
        be16(&mut record, self.record_version);
        record.extend_from_slice(&prefixed16(&hs));
        record
    }
}

pub fn prefixed16(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    be16(&mut v, bytes.len() as u16);
    v.extend_from_slice(bytes);
    v
}

pub fn u16s16(values: &[u16]) -> Vec<u8> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    prefixed16(&bytes)
}

pub fn u16s8(values: &[u16]) -> Vec<u8> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    [&[bytes.len() as u8][..], &bytes].concat()
}

pub fn alpn(names: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.push(name.len() as u8);
        list.extend_from_slice(name);
    }
    prefixed16(&list)
}

pub fn sni(host: &str) -> Vec<u8> {
    sni_bytes(host.as_bytes())
}

pub fn sni_bytes(host: &[u8]) -> Vec<u8> {
    let mut entry = vec![0];
    entry.extend_from_slice(&prefixed16(host));
    prefixed16(&entry)
}

/// A small TLS 1.3-style ClientHello with SNI `example.com` and ALPN h2, http/1.1.
pub fn small_hello() -> HelloSpec {
    HelloSpec {
        record_version: 0x0301,
        version: 0x0303,
        session_id: vec![7; 32],
        ciphers: vec![0x1a1a, 0x1301, 0x1302, 0xc02b],
        extensions: vec![
            (0, sni("example.com")),
            (16, alpn(&[b"h2", b"http/1.1"])),
            (10, u16s16(&[29, 23])),
            (11, vec![1, 0]),
            (13, u16s16(&[0x0403, 0x0804])),
            (43, u16s8(&[0x0304, 0x0303])),
        ],
    }
}
