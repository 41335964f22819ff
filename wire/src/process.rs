//! Process plumbing the three binaries share: logging, the async runtime, the shutdown signal
//! and opening an embedded database whose lock a closing handle still holds.

/// A multi-threaded tokio runtime with I/O and timers.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Logs to stderr with `filter` (tracing's env-filter syntax; `fallback` when it does not
/// parse), coloured only on a terminal.
pub fn init_logging(filter: &str, fallback: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(fallback));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// How long [`open_waiting_for_lock`] waits for a database lock to be released.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Calls `open` until it succeeds, fails for a reason other than a held lock, or [`LOCK_WAIT`]
/// has passed (then its last error is returned). For sled, whose `Db` releases its file lock
/// from a background flusher thread some moments after the last handle is dropped: an open
/// right after a close in the same process (a store reopened, a test) can otherwise fail with
/// "could not acquire lock" although nothing holds the database any more (sled issues 1234 and
/// 1289). A database really held by another process still fails, [`LOCK_WAIT`] later.
pub fn open_waiting_for_lock<T, E: std::fmt::Display>(
    mut open: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match open() {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_waited_for_and_other_errors_are_not() {
        let mut calls = 0;
        let r: Result<u32, String> = open_waiting_for_lock(|| {
            calls += 1;
            if calls < 3 {
                Err("IO error: could not acquire lock on \"db\"".to_string())
            } else {
                Ok(7)
            }
        });
        assert_eq!((r, calls), (Ok(7), 3));

        let mut calls = 0;
        let r: Result<u32, String> = open_waiting_for_lock(|| {
            calls += 1;
            Err("corrupt log".to_string())
        });
        assert_eq!(
            (r, calls),
            (Err("corrupt log".to_string()), 1),
            "not retried"
        );

        let started = std::time::Instant::now();
        let r: Result<u32, String> =
            open_waiting_for_lock(|| Err("could not acquire lock on \"db\"".to_string()));
        assert!(r.is_err(), "a lock never released is reported");
        assert!(started.elapsed() >= LOCK_WAIT, "after the wait, not before");
    }
}
