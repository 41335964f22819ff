//! The incident row's binary encoding (rows written since 2026-12-07; rows from before are
//! JSON and read as before, a JSON row starting with `{`).
//!
//! The alert writer reads and rewrites an incident's row for every alert joining it; as JSON,
//! parsing and writing the row (its entity lists, its timeline's tail, timestamps as RFC 3339
//! text) was a quarter of the writer's time in `incidents::tests::joining_storm`. Here a row is
//! [`TAG`], then its fields in the order of [`Incident`]'s declaration: integers as LEB128
//! varints (timestamps as zigzag varints of their nanoseconds), strings as a varint length and
//! UTF-8 bytes, an `Option` as a byte 0 or 1 before its value, a list as a varint count before
//! its items, status and severity as their numbers. A row that ends early, runs on past its
//! last field, or holds a value out of range is refused with what and where.

use std::collections::BTreeSet;

use palisade_wire::{Severity, Timestamp};

use super::{Entities, Incident, Status, TimelineEntry};

/// First byte of a binary row (a JSON row's is `{`).
pub(super) const TAG: u8 = 0x01;

/// `inc` as a binary row.
pub(super) fn encode(inc: &Incident) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256 + 160 * inc.timeline_tail.len()));
    w.0.push(TAG);
    w.uint(inc.id);
    w.str(&inc.key);
    w.str(&inc.title);
    w.str(&inc.rule_id);
    w.0.push(inc.severity.number());
    w.0.push(status_number(inc.status));
    w.time(inc.first_seen);
    w.time(inc.last_seen);
    w.uint(inc.alerts);
    for set in [&inc.entities.hosts, &inc.entities.ips, &inc.entities.users] {
        w.uint(set.len() as u64);
        for v in set {
            w.str(v);
        }
    }
    w.entries(&inc.timeline);
    w.uint(inc.timeline_dropped);
    w.uint(inc.timeline_entries);
    w.opt(inc.updated, Writer::time);
    w.opt(inc.alert_ids, |w, (first, latest)| {
        w.uint(first);
        w.uint(latest);
    });
    w.opt(inc.action_entries.as_deref(), |w, actions| {
        w.uint(actions.len() as u64);
        for &n in actions {
            w.uint(n);
        }
    });
    w.0.push(u8::from(inc.timeline_chunked));
    w.entries(&inc.timeline_tail);
    w.0
}

/// The incident in binary row `v` (which starts with [`TAG`]), or what is wrong with it and at
/// which byte.
pub(super) fn decode(v: &[u8]) -> Result<Incident, String> {
    let mut r = Reader { b: v, at: 0 };
    let inc = r.incident().map_err(|e| format!("{e} at byte {}", r.at))?;
    if r.at != v.len() {
        return Err(format!(
            "{} bytes past the last field (row of {} bytes)",
            v.len() - r.at,
            v.len()
        ));
    }
    Ok(inc)
}

/// Status as stored (also in the `recent` table's rows).
pub(super) fn status_number(s: Status) -> u8 {
    match s {
        Status::New => 0,
        Status::Acknowledged => 1,
        Status::Resolved => 2,
    }
}

