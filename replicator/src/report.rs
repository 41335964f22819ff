//! Run reports to the collector: every backup, restore, verify, prune, sync conflict and drill
//! becomes one `palisade.replication` (or `palisade.drill`) event, sent over the same mutual TLS
//! as the agents' batches with the replicator's own certificate (CN = the reporting name).
//!
//! An event is first written to an outbox directory and deleted only once the collector has
//! acknowledged it, so a collector that is down loses nothing: the next run sends the backlog.
//! Sequences are the event's creation time in ns, strictly increasing per outbox, so they never
//! repeat across runs without any counter file to lose.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use palisade_wire::batch;
use palisade_wire::event::{Event, EventKind, Severity};

use crate::error::{Error, Result};
use crate::transport::PeerTls;

/// Where run reports go.
#[derive(Clone, Debug)]
pub struct Reporter {
    /// Collector URL.
    pub collector: String,
    /// The certificate's CN, used as `agent.id`.
    pub name: String,
    /// TLS files.
    pub tls: PeerTls,
    /// Outbox directory.
    pub outbox: PathBuf,
}

/// What a report said about its delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The collector acknowledged every event in the outbox.
    Sent(usize),
    /// Kept in the outbox for the next run.
    Queued(usize),
}

impl Reporter {
    /// Records `event` in the outbox, then tries to deliver the whole outbox.
    pub fn report(&self, mut event: Event) -> Result<Delivery> {
        std::fs::create_dir_all(&self.outbox).map_err(Error::io("create", &self.outbox))?;
        let seq = self.next_sequence()?;
        event.agent.id = self.name.clone();
        if let Some(o) = event.observer.as_mut() {
            o.name = self.name.clone();
        }
        event.seal(seq);
        crate::repo::write_atomic(&self.outbox, &format!("{seq:020}.json"), &event.to_json())?;
        self.flush()
    }

    fn next_sequence(&self) -> Result<u64> {
        let now = u64::try_from(palisade_wire::event::Timestamp::now().nanos()).unwrap_or(1);
        let last = pending(&self.outbox)?.last().map(|(s, _)| *s).unwrap_or(0);
        Ok(now.max(last + 1))
    }

    /// Sends what the outbox holds, oldest first, in one batch.
    pub fn flush(&self) -> Result<Delivery> {
        let files = pending(&self.outbox)?;
        if files.is_empty() {
            return Ok(Delivery::Sent(0));
        }
        let mut events = Vec::new();
        for (seq, path) in &files {
            let json = std::fs::read(path).map_err(Error::io("read", path))?;
            events.push((*seq, json));
        }
        let pairs: Vec<(u64, &[u8])> = events.iter().map(|(s, j)| (*s, j.as_slice())).collect();
        let frame = batch::encode(&self.name, &pairs, 3)
            .map_err(|e| Error::Usage(format!("report batch: {e}")))?;
        let sent = (|| -> Result<bool> {
            let mut client = self.tls.client(&self.collector, Duration::from_secs(10))?;
            let rt = palisade_wire::process::runtime()
                .map_err(|e| Error::Usage(format!("runtime: {e}")))?;
            let r = rt.block_on(client.request(
                Method::POST,
                "/v1/ingest",
                "application/x-palisade-batch",
                Bytes::from(frame),
            ));
            match r {
                Ok(r) if r.status == StatusCode::OK => Ok(true),
                Ok(r) => {
                    tracing::warn!(status = %r.status, reason = %r.text(), "collector did not take the run report; kept in the outbox");
                    Ok(false)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "collector unreachable; run report kept in the outbox");
                    Ok(false)
                }
            }
        })()?;
        if !sent {
            return Ok(Delivery::Queued(files.len()));
        }
        for (_, p) in &files {
            let _ = std::fs::remove_file(p);
        }
        Ok(Delivery::Sent(files.len()))
    }
}

fn pending(outbox: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(outbox) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list", outbox)(e)),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(seq) = name
            .strip_suffix(".json")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((seq, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A replication event: `action` (backup, restore, verify, prune, sync-conflict, …), a message,
/// and the run's figures under `palisade.replication`.
pub fn replication_event(
    action: &str,
    severity: Severity,
    message: String,
    details: serde_json::Value,
) -> Event {
    let mut e = Event::new("replicator", EventKind::Replication, severity)
        .with_message(message)
        .with_details(serde_json::json!({ "replication": details }));
    e.event.action = Some(action.to_string());
    e
}
