//! Alerts (Sigma hits) and incidents (alerts grouped by rule and entity), in their own
//! database beside the event store (`<data_dir>/incidents`): redb, or sled in a directory
//! created before redb was (see [`kv`]).
//!
//! An alert joins the open incident with the same grouping key — the rule and the entity it is
//! about (a correlation's group-by values; for a detection, the source ip, else the user, else
//! the host) — while that incident has seen an alert within `window_secs` of event time and is
//! not resolved. Otherwise it opens a new incident. Acknowledging keeps the incident open (new
//! alerts still land in it, on its timeline); resolving closes the key, so the next alert opens a
//! fresh incident, as an analyst expects after a fix.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use palisade_wire::{Severity, Timestamp};
use serde::{Deserialize, Serialize};

use crate::store::{zblock, StoreError};

pub(crate) mod kv;
mod row;
pub use kv::{Backend, Migrated};
use kv::{Kv, Read, Table, Tx};

/// One event behind an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// Event time.
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    /// Content id (`event.id`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Agent that sent it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Its sequence, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// A one-line summary (dataset and message), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// Who or what an alert is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entities {
    /// Host names / agent ids.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub hosts: BTreeSet<String>,
    /// IP addresses.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub ips: BTreeSet<String>,
    /// User names.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub users: BTreeSet<String>,
}

const MAX_ENTITIES: usize = 64;

impl Entities {
    /// Adds `other`'s members, at most 64 of each kind.
    pub fn merge(&mut self, other: &Entities) {
        for (mine, theirs) in [
            (&mut self.hosts, &other.hosts),
            (&mut self.ips, &other.ips),
            (&mut self.users, &other.users),
        ] {
            for v in theirs {
                if mine.len() >= MAX_ENTITIES {
                    break;
                }
                mine.insert(v.clone());
            }
        }
    }
}

/// A rule hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Sequential id.
    pub id: u64,
    /// Event time of the event that completed the match.
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    /// When the collector raised it.
    pub raised: Timestamp,
    /// Rule id.
    pub rule_id: String,
    /// Rule title.
    pub rule_title: String,
    /// Severity from the rule's level.
    pub severity: Severity,
    /// `detection`, or the correlation type.
    pub kind: String,
    /// Correlation group-by values (field, value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<(String, String)>,
    /// Correlation: the aggregated value that met the condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Entities.
    #[serde(default)]
    pub entities: Entities,
    /// Events behind it (at most 20).
    #[serde(default)]
    pub events: Vec<EventRef>,
    /// Rule tags (ATT&CK ids and the like).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The incident it belongs to.
    pub incident: u64,
}

/// Incident status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not looked at yet.
    New,
    /// Someone is on it.
    Acknowledged,
    /// Closed.
    Resolved,
}

impl Status {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "new" => Ok(Status::New),
            "acknowledged" | "ack" => Ok(Status::Acknowledged),
            "resolved" => Ok(Status::Resolved),
            "open" => Err("use --open for new and acknowledged".into()),
            _ => Err(format!(
                "status {s:?} must be new, acknowledged or resolved"
            )),
        }
    }
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When (event time for alerts, wall time for analyst actions).
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    /// `alert`, `acknowledged`, `resolved`, `reopened`, `comment`.
    pub what: String,
    /// Who (certificate CN) for analyst actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The analyst's comment, or the alert's summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The alert, for alert entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<u64>,
}

/// Most timeline alert entries kept per incident (analyst actions are always kept).
pub const MAX_TIMELINE_ALERTS: usize = 500;

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Sequential id (shown as `INC-<id>`).
    pub id: u64,
    /// Grouping key: rule and entity.
    pub key: String,
    /// Title (the rule's, plus the entity).
    pub title: String,
    /// Rule id.
    pub rule_id: String,
    /// Highest severity of its alerts.
    pub severity: Severity,
    /// Status.
    pub status: Status,
    /// First alert (event time).
    pub first_seen: Timestamp,
    /// Latest alert (event time).
    pub last_seen: Timestamp,
    /// Alerts in it.
    pub alerts: u64,
    /// Entities involved.
    pub entities: Entities,
    /// Timeline, oldest first. Filled from the `timeline` tree when read through the store;
    /// the stored row itself carries it only when written before that tree existed.
    pub timeline: Vec<TimelineEntry>,
    /// Timeline alert entries left out past [`MAX_TIMELINE_ALERTS`].
    #[serde(default)]
    pub timeline_dropped: u64,
    /// Entries of its timeline in the `timeline` tree (numbered from 0).
    #[serde(default)]
    pub timeline_entries: u64,
    /// When the collector last changed it (wall time): what retention ages it by, so that an
    /// incident from a replayed old capture is kept as long as one from live traffic. Absent
    /// in rows written before it existed (their `last_seen` is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<Timestamp>,
    /// Ids of its first and latest alert: the incident view reads only the alert blocks
    /// between them. Absent in rows written before them (the view then scans every alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_ids: Option<(u64, u64)>,
    /// Timeline entry numbers of its analyst actions (acknowledged, resolved, reopened,
    /// comments), so that a listing reads them without the alert entries. Absent in rows
    /// written before it (a listing then reads the whole timeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_entries: Option<Vec<u64>>,
    /// Its timeline rows hold [`TIMELINE_CHUNK`] entries each. False in rows written before
    /// (one entry per row, as they go on being written).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timeline_chunked: bool,
    /// The entries of its timeline's last, part-filled chunk (entries `timeline_entries -
    /// len` on), held in the row rather than in the `timeline` tree: an alert joining the
    /// incident then rewrites its row alone, where reading and rewriting the chunk's row too
    /// made the writer's cost grow with the tree (every open incident's last chunk lies among
    /// its full ones). Moved to the tree as a chunk when full. Empty in rows written before it,
    /// whose part-filled chunk is in the tree (moved here by their next entry), and in
    /// incidents as read through the store (their `timeline` has these entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline_tail: Vec<TimelineEntry>,
}

impl Incident {
    /// `INC-42`.
    pub fn label(&self) -> String {
        format!("INC-{}", self.id)
    }
}

/// Parses `INC-42` or `42`.
pub fn parse_id(s: &str) -> Result<u64, String> {
    let digits = s
        .strip_prefix("INC-")
        .or_else(|| s.strip_prefix("inc-"))
        .unwrap_or(s);
    digits
        .parse()
        .map_err(|_| format!("{s:?} is not an incident id (INC-<number>)"))
}

/// The grouping key and entity label of an alert.
pub fn group_key(alert: &Alert) -> (String, String) {
    let entity = if !alert.group.is_empty() {
        alert
            .group
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    } else if let Some(ip) = alert.entities.ips.iter().next() {
        format!("ip={ip}")
    } else if let Some(u) = alert.entities.users.iter().next() {
        format!("user={u}")
    } else if let Some(h) = alert.entities.hosts.iter().next() {
        format!("host={h}")
    } else {
        String::new()
    };
    (format!("{}|{entity}", alert.rule_id), entity)
}

/// Listing filter for incidents.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only these statuses (empty = all).
    pub statuses: Vec<Status>,
    /// At least this severity.
    pub min_severity: Option<Severity>,
    /// Last seen at or after.
    pub since: Option<Timestamp>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Listing filter for alerts.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Event time at or after.
    pub since: Option<Timestamp>,
    /// Event time before.
    pub until: Option<Timestamp>,
    /// At least this severity.
    pub min_severity: Option<Severity>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Only this incident.
    pub incident: Option<u64>,
    /// At most this many, newest first.
    pub limit: usize,
}

impl AlertFilter {
    /// Whether `a` passes every condition but the limit.
    fn admits(&self, a: &Alert) -> bool {
        self.since.is_none_or(|s| a.timestamp >= s)
            && self.until.is_none_or(|u| a.timestamp < u)
            && self.min_severity.is_none_or(|s| a.severity >= s)
            && self.rule.as_ref().is_none_or(|r| &a.rule_id == r)
            && self.incident.is_none_or(|i| a.incident == i)
    }
}

/// The alert/incident database.
pub struct IncidentStore {
    /// Tables `alerts` (blocks by first alert id), `incidents` (rows by id), `timeline` and
    /// `open` (grouping key → its open incident). Timeline entries are keyed by incident id,
    /// then entry number (both u64 big-endian), kept apart from the incident row so that an
    /// alert joining an incident appends a small entry instead of rewriting a row carrying up
    /// to [`MAX_TIMELINE_ALERTS`] entries: with the timeline inline, a soak at 7,500 alerts/s
    /// wrote ~2.2 GB a minute.
    kv: Kv,
    /// Serializes read-modify-write of incidents (the correlator and analysts' acks).
    lock: Mutex<()>,
    window_secs: i64,
    /// New incidents' timelines in rows of [`TIMELINE_CHUNK`] entries (false only in the
    /// benchmark that measures what a row per entry costs).
    chunk_timelines: bool,
    /// The next incident id (INC-n), from the highest stored at open.
    next_id: AtomicU64,
    /// Open incidents by severity and new ones, for `situation`: counted at open from the
    /// `recent` table, kept in step with every write. The listing itself reads `recent`, so
    /// nothing here grows with the incidents held.
    counts: Mutex<Counts>,
    /// Alerts per minute (event time) and rule title over the last [`ALERT_MINUTES_KEPT`]
    /// minutes, for `situation`'s counts and trends without reading the alerts.
    alert_minutes: Mutex<BTreeMap<i64, HashMap<String, u64>>>,
}

/// What listings filter incidents on, as the `recent` table holds it: the key is the
/// incident's latest alert (event time) and id, the value the rest (6 bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Summary {
    last_seen: Timestamp,
    /// `Incident::updated`, else `last_seen`, in whole seconds (wall time): what retention
    /// ages it by.
    updated_secs: u32,
    status: Status,
    severity: Severity,
}

impl Summary {
    fn of(i: &Incident) -> Summary {
        let updated = i
            .updated
            .unwrap_or(i.last_seen)
            .nanos()
            .div_euclid(1_000_000_000);
        Summary {
            last_seen: i.last_seen,
            updated_secs: u32::try_from(updated.max(0)).unwrap_or(u32::MAX),
            status: i.status,
            severity: i.severity,
        }
    }

    fn is_open(&self) -> bool {
        self.status != Status::Resolved
    }

    /// `updated_secs`, status, severity.
    fn value(&self) -> [u8; 6] {
        let mut v = [0u8; 6];
        v[..4].copy_from_slice(&self.updated_secs.to_be_bytes());
        v[4] = row::status_number(self.status);
        v[5] = self.severity.number();
        v
    }

    /// The row of `recent` under `key` (from [`recent_key`]): its incident and summary.
    fn decode(key: &[u8], v: &[u8]) -> Result<(u64, Summary), StoreError> {
        let bad = || corrupt("recent", format!("bad row {key:02x?}"));
        let (Ok(k), Ok(v)) = (<[u8; 16]>::try_from(key), <[u8; 6]>::try_from(v)) else {
            return Err(bad());
        };
        let k = u128::from_be_bytes(k);
        let (at, id) = (((k >> 64) as u64) ^ (1 << 63), k as u64);
        let status = row::status_of(v[4]).ok_or_else(bad)?;
        let severity = Severity::from_number(u64::from(v[5])).ok_or_else(bad)?;
        Ok((
            id,
            Summary {
                last_seen: Timestamp(at as i64),
                updated_secs: u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                status,
                severity,
            },
        ))
    }
}

/// The key of an incident in `recent`: its latest alert's event time (sign bit flipped, so
/// that times before 1970 sort first) and its id, both big-endian: newest last.
fn recent_key(last_seen: Timestamp, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&((last_seen.nanos() as u64) ^ (1 << 63)).to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Moves incident `id` in `recent` from `old` (as the table holds it) to `new`.
fn put_recent(
    tx: &mut Tx<'_>,
    id: u64,
    old: Option<&Summary>,
    new: Option<&Summary>,
) -> Result<(), StoreError> {
    if let Some(o) = old {
        if new.is_none_or(|n| n.last_seen != o.last_seen) {
            tx.remove(Table::Recent, &recent_key(o.last_seen, id))?;
        }
    }
    if let Some(n) = new {
        if old != Some(n) {
            tx.put(Table::Recent, &recent_key(n.last_seen, id), &n.value())?;
        }
    }
    Ok(())
}

/// The open counts `situation` shows, kept in step with `recent` rather than counted on each
/// call.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counts {
    /// Open (new or acknowledged) incidents by severity.
    open: BTreeMap<Severity, u64>,
    /// New incidents.
    new: u64,
    /// [`Kv::reopens`] when these were counted: after a reopen they are counted again.
    reopens: u64,
}

impl Counts {
    fn count(&mut self, s: &Summary, add: bool) {
        let step = |n: &mut u64| *n = if add { *n + 1 } else { n.saturating_sub(1) };
        if s.is_open() {
            step(self.open.entry(s.severity).or_default());
        }
        if s.status == Status::New {
            step(&mut self.new);
        }
    }

    /// An incident went from `old` to `new` (`None`: not there).
    fn apply(&mut self, old: Option<&Summary>, new: Option<&Summary>) {
        if let Some(o) = old {
            self.count(o, false);
        }
        if let Some(n) = new {
            self.count(n, true);
        }
    }

    /// Counted from every row of `recent`.
    fn of(kv: &Kv) -> Result<Counts, StoreError> {
        let mut c = Counts {
            reopens: kv.reopens(),
            ..Counts::default()
        };
        kv.scan(Table::Recent, ALL, false, &mut |k, v| {
            c.count(&Summary::decode(k, v)?.1, true);
            Ok(true)
        })?;
        Ok(c)
    }
}

