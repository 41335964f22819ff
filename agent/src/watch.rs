//! Hot reload of a directory of signatures (IOC lists, YARA rules) without a restart.
//!
//! A `notify` watcher on the directory feeds a reload thread. After a change the thread waits for
//! a quiet moment (an editor or a sync tool writes in bursts), builds a fresh value with the
//! caller's loader, and publishes it; a load that fails is logged and counted, and the value in
//! force stays in force. Consumers call [`Reloadable::take_update`], which costs one atomic load
//! when nothing changed, so it can sit on the packet path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The change watcher could not be set up.
    #[error("cannot watch {path} for changes: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The watcher's error.
        source: notify::Error,
    },
    /// The reload thread could not be started.
    #[error("cannot start the reload thread for {path}: {source}")]
    Thread {
        /// The directory.
        path: PathBuf,
        /// The spawn error.
        source: std::io::Error,
    },
}

/// Counters and the last published value, shared between the reload thread and the consumer.
#[derive(Debug)]
struct Shared<T> {
    generation: AtomicU64,
    pending: Mutex<Option<Arc<T>>>,
    reloads: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A value loaded from a directory, reloaded in the background when files in it change.
#[derive(Debug)]
pub struct Reloadable<T> {
    shared: Arc<Shared<T>>,
    seen_generation: u64,
    /// Dropping it stops the watcher, which ends the reload thread.
    _watcher: Option<notify::RecommendedWatcher>,
}

fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    // The data is a plain value replaced whole, so a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Send + Sync + 'static> Reloadable<T> {
    /// Nothing watched: [`Reloadable::take_update`] only returns what [`Reloadable::publish`]
    /// stored.
    pub fn unwatched() -> Self {
        Reloadable {
            shared: Arc::new(Shared {
                generation: AtomicU64::new(0),
                pending: Mutex::new(None),
                reloads: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
            seen_generation: 0,
            _watcher: None,
        }
    }

    /// Watches `dir` (not recursively); on a change to a file for which `relevant` is true,
    /// waits until no change came for `debounce`, then calls `load` on the reload thread named
    /// `name`. `what` names the signatures in log lines.
    pub fn watch<L, E>(
        dir: &Path,
        name: &str,
        what: &'static str,
        debounce: Duration,
        relevant: fn(&Path) -> bool,
        load: L,
    ) -> Result<Self, WatchError>
    where
        L: Fn() -> Result<T, E> + Send + 'static,
        E: std::fmt::Display,
    {
        use notify::Watcher;

        let mut this = Self::unwatched();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                Ok(event) => {
                    if !matches!(event.kind, notify::EventKind::Access(_))
                        && event.paths.iter().any(|p| relevant(p))
                    {
                        // The reload thread has gone only when the consumer is being dropped.
                        let _ = tx.send(());
                    }
                }
                Err(e) => tracing::warn!(error = %e, what, "signature watcher reported an error"),
            }
        })
        .map_err(|source| WatchError::Watch {
            path: dir.to_path_buf(),
            source,
        })?;
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                path: dir.to_path_buf(),
                source,
            })?;
        let shared = Arc::clone(&this.shared);
        let shown = dir.display().to_string();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || reload_loop(&rx, debounce, &shared, &load, what, &shown))
            .map_err(|source| WatchError::Thread {
                path: dir.to_path_buf(),
                source,
            })?;
        this._watcher = Some(watcher);
        Ok(this)
    }

    /// A value the reload thread published since the last call, if any. One atomic load when
    /// there is none.
    pub fn take_update(&mut self) -> Option<Arc<T>> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation == self.seen_generation {
            return None;
        }
        self.seen_generation = generation;
        lock(&self.shared.pending).take()
    }

    /// Publishes `value` as if the reload thread had loaded it (for reloads on request).
    pub fn publish(&self, value: T) {
        self.shared.publish(value);
    }

    /// Records a failed load made outside the reload thread.
    pub fn record_failure(&self, error: String) {
        self.shared.fail(error);
    }

    /// Successful reloads since start.
    pub fn reloads(&self) -> u64 {
        self.shared.reloads.load(Ordering::Relaxed)
    }

    /// Failed reloads since start; each left the previous value in force.
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// The error of the last failed reload.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }
}

impl<T> Shared<T> {
    fn publish(&self, value: T) {
        *lock(&self.pending) = Some(Arc::new(value));
        self.generation.fetch_add(1, Ordering::Release);
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    fn fail(&self, error: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some(error);
    }
}

/// Runs until the watcher is dropped: waits for a quiet moment after a change, then loads and
/// publishes, or logs why not and keeps the value in force.
fn reload_loop<T, E: std::fmt::Display>(
    rx: &Receiver<()>,
    debounce: Duration,
    shared: &Shared<T>,
    load: &dyn Fn() -> Result<T, E>,
    what: &'static str,
    dir: &str,
) {
    while rx.recv().is_ok() {
        loop {
            match rx.recv_timeout(debounce) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        match load() {
            Ok(value) => {
                shared.publish(value);
                tracing::info!(what, dir, "signatures reloaded");
            }
            Err(e) => {
                tracing::warn!(what, dir, error = %e, "signatures not reloaded; the previous set stays active");
                shared.fail(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(p: &Path) -> bool {
        p.extension().is_some_and(|e| e == "txt")
    }

    fn wait_update(r: &mut Reloadable<String>) -> Option<Arc<String>> {
        for _ in 0..200 {
            if let Some(v) = r.take_update() {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    #[test]
    fn reloads_on_change_and_keeps_counting_failures() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "one").unwrap();
        let f = file.clone();
        let mut r = Reloadable::watch(
            dir.path(),
            "test-reload",
            "test",
            Duration::from_millis(50),
            txt,
            move || {
                let s = std::fs::read_to_string(&f).map_err(|e| e.to_string())?;
                if s.starts_with("bad") {
                    Err(format!("{}: bad content", f.display()))
                } else {
                    Ok(s)
                }
            },
        )
        .unwrap();
        assert!(r.take_update().is_none(), "nothing before a change");
        std::fs::write(&file, "two").unwrap();
        assert_eq!(
            wait_update(&mut r).as_deref().map(String::as_str),
            Some("two")
        );
        assert!(r.reloads() >= 1);

        std::fs::write(&file, "bad").unwrap();
        for _ in 0..200 {
            if r.failures() > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(r.failures() >= 1, "a failed load is counted");
        assert!(r.last_error().unwrap().contains("bad content"));
        assert!(r.take_update().is_none(), "a failed load publishes nothing");

        // Files the predicate ignores do not trigger a load.
        let before = r.reloads() + r.failures();
        std::fs::write(dir.path().join("notes.md"), "x").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(r.reloads() + r.failures(), before);
    }

    #[test]
    fn publish_reaches_the_consumer_once() {
        let mut r: Reloadable<String> = Reloadable::unwatched();
        r.publish("x".into());
        assert_eq!(r.take_update().as_deref().map(String::as_str), Some("x"));
        assert!(r.take_update().is_none());
    }
}
