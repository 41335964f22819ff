//! Palisade's correlation engine: rsigma parses the rules, compiles them and evaluates the
//! *detection* rules; the correlation rules (`event_count`, `value_count`, `temporal`,
//! `temporal_ordered`, chained on one another) are evaluated here over the compact
//! [`Store`], with the semantics of rsigma-eval 0.23's `CorrelationEngine` (sliding windows
//! on event time; a test replays random streams through both and compares every alert).
//!
//! What differs from rsigma, on purpose:
//! - event references name the stored event by (time, agent, sequence) instead of an id
//!   looked up in the event's JSON (which never found one in our ECS events);
//! - event time is held in whole seconds as `u32` (clamped past 2106);
//! - tumbling and session windows and the numeric aggregations (`value_sum`, …) are refused
//!   at load: no shipped rule needs them and the store does not keep them;
//! - `rsigma.*` attributes apply per correlation only (`rsigma.suppress`, `rsigma.action`,
//!   `rsigma.max_group_entries`, `rsigma.correlation_event_mode`,
//!   `rsigma.max_correlation_events`), never to the engine as a whole.

use std::collections::{HashMap, HashSet, VecDeque};

use rsigma_eval::correlation::{compile_correlation, CompiledCorrelation};
use rsigma_eval::{CorrelationAction, CorrelationEventMode, Engine, EvaluationResult, EventValue};
use rsigma_parser::{ConditionExpr, CorrelationType, SigmaCollection, WindowMode};
use serde::{Deserialize, Serialize};

use super::store::{clamp_secs, Group, Hit, Key, Ref, Store, NO_ALERT};

/// Chained correlations followed from one event (as rsigma).
const MAX_CHAIN_DEPTH: usize = 10;
/// A rule position that matches none.
const NO_RULE: u32 = u32::MAX;

/// Engine-wide limits (from `[correlation]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Groups with window state kept; at the cap, expired state goes, then the stalest
    /// groups until 90% of it.
    pub max_state_entries: usize,
    /// Bytes the groups in use may hold (records, table, window storage); over it, expired
    /// state goes, then the stalest groups until 90% of it. Checked by
    /// [`Correlations::check_memory`], as the correlator measures.
    pub max_state_bytes: usize,
    /// Hits kept in one group's window (per referenced rule for temporal types).
    pub max_group_entries: usize,
    /// Seconds after an alert during which the same group does not alert again.
    pub suppress_secs: Option<u64>,
    /// Event references kept per group (0: none).
    pub event_refs: usize,
}

/// A correlation rule that cannot be evaluated here.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct CompileError {
    /// The rule (id, else title), when one is to blame.
    pub rule: Option<String>,
    /// What is wrong.
    pub reason: String,
}

struct Corr {
    c: CompiledCorrelation,
    /// id, else name, else title: what the saved state is keyed by.
    stable_id: String,
    /// For each entry of `rules`, the position of its first occurrence (temporal hits are
    /// recorded under it).
    canon: Vec<u32>,
    suppress_secs: Option<u64>,
    max_group_entries: usize,
    /// Event references kept (0: none).
    refs: usize,
    reset: bool,
}

impl Corr {
    fn position(&self, rule: &str) -> u32 {
        self.c
            .rule_refs
            .iter()
            .position(|r| r == rule)
            .map_or(NO_RULE, |p| p as u32)
    }
}

/// The event being evaluated, as the store names it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// `@timestamp`, nanoseconds since the epoch.
    pub nanos: i64,
    /// `agent.id`.
    pub agent: &'a str,
    /// `event.sequence`.
    pub sequence: u64,
}

/// An event behind a correlation alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPosition {
    /// `@timestamp`, nanoseconds.
    pub nanos: i64,
    /// `agent.id`.
    pub agent: String,
    /// `event.sequence`.
    pub sequence: u64,
}

/// A correlation that fired.
#[derive(Debug, Clone)]
pub struct CorrelationHit {
    /// Index of the correlation (see [`Correlations::rule`]).
    pub corr: usize,
    /// Group-by field (or alias) names and values; absent values are left out.
    pub group: Vec<(String, String)>,
    /// The count the condition was checked against.
    pub value: f64,
    /// The events behind it, oldest first, when the rule keeps references (`None` for a
    /// firing through a chained correlation, which has no events of its own).
    pub events: Option<Vec<EventPosition>>,
}

