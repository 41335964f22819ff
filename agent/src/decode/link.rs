//! The link layer: pcap link types, Ethernet II, Linux cooked capture (SLL and SLL2), raw IP,
//! 802.1Q/802.1ad VLAN tags, and ARP.

use std::fmt;
use std::net::Ipv4Addr;

use super::reader::Reader;
use super::{Decoded, Malformed, ETHERTYPE_IPV4, ETHERTYPE_IPV6};

/// How the captured bytes start, from the pcap link type (DLT) of the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet II (DLT 1).
    Ethernet,
    /// Linux cooked capture v1 (DLT 113), what `tcpdump -i any` writes.
    LinuxSll,
    /// Linux cooked capture v2 (DLT 276).
    LinuxSll2,
    /// Raw IPv4 or IPv6, the version told by the first nibble (DLT 12, 14, 101, 228, 229).
    RawIp,
}

impl LinkType {
    /// The link type for a pcap/libpcap DLT value, or `None` if the decoder does not read it.
    pub fn from_dlt(dlt: u32) -> Option<LinkType> {
        match dlt {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            // 12 and 14 are DLT_RAW on different BSDs; 101 is LINKTYPE_RAW; 228/229 are
            // IPv4-only and IPv6-only raw IP, which the version nibble tells apart anyway.
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            _ => None,
        }
    }
}

/// A 48-bit hardware address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The link-layer header of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkHeader {
    /// No link header: raw IP, or the header did not parse.
    None,
    /// An Ethernet II header.
    Ethernet {
        /// Destination address.
        dst: MacAddr,
        /// Source address.
        src: MacAddr,
    },
    /// A Linux cooked-capture header (SLL or SLL2).
    Sll {
        /// Direction as Linux saw it: 0 to us, 1 broadcast, 2 multicast, 3 to another host,
        /// 4 sent by us.
        packet_type: u16,
        /// ARPHRD_ hardware type of the interface (1 Ethernet, 772 loopback, …).
        hardware_type: u16,
        /// The sender's hardware address when it is 6 bytes long.
        src: Option<MacAddr>,
    },
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// Operation: 1 request, 2 reply (3/4 RARP).
    pub op: u16,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

const VLAN_CTAG: u16 = 0x8100;
const VLAN_STAG: u16 = 0x88a8;
/// The pre-standard QinQ outer tag some switches still send.
const VLAN_QINQ_LEGACY: u16 = 0x9100;
/// EtherType values below this are 802.3 length fields, not protocols.
const MIN_ETHERTYPE: u16 = 0x0600;

const ARP_HTYPE_ETHERNET: u16 = 1;

/// Reads the link header (into `out`) and any VLAN tags; returns the network-layer EtherType and
/// bytes, or `None` for frames that carry no EtherType (802.3/LLC).
pub(crate) fn decode<'a>(
    link: LinkType,
    data: &'a [u8],
    out: &mut Decoded<'a>,
) -> Result<Option<(u16, &'a [u8])>, Malformed> {
    let mut r = Reader::new(data);
    let ether_type = match link {
        LinkType::Ethernet => {
            let dst = r.array().ok_or(Malformed::TruncatedEthernet)?;
            let src = r.array().ok_or(Malformed::TruncatedEthernet)?;
            let ether_type = r.u16().ok_or(Malformed::TruncatedEthernet)?;
            out.link = LinkHeader::Ethernet {
                dst: MacAddr(dst),
                src: MacAddr(src),
            };
            ether_type
        }
        LinkType::LinuxSll => {
            let mut h = r.sub(16).ok_or(Malformed::TruncatedSll)?;
            let packet_type = h.u16().ok_or(Malformed::TruncatedSll)?;
            let hardware_type = h.u16().ok_or(Malformed::TruncatedSll)?;
            let addr_len = h.u16().ok_or(Malformed::TruncatedSll)?;
            let addr: [u8; 8] = h.array().ok_or(Malformed::TruncatedSll)?;
            out.link = LinkHeader::Sll {
                packet_type,
                hardware_type,
                src: mac_from_sll(addr_len, addr),
            };
            h.u16().ok_or(Malformed::TruncatedSll)?
        }
        LinkType::LinuxSll2 => {
            let mut h = r.sub(20).ok_or(Malformed::TruncatedSll)?;
            let ether_type = h.u16().ok_or(Malformed::TruncatedSll)?;
            h.skip(2 + 4).ok_or(Malformed::TruncatedSll)?; // reserved, interface index
            let hardware_type = h.u16().ok_or(Malformed::TruncatedSll)?;
            let packet_type = h.u8().ok_or(Malformed::TruncatedSll)?;
            let addr_len = h.u8().ok_or(Malformed::TruncatedSll)?;
            let addr: [u8; 8] = h.array().ok_or(Malformed::TruncatedSll)?;
            out.link = LinkHeader::Sll {
                packet_type: u16::from(packet_type),
                hardware_type,
                src: mac_from_sll(u16::from(addr_len), addr),
            };
            ether_type
        }
        LinkType::RawIp => {
            let version = r.peek_rest().first().map(|b| b >> 4);
            let ether_type = match version {
                Some(4) => ETHERTYPE_IPV4,
                Some(6) => ETHERTYPE_IPV6,
                _ => return Err(Malformed::BadIpVersion),
            };
            out.ether_type = Some(ether_type);
            return Ok(Some((ether_type, r.rest())));
        }
    };
    let ether_type = vlan_tags(ether_type, &mut r, &mut out.vlan)?;
    if ether_type < MIN_ETHERTYPE {
        return Ok(None);
    }
    out.ether_type = Some(ether_type);
    Ok(Some((ether_type, r.rest())))
}

