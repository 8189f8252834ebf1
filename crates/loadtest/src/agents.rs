//! Simulated agents: registered over the API, then, with `--simulate`, each long-polls for the
//! tasks it is assigned, starts and completes them with its own key, as many at once as it has
//! slots, while submitters submit; or, with `--push`, learns of them on a WebSocket it holds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::Method;
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

use super::http::{Conn, Target};
use super::stats::Recorder;
use super::Options;

/// The capability loadtest agents offer and loadtest tasks require.
const CAPABILITY: &str = "loadtest";
/// How long an agent's long-poll waits for work.
const POLL_SECONDS: u32 = 5;
/// How often a simulated agent reports it is alive, well inside the platform's default 90 s
/// before an agent that stays silent is taken offline.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// Most tasks one simulated agent works at once with per-task calls, each over a connection of
/// its own (its further slots' tasks wait their turn on those).
const MAX_WORKERS: usize = 16;
/// Most reports one `POST /agents/{id}/reports` takes.
const MAX_REPORTS: usize = 1000;
/// What submitters title their tasks, followed by the submission's number.
const TITLE_PREFIX: &str = "loadtest task ";
/// A run with no completion for this long ends, and says how many tasks were left.
const STALL: Duration = Duration::from_secs(30);

/// A registered agent: its ID and its one-time key.
#[derive(Debug, Clone)]
pub struct Agent {
    id: String,
    key: String,
}

/// Registers `--agents` agents, `--concurrency` at a time.
pub async fn register(options: &Options, target: &Target) -> (Vec<Agent>, Recorder) {
    let slots = options.agent_slots;
    let (recorder, agents) = super::repeat(
        options,
        target,
        options.agents,
        None,
        move |n| {
            let body = json!({
                "name": format!("loadtest-agent-{n}"),
                "capabilities": [CAPABILITY],
                "resources": {"cpu": 4},
                "max_concurrent_tasks": slots,
            });
            (
                "POST /agents",
                Method::POST,
                "/api/v1/agents".to_owned(),
                Some(body),
            )
        },
        |_, answer| {
            let (200, bytes) = answer? else { return None };
            let v: Value = serde_json::from_slice(&bytes).ok()?;
            Some(Agent {
                id: v["id"].as_str()?.to_owned(),
                key: v["agent_key"].as_str()?.to_owned(),
            })
        },
    )
    .await;
    (agents, recorder)
}

/// What submitters and agents share.
struct Run {
    /// When each task of the run was submitted, by its number.
    submitted_at: Vec<OnceLock<Instant>>,
    submitted: AtomicU64,
    completed: AtomicU64,
    /// Tasks the agents completed that this run did not submit (left on the server before).
    others_completed: AtomicU64,
    submitting: AtomicBool,
    stop: AtomicBool,
    /// Agents report every task a poll brought in one `POST /agents/{id}/reports` call
    /// (completing it without a separate start) instead of the per-task calls.
    batched: bool,
}

/// Which submission of the run a task is, from the title its submitter gave it.
fn submission_number(title: &str) -> Option<usize> {
    title.strip_prefix(TITLE_PREFIX)?.parse().ok()
}