/// What one event produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Detection rule matches, in rsigma's order (building blocks included).
    pub detections: Vec<EvaluationResult>,
    /// Correlations that fired, first-level then chained.
    pub correlations: Vec<CorrelationHit>,
}

/// One group in the saved state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedGroup {
    /// Correlation id (else name, else title).
    pub rule: String,
    /// Group-by values.
    pub key: Vec<Option<String>>,
    /// Has window state.
    #[serde(default)]
    pub live: bool,
    /// Window hits: seconds and, for temporal types, the referenced rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hits: Vec<(u32, Option<String>)>,
    /// `value_count` window: seconds and value parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<(u32, Vec<Option<String>>)>,
    /// Event references: nanoseconds, agent, sequence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<(i64, String, u64)>,
    /// Event time (seconds) of the last alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_alert: Option<u32>,
}

/// Detection rules through rsigma, correlations over the compact store.
pub struct Correlations {
    detect: Engine,
    /// Rule id → name, for the references a correlation may use.
    names: HashMap<String, Option<String>>,
    corrs: Vec<Corr>,
    /// Rule id or name → correlations that refer to it.
    index: HashMap<String, Vec<usize>>,
    store: Store,
    agents: Vec<String>,
    agent_ids: HashMap<String, u32>,
    limits: Limits,
    evicted: u64,
    /// Newest event time seen (seconds): "now" for the byte cap's eviction.
    latest_ts: i64,
}

impl std::fmt::Debug for Correlations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlations")
            .field("correlations", &self.corrs.len())
            .field("groups", &self.store.live())
            .finish_non_exhaustive()
    }
}

