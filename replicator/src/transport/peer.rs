//! A repository served to peers (`serve`) and a peer's repository used as a [`Store`]
//! (`backup --to https://…`, `restore`/`snapshots` with `--repo https://…`).
//!
//! The protocol is HTTPS/1.1 over mutual TLS (role `replicator` on both ends):
//!
//! | request                  | body                                  | answer                            |
//! |--------------------------|---------------------------------------|-----------------------------------|
//! | `GET /v1/config`         |                                       | the config JSON (404: none yet)   |
//! | `POST /v1/init`          | config JSON                           | the repository id (409: has one)  |
//! | `GET /v1/ids`            |                                       | zstd(id[32]*) of every held blob  |
//! | `POST /v1/missing`       | id[32]* (≤ [`MAX_MISSING_IDS`])       | id[32]* of those not held         |
//! | `POST /v1/blobs`         | record* (≤ [`MAX_BLOBS_BODY`])       | `{"stored","bytes","already_held","rejected"}` |
//! | `GET /v1/blob/<hex id>`  |                                       | the record holding that chunk     |
//! | `GET /v1/snapshots`      |                                       | `[{"id","data": hex}]`            |
//! | `POST /v1/snapshots`     | stored snapshot (≤ [`MAX_SNAPSHOT_BODY`]) | its id (409: names a missing blob) |
//!
//! A record is laid out as in a pack (`repo::format`): a header, a frame's member table, the
//! stored bytes. Only records holding a chunk the receiver lacks cross the wire: the sender asks
//! `missing` for each batch first. The receiver re-hashes every incoming record (and, in an
//! unencrypted repository, decodes it and checks the id of every chunk in it) before anything is
//! written, answers which ones it refused (by the record's header id), and the sender sends those
//! again (at most three more times). Each `POST /v1/blobs` is one durable pack, so an
//! interrupted transfer resumes where it stopped: the next run's `ids` and `missing` list what
//! already arrived. Uploads can be capped in bytes per second (a token bucket that starts empty).
//!
//! An unencrypted receiver walks a new snapshot's trees and refuses it while anything it names is
//! missing. An encrypted receiver cannot read trees; there the sender is trusted for completeness
//! (backup only writes the snapshot after every blob was accepted and re-checks with `missing`),
//! and the receiver refuses unsealed blobs and plaintext snapshots so nothing readable lands there.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use palisade_wire::client::{Client, ClientError};
use palisade_wire::tls::Identity;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::chunk::Id;
use crate::error::{Error, Result};
use crate::repo::format::{self, Blob, BlobHeader, Member, FLAG_SEALED};
use crate::repo::keys::Keys;
use crate::repo::tree::Kind;
use crate::repo::{decode_record, Config, Repository, Snapshot, Store};
use crate::transport::server::{self, body, ok, text, Limits, Service};
use crate::transport::PeerTls;

/// At most this many ids in one `POST /v1/missing` (32 MiB).
pub const MAX_MISSING_IDS: usize = 1 << 20;
/// Ids per `missing` request the client sends.
const CLIENT_MISSING_BATCH: usize = 64 * 1024;
/// Largest `POST /v1/blobs` body. One blob (at most 64 MiB stored) always fits.
pub const MAX_BLOBS_BODY: usize = 96 << 20;
/// A client fills a `POST /v1/blobs` request up to this (a single larger blob goes alone).
const CLIENT_BLOBS_TARGET: usize = 32 << 20;
/// Blob uploads a server holds in memory at once.
const MAX_CONCURRENT_UPLOADS: usize = 4;
/// Largest snapshot file (they hold metadata only: a few hundred bytes).
pub const MAX_SNAPSHOT_BODY: usize = 1 << 20;
/// Largest config body.
const MAX_CONFIG_BODY: usize = 64 << 10;
/// A peer's id list may decompress to at most this many ids (zstd-bomb bound).
const MAX_KNOWN_IDS: u64 = 64 << 20;
/// Times a refused blob is sent again before the transfer fails.
const MAX_RESENDS: usize = 3;
/// Per-request timeout of the client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// A request that makes no progress (connecting, or between pieces of the answer) for this long
/// fails and is tried again on a new connection, instead of waiting out `REQUEST_TIMEOUT`.
const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries of one request when the network failed (refused, reset, cut short, stalled).
const TRIES: u32 = 6;

/// The pause before try `attempt + 1`: 0.3 s, doubling, at most 10 s (about 25 s over all tries).
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(300u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(10))
}

/// A client for the peer at `url` with this module's deadlines.
fn peer_client(tls: &PeerTls, url: &str) -> Result<Client> {
    Ok(tls
        .client(url, REQUEST_TIMEOUT)?
        .with_stall_timeout(STALL_TIMEOUT))
}
/// Idle connections the client keeps.
const MAX_IDLE_CLIENTS: usize = 8;

const IDS_TYPE: &str = "application/x-palisade-ids";
const IDS_ZSTD_TYPE: &str = "application/x-palisade-ids+zstd";
const BLOBS_TYPE: &str = "application/x-palisade-blobs";
const JSON_TYPE: &str = "application/json";
const OCTETS_TYPE: &str = "application/octet-stream";

/// Client-side options.
#[derive(Clone, Debug, Default)]
pub struct PeerOptions {
    /// Bandwidth cap for uploads, bytes per second.
    pub limit_bytes_per_sec: Option<u64>,
    /// Test-only fault: flip one bit in the Nth blob sent (1-based), once.
    pub flip_in_transit: Option<usize>,
}

