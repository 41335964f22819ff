//! Analyst queries beyond the store's own fields: filter expressions ([`filter`]), the stable
//! paging cursor of `GET /v1/events` ([`EventKey`], `after=` and the `x-palisade-next` header),
//! and the query-string helpers the API and the CLI share for them.

pub mod filter;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use palisade_wire::Timestamp;
use serde::Deserialize;

pub use filter::{Filter, FilterError, Pushdown};

use crate::store::Query;

/// Response header of `GET /v1/events` naming the `after=` value of the next page; present only
/// when the page was full (more events may follow).
pub const NEXT_HEADER: &str = "x-palisade-next";

/// Where an event sits in the store's total order: `(@timestamp, agent.id, event.sequence)`.
/// The `after=` paging cursor is the key of the last event of the previous page, so events with
/// equal timestamps are neither skipped nor repeated across pages. Written
/// `<RFC 3339 timestamp>:<agent>:<sequence>` (agent ids never contain `:`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    /// `@timestamp`.
    pub timestamp: Timestamp,
    /// `agent.id`.
    pub agent: String,
    /// `event.sequence`.
    pub sequence: u64,
}

#[derive(Deserialize)]
struct KeyFields {
    #[serde(rename = "@timestamp")]
    timestamp: Timestamp,
    agent: KeyAgent,
    event: KeyEvent,
}

#[derive(Deserialize)]
struct KeyAgent {
    id: String,
}

#[derive(Deserialize)]
struct KeyEvent {
    sequence: u64,
}

impl EventKey {
    /// The key of a stored event's JSON; `None` if the JSON lacks the fields.
    pub fn of_json(json: &[u8]) -> Option<EventKey> {
        let k: KeyFields = serde_json::from_slice(json).ok()?;
        Some(EventKey {
            timestamp: k.timestamp,
            agent: k.agent.id,
            sequence: k.event.sequence,
        })
    }
}

impl fmt::Display for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.timestamp, self.agent, self.sequence)
    }
}

impl FromStr for EventKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("after {s:?} is not <RFC 3339 timestamp>:<agent>:<sequence>");
        let mut parts = s.rsplitn(3, ':');
        let sequence = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let agent = parts
            .next()
            .filter(|a| palisade_wire::event::valid_agent_id(a))
            .ok_or_else(bad)?;
        let timestamp = parts.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        Ok(EventKey {
            timestamp,
            agent: agent.to_string(),
            sequence,
        })
    }
}

/// Parses `filter=` into `q`: the whole expression is evaluated on every candidate event, and
/// the conditions it requires at its top level also narrow the store scan (kind, severity,
/// agent) without changing the result.
pub fn apply_filter(q: &mut Query, expr: &str) -> Result<(), String> {
    if expr.trim().is_empty() {
        return Ok(());
    }
    let f = Filter::parse(expr).map_err(|e| e.to_string())?;
    let p = f.pushdown();
    // Only narrow: an explicit parameter is itself required, so keep it.
    if q.kind.is_none() {
        q.kind = p.kind;
    }
    if q.agent.is_none() {
        q.agent = p.agent;
    }
    q.min_severity = q.min_severity.max(p.min_severity);
    q.filter = Some(Arc::new(f));
    Ok(())
}

/// The `x-palisade-next` value for a page of NDJSON `body` holding `n` events of at most
/// `limit`: the key of its last event when the page is full.
pub fn next_after(body: &[u8], n: usize, limit: usize) -> Option<String> {
    if n == 0 || n < limit {
        return None;
    }
    let last = body.split(|&b| b == b'\n').rfind(|l| !l.is_empty())?;
    EventKey::of_json(last).map(|k| k.to_string())
}

/// The `key=value` pairs of a query string, values decoded.
pub fn query_params(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((k.to_string(), url_decode(v)?))
        })
        .collect()
}

/// A `limit` query value: a number up to `max`.
pub fn parse_limit(v: &str, max: usize) -> Result<usize, String> {
    let n: usize = v
        .parse()
        .map_err(|_| format!("limit {v:?} is not a number"))?;
    if n > max {
        return Err(format!("limit {n} is above the maximum {max}"));
    }
    Ok(n)
}

/// An `order` query value: `desc` (newest first, true) or `asc`.
pub fn parse_newest_first(v: &str) -> Result<bool, String> {
    match v {
        "desc" => Ok(true),
        "asc" => Ok(false),
        _ => Err(format!("order {v:?} must be asc or desc")),
    }
}

/// Decodes `%XX` and `+` in a query component.
pub fn url_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("query value {s:?} is not UTF-8"))
}

/// Percent-encodes a query component (everything but unreserved characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Entry points for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub mod fuzzing {
    use super::Filter;

    /// Parses arbitrary bytes as a filter and, if they parse, evaluates the filter against a
    /// fixed event: neither may panic.
    pub fn filter_parse(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(f) = Filter::parse(text) {
            let event = serde_json::json!({
                "@timestamp": "2026-03-01T12:00:00Z",
                "agent": {"id": "probe-1"},
                "event": {"severity": 3, "sequence": 1, "category": ["network"]},
                "source": {"ip": "10.1.2.3", "port": 443},
                "labels": {"a.b": "c"},
                "n": [1, [2.5, null], {"x": true}]
            });
            let _ = f.matches(&event);
            let _ = f.pushdown();
            let _ = f.matches_json(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_round_trip_and_order() {
        let k: EventKey = "2026-03-01T12:00:00.000000001Z:probe-1:42".parse().unwrap();
        assert_eq!(k.agent, "probe-1");
        assert_eq!(k.sequence, 42);
        assert_eq!(k.to_string().parse::<EventKey>().unwrap(), k);
        let later = EventKey {
            agent: "probe-2".into(),
            sequence: 1,
            ..k.clone()
        };
        assert!(k < later, "same time: agent then sequence");
        for bad in [
            "",
            "x:y:z",
            "2026-03-01T12:00:00Z:probe-1:",
            "2026-03-01T12:00:00Z:a b:1",
        ] {
            assert!(bad.parse::<EventKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn url_encoding_round_trips() {
        let s = "source.ip in 10.0.0.0/8 and m ~ \"a&b=c+d%\" é";
        assert_eq!(url_decode(&url_encode(s)).unwrap(), s);
    }

    #[test]
    fn next_after_only_for_full_pages() {
        let mut e = palisade_wire::Event::new(
            "probe-1",
            palisade_wire::EventKind::Synthetic,
            palisade_wire::Severity::Low,
        );
        e.seal(7);
        let mut body = e.to_json();
        body.push(b'\n');
        assert_eq!(next_after(&body, 1, 2), None);
        let next = next_after(&body, 1, 1).unwrap();
        assert!(next.ends_with(":probe-1:7"), "{next}");
    }

    #[test]
    fn fuzz_entry_point_survives_odd_input() {
        for s in [
            "",
            "(",
            "a = 1",
            "n = 2.5",
            "labels.a.b ~ C",
            "n.x = true or not n > -1e999",
        ] {
            fuzzing::filter_parse(s.as_bytes());
        }
        fuzzing::filter_parse(&[0xff, 0xfe]);
    }
}
