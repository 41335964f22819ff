//! `GET /v1/situation`: the one-screen picture a duty analyst keeps open (态势感知) — agents,
//! rates, open incidents, top attacked hosts, sources and detectors, integrity per host, backup
//! freshness, and the trend against the previous period.
//!
//! Rates come from [`RateHistory`], sampled every 10 s by the server (so the sparklines cover
//! what this collector process has seen). Agents' alert events per period come from
//! [`super::alert_tally::AlertTally`] (counted at commit), collector alerts from the incident
//! store's per-minute tallies; integrity, replication and drill lines from the store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hyper::StatusCode;
use palisade_wire::event::parse_time_spec;
use palisade_wire::{EventKind, Severity, Timestamp};
use serde::{Deserialize, Serialize};

use super::incidents::params;
use super::{blocking, error, json_resp, AppState, Resp};
use crate::store::Query;

/// Seconds between rate samples.
pub const SAMPLE_SECS: u64 = 10;
/// Samples kept (one hour).
pub const SAMPLES: usize = 360;
/// An agent is online if it sent something within this many seconds.
pub const ONLINE_SECS: i64 = 120;

#[derive(Debug, Clone, Default)]
struct Sample {
    at: Timestamp,
    events: HashMap<String, u64>,
    alerts: HashMap<String, u64>,
    total_events: u64,
    total_alerts: u64,
}

/// Counters sampled every [`SAMPLE_SECS`], for rates and sparklines.
#[derive(Debug, Default)]
pub struct RateHistory {
    samples: Mutex<VecDeque<Sample>>,
}

impl RateHistory {
    /// Records one sample: cumulative events per agent and alerts per agent.
    pub fn sample(
        &self,
        at: Timestamp,
        events: HashMap<String, u64>,
        alerts: HashMap<String, u64>,
    ) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let total_events = events.values().sum();
        let total_alerts = alerts.values().sum();
        s.push_back(Sample {
            at,
            events,
            alerts,
            total_events,
            total_alerts,
        });
        while s.len() > SAMPLES {
            s.pop_front();
        }
    }

    /// (events/s over the latest interval, per-segment series of events/s and alerts/min).
    fn rates(&self) -> (f64, BTreeMap<String, SegmentSeries>) {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut series: BTreeMap<String, SegmentSeries> = BTreeMap::new();
        let mut now_rate = 0.0;
        for (a, b) in s.iter().zip(s.iter().skip(1)) {
            let secs = ((b.at.nanos() - a.at.nanos()) as f64 / 1e9).max(0.001);
            now_rate = b.total_events.saturating_sub(a.total_events) as f64 / secs;
            let _ = b.total_alerts;
            for (agent, n) in &b.events {
                let before = a.events.get(agent).copied().unwrap_or(*n);
                let e = series.entry(agent.clone()).or_default();
                e.events_per_sec
                    .push(n.saturating_sub(before) as f64 / secs);
                let al = b.alerts.get(agent).copied().unwrap_or(0);
                let al_before = a.alerts.get(agent).copied().unwrap_or(al);
                e.alerts_per_min
                    .push(al.saturating_sub(al_before) as f64 * 60.0 / secs);
            }
        }
        (now_rate, series)
    }
}

/// One segment's (agent's) rate history, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SegmentSeries {
    /// Events per second, one point per sample interval.
    pub events_per_sec: Vec<f64>,
    /// Alerts per minute, one point per sample interval.
    pub alerts_per_min: Vec<f64>,
}

/// One agent's line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentLine {
    /// Agent id.
    pub id: String,
    /// Host.
    pub host: Option<String>,
    /// Sent something within [`ONLINE_SECS`].
    pub online: bool,
    /// Last batch received.
    pub last_seen: Timestamp,
    /// Events stored.
    pub events: u64,
    /// Events it reported lost from its spool.
    pub spool_dropped: u64,
    /// Packets its capture dropped (latest heartbeat), when it captures.
    pub capture_dropped: Option<u64>,
}

