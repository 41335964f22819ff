//! Host integrity end to end: a running agent watching real trees, tampering done for real,
//! findings and restores seen at the collector, the baseline's signature, the quarantine, and
//! the `baseline`/`verify`/`publish`/`scan` commands.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_tests::{bin, run, wait_for, Agent, Collector, Pki};

fn yara_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../signatures/yara")
}

const WEBSHELL: &str = "<?php @eval($_POST['cmd']); ?>\n";

fn integrity_toml(watched: &Path, www: &Path, action: &str) -> String {
    format!(
        "[heartbeat]\ninterval_secs = 1\n\
         [integrity]\nfull_scan_interval_secs = 0\n\
         [[integrity.paths]]\npath = \"{}\"\nexclude = [\"**/*.swp\"]\n\
         [[integrity.paths]]\npath = \"{}\"\nprotect = \"restore\"\n\
         [integrity.malware]\ndir = \"{}\"\naction = \"{action}\"\n",
        watched.display(),
        www.display(),
        yara_dir().display()
    )
}

/// Integrity events at the collector by `file.path`, latest per path.
fn by_path(collector: &Collector, pki: &Pki) -> BTreeMap<String, serde_json::Value> {
    collector
        .events(pki, &["--kind", "integrity"])
        .into_iter()
        .filter_map(|e| {
            let p = e["file"]["path"].as_str()?.to_string();
            Some((p, e))
        })
        .collect()
}

fn find_event(
    collector: &Collector,
    pki: &Pki,
    kind: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    collector
        .events(pki, &["--kind", kind])
        .into_iter()
        .find(|e| pred(e))
}

