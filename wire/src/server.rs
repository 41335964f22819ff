//! Server plumbing shared by the collector and the replicator: a bounded accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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
