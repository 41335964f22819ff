//! The view of one stored event that Sigma rules evaluate.
//!
//! rsigma's `JsonEvent` re-parses the dotted path and walks a `serde_json::Value` on every field
//! lookup; with ~100 rules that lookup was 60% of the correlator's time (measured: 8k events/s
//! with `JsonEvent`, see docs/design-notes.md). Our events arrive already decoded into
//! [`palisade_wire::Event`], so the ECS fields it models are answered by a `match` on the path
//! against the typed struct, with no parse and no allocation for strings. Anything else
//! (`process.*`, fields a future agent adds) falls back to the event's raw JSON, parsed at most
//! once per event and only when a rule asks for such a field; `palisade.*` is walked in the
//! event's own decoded `palisade` object.

use std::borrow::Cow;
use std::cell::OnceCell;

use palisade_wire::Event;
use rsigma_eval::{Event as SigmaEventTrait, EventValue};
use serde_json::Value;

/// One event as rules see it.
pub struct SigmaEvent<'a> {
    typed: &'a Event,
    raw: &'a [u8],
    json: OnceCell<Option<Value>>,
}

impl std::fmt::Debug for SigmaEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigmaEvent")
            .field("id", &self.typed.event.id)
            .finish_non_exhaustive()
    }
}

fn s(v: &str) -> Option<EventValue<'_>> {
    Some(EventValue::Str(Cow::Borrowed(v)))
}

fn opt(v: &Option<String>) -> Option<EventValue<'_>> {
    v.as_deref().and_then(s)
}

fn num(v: Option<u64>) -> Option<EventValue<'static>> {
    v.map(|n| EventValue::Int(i64::try_from(n).unwrap_or(i64::MAX)))
}

fn list(v: &[String]) -> Option<EventValue<'_>> {
    if v.is_empty() {
        return None;
    }
    Some(EventValue::Array(
        v.iter()
            .map(|x| EventValue::Str(Cow::Borrowed(x.as_str())))
            .collect(),
    ))
}

impl<'a> SigmaEvent<'a> {
    /// Wraps a decoded event and the JSON line it came from.
    pub fn new(typed: &'a Event, raw: &'a [u8]) -> Self {
        SigmaEvent {
            typed,
            raw,
            json: OnceCell::new(),
        }
    }

    fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| serde_json::from_slice(self.raw).ok())
            .as_ref()
    }

    /// The typed fields; `None` means "not a typed field, ask the JSON" and `Some(None)` means
    /// "a typed field that this event does not have".
    #[allow(clippy::option_option)] // the two layers mean different things (see above)
    fn typed_field(&self, path: &str) -> Option<Option<EventValue<'_>>> {
        let e = self.typed;
        let endpoint = |ep: &'a Option<palisade_wire::event::Endpoint>, f: &str| {
            let ep = ep.as_ref()?;
            match f {
                "ip" => ep.ip.map(|ip| EventValue::Str(Cow::Owned(ip.to_string()))),
                "port" => num(ep.port.map(u64::from)),
                "mac" => opt(&ep.mac),
                "bytes" => num(ep.bytes),
                "packets" => num(ep.packets),
                _ => None,
            }
        };
        let v = match path {
            "event.dataset" => s(e.event.dataset.dataset()),
            "event.kind" => s(e.event.kind.name()),
            "event.severity" => Some(EventValue::Int(i64::from(e.event.severity.number()))),
            "event.action" => opt(&e.event.action),
            "event.outcome" => opt(&e.event.outcome),
            "user.name" => e.user.as_ref().and_then(|u| s(&u.name)),
            "user.domain" => e.user.as_ref().and_then(|u| opt(&u.domain)),
            "event.id" => s(&e.event.id),
            "event.sequence" => num(Some(e.event.sequence)),
            "event.category" => list(&e.event.category),
            "event.type" => list(&e.event.kind_type),
            "agent.id" => s(&e.agent.id),
            "agent.version" => opt(&e.agent.version),
            "observer.name" => e.observer.as_ref().and_then(|o| s(&o.name)),
            "observer.hostname" => e.observer.as_ref().and_then(|o| opt(&o.hostname)),
            "host.name" => e.host.as_ref().and_then(|h| s(&h.name)),
            "message" => opt(&e.message),
            "rule.id" => e.rule.as_ref().and_then(|r| opt(&r.id)),
            "rule.name" => e.rule.as_ref().and_then(|r| opt(&r.name)),
            "rule.category" => e.rule.as_ref().and_then(|r| opt(&r.category)),
            "rule.ruleset" => e.rule.as_ref().and_then(|r| opt(&r.ruleset)),
            "network.transport" => e.network.as_ref().and_then(|n| opt(&n.transport)),
            "network.protocol" => e.network.as_ref().and_then(|n| opt(&n.protocol)),
            "network.community_id" => e.network.as_ref().and_then(|n| opt(&n.community_id)),
            "file.path" => e.file.as_ref().and_then(|f| s(&f.path)),
            "@timestamp" => Some(EventValue::Str(Cow::Owned(e.timestamp.to_string()))),
            _ => {
                if let Some(f) = path.strip_prefix("source.") {
                    endpoint(&e.source, f)
                } else if let Some(f) = path.strip_prefix("destination.") {
                    endpoint(&e.destination, f)
                } else if let Some(k) = path.strip_prefix("labels.") {
                    e.labels.get(k).and_then(|v| s(v))
                } else if let Some(rest) = path.strip_prefix("palisade.") {
                    // Already decoded with the event: walking it here saves parsing the whole
                    // raw line for rules on `palisade.flow.*` (16% of the correlator's time
                    // in the soak, where most events are flows without that object).
                    e.palisade
                        .as_ref()
                        .and_then(|p| walk(p, rest))
                        .map(EventValue::from)
                } else {
                    return None;
                }
            }
        };
        Some(v)
    }
}

