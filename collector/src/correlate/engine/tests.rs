//! The engine against rsigma's `CorrelationEngine`: every test feeds both and requires the
//! same detections and the same correlation alerts (rule, group, value, event times) in the
//! same order, then checks what the test is about.

use super::*;
use crate::correlate::event::SigmaEvent;
use crate::correlate::rules::RuleSet;
use crate::correlate::testing::build_events;
use crate::correlate::{limits, origin_of, CorrelationSettings};
use palisade_wire::{Event, Timestamp};
use rsigma_eval::{CorrelationConfig, CorrelationEngine};
use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600;

fn rsigma_config(s: &CorrelationSettings) -> CorrelationConfig {
    CorrelationConfig {
        timestamp_fields: vec!["@timestamp".into()],
        max_state_entries: s.max_state_entries.max(1),
        max_group_entries: Some(s.max_group_entries.max(1)),
        suppress: (s.suppress_secs > 0).then_some(s.suppress_secs),
        correlation_event_mode: if s.event_refs == 0 {
            CorrelationEventMode::None
        } else {
            CorrelationEventMode::Refs
        },
        max_correlation_events: s.event_refs.max(1),
        ..CorrelationConfig::default()
    }
}

fn rules(yaml: &str) -> RuleSet {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.yml"), yaml).unwrap();
    RuleSet::load_dir(dir.path()).unwrap()
}

fn shipped() -> RuleSet {
    RuleSet::load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../signatures/sigma"))
        .unwrap()
}

/// An event `secs` after [`T0`] with `fields` (dotted keys).
fn ev(secs: i64, fields: Value) -> (Event, Vec<u8>) {
    let mut v = fields;
    v["@timestamp"] = Value::from(Timestamp((T0 + secs) * 1_000_000_000).to_string());
    build_events(&[v]).unwrap().remove(0)
}

struct Both {
    ours: Correlations,
    theirs: CorrelationEngine,
    seq: u64,
    fired: Vec<String>,
}

impl Both {
    fn new(set: &RuleSet, s: &CorrelationSettings) -> Both {
        Both {
            ours: set.correlator(limits(s)).unwrap(),
            theirs: set.engine(rsigma_config(s)).unwrap(),
            seq: 0,
            fired: Vec::new(),
        }
    }

    /// Feeds one event to both; returns our correlation alerts as lines.
    fn feed(&mut self, (mut e, raw): (Event, Vec<u8>)) -> Vec<String> {
        self.seq += 1;
        e.event.sequence = self.seq;
        let se = SigmaEvent::new(&e, &raw);
        let ts = e.timestamp.nanos().div_euclid(1_000_000_000);
        let out = self.ours.process(&se, origin_of(&e), ts);
        let mut ours: Vec<String> = out
            .detections
            .iter()
            .map(|d| format!("detection {:?}", d.header.rule_id))
            .collect();
        let corr: Vec<String> = out
            .correlations
            .iter()
            .map(|h| {
                let c = self.ours.rule(h.corr);
                let refs = h.events.as_ref().map(|v| {
                    v.iter()
                        .map(|p| p.nanos.div_euclid(1_000_000_000))
                        .collect::<Vec<_>>()
                });
                format!("{:?} {:?} {} {:?}", c.id, h.group, h.value, refs)
            })
            .collect();
        ours.extend(corr.iter().cloned());
        let theirs: Vec<String> = self
            .theirs
            .process_event_at(&se, ts)
            .iter()
            .map(|r| match r.as_correlation() {
                None => format!("detection {:?}", r.header.rule_id),
                Some(c) => {
                    let refs = c
                        .event_refs
                        .as_ref()
                        .map(|v| v.iter().map(|r| r.timestamp).collect::<Vec<_>>());
                    format!(
                        "{:?} {:?} {} {:?}",
                        r.header.rule_id, c.group_key, c.aggregated_value, refs
                    )
                }
            })
            .collect();
        assert_eq!(ours, theirs, "event {} ({ts})", self.seq);
        assert_eq!(
            self.ours.state_count(),
            self.theirs.state_count(),
            "groups after event {}",
            self.seq
        );
        self.fired.extend(corr.iter().cloned());
        corr
    }
}

