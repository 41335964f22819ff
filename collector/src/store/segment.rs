//! Segments: the unit of storage. One segment holds a run of one agent's events from one day,
//! spanning at most [`MAX_SPAN_NANOS`] of event time, as zstd-compressed NDJSON behind a small
//! header that lets queries skip it without decompressing (time range, kinds, severities).
//!
//! Key in the day tree: `b'S' | ts_min(8) | agent_len(1) | agent | first_seq(8)`, so a range scan
//! over keys is a scan in time order. `ts` is nanoseconds with the sign bit flipped (big-endian
//! order = time order).
//!
//! Value: `version(1)=1 | count(4) | ts_min(8) | ts_max(8) | kinds(4) | severities(1) |
//! first_seq(8) | last_seq(8) | raw_len(4) | zstd(NDJSON)`.
//!
//! Kind index: for each kind in [`indexed`] a segment holds, the day tree also has
//! `b'K' | kind_code(1) | <the segment key without its b'S'>` with the same value, so a look-up by
//! one of those kinds walks only the segments that hold it, in time order.

use std::io;

use palisade_wire::EventKind;

/// A segment never spans more event time than this, so a query can bound how far before its
/// window a segment holding matching events may start.
pub const MAX_SPAN_NANOS: i64 = 3_600 * 1_000_000_000;

pub(crate) const HEADER_LEN: usize = 1 + 4 + 8 + 8 + 4 + 1 + 8 + 8 + 4;

pub(crate) fn ts_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// Key of a segment.
pub(crate) fn key(ts_min: i64, agent: &str, first_seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(18 + agent.len());
    k.push(b'S');
    k.extend_from_slice(&ts_bytes(ts_min));
    // Agent ids are at most 64 bytes (checked when the batch is decoded).
    k.push(agent.len() as u8);
    k.extend_from_slice(agent.as_bytes());
    k.extend_from_slice(&first_seq.to_be_bytes());
    k
}

/// Kinds with a kind index: what agents report now and then about their host and site
/// (heartbeats, gaps, integrity and malware findings, replication runs, drills), looked up by kind
/// over hours to a month (`situation`, `events --kind`). Traffic kinds (flows, alerts, auth,
/// synthetic) are in most segments: an index would add a key to nearly every segment and skip
/// little.
pub fn indexed(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Heartbeat
            | EventKind::Gap
            | EventKind::Integrity
            | EventKind::Malware
            | EventKind::Replication
            | EventKind::Drill
    )
}

/// The kind index keys of the segment at `segment_key` whose header says `kinds`.
pub(crate) fn kind_keys(segment_key: &[u8], kinds: u32) -> Vec<Vec<u8>> {
    EventKind::ALL
        .into_iter()
        .filter(|k| indexed(*k) && kinds & (1u32 << k.code()) != 0)
        .map(|k| {
            let mut v = Vec::with_capacity(segment_key.len() + 1);
            v.push(b'K');
            v.push(k.code());
            v.extend_from_slice(segment_key.get(1..).unwrap_or_default());
            v
        })
        .collect()
}

/// Lowest kind index key of `kind`'s segments starting at or after `ts`.
pub(crate) fn kind_key_floor(kind: EventKind, ts: i64) -> Vec<u8> {
    let mut k = vec![b'K', kind.code()];
    k.extend_from_slice(&ts_bytes(ts));
    k
}

/// The agent named in a kind index key.
pub(crate) fn kind_key_agent(k: &[u8]) -> Option<&str> {
    key_agent(k.get(1..)?)
}

/// Lowest key of segments starting at or after `ts`.
pub(crate) fn key_floor(ts: i64) -> Vec<u8> {
    let mut k = vec![b'S'];
    k.extend_from_slice(&ts_bytes(ts));
    k
}

/// The agent named in a segment key.
pub(crate) fn key_agent(k: &[u8]) -> Option<&str> {
    let len = *k.get(9)? as usize;
    std::str::from_utf8(k.get(10..10 + len)?).ok()
}

/// Metadata of a segment, readable without decompressing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub count: u32,
    pub ts_min: i64,
    pub ts_max: i64,
    /// Bit n set: an event of kind code n is inside.
    pub kinds: u32,
    /// Bit n set: an event of severity n is inside.
    pub severities: u8,
    pub first_seq: u64,
    pub last_seq: u64,
    raw_len: u32,
}

/// Accumulates one segment.
#[derive(Debug)]
pub(crate) struct Builder {
    pub header: Header,
    raw: Vec<u8>,
}

impl Builder {
    pub fn new(ts: i64, seq: u64) -> Self {
        Builder {
            header: Header {
                count: 0,
                ts_min: ts,
                ts_max: ts,
                kinds: 0,
                severities: 0,
                first_seq: seq,
                last_seq: seq,
                raw_len: 0,
            },
            raw: Vec::new(),
        }
    }

    /// Whether an event at `ts` keeps the span within [`MAX_SPAN_NANOS`].
    pub fn fits(&self, ts: i64) -> bool {
        let lo = self.header.ts_min.min(ts);
        let hi = self.header.ts_max.max(ts);
        hi.saturating_sub(lo) < MAX_SPAN_NANOS
    }

