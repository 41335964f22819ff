//! Community ID v1 flow hashing (<https://github.com/corelight/community-id-spec>), so a flow
//! record can be joined with Zeek, Suricata or Elastic data about the same connection.
//!
//! `"1:" + base64(sha1(seed . saddr . daddr . proto . 0 . sport . dport))`, all in network byte
//! order, with the endpoints swapped so the lower `(ip, port)` comes first. ICMP and ICMPv6
//! type/code become ports as Zeek maps them; a one-way ICMP message is never swapped. Ports
//! are hashed only for TCP, UDP, SCTP and the ICMPs.

use std::net::IpAddr;

use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::key::{has_ports, icmp_ports, is_icmp};

/// The community id of a packet or flow from `saddr:sport` to `daddr:dport` over IP protocol
/// `ip_proto`, with `seed` (0 unless the deployment agreed on another). For ICMP/ICMPv6 pass
/// the message type as `sport` and the code as `dport`, as [`crate::packet::PacketMeta`] does.
/// `None` when the two addresses are of different families.
pub fn community_id_v1(
    seed: u16,
    saddr: IpAddr,
    daddr: IpAddr,
    sport: u16,
    dport: u16,
    ip_proto: u8,
) -> Option<String> {
    let v6 = saddr.is_ipv6();
    if v6 != daddr.is_ipv6() {
        return None;
    }
    let (sport, dport, one_way) = if is_icmp(ip_proto, v6) {
        icmp_ports(sport, dport, v6)
    } else {
        (sport, dport, false)
    };
    Some(hash_mapped(
        seed, saddr, daddr, sport, dport, ip_proto, one_way,
    ))
}

/// The hash for ports already mapped (ICMP type/counterpart or type/code); `one_way` keeps the
/// endpoints in the given order. Addresses must be of one family (callers check).
pub(crate) fn hash_mapped(
    seed: u16,
    saddr: IpAddr,
    daddr: IpAddr,
    sport: u16,
    dport: u16,
    ip_proto: u8,
    one_way: bool,
) -> String {
    let ports = has_ports(ip_proto);
    let (sport, dport) = if ports { (sport, dport) } else { (0, 0) };
    let s = address_bytes(&saddr);
    let d = address_bytes(&daddr);
    let ordered = one_way || (s.as_slice(), sport) <= (d.as_slice(), dport);
    let (first, second, first_port, second_port) = if ordered {
        (&s, &d, sport, dport)
    } else {
        (&d, &s, dport, sport)
    };
    let mut sha = Sha1::new();
    sha.update(seed.to_be_bytes());
    sha.update(first.as_slice());
    sha.update(second.as_slice());
    sha.update([ip_proto, 0]);
    if ports {
        sha.update(first_port.to_be_bytes());
        sha.update(second_port.to_be_bytes());
    }
    let digest = sha.finalize();
    let mut id = String::with_capacity(30);
    id.push_str("1:");
    base64::engine::general_purpose::STANDARD.encode_string(digest, &mut id);
    id
}

/// 4 or 16 address bytes in network order.
enum AddressBytes {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl AddressBytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            AddressBytes::V4(b) => b,
            AddressBytes::V6(b) => b,
        }
    }
}

