//! Alerts, incidents and rules endpoints.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use palisade_wire::event::parse_time_spec;
use palisade_wire::tls::Identity;
use palisade_wire::{Severity, Timestamp};
use serde::Deserialize;

use super::{blocking, error, json_resp, respond, AppState, Resp};
use crate::incidents::{parse_id, ActionError, AlertFilter, IncidentFilter, Status};

/// Most incidents or alerts one listing returns.
pub const MAX_LISTED: usize = 100_000;

/// Decoded `k=v` pairs of a query string.
pub(super) use crate::query::query_params as params;

fn limit_of(v: &str) -> Result<usize, String> {
    let n: usize = v
        .parse()
        .map_err(|_| format!("limit {v:?} is not a number"))?;
    if n == 0 || n > MAX_LISTED {
        return Err(format!("limit must be 1..={MAX_LISTED}"));
    }
    Ok(n)
}

/// Parses the `GET /v1/incidents` query.
pub fn incident_filter(query: &str, now: Timestamp) -> Result<IncidentFilter, String> {
    let mut f = IncidentFilter {
        limit: 100,
        ..IncidentFilter::default()
    };
    for (k, v) in params(query)? {
        match k.as_str() {
            "status" => {
                for s in v.split(',') {
                    if s == "open" {
                        f.statuses.extend([Status::New, Status::Acknowledged]);
                    } else {
                        f.statuses.push(s.parse()?);
                    }
                }
            }
            "severity" => f.min_severity = Some(v.parse::<Severity>()?),
            "since" => f.since = Some(parse_time_spec(&v, now)?),
            "limit" => f.limit = limit_of(&v)?,
            _ => return Err(format!("unknown query parameter {k:?}")),
        }
    }
    Ok(f)
}

/// Parses the `GET /v1/alerts` query.
pub fn alert_filter(query: &str, now: Timestamp) -> Result<AlertFilter, String> {
    let mut f = AlertFilter {
        limit: 100,
        ..AlertFilter::default()
    };
    for (k, v) in params(query)? {
        match k.as_str() {
            "since" => f.since = Some(parse_time_spec(&v, now)?),
            "until" => f.until = Some(parse_time_spec(&v, now)?),
            "severity" => f.min_severity = Some(v.parse::<Severity>()?),
            "rule" => f.rule = Some(v),
            "incident" => f.incident = Some(parse_id(&v)?),
            "limit" => f.limit = limit_of(&v)?,
            _ => return Err(format!("unknown query parameter {k:?}")),
        }
    }
    Ok(f)
}

fn ndjson<T: serde::Serialize>(items: &[T]) -> Resp {
    let mut body = Vec::new();
    for i in items {
        if serde_json::to_writer(&mut body, i).is_ok() {
            body.push(b'\n');
        }
    }
    let mut r = respond(StatusCode::OK, "application/x-ndjson", body);
    if let Ok(v) = items.len().to_string().parse() {
        r.headers_mut().insert("x-palisade-count", v);
    }
    r
}

/// `GET /v1/alerts`.
pub(super) async fn alerts(state: Arc<AppState>, query: &str) -> Resp {
    let f = match alert_filter(query, Timestamp::now()) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match blocking(&state, move |s| s.incidents.alerts(&f)).await {
        Ok(list) => ndjson(&list),
        Err(e) => e,
    }
}

/// `GET /v1/incidents`.
pub(super) async fn incidents(state: Arc<AppState>, query: &str) -> Resp {
    let f = match incident_filter(query, Timestamp::now()) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match blocking(&state, move |s| s.incidents.incidents(&f)).await {
        Ok(list) => ndjson(&list),
        Err(e) => e,
    }
}

