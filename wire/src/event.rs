//! The event schema: one [`Event`] type, serialized as JSON with Elastic Common Schema field names
//! (`@timestamp`, `event.*`, `agent.id`, `observer.name`, `source.ip`, …) so NDJSON exports load
//! into existing SOC tooling unchanged. Palisade-specific details live under `palisade.*`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest agent id accepted anywhere (certificate CN, batch header, event).
pub const AGENT_ID_MAX_LEN: usize = 64;

/// Agent ids are certificate CNs and appear in store keys, so they are restricted to a safe
/// alphabet: ASCII letters, digits, `.`, `_` and `-`, 1 to 64 bytes.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= AGENT_ID_MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// UTC time in nanoseconds since the Unix epoch; serialized as RFC 3339 with nine fraction digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let now = chrono::Utc::now();
        Timestamp(now.timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    /// Nanoseconds since the epoch.
    pub fn nanos(self) -> i64 {
        self.0
    }

    /// The UTC calendar day (`YYYY-MM-DD`) this instant falls on.
    pub fn day(self) -> String {
        self.to_datetime().format("%Y-%m-%d").to_string()
    }

    fn to_datetime(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_nanos(self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            self.to_datetime()
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        )
    }
}

impl FromStr for Timestamp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let dt = chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("invalid RFC 3339 timestamp {s:?}: {e}"))?;
        dt.timestamp_nanos_opt()
            .map(Timestamp)
            .ok_or_else(|| format!("timestamp {s:?} is outside the representable range"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a time given on a command line or in a query: an RFC 3339 timestamp, `now`, or a
/// duration before `now` such as `90s`, `15m`, `2h`, `7d`, `1w`.
pub fn parse_time_spec(spec: &str, now: Timestamp) -> Result<Timestamp, String> {
    let spec = spec.trim();
    if spec == "now" {
        return Ok(now);
    }
    if let Ok(t) = spec.parse::<Timestamp>() {
        return Ok(t);
    }
    let split = spec
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("time {spec:?} needs a unit (s, m, h, d, w) or an RFC 3339 form"))?;
    let (num, unit) = spec.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("time {spec:?}: {num:?} is not a number"))?;
    let secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(format!(
                "time {spec:?}: unknown unit {unit:?} (expected s, m, h, d, w, or an RFC 3339 timestamp)"
            ))
        }
    };
    let nanos = n
        .checked_mul(secs)
        .and_then(|s| s.checked_mul(1_000_000_000))
        .ok_or_else(|| format!("time {spec:?} is too far back"))?;
    Ok(Timestamp(now.0.saturating_sub(nanos)))
}

/// How urgent an event is. Serialized as ECS `event.severity` (a number, 1 = info … 5 = critical).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Routine telemetry.
    Info = 1,
    /// Worth a look.
    Low = 2,
    /// Suspicious.
    Medium = 3,
    /// Likely an attack or data at risk.
    High = 4,
    /// An analyst must act now.
    Critical = 5,
}

impl Severity {
    /// All severities, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The lowercase name (`info`, `low`, …).
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The numeric ECS value.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The severity with numeric value `n`, if any.
    pub fn from_number(n: u64) -> Option<Self> {
        Severity::ALL
            .into_iter()
            .find(|s| u64::from(s.number()) == n)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Severity::ALL
            .into_iter()
            .find(|v| v.name() == lower || v.number().to_string() == lower)
            .ok_or_else(|| {
                format!("unknown severity {s:?} (expected info, low, medium, high or critical)")
            })
    }
}

impl Serialize for Severity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        Severity::from_number(n)
            .ok_or_else(|| serde::de::Error::custom(format!("severity {n} is not in 1..=5")))
    }
}

/// ECS `event.kind`: the highest-level category of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EcsKind {
    /// A detection that needs attention.
    Alert,
    /// Something that happened (a flow, a file change).
    Event,
    /// A numeric measurement (heartbeats).
    Metric,
    /// A snapshot of state.
    State,
    /// Trouble in the pipeline itself (dropped events).
    PipelineError,
}

impl EcsKind {
    /// The serialized name (`alert`, `pipeline_error`, …).
    pub fn name(self) -> &'static str {
        match self {
            EcsKind::Alert => "alert",
            EcsKind::Event => "event",
            EcsKind::Metric => "metric",
            EcsKind::State => "state",
            EcsKind::PipelineError => "pipeline_error",
        }
    }
}

/// What produced an event: Palisade's own event kinds, serialized as ECS `event.dataset`
/// `palisade.<kind>`. This is what `--kind` filters on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// Periodic agent liveness and counters.
    Heartbeat,
    /// Events were dropped by a full spool; says how many.
    Gap,
    /// A finished network flow (like Zeek's conn.log).
    Flow,
    /// A detector fired.
    Alert,
    /// A file integrity finding.
    Integrity,
    /// A malware scan finding.
    Malware,
    /// A replication or backup run.
    Replication,
    /// A disaster-recovery drill result.
    Drill,
    /// An authentication event (syslog-style).
    Auth,
    /// Synthetic events from the load/test source.
    Synthetic,
}

