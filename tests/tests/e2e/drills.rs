//! DR drills (`palisade-replicator drill`): every shipped runbook runs on this machine and meets
//! its own targets; `drill validate` accepts each; a wrong step, a step escaping its scope and a
//! missed target fail with a precise message and the documented exit code; the result reaches
//! the collector as a `palisade.drill` event.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use palisade_tests::{bin, run, Collector, Pki};

const RUNBOOKS: [&str; 5] = [
    "offsite-restore",
    "ransomware-tamper",
    "integrity-corruption",
    "collector-recovery",
    "site-failover",
];

fn runbook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runbooks")
        .join(format!("{name}.toml"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `drill` with the work dir and report dir under `dir`; extra args before the runbook.
fn drill(dir: &Path, runbook: &Path, extra: &[&str]) -> Output {
    let work = dir.join("work");
    let reports = dir.join("reports");
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend([
        "drill".into(),
        runbook.display().to_string(),
        "--param".into(),
        format!("work={}", work.display()),
        "--report-dir".into(),
        reports.display().to_string(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    run("palisade-replicator", &argv)
}

/// Runs a shipped runbook; it must pass, with RPO and RTO measured and within the targets.
fn shipped_runbook_passes(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = drill(tmp.path(), &runbook(name), &["--output-format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "drill {name} did not pass:\n{}",
        text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verdict"], "passed", "{report:#}");
    let rpo = report["rpo_secs"].as_f64().expect("rpo measured");
    let rto = report["rto_secs"].as_f64().expect("rto measured");
    for t in report["targets"].as_array().unwrap() {
        assert_eq!(t["met"], true, "{t}");
        assert!(t["measured_secs"].as_f64().unwrap() <= t["target_secs"].as_f64().unwrap());
    }
    assert!(report["cleanup"]["ok"].as_bool().unwrap());
    assert!(report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "ok"));
    // The record: Markdown and HTML.
    let files: Vec<String> = std::fs::read_dir(tmp.path().join("reports"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files
        .iter()
        .any(|f| f.starts_with(&format!("drill-{name}-")) && f.ends_with(".md")));
    assert!(files.iter().any(|f| f.ends_with(".html")));
    eprintln!("drill {name}: real RPO {rpo:.2} s, real RTO {rto:.2} s");
}

#[test]
fn offsite_restore_runbook_meets_its_targets() {
    shipped_runbook_passes("offsite-restore");
}

#[test]
fn ransomware_tamper_runbook_meets_its_targets() {
    shipped_runbook_passes("ransomware-tamper");
}

#[test]
fn integrity_corruption_runbook_meets_its_targets() {
    shipped_runbook_passes("integrity-corruption");
}

#[test]
fn collector_recovery_runbook_meets_its_targets() {
    shipped_runbook_passes("collector-recovery");
}

#[test]
fn site_failover_runbook_meets_its_targets() {
    shipped_runbook_passes("site-failover");
}

#[test]
fn drill_validate_accepts_every_shipped_runbook() {
    for name in RUNBOOKS {
        let rb = runbook(name);
        let out = run(
            "palisade-replicator",
            &["drill", "validate", rb.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
        assert!(text(&out).contains("valid drill"), "{}", text(&out));
        let out = run(
            "palisade-replicator",
            &["drill", rb.to_str().unwrap(), "--dry-run"],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name} --dry-run: {}",
            text(&out)
        );
    }
}

const HEADER: &str =
    "[drill]\nname = \"t\"\nowner = \"tests\"\ndrill = true\nscope = [\"{work}/inside\"]\n\
                      [params.work]\ndefault = \"\"\nfresh = \"temp-dir\"\n";

fn write_runbook(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("t.toml");
    std::fs::write(&p, format!("{HEADER}{body}")).unwrap();
    p
}

#[test]
fn runbook_with_an_unknown_action_or_a_missing_field_is_refused_precisely() {
    let tmp = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        tmp.path(),
        "[[steps]]\nname = \"data\"\naction = \"generate\"\ndir = \"{work}/inside/d\"\nsize_mb = 1\n\
         [[steps]]\nname = \"boom\"\naction = \"explode\"\n",
    );
    for args in [vec!["drill", "validate"], vec!["drill"]] {
        let mut a = args.clone();
        a.push(rb.to_str().unwrap());
        let out = run("palisade-replicator", &a);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let t = text(&out);
        assert!(t.contains("t.toml"), "names the file: {t}");
        assert!(t.contains("[[steps]] #2 \"boom\""), "names the step: {t}");
        assert!(t.contains("unknown action \"explode\""), "says what: {t}");
    }
    let rb = write_runbook(
        tmp.path(),
        "[[steps]]\nname = \"get it back\"\naction = \"restore\"\nrepo = \"{work}/inside/r\"\n",
    );
    let out = run(
        "palisade-replicator",
        &["drill", "validate", rb.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("[[steps]] #1 \"get it back\"") && t.contains("missing field `to`"),
        "{t}"
    );
    let rb = write_runbook(
        tmp.path(),
        "[[steps]]\nname = \"typo\"\naction = \"destroy\"\npath = \"{work}/inside/x\"\nforce = true\n",
    );
    let out = run(
        "palisade-replicator",
        &["drill", "validate", rb.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("unknown field `force`"),
        "{}",
        text(&out)
    );
}

#[test]
fn runbook_without_the_drill_flag_or_with_an_unknown_param_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("nodrill.toml");
    std::fs::write(
        &p,
        "[drill]\nname = \"t\"\nowner = \"o\"\nscope = [\"/tmp/x\"]\n[[steps]]\nname = \"f\"\naction = \"fail\"\n",
    )
    .unwrap();
    let out = run("palisade-replicator", &["drill", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("drill = true"), "{}", text(&out));

    let rb = write_runbook(tmp.path(), "[[steps]]\nname = \"f\"\naction = \"fail\"\n");
    let out = run(
        "palisade-replicator",
        &["drill", rb.to_str().unwrap(), "--param", "colour=red"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("--param colour: unknown parameter"),
        "{}",
        text(&out)
    );
}

#[test]
fn step_escaping_its_scope_fails_before_touching_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let outside = work.join("outside");
    std::fs::create_dir_all(work.join("inside")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious.txt"), b"keep me").unwrap();
    // Lexically outside, and through a symlink that looks inside.
    std::os::unix::fs::symlink(&outside, work.join("inside/link")).unwrap();
    for victim in [
        "{work}/inside/../outside",
        "{work}/inside/link/precious.txt",
    ] {
        let rb = write_runbook(
            tmp.path(),
            &format!(
                "[[steps]]\nname = \"data\"\naction = \"generate\"\ndir = \"{{work}}/inside/gen\"\nsize_mb = 1\n\
                 [[steps]]\nname = \"wipe\"\naction = \"destroy\"\npath = \"{victim}\"\n"
            ),
        );
        let out = drill(tmp.path(), &rb, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let t = text(&out);
        assert!(
            t.contains("[[steps]] #2 \"wipe\"")
                && t.contains("field `path`")
                && t.contains("outside the drill's scope"),
            "{t}"
        );
        assert_eq!(
            std::fs::read(outside.join("precious.txt")).unwrap(),
            b"keep me"
        );
        // Nothing ran: not even the first, harmless step.
        assert!(!work.join("inside/gen").exists());
    }
}

#[test]
fn missed_rto_target_exits_1_and_names_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let rb = tmp.path().join("tight.toml");
    std::fs::write(
        &rb,
        r#"[drill]
name = "tight"
owner = "tests"
drill = true
scope = ["{work}"]
rpo_target_secs = 600
rto_target_secs = 0

[params.work]
default = ""
fresh = "temp-dir"

[[steps]]
name = "data"
action = "generate"
dir = "{work}/data"
size_mb = 1

[[steps]]
name = "snap"
action = "snapshot"
source = "{work}/data"
repo = "{work}/repo"

[[steps]]
name = "lost"
action = "destroy"
path = "{work}/data"

[[steps]]
name = "back"
action = "restore"
repo = "{work}/repo"
to = "{work}/data"

[[steps]]
name = "check"
action = "verify"
dir = "{work}/data"
against = "snap"
"#,
    )
    .unwrap();
    let out = drill(tmp.path(), &rb, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("RTO target missed"), "{t}");
    assert!(!t.contains("RPO target missed"), "{t}");
}

#[test]
fn drill_result_reaches_the_collector_as_a_drill_event() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("replicator", "palisade-replicator");
    let collector = Collector::start(&tmp.path().join("soc"), &pki, 0, "");
    let work = tmp.path().join("work");
    let out = Command::new(bin("palisade-replicator"))
        .args([
            "--collector",
            &collector.url,
            "--pki-dir",
            pki.dir.to_str().unwrap(),
            "drill",
            runbook("ransomware-tamper").to_str().unwrap(),
            "--param",
            &format!("work={}", work.display()),
            "--report-dir",
            tmp.path().join("reports").to_str().unwrap(),
        ])
        .env("XDG_STATE_HOME", tmp.path().join("xdg"))
        .env_remove("PALISADE_COLLECTOR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let events = collector.events(&pki, &["--kind", "drill"]);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["event"]["outcome"], "success", "{e:#}");
    assert!(
        e["message"].as_str().unwrap().contains("ransomware-tamper"),
        "{e:#}"
    );
    assert!(
        e["palisade"]["drill"]["rto_secs"].as_f64().is_some(),
        "{e:#}"
    );
    // The duty analyst sees the last drill on the situation screen.
    let situation = collector.cli(&pki, "analyst", &["situation"]);
    let screen = String::from_utf8_lossy(&situation.stdout);
    let line = screen
        .lines()
        .find(|l| l.contains("ransomware-tamper"))
        .unwrap_or_else(|| panic!("situation shows no drill:\n{screen}"));
    assert!(line.contains("passed, all targets met"), "{line}");
}

#[test]
fn exec_steps_run_only_with_allow_exec() {
    let tmp = tempfile::tempdir().unwrap();
    let rb = write_runbook(
        tmp.path(),
        "[[steps]]\nname = \"say\"\naction = \"exec\"\ncommand = \"mkdir -p $DRILL_WORK/inside && echo hello > $DRILL_WORK/inside/said && echo done\"\n",
    );
    let out = drill(tmp.path(), &rb, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--allow-exec"), "{}", text(&out));
    assert!(!tmp.path().join("work/inside/said").exists());
    let mut argv: Vec<String> = vec!["drill".into(), rb.display().to_string()];
    argv.extend([
        "--allow-exec".into(),
        "--param".into(),
        format!("work={}", tmp.path().join("work").display()),
        "--report-dir".into(),
        tmp.path().join("reports").display().to_string(),
    ]);
    let a: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = run("palisade-replicator", &a);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("work/inside/said")).unwrap(),
        "hello\n"
    );
}