/// The status stored as `n`.
pub(super) fn status_of(n: u8) -> Option<Status> {
    match n {
        0 => Some(Status::New),
        1 => Some(Status::Acknowledged),
        2 => Some(Status::Resolved),
        _ => None,
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn uint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push(n as u8 | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn time(&mut self, t: Timestamp) {
        self.uint(((t.0 << 1) ^ (t.0 >> 63)) as u64);
    }

    fn str(&mut self, s: &str) {
        self.uint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A byte 0 for `None`, or 1 and the value as `put` writes it.
    fn opt<T>(&mut self, v: Option<T>, put: impl FnOnce(&mut Self, T)) {
        match v {
            Some(v) => {
                self.0.push(1);
                put(self, v);
            }
            None => self.0.push(0),
        }
    }

    fn entries(&mut self, entries: &[TimelineEntry]) {
        self.uint(entries.len() as u64);
        for e in entries {
            self.time(e.timestamp);
            self.str(&e.what);
            self.opt(e.by.as_deref(), Self::str);
            self.opt(e.text.as_deref(), Self::str);
            self.opt(e.alert, Self::uint);
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.b.get(self.at).ok_or("row ends early")?;
        self.at += 1;
        Ok(b)
    }

    fn uint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err("integer past 64 bits".into());
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("integer past 64 bits".into())
    }

    fn time(&mut self) -> Result<Timestamp, String> {
        let z = self.uint()?;
        Ok(Timestamp((z >> 1) as i64 ^ -((z & 1) as i64)))
    }

    /// A count of items each at least `min` bytes long, checked against the bytes left (so
    /// that a damaged count does not allocate without bound).
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.uint()?;
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(min as u64) > left {
            return Err(format!("count {n} past the row's end ({left} bytes left)"));
        }
        Ok(n as usize)
    }

    fn str(&mut self) -> Result<String, String> {
        let n = self.count(1)?;
        let bytes = &self.b[self.at..self.at + n];
        self.at += n;
        String::from_utf8(bytes.to_vec()).map_err(|_| "text not UTF-8".to_string())
    }

    fn flag(&mut self) -> Result<bool, String> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("flag {b} (0 or 1)")),
        }
    }

    /// `None` after a byte 0; after a 1, the value `get` reads.
    fn opt<T>(
        &mut self,
        get: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        Ok(if self.flag()? { Some(get(self)?) } else { None })
    }

    fn set(&mut self) -> Result<BTreeSet<String>, String> {
        (0..self.count(1)?).map(|_| self.str()).collect()
    }

    fn entries(&mut self) -> Result<Vec<TimelineEntry>, String> {
        // An entry is at least 5 bytes: time, `what`'s length, three flags.
        (0..self.count(5)?)
            .map(|_| {
                Ok(TimelineEntry {
                    timestamp: self.time()?,
                    what: self.str()?,
                    by: self.opt(Self::str)?,
                    text: self.opt(Self::str)?,
                    alert: self.opt(Self::uint)?,
                })
            })
            .collect()
    }

    fn incident(&mut self) -> Result<Incident, String> {
        if self.byte()? != TAG {
            return Err("not a binary incident row".into());
        }
        Ok(Incident {
            id: self.uint()?,
            key: self.str()?,
            title: self.str()?,
            rule_id: self.str()?,
            severity: {
                let n = self.byte()?;
                Severity::from_number(u64::from(n)).ok_or(format!("severity {n}"))?
            },
            status: {
                let n = self.byte()?;
                status_of(n).ok_or(format!("status {n}"))?
            },
            first_seen: self.time()?,
            last_seen: self.time()?,
            alerts: self.uint()?,
            entities: Entities {
                hosts: self.set()?,
                ips: self.set()?,
                users: self.set()?,
            },
            timeline: self.entries()?,
            timeline_dropped: self.uint()?,
            timeline_entries: self.uint()?,
            updated: self.opt(Self::time)?,
            alert_ids: self.opt(|r| Ok((r.uint()?, r.uint()?)))?,
            action_entries: self.opt(|r| (0..r.count(1)?).map(|_| r.uint()).collect())?,
            timeline_chunked: self.flag()?,
            timeline_tail: self.entries()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident() -> Incident {
        let entry = |t: i64, what: &str, by: Option<&str>, alert: Option<u64>| TimelineEntry {
            timestamp: Timestamp(t),
            what: what.into(),
            by: by.map(Into::into),
            text: Some(format!("{what} at {t} — 中文")),
            alert,
        };
        Incident {
            id: 4_000_000_123,
            key: "pal.scan|ip=10.0.0.1".into(),
            title: "Port scan (ip=10.0.0.1)".into(),
            rule_id: "pal.scan".into(),
            severity: Severity::High,
            status: Status::Acknowledged,
            first_seen: Timestamp(-5),
            last_seen: Timestamp(i64::MAX),
            alerts: u64::MAX,
            entities: Entities {
                hosts: ["probe-1".into(), "probe-2".into()].into(),
                ips: ["10.0.0.1".into(), "172.16.3.10".into(), "::1".into()].into(),
                users: BTreeSet::new(),
            },
            timeline: vec![entry(i64::MIN, "comment", Some("alice"), None)],
            timeline_dropped: 3,
            timeline_entries: 37,
            updated: Some(Timestamp(1_765_000_000_000_000_000)),
            alert_ids: Some((1, 1 << 40)),
            action_entries: Some(vec![0, 21, 36]),
            timeline_chunked: true,
            timeline_tail: (0..5)
                .map(|i| entry(1_000 + i, "alert", None, Some(i as u64 * 7)))
                .collect(),
        }
    }

    #[test]
    fn a_row_reads_back_as_written_with_every_field_at_its_extremes() {
        let inc = incident();
        assert_eq!(decode(&encode(&inc)), Ok(inc.clone()));
        let mut bare = inc;
        bare.updated = None;
        bare.alert_ids = None;
        bare.action_entries = None;
        bare.timeline = Vec::new();
        bare.timeline_tail = Vec::new();
        bare.timeline_chunked = false;
        assert_eq!(decode(&encode(&bare)), Ok(bare));
    }

    #[test]
    fn a_binary_row_is_smaller_than_its_json() {
        let inc = incident();
        let (binary, json) = (encode(&inc).len(), serde_json::to_vec(&inc).unwrap().len());
        assert!(binary * 2 < json, "binary {binary} bytes, JSON {json}");
    }

    /// Every truncation and every single byte changed is refused with a reason or read as some
    /// incident, never a panic; a cut-off row and trailing bytes are refused.
    #[test]
    fn a_damaged_row_is_refused_and_never_panics() {
        let row = encode(&incident());
        for n in 0..row.len() {
            let e = decode(&row[..n]).unwrap_err();
            assert!(
                e.contains("ends early")
                    || e.contains("past the row's end")
                    || e.contains("not a binary"),
                "{e}"
            );
        }
        let mut longer = row.clone();
        longer.push(0);
        assert!(decode(&longer)
            .unwrap_err()
            .contains("1 bytes past the last field"));
        for at in 0..row.len() {
            for b in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff] {
                let mut bad = row.clone();
                bad[at] = b;
                let _ = decode(&bad);
            }
        }
        assert_eq!(
            decode(&[TAG, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err("integer past 64 bits at byte 11".into())
        );
    }
}
