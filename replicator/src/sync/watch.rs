//! Change detection: a recursive notify watcher feeds paths through a bounded channel; a
//! debouncer gathers them for a short quiet period and re-reads each (the engine turns a
//! real difference into a new version and ignores the echo of what it just applied). A full
//! channel or an inotify overflow turns into one rescan of the whole tree, never a lost change.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::engine::Engine;
use super::tree;
use crate::error::{Error, Result};

/// Quiet time gathered before re-reading changed paths.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// How old a change must be before it is recorded: a file caught mid-write (truncated, half
/// written) is looked at again rather than taken for a version (see `Engine::with_settle`).
pub const SETTLE: Duration = Duration::from_millis(50);
/// Full rescan this often, for changes a watcher can miss (e.g. some network filesystems).
const RESCAN_EVERY: Duration = Duration::from_secs(300);

/// A running watcher; dropping it stops the notifications.
#[derive(Debug)]
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching the engine's tree and spawns the debouncer on the current runtime.
pub fn start(engine: Arc<Engine>, stop: watch::Receiver<bool>) -> Result<Watch> {
    let (tx, rx) = mpsc::channel::<PathBuf>(8192);
    let overflow = Arc::new(AtomicBool::new(false));
    let flag = overflow.clone();
    let (eng, root) = (engine.clone(), engine.root().to_path_buf());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(ev) => {
                // A file created or written is open until its close-after-write: until then
                // it may be half written (just truncated), which is no version to ship.
                use notify::event::{AccessKind, AccessMode, ModifyKind};
                use notify::EventKind;
                let opened = matches!(
                    ev.kind,
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any)
                );
                let closed = ev.kind == EventKind::Access(AccessKind::Close(AccessMode::Write));
                if opened || closed {
                    for rel in ev.paths.iter().filter_map(|p| tree::relative(&root, p)) {
                        if rel.is_empty() {
                            continue;
                        }
                        if opened {
                            eng.note_write_start(rel);
                        } else {
                            eng.note_write_end(&rel);
                        }
                    }
                }
                // Reads (our own scans and hashing included) are not changes: listening to
                // them would make every scan trigger the next one.
                if let notify::EventKind::Access(kind) = ev.kind {
                    if !matches!(
                        kind,
                        notify::event::AccessKind::Close(notify::event::AccessMode::Write)
                    ) {
                        return;
                    }
                }
                if ev.need_rescan() {
                    flag.store(true, Ordering::Relaxed);
                }
                for p in ev.paths {
                    if tx.try_send(p).is_err() {
                        flag.store(true, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "watcher error; rescanning");
                flag.store(true, Ordering::Relaxed);
            }
        }
        // Wake the debouncer even when only the flag changed.
        let _ = tx.try_send(PathBuf::new());
    })
    .map_err(|e| Error::Usage(format!("cannot start the file watcher: {e}")))?;
    watcher
        .watch(engine.root(), RecursiveMode::Recursive)
        .map_err(|e| {
            Error::Usage(format!(
                "cannot watch {}: {e} (raise fs.inotify.max_user_watches?)",
                engine.root().display()
            ))
        })?;
    tokio::spawn(debounce(engine, rx, overflow, stop));
    Ok(Watch { _watcher: watcher })
}

async fn debounce(
    engine: Arc<Engine>,
    mut rx: mpsc::Receiver<PathBuf>,
    overflow: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_rescan = tokio::time::Instant::now() + RESCAN_EVERY;
    loop {
        let first = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => return },
            _ = tokio::time::sleep_until(next_rescan) => {
                overflow.store(true, Ordering::Relaxed);
                PathBuf::new()
            }
            // A change seen before it settled: look again after the quiet time.
            _ = engine.unsettled_wake.notified() => PathBuf::new(),
            _ = stop.changed() => return,
        };
        let mut paths = BTreeSet::from([first]);
        let quiet = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => { paths.insert(p); }
                    None => break,
                },
                _ = &mut quiet => break,
            }
        }
        let rescan = overflow.swap(false, Ordering::Relaxed);
        let root = engine.root().to_path_buf();
        let mut rels: BTreeSet<String> = if rescan {
            next_rescan = tokio::time::Instant::now() + RESCAN_EVERY;
            BTreeSet::from([String::new()])
        } else {
            paths
                .iter()
                .filter(|p| !p.as_os_str().is_empty())
                .filter_map(|p| tree::relative(&root, p))
                .filter(|r| !r.is_empty())
                .collect()
        };
        // A change to the root itself (e.g. a rename out of it) means: look at everything.
        if !rescan && paths.iter().any(|p| p == &root) {
            rels = BTreeSet::from([String::new()]);
        }
        let unsettled = engine.take_unsettled();
        if !rescan {
            rels.extend(unsettled);
        }
        if rels.is_empty() {
            continue;
        }
        let e = engine.clone();
        let rels: Vec<String> = rels.into_iter().collect();
        match tokio::task::spawn_blocking(move || e.observe_all(&rels)).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(changed = n, "local changes queued"),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "cannot record local changes"),
            Err(err) => tracing::error!(error = %err, "cannot record local changes"),
        }
    }
}
