//! The network layer: IPv4 (options skipped, fragments marked but not reassembled) and IPv6 with
//! a bounded walk over its extension headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::reader::Reader;
use super::Malformed;

/// IP protocol numbers the decoder knows.
pub mod proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating security payload.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NONE: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
}

/// More extension headers than any sane stack sends; beyond this the packet is malformed rather
/// than a reason to keep walking.
const MAX_IPV6_EXT_HEADERS: usize = 8;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Where a fragment sits in its original datagram. Only the fragment at offset 0 carries the
/// transport header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub id: u32,
    /// Offset of this fragment's data in the original datagram, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

/// An IPv4 or IPv6 header and the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip<'a> {
    /// IPv4 or IPv6.
    pub version: IpVersion,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// The transport protocol: for IPv6 the next header after the extension headers walked.
    pub protocol: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 type of service or IPv6 traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Set when the packet is a fragment (not for IPv6 "atomic" fragments at offset 0 with no
    /// more to follow, which are whole datagrams).
    pub fragment: Option<Fragment>,
    /// The transport bytes: after options and extension headers, without link-layer padding,
    /// and cut short if the capture was.
    pub payload: &'a [u8],
}

impl Ip<'_> {
    /// Whether this packet is a fragment of a larger datagram.
    pub fn fragmented(&self) -> bool {
        self.fragment.is_some()
    }

    /// Whether the payload starts with a transport header: not for later fragments.
    pub fn has_l4(&self) -> bool {
        self.fragment.is_none_or(|f| f.offset == 0)
    }
}

/// What was wrong past an IP header that parsed, if anything.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Cut short (the transport layer is still worth reading) or a bad extension header.
    pub(crate) malformed: Option<Malformed>,
    /// Whether `ip.payload` starts at the transport header.
    pub(crate) transport: bool,
}

/// Reads an IPv4 header into `out`. (Writing in place rather than returning keeps the header
/// from being copied through the layers, which showed in profiles.)
#[inline]
pub(crate) fn ipv4<'a>(data: &'a [u8], out: &mut Option<Ip<'a>>) -> Result<Outcome, Malformed> {
    use Malformed::{BadIpv4Header, TruncatedIpv4};
    let mut r = Reader::new(data);
    let version_ihl = r.u8().ok_or(TruncatedIpv4)?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return Err(BadIpv4Header);
    }
    let tos = r.u8().ok_or(TruncatedIpv4)?;
    let total_len = r.u16().ok_or(TruncatedIpv4)?;
    let id = r.u16().ok_or(TruncatedIpv4)?;
    let flags_offset = r.u16().ok_or(TruncatedIpv4)?;
    let ttl = r.u8().ok_or(TruncatedIpv4)?;
    let protocol = r.u8().ok_or(TruncatedIpv4)?;
    r.skip(2).ok_or(TruncatedIpv4)?; // checksum: NICs that offload it leave it wrong in captures
    let src: [u8; 4] = r.array().ok_or(TruncatedIpv4)?;
    let dst: [u8; 4] = r.array().ok_or(TruncatedIpv4)?;
    r.skip(header_len - 20).ok_or(TruncatedIpv4)?;

    // A zero total length is what a capture of an outgoing TSO super-packet shows: trust the
    // captured length then.
    let total_len = match usize::from(total_len) {
        0 => data.len(),
        n => n,
    };
    if total_len < header_len {
        return Err(BadIpv4Header);
    }
    let truncated = total_len > data.len();
    // Bytes past the total length are Ethernet padding, not payload.
    let payload = r
        .take(total_len.min(data.len()).saturating_sub(header_len))
        .unwrap_or_default();

    let more = flags_offset & 0x2000 != 0;
    let offset = (flags_offset & 0x1fff) * 8;
    let fragment = (more || offset != 0).then_some(Fragment {
        id: u32::from(id),
        offset,
        more,
    });
    *out = Some(Ip {
        version: IpVersion::V4,
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        protocol,
        ttl,
        traffic_class: tos,
        fragment,
        payload,
    });
    Ok(Outcome {
        malformed: truncated.then_some(TruncatedIpv4),
        transport: true,
    })
}