/// `POST /v1/blobs` answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BlobsReply {
    /// Blobs written (in one new pack).
    pub stored: usize,
    /// Bytes of that pack and its index.
    pub bytes: u64,
    /// Blobs the receiver already held (nothing written for them).
    #[serde(default)]
    pub already_held: usize,
    /// Ids (hex) of blobs refused: damaged in transit, or not what their header says.
    pub rejected: Vec<String>,
}

/// One entry of `GET /v1/snapshots`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFile {
    /// blake3 of `data`, hex.
    pub id: String,
    /// The stored snapshot file, hex.
    pub data: String,
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Token bucket over bytes sent: starts empty (so even a short run stays under the cap), holds at
/// most one second of burst, and debt is paid by sleeping before a send.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        let rate = rate.max(1) as f64;
        Bucket {
            rate,
            tokens: 0.0,
            last: Instant::now(),
        }
    }

    /// Takes `n` bytes' worth; returns how long to wait before sending them.
    fn take(&mut self, n: usize) -> Duration {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[derive(Debug, Default)]
struct Fault {
    /// Blobs put on the wire so far.
    sent: usize,
    /// The bit was flipped.
    done: bool,
}

/// A peer's repository.
#[derive(Debug)]
pub struct PeerStore {
    peer: Box<Peer>,
}

#[derive(Debug)]
struct Peer {
    url: String,
    config: Config,
    tls: PeerTls,
    opts: PeerOptions,
    rt: tokio::runtime::Runtime,
    idle: Mutex<Vec<Client>>,
    bucket: Option<Mutex<Bucket>>,
    fault: Mutex<Fault>,
}

fn runtime(url: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("palisade-peer")
        .enable_all()
        .build()
        .map_err(|e| Error::Peer {
            peer: url.into(),
            reason: format!("cannot start the network runtime: {e}"),
            retryable: false,
        })
}

/// A response that is not 2xx, as an error that says whether a retry can help.
fn status_error(peer: &str, what: &str, status: StatusCode, body: &str) -> Error {
    let body: String = body.chars().take(500).collect();
    Error::Peer {
        peer: peer.into(),
        reason: format!("{what}: HTTP {status}: {body}"),
        retryable: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
    }
}

fn transport_error(peer: &str, what: &str, e: &ClientError) -> Error {
    Error::Peer {
        peer: peer.into(),
        reason: format!("{what}: {e}"),
        retryable: e.is_transient(),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// `ids` as concatenated bytes.
fn encode_ids<'a>(ids: impl IntoIterator<Item = &'a Id>) -> Vec<u8> {
    let mut out = Vec::new();
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

/// Concatenated 32-byte ids; `None` when the length is not a multiple of 32.
fn decode_ids(b: &[u8]) -> Option<Vec<Id>> {
    if b.len() % 32 != 0 {
        return None;
    }
    b.chunks_exact(32)
        .map(|c| <[u8; 32]>::try_from(c).ok().map(Id))
        .collect()
}

/// One record of a `POST /v1/blobs` body, not checked yet.
pub type RawRecord<'a> = (BlobHeader, Vec<Member>, &'a [u8]);

/// Splits a `POST /v1/blobs` body into records (header, member table, stored bytes) without
/// checking any hash. Hostile bytes give an error, never a panic.
pub fn parse_blobs(b: &[u8]) -> std::result::Result<Vec<RawRecord<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < b.len() {
        let at = format!("record {} at offset {pos}", out.len());
        let (h, members, body) = format::parse_record(&b[pos..], &at).map_err(|e| e.to_string())?;
        let start = pos + body;
        let end = start + h.stored_len as usize;
        out.push((h, members, &b[start..end]));
        pos = end;
    }
    Ok(out)
}

impl PeerStore {
    /// Connects and reads the peer's config.
    pub fn connect(url: &str, tls: &PeerTls, opts: PeerOptions) -> Result<PeerStore> {
        Ok(PeerStore {
            peer: Box::new(Peer::connect(url, tls, opts)?),
        })
    }

    /// Creates the repository at the peer with `config` (refused if it has one).
    pub fn init(url: &str, tls: &PeerTls, config: &Config) -> Result<()> {
        Peer::init(url, tls, config)
    }
}

impl Store for PeerStore {
    fn config(&self) -> &Config {
        self.peer.config()
    }
    fn location(&self) -> String {
        self.peer.location()
    }
    fn known_ids(&self) -> Result<HashSet<Id>> {
        self.peer.known_ids()
    }
    fn missing(&self, ids: &[Id]) -> Result<Vec<Id>> {
        self.peer.missing(ids)
    }
    fn put_blobs(&self, blobs: &[Blob]) -> Result<u64> {
        self.peer.put_blobs(blobs)
    }
    fn read_stored(&self, id: &Id) -> Result<Blob> {
        self.peer.read_stored(id)
    }
    fn put_snapshot(&self, stored: &[u8]) -> Result<String> {
        self.peer.put_snapshot(stored)
    }
    fn snapshot_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.peer.snapshot_files()
    }
}