impl Run {
    /// Counts a completed task: the run's own, with its submit-to-completion time, or another.
    fn completed(&self, recorder: &mut Recorder, submitted: Option<Instant>) {
        match submitted {
            Some(at) => {
                recorder.sample("submit_to_complete", at.elapsed());
                self.completed.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.others_completed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Submits `--tasks` tasks while the agents work; returns what was measured and the headline
/// figures: end-to-end tasks per second, and how many tasks were submitted and completed.
pub async fn simulate(
    options: &Options,
    target: &Target,
    agents: Vec<Agent>,
) -> anyhow::Result<(Recorder, Map<String, Value>)> {
    let run = Arc::new(Run {
        submitted_at: (0..options.tasks).map(|_| OnceLock::new()).collect(),
        submitted: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        others_completed: AtomicU64::new(0),
        submitting: AtomicBool::new(true),
        stop: AtomicBool::new(false),
        batched: options.batch_reports,
    });
    let started = Instant::now();
    let workers: Vec<_> = agents
        .into_iter()
        .enumerate()
        .map(|(n, agent)| {
            let (target, run) = (target.spread(n), run.clone());
            if options.push {
                tokio::spawn(work_pushed(agent, target, run))
            } else {
                tokio::spawn(work(agent, target, run, options.agent_slots))
            }
        })
        .collect();
    let progress = tokio::spawn(report_progress(run.clone(), started));

    let (submitting, marks) = (run.clone(), run.clone());
    let (rate, paced_from) = (options.rate, Instant::now());
    let (mut recorder, _) = super::repeat(
        options,
        target,
        options.tasks,
        options.rate,
        move |n| {
            let body = json!({
                "title": format!("{TITLE_PREFIX}{n}"),
                "required_capabilities": [CAPABILITY],
                "metadata": {"loadtest_n": n},
            });
            // Paced, a task counts from when it was due, so a submission held up by a slow
            // server is not measured as if it had been sent on time.
            let due = rate.map(|r| paced_from + Duration::from_secs_f64(n as f64 / f64::from(r)));
            let now = Instant::now();
            let _ = submitting.submitted_at[n].set(due.map_or(now, |due| due.min(now)));
            (
                "POST /tasks",
                Method::POST,
                "/api/v1/tasks".to_owned(),
                Some(body),
            )
        },
        move |_, answer| {
            if matches!(answer, Some((200, _))) {
                marks.submitted.fetch_add(1, Ordering::Relaxed);
            }
            None::<()>
        },
    )
    .await;
    let submit_seconds = started.elapsed().as_secs_f64();
    run.submitting.store(false, Ordering::Relaxed);

    // Wait for the agents to finish what was submitted, or to stall: no task of any kind
    // completed for a while.
    let activity =
        || run.completed.load(Ordering::Relaxed) + run.others_completed.load(Ordering::Relaxed);
    let mut last = (activity(), Instant::now());
    while run.completed.load(Ordering::Relaxed) < run.submitted.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let done = activity();
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > STALL {
            break;
        }
    }
    let elapsed = started.elapsed();
    // An idle fleet: the agents keep waiting for work a while longer.
    tokio::time::sleep(Duration::from_secs(options.hold_seconds)).await;
    run.stop.store(true, Ordering::Relaxed);
    progress.abort();
    for worker in workers {
        recorder.merge(worker.await?);
    }
    let submitted = run.submitted.load(Ordering::Relaxed);
    let completed = run.completed.load(Ordering::Relaxed);
    let mut figures = Map::new();
    figures.insert("tasks_submitted".into(), json!(submitted));
    figures.insert("tasks_completed".into(), json!(completed));
    figures.insert(
        "tasks_not_completed".into(),
        json!(submitted.saturating_sub(completed)),
    );
    let others = run.others_completed.load(Ordering::Relaxed);
    if others > 0 {
        figures.insert("other_tasks_completed".into(), json!(others));
    }
    figures.insert(
        "submissions_per_second".into(),
        json!((submitted as f64 / submit_seconds.max(1e-9)).round()),
    );
    figures.insert(
        "end_to_end_tasks_per_second".into(),
        json!(super::rate(completed, elapsed)),
    );
    Ok((recorder, figures))
}

/// One agent: heartbeat, long-poll for held tasks, then work them (see [`work_held`]), until
/// the run stops.
async fn work(agent: Agent, target: Target, run: Arc<Run>, slots: usize) -> Recorder {
    let mut conn = Conn::new(target.clone());
    // An agent works as many tasks at once as it has slots (up to `MAX_WORKERS`), each over a
    // connection of its own.
    let slots = slots.clamp(1, MAX_WORKERS);
    let mut workers: Vec<Conn> = (0..slots).map(|_| Conn::new(target.clone())).collect();
    let mut recorder = Recorder::default();
    let poll = format!(
        "/api/v1/agents/{}/tasks?wait_seconds={POLL_SECONDS}",
        agent.id
    );
    let key = Some(agent.key.as_str());
    let mut heartbeat = Heartbeat::new(&agent);
    while !run.stop.load(Ordering::Relaxed) {
        heartbeat.when_due(&mut conn, &mut recorder, &agent).await;
        let answer = conn
            .call(
                &mut recorder,
                "GET /agents/{id}/tasks",
                Method::GET,
                &poll,
                None,
                key,
            )
            .await;
        let Some((200, bytes)) = answer else {
            tokio::time::sleep(Duration::from_millis(100)).await; // the error is counted
            continue;
        };
        // Only what an agent acts on is read out of each task (see `Polled`).
        let held: Vec<Polled> = serde_json::from_slice(&bytes).unwrap_or_default();
        let found: Vec<Held> = held
            .into_iter()
            .map(|task| task.held(&run, &mut recorder))
            .collect();
        if run.batched {
            // What is not reported now is brought again by the next poll.
            let _ = report_held(&mut conn, &mut recorder, &agent, &run, found).await;
        } else {
            // Each slot's worker starts and completes its tasks in turn; the slots at once.
            let mut queues: Vec<Vec<Held>> = (0..slots).map(|_| Vec::new()).collect();
            for (n, task) in found.into_iter().enumerate() {
                queues[n % slots].push(task);
            }
            let worked = workers
                .iter_mut()
                .zip(queues)
                .filter(|(_, queue)| !queue.is_empty())
                .map(|(worker, queue)| work_held(worker, key, &run, queue));
            for worked in futures_util::future::join_all(worked).await {
                recorder.merge(worked);
            }
        }
    }
    recorder
}

/// What an agent reads of a task a poll brought: the rest of it (its whole description, its
/// result, its history) is skipped over, not built into a tree, so that the simulated agents'
/// cost does not crowd the server out of the cores they share.
#[derive(serde::Deserialize)]
struct Polled {
    id: String,
    attempt: u64,
    status: String,
    metadata: Option<PolledMetadata>,
}

impl Polled {
    /// What the agent needs to report on the task, noting when it learnt of an assignment.
    fn held(self, run: &Run, recorder: &mut Recorder) -> Held {
        let submitted = self
            .metadata
            .and_then(|m| m.loadtest_n)
            .and_then(|n| run.submitted_at.get(n as usize))
            .and_then(OnceLock::get)
            .copied();
        let assigned = self.status == "assigned";
        if let (true, Some(at)) = (assigned, submitted) {
            recorder.sample("submit_to_assignment", at.elapsed());
        }
        Held {
            id: self.id,
            attempt: self.attempt,
            assigned,
            submitted,
        }
    }
}

#[derive(serde::Deserialize)]
struct PolledMetadata {
    /// Which of the run's submissions the task is (set by the submitters).
    loadtest_n: Option<u64>,
}

/// The answer to `POST /agents/{id}/reports`: one status per report, in order.
#[derive(serde::Deserialize, Default)]
struct Answered {
    results: Vec<ReportStatus>,
}

#[derive(serde::Deserialize)]
struct ReportStatus {
    status: u16,
}

/// An agent's heartbeat, sent every [`HEARTBEAT_EVERY`].
struct Heartbeat {
    path: String,
    last: Instant,
}

impl Heartbeat {
    fn new(agent: &Agent) -> Self {
        Self {
            path: format!("/api/v1/agents/{}/heartbeat", agent.id),
            last: Instant::now(),
        }
    }

    /// Sends the heartbeat if it is time to.
    async fn when_due(&mut self, conn: &mut Conn, recorder: &mut Recorder, agent: &Agent) {
        if self.last.elapsed() < HEARTBEAT_EVERY {
            return;
        }
        let (endpoint, body) = ("POST /agents/{id}/heartbeat", json!({}));
        let key = Some(agent.key.as_str());
        conn.call(
            recorder,
            endpoint,
            Method::POST,
            &self.path,
            Some(&body),
            key,
        )
        .await;
        self.last = Instant::now();
    }
}

/// A task a poll brought: what the agent needs to report on it.
struct Held {
    id: String,
    attempt: u64,
    assigned: bool,
    submitted: Option<Instant>,
}

/// Starts (if only assigned) and completes `tasks` one after the other with the per-task
/// calls, over one connection.
async fn work_held(conn: &mut Conn, key: Option<&str>, run: &Run, tasks: Vec<Held>) -> Recorder {
    let mut recorder = Recorder::default();
    for task in tasks {
        let attempt = task.attempt;
        if task.assigned {
            let path = format!("/api/v1/tasks/{}/start", task.id);
            let body = json!({"attempt": attempt});
            let started = conn
                .call(
                    &mut recorder,
                    "POST /tasks/{id}/start",
                    Method::POST,
                    &path,
                    Some(&body),
                    key,
                )
                .await;
            if !matches!(started, Some((200, _))) {
                continue;
            }
        }
        let path = format!("/api/v1/tasks/{}/complete", task.id);
        let body = json!({"attempt": attempt, "result": {"ok": true}});
        let done = conn
            .call(
                &mut recorder,
                "POST /tasks/{id}/complete",
                Method::POST,
                &path,
                Some(&body),
                key,
            )
            .await;
        if matches!(done, Some((200, _))) {
            run.completed(&mut recorder, task.submitted);
        }
    }
    recorder
}

/// Completes every task of `tasks` in one `POST /agents/{id}/reports` call. Returns them when
/// the call got no answer or one that asks to try again (`429`, `5xx`), to be reported again;
/// any other refusal drops them.
async fn report_held(
    conn: &mut Conn,
    recorder: &mut Recorder,
    agent: &Agent,
    run: &Run,
    tasks: Vec<Held>,
) -> Vec<Held> {
    if tasks.is_empty() {
        return tasks;
    }
    let reports: Vec<Value> = tasks
        .iter()
        .map(|t| {
            json!({
                "task_id": t.id, "action": "complete", "attempt": t.attempt, "result": {"ok": true},
            })
        })
        .collect();
    let path = format!("/api/v1/agents/{}/reports", agent.id);
    let body = json!({ "reports": reports });
    let answer = conn
        .call(
            recorder,
            "POST /agents/{id}/reports",
            Method::POST,
            &path,
            Some(&body),
            Some(agent.key.as_str()),
        )
        .await;
    let bytes = match answer {
        Some((200, bytes)) => bytes,
        None => return tasks,
        Some((status, _)) if status == 429 || status >= 500 => return tasks,
        Some(_) => return Vec::new(),
    };
    let answered: Answered = serde_json::from_slice(&bytes).unwrap_or_default();
    for (result, task) in answered.results.iter().zip(tasks) {
        if result.status == 200 {
            run.completed(recorder, task.submitted);
        }
    }
    Vec::new()
}

/// An agent that learns of its assignments on a WebSocket, as the API guide says to: it
/// subscribes to its own `task_activity`, asks once for the tasks it already holds, and then
/// completes the tasks of every `task_assigned` event that has come, in one
/// `POST /agents/{id}/reports`, until the run stops; when its socket closes it subscribes again
/// with the last `seq` it had as `since`.
async fn work_pushed(agent: Agent, target: Target, run: Arc<Run>) -> Recorder {
    let mut conn = Conn::new(target.clone());
    let mut recorder = Recorder::default();
    let held = format!("/api/v1/agents/{}/tasks", agent.id);
    let key = Some(agent.key.as_str());
    let mut heartbeat = Heartbeat::new(&agent);
    let (mut since, mut found): (Option<i64>, Vec<Held>) = (None, Vec::new());
    // Each attempt of each task it was told of, by the first read or by an event: reported (and
    // timed) once, whichever told it first.
    let mut told: HashSet<(String, u64)> = HashSet::new();
    let client = format!("loadtest-agent-{}", agent.id);
    while !run.stop.load(Ordering::Relaxed) {
        let Some(mut socket) =
            super::ws::connect(&target, &client, &agent.key, &mut recorder).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let subscribe = match since {
            Some(since) => {
                json!({"type": "subscribe", "subscriptions": ["task_activity"], "since": since})
            }
            None => json!({"type": "subscribe", "subscriptions": ["task_activity"]}),
        };
        let confirmed = socket
            .send(Message::text(subscribe.to_string()))
            .await
            .is_ok()
            && subscribed(
                &mut socket,
                &mut since,
                &run,
                &mut recorder,
                &mut told,
                &mut found,
            )
            .await;
        if !confirmed {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if since.is_none() {
            // Subscribed from now on: what was assigned before is asked for once, until asked.
            let endpoint = "GET /agents/{id}/tasks";
            while !run.stop.load(Ordering::Relaxed) {
                let answer = conn
                    .call(&mut recorder, endpoint, Method::GET, &held, None, key)
                    .await;
                if let Some((200, bytes)) = answer {
                    let tasks: Vec<Polled> = serde_json::from_slice(&bytes).unwrap_or_default();
                    found.extend(
                        tasks
                            .into_iter()
                            .filter(|t| told.insert((t.id.clone(), t.attempt)))
                            .map(|t| t.held(&run, &mut recorder)),
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while !run.stop.load(Ordering::Relaxed) {
            heartbeat.when_due(&mut conn, &mut recorder, &agent).await;
            // The first frame waited for (a while, to look at the clock and the run), then
            // every other that has come meanwhile, taken at once.
            let mut next = match tokio::time::timeout(Duration::from_secs(1), socket.next()).await {
                Err(_) => None,
                Ok(Some(Ok(message))) => Some(message),
                Ok(_) => {
                    // Closed: subscribe again from `since`, after a pause.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            };
            let mut refused = false;
            while let Some(message) = next.take() {
                if let Message::Text(text) = message {
                    match pushed(text.as_str(), &mut since, &run, &mut recorder, &mut told) {
                        Pushed::Assigned(task) => found.push(task),
                        Pushed::Refused => refused = true,
                        Pushed::Other | Pushed::Confirmed => {}
                    }
                }
                if let Some(Some(Ok(more))) = socket.next().now_or_never() {
                    next = Some(more);
                }
            }
            // At most as many as one call takes; what a call could not report goes again.
            let mut kept = Vec::new();
            while !found.is_empty() {
                let rest = found.split_off(found.len().min(MAX_REPORTS));
                kept.extend(report_held(&mut conn, &mut recorder, &agent, &run, found).await);
                found = rest;
            }
            found = kept;
            if refused {
                // The subscription was refused (a `since` the server's log does not reach, say,
                // after it restarted on the embedded store): subscribe afresh.
                since = None;
                break;
            }
        }
    }
    recorder
}

/// What a pushed agent makes of a frame.
enum Pushed {
    /// A task assigned to it, not told of before.
    Assigned(Held),
    /// The server's `error` message: the subscription may not hold.
    Refused,
    /// The server's `subscription_confirmed`: events flow from here on.
    Confirmed,
    Other,
}

/// Reads frames until the subscription is confirmed, taking in any assignment that comes
/// first; false if the socket closed or the server refused first.
async fn subscribed(
    socket: &mut super::ws::Socket,
    since: &mut Option<i64>,
    run: &Run,
    recorder: &mut Recorder,
    told: &mut HashSet<(String, u64)>,
    found: &mut Vec<Held>,
) -> bool {
    let confirmation = async {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            match pushed(text.as_str(), since, run, recorder, told) {
                Pushed::Confirmed => return true,
                Pushed::Refused => return false,
                Pushed::Assigned(task) => found.push(task),
                Pushed::Other => {}
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(30), confirmation)
        .await
        .unwrap_or(false)
}

/// What a frame means to a pushed agent, noting an event's `seq` as where to resume and when
/// the agent learnt of an assignment.
fn pushed(
    text: &str,
    since: &mut Option<i64>,
    run: &Run,
    recorder: &mut Recorder,
    told: &mut HashSet<(String, u64)>,
) -> Pushed {
    let Ok(frame) = serde_json::from_str::<PushedFrame>(text) else {
        return Pushed::Other;
    };
    match frame.kind.as_str() {
        "error" => return Pushed::Refused,
        "subscription_confirmed" => return Pushed::Confirmed,
        _ => {}
    }
    let Some(seq) = frame.seq else {
        return Pushed::Other;
    };
    *since = Some(since.unwrap_or(0).max(seq));
    let (true, Some(data)) = (frame.kind == "task_assigned", frame.data) else {
        return Pushed::Other;
    };
    let (Some(id), Some(attempt)) = (data.task_id, data.attempt) else {
        return Pushed::Other;
    };
    if !told.insert((id.clone(), attempt)) {
        return Pushed::Other;
    }
    let submitted = submission_number(&data.title)
        .and_then(|n| run.submitted_at.get(n))
        .and_then(OnceLock::get)
        .copied();
    if let Some(at) = submitted {
        recorder.sample("submit_to_assignment", at.elapsed());
    }
    Pushed::Assigned(Held {
        id,
        attempt,
        assigned: true,
        submitted,
    })
}

/// What a pushed agent reads of a frame: an event's `seq`, type, and for a task's, which
/// attempt of which task.
#[derive(serde::Deserialize)]
struct PushedFrame {
    seq: Option<i64>,
    #[serde(rename = "type", default)]
    kind: String,
    data: Option<PushedTask>,
}

#[derive(serde::Deserialize)]
struct PushedTask {
    task_id: Option<String>,
    attempt: Option<u64>,
    #[serde(default)]
    title: String,
}

/// A progress line every second while the run goes on.
async fn report_progress(run: Arc<Run>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut before = 0;
    loop {
        tick.tick().await;
        let done = run.completed.load(Ordering::Relaxed);
        eprintln!(
            "[{:>5.0} s] submitted {:>8}{}  completed {:>8}  {:>7} tasks/s",
            started.elapsed().as_secs_f64(),
            run.submitted.load(Ordering::Relaxed),
            if run.submitting.load(Ordering::Relaxed) {
                "+"
            } else {
                " "
            },
            done,
            done - before
        );
        before = done;
    }
}
