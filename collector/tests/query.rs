//! Analyst queries against a real collector on loopback with real mutual TLS: filter
//! expressions on `GET /v1/events`, the live tail (`GET /v1/tail`: cursors, long-poll, overrun)
//! and `export` paging through many events with identical timestamps.

// Test helpers outside #[test] fns may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hyper::{Method, StatusCode};
use palisade_collector::cli::{Cli, Outcome};
use palisade_collector::config::CollectorConfig;
use palisade_collector::pki::Pki;
use palisade_collector::query::EventKey;
use palisade_collector::tail::TailHeader;
use palisade_wire::client::{Client, Response};
use palisade_wire::event::Endpoint;
use palisade_wire::tls::{self, Role, TlsFiles};
use palisade_wire::{Event, EventKind, Severity, Timestamp};

const WAIT: Duration = Duration::from_secs(30);

/// A collector serving in its own thread and runtime; stopped and joined on drop.
struct Collector {
    addr: SocketAddr,
    pki: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start(ring_events: usize) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki = Pki::new(&pki_dir);
    pki.init(&[], 1).unwrap();
    pki.issue(Role::Analyst, "analyst", &[], 1).unwrap();
    for agent in ["probe-1", "probe-2", "probe-3"] {
        pki.issue(Role::Agent, agent, &[], 1).unwrap();
    }
    let addr = free_port();
    let p = |f: &str| pki_dir.join(f).display().to_string();
    let toml = format!(
        "listen = \"{addr}\"\ndata_dir = \"{}\"\n\
         [tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ncrl = \"{}\"\n\
         [correlation]\nenabled = false\n\
         [tail]\nring_events = {ring_events}\n",
        dir.path().join("data").display(),
        p("ca.crt"),
        p("palisade-collector.crt"),
        p("palisade-collector.key"),
        p("crl.pem"),
    );
    let config_path = dir.path().join("collector.toml");
    std::fs::write(&config_path, toml).unwrap();
    let config = CollectorConfig::load(&config_path).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            palisade_collector::server::serve(config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    let until = Instant::now() + WAIT;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < until, "collector did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    Collector {
        addr,
        pki: pki_dir,
        stop: Some(stop),
        thread: Some(thread),
        _dir: dir,
    }
}

