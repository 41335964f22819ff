//! Packet decoding for the network probe: one captured frame in, a [`Decoded`] view out.
//!
//! [`decode`] walks the link layer ([`link`]: Ethernet II, 802.1Q/QinQ, Linux cooked capture, raw
//! IP), the network layer ([`ip`]: ARP, IPv4, IPv6 with extension headers), the transport layer
//! ([`transport`]: TCP, UDP, ICMP, ICMPv6) and, from the first bytes of a payload, the
//! application ([`dns`], [`http`], [`tls`] ClientHello with JA3/JA4).
//!
//! The decoder never panics and never allocates on the TCP/UDP path: every layer borrows from the
//! packet and reads through a bounded reader. Bytes that do not parse are a value, not an error:
//! the layers that did parse are kept and [`Decoded::malformed`] names the first thing that was
//! wrong, so the capture loop can count malformed packets by reason ([`DecodeStats`]).

pub mod dns;
pub mod http;
pub mod ip;
pub mod link;
mod reader;
pub mod tls;
pub mod transport;

#[cfg(test)]
mod build;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use dns::{Dns, DnsAnswer, DnsData, DnsQuestion};
pub use http::{Http, HttpRequest, HttpResponse};
pub use ip::{Fragment, Ip, IpVersion};
pub use link::{Arp, LinkHeader, LinkType, MacAddr};
pub use tls::{ClientHello, Ja3};
pub use transport::{Icmp, Tcp, TcpFlags, TcpOption, Udp, L4};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Why a packet did not decode completely: the first problem found, outermost layer first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    /// Shorter than an Ethernet header.
    TruncatedEthernet,
    /// Shorter than a Linux cooked-capture (SLL or SLL2) header.
    TruncatedSll,
    /// An 802.1Q/802.1ad tag cut short.
    TruncatedVlan,
    /// More than two stacked VLAN tags.
    TooManyVlans,
    /// An Ethernet/IPv4 ARP packet cut short.
    TruncatedArp,
    /// An ARP packet claiming Ethernet/IPv4 with other address lengths.
    BadArp,
    /// A raw-IP packet that is empty or whose version is neither 4 nor 6.
    BadIpVersion,
    /// Shorter than the IPv4 header it announces, or shorter than its total length.
    TruncatedIpv4,
    /// An IPv4 header with a wrong version, a header length under 20 bytes, or a total length
    /// shorter than the header.
    BadIpv4Header,
    /// Shorter than an IPv6 header or than its payload length.
    TruncatedIpv6,
    /// An IPv6 header whose version is not 6.
    BadIpv6,
    /// An IPv6 extension header that is cut short, or more of them than the decoder walks.
    BadIpv6ExtHeader,
    /// Shorter than the TCP header, options included.
    TruncatedTcp,
    /// A TCP data offset under 5 words.
    BadTcpOffset,
    /// Shorter than a UDP header or than the UDP length.
    TruncatedUdp,
    /// A UDP length under 8.
    BadUdpLength,
    /// Shorter than an ICMP or ICMPv6 header.
    TruncatedIcmp,
    /// A DNS message (UDP port 53 or 5353) that does not parse.
    BadDns,
    /// A payload that starts like HTTP/1.x but whose start line or headers do not parse.
    BadHttp,
    /// A TLS handshake record that starts like a ClientHello but does not parse.
    BadTls,
}

impl Malformed {
    /// Every reason, in declaration order.
    pub const ALL: [Malformed; 20] = [
        Malformed::TruncatedEthernet,
        Malformed::TruncatedSll,
        Malformed::TruncatedVlan,
        Malformed::TooManyVlans,
        Malformed::TruncatedArp,
        Malformed::BadArp,
        Malformed::BadIpVersion,
        Malformed::TruncatedIpv4,
        Malformed::BadIpv4Header,
        Malformed::TruncatedIpv6,
        Malformed::BadIpv6,
        Malformed::BadIpv6ExtHeader,
        Malformed::TruncatedTcp,
        Malformed::BadTcpOffset,
        Malformed::TruncatedUdp,
        Malformed::BadUdpLength,
        Malformed::TruncatedIcmp,
        Malformed::BadDns,
        Malformed::BadHttp,
        Malformed::BadTls,
    ];