fn to_key_string(v: &EventValue<'_>) -> Option<String> {
    match v {
        EventValue::Str(s) => Some(s.to_string()),
        EventValue::Int(n) => Some(n.to_string()),
        EventValue::Float(f) => Some(f.to_string()),
        EventValue::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn to_count_string(v: &EventValue<'_>) -> Option<String> {
    match v {
        EventValue::Null => Some("null".into()),
        other => to_key_string(other),
    }
}

impl Correlations {
    /// Compiles `collection`: every detection rule and filter into rsigma's detection engine,
    /// every correlation into ours.
    pub fn new(collection: &SigmaCollection, limits: Limits) -> Result<Self, CompileError> {
        let mut detect = Engine::new();
        let mut compiled = Vec::with_capacity(collection.rules.len());
        let mut names = HashMap::new();
        for r in &collection.rules {
            compiled.push(rsigma_eval::compile_rule(r).map_err(|e| CompileError {
                rule: r.id.clone().or_else(|| Some(r.title.clone())),
                reason: e.to_string(),
            })?);
            if let Some(id) = &r.id {
                names.entry(id.clone()).or_insert_with(|| r.name.clone());
            }
        }
        detect.extend_compiled_rules(compiled);
        for f in &collection.filters {
            detect.apply_filter(f).map_err(|e| CompileError {
                rule: None,
                reason: e.to_string(),
            })?;
        }
        let mut corrs = Vec::new();
        let mut index: HashMap<String, Vec<usize>> = HashMap::new();
        for rule in &collection.correlations {
            let who = rule.id.clone().unwrap_or_else(|| rule.title.clone());
            let err = |reason: String| CompileError {
                rule: Some(who.clone()),
                reason,
            };
            let c = compile_correlation(rule).map_err(|e| err(e.to_string()))?;
            if !matches!(
                c.correlation_type,
                CorrelationType::EventCount
                    | CorrelationType::ValueCount
                    | CorrelationType::Temporal
                    | CorrelationType::TemporalOrdered
            ) {
                return Err(err(format!(
                    "correlation type {} is not supported (event_count, value_count, temporal, temporal_ordered are)",
                    c.correlation_type.as_str()
                )));
            }
            if c.window_mode != WindowMode::Sliding {
                return Err(err(
                    "only sliding windows are supported (remove `window`)".into()
                ));
            }
            if corrs.len() >= usize::from(u16::MAX) {
                return Err(err("too many correlation rules".into()));
            }
            let mode = c.event_mode.unwrap_or(if limits.event_refs == 0 {
                CorrelationEventMode::None
            } else {
                CorrelationEventMode::Refs
            });
            let refs = match mode {
                CorrelationEventMode::None => 0,
                // Full bodies are not kept: references name the stored events instead.
                _ => c.max_events.unwrap_or(limits.event_refs.max(1)).max(1),
            };
            let canon = c
                .rule_refs
                .iter()
                .map(|r| c.rule_refs.iter().position(|x| x == r).unwrap_or(0) as u32)
                .collect();
            let idx = corrs.len();
            for r in &c.rule_refs {
                index.entry(r.clone()).or_default().push(idx);
            }
            corrs.push(Corr {
                stable_id: c
                    .id
                    .clone()
                    .or_else(|| c.name.clone())
                    .unwrap_or_else(|| c.title.clone()),
                canon,
                suppress_secs: c.suppress_secs.or(limits.suppress_secs),
                max_group_entries: c
                    .max_group_entries
                    .unwrap_or(limits.max_group_entries)
                    .max(1),
                refs,
                reset: c.action.unwrap_or_default() == CorrelationAction::Reset,
                c,
            });
        }
        Ok(Correlations {
            detect,
            names,
            corrs,
            index,
            store: Store::default(),
            agents: Vec::new(),
            agent_ids: HashMap::new(),
            limits,
            evicted: 0,
            latest_ts: i64::MIN,
        })
    }

    /// The compiled correlation `i` (title, id, level, tags, type, timespan).
    pub fn rule(&self, i: usize) -> &CompiledCorrelation {
        &self.corrs[i].c
    }

    /// Groups with window state (what `max_state_entries` bounds).
    pub fn state_count(&self) -> usize {
        self.store.live()
    }

    /// Groups evicted at the cap so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Bytes the window store holds (see [`Store::accounted_bytes`]), plus the agent table.
    pub fn accounted_bytes(&self) -> usize {
        self.store.accounted_bytes().held + self.agent_bytes()
    }

    fn agent_bytes(&self) -> usize {
        self.agents.iter().map(|a| a.capacity() + 24).sum::<usize>()
    }

    /// Measures the state and applies the byte cap: over `max_state_bytes` in use, expired
    /// state goes, then the stalest groups until 90% of it (counted as evicted). Returns the
    /// bytes held afterwards (what [`Self::accounted_bytes`] gives), from the same walk when
    /// nothing was evicted.
    pub fn check_memory(&mut self) -> usize {
        let bytes = self.store.accounted_bytes();
        if bytes.in_use + self.agent_bytes() <= self.limits.max_state_bytes
            || self.latest_ts == i64::MIN
        {
            return bytes.held + self.agent_bytes();
        }
        self.evict_all(self.latest_ts);
        self.accounted_bytes()
    }

    /// Evaluates one event at event time `ts` (seconds).
    pub fn process(
        &mut self,
        event: &impl rsigma_eval::Event,
        origin: Origin<'_>,
        ts: i64,
    ) -> Output {
        let ts = i64::from(clamp_secs(ts));
        self.latest_ts = self.latest_ts.max(ts);
        if self.store.live() >= self.limits.max_state_entries {
            self.evict_all(ts);
        }
        let detections = self.detect.evaluate(event);
        let mut work: Vec<(usize, Option<String>, Option<String>)> = Vec::new();
        for det in &detections {
            let id = det.header.rule_id.clone();
            let name = id
                .as_ref()
                .and_then(|i| self.names.get(i).cloned().flatten());
            let mut targets: Vec<usize> = Vec::new();
            for k in [&id, &name].into_iter().flatten() {
                if let Some(v) = self.index.get(k) {
                    targets.extend(v);
                }
            }
            targets.sort_unstable();
            targets.dedup();
            work.extend(targets.into_iter().map(|t| (t, id.clone(), name.clone())));
        }
        let mut fired = Vec::new();
        let agent = self.agent_number(origin.agent);
        let this = Ref::new(origin.nanos, agent, origin.sequence);
        for (corr, id, name) in work {
            self.update(
                corr,
                event,
                this,
                ts,
                id.as_deref(),
                name.as_deref(),
                &mut fired,
            );
        }
        let chained = self.chain(&fired, ts);
        fired.extend(chained);
        Output {
            detections,
            correlations: fired,
        }
    }

    fn agent_number(&mut self, agent: &str) -> u32 {
        if let Some(&n) = self.agent_ids.get(agent) {
            return n;
        }
        let n = self.agents.len() as u32;
        self.agents.push(agent.to_string());
        self.agent_ids.insert(agent.to_string(), n);
        n
    }

    /// A direct hit of detection rule (id, name) on correlation `ci`.
    #[allow(clippy::too_many_arguments)] // one event's facts, passed once per correlation
    fn update(
        &mut self,
        ci: usize,
        event: &impl rsigma_eval::Event,
        this: Ref,
        ts: i64,
        id: Option<&str>,
        name: Option<&str>,
        out: &mut Vec<CorrelationHit>,
    ) {
        let corr = &self.corrs[ci];
        let idents: Vec<&str> = [id, name].into_iter().flatten().collect();
        let rule = idents
            .iter()
            .map(|s| corr.position(s))
            .find(|&p| p != NO_RULE)
            .unwrap_or(NO_RULE);
        let parts: Vec<Option<String>> = corr
            .c
            .group_by
            .iter()
            .map(|f| {
                event
                    .get_field(f.resolve(&idents))
                    .and_then(|v| to_key_string(&v))
            })
            .collect();
        let key = Key::encode(parts.iter().map(Option::as_deref));
        let value = match (&corr.c.correlation_type, &corr.c.condition.field) {
            (CorrelationType::ValueCount, Some(fields)) => fields
                .iter()
                .map(|f| event.get_field(f).and_then(|v| to_count_string(&v)))
                .collect::<Option<Vec<String>>>()
                .map(|p| Key::encode(p.iter().map(|s| Some(s.as_str())))),
            _ => None,
        };
        let cutoff = window_start(ts, corr);
        let secs = ts as u32;
        let (corr, g) = open_group(&mut self.store, &self.corrs, ci, key, ts);
        match corr.c.correlation_type {
            CorrelationType::ValueCount => {
                if let Some(v) = value {
                    let values = g.values.get_or_insert_with(Default::default);
                    values.push_back((secs, v));
                    while values.len() > corr.max_group_entries {
                        values.pop_front();
                    }
                }
            }
            CorrelationType::Temporal | CorrelationType::TemporalOrdered => {
                push_temporal(g, Hit { secs, rule }, corr.max_group_entries);
            }
            _ => g
                .hits
                .push_back(Hit { secs, rule: 0 }, corr.max_group_entries),
        }
        if corr.refs > 0 {
            while g.refs.front().is_some_and(|r| i64::from(r.secs) < cutoff) {
                g.refs.pop_front();
            }
            g.refs.push_back(this, corr.refs);
        }
        let Some(value) = check(corr, g) else {
            return;
        };
        if suppressed(g, corr, ts) {
            return;
        }
        let events = (corr.refs > 0).then(|| {
            g.refs
                .iter()
                .map(|r| EventPosition {
                    nanos: r.timestamp_nanos(),
                    agent: self
                        .agents
                        .get(r.agent as usize)
                        .cloned()
                        .unwrap_or_default(),
                    sequence: r.sequence(),
                })
                .collect()
        });
        g.last_alert = secs;
        if corr.reset {
            g.clear_window();
            g.refs.clear();
        }
        out.push(CorrelationHit {
            corr: ci,
            group: pairs(corr, g),
            value,
            events,
        });
    }

    /// Feeds correlations that fired into the correlations that refer to them.
    fn chain(&mut self, fired: &[CorrelationHit], ts: i64) -> Vec<CorrelationHit> {
        let mut out = Vec::new();
        let mut pending: Vec<CorrelationHit> = fired.to_vec();
        let mut depth = 0;
        while !pending.is_empty() && depth < MAX_CHAIN_DEPTH {
            depth += 1;
            // (parent, the child that fired, the reference it fired through)
            let mut work: Vec<(usize, &CorrelationHit, String)> = Vec::new();
            // As rsigma: one update per (parent, reference) and level, the first group's.
            let mut seen: HashSet<(usize, String)> = HashSet::new();
            for hit in &pending {
                let c = &self.corrs[hit.corr].c;
                let Some(id) = c.id.as_deref() else { continue };
                let mut keys = vec![id.to_string()];
                if let Some(n) = c.name.as_deref().filter(|n| *n != id) {
                    keys.push(n.to_string());
                }
                for key in keys {
                    for &parent in self.index.get(&key).into_iter().flatten() {
                        if seen.insert((parent, key.clone())) {
                            work.push((parent, hit, key.clone()));
                        }
                    }
                }
            }
            let mut next = Vec::new();
            for (ci, child, via) in work {
                let group = &child.group;
                let corr = &self.corrs[ci];
                let parts: Vec<Option<&str>> = corr
                    .c
                    .group_by
                    .iter()
                    .map(|f| {
                        group
                            .iter()
                            .find(|(k, _)| k == f.name())
                            .map(|(_, v)| v.as_str())
                    })
                    .collect();
                let key = Key::encode(parts);
                let rule = corr.position(&via);
                let secs = ts as u32;
                let (corr, g) = open_group(&mut self.store, &self.corrs, ci, key, ts);
                match corr.c.correlation_type {
                    CorrelationType::EventCount => g
                        .hits
                        .push_back(Hit { secs, rule: 0 }, corr.max_group_entries),
                    CorrelationType::Temporal | CorrelationType::TemporalOrdered => {
                        push_temporal(g, Hit { secs, rule }, corr.max_group_entries)
                    }
                    // A value_count over correlations has no value to count (as rsigma).
                    _ => {}
                }
                let Some(value) = check(corr, g) else {
                    continue;
                };
                if suppressed(g, corr, ts) {
                    continue;
                }
                g.last_alert = secs;
                let hit = CorrelationHit {
                    corr: ci,
                    group: pairs(corr, g),
                    value,
                    events: None,
                };
                if corr.reset {
                    g.clear_window();
                }
                next.push(hit.clone());
                out.push(hit);
            }
            pending = next;
        }
        if !pending.is_empty() {
            tracing::warn!(
                pending = pending.len(),
                "correlation chain deeper than {MAX_CHAIN_DEPTH}; the rest is not followed"
            );
        }
        out
    }

    /// At a cap (groups or bytes): drop what fell out of every window, then the stalest
    /// groups until both are at most 90% of their cap (a cap not passed is not a target),
    /// then suppression marks that ran out. Evicted groups are counted.
    fn evict_all(&mut self, now: i64) {
        let before = self.store.live();
        let ids: Vec<u32> = self.store.ids().collect();
        for &id in &ids {
            let corr = &self.corrs[usize::from(self.store.get(id).corr)];
            let cutoff = window_start(now, corr);
            let g = self.store.get_mut(id);
            slide(g, corr, cutoff);
            while g.refs.front().is_some_and(|r| i64::from(r.secs) < cutoff) {
                g.refs.pop_front();
            }
            if g.live && g.window_is_empty() {
                self.store.set_live(id, false);
            }
        }
        let max = self.limits.max_state_entries;
        let max_bytes = self.limits.max_state_bytes;
        let mut bytes = self.store.accounted_bytes().in_use + self.agent_bytes();
        let target = if self.store.live() >= max {
            max * 9 / 10
        } else {
            usize::MAX
        };
        let target_bytes = if bytes > max_bytes {
            max_bytes / 10 * 9
        } else {
            usize::MAX
        };
        if self.store.live() > target || bytes > target_bytes {
            tracing::warn!(
                groups = self.store.live(),
                max,
                bytes,
                max_bytes,
                "correlation state cap reached; evicting the stalest groups"
            );
            let mut by_age: Vec<(i64, u32)> = ids
                .iter()
                .filter(|&&id| self.store.get(id).live)
                .map(|&id| {
                    let g = self.store.get(id);
                    (g.latest().map_or(i64::MIN, i64::from), id)
                })
                .collect();
            by_age.sort_unstable();
            for (_, id) in by_age {
                if self.store.live() <= target && bytes <= target_bytes {
                    break;
                }
                bytes = bytes.saturating_sub(self.store.group_bytes(id));
                self.store.remove(id);
            }
        }
        for &id in &ids {
            let g = self.store.get(id);
            if g.corr == u16::MAX {
                continue;
            }
            let suppress = self.corrs[usize::from(g.corr)].suppress_secs.unwrap_or(0) as i64;
            let g = self.store.get_mut(id);
            if g.last_alert != NO_ALERT && now - i64::from(g.last_alert) >= suppress {
                g.last_alert = NO_ALERT;
            }
            if !g.live && g.refs.is_empty() && g.last_alert == NO_ALERT {
                self.store.remove(id);
            }
        }
        self.evicted += before.saturating_sub(self.store.live()) as u64;
    }

    /// The state, for the state file (one record per group).
    pub fn saved_groups(&self) -> impl Iterator<Item = SavedGroup> + '_ {
        self.store.ids().map(move |id| {
            let g = self.store.get(id);
            let corr = &self.corrs[usize::from(g.corr)];
            let temporal = matches!(
                corr.c.correlation_type,
                CorrelationType::Temporal | CorrelationType::TemporalOrdered
            );
            SavedGroup {
                rule: corr.stable_id.clone(),
                key: g.key.parts(),
                live: g.live,
                hits: g
                    .hits
                    .iter()
                    .map(|h| {
                        let rule = temporal
                            .then(|| corr.c.rule_refs.get(h.rule as usize).cloned())
                            .flatten();
                        (h.secs, rule)
                    })
                    .collect(),
                values: g
                    .values
                    .iter()
                    .flat_map(|v| v.iter())
                    .map(|(t, k)| (*t, k.parts()))
                    .collect(),
                refs: g
                    .refs
                    .iter()
                    .map(|r| {
                        (
                            r.timestamp_nanos(),
                            self.agents
                                .get(r.agent as usize)
                                .cloned()
                                .unwrap_or_default(),
                            r.sequence(),
                        )
                    })
                    .collect(),
                last_alert: (g.last_alert != NO_ALERT).then_some(g.last_alert),
            }
        })
    }

    /// Restores saved groups of the correlations still loaded (by id and group-by arity);
    /// the rest are dropped. Returns the groups restored.
    pub fn restore(&mut self, saved: impl IntoIterator<Item = SavedGroup>) -> usize {
        let by_id: HashMap<String, usize> = self
            .corrs
            .iter()
            .enumerate()
            .map(|(i, c)| (c.stable_id.clone(), i))
            .collect();
        let mut n = 0;
        for s in saved {
            let Some(&ci) = by_id.get(&s.rule) else {
                continue;
            };
            if s.key.len() != self.corrs[ci].c.group_by.len() {
                continue;
            }
            let key = Key::encode(s.key.iter().map(Option::as_deref));
            let refs: Vec<Ref> = s
                .refs
                .iter()
                .map(|(nanos, agent, seq)| Ref::new(*nanos, self.agent_number(agent), *seq))
                .collect();
            let gid = self.store.find_or_insert(ci as u16, key);
            self.store.set_live(gid, s.live);
            let corr = &self.corrs[ci];
            let temporal = matches!(
                corr.c.correlation_type,
                CorrelationType::Temporal | CorrelationType::TemporalOrdered
            );
            let g = self.store.get_mut(gid);
            match corr.c.correlation_type {
                CorrelationType::ValueCount => {
                    let mut v: VecDeque<(u32, Key)> = s
                        .values
                        .iter()
                        .map(|(t, parts)| (*t, Key::encode(parts.iter().map(Option::as_deref))))
                        .collect();
                    while v.len() > corr.max_group_entries {
                        v.pop_front();
                    }
                    g.values = (!v.is_empty()).then(|| Box::new(v));
                }
                _ => {
                    for (secs, rule) in &s.hits {
                        let rule = match (temporal, rule) {
                            (true, Some(r)) => corr.position(r),
                            (true, None) => NO_RULE,
                            (false, _) => 0,
                        };
                        g.hits.push_back(Hit { secs: *secs, rule }, usize::MAX);
                    }
                }
            }
            for r in refs {
                g.refs.push_back(r, corr.refs.max(1));
            }
            if corr.refs == 0 {
                g.refs.clear();
            }
            g.last_alert = s.last_alert.unwrap_or(NO_ALERT);
            n += 1;
        }
        n
    }
}

/// The oldest time still in `corr`'s window at `ts`.
/// The group of correlation `ci` and `key` (created if new), marked live, its window slid to
/// end at `ts`.
fn open_group<'a>(
    store: &'a mut Store,
    corrs: &'a [Corr],
    ci: usize,
    key: Key,
    ts: i64,
) -> (&'a Corr, &'a mut Group) {
    let gid = store.find_or_insert(ci as u16, key);
    store.set_live(gid, true);
    let corr = &corrs[ci];
    let g = store.get_mut(gid);
    slide(g, corr, window_start(ts, corr));
    (corr, g)
}

