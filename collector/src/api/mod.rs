//! The collector's HTTPS API. Every request arrives with the caller's verified certificate
//! identity; [`ENDPOINTS`] names, for each route, the roles allowed to call it (the
//! separation of duties of MLPS grade 3 lives in that one table, and a test walks it).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use palisade_wire::batch::{self, Limits};
use palisade_wire::event::parse_time_spec;
use palisade_wire::tls::{Identity, Role};
use palisade_wire::{EventKind, Severity, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub mod alert_tally;
pub mod incidents;
pub mod situation;
pub mod timing;

use crate::ingest::{IngestMetrics, IngestQueue, IngestSnapshot};
use crate::store::{AgentRecord, EventStore, Query, StoreStats};

/// Most events one `GET /v1/events` returns.
pub const MAX_EVENTS_PER_QUERY: usize = 1_000_000;

/// What handlers share.
pub struct AppState {
    /// The store (reads).
    pub store: Arc<dyn EventStore>,
    /// The write queue.
    pub queue: IngestQueue,
    /// Ingest counters.
    pub metrics: Arc<IngestMetrics>,
    /// Batch limits.
    pub limits: Limits,
    /// Longest time a request body may take to arrive (`[server] body_read_timeout_secs`).
    pub body_read_timeout: std::time::Duration,
    /// Seconds in Retry-After on 503.
    pub retry_after_secs: u64,
    /// Retention, for `status`.
    pub retention_days: u32,
    /// Start time, for uptime.
    pub started: Instant,
    /// The audit log every request is recorded in ([`crate::audit`]).
    pub audit: Arc<crate::audit::AuditLog>,
    /// Alerts and incidents.
    pub incidents: Arc<crate::incidents::IncidentStore>,
    /// The correlator, when correlation is enabled.
    pub correlator: Option<Arc<crate::correlate::Correlator>>,
    /// Rates sampled over time, for `situation`.
    pub rates: Arc<situation::RateHistory>,
    /// Agents' alert events per minute, for `situation` ([`alert_tally`]).
    pub alert_tally: Arc<alert_tally::AlertTally>,
    /// Recently committed events, for `GET /v1/tail` ([`crate::tail`]).
    pub tail: Arc<crate::tail::Tail>,
    /// Certificate serial each agent was last recorded with, so the agent record is written
    /// only when an agent first connects or its certificate changes.
    pub cert_seen: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Answer times per endpoint ([`timing`]).
    pub timings: Arc<timing::ApiTimings>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// `GET /v1/status` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// Collector version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Retention in days.
    pub retention_days: u32,
    /// Store figures.
    pub store: StoreStats,
    /// Ingest counters since start.
    pub ingest: IngestSnapshot,
    /// Every agent seen.
    pub agents: Vec<AgentRecord>,
    /// Correlation counters, when correlation is on.
    #[serde(default)]
    pub correlation: Option<crate::correlate::CorrelationSnapshot>,
    /// Audit records written since start.
    #[serde(default)]
    pub audit_records: u64,
    /// Audit records lost since start (should stay 0).
    #[serde(default)]
    pub audit_lost: u64,
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json_resp(status: StatusCode, value: &impl Serialize) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    respond(status, "application/json", body)
}

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    json_resp(status, &json!({ "error": message.into() }))
}

/// One API endpoint: method, path pattern (`{id}` matches one path segment) and who may call it.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern.
    pub pattern: &'static str,
    /// Roles allowed.
    pub roles: &'static [Role],
}

const READERS: &[Role] = &[Role::Analyst, Role::SecurityAdmin];
const OVERVIEW: &[Role] = &[Role::Analyst, Role::SecurityAdmin, Role::SystemAdmin];

/// Every endpoint. The role × endpoint matrix test iterates this table.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "POST",
        pattern: "/v1/ingest",
        // Replicators report their runs (backups, sync lag, drills) as events.
        roles: &[Role::Agent, Role::Replicator],
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/status",
        roles: OVERVIEW,
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/agents",
        roles: OVERVIEW,
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/events",
        roles: READERS,
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/tail",
        roles: READERS,
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/alerts",
        roles: READERS,
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/incidents",
        roles: READERS,
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/incidents/{id}",
        roles: READERS,
    },
    Endpoint {
        method: "POST",
        pattern: "/v1/incidents/{id}/ack",
        roles: &[Role::SecurityAdmin],
    },
    Endpoint {
        method: "POST",
        pattern: "/v1/incidents/{id}/resolve",
        roles: &[Role::SecurityAdmin],
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/rules",
        roles: READERS,
    },
    Endpoint {
        method: "POST",
        pattern: "/v1/rules/reload",
        roles: &[Role::SecurityAdmin],
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/situation",
        roles: OVERVIEW,
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/audit",
        roles: &[Role::AuditAdmin],
    },
    Endpoint {
        method: "GET",
        pattern: "/v1/audit/verify",
        roles: &[Role::AuditAdmin],
    },
];

