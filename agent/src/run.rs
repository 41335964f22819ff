//! `palisade-agent run`: open the spool, start the sources and the shipper, stop cleanly.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_wire::client::Client;
use palisade_wire::tls::{self, Role, TlsFiles};
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::pipeline::{NetCounters, Pipeline};
use crate::ship::{self, ShipCounters};
use crate::sources;
use crate::spool::{Spool, SpoolError};

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Spool unusable.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// Collector URL unusable.
    #[error(transparent)]
    Client(#[from] palisade_wire::client::ClientError),
    /// Identity does not fit.
    #[error("{0}")]
    Identity(String),
    /// The integrity monitor could not start.
    #[error(transparent)]
    Integrity(#[from] crate::integrity::IntegrityError),
    /// Live capture could not start.
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    /// The network pipeline could not be built.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// Filesystem trouble.
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        /// The dir.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Reads the agent id from the certificate and checks it against the config.
pub fn agent_identity(config: &AgentConfig) -> Result<String, RunError> {
    let certs = tls::load_certs(&config.tls.cert)?;
    let first = certs
        .first()
        .ok_or_else(|| RunError::Identity("agent certificate file is empty".into()))?;
    let id = tls::identity(first)?;
    if id.role != Role::Agent {
        return Err(RunError::Identity(format!(
            "certificate {} has role {}, an agent needs role agent",
            config.tls.cert.display(),
            id.role
        )));
    }
    if let Some(want) = &config.agent_id {
        if *want != id.name {
            return Err(RunError::Identity(format!(
                "agent_id {want:?} does not match the certificate's CN {:?}",
                id.name
            )));
        }
    }
    Ok(id.name)
}

/// Opens the agent's spool under its data dir.
pub fn open_spool(config: &AgentConfig, agent_id: &str) -> Result<Arc<Spool>, RunError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    Ok(Arc::new(
        Spool::open(
            &config.data_dir.join("spool"),
            agent_id,
            config.spool.max_bytes,
        )?
        .retain_acked_secs(config.spool.retain_acked_secs)
        .min_free_bytes(config.spool.min_free_bytes),
    ))
}

fn client(config: &AgentConfig) -> Result<Client, RunError> {
    let client_config = tls::client_config(&TlsFiles {
        ca: config.tls.ca.clone(),
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
    })?;
    Ok(Client::new(
        &config.collector,
        client_config,
        Duration::from_secs(config.ship.request_timeout_secs),
    )?)
}

/// Ships what is in the spool until it is empty or `ship.drain_timeout_secs` pass (used after
/// `replay --config`).
pub async fn drain(
    config: &AgentConfig,
    spool: Arc<Spool>,
    agent_id: &str,
) -> Result<(), RunError> {
    let client = client(config)?;
    let (_tx, rx) = watch::channel(true);
    ship::run(
        spool.clone(),
        client,
        agent_id.to_string(),
        config.ship.clone(),
        Arc::new(ShipCounters::default()),
        rx,
    )
    .await;
    spool.flush()?;
    let (left, _) = spool.depth();
    if left > 0 {
        tracing::warn!(
            events = left,
            "events still spooled; `palisade-agent run` ships them"
        );
    }
    Ok(())
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let agent_id = agent_identity(&config)?;
    let client = client(&config)?;
    let spool = open_spool(&config, &agent_id)?;
    // Open the interface before anything else runs, so a missing privilege stops start-up
    // with a clear error instead of a silent probe.
    let capture = if config.capture.interface.is_empty() {
        None
    } else {
        let source = crate::capture::Source::live(&config.capture)?;
        let counters = Arc::new(NetCounters::default());
        let pipeline = Pipeline::new(
            &config.flow,
            &config.detect,
            &agent_id,
            source.linktype(),
            counters.clone(),
        )?;
        tracing::info!(
            interface = %config.capture.interface,
            detectors = ?pipeline.detector_names(),
            "live capture open"
        );
        Some((source, pipeline, counters))
    };
    let (depth, _) = spool.depth();
    tracing::info!(agent = %agent_id, collector = %config.collector, spooled = depth, "agent starting");
    let (stop_tx, stop_rx) = watch::channel(false);
    let ship_counters = Arc::new(ShipCounters::default());

    let stop_capture = Arc::new(AtomicBool::new(false));
    let mut net_counters = None;
    let mut capture_thread = None;
    if let Some((source, pipeline, counters)) = capture {
        net_counters = Some(counters.clone());
        capture_thread = Some(
            crate::live::spawn(
                source,
                pipeline,
                counters,
                spool.clone(),
                agent_id.clone(),
                config.capture.clone(),
                stop_capture.clone(),
            )
            .map_err(|source| RunError::DataDir {
                path: "capture thread".into(),
                source,
            })?,
        );
    }
    let mut integrity_counters = None;
    let mut integrity_thread = None;
    if !config.integrity.paths.is_empty() {
        let counters = Arc::new(crate::integrity::monitor::MonitorCounters::default());
        integrity_counters = Some(counters.clone());
        integrity_thread = Some(crate::integrity::monitor::spawn(
            config.integrity.clone(),
            crate::integrity::Layout::new(&config.integrity, &config.data_dir),
            agent_id.clone(),
            spool.clone(),
            counters,
            stop_capture.clone(),
        )?);
    }
    let mut sources = Vec::new();
    // Events of commands run beside the agent (baseline, publish, quarantine restore).
    {
        let (s, dir, mut stop) = (spool.clone(), config.data_dir.clone(), stop_rx.clone());
        sources.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let (s, dir) = (s.clone(), dir.clone());
                let _ = tokio::task::spawn_blocking(move || crate::inbox::drain(&dir, &s)).await;
            }
        }));
    }
    if config.heartbeat.interval_secs > 0 {
        sources.push(tokio::spawn(sources::run_heartbeats(
            agent_id.clone(),
            Duration::from_secs(config.heartbeat.interval_secs),
            spool.clone(),
            ship_counters.clone(),
            net_counters,
            integrity_counters,
            stop_rx.clone(),
        )));
    }
    if config.synthetic.events > 0 {
        let s = spool.clone();
        let id = agent_id.clone();
        let stop = stop_rx.clone();
        let (total, rate) = (config.synthetic.events, config.synthetic.rate_per_sec);
        sources.push(tokio::spawn(async move {
            sources::run_synthetic(id, total, rate, s, stop).await;
        }));
    }
    let shipper = tokio::spawn(ship::run(
        spool.clone(),
        client,
        agent_id.clone(),
        config.ship.clone(),
        ship_counters,
        stop_rx,
    ));

    shutdown.await;
    tracing::info!("agent stopping: sources first, then a last attempt to empty the spool");
    let _ = stop_tx.send(true);
    stop_capture.store(true, Ordering::Relaxed);
    if let Some(t) = capture_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    if let Some(t) = integrity_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    for s in sources {
        let _ = s.await;
    }
    let _ = shipper.await;
    spool.flush()?;
    let (left, _) = spool.depth();
    tracing::info!(spooled = left, "agent stopped");
    Ok(())
}
