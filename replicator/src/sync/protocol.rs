//! The messages two sync sites exchange over mutual TLS:
//!
//! - `POST /v1/sync/offer` (JSON [`Offer`]): "this is my version of PATH, made of these chunks".
//!   The receiver answers [`OfferReply`]: `have` (it has seen this version), `need` with the
//!   indices of the chunks it cannot find in its own copy of the file, or, when no bytes are
//!   needed (a delete, identical content), the outcome of applying it right away.
//! - `POST /v1/sync/update`: `u32` big-endian header length, the JSON [`Update`] header, then
//!   zstd of the needed chunks concatenated. The receiver rebuilds the file from its own chunks
//!   plus these, checks blake3 of the whole file against the offer, and applies it
//!   ([`UpdateReply`]); 409 means its copy changed in between: offer again.
//! - `GET /v1/sync/index` ([`Index`]): every path's version vector, for anti-entropy after a
//!   start or a reconnect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::vv::VersionVector;

/// One version of one path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Relative, `/`-separated.
    pub path: String,
    /// Its version vector.
    pub vv: VersionVector,
    /// blake3 (hex) of the whole content; `None` when deleted.
    pub hash: Option<String>,
    /// Bytes.
    pub size: u64,
    /// Modification time, ns.
    pub mtime_ns: i64,
    /// Whether this version is a deletion.
    pub deleted: bool,
    /// The site that made this version.
    pub origin_site: String,
    /// When it was made there, ns since the epoch.
    pub changed_at_ns: i64,
    /// Permission bits, `0o777` at most (0: not known, left as the receiver has them).
    #[serde(default)]
    pub mode: u32,
}

/// A chunk of the offered content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// blake3 (hex) of the chunk.
    pub id: String,
    /// Bytes.
    pub len: u64,
}

/// "Here is my version" (`POST /v1/sync/offer`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// The version.
    pub meta: Meta,
    /// Its content, in order (empty for a delete or an empty file).
    pub chunks: Vec<ChunkRef>,
}

/// What the receiver did or wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It has seen this version (equal or newer): nothing to do.
    Have,
    /// It wants the chunks listed in `missing`.
    Need,
    /// Applied: the receiver now has this version.
    Applied,
    /// Concurrent versions with the same content (or both deleted): version vectors merged.
    Merged,
    /// Concurrent versions: both kept, a conflict was raised.
    Conflict,
}

/// Answer to an offer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferReply {
    /// Outcome.
    pub result: Outcome,
    /// Indices into the offer's `chunks` to send, with `need`.
    #[serde(default)]
    pub missing: Vec<usize>,
}

/// Header of `POST /v1/sync/update`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// The offer again (the receiver keeps no session).
    pub offer: Offer,
    /// The chunks that follow, in this order (indices into `offer.chunks`, ascending).
    pub missing: Vec<usize>,
}

/// Answer to an update.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateReply {
    /// Outcome.
    pub result: Outcome,
}

/// Every path's version vector (`GET /v1/sync/index`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// The answering site.
    pub site: String,
    /// Path → version vector (tombstones included).
    pub entries: BTreeMap<String, VersionVector>,
}

/// Frames an update body.
pub fn encode_update(header: &Update, compressed: &[u8]) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(header).map_err(|e| e.to_string())?;
    let len = u32::try_from(json.len()).map_err(|_| "update header too large".to_string())?;
    let mut out = Vec::with_capacity(4 + json.len() + compressed.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(compressed);
    Ok(out)
}

/// Splits an update body into its header and the compressed chunks.
pub fn decode_update(body: &[u8]) -> Result<(Update, &[u8]), String> {
    let len_bytes: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("update shorter than its length prefix")?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let json = body
        .get(4..4usize.saturating_add(len))
        .ok_or("update header runs past the body")?;
    let header: Update = serde_json::from_slice(json).map_err(|e| format!("update header: {e}"))?;
    Ok((header, &body[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_frames_round_trip_and_truncation_is_an_error() {
        let u = Update {
            offer: Offer {
                meta: Meta {
                    path: "a".into(),
                    vv: VersionVector::default(),
                    hash: Some("00".into()),
                    size: 1,
                    mtime_ns: 0,
                    deleted: false,
                    origin_site: "s".into(),
                    changed_at_ns: 0,
                    mode: 0,
                },
                chunks: vec![],
            },
            missing: vec![],
        };
        let body = encode_update(&u, b"zz").unwrap();
        let (h, rest) = decode_update(&body).unwrap();
        assert_eq!(h.offer.meta, u.offer.meta);
        assert_eq!(rest, b"zz");
        assert!(decode_update(&body[..10]).is_err());
        assert!(decode_update(&[0, 0]).is_err());
    }
}
