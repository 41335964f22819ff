//! How long the API takes to answer, per endpoint, as the collector measures it: from the
//! routed request to the response built (for the listings, the store reads and the
//! serialisation; not the TLS handshake, the client's own start-up or the body's transfer).
//! Exported as the Prometheus histogram `palisade_api_request_duration_seconds{method,route}`,
//! so that a latency that grows under load can be told apart from a slow client or a busy
//! machine (`bench/soak.sh` prints both).
//!
//! Beside it, `palisade_api_request_cpu_seconds_total{method,route}` counts the CPU time the
//! answers' own work used: every store read, decode and computation a handler runs off the
//! async threads goes through [`off_thread`], which reads the thread's CPU clock around it.
//! Wall time against CPU time per answer tells a query that does more work (both grow) from
//! one that waits for a busy machine or a lock (only the wall time grows). Not counted: TLS and
//! body transfer on the async threads, and what a handler hands to another thread (the store
//! writer's commit of an ingested batch).
//!
//! One fixed set of counters per endpoint of [`super::ENDPOINTS`]: recording is a few relaxed
//! atomic additions, with no lock and no allocation. Refused requests (unknown route, role not
//! allowed) are not timed.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::ENDPOINTS;
use crate::metrics::{Histogram, MetricsSource, MetricsWriter};

/// Upper bounds of the histogram's buckets, in seconds (`+Inf` is implied).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

tokio::task_local! {
    /// CPU time used so far by the off-thread work of the request the task is answering.
    static REQUEST_CPU: Cell<Duration>;
}

/// The calling thread's CPU time so far (zero where the clock cannot be read).
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Runs `f` on the blocking pool, counting the CPU time it uses to the request the calling
/// task answers (within [`measured`]; elsewhere it is only run).
pub async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let (out, cpu) = tokio::task::spawn_blocking(move || {
        let before = thread_cpu();
        let out = f();
        (out, thread_cpu().saturating_sub(before))
    })
    .await?;
    // Outside a measured request there is nothing to count it to.
    let _ = REQUEST_CPU.try_with(|c| c.set(c.get() + cpu));
    Ok(out)
}

/// Awaits `answer`, returning its output and the CPU time its [`off_thread`] work used.
pub async fn measured<F: Future>(answer: F) -> (F::Output, Duration) {
    REQUEST_CPU
        .scope(Cell::new(Duration::ZERO), async move {
            let out = answer.await;
            (out, REQUEST_CPU.with(Cell::get))
        })
        .await
}

#[derive(Debug)]
struct Route {
    time: Histogram,
    cpu_nanos: AtomicU64,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            time: Histogram::new(&BUCKETS),
            cpu_nanos: AtomicU64::new(0),
        }
    }
}

/// Answer times per endpoint (see the module docs).
#[derive(Debug)]
pub struct ApiTimings {
    routes: Vec<Route>,
}

impl Default for ApiTimings {
    fn default() -> Self {
        ApiTimings {
            routes: ENDPOINTS.iter().map(|_| Route::default()).collect(),
        }
    }
}

impl ApiTimings {
    /// Counts one answer of the endpoint at `endpoint` (its index in [`ENDPOINTS`]) that took
    /// `took` and used `cpu` of CPU time off the async threads.
    pub fn record(&self, endpoint: usize, took: Duration, cpu: Duration) {
        let Some(r) = self.routes.get(endpoint) else {
            return;
        };
        r.time.record(took);
        let cpu = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
        r.cpu_nanos.fetch_add(cpu, Ordering::Relaxed);
    }

    /// Answers of the endpoint at `endpoint` so far, their total time and their total CPU
    /// time.
    pub fn totals(&self, endpoint: usize) -> (u64, Duration, Duration) {
        self.routes
            .get(endpoint)
            .map_or((0, Duration::ZERO, Duration::ZERO), |r| {
                let (count, sum) = r.time.totals();
                let cpu = Duration::from_nanos(r.cpu_nanos.load(Ordering::Relaxed));
                (count, sum, cpu)
            })
    }
}

