//! The demo scenario: ordinary traffic of a small government segment, and one of each attack the
//! network detectors look for, written as a pcap. The quickstart replays it into the collector so a
//! newcomer sees real detections; the end-to-end tests replay it and check every detector fires
//! on the attacks and none on the ordinary traffic.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::capture::craft::{self, Endpoint, ACK, FIN, PSH, RST, SYN};
use crate::capture::writer::PcapWriter;

const MS: i64 = 1_000_000;
const SEC: i64 = 1_000_000_000;

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// Rule ids the attack half of the scenario must raise (DNS tunnelling raises one of several
/// `palisade.net.dns_tunnel.*` ids, checked separately).
pub const EXPECTED_ALERTS: [&str; 9] = [
    "palisade.net.port_scan.vertical",
    "palisade.net.flood.syn",
    "palisade.net.arp_spoof.mac_change",
    "palisade.net.ioc.domain",
    "palisade.net.pii.id_card",
    "palisade.net.pii.mobile",
    "palisade.net.pii.bank_card",
    "palisade.net.beacon.periodic",
    "palisade.net.yara.webshell_upload",
];

/// Writes the scenario to `path`: ordinary traffic from `t0` (ns since the epoch), with the
/// attacks when `with_attacks`, starting 200 s later.
pub fn write(path: &Path, t0: i64, with_attacks: bool) -> io::Result<()> {
    let mut w = PcapWriter::create(path)?;
    benign(&mut w, t0)?;
    if with_attacks {
        attacks(&mut w, t0 + 200 * SEC)?;
    }
    w.finish()
}

/// A valid mainland resident ID number (GB 11643 check digit computed here).
pub fn id_number(base17: &str) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = base17
        .chars()
        .zip(W)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{base17}{check}")
}

/// A Luhn-valid card number: `prefix` plus its check digit.
pub fn card_number(prefix: &str) -> String {
    let sum: u32 = prefix
        .chars()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = c.to_digit(10).unwrap_or(0);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    format!("{prefix}{}", (10 - sum % 10) % 10)
}

/// Mobile numbers posted in the clear by the PII attack.
pub const PHONES: [&str; 6] = [
    "13812345678",
    "13987654321",
    "15011112222",
    "18600001111",
    "17722223333",
    "19933334444",
];

/// An ordinary HTTP exchange with a full handshake and close.
fn http_flow(
    w: &mut PcapWriter,
    t: i64,
    c: Endpoint,
    s: Endpoint,
    request: &[u8],
) -> io::Result<()> {
    w.write(t, &craft::tcp(c, s, SYN, 100, 0, b""))?;
    w.write(t + MS, &craft::tcp(s, c, SYN | ACK, 500, 101, b""))?;
    w.write(t + 2 * MS, &craft::tcp(c, s, ACK, 101, 501, b""))?;
    w.write(t + 3 * MS, &craft::tcp(c, s, PSH | ACK, 101, 501, request))?;
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    w.write(
        t + 5 * MS,
        &craft::tcp(s, c, PSH | ACK, 501, 101 + request.len() as u32, resp),
    )?;
    w.write(
        t + 6 * MS,
        &craft::tcp(
            c,
            s,
            FIN | ACK,
            101 + request.len() as u32,
            501 + resp.len() as u32,
            b"",
        ),
    )?;
    w.write(
        t + 7 * MS,
        &craft::tcp(
            s,
            c,
            FIN | ACK,
            501 + resp.len() as u32,
            102 + request.len() as u32,
            b"",
        ),
    )?;
    w.write(
        t + 8 * MS,
        &craft::tcp(
            c,
            s,
            ACK,
            102 + request.len() as u32,
            502 + resp.len() as u32,
            b"",
        ),
    )?;
    Ok(())
}

/// Ordinary traffic: HTTP exchanges and DNS lookups over 140 s, and a gateway ARP reply.
pub fn benign(w: &mut PcapWriter, t: i64) -> io::Result<()> {
    for i in 0..20u16 {
        let c = Endpoint::new(ip(10, 1, 0, 10 + (i % 5) as u8), 50_000 + i);
        let s = Endpoint::new(ip(10, 1, 0, 20), 80);
        let req = format!("GET /page/{i} HTTP/1.1\r\nHost: www.gov.cn\r\nUser-Agent: test\r\n\r\n");
        http_flow(w, t + i64::from(i) * 7 * SEC, c, s, req.as_bytes())?;
        let q = craft::dns_query(i, "www.gov.cn", 1);
        w.write(
            t + i64::from(i) * 7 * SEC + 100 * MS,
            &craft::udp(
                Endpoint::new(ip(10, 1, 0, 10), 40_000 + i),
                Endpoint::new(ip(10, 1, 0, 53), 53),
                &q,
            ),
        )?;
    }
    let mac = craft::mac_for(ip(10, 1, 0, 1).into());
    w.write(
        t + 3 * SEC,
        &craft::arp(
            2,
            mac,
            ip(10, 1, 0, 1),
            craft::mac_for(ip(10, 1, 0, 10).into()),
            ip(10, 1, 0, 10),
        ),
    )?;
    Ok(())
}

