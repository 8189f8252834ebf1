//! The load generator behind `cargo xtask loadtest`: drives a running server over HTTP and WebSocket and reports what it
//! measured: per endpoint latency percentiles, status codes and success rate; with `--simulate`,
//! agents that really take, start and complete the tasks submitters submit, end-to-end tasks/s
//! and submit-to-assignment and submit-to-completion latencies.
//!
//! Bounded: every count has a ceiling, the whole run a time limit (`--max-seconds`), and the
//! target must be a loopback address unless `--allow-remote` is given.

mod agents;
mod http;
mod stats;
mod ws;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};

use http::{Conn, Target};
pub use stats::Recorder;

const USAGE: &str = "cargo xtask loadtest [options]
  --base-url URL[,URL...]    server to load (default http://127.0.0.1:8000); several
                             servers of one deployment share the clients, agents and
                             subscribers in turn
  --auth-token TOKEN         operator credential: a JWT or an API key (required)
  --agents N                 agents to register (default 10, at most 10000)
  --tasks N                  tasks to submit (default 100, at most 1000000)
  --list-requests N          GET /tasks requests (default 100)
  --health-requests N        GET /health requests (default 100)
  --dashboard-requests N     GET /dashboard/summary requests (default 100)
  --websocket-connections N  WebSocket subscribers (default 10, at most 10000)
  --websocket-duration SECS  how long subscribers stay connected (default 10)
  --concurrency N            requests in flight at once (default 64, at most 1024)
  --simulate                 agents take, start and complete the tasks as they are submitted
  --agent-slots N            with --simulate: tasks one agent holds at once (default 4)
  --batch-reports            with --simulate: agents complete all the tasks a poll brought in
                             one POST /agents/{id}/reports instead of start and complete each
  --push                     with --simulate: agents learn of their assignments on a WebSocket
                             each holds (task_assigned events) instead of long-polling, and
                             complete them with POST /agents/{id}/reports (implies
                             --batch-reports)
  --batch-size N             without --simulate: submit N tasks per POST /tasks/batch
                             (default 1: each its own POST /tasks; at most 1000)
  --hold-seconds SECS        with --simulate: agents keep waiting for work this long after the
                             submitted tasks are done (default 0), to measure an idle fleet
  --rate N                   with --simulate: submit N tasks per second, evenly spread (a
                             constant-rate load, for latencies below saturation)
  --max-seconds SECS         stop the run after this long (default 600)
  --output FILE              also write the report as JSON
  --allow-remote             allow a target that is not a loopback address";

/// What to run, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub base_url: String,
    pub auth_token: String,
    pub agents: usize,
    pub tasks: usize,
    pub list_requests: usize,
    pub health_requests: usize,
    pub dashboard_requests: usize,
    pub websocket_connections: usize,
    pub websocket_duration: Duration,
    pub concurrency: usize,
    pub simulate: bool,
    pub agent_slots: usize,
    pub batch_reports: bool,
    pub push: bool,
    pub batch_size: usize,
    pub hold_seconds: u64,
    pub rate: Option<u32>,
    pub max_seconds: u64,
    pub output: Option<String>,
    pub allow_remote: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut o = Options {
            base_url: "http://127.0.0.1:8000".into(),
            auth_token: String::new(),
            agents: 10,
            tasks: 100,
            list_requests: 100,
            health_requests: 100,
            dashboard_requests: 100,
            websocket_connections: 10,
            websocket_duration: Duration::from_secs(10),
            concurrency: 64,
            simulate: false,
            agent_slots: 4,
            batch_reports: false,
            push: false,
            batch_size: 1,
            hold_seconds: 0,
            rate: None,
            max_seconds: 600,
            output: None,
            allow_remote: false,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{USAGE}"))
            };
            let count = |v: String, max: usize| -> anyhow::Result<usize> {
                let n: usize = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{flag} takes a number, not {v:?}"))?;
                anyhow::ensure!(n <= max, "{flag} is at most {max}");
                Ok(n)
            };
            match flag.as_str() {
                "--base-url" => o.base_url = value()?,
                "--auth-token" => o.auth_token = value()?,
                "--agents" => o.agents = count(value()?, 10_000)?,
                "--tasks" => o.tasks = count(value()?, 1_000_000)?,
                "--list-requests" => o.list_requests = count(value()?, 1_000_000)?,
                "--health-requests" => o.health_requests = count(value()?, 1_000_000)?,
                "--dashboard-requests" => o.dashboard_requests = count(value()?, 1_000_000)?,
                "--websocket-connections" => o.websocket_connections = count(value()?, 10_000)?,
                "--websocket-duration" => {
                    o.websocket_duration = Duration::from_secs(count(value()?, 3_600)? as u64)
                }
                "--concurrency" => o.concurrency = count(value()?, 1_024)?.max(1),
                "--simulate" => o.simulate = true,
                "--batch-reports" => o.batch_reports = true,
                "--push" => {
                    o.push = true;
                    o.batch_reports = true;
                }
                "--batch-size" => o.batch_size = count(value()?, 1_000)?.max(1),
                "--hold-seconds" => o.hold_seconds = count(value()?, 3_600)? as u64,
                "--rate" => o.rate = Some(count(value()?, 1_000_000)?.max(1) as u32),
                "--agent-slots" => o.agent_slots = count(value()?, 10_000)?.max(1),
                "--max-seconds" => o.max_seconds = count(value()?, 86_400)? as u64,
                "--output" => o.output = Some(value()?),
                "--allow-remote" => o.allow_remote = true,
                "--help" | "-h" => anyhow::bail!("{USAGE}"),
                other => anyhow::bail!("unknown option {other}\n{USAGE}"),
            }
        }
        anyhow::ensure!(
            !o.auth_token.is_empty(),
            "--auth-token is required: an operator's JWT or API key\n{USAGE}"
        );
        anyhow::ensure!(
            !o.simulate || o.agents > 0,
            "--simulate needs at least one agent"
        );
        anyhow::ensure!(
            o.simulate || (o.rate.is_none() && o.hold_seconds == 0 && !o.batch_reports),
            "--rate, --hold-seconds, --batch-reports and --push need --simulate"
        );
        anyhow::ensure!(
            !o.simulate || o.batch_size == 1,
            "--batch-size is for submissions without --simulate"
        );
        Ok(o)
    }
}

