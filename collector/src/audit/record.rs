//! One audit record and its line format. A record is written as one NDJSON line whose bytes are
//! the canonical serialization of the record without `hash` (fixed field order, compact JSON)
//! with `,"hash":"<hex>"` spliced in before the closing brace. The hash is
//! `blake3(prev hash bytes || canonical bytes)`, so a verifier recovers the hashed bytes exactly
//! from the line (everything before the hash suffix) and never depends on re-serializing.

use palisade_wire::Timestamp;
use serde::{Deserialize, Serialize};

/// The hash a first record links to.
pub const GENESIS: [u8; 32] = [0; 32];

/// `,"hash":"` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// What the request hook knows about a request; the writer adds seq, time and the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Certificate CN of the caller.
    pub identity: String,
    /// Role (certificate OU) of the caller.
    pub role: String,
    /// Peer socket address.
    pub peer: String,
    /// HTTP method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Detail of an admin action (the request body, capped), `null` otherwise.
    pub action: serde_json::Value,
    /// HTTP status answered.
    pub result: u16,
}

/// A sealed record, as stored (field order is the canonical order; `hash` last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When the record was sealed (UTC, ns); never earlier than the previous record's.
    pub time: Timestamp,
    /// Certificate CN of the caller.
    pub identity: String,
    /// Role of the caller.
    pub role: String,
    /// Peer socket address.
    pub peer: String,
    /// HTTP method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Admin action detail or `null`.
    pub action: serde_json::Value,
    /// HTTP status.
    pub result: u16,
    /// Hash of the previous record (hex); 64 zeros for seq 1.
    pub prev: String,
    /// blake3(prev bytes || canonical bytes of this record without `hash`), hex.
    pub hash: String,
}

/// The canonical (hashed) view: every field but `hash`, same order.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time: Timestamp,
    identity: &'a str,
    role: &'a str,
    peer: &'a str,
    method: &'a str,
    path: &'a str,
    action: &'a serde_json::Value,
    result: u16,
    prev: &'a str,
}

/// Lowercase hex, every byte two digits (`tls::hex` trims leading zeros: serials only).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses 64 hex digits.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// `blake3(prev || body)`.
pub fn chain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(body);
    *h.finalize().as_bytes()
}

/// Seals `entry` as record `seq` after `prev`: returns the record and its line (with `\n`).
pub fn seal(entry: &Entry, seq: u64, time: Timestamp, prev: &[u8; 32]) -> (Record, Vec<u8>) {
    let prev_hex = hex(prev);
    let body = Body {
        seq,
        time,
        identity: &entry.identity,
        role: &entry.role,
        peer: &entry.peer,
        method: &entry.method,
        path: &entry.path,
        action: &entry.action,
        result: entry.result,
        prev: &prev_hex,
    };
    // Serializing plain strings, numbers and a `Value` cannot fail.
    let mut line = serde_json::to_vec(&body).unwrap_or_default();
    let hash = hex(&chain_hash(prev, &line));
    line.pop(); // the closing brace
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    let record = Record {
        seq,
        time,
        identity: entry.identity.clone(),
        role: entry.role.clone(),
        peer: entry.peer.clone(),
        method: entry.method.clone(),
        path: entry.path.clone(),
        action: entry.action.clone(),
        result: entry.result,
        prev: prev_hex,
        hash,
    };
    (record, line)
}

/// A line taken apart: the stored hash (from the suffix) and the hash its bytes actually have.
#[derive(Debug)]
pub struct ParsedLine {
    /// The record, when the line parses.
    pub record: Result<Record, String>,
    /// The hash written in the line's suffix.
    pub stored_hash: [u8; 32],
    /// Whether `blake3(prev || body)` equals the stored hash.
    pub hash_ok: bool,
}

/// Splits a line (without `\n`) into hashed body and stored hash; `None` if the suffix is not
/// a well-formed hash field.
pub fn parse_line(line: &[u8]) -> Option<ParsedLine> {
    let split = line.len().checked_sub(HASH_SUFFIX_LEN)?;
    let (head, suffix) = line.split_at(split);
    let hex_part = suffix.strip_prefix(b",\"hash\":\"")?.strip_suffix(b"\"}")?;
    let stored_hash = unhex32(std::str::from_utf8(hex_part).ok()?)?;
    let record = serde_json::from_slice::<Record>(line).map_err(|e| e.to_string());
    let prev = match &record {
        Ok(r) => unhex32(&r.prev),
        Err(_) => None,
    };
    let hash_ok = match prev {
        Some(prev) => {
            let mut body = Vec::with_capacity(head.len() + 1);
            body.extend_from_slice(head);
            body.push(b'}');
            chain_hash(&prev, &body) == stored_hash
        }
        None => false,
    };
    Some(ParsedLine {
        record,
        stored_hash,
        hash_ok,
    })
}

/// An anchor: the chain head at some moment, kept in `anchors.ndjson` for off-site shipping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// Seq of the last record covered.
    pub seq: u64,
    /// That record's hash (hex).
    pub hash: String,
    /// When the anchor was written.
    pub time: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            identity: "analyst".into(),
            role: "analyst".into(),
            peer: "127.0.0.1:4000".into(),
            method: "POST".into(),
            path: "/v1/x?a=b".into(),
            action: serde_json::json!({"z": 1, "a": [1.5, "x"]}),
            result: 200,
        }
    }

    #[test]
    fn a_sealed_line_parses_back_and_its_hash_holds() {
        let (rec, line) = seal(&entry(), 7, Timestamp(1_700_000_000_123_456_789), &[3; 32]);
        assert_eq!(line.last(), Some(&b'\n'));
        let parsed = parse_line(&line[..line.len() - 1]).unwrap();
        assert!(parsed.hash_ok);
        assert_eq!(parsed.record.unwrap(), rec);
        assert_eq!(hex(&parsed.stored_hash), rec.hash);
    }

    #[test]
    fn hex_keeps_leading_zeros() {
        assert_eq!(hex(&[0, 1, 0xab]), "0001ab");
        assert_eq!(unhex32(&hex(&GENESIS)), Some(GENESIS));
    }

    #[test]
    fn one_changed_byte_breaks_the_hash() {
        let (_, mut line) = seal(&entry(), 1, Timestamp(5), &GENESIS);
        line.pop();
        let at = line.windows(7).position(|w| w == b"analyst").unwrap();
        line[at] = b'A';
        let parsed = parse_line(&line).unwrap();
        assert!(parsed.record.is_ok());
        assert!(!parsed.hash_ok);
    }
}
