//! The collector's exports on loopback: a real syslog receiver (TCP and TLS) reading
//! octet-counted RFC 5424 frames from the forwarder, the SIEM going away and coming back, queue
//! overflow, and a Prometheus scrape over real HTTP whose every line is checked.

// Test helpers outside #[test] fns may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_collector::config::CollectorConfig;
use palisade_collector::forward::syslog::{Facility, Transport};
use palisade_collector::forward::{SyslogConfig, SyslogForwarder};
use palisade_collector::ingest::{CommitSink, IngestMetrics};
use palisade_collector::metrics::{
    MetricsConfig, MetricsServer, MetricsSource, ProcessMetrics, StoreMetrics,
};
use palisade_collector::pki::Pki;
use palisade_collector::store::{EventStore, SegmentStore};
use palisade_wire::batch::{Batch, ReceivedEvent};
use palisade_wire::event::{Endpoint, Rule};
use palisade_wire::tls::{Role, TlsFiles};
use palisade_wire::{Event, EventKind, Severity};

const WAIT: Duration = Duration::from_secs(20);

/// One batch from `agent` with sequences `first..first+n`; severity cycles info..critical.
fn batch(agent: &str, first: u64, n: u64, kind: EventKind) -> Batch {
    let events = (first..first + n)
        .map(|seq| {
            let sev = Severity::ALL[(seq % 5) as usize];
            let mut e = Event::new(agent, kind, sev).with_message(format!("event {seq}"));
            e.source = Some(Endpoint {
                ip: Some("127.0.0.5".parse().unwrap()),
                port: Some(40000 + (seq % 1000) as u16),
                ..Default::default()
            });
            e.rule = Some(Rule {
                id: Some(format!("test.rule\"{seq}]")),
                ..Default::default()
            });
            e.seal(seq);
            let raw = e.to_json();
            ReceivedEvent { event: e, raw }
        })
        .collect();
    Batch {
        agent_id: agent.to_string(),
        first_sequence: first,
        last_sequence: first + n - 1,
        events,
    }
}

fn commit(sink: &dyn CommitSink, b: Batch) {
    sink.committed(&Arc::from(vec![b]));
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one octet-counted frame (`LEN SP MSG`); `None` at a clean end of stream.
fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = 0usize;
    let mut digits = 0;
    loop {
        let mut b = [0u8; 1];
        if r.read(&mut b)? == 0 {
            if digits == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match b[0] {
            b'0'..=b'9' if digits < 9 => {
                len = len * 10 + usize::from(b[0] - b'0');
                digits += 1;
            }
            b' ' if digits > 0 => break,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad frame length byte {other:#x}"),
                ))
            }
        }
    }
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg)?;
    Ok(Some(msg))
}

/// A received message split into its RFC 5424 parts.
#[derive(Debug)]
struct Parsed {
    pri: u8,
    timestamp: String,
    hostname: String,
    app: String,
    msgid: String,
    sd: String,
    json: serde_json::Value,
}

fn parse(msg: &[u8]) -> Parsed {
    let text = std::str::from_utf8(msg).expect("message is UTF-8");
    let rest = text.strip_prefix('<').expect("starts with <PRI>");
    let (pri, rest) = rest.split_once(">1 ").expect("PRI then version 1");
    let mut parts = rest.splitn(6, ' ');
    let mut next = || parts.next().expect("header field").to_string();
    let (timestamp, hostname, app, procid, msgid, rest) =
        (next(), next(), next(), next(), next(), next());
    assert_eq!(procid, "-");
    let (sd, body) = rest.split_once("] \u{feff}").expect("SD then BOM");
    Parsed {
        pri: pri.parse().expect("numeric PRI"),
        timestamp,
        hostname,
        app,
        msgid,
        sd: format!("{sd}]"),
        json: serde_json::from_str(body).expect("MSG is the event's JSON"),
    }
}

fn read_messages(r: &mut impl Read, n: usize) -> Vec<Parsed> {
    (0..n)
        .map(|i| {
            let frame = read_frame(r)
                .unwrap_or_else(|e| panic!("frame {i} of {n}: {e}"))
                .unwrap_or_else(|| panic!("stream ended after {i} of {n} frames"));
            parse(&frame)
        })
        .collect()
}

