//! A small HTTPS/1.1 client over mutual TLS: one kept-alive connection to one collector,
//! reconnected on failure. Used by the agent's shipper, the load generator and the analyst CLI.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Client errors; `is_transient` says whether retrying later can help.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `https://host:port`.
    #[error("invalid collector URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (wrong CA, revoked or refused certificate, …).
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        /// host:port.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange with {addr} failed: {reason}")]
    Http {
        /// host:port.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The server ended the connection with a TLS alert after the handshake: in TLS 1.3 that
    /// is how it refuses our certificate (revoked, wrong role, unknown CA).
    #[error("{addr} refused us: {reason}")]
    Refused {
        /// host:port.
        addr: String,
        /// The alert, with what the request saw.
        reason: String,
    },
    /// No answer in time.
    #[error("request to {addr} timed out after {secs:.1} s")]
    Timeout {
        /// host:port.
        addr: String,
        /// The timeout.
        secs: f64,
    },
}

impl ClientError {
    /// Whether trying again later can help: the network failed or was too slow (refused or
    /// reset connections, a handshake cut short, no answer in time). A URL that cannot work and
    /// a handshake the server refused on its merits (unknown CA, revoked or wrong-role
    /// certificate: rustls reports those as `InvalidData`) are not transient.
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            ClientError::Url { .. } | ClientError::Refused { .. } => false,
            ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::Http { .. } => true,
            ClientError::Handshake { source, .. } => matches!(
                source.kind(),
                K::UnexpectedEof
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::BrokenPipe
                    | K::TimedOut
                    | K::Interrupted
            ),
        }
    }
}

/// An HTTP response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// `Retry-After` in seconds, when the server sent one.
    pub retry_after_secs: Option<u64>,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The body as text (lossy), for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }
}

/// One collector endpoint.
pub struct Client {
    addr: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    conn: Option<Conn>,
    timeout: Duration,
    stall: Option<Duration>,
}

/// A kept-alive connection, and word of why it ended (its driver's error) once it has.
struct Conn {
    send: SendRequest<Full<Bytes>>,
    ended: tokio::sync::oneshot::Receiver<Ended>,
}

/// Why a connection's driver ended: the error with its causes, and whether the cause was a TLS
/// alert or other protocol refusal (rustls reports those as `InvalidData`), not the network.
struct Ended {
    why: String,
    refused: bool,
}

