//! The shipper: takes the oldest spooled events, sends them as one batch over mutual TLS, and
//! deletes them only when the collector acknowledges that they are durable. One batch in flight,
//! so batches arrive in sequence order. Failures back off exponentially with jitter; 503 honours
//! Retry-After; a batch refused as too large is split; one refused as malformed is quarantined
//! (kept on disk, counted) rather than retried forever.
//!
//! Acknowledged events stay in the spool's replay window; when an answer's `stored_before` is
//! below what the collector acknowledged earlier (its store came back from an older backup), the
//! retained events above it are queued again and re-sent in sequence order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use palisade_wire::batch;
use palisade_wire::client::Client;
use tokio::sync::watch;

use crate::config::ShipConfig;
use crate::spool::{Spool, Spooled};

/// Shipper counters, reported in heartbeats.
#[derive(Debug, Default)]
pub struct ShipCounters {
    /// Batches acknowledged.
    pub batches: AtomicU64,
    /// Events acknowledged.
    pub events: AtomicU64,
    /// Events the collector already had.
    pub duplicates: AtomicU64,
    /// Failed attempts (network, 5xx, 503).
    pub failures: AtomicU64,
    /// Events quarantined after a 400.
    pub quarantined: AtomicU64,
    /// Acknowledged events sent again because the collector lost them.
    pub replayed: AtomicU64,
}

/// Exponential back-off with "equal jitter": half the delay fixed, half random.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial`, never waits longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay; doubles the base for the following one.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

enum Sent {
    /// Durable; with the highest sequence of ours the collector held before this batch, if it
    /// said (`stored_before`).
    Acked(Option<u64>),
    /// The collector is busy: wait this long (Retry-After plus jitter).
    Busy(Duration),
    /// Network error or server error: back off.
    Failed,
    Split,
    Quarantine,
}

async fn read_oldest(
    spool: &Arc<Spool>,
    max_events: usize,
    max_bytes: usize,
) -> Option<Vec<Spooled>> {
    let s = spool.clone();
    match tokio::task::spawn_blocking(move || s.peek(max_events, max_bytes)).await {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read the spool");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "spool reader failed");
            None
        }
    }
}

/// Ships until `stop` turns true; then tries for `drain_timeout_secs` to empty the spool.
pub async fn run(
    spool: Arc<Spool>,
    mut client: Client,
    agent_id: String,
    config: ShipConfig,
    counters: Arc<ShipCounters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(config.initial_backoff_ms),
        Duration::from_millis(config.max_backoff_ms),
    );
    let mut max_events = config.max_batch_events;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if drain_deadline.is_none() && *stop.borrow() {
            drain_deadline = Some(Instant::now() + Duration::from_secs(config.drain_timeout_secs));
        }
        if drain_deadline.is_some_and(|d| Instant::now() >= d) {
            let (left, _) = spool.depth();
            if left > 0 {
                tracing::warn!(
                    events = left,
                    "stopping with events still spooled; they ship on next start"
                );
            }
            return;
        }
        let draining = drain_deadline.is_some();
        let Some(mut pending) = read_oldest(&spool, max_events, config.max_batch_bytes).await
        else {
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        };
        if pending.is_empty() {
            if draining {
                return;
            }
            tokio::select! {
                _ = spool.notify.notified() => {}
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        // Linger briefly for a fuller batch, unless it is already full or we are draining.
        if pending.len() < max_events && !draining {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(config.max_batch_delay_ms)) => {}
                _ = stop.changed() => {}
            }
            if let Some(p) = read_oldest(&spool, max_events, config.max_batch_bytes).await {
                if !p.is_empty() {
                    pending = p;
                }
            }
        }
        let wait = match send(&mut client, &agent_id, &config, &counters, &pending).await {
            Sent::Acked(stored_before) => {
                backoff.reset();
                max_events = config.max_batch_events;
                let seqs: Vec<u64> = pending.iter().map(|p| p.seq).collect();
                let s = spool.clone();
                let c = counters.clone();
                // Replay before this batch's ack: its own events are stored, only older
                // acknowledged ones can be missing.
                match tokio::task::spawn_blocking(move || {
                    if let Some(n) = stored_before {
                        replay_if_behind(&s, &c, n);
                    }
                    s.ack(&seqs)
                })
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot delete acknowledged events; they will be re-sent")
                    }
                    Err(e) => tracing::error!(error = %e, "spool ack task failed"),
                }
                None
            }
            Sent::Busy(d) => Some(d),
            Sent::Failed => Some(backoff.next_delay()),
            Sent::Split => {
                max_events = (pending.len() / 2).max(1);
                tracing::warn!(
                    events = pending.len(),
                    next = max_events,
                    "batch too large for the collector; splitting"
                );
                None
            }
            Sent::Quarantine => {
                counters
                    .quarantined
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                let s = spool.clone();
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || s.quarantine(&pending)).await
                {
                    tracing::error!(error = %e, "cannot quarantine refused events");
                }
                None
            }
        };
        if let Some(delay) = wait {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // On shutdown, go straight to the drain attempt.
                _ = stop.changed(), if !draining => {}
            }
        }
    }
}

