//! Server plumbing shared by the collector and the replicator: a bounded accept loop, and one
//! mutual-TLS HTTP/1.1 connection from handshake to graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::tls::{self, Identity};

/// Deadlines of one connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// For the TLS handshake.
    pub handshake: Duration,
    /// For a request's headers (slow-loris bound).
    pub header_read: Duration,
}

/// Serves one connection: TLS handshake within its deadline, the client certificate's identity
/// (no certificate or no usable identity: closed), then HTTP/1.1 keep-alive with `handler` per
/// request until the client leaves or `stop` turns true (then the request in flight finishes).
pub async fn serve_connection<H, F>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Arc<Identity>, SocketAddr, Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tcp.set_nodelay(true).ok();
    let stream = match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = match stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    {
        Some(cert) => match tls::identity(cert) {
            Ok(id) => Arc::new(id),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "client certificate has no usable identity");
                return;
            }
        },
        None => {
            tracing::warn!(%peer, "no client certificate");
            return;
        }
    };
    tracing::debug!(%peer, identity = %identity, "connection accepted");
    let handler = Arc::new(handler);
    let svc = service_fn(move |req| {
        let (handler, identity) = (handler.clone(), identity.clone());
        async move { Ok::<_, Infallible>(handler(identity, peer, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Waits for a free connection slot of `limit`, then for the next connection; `None` once
/// `shutdown` fires or the limit is closed. Accept errors (EMFILE and friends) back off, up to a
/// second between tries, instead of spinning.
pub async fn accept_bounded<F: Future<Output = ()>>(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
    shutdown: &mut std::pin::Pin<&mut F>,
    what: &str,
) -> Option<(tokio::sync::OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        p = limit.clone().acquire_owned() => p.ok()?,
        _ = shutdown.as_mut() => return None,
    };
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.as_mut() => return None,
        };
        match accepted {
            Ok((tcp, peer)) => return Some((permit, tcp, peer)),
            Err(e) => {
                tracing::warn!(error = %e, listener = what, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Holds the current rustls config and rebuilds it when the CRL file changes, so `pki revoke`
/// takes effect on the next handshake without a restart (collector and replicators alike).
pub struct TlsReloader {
    files: crate::tls::TlsFiles,
    crl: Option<PathBuf>,
    current: RwLock<(Option<SystemTime>, TlsAcceptor)>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("crl", &self.crl)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Loads the config once; fails if the material is bad.
    pub fn new(
        files: crate::tls::TlsFiles,
        crl: Option<PathBuf>,
    ) -> Result<Self, crate::tls::TlsError> {
        let mtime = crl
            .as_ref()
            .and_then(|p| p.metadata().ok()?.modified().ok());
        let config = crate::tls::server_config(&files, crl.as_deref())?;
        Ok(TlsReloader {
            files,
            crl,
            current: RwLock::new((mtime, TlsAcceptor::from(Arc::new(config)))),
        })
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Rebuilds the config if the CRL changed. A bad new CRL keeps the old config (and says so).
    pub fn reload_if_changed(&self) {
        let Some(path) = &self.crl else { return };
        let mtime = path.metadata().ok().and_then(|m| m.modified().ok());
        if mtime == self.current.read().unwrap_or_else(|p| p.into_inner()).0 {
            return;
        }
        match crate::tls::server_config(&self.files, Some(path)) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) =
                    (mtime, TlsAcceptor::from(Arc::new(config)));
                tracing::info!(crl = %path.display(), "revocation list reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "new revocation list unusable; keeping the previous one")
            }
        }
    }
}
