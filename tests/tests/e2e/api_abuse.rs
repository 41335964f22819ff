//! The collector's HTTPS API under abuse, against the real binary with real certificates:
//! every endpoint × every role (the expected policy written here, independently of the
//! server's table, and compared with the server's route list so a new route cannot go
//! unchecked), with proof that a refused call changed nothing; bodies just over each limit;
//! malformed JSON and unknown fields; path traversal in the path parameter; slow-loris clients
//! (headers, handshake and body trickled a byte a second); a bounded connection flood; and
//! garbage instead of a TLS ClientHello.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use palisade_tests::{send_batch, wait_for, Collector, Pki};
use palisade_wire::client::{Client, ClientError, Response};
use palisade_wire::event::{Endpoint, Rule};
use palisade_wire::tls::{client_config, TlsFiles};
use palisade_wire::{batch, Event, EventKind, Severity, Timestamp};

/// One caller: a certificate and a kept-alive connection.
struct Caller {
    name: String,
    url: String,
    tls: rustls::ClientConfig,
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
}

impl Caller {
    fn new(url: &str, pki: &Pki, name: &str) -> Caller {
        let tls = client_config(&TlsFiles {
            ca: pki.ca(),
            cert: pki.cert(name),
            key: pki.key(name),
        })
        .unwrap();
        Caller {
            name: name.into(),
            url: url.into(),
            tls,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: None,
        }
    }

    fn call(&mut self, method: Method, path: &str, body: Vec<u8>) -> Result<Response, ClientError> {
        self.call_typed(method, path, "application/json", body)
    }

    fn call_typed(
        &mut self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Response, ClientError> {
        let mut client = match self.client.take() {
            Some(c) => c,
            None => Client::new(&self.url, self.tls.clone(), Duration::from_secs(120))?,
        };
        let r = self
            .rt
            .block_on(client.request(method, path, content_type, Bytes::from(body)));
        if r.is_ok() {
            self.client = Some(client);
        }
        r
    }

    /// A call that must be answered.
    fn must(&mut self, method: Method, path: &str, body: Vec<u8>) -> Response {
        let who = self.name.clone();
        self.call(method.clone(), path, body)
            .unwrap_or_else(|e| panic!("{who} {method} {path}: {e}"))
    }
}

/// The policy, written from the grade-3 separation of duties (system-admin: agents and
/// configuration; security-admin: rules and incident handling; audit-admin: the audit log
/// only; analysts read; agents and replicators only send events), not copied from the server.
fn policy() -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    const READ: &[&str] = &["analyst", "security-admin"];
    const OVERVIEW: &[&str] = &["analyst", "security-admin", "system-admin"];
    vec![
        ("POST", "/v1/ingest", &["agent", "replicator"]),
        ("GET", "/v1/status", OVERVIEW),
        ("GET", "/v1/agents", OVERVIEW),
        ("GET", "/v1/situation", OVERVIEW),
        ("GET", "/v1/events", READ),
        ("GET", "/v1/tail", READ),
        ("GET", "/v1/alerts", READ),
        ("GET", "/v1/incidents", READ),
        ("GET", "/v1/incidents/{id}", READ),
        ("GET", "/v1/rules", READ),
        ("POST", "/v1/incidents/{id}/ack", &["security-admin"]),
        ("POST", "/v1/incidents/{id}/resolve", &["security-admin"]),
        ("POST", "/v1/rules/reload", &["security-admin"]),
        ("GET", "/v1/audit", &["audit-admin"]),
        ("GET", "/v1/audit/verify", &["audit-admin"]),
    ]
}

/// Every role of the PKI and the certificate name used for it.
const ROLES: &[(&str, &str)] = &[
    ("agent", "probe-m"),
    ("analyst", "analyst"),
    ("security-admin", "security-admin"),
    ("audit-admin", "audit-admin"),
    ("system-admin", "system-admin"),
    ("replicator", "replicator-m"),
    // The collector's own certificate (the CA issues the server role only at `pki init`).
    ("server", "palisade-collector"),
];