impl Peer {
    fn connect(url: &str, tls: &PeerTls, opts: PeerOptions) -> Result<Peer> {
        let url = url.trim_end_matches('/').to_string();
        let rt = runtime(&url)?;
        let what = "reading the config";
        // The first exchange retries like every later one (`Peer::call`): on a lossy link a
        // handshake can outlast the server's deadline, and one lost handshake must not end a
        // backup or restore that a second try would carry.
        let mut attempt = 0;
        let (resp, client) = loop {
            attempt += 1;
            let mut client = peer_client(tls, &url)?;
            match rt.block_on(client.request(Method::GET, "/v1/config", JSON_TYPE, Bytes::new())) {
                Ok(resp) => break (resp, client),
                Err(e) => {
                    let err = transport_error(&url, what, &e);
                    if !err.retryable() || attempt >= TRIES {
                        return Err(err);
                    }
                    tracing::warn!(peer = %url, error = %e, attempt, "request failed; trying again");
                    std::thread::sleep(backoff(attempt));
                }
            }
        };
        if resp.status == StatusCode::NOT_FOUND {
            return Err(Error::Peer {
                peer: url.clone(),
                reason: format!(
                    "has no repository; create one with `palisade-replicator init {url}` ({})",
                    resp.text()
                ),
                retryable: false,
            });
        }
        if !resp.status.is_success() {
            return Err(status_error(&url, what, resp.status, &resp.text()));
        }
        let config = Config::parse(&resp.body, Path::new(&url))?;
        Ok(Peer {
            bucket: opts.limit_bytes_per_sec.map(|r| Mutex::new(Bucket::new(r))),
            url,
            config,
            tls: tls.clone(),
            opts,
            rt,
            idle: Mutex::new(vec![client]),
            fault: Mutex::new(Fault::default()),
        })
    }

    fn init(url: &str, tls: &PeerTls, config: &Config) -> Result<()> {
        let url = url.trim_end_matches('/');
        let rt = runtime(url)?;
        let mut client = peer_client(tls, url)?;
        let json =
            serde_json::to_vec_pretty(config).map_err(|e| Error::Usage(format!("config: {e}")))?;
        let resp = rt
            .block_on(client.request(Method::POST, "/v1/init", JSON_TYPE, Bytes::from(json)))
            .map_err(|e| transport_error(url, "init", &e))?;
        if resp.status == StatusCode::CONFLICT {
            return Err(Error::Peer {
                peer: url.into(),
                reason: format!("already has a repository ({})", resp.text()),
                retryable: false,
            });
        }
        if !resp.status.is_success() {
            return Err(status_error(url, "init", resp.status, &resp.text()));
        }
        Ok(())
    }

