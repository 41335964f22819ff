//! The wire side of a site: the HTTPS service the peer ships to, and the shipper that sends
//! this site's queued versions to the peer with back-off and anti-entropy after every
//! reconnect.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use palisade_wire::client::Client;
use palisade_wire::tls::Identity;
use tokio::sync::watch;

use super::engine::{Engine, Outgoing, Refusal, MAX_FILE_BYTES};
use super::protocol::{self, Index, Offer, OfferReply, Outcome, Update, UpdateReply};
use crate::transport::server::{self, Service};
use crate::transport::PeerTls;

/// Largest request body: a whole file's chunks plus the header.
const MAX_BODY: usize = (MAX_FILE_BYTES as usize) + (16 << 20);
/// Back-off bounds while the peer is unreachable.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Paths shipped at once, each over its own connection: a version waits until it is saved
/// here and then at the peer (group commit), and paths in flight together share those saves.
pub const SHIPPERS: usize = 24;
/// Full anti-entropy exchange this often even when nothing failed (a safety net).
const ANTI_ENTROPY_EVERY: Duration = Duration::from_secs(15);
/// Whole-request deadline of a shipper's connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A request that makes no progress for this long (connecting, or between pieces of the
/// answer) fails and is retried on a fresh connection instead of waiting out
/// `REQUEST_TIMEOUT`: on a lossy link a handshake whose packets were lost is abandoned sooner.
/// Longer than the peer's TLS handshake deadline (10 s after its accept), which would end such
/// a handshake anyway.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The shipper's connections to the peer at `url` (one per shipping slot), with this module's
/// deadlines.
pub fn clients(tls: &PeerTls, url: &str) -> crate::error::Result<Vec<Client>> {
    (0..SHIPPERS)
        .map(|_| {
            Ok(tls
                .client(url, REQUEST_TIMEOUT)?
                .with_stall_timeout(STALL_TIMEOUT))
        })
        .collect()
}

/// Serves `/v1/sync/*` for the peer.
#[derive(Debug)]
pub struct SyncService {
    engine: Arc<Engine>,
}