impl Collector {
    fn client(&self, name: &str) -> Client {
        let files = TlsFiles {
            ca: self.pki.join("ca.crt"),
            cert: self.pki.join(format!("{name}.crt")),
            key: self.pki.join(format!("{name}.key")),
        };
        Client::new(
            &format!("https://{}", self.addr),
            tls::client_config(&files).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// An event as an agent would send it; severity, source address and port derive from `seq`.
fn event(agent: &str, seq: u64, ts: Timestamp) -> Event {
    let mut e = Event::new(agent, EventKind::Flow, Severity::ALL[(seq % 5) as usize])
        .with_message(format!("flow {seq} from {agent}"));
    e.timestamp = ts;
    let ip = if seq % 3 == 0 {
        format!("10.{}.0.1", seq % 250)
    } else {
        format!("192.168.{}.1", seq % 250)
    };
    e.source = Some(Endpoint {
        ip: Some(ip.parse().unwrap()),
        port: Some(1000 + seq as u16),
        ..Default::default()
    });
    e.seal(seq);
    e
}

async fn ingest(c: &Collector, agent: &str, events: &[Event]) {
    let lines: Vec<Vec<u8>> = events.iter().map(Event::to_json).collect();
    let pairs: Vec<(u64, &[u8])> = events
        .iter()
        .zip(&lines)
        .map(|(e, l)| (e.event.sequence, l.as_slice()))
        .collect();
    let frame = palisade_wire::batch::encode(agent, &pairs, 1).unwrap();
    let resp = c
        .client(agent)
        .request(
            Method::POST,
            "/v1/ingest",
            "application/x-palisade-batch",
            Bytes::from(frame),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
}

async fn get(client: &mut Client, path: &str) -> Response {
    client
        .request(Method::GET, path, "application/json", Bytes::new())
        .await
        .unwrap()
}

fn lines(body: &[u8]) -> Vec<serde_json::Value> {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn seq(v: &serde_json::Value) -> u64 {
    v["event"]["sequence"].as_u64().unwrap()
}

fn enc(s: &str) -> String {
    palisade_collector::query::url_encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_queries_return_exactly_the_matches_up_to_the_limit() {
    let c = start(1000);
    let t0 = Timestamp::now().nanos() - 60_000_000_000;
    let events: Vec<Event> = (1..=300)
        .map(|s| event("probe-1", s, Timestamp(t0 + s as i64 * 1_000_000)))
        .collect();
    ingest(&c, "probe-1", &events).await;
    let mut analyst = c.client("analyst");
    let since = enc(&Timestamp(t0).to_string());

    // source.ip in 10/8 ⇔ seq % 3 == 0; severity (1 info … 5 critical) >= 4 ⇔ seq % 5 >= 3.
    let filter = "source.ip in 10.0.0.0/8 and event.severity >= 4";
    let want: Vec<u64> = (1..=300).filter(|s| s % 3 == 0 && s % 5 >= 3).collect();
    let path = format!(
        "/v1/events?since={since}&order=asc&limit=1000&filter={}",
        enc(filter)
    );
    let resp = get(&mut analyst, &path).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let got: Vec<u64> = lines(&resp.body).iter().map(seq).collect();
    assert_eq!(got, want);

    // The limit counts matches, not events scanned: the 7 oldest and the 7 newest matches.
    let path = format!(
        "/v1/events?since={since}&order=asc&limit=7&filter={}",
        enc(filter)
    );
    let got: Vec<u64> = lines(&get(&mut analyst, &path).await.body)
        .iter()
        .map(seq)
        .collect();
    assert_eq!(got, want[..7]);
    let path = format!(
        "/v1/events?since={since}&order=desc&limit=7&filter={}",
        enc(filter)
    );
    let got: Vec<u64> = lines(&get(&mut analyst, &path).await.body)
        .iter()
        .map(seq)
        .collect();
    let newest: Vec<u64> = want.iter().rev().take(7).copied().collect();
    assert_eq!(got, newest);

    // Sets, wildcards, not, contains; combined with the store's own parameters.
    let filter = "not event.sequence in [1, 2, 3] and message ~ \"FLOW 1\" and agent.id = probe-*";
    let want: Vec<u64> = (4..=300)
        .filter(|s| format!("flow {s} ").starts_with("flow 1"))
        .filter(|s| s % 5 == 4)
        .collect();
    let path = format!(
        "/v1/events?since={since}&order=asc&limit=1000&severity=critical&filter={}",
        enc(filter)
    );
    let got: Vec<u64> = lines(&get(&mut analyst, &path).await.body)
        .iter()
        .map(seq)
        .collect();
    assert_eq!(got, want);

    // A bad filter: 400 with the parser's message.
    let path = format!(
        "/v1/events?since={since}&filter={}",
        enc("source.ip in 10.0.0.0/8 and")
    );
    let resp = get(&mut analyst, &path).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(
        resp.text()
            .contains("filter: expected a field name at column 28"),
        "{}",
        resp.text()
    );
}

/// `GET /v1/tail?{query}`: the header and the events' sequences.
async fn tail(client: &mut Client, query: &str) -> (TailHeader, Vec<u64>) {
    let resp = get(client, &format!("/v1/tail?{query}")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let mut it = resp.body.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header: TailHeader = serde_json::from_slice(it.next().unwrap()).unwrap();
    let events: Vec<u64> = it
        .map(|l| seq(&serde_json::from_slice(l).unwrap()))
        .collect();
    assert_eq!(header.count, events.len());
    (header, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_returns_commits_after_the_cursor_long_polls_and_reports_overruns() {
    let c = start(100);
    let mut analyst = c.client("analyst");
    let now = Timestamp::now().nanos();
    let ts = |s: u64| Timestamp(now + s as i64);

    // Events committed before the follower started are not replayed: no cursor = from now.
    // (Sinks run just after the senders are answered, hence the waits below.)
    ingest(&c, "probe-1", &[event("probe-1", 1, ts(1))]).await;
    let (first, events) = tail(&mut analyst, "cursor=0&wait_ms=10000").await;
    assert_eq!(events, vec![1]);
    let (h, events) = tail(&mut analyst, "wait_ms=0").await;
    assert!(events.is_empty());
    assert_eq!(h.next_cursor, first.next_cursor);
    let start_cursor = h.next_cursor;
    let epoch = h.epoch;

    let batch: Vec<Event> = (2..=6).map(|s| event("probe-1", s, ts(s))).collect();
    ingest(&c, "probe-1", &batch).await;
    // Re-sent (duplicate) events are not shown twice.
    ingest(&c, "probe-1", &batch).await;
    let (h, events) = tail(
        &mut analyst,
        &format!("cursor={start_cursor}&epoch={epoch}&wait_ms=10000"),
    )
    .await;
    assert_eq!(events, vec![2, 3, 4, 5, 6]);
    assert_eq!((h.missed, h.reset), (0, false));
    let cursor = h.next_cursor;

    // With a filter, the cursor still moves past what does not match.
    let query = format!(
        "cursor={start_cursor}&filter={}&wait_ms=0",
        enc("event.sequence >= 5")
    );
    let (h, events) = tail(&mut analyst, &query).await;
    assert_eq!((events, h.next_cursor), (vec![5, 6], cursor));

    // Long-poll: a waiting request is answered when a new group commits.
    let mut waiter = c.client("analyst");
    let query = format!("cursor={cursor}&epoch={epoch}&wait_ms=25000");
    let waiting = tokio::spawn(async move { tail(&mut waiter, &query).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    ingest(&c, "probe-2", &[event("probe-2", 1, ts(7))]).await;
    let (h, events) = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(events, vec![1]);
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "answered by the commit, not the timeout"
    );
    let cursor = h.next_cursor;

    // A long-poll with nothing new ends empty at its deadline, cursor unchanged.
    let (h, events) = tail(&mut analyst, &format!("cursor={cursor}&wait_ms=200")).await;
    assert!(events.is_empty());
    assert_eq!(h.next_cursor, cursor);

    // Overrun: 150 events into a ring of 100; the follower is told 50 were missed.
    let many: Vec<Event> = (10..160).map(|s| event("probe-3", s, ts(s))).collect();
    ingest(&c, "probe-3", &many).await;
    let (h, events) = tail(
        &mut analyst,
        &format!("cursor={cursor}&epoch={epoch}&wait_ms=10000"),
    )
    .await;
    assert_eq!(h.missed, 50);
    assert_eq!(events, (60..160).collect::<Vec<_>>());

    // A cursor from another collector run is flagged, not trusted.
    let (h, _) = tail(
        &mut analyst,
        &format!("cursor=3&epoch={}&wait_ms=0", epoch ^ 1),
    )
    .await;
    assert!(h.reset);

    // Roles: an agent may not read the tail; bad parameters are a 400.
    let resp = get(&mut c.client("probe-1"), "/v1/tail").await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    let resp = get(&mut analyst, &format!("/v1/tail?filter={}", enc("a ="))).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(resp.text().contains("column"), "{}", resp.text());
}

/// Runs a CLI command line in its own thread (the CLI builds its own runtime).
fn cli(args: Vec<String>) -> Outcome {
    std::thread::spawn(move || {
        let cli = Cli::try_parse_from(args).unwrap();
        palisade_collector::cli::run(cli).unwrap()
    })
    .join()
    .unwrap()
}

fn client_flags(c: &Collector) -> Vec<String> {
    vec![
        "--collector".into(),
        c.url(),
        "--pki-dir".into(),
        c.pki.display().to_string(),
        "--as".into(),
        "analyst".into(),
    ]
}

fn read_keys(path: &Path) -> Vec<EventKey> {
    std::fs::read(path)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| EventKey::of_json(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_pages_yield_every_event_once_in_order_across_equal_timestamps() {
    let c = start(1000);
    // 3 agents × 400 events over only 10 distinct instants: pages of 37 split runs of equal
    // timestamps (and of equal timestamp and agent) at every boundary.
    let t0 = Timestamp::now().nanos() - 3_600_000_000_000;
    let mut expected = Vec::new();
    for agent in ["probe-2", "probe-1", "probe-3"] {
        let events: Vec<Event> = (1..=400)
            .map(|s| event(agent, s, Timestamp(t0 + (s % 10) as i64 * 1_000_000_000)))
            .collect();
        for chunk in events.chunks(150) {
            ingest(&c, agent, chunk).await;
        }
        expected.extend(events.iter().map(|e| EventKey {
            timestamp: e.timestamp,
            agent: agent.to_string(),
            sequence: e.event.sequence,
        }));
    }
    expected.sort();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.ndjson");
    let mut args: Vec<String> = [
        "palisade-collector",
        "export",
        "--since",
        "2h",
        "--page-size",
        "37",
    ]
    .map(String::from)
    .to_vec();
    args.extend(client_flags(&c));
    args.extend(["--output".into(), out.display().to_string()]);
    assert_eq!(cli(args.clone()), Outcome::Found);
    let got = read_keys(&out);
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        got, expected,
        "every event once, in (time, agent, sequence) order"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");

    // With a filter, and a page size that divides the result exactly.
    let mut filtered = args.clone();
    filtered.extend([
        "--filter".into(),
        "agent.id = probe-1 and event.sequence <= 100".into(),
    ]);
    let idx = filtered.iter().position(|a| a == "37").unwrap();
    filtered[idx] = "25".into();
    assert_eq!(cli(filtered), Outcome::Found);
    let want: Vec<EventKey> = expected
        .iter()
        .filter(|k| k.agent == "probe-1" && k.sequence <= 100)
        .cloned()
        .collect();
    assert_eq!(read_keys(&out), want);

    // Nothing matches: exit 1, an empty file.
    let mut none = args.clone();
    none.extend(["--filter".into(), "agent.id = nobody".into()]);
    assert_eq!(cli(none), Outcome::NothingFound);
    assert!(read_keys(&out).is_empty());

    // The API pages the same way by itself: `after=` the last key, and x-palisade-next.
    let mut analyst = c.client("analyst");
    let since = enc(&Timestamp(t0 - 1).to_string());
    let mut after: Option<String> = None;
    let mut paged = Vec::new();
    for _ in 0..100 {
        let mut path = format!("/v1/events?since={since}&order=asc&limit=500");
        if let Some(a) = &after {
            path.push_str(&format!("&after={}", enc(a)));
        }
        let resp = get(&mut analyst, &path).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        let keys: Vec<EventKey> = resp
            .body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| EventKey::of_json(l).unwrap())
            .collect();
        let n = keys.len();
        after = keys.last().map(|k| k.to_string());
        paged.extend(keys);
        if n < 500 {
            break;
        }
    }
    assert_eq!(paged, expected);
}

#[test]
fn follow_prints_new_events_and_stops_after_max_events() {
    let c = start(1000);
    let mut args: Vec<String> = [
        "palisade-collector",
        "follow",
        "--max-events",
        "3",
        "--for-secs",
        "25",
        "--output-format",
        "ndjson",
        "--filter",
        "event.sequence >= 2",
    ]
    .map(String::from)
    .to_vec();
    args.extend(client_flags(&c));
    let follower = std::thread::spawn(move || {
        palisade_collector::cli::run(Cli::try_parse_from(args).unwrap()).unwrap()
    });
    // Events keep arriving until the follower has what it wants (it starts "from now").
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let until = Instant::now() + WAIT;
    let mut s = 0;
    while !follower.is_finished() {
        assert!(
            Instant::now() < until,
            "follow did not stop after --max-events"
        );
        s += 1;
        let e = event("probe-1", s, Timestamp::now());
        rt.block_on(ingest(&c, "probe-1", &[e]));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(follower.join().unwrap(), Outcome::Found);

    // A bounded follow that sees nothing ends with "nothing found".
    let mut args: Vec<String> = [
        "palisade-collector",
        "follow",
        "--for-secs",
        "1",
        "--kind",
        "alert",
    ]
    .map(String::from)
    .to_vec();
    args.extend(client_flags(&c));
    assert_eq!(cli(args), Outcome::NothingFound);
}