/// What a run measured: every request and latency series, and the run's headline figures.
#[derive(Debug, Clone)]
pub struct Report {
    pub recorder: Recorder,
    pub summary: Value,
    pub elapsed: Duration,
}

impl Report {
    /// The report as JSON: `endpoints`, `latencies_ms`, `summary`, `requests` and `failed`.
    pub fn to_json(&self) -> Value {
        let (requests, failed) = self.recorder.totals();
        let mut report = self.recorder.to_json();
        report["summary"] = self.summary.clone();
        report["requests"] = json!(requests);
        report["failed"] = json!(failed);
        report["seconds"] = json!(self.elapsed.as_secs_f64());
        report
    }

    pub fn print(&self) {
        let (requests, failed) = self.recorder.totals();
        self.recorder.print();
        println!(
            "\n{requests} requests, {failed} failed ({:.2} % succeeded) in {:.1} s",
            if requests == 0 {
                0.0
            } else {
                100.0 * (requests - failed) as f64 / requests as f64
            },
            self.elapsed.as_secs_f64()
        );
        for (key, value) in self.summary.as_object().into_iter().flatten() {
            println!("{key}: {value}");
        }
    }
}

/// The command line: parses `args`, runs, prints the report and writes it to `--output`.
pub async fn main(args: &[String]) -> anyhow::Result<()> {
    let options = Options::parse(args)?;
    let report = run(&options).await?;
    println!();
    report.print();
    if let Some(path) = &options.output {
        std::fs::write(path, serde_json::to_vec_pretty(&report.to_json())?)?;
        println!("report written to {path}");
    }
    Ok(())
}