const FAILED: &str = "title: Failed login\nid: t-fail\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    event.dataset: palisade.auth\n    event.outcome: failure\n  condition: sel\nlevel: low\n";

fn brute(extra: &str) -> String {
    format!("{FAILED}---\ntitle: Brute force\nid: t-brute\ncorrelation:\n  type: event_count\n  rules:\n    - t-fail\n  group-by:\n    - source.ip\n  timespan: 10m\n  condition:\n    gte: 3\n{extra}level: high\n")
}

fn failure(secs: i64, ip: &str) -> (Event, Vec<u8>) {
    ev(
        secs,
        json!({"event.dataset": "palisade.auth", "event.outcome": "failure", "source.ip": ip}),
    )
}

fn quiet() -> CorrelationSettings {
    CorrelationSettings {
        suppress_secs: 0,
        ..Default::default()
    }
}

#[test]
fn event_count_fires_at_its_threshold_within_a_sliding_window() {
    let mut b = Both::new(&rules(&brute("")), &quiet());
    assert!(b.feed(failure(0, "192.0.2.1")).is_empty());
    assert!(b.feed(failure(60, "192.0.2.1")).is_empty());
    assert!(b.feed(failure(61, "192.0.2.2")).is_empty(), "another group");
    // 700 s: the first two fell out of the 10 minute window.
    assert!(b.feed(failure(700, "192.0.2.1")).is_empty());
    assert!(b.feed(failure(710, "192.0.2.1")).is_empty());
    let fired = b.feed(failure(720, "192.0.2.1"));
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(fired[0].contains("\"192.0.2.1\"") && fired[0].contains(" 3 "));
    // Still at or over the threshold: every further hit fires again (no suppression here).
    assert_eq!(b.feed(failure(721, "192.0.2.1")).len(), 1);
}

#[test]
fn suppression_holds_a_group_back_for_its_time() {
    let s = CorrelationSettings {
        suppress_secs: 300,
        ..Default::default()
    };
    let mut b = Both::new(&rules(&brute("")), &s);
    let fired: usize = (0..8)
        .map(|i| b.feed(failure(i * 10, "192.0.2.1")).len())
        .sum();
    assert_eq!(fired, 1);
    assert_eq!(
        b.feed(failure(400, "192.0.2.1")).len(),
        1,
        "suppression over"
    );
}

#[test]
fn value_count_counts_distinct_values() {
    let yaml = "title: Flood\nid: t-flood\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    rule.id: flood\n  condition: sel\nlevel: low\n---\ntitle: DDoS\nid: t-ddos\ncorrelation:\n  type: value_count\n  rules:\n    - t-flood\n  group-by:\n    - destination.ip\n  timespan: 5m\n  condition:\n    field: source.ip\n    gte: 3\ngenerate: true\nlevel: high\n";
    let mut b = Both::new(&rules(yaml), &quiet());
    let flood = |t, src: &str| {
        ev(
            t,
            json!({"event.dataset": "palisade.alert", "rule.id": "flood", "source.ip": src, "destination.ip": "10.0.0.1"}),
        )
    };
    for t in 0..5 {
        assert!(b.feed(flood(t, "192.0.2.1")).is_empty(), "one source");
    }
    assert!(b.feed(flood(6, "192.0.2.2")).is_empty());
    // No source: not a value, still a hit of the rule.
    assert!(b
        .feed(ev(
            7,
            json!({"event.dataset": "palisade.alert", "rule.id": "flood", "destination.ip": "10.0.0.1"})
        ))
        .is_empty());
    let fired = b.feed(flood(8, "192.0.2.3"));
    assert_eq!(fired.len(), 1);
    assert!(fired[0].contains(" 3 "), "{fired:?}");
    // Five minutes on, the early sources are gone.
    assert!(b.feed(flood(309, "192.0.2.4")).is_empty());
}

