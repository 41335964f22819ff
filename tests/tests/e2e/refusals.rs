//! Everything the collector must refuse, each with a clear error, none changing what is stored.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use palisade_tests::{wait_for, Agent, Collector, Pki};
use palisade_wire::batch;
use palisade_wire::client::{Client, ClientError, Response};
use palisade_wire::tls::{client_config, TlsFiles};
use palisade_wire::{Event, EventKind, Severity};

fn files(pki: &Pki, ca: &Pki, name: &str) -> TlsFiles {
    TlsFiles {
        ca: ca.ca(),
        cert: pki.cert(name),
        key: pki.key(name),
    }
}

fn post(
    url: &str,
    tls: rustls::ClientConfig,
    path: &str,
    body: Vec<u8>,
) -> Result<Response, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Client::new(url, tls, Duration::from_secs(10))?;
        c.request(
            Method::POST,
            path,
            "application/x-palisade-batch",
            Bytes::from(body),
        )
        .await
    })
}

fn frame(agent: &str, first_seq: u64, n: u64) -> Vec<u8> {
    let lines: Vec<(u64, Vec<u8>)> = (first_seq..first_seq + n)
        .map(|s| {
            let mut e = Event::new(agent, EventKind::Synthetic, Severity::Info)
                .with_message(format!("forged {s}"));
            e.seal(s);
            (s, e.to_json())
        })
        .collect();
    let pairs: Vec<(u64, &[u8])> = lines.iter().map(|(s, j)| (*s, j.as_slice())).collect();
    batch::encode(agent, &pairs, 3).unwrap()
}

fn snapshot(collector: &Collector, pki: &Pki) -> Vec<serde_json::Value> {
    collector.events(pki, &[])
}

