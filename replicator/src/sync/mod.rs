//! Active-active directories (同城双活): two sites keep one directory in step, both writable.
//!
//! - Change detection: a recursive notify watcher, debounced ([`watch`]); a full scan at start
//!   catches offline edits, and a full rescan follows any watcher overflow. A change is only
//!   recorded once settled: not while the watcher saw the file written and not yet closed, not
//!   while its mtime is under 50 ms old (1 s for a file just emptied: every rewrite in place
//!   starts with a truncate), and not when it changed during the read; such a path is looked
//!   at again, and a peer's version of it meanwhile is told to offer again (409). So a file
//!   caught mid-write is never shipped as a version.
//! - State ([`state`]): per path a version vector (site → changes), the blake3 of the content
//!   or a tombstone, size, mtime, and the site and time of the change; `STATE/state.json`,
//!   rewritten atomically (temp + fsync + rename), with group commit: a change only bumps the
//!   state's generation; one write covers every change since the last, and happens when a
//!   thread must have its change on disk before it speaks (answering a peer's offer or update,
//!   offering a version, sending the index: these wait until their generation is saved,
//!   sharing the write with every other waiter), or else within 30 ms. A crash can only lose
//!   changes nobody was told about yet: the start-up scan finds them again on disk, and
//!   anti-entropy re-offers whatever the peer lacks. The shipper offers up to
//!   [`net::SHIPPERS`] paths at once, so their waits (here and at the peer) share writes.
//! - Shipping ([`net`], [`protocol`]): every local change queues its path; the shipper offers
//!   the path's current version, the peer answers which FastCDC chunks it cannot find in its
//!   own copy, and only those cross, zstd-compressed. The peer rebuilds the file, checks its
//!   blake3 against the offer, and writes it with temp + fsync + rename.
//! - Merging ([`engine`]): newer versions apply, older ones are ignored, concurrent ones are a
//!   conflict: both versions are kept (one at the name, the other as
//!   `NAME.conflict-SITE-N-YYYYmmddTHHMMSSZ`, SITE, N and time being that version's: its
//!   site, its change number there, its change time), a delete
//!   never beats a concurrent modification, and each conflict is logged (WARN) and reported to
//!   the collector when one is configured (`--collector`). The version that keeps the name is
//!   chosen the same way on both sites (later change time, then greater site name) and the
//!   vectors are merged without a further bump, so the two sites converge even when both
//!   detect the same conflict at once, instead of raising a second conflict about the first.
//!   The conflict copy is the same version on both sites too: its name and its version
//!   vector (SITE → N) come from the losing version alone, and it is recorded in the state
//!   under the same lock as its write (the watcher's echo finds nothing new), so copies made
//!   by both sites for one conflict are "have" to each other, never a conflict of copies.
//! - Local writes racing a peer's version: the path is re-read (and a difference recorded as a
//!   local version) before an incoming version is judged, and the file's size/mtime/inode are
//!   checked again just before the rename or unlink; a write that slipped in makes the peer
//!   offer again (409), and then it is a conflict, not an overwrite. The window left is the
//!   few microseconds between that check and the rename.
//! - Peer down: the queue is a set of paths (bounded by the tree); failed paths stay queued
//!   with back-off (200 ms doubling to 2 s), and every reconnect (and every 15 s) runs an
//!   anti-entropy exchange of all version vectors, so nothing changed meanwhile, or while
//!   this process was down, is missed. A crash at any point is caught by the start-up scan.
//!   A try that makes no progress for 15 s (connecting, or between pieces of the answer) is
//!   abandoned and retried on a fresh connection, within a 30 s deadline for the whole request:
//!   on a lossy link a handshake whose packets were lost is not waited out.
//! - Lag: each applied version records now − its change time at the origin (the file's mtime
//!   there, so the sites' clocks are assumed NTP-synced: skew shows up in the figure);
//!   p50/p99 are logged every 10 s (INFO) and written with the counters to
//!   `STATE/status.json` every second.
//!
//! - Permissions: a file's permission bits (`0o777`) travel with its version, and a chmod alone
//!   is a version (content unchanged, so only the mode crosses); concurrent chmods keep the
//!   later one, without a conflict copy. setuid, setgid and sticky bits never cross (an offer
//!   carrying them is refused): a peer must not be able to plant a setuid program.
//!
//! Not handled (yet): symlinks, empty directories and ownership are not synced;
//! a file at one site where the other has a directory is retried, not resolved; files over
//! [`engine::MAX_FILE_BYTES`] are skipped; tombstones are kept forever; the state file is
//! rewritten whole at every group commit (fine for thousands of paths, not millions); any
//! `replicator` certificate from the CA may act as the peer (the peer's name is not pinned).
//! Exactly two sites: the shipper talks to one peer.

pub mod engine;
pub mod net;
pub mod protocol;
pub mod state;
pub mod tree;
pub mod vv;
pub mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade_wire::event::Event;

use crate::error::{Error, Result};
use crate::report::Reporter;
use crate::transport::PeerTls;

use self::engine::Engine;

/// How often the status file is rewritten.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How often lag and counters are logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Options of `sync`.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// The directory kept in step.
    pub dir: PathBuf,
    /// This site's name (appears in version vectors and conflict copies).
    pub site: String,
    /// `host:port` to listen on for the peer.
    pub listen: String,
    /// The peer's URL.
    pub peer: String,
    /// Where sync keeps its state (version vectors); default `DIR/../.palisade-sync-SITE`.
    pub state_dir: Option<PathBuf>,
    /// Stop after this many seconds (tests, drills); run until a signal otherwise.
    pub run_secs: Option<u64>,
    /// Where conflict events go; none are sent without it.
    pub reporter: Option<Reporter>,
}