#[test]
fn api_policy_covers_every_route_and_every_role() {
    let ours: BTreeSet<(String, String)> = policy()
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let theirs: BTreeSet<(String, String)> = palisade_collector::api::ENDPOINTS
        .iter()
        .map(|e| (e.method.to_string(), e.pattern.to_string()))
        .collect();
    assert_eq!(
        ours, theirs,
        "the server's routes and this matrix differ: decide who may call the new route and add it here"
    );
    let ours: BTreeSet<&str> = ROLES.iter().map(|(r, _)| *r).collect();
    let theirs: BTreeSet<&str> = palisade_wire::tls::Role::ALL
        .iter()
        .map(|r| r.name())
        .collect();
    assert_eq!(ours, theirs, "a role was added: give it a certificate here");
}

const RULE: &str = r#"title: Port scan reported by a probe
id: t-scan
logsource:
  product: palisade
  service: alert
detection:
  sel:
    event.dataset: palisade.alert
    rule.id|startswith: pal.scan
  condition: sel
level: medium
"#;

fn scan_event() -> Event {
    let mut e = Event::new("x", EventKind::Alert, Severity::Medium).with_message("port scan");
    e.timestamp = Timestamp::now();
    e.rule = Some(Rule {
        id: Some("pal.scan.horizontal".into()),
        name: Some("horizontal port scan".into()),
        ..Default::default()
    });
    e.source = Some(Endpoint {
        ip: Some("198.51.100.7".parse().unwrap()),
        ..Default::default()
    });
    e
}

/// A batch frame of `n` synthetic events from `agent`.
fn frame(agent: &str, first_seq: u64, n: u64, pad: usize) -> Vec<u8> {
    let lines: Vec<(u64, Vec<u8>)> = (first_seq..first_seq + n)
        .map(|s| {
            let mut e = Event::new(agent, EventKind::Synthetic, Severity::Info)
                .with_message(format!("{s} {}", "x".repeat(pad)));
            e.seal(s);
            (s, e.to_json())
        })
        .collect();
    let pairs: Vec<(u64, &[u8])> = lines.iter().map(|(s, j)| (*s, j.as_slice())).collect();
    batch::encode(agent, &pairs, 3).unwrap()
}

/// What a refused call must not change: the stored events, the agents, the incident (status
/// and history), the loaded rules. (The audit log grows by design: refusals are recorded.)
fn fingerprint(observer: &mut Caller, incident: &str) -> String {
    let status: serde_json::Value =
        serde_json::from_slice(&observer.must(Method::GET, "/v1/status", vec![]).body).unwrap();
    let events = observer
        .must(
            Method::GET,
            "/v1/events?since=1d&limit=100000&order=asc",
            vec![],
        )
        .body;
    let inc = observer
        .must(Method::GET, &format!("/v1/incidents/{incident}"), vec![])
        .text();
    let rules = observer.must(Method::GET, "/v1/rules", vec![]).text();
    format!(
        "store {} agents {} events {} incident {inc} rules {rules}",
        status["store"],
        status["agents"],
        blake3::hash(&events)
    )
}