fn sequences(msgs: &[Parsed]) -> Vec<u64> {
    msgs.iter()
        .map(|m| m.json["event"]["sequence"].as_u64().unwrap())
        .collect()
}

fn accept(listener: &TcpListener) -> TcpStream {
    let (s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// A port on 127.0.0.1 nobody listens on (bound, then released).
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config(addr: SocketAddr) -> SyslogConfig {
    let mut c = SyslogConfig::new(addr.to_string());
    c.reconnect_max_secs = 1;
    c.connect_timeout_secs = 5;
    c
}

#[test]
fn tcp_siem_receives_filtered_messages_frame_by_frame() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config(listener.local_addr().unwrap());
    c.min_severity = Severity::Medium;
    c.kinds = vec![EventKind::Alert];
    c.facility = Facility::Local4;
    let fwd = SyslogForwarder::start(c).unwrap();
    let mut sock = accept(&listener);

    commit(&fwd, batch("probe-1", 1, 20, EventKind::Alert));
    // Another kind: filtered out.
    commit(&fwd, batch("probe-2", 1, 10, EventKind::Heartbeat));
    // The agent retried a batch whose answer it lost: not forwarded twice.
    commit(&fwd, batch("probe-1", 11, 10, EventKind::Alert));
    commit(&fwd, batch("probe-1", 21, 5, EventKind::Alert));

    // Severity = seq % 5 (0 → info … 4 → critical); medium and up is seq % 5 in 2..=4.
    let want: Vec<u64> = (1..=25).filter(|s| s % 5 >= 2).collect();
    let msgs = read_messages(&mut sock, want.len());
    assert_eq!(sequences(&msgs), want);
    for m in &msgs {
        let sev = m.json["event"]["severity"].as_u64().unwrap();
        assert_eq!(u64::from(m.pri), 20 * 8 + (7 - sev), "{m:?}");
        assert_eq!(m.app, "palisade");
        assert_eq!(m.msgid, "palisade.alert");
        assert_eq!(m.hostname, "probe-1");
        assert!(
            m.timestamp.ends_with('Z') && m.timestamp.len() == 27,
            "{m:?}"
        );
        let seq = m.json["event"]["sequence"].as_u64().unwrap();
        let id = m.json["event"]["id"].as_str().unwrap();
        assert!(
            m.sd.starts_with("[palisade@32473 agent=\"probe-1\" "),
            "{}",
            m.sd
        );
        assert!(m.sd.contains(&format!(" id=\"{id}\"")), "{}", m.sd);
        assert!(
            m.sd.contains(&format!(" rule=\"test.rule\\\"{seq}\\]\"")),
            "{}",
            m.sd
        );
        assert!(
            m.sd.contains(&format!(" src=\"127.0.0.5:{}\"", 40000 + seq)),
            "{}",
            m.sd
        );
        assert!(!m.sd.contains(" dst="), "{}", m.sd);
    }
    wait_until("sent counter", || fwd.snapshot().sent == want.len() as u64);
    let s = fwd.snapshot();
    assert_eq!((s.dropped, s.reconnects, s.queued), (0, 0, 0));
    assert!(s.connected);
    fwd.close(Duration::from_secs(2));
    // A clean close: end of stream after the last frame.
    assert!(read_frame(&mut sock).unwrap().is_none());
}

#[test]
fn messages_queued_while_the_siem_is_away_are_delivered_after_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fwd = SyslogForwarder::start(config(addr)).unwrap();
    let mut sock = accept(&listener);
    commit(&fwd, batch("probe-1", 1, 5, EventKind::Flow));
    assert_eq!(sequences(&read_messages(&mut sock, 5)), [1, 2, 3, 4, 5]);
    wait_until("first five sent", || fwd.snapshot().sent == 5);

    // The SIEM goes away: connection closed, nobody listening.
    drop(sock);
    drop(listener);
    // Let the FIN reach the forwarder's socket before it has anything to write.
    std::thread::sleep(Duration::from_millis(100));
    commit(&fwd, batch("probe-1", 6, 10, EventKind::Flow));
    wait_until("failed reconnection attempts", || {
        fwd.snapshot().errors >= 2
    });
    let s = fwd.snapshot();
    assert_eq!((s.queued, s.sent, s.dropped), (10, 5, 0), "{s:?}");
    assert!(!s.connected);
    commit(&fwd, batch("probe-1", 16, 2, EventKind::Flow));

    // It comes back on the same address.
    let listener = TcpListener::bind(addr).unwrap();
    let mut sock = accept(&listener);
    let msgs = read_messages(&mut sock, 12);
    assert_eq!(sequences(&msgs), (6..=17).collect::<Vec<_>>());
    wait_until("all sent", || fwd.snapshot().sent == 17);
    let s = fwd.snapshot();
    assert_eq!((s.reconnects, s.dropped, s.queued), (1, 0, 0), "{s:?}");
    fwd.close(Duration::from_secs(2));
}