fn valid_site(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Runs sync until a signal (or `run_secs`).
pub fn run(opts: &SyncOptions, tls: &PeerTls) -> Result<()> {
    if !valid_site(&opts.site) {
        return Err(Error::Usage(format!(
            "site name {:?} must be 1-64 of A-Z a-z 0-9 . _ - (it is part of file names)",
            opts.site
        )));
    }
    let root = opts
        .dir
        .canonicalize()
        .map_err(Error::io("open the sync directory", &opts.dir))?;
    if !root.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let state_dir = match &opts.state_dir {
        Some(d) => d.clone(),
        None => root
            .parent()
            .ok_or_else(|| {
                Error::Usage("the sync directory has no parent; give --state-dir".into())
            })?
            .join(format!(".palisade-sync-{}", opts.site)),
    };
    std::fs::create_dir_all(&state_dir).map_err(Error::io("create", &state_dir))?;
    let state_dir = state_dir
        .canonicalize()
        .map_err(Error::io("open", &state_dir))?;
    tree::clean_temp_files(&root);

    let reports = opts.reporter.clone().map(spawn_reporter);
    let engine = Arc::new(
        Engine::open(root.clone(), state_dir.clone(), opts.site.clone(), reports)?
            .with_settle(watch::SETTLE),
    );
    let server_tls = tls.server()?;
    let clients = net::clients(tls, &opts.peer)?;

    let rt = palisade_wire::process::runtime()
        .map_err(|e| Error::Usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Watch first, then scan: a change during the scan is seen twice, never missed.
        let watcher = watch::start(engine.clone(), stop_rx.clone())?;
        let e = engine.clone();
        let changed = tokio::task::spawn_blocking(move || e.observe(""))
            .await
            .map_err(|e| Error::Usage(format!("start-up scan: {e}")))??;
        tracing::info!(dir = %root.display(), site = %opts.site, changed, "start-up scan done");

        let listener = tokio::net::TcpListener::bind(&opts.listen)
            .await
            .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", opts.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Usage(format!("listener address: {e}")))?;
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
        tracing::info!(%addr, peer = %opts.peer, site = %opts.site, "sync running");

        let mut srv_stop = stop_rx.clone();
        let server = tokio::spawn(crate::transport::server::run(
            listener,
            server_tls,
            Arc::new(net::SyncService::new(engine.clone())),
            crate::transport::server::Limits::default(),
            async move {
                let _ = srv_stop.wait_for(|s| *s).await;
            },
        ));
        let shipper = tokio::spawn(net::shipper(engine.clone(), clients, stop_rx.clone()));
        let status = tokio::spawn(status_loop(engine.clone(), stop_rx.clone()));
        let saver = tokio::spawn(saver_loop(engine.clone(), stop_rx.clone()));

        match opts.run_secs {
            Some(s) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                    _ = palisade_wire::process::shutdown_signal() => {}
                }
            }
            None => palisade_wire::process::shutdown_signal().await,
        }
        tracing::info!("sync stopping");
        let _ = stop_tx.send(true);
        drop(watcher);
        // A request in flight to a peer that hangs must not hold the exit for its full timeout.
        let _ = tokio::time::timeout(Duration::from_secs(5), shipper).await;
        let _ = status.await;
        let _ = server.await;
        let _ = saver.await;
        Ok::<(), Error>(())
    })?;
    engine.flush()?;
    let st = engine.status();
    engine.write_status(&st)?;
    tracing::info!(
        applied = st.applied,
        conflicts = st.conflicts,
        sent = st.sent,
        lag_p50_ms = st.lag_p50_ms,
        lag_p99_ms = st.lag_p99_ms,
        "sync stopped"
    );
    Ok(())
}

async fn status_loop(engine: Arc<Engine>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last = None;
    let mut last_log = tokio::time::Instant::now();
    loop {
        let st = engine.status();
        if last.as_ref() != Some(&st) {
            let e = engine.clone();
            let s = st.clone();
            match tokio::task::spawn_blocking(move || e.write_status(&s)).await {
                Ok(Err(err)) => tracing::warn!(error = %err, "cannot write status.json"),
                Err(err) => tracing::warn!(error = %err, "cannot write status.json"),
                Ok(Ok(())) => {}
            }
            last = Some(st.clone());
        }
        if last_log.elapsed() >= LOG_EVERY {
            last_log = tokio::time::Instant::now();
            tracing::info!(
                applied = st.applied,
                conflicts = st.conflicts,
                sent = st.sent,
                pending = st.pending,
                peer_reachable = st.peer_reachable,
                lag_p50_ms = st.lag_p50_ms,
                lag_p99_ms = st.lag_p99_ms,
                "replication lag"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(STATUS_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Writes the state when it has changes nobody waited for (see [`state`]'s group commit).
async fn saver_loop(engine: Arc<Engine>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(state::SAVE_EVERY) => {}
            _ = stop.changed() => return,
        }
        if !engine.dirty() {
            continue;
        }
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot save the sync state"),
            Err(err) => tracing::warn!(error = %err, "cannot save the sync state"),
        }
    }
}

/// Conflict events go through a small bounded queue to one thread, because delivering a
/// report blocks (it has its own runtime) and may wait for a collector that is down.
fn spawn_reporter(reporter: Reporter) -> std::sync::mpsc::SyncSender<Event> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Event>(256);
    std::thread::spawn(move || {
        for event in rx {
            match reporter.report(event) {
                Ok(crate::report::Delivery::Sent(_)) => {}
                Ok(crate::report::Delivery::Queued(n)) => {
                    tracing::warn!(
                        queued = n,
                        "collector unreachable; conflict events kept in the outbox"
                    )
                }
                Err(e) => tracing::error!(error = %e, "cannot record a conflict event"),
            }
        }
    });
    tx
}
