//! [`AuditLog`]: the append-only writer. One thread owns the files. Records arrive on a bounded
//! channel; the thread takes everything queued (one group), seals each record onto the chain,
//! writes the group with one `write` per day file and one fdatasync, then answers the callers
//! that wait for durability. A group that fails to write is cut off the file again (`set_len`)
//! so the chain on disk never has a hole.
//!
//! Anchors (the chain head: seq, hash, time) go to `anchors.ndjson` every
//! `anchor_every_records` records or `anchor_interval_secs`, whichever comes first. That file is
//! what the replicator is meant to ship off-site (not built yet): a copy held elsewhere is what
//! makes truncating the tail or rewriting the whole chain detectable.
//!
//! On start the last day file is re-read: bytes after its last newline (a write torn by a crash)
//! are moved to `<file>.torn.N` for evidence and cut off; the chain continues from the last
//! complete record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use palisade_wire::Timestamp;
use tokio::sync::oneshot;

use super::record::{self, Anchor, Entry, GENESIS};
use super::{day_files, io_err, AuditConfig, AuditError, ANCHORS_FILE};

/// Records waiting for the writer; senders wait (asynchronously) when it is full.
const QUEUE_RECORDS: usize = 16_384;
/// Most records sealed into one group commit.
const MAX_GROUP_RECORDS: usize = 4_096;

type Ack = oneshot::Sender<Result<u64, String>>;

enum Msg {
    Record(Box<Entry>, Option<Ack>),
    Close(oneshot::Sender<()>),
}

/// Counters for `status` and tests.
#[derive(Debug, Default)]
pub struct AuditMetrics {
    /// Records made durable.
    pub records: AtomicU64,
    /// Group commits.
    pub commits: AtomicU64,
    /// Records lost to write errors.
    pub lost: AtomicU64,
    /// Anchors written.
    pub anchors: AtomicU64,
}

