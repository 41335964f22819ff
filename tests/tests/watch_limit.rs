//! The inotify watch limit reached for real: `fs.inotify.max_user_watches` is lowered for the
//! duration of the test (and put back after), the agent must raise an alert saying how many
//! directories it could not watch, and still find a change in one of them by polling.
//!
//! A test binary of its own: cargo runs test binaries one after another, so no other test's
//! watcher runs while the limit is low.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade_tests::{wait_for, Agent, Collector, Pki};

const LIMIT: &str = "/proc/sys/fs/inotify/max_user_watches";

/// Puts the limit back however the test ends.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(LIMIT, &self.0);
    }
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
    let Ok(old) = std::fs::read_to_string(LIMIT) else {
        println!("skipped: {LIMIT} is not readable here");
        return;
    };
    // Probe whether we may write it (root in the initial user namespace).
    if std::fs::write(LIMIT, old.trim()).is_err() {
        println!("skipped: lowering fs.inotify.max_user_watches needs root (uid != 0 here)");
        return;
    }
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
    let _restore = Restore(old.trim().to_string());
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
