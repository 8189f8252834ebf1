//! The platform's measurements, for `/metrics`: counters and histograms kept in atomics, and
//! labelled series in tables of fixed size whose slots are each written once, so recording a
//! measurement never takes a lock. Rendered in Prometheus's text format.
//!
//! Everything here is counted by this replica (a deployment sums them over its replicas); the
//! platform-wide gauges ([`Gauges`]) are read from the store when they are rendered.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{ConflictType, EventKind, NewEvent, Severity};
use ports::StatusCounts;

/// A level this replica last found, set whole each time.
#[derive(Debug, Default)]
pub struct Level(AtomicU64);

impl Level {
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A count that only grows.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Durations counted into buckets, with their sum.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds of the buckets, in seconds, ascending; a last bucket takes the rest.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative), one more than `bounds`.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self.bounds.partition_point(|&upper| upper < seconds);
        self.counts[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Observes the time from `from` to `to`, if it is not negative.
    pub fn observe_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) {
        if let Ok(took) = (to - from).to_std() {
            self.observe(took);
        }
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            match self.bounds.get(i) {
                Some(upper) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"{upper}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// What names a series among its family: renders its labels (`name="value",...`).
pub trait Labels: Hash + Eq + Clone {
    fn write(&self, out: &mut String);
}

/// Series keyed by their labels, in a table of fixed size. A key takes a slot the first time it
/// is seen and keeps it, so finding a series reads atomics only. Label values come from fixed
/// sets (route templates, statuses, enum names), so the table never fills in practice; if it
/// did, measurements of new keys would be counted as lost rather than grow it.
pub struct Family<K, V> {
    slots: Box<[OnceLock<(K, V)>]>,
    hasher: RandomState,
    make: fn() -> V,
    lost: Counter,
}

impl<K, V> std::fmt::Debug for Family<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<K: Labels, V> Family<K, V> {
    /// A table of `capacity` slots (rounded up to a power of two), each series made by `make`.
    pub fn new(capacity: usize, make: fn() -> V) -> Self {
        let capacity = capacity.next_power_of_two();
        Self {
            slots: (0..capacity).map(|_| OnceLock::new()).collect(),
            hasher: RandomState::new(),
            make,
            lost: Counter::default(),
        }
    }

    /// The series of `key`, made the first time; `None` (and counted as lost) when the table
    /// has no slot left for a new key.
    pub fn get(&self, key: &K) -> Option<&V> {
        let mask = self.slots.len() - 1;
        let start = self.hasher.hash_one(key) as usize;
        for probe in 0..self.slots.len() {
            let (k, v) =
                self.slots[(start + probe) & mask].get_or_init(|| (key.clone(), (self.make)()));
            if k == key {
                return Some(v);
            }
        }
        self.lost.inc();
        None
    }

    /// Every series made so far, with its labels rendered, ordered by them.
    fn series(&self) -> Vec<(String, &V)> {
        let mut all: Vec<(String, &V)> = self
            .slots
            .iter()
            .filter_map(OnceLock::get)
            .map(|(k, v)| {
                let mut labels = String::new();
                k.write(&mut labels);
                (labels, v)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Measurements of keys that found no slot.
    pub fn lost(&self) -> u64 {
        self.lost.get()
    }
}

/// Writes `name="value"`, escaping the value as the text format requires.
fn label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One HTTP route: the method and the route template (never a raw path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub method: &'static str,
    pub path: String,
}

impl Labels for Route {
    fn write(&self, out: &mut String) {
        label(out, "method", self.method);
        label(out, "path", &self.path);
    }
}

/// What is counted of one route: its answers by status, and how long they took.
#[derive(Debug)]
pub struct RouteSeries {
    pub statuses: Family<Status, Counter>,
    pub duration: Histogram,
}

/// An HTTP status code, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

impl Labels for Status {
    fn write(&self, out: &mut String) {
        label(out, "status", &self.0.to_string());
    }
}

/// One label from a fixed set of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Named(pub &'static str, pub &'static str);

impl Labels for Named {
    fn write(&self, out: &mut String) {
        label(out, self.0, self.1);
    }
}

/// A conflict's type and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConflictKind(pub ConflictType, pub Severity);

impl Labels for ConflictKind {
    fn write(&self, out: &mut String) {
        label(out, "type", self.0.as_str());
        label(out, "severity", self.1.as_str());
    }
}

/// Request durations: from a millisecond to ten seconds (the longest deadline is 60 s).
const REQUEST_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Time a task waits: from milliseconds to an hour.
const WAIT_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Time a task runs: from ten milliseconds to four hours.
const RUN_SECONDS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];
/// Time a scheduling pass takes.
const PASS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Distinct routes and methods one replica answers: every route template (about 55, and
/// `unmatched`) with each of the eight method labels, which any caller can send.
const ROUTES: usize = 1024;
/// Distinct statuses one route answers with.
const STATUSES: usize = 32;

/// Everything this replica counts.
#[derive(Debug)]
pub struct Metrics {
    /// `http_requests_total` and `http_request_duration_seconds`.
    pub http: Family<Route, RouteSeries>,
    pub submitted: Counter,
    pub assigned: Counter,
    /// Tasks that ended, by how: `completed`, `failed`, `cancelled`, `expired`.
    pub finished: Family<Named, Counter>,
    /// Tasks sent back to the queue: attempts that ended early, and operators' retries.
    pub retries: Counter,
    pub lease_expiries: Counter,
    pub conflicts: Family<ConflictKind, Counter>,
    /// Events this replica committed, by channel.
    pub events: Family<Named, Counter>,
    /// Submission to first assignment.
    pub assignment_wait: Histogram,
    /// Start to completion, of tasks that completed.
    pub run_time: Histogram,
    pub scheduler_pass: Histogram,
    pub ws_sent: Counter,
    /// Frames a WebSocket subscriber missed because it fell behind (and was disconnected).
    pub ws_dropped: Counter,
    /// Shared settings a live replica announced differently, at the last look.
    pub settings_disagreements: Level,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            http: Family::new(ROUTES, || RouteSeries {
                statuses: Family::new(STATUSES, Counter::default),
                duration: Histogram::new(REQUEST_SECONDS),
            }),
            submitted: Counter::default(),
            assigned: Counter::default(),
            finished: Family::new(8, Counter::default),
            retries: Counter::default(),
            lease_expiries: Counter::default(),
            conflicts: Family::new(64, Counter::default),
            events: Family::new(16, Counter::default),
            assignment_wait: Histogram::new(WAIT_SECONDS),
            run_time: Histogram::new(RUN_SECONDS),
            scheduler_pass: Histogram::new(PASS_SECONDS),
            ws_sent: Counter::default(),
            ws_dropped: Counter::default(),
            settings_disagreements: Level::default(),
        }
    }
}

/// Platform-wide figures read from the store: the same on every replica.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    pub agents: StatusCounts,
    /// Pending tasks by priority, `[0]` for priority 1.
    pub queue: [u64; 10],
}

/// A timestamp an event's data carries.
fn timestamp(event: &NewEvent, field: &str) -> Option<DateTime<Utc>> {
    event.data.get(field)?.as_str()?.parse().ok()
}

impl Metrics {
    /// Counts what committed events say happened: submissions, assignments and their wait,
    /// ends by outcome and run times, retries, conflicts, and the events themselves.
    pub fn observe(&self, written: &[NewEvent]) {
        for event in written {
            if let Some(c) = self
                .events
                .get(&Named("channel", event.kind.channel().as_str()))
            {
                c.inc();
            }
            let ended = |outcome| {
                if let Some(c) = self.finished.get(&Named("outcome", outcome)) {
                    c.inc();
                }
            };
            match event.kind {
                EventKind::TaskSubmitted => self.submitted.inc(),
                EventKind::TaskAssigned => {
                    self.assigned.inc();
                    let first = event.data.get("attempt").and_then(|a| a.as_u64()) == Some(1);
                    if let (true, Some(submitted)) = (first, timestamp(event, "submitted_at")) {
                        self.assignment_wait
                            .observe_between(submitted, event.timestamp);
                    }
                }
                EventKind::TaskCompleted => {
                    ended("completed");
                    if let Some(started) = timestamp(event, "started_at") {
                        self.run_time.observe_between(started, event.timestamp);
                    }
                }
                EventKind::TaskFailed => ended("failed"),
                EventKind::TaskCancelled => ended("cancelled"),
                EventKind::TaskExpired => ended("expired"),
                EventKind::TaskRetrying => self.retries.inc(),
                EventKind::ConflictReported | EventKind::ConflictDetected => {
                    let field = |name: &str| event.data.get(name).and_then(|v| v.as_str());
                    let kind = field("conflict_type").and_then(|t| t.parse().ok());
                    let severity = field("severity").and_then(|s| s.parse().ok());
                    if let (Some(kind), Some(severity)) = (kind, severity) {
                        if let Some(c) = self.conflicts.get(&ConflictKind(kind, severity)) {
                            c.inc();
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Everything, in Prometheus's text format: the store's gauges (left out, with
    /// `agent_platform_store_up 0`, when the store could not be read), this replica's
    /// `websocket_connections` open, and every series counted here.
    pub fn render(&self, gauges: Option<&Gauges>, websocket_connections: u64) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let o = &mut out;

        head(
            o,
            "http_requests_total",
            "counter",
            "HTTP requests answered by this replica, by method, route template and status.",
        );
        for (route, series) in self.http.series() {
            for (status, count) in series.statuses.series() {
                let _ = writeln!(o, "http_requests_total{{{route},{status}}} {}", count.get());
            }
        }
        head(
            o,
            "http_request_duration_seconds",
            "histogram",
            "Time to answer an HTTP request on this replica, by method and route template.",
        );
        for (route, series) in self.http.series() {
            series
                .duration
                .render(o, "http_request_duration_seconds", &route);
        }

        gauge(
            o,
            "agent_platform_store_up",
            "Whether this replica could read the platform-wide gauges from its store just now (1) or not (0, and they are left out).",
            u64::from(gauges.is_some()),
        );
        if let Some(gauges) = gauges {
            render_gauges(o, gauges);
        }
        gauge(
            o,
            "websocket_connections_total",
            "WebSocket connections open on this replica.",
            websocket_connections,
        );

        counter(
            o,
            "agent_platform_tasks_submitted_total",
            "Tasks submitted through this replica.",
            self.submitted.get(),
        );
        counter(
            o,
            "agent_platform_tasks_assigned_total",
            "Assignments made by this replica's scheduler.",
            self.assigned.get(),
        );
        head(
            o,
            "agent_platform_tasks_finished_total",
            "counter",
            "Tasks that ended through this replica, by outcome.",
        );
        for outcome in ["completed", "failed", "cancelled", "expired"] {
            let n = self
                .finished
                .get(&Named("outcome", outcome))
                .map_or(0, Counter::get);
            let _ = writeln!(
                o,
                "agent_platform_tasks_finished_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        counter(
            o,
            "agent_platform_task_retries_total",
            "Tasks sent back to the queue through this replica: an attempt that ended early (failure, lost lease, agent gone, preemption) or an operator's retry.",
            self.retries.get(),
        );
        counter(
            o,
            "agent_platform_lease_expiries_total",
            "Attempts this replica ended because their lease ran out.",
            self.lease_expiries.get(),
        );
        head(
            o,
            "agent_platform_conflicts_total",
            "counter",
            "Conflicts opened through this replica, by type and severity.",
        );
        for (labels, count) in self.conflicts.series() {
            let _ = writeln!(
                o,
                "agent_platform_conflicts_total{{{labels}}} {}",
                count.get()
            );
        }
        head(
            o,
            "agent_platform_events_published_total",
            "counter",
            "Events committed by this replica, by channel.",
        );
        for (labels, count) in self.events.series() {
            let _ = writeln!(
                o,
                "agent_platform_events_published_total{{{labels}}} {}",
                count.get()
            );
        }
        head(
            o,
            "agent_platform_task_assignment_seconds",
            "histogram",
            "Time from a task's submission to its first assignment, assigned by this replica.",
        );
        self.assignment_wait
            .render(o, "agent_platform_task_assignment_seconds", "");
        head(
            o,
            "agent_platform_task_run_seconds",
            "histogram",
            "Time from a task's start to its completion, completed through this replica.",
        );
        self.run_time
            .render(o, "agent_platform_task_run_seconds", "");
        head(
            o,
            "agent_platform_scheduler_pass_seconds",
            "histogram",
            "Time a scheduling pass of this replica takes.",
        );
        self.scheduler_pass
            .render(o, "agent_platform_scheduler_pass_seconds", "");
        counter(
            o,
            "agent_platform_websocket_messages_sent_total",
            "Frames written to WebSocket clients by this replica.",
            self.ws_sent.get(),
        );
        counter(o, "agent_platform_websocket_messages_dropped_total", "Frames WebSocket subscribers of this replica missed by falling behind (they are disconnected and resume with since).", self.ws_dropped.get());
        gauge(
            o,
            "agent_platform_replica_settings_disagreements",
            "Settings every replica must share (JWT_SECRET, retention, limits and the like) that a live replica announced differently from this one, at the last look.",
            self.settings_disagreements.get(),
        );
        let lost_statuses: u64 = (self.http.series().iter())
            .map(|(_, route)| route.statuses.lost())
            .sum();
        let lost = self.http.lost()
            + lost_statuses
            + self.finished.lost()
            + self.conflicts.lost()
            + self.events.lost();
        counter(
            o,
            "agent_platform_metric_series_lost_total",
            "Measurements not recorded because their series found no slot.",
            lost,
        );
        out
    }
}

/// The platform-wide gauges read from the store.
fn render_gauges(o: &mut String, gauges: &Gauges) {
    let agents = &gauges.agents;
    gauge(
        o,
        "agent_platform_active_agents_total",
        "Agents online (idle, active, busy or draining), platform-wide.",
        agents.online(),
    );
    gauge(
        o,
        "agent_platform_active_tasks_total",
        "Tasks held by agents, platform-wide.",
        agents.running_tasks,
    );
    gauge(
        o,
        "agent_platform_agent_slots",
        "Tasks the online agents (idle, active, busy or draining) may hold at once, platform-wide.",
        agents.slots,
    );
    head(
        o,
        "agent_platform_agents",
        "gauge",
        "Registered agents by status, platform-wide.",
    );
    for (status, n) in agents.by_status() {
        let _ = writeln!(o, "agent_platform_agents{{status=\"{status}\"}} {n}");
    }
    head(
        o,
        "agent_platform_queue_depth",
        "gauge",
        "Pending tasks by priority, platform-wide.",
    );
    for (i, n) in gauges.queue.iter().enumerate() {
        let _ = writeln!(
            o,
            "agent_platform_queue_depth{{priority=\"{}\"}} {n}",
            i + 1
        );
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    head(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    head(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_observation_into_the_first_bucket_that_holds_it() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(100)); // on the bound: le="0.1"
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"0.1\"} 1\nx_bucket{a=\"b\",le=\"1\"} 2\n\
             x_bucket{a=\"b\",le=\"+Inf\"} 3\nx_sum{a=\"b\"} 5.6\nx_count{a=\"b\"} 3\n"
        );
    }

    #[test]
    fn a_family_keeps_one_series_per_key_and_counts_keys_past_its_capacity_as_lost() {
        let f: Family<Status, Counter> = Family::new(4, Counter::default);
        for code in [200, 404, 200, 500, 503] {
            f.get(&Status(code)).unwrap().inc();
        }
        assert!(f.get(&Status(418)).is_none());
        assert_eq!(f.lost(), 1);
        let seen: Vec<(String, u64)> = f.series().into_iter().map(|(l, c)| (l, c.get())).collect();
        assert_eq!(
            seen,
            vec![
                ("status=\"200\"".to_owned(), 2),
                ("status=\"404\"".to_owned(), 1),
                ("status=\"500\"".to_owned(), 1),
                ("status=\"503\"".to_owned(), 1),
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        label(&mut out, "path", "/a\"b\\c\nd");
        assert_eq!(out, "path=\"/a\\\"b\\\\c\\nd\"");
    }
}