const AB: &str = "title: A\nid: t-a\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    rule.id: a\n  condition: sel\nlevel: low\n---\ntitle: B\nid: t-b\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    rule.id: b\n  condition: sel\nlevel: low\n";

fn hit(t: i64, rule: &str, src: &str) -> (Event, Vec<u8>) {
    ev(
        t,
        json!({"event.dataset": "palisade.alert", "rule.id": rule, "source.ip": src, "agent.id": "probe-1"}),
    )
}

#[test]
fn temporal_needs_every_rule_in_the_window_in_any_order() {
    let yaml = format!("{AB}---\ntitle: Both\nid: t-both\ncorrelation:\n  type: temporal\n  rules:\n    - t-a\n    - t-b\n  group-by:\n    - source.ip\n  timespan: 10m\n  condition:\n    gte: 2\nlevel: high\n");
    let mut b = Both::new(&rules(&yaml), &quiet());
    assert!(b.feed(hit(0, "b", "192.0.2.1")).is_empty());
    assert!(b.feed(hit(1, "a", "192.0.2.9")).is_empty(), "other group");
    assert_eq!(b.feed(hit(2, "a", "192.0.2.1")).len(), 1, "b then a");
    assert!(b.feed(hit(1000, "a", "192.0.2.1")).is_empty(), "b slid out");
}

#[test]
fn temporal_ordered_needs_the_rules_in_order() {
    let yaml = format!("{AB}---\ntitle: Then\nid: t-then\ncorrelation:\n  type: temporal_ordered\n  rules:\n    - t-a\n    - t-b\n  group-by:\n    - source.ip\n  timespan: 10m\n  condition:\n    gte: 2\nlevel: high\n");
    let mut b = Both::new(&rules(&yaml), &quiet());
    assert!(b.feed(hit(0, "b", "192.0.2.1")).is_empty());
    assert!(b.feed(hit(5, "a", "192.0.2.1")).is_empty(), "b before a");
    assert_eq!(b.feed(hit(9, "b", "192.0.2.1")).len(), 1, "a then b");
    // Out of order in arrival, in order in event time: a at 20, b at 15 does not count.
    assert!(b.feed(hit(700, "b", "192.0.2.2")).is_empty());
    assert!(b.feed(hit(720, "a", "192.0.2.2")).is_empty());
    assert!(b.feed(hit(715, "b", "192.0.2.2")).is_empty());
    assert_eq!(b.feed(hit(721, "b", "192.0.2.2")).len(), 1);
}

#[test]
fn aliases_join_different_fields_of_different_rules() {
    let yaml = format!("{AB}---\ntitle: Join\nid: t-join\ncorrelation:\n  type: temporal_ordered\n  rules:\n    - t-a\n    - t-b\n  aliases:\n    host:\n      t-a: agent.id\n      t-b: observer.name\n  group-by:\n    - host\n  timespan: 1h\n  condition:\n    gte: 2\nlevel: high\n");
    let mut b = Both::new(&rules(&yaml), &quiet());
    let a = ev(
        0,
        json!({"event.dataset": "palisade.alert", "rule.id": "a", "agent.id": "web-1"}),
    );
    let other = ev(
        5,
        json!({"event.dataset": "palisade.alert", "rule.id": "b", "agent.id": "web-1", "observer.name": "probe-7"}),
    );
    let joined = ev(
        9,
        json!({"event.dataset": "palisade.alert", "rule.id": "b", "agent.id": "probe-7", "observer.name": "web-1"}),
    );
    assert!(b.feed(a).is_empty());
    assert!(b.feed(other).is_empty(), "observer.name differs");
    let fired = b.feed(joined);
    assert_eq!(fired.len(), 1);
    assert!(fired[0].contains("(\"host\", \"web-1\")"), "{fired:?}");
}

#[test]
fn max_group_entries_bounds_a_hot_group() {
    let s = CorrelationSettings {
        max_group_entries: 2,
        suppress_secs: 0,
        ..Default::default()
    };
    let mut b = Both::new(&rules(&brute("")), &s);
    for t in 0..50 {
        assert!(b.feed(failure(t, "192.0.2.1")).is_empty(), "never 3 kept");
    }
    let g = b.ours.store.ids().next().unwrap();
    assert_eq!(b.ours.store.get(g).hits.len(), 2);
    assert_eq!(b.ours.store.get(g).refs.len(), 5, "refs have their own cap");
}

