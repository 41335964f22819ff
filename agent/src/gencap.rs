//! `palisade-agent gen-capture`: writes a synthetic mixed capture for benchmarks — many TCP
//! flows (handshake, request, responses of mixed sizes, close), DNS lookups, and a sprinkle of
//! scans — with a realistic size mix (small ACKs, mid-size requests, full-size data segments).
//! Deterministic for a given seed, so runs are comparable.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::capture::craft::{self, Endpoint, ACK, FIN, PSH, SYN};
use crate::capture::writer::PcapWriter;

/// What was written.
#[derive(Debug, Clone, Copy)]
pub struct GenReport {
    /// Packets written.
    pub packets: u64,
    /// Bytes of frames written.
    pub bytes: u64,
    /// TCP flows.
    pub flows: u64,
}

/// Writes about `target_bytes` of traffic in `flows` concurrent-ish TCP flows plus DNS.
pub fn generate(
    path: &Path,
    target_bytes: u64,
    flows: u64,
    seed: u64,
) -> std::io::Result<GenReport> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut w = PcapWriter::create(path)?;
    let mut report = GenReport {
        packets: 0,
        bytes: 0,
        flows: 0,
    };
    let payload = vec![b'x'; 1460];
    let t0: i64 = 1_700_000_000 * 1_000_000_000;
    let mut t = t0;
    let put = |w: &mut PcapWriter, t: i64, f: Vec<u8>, r: &mut GenReport| -> std::io::Result<()> {
        r.packets += 1;
        r.bytes += f.len() as u64;
        w.write(t, &f)
    };
    let mut i = 0u64;
    while report.bytes < target_bytes {
        let n = i % flows.max(1);
        let client = Endpoint::new(
            Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8),
            10_000 + (i % 50_000) as u16,
        );
        let server = Endpoint::new(
            Ipv4Addr::new(10, 200, (n % 250) as u8, 1),
            [80u16, 443, 8080, 25][(n % 4) as usize],
        );
        t += 20_000;
        put(
            &mut w,
            t,
            craft::tcp(client, server, SYN, 1, 0, b""),
            &mut report,
        )?;
        put(
            &mut w,
            t + 100_000,
            craft::tcp(server, client, SYN | ACK, 1, 2, b""),
            &mut report,
        )?;
        put(
            &mut w,
            t + 200_000,
            craft::tcp(client, server, ACK, 2, 2, b""),
            &mut report,
        )?;
        let req = format!(
            "GET /item/{i} HTTP/1.1\r\nHost: svc{}.example.gov.cn\r\nUser-Agent: bench\r\n\r\n",
            n % 100
        );
        put(
            &mut w,
            t + 300_000,
            craft::tcp(client, server, PSH | ACK, 2, 2, req.as_bytes()),
            &mut report,
        )?;
        // Response: 1-12 segments of mixed sizes, each acknowledged every other segment.
        let segments = 1 + rng.u32(0..12);
        let mut seq = 2u32;
        for s in 0..segments {
            let size = match rng.u32(0..10) {
                0..=5 => 1460,
                6..=7 => 576,
                _ => 120,
            } as usize;
            put(
                &mut w,
                t + 400_000 + i64::from(s) * 50_000,
                craft::tcp(server, client, ACK, seq, 200, &payload[..size]),
                &mut report,
            )?;
            seq = seq.wrapping_add(size as u32);
            if s % 2 == 1 {
                put(
                    &mut w,
                    t + 420_000 + i64::from(s) * 50_000,
                    craft::tcp(client, server, ACK, 200, seq, b""),
                    &mut report,
                )?;
            }
        }
        put(
            &mut w,
            t + 2_000_000,
            craft::tcp(client, server, FIN | ACK, 200, seq, b""),
            &mut report,
        )?;
        put(
            &mut w,
            t + 2_100_000,
            craft::tcp(server, client, FIN | ACK, seq, 201, b""),
            &mut report,
        )?;
        put(
            &mut w,
            t + 2_200_000,
            craft::tcp(client, server, ACK, 201, seq + 1, b""),
            &mut report,
        )?;
        if i % 4 == 0 {
            let q = craft::dns_query(i as u16, &format!("host{}.example.gov.cn", n % 500), 1);
            let c = Endpoint::new(client.ip, 30_000 + (i % 30_000) as u16);
            put(
                &mut w,
                t + 10_000,
                craft::udp(c, Endpoint::new(Ipv4Addr::new(10, 200, 0, 53), 53), &q),
                &mut report,
            )?;
        }
        report.flows += 1;
        i += 1;
    }
    w.finish()?;
    Ok(report)
}