fn walk<'v>(mut v: &'v Value, path: &str) -> Option<&'v Value> {
    // ECS documents may hold a dotted key literally ("event.dataset": …) or nested; try the
    // whole remaining path as a key before descending.
    let mut rest = path;
    loop {
        let obj = v.as_object()?;
        if let Some(hit) = obj.get(rest) {
            return Some(hit);
        }
        let (head, tail) = rest.split_once('.')?;
        v = obj.get(head)?;
        rest = tail;
    }
}

fn visit_strings<'v>(v: &'v Value, f: &mut dyn FnMut(&'v str) -> bool) -> bool {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().any(|x| visit_strings(x, f)),
        Value::Object(o) => o.values().any(|x| visit_strings(x, f)),
        _ => false,
    }
}

impl SigmaEventTrait for SigmaEvent<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        if let Some(v) = self.typed_field(path) {
            return v;
        }
        walk(self.json()?, path).map(EventValue::from)
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        match self.json() {
            Some(v) => visit_strings(v, &mut |s| pred(s)),
            None => false,
        }
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut out = Vec::new();
        if let Some(v) = self.json() {
            visit_strings(v, &mut |s| {
                out.push(Cow::Borrowed(s));
                false
            });
        }
        out
    }

    fn to_json(&self) -> Value {
        self.json().cloned().unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::{EventKind, Severity};

    #[test]
    fn typed_fields_and_json_fallback_agree_with_the_stored_json() {
        let mut e = Event::new("probe-1", EventKind::Alert, Severity::High).with_message("scan");
        e.source = Some(palisade_wire::event::Endpoint {
            ip: Some("10.0.0.5".parse().unwrap()),
            port: Some(4444),
            ..Default::default()
        });
        e.labels.insert("segment".into(), "dmz".into());
        e.palisade = Some(serde_json::json!({"scan": {"targets": 40}}));
        e.user = Some(palisade_wire::event::User {
            name: "root".into(),
            domain: None,
        });
        let mut raw: Value = serde_json::to_value(&e).unwrap();
        raw["process"] = serde_json::json!({"name": "sshd"});
        let raw = serde_json::to_vec(&raw).unwrap();
        let se = SigmaEvent::new(&e, &raw);
        let json: Value = serde_json::from_slice(&raw).unwrap();
        for path in [
            "event.dataset",
            "event.kind",
            "event.severity",
            "agent.id",
            "message",
            "source.ip",
            "source.port",
            "labels.segment",
            "palisade.scan.targets",
            "palisade.scan",
            "palisade.scan.missing",
            "palisade.nothing",
            "user.name",
            "process.name",
        ] {
            let typed = se.get_field(path).map(|v| v.to_json());
            let plain = walk(&json, path).cloned();
            assert_eq!(typed, plain, "{path}");
        }
        assert_eq!(se.get_field("destination.ip"), None);
        assert_eq!(se.get_field("no.such.field"), None);
        assert!(se.any_string_value(&|s| s == "root"));
    }
}
