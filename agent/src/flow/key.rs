//! Flow identity: the direction-free [`FlowKey`] both directions of a conversation map to, and
//! the ICMP type/code to "port" mapping that lets an echo and its reply share a key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::packet::{proto, PacketMeta};

/// Which side of a flow sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The sender of the first packet seen.
    Originator,
    /// The other side.
    Responder,
}

impl Direction {
    /// 0 for the originator, 1 for the responder: the index into per-direction counters.
    pub fn index(self) -> usize {
        match self {
            Direction::Originator => 0,
            Direction::Responder => 1,
        }
    }
}

/// Whether `ip_proto` carries ports that identify a flow (and go into the community id).
pub(crate) fn has_ports(ip_proto: u8) -> bool {
    matches!(
        ip_proto,
        proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6 | SCTP
    )
}

/// SCTP, which the community id spec hashes with ports like TCP and UDP.
pub(crate) const SCTP: u8 = 132;

/// Whether `ip_proto` is the ICMP of the address family (ICMP for IPv4, ICMPv6 for IPv6).
pub(crate) fn is_icmp(ip_proto: u8, v6: bool) -> bool {
    (ip_proto == proto::ICMP && !v6) || (ip_proto == proto::ICMPV6 && v6)
}

/// The message type that answers ICMP `icmp_type`, for request/reply pairs (Zeek's
/// `ICMP4_counterpart` / `ICMP6_counterpart`, as the community id spec uses them).
fn icmp_counterpart(icmp_type: u16, v6: bool) -> Option<u16> {
    let pair = if v6 {
        match icmp_type {
            128 => 129, // echo request / reply
            129 => 128,
            130 => 131, // multicast listener query / report
            131 => 130,
            133 => 134, // router solicitation / advertisement
            134 => 133,
            135 => 136, // neighbor solicitation / advertisement
            136 => 135,
            139 => 140, // node information query / response
            140 => 139,
            144 => 145, // home agent address discovery request / reply
            145 => 144,
            _ => return None,
        }
    } else {
        match icmp_type {
            8 => 0, // echo / echo reply
            0 => 8,
            13 => 14, // timestamp / reply
            14 => 13,
            15 => 16, // information request / reply
            16 => 15,
            10 => 9, // router solicitation / advertisement
            9 => 10,
            17 => 18, // address mask request / reply
            18 => 17,
            _ => return None,
        }
    };
    Some(pair)
}

/// Maps an ICMP message to port equivalents `(sport, dport, one_way)`: a request or reply type
/// becomes `(type, counterpart type)` so both halves of the exchange share a flow; any other
/// message is `(type, code)` and one-way (its endpoints are never swapped for hashing).
pub(crate) fn icmp_ports(icmp_type: u16, code: u16, v6: bool) -> (u16, u16, bool) {
    match icmp_counterpart(icmp_type, v6) {
        Some(counterpart) => (icmp_type, counterpart, false),
        None => (icmp_type, code, true),
    }
}

/// Whether an ICMP flow whose originator "port" is `icmp_type` is a one-way message.
pub(crate) fn icmp_one_way(icmp_type: u16, v6: bool) -> bool {
    icmp_counterpart(icmp_type, v6).is_none()
}

/// Addresses in one 16-byte form so v4 and v6 keys share a layout; the family is kept beside.
pub(crate) fn ip_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Inverse of [`ip_octets`].
pub(crate) fn ip_from_octets(octets: [u8; 16], v6: bool) -> IpAddr {
    let v6_addr = Ipv6Addr::from(octets);
    if v6 {
        IpAddr::V6(v6_addr)
    } else {
        let [.., a, b, c, d] = octets;
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }
}

/// A flow's identity, the same for both directions: VLAN, IP protocol, and the two `(ip, port)`
/// endpoints with the numerically lower one first. IPv4 addresses are stored IPv4-mapped with
/// `v6 = false`, so keys of either family are the same size and compare like the community id
/// orders endpoints. ICMP "ports" are the mapped type/code (see [`FlowKey::from_packet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    lo_ip: [u8; 16],
    hi_ip: [u8; 16],
    lo_port: u16,
    hi_port: u16,
    vlan: Option<u16>,
    ip_proto: u8,
    v6: bool,
}