/// A ranked value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Top {
    /// The value (ip, host, detector).
    pub name: String,
    /// How many times.
    pub count: u64,
}

/// Integrity picture of one host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IntegrityLine {
    /// Host.
    pub host: String,
    /// Integrity findings in the period.
    pub changes: u64,
    /// Of which restored by anti-tamper.
    pub restored: u64,
    /// Malware findings.
    pub malware: u64,
    /// Latest finding.
    pub last: Option<Timestamp>,
}

/// Latest replication / backup report of one replicator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicationLine {
    /// Who reported.
    pub source: String,
    /// When.
    pub last: Timestamp,
    /// Seconds since.
    pub age_secs: i64,
    /// Its message.
    pub message: Option<String>,
    /// Severity of the report (high and up = trouble).
    pub severity: Severity,
}

/// The whole picture.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Situation {
    /// When computed.
    pub generated: Timestamp,
    /// Period length.
    pub period_secs: i64,
    /// Agents.
    pub agents: Vec<AgentLine>,
    /// Events per second now (latest sample interval).
    pub events_per_sec: f64,
    /// Alert events (agents' detectors) in the period.
    pub alert_events: u64,
    /// The same in the period before.
    pub alert_events_previous: u64,
    /// Collector (Sigma) alerts in the period.
    pub alerts: u64,
    /// The same in the period before.
    pub alerts_previous: u64,
    /// Open incidents by severity name.
    pub open_incidents: BTreeMap<String, u64>,
    /// Open incidents not yet acknowledged.
    pub new_incidents: u64,
    /// Most alerted destination addresses.
    pub top_attacked: Vec<Top>,
    /// Most alerted source addresses.
    pub top_sources: Vec<Top>,
    /// Detectors and rules that fired most.
    pub top_detectors: Vec<Top>,
    /// Integrity per host.
    pub integrity: Vec<IntegrityLine>,
    /// Replication / backup freshness.
    pub replication: Vec<ReplicationLine>,
    /// The latest run of each DR drill (`source` = the drill's name) in the last 30 days.
    #[serde(default)]
    pub drills: Vec<ReplicationLine>,
    /// Per-segment rate series.
    pub segments: BTreeMap<String, SegmentSeries>,
}

/// The newest event of `kind` since `since` per value of the field at `key` (who reported, or
/// which drill), with its message, severity and age.
fn latest_per(
    state: &AppState,
    kind: EventKind,
    since: Timestamp,
    now: Timestamp,
    key: &[&str],
) -> Result<Vec<ReplicationLine>, crate::store::StoreError> {
    let mut latest: BTreeMap<String, ReplicationLine> = BTreeMap::new();
    for_each(state, kind, since, Timestamp(i64::MAX), &mut |v| {
        let source = str_at(v, key).unwrap_or("?").to_string();
        let Some(t) = v
            .get("@timestamp")
            .and_then(|t| t.as_str())
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            return;
        };
        let severity = v
            .pointer("/event/severity")
            .and_then(|s| s.as_u64())
            .and_then(Severity::from_number)
            .unwrap_or(Severity::Info);
        let e = latest.entry(source.clone()).or_insert(ReplicationLine {
            source,
            last: t,
            age_secs: 0,
            message: None,
            severity,
        });
        if t >= e.last {
            e.last = t;
            e.message = str_at(v, &["message"]).map(String::from);
            e.severity = severity;
        }
    })?;
    Ok(latest
        .into_values()
        .map(|mut r| {
            r.age_secs = (now.nanos() - r.last.nanos()) / 1_000_000_000;
            r
        })
        .collect())
}

/// Entries each top list shows.
const TOP_SHOWN: usize = 10;