#[test]
fn a_full_queue_drops_and_counts_then_delivers_what_it_held() {
    let addr = closed_port();
    let mut c = config(addr);
    c.queue_events = 10;
    let fwd = SyslogForwarder::start(c).unwrap();
    wait_until("a failed connection attempt", || fwd.snapshot().errors >= 1);
    commit(&fwd, batch("probe-1", 1, 8, EventKind::Alert));
    commit(&fwd, batch("probe-1", 9, 17, EventKind::Alert));
    let s = fwd.snapshot();
    assert_eq!((s.queued, s.dropped, s.sent), (10, 15, 0), "{s:?}");

    let listener = TcpListener::bind(addr).unwrap();
    let mut sock = accept(&listener);
    // The oldest ten stayed; the newest were dropped.
    assert_eq!(
        sequences(&read_messages(&mut sock, 10)),
        (1..=10).collect::<Vec<_>>()
    );
    wait_until("ten sent", || fwd.snapshot().sent == 10);
    assert_eq!(fwd.snapshot().dropped, 15);
    fwd.close(Duration::from_secs(2));
}

#[test]
fn oversized_messages_are_dropped_and_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config(listener.local_addr().unwrap());
    c.max_message_bytes = 2048;
    let fwd = SyslogForwarder::start(c).unwrap();
    let mut sock = accept(&listener);
    let mut b = batch("probe-1", 1, 2, EventKind::Alert);
    let mut big =
        Event::new("probe-1", EventKind::Alert, Severity::High).with_message("x".repeat(2100));
    big.seal(3);
    b.events.push(ReceivedEvent {
        raw: big.to_json(),
        event: big,
    });
    b.last_sequence = 3;
    commit(&fwd, b);
    assert_eq!(sequences(&read_messages(&mut sock, 2)), [1, 2]);
    wait_until("two sent", || fwd.snapshot().sent == 2);
    assert_eq!(fwd.snapshot().dropped, 1);
    fwd.close(Duration::from_secs(2));
}

struct TlsSiem {
    addr: SocketAddr,
    received: std::thread::JoinHandle<Result<Vec<Parsed>, String>>,
}

/// A TLS syslog receiver that requires a client certificate from `pki`'s CA and reads `n`
/// messages from its first connection (handshake failures are returned as errors).
fn tls_siem(pki: &Pki, n: usize) -> TlsSiem {
    let (cert, key) = pki.files("palisade-collector");
    let files = TlsFiles {
        ca: pki.ca_cert(),
        cert,
        key,
    };
    let config = Arc::new(palisade_wire::tls::server_config(&files, None).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = std::thread::spawn(move || {
        let mut tcp = accept(&listener);
        let mut conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        }
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        Ok(read_messages(&mut stream, n))
    });
    TlsSiem { addr, received }
}

#[test]
fn tls_siem_verified_by_ca_with_client_certificate_receives_messages() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path().join("pki"));
    pki.init(&[], 1).unwrap();
    let client = pki.issue(Role::Agent, "siem-forwarder", &[], 1).unwrap();
    let siem = tls_siem(&pki, 6);
    let mut c = config(siem.addr);
    c.transport = Transport::Tls;
    c.ca = Some(pki.ca_cert());
    c.cert = Some(client.cert);
    c.key = Some(client.key);
    c.server_name = Some("localhost".into());
    let fwd = SyslogForwarder::start(c).unwrap();
    commit(&fwd, batch("probe-9", 1, 6, EventKind::Integrity));
    let msgs = siem.received.join().unwrap().unwrap();
    assert_eq!(sequences(&msgs), [1, 2, 3, 4, 5, 6]);
    assert!(msgs.iter().all(|m| m.msgid == "palisade.integrity"));
    wait_until("six sent", || fwd.snapshot().sent == 6);
    assert_eq!(fwd.snapshot().errors, 0);
    fwd.close(Duration::from_secs(2));
}