#[test]
fn groups_past_the_cap_are_evicted_stalest_first_and_counted() {
    let s = CorrelationSettings {
        max_state_entries: 10,
        suppress_secs: 0,
        ..Default::default()
    };
    let set = rules(&brute(""));
    let mut e = set.correlator(limits(&s)).unwrap();
    for i in 0..25u32 {
        let (ev, raw) = failure(i64::from(i), &format!("192.0.2.{i}"));
        e.process(
            &SigmaEvent::new(&ev, &raw),
            origin_of(&ev),
            T0 + i64::from(i),
        );
    }
    assert_eq!(e.state_count(), 10);
    assert_eq!(e.evicted(), 15);
    let kept: Vec<String> = e.saved_groups().filter_map(|g| g.key[0].clone()).collect();
    assert!(kept.contains(&"192.0.2.24".to_string()), "{kept:?}");
    assert!(!kept.contains(&"192.0.2.0".to_string()), "{kept:?}");
    // Once the windows have passed, the cap drops them all as expired.
    let (ev, raw) = failure(5000, "198.51.100.1");
    e.process(&SigmaEvent::new(&ev, &raw), origin_of(&ev), T0 + 5000);
    assert_eq!(e.state_count(), 1);
    assert_eq!(e.evicted(), 25);
}

/// Fifty groups whose windows keep filling at a constant group count (what 24-hour windows do
/// in a soak): past `max_state_bytes` the stalest groups go until 90% of it, counted.
#[test]
fn groups_past_the_byte_cap_are_evicted_stalest_first_and_counted() {
    let cap = 40_000;
    let s = CorrelationSettings {
        max_state_bytes: cap,
        ..quiet()
    };
    let set = rules(&brute(""));
    let mut e = set.correlator(limits(&s)).unwrap();
    let ip = |g: i64| format!("192.0.2.{g}");
    for g in 0..50 {
        for k in 0..200 {
            let (ev, raw) = failure(g * 10 + k / 20, &ip(g));
            e.process(
                &SigmaEvent::new(&ev, &raw),
                origin_of(&ev),
                T0 + g * 10 + k / 20,
            );
        }
    }
    let before = e.store.accounted_bytes().in_use + e.agent_bytes();
    assert!(
        before > cap as usize,
        "{before} bytes: the cap must be passed"
    );
    assert_eq!(
        (e.state_count(), e.evicted()),
        (50, 0),
        "no eviction between checks"
    );
    let held = e.check_memory();
    let after = e.store.accounted_bytes().in_use + e.agent_bytes();
    assert!(
        after <= cap as usize / 10 * 9,
        "{after} bytes in use after the check"
    );
    assert!(held >= after, "held {held} counts what is in use {after}");
    assert_eq!(e.evicted(), 50 - e.state_count() as u64);
    assert!(
        e.state_count() > 0 && e.state_count() < 50,
        "{}",
        e.state_count()
    );
    let kept: Vec<String> = e.saved_groups().filter_map(|g| g.key[0].clone()).collect();
    assert!(kept.contains(&ip(49)), "{kept:?}");
    assert!(!kept.contains(&ip(0)), "{kept:?}");
    // Under the cap, a check evicts nothing.
    let evicted = e.evicted();
    e.check_memory();
    assert_eq!(e.evicted(), evicted);
}

#[test]
fn chained_correlations_fire_their_parents() {
    let yaml = format!("{}---\ntitle: Success\nid: t-ok\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    event.dataset: palisade.auth\n    event.outcome: success\n  condition: sel\nlevel: low\n---\ntitle: Guessed\nid: t-guessed\ncorrelation:\n  type: temporal_ordered\n  rules:\n    - t-brute\n    - t-ok\n  group-by:\n    - source.ip\n  timespan: 15m\n  condition:\n    gte: 2\nlevel: critical\n", brute(""));
    let mut b = Both::new(&rules(&yaml), &quiet());
    for t in 0..3 {
        b.feed(failure(t, "192.0.2.1"));
    }
    let ok = ev(
        30,
        json!({"event.dataset": "palisade.auth", "event.outcome": "success", "source.ip": "192.0.2.1"}),
    );
    let fired = b.feed(ok);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(fired[0].contains("t-guessed"));
}