/// Handle on the audit log; cheap to share behind an `Arc`.
pub struct AuditLog {
    dir: PathBuf,
    tx: Mutex<Option<SyncSender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    metrics: std::sync::Arc<AuditMetrics>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
struct Head {
    seq: u64,
    hash: [u8; 32],
    time: Timestamp,
}

impl AuditLog {
    /// Opens (creating) the audit directory `dir`, recovers the chain head, starts the writer.
    pub fn open(dir: &Path, config: &AuditConfig) -> Result<AuditLog, AuditError> {
        config.check().map_err(AuditError::Write)?;
        std::fs::create_dir_all(dir).map_err(io_err("cannot create audit directory", dir))?;
        let head = recover_head(dir)?;
        let anchors_path = dir.join(ANCHORS_FILE);
        let last_anchor = recover_anchors(&anchors_path)?;
        if let Some(a) = &last_anchor {
            if a.seq > head.seq {
                tracing::error!(
                    dir = %dir.display(),
                    log_seq = head.seq,
                    anchor_seq = a.seq,
                    "audit log ends before its last anchor: records were removed; `audit verify` reports it"
                );
            }
        }
        let anchors = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&anchors_path)
            .map_err(io_err("cannot open audit anchors", &anchors_path))?;
        sync_dir(dir)?;
        tracing::info!(dir = %dir.display(), seq = head.seq, "audit log open");
        let metrics = std::sync::Arc::new(AuditMetrics::default());
        let (tx, rx) = mpsc::sync_channel(QUEUE_RECORDS);
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            file: None,
            head,
            anchors,
            anchors_path,
            last_anchor_seq: last_anchor.map_or(0, |a| a.seq),
            last_anchor_at: Instant::now(),
            every: config.anchor_every_records,
            interval: Duration::from_secs(config.anchor_interval_secs),
            metrics: metrics.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err("cannot start the audit writer for", dir))?;
        Ok(AuditLog {
            dir: dir.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            metrics,
        })
    }

    /// The audit directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters.
    pub fn metrics(&self) -> &AuditMetrics {
        &self.metrics
    }

    fn sender(&self) -> Result<SyncSender<Msg>, AuditError> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(AuditError::Stopped)
    }

    /// Appends `entry`. With `durable`, returns once the record is fsynced (its seq); without,
    /// once it is queued (seq 0). Waits without blocking the runtime when the queue is full.
    pub async fn record(&self, entry: Entry, durable: bool) -> Result<u64, AuditError> {
        let tx = self.sender()?;
        let (ack, rx) = if durable {
            let (a, r) = oneshot::channel();
            (Some(a), Some(r))
        } else {
            (None, None)
        };
        match tx.try_send(Msg::Record(Box::new(entry), ack)) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => {
                let sent = tokio::task::spawn_blocking(move || tx.send(msg).is_ok())
                    .await
                    .map_err(|e| AuditError::Write(e.to_string()))?;
                if !sent {
                    return Err(AuditError::Stopped);
                }
            }
            Err(TrySendError::Disconnected(_)) => return Err(AuditError::Stopped),
        }
        match rx {
            None => Ok(0),
            Some(rx) => match rx.await {
                Ok(Ok(seq)) => Ok(seq),
                Ok(Err(e)) => Err(AuditError::Write(e)),
                Err(_) => Err(AuditError::Stopped),
            },
        }
    }

    /// [`record`](Self::record) for synchronous callers (not from inside a runtime).
    pub fn record_blocking(&self, entry: Entry, durable: bool) -> Result<u64, AuditError> {
        let tx = self.sender()?;
        let (ack, rx) = if durable {
            let (a, r) = oneshot::channel();
            (Some(a), Some(r))
        } else {
            (None, None)
        };
        tx.send(Msg::Record(Box::new(entry), ack))
            .map_err(|_| AuditError::Stopped)?;
        match rx {
            None => Ok(0),
            Some(rx) => match rx.blocking_recv() {
                Ok(Ok(seq)) => Ok(seq),
                Ok(Err(e)) => Err(AuditError::Write(e)),
                Err(_) => Err(AuditError::Stopped),
            },
        }
    }

    /// Writes everything queued, a final anchor, and stops the writer. Later records fail with
    /// [`AuditError::Stopped`]. Blocks; call from `spawn_blocking` inside a runtime.
    pub fn close(&self) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = tx {
            let (done, rx) = oneshot::channel();
            if tx.send(Msg::Close(done)).is_ok() {
                let _ = rx.blocking_recv();
            }
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!("audit writer panicked");
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Dropping the sender lets the thread drain the queue, anchor and stop on its own.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

struct Writer {
    dir: PathBuf,
    file: Option<(String, File, u64)>,
    head: Head,
    anchors: File,
    anchors_path: PathBuf,
    last_anchor_seq: u64,
    last_anchor_at: Instant,
    every: u64,
    interval: Duration,
    metrics: std::sync::Arc<AuditMetrics>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let wait = self.interval.saturating_sub(self.last_anchor_at.elapsed());
            let first = match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.anchor_if_due();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.anchor(true);
                    return;
                }
            };
            let mut group = Vec::new();
            let mut close = None;
            match first {
                Msg::Record(e, a) => group.push((*e, a)),
                Msg::Close(done) => close = Some(done),
            }
            while close.is_none() && group.len() < MAX_GROUP_RECORDS {
                match rx.try_recv() {
                    Ok(Msg::Record(e, a)) => group.push((*e, a)),
                    Ok(Msg::Close(done)) => close = Some(done),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit(group);
            }
            self.anchor_if_due();
            if let Some(done) = close {
                // Records sent before the close are in the queue ahead of it: drain them.
                let rest: Vec<_> = rx
                    .try_iter()
                    .filter_map(|m| match m {
                        Msg::Record(e, a) => Some((*e, a)),
                        Msg::Close(_) => None,
                    })
                    .collect();
                if !rest.is_empty() {
                    self.commit(rest);
                }
                self.anchor(true);
                let _ = done.send(());
                return;
            }
        }
    }

    /// Seals and writes `group`, one write + fdatasync per day file touched.
    fn commit(&mut self, group: Vec<(Entry, Option<Ack>)>) {
        let mut pending = group.into_iter().peekable();
        while pending.peek().is_some() {
            let mut head = self.head;
            let mut buf = Vec::new();
            let mut acks = Vec::new();
            let mut day = None;
            let mut count = 0u64;
            while let Some((entry, _)) = pending.peek() {
                // Time never goes backwards along the chain, so day files stay in order even
                // if the wall clock is stepped back.
                let time = Timestamp::now().max(head.time);
                let d = time.day();
                match &day {
                    None => day = Some(d),
                    Some(cur) if *cur != d => break,
                    Some(_) => {}
                }
                let seq = head.seq + 1;
                let (rec, line) = record::seal(entry, seq, time, &head.hash);
                let hash = record::unhex32(&rec.hash).unwrap_or(GENESIS);
                head = Head { seq, hash, time };
                buf.extend_from_slice(&line);
                count += 1;
                if let Some((_, ack)) = pending.next() {
                    acks.push((seq, ack));
                }
            }
            let Some(day) = day else { break };
            match self.append(&day, &buf) {
                Ok(()) => {
                    self.head = head;
                    self.metrics.records.fetch_add(count, Ordering::Relaxed);
                    self.metrics.commits.fetch_add(1, Ordering::Relaxed);
                    for (seq, ack) in acks {
                        if let Some(a) = ack {
                            let _ = a.send(Ok(seq));
                        }
                    }
                }
                Err(e) => {
                    let rest: Vec<_> = pending.by_ref().map(|(_, a)| a).collect();
                    let lost = count + rest.len() as u64;
                    self.metrics.lost.fetch_add(lost, Ordering::Relaxed);
                    tracing::error!(error = %e, records = lost, "audit records lost: cannot write the audit log");
                    let msg = e.to_string();
                    for a in acks.into_iter().map(|(_, a)| a).chain(rest).flatten() {
                        let _ = a.send(Err(msg.clone()));
                    }
                    return;
                }
            }
        }
    }

    fn append(&mut self, day: &str, buf: &[u8]) -> Result<(), AuditError> {
        if self.file.as_ref().is_none_or(|(d, _, _)| d != day) {
            let path = self.dir.join(format!("{day}.log"));
            let existed = path.exists();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err("cannot open audit file", &path))?;
            let len = f
                .metadata()
                .map_err(io_err("cannot stat audit file", &path))?
                .len();
            if !existed {
                sync_dir(&self.dir)?;
            }
            self.file = Some((day.to_string(), f, len));
        }
        let path = self.dir.join(format!("{day}.log"));
        let Some((_, f, len)) = self.file.as_mut() else {
            return Err(AuditError::Write("no audit file open".into()));
        };
        let written = f.write_all(buf).and_then(|_| f.sync_data());
        match written {
            Ok(()) => {
                *len += buf.len() as u64;
                Ok(())
            }
            Err(source) => {
                // Cut the partial group off so the next record continues a whole chain.
                if let Err(e) = f.set_len(*len).and_then(|_| f.sync_data()) {
                    tracing::error!(path = %path.display(), error = %e, "cannot cut a failed audit write off; verify will report a torn record");
                }
                self.file = None;
                Err(AuditError::Io {
                    action: "cannot write audit file",
                    path,
                    source,
                })
            }
        }
    }

    fn anchor_if_due(&mut self) {
        let new = self.head.seq.saturating_sub(self.last_anchor_seq);
        if new >= self.every || (new > 0 && self.last_anchor_at.elapsed() >= self.interval) {
            self.anchor(false);
        } else if new == 0 && self.last_anchor_at.elapsed() >= self.interval {
            self.last_anchor_at = Instant::now();
        }
    }

    /// Appends the chain head to the anchors file if it moved since the last anchor.
    fn anchor(&mut self, closing: bool) {
        if self.head.seq <= self.last_anchor_seq {
            return;
        }
        let a = Anchor {
            seq: self.head.seq,
            hash: record::hex(&self.head.hash),
            time: Timestamp::now(),
        };
        let mut line = serde_json::to_vec(&a).unwrap_or_default();
        line.push(b'\n');
        match self
            .anchors
            .write_all(&line)
            .and_then(|_| self.anchors.sync_data())
        {
            Ok(()) => {
                self.last_anchor_seq = a.seq;
                self.last_anchor_at = Instant::now();
                self.metrics.anchors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(seq = a.seq, closing, "audit anchor written");
            }
            Err(e) => {
                tracing::error!(path = %self.anchors_path.display(), error = %e, "cannot write audit anchor; will retry");
                self.last_anchor_at = Instant::now();
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    crate::store::sync_dir(dir).map_err(io_err("cannot fsync audit directory", dir))
}

fn read_all(path: &Path) -> Result<Vec<u8>, AuditError> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(io_err("cannot read audit file", path))?;
    Ok(buf)
}

/// Moves bytes after the last newline of `path` into `<path>.torn[.N]` and cuts them off.
/// Returns the complete content.
fn cut_torn_tail(path: &Path) -> Result<Vec<u8>, AuditError> {
    let mut data = read_all(path)?;
    let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep == data.len() {
        return Ok(data);
    }
    let torn = data.split_off(keep);
    let mut evidence = PathBuf::from(format!("{}.torn", path.display()));
    let mut n = 1;
    while evidence.exists() {
        n += 1;
        evidence = PathBuf::from(format!("{}.torn.{n}", path.display()));
    }
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&evidence)
        .map_err(io_err("cannot create", &evidence))?;
    f.write_all(&torn)
        .and_then(|_| f.sync_all())
        .map_err(io_err("cannot write", &evidence))?;
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("cannot open audit file", path))?;
    f.set_len(keep as u64)
        .and_then(|_| f.sync_all())
        .map_err(io_err("cannot cut the torn tail off", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    tracing::warn!(
        file = %path.display(),
        offset = keep,
        bytes = torn.len(),
        kept_in = %evidence.display(),
        "audit log ended in a torn record (crash during a write); the chain continues after the last complete record"
    );
    Ok(data)
}

/// The chain head on disk: the last parseable record of the newest day file that has one.
fn recover_head(dir: &Path) -> Result<Head, AuditError> {
    let files = day_files(dir)?;
    for (i, (_, path)) in files.iter().enumerate().rev() {
        let data = if i + 1 == files.len() {
            cut_torn_tail(path)?
        } else {
            read_all(path)?
        };
        for (n, line) in data
            .split(|&b| b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            match record::parse_line(line) {
                Some(p) => match p.record {
                    Ok(r) => {
                        if !p.hash_ok {
                            tracing::error!(file = %path.display(), line = n + 1, seq = r.seq, "last audit record does not match its hash (edited?); continuing the chain from it");
                        }
                        return Ok(Head {
                            seq: r.seq,
                            hash: p.stored_hash,
                            time: r.time,
                        });
                    }
                    Err(e) => {
                        tracing::error!(file = %path.display(), line = n + 1, error = %e, "unreadable audit record left in place")
                    }
                },
                None => {
                    tracing::error!(file = %path.display(), line = n + 1, "unreadable audit record left in place")
                }
            }
        }
    }
    Ok(Head {
        seq: 0,
        hash: GENESIS,
        time: Timestamp(0),
    })
}

/// The last anchor written, after cutting off a torn anchor line.
fn recover_anchors(path: &Path) -> Result<Option<Anchor>, AuditError> {
    if !path.exists() {
        return Ok(None);
    }
    let data = cut_torn_tail(path)?;
    Ok(data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<Anchor>(l).ok())
        .next_back())
}