#[test]
fn api_every_role_on_every_endpoint_and_refusals_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-m");
    pki.issue("replicator", "replicator-m");
    let rules = tmp.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("scan.yml"), RULE).unwrap();
    let c = Collector::start(
        &tmp.path().join("c"),
        &pki,
        0,
        &format!("[correlation]\nrules_dir = \"{}\"\n", rules.display()),
    );
    assert_eq!(
        send_batch(&c.url, &pki, "probe-m", 1, &mut [scan_event()]),
        200
    );
    let mut analyst = Caller::new(&c.url, &pki, "analyst");
    let incident = wait_for(Duration::from_secs(20), || {
        let r = analyst.must(Method::GET, "/v1/incidents?status=open", vec![]);
        let line = r.text().lines().next().map(String::from)?;
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        Some(format!("INC-{}", v["id"]))
    })
    .unwrap_or_else(|| panic!("no incident; log:\n{}", c.log_text()));

    let mut cells = 0;
    let mut refused = 0;
    let mut answered_403 = 0;
    let mut wrong = Vec::new();
    let mut seq = 100;
    for (role, name) in ROLES {
        let mut me = Caller::new(&c.url, &pki, name);
        for (method, pattern, allowed) in policy() {
            cells += 1;
            let path = match pattern {
                "/v1/tail" => "/v1/tail?wait_ms=0".to_string(),
                p => p.replace("{id}", &incident),
            };
            let body = match pattern {
                "/v1/ingest" => {
                    seq += 1;
                    frame(name, seq, 1, 0)
                }
                p if p.ends_with("/ack") || p.ends_with("/resolve") => {
                    format!("{{\"comment\":\"by {name}\"}}").into_bytes()
                }
                _ => vec![],
            };
            let may = allowed.contains(role);
            let before = (!may).then(|| fingerprint(&mut analyst, &incident));
            let ct = if pattern == "/v1/ingest" {
                "application/x-palisade-batch"
            } else {
                "application/json"
            };
            let r = match me.call_typed(method.parse().unwrap(), &path, ct, body) {
                Ok(r) => r,
                Err(e) => {
                    if may {
                        wrong.push(format!("{role} {method} {path}: not answered: {e}"));
                    } else if *role == "server" {
                        // A server certificate presented as a client is refused at the handshake.
                        refused += 1;
                    } else {
                        wrong.push(format!(
                            "{role} {method} {path}: no answer instead of 403: {e}"
                        ));
                    }
                    continue;
                }
            };
            if may {
                if r.status != StatusCode::OK {
                    wrong.push(format!("{role} {method} {path}: {} {}", r.status, r.text()));
                }
            } else {
                refused += 1;
                answered_403 += usize::from(r.status == StatusCode::FORBIDDEN);
                if r.status != StatusCode::FORBIDDEN
                    || !r.text().contains(&format!("role {role} may not"))
                {
                    wrong.push(format!(
                        "{role} {method} {path}: {} {} (expected 403)",
                        r.status,
                        r.text()
                    ));
                }
                let after = fingerprint(&mut analyst, &incident);
                if before.as_deref() != Some(after.as_str()) {
                    wrong.push(format!("{role} {method} {path}: refused, but the state changed:\n  before {before:?}\n  after  {after}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "role matrix violated:\n{}",
        wrong.join("\n")
    );
    assert!(cells >= 15 * 6, "only {cells} cells tried");
    // The allowed calls did what they say: the security-admin's ack and resolve, one event
    // from each sender.
    let inc: serde_json::Value = serde_json::from_slice(
        &analyst
            .must(Method::GET, &format!("/v1/incidents/{incident}"), vec![])
            .body,
    )
    .unwrap();
    assert_eq!(inc["incident"]["status"], "resolved", "{inc}");
    for sender in ["probe-m", "replicator-m"] {
        let r = analyst.must(
            Method::GET,
            &format!("/v1/events?since=1d&agent={sender}&kind=synthetic"),
            vec![],
        );
        assert_eq!(r.text().lines().count(), 1, "{sender}: {}", r.text());
    }
    // Every refusal is in the audit log, and the chain verifies.
    let mut auditor = Caller::new(&c.url, &pki, "audit-admin");
    let audit = auditor.must(
        Method::GET,
        "/v1/audit?since=1h&limit=100000&order=asc",
        vec![],
    );
    let forbidden = audit
        .text()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["result"] == 403))
        .count();
    assert_eq!(forbidden, answered_403, "every 403 is in the audit log");
    let v = auditor.must(Method::GET, "/v1/audit/verify", vec![]);
    assert_eq!(v.status, StatusCode::OK, "{}", v.text());
    eprintln!(
        "{cells} cells, {refused} refused ({answered_403} with 403, all audited; {} at the handshake), state unchanged after every refusal",
        refused - answered_403
    );

    // Unknown routes and methods.
    let r = analyst.must(Method::GET, "/v1/nope", vec![]);
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let r = analyst.must(Method::DELETE, "/v1/events", vec![]);
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());

    // Path traversal and encoding tricks in the one path parameter, by the one role allowed
    // on all three routes that take it: never 200, never a 5xx, never another route's data.
    let before = fingerprint(&mut analyst, &incident);
    let mut admin = Caller::new(&c.url, &pki, "security-admin");
    let tricks = [
        "..",
        "%2e%2e",
        "%2E%2E",
        "..%2f..%2fstatus",
        "..%2F..%2Faudit",
        "%2e%2e%2f%2e%2e%2faudit",
        "INC-1%2f..%2f..%2faudit",
        "..%5c..%5caudit",
        "INC-1%00",
        "INC-%2e%2e",
        "....%2f%2f",
        "%252e%252e",
        "INC-99999999999999999999999",
        "INC--1",
    ];
    let mut traversals = 0;
    for t in tricks {
        for (method, tmpl) in [
            (Method::GET, "/v1/incidents/{}"),
            (Method::POST, "/v1/incidents/{}/ack"),
            (Method::POST, "/v1/incidents/{}/resolve"),
        ] {
            let path = tmpl.replace("{}", t);
            let r = admin.must(method.clone(), &path, vec![]);
            traversals += 1;
            assert!(
                r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND,
                "{method} {path}: {} {}",
                r.status,
                r.text()
            );
            assert!(r.text().contains("error"), "{method} {path}: {}", r.text());
        }
    }
    // Raw `..` segments and doubled slashes that a normalizing proxy would turn into another
    // route: the API does not normalize, so none of them reaches the audit log or status.
    for path in [
        "/v1/incidents/../audit",
        "/v1/incidents/%2e%2e/%2e%2e/audit",
        "/v1/events/../audit",
        "/v1//audit",
        "//v1/audit",
        "/v1/audit/",
        "/v1/AUDIT",
        "/v1/./audit",
        "/v1/audit%2fverify",
    ] {
        let r = admin.must(Method::GET, path, vec![]);
        traversals += 1;
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::BAD_REQUEST,
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }
    assert_eq!(
        before,
        fingerprint(&mut analyst, &incident),
        "a traversal attempt changed something"
    );
    eprintln!("{traversals} traversal attempts: 400/404 each, nothing changed");
}

#[test]
fn api_bodies_over_each_limit_malformed_json_and_unknown_fields_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-b");
    let rules = tmp.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("scan.yml"), RULE).unwrap();
    const FRAME: usize = 65_536;
    const RAW: usize = 200_000;
    const EVENTS: u64 = 100;
    let c = Collector::start(
        &tmp.path().join("c"),
        &pki,
        0,
        &format!(
            "[ingest]\nmax_batch_bytes = {FRAME}\nmax_batch_raw_bytes = {RAW}\nmax_batch_events = {EVENTS}\n[correlation]\nrules_dir = \"{}\"\n",
            rules.display()
        ),
    );
    assert_eq!(
        send_batch(&c.url, &pki, "probe-b", 1, &mut [scan_event()]),
        200
    );
    let mut analyst = Caller::new(&c.url, &pki, "analyst");
    let incident = wait_for(Duration::from_secs(20), || {
        let r = analyst.must(Method::GET, "/v1/incidents?status=open", vec![]);
        let v: serde_json::Value = serde_json::from_str(r.text().lines().next()?).ok()?;
        Some(format!("INC-{}", v["id"]))
    })
    .unwrap_or_else(|| panic!("no incident; log:\n{}", c.log_text()));
    let before = fingerprint(&mut analyst, &incident);
    let mut agent = Caller::new(&c.url, &pki, "probe-b");
    let mut ingest = |body: Vec<u8>| {
        agent
            .call_typed(
                Method::POST,
                "/v1/ingest",
                "application/x-palisade-batch",
                body,
            )
            .unwrap()
    };

    // The frame limit: one byte over → 413 naming the limit (garbage bytes: size is checked
    // before anything is parsed). At the limit → parsed (400 for garbage, not 413).
    let r = ingest(vec![0x5a; FRAME + 1]);
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert!(r.text().contains(&FRAME.to_string()), "{}", r.text());
    let r = ingest(vec![0x5a; FRAME]);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // The event-count limit: one event over → 413; a real frame under every limit.
    let r = ingest(frame("probe-b", 1000, EVENTS + 1, 0));
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert!(r.text().contains(&EVENTS.to_string()), "{}", r.text());
    // The decompressed-size limit: a frame that compresses under FRAME but inflates past RAW.
    let fat = frame("probe-b", 2000, 60, 4000);
    assert!(fat.len() < FRAME, "{}", fat.len());
    let r = ingest(fat);
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert!(r.text().contains(&RAW.to_string()), "{}", r.text());
    assert_eq!(
        before,
        fingerprint(&mut analyst, &incident),
        "a refused batch changed something"
    );
    // Just under every limit: accepted (the limits are where they say).
    let ok = frame("probe-b", 3000, EVENTS, 100);
    let r = ingest(ok);
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Incident actions: body limit 16 KiB, JSON with no unknown field, comment ≤ 4096 bytes.
    let before = fingerprint(&mut analyst, &incident);
    let mut admin = Caller::new(&c.url, &pki, "security-admin");
    let ack = format!("/v1/incidents/{incident}/ack");
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (
            vec![b' '; (16 << 10) + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "16384",
        ),
        (
            b"{\"comment\": \"x\"".to_vec(),
            StatusCode::BAD_REQUEST,
            "EOF",
        ),
        (
            b"{not json}".to_vec(),
            StatusCode::BAD_REQUEST,
            "key must be a string",
        ),
        (
            b"{\"coment\": \"typo\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown field `coment`",
        ),
        (
            b"{\"comment\": \"x\", \"status\": \"resolved\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "unknown field `status`",
        ),
        (
            b"{\"comment\": 5}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            b"[\"comment\"]".to_vec(),
            StatusCode::BAD_REQUEST,
            "expected a JSON object",
        ),
        (
            format!("{{\"comment\": \"{}\"}}", "c".repeat(4097)).into_bytes(),
            StatusCode::BAD_REQUEST,
            "4096",
        ),
        (
            vec![0xff, 0xfe, 0x00],
            StatusCode::BAD_REQUEST,
            "bad request body",
        ),
    ];
    for (body, status, says) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let r = admin.must(Method::POST, &ack, body);
        assert_eq!(r.status, status, "{shown:?}: {}", r.text());
        assert!(
            error_of(&r).contains(says),
            "{shown:?}: {} (should say {says:?})",
            r.text()
        );
    }
    // Query strings: unknown parameters and bad values are named.
    for (path, says) in [
        ("/v1/events?bogus=1", "unknown query parameter \"bogus\""),
        ("/v1/events?limit=abc", "abc"),
        ("/v1/events?since=%zz", "%zz"),
        ("/v1/incidents?status=sideways", "sideways"),
        (
            "/v1/alerts?colour=red",
            "unknown query parameter \"colour\"",
        ),
        ("/v1/tail?wait_ms=-1", "wait_ms"),
    ] {
        let r = analyst.must(Method::GET, path, vec![]);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text());
        assert!(
            error_of(&r).contains(says),
            "{path}: {} (should say {says:?})",
            r.text()
        );
    }
    assert_eq!(
        before,
        fingerprint(&mut analyst, &incident),
        "a refused action changed something"
    );
    // And a well-formed ack at the size limit's edge still works.
    let r = admin.must(
        Method::POST,
        &ack,
        format!("{{\"comment\": \"{}\"}}", "c".repeat(4096)).into_bytes(),
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

fn tls_config(pki: &Pki, name: &str) -> Arc<rustls::ClientConfig> {
    Arc::new(
        client_config(&TlsFiles {
            ca: pki.ca(),
            cert: pki.cert(name),
            key: pki.key(name),
        })
        .unwrap(),
    )
}

/// The `error` field of a JSON error answer (or the whole text).
fn error_of(r: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| r.text())
}