impl FlowKey {
    /// The key of `p`'s flow and whether `p`'s source is the key's lower endpoint; `None` for
    /// packets that belong to no flow: non-IP (ARP), mixed address families, and non-first
    /// fragments (no transport header, so no ports). Ports of protocols without ports are
    /// ignored; ICMP type/code become ports as in the community id spec.
    pub fn from_packet(p: &PacketMeta<'_>) -> Option<(FlowKey, bool)> {
        if p.fragment {
            return None;
        }
        let (src, dst) = (p.src_ip?, p.dst_ip?);
        let v6 = match (src, dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => false,
            (IpAddr::V6(_), IpAddr::V6(_)) => true,
            _ => return None,
        };
        let (sport, dport) = if is_icmp(p.ip_proto, v6) {
            let (sport, dport, _) = icmp_ports(p.src_port, p.dst_port, v6);
            (sport, dport)
        } else if has_ports(p.ip_proto) {
            (p.src_port, p.dst_port)
        } else {
            (0, 0)
        };
        let (src, dst) = (ip_octets(src), ip_octets(dst));
        // Big-endian integers order like the byte arrays, in two compares instead of a memcmp.
        let src_is_lo = (u128::from_be_bytes(src), sport) <= (u128::from_be_bytes(dst), dport);
        let ((lo_ip, lo_port), (hi_ip, hi_port)) = if src_is_lo {
            ((src, sport), (dst, dport))
        } else {
            ((dst, dport), (src, sport))
        };
        let key = FlowKey {
            lo_ip,
            hi_ip,
            lo_port,
            hi_port,
            vlan: p.vlan,
            ip_proto: p.ip_proto,
            v6,
        };
        Some((key, src_is_lo))
    }

    /// The lower `(ip, port)` endpoint.
    pub fn lo(&self) -> (IpAddr, u16) {
        (ip_from_octets(self.lo_ip, self.v6), self.lo_port)
    }

    /// The higher `(ip, port)` endpoint.
    pub fn hi(&self) -> (IpAddr, u16) {
        (ip_from_octets(self.hi_ip, self.v6), self.hi_port)
    }

    /// Outer VLAN id, if tagged.
    pub fn vlan(&self) -> Option<u16> {
        self.vlan
    }

    /// IP protocol number.
    pub fn ip_proto(&self) -> u8 {
        self.ip_proto
    }

    /// True for IPv6.
    pub fn is_v6(&self) -> bool {
        self.v6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(src: &str, sport: u16, dst: &str, dport: u16, ip_proto: u8) -> PacketMeta<'static> {
        let mut p = PacketMeta::empty(0);
        p.src_ip = Some(src.parse().unwrap());
        p.dst_ip = Some(dst.parse().unwrap());
        p.src_port = sport;
        p.dst_port = dport;
        p.ip_proto = ip_proto;
        p
    }

    #[test]
    fn both_directions_give_the_same_key() {
        let (a, a_lo) =
            FlowKey::from_packet(&packet("10.0.0.2", 80, "10.0.0.1", 5000, proto::TCP)).unwrap();
        let (b, b_lo) =
            FlowKey::from_packet(&packet("10.0.0.1", 5000, "10.0.0.2", 80, proto::TCP)).unwrap();
        assert_eq!(a, b);
        assert!(!a_lo);
        assert!(b_lo);
        assert_eq!(a.lo(), ("10.0.0.1".parse().unwrap(), 5000));
        assert_eq!(a.hi(), ("10.0.0.2".parse().unwrap(), 80));
    }

    #[test]
    fn icmp_echo_and_reply_share_a_key_but_unreachable_does_not() {
        let (echo, _) =
            FlowKey::from_packet(&packet("1.2.3.4", 8, "5.6.7.8", 0, proto::ICMP)).unwrap();
        let (reply, _) =
            FlowKey::from_packet(&packet("5.6.7.8", 0, "1.2.3.4", 0, proto::ICMP)).unwrap();
        let (unreach, _) =
            FlowKey::from_packet(&packet("5.6.7.8", 3, "1.2.3.4", 1, proto::ICMP)).unwrap();
        assert_eq!(echo, reply);
        assert_ne!(echo, unreach);
    }

    #[test]
    fn non_ip_mixed_families_and_fragments_have_no_key() {
        assert!(FlowKey::from_packet(&PacketMeta::empty(0)).is_none());
        assert!(FlowKey::from_packet(&packet("1.2.3.4", 1, "::1", 2, proto::UDP)).is_none());
        let mut frag = packet("1.2.3.4", 0, "5.6.7.8", 0, proto::UDP);
        frag.fragment = true;
        assert!(FlowKey::from_packet(&frag).is_none());
    }

    #[test]
    fn ports_of_portless_protocols_are_ignored() {
        let (a, _) = FlowKey::from_packet(&packet("1.2.3.4", 7, "5.6.7.8", 9, 47)).unwrap();
        assert_eq!(a.lo().1, 0);
        assert_eq!(a.hi().1, 0);
    }

    #[test]
    fn v4_addresses_round_trip() {
        let (k, _) =
            FlowKey::from_packet(&packet("192.0.2.1", 1, "192.0.2.2", 2, proto::UDP)).unwrap();
        assert!(!k.is_v6());
        assert_eq!(k.lo().0, "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