/// Reads an IPv6 header into `out`, walking its extension headers.
#[inline]
pub(crate) fn ipv6<'a>(data: &'a [u8], out: &mut Option<Ip<'a>>) -> Result<Outcome, Malformed> {
    use Malformed::{BadIpv6, BadIpv6ExtHeader, TruncatedIpv6};
    let mut r = Reader::new(data);
    let first = r.u32().ok_or(TruncatedIpv6)?;
    if first >> 28 != 6 {
        return Err(BadIpv6);
    }
    let traffic_class = (first >> 20) as u8;
    let payload_len = r.u16().ok_or(TruncatedIpv6)?;
    let mut next = r.u8().ok_or(TruncatedIpv6)?;
    let hop_limit = r.u8().ok_or(TruncatedIpv6)?;
    let src: [u8; 16] = r.array().ok_or(TruncatedIpv6)?;
    let dst: [u8; 16] = r.array().ok_or(TruncatedIpv6)?;

    // Zero means a jumbogram (or a TSO capture): the captured length is all there is to go on.
    let payload_len = match usize::from(payload_len) {
        0 => r.left(),
        n => n,
    };
    let truncated = payload_len > r.left();
    let mut payload = r.take(payload_len.min(r.left())).unwrap_or_default();

    let mut fragment = None;
    let mut transport = true;
    let mut malformed = truncated.then_some(TruncatedIpv6);
    let mut walked = 0;
    while is_extension_header(next) {
        if walked == MAX_IPV6_EXT_HEADERS {
            malformed = malformed.or(Some(BadIpv6ExtHeader));
            transport = false;
            break;
        }
        walked += 1;
        let mut ext = Reader::new(payload);
        let Some((after, rest)) = extension_header(next, &mut ext, &mut fragment) else {
            malformed = malformed.or(Some(BadIpv6ExtHeader));
            transport = false;
            break;
        };
        next = after;
        payload = rest;
        if fragment.is_some_and(|f| f.offset != 0) {
            // What follows is the middle of the original payload, not more headers.
            break;
        }
    }
    *out = Some(Ip {
        version: IpVersion::V6,
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: next,
        ttl: hop_limit,
        traffic_class,
        fragment,
        payload,
    });
    Ok(Outcome {
        malformed,
        transport,
    })
}

fn is_extension_header(next: u8) -> bool {
    matches!(
        next,
        proto::HOPOPT | proto::ROUTING | proto::FRAGMENT | proto::DSTOPTS | proto::AH
    )
}