/// The [`TOP_SHOWN`] largest, ties by name (addresses in address order: 10.0.0.9 before
/// 10.0.0.10).
fn top<K: Ord + ToString>(map: HashMap<K, u64>) -> Vec<Top> {
    super::alert_tally::largest(map, Some(TOP_SHOWN))
        .into_iter()
        .map(|(name, count)| Top {
            name: name.to_string(),
            count,
        })
        .collect()
}

fn for_each(
    state: &AppState,
    kind: EventKind,
    since: Timestamp,
    until: Timestamp,
    f: &mut dyn FnMut(&serde_json::Value),
) -> Result<usize, crate::store::StoreError> {
    for_each_raw(state, kind, since, until, &mut |raw| {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw) {
            f(&v);
        }
    })
}

/// Like [`for_each`] but hands over the stored JSON unparsed (for counting, or a typed parse
/// of the few fields wanted: an alert storm brings hundreds of thousands).
fn for_each_raw(
    state: &AppState,
    kind: EventKind,
    since: Timestamp,
    until: Timestamp,
    f: &mut dyn FnMut(&[u8]),
) -> Result<usize, crate::store::StoreError> {
    let q = Query {
        since,
        until,
        agent: None,
        kind: Some(kind),
        min_severity: None,
        limit: usize::MAX,
        newest_first: true,
        after: None,
        filter: None,
    };
    state.store.scan(&q, &mut |raw| {
        f(raw);
        true
    })
}

/// The fields of an alert event the tallies read.
#[derive(Deserialize)]
struct AlertFields<'a> {
    #[serde(borrow, default)]
    source: Option<IpField<'a>>,
    #[serde(borrow, default)]
    destination: Option<IpField<'a>>,
    #[serde(borrow, default)]
    rule: Option<RuleFields<'a>>,
}

#[derive(Deserialize)]
struct IpField<'a> {
    #[serde(borrow, default)]
    ip: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RuleFields<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
}