#[test]
fn saved_state_restores_to_the_same_windows() {
    let set = shipped();
    let s = CorrelationSettings::default();
    let stream = random_stream(7, 3000);
    let (first, rest) = stream.split_at(1500);
    let mut a = Both::new(&set, &s);
    for e in first {
        a.feed(e.clone());
    }
    let saved: Vec<SavedGroup> = a.ours.saved_groups().collect();
    assert!(saved.len() > 10, "{} groups", saved.len());
    let json = serde_json::to_string(&saved).unwrap();
    let mut b = set.correlator(limits(&s)).unwrap();
    let restored = b.restore(serde_json::from_str::<Vec<SavedGroup>>(&json).unwrap());
    assert_eq!(restored, saved.len());
    let mut again: Vec<SavedGroup> = b.saved_groups().collect();
    let mut before = saved.clone();
    let order = |g: &SavedGroup| (g.rule.clone(), format!("{:?}", g.key));
    again.sort_by_key(order);
    before.sort_by_key(order);
    assert_eq!(again, before);
    // The restored engine goes on exactly as the one that never stopped.
    for (i, e) in rest.iter().enumerate() {
        let (mut ev, raw) = e.clone();
        ev.event.sequence = 1501 + i as u64;
        let se = SigmaEvent::new(&ev, &raw);
        let ts = ev.timestamp.nanos().div_euclid(1_000_000_000);
        let x = a.ours.process(&se, origin_of(&ev), ts);
        let y = b.process(&se, origin_of(&ev), ts);
        let lines = |o: &Output| {
            o.correlations
                .iter()
                .map(|h| format!("{} {:?} {} {:?}", h.corr, h.group, h.value, h.events))
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(&x), lines(&y), "event {i} after the restore");
    }
}

/// A small xorshift generator: the streams are reproducible from their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// Every event of the shipped rules' test cases, without its time (templates), with how
/// often it repeats there.
fn templates() -> Vec<(Value, u64)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../signatures/sigma/tests");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let v: Value = yaml_serde::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for case in v["cases"].as_array().unwrap() {
            for e in case["events"].as_array().unwrap() {
                let mut e = e.clone();
                let m = e.as_object_mut().unwrap();
                m.remove("@timestamp");
                let repeat = m.remove("repeat").and_then(|r| r.as_u64()).unwrap_or(1);
                out.push((e, repeat.min(30)));
            }
        }
    }
    out
}

/// Events in the shapes the shipped rules look for, their addresses, agents and ports drawn
/// from small pools (so groups meet), a few seconds apart, with some arriving late.
fn random_stream(seed: u64, n: usize) -> Vec<(Event, Vec<u8>)> {
    let templates = templates();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let ips = ["203.0.113.7", "203.0.113.8", "10.10.1.20", "198.51.100.9"];
    let ports = [22, 80, 8080];
    let agents = ["probe-1", "probe-2", "web-1"];
    let mut out = Vec::new();
    let mut t = 0i64;
    while out.len() < n {
        let (template, repeat) = rng.pick(&templates).clone();
        let copies = if repeat > 1 { 1 + rng.below(repeat) } else { 1 };
        let mut e = template.clone();
        let m = e.as_object_mut().unwrap();
        for (field, pool) in [("source.ip", &ips), ("destination.ip", &ips)] {
            if m.contains_key(field) && rng.below(4) > 0 {
                m.insert(field.into(), Value::from(*rng.pick(pool)));
            }
        }
        if m.contains_key("destination.port") && rng.below(3) > 0 {
            m.insert("destination.port".into(), Value::from(*rng.pick(&ports)));
        }
        for field in ["agent.id", "observer.name"] {
            if rng.below(3) > 0 {
                m.insert(field.into(), Value::from(*rng.pick(&agents)));
            }
        }
        for _ in 0..copies {
            t += rng.below(if copies > 1 { 5 } else { 90 }) as i64;
            let at = if rng.below(20) == 0 {
                t - rng.below(400) as i64
            } else {
                t
            };
            out.push(ev(at, e.clone()));
        }
    }
    out.truncate(n);
    out
}