impl EventKind {
    /// All kinds.
    pub const ALL: [EventKind; 10] = [
        EventKind::Heartbeat,
        EventKind::Gap,
        EventKind::Flow,
        EventKind::Alert,
        EventKind::Integrity,
        EventKind::Malware,
        EventKind::Replication,
        EventKind::Drill,
        EventKind::Auth,
        EventKind::Synthetic,
    ];

    /// Short name, e.g. `heartbeat`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Heartbeat => "heartbeat",
            EventKind::Gap => "gap",
            EventKind::Flow => "flow",
            EventKind::Alert => "alert",
            EventKind::Integrity => "integrity",
            EventKind::Malware => "malware",
            EventKind::Replication => "replication",
            EventKind::Drill => "drill",
            EventKind::Auth => "auth",
            EventKind::Synthetic => "synthetic",
        }
    }

    /// The ECS `event.dataset` value, e.g. `palisade.heartbeat`.
    pub fn dataset(self) -> &'static str {
        match self {
            EventKind::Heartbeat => "palisade.heartbeat",
            EventKind::Gap => "palisade.gap",
            EventKind::Flow => "palisade.flow",
            EventKind::Alert => "palisade.alert",
            EventKind::Integrity => "palisade.integrity",
            EventKind::Malware => "palisade.malware",
            EventKind::Replication => "palisade.replication",
            EventKind::Drill => "palisade.drill",
            EventKind::Auth => "palisade.auth",
            EventKind::Synthetic => "palisade.synthetic",
        }
    }

    /// The ECS `event.kind` that goes with this kind.
    pub fn ecs_kind(self) -> EcsKind {
        match self {
            EventKind::Heartbeat => EcsKind::Metric,
            EventKind::Gap => EcsKind::PipelineError,
            EventKind::Alert | EventKind::Malware => EcsKind::Alert,
            EventKind::Flow
            | EventKind::Integrity
            | EventKind::Replication
            | EventKind::Drill
            | EventKind::Auth
            | EventKind::Synthetic => EcsKind::Event,
        }
    }

    /// A stable one-byte code used in store index keys.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = s.strip_prefix("palisade.").unwrap_or(s);
        EventKind::ALL
            .into_iter()
            .find(|k| k.name() == short)
            .ok_or_else(|| {
                let names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown event kind {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("palisade.{}", self.name()))
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if !s.starts_with("palisade.") {
            return Err(serde::de::Error::custom(format!(
                "event.dataset {s:?} does not start with \"palisade.\""
            )));
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// ECS `agent.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's identity: its certificate CN.
    pub id: String,
    /// Software version of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// ECS `event.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventMeta {
    /// ECS kind, derived from `dataset`.
    pub kind: EcsKind,
    /// Palisade's kind, as `palisade.<kind>`.
    pub dataset: EventKind,
    /// How urgent.
    pub severity: Severity,
    /// Per-agent sequence number, strictly increasing, assigned by the agent's spool.
    pub sequence: u64,
    /// Content id: blake3 (hex) of the event serialized with an empty `id`.
    #[serde(default)]
    pub id: String,
    /// ECS categories (`network`, `file`, `intrusion_detection`, `host`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub category: Vec<String>,
    /// ECS types (`info`, `connection`, `change`, …).
    #[serde(default, rename = "type", skip_serializing_if = "Vec::is_empty")]
    pub kind_type: Vec<String>,
    /// What happened, in a word (`heartbeat`, `port-scan`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// ECS `event.outcome`: `success`, `failure` or `unknown` (logins, restores, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// ECS `user.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Domain or realm, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// ECS `observer.*`: the probe that saw the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observer {
    /// The agent id.
    pub name: String,
    /// Host name of the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// ECS `host.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Host name.
    pub name: String,
    /// Seconds since the host booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<u64>,
}

/// ECS `source.*` / `destination.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Endpoint {
    /// IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Transport port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// MAC address, `aa-bb-cc-dd-ee-ff` as ECS writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Bytes sent from this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Packets sent from this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
}

/// ECS `network.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Network {
    /// `tcp`, `udp`, `icmp`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Application protocol (`dns`, `http`, `tls`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Community ID flow hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    /// Total bytes both ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Total packets both ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
}

/// ECS `rule.*`: which detection fired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Rule {
    /// Rule id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Rule name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Rule category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Rule set the rule belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
}

/// ECS `file.hash.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FileHash {
    /// blake3 of the content (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

/// ECS `file.*`: the file an integrity or malware finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FileInfo {
    /// Full path.
    pub path: String,
    /// `file`, `dir`, `symlink`, `fifo`, `socket`, `char`, `block`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Permission bits in octal, e.g. `0644`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Numeric owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Numeric group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// Inode number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<String>,
    /// Last content change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<Timestamp>,
    /// Last metadata change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<Timestamp>,
    /// Where a symlink points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_path: Option<String>,
    /// Content hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<FileHash>,
}

