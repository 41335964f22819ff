//! The write path: decoded batches wait in a bounded queue for one writer thread, which commits
//! them in groups (one fsync per group) and only then answers each sender. A full queue is
//! refused at once (HTTP 503 + Retry-After): there is no unbounded buffer anywhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use palisade_wire::batch::Batch;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Histogram;
use crate::store::{BatchOutcome, EventStore};

/// Ingest counters, exposed by `status`.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Events newly stored.
    pub accepted: AtomicU64,
    /// Duplicate events dropped.
    pub duplicates: AtomicU64,
    /// Batches refused as malformed, oversized or from the wrong identity.
    pub rejected: AtomicU64,
    /// Batches refused with 503 because the queue was full.
    pub queue_full: AtomicU64,
    /// Group commits (flushes).
    pub commits: AtomicU64,
    /// Store write failures.
    pub store_errors: AtomicU64,
    /// How long each batch waited in the queue before its group's commit began.
    pub queue_wait: Histogram,
    /// How long each group commit took (`store.write`: dedup, segments, fdatasync, index).
    pub commit_time: Histogram,
}

/// A point-in-time copy of [`IngestMetrics`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct IngestSnapshot {
    /// Batches committed.
    pub batches: u64,
    /// Events newly stored.
    pub accepted: u64,
    /// Duplicate events dropped.
    pub duplicates: u64,
    /// Batches refused as malformed, oversized or from the wrong identity.
    pub rejected: u64,
    /// Batches refused with 503.
    pub queue_full: u64,
    /// Group commits.
    pub commits: u64,
    /// Store write failures.
    pub store_errors: u64,
}

impl IngestMetrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> IngestSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngestSnapshot {
            batches: r(&self.batches),
            accepted: r(&self.accepted),
            duplicates: r(&self.duplicates),
            rejected: r(&self.rejected),
            queue_full: r(&self.queue_full),
            commits: r(&self.commits),
            store_errors: r(&self.store_errors),
        }
    }
}

/// Something that wants every batch once it is durable: the correlator, the syslog forwarder,
/// live tails. Called on the writer thread after the senders were answered, with the whole
/// committed group; an implementation must return quickly (hand off to its own thread) and
/// decides itself whether to wait for room (back-pressure) or drop and count.
pub trait CommitSink: Send + Sync {
    /// The batches just committed, in commit order (duplicates of stored events included:
    /// a sink that must not see an event twice filters on the agent's sequence).
    fn committed(&self, batches: &Arc<[Batch]>);
}

type Reply = oneshot::Sender<Result<BatchOutcome, String>>;

struct Job {
    batch: Batch,
    reply: Reply,
    queued: Instant,
}

/// Handle for submitting batches to the writer.
#[derive(Debug, Clone)]
pub struct IngestQueue {
    tx: mpsc::Sender<Job>,
    metrics: Arc<IngestMetrics>,
}

/// The queue was full; the batch is handed back.
#[derive(Debug)]
pub struct QueueFull;

impl IngestQueue {
    /// Starts the writer thread over `store`. The thread ends when every handle is dropped.
    pub fn start(
        store: Arc<dyn EventStore>,
        capacity: usize,
        max_group_events: usize,
        metrics: Arc<IngestMetrics>,
        sinks: Vec<Arc<dyn CommitSink>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(store, rx, max_group_events.max(1), m, sinks))?;
        Ok(IngestQueue { tx, metrics })
    }

    /// Queues a batch; the receiver resolves once it is durable (or failed).
    pub fn try_submit(
        &self,
        batch: Batch,
    ) -> Result<oneshot::Receiver<Result<BatchOutcome, String>>, QueueFull> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job {
            batch,
            reply,
            queued: Instant::now(),
        }) {
            Ok(()) => Ok(rx),
            Err(_) => {
                self.metrics.queue_full.fetch_add(1, Ordering::Relaxed);
                Err(QueueFull)
            }
        }
    }
}

fn writer(
    store: Arc<dyn EventStore>,
    mut rx: mpsc::Receiver<Job>,
    max_group_events: usize,
    metrics: Arc<IngestMetrics>,
    sinks: Vec<Arc<dyn CommitSink>>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut events = first.batch.events.len();
        let mut group = vec![first];
        while events < max_group_events {
            match rx.try_recv() {
                Ok(job) => {
                    events += job.batch.events.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        for job in &group {
            metrics
                .queue_wait
                .record(started.saturating_duration_since(job.queued));
        }
        let batches: Vec<&Batch> = group.iter().map(|j| &j.batch).collect();
        let written = store.write(&batches);
        metrics.commit_time.record(started.elapsed());
        match written {
            Ok(outcomes) => {
                metrics.commits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    batches = group.len(),
                    events,
                    micros = started.elapsed().as_micros() as u64,
                    "group committed"
                );
                let mut committed = Vec::with_capacity(group.len());
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    metrics.batches.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .accepted
                        .fetch_add(outcome.accepted, Ordering::Relaxed);
                    metrics
                        .duplicates
                        .fetch_add(outcome.duplicates, Ordering::Relaxed);
                    let _ = job.reply.send(Ok(outcome));
                    committed.push(job.batch);
                }
                if !sinks.is_empty() {
                    let committed: Arc<[Batch]> = committed.into();
                    for sink in &sinks {
                        sink.committed(&committed);
                    }
                }
            }
            Err(e) => {
                // Nothing of this group is acknowledged; agents keep it and retry.
                metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, batches = group.len(), "store write failed; batches not acknowledged");
                let msg = e.to_string();
                for job in group {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
        }
    }
    tracing::info!("store writer stopped");
}