#[test]
fn every_refusal_is_clear_and_changes_nothing_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-r");
    let revoked_agent_serial = pki.issue("agent", "probe-revoked");
    let revoked_analyst_serial = pki.issue("analyst", "analyst-2");
    let other = Pki::init(&tmp.path().join("other-pki"));
    let collector = Collector::start(
        &tmp.path().join("collector"),
        &pki,
        0,
        "[ingest]\nmax_batch_bytes = 65536\n",
    );
    let mut agent = Agent::start(
        &tmp.path().join("agent"),
        &pki,
        "probe-r",
        &collector.url,
        "[heartbeat]\ninterval_secs = 0\n[synthetic]\nevents = 50\n",
    );
    wait_for(Duration::from_secs(60), || {
        (snapshot(&collector, &pki).len() == 50).then_some(())
    })
    .expect("the agent's 50 events arrive");
    assert!(agent.terminate());
    let before = snapshot(&collector, &pki);
    let url = collector.url.clone();

    // No client certificate: the handshake is refused.
    let ca_only = {
        let mut roots = rustls::RootCertStore::empty();
        for c in palisade_wire::tls::load_certs(&pki.ca()).unwrap() {
            roots.add(c).unwrap();
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
    };
    let r = post(&url, ca_only, "/v1/ingest", frame("probe-r", 1000, 1));
    assert!(
        r.is_err(),
        "no client certificate must be refused, got {r:?}"
    );

    // A certificate from another CA (trusting our server so only the client side is wrong).
    let out = collector.cli(
        &other,
        "analyst",
        &["status", "--ca", pki.ca().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1"),
        "error names the collector: {err}"
    );
    let foreign = post(
        &url,
        client_config(&files(&other, &pki, "security-admin")).unwrap(),
        "/v1/ingest",
        frame("security-admin", 1, 1),
    );
    assert!(
        foreign.is_err(),
        "foreign CA must be refused, got {foreign:?}"
    );

    // Revoked certificates: accepted before, refused after `pki revoke` (no restart).
    let ok = collector.cli(&pki, "analyst-2", &["status"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    pki.revoke(&revoked_analyst_serial);
    pki.revoke(&revoked_agent_serial);
    wait_for(Duration::from_secs(15), || {
        (collector.cli(&pki, "analyst-2", &["status"]).status.code() == Some(2)).then_some(())
    })
    .expect("revoked analyst refused after the CRL reload");
    let r = post(
        &url,
        client_config(&files(&pki, &pki, "probe-revoked")).unwrap(),
        "/v1/ingest",
        frame("probe-revoked", 1, 5),
    );
    assert!(r.is_err(), "revoked agent must be refused, got {r:?}");

    // An agent certificate on the analyst API.
    let out = collector.cli(&pki, "probe-r", &["status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403") && err.contains("role agent may not"),
        "{err}"
    );
    let out = collector.cli(&pki, "probe-r", &["events"]);
    assert_eq!(out.status.code(), Some(2));

    // An analyst certificate posting a batch.
    let r = post(
        &url,
        client_config(&files(&pki, &pki, "analyst")).unwrap(),
        "/v1/ingest",
        frame("analyst", 1, 5),
    )
    .unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("role analyst may not"), "{}", r.text());

    let agent_tls = || client_config(&files(&pki, &pki, "probe-r")).unwrap();
    // A batch claiming another agent's id.
    let r = post(&url, agent_tls(), "/v1/ingest", frame("probe-other", 1, 5)).unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.text().contains("may not send batches for agent"),
        "{}",
        r.text()
    );

    // Truncated, corrupt, oversized, garbage.
    let good = frame("probe-r", 5000, 20);
    let r = post(
        &url,
        agent_tls(),
        "/v1/ingest",
        good[..good.len() - 7].to_vec(),
    )
    .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("truncated"), "{}", r.text());
    let mut corrupt = good.clone();
    let last = corrupt.len() - 3;
    corrupt[last] ^= 0xff;
    let r = post(&url, agent_tls(), "/v1/ingest", corrupt).unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("malformed batch"), "{}", r.text());
    let mut bad_hash = good.clone();
    // The hash sits right before the payload: flip its first byte.
    let hash_at = 4 + 1 + 1 + "probe-r".len() + 8 + 8 + 4 + 4 + 4;
    bad_hash[hash_at] ^= 1;
    let r = post(&url, agent_tls(), "/v1/ingest", bad_hash).unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("blake3 mismatch"), "{}", r.text());
    let big: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = post(&url, agent_tls(), "/v1/ingest", big).unwrap();
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().contains("65536"), "{}", r.text());
    let r = post(&url, agent_tls(), "/v1/ingest", b"hello".to_vec()).unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("magic") || r.text().contains("truncated"),
        "{}",
        r.text()
    );

    // Nothing stored changed, and the collector counted the refusals and logged why.
    let after = snapshot(&collector, &pki);
    assert_eq!(before, after);
    let out = collector.cli(&pki, "analyst", &["status", "--output-format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["ingest"]["rejected"].as_u64().unwrap() >= 7, "{v}");
    let log = collector.log_text();
    assert!(
        log.contains("TLS handshake refused") || log.contains("no client certificate"),
        "{log}"
    );
    assert!(log.contains("batch refused"), "{log}");

    // A good batch on the same connection path still works afterwards.
    let r = post(&url, agent_tls(), "/v1/ingest", good).unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[test]
fn retention_below_180_days_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let config = dir.path().join("short.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[tls]\nca = \"{0}/ca.crt\"\ncert = \"{0}/palisade-collector.crt\"\nkey = \"{0}/palisade-collector.key\"\n[correlation]\nenabled = false\n[retention]\ndays = 30\n",
            pki.dir.display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    for args in [
        vec!["serve", "--config", c],
        vec!["validate", "--config", c],
    ] {
        let out = palisade_tests::run("palisade-collector", &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("retention.days = 30") && err.contains("--allow-short-retention"),
            "{args:?}: {err}"
        );
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing created by a refused start"
    );
    let ok = palisade_tests::run(
        "palisade-collector",
        &["validate", "--config", c, "--allow-short-retention"],
    );
    assert!(ok.status.success(), "{ok:?}");
}
