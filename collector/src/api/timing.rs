//! How long the API takes to answer, per endpoint, as the collector measures it: from the
//! routed request to the response built (for the listings, the store reads and the
//! serialisation; not the TLS handshake, the client's own start-up or the body's transfer).
//! Exported as the Prometheus histogram `palisade_api_request_duration_seconds{method,route}`,
//! so that a latency that grows under load can be told apart from a slow client or a busy
//! machine (`bench/soak.sh` prints both).
//!
//! One fixed set of counters per endpoint of [`super::ENDPOINTS`]: recording is a few relaxed
//! atomic additions, with no lock and no allocation. Refused requests (unknown route, role not
//! allowed) are not timed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::ENDPOINTS;
use crate::metrics::{MetricsSource, MetricsWriter};

/// Upper bounds of the histogram's buckets, in seconds (`+Inf` is implied).
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
struct Route {
    count: AtomicU64,
    sum_nanos: AtomicU64,
    /// Not cumulative: `buckets[i]` counts answers above `BUCKETS[i - 1]` up to `BUCKETS[i]`,
    /// the last one those above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
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
    /// Counts one answer of the endpoint at `endpoint` (its index in [`ENDPOINTS`]).
    pub fn record(&self, endpoint: usize, took: Duration) {
        let Some(r) = self.routes.get(endpoint) else {
            return;
        };
        let secs = took.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        r.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        r.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        r.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers of the endpoint at `endpoint` so far, and their total time.
    pub fn totals(&self, endpoint: usize) -> (u64, Duration) {
        self.routes.get(endpoint).map_or((0, Duration::ZERO), |r| {
            (
                r.count.load(Ordering::Relaxed),
                Duration::from_nanos(r.sum_nanos.load(Ordering::Relaxed)),
            )
        })
    }
}

impl MetricsSource for ApiTimings {
    fn write(&self, out: &mut MetricsWriter) {
        for (ep, r) in ENDPOINTS.iter().zip(&self.routes) {
            let mut cumulative = 0;
            let buckets: Vec<(f64, u64)> = BUCKETS
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY))
                .zip(&r.buckets)
                .map(|(le, n)| {
                    cumulative += n.load(Ordering::Relaxed);
                    (le, cumulative)
                })
                .collect();
            out.histogram(
                "palisade_api_request_duration_seconds",
                "Time from a routed API request to its response, by endpoint (not the TLS \
                 handshake or the body's transfer).",
                &[("method", ep.method), ("route", ep.pattern)],
                &buckets,
                r.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
                cumulative,
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
        t.record(inc, Duration::from_micros(800));
        t.record(inc, Duration::from_millis(30));
        t.record(inc, Duration::from_secs(20));
        t.record(ENDPOINTS.len() + 5, Duration::from_secs(1));
        assert_eq!(t.totals(inc).0, 3);
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
    }
}
