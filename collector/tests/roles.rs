//! Separation of duties, the full matrix: every endpoint called by a certificate of every role
//! against the real server on 127.0.0.1 with real mTLS. The expected policy is written here
//! independently of the server's table (from the grade-3 roles: system-admin runs agents and
//! configuration, security-admin rules and incident handling, audit-admin only the audit log,
//! analysts read), and the test fails when the table gains a route this policy does not cover.
//! Every refusal must also be in the audit log.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use palisade_collector::api::ENDPOINTS;
use palisade_collector::audit::Record;
use palisade_wire::tls::Role;

const READ: &[Role] = &[Role::Analyst, Role::SecurityAdmin];
const OVERVIEW: &[Role] = &[Role::Analyst, Role::SecurityAdmin, Role::SystemAdmin];

/// The policy: (method, route, roles allowed).
fn policy() -> Vec<(&'static str, &'static str, &'static [Role])> {
    vec![
        ("POST", "/v1/ingest", &[Role::Agent, Role::Replicator]),
        ("GET", "/v1/status", OVERVIEW),
        ("GET", "/v1/agents", OVERVIEW),
        ("GET", "/v1/situation", OVERVIEW),
        ("GET", "/v1/events", READ),
        ("GET", "/v1/tail", READ),
        ("GET", "/v1/alerts", READ),
        ("GET", "/v1/incidents", READ),
        ("GET", "/v1/incidents/{id}", READ),
        ("GET", "/v1/rules", READ),
        ("POST", "/v1/incidents/{id}/ack", &[Role::SecurityAdmin]),
        ("POST", "/v1/incidents/{id}/resolve", &[Role::SecurityAdmin]),
        ("POST", "/v1/rules/reload", &[Role::SecurityAdmin]),
        ("GET", "/v1/audit", &[Role::AuditAdmin]),
        ("GET", "/v1/audit/verify", &[Role::AuditAdmin]),
    ]
}

#[test]
fn the_policy_covers_every_route_of_the_server() {
    let mut ours: Vec<(String, String)> = policy()
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let mut theirs: Vec<(String, String)> = ENDPOINTS
        .iter()
        .map(|e| (e.method.to_string(), e.pattern.to_string()))
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(
        ours, theirs,
        "a route was added or removed: decide who may call it and add it to this policy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_on_every_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = common::pki(tmp.path());
    let pki_dir = tmp.path().join("pki");
    // One certificate per role, named after the role (init issued the three admins).
    for role in Role::ALL {
        let name = role.to_string();
        if !pki_dir.join(format!("{name}.crt")).exists() {
            if let Err(e) = pki.issue(role, &name, &[], 30) {
                // The CA refuses to issue some roles to clients at all; that is a refusal too.
                eprintln!("no certificate for role {role}: {e}");
            }
        }
    }
    let server = common::start(tmp.path(), "[correlation]\nenabled = false\n").await;

    let mut refused = 0;
    let mut cells = 0;
    let mut wrong = Vec::new();
    for role in Role::ALL {
        let name = role.to_string();
        if !pki_dir.join(format!("{name}.crt")).exists() {
            continue;
        }
        let mut c = server.client(&name);
        for (method, pattern, allowed) in policy() {
            let path = pattern.replace("{id}", "INC-1");
            let method: Method = method.parse().unwrap();
            cells += 1;
            let answer = c
                .request(method.clone(), &path, "application/json", Bytes::new())
                .await;
            let status = match answer {
                Ok(r) => r.status,
                Err(e) => {
                    // A certificate the server will not even shake hands with (e.g. a server
                    // certificate used as a client) is refused before routing.
                    if allowed.contains(&role) {
                        wrong.push(format!("{role} {method} {path}: connection refused: {e}"));
                    }
                    c = server.client(&name);
                    continue;
                }
            };
            let forbidden = status == StatusCode::FORBIDDEN;
            if allowed.contains(&role) == forbidden {
                wrong.push(format!(
                    "{role} {method} {path}: got {status}, expected {}",
                    if forbidden { "allowed" } else { "403" }
                ));
            }
            if forbidden {
                refused += 1;
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "role matrix violated:\n{}",
        wrong.join("\n")
    );
    assert!(cells >= 15 * 6, "only {cells} cells tried");

    // Every refusal is in the audit log with the caller's role and a 403.
    let mut auditor = server.client("audit-admin");
    let r = auditor
        .request(
            Method::GET,
            "/v1/audit?since=1h&limit=100000&order=asc",
            "application/json",
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let records: Vec<Record> = r
        .body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let audited_403 = records.iter().filter(|r| r.result == 403).count();
    assert_eq!(audited_403, refused, "refusals in the audit log");
    assert!(records
        .iter()
        .any(|r| r.result == 403 && r.role == "audit-admin" && r.path.starts_with("/v1/events")));

    server.stop().await;
}