impl SyncService {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>) -> SyncService {
        SyncService { engine }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(b) => server::ok("application/json", b),
        Err(e) => server::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn refusal(peer: &Identity, r: Refusal) -> Response<Full<Bytes>> {
    match r {
        Refusal::Bad(why) => {
            tracing::warn!(peer = %peer, reason = %why, "sync request refused");
            server::text(StatusCode::BAD_REQUEST, why)
        }
        Refusal::Retry(why) => server::text(StatusCode::CONFLICT, why),
        Refusal::Local(why) => {
            tracing::error!(peer = %peer, reason = %why, "cannot apply a peer version");
            server::text(StatusCode::INTERNAL_SERVER_ERROR, why)
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response<Full<Bytes>>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| server::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

impl Service for SyncService {
    fn handle(
        &self,
        peer: Arc<Identity>,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Response<Full<Bytes>>> + Send {
        let engine = self.engine.clone();
        async move {
            let route = (req.method().clone(), req.uri().path().to_string());
            let result = match (&route.0, route.1.as_str()) {
                (&Method::GET, "/v1/sync/index") => blocking(move || json(&engine.index())).await,
                (&Method::POST, "/v1/sync/offer") => {
                    let body = match server::body(req, 64 << 20).await {
                        Ok(b) => b,
                        Err(r) => return r,
                    };
                    let offer: Offer = match serde_json::from_slice(&body) {
                        Ok(o) => o,
                        Err(e) => {
                            return refusal(&peer, Refusal::Bad(format!("offer: {e}")));
                        }
                    };
                    let p = peer.clone();
                    blocking(move || match engine.offer(&offer) {
                        Ok(reply) => json(&reply),
                        Err(r) => refusal(&p, r),
                    })
                    .await
                }
                (&Method::POST, "/v1/sync/update") => {
                    let body = match server::body(req, MAX_BODY).await {
                        Ok(b) => b,
                        Err(r) => return r,
                    };
                    let p = peer.clone();
                    blocking(move || {
                        let (header, data) = match protocol::decode_update(&body) {
                            Ok(x) => x,
                            Err(why) => return refusal(&p, Refusal::Bad(why)),
                        };
                        match engine.update(&header, data) {
                            Ok(result) => json(&UpdateReply { result }),
                            Err(r) => refusal(&p, r),
                        }
                    })
                    .await
                }
                _ => Ok(server::text(StatusCode::NOT_FOUND, "no such sync endpoint")),
            };
            result.unwrap_or_else(|r| r)
        }
    }
}

/// Why shipping one path did not finish.
enum ShipError {
    /// The peer could not be reached or failed: keep the path, back off, resync after.
    Down(String),
    /// The peer's copy moved under the update: offer again soon.
    Again,
    /// The peer refused the version as malformed: retrying cannot help.
    Refused(String),
    /// The peer could not apply this path (e.g. its disk is full, or a directory is in the
    /// way): the next anti-entropy exchange offers it again, other paths go on meanwhile.
    Failed(String),
    /// A local failure reading or encoding.
    Local(String),
}

async fn call(
    client: &mut Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Bytes, ShipError> {
    let r = client
        .request(method, path, content_type, Bytes::from(body))
        .await
        .map_err(|e| ShipError::Down(e.to_string()))?;
    match r.status {
        StatusCode::OK => Ok(r.body),
        StatusCode::CONFLICT => Err(ShipError::Again),
        StatusCode::BAD_REQUEST => Err(ShipError::Refused(r.text())),
        s if s.is_server_error() => Err(ShipError::Failed(format!("{s}: {}", r.text()))),
        s => Err(ShipError::Down(format!("{s}: {}", r.text()))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T, ShipError> {
    serde_json::from_slice(b).map_err(|e| ShipError::Down(format!("peer's {what}: {e}")))
}

/// Offers one path's current version and sends the chunks the peer lacks.
async fn ship(engine: &Arc<Engine>, client: &mut Client, path: String) -> Result<(), ShipError> {
    let e = engine.clone();
    let snap = tokio::task::spawn_blocking(move || e.snapshot(&path))
        .await
        .map_err(|e| ShipError::Local(e.to_string()))?
        .map_err(|e| ShipError::Local(e.to_string()))?;
    let Some(Outgoing {
        offer,
        bytes,
        ranges,
    }) = snap
    else {
        return Ok(());
    };
    let body = serde_json::to_vec(&offer).map_err(|e| ShipError::Local(e.to_string()))?;
    let reply: OfferReply = parse(
        &call(
            client,
            Method::POST,
            "/v1/sync/offer",
            "application/json",
            body,
        )
        .await?,
        "offer reply",
    )?;
    let content_len = bytes.len() as u64;
    let (result, wire_bytes) = if reply.result == Outcome::Need {
        let missing = reply.missing;
        if missing.iter().any(|&i| i >= ranges.len()) {
            return Err(ShipError::Down(
                "peer asked for a chunk index out of range".into(),
            ));
        }
        let header = Update { offer, missing };
        let framed = tokio::task::spawn_blocking(move || {
            let mut raw = Vec::new();
            for &i in &header.missing {
                let (a, z) = ranges[i];
                raw.extend_from_slice(&bytes[a..z]);
            }
            let z = zstd::bulk::compress(&raw, 3).map_err(|e| e.to_string())?;
            protocol::encode_update(&header, &z)
        })
        .await
        .map_err(|e| ShipError::Local(e.to_string()))?
        .map_err(ShipError::Local)?;
        let n = framed.len() as u64;
        let r: UpdateReply = parse(
            &call(
                client,
                Method::POST,
                "/v1/sync/update",
                "application/x-palisade-sync",
                framed,
            )
            .await?,
            "update reply",
        )?;
        (r.result, n)
    } else {
        (reply.result, 0)
    };
    engine.shipped(wire_bytes, content_len);
    tracing::debug!(?result, bytes = wire_bytes, "shipped");
    Ok(())
}

async fn anti_entropy(engine: &Arc<Engine>, client: &mut Client) -> Result<usize, ShipError> {
    let body = call(
        client,
        Method::GET,
        "/v1/sync/index",
        "application/json",
        Vec::new(),
    )
    .await?;
    let index: Index = parse(&body, "index")?;
    if index.site == engine.site() {
        return Err(ShipError::Refused(format!(
            "the peer is site {:?} too: two sites need two names",
            index.site
        )));
    }
    let e = engine.clone();
    tokio::task::spawn_blocking(move || e.queue_unseen_by(&index))
        .await
        .map_err(|e| ShipError::Local(e.to_string()))
}

/// Ships queued paths until `stop`, one per connection at once (the first connection is kept
/// for the index exchange); on any failure keeps the path, backs off, and after the peer
/// answers again runs the anti-entropy exchange so nothing queued meanwhile (or before a
/// restart) is missed.
pub async fn shipper(
    engine: Arc<Engine>,
    mut clients: Vec<Client>,
    mut stop: watch::Receiver<bool>,
) {
    // One connection for the index exchange, the others ship.
    let Some(mut sync_client) = clients.pop() else {
        tracing::error!("no connection to the peer; nothing is shipped");
        return;
    };
    let mut idle = clients;
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = BACKOFF_MIN;
    let mut need_sync = true;
    let mut last_sync = tokio::time::Instant::now();
    let mut was_down = false;
    loop {
        if *stop.borrow() {
            return;
        }
        if idle.is_empty() && tasks.is_empty() {
            tracing::error!("no connection to the peer left; shipping stopped");
            return;
        }
        if need_sync || last_sync.elapsed() >= ANTI_ENTROPY_EVERY {
            match anti_entropy(&engine, &mut sync_client).await {
                Ok(n) => {
                    if was_down || n > 0 {
                        tracing::info!(queued = n, "peer reachable; anti-entropy exchange done");
                    }
                    need_sync = false;
                    was_down = false;
                    backoff = BACKOFF_MIN;
                    last_sync = tokio::time::Instant::now();
                    engine.set_peer_reachable(true);
                }
                Err(ShipError::Refused(why)) => {
                    tracing::error!(reason = %why, "peer refused the index exchange");
                    engine.set_peer_reachable(false);
                    if sleep_or_stop(&mut stop, BACKOFF_MAX).await {
                        return;
                    }
                    continue;
                }
                Err(ShipError::Down(why) | ShipError::Local(why) | ShipError::Failed(why)) => {
                    if !was_down {
                        tracing::warn!(reason = %why, "peer unreachable; changes are kept and retried");
                    }
                    was_down = true;
                    engine.set_peer_reachable(false);
                    if sleep_or_stop(&mut stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                Err(ShipError::Again) => continue,
            }
        }
        // Keep every idle connection busy. The queue is a set and a path leaves it when it is
        // taken, so one path is in flight at most once unless it changed again meanwhile (then
        // the older version is "have" at the peer).
        while !idle.is_empty() {
            let Some(path) = engine.next_pending() else {
                break;
            };
            let Some(mut client) = idle.pop() else {
                break;
            };
            let e = engine.clone();
            tasks.spawn(async move {
                let r = ship(&e, &mut client, path.clone()).await;
                (client, path, r)
            });
        }
        let until_sync = ANTI_ENTROPY_EVERY.saturating_sub(last_sync.elapsed());
        let joined = tokio::select! {
            j = tasks.join_next(), if !tasks.is_empty() => j,
            _ = engine.wake.notified(), if !idle.is_empty() => continue,
            _ = tokio::time::sleep(until_sync) => continue,
            _ = stop.changed() => return,
        };
        let Some(joined) = joined else { continue };
        let (client, path, r) = match joined {
            Ok(x) => x,
            Err(e) => {
                // The path comes back with the next anti-entropy exchange.
                tracing::error!(error = %e, "a shipping task failed");
                need_sync = true;
                continue;
            }
        };
        idle.push(client);
        match r {
            Ok(()) => {}
            Err(ShipError::Again) => {
                // Offered again shortly; the other paths go on meanwhile.
                let e = engine.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    e.enqueue(&path);
                });
            }
            Err(ShipError::Refused(why)) => {
                tracing::error!(path, reason = %why, "peer refused this version; not retried until it changes again");
            }
            Err(ShipError::Local(why)) => {
                tracing::warn!(path, reason = %why, "cannot read this version; retried by the next scan");
            }
            Err(ShipError::Failed(why)) => {
                tracing::warn!(path, reason = %why, "peer could not apply this version; offered again at the next anti-entropy exchange");
            }
            Err(ShipError::Down(why)) => {
                engine.enqueue(&path);
                if !was_down {
                    tracing::warn!(reason = %why, "peer unreachable; changes are kept and retried");
                }
                was_down = true;
                // No new path goes out until the exchange at the top of the loop works again
                // (it backs off meanwhile).
                need_sync = true;
                engine.set_peer_reachable(false);
            }
        }
    }
}

/// Sleeps `d`; true when `stop` fired meanwhile.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