/// Finds the endpoint for `method` and `path`: its index in [`ENDPOINTS`], the endpoint, and
/// the values of its `{…}` segments.
pub fn route<'p>(
    method: &Method,
    path: &'p str,
) -> Result<(usize, &'static Endpoint, Vec<&'p str>), (StatusCode, String)> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut path_known = false;
    for (index, ep) in ENDPOINTS.iter().enumerate() {
        let pat: Vec<&str> = ep.pattern.split('/').collect();
        if pat.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let fits = pat.iter().zip(&segments).all(|(p, s)| {
            if p.starts_with('{') {
                params.push(*s);
                !s.is_empty()
            } else {
                p == s
            }
        });
        if !fits {
            continue;
        }
        path_known = true;
        if ep.method == method.as_str() {
            return Ok((index, ep, params));
        }
    }
    Err(if path_known {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} not allowed on {path}"),
        )
    } else {
        (StatusCode::NOT_FOUND, format!("no such endpoint {path}"))
    })
}

/// Routes one request and appends its audit record (refusals included); an admin action
/// (non-GET other than ingest) is answered only once its record is durable.
pub async fn handle(
    state: Arc<AppState>,
    who: Arc<Identity>,
    peer: std::net::SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    let (req, pending) = crate::audit::hook::begin(&who, peer, req).await;
    let audit = state.audit.clone();
    let resp = dispatch(state, who, req).await;
    crate::audit::hook::finish(&audit, pending, resp.status()).await;
    resp
}

async fn dispatch(state: Arc<AppState>, who: Arc<Identity>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let (index, ep, params) = match route(&method, &path) {
        Ok((index, ep, params)) => (
            index,
            ep,
            params.into_iter().map(str::to_string).collect::<Vec<_>>(),
        ),
        Err((status, msg)) => return error(status, msg),
    };
    if !ep.roles.contains(&who.role) {
        tracing::warn!(identity = %who, %method, %path, "refused: role not allowed");
        if ep.pattern == "/v1/ingest" {
            state
                .metrics
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        return error(
            StatusCode::FORBIDDEN,
            format!("role {} may not {method} {path}", who.role),
        );
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let timings = state.timings.clone();
    let started = Instant::now();
    let (resp, cpu) = timing::measured(async move {
        match ep.pattern {
            "/v1/ingest" => ingest(state, who, req).await,
            "/v1/status" => status(&state).await,
            "/v1/agents" => match blocking(&state, |s| s.store.agents()).await {
                Ok(a) => json_resp(StatusCode::OK, &a),
                Err(e) => e,
            },
            "/v1/events" => events(state, &query).await,
            "/v1/tail" => crate::tail::endpoint(state.tail.clone(), &query).await,
            "/v1/alerts" => incidents::alerts(state, &query).await,
            "/v1/incidents" => incidents::incidents(state, &query).await,
            "/v1/incidents/{id}" => incidents::incident(state, param(&params, 0)).await,
            "/v1/incidents/{id}/ack" => {
                incidents::act(state, who, param(&params, 0), false, req).await
            }
            "/v1/incidents/{id}/resolve" => {
                incidents::act(state, who, param(&params, 0), true, req).await
            }
            "/v1/rules" => incidents::rules(&state).await,
            "/v1/rules/reload" => incidents::reload(&state).await,
            "/v1/situation" => situation::endpoint(state, &query).await,
            "/v1/audit" => crate::audit::hook::list_endpoint(state.audit.clone(), &query).await,
            "/v1/audit/verify" => crate::audit::hook::verify_endpoint(state.audit.clone()).await,
            other => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("endpoint {other} has no handler"),
            ),
        }
    })
    .await;
    timings.record(index, started.elapsed(), cpu);
    resp
}

fn param(params: &[String], i: usize) -> &str {
    params.get(i).map(String::as_str).unwrap_or("")
}

async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Resp> {
    let st = state.clone();
    match timing::off_thread(move || f(&st)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store read failed");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn ingest(state: Arc<AppState>, who: Arc<Identity>, req: Request<Incoming>) -> Resp {
    let reject = |status: StatusCode, msg: String| {
        state
            .metrics
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(identity = %who, %status, reason = %msg, "batch refused");
        error(status, msg)
    };
    let max = state.limits.max_frame_bytes;
    let deadline = state.body_read_timeout;
    let read = tokio::time::timeout(deadline, Limited::new(req.into_body(), max).collect()).await;
    let Ok(read) = read else {
        return body_too_slow(reject, deadline);
    };
    let body = match read {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                reject(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("batch larger than the {max}-byte limit"),
                )
            } else {
                reject(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}"),
                )
            };
        }
    };
    let limits = state.limits;
    let decoded = timing::off_thread(move || batch::decode(&body, &limits)).await;
    let batch = match decoded {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let status = if e.is_too_large() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return reject(status, format!("malformed batch: {e}"));
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if batch.agent_id != who.name {
        return reject(
            StatusCode::FORBIDDEN,
            format!(
                "certificate {:?} may not send batches for agent {:?}",
                who.name, batch.agent_id
            ),
        );
    }
    let rx = match state.queue.try_submit(batch) {
        Ok(rx) => rx,
        Err(_) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "write queue full, retry later",
            );
            if let Ok(v) = state.retry_after_secs.to_string().parse() {
                r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
            }
            return r;
        }
    };
    match rx.await {
        Ok(Ok(outcome)) => {
            note_certificate(&state, &who).await;
            json_resp(StatusCode::OK, &outcome)
        }
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store write failed, batch not stored: {e}"),
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "store writer stopped"),
    }
}