fn str_at<'v>(v: &'v serde_json::Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// Computes the picture for the period ending now.
pub fn compute(state: &AppState, period_secs: i64) -> Result<Situation, crate::store::StoreError> {
    let now = Timestamp::now();
    let period = period_secs.saturating_mul(1_000_000_000);
    let since = Timestamp(now.nanos() - period);
    let before = Timestamp(since.nanos() - period);
    // Where the time goes, for the debug log: a `situation` that gets slower under load is
    // told apart part by part (agents' heartbeats, alert tallies, the store's scans).
    const HEARTBEATS: usize = 0;
    const ALERT_TALLY: usize = 1;
    const STORE_SCANS: usize = 2;
    const INCIDENT_TALLIES: usize = 3;
    let started = std::time::Instant::now();
    let mut parts = [std::time::Duration::ZERO; 4];
    let mut lap = |part: usize, since: &mut std::time::Instant| {
        parts[part] += since.elapsed();
        *since = std::time::Instant::now();
    };
    let mut mark = started;

    let mut agents = Vec::new();
    for a in state.store.agents()? {
        // Capture drops: the latest heartbeat's counters, when the agent captures.
        let mut capture_dropped = None;
        let q = Query {
            since: Timestamp(now.nanos() - 3_600_000_000_000),
            until: Timestamp(i64::MAX),
            agent: Some(a.id.clone()),
            kind: Some(EventKind::Heartbeat),
            min_severity: None,
            limit: 1,
            newest_first: true,
            after: None,
            filter: None,
        };
        state.store.query(&q, &mut |raw| {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw) {
                capture_dropped = v
                    .pointer("/palisade/capture/dropped")
                    .or_else(|| v.pointer("/palisade/capture/kernel_dropped"))
                    .and_then(serde_json::Value::as_u64);
            }
            false
        })?;
        agents.push(AgentLine {
            online: (now.nanos() - a.last_seen.nanos()) / 1_000_000_000 <= ONLINE_SECS,
            id: a.id,
            host: a.host,
            last_seen: a.last_seen,
            events: a.events,
            spool_dropped: a.dropped,
            capture_dropped,
        });
    }
    lap(HEARTBEATS, &mut mark);

    // Agents' alert events: counted as they were committed ([`AlertTally`]); only a part of
    // the period the tally does not reach (before this process started counting, or beyond a
    // day) is scanned from the store.
    // The part before the tally's reach is scanned first: only when it holds no alert event
    // (the usual case: a collector younger than the period, on a store without alerts from
    // before) are the tally's ten largest sources and targets enough, and only they are asked
    // for; otherwise every value is summed with what the scan found.
    let covered_from = state.alert_tally.covered_from(since, now);
    let mut attacked: HashMap<IpAddr, u64> = HashMap::new();
    let mut sources: HashMap<IpAddr, u64> = HashMap::new();
    let mut detectors: HashMap<String, u64> = HashMap::new();
    let mut alert_events = 0;
    if since < covered_from {
        alert_events += for_each_raw(state, EventKind::Alert, since, covered_from, &mut |raw| {
            let Ok(a) = serde_json::from_slice::<AlertFields<'_>>(raw) else {
                return;
            };
            // Stored events were written from typed addresses, so these parse.
            let ip = |f: Option<IpField<'_>>| f.and_then(|f| f.ip).and_then(|s| s.parse().ok());
            if let Some(ip) = ip(a.destination) {
                *attacked.entry(ip).or_insert(0) += 1;
            }
            if let Some(ip) = ip(a.source) {
                *sources.entry(ip).or_insert(0) += 1;
            }
            let name = a.rule.and_then(|r| r.name.or(r.id));
            super::alert_tally::bump(&mut detectors, name.as_deref().unwrap_or("unnamed"), false);
        })? as u64;
    }
    lap(STORE_SCANS, &mut mark);
    let keep = (alert_events == 0).then_some(TOP_SHOWN);
    let counted = state.alert_tally.since(since, now, keep);
    alert_events += counted.total;
    for (mine, theirs) in [
        (&mut attacked, counted.attacked),
        (&mut sources, counted.sources),
    ] {
        for (k, n) in theirs {
            *mine.entry(k).or_insert(0) += n;
        }
    }
    for (k, n) in counted.detectors {
        *detectors.entry(k).or_insert(0) += n;
    }
    let (mut alert_events_previous, covered_from) =
        state.alert_tally.count_between(before, since, now);
    lap(ALERT_TALLY, &mut mark);
    if before < covered_from {
        alert_events_previous +=
            for_each_raw(state, EventKind::Alert, before, covered_from, &mut |_| {})? as u64;
    }
    lap(STORE_SCANS, &mut mark);

    // Collector alerts and open incidents from the incident store's in-memory tallies (an
    // alert storm leaves hundreds of thousands; reading them all made `situation` take seconds).
    // The current minute counts in the current period.
    let now_alerts = state
        .incidents
        .alert_counts(since, Timestamp(now.nanos().saturating_add(60_000_000_000)));
    let alerts: u64 = now_alerts.values().sum();
    let alerts_previous: u64 = state.incidents.alert_counts(before, since).values().sum();
    for (title, n) in now_alerts {
        *detectors.entry(format!("sigma: {title}")).or_insert(0) += n;
    }

    let (open_by, new_incidents) = state.incidents.open_counts();
    let mut open_incidents = BTreeMap::new();
    for s in [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ] {
        open_incidents.insert(s.name().to_string(), open_by.get(&s).copied().unwrap_or(0));
    }
    lap(INCIDENT_TALLIES, &mut mark);

    let mut integrity: BTreeMap<String, IntegrityLine> = BTreeMap::new();
    for kind in [EventKind::Integrity, EventKind::Malware] {
        for_each(state, kind, since, Timestamp(i64::MAX), &mut |v| {
            let host = str_at(v, &["host", "name"])
                .or_else(|| str_at(v, &["agent", "id"]))
                .unwrap_or("?")
                .to_string();
            let line = integrity
                .entry(host.clone())
                .or_insert_with(|| IntegrityLine {
                    host,
                    ..IntegrityLine::default()
                });
            let action = str_at(v, &["event", "action"]).unwrap_or("");
            if kind == EventKind::Malware {
                line.malware += 1;
            } else if action.contains("restored") {
                line.restored += 1;
            } else if action.starts_with("file-") {
                line.changes += 1;
            }
            let t = v
                .get("@timestamp")
                .and_then(|t| t.as_str())
                .and_then(|t| t.parse::<Timestamp>().ok());
            if t > line.last {
                line.last = t;
            }
        })?;
    }
    // Hosts that guard files but had no finding are shown clean: any agent with integrity events
    // in the last 30 days appears.
    let month = Timestamp(now.nanos() - 30 * 86_400 * 1_000_000_000);
    let q = Query {
        since: month,
        until: since,
        agent: None,
        kind: Some(EventKind::Integrity),
        min_severity: None,
        limit: 10_000,
        newest_first: true,
        after: None,
        filter: None,
    };
    state.store.query(&q, &mut |raw| {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw) {
            let host = str_at(&v, &["host", "name"])
                .or_else(|| str_at(&v, &["agent", "id"]))
                .unwrap_or("?")
                .to_string();
            integrity
                .entry(host.clone())
                .or_insert_with(|| IntegrityLine {
                    host,
                    ..IntegrityLine::default()
                });
        }
        true
    })?;

    let replication = latest_per(state, EventKind::Replication, month, now, &["agent", "id"])?;
    let drills = latest_per(
        state,
        EventKind::Drill,
        month,
        now,
        &["palisade", "drill", "name"],
    )?;

    lap(STORE_SCANS, &mut mark);
    let (events_per_sec, segments) = state.rates.rates();
    let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    tracing::debug!(
        total_us = us(started.elapsed()),
        heartbeats_us = us(parts[HEARTBEATS]),
        alert_tally_us = us(parts[ALERT_TALLY]),
        store_scans_us = us(parts[STORE_SCANS]),
        incident_tallies_us = us(parts[INCIDENT_TALLIES]),
        "situation computed"
    );
    Ok(Situation {
        generated: now,
        period_secs,
        agents,
        events_per_sec,
        alert_events,
        alert_events_previous,
        alerts,
        alerts_previous,
        open_incidents,
        new_incidents,
        top_attacked: top(attacked),
        top_sources: top(sources),
        top_detectors: top(detectors),
        integrity: integrity.into_values().collect(),
        replication,
        drills,
        segments,
    })
}

