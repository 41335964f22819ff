//! Event sources of this slice: heartbeats (liveness, spool depth, counters) and the synthetic
//! source used by drills, soak and crash tests. Live capture (`live`) and the integrity monitor
//! (`integrity::monitor`) run on threads of their own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_wire::event::Host;
use palisade_wire::{Event, EventKind, Severity};
use serde_json::json;
use tokio::sync::watch;

use crate::integrity::monitor::MonitorCounters;
use crate::pipeline::NetCounters;
use crate::ship::ShipCounters;
use crate::spool::Spool;

/// The host name, from the kernel.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Seconds since the host booted.
fn host_uptime() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

/// Spools `events`; on failure either drops them (`retry` false: counted in a `gap` event once
/// the spool takes events again) or leaves them to the caller to offer again.
async fn append(spool: &Arc<Spool>, events: Vec<Event>, retry: bool) -> bool {
    let s = spool.clone();
    let n = events.len() as u64;
    match tokio::task::spawn_blocking(move || s.append(events)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) if retry => {
            tracing::error!(error = %e, "cannot spool events; will retry");
            false
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot spool events; they are lost");
            spool.note_lost(n, &e.to_string());
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "spool writer task failed");
            false
        }
    }
}

/// Builds one heartbeat event.
pub fn heartbeat(
    agent_id: &str,
    started: Instant,
    spool: &Spool,
    ship: &ShipCounters,
    net: Option<&NetCounters>,
    integrity: Option<&MonitorCounters>,
) -> Event {
    let (depth, bytes) = spool.depth();
    let c = &spool.counters;
    let host = hostname();
    let mut e = Event::new(agent_id, EventKind::Heartbeat, Severity::Info)
        .with_message(format!("heartbeat: {depth} events spooled"))
        .with_details(json!({
            "uptime_secs": started.elapsed().as_secs(),
            "spool": { "events": depth, "bytes": bytes },
            "counters": {
                "produced": c.appended.load(Ordering::Relaxed),
                "acked": c.acked.load(Ordering::Relaxed),
                "dropped": c.dropped.load(Ordering::Relaxed),
                "batches_sent": ship.batches.load(Ordering::Relaxed),
                "send_failures": ship.failures.load(Ordering::Relaxed),
                "duplicates": ship.duplicates.load(Ordering::Relaxed),
                "quarantined": ship.quarantined.load(Ordering::Relaxed),
                "replayed": ship.replayed.load(Ordering::Relaxed),
            },
        }));
    if let (Some(n), Some(details)) = (net, e.palisade.as_mut()) {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        details["network"] = json!({
            "packets": r(&n.packets),
            "bytes": r(&n.bytes),
            "malformed": r(&n.malformed),
            "alerts": r(&n.alerts),
            "flows": r(&n.flows),
            "active_flows": r(&n.active_flows),
            "flows_evicted": r(&n.flows_evicted),
            "capture": {
                "received": r(&n.capture_received),
                "dropped": r(&n.capture_dropped),
                "if_dropped": r(&n.capture_if_dropped),
            },
        });
    }
    if let (Some(i), Some(details)) = (integrity, e.palisade.as_mut()) {
        details["integrity"] = i.to_json();
    }
    e.event.action = Some("heartbeat".into());
    e.event.category = vec!["host".into()];
    e.event.kind_type = vec!["info".into()];
    if let Some(obs) = e.observer.as_mut() {
        obs.hostname = Some(host.clone());
    }
    e.host = Some(Host {
        name: host,
        uptime: host_uptime(),
    });
    e
}

/// Emits a heartbeat every `interval` until `stop`.
pub async fn run_heartbeats(
    agent_id: String,
    interval: Duration,
    spool: Arc<Spool>,
    ship: Arc<ShipCounters>,
    net: Option<Arc<NetCounters>>,
    integrity: Option<Arc<MonitorCounters>>,
    mut stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let e = heartbeat(
            &agent_id,
            started,
            &spool,
            &ship,
            net.as_deref(),
            integrity.as_deref(),
        );
        append(&spool, vec![e], false).await;
    }
}

/// Produces `total` numbered synthetic events at `rate_per_sec` (0 = unpaced), spooling them in
/// chunks (one flush each). Returns how many were produced.
pub async fn run_synthetic(
    agent_id: String,
    total: u64,
    rate_per_sec: u64,
    spool: Arc<Spool>,
    stop: watch::Receiver<bool>,
) -> u64 {
    let started = Instant::now();
    let chunk: u64 = if rate_per_sec == 0 {
        1000
    } else {
        (rate_per_sec / 20).clamp(1, 1000)
    };
    let mut produced = 0u64;
    while produced < total && !*stop.borrow() {
        let n = chunk.min(total - produced);
        let events: Vec<Event> = (produced..produced + n)
            .map(|i| {
                let mut e = Event::new(&agent_id, EventKind::Synthetic, Severity::Info)
                    .with_message(format!("synthetic event {i}"))
                    .with_details(json!({ "synthetic": { "index": i, "total": total } }));
                e.event.action = Some("synthetic".into());
                e
            })
            .collect();
        if !append(&spool, events, true).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        produced += n;
        if rate_per_sec > 0 {
            let due = Duration::from_secs_f64(produced as f64 / rate_per_sec as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    tracing::info!(produced, total, "synthetic source finished");
    produced
}
