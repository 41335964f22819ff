//! The HTTPS server: accept loop with back-off, a semaphore capping connections, one task per
//! connection (TLS handshake with a deadline, identity from the client certificate, HTTP/1.1
//! with a header-read deadline), graceful shutdown. The CRL is re-read when its file changes, so
//! `pki revoke` takes effect on the next handshake without a restart.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_wire::tls::{self, TlsFiles};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::api::{self, AppState};
use crate::config::{CollectorConfig, ServerConfig};
use crate::ingest::{IngestMetrics, IngestQueue};
use crate::store::{EventStore, SegmentStore};

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A forwarder's configuration is unusable.
    #[error(transparent)]
    Forward(#[from] crate::forward::ForwardError),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// Socket or thread trouble.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

pub use palisade_wire::server::TlsReloader;

/// Accepts connections on `listener` until `shutdown` resolves, then lets open connections
/// finish their current request (up to 5 s).
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Arc<TlsReloader>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    while let Some((permit, tcp, peer)) =
        palisade_wire::server::accept_bounded(&listener, &limit, &mut shutdown, "api").await
    {
        let state = state.clone();
        let acceptor = tls.acceptor();
        let stop = stop_rx.clone();
        let cfg = config.clone();
        tokio::spawn(async move {
            let limits = palisade_wire::server::ConnectionLimits {
                handshake: Duration::from_secs(cfg.handshake_timeout_secs),
                header_read: Duration::from_secs(cfg.header_read_timeout_secs),
            };
            palisade_wire::server::serve_connection(
                tcp,
                peer,
                acceptor,
                limits,
                stop,
                move |who, peer, req| api::handle(state.clone(), who, peer, req),
            )
            .await;
            drop(permit);
        });
    }
    tracing::info!("shutting down: no new connections");
    let _ = stop_tx.send(true);
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(Duration::from_secs(5), limit.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 5 s; closing them");
    }
}

/// Counts the alert events stored before this start with an event time from the start of its
/// minute on (see [`crate::api::alert_tally::AlertTally::seed`]): at most that minute's, unless
/// an agent's clock runs ahead.
fn seed_alert_tally(
    store: &dyn EventStore,
    tally: &crate::api::alert_tally::AlertTally,
) -> Result<(), ServeError> {
    let now = palisade_wire::Timestamp::now();
    let q = crate::store::Query {
        since: tally.start(),
        kind: Some(palisade_wire::EventKind::Alert),
        ..crate::store::Query::everything(usize::MAX)
    };
    let mut seeded = 0u64;
    store.scan(&q, &mut |raw| {
        if let Ok(ev) = serde_json::from_slice::<palisade_wire::Event>(raw) {
            tally.seed(&ev, now);
            seeded += 1;
        }
        true
    })?;
    if seeded > 0 {
        tracing::info!(
            seeded,
            "alert events stored with event times ahead of this start counted for situation"
        );
    }
    Ok(())
}