/// Reads one extension header of type `kind`; returns the next header type and the bytes after
/// it. Records a fragment header in `fragment`.
fn extension_header<'a>(
    kind: u8,
    r: &mut Reader<'a>,
    fragment: &mut Option<Fragment>,
) -> Option<(u8, &'a [u8])> {
    let next = r.u8()?;
    let len = usize::from(r.u8()?);
    match kind {
        proto::FRAGMENT => {
            let offset_flags = r.u16()?;
            let id = r.u32()?;
            let more = offset_flags & 1 != 0;
            let offset = offset_flags & !0b111;
            if more || offset != 0 {
                *fragment = Some(Fragment { id, offset, more });
            }
        }
        // AH counts its length in 4-byte words, minus 2.
        proto::AH => r.skip((len + 2) * 4 - 2)?,
        // The rest count 8-byte units beyond the first 8 bytes.
        _ => r.skip(len * 8 + 6)?,
    }
    Some((next, r.rest()))
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::*;
    use crate::decode::{decode, LinkType, L4};

    #[test]
    fn ipv4_header_fields_are_read_and_padding_dropped() {
        let mut packet = build::ipv4(proto::UDP, &build::udp(1000, 2000, b"hi"));
        packet.extend_from_slice(&[0; 10]); // Ethernet minimum-frame padding
        let d = decode(LinkType::RawIp, &packet);
        let ip = d.ip.unwrap();
        assert_eq!(ip.version, IpVersion::V4);
        assert_eq!(ip.src, build::SRC_V4);
        assert_eq!(ip.dst, build::DST_V4);
        assert_eq!((ip.protocol, ip.ttl, ip.fragment), (proto::UDP, 64, None));
        assert_eq!(ip.payload.len(), 10);
        assert_eq!(d.payload(), Some(&b"hi"[..]));
        assert_eq!(d.malformed, None);
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let udp = build::udp(1000, 2000, b"x");
        let packet = build::ipv4_with(proto::UDP, &[1, 1, 1, 0], 0, 0, &udp);
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.l4.unwrap().ports(), Some((1000, 2000)));
        assert_eq!(d.malformed, None);
    }

    #[test]
    fn ipv4_fragments_are_marked_and_only_the_first_has_l4() {
        let udp = build::udp(1000, 53, &[0; 40]);
        let first = build::ipv4_with(proto::UDP, &[], 0x1234, 0x2000, &udp[..24]);
        let d = decode(LinkType::RawIp, &first);
        let ip = d.ip.unwrap();
        assert_eq!(
            ip.fragment,
            Some(Fragment {
                id: 0x1234,
                offset: 0,
                more: true
            })
        );
        // The UDP length covers all fragments: no truncation, no DNS attempt on a partial.
        assert!(matches!(d.l4, Some(L4::Udp(_))));
        assert_eq!((d.app.is_none(), d.malformed), (true, None));

        let later = build::ipv4_with(proto::UDP, &[], 0x1234, 3, &udp[24..]);
        let d = decode(LinkType::RawIp, &later);
        assert_eq!(d.ip.unwrap().fragment.unwrap().offset, 24);
        assert!(d.l4.is_none());
        assert_eq!(d.malformed, None);
        let tuple = d.five_tuple().unwrap();
        assert_eq!((tuple.src_port, tuple.dst_port), (0, 0));
    }

    #[test]
    fn bad_ipv4_headers_are_malformed() {
        let good = build::ipv4(proto::UDP, &build::udp(1, 2, b""));
        let mut bad_ihl = good.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(
            decode(LinkType::RawIp, &bad_ihl).malformed,
            Some(Malformed::BadIpv4Header)
        );
        let mut short_total = good.clone();
        short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            decode(LinkType::RawIp, &short_total).malformed,
            Some(Malformed::BadIpv4Header)
        );
        let mut long_total = good.clone();
        long_total[2..4].copy_from_slice(&100u16.to_be_bytes());
        let d = decode(LinkType::RawIp, &long_total);
        assert_eq!(d.malformed, Some(Malformed::TruncatedIpv4));
        // The transport header is still read from what was captured.
        assert!(d.l4.is_some());
    }

    #[test]
    fn ipv4_total_length_zero_means_the_captured_length() {
        let mut packet = build::ipv4(proto::UDP, &build::udp(1, 2, b"abc"));
        packet[2..4].copy_from_slice(&[0, 0]);
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.payload(), Some(&b"abc"[..]));
        assert_eq!(d.malformed, None);
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let tcp = build::tcp(40000, 443, build::SYN, &[], b"");
        let exts = [
            build::ext(proto::HOPOPT, &[0; 6]),
            build::ext(proto::ROUTING, &[0; 14]),
            build::ext(proto::DSTOPTS, &[0; 6]),
            build::ah(&[0; 10]),
        ];
        let packet = build::ipv6_chain(&exts, proto::TCP, &tcp);
        let d = decode(LinkType::RawIp, &packet);
        let ip = d.ip.unwrap();
        assert_eq!((ip.version, ip.protocol), (IpVersion::V6, proto::TCP));
        assert_eq!(ip.src, build::SRC_V6);
        assert_eq!(d.l4.unwrap().ports(), Some((40000, 443)));
        assert_eq!(d.malformed, None);
    }

    #[test]
    fn ipv6_fragments_are_marked_and_only_the_first_has_l4() {
        let udp = build::udp(5000, 6000, &[7; 32]);
        let first = build::ipv6_chain(&[build::frag6(0, true, 99)], proto::UDP, &udp[..16]);
        let d = decode(LinkType::RawIp, &first);
        let frag = d.ip.unwrap().fragment.unwrap();
        assert_eq!((frag.id, frag.offset, frag.more), (99, 0, true));
        assert_eq!(d.l4.unwrap().ports(), Some((5000, 6000)));

        let later = build::ipv6_chain(&[build::frag6(16, false, 99)], proto::UDP, &udp[16..]);
        let d = decode(LinkType::RawIp, &later);
        let ip = d.ip.unwrap();
        assert_eq!((ip.protocol, ip.fragment.unwrap().offset), (proto::UDP, 16));
        assert!(d.l4.is_none());
        assert_eq!(d.malformed, None);

        // An atomic fragment (offset 0, no more) is a whole datagram.
        let atomic = build::ipv6_chain(&[build::frag6(0, false, 5)], proto::UDP, &udp);
        let d = decode(LinkType::RawIp, &atomic);
        assert!(!d.ip.unwrap().fragmented());
        assert!(d.l4.is_some());
    }

    #[test]
    fn ipv6_extension_header_chains_are_bounded() {
        let exts = vec![build::ext(proto::DSTOPTS, &[0; 6]); MAX_IPV6_EXT_HEADERS + 1];
        let packet = build::ipv6_chain(&exts, proto::TCP, &[]);
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.malformed, Some(Malformed::BadIpv6ExtHeader));
        assert!(d.ip.is_some() && d.l4.is_none());
    }

    #[test]
    fn ipv6_extension_header_overrunning_the_payload_is_malformed() {
        let packet = build::ipv6_chain(&[build::ext(proto::HOPOPT, &[0; 6])], proto::TCP, &[]);
        let mut packet = packet;
        packet[41] = 200; // hop-by-hop length far beyond the packet
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.malformed, Some(Malformed::BadIpv6ExtHeader));
    }

    #[test]
    fn ipv6_with_wrong_version_is_malformed() {
        let mut packet = build::ipv6_tcp(&[], b"");
        packet[0] = 0x40;
        let packet = build::eth(0x86dd, &packet);
        let d = decode(LinkType::Ethernet, &packet);
        assert_eq!(d.malformed, Some(Malformed::BadIpv6));
    }
}