/// 408 for a body that did not arrive within `deadline`, with `Connection: close` so the slot
/// is freed (what the client sent so far is unread).
fn body_too_slow(
    make: impl FnOnce(StatusCode, String) -> Resp,
    deadline: std::time::Duration,
) -> Resp {
    let mut r = make(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "request body not received within {} s (server.body_read_timeout_secs)",
            deadline.as_secs()
        ),
    );
    r.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

/// Records the agent's certificate (serial, expiry) for `agents` once per new certificate.
async fn note_certificate(state: &Arc<AppState>, who: &Arc<Identity>) {
    let known = state
        .cert_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&who.name)
        .is_some_and(|s| *s == who.serial);
    if known {
        return;
    }
    let w = who.clone();
    let not_after = Timestamp(who.not_after.saturating_mul(1_000_000_000));
    let r = blocking(state, move |s| {
        s.store.note_certificate(&w.name, &w.serial, not_after)
    })
    .await;
    if r.is_ok() {
        state
            .cert_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(who.name.clone(), who.serial.clone());
    }
}

async fn status(state: &Arc<AppState>) -> Resp {
    use std::sync::atomic::Ordering::Relaxed;
    let read = blocking(state, |s| Ok((s.store.stats()?, s.store.agents()?))).await;
    match read {
        Ok((store, agents)) => json_resp(
            StatusCode::OK,
            &StatusReport {
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_secs: state.started.elapsed().as_secs(),
                retention_days: state.retention_days,
                store,
                ingest: state.metrics.snapshot(),
                agents,
                correlation: state.correlator.as_ref().map(|c| c.snapshot()),
                audit_records: state.audit.metrics().records.load(Relaxed),
                audit_lost: state.audit.metrics().lost.load(Relaxed),
            },
        ),
        Err(e) => e,
    }
}

/// Parses the `GET /v1/events` query string.
pub fn parse_query(query: &str, now: Timestamp) -> Result<Query, String> {
    let mut q = Query {
        since: parse_time_spec("15m", now)?,
        until: Timestamp(i64::MAX),
        agent: None,
        kind: None,
        min_severity: None,
        limit: 100,
        newest_first: true,
        after: None,
        filter: None,
    };
    for (k, v) in crate::query::query_params(query)? {
        match k.as_str() {
            "since" => q.since = parse_time_spec(&v, now)?,
            "until" => q.until = parse_time_spec(&v, now)?,
            "agent" => q.agent = Some(v),
            "kind" => q.kind = Some(v.parse::<EventKind>()?),
            "severity" => q.min_severity = Some(v.parse::<Severity>()?),
            "limit" => q.limit = crate::query::parse_limit(&v, MAX_EVENTS_PER_QUERY)?,
            "order" => q.newest_first = crate::query::parse_newest_first(&v)?,
            "filter" => crate::query::apply_filter(&mut q, &v)?,
            "after" => q.after = Some(v.parse()?),
            _ => return Err(format!("unknown query parameter {k:?}")),
        }
    }
    Ok(q)
}