/// Whether `e` or one of its causes is an I/O error of kind `InvalidData`.
fn is_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::InvalidData {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// An error with its causes ("a: b: c"), each said once.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cause = c.source();
    }
    out
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `url` (`https://host:port`) with the given TLS config.
    pub fn new(
        url: &str,
        config: rustls::ClientConfig,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("must start with https://"))?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(bad("must not have a path"));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("needs an explicit port"))?;
        port.parse::<u16>()
            .map_err(|_| bad("port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| bad("host is neither a DNS name nor an IP address"))?;
        Ok(Client {
            addr: authority.to_string(),
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
            conn: None,
            timeout,
            stall: None,
        })
    }

    /// Also gives up when no progress is made for `stall`: connecting (TCP and TLS) must finish
    /// within it, and so must each piece of a response body. On a lossy link a stalled exchange
    /// (a lost FIN, TCP back-off after a partition) then fails in `stall` rather than in the
    /// whole request timeout, and the caller's retry starts on a fresh connection.
    pub fn with_stall_timeout(mut self, stall: Duration) -> Self {
        self.stall = Some(stall);
        self
    }

    /// `host:port` of the collector.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn connect(&self) -> Result<Conn, ClientError> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        tcp.set_nodelay(true).ok();
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| ClientError::Handshake {
                addr: self.addr.clone(),
                source,
            })?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Http {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let (tell, ended) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                let why = with_causes(&e);
                tracing::debug!(error = %why, "connection closed");
                let refused = is_refusal(&e);
                let _ = tell.send(Ended { why, refused });
            }
        });
        Ok(Conn { send, ended })
    }

    fn stalled(&self, stall: Duration, doing: &str) -> ClientError {
        ClientError::Http {
            addr: self.addr.clone(),
            reason: format!("no progress for {:.1} s while {doing}", stall.as_secs_f64()),
        }
    }

    /// The error for a failed exchange, with why the connection ended when it did: in TLS 1.3
    /// a server refusing our certificate (revoked, wrong role, …) says so only after the
    /// handshake, in an alert the connection's driver reads, not the request. When the alert
    /// comes before our request was written, hyper cancels the queued request with the alert as
    /// the cause ("operation was canceled") and its driver then ends without an error (hyper
    /// 1.13, `proto/h1/dispatch.rs`), so the cause is looked for in the request's error first. Otherwise the driver's word is awaited; only reached when hyper
    /// already gave up on the connection, so its driver has ended or is about to; the wait is
    /// bounded (5 s: once, under a loaded CI machine, 1 s was not enough and a refusal was taken
    /// for a network failure and retried).
    async fn exchange_error(
        &self,
        conn: &mut Conn,
        e: &(dyn std::error::Error + Send + Sync + 'static),
    ) -> ClientError {
        let here = with_causes(e);
        if is_refusal(e) {
            return ClientError::Refused {
                addr: self.addr.clone(),
                reason: here,
            };
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), &mut conn.ended).await;
        match ended {
            Ok(Ok(Ended { why, refused: true })) => ClientError::Refused {
                addr: self.addr.clone(),
                reason: format!("{here}; the connection ended: {why}"),
            },
            Ok(Ok(Ended { why, .. })) => ClientError::Http {
                addr: self.addr.clone(),
                reason: format!("{here}; the connection ended: {why}"),
            },
            _ => ClientError::Http {
                addr: self.addr.clone(),
                reason: here,
            },
        }
    }

    /// Sends one request and reads the whole response. The connection is kept for the next call
    /// and dropped on any error, so the next call reconnects.
    pub async fn request(
        &mut self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let timeout = self.timeout;
        let result = tokio::time::timeout(
            timeout,
            self.exchange(method, path_and_query, content_type, body),
        )
        .await;
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    secs: timeout.as_secs_f64(),
                })
            }
        }
    }

    async fn exchange(
        &mut self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let http_err = |addr: &str, e: &dyn std::fmt::Display| ClientError::Http {
            addr: addr.to_string(),
            reason: e.to_string(),
        };
        let mut conn = match self.conn.take() {
            Some(c) if !c.send.is_closed() => c,
            _ => match self.stall {
                Some(stall) => tokio::time::timeout(stall, self.connect())
                    .await
                    .map_err(|_| self.stalled(stall, "connecting"))??,
                None => self.connect().await?,
            },
        };
        if let Err(e) = conn.send.ready().await {
            return Err(self.exchange_error(&mut conn, &e).await);
        }
        let req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, &self.addr)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| http_err(&self.addr, &e))?;
        let resp = match conn.send.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Err(self.exchange_error(&mut conn, &e).await),
        };
        let status = resp.status();
        let retry_after_secs = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let mut incoming = resp.into_body();
        let mut body = bytes::BytesMut::new();
        loop {
            let next = match self.stall {
                Some(stall) => tokio::time::timeout(stall, incoming.frame())
                    .await
                    .map_err(|_| self.stalled(stall, "reading the response body"))?,
                None => incoming.frame().await,
            };
            match next {
                None => break,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        body.extend_from_slice(data);
                    }
                }
                Some(Err(e)) => return Err(self.exchange_error(&mut conn, &e).await),
            }
        }
        let body = body.freeze();
        self.conn = Some(conn);
        Ok(Response {
            status,
            retry_after_secs,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A config that trusts nothing: enough to start a handshake, which is all these tests need.
    fn config() -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A server that accepts and then says nothing: without a stall deadline the request waits
    /// its whole timeout; with one it fails as soon as connecting makes no progress, and the
    /// failure is transient (worth another try).
    #[test]
    fn a_silent_server_fails_at_the_stall_deadline_as_a_transient_error() {
        let rt = runtime();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("https://{}", listener.local_addr().unwrap());
            let hold = tokio::spawn(async move {
                let (conn, _) = listener.accept().await.unwrap();
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(conn);
            });
            let mut client = Client::new(&url, config(), Duration::from_secs(30))
                .unwrap()
                .with_stall_timeout(Duration::from_millis(300));
            let err = client
                .request(Method::GET, "/", "text/plain", Bytes::new())
                .await
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains("no progress for 0.3 s while connecting"),
                "{err}"
            );
            assert!(err.is_transient());
            hold.abort();
        });
    }

    /// A server that hangs up during the handshake (what a client sees when the server's
    /// handshake deadline passed on a slow link) gives a transient error; a URL without a port
    /// does not.
    #[test]
    fn a_handshake_cut_short_is_transient_and_a_bad_url_is_not() {
        let rt = runtime();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("https://{}", listener.local_addr().unwrap());
            let hang_up = tokio::spawn(async move {
                let (conn, _) = listener.accept().await.unwrap();
                drop(conn);
            });
            let mut client = Client::new(&url, config(), Duration::from_secs(30)).unwrap();
            let err = client
                .request(Method::GET, "/", "text/plain", Bytes::new())
                .await
                .unwrap_err();
            assert!(matches!(err, ClientError::Handshake { .. }), "{err}");
            assert!(err.is_transient(), "{err}");
            hang_up.await.unwrap();
        });
        let err = Client::new("https://127.0.0.1", config(), Duration::from_secs(1)).unwrap_err();
        assert!(!err.is_transient(), "{err}");
    }
}