/// Runs the load test `options` describe, within `--max-seconds`.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let target = Target::resolve(&options.base_url, options.allow_remote).await?;
    let limit = Duration::from_secs(options.max_seconds);
    let started = Instant::now();
    let (recorder, summary) = tokio::time::timeout(limit, phases(options, &target))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the run passed --max-seconds ({}s)", options.max_seconds)
        })??;
    Ok(Report {
        recorder,
        summary,
        elapsed: started.elapsed(),
    })
}

/// The phases in order; returns what was measured and the run's headline figures.
async fn phases(options: &Options, target: &Target) -> anyhow::Result<(Recorder, Value)> {
    let mut recorder = Recorder::default();
    let token = options.auth_token.as_str();
    let (registered, r) = agents::register(options, target).await;
    recorder.merge(r);
    anyhow::ensure!(
        registered.len() == options.agents,
        "only {} of {} agents could be registered; is the credential an operator's?",
        registered.len(),
        options.agents
    );
    let mut summary = serde_json::Map::new();
    let subscribers = ws::spawn(options, target, token);
    if options.simulate {
        let (r, figures) = agents::simulate(options, target, registered).await?;
        recorder.merge(r);
        summary.extend(figures);
    } else {
        let phase = Instant::now();
        let (size, total) = (options.batch_size, options.tasks);
        // Batch `n` holds the tasks from `n * size`, the last one what is left.
        let batch = move |n: usize| n * size..((n + 1) * size).min(total);
        let task = |n: usize| {
            json!({
                "title": format!("loadtest task {n}"),
                "priority": (n % 10) + 1,
                "metadata": {"loadtest": true},
            })
        };
        let (r, stored) = repeat(
            options,
            target,
            total.div_ceil(size),
            None,
            move |n| {
                if size == 1 {
                    let path = "/api/v1/tasks".to_owned();
                    return ("POST /tasks", Method::POST, path, Some(task(n)));
                }
                let tasks: Vec<Value> = batch(n).map(task).collect();
                let path = "/api/v1/tasks/batch".to_owned();
                let body = json!({ "tasks": tasks });
                ("POST /tasks/batch", Method::POST, path, Some(body))
            },
            move |n, answer| matches!(answer, Some((200, _))).then(|| batch(n).len() as u64),
        )
        .await;
        let submitted: u64 = stored.into_iter().sum();
        summary.insert(
            "submissions_per_second".into(),
            json!(rate(submitted, phase.elapsed())),
        );
        recorder.merge(r);
    }
    let reads: [(&'static str, &'static str, usize); 3] = [
        (
            "GET /tasks",
            "/api/v1/tasks?limit=50",
            options.list_requests,
        ),
        ("GET /health", "/api/v1/health", options.health_requests),
        (
            "GET /dashboard/summary",
            "/api/v1/dashboard/summary",
            options.dashboard_requests,
        ),
    ];
    for (endpoint, path, count) in reads {
        if count == 0 {
            continue;
        }
        let phase = Instant::now();
        let (r, _) = repeat(
            options,
            target,
            count,
            None,
            |_| (endpoint, Method::GET, path.to_owned(), None),
            |_, _| None::<()>,
        )
        .await;
        summary.insert(
            format!("{endpoint} per second"),
            json!(rate(r.succeeded(endpoint), phase.elapsed())),
        );
        recorder.merge(r);
    }
    let (r, figures) = subscribers.await?;
    recorder.merge(r);
    summary.extend(figures);
    Ok((recorder, Value::Object(summary)))
}

/// A per-second rate, rounded.
fn rate(count: u64, elapsed: Duration) -> f64 {
    (count as f64 / elapsed.as_secs_f64().max(1e-9)).round()
}