fn window_start(ts: i64, corr: &Corr) -> i64 {
    ts.saturating_sub(i64::try_from(corr.c.timespan_secs).unwrap_or(i64::MAX))
}

/// Drops hits older than `cutoff` from the front of the window (for temporal types, from the
/// front of each referenced rule's hits, as rsigma's per-rule queues).
fn slide(g: &mut Group, corr: &Corr, cutoff: i64) {
    let old = |secs: u32| i64::from(secs) < cutoff;
    match corr.c.correlation_type {
        CorrelationType::Temporal | CorrelationType::TemporalOrdered => {
            if !g.hits.iter().any(|h| old(h.secs)) {
                return;
            }
            let mut stopped: Vec<u32> = Vec::new();
            g.hits.retain(|h| {
                if !stopped.contains(&h.rule) && old(h.secs) {
                    false
                } else {
                    if !stopped.contains(&h.rule) {
                        stopped.push(h.rule);
                    }
                    true
                }
            });
        }
        _ => {
            while g.hits.front().is_some_and(|h| old(h.secs)) {
                g.hits.pop_front();
            }
            if let Some(v) = &mut g.values {
                while v.front().is_some_and(|(t, _)| old(*t)) {
                    v.pop_front();
                }
                if v.is_empty() {
                    g.values = None;
                }
            }
        }
    }
}