async fn events(state: Arc<AppState>, query: &str) -> Resp {
    let q = match parse_query(query, Timestamp::now()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = q.limit;
    let result = blocking(&state, move |s| {
        let mut body = Vec::new();
        let n = s.store.query(&q, &mut |v| {
            body.extend_from_slice(v);
            body.push(b'\n');
            true
        })?;
        Ok((n, body))
    })
    .await;
    match result {
        Ok((n, body)) => {
            let next = crate::query::next_after(&body, n, limit);
            let mut r = respond(StatusCode::OK, "application/x-ndjson", body);
            if let Ok(v) = n.to_string().parse() {
                r.headers_mut().insert("x-palisade-count", v);
            }
            if let Some(v) = next.and_then(|n| n.parse().ok()) {
                r.headers_mut().insert(crate::query::NEXT_HEADER, v);
            }
            r
        }
        Err(e) => e,
    }
}

/// Entry point for the `api_requests` fuzz target.
#[doc(hidden)]
pub mod fuzzing {
    use hyper::Method;
    use palisade_wire::Timestamp;

    /// What a client controls in a request, minus the TLS identity: `data[0]` picks the method,
    /// the rest up to the first newline is the path (routed, with its `{id}` parameters
    /// parsed), the next line is the query string (given to every endpoint's query parser), and
    /// what follows is the body (parsed as an incident action's).
    pub fn api_request(data: &[u8]) {
        let Some((&m, rest)) = data.split_first() else {
            return;
        };
        let method = match m % 3 {
            0 => Method::GET,
            1 => Method::POST,
            _ => Method::DELETE,
        };
        let mut parts = rest.splitn(3, |&b| b == b'\n');
        let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
        let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
        let body = parts.next().unwrap_or_default();
        if let Ok((_, _, params)) = super::route(&method, &path) {
            for p in params {
                let _ = crate::incidents::parse_id(p);
            }
        }
        let now = Timestamp(1_780_000_000_000_000_000);
        let _ = super::parse_query(&query, now);
        let _ = super::incidents::incident_filter(&query, now);
        let _ = super::incidents::alert_filter(&query, now);
        let _ = super::situation::parse_query(&query, now);
        let _ = crate::tail::TailRequest::parse(&query);
        let _ = crate::audit::query::parse_query(&query, now);
        let _ = super::incidents::parse_action_body(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let now = Timestamp(1_000_000_000_000);
        let q = parse_query(
            "since=10s&agent=a%2Db&kind=heartbeat&limit=5&order=asc",
            now,
        )
        .unwrap();
        assert_eq!(q.since, Timestamp(990_000_000_000));
        assert_eq!(q.agent.as_deref(), Some("a-b"));
        assert_eq!(q.kind, Some(EventKind::Heartbeat));
        assert_eq!(q.limit, 5);
        assert!(!q.newest_first);
        assert!(parse_query("bogus=1", now).is_err());
        assert!(parse_query("limit=99999999", now).is_err());
        assert!(parse_query("since=%zz", now).is_err());
    }

    #[test]
    fn routing_finds_endpoints_and_tells_405_from_404() {
        let (index, ep, params) = route(&Method::GET, "/v1/events").unwrap();
        assert_eq!(ep.pattern, "/v1/events");
        assert_eq!(
            (ENDPOINTS[index].pattern, ENDPOINTS[index].method),
            (ep.pattern, ep.method),
            "the index is the endpoint's"
        );
        assert!(params.is_empty());
        let (index, ep, params) = route(&Method::POST, "/v1/incidents/7/ack").unwrap();
        assert_eq!(ENDPOINTS[index].pattern, "/v1/incidents/{id}/ack");
        assert_eq!((ep.method, params), ("POST", vec!["7"]));
        assert_eq!(
            route(&Method::DELETE, "/v1/events").unwrap_err().0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(&Method::GET, "/v1/nope").unwrap_err().0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&Method::GET, "/v1/events/").unwrap_err().0,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn no_endpoint_is_open_to_every_role_and_ingest_is_agents_only() {
        for ep in ENDPOINTS {
            assert!(
                ep.roles.len() < Role::ALL.len(),
                "{} open to all",
                ep.pattern
            );
            assert!(!ep.roles.contains(&Role::Server), "{}", ep.pattern);
            assert_eq!(
                ep.roles.contains(&Role::Agent),
                ep.pattern == "/v1/ingest",
                "{}",
                ep.pattern
            );
        }
    }
}