/// How a trickling client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trickle {
    /// The server closed the connection (or answered and closed) after this many bytes.
    Closed { sent: usize, answered: bool },
    /// Everything was sent and the server was still waiting: no deadline.
    Outlasted,
}

/// Writes `bytes` one per second on `stream` (after `prefix` at once), reading between bytes;
/// stops when the server closes or answers. Bounded by `bytes.len()` seconds.
fn trickle<S: Read + Write>(stream: &mut S, prefix: &[u8], bytes: &[u8]) -> Trickle {
    if stream
        .write_all(prefix)
        .and_then(|_| stream.flush())
        .is_err()
    {
        return Trickle::Closed {
            sent: 0,
            answered: false,
        };
    }
    let mut buf = [0u8; 4096];
    for (i, b) in bytes.iter().enumerate() {
        match stream.read(&mut buf) {
            Ok(0) => {
                return Trickle::Closed {
                    sent: i,
                    answered: false,
                }
            }
            Ok(_) => {
                return Trickle::Closed {
                    sent: i,
                    answered: true,
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                return Trickle::Closed {
                    sent: i,
                    answered: false,
                }
            }
        }
        if stream
            .write_all(&[*b])
            .and_then(|_| stream.flush())
            .is_err()
        {
            return Trickle::Closed {
                sent: i,
                answered: false,
            };
        }
    }
    Trickle::Outlasted
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    // The read timeout paces the trickle: one byte a second.
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s
}

fn tls_stream(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp(addr));
    s.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    s.sock
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    s
}