/// Blocking. If the collector holds fewer of our events than it acknowledged (its store was
/// restored from an older backup), queues the retained ones again.
fn replay_if_behind(spool: &Spool, counters: &ShipCounters, stored_through: u64) {
    let acked_through = spool.acked_through();
    if stored_through >= acked_through {
        return;
    }
    match spool.replay_after(stored_through) {
        Ok(r) => {
            tracing::warn!(
                stored_through,
                acked_through,
                replayed = r.replayed,
                lost = r.lost,
                "collector is behind (stored through {stored_through}, acked through {acked_through}): replaying {} retained events",
                r.replayed
            );
            counters.replayed.fetch_add(r.replayed, Ordering::Relaxed);
        }
        Err(e) => tracing::error!(error = %e, "cannot replay retained events"),
    }
}

async fn send(
    client: &mut Client,
    agent_id: &str,
    config: &ShipConfig,
    counters: &ShipCounters,
    pending: &[Spooled],
) -> Sent {
    let pairs: Vec<(u64, &[u8])> = pending.iter().map(|p| (p.seq, p.json.as_ref())).collect();
    let frame = match batch::encode(agent_id, &pairs, config.zstd_level) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a batch from the spool");
            return Sent::Quarantine;
        }
    };
    let first = pending.first().map(|p| p.seq).unwrap_or(0);
    let last = pending.last().map(|p| p.seq).unwrap_or(0);
    let resp = client
        .request(
            Method::POST,
            "/v1/ingest",
            "application/x-palisade-batch",
            Bytes::from(frame),
        )
        .await;
    match resp {
        Ok(r) if r.status == StatusCode::OK => {
            let body = serde_json::from_slice::<serde_json::Value>(&r.body).ok();
            let field = |name: &str| body.as_ref().and_then(|v| v.get(name)?.as_u64());
            let dups = field("duplicates").unwrap_or(0);
            let stored_before = field("stored_before");
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters
                .events
                .fetch_add(pending.len() as u64, Ordering::Relaxed);
            counters.duplicates.fetch_add(dups, Ordering::Relaxed);
            tracing::debug!(
                first,
                last,
                events = pending.len(),
                duplicates = dups,
                "batch acknowledged"
            );
            Sent::Acked(stored_before)
        }
        Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE => {
            let secs = r.retry_after_secs.unwrap_or(1).min(60);
            let jitter = Duration::from_millis(fastrand::u64(0..=250));
            tracing::debug!(retry_after = secs, "collector busy");
            Sent::Busy(Duration::from_secs(secs) + jitter)
        }
        Ok(r) if r.status == StatusCode::PAYLOAD_TOO_LARGE && pending.len() > 1 => Sent::Split,
        Ok(r)
            if r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::PAYLOAD_TOO_LARGE =>
        {
            tracing::error!(first, last, status = %r.status, reason = %r.text(), "collector refused the batch as malformed; quarantined");
            Sent::Quarantine
        }
        Ok(r) => {
            tracing::warn!(status = %r.status, reason = %r.text(), "collector did not accept the batch; will retry");
            Sent::Failed
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot deliver batch; will retry");
            Sent::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut bases = Vec::new();
        for _ in 0..8 {
            let d = b.next_delay();
            bases.push(d);
        }
        // Each delay lies in [base/2, base] for base 100, 200, 400, 800, 1000, 1000, ...
        let expect = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, base) in bases.iter().zip(expect) {
            let ms = d.as_millis() as u64;
            assert!(
                ms >= base / 2 && ms <= base,
                "{ms} not in [{}, {base}]",
                base / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