    fn client(&self) -> Result<Client> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        peer_client(&self.tls, &self.url)
    }

    /// One request, with up to `TRIES - 1` more tries when the network failed (every endpoint is
    /// idempotent: a blob or snapshot sent twice is stored once more at worst).
    fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
        what: &str,
    ) -> Result<palisade_wire::client::Response> {
        let mut client = self.client()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r =
                self.rt
                    .block_on(client.request(method.clone(), path, content_type, body.clone()));
            match r {
                Ok(resp) => {
                    if let Ok(mut idle) = self.idle.lock() {
                        if idle.len() < MAX_IDLE_CLIENTS {
                            idle.push(client);
                        }
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    let err = transport_error(&self.url, what, &e);
                    if !err.retryable() || attempt >= TRIES {
                        return Err(err);
                    }
                    tracing::warn!(peer = %self.url, error = %e, attempt, "request failed; trying again");
                    std::thread::sleep(backoff(attempt));
                }
            }
        }
    }

    fn expect_ok(&self, resp: palisade_wire::client::Response, what: &str) -> Result<Bytes> {
        if resp.status.is_success() {
            Ok(resp.body)
        } else {
            Err(status_error(&self.url, what, resp.status, &resp.text()))
        }
    }

    fn bad_answer(&self, what: &str, reason: impl Into<String>) -> Error {
        Error::Peer {
            peer: self.url.clone(),
            reason: format!("{what}: malformed answer: {}", reason.into()),
            retryable: false,
        }
    }

    fn throttle(&self, n: usize) {
        if let Some(b) = &self.bucket {
            let wait = b.lock().map(|mut b| b.take(n)).unwrap_or_default();
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }

    /// `missing`, also counting the request bytes.
    fn missing_counted(&self, ids: &[Id], sent: &mut u64) -> Result<Vec<Id>> {
        let mut out = Vec::new();
        for part in ids.chunks(CLIENT_MISSING_BATCH) {
            let asked: HashSet<Id> = part.iter().copied().collect();
            let req = encode_ids(part);
            *sent += req.len() as u64;
            let resp = self.call(
                Method::POST,
                "/v1/missing",
                IDS_TYPE,
                Bytes::from(req),
                "asking which blobs are missing",
            )?;
            let body = self.expect_ok(resp, "asking which blobs are missing")?;
            let got = decode_ids(&body)
                .ok_or_else(|| self.bad_answer("missing", "length is not a multiple of 32"))?;
            if let Some(id) = got.iter().find(|id| !asked.contains(id)) {
                return Err(self.bad_answer("missing", format!("names {id}, which was not asked")));
            }
            out.extend(got);
        }
        Ok(out)
    }

    /// The request body for `blobs`, with the test-only bit flip applied once.
    fn blobs_body(&self, blobs: &[&Blob]) -> Vec<u8> {
        let size: usize = blobs.iter().map(|b| b.record_len()).sum();
        let mut body = Vec::with_capacity(size);
        for b in blobs {
            let (h, stored) = (&b.header, &b.stored);
            b.encode_head(&mut body);
            let start = body.len();
            body.extend_from_slice(stored);
            if let Some(n) = self.opts.flip_in_transit {
                if let Ok(mut f) = self.fault.lock() {
                    f.sent += 1;
                    // An empty blob has no bit to flip: the next one takes the fault.
                    if !f.done && f.sent >= n && !stored.is_empty() {
                        f.done = true;
                        body[start + stored.len() / 2] ^= 0x01;
                        tracing::warn!(blob = %h.id, nth = f.sent, "fault injection: flipped one bit in transit");
                    }
                }
            }
        }
        body
    }

    fn request_target(&self) -> usize {
        match self.opts.limit_bytes_per_sec {
            // Smaller requests keep a capped transfer smooth.
            Some(r) => usize::try_from(r)
                .unwrap_or(usize::MAX)
                .clamp(1 << 20, CLIENT_BLOBS_TARGET),
            None => CLIENT_BLOBS_TARGET,
        }
    }

    /// Sends `pending` in requests of about `request_target` bytes; returns the ids refused.
    fn send_blobs(&self, pending: &[&Blob], sent: &mut u64) -> Result<HashSet<Id>> {
        let target = self.request_target();
        let mut rejected = HashSet::new();
        let mut start = 0;
        while start < pending.len() {
            let mut end = start;
            let mut size = 0usize;
            while end < pending.len()
                && (end == start || size + pending[end].record_len() <= target)
            {
                size += pending[end].record_len();
                end += 1;
            }
            let group = &pending[start..end];
            start = end;
            let body = self.blobs_body(group);
            self.throttle(body.len());
            *sent += body.len() as u64;
            let resp = self.call(
                Method::POST,
                "/v1/blobs",
                BLOBS_TYPE,
                Bytes::from(body),
                "sending blobs",
            )?;
            let body = self.expect_ok(resp, "sending blobs")?;
            let reply: BlobsReply = serde_json::from_slice(&body)
                .map_err(|e| self.bad_answer("blobs", e.to_string()))?;
            let asked: HashSet<Id> = group.iter().map(|b| b.header.id).collect();
            for hex in &reply.rejected {
                let id = crate::chunk::parse_hex32(hex)
                    .map(Id)
                    .filter(|id| asked.contains(id))
                    .ok_or_else(|| {
                        self.bad_answer("blobs", format!("rejected {hex:?} was not sent"))
                    })?;
                rejected.insert(id);
            }
        }
        Ok(rejected)
    }

    /// `GET /v1/blob/ID` once, checked: the record must hold the chunk and match its hash.
    fn fetch_blob(&self, id: &Id) -> Result<Blob> {
        let what = format!("reading blob {}", id.short());
        let resp = self.call(
            Method::GET,
            &format!("/v1/blob/{}", id.hex()),
            OCTETS_TYPE,
            Bytes::new(),
            &what,
        )?;
        if resp.status == StatusCode::NOT_FOUND {
            return Err(Error::MissingBlob {
                id: id.hex(),
                by: format!("a read from {}", self.url),
            });
        }
        let body = self.expect_ok(resp, &what)?;
        let damaged = || {
            Error::corrupt(
                format!("blob {} from {}", id.short(), self.url),
                "does not match its hash (damaged in transit or at the peer)",
            )
        };
        let (header, members, start) = format::parse_record(&body, &what).map_err(|_| damaged())?;
        if start + header.stored_len as usize != body.len() {
            return Err(damaged());
        }
        let blob = Blob {
            header,
            members,
            stored: body[start..].to_vec(),
        };
        if !blob.hash_ok() {
            return Err(damaged());
        }
        if blob.part(id).is_none() {
            return Err(self.bad_answer(
                &what,
                format!(
                    "answered with record {}, which does not hold it",
                    blob.header.id.short()
                ),
            ));
        }
        Ok(blob)
    }
}

impl Store for Peer {
    fn config(&self) -> &Config {
        &self.config
    }

    fn location(&self) -> String {
        self.url.clone()
    }

    fn known_ids(&self) -> Result<HashSet<Id>> {
        let what = "listing the peer's blobs";
        let resp = self.call(Method::GET, "/v1/ids", IDS_ZSTD_TYPE, Bytes::new(), what)?;
        let body = self.expect_ok(resp, what)?;
        let mut raw = Vec::new();
        zstd::stream::Decoder::new(&body[..])
            .and_then(|d| d.take(MAX_KNOWN_IDS * 32 + 1).read_to_end(&mut raw))
            .map_err(|e| self.bad_answer(what, format!("zstd: {e}")))?;
        if raw.len() as u64 > MAX_KNOWN_IDS * 32 {
            return Err(self.bad_answer(what, format!("more than {MAX_KNOWN_IDS} ids")));
        }
        let ids = decode_ids(&raw)
            .ok_or_else(|| self.bad_answer(what, "length is not a multiple of 32"))?;
        Ok(ids.into_iter().collect())
    }

    fn missing(&self, ids: &[Id]) -> Result<Vec<Id>> {
        let mut ignored = 0;
        self.missing_counted(ids, &mut ignored)
    }