    /// A stable snake_case name, for metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Malformed::TruncatedEthernet => "truncated_ethernet",
            Malformed::TruncatedSll => "truncated_sll",
            Malformed::TruncatedVlan => "truncated_vlan",
            Malformed::TooManyVlans => "too_many_vlans",
            Malformed::TruncatedArp => "truncated_arp",
            Malformed::BadArp => "bad_arp",
            Malformed::BadIpVersion => "bad_ip_version",
            Malformed::TruncatedIpv4 => "truncated_ipv4",
            Malformed::BadIpv4Header => "bad_ipv4_header",
            Malformed::TruncatedIpv6 => "truncated_ipv6",
            Malformed::BadIpv6 => "bad_ipv6",
            Malformed::BadIpv6ExtHeader => "bad_ipv6_ext_header",
            Malformed::TruncatedTcp => "truncated_tcp",
            Malformed::BadTcpOffset => "bad_tcp_offset",
            Malformed::TruncatedUdp => "truncated_udp",
            Malformed::BadUdpLength => "bad_udp_length",
            Malformed::TruncatedIcmp => "truncated_icmp",
            Malformed::BadDns => "bad_dns",
            Malformed::BadHttp => "bad_http",
            Malformed::BadTls => "bad_tls",
        }
    }

    /// Position in [`Malformed::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The application protocol recognised at the start of a TCP or UDP payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum App<'a> {
    /// A DNS message (UDP port 53/5353, or TCP port 53 with its length prefix).
    Dns(Dns<'a>),
    /// An HTTP/1.x request or response head.
    Http(Http<'a>),
    /// A complete TLS ClientHello (boxed: it is large and comes once per connection).
    TlsClientHello(Box<ClientHello<'a>>),
    /// A TLS ClientHello record starts here but continues in later segments (large post-quantum
    /// key shares make this common). A flow reassembler can collect `needed` bytes from the start
    /// of this payload and call [`tls::parse_client_hello`] on them.
    TlsClientHelloPartial {
        /// Bytes from the start of this payload up to the end of the ClientHello record.
        needed: usize,
    },
}

/// The five-tuple that identifies a flow. Ports are 0 for protocols without them and for IP
/// fragments that carry no transport header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol number of the transport (6 TCP, 17 UDP, …), after IPv6 extension headers.
    pub protocol: u8,
}

/// One decoded packet: every layer that parsed, borrowing from the captured bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Captured length in bytes.
    pub len: usize,
    /// The link-layer header, if it parsed.
    pub link: LinkHeader,
    /// VLAN ids, outermost first (802.1ad S-tag, then 802.1Q C-tag).
    pub vlan: [Option<u16>; 2],
    /// EtherType of the network layer after any VLAN tags (also set for raw IP from the version
    /// nibble). `None` for 802.3 length-field frames and when the link layer did not parse.
    pub ether_type: Option<u16>,
    /// An Ethernet/IPv4 ARP packet.
    pub arp: Option<Arp>,
    /// The IPv4 or IPv6 header.
    pub ip: Option<Ip<'a>>,
    /// The transport header and payload.
    pub l4: Option<L4<'a>>,
    /// The application protocol recognised at the start of the transport payload.
    pub app: Option<App<'a>>,
    /// The first problem found. A layer that cannot be read leaves the layers above it `None`;
    /// an IP packet or UDP datagram cut short (as a small snap length does) still has the
    /// headers that were captured, but no application layer.
    pub malformed: Option<Malformed>,
}

impl<'a> Decoded<'a> {
    fn empty(len: usize) -> Self {
        Decoded {
            len,
            link: LinkHeader::None,
            vlan: [None; 2],
            ether_type: None,
            arp: None,
            ip: None,
            l4: None,
            app: None,
            malformed: None,
        }
    }

    /// Records `reason` unless an outer layer already recorded one.
    fn note(&mut self, reason: Malformed) {
        if self.malformed.is_none() {
            self.malformed = Some(reason);
        }
    }

    /// The flow key, for any IP packet.
    pub fn five_tuple(&self) -> Option<FiveTuple> {
        let ip = self.ip.as_ref()?;
        let (src_port, dst_port) = self.l4.as_ref().and_then(L4::ports).unwrap_or((0, 0));
        Some(FiveTuple {
            src: ip.src,
            dst: ip.dst,
            src_port,
            dst_port,
            protocol: ip.protocol,
        })
    }

