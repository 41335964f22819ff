//! The audit log end to end: the real server on 127.0.0.1 with real mTLS certificates; requests
//! as analyst, security-admin and audit-admin; every request in the log with identity, role,
//! peer and result; only audit-admin reads it; an edit on disk is reported by verify.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use palisade_collector::audit::{self, FindingKind, Record, Report};
use palisade_wire::client::Client;
use palisade_wire::tls::Role;

async fn call(c: &mut Client, method: Method, path: &str, body: &str) -> (StatusCode, Bytes) {
    let r = c
        .request(
            method,
            path,
            "application/json",
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap();
    (r.status, r.body)
}

fn records(body: &[u8]) -> Vec<Record> {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_audited_and_only_audit_admin_reads_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = common::pki(tmp.path());
    pki.issue(Role::Analyst, "analyst", &[], 30).unwrap();
    let server = common::start(tmp.path(), "[audit]\nanchor_every_records = 3\n").await;
    let audit_dir = server.config.data_dir.join("audit");
    let mut analyst = server.client("analyst");
    let mut secadmin = server.client("security-admin");
    let mut auditor = server.client("audit-admin");
    assert_eq!(
        call(&mut analyst, Method::GET, "/v1/status", "").await.0,
        StatusCode::OK
    );

    assert_eq!(
        call(&mut analyst, Method::GET, "/v1/audit", "").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&mut analyst, Method::GET, "/v1/audit/verify", "")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&mut secadmin, Method::GET, "/v1/events?since=1h", "")
            .await
            .0,
        StatusCode::OK
    );
    // An admin action that is refused: audited with its body, durable before the answer.
    assert_eq!(
        call(
            &mut secadmin,
            Method::POST,
            "/v1/status",
            r#"{"why":"try"}"#
        )
        .await
        .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        call(&mut secadmin, Method::GET, "/v1/nope", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&mut secadmin, Method::GET, "/v1/events?limit=x", "")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    // The audit-admin reads the log (GET records are fsynced within 100 ms; poll a little).
    let deadline = Instant::now() + Duration::from_secs(5);
    let list = loop {
        let (status, body) = call(
            &mut auditor,
            Method::GET,
            "/v1/audit?since=1h&limit=1000&order=asc",
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let list = records(&body);
        if list.len() >= 7 || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let find = |identity: &str, method: &str, path: &str| {
        list.iter()
            .find(|r| r.identity == identity && r.method == method && r.path == path)
            .unwrap_or_else(|| panic!("no record of {identity} {method} {path} in {list:#?}"))
    };
    let r = find("analyst", "GET", "/v1/status");
    assert_eq!((r.role.as_str(), r.result), ("analyst", 200));
    assert!(r.peer.starts_with("127.0.0.1:"), "{}", r.peer);
    assert_eq!(find("analyst", "GET", "/v1/audit").result, 403);
    assert_eq!(find("analyst", "GET", "/v1/audit/verify").result, 403);
    let r = find("security-admin", "GET", "/v1/events?since=1h");
    assert_eq!((r.role.as_str(), r.result), ("security-admin", 200));
    let r = find("security-admin", "POST", "/v1/status");
    assert_eq!(r.result, 405);
    assert_eq!(r.action, serde_json::json!({"why": "try"}));
    assert_eq!(find("security-admin", "GET", "/v1/nope").result, 404);
    assert_eq!(
        find("security-admin", "GET", "/v1/events?limit=x").result,
        400
    );
    let seqs: Vec<u64> = list.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());

    // Newest first by default, filters apply.
    let (_, body) = call(&mut auditor, Method::GET, "/v1/audit?identity=analyst", "").await;
    let newest = records(&body);
    assert!(newest.iter().all(|r| r.identity == "analyst"));
    assert!(newest.windows(2).all(|w| w[0].seq > w[1].seq));

    let (status, body) = call(&mut auditor, Method::GET, "/v1/audit/verify", "").await;
    assert_eq!(status, StatusCode::OK);
    let report: Report = serde_json::from_slice(&body).unwrap();
    assert!(report.intact, "{report:#?}");
    assert!(report.records >= 7);

    // Tamper: turn the analyst's 403 into a 200, in place.
    let (file, offset, line_no, seq) = {
        let (name, data) = std::fs::read_dir(&audit_dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                let n = p.file_name()?.to_str()?.to_string();
                n.ends_with(".log").then(|| (n, std::fs::read(&p).unwrap()))
            })
            .next()
            .unwrap();
        let mut offset = 0;
        let mut found = None;
        for (i, line) in data.split(|&b| b == b'\n').enumerate() {
            if let Ok(r) = serde_json::from_slice::<Record>(line) {
                if r.identity == "analyst" && r.path == "/v1/audit" {
                    let at = line
                        .windows(12)
                        .position(|w| w == b"\"result\":403")
                        .unwrap();
                    found = Some((name.clone(), offset + at + 9, i as u64 + 1, r.seq));
                    break;
                }
            }
            offset += line.len() + 1;
        }
        found.unwrap()
    };
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(audit_dir.join(&file))
            .unwrap();
        f.seek(SeekFrom::Start(offset as u64)).unwrap();
        f.write_all(b"200").unwrap();
    }
    let (_, body) = call(&mut auditor, Method::GET, "/v1/audit/verify", "").await;
    let report: Report = serde_json::from_slice(&body).unwrap();
    assert!(!report.intact);
    let f = &report.findings[0];
    assert_eq!(f.kind, FindingKind::Edited, "{report:#?}");
    assert_eq!(f.file.as_deref(), Some(file.as_str()));
    assert_eq!((f.line, f.seq), (Some(line_no), Some(seq)));

    server.stop().await;

    // Offline, as an assessor runs it, after the collector stopped.
    let offline = audit::verify(&audit_dir).unwrap();
    assert_eq!(offline.findings.len(), 1, "{offline:#?}");
    assert_eq!(offline.findings[0].kind, FindingKind::Edited);
    assert!(offline.anchors >= 1);
}