    fn put_blobs(&self, blobs: &[Blob]) -> Result<u64> {
        if blobs.is_empty() {
            return Ok(0);
        }
        let mut sent = 0u64;
        let mut seen = HashSet::new();
        let unique: Vec<&Blob> = blobs.iter().filter(|b| seen.insert(b.header.id)).collect();
        let ids: Vec<Id> = unique.iter().flat_map(|b| b.ids()).collect();
        let lacking: HashSet<Id> = self.missing_counted(&ids, &mut sent)?.into_iter().collect();
        // A record crosses when the peer lacks any chunk in it.
        let mut pending: Vec<&Blob> = unique
            .into_iter()
            .filter(|b| b.ids().iter().any(|id| lacking.contains(id)))
            .collect();
        let mut round = 0;
        while !pending.is_empty() {
            let rejected = self.send_blobs(&pending, &mut sent)?;
            pending.retain(|b| rejected.contains(&b.header.id));
            if pending.is_empty() {
                break;
            }
            round += 1;
            let first = pending[0].header.id;
            if round > MAX_RESENDS {
                return Err(Error::Peer {
                    peer: self.url.clone(),
                    reason: format!(
                        "refused {} blob(s) (first {first}) {} times: they arrive damaged",
                        pending.len(),
                        MAX_RESENDS + 1
                    ),
                    retryable: true,
                });
            }
            tracing::warn!(peer = %self.url, blobs = pending.len(), first = %first, round,
                "peer refused blobs as damaged in transit; sending them again");
        }
        Ok(sent)
    }

    fn read_stored(&self, id: &Id) -> Result<Blob> {
        match self.fetch_blob(id) {
            Err(Error::Corrupt { what, reason }) => {
                tracing::warn!(peer = %self.url, blob = %id, %reason, "blob arrived damaged; fetching it again");
                self.fetch_blob(id).map_err(|e| match e {
                    Error::Corrupt { .. } => Error::Corrupt { what, reason },
                    e => e,
                })
            }
            r => r,
        }
    }

    fn put_snapshot(&self, stored: &[u8]) -> Result<String> {
        let what = "storing the snapshot";
        let id = crate::chunk::hex(blake3::hash(stored).as_bytes());
        let resp = self.call(
            Method::POST,
            "/v1/snapshots",
            OCTETS_TYPE,
            Bytes::copy_from_slice(stored),
            what,
        )?;
        let body = self.expect_ok(resp, what)?;
        let got = lossy(&body);
        if got != id {
            return Err(self.bad_answer(what, format!("stored as {got:?}, expected {id}")));
        }
        Ok(id)
    }

