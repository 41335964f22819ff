//! TLS ClientHellos that span several TCP segments, put back together so SNI, ALPN, JA3 and JA4
//! are known for them too. Hellos carrying post-quantum key shares (X25519MLKEM768, ~1.2 KB) or
//! many extensions routinely exceed one segment; without this, exactly the modern clients would
//! escape the SNI and fingerprint lists.
//!
//! When the decoder sees a ClientHello record start that continues past the segment
//! ([`crate::decode::App::TlsClientHelloPartial`]), [`HelloAssembler::observe`] starts collecting
//! that direction of the flow, in sequence order (retransmissions and reordering handled by
//! [`HalfStream`]), until the record is complete; then it returns the record's bytes for
//! [`crate::decode::tls::parse_client_hello`]. State is bounded: at most `max_pending` hellos at
//! once (the oldest is dropped and counted when full), a record of at most 16 KiB + header, and a
//! hello not complete within `timeout` of capture time is dropped.

use rustc_hash::FxHashMap;

use crate::flow::FlowKey;
use crate::packet::{proto, AppMeta, PacketMeta};
use crate::reassembly::{HalfStream, Limits};

/// Largest record collected: a TLS record's length field allows 2^14 bytes of plaintext
/// (RFC 8446 §5.1), plus the 5-byte header.
const MAX_RECORD: usize = 16_384 + 5;

#[derive(Debug)]
struct Pending {
    stream: HalfStream,
    needed: usize,
    started: i64,
}

/// Collects split ClientHellos; see the module docs.
#[derive(Debug)]
pub struct HelloAssembler {
    pending: FxHashMap<(FlowKey, bool), Pending>,
    max_pending: usize,
    timeout_nanos: i64,
    completed: u64,
    dropped: u64,
}

impl HelloAssembler {
    /// At most `max_pending` hellos in progress; each must complete within `timeout_nanos` of
    /// capture time.
    pub fn new(max_pending: usize, timeout_nanos: i64) -> Self {
        HelloAssembler {
            pending: FxHashMap::default(),
            max_pending: max_pending.max(1),
            timeout_nanos,
            completed: 0,
            dropped: 0,
        }
    }

    /// Hellos completed from several segments so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Hellos given up (table full, timed out, or too large).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Hellos in progress.
    pub fn in_progress(&self) -> usize {
        self.pending.len()
    }

    /// Observes one packet. `partial` is `Some(needed)` when this packet's payload starts a
    /// ClientHello record of `needed` bytes that it does not hold whole. Returns the record's
    /// bytes once complete.
    pub fn observe(&mut self, p: &PacketMeta<'_>, partial: Option<usize>) -> Option<Vec<u8>> {
        if p.ip_proto != proto::TCP || p.payload.is_empty() {
            return None;
        }
        if partial.is_none() && self.pending.is_empty() {
            return None;
        }
        let (key, from_lo) = FlowKey::from_packet(p)?;
        let slot = (key, from_lo);
        if let Some(needed) = partial {
            if needed > MAX_RECORD {
                self.dropped += 1;
                return None;
            }
            if !self.pending.contains_key(&slot) && self.pending.len() >= self.max_pending {
                self.drop_oldest();
            }
            // A new record start replaces whatever was collected for this direction.
            self.pending.insert(
                slot,
                Pending {
                    stream: HalfStream::default(),
                    needed,
                    started: p.ts,
                },
            );
        }
        let pending = self.pending.get_mut(&slot)?;
        let limits = Limits {
            depth: pending.needed,
            max_out_of_order_bytes: pending.needed,
            overlap: 0,
        };
        pending.stream.on_data(p.tcp_seq, p.payload, &limits);
        if !pending.stream.is_complete(&limits) {
            return None;
        }
        let done = self.pending.remove(&slot)?;
        let mut stream = done.stream;
        let bytes = stream.take(&limits)?.data;
        self.completed += 1;
        Some(bytes)
    }

    /// Drops hellos that did not complete within the timeout.
    pub fn expire(&mut self, now: i64) {
        let timeout = self.timeout_nanos;
        let before = self.pending.len();
        self.pending
            .retain(|_, p| now.saturating_sub(p.started) < timeout);
        self.dropped += (before - self.pending.len()) as u64;
    }

    fn drop_oldest(&mut self) {
        if let Some(oldest) = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.started)
            .map(|(k, _)| *k)
        {
            self.pending.remove(&oldest);
            self.dropped += 1;
        }
    }
}