impl MetricsSource for ApiTimings {
    fn write(&self, out: &mut MetricsWriter) {
        for (ep, r) in ENDPOINTS.iter().zip(&self.routes) {
            r.time.write(
                out,
                "palisade_api_request_duration_seconds",
                "Time from a routed API request to its response, by endpoint (not the TLS \
                 handshake or the body's transfer).",
                &[("method", ep.method), ("route", ep.pattern)],
            );
            out.counter_f64(
                "palisade_api_request_cpu_seconds_total",
                "CPU time the API's answers used for their own work (store reads, decoding, \
                 computation), by endpoint: against the duration it tells more work from \
                 waiting.",
                &[("method", ep.method), ("route", ep.pattern)],
                r.cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_index(pattern: &str) -> usize {
        ENDPOINTS.iter().position(|e| e.pattern == pattern).unwrap()
    }

    #[test]
    fn answers_land_in_their_bucket_and_the_histogram_is_cumulative() {
        let t = ApiTimings::default();
        let inc = route_index("/v1/incidents");
        let ms = Duration::from_millis;
        t.record(inc, Duration::from_micros(800), Duration::from_micros(500));
        t.record(inc, ms(30), ms(2));
        t.record(inc, Duration::from_secs(20), ms(250));
        t.record(ENDPOINTS.len() + 5, Duration::from_secs(1), ms(1));
        assert_eq!(t.totals(inc).0, 3);
        assert_eq!(t.totals(inc).2, Duration::from_micros(252_500));
        assert_eq!(t.totals(route_index("/v1/situation")).0, 0);
        let mut w = MetricsWriter::new();
        t.write(&mut w);
        let text = w.finish();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        let series = r#"{method="GET",route="/v1/incidents""#;
        let bucket = |le: &str| {
            line(&format!(
                "palisade_api_request_duration_seconds_bucket{series},le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("0.001"), "1");
        assert_eq!(bucket("0.025"), "1");
        assert_eq!(bucket("0.05"), "2");
        assert_eq!(bucket("10"), "2");
        assert_eq!(bucket("+Inf"), "3");
        assert_eq!(
            line(&format!(
                "palisade_api_request_duration_seconds_count{series}}}"
            )),
            "3"
        );
        let sum: f64 = line(&format!(
            "palisade_api_request_duration_seconds_sum{series}}}"
        ))
        .parse()
        .unwrap();
        assert!((sum - 20.0308).abs() < 1e-9, "{sum}");
        assert_eq!(
            text.matches("# TYPE palisade_api_request_duration_seconds histogram")
                .count(),
            1
        );
        let cpu: f64 = line(&format!("palisade_api_request_cpu_seconds_total{series}}}"))
            .parse()
            .unwrap();
        assert!((cpu - 0.2525).abs() < 1e-9, "{cpu}");
        assert_eq!(
            text.matches("# TYPE palisade_api_request_cpu_seconds_total counter")
                .count(),
            1
        );
    }

    /// The CPU time counted to a request is what its off-thread work used: a closure that
    /// computes for 30 ms of CPU time counts at least that, one that sleeps counts little of
    /// its sleep; work outside a measured request is run and counted nowhere.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn off_thread_work_counts_its_cpu_time_not_its_waiting() {
        let work = Duration::from_millis(30);
        let (spins, cpu) = measured(async move {
            let a = off_thread(move || {
                let start = thread_cpu();
                let mut spins = 0u64;
                while thread_cpu().saturating_sub(start) < work {
                    spins = std::hint::black_box(spins + 1);
                }
                spins
            })
            .await
            .unwrap();
            // Two pieces of work for one request add up.
            let b = off_thread(move || std::thread::sleep(Duration::from_millis(200)))
                .await
                .map(|()| 0)
                .unwrap();
            a + b
        })
        .await;
        assert!(spins > 0);
        assert!(cpu >= work, "{cpu:?} counted for {work:?} of computing");
        assert!(
            cpu < work + Duration::from_millis(100),
            "{cpu:?}: the 200 ms sleep was counted as CPU time"
        );
        assert_eq!(off_thread(|| 7).await.unwrap(), 7, "outside a request");
    }
}