/// Appends a temporal hit, keeping at most `cap` hits per referenced rule (the newest).
fn push_temporal(g: &mut Group, hit: Hit, cap: usize) {
    g.hits.push_back(hit, usize::MAX);
    let mut same = g.hits.iter().filter(|h| h.rule == hit.rule).count();
    if same > cap {
        g.hits.retain(|h| {
            if h.rule == hit.rule && same > cap {
                same -= 1;
                false
            } else {
                true
            }
        });
    }
}

fn suppressed(g: &Group, corr: &Corr, ts: i64) -> bool {
    match corr.suppress_secs {
        Some(s) if g.last_alert != NO_ALERT => ts - i64::from(g.last_alert) < s as i64,
        _ => false,
    }
}

fn pairs(corr: &Corr, g: &Group) -> Vec<(String, String)> {
    corr.c
        .group_by
        .iter()
        .zip(g.key.parts())
        .filter_map(|(f, v)| v.map(|v| (f.name().to_string(), v)))
        .collect()
}

/// The condition's value when it holds.
fn check(corr: &Corr, g: &Group) -> Option<f64> {
    let c = &corr.c;
    let has = |p: u32| g.hits.iter().any(|h| h.rule == p);
    let eval = |e: &ConditionExpr| eval_expr(e, corr, &has);
    let fired = || corr.canon.iter().filter(|&&p| has(p)).count() as f64;
    let value = match c.correlation_type {
        CorrelationType::EventCount => g.hits.len() as f64,
        CorrelationType::ValueCount => g.values.as_ref().map_or(0, |v| {
            v.iter().map(|(_, k)| k).collect::<HashSet<&Key>>().len()
        }) as f64,
        CorrelationType::Temporal => {
            if let Some(expr) = &c.extended_expr {
                return eval(expr).then(fired);
            }
            fired()
        }
        CorrelationType::TemporalOrdered => {
            if let Some(expr) = &c.extended_expr {
                if !eval(expr) {
                    return None;
                }
            }
            if in_order(corr, g) {
                c.rule_refs.len() as f64
            } else {
                0.0
            }
        }
        _ => return None,
    };
    c.condition.check(value).then_some(value)
}

/// Some choice of one hit per referenced rule, in the rules' order, has non-decreasing
/// times (taking the earliest possible hit at each step finds one if any exists).
fn in_order(corr: &Corr, g: &Group) -> bool {
    let mut min = i64::MIN;
    for &p in &corr.canon {
        match g
            .hits
            .iter()
            .filter(|h| h.rule == p && i64::from(h.secs) >= min)
            .map(|h| i64::from(h.secs))
            .min()
        {
            Some(t) => min = t,
            None => return false,
        }
    }
    true
}

fn eval_expr(e: &ConditionExpr, corr: &Corr, has: &dyn Fn(u32) -> bool) -> bool {
    match e {
        ConditionExpr::Identifier(name) => {
            let p = corr.position(name);
            p != NO_RULE && has(p)
        }
        ConditionExpr::And(v) => v.iter().all(|x| eval_expr(x, corr, has)),
        ConditionExpr::Or(v) => v.iter().any(|x| eval_expr(x, corr, has)),
        ConditionExpr::Not(x) => !eval_expr(x, corr, has),
        ConditionExpr::Selector { .. } => false,
    }
}

#[cfg(test)]
mod tests;