/// Sets the TLS facts of `app` from a complete ClientHello record. False when the bytes do not
/// hold a valid ClientHello (then `app` is unchanged).
pub fn fill_app(app: &mut AppMeta<'_>, record: &[u8]) -> bool {
    match crate::decode::tls::parse_client_hello(record) {
        Ok(Some(hello)) => {
            app.protocol = Some("tls");
            app.tls_sni = hello.server_name.map(str::to_ascii_lowercase);
            app.tls_ja3 = Some(hello.ja3().hash);
            app.tls_ja4 = Some(hello.ja4());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{ip, tcp, SEC, T0};
    use crate::packet::tcp_flags::{ACK, PSH};

    /// A ClientHello record with SNI `name` and `padding` bytes of padding extension, so it can
    /// be made larger than a segment.
    fn client_hello(name: &str, padding: usize) -> Vec<u8> {
        let mut ext = Vec::new();
        // server_name
        let host = name.as_bytes();
        let mut sni = Vec::new();
        sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
        sni.extend_from_slice(host);
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        ext.extend_from_slice(&sni);
        // padding (21)
        ext.extend_from_slice(&21u16.to_be_bytes());
        ext.extend_from_slice(&(padding as u16).to_be_bytes());
        ext.extend(std::iter::repeat_n(0u8, padding));
        let mut body = Vec::new();
        body.extend_from_slice(&0x0303u16.to_be_bytes());
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&4u16.to_be_bytes());
        body.extend_from_slice(&[0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]); // compression: null
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1u8];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![22u8, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    fn segment(ts: i64, seq: u32, data: &'static [u8]) -> PacketMeta<'static> {
        let mut p = tcp(ts, ip(10, 0, 0, 1), ip(10, 0, 0, 2), 40_000, 443, PSH | ACK);
        p.tcp_seq = seq;
        p.payload = data;
        p
    }

    fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }

    #[test]
    fn a_hello_split_over_three_segments_out_of_order_is_rebuilt() {
        let rec = client_hello("portal.gov.example", 2_500);
        assert!(crate::decode::tls::parse_client_hello(&rec[..1000])
            .unwrap()
            .is_none());
        let (a, b, c) = (
            leak(rec[..1000].to_vec()),
            leak(rec[1000..2000].to_vec()),
            leak(rec[2000..].to_vec()),
        );
        let mut h = HelloAssembler::new(16, 10 * SEC);
        assert!(h.observe(&segment(T0, 1, a), Some(rec.len())).is_none());
        assert!(h.observe(&segment(T0 + 1, 2001, c), None).is_none());
        let got = h.observe(&segment(T0 + 2, 1001, b), None).unwrap();
        assert_eq!(got, rec);
        let mut app = AppMeta::default();
        assert!(fill_app(&mut app, &got));
        assert_eq!(app.tls_sni.as_deref(), Some("portal.gov.example"));
        assert!(app.tls_ja3.is_some() && app.tls_ja4.is_some());
        assert_eq!((h.completed(), h.in_progress()), (1, 0));
    }

    #[test]
    fn the_pipeline_matches_the_sni_of_a_split_hello_against_the_ioc_list() {
        use crate::capture::craft::{self, Endpoint};
        use crate::capture::RawPacket;
        use crate::pipeline::{DetectConfig, NetCounters, Pipeline};

        let rec = client_hello("beacon.example.net", 3_000);
        let c = Endpoint::new(ip(10, 0, 0, 1), 40_000);
        let s = Endpoint::new(ip(198, 51, 100, 7), 443);
        let frames = [
            (T0, craft::tcp(c, s, craft::SYN, 99, 0, b"")),
            (
                T0 + 1,
                craft::tcp(c, s, craft::PSH | craft::ACK, 100, 1, &rec[..1400]),
            ),
            (
                T0 + 2,
                craft::tcp(c, s, craft::PSH | craft::ACK, 1500, 1, &rec[1400..2800]),
            ),
            (
                T0 + 3,
                craft::tcp(c, s, craft::PSH | craft::ACK, 2900, 1, &rec[2800..]),
            ),
        ];
        let mut detect = DetectConfig::default();
        detect.ioc.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../signatures/net");
        detect.ioc.watch = false;
        detect.yara.enabled = false;
        let mut p = Pipeline::new(
            &Default::default(),
            &detect,
            "probe-1",
            1,
            std::sync::Arc::new(NetCounters::default()),
        )
        .unwrap();
        let mut out = Vec::new();
        for (ts, frame) in &frames {
            p.process(
                RawPacket {
                    ts: *ts,
                    wire_len: frame.len() as u32,
                    data: frame,
                },
                &mut out,
            );
        }
        p.finish(T0 + 5 * SEC, &mut out);
        let ids: Vec<_> = out
            .iter()
            .filter_map(|e| e.rule.as_ref().and_then(|r| r.id.clone()))
            .collect();
        assert!(ids.iter().any(|i| i == "palisade.net.ioc.sni"), "{ids:?}");
    }

    #[test]
    fn bounded_by_count_time_and_size() {
        let mut h = HelloAssembler::new(2, 5 * SEC);
        let start = leak(vec![22, 3, 1, 4, 0, 1, 0, 3, 252]);
        for i in 0..3u16 {
            let mut p = segment(T0 + i64::from(i), 1, start);
            p.src_port = 40_000 + i;
            assert!(h.observe(&p, Some(1029)).is_none());
        }
        assert_eq!((h.in_progress(), h.dropped()), (2, 1));
        h.expire(T0 + 10 * SEC);
        assert_eq!((h.in_progress(), h.dropped()), (0, 3));
        assert!(h
            .observe(&segment(T0, 1, start), Some(MAX_RECORD + 1))
            .is_none());
        assert_eq!(h.dropped(), 4);
    }

    #[test]
    fn garbage_that_completes_is_not_a_hello() {
        let mut h = HelloAssembler::new(4, SEC);
        let first = leak(vec![22, 3, 1, 0, 10, 1, 0, 0]);
        assert!(h.observe(&segment(T0, 1, first), Some(15)).is_none());
        let got = h
            .observe(&segment(T0, 9, leak(vec![0xff; 7])), None)
            .unwrap();
        let mut app = AppMeta::default();
        assert!(!fill_app(&mut app, &got));
        assert_eq!(app, AppMeta::default());
    }
}
