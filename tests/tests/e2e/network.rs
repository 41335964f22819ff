//! The network probe end to end: generated captures replayed through `palisade-agent replay`
//! (every detector, positive and negative), and live capture on loopback with alerts arriving
//! at the collector.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_agent::capture::craft::{self, Endpoint, SYN};
use palisade_agent::capture::writer::PcapWriter;
use palisade_agent::demo::{self, attacks, benign, card_number, id_number, PHONES};
use palisade_tests::{bin, is_root, wait_for, Agent, Collector, Pki};

const T0: i64 = 1_700_000_000 * 1_000_000_000;
const MS: i64 = 1_000_000;
const SEC: i64 = 1_000_000_000;

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn signatures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../signatures/net")
}

fn replay(pcap: &Path, dir: &Path) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let config = dir.join("replay.toml");
    std::fs::write(
        &config,
        format!(
            "collector = \"https://127.0.0.1:1\"\ndata_dir = \"{}\"\n[tls]\nca = \"x\"\ncert = \"x\"\nkey = \"x\"\n[detect.ioc]\ndir = \"{}\"\nwatch = false\n[detect.yara]\ndir = \"{}\"\nwatch = false\n",
            dir.join("data").display(),
            signatures().display(),
            signatures().join("../yara").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin("palisade-agent"))
        .args([
            "replay",
            pcap.to_str().unwrap(),
            "--output-format",
            "ndjson",
            "--kind",
            "alert",
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    (
        out.status.code(),
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rule_ids(events: &[serde_json::Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| e["rule"]["id"].as_str().map(String::from))
        .collect()
}

#[test]
fn replay_finds_every_attack_and_nothing_in_benign_traffic() {
    let tmp = tempfile::tempdir().unwrap();
    let benign_pcap = tmp.path().join("benign.pcap");
    let mut w = PcapWriter::create(&benign_pcap).unwrap();
    benign(&mut w, T0).unwrap();
    w.finish().unwrap();
    let (code, events, stderr) = replay(&benign_pcap, tmp.path());
    assert_eq!(
        code,
        Some(1),
        "benign traffic raised alerts: {:?}\n{stderr}",
        rule_ids(&events)
    );
    assert!(stderr.contains("packets"), "summary on stderr: {stderr}");

    let attack_pcap = tmp.path().join("attack.pcap");
    let mut w = PcapWriter::create(&attack_pcap).unwrap();
    benign(&mut w, T0).unwrap();
    attacks(&mut w, T0 + 200 * SEC).unwrap();
    w.finish().unwrap();
    let (code, events, stderr) = replay(&attack_pcap, tmp.path());
    assert_eq!(code, Some(0), "{stderr}");
    let ids = rule_ids(&events);
    for want in demo::EXPECTED_ALERTS {
        assert!(ids.contains(want), "{want} missing from {ids:?}\n{stderr}");
    }
    assert!(
        ids.iter()
            .any(|i| i.starts_with("palisade.net.dns_tunnel.")),
        "{ids:?}"
    );
    // Alerts carry the 5-tuple, rule, severity and evidence; PII is masked.
    let scan = events
        .iter()
        .find(|e| e["rule"]["id"] == "palisade.net.port_scan.vertical")
        .unwrap();
    assert_eq!(scan["source"]["ip"], "10.1.0.66");
    assert_eq!(scan["destination"]["ip"], "10.1.0.20");
    assert!(scan["event"]["severity"].as_u64().unwrap() >= 3);
    assert!(scan["palisade"]["evidence"].is_object());
    let all = serde_json::to_string(&events).unwrap();
    assert!(
        !all.contains(&id_number("11010519491231002")),
        "a full ID number leaked into an event"
    );
    for phone in PHONES {
        assert!(
            !all.contains(phone),
            "a full phone number leaked into an event"
        );
    }
    assert!(
        !all.contains(&card_number("622202020011223344")),
        "a full card number leaked"
    );
    // Reproducible: the same capture gives the same alerts.
    let (_, again, _) = replay(&attack_pcap, tmp.path());
    assert_eq!(rule_ids(&again), ids);
    assert_eq!(again.len(), events.len());
}

#[test]
fn malformed_and_truncated_packets_are_counted_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("junk.pcap");
    let mut w = PcapWriter::create(&pcap).unwrap();
    let good = craft::tcp(
        Endpoint::new(ip(10, 0, 0, 1), 1),
        Endpoint::new(ip(10, 0, 0, 2), 2),
        SYN,
        1,
        0,
        b"",
    );
    for cut in 0..good.len() {
        w.write(T0 + cut as i64 * MS, &good[..cut]).unwrap();
    }
    w.write(T0 + SEC, &[0xff; 300]).unwrap();
    w.finish().unwrap();
    let out = std::process::Command::new(bin("palisade-agent"))
        .args(["replay", pcap.to_str().unwrap(), "--output-format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0) | Some(1)), "{stderr}");
    assert!(stderr.contains("malformed"), "{stderr}");
    let _: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("valid json array");
}

#[test]
fn live_capture_on_loopback_sends_a_scan_alert_to_the_collector() {
    if !is_root() {
        println!("skipped: live capture needs root or CAP_NET_RAW, and this test runs as uid != 0");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-live");
    let collector = Collector::start(&tmp.path().join("collector"), &pki, 0, "");
    let _agent = Agent::start(
        &tmp.path().join("agent"),
        &pki,
        "probe-live",
        &collector.url,
        &format!(
            "[heartbeat]\ninterval_secs = 1\n[capture]\ninterface = \"lo\"\nbpf_filter = \"host 127.0.0.2\"\nimmediate = true\n[detect.ioc]\ndir = \"{}\"\n[detect.yara]\ndir = \"{}\"\n",
            signatures().display(),
            signatures().join("../yara").display()
        ),
    );
    // Wait until the agent is up (its heartbeat arrives), then scan 127.0.0.2 for real.
    wait_for(Duration::from_secs(30), || {
        (!collector.events(&pki, &["--kind", "heartbeat"]).is_empty()).then_some(())
    })
    .expect("agent heartbeat");
    for port in 20_000..20_300u16 {
        let _ =
            TcpStream::connect_timeout(&(ip(127, 0, 0, 2), port).into(), Duration::from_millis(50));
    }
    let alert = wait_for(Duration::from_secs(30), || {
        collector
            .events(&pki, &["--kind", "alert"])
            .into_iter()
            .find(|e| e["rule"]["id"] == "palisade.net.port_scan.vertical")
    })
    .unwrap_or_else(|| {
        panic!(
            "no scan alert at the collector; agent log:\n{}",
            _agent.log_text()
        )
    });
    assert_eq!(alert["destination"]["ip"], "127.0.0.2");
    assert_eq!(alert["agent"]["id"], "probe-live");
    // A real HTTP exchange carrying an attack, split over two writes: reassembled and matched
    // by the shipped YARA rules.
    let server = std::net::TcpListener::bind((ip(127, 0, 0, 2), 0)).unwrap();
    let port = server.local_addr().unwrap().port();
    let responder = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = server.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    });
    {
        use std::io::{Read, Write};
        let mut c = TcpStream::connect((ip(127, 0, 0, 2), port)).unwrap();
        c.set_nodelay(true).unwrap();
        c.write_all(b"GET /download?file=../../../").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        c.write_all(b"../etc/passwd HTTP/1.1\r\nHost: portal\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        let _ = c.read_to_end(&mut reply);
    }
    responder.join().unwrap();
    let yara = wait_for(Duration::from_secs(60), || {
        collector
            .events(&pki, &["--kind", "alert"])
            .into_iter()
            .find(|e| e["rule"]["id"] == "palisade.net.yara.path_traversal")
    })
    .unwrap_or_else(|| {
        let seen: BTreeSet<String> = collector
            .events(&pki, &["--kind", "alert"])
            .iter()
            .filter_map(|e| e["rule"]["id"].as_str().map(String::from))
            .collect();
        panic!(
            "no YARA alert at the collector (alerts there: {seen:?}); agent log:\n{}",
            _agent.log_text()
        )
    });
    assert_eq!(yara["source"]["ip"], "127.0.0.1");
    assert_eq!(yara["destination"]["port"], port);
    assert_eq!(yara["palisade"]["evidence"]["direction"], "to_server");
    // Heartbeats report the capture's packet counters.
    wait_for(Duration::from_secs(30), || {
        collector
            .events(&pki, &["--kind", "heartbeat"])
            .into_iter()
            .find(|hb| hb["palisade"]["network"]["packets"].as_u64().unwrap_or(0) > 0)
    })
    .expect("a heartbeat with capture counters");
}

/// Public captures shipped by Debian's python3-dpkt (installed by the test scripts).
const DPKT_DATA: &str = "/usr/share/doc/python3-dpkt/examples/data";

fn replay_file(path: &Path) -> (Option<i32>, Vec<serde_json::Value>, String) {
    let out = std::process::Command::new(bin("palisade-agent"))
        .args([
            "replay",
            path.to_str().unwrap(),
            "--output-format",
            "ndjson",
        ])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    (
        out.status.code(),
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn public_dpkt_captures_decode_into_flows() {
    let dir = Path::new(DPKT_DATA);
    if !dir.is_dir() {
        println!(
            "skipped: {DPKT_DATA} is missing (apt-get install python3-dpkt; scripts/test.sh does)"
        );
        return;
    }
    let protocols = |events: &[serde_json::Value]| -> BTreeSet<String> {
        events
            .iter()
            .filter_map(|e| e["network"]["protocol"].as_str().map(String::from))
            .collect()
    };
    let (code, events, stderr) = replay_file(&dir.join("http.pcap"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(protocols(&events).contains("http"), "{stderr}");
    assert!(stderr.contains("(0 malformed)"), "{stderr}");
    let (code, events, stderr) = replay_file(&dir.join("dns_icmp.pcap"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(protocols(&events).contains("dns"), "{stderr}");
    // A packet cut short inside the DNS message is counted as malformed, not fatal.
    let (code, _, stderr) = replay_file(&dir.join("truncated_dns.pcap"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("(1 malformed)"), "{stderr}");
    // A capture file cut short: what was read is still processed, and the cause is reported.
    let (code, events, stderr) = replay_file(&dir.join("truncated_dns_2.pcap"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!events.is_empty(), "{stderr}");
    assert!(
        stderr.contains("ended early") && stderr.contains("truncated"),
        "{stderr}"
    );
}

/// The sample captures that the pcap-parser crate ships in its package (`assets/`), where cargo
/// unpacked it (it is a dev-dependency of this crate, so it is there once the tests build).
fn pcap_parser_assets() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(home.join("registry/src"))
        .ok()?
        .flatten()
        .flat_map(|index| {
            std::fs::read_dir(index.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pcap-parser-"))
                && p.join("assets").is_dir()
        })
        .map(|p| p.join("assets"))
        .collect();
    found.sort();
    found.pop()
}

/// Packets in a capture as pcap-parser counts them, or why it stopped.
fn pcap_parser_count(path: &Path) -> Result<u64, String> {
    use pcap_parser::{create_reader, Block, PcapBlockOwned, PcapError};
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut reader = create_reader(1 << 20, file).map_err(|e| format!("{e:?}"))?;
    let mut packets = 0u64;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::Legacy(_) => packets += 1,
                    PcapBlockOwned::NG(Block::EnhancedPacket(_) | Block::SimplePacket(_)) => {
                        packets += 1
                    }
                    _ => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => return Ok(packets),
            Err(PcapError::Incomplete(_)) => {
                reader.refill().map_err(|e| format!("{e:?}"))?;
            }
            Err(e) => return Err(format!("{e:?} after {packets} packets")),
        }
    }
}

#[test]
fn pcap_parser_sample_captures_replay_without_panics_and_agree_on_packet_counts() {
    let Some(dir) = pcap_parser_assets() else {
        println!("skipped: the pcap-parser crate's assets are not unpacked under $CARGO_HOME/registry/src (cargo fetch)");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no captures in {}", dir.display());
    let mut agreed = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let (code, _, stderr) = replay_file(file);
        assert!(
            !stderr.contains("panicked"),
            "{name}: the agent panicked:\n{stderr}"
        );
        let ours = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("replay: "))
            .find_map(|l| l.split(' ').next().and_then(|n| n.parse::<u64>().ok()));
        match (code, pcap_parser_count(file)) {
            // Both read the file: the same packets.
            (Some(0 | 1), Ok(theirs)) if ours.is_some() && !stderr.contains("ended early") => {
                assert_eq!(ours, Some(theirs), "{name}: packet count\n{stderr}");
                agreed += 1;
                println!("{name}: {theirs} packets, same count");
            }
            // A file libpcap or we refuse (another link type, a block it cannot read): a clear
            // error that names the reason, never a crash.
            (Some(2), parsed) => {
                assert!(
                    stderr.contains("link type")
                        || stderr.contains("capture")
                        || stderr.contains(&name),
                    "{name}: refused without a reason ({parsed:?}):\n{stderr}"
                );
                println!(
                    "{name}: refused ({}) — pcap-parser: {parsed:?}",
                    stderr.trim()
                );
            }
            // A damaged file: what was read is reported, with why it ended.
            (Some(0 | 1), parsed) => {
                assert!(stderr.contains("replay: "), "{name}:\n{stderr}");
                println!(
                    "{name}: partial — pcap-parser: {parsed:?}; ours: {}",
                    stderr.trim()
                );
            }
            (other, parsed) => panic!("{name}: exit {other:?}, pcap-parser {parsed:?}\n{stderr}"),
        }
    }
    assert!(
        agreed >= 3,
        "only {agreed} of {} sample captures were read by both readers",
        files.len()
    );
}
