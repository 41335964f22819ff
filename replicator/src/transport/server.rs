//! The accept loop every replicator service runs (mini-redis shape): a semaphore caps
//! connections, each connection does the TLS handshake with a deadline, and the peer's
//! certificate must carry the `replicator` role before any request is served.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use palisade_wire::server::TlsReloader;
use palisade_wire::tls::{Identity, Role};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// A replicator HTTP service: one call per request, from a verified `replicator` peer.
pub trait Service: Send + Sync + 'static {
    /// Answers one request.
    fn handle(
        &self,
        peer: Arc<Identity>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// Limits of a server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Seconds for the TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds to read a request's headers (slow-loris bound).
    pub header_read_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves; open connections then get 5 s to
/// finish their request.
pub async fn run<S: Service>(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
    service: Arc<S>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    while let Some((permit, tcp, peer)) =
        palisade_wire::server::accept_bounded(&listener, &limit, &mut shutdown, "replicator").await
    {
        // One stat per connection: a `pki revoke` shuts the site out at its next handshake.
        tls.reload_if_changed();
        let (acceptor, service, stop) = (tls.acceptor(), service.clone(), stop_rx.clone());
        tokio::spawn(async move {
            connection(tcp, peer, acceptor, service, limits, stop).await;
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(5), limit.acquire_many(all)).await;
}

async fn connection<S: Service>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    service: Arc<S>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let deadlines = palisade_wire::server::ConnectionLimits {
        handshake: Duration::from_secs(limits.handshake_timeout_secs),
        header_read: Duration::from_secs(limits.header_read_timeout_secs),
    };
    palisade_wire::server::serve_connection(
        tcp,
        peer,
        acceptor,
        deadlines,
        stop,
        move |who, peer, req| {
            let service = service.clone();
            async move {
                if who.role != Role::Replicator {
                    tracing::warn!(%peer, who = %who, "refused: not a replicator certificate");
                    return text(
                        StatusCode::FORBIDDEN,
                        format!("role {} may not talk to a replicator", who.role),
                    );
                }
                service.handle(who, req).await
            }
        },
    )
    .await;
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r
}

/// A binary or JSON response with status 200.
pub fn ok(content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Reads a whole request body of at most `max` bytes; a larger one is a 413 response.
pub async fn body(req: Request<Incoming>, max: usize) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over {max} bytes"),
                ))
            } else {
                Err(text(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body: {e}"),
                ))
            }
        }
    }
}