    fn snapshot_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let what = "listing snapshots";
        let resp = self.call(Method::GET, "/v1/snapshots", JSON_TYPE, Bytes::new(), what)?;
        let body = self.expect_ok(resp, what)?;
        let files: Vec<SnapshotFile> =
            serde_json::from_slice(&body).map_err(|e| self.bad_answer(what, e.to_string()))?;
        files
            .into_iter()
            .map(|f| {
                let data = crate::repo::tree::hex_decode(&f.data).ok_or_else(|| {
                    self.bad_answer(what, format!("snapshot {} is not hex", f.id))
                })?;
                if crate::chunk::hex(blake3::hash(&data).as_bytes()) != f.id {
                    return Err(Error::corrupt(
                        format!(
                            "snapshot {} from {}",
                            f.id.chars().take(8).collect::<String>(),
                            self.url
                        ),
                        "does not match its id",
                    ));
                }
                Ok((f.id, data))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

type Resp = Response<Full<Bytes>>;
/// A refusal: an error response, boxed so `Result`s stay small.
type Refused = Box<Resp>;
type Answer = std::result::Result<Resp, Refused>;

fn fail(status: StatusCode, body: impl Into<String>) -> Refused {
    Box::new(text(status, body))
}

/// Options of `serve`.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The repository served (created on a peer's `init` when missing).
    pub repo: PathBuf,
    /// `host:port` to listen on.
    pub listen: String,
}

/// Serves `opts.repo` to peers until SIGINT/SIGTERM; prints `listening on ADDR` on stdout once
/// bound.
pub fn serve(opts: &ServeOptions, tls: &PeerTls) -> Result<()> {
    let server_tls = tls.server()?;
    let service = Arc::new(RepoService::open(&opts.repo)?);
    let rt = palisade_wire::process::runtime()
        .map_err(|e| Error::Usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        let listener = TcpListener::bind(&opts.listen)
            .await
            .map_err(Error::io("listen on", Path::new(&opts.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("listen on", Path::new(&opts.listen)))?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {addr}")
                .and_then(|_| out.flush())
                .map_err(Error::io("write", Path::new("stdout")))?;
        }
        tracing::info!(%addr, repo = %opts.repo.display(), "serving the repository to peers");
        server::run(
            listener,
            server_tls,
            service,
            Limits::default(),
            palisade_wire::process::shutdown_signal(),
        )
        .await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The repository behind `serve`.
#[derive(Debug)]
pub struct RepoService {
    path: PathBuf,
    repo: RwLock<Option<Arc<Repository>>>,
    init: tokio::sync::Mutex<()>,
    uploads: Semaphore,
}

fn json<T: Serialize>(v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(b) => ok(JSON_TYPE, b),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        ),
    }
}

/// The status an error maps to.
fn error_response(e: &Error) -> Refused {
    let status = match e {
        Error::MissingBlob { .. } => StatusCode::NOT_FOUND,
        Error::Corrupt { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    fail(status, e.to_string())
}

/// A strict blob id in a path: 64 lowercase hex digits.
fn path_id(s: &str) -> Option<Id> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    crate::chunk::parse_hex32(s).map(Id)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, Refused> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "request worker failed");
        fail(StatusCode::INTERNAL_SERVER_ERROR, "request worker failed")
    })
}

/// Checks one incoming record: its member table and stored bytes against their hash, and where
/// the repository's keys are at hand (unencrypted), every chunk in it against its id. Encrypted
/// repositories take only sealed records, so nothing readable is ever stored there.
fn check_incoming(
    config: &Config,
    keys: Option<&Keys>,
    blob: &Blob,
) -> std::result::Result<(), String> {
    if !blob.hash_ok() {
        return Err("stored bytes do not match their hash".into());
    }
    if config.encrypted() {
        if blob.header.flags & FLAG_SEALED == 0 {
            return Err("unsealed blob offered to an encrypted repository".into());
        }
        return Ok(());
    }
    match keys {
        Some(k) => decode_record(k, blob)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// Walks a snapshot's trees in `repo`; the first blob it names that the repository lacks.
fn first_missing(repo: &Repository, keys: &Keys, snap: &Snapshot) -> Result<Option<Id>> {
    let mut walk = crate::restore::TreeWalk::default();
    walk.add_root(snap.tree);
    let mut chunks = HashSet::new();
    while let Some((id, _, tree)) = walk.next_tree(repo, keys) {
        let tree = match tree {
            Err(Error::MissingBlob { .. }) => return Ok(Some(id)),
            t => t?,
        };
        for n in tree.entries {
            if n.kind == Kind::File {
                chunks.extend(n.chunks);
            }
        }
    }
    let chunks: Vec<Id> = chunks.into_iter().collect();
    Ok(repo.missing(&chunks)?.into_iter().next())
}

impl RepoService {
    /// Opens the repository at `path`, or waits for a peer's `init` when it has none.
    pub fn open(path: &Path) -> Result<RepoService> {
        let repo = if path.join("config").exists() {
            Some(Arc::new(Repository::open(path)?))
        } else {
            tracing::info!(repo = %path.display(), "no repository yet; waiting for a peer's init");
            None
        };
        Ok(RepoService {
            path: path.to_path_buf(),
            repo: RwLock::new(repo),
            init: tokio::sync::Mutex::new(()),
            uploads: Semaphore::new(MAX_CONCURRENT_UPLOADS),
        })
    }

    fn repo(&self) -> std::result::Result<Arc<Repository>, Refused> {
        self.repo
            .read()
            .ok()
            .and_then(|r| r.clone())
            .ok_or_else(|| fail(StatusCode::NOT_FOUND, "no repository; init it first"))
    }

    async fn route(&self, peer: &Identity, req: Request<Incoming>) -> Answer {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/v1/config") => {
                let repo = self.repo()?;
                serde_json::to_vec_pretty(repo.config())
                    .map(|b| ok(JSON_TYPE, b))
                    .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
            }
            (&Method::POST, "/v1/init") => self.init(peer, req).await,
            (&Method::GET, "/v1/ids") => {
                let repo = self.repo()?;
                let ids = blocking(move || -> Result<Vec<u8>> {
                    repo.refresh()?;
                    let mut ids: Vec<Id> = repo.known_ids()?.into_iter().collect();
                    ids.sort_unstable();
                    zstd::bulk::compress(&encode_ids(&ids), 1)
                        .map_err(|e| Error::Usage(format!("zstd: {e}")))
                })
                .await?
                .map_err(|e| error_response(&e))?;
                Ok(ok(IDS_ZSTD_TYPE, ids))
            }
            (&Method::POST, "/v1/missing") => {
                let repo = self.repo()?;
                let b = body(req, MAX_MISSING_IDS * 32).await.map_err(Box::new)?;
                let ids = decode_ids(&b).ok_or_else(|| {
                    fail(StatusCode::BAD_REQUEST, "body must be whole 32-byte ids")
                })?;
                // A prune beside this server may have marked or deleted packs since the index
                // was loaded; a blob counted as held here is never sent again.
                let missing = blocking(move || {
                    repo.refresh()?;
                    repo.missing(&ids)
                })
                .await?
                .map_err(|e| error_response(&e))?;
                Ok(ok(IDS_TYPE, encode_ids(&missing)))
            }
            (&Method::POST, "/v1/blobs") => self.blobs(peer, req).await,
            (&Method::GET, p) if p.starts_with("/v1/blob/") => {
                let repo = self.repo()?;
                let id = path_id(&p["/v1/blob/".len()..]).ok_or_else(|| {
                    fail(
                        StatusCode::BAD_REQUEST,
                        "blob id must be 64 lowercase hex digits",
                    )
                })?;
                let blob = blocking(move || {
                    repo.refresh()?;
                    repo.read_stored(&id)
                })
                .await?
                .map_err(|e| {
                    if !matches!(e, Error::MissingBlob { .. }) {
                        tracing::error!(blob = %id, error = %e, "cannot serve a stored blob");
                    }
                    error_response(&e)
                })?;
                let mut out = Vec::with_capacity(blob.record_len());
                blob.encode_head(&mut out);
                out.extend_from_slice(&blob.stored);
                Ok(ok(OCTETS_TYPE, out))
            }
            (&Method::GET, "/v1/snapshots") => {
                let repo = self.repo()?;
                let files = blocking(move || repo.snapshot_files())
                    .await?
                    .map_err(|e| error_response(&e))?;
                let list: Vec<SnapshotFile> = files
                    .into_iter()
                    .map(|(id, data)| SnapshotFile {
                        id,
                        data: crate::chunk::hex(&data),
                    })
                    .collect();
                Ok(json(&list))
            }
            (&Method::POST, "/v1/snapshots") => self.snapshot(peer, req).await,
            (
                _,
                "/v1/config" | "/v1/init" | "/v1/ids" | "/v1/missing" | "/v1/blobs"
                | "/v1/snapshots",
            ) => Err(fail(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            )),
            _ => Err(fail(StatusCode::NOT_FOUND, format!("no endpoint {path}"))),
        }
    }

    async fn init(&self, peer: &Identity, req: Request<Incoming>) -> Answer {
        let exists = || {
            self.repo.read().map(|r| r.is_some()).unwrap_or(true)
                || self.path.join("config").exists()
        };
        let conflict = || fail(StatusCode::CONFLICT, "a repository exists here already");
        if exists() {
            return Err(conflict());
        }
        let b = body(req, MAX_CONFIG_BODY).await.map_err(Box::new)?;
        let config = Config::parse(&b, &self.path)
            .map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
        // Two peers racing to init: the second one gets the conflict.
        let _one = self.init.lock().await;
        if exists() {
            return Err(conflict());
        }
        let path = self.path.clone();
        let repo = blocking(move || -> Result<Repository> {
            let repo = Repository::init(&path, &config)?;
            repo.reload()?;
            Ok(repo)
        })
        .await?
        .map_err(|e| {
            tracing::error!(error = %e, "init failed");
            error_response(&e)
        })?;
        let id = repo.config().id.clone();
        if let Ok(mut slot) = self.repo.write() {
            *slot = Some(Arc::new(repo));
        }
        tracing::info!(who = %peer, repo = %self.path.display(), id = %id, "repository created by a peer");
        Ok(text(StatusCode::OK, id))
    }

    async fn blobs(&self, peer: &Identity, req: Request<Incoming>) -> Answer {
        let repo = self.repo()?;
        let _permit = self
            .uploads
            .acquire()
            .await
            .map_err(|_| fail(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
        let b = body(req, MAX_BLOBS_BODY).await.map_err(Box::new)?;
        let who = peer.to_string();
        let reply = blocking(move || -> std::result::Result<BlobsReply, Refused> {
            let parsed = parse_blobs(&b).map_err(|e| {
                tracing::warn!(%who, reason = %e, "malformed blob upload refused");
                fail(StatusCode::BAD_REQUEST, e)
            })?;
            let config = repo.config().clone();
            let keys = config.keys(None).ok().flatten();
            let records: Vec<Blob> = parsed
                .into_iter()
                .map(|(header, members, stored)| Blob {
                    header,
                    members,
                    stored: stored.to_vec(),
                })
                .collect();
            let ids: Vec<Id> = records.iter().flat_map(Blob::ids).collect();
            let lacking: HashSet<Id> = repo
                .missing(&ids)
                .map_err(|e| error_response(&e))?
                .into_iter()
                .collect();
            let mut reply = BlobsReply::default();
            let mut good: HashMap<Id, Blob> = HashMap::new();
            let mut refused = HashSet::new();
            for blob in records {
                let h = blob.header;
                if !blob.ids().iter().any(|id| lacking.contains(id)) {
                    reply.already_held += 1;
                    continue;
                }
                if good.contains_key(&h.id) {
                    continue;
                }
                match check_incoming(&config, keys.as_ref(), &blob) {
                    Ok(()) => {
                        good.insert(h.id, blob);
                    }
                    Err(reason) => {
                        tracing::warn!(%who, blob = %h.id, %reason, "rejected incoming blob; the sender will send it again");
                        if refused.insert(h.id) {
                            reply.rejected.push(h.id.hex());
                        }
                    }
                }
            }
            // A good copy wins over a damaged one of the same id in the same request.
            reply.rejected.retain(|hex| {
                crate::chunk::parse_hex32(hex).is_none_or(|id| !good.contains_key(&Id(id)))
            });
            let blobs: Vec<Blob> = good.into_values().collect();
            reply.stored = blobs.len();
            reply.bytes = repo.write_pack(&blobs).map_err(|e| {
                tracing::error!(error = %e, "cannot store incoming blobs");
                error_response(&e)
            })?;
            Ok(reply)
        })
        .await??;
        tracing::debug!(who = %peer, stored = reply.stored, bytes = reply.bytes, rejected = reply.rejected.len(), "blobs received");
        Ok(json(&reply))
    }

    async fn snapshot(&self, peer: &Identity, req: Request<Incoming>) -> Answer {
        let repo = self.repo()?;
        let b = body(req, MAX_SNAPSHOT_BODY).await.map_err(Box::new)?;
        if b.is_empty() {
            return Err(fail(StatusCode::BAD_REQUEST, "empty snapshot"));
        }
        let id = blocking(move || -> std::result::Result<String, Refused> {
            let id = crate::chunk::hex(blake3::hash(&b).as_bytes());
            repo.refresh().map_err(|e| error_response(&e))?;
            let config = repo.config();
            if config.encrypted() {
                // Sealed: the trees cannot be walked here; the sender checked completeness.
                if serde_json::from_slice::<Snapshot>(&b).is_ok() {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        "plaintext snapshot refused by an encrypted repository",
                    ));
                }
            } else {
                let keys = config
                    .keys(None)
                    .ok()
                    .flatten()
                    .ok_or_else(|| fail(StatusCode::INTERNAL_SERVER_ERROR, "repository keys unusable"))?;
                let snap = Snapshot::decode(&b, Some(&keys), &id)
                    .map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
                match first_missing(&repo, &keys, &snap) {
                    Ok(None) => {}
                    Ok(Some(gone)) => {
                        return Err(fail(
                            StatusCode::CONFLICT,
                            format!("snapshot names blob {gone}, which this repository does not hold; not committed"),
                        ))
                    }
                    Err(Error::MissingBlob { id: gone, .. }) => {
                        return Err(fail(
                            StatusCode::CONFLICT,
                            format!("snapshot names blob {gone}, which this repository does not hold; not committed"),
                        ))
                    }
                    Err(e) => {
                        return Err(fail(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!("snapshot does not check out: {e}; not committed"),
                        ))
                    }
                }
            }
            repo.put_snapshot(&b).map_err(|e| {
                tracing::error!(error = %e, "cannot store a snapshot");
                error_response(&e)
            })
        })
        .await??;
        tracing::info!(who = %peer, snapshot = %id, "snapshot committed");
        Ok(text(StatusCode::OK, id))
    }
}

impl Service for RepoService {
    async fn handle(&self, peer: Arc<Identity>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let r = match self.route(&peer, req).await {
            Ok(r) => r,
            Err(r) => *r,
        };
        tracing::debug!(who = %peer, %method, %path, status = %r.status(), "request");
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(data: &[u8]) -> Blob {
        let h = BlobHeader {
            id: crate::chunk::blob_id(&[7; 32], data),
            flags: 0,
            raw_len: data.len() as u32,
            stored_len: data.len() as u32,
            blob_hash: *blake3::hash(data).as_bytes(),
        };
        Blob {
            header: h,
            members: Vec::new(),
            stored: data.to_vec(),
        }
    }

    #[test]
    fn blob_bodies_round_trip() {
        let a = blob(b"hello");
        let b = blob(b"");
        let keys = Keys {
            id_key: [7; 32],
            data: None,
        };
        let members = vec![
            Member {
                id: crate::chunk::blob_id(&[7; 32], b"one"),
                len: 3,
            },
            Member {
                id: crate::chunk::blob_id(&[7; 32], b"two"),
                len: 3,
            },
        ];
        let config = crate::repo::new_config(&crate::repo::InitOptions::default()).unwrap();
        let f = crate::repo::BlobEncoder::new(&config)
            .unwrap()
            .encode_frame(&keys, members, b"onetwo")
            .unwrap();
        let mut body = Vec::new();
        for r in [&a, &b, &f] {
            r.encode_head(&mut body);
            body.extend_from_slice(&r.stored);
        }
        let parsed = parse_blobs(&body).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].0, a.header);
        assert_eq!(parsed[0].2, b"hello");
        assert_eq!(parsed[1].2, b"");
        assert_eq!((parsed[2].0, &parsed[2].1), (f.header, &f.members));
        assert_eq!(decode_record(&keys, &f).unwrap(), b"onetwo");
        assert!(parse_blobs(&body[..body.len() - 1]).is_err());
        assert!(parse_blobs(&body[..10]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn hostile_blob_bodies_do_not_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_blobs(&bytes);
            let _ = decode_ids(&bytes);
        }
    }