/// Rows of `recent` written per write when it is built again.
const RECENT_BATCH: usize = 10_000;

/// Makes `recent` hold exactly a row for each incident, from the `incidents` table: after any
/// open of a sled database (whose tables are batches of their own, so a crash can leave
/// `recent` behind `incidents`), and for a redb database from before `recent` (empty beside
/// incidents). Rows already right are not written again. Returns the rows written and removed.
fn rebuild_recent(kv: &Kv) -> Result<(u64, u64), StoreError> {
    let mut want: BTreeMap<[u8; 16], [u8; 6]> = BTreeMap::new();
    kv.scan(Table::Incidents, ALL, false, &mut |k, v| {
        let inc = decode_row(k, v)?;
        let s = Summary::of(&inc);
        want.insert(recent_key(s.last_seen, inc.id), s.value());
        Ok(true)
    })?;
    let mut stale: Vec<Vec<u8>> = Vec::new();
    kv.scan(Table::Recent, ALL, false, &mut |k, v| {
        if let Ok(key) = <[u8; 16]>::try_from(k) {
            if want.get(&key).is_some_and(|w| &w[..] == v) {
                want.remove(&key);
                return Ok(true);
            }
        }
        stale.push(k.to_vec());
        Ok(true)
    })?;
    let (written, removed) = (want.len() as u64, stale.len() as u64);
    for keys in stale.chunks(RECENT_BATCH) {
        kv.write(|tx| keys.iter().try_for_each(|k| tx.remove(Table::Recent, k)))?;
    }
    let want: Vec<_> = want.into_iter().collect();
    for rows in want.chunks(RECENT_BATCH) {
        kv.write(|tx| {
            rows.iter()
                .try_for_each(|(k, v)| tx.put(Table::Recent, k, v))
        })?;
    }
    if written + removed > 0 {
        kv.flush()?;
    }
    Ok((written, removed))
}

/// What a retention pass removed from the incident database.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    /// Alerts raised before the cut-off.
    pub alerts: u64,
    /// Incidents last changed before the cut-off (with their timelines).
    pub incidents: u64,
}

/// The incident database's page cache unless `[correlation] incident_cache_bytes` says
/// otherwise. Every alert reads its incident's row, its grouping key and its timeline row, and
/// writes them back, at random places in the file. In the 50,000 events/s storm soak (~8,000
/// alerts/s, 600,000 open incidents) with 32 MiB, reading pages back from the file was a
/// third of the incident writer's time, and from minute 37 of the hour the writer's back
/// pressure held ingest acks at ~300 ms (p50); with 128 MiB that came at minute 57, for
/// ~90 MiB more RSS (2026-12-07, docs/RELIABILITY.md). The writer's cost still grows with the
/// database, so a larger cache delays that point; it does not remove it.
pub const DEFAULT_CACHE_BYTES: u64 = 128 << 20;

/// Timeline entries per row of the `timeline` tree, for incidents opened since rows hold
/// several ([`Incident::timeline_chunked`]): a row is a JSON array of up to this many entries,
/// keyed by the first one's number, rewritten as entries are added. One row per entry made the
/// timeline most of the incident database's keys (a key per alert), and sled keeps ~190 bytes
/// of metadata resident for every page of ~10 keys whether or not the page is cached, so the
/// collector's memory grew with every alert ever raised (~1 MiB a minute in the SOC soak).
const TIMELINE_CHUNK: u64 = 16;

/// Keys removed per batch by [`IncidentStore::apply_retention`].
const RETIRE_BATCH: usize = 10_000;

/// Minutes of alert counts kept in memory (31 days).
const ALERT_MINUTES_KEPT: i64 = 31 * 24 * 60;

/// Alerts are stored in blocks: one row of the `alerts` tree per up to this many alerts of
/// one [`IncidentStore::record`] call, keyed by the first alert's id, as zstd-compressed NDJSON
/// (`ALERT_BLOCK_MAGIC | count u32 | raw length u32 | zstd`). One JSON row per alert was half
/// of the incident database's bytes in the 50,000 events/s soak (524 of 1,087 bytes live per
/// alert); a block of the soak's alerts compresses about tenfold. Rows written before blocks
/// (one alert's JSON, starting with `{`) are still read. Alerts are read in id order only
/// (listings newest first, retention oldest first, tallies at open), so blocks cost no lookup.
const ALERTS_PER_BLOCK: usize = 1024;
const ALERT_BLOCK_MAGIC: &[u8; 4] = b"PAB1";
/// A block's NDJSON larger than this is refused as corrupt (1,024 alerts are ~0.5 MiB).
const MAX_ALERT_BLOCK_RAW: usize = 64 << 20;
const ALERT_BLOCK_ZSTD_LEVEL: i32 = 1;

/// One row of the `alerts` tree for `alerts` (in id order).
fn encode_alert_block(alerts: &[Alert]) -> Result<Vec<u8>, StoreError> {
    let mut raw = Vec::with_capacity(alerts.len() * 512);
    for a in alerts {
        serde_json::to_writer(&mut raw, a).map_err(|e| corrupt("alerts", e))?;
        raw.push(b'\n');
    }
    let z = zstd::bulk::compress(&raw, ALERT_BLOCK_ZSTD_LEVEL)
        .map_err(|e| corrupt("alerts", format_args!("cannot compress a block: {e}")))?;
    let mut v = Vec::with_capacity(12 + z.len());
    v.extend_from_slice(ALERT_BLOCK_MAGIC);
    v.extend_from_slice(
        &u32::try_from(alerts.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    v.extend_from_slice(&u32::try_from(raw.len()).unwrap_or(u32::MAX).to_be_bytes());
    v.extend_from_slice(&z);
    Ok(v)
}

/// The alerts of one row of the `alerts` tree (a block, or one alert from before blocks), in
/// id order. `key` names the row in errors.
fn decode_alert_row(key: &[u8], v: &[u8]) -> Result<Vec<Alert>, StoreError> {
    decode_alert_row_where(key, v, |_| true)
}

/// As [`decode_alert_row`], parsing only the alerts whose JSON line `keep` accepts (a block's
/// line count is still checked against its header).
fn decode_alert_row_where(
    key: &[u8],
    v: &[u8],
    keep: impl Fn(&[u8]) -> bool,
) -> Result<Vec<Alert>, StoreError> {
    let row = || {
        key.try_into()
            .map(u64::from_be_bytes)
            .map_or_else(|_| format!("{key:?}"), |id| id.to_string())
    };
    if v.first() == Some(&b'{') {
        if !keep(v) {
            return Ok(Vec::new());
        }
        return serde_json::from_slice(v)
            .map(|a| vec![a])
            .map_err(|e| corrupt("alerts", format_args!("row {}: {e}", row())));
    }
    let bad = |why: String| corrupt("alerts", format_args!("row {}: {why}", row()));
    let rest = v
        .strip_prefix(ALERT_BLOCK_MAGIC)
        .ok_or_else(|| bad("neither an alert nor an alert block".into()))?;
    if rest.len() < 8 {
        return Err(bad("truncated block header".into()));
    }
    let count = u32::from_be_bytes(rest[..4].try_into().unwrap_or_default()) as usize;
    let raw_len = u32::from_be_bytes(rest[4..8].try_into().unwrap_or_default()) as usize;
    if raw_len > MAX_ALERT_BLOCK_RAW {
        return Err(bad(format!("block of {raw_len} bytes")));
    }
    let raw = zblock::decompress(&rest[8..], raw_len).map_err(|e| bad(format!("block {e}")))?;
    let mut lines = 0;
    let mut alerts = Vec::new();
    for l in zblock::lines(&raw) {
        lines += 1;
        if keep(l) {
            alerts.push(serde_json::from_slice(l).map_err(|e| bad(e.to_string()))?);
        }
    }
    if lines != count {
        return Err(bad(format!("block holds {lines} alerts, not {count}")));
    }
    Ok(alerts)
}

/// Whether `line` holds `prefix` followed by something other than a digit (`"incident":12`
/// names incident 12, not 123). A cheap test before parsing: a line that does not name the
/// number cannot be an alert of that incident, whatever the field order.
fn names_number(line: &[u8], prefix: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = line[from..].windows(prefix.len()).position(|w| w == prefix) {
        let end = from + at + prefix.len();
        if !line.get(end).is_some_and(u8::is_ascii_digit) {
            return true;
        }
        from = from + at + 1;
    }
    false
}

fn timeline_key(incident: u64, entry: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&incident.to_be_bytes());
    k[8..].copy_from_slice(&entry.to_be_bytes());
    k
}

/// The entries of one `timeline` row: a chunk (a JSON array) or, in rows written before
/// chunks, a single entry (a JSON object).
fn decode_timeline_row(key: &[u8], v: &[u8]) -> Result<Vec<TimelineEntry>, StoreError> {
    let decoded = if v.first() == Some(&b'[') {
        serde_json::from_slice(v)
    } else {
        serde_json::from_slice(v).map(|e| vec![e])
    };
    decoded.map_err(|e| {
        let at = |r: std::ops::Range<usize>| {
            key.get(r)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes)
        };
        corrupt(
            "timeline",
            format!("incident {} entry {}: {e}", at(0..8), at(8..16)),
        )
    })
}

/// Timeline rows being written by one call: the rows of unchunked incidents and the chunks
/// filled (a part-filled chunk stays in its incident's row, [`Incident::timeline_tail`]).
#[derive(Default)]
struct TimelineRows {
    /// (key, value).
    rows: Vec<([u8; 16], Vec<u8>)>,
}

impl TimelineRows {
    fn put_chunk(
        &mut self,
        id: u64,
        first: u64,
        entries: &[TimelineEntry],
    ) -> Result<(), StoreError> {
        let v = serde_json::to_vec(entries).map_err(|e| corrupt("timeline", e))?;
        self.rows.push((timeline_key(id, first), v));
        Ok(())
    }

    /// Writes every row in `tx`.
    fn finish(self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        for (k, v) in &self.rows {
            tx.put(Table::Timeline, k, v)?;
        }
        Ok(())
    }
}

fn minute_of(t: Timestamp) -> i64 {
    t.nanos().div_euclid(60_000_000_000)
}

impl std::fmt::Debug for IncidentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentStore").finish_non_exhaustive()
    }
}

/// Removes the grouping key `key` while it still points at incident `id` (a later incident
/// of the same key keeps it).
fn close_key(tx: &mut Tx<'_>, key: &str, id: u64) -> Result<(), StoreError> {
    let points_here = tx
        .get(Table::Open, key.as_bytes())?
        .is_some_and(|v| *v == id.to_be_bytes());
    if points_here {
        tx.remove(Table::Open, key.as_bytes())?;
    }
    Ok(())
}

/// A scan of a whole table.
const ALL: kv::Span<'static> = (Bound::Unbounded, Bound::Unbounded);

/// The incident in the `incidents` row `v` under `key`: binary (see [`row`]) or, written
/// before 2026-12-07, JSON.
fn decode_row(key: &[u8], v: &[u8]) -> Result<Incident, StoreError> {
    let decoded = if v.first() == Some(&row::TAG) {
        row::decode(v)
    } else {
        serde_json::from_slice(v).map_err(|e| e.to_string())
    };
    decoded.map_err(|e| {
        let id = <[u8; 8]>::try_from(key).map_or_else(
            |_| format!("{key:02x?}"),
            |k| u64::from_be_bytes(k).to_string(),
        );
        corrupt("incidents", format_args!("incident {id}: {e}"))
    })
}

fn corrupt(tree: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: tree.into(),
        reason: reason.to_string(),
    }
}