fn mac_from_sll(addr_len: u16, addr: [u8; 8]) -> Option<MacAddr> {
    let [a, b, c, d, e, f, _, _] = addr;
    (addr_len == 6).then_some(MacAddr([a, b, c, d, e, f]))
}

/// Strips up to two VLAN tags, recording their ids; returns the inner EtherType.
fn vlan_tags(
    mut ether_type: u16,
    r: &mut Reader<'_>,
    ids: &mut [Option<u16>; 2],
) -> Result<u16, Malformed> {
    let mut tags = 0;
    while matches!(ether_type, VLAN_CTAG | VLAN_STAG | VLAN_QINQ_LEGACY) {
        let slot = ids.get_mut(tags).ok_or(Malformed::TooManyVlans)?;
        let tci = r.u16().ok_or(Malformed::TruncatedVlan)?;
        ether_type = r.u16().ok_or(Malformed::TruncatedVlan)?;
        *slot = Some(tci & 0x0fff);
        tags += 1;
    }
    Ok(ether_type)
}

/// Reads an ARP packet. Only Ethernet/IPv4 ARP is decoded; other hardware or protocol types
/// (which are legal) give `None`.
pub(crate) fn arp(data: &[u8]) -> Result<Option<Arp>, Malformed> {
    let mut r = Reader::new(data);
    let hardware_type = r.u16().ok_or(Malformed::TruncatedArp)?;
    let protocol_type = r.u16().ok_or(Malformed::TruncatedArp)?;
    let hardware_len = r.u8().ok_or(Malformed::TruncatedArp)?;
    let protocol_len = r.u8().ok_or(Malformed::TruncatedArp)?;
    let op = r.u16().ok_or(Malformed::TruncatedArp)?;
    if hardware_type != ARP_HTYPE_ETHERNET || protocol_type != ETHERTYPE_IPV4 {
        return Ok(None);
    }
    if hardware_len != 6 || protocol_len != 4 {
        return Err(Malformed::BadArp);
    }
    let sender_mac = mac_addr(&mut r)?;
    let sender_ip = ipv4_addr(&mut r)?;
    let target_mac = mac_addr(&mut r)?;
    let target_ip = ipv4_addr(&mut r)?;
    Ok(Some(Arp {
        op,
        sender_mac,
        sender_ip,
        target_mac,
        target_ip,
    }))
}

fn mac_addr(r: &mut Reader<'_>) -> Result<MacAddr, Malformed> {
    r.array().map(MacAddr).ok_or(Malformed::TruncatedArp)
}