#[test]
fn api_slow_loris_garbage_and_a_connection_flood_leave_the_server_answering() {
    const DEADLINE_SECS: u64 = 3;
    let loris: usize = std::env::var("PALISADE_LORIS_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let flood: usize = std::env::var("PALISADE_FLOOD_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-s");
    let c = Collector::start(
        &tmp.path().join("c"),
        &pki,
        0,
        &format!(
            "[correlation]\nenabled = false\n[server]\nhandshake_timeout_secs = {DEADLINE_SECS}\nheader_read_timeout_secs = {DEADLINE_SECS}\nbody_read_timeout_secs = {DEADLINE_SECS}\n"
        ),
    );
    let addr: SocketAddr = c.url.trim_start_matches("https://").parse().unwrap();
    let analyst_tls = tls_config(&pki, "analyst");
    let agent_tls = tls_config(&pki, "probe-s");
    // 30 bytes at one a second: far longer than the deadline.
    let slow_header = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n\r\n";
    let kinds = ["headers", "handshake", "body"];
    let started = Instant::now();
    let outcomes: Vec<(&str, Trickle)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..loris)
            .map(|i| {
                let kind = kinds[i % kinds.len()];
                let (analyst_tls, agent_tls) = (analyst_tls.clone(), agent_tls.clone());
                s.spawn(move || {
                    let outcome = match kind {
                        // TLS done, then the request line and headers a byte a second.
                        "headers" => trickle(&mut tls_stream(addr, analyst_tls), b"", &slow_header[..30]),
                        // A TLS record header announcing 512 bytes, then a byte a second.
                        "handshake" => trickle(&mut tcp(addr), &[0x16, 0x03, 0x01, 0x02, 0x00], &[0u8; 30]),
                        // Headers at once announcing a 1000-byte batch, then a byte a second.
                        _ => trickle(
                            &mut tls_stream(addr, agent_tls),
                            b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-palisade-batch\r\nContent-Length: 1000\r\n\r\n",
                            &[0u8; 30],
                        ),
                    };
                    (kind, outcome)
                })
            })
            .collect();
        // Meanwhile a legitimate client is served.
        std::thread::sleep(Duration::from_millis(500));
        let mut legit = Caller::new(&c.url, &pki, "analyst");
        let t = Instant::now();
        let r = legit.must(Method::GET, "/v1/status", vec![]);
        assert_eq!(r.status, StatusCode::OK);
        eprintln!(
            "during {loris} slow-loris clients a legitimate status call took {:?}",
            t.elapsed()
        );
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (kind, outcome) in &outcomes {
        match outcome {
            Trickle::Closed { sent, .. } => assert!(*sent < 30, "{kind}: {outcome:?}"),
            Trickle::Outlasted => {
                panic!("a slow-loris client ({kind}) outlasted the server's deadline: no timeout")
            }
        }
    }
    let sent: Vec<usize> = outcomes
        .iter()
        .map(|(_, o)| match o {
            Trickle::Closed { sent, .. } => *sent,
            Trickle::Outlasted => 30,
        })
        .collect();
    eprintln!(
        "{loris} slow-loris clients (headers, handshake, body) all cut off after {}..={} bytes at 1 byte/s (deadline {DEADLINE_SECS} s); {:?} in all",
        sent.iter().min().unwrap(),
        sent.iter().max().unwrap(),
        started.elapsed()
    );
    let log = c.log_text();
    assert!(log.contains("TLS handshake timed out"), "{log}");

    // Garbage instead of a ClientHello: each connection is dropped, the server goes on.
    let mut rng = fastrand::Rng::with_seed(8);
    let random: Vec<u8> = (0..2048).map(|_| rng.u8(..)).collect();
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        (
            "plain HTTP",
            b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
        ),
        ("random bytes", random),
        (
            "handshake record of length 0",
            vec![0x16, 0x03, 0x01, 0x00, 0x00],
        ),
        (
            "alert record before hello",
            vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
        ),
        (
            "SSLv2 hello",
            vec![
                0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
            ],
        ),
        (
            "oversized record",
            [vec![0x16, 0x03, 0x01, 0xff, 0xff], vec![0x41; 1024]].concat(),
        ),
        ("zeros", vec![0u8; 4096]),
    ];
    for (what, bytes) in &garbage {
        let mut s = tcp(addr);
        s.set_read_timeout(Some(Duration::from_secs(2 * DEADLINE_SECS + 5)))
            .unwrap();
        let _ = s.write_all(bytes);
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        // Read until the server closes (an alert may come first); bounded by the timeout.
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break false
                }
                Err(_) => break true,
            }
        };
        assert!(closed, "{what}: the connection was left open");
        assert!(
            !String::from_utf8_lossy(&got).contains("HTTP/1.1 200"),
            "{what}: answered in clear"
        );
        let mut legit = Caller::new(&c.url, &pki, "analyst");
        assert_eq!(
            legit.must(Method::GET, "/v1/status", vec![]).status,
            StatusCode::OK,
            "after {what}"
        );
    }
    assert!(
        c.log_text().contains("TLS handshake refused"),
        "{}",
        c.log_text()
    );

    // A bounded flood: `flood` connections opened and held without a byte sent, while a
    // legitimate client asks for the status every 250 ms. The server accepts up to
    // max_connections, times their handshakes out, and keeps answering.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (opened, failed, latencies, r) = std::thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut legit = Caller::new(&c.url, &pki, "analyst");
            let mut latencies = Vec::new();
            let mut last = None;
            // Bounded: at most 400 probes (100 s).
            for _ in 0..400 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let r = legit.call(Method::GET, "/v1/status", vec![]);
                latencies.push(t.elapsed());
                match r {
                    Ok(r) if r.status == StatusCode::OK => last = Some(r),
                    other => {
                        panic!("a legitimate client was not served during the flood: {other:?}")
                    }
                }
                // A new connection each time: it must get through the accept queue too.
                legit.client = None;
                std::thread::sleep(Duration::from_millis(250));
            }
            (latencies, last)
        });
        let t = Instant::now();
        let mut held = Vec::with_capacity(flood);
        let mut failed = 0;
        for _ in 0..flood {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => held.push(s),
                Err(_) => failed += 1,
            }
        }
        let opened = t.elapsed();
        // Hold them past the handshake deadline.
        std::thread::sleep(Duration::from_secs(2 * DEADLINE_SECS));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (latencies, last) = prober.join().unwrap();
        drop(held);
        (opened, failed, latencies, last.expect("at least one probe"))
    });
    let answered = latencies.iter().max().copied().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let mut after = Caller::new(&c.url, &pki, "analyst");
    assert_eq!(
        after.must(Method::GET, "/v1/status", vec![]).status,
        StatusCode::OK
    );
    eprintln!(
        "flood: {} connections opened in {opened:?} ({failed} not) and held; {} legitimate status calls meanwhile, all answered, slowest {answered:?} (uptime {} s); served normally after",
        flood - failed,
        latencies.len(),
        v["uptime_secs"]
    );
}
