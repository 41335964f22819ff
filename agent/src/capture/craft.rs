//! Builds Ethernet frames (IPv4/IPv6 TCP and UDP, ARP) and DNS queries with correct lengths and
//! checksums, for tests and generated benchmark captures. MAC addresses are derived from the IP
//! (`02:00:` + the last four bytes) unless given, so a host keeps one MAC throughout a capture.

use std::net::{IpAddr, Ipv4Addr};

/// TCP FIN.
pub const FIN: u8 = 0x01;
/// TCP SYN.
pub const SYN: u8 = 0x02;
/// TCP RST.
pub const RST: u8 = 0x04;
/// TCP PSH.
pub const PSH: u8 = 0x08;
/// TCP ACK.
pub const ACK: u8 = 0x10;
/// TCP URG.
pub const URG: u8 = 0x20;

/// An IP address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Address.
    pub ip: IpAddr,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// An endpoint.
    pub fn new(ip: impl Into<IpAddr>, port: u16) -> Self {
        Endpoint {
            ip: ip.into(),
            port,
        }
    }
}

/// The MAC this module gives an IP.
pub fn mac_for(ip: IpAddr) -> [u8; 6] {
    let o = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let b = v6.octets();
            [b[12], b[13], b[14], b[15]]
        }
    };
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    let mut odd: Option<u8> = None;
    for chunk in chunks {
        for &b in *chunk {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet(src: [u8; 6], dst: [u8; 6], ether_type: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + body.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn ip_frame(src: IpAddr, dst: IpAddr, proto: u8, l4: &mut [u8], checksum_at: usize) -> Vec<u8> {
    let len = l4.len();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let pseudo = [
                &s.octets()[..],
                &d.octets()[..],
                &[0, proto],
                &(len as u16).to_be_bytes(),
            ]
            .concat();
            let c = checksum(&[&pseudo, l4]);
            l4[checksum_at..checksum_at + 2].copy_from_slice(&c.to_be_bytes());
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
            h[6] = 0x40; // don't fragment
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let hc = checksum(&[&h]);
            h[10..12].copy_from_slice(&hc.to_be_bytes());
            ethernet(mac_for(src), mac_for(dst), 0x0800, &[&h[..], l4].concat())
        }
        _ => {
            let (s, d) = (v6(src), v6(dst));
            let pseudo = [
                &s[..],
                &d[..],
                &(len as u32).to_be_bytes(),
                &[0, 0, 0, proto],
            ]
            .concat();
            let c = checksum(&[&pseudo, l4]);
            l4[checksum_at..checksum_at + 2].copy_from_slice(&c.to_be_bytes());
            let mut h = [0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&s);
            h[24..40].copy_from_slice(&d);
            ethernet(mac_for(src), mac_for(dst), 0x86dd, &[&h[..], l4].concat())
        }
    }
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A TCP segment in an Ethernet frame.
pub fn tcp(src: Endpoint, dst: Endpoint, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 20 + payload.len()];
    l4[0..2].copy_from_slice(&src.port.to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port.to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&ack.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
    l4[20..].copy_from_slice(payload);
    ip_frame(src.ip, dst.ip, 6, &mut l4, 16)
}

/// A UDP datagram in an Ethernet frame.
pub fn udp(src: Endpoint, dst: Endpoint, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + payload.len()];
    l4[0..2].copy_from_slice(&src.port.to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port.to_be_bytes());
    l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4[8..].copy_from_slice(payload);
    ip_frame(src.ip, dst.ip, 17, &mut l4, 6)
}

/// An ARP packet (op 1 request, 2 reply) in an Ethernet frame (broadcast for requests).
pub fn arp(
    op: u16,
    sender_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&0x0800u16.to_be_bytes());
    b.push(6);
    b.push(4);
    b.extend_from_slice(&op.to_be_bytes());
    b.extend_from_slice(&sender_mac);
    b.extend_from_slice(&sender_ip.octets());
    b.extend_from_slice(&target_mac);
    b.extend_from_slice(&target_ip.octets());
    let dst = if op == 1 { [0xff; 6] } else { target_mac };
    ethernet(sender_mac, dst, 0x0806, &b)
}

/// A DNS query message (one question, recursion desired).
pub fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(18 + name.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&0x0100u16.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let l = &label.as_bytes()[..label.len().min(63)];
        m.push(l.len() as u8);
        m.extend_from_slice(l);
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify() {
        let f = tcp(
            Endpoint::new(Ipv4Addr::new(192, 0, 2, 1), 1234),
            Endpoint::new(Ipv4Addr::new(192, 0, 2, 2), 80),
            SYN,
            7,
            0,
            b"hello",
        );
        // IPv4 header checksum over the header sums to zero.
        assert_eq!(checksum(&[&f[14..34]]), 0);
        assert_eq!(f.len(), 14 + 20 + 20 + 5);
        let q = dns_query(1, "www.example.com", 1);
        assert_eq!(q.len(), 12 + 17 + 4);
    }
}
