//! `palisade-agent replay FILE`: the live pipeline run over a pcap/pcapng file, on the capture's
//! own timestamps (reproducible windows and timeouts), at full speed or in real time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_wire::{Event, EventKind};
use serde::Serialize;

use crate::capture::{CaptureError, Next, Source};
use crate::flow::FlowConfig;
use crate::pipeline::{DetectConfig, NetCounters, Pipeline, PipelineError};

/// Replay pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speed {
    /// As fast as possible.
    Max,
    /// At the pace the packets were captured.
    Realtime,
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "max" => Ok(Speed::Max),
            "realtime" => Ok(Speed::Realtime),
            _ => Err(format!("unknown speed {s:?} (expected max or realtime)")),
        }
    }
}

/// Replay errors.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Opening or reading the capture.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Setting up the pipeline.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The event sink failed (e.g. stdout closed, spool full of errors).
    #[error("cannot deliver events: {0}")]
    Sink(std::io::Error),
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Packets read.
    pub packets: u64,
    /// Bytes on the wire.
    pub bytes: u64,
    /// Packets that did not decode fully.
    pub malformed: u64,
    /// Flow records emitted.
    pub flows: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Wall-clock seconds spent.
    pub elapsed_secs: f64,
    /// Packets per second (wall clock).
    pub packets_per_sec: f64,
    /// Gigabits per second of traffic (wall clock).
    pub gbit_per_sec: f64,
    /// Detectors that ran.
    pub detectors: Vec<&'static str>,
    /// Work counters of detectors that report them ([`crate::detect::Detector::summary`]),
    /// e.g. YARA-X scans, bytes scanned and scan time; taken after the last packet.
    pub detector_summaries: Vec<(&'static str, serde_json::Value)>,
    /// A read error that ended the file early (e.g. a truncated capture); everything read
    /// before it was processed and delivered.
    pub read_error: Option<String>,
}

/// Runs `path` through the pipeline; every event goes to `sink` as soon as it is produced.
/// With `kind`, only events of that kind reach `sink`; the others are still counted in the
/// report (flow records that would be dropped are not even built).
#[allow(clippy::too_many_arguments)]
pub fn replay(
    path: &Path,
    bpf_filter: &str,
    speed: Speed,
    flow: &FlowConfig,
    detect: &DetectConfig,
    agent_id: &str,
    kind: Option<EventKind>,
    sink: &mut dyn FnMut(Event) -> std::io::Result<()>,
) -> Result<ReplayReport, ReplayError> {
    let mut source = Source::file(path, bpf_filter)?;
    let counters = Arc::new(NetCounters::default());
    let mut pipeline = Pipeline::new(flow, detect, agent_id, source.linktype(), counters.clone())?;
    pipeline.set_kind_filter(kind);
    let started = Instant::now();
    let mut first_ts: Option<i64> = None;
    let mut last_ts = 0i64;
    let mut out = Vec::with_capacity(64);
    let mut read_error = None;
    // Flows that end together (a tick, the end of the file) reach the sink in batches: 100 k
    // flow records held at once would be hundreds of MB.
    let mut deliver = |batch: &mut Vec<Event>| {
        batch
            .drain(..)
            .try_for_each(&mut *sink)
            .map_err(ReplayError::Sink)
    };
    loop {
        let raw = match source.next_packet() {
            Ok(Next::Packet(p)) => p,
            Ok(Next::Idle) => continue,
            Ok(Next::End) => break,
            // Keep what was read: finish the pipeline on it and report the error.
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        };
        if speed == Speed::Realtime {
            let first = *first_ts.get_or_insert(raw.ts);
            let due = Duration::from_nanos(u64::try_from(raw.ts - first).unwrap_or(0));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        last_ts = last_ts.max(raw.ts);
        pipeline.process_batched(raw, &mut out, &mut deliver)?;
        if !out.is_empty() {
            deliver(&mut out)?;
        }
    }
    pipeline.finish_batched(last_ts, &mut out, &mut deliver)?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let c = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let packets = c(&counters.packets);
    let bytes = c(&counters.bytes);
    Ok(ReplayReport {
        packets,
        bytes,
        malformed: c(&counters.malformed),
        flows: c(&counters.flows),
        alerts: c(&counters.alerts),
        elapsed_secs: elapsed,
        packets_per_sec: packets as f64 / elapsed,
        gbit_per_sec: bytes as f64 * 8.0 / elapsed / 1e9,
        detectors: pipeline.detector_names(),
        detector_summaries: pipeline.detector_summaries(),
        read_error,
    })
}
