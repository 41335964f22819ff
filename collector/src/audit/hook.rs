//! What the API calls around every request ([`begin`] before routing, [`finish`] with the
//! status), and the two audit endpoints. Admin actions (any non-GET other than ingest) carry
//! their request body (first [`MAX_ACTION_BYTES`], as JSON if it parses) and are answered only
//! after their record is durable.
//!
//! The body of an allowed admin request belongs to its handler, which must read it with
//! [`read_body`] so the record gets a copy; for a refused one [`begin`] reads it itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use palisade_wire::tls::Identity;
use palisade_wire::Timestamp;
use serde_json::Value;

use super::record::Entry;
use super::{query, verify, AuditLog};

/// Bytes of an admin request's body kept in its audit record.
pub const MAX_ACTION_BYTES: usize = 4096;
/// Longest path (with query) kept in a record.
const MAX_PATH_BYTES: usize = 4096;

/// Where a handler leaves the body it read; a request extension.
#[derive(Clone, Debug, Default)]
pub struct ActionSlot(Arc<Mutex<Option<Value>>>);

impl ActionSlot {
    fn set(&self, body: &[u8], truncated: bool) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(action_detail(body, truncated));
    }

    fn take(&self) -> Option<Value> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The body as JSON if it parses, else as text; `null` when empty.
pub fn action_detail(body: &[u8], truncated: bool) -> Value {
    let capped = &body[..body.len().min(MAX_ACTION_BYTES)];
    if capped.is_empty() {
        return Value::Null;
    }
    if !truncated && capped.len() == body.len() {
        if let Ok(v) = serde_json::from_slice::<Value>(capped) {
            return v;
        }
    }
    let mut text = String::from_utf8_lossy(capped).into_owned();
    if truncated || capped.len() < body.len() {
        text.push_str("…[truncated]");
    }
    Value::String(text)
}

/// A request on its way through the API.
#[derive(Debug)]
pub struct Pending {
    entry: Entry,
    durable: bool,
    slot: Option<ActionSlot>,
}

fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated]", &s[..end])
}

/// Starts the record for `req`. For a refused admin request, reads the start of its body.
pub async fn begin(
    who: &Identity,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> (Request<Incoming>, Pending) {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let full = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_string());
    let durable = method != Method::GET && path != "/v1/ingest";
    let mut pending = Pending {
        entry: Entry {
            identity: who.name.clone(),
            role: who.role.name().to_string(),
            peer: peer.to_string(),
            method: method.to_string(),
            path: cap(&full, MAX_PATH_BYTES),
            action: Value::Null,
            result: 0,
        },
        durable,
        slot: None,
    };
    if !durable {
        return (req, pending);
    }
    let slot = ActionSlot::default();
    pending.slot = Some(slot.clone());
    let allowed =
        matches!(crate::api::route(&method, &path), Ok((_, ep, _)) if ep.roles.contains(&who.role));
    let mut req = req;
    if allowed {
        req.extensions_mut().insert(slot);
        return (req, pending);
    }
    // Refused: the handler will not read the body, so keep what the caller tried to send.
    let (parts, mut body) = req.into_parts();
    let mut got = Vec::new();
    let mut truncated = false;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                got.extend_from_slice(d);
                if got.len() > MAX_ACTION_BYTES {
                    truncated = true;
                    break;
                }
            }
        }
    })
    .await;
    slot.set(&got, truncated);
    (Request::from_parts(parts, body), pending)
}

/// Reads an admin request's body (at most `max` bytes) for its handler and keeps its first
/// [`MAX_ACTION_BYTES`] for the audit record.
pub async fn read_body(
    req: Request<Incoming>,
    max: usize,
) -> Result<(hyper::http::request::Parts, Bytes), String> {
    let (parts, body) = req.into_parts();
    let bytes = Limited::new(body, max)
        .collect()
        .await
        .map_err(|e| format!("cannot read request body (limit {max} bytes): {e}"))?
        .to_bytes();
    if let Some(slot) = parts.extensions.get::<ActionSlot>() {
        slot.set(&bytes, false);
    }
    Ok((parts, bytes))
}

/// Appends the record with the answered `status`; waits for durability for admin actions.
pub async fn finish(audit: &AuditLog, mut pending: Pending, status: StatusCode) {
    pending.entry.result = status.as_u16();
    if let Some(v) = pending.slot.as_ref().and_then(ActionSlot::take) {
        pending.entry.action = v;
    }
    let (method, path) = (pending.entry.method.clone(), pending.entry.path.clone());
    if let Err(e) = audit.record(pending.entry, pending.durable).await {
        if matches!(e, super::AuditError::Stopped) {
            // Write errors are counted by the writer; a stopped writer counts here.
            audit
                .metrics()
                .lost
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::error!(error = %e, %method, %path, "audit record lost");
    }
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

fn error(status: StatusCode, message: String) -> Resp {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    respond(status, "application/json", body)
}

/// `GET /v1/audit`: records as NDJSON, newest first unless `order=asc`.
pub async fn list_endpoint(audit: Arc<AuditLog>, query_string: &str) -> Resp {
    let q = match query::parse_query(query_string, Timestamp::now()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let dir = audit.dir().to_path_buf();
    match crate::api::timing::off_thread(move || query::list(&dir, &q)).await {
        Ok(Ok(lines)) => {
            let n = lines.len();
            let mut body = Vec::new();
            for l in lines {
                body.extend_from_slice(&l);
                body.push(b'\n');
            }
            let mut r = respond(StatusCode::OK, "application/x-ndjson", body);
            if let Ok(v) = n.to_string().parse() {
                r.headers_mut().insert("x-palisade-count", v);
            }
            r
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "audit listing failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /v1/audit/verify`: the [`verify::Report`] as JSON.
pub async fn verify_endpoint(audit: Arc<AuditLog>) -> Resp {
    let dir = audit.dir().to_path_buf();
    match crate::api::timing::off_thread(move || verify::verify(&dir)).await {
        Ok(Ok(report)) => {
            if !report.intact {
                tracing::error!(
                    findings = report.findings.len(),
                    "audit log verification found tampering"
                );
            }
            let body = serde_json::to_vec(&report).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_detail_is_json_when_it_parses_and_capped_text_otherwise() {
        assert_eq!(action_detail(b"", false), Value::Null);
        assert_eq!(
            action_detail(br#"{"a":1}"#, false),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            action_detail(b"not json", false),
            Value::String("not json".into())
        );
        let big = vec![b'x'; MAX_ACTION_BYTES + 10];
        let Value::String(s) = action_detail(&big, false) else {
            panic!("text expected")
        };
        assert!(s.ends_with("…[truncated]"));
        assert_eq!(s.len(), MAX_ACTION_BYTES + "…[truncated]".len());
    }
}
