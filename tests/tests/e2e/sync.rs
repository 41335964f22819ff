//! Active-active sync between two real `palisade-replicator sync` processes on loopback:
//! changes flow both ways, concurrent edits keep both versions, a delete never beats a
//! concurrent modification, and a path leaving the tree is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use palisade_tests::{bin, free_port, wait_for, wait_for_line, Collector, Pki};
use palisade_wire::client::Client;
use palisade_wire::tls::{client_config, TlsFiles};

const CONVERGE: Duration = Duration::from_secs(60);

/// One site: a directory, a state directory, a port, and the process while it runs.
struct Site {
    name: String,
    dir: PathBuf,
    state: PathBuf,
    log: PathBuf,
    port: u16,
    peer_port: u16,
    /// Address it listens on, and its peer's.
    host: String,
    peer_host: String,
    /// Network namespace it runs in (`ip netns exec`), if not this one.
    netns: Option<String>,
    pki: PathBuf,
    /// Collector URL for conflict reports.
    collector: Option<String>,
    child: Option<Child>,
}

impl Site {
    fn new(base: &Path, name: &str, port: u16, peer_port: u16, pki: &Pki) -> Site {
        let dir = base.join(name).join("data");
        let state = base.join(name).join("state");
        std::fs::create_dir_all(&dir).unwrap();
        Site {
            name: name.to_string(),
            dir,
            state,
            log: base.join(name).join("sync.log"),
            port,
            peer_port,
            host: "127.0.0.1".into(),
            peer_host: "127.0.0.1".into(),
            netns: None,
            pki: pki.dir.clone(),
            collector: None,
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns])
                    .arg(bin("palisade-replicator"));
                c
            }
            None => Command::new(bin("palisade-replicator")),
        };
        if let Some(url) = &self.collector {
            cmd.args(["--collector", url]);
        }
        let mut child = cmd
            .args([
                "--pki-dir",
                self.pki.to_str().unwrap(),
                "--identity",
                &self.name,
                "sync",
                "--dir",
                self.dir.to_str().unwrap(),
                "--site",
                &self.name,
                "--listen",
                &format!("{}:{}", self.host, self.port),
                "--peer",
                &format!("https://{}:{}", self.peer_host, self.peer_port),
                "--state-dir",
                self.state.to_str().unwrap(),
            ])
            .env("PALISADE_LOG", "info,palisade_replicator::sync=debug")
            .env_remove("PALISADE_COLLECTOR")
            // The report outbox lives under the test's directory.
            .env("XDG_STATE_HOME", self.dir.parent().unwrap().join("xdg"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        if wait_for_line(&mut child, "listening on ", Duration::from_secs(30)).is_none() {
            let _ = child.kill();
            panic!("site {} did not start:\n{}", self.name, self.log_text());
        }
        self.child = Some(child);
    }

    /// SIGKILL: a site lost without warning.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Every regular file: relative path → content.
    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(b) = std::fs::read(&p) {
                    let rel = p
                        .strip_prefix(&self.dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.insert(rel, b);
                }
            }
        }
        out
    }

    fn status(&self) -> serde_json::Value {
        std::fs::read(self.state.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PKI in `base/pki` with a replicator certificate for each (site, address): each site is a
/// server too, so its address is in its certificate.
fn site_pki(base: &Path, sites: &[(&str, &str)]) -> Pki {
    let pki = Pki::init(&base.join("pki"));
    for (name, ip) in sites {
        pki.issue_with_sans("replicator", name, &[ip]);
    }
    pki
}

/// A PKI with one replicator certificate per site (SAN 127.0.0.1: each site is a server too),
/// and two sites pointed at each other, started.
fn two_sites(base: &Path) -> (Pki, Site, Site) {
    let (pki, a, b, _) = two_sites_reporting_to(base, None);
    (pki, a, b)
}

/// [`two_sites`], with a collector (in `collector`) both report to.
fn two_sites_reporting_to(
    base: &Path,
    collector: Option<&Path>,
) -> (Pki, Site, Site, Option<Collector>) {
    let pki = site_pki(base, &[("site-a", "127.0.0.1"), ("site-b", "127.0.0.1")]);
    let (pa, pb) = (free_port(), free_port());
    let mut a = Site::new(base, "site-a", pa, pb, &pki);
    let mut b = Site::new(base, "site-b", pb, pa, &pki);
    let collector = if let Some(dir) = collector {
        let c = Collector::start(dir, &pki, 0, "");
        a.collector = Some(c.url.clone());
        b.collector = Some(c.url.clone());
        Some(c)
    } else {
        None
    };
    a.start();
    b.start();
    (pki, a, b, collector)
}

fn converged(a: &Site, b: &Site) -> Option<BTreeMap<String, Vec<u8>>> {
    let (fa, fb) = (a.files(), b.files());
    (fa == fb).then_some(fa)
}

fn explain(a: &Site, b: &Site) -> String {
    // Which files differ, with their contents and what each site's state says about them.
    let (fa, fb) = (a.files(), b.files());
    let state = |s: &Site| -> serde_json::Value {
        std::fs::read(s.state.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    let (sa, sb) = (state(a), state(b));
    let mut diff = String::new();
    for name in fa
        .keys()
        .chain(fb.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (ca, cb) = (fa.get(name), fb.get(name));
        let show = |c: Option<&Vec<u8>>| c.map(|c| String::from_utf8_lossy(c).into_owned());
        diff.push_str(&format!(
            "{} {name}: a {:?} {} | b {:?} {}\n",
            if ca == cb { " " } else { "!" },
            show(ca),
            sa["entries"][name.as_str()],
            show(cb),
            sb["entries"][name.as_str()],
        ));
    }
    format!(
        "site-a files {:?}\nsite-b files {:?}\n--- per file (content, state entry)\n{diff}\
         --- status\nsite-a {}\nsite-b {}\n--- site-a log\n{}\n--- site-b log\n{}",
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        a.status(),
        b.status(),
        a.log_text(),
        b.log_text()
    )
}

fn lag_line(site: &Site) -> String {
    let s = site.status();
    format!(
        "{}: applied {} conflicts {} lag p50 {} ms p99 {} ms",
        site.name, s["applied"], s["conflicts"], s["lag_p50_ms"], s["lag_p99_ms"]
    )
}

#[test]
fn sync_ships_create_edit_delete_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, a, b) = two_sites(tmp.path());

    // Created at A (in a new directory, with enough data for several chunks).
    let big: Vec<u8> = (0..600_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::create_dir_all(a.path("docs")).unwrap();
    std::fs::write(a.path("docs/report.bin"), &big).unwrap();
    std::fs::write(a.path("hello.txt"), b"hello from a\n").unwrap();
    wait_for(CONVERGE, || {
        (std::fs::read(b.path("docs/report.bin")).ok()? == big
            && std::fs::read(b.path("hello.txt")).ok()? == b"hello from a\n")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("A's new files did not reach B\n{}", explain(&a, &b)));

    // Edited at B.
    let mut edited = big.clone();
    edited[300_000..300_011].copy_from_slice(b"EDITED-AT-B");
    std::fs::write(b.path("docs/report.bin"), &edited).unwrap();
    wait_for(CONVERGE, || {
        (std::fs::read(a.path("docs/report.bin")).ok()? == edited).then_some(())
    })
    .unwrap_or_else(|| panic!("B's edit did not reach A\n{}", explain(&a, &b)));

    // A chmod alone at A (no content change, no mtime change) reaches B through the watcher.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        a.path("docs/report.bin"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    wait_for(CONVERGE, || {
        let m = std::fs::metadata(b.path("docs/report.bin")).ok()?;
        (m.permissions().mode() & 0o777 == 0o600).then_some(())
    })
    .unwrap_or_else(|| panic!("A's chmod did not reach B\n{}", explain(&a, &b)));

    // Deleted at A.
    std::fs::remove_file(a.path("hello.txt")).unwrap();
    wait_for(CONVERGE, || (!b.path("hello.txt").exists()).then_some(()))
        .unwrap_or_else(|| panic!("A's delete did not reach B\n{}", explain(&a, &b)));

    let files = wait_for(CONVERGE, || converged(&a, &b))
        .unwrap_or_else(|| panic!("sites did not converge\n{}", explain(&a, &b)));
    assert_eq!(files.len(), 1, "{:?}", files.keys());
    wait_for(CONVERGE, || {
        (a.status()["applied"].as_u64()? >= 1 && b.status()["applied"].as_u64()? >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("status.json not written\n{}", explain(&a, &b)));
    assert_eq!(a.status()["conflicts"], 0);
    assert_eq!(b.status()["conflicts"], 0);
    eprintln!("{}\n{}", lag_line(&a), lag_line(&b));
}

#[test]
fn sync_concurrent_edits_during_partition_keep_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, a, mut b) = two_sites(tmp.path());
    std::fs::write(a.path("shared.txt"), b"base\n").unwrap();
    wait_for(CONVERGE, || {
        (std::fs::read(b.path("shared.txt")).ok()? == b"base\n").then_some(())
    })
    .unwrap_or_else(|| panic!("base did not reach B\n{}", explain(&a, &b)));

    // Partition: B dies; both sides edit the same file; B comes back.
    b.kill();
    std::fs::write(a.path("shared.txt"), b"edited at a\n").unwrap();
    std::fs::write(b.path("shared.txt"), b"edited at b\n").unwrap();
    b.start();

    let files = wait_for(CONVERGE, || {
        let f = converged(&a, &b)?;
        (f.len() == 2).then_some(f)
    })
    .unwrap_or_else(|| panic!("sites did not converge\n{}", explain(&a, &b)));
    assert!(files.contains_key("shared.txt"), "{:?}", files.keys());
    let copy = files
        .keys()
        .find(|k| k.starts_with("shared.txt.conflict-site-"))
        .unwrap_or_else(|| panic!("no conflict copy: {:?}", files.keys()));
    assert!(copy.ends_with('Z'), "{copy}");
    let mut contents: Vec<&[u8]> = files.values().map(Vec::as_slice).collect();
    contents.sort();
    assert_eq!(
        contents,
        vec![&b"edited at a\n"[..], &b"edited at b\n"[..]],
        "an edit was lost"
    );
    wait_for(CONVERGE, || {
        let n = a.status()["conflicts"].as_u64()? + b.status()["conflicts"].as_u64()?;
        (n >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("no conflict counted\n{}", explain(&a, &b)));
    assert!(
        a.log_text().contains("sync conflict") || b.log_text().contains("sync conflict"),
        "no conflict warning logged"
    );
    eprintln!("{}\n{}", lag_line(&a), lag_line(&b));
}

#[test]
fn sync_simultaneous_writes_on_both_live_sites_converge() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, a, b) = two_sites(tmp.path());
    let rounds = 15;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let writers: Vec<_> = [("a", a.path("hot.txt")), ("b", b.path("hot.txt"))]
        .into_iter()
        .map(|(who, path)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                for i in 0..rounds {
                    barrier.wait();
                    std::fs::write(&path, format!("{who}-{i}\n")).unwrap();
                    std::thread::sleep(Duration::from_millis(40 + 17 * (i % 3)));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    // Converged: the same files with the same bytes on both sites, and it stays that way.
    let files = wait_for(CONVERGE, || {
        let f = converged(&a, &b)?;
        std::thread::sleep(Duration::from_millis(1500));
        (converged(&a, &b)? == f).then_some(f)
    })
    .unwrap_or_else(|| panic!("live sites did not converge\n{}", explain(&a, &b)));
    assert!(files.contains_key("hot.txt"), "{:?}", files.keys());
    for (name, content) in &files {
        assert!(name.starts_with("hot.txt"), "{name}");
        let text = String::from_utf8_lossy(content);
        assert!(
            text.starts_with("a-") || text.starts_with("b-"),
            "{name} holds {text:?}\n{}",
            explain(&a, &b)
        );
    }
    eprintln!(
        "{} files after {rounds} simultaneous rounds; {}\n{}",
        files.len(),
        lag_line(&a),
        lag_line(&b)
    );
}

#[test]
fn sync_delete_concurrent_with_modify_keeps_the_modification() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, a, mut b) = two_sites(tmp.path());
    std::fs::write(a.path("contract.txt"), b"v1\n").unwrap();
    wait_for(CONVERGE, || {
        (std::fs::read(b.path("contract.txt")).ok()? == b"v1\n").then_some(())
    })
    .unwrap_or_else(|| panic!("v1 did not reach B\n{}", explain(&a, &b)));

    b.kill();
    std::fs::remove_file(a.path("contract.txt")).unwrap();
    std::fs::write(b.path("contract.txt"), b"v2 signed at b\n").unwrap();
    b.start();

    let files = wait_for(CONVERGE, || {
        let f = converged(&a, &b)?;
        (f.get("contract.txt")? == b"v2 signed at b\n").then_some(f)
    })
    .unwrap_or_else(|| panic!("the modification did not survive\n{}", explain(&a, &b)));
    assert_eq!(files.len(), 1, "{:?}", files.keys());
    wait_for(CONVERGE, || {
        let n = a.status()["conflicts"].as_u64()? + b.status()["conflicts"].as_u64()?;
        (n >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("no conflict counted\n{}", explain(&a, &b)));
}

/// Regression: the watcher reported the scan's own reads of the directory as changes, so an
/// idle site rescanned itself in a loop.
#[test]
fn sync_idle_sites_do_not_rescan_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, a, b) = two_sites(tmp.path());
    std::fs::write(a.path("one.txt"), b"1").unwrap();
    wait_for(CONVERGE, || {
        (std::fs::read(b.path("one.txt")).ok()? == b"1").then_some(())
    })
    .unwrap_or_else(|| panic!("one.txt did not reach B\n{}", explain(&a, &b)));
    let batches = |s: &Site| s.status()["watch_batches"].as_u64();
    // Settle: status.json is rewritten every second.
    let settled = wait_for(CONVERGE, || {
        let before = (batches(&a)?, batches(&b)?);
        std::thread::sleep(Duration::from_millis(2500));
        (before == (batches(&a)?, batches(&b)?)).then_some(before)
    });
    assert!(
        settled.is_some(),
        "idle sites keep re-reading their trees\n{}",
        explain(&a, &b)
    );
}

/// A peer that accepts connections and then says nothing (a handshake whose packets were lost,
/// a hung process): the shipper gives up on each try once it makes no progress for its stall
/// deadline (15 s), not after the whole request's 30 s, and ships as soon as a real peer answers.
#[test]
fn sync_abandons_a_silent_peer_at_the_stall_deadline_and_ships_once_it_answers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let pki = site_pki(
        tmp.path(),
        &[("site-a", "127.0.0.1"), ("site-b", "127.0.0.1")],
    );
    let (pa, pb) = (free_port(), free_port());
    // B's port holds every connection without a byte, for at most two minutes.
    let silent = std::net::TcpListener::bind(("127.0.0.1", pb)).unwrap();
    silent.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let holder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match silent.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            held.len()
        })
    };
    let mut a = Site::new(tmp.path(), "site-a", pa, pb, &pki);
    a.start();
    std::fs::write(a.path("report.txt"), b"quarterly").unwrap();
    let stalled = wait_for(Duration::from_secs(90), || {
        a.log_text()
            .contains("no progress for 15.0 s while connecting")
            .then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let held = holder.join().unwrap();
    assert!(
        stalled.is_some(),
        "site A never gave up on the silent peer at its stall deadline ({held} connections \
         held)\n{}",
        a.log_text()
    );
    assert!(held >= 1, "site A never connected to the silent peer");
    assert!(
        !a.log_text().contains("timed out after 30"),
        "a try waited out the whole request deadline\n{}",
        a.log_text()
    );
    // The silent peer is gone (its connections closed); the real B starts on its port.
    let mut b = Site::new(tmp.path(), "site-b", pb, pa, &pki);
    b.start();
    wait_for(Duration::from_secs(120), || {
        (std::fs::read(b.path("report.txt")).ok()? == b"quarterly").then_some(())
    })
    .unwrap_or_else(|| panic!("report.txt did not reach B\n{}", explain(&a, &b)));
}

#[test]
fn sync_conflict_is_reported_to_the_collector() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, a, mut b, collector) =
        two_sites_reporting_to(tmp.path(), Some(&tmp.path().join("collector")));
    std::fs::write(a.path("budget.xlsx"), b"q1\n").unwrap();
    wait_for(CONVERGE, || {
        (std::fs::read(b.path("budget.xlsx")).ok()? == b"q1\n").then_some(())
    })
    .unwrap_or_else(|| panic!("base did not reach B\n{}", explain(&a, &b)));
    b.kill();
    std::fs::write(a.path("budget.xlsx"), b"q1 revised at a\n").unwrap();
    std::fs::write(b.path("budget.xlsx"), b"q1 revised at b\n").unwrap();
    b.start();
    wait_for(CONVERGE, || {
        let f = converged(&a, &b)?;
        (f.len() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("sites did not converge\n{}", explain(&a, &b)));
    let collector = collector.unwrap();
    let event = wait_for(CONVERGE, || {
        collector
            .events(&pki, &[])
            .into_iter()
            .find(|e| e.to_string().contains("sync-conflict"))
    });
    let event = event.unwrap_or_else(|| {
        panic!(
            "no sync-conflict event at the collector\n{}",
            explain(&a, &b)
        )
    });
    let text = event.to_string();
    assert!(text.contains("budget.xlsx"), "{text}");
    assert!(text.contains("concurrent-edit"), "{text}");
}

#[test]
fn sync_refuses_a_path_leaving_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, a, _b) = two_sites(tmp.path());
    let offer = serde_json::json!({
        "meta": {
            "path": "../escaped.txt", "vv": {"site-b": 1}, "hash": null, "size": 0,
            "mtime_ns": 0, "deleted": true, "origin_site": "site-b", "changed_at_ns": 0
        },
        "chunks": []
    });
    let tls = client_config(&TlsFiles {
        ca: pki.ca(),
        cert: pki.cert("site-b"),
        key: pki.key("site-b"),
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let resp = rt
        .block_on(async {
            let mut c = Client::new(
                &format!("https://127.0.0.1:{}", a.port),
                tls,
                Duration::from_secs(10),
            )?;
            c.request(
                Method::POST,
                "/v1/sync/offer",
                "application/json",
                Bytes::from(serde_json::to_vec(&offer).unwrap()),
            )
            .await
        })
        .unwrap();
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text());
    assert!(resp.text().contains(".."), "{}", resp.text());
    assert!(!a.dir.parent().unwrap().join("escaped.txt").exists());
}