fn address_bytes(ip: &IpAddr) -> AddressBytes {
    match ip {
        IpAddr::V4(v4) => AddressBytes::V4(v4.octets()),
        IpAddr::V6(v6) => AddressBytes::V6(v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seed: u16, s: &str, d: &str, sport: u16, dport: u16, ip_proto: u8) -> String {
        community_id_v1(
            seed,
            s.parse().unwrap(),
            d.parse().unwrap(),
            sport,
            dport,
            ip_proto,
        )
        .unwrap()
    }

    /// The examples from the spec's README and the Zeek package's test (seed 0 and 1).
    #[test]
    fn spec_examples() {
        let cases: &[(u16, &str, &str, u16, u16, u8, &str)] = &[
            (
                0,
                "1.2.3.4",
                "5.6.7.8",
                1122,
                3344,
                6,
                "1:wCb3OG7yAFWelaUydu0D+125CLM=",
            ),
            (
                0,
                "5.6.7.8",
                "1.2.3.4",
                3344,
                1122,
                6,
                "1:wCb3OG7yAFWelaUydu0D+125CLM=",
            ),
            (
                0,
                "1.2.3.4",
                "5.6.7.8",
                1122,
                3344,
                17,
                "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
            ),
            (
                0,
                "5.6.7.8",
                "1.2.3.4",
                3344,
                1122,
                17,
                "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
            ),
            (
                0,
                "1.2.3.4",
                "5.6.7.8",
                8,
                0,
                1,
                "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
            ),
            (
                0,
                "5.6.7.8",
                "1.2.3.4",
                0,
                0,
                1,
                "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
            ),
            (
                0,
                "fe80:1:203:405:607:809:a0b:c0d",
                "fe80:1011:1213:1415:1617:1819:1a1b:1c1d",
                128,
                0,
                58,
                "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=",
            ),
            (
                1,
                "1.2.3.4",
                "5.6.7.8",
                1122,
                3344,
                6,
                "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=",
            ),
            (
                1,
                "1.2.3.4",
                "5.6.7.8",
                1122,
                3344,
                17,
                "1:OShq+iKDAMVouh/4bMxB9Sz4amw=",
            ),
            (
                1,
                "1.2.3.4",
                "5.6.7.8",
                8,
                0,
                1,
                "1:9pr4ZGTICiuZoIh90RRYE2RyXpU=",
            ),
            (
                0,
                "1.2.3.4",
                "5.6.7.8",
                0,
                0,
                46,
                "1:ikv3kmf89luf73WPz1jOs49S768=",
            ),
        ];
        for &(seed, s, d, sport, dport, ip_proto, want) in cases {
            assert_eq!(
                id(seed, s, d, sport, dport, ip_proto),
                want,
                "seed {seed} {s}:{sport} -> {d}:{dport} proto {ip_proto}"
            );
        }
    }

    /// The spec's `baseline/baseline_deflt.json` (seed 0). Its ICMP "ports" are already mapped
    /// (type, counterpart) or (type, code), so these go through [`hash_mapped`] directly.
    #[test]
    fn spec_baseline_default_seed() {
        let cases: &[(u8, &str, &str, u16, u16, &str)] = &[
            (
                58,
                "fe80::200:86ff:fe05:80da",
                "fe80::260:97ff:fe07:69ea",
                135,
                136,
                "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
            ),
            (
                58,
                "fe80::260:97ff:fe07:69ea",
                "fe80::200:86ff:fe05:80da",
                136,
                135,
                "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
            ),
            (
                58,
                "fe80::260:97ff:fe07:69ea",
                "fe80::200:86ff:fe05:80da",
                135,
                136,
                "1:zavyT/cezQr1fmImYCwYnMXbgck=",
            ),
            (
                58,
                "fe80::200:86ff:fe05:80da",
                "fe80::260:97ff:fe07:69ea",
                136,
                135,
                "1:zavyT/cezQr1fmImYCwYnMXbgck=",
            ),
            (
                58,
                "3ffe:501:1800:2345::2",
                "3ffe:507:0:1:200:86ff:fe05:80da",
                3,
                0,
                "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=",
            ),
            (
                58,
                "3ffe:501:410:0:2c0:dfff:fe47:33e",
                "3ffe:507:0:1:200:86ff:fe05:80da",
                1,
                4,
                "1:hLZd0XGWojozrvxqE0dWB1iM6R0=",
            ),
            (
                58,
                "3ffe:507:0:1:200:86ff:fe05:80da",
                "3ffe:501:0:1001::2",
                128,
                129,
                "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=",
            ),
            (
                58,
                "3ffe:501:0:1001::2",
                "3ffe:507:0:1:200:86ff:fe05:80da",
                129,
                128,
                "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=",
            ),
            (
                58,
                "fe80::200:86ff:fe05:80da",
                "ff02::2",
                133,
                134,
                "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=",
            ),
            (
                58,
                "fe80::260:97ff:fe07:69ea",
                "ff02::1",
                134,
                133,
                "1:pkvHqCL88/tg1k4cPigmZXUtL00=",
            ),
            (
                1,
                "192.168.0.89",
                "192.168.0.1",
                8,
                0,
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
            ),
            (
                1,
                "192.168.0.1",
                "192.168.0.89",
                0,
                8,
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
            ),
            (
                1,
                "10.0.0.1",
                "10.0.0.2",
                11,
                0,
                "1:YHxtAirCG//0OzkcVAukqKQN9xM=",
            ),
            (
                6,
                "2001:470:e5bf:dead:4957:2174:e82c:4887",
                "2607:f8b0:400c:c03::1a",
                63943,
                25,
                "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
            ),
            (
                6,
                "2607:f8b0:400c:c03::1a",
                "2001:470:e5bf:dead:4957:2174:e82c:4887",
                25,
                63943,
                "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
            ),
            (
                132,
                "192.168.170.8",
                "192.168.170.56",
                7,
                7,
                "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=",
            ),
            (
                132,
                "192.168.170.56",
                "192.168.170.8",
                7,
                7,
                "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=",
            ),
            (
                6,
                "128.232.110.120",
                "66.35.250.204",
                34855,
                80,
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            ),
            (
                6,
                "66.35.250.204",
                "128.232.110.120",
                80,
                34855,
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            ),
            (
                17,
                "192.168.1.52",
                "8.8.8.8",
                54585,
                53,
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            ),
            (
                17,
                "8.8.8.8",
                "192.168.1.52",
                53,
                54585,
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            ),
            (
                46,
                "10.1.12.1",
                "10.1.12.2",
                0,
                0,
                "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=",
            ),
            (
                46,
                "10.1.12.2",
                "10.1.12.1",
                0,
                0,
                "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=",
            ),
        ];
        for &(ip_proto, s, d, sport, dport, want) in cases {
            let (saddr, daddr): (IpAddr, IpAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let one_way = super::super::key::is_icmp(ip_proto, saddr.is_ipv6())
                && super::super::key::icmp_one_way(sport, saddr.is_ipv6());
            assert_eq!(
                hash_mapped(0, saddr, daddr, sport, dport, ip_proto, one_way),
                want,
                "{s}:{sport} -> {d}:{dport} proto {ip_proto}"
            );
        }
    }

    #[test]
    fn icmp_replies_hash_like_their_requests() {
        // Neighbor advertisement (136) from the target answers a solicitation (135).
        assert_eq!(
            id(
                0,
                "fe80::260:97ff:fe07:69ea",
                "fe80::200:86ff:fe05:80da",
                136,
                0,
                58
            ),
            "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="
        );
        // Echo reply from the lower address.
        assert_eq!(
            id(0, "192.168.0.1", "192.168.0.89", 0, 0, 1),
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
        );
    }

    #[test]
    fn mixed_families_have_no_id() {
        assert!(community_id_v1(
            0,
            "1.2.3.4".parse().unwrap(),
            "::1".parse().unwrap(),
            1,
            2,
            6
        )
        .is_none());
    }
}