/// Everything `palisade-collector serve` does: open the store, start the writer, bind, announce
/// the address on stdout, serve until `shutdown`, apply retention hourly.
pub async fn serve(
    config: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let files = TlsFiles {
        ca: config.tls.ca.clone(),
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
    };
    let tls = Arc::new(TlsReloader::new(files, config.tls.crl.clone())?);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::Io {
        context: format!("cannot create data dir {}", config.data_dir.display()),
        source,
    })?;
    let segments = SegmentStore::open_with(
        &config.data_dir.join("store"),
        config.ingest.index_cache_bytes,
        config.ingest.index_backend,
    )?
    .with_min_free_bytes(config.ingest.min_free_bytes);
    let write_timings = segments.write_timings();
    let store: Arc<dyn EventStore> = Arc::new(segments);
    let metrics = Arc::new(IngestMetrics::default());
    let forwarders = crate::forward::Forwarders::start(&config.forward)?;
    let mut sinks: Vec<Arc<dyn crate::ingest::CommitSink>> = Vec::new();
    forwarders.add_sinks(&mut sinks);
    let tail = Arc::new(crate::tail::Tail::new(config.tail.clone()));
    sinks.push(tail.clone());
    let alert_tally = Arc::new(crate::api::alert_tally::AlertTally::new(
        palisade_wire::Timestamp::now(),
    ));
    seed_alert_tally(store.as_ref(), &alert_tally)?;
    sinks.push(alert_tally.clone());
    let incidents = Arc::new(crate::incidents::IncidentStore::open_cached(
        &config.data_dir.join("incidents"),
        config.correlation.incident_window_secs,
        config.correlation.incident_backend,
        config.correlation.incident_cache_bytes,
    )?);
    let correlator = if config.correlation.enabled {
        let settings = crate::correlate::CorrelationSettings {
            state_file: Some(config.data_dir.join("correlation-state.json")),
            ..config.correlation.clone()
        };
        let c = crate::correlate::Correlator::start(settings, incidents.clone()).map_err(|e| {
            ServeError::Io {
                context: e.to_string(),
                source: std::io::Error::other("correlation could not start"),
            }
        })?;
        sinks.push(c.clone());
        Some(c)
    } else {
        tracing::warn!("correlation disabled by config: no alerts or incidents will be raised");
        None
    };
    let mut metric_sources: Vec<Arc<dyn crate::metrics::MetricsSource>> = vec![
        metrics.clone(),
        Arc::new(crate::metrics::StoreMetrics::new(store.clone())),
        write_timings,
        Arc::new(crate::metrics::ProcessMetrics::new()),
    ];
    forwarders.add_metrics(&mut metric_sources);
    if let Some(c) = &correlator {
        metric_sources.push(c.clone());
    }
    let queue = IngestQueue::start(
        store.clone(),
        config.ingest.write_queue_batches,
        config.ingest.max_group_events,
        metrics.clone(),
        sinks,
    )
    .map_err(|source| ServeError::Io {
        context: "cannot start the store writer".into(),
        source,
    })?;
    let audit = Arc::new(crate::audit::AuditLog::open(
        &config.data_dir.join("audit"),
        &config.audit,
    )?);
    metric_sources.push(audit.clone());
    let timings = Arc::new(crate::api::timing::ApiTimings::default());
    metric_sources.push(timings.clone());
    let state = Arc::new(AppState {
        store: store.clone(),
        queue,
        metrics,
        limits: palisade_wire::batch::Limits {
            max_frame_bytes: config.ingest.max_batch_bytes,
            max_raw_bytes: config.ingest.max_batch_raw_bytes,
            max_events: config.ingest.max_batch_events,
        },
        body_read_timeout: Duration::from_secs(config.server.body_read_timeout_secs),
        retry_after_secs: config.ingest.retry_after_secs,
        retention_days: config.retention.days,
        started: Instant::now(),
        audit: audit.clone(),
        incidents,
        correlator: correlator.clone(),
        rates: Arc::new(crate::api::situation::RateHistory::default()),
        alert_tally,
        tail: tail.clone(),
        cert_seen: Default::default(),
        timings,
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Io {
            context: format!("cannot listen on {}", config.listen),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Io {
        context: "local address".into(),
        source,
    })?;
    let metrics_server =
        crate::metrics::MetricsServer::start(config.metrics.as_ref(), metric_sources)
            .await
            .map_err(|source| ServeError::Io {
                context: "cannot start the metrics listener".into(),
                source,
            })?;
    // Tests and scripts read these lines to learn the ports when listening on port 0.
    if let Some(m) = metrics_server.local_addr() {
        println!("palisade-collector metrics on http://{m}/metrics");
    }
    println!("palisade-collector listening on https://{local}");
    tracing::info!(listen = %local, data_dir = %config.data_dir.display(), "collector serving");

    let sampler = {
        let state = state.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs(crate::api::situation::SAMPLE_SECS);
            loop {
                let st = state.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let events = st
                        .store
                        .agents()
                        .map(|a| a.into_iter().map(|a| (a.id, a.events)).collect())
                        .unwrap_or_default();
                    let alerts = st
                        .correlator
                        .as_ref()
                        .map(|c| c.alerts_per_agent())
                        .unwrap_or_default();
                    st.rates
                        .sample(palisade_wire::Timestamp::now(), events, alerts);
                })
                .await;
                tokio::time::sleep(every).await;
            }
        })
    };
    let housekeeping = {
        let tls = tls.clone();
        let store = store.clone();
        let incidents = state.incidents.clone();
        let days = config.retention.days;
        let crl_every = Duration::from_secs(config.server.crl_reload_secs.max(1));
        tokio::spawn(async move {
            let mut last_retention: Option<Instant> = None;
            loop {
                tls.reload_if_changed();
                if last_retention.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                    last_retention = Some(Instant::now());
                    let store = store.clone();
                    let result = tokio::task::spawn_blocking(move || {
                        store.apply_retention(palisade_wire::Timestamp::now(), days)
                    })
                    .await;
                    match result {
                        Ok(Ok(dropped)) if !dropped.is_empty() => {
                            tracing::info!(?dropped, retention_days = days, "retention applied")
                        }
                        Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                        _ => {}
                    }
                    // Alerts and incidents age out with the events behind them.
                    let incidents = incidents.clone();
                    let result = tokio::task::spawn_blocking(move || {
                        incidents.apply_retention(palisade_wire::Timestamp::now(), days)
                    })
                    .await;
                    match result {
                        Ok(Ok(r)) if r != crate::incidents::Retired::default() => tracing::info!(
                            alerts = r.alerts,
                            incidents = r.incidents,
                            retention_days = days,
                            "retention applied to alerts and incidents"
                        ),
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "retention of alerts and incidents failed")
                        }
                        _ => {}
                    }
                }
                tokio::time::sleep(crl_every).await;
            }
        })
    };
    // Long-polling tails answer at once on shutdown instead of holding their connection.
    let shutdown = async move {
        shutdown.await;
        tail.close();
    };
    run(listener, state, tls, config.server.clone(), shutdown).await;
    housekeeping.abort();
    sampler.abort();
    // Write what is queued and a final anchor.
    let _ = tokio::task::spawn_blocking(move || audit.close()).await;
    // Evaluate what was committed, flush alerts, save the correlation windows.
    if let Some(c) = correlator {
        let _ = tokio::task::spawn_blocking(move || c.close(Duration::from_secs(30))).await;
    }
    metrics_server.stop().await;
    // Give the forwarders a moment to hand over what they hold.
    let _ = tokio::task::spawn_blocking(move || forwarders.close(Duration::from_secs(5))).await;
    tracing::info!("collector stopped");
    Ok(())
}