#[test]
fn the_engine_matches_rsigma_on_random_streams_over_the_shipped_rules() {
    let set = shipped();
    let settings = [
        CorrelationSettings::default(),
        CorrelationSettings {
            suppress_secs: 0,
            event_refs: 0,
            max_group_entries: 3,
            ..Default::default()
        },
        CorrelationSettings {
            suppress_secs: 60,
            event_refs: 2,
            ..Default::default()
        },
    ];
    let mut kinds = std::collections::BTreeMap::new();
    let mut total = 0;
    for (i, s) in settings.iter().enumerate() {
        for seed in 1..=4 {
            let mut b = Both::new(&set, s);
            for e in random_stream(seed + 10 * i as u64, 4000) {
                b.feed(e);
            }
            total += b.fired.len();
            for f in &b.fired {
                let rule = f.split(' ').next().unwrap_or_default().to_string();
                *kinds.entry(rule).or_insert(0) += 1;
            }
        }
    }
    // The streams must exercise the correlations, or the comparison proves little.
    assert!(total > 500, "{total} correlation alerts: {kinds:?}");
    assert!(kinds.len() >= 8, "correlations that fired: {kinds:?}");
    eprintln!("{total} correlation alerts compared: {kinds:?}");
}

/// A million groups, each hit once through the shape that dominates the benchmark (a
/// temporal_ordered join on two addresses, one event reference kept), then a tenth of them
/// hit five more times: what the store accounts for must stay under its budget per group.
#[test]
fn a_million_groups_fit_the_memory_budget() {
    let yaml = format!("{AB}---\ntitle: Then\nid: t-then\ncorrelation:\n  type: temporal_ordered\n  rules:\n    - t-a\n    - t-b\n  group-by:\n    - source.ip\n    - destination.ip\n  timespan: 30m\n  condition:\n    gte: 2\nlevel: high\n");
    let set = rules(&yaml);
    let s = CorrelationSettings {
        max_state_entries: 4_000_000,
        ..Default::default()
    };
    let mut e = set.correlator(limits(&s)).unwrap();
    let (mut event, raw) = hit(0, "a", "192.0.2.1");
    let groups: u32 = 1_000_000;
    let addr = |i: u32| -> std::net::IpAddr { std::net::Ipv4Addr::from(0x0a00_0000 + i).into() };
    let mut feed = |e: &mut Correlations, i: u32, t: i64| {
        event.source.as_mut().unwrap().ip = Some(addr(i));
        event.destination = Some(palisade_wire::event::Endpoint {
            ip: Some(addr(i / 7)),
            ..Default::default()
        });
        event.timestamp = Timestamp((T0 + t) * 1_000_000_000);
        let out = e.process(&SigmaEvent::new(&event, &raw), origin_of(&event), T0 + t);
        assert!(out.correlations.is_empty());
    };
    for i in 0..groups {
        feed(&mut e, i, i64::from(i / 1000));
    }
    assert_eq!(e.state_count(), groups as usize);
    let one_hit = e.accounted_bytes() as f64 / f64::from(groups);
    assert!(one_hit <= 110.0, "{one_hit:.1} bytes per group");
    for i in (0..groups).step_by(10) {
        for k in 0..5 {
            feed(&mut e, i, 1000 + k);
        }
    }
    let mixed = e.accounted_bytes() as f64 / f64::from(groups);
    assert!(mixed <= 130.0, "{mixed:.1} bytes per group");
    eprintln!(
        "bytes per group: {one_hit:.1} with one hit each, {mixed:.1} with a tenth hit six times"
    );
}