#[test]
fn tls_siem_with_a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let siem_pki = Pki::new(dir.path().join("siem"));
    siem_pki.init(&[], 1).unwrap();
    let other = Pki::new(dir.path().join("other"));
    other.init(&[], 1).unwrap();
    let siem = tls_siem(&siem_pki, 1);
    let mut c = config(siem.addr);
    c.transport = Transport::Tls;
    // Trusts a different CA than the one that signed the SIEM's certificate (IP name default).
    c.ca = Some(other.ca_cert());
    let fwd = SyslogForwarder::start(c).unwrap();
    commit(&fwd, batch("probe-1", 1, 1, EventKind::Alert));
    let server_side = siem.received.join().unwrap();
    assert!(server_side.is_err(), "handshake must fail");
    wait_until("a counted handshake error", || fwd.snapshot().errors >= 1);
    let s = fwd.snapshot();
    assert_eq!((s.sent, s.queued), (0, 1), "{s:?}");
    fwd.close(Duration::from_millis(100));
}

#[test]
fn bad_tls_material_stops_the_forwarder_from_starting() {
    let mut c = SyslogConfig::new("127.0.0.1:6514");
    c.transport = Transport::Tls;
    c.ca = Some("/nonexistent/ca.crt".into());
    let err = SyslogForwarder::start(c).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/ca.crt"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// A parsed sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Checks one exposition-format sample line.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !palisade_collector::metrics::valid_name(name) {
        return Err(format!("bad metric name in {line:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            let start = chars.peek().map(|&(i, _)| i).ok_or("unterminated labels")?;
            if r[start..].starts_with('}') {
                rest = &r[start + 1..];
                break;
            }
            let eq = r[start..].find("=\"").ok_or("label without =\"")? + start;
            let key = &r[start..eq];
            if !palisade_collector::metrics::valid_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            while chars.peek().is_some_and(|&(i, _)| i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    '"' => break,
                    '\n' => return Err("raw newline in label value".into()),
                    c => value.push(c),
                }
            }
            labels.push((key.to_string(), value));
            if chars.peek().is_some_and(|&(_, c)| c == ',') {
                chars.next();
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before value in {line:?}"))?;
    let v = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .map_err(|_| format!("bad value {v:?} in {line:?}"))?,
    };
    Ok((name.to_string(), labels, v))
}

async fn http_get(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let resp = String::from_utf8(resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_over_http_is_valid_exposition_format() {
    let dir = tempfile::tempdir().unwrap();
    let segments = SegmentStore::open(&dir.path().join("store"), 8 << 20).unwrap();
    let write_timings = segments.write_timings();
    let store: Arc<dyn EventStore> = Arc::new(segments);
    let b = batch("probe-1", 1, 4, EventKind::Alert);
    store.write(&[&b]).unwrap();
    let ingest = Arc::new(IngestMetrics::default());
    ingest
        .accepted
        .fetch_add(4, std::sync::atomic::Ordering::Relaxed);
    // A group commit of 3 ms after 40 ms in the queue.
    ingest.commit_time.record(Duration::from_millis(3));
    ingest.queue_wait.record(Duration::from_millis(40));
    let fwd = Arc::new(SyslogForwarder::start(config(closed_port())).unwrap());
    let incidents = Arc::new(
        palisade_collector::incidents::IncidentStore::open(&dir.path().join("incidents"), 3600)
            .unwrap(),
    );
    let correlator = palisade_collector::correlate::Correlator::start(
        palisade_collector::correlate::CorrelationSettings {
            rules_dir: dir.path().join("no-rules"),
            ..Default::default()
        },
        incidents,
    )
    .unwrap();
    let audit = Arc::new(
        palisade_collector::audit::AuditLog::open(
            &dir.path().join("audit"),
            &palisade_collector::audit::AuditConfig::default(),
        )
        .unwrap(),
    );
    let timings = Arc::new(palisade_collector::api::timing::ApiTimings::default());
    let incidents_route = palisade_collector::api::ENDPOINTS
        .iter()
        .position(|e| e.pattern == "/v1/incidents")
        .unwrap();
    timings.record(
        incidents_route,
        Duration::from_millis(30),
        Duration::from_millis(4),
    );
    let sources: Vec<Arc<dyn MetricsSource>> = vec![
        ingest,
        Arc::new(StoreMetrics::new(store.clone())),
        write_timings,
        Arc::new(ProcessMetrics::new()),
        fwd.clone(),
        correlator,
        audit,
        timings,
    ];
    let cfg = MetricsConfig::new("127.0.0.1:0".parse().unwrap());
    let server = MetricsServer::start(Some(&cfg), sources).await.unwrap();
    let addr = server.local_addr().unwrap();

    let (head, body) = http_get(addr, "GET", "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut typed = std::collections::HashMap::new();
    let mut samples = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(palisade_collector::metrics::valid_name(name), "{line}");
            assert!(!help.is_empty(), "{line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(matches!(kind, "counter" | "gauge" | "histogram"), "{line}");
            assert!(
                typed.insert(name.to_string(), kind.to_string()).is_none(),
                "second TYPE for {name}"
            );
        } else {
            let (name, labels, value) = parse_sample(line).unwrap();
            // A histogram's samples are its name with `_bucket`, `_sum` or `_count`.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                .unwrap_or(&name);
            assert!(typed.contains_key(family), "{name} sampled before its TYPE");
            if name.ends_with("_bucket") {
                assert!(labels.iter().any(|(k, _)| k == "le"), "{line}");
            }
            if typed[family] == "counter" {
                assert!(name.ends_with("_total") && value >= 0.0, "{line}");
            }
            samples.push((name, labels, value));
        }
    }
    let find = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name && label.is_none_or(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no sample {name} {label:?} in\n{body}"))
    };
    assert_eq!(find("palisade_ingest_events_total", None), 4.0);
    assert_eq!(find("palisade_ingest_store_errors_total", None), 0.0);
    assert_eq!(find("palisade_store_events", None), 4.0);
    // The durations of the write path: the histograms hold what was recorded, the store's
    // three phases one write each, the alert writer nothing yet.
    let bucket = |name: &str, le: &str| find(&format!("{name}_bucket"), Some(("le", le)));
    assert_eq!(bucket("palisade_ingest_commit_seconds", "0.002"), 0.0);
    assert_eq!(bucket("palisade_ingest_commit_seconds", "0.005"), 1.0);
    assert_eq!(bucket("palisade_ingest_queue_wait_seconds", "0.02"), 0.0);
    assert_eq!(bucket("palisade_ingest_queue_wait_seconds", "0.05"), 1.0);
    assert_eq!(bucket("palisade_ingest_queue_wait_seconds", "+Inf"), 1.0);
    assert!((find("palisade_ingest_queue_wait_seconds_sum", None) - 0.04).abs() < 1e-9);
    for phase in ["prepare", "sync", "index"] {
        assert_eq!(
            find("palisade_store_write_seconds_count", Some(("phase", phase))),
            1.0,
            "{phase}"
        );
    }
    for call in ["record", "flush"] {
        assert_eq!(
            find(
                "palisade_correlation_incident_write_seconds_count",
                Some(("call", call))
            ),
            0.0
        );
    }
    assert_eq!(find("palisade_store_days", None), 1.0);
    assert!(find("palisade_store_oldest_day_timestamp_seconds", None) > 1.6e9);
    assert!(
        find(
            "palisade_agent_last_seen_seconds",
            Some(("agent", "probe-1"))
        ) > 1.6e9
    );
    assert_eq!(
        find("palisade_agent_events_total", Some(("agent", "probe-1"))),
        4.0
    );
    find("palisade_agent_dropped_total", Some(("agent", "probe-1")));
    find("palisade_forward_sent_total", Some(("output", "syslog")));
    find("palisade_forward_dropped_total", Some(("output", "syslog")));
    find(
        "palisade_forward_reconnects_total",
        Some(("output", "syslog")),
    );
    find("palisade_forward_errors_total", Some(("output", "syslog")));
    find("palisade_correlation_events_total", None);
    find("palisade_correlation_state_entries", None);
    find(
        "palisade_correlation_alert_latency_seconds",
        Some(("quantile", "0.99")),
    );
    find("palisade_audit_records_total", None);
    assert_eq!(find("palisade_audit_lost_total", None), 0.0);
    assert!(find("process_resident_memory_bytes", None) > 0.0);
    assert!(find("palisade_uptime_seconds", None) >= 0.0);
    let route = Some(("route", "/v1/incidents"));
    assert_eq!(
        find("palisade_api_request_duration_seconds_count", route),
        1.0
    );
    assert!((find("palisade_api_request_duration_seconds_sum", route) - 0.03).abs() < 1e-9);
    assert!((find("palisade_api_request_cpu_seconds_total", route) - 0.004).abs() < 1e-9);
    let buckets: Vec<(String, f64)> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "palisade_api_request_duration_seconds_bucket"
                && l.iter().any(|(k, v)| k == "route" && v == "/v1/incidents")
        })
        .map(|(_, l, v)| (l.iter().find(|(k, _)| k == "le").unwrap().1.clone(), *v))
        .collect();
    assert_eq!(buckets.first(), Some(&("0.001".to_string(), 0.0)));
    assert!(buckets.contains(&("0.05".to_string(), 1.0)), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&("+Inf".to_string(), 1.0)));

    let (head, _) = http_get(addr, "GET", "/").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http_get(addr, "POST", "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    server.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let f = fwd.clone();
    tokio::task::spawn_blocking(move || f.close(Duration::from_millis(100)))
        .await
        .unwrap();
}

#[test]
fn label_values_are_escaped_in_a_scrape() {
    struct Odd;
    impl MetricsSource for Odd {
        fn write(&self, out: &mut palisade_collector::metrics::MetricsWriter) {
            out.gauge("odd", "Odd labels.", &[("agent", "a\"b\\c\nd}")], 1.0);
        }
    }
    let text = palisade_collector::metrics::render(&[Arc::new(Odd) as Arc<dyn MetricsSource>]);
    let line = text.lines().last().unwrap();
    let (_, labels, _) = parse_sample(line).unwrap();
    assert_eq!(labels, [("agent".to_string(), "a\"b\\c\nd}".to_string())]);
}

#[test]
fn the_example_config_parses_with_forwarding_and_metrics_enabled() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/collector.example.toml");
    let text = std::fs::read_to_string(example).unwrap();
    // Uncomment the disabled sections: `#[x]` and `#key = v` lines lose their `#`, `## help`
    // lines become ordinary comments.
    let enabled: String = text
        .lines()
        .map(|l| {
            let uncomment = l.starts_with("##")
                || l.starts_with("#[")
                || l.strip_prefix('#')
                    .is_some_and(|r| r.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')));
            if uncomment {
                &l[1..]
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, enabled).unwrap();
    let c = CollectorConfig::load(&path).unwrap();
    let s = c.forward.syslog.expect("forward.syslog enabled");
    assert_eq!(s.address, "siem.example.net:6514");
    assert_eq!(s.transport, Transport::Tls);
    assert_eq!(s.facility, Facility::Local4);
    assert_eq!(s.min_severity, Severity::Low);
    assert_eq!(s.kinds.len(), 4);
    assert_eq!(s.queue_events, 100_000);
    assert!(s.ca.unwrap().is_absolute());
    let m = c.metrics.expect("metrics enabled");
    assert_eq!(m.listen, "127.0.0.1:9464".parse().unwrap());
}

#[test]
fn relative_forwarding_paths_follow_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "data_dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
         [forward.syslog]\naddress = \"127.0.0.1:6514\"\ntransport = \"tls\"\nca = \"siem-ca.pem\"\n",
    )
    .unwrap();
    let c = CollectorConfig::load(&p).unwrap();
    assert_eq!(
        c.forward.syslog.unwrap().ca.unwrap(),
        dir.path().join("siem-ca.pem")
    );
    std::fs::write(
        &p,
        "data_dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
         [forward.syslog]\naddress = \"127.0.0.1:6514\"\nqueue_event = 5\n",
    )
    .unwrap();
    let err = CollectorConfig::load(&p).unwrap_err().to_string();
    assert!(err.contains("queue_event"), "{err}");
}