#[test]
fn sync_site_with_a_full_disk_catches_up_once_space_returns() {
    if !palisade_tests::is_root() {
        println!("skipped: mounting a small tmpfs needs root, and this test runs as uid != 0");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Site B's tree and state live on a 16 MiB disk.
    let disk = palisade_tests::Tmpfs::mount(&tmp.path().join("site-b"), 16);
    let (_pki, a, b) = two_sites(tmp.path());
    std::fs::write(a.path("small.txt"), b"before\n").unwrap();
    wait_for(CONVERGE, || converged(&a, &b))
        .unwrap_or_else(|| panic!("no start\n{}", explain(&a, &b)));

    // 24 MiB cannot land at B; a small file written after it still does.
    let mut big = vec![0u8; 24 << 20];
    fastrand::Rng::with_seed(7).fill(&mut big);
    std::fs::write(a.path("big.bin"), &big).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(a.path("after.txt"), b"written while B's disk was full\n").unwrap();
    wait_for(CONVERGE, || {
        (std::fs::read(b.path("after.txt")).ok()? == b"written while B's disk was full\n")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("a full disk stopped everything\n{}", explain(&a, &b)));
    assert!(
        !b.path("big.bin").exists(),
        "24 MiB fitted on a 16 MiB disk?"
    );
    assert!(b.child.is_some());

    // Space returns: B catches up by itself, and nothing is a conflict.
    disk.resize(96);
    let files = wait_for(CONVERGE, || converged(&a, &b))
        .unwrap_or_else(|| panic!("B did not catch up\n{}", explain(&a, &b)));
    assert_eq!(files.get("big.bin").map(Vec::len), Some(24 << 20));
    assert_eq!(b.status()["conflicts"], 0);
    assert_eq!(a.status()["conflicts"], 0);
}

#[test]
fn sync_partition_healed_mid_batch_loses_no_edit() {
    if !palisade_tests::is_root() {
        println!("skipped: network namespaces need root, and this test runs as uid != 0");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Site B in its own network namespace behind a 2 Mbit/s veth link that the test cuts.
    let net = palisade_tests::Netns::create();
    let pki = site_pki(
        tmp.path(),
        &[("site-a", &net.host_ip), ("site-b", &net.ns_ip)],
    );
    let (pa, pb) = (free_port(), free_port());
    let mut a = Site::new(tmp.path(), "site-a", pa, pb, &pki);
    let mut b = Site::new(tmp.path(), "site-b", pb, pa, &pki);
    (a.host, a.peer_host) = (net.host_ip.clone(), net.ns_ip.clone());
    (b.host, b.peer_host) = (net.ns_ip.clone(), net.host_ip.clone());
    b.netns = Some(net.name.clone());
    a.start();
    b.start();
    std::fs::write(a.path("shared.txt"), b"base\n").unwrap();
    wait_for(CONVERGE, || converged(&a, &b))
        .unwrap_or_else(|| panic!("no start\n{}", explain(&a, &b)));

    // A batch of 24 × 64 KiB (about 8 s at 2 Mbit/s), cut after 2 s.
    net.limit_rate(2000);
    let mut rng = fastrand::Rng::with_seed(9);
    let mut batch = BTreeMap::new();
    std::fs::create_dir_all(a.path("batch")).unwrap();
    for i in 0..24 {
        let mut data = vec![0u8; 64 << 10];
        rng.fill(&mut data);
        std::fs::write(a.path(&format!("batch/f{i:02}")), &data).unwrap();
        batch.insert(format!("batch/f{i:02}"), data);
    }
    std::thread::sleep(Duration::from_secs(2));
    net.partition();
    let landed = batch
        .keys()
        .filter(|p| std::fs::read(b.path(p)).ok().as_ref() == batch.get(*p))
        .count();
    // Edits on both sides while cut off: one file each, and the same file on both.
    std::fs::write(a.path("batch/f00"), b"edited at A during the partition\n").unwrap();
    std::fs::write(b.path("only-b.txt"), b"written at B during the partition\n").unwrap();
    std::fs::write(a.path("shared.txt"), b"A's version\n").unwrap();
    std::fs::write(b.path("shared.txt"), b"B's version\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    net.heal();

    let files = wait_for(Duration::from_secs(120), || converged(&a, &b))
        .unwrap_or_else(|| panic!("no convergence after the heal\n{}", explain(&a, &b)));
    for (p, data) in batch.iter().skip(1) {
        assert_eq!(files.get(p), Some(data), "{p} lost or damaged");
    }
    assert_eq!(
        files.get("batch/f00").map(Vec::as_slice),
        Some(&b"edited at A during the partition\n"[..])
    );
    assert_eq!(
        files.get("only-b.txt").map(Vec::as_slice),
        Some(&b"written at B during the partition\n"[..])
    );
    // Both versions of the file edited on both sides survive: one at the name, one as a copy.
    let versions: Vec<&Vec<u8>> = files
        .iter()
        .filter(|(p, _)| p.starts_with("shared.txt"))
        .map(|(_, c)| c)
        .collect();
    assert_eq!(versions.len(), 2, "{:?}", files.keys());
    assert!(versions.contains(&&b"A's version\n".to_vec()));
    assert!(versions.contains(&&b"B's version\n".to_vec()));
    eprintln!(
        "{landed} of 24 files had landed when the link was cut; converged after the heal; {}",
        lag_line(&b)
    );
}

/// How long the lossy-link test waits for each convergence (it stops as soon as there is one).
const LOSSY_DEADLINE: Duration = Duration::from_secs(300);

/// Both sites live across a `LossyLink` (30 % loss each way, 500 ms each way; this kernel has
/// no netem): edits on both sides, one file edited on both during a partition, a batch cut
/// mid-flight. Everything converges, no edit is lost, the concurrent edit keeps both versions.
#[test]
fn sync_over_a_lossy_slow_link_converges_and_keeps_conflicts() {
    if !palisade_tests::is_root() {
        println!(
            "skipped: network namespaces and TUN devices need root, and this test runs as uid != 0"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let link = palisade_tests::LossyLink::create(0.3, Duration::from_millis(500));
    let pki = site_pki(
        tmp.path(),
        &[("site-a", &link.host_ip), ("site-b", &link.ns_ip)],
    );
    let (pa, pb) = (free_port(), free_port());
    let mut a = Site::new(tmp.path(), "site-a", pa, pb, &pki);
    let mut b = Site::new(tmp.path(), "site-b", pb, pa, &pki);
    (a.host, a.peer_host) = (link.host_ip.clone(), link.ns_ip.clone());
    (b.host, b.peer_host) = (link.ns_ip.clone(), link.host_ip.clone());
    b.netns = Some(link.name.clone());
    a.start();
    b.start();
    let started = std::time::Instant::now();
    std::fs::write(a.path("shared.txt"), b"base\n").unwrap();
    // Deadlines of minutes, not a time bound: over 30 % loss each way with 1 s round trips a
    // TLS handshake often outlasts the server's handshake deadline and is tried again, and each
    // try of the shipper waits out its 30 s request timeout. Converged runs took 65–112 s; one
    // on 2026-12-06 (38 % lost outbound by chance) had not started at 120 s.
    wait_for(LOSSY_DEADLINE, || converged(&a, &b)).unwrap_or_else(|| {
        panic!(
            "no start over the lossy link; {}\n{}",
            link.summary(),
            explain(&a, &b)
        )
    });
    // Edits on both sides at once: two small files each.
    let mut expected = BTreeMap::new();
    for i in 0..2 {
        let (pa, pb) = (format!("from-a/{i}.txt"), format!("from-b/{i}.txt"));
        std::fs::create_dir_all(a.path("from-a")).unwrap();
        std::fs::create_dir_all(b.path("from-b")).unwrap();
        let (ca, cb) = (
            format!("A wrote {i}\n").repeat(200),
            format!("B wrote {i}\n").repeat(200),
        );
        std::fs::write(a.path(&pa), &ca).unwrap();
        std::fs::write(b.path(&pb), &cb).unwrap();
        expected.insert(pa, ca.into_bytes());
        expected.insert(pb, cb.into_bytes());
    }
    // Cut while those are on the wire; both sides edit the same file during the cut.
    std::thread::sleep(Duration::from_secs(2));
    link.partition();
    std::fs::write(a.path("shared.txt"), b"A's version\n").unwrap();
    std::fs::write(b.path("shared.txt"), b"B's version\n").unwrap();
    std::fs::write(
        b.path("from-b/during-cut.txt"),
        b"written at B during the cut\n",
    )
    .unwrap();
    expected.insert(
        "from-b/during-cut.txt".into(),
        b"written at B during the cut\n".to_vec(),
    );
    std::thread::sleep(Duration::from_secs(3));
    link.heal();

    let files = wait_for(LOSSY_DEADLINE, || {
        converged(&a, &b).filter(|f| {
            f.keys().filter(|p| p.starts_with("shared.txt")).count() == 2
                && expected.keys().all(|p| f.contains_key(p))
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no convergence over the lossy link; {}\n{}",
            link.summary(),
            explain(&a, &b)
        )
    });
    for (p, data) in &expected {
        assert_eq!(files.get(p), Some(data), "{p} lost or damaged");
    }
    let versions: Vec<&Vec<u8>> = files
        .iter()
        .filter(|(p, _)| p.starts_with("shared.txt"))
        .map(|(_, c)| c)
        .collect();
    assert!(
        versions.contains(&&b"A's version\n".to_vec()),
        "{:?}",
        files.keys()
    );
    assert!(
        versions.contains(&&b"B's version\n".to_vec()),
        "{:?}",
        files.keys()
    );
    eprintln!(
        "converged over the lossy link with a 3 s cut after {:.0?}: {} files, both versions of the concurrent edit kept; {}; {}; {}",
        started.elapsed(),
        files.len(),
        lag_line(&a),
        lag_line(&b),
        link.summary()
    );
}
