//! inotify's limits reached for real, as root: `fs.inotify.max_user_watches` lowered (the agent
//! must raise an alert saying how many directories it could not watch, and still find a change
//! in one of them by polling) and `fs.inotify.max_queued_events` lowered (the kernel queue
//! overflows in a burst; the agent must say so, rescan, and report every file). Each limit is
//! put back however the test ends.
//!
//! A test binary of its own: cargo runs test binaries one after another, so no other test's
//! watcher runs while a limit is low; the two tests here take turns through a lock.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade_tests::{wait_for, Agent, Collector, Pki};

const LIMIT: &str = "/proc/sys/fs/inotify/max_user_watches";
const QUEUE: &str = "/proc/sys/fs/inotify/max_queued_events";

/// One test at a time changes the system's inotify limits.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Puts a limit back however the test ends.
struct Restore(&'static str, String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, &self.1);
    }
}

/// The current value of `knob`, when this process may also write it (root).
fn writable(knob: &str) -> Option<String> {
    let old = std::fs::read_to_string(knob).ok()?;
    std::fs::write(knob, old.trim()).ok()?;
    Some(old.trim().to_string())
}

/// inotify watches held by all processes now (each `inotify wd:` line in /proc/*/fdinfo).
fn watches_in_use() -> usize {
    let mut n = 0;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for p in procs.flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(t) = std::fs::read_to_string(fd.path()) {
                n += t.lines().filter(|l| l.starts_with("inotify wd:")).count();
            }
        }
    }
    n
}

#[test]
fn hitting_the_watch_limit_alerts_and_polling_still_finds_the_change() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(old) = writable(LIMIT) else {
        println!("skipped: lowering fs.inotify.max_user_watches needs root (uid != 0 here)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "fim-limit");
    let collector = Collector::start(&tmp.path().join("collector"), &pki, 0, "");
    let tree = tmp.path().join("tree");
    for i in 0..40 {
        let d = tree.join(format!("d{i:02}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f.txt"), format!("{i}\n")).unwrap();
    }
    let _restore = Restore(LIMIT, old);
    // Room for a handful of the agent's watches, not for 40 directories.
    let limit = watches_in_use() + 6;
    std::fs::write(LIMIT, limit.to_string()).unwrap();
    let agent = Agent::start(
        &tmp.path().join("agent"),
        &pki,
        "fim-limit",
        &collector.url,
        &format!(
            "[heartbeat]\ninterval_secs = 1\n[integrity]\nfull_scan_interval_secs = 0\npoll_interval_secs = 1\n\
             [[integrity.paths]]\npath = \"{}\"\n[integrity.malware]\nenabled = false\n",
            tree.display()
        ),
    );
    let alert = wait_for(Duration::from_secs(60), || {
        collector
            .events(&pki, &["--kind", "integrity"])
            .into_iter()
            .find(|e| e["rule"]["id"] == "palisade.fim.watch_limit")
    })
    .unwrap_or_else(|| panic!("no watch-limit alert; agent log:\n{}", agent.log_text()));
    assert_eq!(alert["event"]["severity"], 4);
    assert!(alert["message"]
        .as_str()
        .unwrap()
        .contains(&limit.to_string()));
    // The last directories in walk order are the unwatched ones.
    let victim = tree.join("d39/f.txt");
    std::fs::write(&victim, "tampered\n").unwrap();
    let found = wait_for(Duration::from_secs(60), || {
        collector
            .events(&pki, &["--kind", "integrity"])
            .into_iter()
            .find(|e| e["file"]["path"] == victim.to_str().unwrap())
    })
    .unwrap_or_else(|| {
        panic!(
            "change in an unwatched dir not found; agent log:\n{}",
            agent.log_text()
        )
    });
    println!(
        "limit {limit}: alert \"{}\"; change found by {}",
        alert["message"].as_str().unwrap_or(""),
        found["palisade"]["integrity"]["detected_by"]
    );
    assert_eq!(found["event"]["action"], "file-changed");
    // d39 is not watched: only polling can have found it.
    assert_eq!(
        found["palisade"]["integrity"]["detected_by"], "polling",
        "{found}"
    );
    drop(agent);
}

#[test]
fn a_queue_overflow_is_reported_and_the_rescan_finds_every_file() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(old) = writable(QUEUE) else {
        println!("skipped: lowering fs.inotify.max_queued_events needs root (uid != 0 here)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "fim-queue");
    let collector = Collector::start(&tmp.path().join("collector"), &pki, 0, "");
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("drop")).unwrap();
    std::fs::write(tree.join("keep.txt"), "keep\n").unwrap();
    // The queue size is taken when the agent creates its inotify instance.
    let _restore = Restore(QUEUE, old);
    std::fs::write(QUEUE, "16").unwrap();
    let agent = Agent::start(
        &tmp.path().join("agent"),
        &pki,
        "fim-queue",
        &collector.url,
        &format!(
            "[heartbeat]\ninterval_secs = 1\n[integrity]\nfull_scan_interval_secs = 0\n\
             [[integrity.paths]]\npath = \"{}\"\n[integrity.malware]\nenabled = false\n",
            tree.display()
        ),
    );
    wait_for(Duration::from_secs(60), || {
        collector
            .events(&pki, &["--kind", "integrity"])
            .into_iter()
            .find(|e| e["event"]["action"] == "baseline-created")
    })
    .unwrap_or_else(|| panic!("no baseline; agent log:\n{}", agent.log_text()));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..2_000 {
        std::fs::write(tree.join(format!("drop/f{i:04}")), format!("{i}\n")).unwrap();
    }
    let events = wait_for(Duration::from_secs(60), || {
        let ev = collector.events(&pki, &["--kind", "integrity"]);
        // Distinct files: a rescan that caught a file between its creation and its write
        // reports it again once it has content (a new state), which is correct.
        let files: std::collections::HashSet<&str> = ev
            .iter()
            .filter_map(|e| e["file"]["path"].as_str())
            .filter(|p| p.contains("/drop/f"))
            .collect();
        (files.len() == 2_000).then_some(ev)
    })
    .unwrap_or_else(|| panic!("not every file reported; agent log:\n{}", agent.log_text()));
    let rescan = events
        .iter()
        .find(|e| e["rule"]["id"] == "palisade.fim.rescan")
        .unwrap_or_else(|| panic!("no rescan notice; agent log:\n{}", agent.log_text()));
    assert!(rescan["message"].as_str().unwrap().contains("overflowed"));
    drop(agent);
}