    /// The transport payload (TCP or UDP data, the ICMP body), if any.
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.l4.as_ref().map(L4::payload)
    }

    fn decode_layers(&mut self, link: LinkType, data: &'a [u8]) -> Result<(), Malformed> {
        let Some((ether_type, l3)) = link::decode(link, data, self)? else {
            return Ok(());
        };
        let outcome = match ether_type {
            ETHERTYPE_ARP => {
                self.arp = link::arp(l3)?;
                return Ok(());
            }
            ETHERTYPE_IPV4 => ip::ipv4(l3, &mut self.ip)?,
            ETHERTYPE_IPV6 => ip::ipv6(l3, &mut self.ip)?,
            _ => return Ok(()),
        };
        if let Some(reason) = outcome.malformed {
            self.note(reason);
        }
        let Some(ip) = &self.ip else {
            return Ok(());
        };
        if !outcome.transport || !ip.has_l4() {
            return Ok(());
        }
        let fragmented = ip.fragmented();
        let truncated = transport::decode(ip.protocol, ip.payload, fragmented, &mut self.l4)?;
        if let Some(reason) = truncated {
            self.note(reason);
        }
        let Some(l4) = &self.l4 else {
            return Ok(());
        };
        // A fragment or a cut-short datagram holds only the start of the application data:
        // parsing it would report good traffic as malformed.
        if fragmented || self.malformed.is_some() {
            return Ok(());
        }
        sniff_app(l4, &mut self.app)
    }
}

/// Decodes one captured frame of link type `link`. Never panics; see [`Decoded::malformed`].
#[inline]
pub fn decode(link: LinkType, data: &[u8]) -> Decoded<'_> {
    let mut decoded = Decoded::empty(data.len());
    if let Err(reason) = decoded.decode_layers(link, data) {
        decoded.note(reason);
    }
    decoded
}

const DNS_PORT: u16 = 53;
const MDNS_PORT: u16 = 5353;

/// Recognises the application protocol from ports and the first payload bytes. Writes into
/// `app` rather than returning it, which keeps the large value from being copied per packet.
fn sniff_app<'a>(l4: &L4<'a>, app: &mut Option<App<'a>>) -> Result<(), Malformed> {
    match l4 {
        L4::Udp(udp) => {
            let dns_port = |p| p == DNS_PORT || p == MDNS_PORT;
            if !udp.payload.is_empty() && (dns_port(udp.src_port) || dns_port(udp.dst_port)) {
                *app = Some(App::Dns(dns::parse(udp.payload)?));
            }
        }
        L4::Tcp(tcp) if !tcp.payload.is_empty() => {
            let payload = tcp.payload;
            if tls::looks_like_handshake(payload) {
                *app = tls::sniff(payload)?;
            } else if let Some(http) = http::sniff(payload)? {
                *app = Some(App::Http(http));
            } else if tcp.src_port == DNS_PORT || tcp.dst_port == DNS_PORT {
                // A segment in the middle of a DNS-over-TCP stream looks like garbage; only a
                // message that parses whole counts.
                *app = dns::parse_tcp(payload).map(App::Dns);
            }
        }
        L4::Tcp(_) | L4::Icmp(_) | L4::Icmpv6(_) => {}
    }
    Ok(())
}

/// Counters for a stream of decoded packets. Plain integers: keep one per capture thread and
/// [`merge`](DecodeStats::merge) them when reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Packets recorded.
    pub packets: u64,
    /// Captured bytes recorded.
    pub bytes: u64,
    /// Packets with at least one VLAN tag.
    pub vlan: u64,
    /// ARP packets.
    pub arp: u64,
    /// IPv4 packets.
    pub ipv4: u64,
    /// IPv6 packets.
    pub ipv6: u64,
    /// IPv4 fragments (first and later ones).
    pub ipv4_fragments: u64,
    /// IPv6 fragments (first and later ones).
    pub ipv6_fragments: u64,
    /// TCP segments.
    pub tcp: u64,
    /// UDP datagrams.
    pub udp: u64,
    /// ICMP messages.
    pub icmp: u64,
    /// ICMPv6 messages.
    pub icmpv6: u64,
    /// DNS messages.
    pub dns: u64,
    /// HTTP request and response heads.
    pub http: u64,
    /// TLS ClientHellos, complete or starting in this segment.
    pub tls_client_hello: u64,
    malformed: [u64; Malformed::ALL.len()],
}

impl DecodeStats {
    /// Counts one decoded packet.
    pub fn record(&mut self, d: &Decoded<'_>) {
        self.packets += 1;
        self.bytes += d.len as u64;
        self.vlan += u64::from(d.vlan[0].is_some());
        self.arp += u64::from(d.arp.is_some());
        if let Some(ip) = &d.ip {
            let fragment = u64::from(ip.fragmented());
            match ip.version {
                IpVersion::V4 => {
                    self.ipv4 += 1;
                    self.ipv4_fragments += fragment;
                }
                IpVersion::V6 => {
                    self.ipv6 += 1;
                    self.ipv6_fragments += fragment;
                }
            }
        }
        match &d.l4 {
            Some(L4::Tcp(_)) => self.tcp += 1,
            Some(L4::Udp(_)) => self.udp += 1,
            Some(L4::Icmp(_)) => self.icmp += 1,
            Some(L4::Icmpv6(_)) => self.icmpv6 += 1,
            None => {}
        }
        match &d.app {
            Some(App::Dns(_)) => self.dns += 1,
            Some(App::Http(_)) => self.http += 1,
            Some(App::TlsClientHello(_) | App::TlsClientHelloPartial { .. }) => {
                self.tls_client_hello += 1
            }
            None => {}
        }
        if let Some(reason) = d.malformed {
            self.malformed[reason.index()] += 1;
        }
    }

