//! The transport layer: TCP (options skipped by data offset, read lazily on demand), UDP, ICMP
//! and ICMPv6 headers, and the payload slice each carries.

use super::ip::proto;
use super::reader::Reader;
use super::Malformed;

/// A transport header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4<'a> {
    /// A TCP segment.
    Tcp(Tcp<'a>),
    /// A UDP datagram.
    Udp(Udp<'a>),
    /// An ICMP (IPv4) message.
    Icmp(Icmp<'a>),
    /// An ICMPv6 message.
    Icmpv6(Icmp<'a>),
}

impl<'a> L4<'a> {
    /// Source and destination ports, for TCP and UDP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self {
            L4::Tcp(t) => Some((t.src_port, t.dst_port)),
            L4::Udp(u) => Some((u.src_port, u.dst_port)),
            L4::Icmp(_) | L4::Icmpv6(_) => None,
        }
    }

    /// The bytes after the transport header.
    pub fn payload(&self) -> &'a [u8] {
        match self {
            L4::Tcp(t) => t.payload,
            L4::Udp(u) => u.payload,
            L4::Icmp(i) | L4::Icmpv6(i) => i.body,
        }
    }
}

/// TCP flag bits (the low 9 bits of the offset/flags word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x001);
    /// Synchronise sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x002);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x004);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x008);
    /// The acknowledgment number is valid.
    pub const ACK: TcpFlags = TcpFlags(0x010);
    /// The urgent pointer is valid.
    pub const URG: TcpFlags = TcpFlags(0x020);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x040);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x080);
    /// ECN nonce (RFC 3540, historic) / accurate ECN.
    pub const NS: TcpFlags = TcpFlags(0x100);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// A TCP header and the segment's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Receive window (unscaled).
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// The raw options area; iterate it with [`Tcp::options`].
    pub options_raw: &'a [u8],
    /// The segment's data.
    pub payload: &'a [u8],
}

impl<'a> Tcp<'a> {
    /// The options, in order. Iteration stops at the end-of-list option or at the first option
    /// whose length does not fit.
    pub fn options(&self) -> TcpOptions<'a> {
        TcpOptions {
            r: Reader::new(self.options_raw),
        }
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOption<'a> {
    /// Option kind (1 NOP, 2 MSS, 3 window scale, 4 SACK permitted, 5 SACK, 8 timestamps, …).
    pub kind: u8,
    /// The option's data, without kind and length bytes.
    pub data: &'a [u8],
}

/// Iterator over a TCP options area; see [`Tcp::options`].
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    r: Reader<'a>,
}

const TCP_OPT_END: u8 = 0;
const TCP_OPT_NOP: u8 = 1;

impl<'a> Iterator for TcpOptions<'a> {
    type Item = TcpOption<'a>;

    fn next(&mut self) -> Option<TcpOption<'a>> {
        let kind = self.r.u8()?;
        let data = match kind {
            TCP_OPT_END => None,
            TCP_OPT_NOP => Some(&[][..]),
            _ => self
                .r
                .u8()
                .and_then(|len| usize::from(len).checked_sub(2))
                .and_then(|n| self.r.take(n)),
        };
        if data.is_none() {
            self.r.rest();
        }
        data.map(|data| TcpOption { kind, data })
    }
}

/// A UDP header and the datagram's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The length field (header included).
    pub length: u16,
    /// The data, bounded by the length field and by what was captured.
    pub payload: &'a [u8],
}

/// An ICMP or ICMPv6 header and the message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp<'a> {
    /// Message type.
    pub icmp_type: u8,
    /// Message code.
    pub code: u8,
    /// Everything after the checksum (identifier/sequence, quoted packet, …).
    pub body: &'a [u8],
}

