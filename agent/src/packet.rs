//! `PacketMeta`: the normalized view of one decoded packet that the flow table and the detectors
//! consume. The capture pipeline fills it from the decoder's output, so flows and detectors do not
//! depend on how packets were parsed. Borrowed from the packet buffer; no allocation per packet.

use std::net::{IpAddr, Ipv4Addr};

/// IP protocol numbers the probe distinguishes.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// TCP flag bits (as in the TCP header's flags byte).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
}

/// An ARP packet's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpMeta {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sender_mac: [u8; 6],
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: [u8; 6],
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// One DNS question or answer name with its record type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    /// The name, lowercase, without the trailing dot.
    pub name: String,
    /// Record type (1 A, 16 TXT, 10 NULL, 28 AAAA, …).
    pub rtype: u16,
}

/// Application-layer facts the detectors use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppMeta<'a> {
    /// `dns`, `http`, `tls`, … when recognised.
    pub protocol: Option<&'static str>,
    /// DNS questions (queries and responses).
    pub dns_questions: Vec<DnsName>,
    /// DNS response code, for responses.
    pub dns_rcode: Option<u8>,
    /// DNS: true for a response.
    pub dns_response: bool,
    /// HTTP Host header.
    pub http_host: Option<&'a str>,
    /// HTTP request target.
    pub http_uri: Option<&'a str>,
    /// HTTP method.
    pub http_method: Option<&'a str>,
    /// HTTP User-Agent.
    pub http_user_agent: Option<&'a str>,
    /// HTTP response status.
    pub http_status: Option<u16>,
    /// TLS ClientHello server name.
    pub tls_sni: Option<String>,
    /// TLS ClientHello JA3 hash (md5 hex).
    pub tls_ja3: Option<String>,
    /// TLS ClientHello JA4 fingerprint.
    pub tls_ja4: Option<String>,
}

/// One packet, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketMeta<'a> {
    /// Capture timestamp, nanoseconds since the epoch (the capture's own clock on replay).
    pub ts: i64,
    /// Length on the wire.
    pub wire_len: u32,
    /// Outer VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// Ethernet source, when the link has one.
    pub src_mac: Option<[u8; 6]>,
    /// Ethernet destination.
    pub dst_mac: Option<[u8; 6]>,
    /// ARP contents, for ARP packets.
    pub arp: Option<ArpMeta>,
    /// IP source (None for non-IP).
    pub src_ip: Option<IpAddr>,
    /// IP destination.
    pub dst_ip: Option<IpAddr>,
    /// IP protocol number (see [`proto`]).
    pub ip_proto: u8,
    /// Transport source port (0 when none; ICMP: type).
    pub src_port: u16,
    /// Transport destination port (0 when none; ICMP: code).
    pub dst_port: u16,
    /// TCP flags (see [`tcp_flags`]); 0 otherwise.
    pub tcp_flags: u8,
    /// TCP sequence number (for stream reassembly); 0 otherwise.
    pub tcp_seq: u32,
    /// Transport payload (empty when none or not captured).
    pub payload: &'a [u8],
    /// True for a non-first IPv4/IPv6 fragment (no transport header).
    pub fragment: bool,
    /// Application facts.
    pub app: AppMeta<'a>,
}

impl<'a> PacketMeta<'a> {
    /// An empty packet at `ts` (for building in tests and adapters).
    pub fn empty(ts: i64) -> Self {
        PacketMeta {
            ts,
            wire_len: 0,
            vlan: None,
            src_mac: None,
            dst_mac: None,
            arp: None,
            src_ip: None,
            dst_ip: None,
            ip_proto: 0,
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            tcp_seq: 0,
            payload: &[],
            fragment: false,
            app: AppMeta::default(),
        }
    }

    /// Whether this is TCP with exactly these flag bits among SYN/FIN/RST/ACK/PSH/URG.
    pub fn tcp_flags_are(&self, flags: u8) -> bool {
        self.ip_proto == proto::TCP && self.tcp_flags & 0x3f == flags
    }
}

/// Formats a MAC as ECS writes it (`AA-BB-CC-DD-EE-FF`).
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join("-")
}