    /// Packets counted as malformed for `reason`.
    pub fn malformed(&self, reason: Malformed) -> u64 {
        self.malformed[reason.index()]
    }

    /// Malformed packets over all reasons.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }

    /// Every reason with its count, zeros included, in [`Malformed::ALL`] order.
    pub fn malformed_counts(&self) -> impl Iterator<Item = (Malformed, u64)> + '_ {
        Malformed::ALL.iter().map(|&m| (m, self.malformed(m)))
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &DecodeStats) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.vlan += other.vlan;
        self.arp += other.arp;
        self.ipv4 += other.ipv4;
        self.ipv6 += other.ipv6;
        self.ipv4_fragments += other.ipv4_fragments;
        self.ipv6_fragments += other.ipv6_fragments;
        self.tcp += other.tcp;
        self.udp += other.udp;
        self.icmp += other.icmp;
        self.icmpv6 += other.icmpv6;
        self.dns += other.dns;
        self.http += other.http;
        self.tls_client_hello += other.tls_client_hello;
        for (mine, theirs) in self.malformed.iter_mut().zip(other.malformed) {
            *mine += theirs;
        }
    }
}

/// Entry point for the `packet_decode` fuzz target: arbitrary bytes must not panic.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Decodes `data[1..]` with the link type chosen by `data[0]`, then exercises every lazy
    /// accessor (TCP options, TXT strings, ALPN, JA3, JA4) and the counters.
    pub fn packet_decode(data: &[u8]) {
        let Some((&selector, frame)) = data.split_first() else {
            return;
        };
        let link = match selector % 4 {
            0 => LinkType::Ethernet,
            1 => LinkType::LinuxSll,
            2 => LinkType::LinuxSll2,
            _ => LinkType::RawIp,
        };
        let decoded = decode(link, frame);
        let _ = decoded.five_tuple();
        let mut stats = DecodeStats::default();
        stats.record(&decoded);
        if let Some(L4::Tcp(tcp)) = &decoded.l4 {
            for option in tcp.options() {
                let _ = option;
            }
        }
        match &decoded.app {
            Some(App::TlsClientHello(hello)) => {
                let _ = hello.ja3();
                let _ = hello.ja4();
                let _ = hello.alpn().count();
            }
            Some(App::Dns(dns)) => {
                for answer in &dns.answers {
                    if let DnsData::Txt(txt) = &answer.data {
                        let _ = txt.strings().count();
                    }
                }
            }
            _ => {}
        }
        // The ClientHello parser also runs on reassembled bytes, so feed it directly too.
        if let Ok(Some(hello)) = tls::parse_client_hello(frame) {
            let _ = hello.ja3();
            let _ = hello.ja4();
        }
    }

    /// Feeds `data[1..]` straight to one application parser chosen by `data[0]`: DNS over UDP,
    /// DNS over TCP, HTTP, a TLS ClientHello (with JA3, JA4, ALPN, SNI) or ARP. Reaching them
    /// through [`packet_decode`] needs valid link, IP and transport headers and the right
    /// ports first, which a fuzzer rarely builds; here every byte lands in the parser.
    pub fn app_protocols(data: &[u8]) {
        let Some((&selector, payload)) = data.split_first() else {
            return;
        };
        match selector % 5 {
            0 => {
                if let Ok(dns) = dns::parse(payload) {
                    dns_accessors(&dns);
                }
            }
            1 => {
                if let Some(dns) = dns::parse_tcp(payload) {
                    dns_accessors(&dns);
                }
            }
            2 => {
                let _ = http::sniff(payload);
            }
            3 => {
                let _ = tls::looks_like_handshake(payload);
                let _ = tls::sniff(payload);
                if let Ok(Some(hello)) = tls::parse_client_hello(payload) {
                    let _ = hello.ja3();
                    let _ = hello.ja4();
                    let _ = hello.max_version();
                    let _ = hello.alpn().count();
                }
            }
            _ => {
                let _ = link::arp(payload);
            }
        }
    }

    fn dns_accessors(dns: &Dns<'_>) {
        for answer in &dns.answers {
            if let DnsData::Txt(txt) = &answer.data {
                let _ = txt.strings().count();
                let _ = txt.raw();
            }
        }
    }
}