/// One request: the endpoint it counts under, its method, path and body.
pub(crate) type Call = (&'static str, Method, String, Option<Value>);

/// Makes `count` requests from `--concurrency` workers, each on its own connection and with
/// the operator's credential: request `n` is `call(n)`, made no earlier than `n / pace`
/// seconds from the start when a pace (requests per second) is given, and what
/// `read(n, answer)` makes of each answer is collected.
pub(crate) async fn repeat<T: Send + 'static>(
    options: &Options,
    target: &Target,
    count: usize,
    pace: Option<u32>,
    call: impl Fn(usize) -> Call + Send + Sync + 'static,
    read: impl Fn(usize, http::Answer) -> Option<T> + Send + Sync + 'static,
) -> (Recorder, Vec<T>) {
    let next = Arc::new(AtomicUsize::new(0));
    let (call, read) = (Arc::new(call), Arc::new(read));
    let started = tokio::time::Instant::now();
    let workers: Vec<_> = (0..options.concurrency.min(count))
        .map(|worker| {
            let (next, token) = (next.clone(), options.auth_token.clone());
            let (call, read) = (call.clone(), read.clone());
            let mut conn = Conn::new(target.spread(worker));
            tokio::spawn(async move {
                let mut recorder = Recorder::default();
                let mut found = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return (recorder, found);
                    }
                    if let Some(per_second) = pace {
                        let due = n as f64 / f64::from(per_second.max(1));
                        tokio::time::sleep_until(started + Duration::from_secs_f64(due)).await;
                    }
                    let (endpoint, method, path, body) = call(n);
                    let answer = conn
                        .call(
                            &mut recorder,
                            endpoint,
                            method,
                            &path,
                            body.as_ref(),
                            Some(&token),
                        )
                        .await;
                    found.extend(read(n, answer));
                }
            })
        })
        .collect();
    let mut recorder = Recorder::default();
    let mut found = Vec::new();
    for worker in workers {
        if let Ok((r, f)) = worker.await {
            recorder.merge(r);
            found.extend(f);
        }
    }
    (recorder, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_need_a_credential_and_stay_within_their_bounds() {
        assert!(Options::parse(&args(&[])).is_err());
        let o = Options::parse(&args(&["--auth-token", "t", "--tasks", "5", "--simulate"]))
            .expect("valid options");
        assert_eq!((o.tasks, o.simulate, o.agents), (5, true, 10));
        let too_many = Options::parse(&args(&["--auth-token", "t", "--tasks", "1000001"]));
        assert!(too_many
            .unwrap_err()
            .to_string()
            .contains("at most 1000000"));
        assert!(Options::parse(&args(&["--auth-token", "t", "--bogus"])).is_err());
        assert!(Options::parse(&args(&["--auth-token", "t", "--agents"])).is_err());
    }

    #[tokio::test]
    async fn only_loopback_targets_are_loaded_without_allow_remote() {
        assert!(Target::resolve("http://127.0.0.1:8000", false)
            .await
            .is_ok());
        assert!(Target::resolve("http://[::1]:8000/base", false)
            .await
            .is_ok());
        let remote = Target::resolve("http://192.0.2.1:8000", false).await;
        assert!(remote.unwrap_err().to_string().contains("--allow-remote"));
        assert!(Target::resolve("http://192.0.2.1:8000", true).await.is_ok());
        assert!(Target::resolve("https://127.0.0.1", false).await.is_err());
        // Every server of several must be local too.
        let mixed = Target::resolve("http://127.0.0.1:8000,http://192.0.2.1:8000", false).await;
        assert!(mixed.unwrap_err().to_string().contains("--allow-remote"));
    }

    #[tokio::test]
    async fn several_servers_share_the_clients_in_turn() {
        let target = Target::resolve("http://127.0.0.1:8001, http://127.0.0.1:8002", false)
            .await
            .unwrap();
        let ports: Vec<u16> = (0..4).map(|n| target.spread(n).addr.port()).collect();
        assert_eq!(ports, [8001, 8002, 8001, 8002]);
        let one = Target::resolve("http://127.0.0.1:8001", false)
            .await
            .unwrap();
        assert_eq!(one.spread(3).addr.port(), 8001);
        let prefixes = Target::resolve("http://127.0.0.1:8001/a,http://127.0.0.1:8002/b", false);
        assert!(prefixes
            .await
            .unwrap_err()
            .to_string()
            .contains("same path"));
    }
}