/// Parses the `GET /v1/situation` query: the period in seconds (an hour unless `period` says).
pub fn parse_query(query: &str, now: Timestamp) -> Result<i64, String> {
    let mut period_secs = 3600;
    for (k, v) in params(query)? {
        match k.as_str() {
            "period" => match parse_time_spec(&v, now) {
                Ok(t) if t < now => period_secs = (now.nanos() - t.nanos()) / 1_000_000_000,
                _ => return Err(format!("period {v:?} must be a duration like 15m, 1h, 1d")),
            },
            _ => return Err(format!("unknown query parameter {k:?}")),
        }
    }
    Ok(period_secs)
}

/// The handler.
pub(super) async fn endpoint(state: Arc<AppState>, query: &str) -> Resp {
    let period_secs = match parse_query(query, Timestamp::now()) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match blocking(&state, move |s| compute(s, period_secs.max(1))).await {
        Ok(sit) => json_resp(StatusCode::OK, &sit),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_query_is_a_duration_back_from_now() {
        let now = Timestamp(1_780_000_000_000_000_000);
        assert_eq!(parse_query("", now), Ok(3600));
        assert_eq!(parse_query("period=15m", now), Ok(900));
        for bad in [
            "period=soon",
            "period=0s",
            "period=2999-01-01T00:00:00Z",
            "span=1h",
        ] {
            assert!(parse_query(bad, now).is_err(), "{bad}");
        }
    }
}