fn agent_cmd(args: &[&str]) -> std::process::Output {
    run("palisade-agent", args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tampering_is_reported_at_the_collector_and_a_protected_web_root_is_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "fim-host");
    let collector = Collector::start(&tmp.path().join("collector"), &pki, 0, "");
    let watched = tmp.path().join("etc");
    let www = tmp.path().join("www");
    std::fs::create_dir_all(watched.join("conf.d")).unwrap();
    std::fs::create_dir_all(www.join("static")).unwrap();
    for name in [
        "a.conf",
        "old.conf",
        "mode.conf",
        "link.conf",
        "target.conf",
    ] {
        std::fs::write(watched.join(name), format!("{name} v1\n")).unwrap();
    }
    std::fs::write(watched.join("conf.d/site.conf"), "server {}\n").unwrap();
    std::fs::write(www.join("index.html"), "<h1>City portal</h1>\n").unwrap();
    std::fs::write(www.join("about.html"), "<p>about</p>\n").unwrap();
    std::fs::write(www.join("static/app.js"), "console.log(1);\n").unwrap();

    let agent = Agent::start(
        &tmp.path().join("agent"),
        &pki,
        "fim-host",
        &collector.url,
        &integrity_toml(&watched, &www, "quarantine"),
    );
    // The first run creates the baseline and says so (public key and digest included).
    let created = wait_for(Duration::from_secs(60), || {
        find_event(&collector, &pki, "integrity", |e| {
            e["event"]["action"] == "baseline-created"
        })
    })
    .unwrap_or_else(|| panic!("no baseline event; agent log:\n{}", agent.log_text()));
    assert_eq!(created["palisade"]["baseline"]["files"], 9);
    assert_eq!(
        created["palisade"]["baseline"]["public_key"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    // Give the monitor a moment to finish its first verify and set up the watches.
    std::thread::sleep(Duration::from_millis(500));

    // --- an alert-only tree: every kind of tampering ---
    std::fs::write(watched.join("a.conf"), "a.conf v2 (changed)\n").unwrap();
    std::fs::write(watched.join("new.conf"), "added\n").unwrap();
    std::fs::remove_file(watched.join("old.conf")).unwrap();
    std::fs::set_permissions(
        watched.join("mode.conf"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    std::fs::remove_file(watched.join("link.conf")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", watched.join("link.conf")).unwrap();
    std::fs::write(watched.join(".target.conf.tmp"), "renamed over\n").unwrap();
    std::fs::rename(
        watched.join(".target.conf.tmp"),
        watched.join("target.conf"),
    )
    .unwrap();
    std::fs::create_dir_all(watched.join("n1/n2/n3")).unwrap();
    std::fs::write(watched.join("n1/n2/n3/deep.conf"), "deep\n").unwrap();
    std::fs::write(watched.join("ignored.swp"), "excluded\n").unwrap();
    std::fs::create_dir(watched.join("burst")).unwrap();
    for i in 0..10_000 {
        std::fs::write(watched.join(format!("burst/f{i:05}")), format!("{i}\n")).unwrap();
    }
    let expect: Vec<(PathBuf, &str)> = vec![
        (watched.join("a.conf"), "file-changed"),
        (watched.join("new.conf"), "file-added"),
        (watched.join("old.conf"), "file-removed"),
        (watched.join("mode.conf"), "file-changed"),
        (watched.join("link.conf"), "file-type-changed"),
        (watched.join("target.conf"), "file-changed"),
        (watched.join("n1/n2/n3"), "file-added"),
        (watched.join("n1/n2/n3/deep.conf"), "file-added"),
        (watched.join("burst/f00000"), "file-added"),
        (watched.join("burst/f09999"), "file-added"),
    ];
    let seen = wait_for(Duration::from_secs(120), || {
        let m = by_path(&collector, &pki);
        let burst = m
            .keys()
            .filter(|p| p.starts_with(s(&watched.join("burst/"))))
            .count();
        (burst == 10_000 && expect.iter().all(|(p, _)| m.contains_key(s(p)))).then_some(m)
    })
    .unwrap_or_else(|| {
        let m = by_path(&collector, &pki);
        let missing: Vec<_> = expect
            .iter()
            .filter(|(p, _)| !m.contains_key(s(p)))
            .map(|(p, _)| p.display().to_string())
            .collect();
        let burst: Vec<usize> = (0..10_000)
            .filter(|i| !m.contains_key(s(&watched.join(format!("burst/f{i:05}")))))
            .collect();
        panic!(
            "missing at the collector: {missing:?}, {} burst files: {:?}… ({} paths with integrity events); agent log:\n{}",
            burst.len(),
            &burst[..burst.len().min(20)],
            m.len(),
            agent.log_text()
        )
    });
    for (p, action) in &expect {
        let history: Vec<String> = collector
            .events(&pki, &["--kind", "integrity"])
            .into_iter()
            .filter(|e| e["file"]["path"] == s(p))
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["event"]["action"], e["palisade"]["integrity"]["detected_by"], e["message"]
                )
            })
            .collect();
        assert_eq!(
            seen[s(p)]["event"]["action"],
            *action,
            "{}: {history:#?}\nagent log:\n{}",
            p.display(),
            agent.log_text()
        );
    }
    let mode = &seen[s(&watched.join("mode.conf"))]["palisade"]["integrity"]["attributes"];
    assert_eq!(mode[0]["name"], "mode");
    assert_eq!(mode[0]["old"], "0644");
    assert_eq!(mode[0]["new"], "0666");
    assert!(
        !seen.contains_key(s(&watched.join("ignored.swp"))),
        "excluded file reported"
    );
    let a = &seen[s(&watched.join("a.conf"))];
    assert_eq!(a["rule"]["id"], "palisade.fim.changed");
    assert_eq!(
        a["file"]["hash"]["blake3"],
        blake3::hash(b"a.conf v2 (changed)\n").to_hex().as_str()
    );

    // --- a protected web root: changes come back, plants go to quarantine ---
    let started = Instant::now();
    std::fs::write(www.join("index.html"), "<h1>hacked by x</h1>\n").unwrap();
    std::fs::remove_file(www.join("about.html")).unwrap();
    std::fs::write(www.join("static/shell.php"), WEBSHELL).unwrap();
    let restored = wait_for(Duration::from_secs(30), || {
        (std::fs::read_to_string(www.join("index.html")).ok()? == "<h1>City portal</h1>\n"
            && std::fs::read_to_string(www.join("about.html")).ok()? == "<p>about</p>\n"
            && !www.join("static/shell.php").exists())
        .then(|| started.elapsed())
    })
    .unwrap_or_else(|| panic!("web root not restored; agent log:\n{}", agent.log_text()));
    println!(
        "web root restored {:.0} ms after the tampering",
        restored.as_secs_f64() * 1e3
    );
    let m = wait_for(Duration::from_secs(30), || {
        let m = by_path(&collector, &pki);
        (m.contains_key(s(&www.join("index.html"))) && m.contains_key(s(&www.join("about.html"))))
            .then_some(m)
    })
    .expect("restore events at the collector");
    let index = &m[s(&www.join("index.html"))];
    assert_eq!(index["palisade"]["integrity"]["restored"], true, "{index}");
    assert_eq!(index["event"]["severity"], 4);
    assert_eq!(
        m[s(&www.join("about.html"))]["palisade"]["integrity"]["restored"],
        true
    );
    let malware = wait_for(Duration::from_secs(30), || {
        find_event(&collector, &pki, "malware", |e| {
            e["file"]["path"] == s(&www.join("static/shell.php"))
        })
    })
    .expect("malware event for the planted webshell");
    assert!(
        malware["rule"]["id"]
            .as_str()
            .unwrap()
            .starts_with("palisade.file.yara."),
        "{malware}"
    );
    assert!(malware["message"].as_str().unwrap().contains("quarantined"));

    // --- quarantine round trip ---
    let config = s(&agent.config).to_string();
    let out = agent_cmd(&[
        "quarantine",
        "list",
        "--config",
        &config,
        "--output-format",
        "ndjson",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let shell = items
        .iter()
        .find(|i| i["original_path"] == s(&www.join("static/shell.php")))
        .expect("webshell in quarantine");
    let evidence = tmp.path().join("evidence.php");
    let out = agent_cmd(&[
        "quarantine",
        "restore",
        shell["id"].as_str().unwrap(),
        "--config",
        &config,
        "--to",
        s(&evidence),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&evidence).unwrap(), WEBSHELL);

    // --- the baseline edited under the running agent: refused, loudly ---
    let db = tmp.path().join("agent/fim-host-data/integrity/baseline.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&db, &bytes).unwrap();
    let refused = wait_for(Duration::from_secs(30), || {
        find_event(&collector, &pki, "integrity", |e| {
            e["rule"]["id"] == "palisade.fim.baseline_refused"
        })
    })
    .unwrap_or_else(|| panic!("no refusal event; agent log:\n{}", agent.log_text()));
    assert_eq!(refused["event"]["severity"], 5);
    let out = agent_cmd(&["verify", "--config", &config]);
    assert_eq!(
        out.status.code(),
        Some(18),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") || err.contains("malformed"),
        "{err}"
    );
    drop(agent);
}

#[test]
fn baseline_verify_and_publish_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    let etc = tmp.path().join("etc");
    std::fs::create_dir_all(www.join("img")).unwrap();
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(www.join("index.html"), "v1\n").unwrap();
    std::fs::write(www.join("img/logo.svg"), "<svg/>\n").unwrap();
    std::fs::write(etc.join("app.conf"), "x=1\n").unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "collector = \"https://127.0.0.1:1\"\ndata_dir = \"{}\"\n[tls]\nca = \"ca\"\ncert = \"c\"\nkey = \"k\"\n{}",
            tmp.path().join("data").display(),
            integrity_toml(&etc, &www, "alert")
        ),
    )
    .unwrap();
    let c = s(&config);
    let out = agent_cmd(&["baseline", "--config", c, "--output-format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 3);
    assert_eq!(agent_cmd(&["verify", "--config", c]).status.code(), Some(0));

    // AIDE-style bitmask: 1 added, 2 removed, 4 changed.
    std::fs::write(etc.join("new.conf"), "n\n").unwrap();
    assert_eq!(agent_cmd(&["verify", "--config", c]).status.code(), Some(1));
    std::fs::remove_file(www.join("img/logo.svg")).unwrap();
    assert_eq!(agent_cmd(&["verify", "--config", c]).status.code(), Some(3));
    std::fs::write(etc.join("app.conf"), "x=2\n").unwrap();
    let out = agent_cmd(&["verify", "--config", c, "--output-format", "ndjson"]);
    assert_eq!(out.status.code(), Some(7));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| e["event"]["dataset"] == "palisade.integrity"));

    // Accept one change, with the approver recorded; the others stay reported.
    let out = agent_cmd(&[
        "baseline",
        "--config",
        c,
        "--update",
        "--path",
        s(&etc.join("app.conf")),
        "--approver",
        "alice",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted changed"));
    assert_eq!(agent_cmd(&["verify", "--config", c]).status.code(), Some(3));
    // The approval is an audit event waiting in the inbox for the running agent to ship.
    let inbox: Vec<_> = std::fs::read_dir(tmp.path().join("data/inbox"))
        .unwrap()
        .map(|d| std::fs::read_to_string(d.unwrap().path()).unwrap())
        .collect();
    assert!(
        inbox
            .iter()
            .any(|t| t.contains("baseline-updated") && t.contains("alice")),
        "{inbox:?}"
    );

    // Publish a staging tree into the web root: accepted, nothing left to report there.
    let staging = tmp.path().join("staging");
    std::fs::create_dir_all(staging.join("img")).unwrap();
    std::fs::write(staging.join("index.html"), "v2\n").unwrap();
    std::fs::write(staging.join("img/logo.svg"), "<svg/>\n").unwrap();
    std::fs::write(staging.join("news.html"), "news\n").unwrap();
    let out = agent_cmd(&[
        "publish",
        "--config",
        c,
        "--from",
        s(&staging),
        "--to",
        s(&www),
        "--delete",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(www.join("index.html")).unwrap(),
        "v2\n"
    );
    let out = agent_cmd(&["verify", "--config", c, "--output-format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec![s(&etc.join("new.conf"))]);

    // A broken config is exit 17, a missing baseline 18.
    std::fs::write(tmp.path().join("bad.toml"), "collector = 1\n").unwrap();
    let out = agent_cmd(&["verify", "--config", s(&tmp.path().join("bad.toml"))]);
    assert_eq!(out.status.code(), Some(17));
    std::fs::remove_file(tmp.path().join("data/integrity/baseline.db")).unwrap();
    let out = agent_cmd(&["verify", "--config", c]);
    assert_eq!(out.status.code(), Some(18));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no baseline"));
}

#[test]
fn scan_finds_webshells_and_leaves_ordinary_pages_alone() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("site/uploads")).unwrap();
    std::fs::write(tmp.path().join("site/uploads/x.php"), WEBSHELL).unwrap();
    std::fs::write(
        tmp.path().join("site/index.php"),
        "<?php echo htmlspecialchars($_GET['q'] ?? ''); ?>\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("palisade-agent"))
        .args([
            "scan",
            s(&tmp.path().join("site")),
            "--rules",
            s(&yara_dir()),
        ])
        .args(["--output-format", "ndjson"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        hits[0]["file"]["path"],
        s(&tmp.path().join("site/uploads/x.php"))
    );
    assert_eq!(hits[0]["event"]["dataset"], "palisade.malware");
    std::fs::remove_file(tmp.path().join("site/uploads/x.php")).unwrap();
    let out = agent_cmd(&[
        "scan",
        s(&tmp.path().join("site")),
        "--rules",
        s(&yara_dir()),
    ]);
    assert_eq!(out.status.code(), Some(1));
}
