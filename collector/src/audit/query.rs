//! Listing audit records (`GET /v1/audit`, `audit log --data-dir`): reads the day files that can
//! hold the window, filters, and keeps `limit` records, newest first by default. Lines are
//! returned as stored (with `prev` and `hash`), so a listing can be checked against the chain.

use std::io::{BufRead, BufReader};
use std::path::Path;

use palisade_wire::event::parse_time_spec;
use palisade_wire::Timestamp;

use super::record::Record;
use super::{day_files, io_err, AuditError};

/// Most records one listing returns.
pub const MAX_LIMIT: usize = 100_000;

/// A listing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Records at or after this time.
    pub since: Timestamp,
    /// Records before this time.
    pub until: Timestamp,
    /// Only this identity (certificate CN).
    pub identity: Option<String>,
    /// Only this role.
    pub role: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// Newest first (default) or oldest first.
    pub newest_first: bool,
}

impl AuditQuery {
    /// The defaults: last 24 hours, 100 records, newest first.
    pub fn new(now: Timestamp) -> Self {
        AuditQuery {
            since: Timestamp(now.0.saturating_sub(86_400 * 1_000_000_000)),
            until: Timestamp(i64::MAX),
            identity: None,
            role: None,
            limit: 100,
            newest_first: true,
        }
    }

    fn matches(&self, r: &Record) -> bool {
        r.time >= self.since
            && r.time < self.until
            && self.identity.as_ref().is_none_or(|i| *i == r.identity)
            && self.role.as_ref().is_none_or(|x| *x == r.role)
    }
}

/// Parses `since, until, identity, role, limit, order` from a query string.
pub fn parse_query(query: &str, now: Timestamp) -> Result<AuditQuery, String> {
    let mut q = AuditQuery::new(now);
    for (k, v) in crate::query::query_params(query)? {
        match k.as_str() {
            "since" => q.since = parse_time_spec(&v, now)?,
            "until" => q.until = parse_time_spec(&v, now)?,
            "identity" => q.identity = Some(v),
            "role" => q.role = Some(v),
            "limit" => q.limit = crate::query::parse_limit(&v, MAX_LIMIT)?,
            "order" => q.newest_first = crate::query::parse_newest_first(&v)?,
            _ => return Err(format!("unknown query parameter {k:?}")),
        }
    }
    Ok(q)
}

/// Matching record lines (without newline), in the requested order. Lines that do not parse
/// and an incomplete last line are skipped (`verify` is what reports them).
pub fn list(dir: &Path, q: &AuditQuery) -> Result<Vec<Vec<u8>>, AuditError> {
    let mut out = Vec::new();
    if q.limit == 0 || !dir.exists() {
        return Ok(out);
    }
    let first_day = q.since.day();
    let last_day = if q.until.0 == i64::MAX {
        None
    } else {
        Some(q.until.day())
    };
    let mut files: Vec<_> = day_files(dir)?
        .into_iter()
        .filter(|(d, _)| *d >= first_day && last_day.as_ref().is_none_or(|l| d <= l))
        .collect();
    if q.newest_first {
        files.reverse();
    }
    for (_, path) in files {
        let f = std::fs::File::open(&path).map_err(io_err("cannot open audit file", &path))?;
        let mut lines = Vec::new();
        let mut reader = BufReader::new(f);
        loop {
            let mut buf = Vec::new();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(io_err("cannot read audit file", &path))?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            buf.pop();
            match serde_json::from_slice::<Record>(&buf) {
                Ok(r) if q.matches(&r) => lines.push(buf),
                _ => {}
            }
        }
        if q.newest_first {
            lines.reverse();
        }
        for l in lines {
            out.push(l);
            if out.len() >= q.limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditConfig, AuditLog};

    #[test]
    fn listing_filters_and_orders() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), &AuditConfig::default()).unwrap();
        for n in 1..=5 {
            let mut e = crate::audit::writer::tests::entry(n);
            if n % 2 == 0 {
                e.identity = "even".into();
            }
            log.record_blocking(e, true).unwrap();
        }
        log.close();
        let now = Timestamp::now();
        let q = parse_query("identity=even", now).unwrap();
        let got = list(dir.path(), &q).unwrap();
        let seqs: Vec<u64> = got
            .iter()
            .map(|l| serde_json::from_slice::<Record>(l).unwrap().seq)
            .collect();
        assert_eq!(seqs, vec![4, 2]);
        let q = parse_query("order=asc&limit=2", now).unwrap();
        let seqs: Vec<u64> = list(dir.path(), &q)
            .unwrap()
            .iter()
            .map(|l| serde_json::from_slice::<Record>(l).unwrap().seq)
            .collect();
        assert_eq!(seqs, vec![1, 2]);
        assert!(parse_query("order=up", now).is_err());
        assert!(parse_query("bogus=1", now).is_err());
        let q = parse_query("since=1h&until=2h", now).unwrap();
        assert!(list(dir.path(), &q).unwrap().is_empty());
    }
}