fn ipv4_addr(r: &mut Reader<'_>) -> Result<Ipv4Addr, Malformed> {
    r.array::<4>()
        .map(Ipv4Addr::from)
        .ok_or(Malformed::TruncatedArp)
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::*;
    use crate::decode::{decode, ETHERTYPE_ARP};

    #[test]
    fn from_dlt_maps_the_link_types_pcap_files_use() {
        assert_eq!(LinkType::from_dlt(1), Some(LinkType::Ethernet));
        assert_eq!(LinkType::from_dlt(113), Some(LinkType::LinuxSll));
        assert_eq!(LinkType::from_dlt(276), Some(LinkType::LinuxSll2));
        assert_eq!(LinkType::from_dlt(101), Some(LinkType::RawIp));
        assert_eq!(LinkType::from_dlt(12), Some(LinkType::RawIp));
        assert_eq!(LinkType::from_dlt(105), None);
    }

    #[test]
    fn ethernet_header_is_read() {
        let frame = build::eth(ETHERTYPE_IPV4, &build::ipv4_udp_dns_query());
        let d = decode(LinkType::Ethernet, &frame);
        assert_eq!(
            d.link,
            LinkHeader::Ethernet {
                dst: MacAddr(build::DST_MAC),
                src: MacAddr(build::SRC_MAC)
            }
        );
        assert_eq!(d.ether_type, Some(ETHERTYPE_IPV4));
        assert_eq!(d.vlan, [None, None]);
        assert_eq!(MacAddr(build::SRC_MAC).to_string(), "02:00:00:00:00:01");
    }

    #[test]
    fn single_and_double_vlan_tags_are_recorded() {
        let inner = build::ipv4_udp_dns_query();
        let one = build::eth_vlan(&[(VLAN_CTAG, 100)], ETHERTYPE_IPV4, &inner);
        let d = decode(LinkType::Ethernet, &one);
        assert_eq!(d.vlan, [Some(100), None]);
        assert!(d.ip.is_some() && d.malformed.is_none());

        let two = build::eth_vlan(
            &[(VLAN_STAG, 0x2005), (VLAN_CTAG, 7)],
            ETHERTYPE_IPV4,
            &inner,
        );
        let d = decode(LinkType::Ethernet, &two);
        // The priority bits (0x2000) are not part of the id.
        assert_eq!(d.vlan, [Some(5), Some(7)]);
        assert!(d.l4.is_some() && d.malformed.is_none());
    }

    #[test]
    fn a_third_vlan_tag_is_malformed() {
        let frame = build::eth_vlan(
            &[(VLAN_STAG, 1), (VLAN_CTAG, 2), (VLAN_CTAG, 3)],
            ETHERTYPE_IPV4,
            &build::ipv4_udp_dns_query(),
        );
        let d = decode(LinkType::Ethernet, &frame);
        assert_eq!(d.vlan, [Some(1), Some(2)]);
        assert_eq!(d.malformed, Some(Malformed::TooManyVlans));
        assert!(d.ip.is_none());
    }

    #[test]
    fn ieee_802_3_frames_have_no_ether_type() {
        let frame = build::eth(0x0026, &[0x42, 0x42, 0x03, 0, 0]);
        let d = decode(LinkType::Ethernet, &frame);
        assert_eq!(d.ether_type, None);
        assert_eq!(d.malformed, None);
    }

    #[test]
    fn linux_cooked_captures_are_read() {
        let ip = build::ipv4_udp_dns_query();
        let packet = build::sll(4, ETHERTYPE_IPV4, &ip);
        let d = decode(LinkType::LinuxSll, &packet);
        assert_eq!(
            d.link,
            LinkHeader::Sll {
                packet_type: 4,
                hardware_type: 1,
                src: Some(MacAddr(build::SRC_MAC))
            }
        );
        assert!(d.app.is_some(), "{d:?}");

        let packet = build::sll2(0, ETHERTYPE_IPV4, &ip);

        let d = decode(LinkType::LinuxSll2, &packet);
        assert_eq!(
            d.link,
            LinkHeader::Sll {
                packet_type: 0,
                hardware_type: 1,
                src: Some(MacAddr(build::SRC_MAC))
            }
        );
        assert!(d.app.is_some(), "{d:?}");
    }

    #[test]
    fn raw_ip_uses_the_version_nibble() {
        let packet = build::ipv4_udp_dns_query();
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.ether_type, Some(ETHERTYPE_IPV4));
        assert!(d.app.is_some());
        let packet = build::ipv6_tcp(&[], b"");
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.ether_type, Some(ETHERTYPE_IPV6));
        assert!(d.l4.is_some());
        assert_eq!(
            decode(LinkType::RawIp, &[0x50; 40]).malformed,
            Some(Malformed::BadIpVersion)
        );
        assert_eq!(
            decode(LinkType::RawIp, &[]).malformed,
            Some(Malformed::BadIpVersion)
        );
    }

    #[test]
    fn arp_request_fields_are_read() {
        let frame = build::eth(ETHERTYPE_ARP, &build::arp());
        let d = decode(LinkType::Ethernet, &frame);
        let arp = d.arp.unwrap();
        assert_eq!(arp.op, 1);
        assert_eq!(arp.sender_mac, MacAddr(build::SRC_MAC));
        assert_eq!(arp.sender_ip, Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(arp.target_mac, MacAddr([0; 6]));
        assert_eq!(arp.target_ip, Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(d.malformed, None);
    }

    #[test]
    fn arp_with_wrong_address_lengths_is_malformed() {
        let mut body = build::arp();
        body[4] = 8;
        let packet = build::eth(ETHERTYPE_ARP, &body);
        let d = decode(LinkType::Ethernet, &packet);
        assert_eq!(d.malformed, Some(Malformed::BadArp));
        // Another hardware type is legal and simply not decoded.
        let mut body = build::arp();
        body[1] = 6;
        let packet = build::eth(ETHERTYPE_ARP, &body);
        let d = decode(LinkType::Ethernet, &packet);
        assert_eq!((d.arp, d.malformed), (None, None));
    }
}
