//! What a load test measured: per endpoint, latencies in an HdrHistogram, the status codes seen
//! and the requests that got no answer; and named latency series (submit to assignment, ...).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latencies in microseconds, from 1 µs to 10 minutes, to three significant figures.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One endpoint's requests.
#[derive(Debug, Clone)]
pub struct Endpoint {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self {
            latency: histogram(),
            statuses: BTreeMap::new(),
            errors: 0,
        }
    }
}

impl Endpoint {
    fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors
    }

    fn succeeded(&self) -> u64 {
        self.statuses
            .iter()
            // 101: a WebSocket upgrade, the success of a connect.
            .filter(|(status, _)| (200..300).contains(*status) || **status == 101)
            .map(|(_, n)| n)
            .sum()
    }
}

/// What one worker measured; workers' recorders are merged at the end.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    endpoints: BTreeMap<&'static str, Endpoint>,
    series: BTreeMap<&'static str, Histogram<u64>>,
}

impl Recorder {
    /// A request that got an answer.
    pub fn record(&mut self, endpoint: &'static str, status: u16, latency: Duration) {
        let e = self.endpoints.entry(endpoint).or_default();
        e.latency.saturating_record(micros(latency));
        *e.statuses.entry(status).or_default() += 1;
    }

    /// A request that got none: the connection failed or it timed out.
    pub fn error(&mut self, endpoint: &'static str) {
        self.endpoints.entry(endpoint).or_default().errors += 1;
    }

    /// One sample of a named latency series.
    pub fn sample(&mut self, series: &'static str, latency: Duration) {
        self.series
            .entry(series)
            .or_insert_with(histogram)
            .saturating_record(micros(latency));
    }

    pub fn merge(&mut self, other: Recorder) {
        for (name, e) in other.endpoints {
            let mine = self.endpoints.entry(name).or_default();
            mine.latency.add(&e.latency).expect("same bounds");
            for (status, n) in e.statuses {
                *mine.statuses.entry(status).or_default() += n;
            }
            mine.errors += e.errors;
        }
        for (name, h) in other.series {
            self.series
                .entry(name)
                .or_insert_with(histogram)
                .add(&h)
                .expect("same bounds");
        }
    }

    /// Requests made under `endpoint` that were answered 2xx.
    pub fn succeeded(&self, endpoint: &str) -> u64 {
        self.endpoints.get(endpoint).map_or(0, Endpoint::succeeded)
    }

    /// Every request made, and every one that failed (non-2xx or no answer).
    pub fn totals(&self) -> (u64, u64) {
        let all: u64 = self.endpoints.values().map(Endpoint::requests).sum();
        let ok: u64 = self.endpoints.values().map(Endpoint::succeeded).sum();
        (all, all - ok)
    }

    /// The report as JSON: per endpoint and per series, latencies in milliseconds.
    pub fn to_json(&self) -> Value {
        let endpoints: serde_json::Map<String, Value> = self
            .endpoints
            .iter()
            .map(|(name, e)| {
                let requests = e.requests();
                let statuses: serde_json::Map<String, Value> = e
                    .statuses
                    .iter()
                    .map(|(s, n)| (s.to_string(), json!(n)))
                    .collect();
                let body = json!({
                    "requests": requests,
                    "succeeded": e.succeeded(),
                    "connection_errors": e.errors,
                    "success_rate": if requests == 0 { 0.0 } else { e.succeeded() as f64 / requests as f64 },
                    "status_codes": statuses,
                    "latency_ms": latency_json(&e.latency),
                });
                ((*name).to_owned(), body)
            })
            .collect();
        let series: serde_json::Map<String, Value> = self
            .series
            .iter()
            .map(|(name, h)| ((*name).to_owned(), latency_json(h)))
            .collect();
        json!({"endpoints": endpoints, "latencies_ms": series})
    }

    /// The report as a table.
    pub fn print(&self) {
        println!(
            "{:<28} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8}  statuses",
            "endpoint", "requests", "ok %", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for (name, e) in &self.endpoints {
            let requests = e.requests();
            let rate = if requests == 0 {
                0.0
            } else {
                100.0 * e.succeeded() as f64 / requests as f64
            };
            let statuses: Vec<String> =
                e.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
            println!(
                "{name:<28} {requests:>8} {rate:>8.2} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {}",
                e.errors,
                ms(e.latency.value_at_quantile(0.5)),
                ms(e.latency.value_at_quantile(0.9)),
                ms(e.latency.value_at_quantile(0.99)),
                ms(e.latency.max()),
                statuses.join(" ")
            );
        }
        for (name, h) in &self.series {
            println!(
                "{name:<28} {:>8} {:>8} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                h.len(),
                "",
                "",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
            );
        }
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "min": ms(h.min()),
        "mean": h.mean() / 1000.0,
        "p50": ms(h.value_at_quantile(0.5)),
        "p90": ms(h.value_at_quantile(0.9)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_recorders_count_every_request_once() {
        let mut a = Recorder::default();
        a.record("POST /tasks", 200, Duration::from_millis(2));
        a.record("POST /tasks", 429, Duration::from_millis(1));
        let mut b = Recorder::default();
        b.record("POST /tasks", 200, Duration::from_millis(4));
        b.error("POST /tasks");
        b.sample("submit_to_complete", Duration::from_millis(10));
        a.merge(b);
        assert_eq!(a.totals(), (4, 2));
        assert_eq!(a.succeeded("POST /tasks"), 2);
        let report = a.to_json();
        let tasks = &report["endpoints"]["POST /tasks"];
        assert_eq!(tasks["status_codes"]["200"], 2);
        assert_eq!(tasks["connection_errors"], 1);
        assert_eq!(tasks["success_rate"], 0.5);
        assert_eq!(report["latencies_ms"]["submit_to_complete"]["count"], 1);
    }
}