/// One of each attack the detectors look for, over about 1,300 s from `t`.
pub fn attacks(w: &mut PcapWriter, t: i64) -> io::Result<()> {
    let victim = ip(10, 1, 0, 20);
    // 1. Vertical SYN scan: 300 ports in 3 s, answered by RSTs.
    for port in 1..=300u16 {
        let a = Endpoint::new(ip(10, 1, 0, 66), 61_000);
        let v = Endpoint::new(victim, port);
        let ts = t + i64::from(port) * 10 * MS;
        w.write(ts, &craft::tcp(a, v, SYN, 1, 0, b""))?;
        w.write(ts + MS, &craft::tcp(v, a, RST | ACK, 0, 2, b""))?;
    }
    // 2. SYN flood: 12,000 SYNs from spoofed sources to one port in 2.4 s (5,000/s).
    for i in 0..12_000u32 {
        let src = Endpoint::new(
            ip(172, 16, (i / 250) as u8, (i % 250) as u8 + 1),
            1024 + (i % 60_000) as u16,
        );
        w.write(
            t + 10 * SEC + i64::from(i) * 200_000,
            &craft::tcp(src, Endpoint::new(victim, 443), SYN, i, 0, b""),
        )?;
    }
    // 3. ARP spoofing: the gateway's IP moves to another MAC.
    let gw = ip(10, 1, 0, 1);
    let real = craft::mac_for(gw.into());
    let evil = [0x02, 0xba, 0xd0, 0x00, 0x00, 0x66];
    let host = ip(10, 1, 0, 10);
    w.write(
        t + 20 * SEC,
        &craft::arp(2, real, gw, craft::mac_for(host.into()), host),
    )?;
    w.write(
        t + 21 * SEC,
        &craft::arp(2, evil, gw, craft::mac_for(host.into()), host),
    )?;
    // 4. DNS tunnelling: 200 high-entropy subdomains of one domain.
    let mut state = 0x9e37_79b9_u32;
    for i in 0..200u16 {
        let label: String = (0..40)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                b"abcdefghijklmnopqrstuvwxyz0123456789"[(state % 36) as usize] as char
            })
            .collect();
        let q = craft::dns_query(i, &format!("{label}.t.tunnelco.example"), 16);
        w.write(
            t + 30 * SEC + i64::from(i) * 100 * MS,
            &craft::udp(
                Endpoint::new(ip(10, 1, 0, 30), 30_000 + i),
                Endpoint::new(ip(10, 1, 0, 53), 53),
                &q,
            ),
        )?;
    }
    // 5. IOC: a lookup of a listed command-and-control domain.
    let q = craft::dns_query(7, "beacon.c2.example.net", 1);
    w.write(
        t + 60 * SEC,
        &craft::udp(
            Endpoint::new(ip(10, 1, 0, 31), 33_333),
            Endpoint::new(ip(10, 1, 0, 53), 53),
            &q,
        ),
    )?;
    // 6. Sensitive data in clear text: an ID number, a card and a list of phone numbers
    //    posted over HTTP.
    let body = format!(
        "name=zhang&id={}&card={}&contacts={}",
        id_number("11010519491231002"),
        card_number("622202020011223344"),
        PHONES.join(",")
    );
    let req = format!(
        "POST /apply HTTP/1.1\r\nHost: portal.example.gov.cn\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_flow(
        w,
        t + 70 * SEC,
        Endpoint::new(ip(10, 1, 0, 40), 55_555),
        Endpoint::new(ip(10, 9, 0, 80), 80),
        req.as_bytes(),
    )?;
    // 7. Beaconing: a connection to the same host:port every 60 s (±0.5 s), 20 times.
    for i in 0..20i64 {
        let jitter = if i % 2 == 0 { 500 * MS } else { -400 * MS };
        let ts = t + 100 * SEC + i * 60 * SEC + jitter;
        let c = Endpoint::new(ip(10, 1, 0, 50), 40_000 + i as u16);
        let s = Endpoint::new(ip(198, 18, 0, 9), 8443);
        w.write(ts, &craft::tcp(c, s, SYN, 1, 0, b""))?;
        w.write(ts + 20 * MS, &craft::tcp(s, c, SYN | ACK, 1, 2, b""))?;
        w.write(ts + 40 * MS, &craft::tcp(c, s, ACK, 2, 2, b""))?;
        w.write(ts + 60 * MS, &craft::tcp(c, s, FIN | ACK, 2, 2, b""))?;
        w.write(ts + 80 * MS, &craft::tcp(s, c, FIN | ACK, 2, 3, b""))?;
    }
    // 8. A web attack in a request body: a webshell upload, matched by the shipped YARA rules.
    let upload = "POST /upload.php HTTP/1.1\r\nHost: portal\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"logo.php\"\r\n\r\n<?php system($_POST['c']); ?>\r\n--b--\r\n";
    http_flow(
        w,
        t + 1_300 * SEC,
        Endpoint::new(ip(10, 1, 0, 77), 51_000),
        Endpoint::new(victim, 80),
        upload.as_bytes(),
    )?;
    Ok(())
}