/// One event. Construct with [`Event::new`], fill the sections that apply, and let the spool
/// assign the sequence and [`Event::seal`] it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened (UTC, nanoseconds).
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    /// Which agent produced it.
    pub agent: AgentInfo,
    /// Kind, severity, sequence and content id.
    pub event: EventMeta,
    /// The probe that observed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observer: Option<Observer>,
    /// The host it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
    /// One human-readable line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Source endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    /// Destination endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    /// Network details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// The rule that fired, for alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// The file concerned, for integrity and malware findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
    /// The user concerned, for authentication events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Free-form key/value labels (ECS `labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Palisade-specific fields of this kind of event (heartbeat counters, gap counts, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub palisade: Option<serde_json::Value>,
}

impl Event {
    /// A new event of `kind` from `agent_id`, stamped now; sequence and id are set by the spool.
    pub fn new(agent_id: &str, kind: EventKind, severity: Severity) -> Self {
        Event {
            timestamp: Timestamp::now(),
            agent: AgentInfo {
                id: agent_id.to_string(),
                version: Some(env!("CARGO_PKG_VERSION").to_string()),
            },
            event: EventMeta {
                kind: kind.ecs_kind(),
                dataset: kind,
                severity,
                sequence: 0,
                id: String::new(),
                category: Vec::new(),
                kind_type: Vec::new(),
                action: None,
                outcome: None,
            },
            observer: Some(Observer {
                name: agent_id.to_string(),
                hostname: None,
            }),
            host: None,
            message: None,
            source: None,
            destination: None,
            network: None,
            rule: None,
            file: None,
            user: None,
            labels: BTreeMap::new(),
            palisade: None,
        }
    }

    /// Sets the message (builder style).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Sets `palisade.*` (builder style).
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.palisade = Some(details);
        self
    }

    /// Palisade's kind of this event.
    pub fn kind(&self) -> EventKind {
        self.event.dataset
    }

    /// Assigns the sequence number and computes the content id.
    pub fn seal(&mut self, sequence: u64) {
        self.event.sequence = sequence;
        self.event.id = self.content_id();
    }

    /// blake3 (hex) of this event serialized with an empty `event.id`.
    pub fn content_id(&self) -> String {
        let mut copy = self.clone();
        copy.event.id.clear();
        // Serializing a plain struct of strings and numbers cannot fail.
        let bytes = serde_json::to_vec(&copy).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// Serialized JSON (one line).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_ecs_names_and_round_trips() {
        let mut e = Event::new("probe-1", EventKind::Heartbeat, Severity::Info).with_message("hi");
        e.source = Some(Endpoint {
            ip: Some("10.1.2.3".parse().unwrap()),
            port: Some(53),
            ..Default::default()
        });
        e.seal(7);
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["agent"]["id"], "probe-1");
        assert_eq!(v["observer"]["name"], "probe-1");
        assert_eq!(v["event"]["dataset"], "palisade.heartbeat");
        assert_eq!(v["event"]["kind"], "metric");
        assert_eq!(v["event"]["severity"], 1);
        assert_eq!(v["event"]["sequence"], 7);
        assert_eq!(v["source"]["ip"], "10.1.2.3");
        assert!(v["@timestamp"].as_str().unwrap().ends_with('Z'));
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.content_id(), e.event.id);
    }

    #[test]
    fn content_id_changes_with_content() {
        let mut a = Event::new("a", EventKind::Gap, Severity::High);
        let mut b = a.clone();
        b.message = Some("x".into());
        a.seal(1);
        b.seal(1);
        assert_ne!(a.event.id, b.event.id);
    }

    #[test]
    fn rejects_unknown_dataset_and_severity() {
        let mut e = Event::new("a", EventKind::Gap, Severity::High);
        e.seal(1);
        let mut v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        v["event"]["dataset"] = "palisade.nope".into();
        assert!(serde_json::from_value::<Event>(v.clone()).is_err());
        v["event"]["dataset"] = "palisade.gap".into();
        v["event"]["severity"] = 9.into();
        assert!(serde_json::from_value::<Event>(v).is_err());
    }

    #[test]
    fn agent_id_alphabet() {
        assert!(valid_agent_id("probe-01.segment_a"));
        assert!(!valid_agent_id(""));
        assert!(!valid_agent_id("a/b"));
        assert!(!valid_agent_id(&"x".repeat(65)));
    }

    #[test]
    fn time_specs() {
        let now = Timestamp(10_000 * 1_000_000_000);
        assert_eq!(
            parse_time_spec("15m", now).unwrap(),
            Timestamp(9_100 * 1_000_000_000)
        );
        assert_eq!(parse_time_spec("now", now).unwrap(), now);
        assert_eq!(
            parse_time_spec("1970-01-01T00:00:01Z", now).unwrap(),
            Timestamp(1_000_000_000)
        );
        assert!(parse_time_spec("15", now).is_err());
        assert!(parse_time_spec("15y", now).is_err());
    }

    #[test]
    fn timestamp_round_trip_keeps_nanoseconds() {
        let t = Timestamp(1_700_000_000_123_456_789);
        let s = t.to_string();
        assert_eq!(s, "2023-11-14T22:13:20.123456789Z");
        assert_eq!(s.parse::<Timestamp>().unwrap(), t);
        assert_eq!(t.day(), "2023-11-14");
    }
}