impl crate::metrics::MetricsSource for AuditLog {
    fn write(&self, out: &mut crate::metrics::MetricsWriter) {
        let m = &self.metrics;
        for (name, help, v) in [
            (
                "palisade_audit_records_total",
                "Audit records made durable in the hash chain.",
                &m.records,
            ),
            (
                "palisade_audit_lost_total",
                "Audit records that could not be written (alarm on any increase).",
                &m.lost,
            ),
            (
                "palisade_audit_anchors_total",
                "Anchors (chain head hashes) written.",
                &m.anchors,
            ),
        ] {
            out.counter(name, help, &[], v.load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(n: u64) -> Entry {
        Entry {
            identity: format!("user-{n}"),
            role: "analyst".into(),
            peer: "127.0.0.1:5000".into(),
            method: "GET".into(),
            path: format!("/v1/events?n={n}"),
            action: serde_json::Value::Null,
            result: 200,
        }
    }

    #[test]
    fn records_chain_across_restarts_and_anchors_follow() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AuditConfig {
            anchor_every_records: 3,
            anchor_interval_secs: 60,
        };
        let log = AuditLog::open(dir.path(), &cfg).unwrap();
        for n in 1..=4 {
            assert_eq!(log.record_blocking(entry(n), true).unwrap(), n);
        }
        log.close();
        let log = AuditLog::open(dir.path(), &cfg).unwrap();
        assert_eq!(log.record_blocking(entry(5), true).unwrap(), 5);
        log.close();
        let report = super::super::verify(dir.path()).unwrap();
        assert!(report.intact, "{report:?}");
        assert_eq!(report.records, 5);
        // seq 3 by count, 4 at close, 5 at close.
        assert_eq!(report.anchors, 3);
    }

    #[test]
    fn a_torn_last_line_is_kept_as_evidence_and_the_chain_continues() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AuditConfig::default();
        let log = AuditLog::open(dir.path(), &cfg).unwrap();
        for n in 1..=3 {
            log.record_blocking(entry(n), true).unwrap();
        }
        log.close();
        let (_, file) = day_files(dir.path()).unwrap().pop().unwrap();
        // A crash in the middle of writing record 4.
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(b"{\"seq\":4,\"time\":\"20").unwrap();
        drop(f);
        let torn_report = super::super::verify(dir.path()).unwrap();
        assert!(torn_report.intact, "a torn tail is not tampering");
        assert_eq!(
            torn_report.warnings[0].kind,
            super::super::FindingKind::TornTail
        );

        let log = AuditLog::open(dir.path(), &cfg).unwrap();
        assert_eq!(log.record_blocking(entry(4), true).unwrap(), 4);
        log.close();
        let torn = PathBuf::from(format!("{}.torn", file.display()));
        assert_eq!(std::fs::read(&torn).unwrap(), b"{\"seq\":4,\"time\":\"20");
        let report = super::super::verify(dir.path()).unwrap();
        assert!(report.intact, "{report:#?}");
        assert_eq!(report.records, 4);
        assert!(report
            .warnings
            .iter()
            .any(|w| w.kind == super::super::FindingKind::TornEvidence));
    }
}