/// Why an analyst action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No such incident.
    #[error("no incident INC-{0}")]
    NotFound(u64),
    /// Not possible from the current status.
    #[error("INC-{id} is {status}; cannot {action}")]
    Conflict {
        /// Incident.
        id: u64,
        /// Current status.
        status: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// Storage trouble.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IncidentStore {
    /// Opens (or creates, with the default engine) the database in `dir`.
    pub fn open(dir: &Path, window_secs: u64) -> Result<Self, StoreError> {
        Self::open_with(dir, window_secs, Backend::default())
    }

    /// Converts the sled incident database in `dir` to redb, offline: copied beside it,
    /// verified row for row, swapped in atomically; the sled one is kept beside it (see
    /// [`kv::migrate_sled_to_redb`]), with a page cache of `cache_bytes` (the collector's
    /// `[correlation] incident_cache_bytes`).
    pub fn migrate_to_redb(dir: &Path, cache_bytes: u64) -> Result<Migrated, StoreError> {
        kv::migrate_sled_to_redb(dir, cache_bytes)
    }

    /// Opens the database in `dir`, creating it with `new`'s engine when there is none (an
    /// existing database keeps its engine), with the default page cache.
    pub fn open_with(dir: &Path, window_secs: u64, new: Backend) -> Result<Self, StoreError> {
        Self::open_cached(dir, window_secs, new, DEFAULT_CACHE_BYTES)
    }

    /// [`Self::open_with`] with a page cache of `cache_bytes`.
    pub fn open_cached(
        dir: &Path,
        window_secs: u64,
        new: Backend,
        cache_bytes: u64,
    ) -> Result<Self, StoreError> {
        let kv = Kv::open(dir, new, cache_bytes)?;
        // Past every incident held and every id handed out before (the counter: retention
        // may have removed the newest incidents, a crash lost some; databases from before the
        // counter have only the first).
        let last = kv.last(Table::Incidents)?;
        let next_id = last
            .as_ref()
            .and_then(|(k, _)| k.as_slice().try_into().ok().map(u64::from_be_bytes))
            .map_or(1, |last| last + 1)
            .max(kv.next_incident_id()?.unwrap_or(1));
        // sled: always checked against `incidents` (a crash can leave it behind); redb: one
        // transaction keeps them in step, so built only where it is missing.
        let rebuild = match kv.backend() {
            Backend::Sled => true,
            Backend::Redb => kv.last(Table::Recent)?.is_none() && last.is_some(),
        };
        if rebuild {
            let (written, removed) = rebuild_recent(&kv)?;
            if written + removed > 0 {
                tracing::info!(dir = %dir.display(), written, removed, "incident listing order rebuilt");
            }
        }
        let counts = Counts::of(&kv)?;
        let mut alert_minutes: BTreeMap<i64, HashMap<String, u64>> = BTreeMap::new();
        let oldest = minute_of(Timestamp::now()) - ALERT_MINUTES_KEPT;
        kv.scan(Table::Alerts, ALL, true, &mut |k, v| {
            for a in decode_alert_row(k, v)? {
                let m = minute_of(a.timestamp);
                if m >= oldest {
                    *alert_minutes
                        .entry(m)
                        .or_default()
                        .entry(a.rule_title)
                        .or_default() += 1;
                }
            }
            Ok(true)
        })?;
        tracing::debug!(dir = %dir.display(), engine = %kv.backend(), "incident database open");
        Ok(IncidentStore {
            kv,
            next_id: AtomicU64::new(next_id),
            counts: Mutex::new(counts),
            alert_minutes: Mutex::new(alert_minutes),
            lock: Mutex::new(()),
            window_secs: i64::try_from(window_secs).unwrap_or(i64::MAX),
            chunk_timelines: true,
        })
    }

    /// The incident's row alone: its timeline is empty unless the row predates the
    /// `timeline` tree. For changing it; [`Self::get_incident`] for showing it.
    fn get_row(&self, id: u64) -> Result<Option<Incident>, StoreError> {
        Self::get_row_in(&self.kv, id)
    }

    /// [`Self::get_row`] through `r` (inside a write, or the database).
    fn get_row_in(r: &dyn Read, id: u64) -> Result<Option<Incident>, StoreError> {
        match r.get(Table::Incidents, &id.to_be_bytes())? {
            Some(v) => decode_row(&id.to_be_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    /// The incident with its whole timeline. Only entries the row counts are read: one
    /// written before a crash cut off its row's update is not shown (and is overwritten).
    fn get_incident(&self, id: u64) -> Result<Option<Incident>, StoreError> {
        let Some(mut inc) = self.get_row(id)? else {
            return Ok(None);
        };
        let in_tree = Self::tail_first(&inc);
        let tail = std::mem::take(&mut inc.timeline_tail);
        self.read_tree_timeline(inc.id, in_tree, &mut inc.timeline)?;
        inc.timeline.extend(tail);
        Ok(Some(inc))
    }

    /// Number of the first entry of `inc`'s timeline held in its row's tail: the tree holds
    /// the ones before (entries at or past it in the tree are a chunk written before a crash
    /// cut off the row's update, or one since moved into the row, and are not read).
    fn tail_first(inc: &Incident) -> u64 {
        inc.timeline_entries
            .saturating_sub(inc.timeline_tail.len() as u64)
    }

    /// Every entry of `inc`'s timeline that its row counts, oldest first: from the
    /// `timeline` tree, then its row's tail (one written before a crash cut off its row's
    /// update is left out, and is overwritten by the next).
    fn read_timeline(&self, inc: &Incident) -> Result<Vec<TimelineEntry>, StoreError> {
        let mut out = Vec::new();
        self.read_tree_timeline(inc.id, Self::tail_first(inc), &mut out)?;
        out.extend(inc.timeline_tail.iter().cloned());
        Ok(out)
    }

    /// Appends to `out` the first `in_tree` entries of incident `id`'s timeline, those the
    /// `timeline` tree holds ([`Self::tail_first`]).
    fn read_tree_timeline(
        &self,
        id: u64,
        in_tree: u64,
        out: &mut Vec<TimelineEntry>,
    ) -> Result<(), StoreError> {
        let (from, to) = (timeline_key(id, 0), timeline_key(id, in_tree));
        let span = (Bound::Included(&from[..]), Bound::Excluded(&to[..]));
        self.kv.scan(Table::Timeline, span, false, &mut |k, v| {
            let first = k
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            let counted = in_tree.saturating_sub(first);
            out.extend(
                decode_timeline_row(k, v)?
                    .into_iter()
                    .take(usize::try_from(counted).unwrap_or(usize::MAX)),
            );
            Ok(true)
        })
    }

    /// Entry `n` of `inc`'s timeline, from its row's tail or the tree's row holding it.
    fn timeline_entry(&self, inc: &Incident, n: u64) -> Result<Option<TimelineEntry>, StoreError> {
        if n >= inc.timeline_entries {
            return Ok(None);
        }
        let in_tree = Self::tail_first(inc);
        if n >= in_tree {
            return Ok(usize::try_from(n - in_tree)
                .ok()
                .and_then(|i| inc.timeline_tail.get(i).cloned()));
        }
        let first = if inc.timeline_chunked {
            n - n % TIMELINE_CHUNK
        } else {
            n
        };
        let key = timeline_key(inc.id, first);
        match self.kv.get(Table::Timeline, &key)? {
            Some(v) => Ok(decode_timeline_row(&key, &v)?
                .into_iter()
                .nth(usize::try_from(n - first).unwrap_or(usize::MAX))),
            None => Ok(None),
        }
    }

    /// The incident as a listing carries it: its row, the first entry of its timeline (the
    /// alert that opened it) and its analyst actions, each read by its entry number, so that a
    /// listing's cost does not grow with its incidents' age (a long-lived incident has up to
    /// [`MAX_TIMELINE_ALERTS`] alert entries). A row from before `action_entries`, or one
    /// still carrying its timeline inline, is read whole.
    fn get_listed(&self, id: u64) -> Result<Option<Incident>, StoreError> {
        let Some(mut inc) = self.get_row(id)? else {
            return Ok(None);
        };
        if !inc.timeline.is_empty() {
            return self.get_incident(id);
        }
        // Taken out for the loop (`timeline_entry` borrows the row), then put back.
        let Some(actions) = inc.action_entries.take() else {
            return self.get_incident(id);
        };
        let wanted = std::iter::once(0).chain(actions.iter().copied().filter(|&n| n != 0));
        for n in wanted {
            if let Some(e) = self.timeline_entry(&inc, n)? {
                inc.timeline.push(e);
            }
        }
        inc.action_entries = Some(actions);
        inc.timeline_tail = Vec::new();
        Ok(Some(inc))
    }

    /// Adds `entry` to `inc`'s timeline: to its row's tail, which goes to `rows` as a chunk
    /// when full (a row from before the tail first has its part-filled chunk read from the
    /// tree into the tail), or for a row from before chunks as a row of its own in `rows`,
    /// first moving a timeline the row still carries inline (written before the tree) there.
    fn append_timeline(
        r: &dyn Read,
        rows: &mut TimelineRows,
        inc: &mut Incident,
        entry: TimelineEntry,
    ) -> Result<(), StoreError> {
        if !inc.timeline_chunked {
            for e in std::mem::take(&mut inc.timeline)
                .into_iter()
                .chain(std::iter::once(entry))
            {
                let v = serde_json::to_vec(&e).map_err(|e| corrupt("timeline", e))?;
                rows.rows
                    .push((timeline_key(inc.id, inc.timeline_entries), v));
                inc.timeline_entries += 1;
            }
            return Ok(());
        }
        let n = inc.timeline_entries;
        let first = n - n % TIMELINE_CHUNK;
        if inc.timeline_tail.is_empty() && n > first {
            // A row from before the tail: its part-filled chunk is in the tree.
            let key = timeline_key(inc.id, first);
            if let Some(row) = r.get(Table::Timeline, &key)? {
                inc.timeline_tail = decode_timeline_row(&key, &row)?;
            }
            // Entries past the row's count were written before a crash cut off the row's
            // update: they go.
            inc.timeline_tail
                .truncate(usize::try_from(n - first).unwrap_or(usize::MAX));
            let held = inc.timeline_tail.len() as u64;
            if held != n - first {
                // Fewer than the row counts (a damaged database): numbered on from those held,
                // as readers could show no more.
                tracing::warn!(
                    incident = inc.id,
                    counted = n - first,
                    held,
                    "an incident's last timeline chunk holds fewer entries than its row counts"
                );
                inc.timeline_entries = first + held;
            }
        }
        inc.timeline_tail.push(entry);
        inc.timeline_entries += 1;
        if inc.timeline_entries % TIMELINE_CHUNK == 0 {
            rows.put_chunk(inc.id, first, &std::mem::take(&mut inc.timeline_tail))?;
        }
        Ok(())
    }

    /// The row of `inc` (binary, see [`row`]), whose timeline must already be in the
    /// `timeline` tree.
    fn row_bytes(inc: &Incident) -> Vec<u8> {
        debug_assert!(inc.timeline.is_empty());
        row::encode(inc)
    }

    /// Records alerts (ids and incidents are assigned here) and returns them as stored. Each
    /// incident touched is read at most once and written once per call, whatever the number of
    /// its alerts in the call; the call is one write of the database (see [`Kv::write`]).
    pub fn record(&self, alerts: Vec<Alert>) -> Result<Vec<Alert>, StoreError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let (out, moved) = self.kv.write(|tx| self.record_in(tx, alerts))?;
        self.update_counts(&moved);
        let mut minutes = self.alert_minutes.lock().unwrap_or_else(|p| p.into_inner());
        for a in &out {
            *minutes
                .entry(minute_of(a.timestamp))
                .or_default()
                .entry(a.rule_title.clone())
                .or_default() += 1;
        }
        let oldest = minute_of(Timestamp::now()) - ALERT_MINUTES_KEPT;
        while minutes.first_key_value().is_some_and(|(m, _)| *m < oldest) {
            minutes.pop_first();
        }
        Ok(out)
    }

    /// [`Self::record`]'s reads and writes, inside `tx`: the alerts as stored, and how the
    /// incidents they touched moved (as [`Self::update_counts`] takes them).
    #[allow(clippy::type_complexity)]
    fn record_in(
        &self,
        tx: &mut Tx<'_>,
        alerts: Vec<Alert>,
    ) -> Result<(Vec<Alert>, Vec<(Option<Summary>, Option<Summary>)>), StoreError> {
        let mut out = Vec::with_capacity(alerts.len());
        let mut touched: HashMap<u64, Incident> = HashMap::new();
        // Each touched incident as `recent` holds it before this call (`None`: new).
        let mut before: HashMap<u64, Option<Summary>> = HashMap::new();
        // Grouping key → its open incident as of this call, and whether that changed (a new
        // incident): only changed keys are written.
        let mut open_now: HashMap<String, (u64, bool)> = HashMap::new();
        let mut timeline_rows = TimelineRows::default();
        for mut alert in alerts {
            alert.id = tx.next_alert_id()?;
            let (key, entity) = group_key(&alert);
            let seen = open_now.get(&key).copied();
            let candidate = match seen {
                Some((id, _)) => Some(id),
                None => match tx.get(Table::Open, key.as_bytes())? {
                    Some(v) => Some(u64::from_be_bytes(
                        (*v).try_into().map_err(|_| corrupt("open", "bad id"))?,
                    )),
                    None => None,
                },
            };
            let current = match candidate {
                Some(id) => match touched.remove(&id) {
                    Some(i) => Some(i),
                    None => {
                        let row = Self::get_row_in(tx, id)?;
                        if let Some(r) = &row {
                            before.entry(id).or_insert(Some(Summary::of(r)));
                        }
                        row
                    }
                },
                None => None,
            };
            let joinable = |i: &Incident| {
                i.status != Status::Resolved
                    && (alert.timestamp.nanos() - i.last_seen.nanos()) / 1_000_000_000
                        <= self.window_secs
            };
            let mut inc = match current {
                Some(i) if joinable(&i) => i,
                other => {
                    if let Some(i) = other {
                        touched.insert(i.id, i);
                    }
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    // Not handed out again, whatever becomes of this incident.
                    tx.incident_ids_below(id + 1);
                    before.entry(id).or_insert(None);
                    let title = if entity.is_empty() {
                        alert.rule_title.clone()
                    } else {
                        format!("{} ({entity})", alert.rule_title)
                    };
                    Incident {
                        id,
                        key: key.clone(),
                        title,
                        rule_id: alert.rule_id.clone(),
                        severity: alert.severity,
                        status: Status::New,
                        first_seen: alert.timestamp,
                        last_seen: alert.timestamp,
                        alerts: 0,
                        entities: Entities::default(),
                        timeline: Vec::new(),
                        timeline_dropped: 0,
                        timeline_entries: 0,
                        updated: None,
                        alert_ids: None,
                        action_entries: Some(Vec::new()),
                        timeline_chunked: self.chunk_timelines,
                        timeline_tail: Vec::new(),
                    }
                }
            };
            alert.incident = inc.id;
            inc.updated = Some(alert.raised);
            // Only a row that has counted every alert since its first gets (or keeps) the
            // range: an older row has alerts before it that the range would leave out.
            inc.alert_ids = match inc.alert_ids {
                Some((first, _)) => Some((first, alert.id)),
                None if inc.alerts == 0 => Some((alert.id, alert.id)),
                None => None,
            };
            // Every alert either has its timeline entry or was counted as dropped.
            let alert_entries = inc.alerts.saturating_sub(inc.timeline_dropped) as usize;
            inc.alerts += 1;
            inc.severity = inc.severity.max(alert.severity);
            inc.first_seen = inc.first_seen.min(alert.timestamp);
            inc.last_seen = inc.last_seen.max(alert.timestamp);
            inc.entities.merge(&alert.entities);
            if alert_entries < MAX_TIMELINE_ALERTS {
                let text = alert
                    .events
                    .first()
                    .and_then(|e| e.summary.clone())
                    .or_else(|| alert.value.map(|v| format!("{} reached {v}", alert.kind)));
                Self::append_timeline(
                    tx,
                    &mut timeline_rows,
                    &mut inc,
                    TimelineEntry {
                        timestamp: alert.timestamp,
                        what: "alert".into(),
                        by: None,
                        text,
                        alert: Some(alert.id),
                    },
                )?;
            } else {
                inc.timeline_dropped += 1;
            }
            let changed = seen.is_some_and(|(_, c)| c) || candidate != Some(inc.id);
            open_now.insert(key, (inc.id, changed));
            touched.insert(inc.id, inc);
            out.push(alert);
        }
        // Timeline entries, then the incidents that count them, then the index to those, then
        // the alerts that name them: in sled, where each table is a batch of its own, a crash
        // in between leaves no reference to something unwritten (sled recovers its log in
        // order); in redb the call is one transaction. `recent` last: in sled it is checked
        // against `incidents` at every open.
        timeline_rows.finish(tx)?;
        for inc in touched.values() {
            tx.put(
                Table::Incidents,
                &inc.id.to_be_bytes(),
                &Self::row_bytes(inc),
            )?;
        }
        for (key, (id, _)) in open_now.iter().filter(|(_, (_, changed))| *changed) {
            tx.put(Table::Open, key.as_bytes(), &id.to_be_bytes())?;
        }
        for block in out.chunks(ALERTS_PER_BLOCK) {
            tx.put(
                Table::Alerts,
                &block[0].id.to_be_bytes(),
                &encode_alert_block(block)?,
            )?;
        }
        let mut moved = Vec::with_capacity(touched.len());
        for inc in touched.values() {
            let old = before.get(&inc.id).copied().flatten();
            let new = Summary::of(inc);
            put_recent(tx, inc.id, old.as_ref(), Some(&new))?;
            moved.push((old, Some(new)));
        }
        Ok((out, moved))
    }

    /// Brings the open counts in step with a write that moved incidents from the first
    /// summary to the second (`None`: not there); after the database was reopened (which lost
    /// commits not yet durable) they are counted again instead.
    fn update_counts(&self, moved: &[(Option<Summary>, Option<Summary>)]) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.reopens != self.kv.reopens() {
            match Counts::of(&self.kv) {
                Ok(c) => {
                    *counts = c;
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot count open incidents again after a reopen")
                }
            }
        }
        for (old, new) in moved {
            counts.apply(old.as_ref(), new.as_ref());
        }
    }

    /// Alerts per rule title with event time in `[from, to)`, at minute granularity (an alert
    /// counts in a window when its minute starts inside it), from memory.
    pub fn alert_counts(&self, from: Timestamp, to: Timestamp) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::new();
        let minutes = self.alert_minutes.lock().unwrap_or_else(|p| p.into_inner());
        for (_, rules) in minutes.range(minute_of(from)..minute_of(to).max(minute_of(from))) {
            for (r, n) in rules {
                *out.entry(r.clone()).or_default() += n;
            }
        }
        out
    }

    /// Open incidents (new or acknowledged) by severity, and how many are new.
    pub fn open_counts(&self) -> (BTreeMap<Severity, u64>, u64) {
        self.update_counts(&[]);
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let by = counts
            .open
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (*s, *n))
            .collect();
        (by, counts.new)
    }

    /// Holds the lock that orders writes, as a long write does: the alert writer waits
    /// until the guard is dropped.
    #[cfg(test)]
    pub(crate) fn hold_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes everything recorded so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.kv.flush()
    }

    /// One incident.
    pub fn incident(&self, id: u64) -> Result<Option<Incident>, StoreError> {
        self.get_incident(id)
    }

    /// Incidents, newest (by last alert) first: chosen from the in-memory index, then read
    /// as [`Self::get_listed`] does (the whole timeline is [`Self::incident`]'s).
    pub fn incidents(&self, f: &IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        let limit = f.limit.max(1);
        let mut chosen: Vec<u64> = Vec::with_capacity(limit.min(1024));
        // Ids already chosen: in sled a failed write can leave an incident a second, older
        // row in `recent` until the next open puts it right.
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let from = f.since.map(|t| recent_key(t, 0));
        let span = (
            from.as_ref()
                .map_or(Bound::Unbounded, |k| Bound::Included(&k[..])),
            Bound::Unbounded,
        );
        self.kv.scan(Table::Recent, span, true, &mut |k, v| {
            let (id, s) = Summary::decode(k, v)?;
            if (f.statuses.is_empty() || f.statuses.contains(&s.status))
                && f.min_severity.is_none_or(|m| s.severity >= m)
                && seen.insert(id)
            {
                chosen.push(id);
            }
            Ok(chosen.len() < limit)
        })?;
        let mut out = Vec::with_capacity(chosen.len());
        for id in chosen {
            if let Some(inc) = self.get_listed(id)? {
                out.push(inc);
            }
        }
        Ok(out)
    }

    /// Alerts, newest first. Scans from the newest id backwards; one incident's alerts are
    /// read by their ids when its timeline names every one (see [`Self::incident_alerts`]).
    pub fn alerts(&self, f: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        let inc = match f.incident {
            Some(id) => self.get_row(id)?,
            None => None,
        };
        if let Some(inc) = &inc {
            if let Some(ids) = self.timeline_alert_ids(inc)? {
                return self.alerts_by_id(ids, f);
            }
        }
        self.scan_alerts(f, inc.and_then(|i| i.alert_ids))
    }

    /// Alerts newest first, from the newest row backwards: all rows, or (`ids`, an incident's
    /// first and latest alert) only the blocks between them, the block holding the first one
    /// starting at or before it.
    fn scan_alerts(
        &self,
        f: &AlertFilter,
        ids: Option<(u64, u64)>,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut out = Vec::new();
        let last = ids.map(|(_, last)| last.to_be_bytes());
        let span = match &last {
            Some(last) => (Bound::Unbounded, Bound::Included(&last[..])),
            None => ALL,
        };
        // Looking for one incident, a line that does not name it is not parsed: in a storm
        // almost every alert in the range belongs to another incident.
        let wanted = f.incident.map(|id| format!("\"incident\":{id}"));
        let keep = |line: &[u8]| {
            wanted
                .as_ref()
                .is_none_or(|w| names_number(line, w.as_bytes()))
        };
        self.kv.scan(Table::Alerts, span, true, &mut |k, v| {
            let start = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
            for a in decode_alert_row_where(k, v, keep)?.into_iter().rev() {
                if !f.admits(&a) {
                    continue;
                }
                out.push(a);
                if out.len() >= f.limit.max(1) {
                    return Ok(false);
                }
            }
            // Past the block holding the incident's first alert: done.
            Ok(ids.is_none_or(|(first, _)| start > first))
        })?;
        Ok(out)
    }

    /// The ids of `inc`'s alerts from its timeline, when it names every one (no alert entry
    /// dropped past [`MAX_TIMELINE_ALERTS`], a row that counted every alert since its first);
    /// else `None` and the caller scans.
    fn timeline_alert_ids(&self, inc: &Incident) -> Result<Option<Vec<u64>>, StoreError> {
        if inc.timeline_dropped > 0 || inc.alert_ids.is_none() || !inc.timeline.is_empty() {
            return Ok(None);
        }
        let ids: Vec<u64> = self
            .read_timeline(inc)?
            .into_iter()
            .filter_map(|e| e.alert)
            .collect();
        Ok((ids.len() as u64 == inc.alerts).then_some(ids))
    }

    /// The alerts with these ids that `f` admits, newest first: each read from the block that
    /// holds it (the row with the greatest key at or below it), a block decoded once for the
    /// ids it holds. An id retention removed is skipped.
    fn alerts_by_id(&self, mut ids: Vec<u64>, f: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        let mut block: Vec<Alert> = Vec::new();
        for id in ids {
            let held = block.first().is_some_and(|a| a.id <= id)
                && block.last().is_some_and(|a| a.id >= id);
            if !held {
                block = Vec::new();
                let at = id.to_be_bytes();
                let span = (Bound::Unbounded, Bound::Included(&at[..]));
                self.kv.scan(Table::Alerts, span, true, &mut |k, v| {
                    block = decode_alert_row(k, v)?;
                    Ok(false)
                })?;
            }
            let Ok(at) = block.binary_search_by_key(&id, |a| a.id) else {
                continue;
            };
            if f.admits(&block[at]) {
                out.push(block[at].clone());
                if out.len() >= f.limit.max(1) {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn act(
        &self,
        id: u64,
        by: &str,
        comment: Option<String>,
        action: &'static str,
        apply: impl FnOnce(&mut Incident) -> Result<&'static str, ActionError>,
    ) -> Result<Incident, ActionError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let moved = self.kv.write(|tx| {
            let Some(mut inc) = Self::get_row_in(tx, id)? else {
                return Ok(Err(ActionError::NotFound(id)));
            };
            let old = Summary::of(&inc);
            let what = match apply(&mut inc) {
                Ok(what) => what,
                Err(e) => return Ok(Err(e)),
            };
            inc.updated = Some(Timestamp::now());
            let mut timeline_row = TimelineRows::default();
            Self::append_timeline(
                tx,
                &mut timeline_row,
                &mut inc,
                TimelineEntry {
                    timestamp: Timestamp::now(),
                    what: what.into(),
                    by: Some(by.to_string()),
                    text: comment,
                    alert: None,
                },
            )?;
            if let Some(actions) = &mut inc.action_entries {
                actions.push(inc.timeline_entries - 1);
            }
            timeline_row.finish(tx)?;
            tx.put(
                Table::Incidents,
                &inc.id.to_be_bytes(),
                &Self::row_bytes(&inc),
            )?;
            if inc.status == Status::Resolved {
                close_key(tx, &inc.key, inc.id)?;
            }
            let new = Summary::of(&inc);
            put_recent(tx, id, Some(&old), Some(&new))?;
            Ok(Ok((Some(old), Some(new))))
        })??;
        self.flush()?;
        self.update_counts(&[moved]);
        tracing::info!(incident = id, by, action, "incident updated");
        self.get_incident(id)?.ok_or(ActionError::NotFound(id))
    }

    /// Removes what is older than `days` before `now` (wall time), as the event store does with
    /// its days: alerts raised before the cut-off, and incidents (whatever their status, with
    /// their timelines and grouping keys) the collector last changed before it. Alerts are in
    /// id order, which is the order they were raised, so the pass stops at the first one
    /// raised after the cut-off. Removals go in batches of at most [`RETIRE_BATCH`] keys; the
    /// correlator and analysts wait only for one batch at a time.
    pub fn apply_retention(&self, now: Timestamp, days: u32) -> Result<Retired, StoreError> {
        let cutoff = Timestamp(
            now.nanos()
                .saturating_sub(i64::from(days).saturating_mul(86_400 * 1_000_000_000)),
        );
        let mut retired = Retired::default();
        let mut old: Vec<u64> = Vec::new();
        // Whole seconds here, so at most the incidents of the cut-off's second too many: each
        // is checked against its row below.
        let cutoff_secs = cutoff.nanos().div_euclid(1_000_000_000);
        self.kv.scan(Table::Recent, ALL, false, &mut |k, v| {
            let (id, s) = Summary::decode(k, v)?;
            if i64::from(s.updated_secs) <= cutoff_secs {
                old.push(id);
            }
            Ok(true)
        })?;
        old.sort_unstable();
        old.dedup();
        for ids in old.chunks(RETIRE_BATCH) {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let gone = self.kv.write(|tx| {
                let mut gone = Vec::with_capacity(ids.len());
                let mut keys: Vec<(String, u64)> = Vec::new();
                let mut entries: Vec<Vec<u8>> = Vec::new();
                for &id in ids {
                    let Some(inc) = Self::get_row_in(tx, id)? else {
                        continue;
                    };
                    // Changed since the list was taken (an alert or an analyst): kept.
                    if inc.updated.unwrap_or(inc.last_seen) >= cutoff {
                        continue;
                    }
                    let (from, to) = (timeline_key(id, 0), timeline_key(id, u64::MAX));
                    let span = (Bound::Included(&from[..]), Bound::Excluded(&to[..]));
                    tx.scan(Table::Timeline, span, false, &mut |k, _| {
                        entries.push(k.to_vec());
                        Ok(true)
                    })?;
                    let s = Summary::of(&inc);
                    put_recent(tx, id, Some(&s), None)?;
                    gone.push((Some(s), None));
                    keys.push((inc.key, id));
                }
                // The incident rows first: in sled, a crash after leaves only unreachable
                // timeline entries.
                for (_, id) in &keys {
                    tx.remove(Table::Incidents, &id.to_be_bytes())?;
                }
                for k in &entries {
                    tx.remove(Table::Timeline, k)?;
                }
                for (key, id) in &keys {
                    close_key(tx, key, *id)?;
                }
                Ok(gone)
            })?;
            self.update_counts(&gone);
            retired.incidents += gone.len() as u64;
        }
        loop {
            let (n, done) = self.kv.write(|tx| {
                let mut n = 0;
                let mut done = true;
                let mut removed: Vec<Vec<u8>> = Vec::new();
                let mut kept_block: Option<(u64, Vec<u8>)> = None;
                tx.scan(Table::Alerts, ALL, false, &mut |k, v| {
                    let alerts = decode_alert_row(k, v)?;
                    let old = alerts.iter().take_while(|a| a.raised < cutoff).count();
                    if old == 0 {
                        return Ok(false);
                    }
                    removed.push(k.to_vec());
                    n += old;
                    if old < alerts.len() {
                        // A block raised across the cut-off keeps its recent alerts, keyed by
                        // the first of them (still below the next row's key).
                        let kept = &alerts[old..];
                        kept_block = Some((kept[0].id, encode_alert_block(kept)?));
                        return Ok(false);
                    }
                    if n >= RETIRE_BATCH {
                        done = false;
                        return Ok(false);
                    }
                    Ok(true)
                })?;
                for k in &removed {
                    tx.remove(Table::Alerts, k)?;
                }
                if let Some((id, block)) = kept_block {
                    tx.put(Table::Alerts, &id.to_be_bytes(), &block)?;
                }
                Ok((n, done))
            })?;
            retired.alerts += n as u64;
            if done {
                break;
            }
        }
        if retired != Retired::default() {
            self.flush()?;
        }
        Ok(retired)
    }

    /// Acknowledges an incident (new → acknowledged).
    pub fn ack(&self, id: u64, by: &str, comment: Option<String>) -> Result<Incident, ActionError> {
        self.act(id, by, comment, "acknowledge", |inc| match inc.status {
            Status::New => {
                inc.status = Status::Acknowledged;
                Ok("acknowledged")
            }
            s => Err(ActionError::Conflict {
                id,
                status: s.name(),
                action: "acknowledge",
            }),
        })
    }

    /// Resolves an incident (new or acknowledged → resolved).
    pub fn resolve(
        &self,
        id: u64,
        by: &str,
        comment: Option<String>,
    ) -> Result<Incident, ActionError> {
        self.act(id, by, comment, "resolve", |inc| match inc.status {
            Status::Resolved => Err(ActionError::Conflict {
                id,
                status: "resolved",
                action: "resolve",
            }),
            _ => {
                inc.status = Status::Resolved;
                Ok("resolved")
            }
        })
    }
}

/// Raw access to the tables, for tests that write what older versions or damage left.
#[cfg(test)]
impl IncidentStore {
    fn raw_rows(&self, t: Table) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        self.kv
            .scan(t, ALL, false, &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(true)
            })
            .unwrap();
        out
    }

    fn raw_len(&self, t: Table) -> usize {
        self.raw_rows(t).len()
    }

    fn raw_get(&self, t: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.kv.get(t, key).unwrap().map(|v| v.to_vec())
    }

    fn raw_put(&self, t: Table, key: &[u8], value: &[u8]) {
        self.kv.write(|tx| tx.put(t, key, value)).unwrap();
    }

    fn raw_clear(&self, t: Table) {
        let rows = self.raw_rows(t);
        self.kv
            .write(|tx| rows.iter().try_for_each(|(k, _)| tx.remove(t, k)))
            .unwrap();
    }

    fn raw_alert_id(&self) -> u64 {
        self.kv.write(|tx| tx.next_alert_id()).unwrap()
    }

    /// `recent` holds exactly one row per incident, as its row says, and the open counts are
    /// what that row set counts.
    fn assert_recent_in_step(&self) {
        let want: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut rows: Vec<_> = self
                .raw_rows(Table::Incidents)
                .iter()
                .map(|(k, v)| {
                    let inc = decode_row(k, v).unwrap();
                    let s = Summary::of(&inc);
                    (recent_key(s.last_seen, inc.id).to_vec(), s.value().to_vec())
                })
                .collect();
            rows.sort();
            rows
        };
        assert_eq!(
            self.raw_rows(Table::Recent),
            want,
            "recent against incidents"
        );
        let mut held = self.counts.lock().unwrap().clone();
        let mut counted = Counts::of(&self.kv).unwrap();
        held.open.retain(|_, n| *n > 0);
        counted.open.retain(|_, n| *n > 0);
        assert_eq!(held, counted, "open counts kept against counted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, ip: &str, t: i64, sev: Severity) -> Alert {
        let mut entities = Entities::default();
        entities.ips.insert(ip.into());
        Alert {
            id: 0,
            timestamp: Timestamp(t * 1_000_000_000),
            raised: Timestamp::now(),
            rule_id: rule.into(),
            rule_title: format!("Rule {rule}"),
            severity: sev,
            kind: "detection".into(),
            group: Vec::new(),
            value: None,
            entities,
            events: Vec::new(),
            tags: Vec::new(),
            incident: 0,
        }
    }

    /// An alert as the correlator raises it in a storm: one event reference with its summary,
    /// tags, the source address as entity.
    fn storm_alert(i: u64, t0: i64) -> Alert {
        let ip = format!("10.{}.{}.{}", (i / 65536) % 256, (i / 256) % 256, i % 256);
        let mut a = alert(
            &format!("pal.gen.{}", i % 17),
            &ip,
            t0 + (i / 5000) as i64,
            Severity::Medium,
        );
        a.entities.hosts.insert(format!("probe-{}", i % 16));
        a.tags = vec!["attack.discovery".into(), "attack.t1046".into()];
        a.events = vec![EventRef {
            timestamp: a.timestamp,
            id: format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            agent: Some(format!("probe-{}", i % 16)),
            sequence: Some(i),
            summary: Some(format!(
                "alert: port scan from {ip} to 192.0.2.{} (42 ports in 10 s)",
                i % 250
            )),
        }];
        a
    }

    /// Alert-storm figures for the incident store alone: alerts recorded per second and bytes
    /// on disk per alert, with distinct sources (a new incident per alert, as in the soak).
    /// `cargo test --release -p palisade-collector --lib incidents::tests::storm -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: prints figures"]
    fn storm() {
        let backend = bench_backend();
        let n: u64 = std::env::var("STORM_ALERTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300_000);
        let dir = tempfile::tempdir().unwrap();
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let t0 = Timestamp::now().nanos() / 1_000_000_000 - 3600;
        // One incident with an alert before the storm and one after: sparse, as a long-lived
        // incident is in a storm of other incidents' alerts.
        let sparse = |t: i64| alert("pal.sparse", "192.0.2.77", t, Severity::High);
        let first = s.record(vec![sparse(t0)]).unwrap()[0].clone();
        let started = std::time::Instant::now();
        let mut last_flush = std::time::Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(400) {
            s.record(chunk.iter().map(|&i| storm_alert(i, t0)).collect())
                .unwrap();
            if last_flush.elapsed() >= std::time::Duration::from_millis(200) {
                s.flush().unwrap();
                last_flush = std::time::Instant::now();
            }
        }
        s.flush().unwrap();
        let secs = started.elapsed().as_secs_f64();
        let last = s.record(vec![sparse(t0 + 60)]).unwrap()[0].clone();
        assert_eq!(first.incident, last.incident);
        let disk = s.kv.size_on_disk().unwrap();
        let sizes: Vec<(&str, u64)> = [
            Table::Alerts,
            Table::Incidents,
            Table::Timeline,
            Table::Open,
        ]
        .into_iter()
        .map(|t| {
            (
                t.name(),
                s.raw_rows(t)
                    .iter()
                    .map(|(k, v)| (k.len() + v.len()) as u64)
                    .sum(),
            )
        })
        .collect();
        println!(
            "storm: {n} alerts in {secs:.1} s = {:.0} alerts/s; {:.0} bytes on disk per alert; \
             live bytes per alert: {}",
            n as f64 / secs,
            disk as f64 / n as f64,
            sizes
                .iter()
                .map(|(k, b)| format!("{k} {:.0}", *b as f64 / n as f64))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // What an analyst waits for: the newest alerts, and one incident's alerts (read from
        // the blocks between its first and latest alert; rows from before that read them all).
        let timed = |f: AlertFilter| {
            let t = std::time::Instant::now();
            let found = s.alerts(&f).unwrap().len();
            (found, t.elapsed().as_secs_f64() * 1000.0)
        };
        let (newest, newest_ms) = timed(AlertFilter {
            limit: 100,
            ..Default::default()
        });

        let (one, one_ms) = timed(AlertFilter {
            incident: Some(first.incident + 1),
            limit: 1000,
            ..Default::default()
        });
        let (all, all_ms) = timed(AlertFilter {
            limit: usize::MAX,
            ..Default::default()
        });
        let sparse_f = AlertFilter {
            incident: Some(first.incident),
            limit: 1000,
            ..Default::default()
        };
        let (by_id, by_id_ms) = timed(sparse_f.clone());
        let t = std::time::Instant::now();
        let scanned = s
            .scan_alerts(&sparse_f, Some((first.id, last.id)))
            .unwrap()
            .len();
        let scan_ms = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!((by_id, scanned), (2, 2));
        // Twenty long-lived incidents, the newest, each with a whole timeline of alert entries
        // and an analyst's acknowledgement: what a listing shows first in a long storm.
        for k in 0..20u64 {
            let ip = format!("192.0.2.{}", 100 + k);
            let long = (0..MAX_TIMELINE_ALERTS as i64)
                .map(|j| alert("pal.long", &ip, t0 + 120 + j / 100, Severity::High))
                .collect();
            let id = s.record(long).unwrap()[0].incident;
            s.ack(id, "analyst", Some("looking".into())).unwrap();
        }
        // The listing and the open counts, from the index of every incident.
        let t = std::time::Instant::now();
        let listed = s
            .incidents(&IncidentFilter {
                limit: 20,
                ..Default::default()
            })
            .unwrap();
        let list_ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(listed.iter().all(|i| i.timeline.len() == 2));
        let t = std::time::Instant::now();
        let whole: usize = listed
            .iter()
            .map(|i| s.incident(i.id).unwrap().unwrap().timeline.len())
            .sum();
        let whole_ms = t.elapsed().as_secs_f64() * 1000.0;
        let timeline_rows = s.raw_len(Table::Timeline);
        let t = std::time::Instant::now();
        let (open, _) = s.open_counts();
        let counts_us = t.elapsed().as_secs_f64() * 1e6;
        println!(
            "storm: newest {} of {} incidents listed in {list_ms:.1} ms (opening alert and \
             actions; their whole timelines, {whole} entries, read in {whole_ms:.1} ms); open \
             counts in {counts_us:.0} µs; {timeline_rows} timeline rows (keys) in all",
            listed.len(),
            open.values().sum::<u64>()
        );
        println!(
            "storm: newest {newest} alerts listed in {newest_ms:.1} ms; an incident's {one} \
             alert(s) found in {one_ms:.1} ms (its own blocks; reading all {all} takes \
             {all_ms:.0} ms); an incident with one alert before the storm and one after: \
             {by_id_ms:.1} ms by id from its timeline, {scan_ms:.0} ms scanning the blocks \
             between (lines not naming it left unparsed)"
        );
    }

    /// Alert `i` of a storm in which alerts join incidents already open, as in the hour-long
    /// soak: six rules, `sources` source addresses spread by a hash, destinations from 250
    /// addresses and agents from 16 (so an incident's entity lists grow as it lives), 8,000
    /// alerts per second of event time.
    fn joining_alert(i: u64, sources: u64, t0: i64) -> Alert {
        let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
        let g = h % sources;
        let src = format!("10.{}.{}.{}", (g >> 16) % 256, (g >> 8) % 256, g % 256);
        let mut a = alert(
            &format!("pal.join.{}", (h >> 32) % 6),
            &src,
            t0 + (i / 8000) as i64,
            Severity::Medium,
        );
        let dst = format!("172.16.{}.10", i % 250);
        a.entities.ips.insert(dst.clone());
        a.entities.hosts.insert(format!("probe-{}", i % 16));
        a.events = vec![EventRef {
            timestamp: a.timestamp,
            id: format!("{:032x}", h),
            agent: Some(format!("probe-{}", i % 16)),
            sequence: Some(i),
            summary: Some(format!(
                "alert: port scan from {src} to {dst} (42 ports in 10 s)"
            )),
        }];
        a
    }

    /// The incident writer's cost as incidents age, with alerts joining incidents already
    /// open (the hour-long soak's load: ~600,000 open incidents, each alert touching one at
    /// random): alerts recorded per second of the writer, for each tenth of the run, and the
    /// incident rows' and timeline rows' mean size at the end.
    /// `STORM_SOURCES=100000 STORM_ALERTS=6000000 cargo test --release -p palisade-collector
    /// --lib incidents::tests::joining_storm -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: prints figures"]
    fn joining_storm() {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (sources, n) = (var("STORM_SOURCES", 20_000), var("STORM_ALERTS", 1_000_000));
        let dir = tempfile::tempdir().unwrap();
        let s = IncidentStore::open_with(dir.path(), 3600, bench_backend()).unwrap();
        let t0 = Timestamp::now().nanos() / 1_000_000_000 - 7200;
        let tenth = (n / 10).max(5000);
        let (mut busy, mut done) = (0.0, 0);
        let mut last_flush = std::time::Instant::now();
        while done < n {
            let batch: Vec<Alert> = (done..(done + 5000).min(n))
                .map(|i| joining_alert(i, sources, t0))
                .collect();
            done += batch.len() as u64;
            let t = std::time::Instant::now();
            s.record(batch).unwrap();
            if last_flush.elapsed() >= std::time::Duration::from_millis(200) {
                s.flush().unwrap();
                last_flush = std::time::Instant::now();
            }
            busy += t.elapsed().as_secs_f64();
            if done % tenth == 0 || done == n {
                println!(
                    "joining storm: {done} alerts, {} open incidents: {:.0} alerts/s in the last {tenth}",
                    s.open_counts().0.values().sum::<u64>(),
                    tenth as f64 / busy
                );
                busy = 0.0;
            }
        }
        let mean = |t: Table| {
            let rows = s.raw_rows(t);
            rows.iter().map(|(_, v)| v.len()).sum::<usize>() / rows.len().max(1)
        };
        println!(
            "joining storm: mean row {} bytes in incidents, {} in timeline; {} MB on disk",
            mean(Table::Incidents),
            mean(Table::Timeline),
            s.kv.size_on_disk().unwrap() >> 20
        );
    }

    /// The engine a benchmark runs on: `STORM_BACKEND=sled` or `redb` (the default).
    fn bench_backend() -> Backend {
        match std::env::var("STORM_BACKEND").as_deref() {
            Ok("sled") => Backend::Sled,
            _ => Backend::Redb,
        }
    }

    #[test]
    fn a_sled_database_migrates_to_redb_whole_and_goes_on_from_its_ids() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("incidents");
        let all = IncidentFilter {
            limit: usize::MAX,
            ..Default::default()
        };
        let every_alert = AlertFilter {
            limit: usize::MAX,
            ..Default::default()
        };
        let (incidents, alerts) = {
            let s = IncidentStore::open_with(&dir, 3600, Backend::Sled).unwrap();
            // Incidents with long timelines (several rows), a block of many alerts, actions.
            for call in 0..30 {
                let batch: Vec<Alert> = (0..50)
                    .map(|i| {
                        alert(
                            &format!("r{}", i % 3),
                            &format!("10.0.0.{}", i % 7),
                            1000 + call,
                            Severity::Medium,
                        )
                    })
                    .collect();
                s.record(batch).unwrap();
            }
            s.ack(1, "analyst-1", Some("looking".into())).unwrap();
            s.resolve(2, "analyst-1", None).unwrap();
            s.flush().unwrap();
            let incidents: Vec<Incident> = s
                .incidents(&all)
                .unwrap()
                .iter()
                .map(|i| s.incident(i.id).unwrap().unwrap())
                .collect();
            (incidents, s.alerts(&every_alert).unwrap())
        };
        assert_eq!(alerts.len(), 1500);
        let m = IncidentStore::migrate_to_redb(&dir, DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(m.rows[Table::Incidents as usize], incidents.len() as u64);
        assert!(
            m.sled_kept_at.join("conf").exists(),
            "sled kept at {:?}",
            m.sled_kept_at
        );
        assert!(!t.path().join("incidents.migrating").exists());
        // Asked for sled, the directory is redb now, holding the same.
        let s = IncidentStore::open_with(&dir, 3600, Backend::Sled).unwrap();
        assert_eq!(s.kv.backend(), Backend::Redb);
        let again: Vec<Incident> = s
            .incidents(&all)
            .unwrap()
            .iter()
            .map(|i| s.incident(i.id).unwrap().unwrap())
            .collect();
        assert_eq!(again, incidents);
        assert_eq!(s.alerts(&every_alert).unwrap(), alerts);
        // Ids go on from sled's; the open keys still lead alerts to their incidents.
        let max = alerts.iter().map(|a| a.id).max().unwrap();
        let next = s
            .record(vec![alert("r0", "10.0.0.0", 1031, Severity::Medium)])
            .unwrap();
        assert!(next[0].id > max);
        let joined = incidents
            .iter()
            .find(|i| i.key == group_key(&next[0]).0)
            .unwrap();
        assert_eq!(next[0].incident, joined.id);
        drop(s);
        // Twice: refused, saying why.
        let err = IncidentStore::migrate_to_redb(&dir, DEFAULT_CACHE_BYTES)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already redb: nothing to migrate"), "{err}");
    }

    /// An `INC-n` names one incident for good: not after retention removed every incident
    /// (an open used to start after the highest id held, so back at INC-1), nor after an
    /// unclean stop, which may have lost incidents already seen (ids skip ahead, as alert ids
    /// do).
    fn incident_ids_are_never_handed_out_again(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        let day = 86_400i64;
        let secs = now.nanos() / 1_000_000_000;
        let old = |rule: &str, ip: &str| Alert {
            raised: Timestamp(now.nanos() - 200 * day * 1_000_000_000),
            ..alert(rule, ip, secs - 200 * day, Severity::High)
        };
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let first = s
            .record(vec![old("r1", "10.0.0.1"), old("r2", "10.0.0.2")])
            .unwrap();
        let ids: Vec<u64> = first.iter().map(|a| a.incident).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(
            s.apply_retention(now, 180).unwrap(),
            Retired {
                alerts: 2,
                incidents: 2
            }
        );
        assert_eq!(s.raw_len(Table::Incidents), 0);
        drop(s);
        // Every incident gone: the next one is still INC-3.
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let next = s
            .record(vec![alert("r1", "10.0.0.1", secs, Severity::High)])
            .unwrap();
        assert_eq!(next[0].incident, 3);
        drop(s);
        // After an unclean stop the ids skip ahead.
        kv::mark_unclean(dir.path());
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let after = s
            .record(vec![alert("r9", "10.0.0.9", secs, Severity::Low)])
            .unwrap();
        assert_eq!(after[0].incident, 4 + kv::INCIDENT_IDS_SKIPPED_AFTER_CRASH);
        // The same entity and rule still joins its incident.
        let joined = s
            .record(vec![alert("r1", "10.0.0.1", secs + 1, Severity::High)])
            .unwrap();
        assert_eq!(joined[0].incident, 3);
        drop(s);
        // A clean close: no skip.
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let clean = s
            .record(vec![alert("r8", "10.0.0.8", secs, Severity::Low)])
            .unwrap();
        assert_eq!(clean[0].incident, 5 + kv::INCIDENT_IDS_SKIPPED_AFTER_CRASH);
        s.assert_recent_in_step();
    }

    on_both_engines!(
        tallies_and_listings_survive_a_reopen_and_follow_actions,
        incident_ids_are_never_handed_out_again,
        alerts_group_by_rule_and_entity_within_the_window,
        ack_keeps_the_incident_open_and_resolve_closes_it,
        alerts_are_stored_in_blocks_and_read_back_in_order_with_rows_from_before_blocks,
        an_incidents_alerts_are_read_from_the_blocks_between_its_first_and_latest,
        retention_splits_a_block_raised_across_the_cut_off,
        retention_removes_old_alerts_and_incidents_with_their_timelines_and_keys,
        ids_survive_reopen,
        the_incident_row_does_not_grow_with_its_timeline,
        timeline_rows_hold_sixteen_entries_and_an_uncounted_entry_is_overwritten,
        a_listing_reads_the_opening_alert_and_the_actions_not_every_alert_entry,
        an_inline_timeline_from_an_older_store_is_kept_and_moved,
        the_listing_order_is_rebuilt_where_it_is_missing_or_behind,
    );

    /// Resident memory per alert recorded, once the cache is full: sled keeps metadata for
    /// every page of its trees resident (cached or not), so RSS grows with the keys ever
    /// written; redb does not. Records alerts from 20,000 sources × 5 rules (incidents of ~15
    /// alerts, as the SOC soak's grow), with timeline rows of 16 entries and with a row per
    /// entry, each in a fresh store, and prints RSS growth per alert and timeline keys for
    /// each. Run alone (RSS is the process's), `STORM_BACKEND=sled` or `redb`:
    /// `cargo test --release -p palisade-collector --lib resident_bytes_per_key -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: prints figures"]
    fn resident_bytes_per_key() {
        let backend = bench_backend();
        let rss = || crate::metrics::resident_bytes().unwrap_or(0) as f64;
        let n: u64 = std::env::var("RSS_ALERTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_500_000);
        let t0 = Timestamp::now().nanos() / 1_000_000_000 - 3600;
        for chunked in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
            s.chunk_timelines = chunked;
            // (alerts recorded, RSS) every 100,000 alerts once the first 300,000 filled the cache.
            let mut points = Vec::new();
            for start in (0..n).step_by(400) {
                let calls: Vec<Alert> = (start..(start + 400).min(n))
                    .map(|i| {
                        let src = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 20_000;
                        let ip = format!("10.0.{}.{}", src / 256, src % 256);
                        alert(
                            &format!("r{}", i % 5),
                            &ip,
                            t0 + (i / 1000) as i64,
                            Severity::Medium,
                        )
                    })
                    .collect();
                s.record(calls).unwrap();
                if start % 2000 == 0 {
                    s.flush().unwrap();
                }
                if start >= 300_000 && start % 100_000 == 0 {
                    points.push((start as f64, rss()));
                }
            }
            let (x0, r0) = points[0];
            let (x1, r1) = points[points.len() - 1];
            println!(
                "{backend}: {} — RSS {:.0} → {:.0} MiB from alert {x0:.0} to {x1:.0}: {:.1} bytes per \
                 alert; {} timeline rows (keys) for {} incidents",
                if chunked {
                    "16 entries per timeline row"
                } else {
                    "a timeline row per entry"
                },
                r0 / 1048576.0,
                r1 / 1048576.0,
                (r1 - r0) / (x1 - x0),
                s.raw_len(Table::Timeline),
                s.raw_len(Table::Incidents)
            );
        }
    }

    fn tallies_and_listings_survive_a_reopen_and_follow_actions(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now().nanos() / 1_000_000_000;
        {
            let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
            s.record(vec![
                alert("r1", "10.0.0.1", now - 30, Severity::High),
                alert("r1", "10.0.0.2", now - 20, Severity::Medium),
                alert("r2", "10.0.0.3", now - 7200, Severity::Low),
            ])
            .unwrap();
            s.record(vec![alert("r1", "10.0.0.1", now - 10, Severity::High)])
                .unwrap();
            s.flush().unwrap();
        }
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let (open, new) = s.open_counts();
        assert_eq!(new, 3);
        assert_eq!(open.get(&Severity::High), Some(&1));
        assert_eq!(open.get(&Severity::Low), Some(&1));
        s.ack(1, "sec", None).unwrap();
        s.resolve(2, "sec", None).unwrap();
        let (open, new) = s.open_counts();
        assert_eq!((open.values().sum::<u64>(), new), (2, 1));
        s.assert_recent_in_step();
        let hour_ago = Timestamp((now - 3600) * 1_000_000_000);
        let later = Timestamp((now + 120) * 1_000_000_000);
        let counts = s.alert_counts(hour_ago, later);
        assert_eq!(counts.get("Rule r1"), Some(&3), "{counts:?}");
        assert_eq!(counts.get("Rule r2"), None);
        let listed = s
            .incidents(&IncidentFilter {
                statuses: vec![Status::New, Status::Acknowledged],
                limit: 10,
                ..IncidentFilter::default()
            })
            .unwrap();
        let ids: Vec<u64> = listed.iter().map(|i| i.id).collect();
        assert_eq!(ids, vec![1, 3], "newest first, resolved left out");
        let one = s
            .incidents(&IncidentFilter {
                limit: 1,
                ..IncidentFilter::default()
            })
            .unwrap();
        assert_eq!(one[0].id, 1);
        // `since` by latest alert: only those seen in the last 25 seconds.
        let since = s
            .incidents(&IncidentFilter {
                since: Some(Timestamp((now - 25) * 1_000_000_000)),
                limit: 10,
                ..IncidentFilter::default()
            })
            .unwrap();
        assert_eq!(since.iter().map(|i| i.id).collect::<Vec<_>>(), vec![1, 2]);
        let high = s
            .incidents(&IncidentFilter {
                min_severity: Some(Severity::High),
                limit: 10,
                ..IncidentFilter::default()
            })
            .unwrap();
        assert_eq!(high.iter().map(|i| i.id).collect::<Vec<_>>(), vec![1]);
    }

    /// `recent` (the listing's order) is derived from `incidents`: built where it is missing
    /// (a database from before it: both engines), and in sled put right at every open (a crash
    /// can leave it behind, each table being a batch of its own).
    fn the_listing_order_is_rebuilt_where_it_is_missing_or_behind(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let all = IncidentFilter {
            limit: usize::MAX,
            ..IncidentFilter::default()
        };
        let listed = |s: &IncidentStore| -> Vec<u64> {
            s.incidents(&all).unwrap().iter().map(|i| i.id).collect()
        };
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        for k in 0..40i64 {
            s.record(vec![alert(
                &format!("r{}", k % 4),
                &format!("10.0.1.{}", k % 10),
                1_000 + (k * 37) % 101,
                Severity::ALL[(k % 5) as usize],
            )])
            .unwrap();
        }
        s.resolve(3, "sec", None).unwrap();
        s.assert_recent_in_step();
        let before = listed(&s);
        let counts = s.open_counts();
        assert_eq!(before.len(), s.raw_len(Table::Incidents));
        // Missing: as a database from before `recent` has it.
        s.raw_clear(Table::Recent);
        drop(s);
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        s.assert_recent_in_step();
        assert_eq!(listed(&s), before);
        assert_eq!(s.open_counts(), counts);
        if backend == Backend::Sled {
            // Behind: one incident's row missing, another's old row left over.
            let rows = s.raw_rows(Table::Recent);
            let (gone, moved) = (&rows[3], &rows[7]);
            s.kv.write(|tx| {
                tx.remove(Table::Recent, &gone.0)?;
                let (id, sum) = Summary::decode(&moved.0, &moved.1)?;
                let older = Summary {
                    last_seen: Timestamp(sum.last_seen.nanos() - 1),
                    ..sum
                };
                tx.put(
                    Table::Recent,
                    &recent_key(older.last_seen, id),
                    &older.value(),
                )
            })
            .unwrap();
            drop(s);
            let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
            s.assert_recent_in_step();
            assert_eq!(listed(&s), before);
            assert_eq!(s.open_counts(), counts);
        }
    }

    #[test]
    fn recent_rows_sort_by_latest_alert_then_id_and_read_back() {
        let sum = |t: i64, id: u64| {
            let s = Summary {
                last_seen: Timestamp(t),
                updated_secs: 1_700_000_000,
                status: Status::Acknowledged,
                severity: Severity::High,
            };
            (recent_key(s.last_seen, id), s)
        };
        let rows = [
            sum(i64::MIN, 9),
            sum(-5, 1),
            sum(0, 2),
            sum(0, 3),
            sum(7, 1),
            sum(i64::MAX, 0),
        ];
        assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "key order");
        for (k, s) in &rows {
            let (id, back) = Summary::decode(k, &s.value()).unwrap();
            assert_eq!((recent_key(back.last_seen, id), back), (*k, *s));
        }
        for (k, v) in [
            (&rows[0].0[..3], &rows[0].1.value()[..]),
            (&rows[0].0[..], &[0u8, 0, 0, 0, 9, 3][..]),
        ] {
            let e = Summary::decode(k, v).unwrap_err().to_string();
            assert!(e.contains("recent") && e.contains("bad row"), "{e}");
        }
        // Counts follow moves: new → acknowledged → resolved → retired.
        let mut c = Counts::default();
        let new = Summary {
            status: Status::New,
            ..rows[1].1
        };
        c.apply(None, Some(&new));
        assert_eq!((c.open.get(&Severity::High), c.new), (Some(&1), 1));
        c.apply(Some(&new), Some(&rows[1].1));
        assert_eq!((c.open.get(&Severity::High), c.new), (Some(&1), 0));
        let resolved = Summary {
            status: Status::Resolved,
            ..rows[1].1
        };
        c.apply(Some(&rows[1].1), Some(&resolved));
        c.apply(Some(&resolved), None);
        assert_eq!((c.open.get(&Severity::High), c.new), (Some(&0), 0));
    }

    fn alerts_group_by_rule_and_entity_within_the_window(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let a = s
            .record(vec![
                alert("r1", "10.0.0.1", 1000, Severity::Medium),
                alert("r1", "10.0.0.1", 1100, Severity::High),
                alert("r1", "10.0.0.2", 1100, Severity::Low),
                alert("r2", "10.0.0.1", 1200, Severity::Low),
                alert("r1", "10.0.0.1", 1100 + 3601, Severity::Low),
            ])
            .unwrap();
        let incs: Vec<u64> = a.iter().map(|a| a.incident).collect();
        assert_eq!(incs, vec![1, 1, 2, 3, 4]);
        let i1 = s.incident(1).unwrap().unwrap();
        assert_eq!(i1.alerts, 2);
        assert_eq!(i1.severity, Severity::High);
        assert_eq!(i1.timeline.len(), 2);
        assert_eq!(i1.title, "Rule r1 (ip=10.0.0.1)");
    }

    fn ack_keeps_the_incident_open_and_resolve_closes_it(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        s.record(vec![alert("r1", "10.0.0.1", 1000, Severity::Medium)])
            .unwrap();
        let i = s.ack(1, "soc-lead", Some("looking".into())).unwrap();
        assert_eq!(i.status, Status::Acknowledged);
        assert!(matches!(
            s.ack(1, "x", None),
            Err(ActionError::Conflict { .. })
        ));
        let a = s
            .record(vec![alert("r1", "10.0.0.1", 1010, Severity::Medium)])
            .unwrap();
        assert_eq!(a[0].incident, 1);
        s.resolve(1, "soc-lead", Some("blocked at firewall".into()))
            .unwrap();
        let a = s
            .record(vec![alert("r1", "10.0.0.1", 1020, Severity::Medium)])
            .unwrap();
        assert_eq!(a[0].incident, 2, "a resolved incident is not reopened");
        let i1 = s.incident(1).unwrap().unwrap();
        let whats: Vec<&str> = i1.timeline.iter().map(|t| t.what.as_str()).collect();
        assert_eq!(whats, vec!["alert", "acknowledged", "alert", "resolved"]);
        assert!(matches!(s.ack(9, "x", None), Err(ActionError::NotFound(9))));
        let open = s
            .incidents(&IncidentFilter {
                statuses: vec![Status::New, Status::Acknowledged],
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), vec![2]);
    }

    fn all_alerts(s: &IncidentStore) -> Vec<Alert> {
        s.alerts(&AlertFilter {
            limit: usize::MAX,
            ..Default::default()
        })
        .unwrap()
    }

    fn alerts_are_stored_in_blocks_and_read_back_in_order_with_rows_from_before_blocks(
        backend: Backend,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::now().nanos() / 1_000_000_000 - 600;
        let legacy = {
            let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
            // A row as stores before blocks wrote it: one alert's JSON under its id.
            let mut a = storm_alert(7, t0);
            a.id = s.raw_alert_id();
            s.raw_put(
                Table::Alerts,
                &a.id.to_be_bytes(),
                &serde_json::to_vec(&a).unwrap(),
            );
            a
        };
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let n = 2 * ALERTS_PER_BLOCK as u64 + 5;
        let stored = s
            .record((0..n).map(|i| storm_alert(i, t0)).collect())
            .unwrap();
        // One call: three blocks (two full and five alerts), plus the old row.
        assert_eq!(s.raw_len(Table::Alerts), 4);
        let listed = all_alerts(&s);
        assert_eq!(listed.len() as u64, n + 1);
        let mut want: Vec<u64> = stored.iter().map(|a| a.id).collect();
        want.push(legacy.id);
        want.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(listed.iter().map(|a| a.id).collect::<Vec<_>>(), want);
        assert_eq!(listed.last().unwrap(), &legacy);
        assert_eq!(listed[0], *stored.last().unwrap());
        // Filters and limits cross block edges.
        let one_rule = s
            .alerts(&AlertFilter {
                rule: Some("pal.gen.3".into()),
                limit: 200,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            one_rule.len() as u64,
            (0..n).filter(|i| i % 17 == 3).count() as u64
        );
        assert!(one_rule.iter().all(|a| a.rule_id == "pal.gen.3"));
        assert!(one_rule.windows(2).all(|w| w[0].id > w[1].id));
        // The tallies rebuilt at open count every alert, blocks and old row alike.
        drop(s);
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let counted: u64 = s
            .alert_counts(Timestamp((t0 - 60) * 1_000_000_000), Timestamp::now())
            .values()
            .sum();
        assert_eq!(counted, n + 1);
        // The block is much smaller than the rows it replaces.
        let block_bytes: usize = s.raw_rows(Table::Alerts).iter().map(|(_, v)| v.len()).sum();
        let row_bytes: usize = listed
            .iter()
            .map(|a| serde_json::to_vec(a).unwrap().len())
            .sum();
        assert!(
            block_bytes * 4 < row_bytes,
            "blocks {block_bytes} bytes, rows {row_bytes}"
        );
    }

    fn an_incidents_alerts_are_read_from_the_blocks_between_its_first_and_latest(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::now().nanos() / 1_000_000_000 - 600;
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let mut mine = Vec::new();
        let mut second_blocks = Vec::new();
        for round in 0..3u64 {
            let mut batch: Vec<Alert> = (0..1500)
                .map(|i| storm_alert(round * 1500 + i, t0))
                .collect();
            batch.insert(
                700,
                alert("rx", "10.9.9.9", t0 + round as i64, Severity::High),
            );
            let stored = s.record(batch).unwrap();
            mine.push(stored[700].clone());
            second_blocks.push(stored[ALERTS_PER_BLOCK].id);
        }
        let inc = mine[0].incident;
        assert!(mine.iter().all(|a| a.incident == inc));
        assert_eq!(
            s.incident(inc).unwrap().unwrap().alert_ids,
            Some((mine[0].id, mine[2].id))
        );
        // Damaged rows after its latest and before its first alert: a listing of everything
        // meets them, the incident's own listing does not read them.
        for key in [u64::MAX, 0] {
            s.raw_put(Table::Alerts, &key.to_be_bytes(), b"garbage");
        }
        assert!(s
            .alerts(&AlertFilter {
                limit: usize::MAX,
                ..Default::default()
            })
            .is_err());
        let f = AlertFilter {
            incident: Some(inc),
            limit: 1000,
            ..Default::default()
        };
        let want: Vec<Alert> = mine.iter().rev().cloned().collect();
        let range = Some((mine[0].id, mine[2].id));
        // Its timeline names all three: read by id. The scan of the range (what an incident
        // with dropped timeline entries gets) finds the same.
        assert_eq!(s.alerts(&f).unwrap(), want);
        assert_eq!(s.scan_alerts(&f, range).unwrap(), want);
        // A damaged block inside the range, holding none of its alerts: read by id, it is not
        // touched; the scan meets it.
        s.raw_put(Table::Alerts, &second_blocks[0].to_be_bytes(), b"garbage");
        assert_eq!(s.alerts(&f).unwrap(), want);
        assert!(s.scan_alerts(&f, range).is_err());
        // The limit keeps the newest.
        let newest = s.alerts(&AlertFilter { limit: 2, ..f }).unwrap();
        assert_eq!(newest, want[..2]);
    }

    #[test]
    fn a_line_names_an_incident_only_with_its_whole_number() {
        let line = br#"{"id":5,"rule_title":"\"incident\":12","incident":123}"#;
        assert!(names_number(line, br#""incident":123"#));
        assert!(!names_number(line, br#""incident":12"#));
        assert!(!names_number(line, br#""incident":1"#));
        assert!(names_number(br#"{"incident":12}"#, br#""incident":12"#));
        assert!(names_number(
            br#"{"incident":12,"x":1}"#,
            br#""incident":12"#
        ));
    }

    #[test]
    fn a_damaged_alert_row_is_reported_with_its_key() {
        let key = 42u64.to_be_bytes();
        let mut block = encode_alert_block(&[storm_alert(1, 1000), storm_alert(2, 1000)]).unwrap();
        assert_eq!(decode_alert_row(&key, &block).unwrap().len(), 2);
        for (bytes, why) in [
            (b"garbage".to_vec(), "neither an alert nor an alert block"),
            (b"PAB1\0\0".to_vec(), "truncated block header"),
            (b"{\"id\":".to_vec(), "row 42"),
        ] {
            let e = decode_alert_row(&key, &bytes).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("alerts"), "{e}");
        }
        // A wrong count, and a payload cut short.
        block[7] = 3;
        let e = decode_alert_row(&key, &block).unwrap_err().to_string();
        assert!(e.contains("holds 2 alerts, not 3"), "{e}");
        block.truncate(block.len() - 4);
        assert!(decode_alert_row(&key, &block).is_err());
    }

    fn retention_splits_a_block_raised_across_the_cut_off(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let secs = now.nanos() / 1_000_000_000;
        // One call (one block): three alerts raised 200 days ago, then two raised now.
        let alerts: Vec<Alert> = (0..5)
            .map(|i| {
                let mut a = alert("r1", &format!("10.0.0.{i}"), secs - 60, Severity::Low);
                if i < 3 {
                    a.raised = Timestamp(now.nanos() - 200 * 86_400 * 1_000_000_000);
                }
                a
            })
            .collect();
        let stored = s.record(alerts).unwrap();
        assert_eq!(s.raw_len(Table::Alerts), 1);
        let retired = s.apply_retention(now, 180).unwrap();
        assert_eq!(retired.alerts, 3);
        assert_eq!(
            all_alerts(&s).iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![stored[4].id, stored[3].id]
        );
        assert_eq!(s.raw_rows(Table::Alerts)[0].0, stored[3].id.to_be_bytes());
        assert_eq!(s.apply_retention(now, 180).unwrap().alerts, 0);
    }

    fn retention_removes_old_alerts_and_incidents_with_their_timelines_and_keys(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        let day = 86_400i64;
        let secs = now.nanos() / 1_000_000_000;
        let raised = |a: Alert, days_ago: i64| Alert {
            raised: Timestamp(now.nanos() - days_ago * day * 1_000_000_000),
            ..a
        };
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        // Raised 200 days ago: two alerts in one incident, one in another.
        let old = s
            .record(vec![
                raised(
                    alert("r1", "10.0.0.1", secs - 200 * day, Severity::High),
                    200,
                ),
                raised(
                    alert("r1", "10.0.0.1", secs - 200 * day + 5, Severity::High),
                    200,
                ),
                raised(
                    alert("r2", "10.0.0.2", secs - 200 * day, Severity::Low),
                    200,
                ),
            ])
            .unwrap();
        // An old incident an analyst acts on today is kept (its alert is not).
        s.record(vec![raised(
            alert("r4", "10.0.0.5", secs - 190 * day, Severity::Low),
            190,
        )])
        .unwrap();
        // From a capture of 2019 replayed today, and live: both kept.
        let kept = s
            .record(vec![
                alert("r3", "10.0.0.3", 1_560_000_000, Severity::Medium),
                alert("r1", "10.0.0.4", secs - 10, Severity::High),
            ])
            .unwrap();
        let acted = s
            .incidents(&IncidentFilter {
                statuses: vec![],
                min_severity: None,
                since: None,
                limit: 100,
            })
            .unwrap();
        let r4 = acted.iter().find(|i| i.rule_id == "r4").unwrap().id;
        s.ack(r4, "analyst-1", Some("looking".into())).unwrap();
        // Entries in the tree and in the row's tail.
        let timeline_of = |s: &IncidentStore, id: u64| {
            s.raw_rows(Table::Timeline)
                .iter()
                .filter(|(k, _)| k[..8] == id.to_be_bytes())
                .map(|(k, v)| decode_timeline_row(k, v).unwrap().len())
                .sum::<usize>()
                + s.get_row(id).unwrap().map_or(0, |i| i.timeline_tail.len())
        };
        let (inc_a, inc_b) = (old[0].incident, old[2].incident);
        assert_eq!(timeline_of(&s, inc_a), 2);

        let retired = s.apply_retention(now, 180).unwrap();
        assert_eq!(
            retired,
            Retired {
                alerts: 4,
                incidents: 2
            }
        );
        assert!(s.incident(inc_a).unwrap().is_none());
        assert!(s.incident(inc_b).unwrap().is_none());
        assert_eq!(timeline_of(&s, inc_a), 0);
        assert_eq!(timeline_of(&s, inc_b), 0);
        assert!(s.raw_get(Table::Open, b"r1|ip=10.0.0.1").is_none());
        for a in &kept {
            assert_eq!(s.incident(a.incident).unwrap().unwrap().alerts, 1);
        }
        let r4_now = s.incident(r4).unwrap().unwrap();
        assert_eq!(r4_now.timeline.len(), 2, "alert and acknowledgement kept");
        let listed = s
            .alerts(&AlertFilter {
                since: None,
                until: None,
                min_severity: None,
                rule: None,
                incident: None,
                limit: 100,
            })
            .unwrap();
        assert_eq!(
            listed.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![kept[1].id, kept[0].id]
        );
        let (open_by, _) = s.open_counts();
        assert_eq!(open_by.values().sum::<u64>(), 3);
        // A second pass has nothing left to do; the same entity opens a fresh incident.
        assert_eq!(s.apply_retention(now, 180).unwrap(), Retired::default());
        let again = s
            .record(vec![alert("r1", "10.0.0.1", secs, Severity::High)])
            .unwrap();
        assert!(again[0].incident > r4);
        s.assert_recent_in_step();
        drop(s);
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        assert_eq!(s.open_counts().0.values().sum::<u64>(), 4);
        s.assert_recent_in_step();
    }

    fn ids_survive_reopen(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
            s.record(vec![alert("r1", "10.0.0.1", 1000, Severity::Medium)])
                .unwrap();
            s.flush().unwrap();
        }
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let a = s
            .record(vec![alert("r9", "10.0.0.1", 1000, Severity::Medium)])
            .unwrap();
        assert_eq!(a[0].incident, 2);
        assert!(a[0].id > 1);
    }

    /// An alert joining an incident appends one timeline entry: the incident's row holds at
    /// most a chunk's worth of entries (its tail) however many alerts it gathers (it was
    /// rewritten whole, timeline included, for every alert), and the timeline still reads back
    /// complete and in order.
    fn the_incident_row_does_not_grow_with_its_timeline(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        s.record(vec![alert("r1", "10.0.0.1", 1000, Severity::Medium)])
            .unwrap();
        let row = |s: &IncidentStore| {
            s.raw_get(Table::Incidents, &1u64.to_be_bytes())
                .unwrap()
                .len()
        };
        let one = row(&s);
        s.record(vec![alert("r1", "10.0.0.1", 1001, Severity::Medium)])
            .unwrap();
        // What an entry of the tail takes, and the row without its tail.
        let entry = row(&s) - one;
        let first = one - entry;
        let mut largest = 0;
        for t in 2..300 {
            s.record(vec![alert("r1", "10.0.0.1", 1000 + t, Severity::Medium)])
                .unwrap();
            largest = largest.max(row(&s));
            if (t + 1) % 16 == 0 {
                assert!(
                    row(&s) <= first + 16,
                    "row with an empty tail grew from {first} to {} bytes",
                    row(&s)
                );
            }
        }
        // 15 entries, each a few bytes longer than the first as alert ids and counts grow.
        let most = first + 16 + 15 * (entry + 8);
        assert!(largest <= most, "row grew to {largest} bytes, over {most}");
        let i = s.incident(1).unwrap().unwrap();
        assert_eq!(
            (i.alerts, i.timeline.len(), i.timeline_entries),
            (300, 300, 300)
        );
        let times: Vec<i64> = i.timeline.iter().map(|t| t.timestamp.nanos()).collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "timeline out of order"
        );
    }

    /// Timeline rows hold 16 entries each, filled across calls, the part-filled last chunk in
    /// the incident's row; the view, the listing and the alert ids read them back in order. A
    /// row from before the tail, whose part-filled chunk is in the tree with an entry written
    /// past the row's count (a crash between the two writes), reads back without that entry;
    /// its next entry moves the chunk into the row, and the full chunk overwrites it.
    fn timeline_rows_hold_sixteen_entries_and_an_uncounted_entry_is_overwritten(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let a = |t: i64| alert("r1", "10.0.0.1", 1000 + t, Severity::Medium);
        // 40 alerts in calls of 1, 20, 3 and 16, an action in between.
        s.record(vec![a(0)]).unwrap();
        s.record((1..21).map(a).collect()).unwrap();
        s.ack(1, "alice", None).unwrap();
        s.record((21..24).map(a).collect()).unwrap();
        s.record((24..40).map(a).collect()).unwrap();
        let rows = || {
            s.raw_rows(Table::Timeline)
                .iter()
                .map(|(k, v)| {
                    (
                        u64::from_be_bytes(k[8..].try_into().unwrap()),
                        decode_timeline_row(k, v).unwrap().len(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(), [(0, 16), (16, 16)]);
        assert_eq!(s.get_row(1).unwrap().unwrap().timeline_tail.len(), 9);
        let whole = s.incident(1).unwrap().unwrap();
        assert!(
            whole.timeline_tail.is_empty(),
            "the tail is in the timeline"
        );
        assert!(whole.timeline_chunked);
        assert_eq!(whole.timeline.len(), 41);
        assert_eq!(whole.timeline[21].what, "acknowledged");
        let alert_times: Vec<i64> = whole
            .timeline
            .iter()
            .filter(|e| e.what == "alert")
            .map(|e| e.timestamp.nanos() / 1_000_000_000 - 1000)
            .collect();
        assert_eq!(alert_times, (0..40).collect::<Vec<_>>());
        let listed = s.incidents(&IncidentFilter::default()).unwrap();
        assert_eq!(
            listed[0].timeline,
            [whole.timeline[0].clone(), whole.timeline[21].clone()]
        );
        let ids = s
            .timeline_alert_ids(&s.get_row(1).unwrap().unwrap())
            .unwrap();
        assert_eq!(ids.map(|i| i.len()), Some(40));
        // The same incident as a collector from before the tail left it, after a crash
        // between the timeline write and the row's: the part-filled chunk in the tree, holding
        // one entry more than the incident counts.
        let key = timeline_key(1, 32);
        let mut row = s.get_row(1).unwrap().unwrap();
        let mut last = std::mem::take(&mut row.timeline_tail);
        s.raw_put(
            Table::Incidents,
            &1u64.to_be_bytes(),
            &serde_json::to_vec(&row).unwrap(),
        );
        last.push(TimelineEntry {
            timestamp: Timestamp(0),
            what: "alert".into(),
            by: None,
            text: Some("never counted".into()),
            alert: Some(999_999),
        });
        s.raw_put(Table::Timeline, &key, &serde_json::to_vec(&last).unwrap());
        assert_eq!(s.incident(1).unwrap().unwrap().timeline, whole.timeline);
        s.record(vec![a(40)]).unwrap();
        let after = s.incident(1).unwrap().unwrap().timeline;
        assert_eq!(after.len(), 42);
        assert_eq!(after[41].timestamp, Timestamp(1040 * 1_000_000_000));
        assert!(after.iter().all(|e| e.alert != Some(999_999)));
        // The chunk moved into the row, now binary; the tree's copy is not read, then
        // overwritten.
        assert_eq!(s.get_row(1).unwrap().unwrap().timeline_tail.len(), 10);
        assert_eq!(
            s.raw_get(Table::Incidents, &1u64.to_be_bytes()).unwrap()[0],
            row::TAG
        );
        s.record((41..47).map(a).collect()).unwrap();
        assert_eq!(rows(), [(0, 16), (16, 16), (32, 16)]);
        assert!(s.get_row(1).unwrap().unwrap().timeline_tail.is_empty());
        let after = s.incident(1).unwrap().unwrap().timeline;
        assert_eq!(after.len(), 48);
        assert!(after.iter().all(|e| e.alert != Some(999_999)));
    }

    /// A listing carries the opening alert and the analyst actions, read by entry number; the
    /// view has the whole timeline. A row from before `action_entries` is listed whole.
    fn a_listing_reads_the_opening_alert_and_the_actions_not_every_alert_entry(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        let n = MAX_TIMELINE_ALERTS as i64 + 40;
        s.record(vec![alert("r1", "10.0.0.1", 1000, Severity::Medium)])
            .unwrap();
        s.ack(1, "alice", Some("on it".into())).unwrap();
        s.record(
            (1..n)
                .map(|t| alert("r1", "10.0.0.1", 1000 + t, Severity::High))
                .collect(),
        )
        .unwrap();
        s.resolve(1, "bob", Some("blocked".into())).unwrap();
        let whats = |i: &Incident| {
            i.timeline
                .iter()
                .map(|t| t.what.clone())
                .collect::<Vec<_>>()
        };
        let list = |s: &IncidentStore| {
            s.incidents(&IncidentFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap()
        };
        let listed = list(&s);
        assert_eq!(listed.len(), 1);
        assert_eq!(whats(&listed[0]), ["alert", "acknowledged", "resolved"]);
        assert_eq!(
            listed[0].timeline[0].timestamp,
            Timestamp(1000 * 1_000_000_000)
        );
        assert_eq!(listed[0].timeline[1].by.as_deref(), Some("alice"));
        assert_eq!(listed[0].timeline[2].text.as_deref(), Some("blocked"));
        assert_eq!(listed[0].action_entries, Some(vec![1, 501]));
        assert_eq!(
            (listed[0].alerts, listed[0].timeline_dropped),
            (n as u64, 40)
        );
        let whole = s.incident(1).unwrap().unwrap();
        assert_eq!(whole.timeline.len(), MAX_TIMELINE_ALERTS + 2);
        assert_eq!(whole.timeline[1], listed[0].timeline[1]);
        assert_eq!(whole.timeline[501], listed[0].timeline[2]);

        // The same row as an older collector wrote it: the listing reads every entry.
        let mut old = s.get_row(1).unwrap().unwrap();
        old.action_entries = None;
        s.raw_put(
            Table::Incidents,
            &1u64.to_be_bytes(),
            &IncidentStore::row_bytes(&old),
        );
        let listed = list(&s);
        assert_eq!(listed[0].timeline, whole.timeline);
    }

    /// A row written before the `timeline` tree, with its timeline inline, reads back as it
    /// was, and the next alert or action moves that timeline into the tree, in order.
    fn an_inline_timeline_from_an_older_store_is_kept_and_moved(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = IncidentStore::open_with(dir.path(), 3600, backend).unwrap();
        s.record(vec![alert("r1", "10.0.0.1", 1000, Severity::Medium)])
            .unwrap();
        let mut old = s.incident(1).unwrap().unwrap();
        old.timeline.push(TimelineEntry {
            timestamp: Timestamp(1_001_000_000_000),
            what: "comment".into(),
            by: Some("soc-lead".into()),
            text: Some("from the old layout".into()),
            alert: None,
        });
        old.timeline_entries = 0;
        s.raw_clear(Table::Timeline);
        let mut legacy = serde_json::to_value(&old).unwrap();
        for newer in ["timeline_entries", "timeline_chunked", "action_entries"] {
            legacy.as_object_mut().unwrap().remove(newer);
        }
        s.raw_put(
            Table::Incidents,
            &1u64.to_be_bytes(),
            &serde_json::to_vec(&legacy).unwrap(),
        );
        let read = s.incident(1).unwrap().unwrap();
        assert_eq!(read.timeline, old.timeline);
        s.record(vec![alert("r1", "10.0.0.1", 1002, Severity::Medium)])
            .unwrap();
        s.ack(1, "soc-lead", None).unwrap();
        let i = s.incident(1).unwrap().unwrap();
        let whats: Vec<&str> = i.timeline.iter().map(|t| t.what.as_str()).collect();
        assert_eq!(whats, vec!["alert", "comment", "alert", "acknowledged"]);
        assert_eq!(i.timeline_entries, 4);
        // It goes on with a row per entry (the layout its row knows).
        assert_eq!(s.raw_len(Table::Timeline), 4);
        let row = decode_row(
            &1u64.to_be_bytes(),
            &s.raw_get(Table::Incidents, &1u64.to_be_bytes()).unwrap(),
        )
        .unwrap();
        assert!(
            row.timeline.is_empty(),
            "the row still carries its timeline"
        );
    }
}