/// `GET /v1/incidents/{id}`: the incident and its alerts.
pub(super) async fn incident(state: Arc<AppState>, id: &str) -> Resp {
    let id = match parse_id(id) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let read = blocking(&state, move |s| {
        let inc = s.incidents.incident(id)?;
        let alerts = s.incidents.alerts(&AlertFilter {
            incident: Some(id),
            limit: 1000,
            ..AlertFilter::default()
        })?;
        Ok((inc, alerts))
    })
    .await;
    match read {
        Ok((Some(inc), alerts)) => json_resp(
            StatusCode::OK,
            &serde_json::json!({ "incident": inc, "alerts": alerts }),
        ),
        Ok((None, _)) => error(StatusCode::NOT_FOUND, format!("no incident INC-{id}")),
        Err(e) => e,
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionBody {
    #[serde(default)]
    comment: Option<String>,
}

/// An action body: a JSON object with known fields only. serde would also take a struct as a
/// JSON array (`["text"]` for `{"comment": "text"}`), so anything but an object is refused first.
fn parse_action(body: &[u8]) -> Result<ActionBody, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !v.is_object() {
        return Err(format!(
            "expected a JSON object like {{\"comment\": \"…\"}}, got {}",
            match v {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ));
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Largest body of an incident action.
const MAX_ACTION_BYTES: usize = 16 << 10;

/// Reads the body through the audit hook, so the action's record carries it; within the
/// body deadline.
async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<Bytes, Resp> {
    let deadline = state.body_read_timeout;
    match tokio::time::timeout(
        deadline,
        crate::audit::hook::read_body(req, MAX_ACTION_BYTES),
    )
    .await
    {
        Ok(Ok((_, b))) => Ok(b),
        Ok(Err(e)) => Err(error(StatusCode::PAYLOAD_TOO_LARGE, e)),
        Err(_) => Err(super::body_too_slow(error, deadline)),
    }
}

/// Parses the body of an incident action: empty, or `{"comment": "…"}` of at most 4096 bytes.
pub(super) fn parse_action_body(body: &[u8]) -> Result<ActionBody, String> {
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        parse_action(body).map_err(|e| format!("bad request body: {e}"))?
    };
    if body.comment.as_ref().is_some_and(|c| c.len() > 4096) {
        return Err("comment longer than 4096 bytes".into());
    }
    Ok(body)
}

/// `POST /v1/incidents/{id}/ack` and `/resolve`.
pub(super) async fn act(
    state: Arc<AppState>,
    who: Arc<Identity>,
    id: &str,
    resolve: bool,
    req: Request<Incoming>,
) -> Resp {
    let id = match parse_id(id) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let body = match read_body(&state, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body = match parse_action_body(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let by = who.name.clone();
    let st = state.clone();
    let done = super::timing::off_thread(move || {
        if resolve {
            st.incidents.resolve(id, &by, body.comment)
        } else {
            st.incidents.ack(id, &by, body.comment)
        }
    })
    .await;
    match done {
        Ok(Ok(inc)) => json_resp(StatusCode::OK, &inc),
        Ok(Err(ActionError::NotFound(id))) => {
            error(StatusCode::NOT_FOUND, format!("no incident INC-{id}"))
        }
        Ok(Err(e @ ActionError::Conflict { .. })) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /v1/rules`.
pub(super) async fn rules(state: &Arc<AppState>) -> Resp {
    match &state.correlator {
        Some(c) => json_resp(StatusCode::OK, &c.rules_status()),
        None => error(
            StatusCode::CONFLICT,
            "correlation is disabled in this collector's config",
        ),
    }
}

/// `POST /v1/rules/reload`: re-reads the rule directory now; answers with the outcome.
pub(super) async fn reload(state: &Arc<AppState>) -> Resp {
    let Some(c) = state.correlator.clone() else {
        return error(
            StatusCode::CONFLICT,
            "correlation is disabled in this collector's config",
        );
    };
    let before = c.rules_status().loaded_at;
    let before_err = c.rules_status().last_error;
    c.request_reload();
    // The correlator checks within a second; wait up to 5 s for a visible outcome.
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = c.rules_status();
        if now.loaded_at != before || now.last_error != before_err {
            break;
        }
    }
    let now = c.rules_status();
    match &now.last_error {
        Some(e) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("rule set refused, previous set stays active: {e}"),
        ),
        None => json_resp(StatusCode::OK, &now),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_action;

    #[test]
    fn an_action_body_is_an_object_with_known_fields_only() {
        assert_eq!(
            parse_action(br#"{"comment":"ok"}"#)
                .unwrap()
                .comment
                .as_deref(),
            Some("ok")
        );
        // serde alone would read this as {"comment": "sneaky"}.
        let e = parse_action(br#"["sneaky"]"#).unwrap_err();
        assert!(e.contains("JSON object") && e.contains("array"), "{e}");
        assert!(parse_action(b"null").is_err());
        let e = parse_action(br#"{"coment":"x"}"#).unwrap_err();
        assert!(e.contains("unknown field `coment`"), "{e}");
    }
}