    #[test]
    fn ids_must_be_whole() {
        assert!(decode_ids(&[0; 33]).is_none());
        assert_eq!(decode_ids(&[1; 64]).unwrap().len(), 2);
        assert_eq!(decode_ids(&[]).unwrap().len(), 0);
    }

    #[test]
    fn path_ids_are_strict() {
        let id = "ab".repeat(32);
        assert!(path_id(&id).is_some());
        assert!(path_id(&id.to_uppercase()).is_none());
        assert!(path_id(&id[..62]).is_none());
        assert!(path_id(&format!("{id}/x")).is_none());
        assert!(path_id("+b".repeat(32).as_str()).is_none());
    }

    #[test]
    fn bucket_makes_senders_wait_for_debt() {
        let mut b = Bucket::new(1000);
        let wait = b.take(500);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let wait = b.take(1000);
        assert!(wait > Duration::from_millis(1400), "{wait:?}");
    }

    #[test]
    fn snapshot_check_names_the_first_missing_blob() {
        use crate::repo::{encode_blob, new_config, InitOptions};
        let dir = tempfile::tempdir().unwrap();
        let config = new_config(&InitOptions::default()).unwrap();
        let repo = Repository::init(dir.path(), &config).unwrap();
        let keys = config.keys(None).unwrap().unwrap();
        let chunk = encode_blob(&config, &keys, b"file content", false).unwrap();
        let tree = format!(
            r#"{{"entries":[{{"name":"f","kind":"file","mode":420,"uid":0,"gid":0,"mtime_ns":0,"size":12,"chunks":["{}"]}}]}}"#,
            chunk.header.id
        );
        let tree_blob = encode_blob(&config, &keys, tree.as_bytes(), true).unwrap();
        let snap = Snapshot {
            time_ns: 1,
            host: "h".into(),
            site: None,
            source: "/src".into(),
            tree: tree_blob.header.id,
            parent: None,
            tags: Vec::new(),
            files: 1,
            dirs: 0,
            bytes: 12,
        };
        assert_eq!(
            first_missing(&repo, &keys, &snap).unwrap(),
            Some(tree_blob.header.id)
        );
        repo.write_pack(std::slice::from_ref(&tree_blob)).unwrap();
        assert_eq!(
            first_missing(&repo, &keys, &snap).unwrap(),
            Some(chunk.header.id)
        );
        repo.write_pack(std::slice::from_ref(&chunk)).unwrap();
        assert_eq!(first_missing(&repo, &keys, &snap).unwrap(), None);
    }
}