/// Reads the transport header of an IP payload of protocol `protocol` into `out`. Returns a
/// truncation that still left the header readable.
#[inline]
pub(crate) fn decode<'a>(
    protocol: u8,
    payload: &'a [u8],
    fragmented: bool,
    out: &mut Option<L4<'a>>,
) -> Result<Option<Malformed>, Malformed> {
    let mut r = Reader::new(payload);
    let (l4, truncated) = match protocol {
        proto::TCP => (L4::Tcp(tcp(&mut r)?), None),
        proto::UDP => {
            let (udp, truncated) = udp(&mut r, fragmented)?;
            (L4::Udp(udp), truncated)
        }
        proto::ICMP => (L4::Icmp(icmp(&mut r)?), None),
        proto::ICMPV6 => (L4::Icmpv6(icmp(&mut r)?), None),
        _ => return Ok(None),
    };
    *out = Some(l4);
    Ok(truncated)
}

fn tcp<'a>(r: &mut Reader<'a>) -> Result<Tcp<'a>, Malformed> {
    use Malformed::{BadTcpOffset, TruncatedTcp};
    let src_port = r.u16().ok_or(TruncatedTcp)?;
    let dst_port = r.u16().ok_or(TruncatedTcp)?;
    let seq = r.u32().ok_or(TruncatedTcp)?;
    let ack = r.u32().ok_or(TruncatedTcp)?;
    let offset_flags = r.u16().ok_or(TruncatedTcp)?;
    let window = r.u16().ok_or(TruncatedTcp)?;
    r.skip(2).ok_or(TruncatedTcp)?; // checksum
    let urgent = r.u16().ok_or(TruncatedTcp)?;
    let header_len = usize::from(offset_flags >> 12) * 4;
    let options_len = header_len.checked_sub(20).ok_or(BadTcpOffset)?;
    let options_raw = r.take(options_len).ok_or(TruncatedTcp)?;
    Ok(Tcp {
        src_port,
        dst_port,
        seq,
        ack,
        flags: TcpFlags(offset_flags & 0x01ff),
        window,
        urgent,
        options_raw,
        payload: r.rest(),
    })
}

fn udp<'a>(
    r: &mut Reader<'a>,
    fragmented: bool,
) -> Result<(Udp<'a>, Option<Malformed>), Malformed> {
    use Malformed::{BadUdpLength, TruncatedUdp};
    let src_port = r.u16().ok_or(TruncatedUdp)?;
    let dst_port = r.u16().ok_or(TruncatedUdp)?;
    let length = r.u16().ok_or(TruncatedUdp)?;
    r.skip(2).ok_or(TruncatedUdp)?; // checksum
    let mut udp = Udp {
        src_port,
        dst_port,
        length,
        payload: &[],
    };
    // Zero is legal only for IPv6 jumbograms; either way the IP length bounds the data.
    let data_len = match length {
        0 => r.left(),
        n => match usize::from(n).checked_sub(8) {
            Some(n) => n,
            None => return Ok((udp, Some(BadUdpLength))),
        },
    };
    // A first fragment holds only the start of the datagram the length describes.
    let truncated = data_len > r.left() && !fragmented;
    udp.payload = r.take(data_len.min(r.left())).unwrap_or_default();
    Ok((udp, truncated.then_some(TruncatedUdp)))
}