    pub fn push(&mut self, ts: i64, seq: u64, kind_code: u8, severity: u8, json: &[u8]) {
        let h = &mut self.header;
        h.count += 1;
        h.ts_min = h.ts_min.min(ts);
        h.ts_max = h.ts_max.max(ts);
        h.kinds |= 1u32.checked_shl(u32::from(kind_code)).unwrap_or(0);
        h.severities |= 1u8.checked_shl(u32::from(severity)).unwrap_or(0);
        h.first_seq = h.first_seq.min(seq);
        h.last_seq = h.last_seq.max(seq);
        self.raw.extend_from_slice(json);
        self.raw.push(b'\n');
    }

    /// Serializes header and compressed payload.
    pub fn finish(mut self, zstd_level: i32) -> io::Result<Vec<u8>> {
        self.header.raw_len = u32::try_from(self.raw.len())
            .map_err(|_| io::Error::other("segment larger than 4 GiB"))?;
        let payload = zstd::bulk::compress(&self.raw, zstd_level)?;
        let h = &self.header;
        let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
        v.push(1);
        v.extend_from_slice(&h.count.to_be_bytes());
        v.extend_from_slice(&h.ts_min.to_be_bytes());
        v.extend_from_slice(&h.ts_max.to_be_bytes());
        v.extend_from_slice(&h.kinds.to_be_bytes());
        v.push(h.severities);
        v.extend_from_slice(&h.first_seq.to_be_bytes());
        v.extend_from_slice(&h.last_seq.to_be_bytes());
        v.extend_from_slice(&h.raw_len.to_be_bytes());
        v.extend_from_slice(&payload);
        Ok(v)
    }
}

fn arr<const N: usize>(v: &[u8], at: usize) -> Option<[u8; N]> {
    v.get(at..at + N)?.try_into().ok()
}

/// Reads a segment's header.
pub(crate) fn header(v: &[u8]) -> Result<Header, String> {
    if v.first() != Some(&1) {
        return Err(format!("unknown segment version {:?}", v.first()));
    }
    let short = || format!("segment header truncated ({} bytes)", v.len());
    Ok(Header {
        count: u32::from_be_bytes(arr(v, 1).ok_or_else(short)?),
        ts_min: i64::from_be_bytes(arr(v, 5).ok_or_else(short)?),
        ts_max: i64::from_be_bytes(arr(v, 13).ok_or_else(short)?),
        kinds: u32::from_be_bytes(arr(v, 21).ok_or_else(short)?),
        severities: *v.get(25).ok_or_else(short)?,
        first_seq: u64::from_be_bytes(arr(v, 26).ok_or_else(short)?),
        last_seq: u64::from_be_bytes(arr(v, 34).ok_or_else(short)?),
        raw_len: u32::from_be_bytes(arr(v, 42).ok_or_else(short)?),
    })
}

/// Decompresses a segment's events (NDJSON).
pub(crate) fn events(v: &[u8]) -> Result<Vec<u8>, String> {
    let h = header(v)?;
    let payload = v.get(HEADER_LEN..).ok_or("segment payload missing")?;
    super::zblock::decompress(payload, h.raw_len as usize).map_err(|e| format!("segment {e}"))
}

#[cfg(test)]
fn key_ts(k: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(arr(k, 1)?) ^ (1 << 63)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let mut b = Builder::new(100, 7);
        b.push(100, 7, 3, 2, b"{\"a\":1}");
        b.push(90, 8, 5, 4, b"{\"a\":2}");
        let v = b.finish(1).unwrap();
        let h = header(&v).unwrap();
        assert_eq!(
            (h.count, h.ts_min, h.ts_max, h.first_seq, h.last_seq),
            (2, 90, 100, 7, 8)
        );
        assert_eq!(h.kinds, (1 << 3) | (1 << 5));
        assert_eq!(h.severities, (1 << 2) | (1 << 4));
        assert_eq!(events(&v).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
        assert!(key(-5, "z", 0) < key(3, "a", 0));
        assert_eq!(key_agent(&key(3, "probe-1", 9)), Some("probe-1"));
        assert_eq!(key_ts(&key(-3, "a", 1)), Some(-3));
        assert!(header(&v[..10]).is_err());
        let k = key(3, "probe-1", 9);
        let kk = kind_keys(&k, h.kinds | (1 << EventKind::Heartbeat.code()));
        // Kind 3 (alert) and 5 (malware) in the segment; only malware and heartbeat are indexed.
        assert_eq!(kk.len(), 2);
        assert!(kk.iter().all(|x| kind_key_agent(x) == Some("probe-1")));
        assert!(kind_key_floor(EventKind::Heartbeat, 3) <= kk[0]);
        assert!(kk[0] < kind_key_floor(EventKind::Heartbeat, 4));
        assert!(kind_key_floor(EventKind::Malware, 3) <= kk[1]);
        assert!(events(&v[..v.len() - 1]).is_err());
    }

    #[test]
    fn span_is_bounded() {
        let b = Builder::new(0, 1);
        assert!(b.fits(MAX_SPAN_NANOS - 1));
        assert!(!b.fits(MAX_SPAN_NANOS));
        assert!(!b.fits(-MAX_SPAN_NANOS));
    }
}
