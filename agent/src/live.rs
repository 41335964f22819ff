//! The live-capture thread: reads the interface, runs the pipeline, spools what it finds in
//! chunks (one flush per chunk), checks libpcap's drop counters, and stops when told.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_wire::event::Rule;
use palisade_wire::{Event, EventKind, Severity, Timestamp};
use serde_json::json;

use crate::capture::{CaptureConfig, Next, Source};
use crate::pipeline::{NetCounters, Pipeline};
use crate::spool::Spool;

/// Events are spooled when this many are waiting, or after [`SPOOL_EVERY`].
const SPOOL_CHUNK: usize = 1000;
const SPOOL_EVERY: Duration = Duration::from_millis(200);

fn spool_events(spool: &Spool, events: &mut Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let n = events.len() as u64;
    if let Err(e) = spool.append(std::mem::take(events)) {
        tracing::error!(error = %e, "cannot spool network events; they are lost");
        spool.note_lost(n, &e.to_string());
    }
}

fn drop_alert(agent_id: &str, interface: &str, dropped: u64, if_dropped: u64, secs: u64) -> Event {
    let mut e = Event::new(agent_id, EventKind::Alert, Severity::Medium)
        .with_message(format!(
            "capture on {interface} dropped {} packets in {secs} s ({dropped} buffer, {if_dropped} interface): detection is blind to them",
            dropped + if_dropped
        ))
        .with_details(json!({ "evidence": {
            "interface": interface,
            "dropped": dropped,
            "if_dropped": if_dropped,
            "interval_secs": secs,
        }}));
    e.rule = Some(Rule {
        id: Some("palisade.capture.drops".into()),
        name: Some("Packet capture is dropping packets".into()),
        category: Some("sensor".into()),
        ruleset: Some("palisade-net".into()),
    });
    e.event.action = Some("capture-drops".into());
    e.event.category = vec!["network".into(), "host".into()];
    e
}

/// Starts the capture thread.
pub fn spawn(
    mut source: Source,
    mut pipeline: Pipeline,
    counters: Arc<NetCounters>,
    spool: Arc<Spool>,
    agent_id: String,
    config: CaptureConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let mut out = Vec::with_capacity(SPOOL_CHUNK);
            let mut last_spool = Instant::now();
            let mut last_stats = Instant::now();
            let stats_every = Duration::from_secs(config.stats_interval_secs.max(1));
            let (mut prev_dropped, mut prev_if_dropped) = (0u64, 0u64);
            let idle_tick = Duration::from_millis(u64::from(config.timeout_ms.max(1)));
            // Reads do not block (see `Source::live`): when nothing is there, nap briefly; the
            // kernel ring buffer holds what arrives meanwhile.
            let nap = idle_tick.min(Duration::from_millis(2));
            let mut last_idle_tick = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match source.next_packet() {
                    Ok(Next::Packet(p)) => {
                        // Flows ending together at a tick reach the spool in bounded batches.
                        let mut deliver = |batch: &mut Vec<Event>| {
                            spool_events(&spool, batch);
                            Ok::<(), std::convert::Infallible>(())
                        };
                        let Ok(()) = pipeline.process_batched(p, &mut out, &mut deliver);
                    }
                    Ok(Next::Idle) => {
                        if last_idle_tick.elapsed() >= idle_tick {
                            last_idle_tick = Instant::now();
                            pipeline.tick(Timestamp::now().nanos(), &mut out);
                        }
                        std::thread::sleep(nap);
                    }
                    Ok(Next::End) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "live capture failed; network detection stopped");
                        break;
                    }
                }
                if out.len() >= SPOOL_CHUNK || (!out.is_empty() && last_spool.elapsed() >= SPOOL_EVERY) {
                    spool_events(&spool, &mut out);
                    last_spool = Instant::now();
                }
                if last_stats.elapsed() >= stats_every {
                    last_stats = Instant::now();
                    if let Some(s) = source.stats() {
                        counters.capture_received.store(s.received, Ordering::Relaxed);
                        counters.capture_dropped.store(s.dropped, Ordering::Relaxed);
                        counters.capture_if_dropped.store(s.if_dropped, Ordering::Relaxed);
                        // libpcap's counters are cumulative (and may wrap at 2^32).
                        let d = s.dropped.saturating_sub(prev_dropped);
                        let i = s.if_dropped.saturating_sub(prev_if_dropped);
                        (prev_dropped, prev_if_dropped) = (s.dropped, s.if_dropped);
                        if d + i >= config.drop_alert_threshold.max(1) {
                            tracing::warn!(dropped = d, if_dropped = i, "capture dropping packets");
                            out.push(drop_alert(&agent_id, &config.interface, d, i, stats_every.as_secs()));
                        }
                    }
                }
            }
            let mut deliver = |batch: &mut Vec<Event>| {
                spool_events(&spool, batch);
                Ok::<(), std::convert::Infallible>(())
            };
            let Ok(()) = pipeline.finish_batched(Timestamp::now().nanos(), &mut out, &mut deliver);
            spool_events(&spool, &mut out);
            tracing::info!("live capture stopped");
        })
}