fn icmp<'a>(r: &mut Reader<'a>) -> Result<Icmp<'a>, Malformed> {
    let icmp_type = r.u8().ok_or(Malformed::TruncatedIcmp)?;
    let code = r.u8().ok_or(Malformed::TruncatedIcmp)?;
    r.skip(2).ok_or(Malformed::TruncatedIcmp)?; // checksum
    Ok(Icmp {
        icmp_type,
        code,
        body: r.rest(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::*;
    use crate::decode::{decode, LinkType};

    fn l4(packet: &[u8]) -> L4<'_> {
        decode(LinkType::RawIp, packet).l4.unwrap()
    }

    #[test]
    fn tcp_header_fields_and_payload_are_read() {
        let options = [2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0];
        let seg = build::tcp(40000, 80, build::SYN | build::ACK, &options, b"data");
        let packet = build::ipv4(proto::TCP, &seg);
        let L4::Tcp(tcp) = l4(&packet) else {
            panic!("not tcp")
        };
        assert_eq!((tcp.src_port, tcp.dst_port), (40000, 80));
        assert_eq!((tcp.seq, tcp.ack, tcp.window), (1000, 2000, 65535));
        assert!(tcp.flags.contains(TcpFlags::SYN | TcpFlags::ACK));
        assert!(!tcp.flags.contains(TcpFlags::FIN));
        assert_eq!(tcp.payload, b"data");
        let kinds: Vec<(u8, usize)> = tcp.options().map(|o| (o.kind, o.data.len())).collect();
        assert_eq!(kinds, [(2, 2), (1, 0), (3, 1), (4, 0)]);
    }

    #[test]
    fn tcp_options_iteration_stops_at_a_bad_length() {
        let tcp = Tcp {
            src_port: 0,
            dst_port: 0,
            seq: 0,
            ack: 0,
            flags: TcpFlags::default(),
            window: 0,
            urgent: 0,
            options_raw: &[1, 2, 1, 0xff, 8, 10, 0, 0],
            payload: &[],
        };
        let kinds: Vec<u8> = tcp.options().map(|o| o.kind).collect();
        assert_eq!(kinds, [1]);
    }

    #[test]
    fn tcp_data_offset_under_five_words_is_malformed() {
        let mut seg = build::tcp(1, 2, build::SYN, &[], b"");
        seg[12] = 0x40;
        let packet = build::ipv4(proto::TCP, &seg);
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.malformed, Some(Malformed::BadTcpOffset));
        assert!(d.l4.is_none());
    }

    #[test]
    fn tcp_data_offset_beyond_the_segment_is_truncated() {
        let mut seg = build::tcp(1, 2, build::SYN, &[], b"");
        seg[12] = 0xf0;
        let packet = build::ipv4(proto::TCP, &seg);
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.malformed, Some(Malformed::TruncatedTcp));
    }

    #[test]
    fn udp_length_bounds_the_payload() {
        let mut dgram = build::udp(1, 2, b"abcdef");
        dgram[4..6].copy_from_slice(&11u16.to_be_bytes());
        let packet = build::ipv4(proto::UDP, &dgram);
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.payload(), Some(&b"abc"[..]));
        assert_eq!(d.malformed, None);

        dgram[4..6].copy_from_slice(&7u16.to_be_bytes());
        let packet = build::ipv4(proto::UDP, &dgram);
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.malformed, Some(Malformed::BadUdpLength));
        assert_eq!(d.l4.unwrap().ports(), Some((1, 2)));

        dgram[4..6].copy_from_slice(&40u16.to_be_bytes());
        let packet = build::ipv4(proto::UDP, &dgram);
        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.malformed, Some(Malformed::TruncatedUdp));
        assert_eq!(d.payload(), Some(&b"abcdef"[..]));
    }

    #[test]
    fn icmp_and_icmpv6_type_and_code_are_read() {
        let echo = build::icmp(8, 0, &[0, 1, 0, 1, b'p', b'i', b'n', b'g']);
        let packet = build::ipv4(proto::ICMP, &echo);
        let L4::Icmp(icmp) = l4(&packet) else {
            panic!("not icmp")
        };
        assert_eq!((icmp.icmp_type, icmp.code, icmp.body.len()), (8, 0, 8));

        let unreachable = build::icmp(1, 4, &[0; 4]);
        let packet = build::ipv6_chain(&[], proto::ICMPV6, &unreachable);
        let L4::Icmpv6(icmp) = l4(&packet) else {
            panic!("not icmpv6")
        };
        assert_eq!((icmp.icmp_type, icmp.code), (1, 4));

        let packet = build::ipv4(proto::ICMP, &[8, 0, 0]);

        let d = decode(LinkType::RawIp, &packet);
        assert_eq!(d.malformed, Some(Malformed::TruncatedIcmp));
    }
}
