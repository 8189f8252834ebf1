//! 2,000 tasks flowing through the replicas while a fault strikes: submitters, simulated
//! agents (some of which can be made to die holding a task) and a WebSocket subscriber, and
//! the checks a run must pass once every task has completed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::requests::{Clients, Tally};
use crate::servers::{Stack, ADMIN_KEY};

pub(crate) const TASKS: usize = 2000;
const AGENTS: usize = 6;

/// 2,000 tasks flowing through the stack: submitters, agents and a subscriber at work.
pub(crate) struct Flow {
    pub(crate) clients: Clients,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) done: Arc<AtomicUsize>,
    pub(crate) completes: Arc<Mutex<HashMap<String, usize>>>,
    pub(crate) submitted: Arc<Mutex<Vec<String>>>,
    pub(crate) completed_seen: Arc<Mutex<Vec<String>>>,
    /// The `seq` of every task event the subscriber saw.
    pub(crate) events_seen: Arc<Mutex<Vec<i64>>>,
    /// What makes the agents that run beside replica 0 die.
    pub(crate) doom: Doom,
    /// The first agent's ID and key, for the writes of `write_refused`.
    pub(crate) probe: (String, String),
    /// How many agents run beside replica 0.
    pub(crate) mortal: usize,
    pub(crate) subscriber: JoinHandle<usize>,
    pub(crate) workers: Vec<JoinHandle<()>>,
    pub(crate) submitters: Vec<JoinHandle<()>>,
}

impl Flow {
    pub(crate) async fn start(stack: &Stack) -> Flow {
        let clients = Clients {
            routes: stack.routes.clone(),
            tally: Arc::default(),
            progress: Arc::default(),
        };
        let mut agents = Vec::new();
        for n in 0..AGENTS {
            let body = json!({"name": format!("worker-{n}"), "capabilities": ["etl"], "max_concurrent_tasks": 2});
            let (status, agent) = clients
                .retried(n, "POST", "/api/v1/agents", ADMIN_KEY, &[], Some(&body))
                .await;
            assert_eq!(status, 200);
            let id = agent["id"].as_str().unwrap().to_owned();
            let key = agent["agent_key"].as_str().unwrap().to_owned();
            agents.push((n % 3, id, key));
        }
        let probe = (agents[0].1.clone(), agents[0].2.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let completed_seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let events_seen: Arc<Mutex<Vec<i64>>> = Arc::default();
        let subscriber = tokio::spawn(subscribe(
            clients.clone(),
            completed_seen.clone(),
            events_seen.clone(),
            stop.clone(),
        ));
        let doom = Doom::default();
        let mortal = agents.iter().filter(|(home, _, _)| *home == 0).count();
        let completes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let done = Arc::new(AtomicUsize::new(0));
        let workers = agents
            .into_iter()
            .map(|(home, id, key)| {
                let work = work(
                    clients.clone(),
                    home,
                    id,
                    key,
                    completes.clone(),
                    done.clone(),
                    stop.clone(),
                    (home == 0).then(|| doom.clone()),
                );
                tokio::spawn(work)
            })
            .collect();
        let submitted: Arc<Mutex<Vec<String>>> = Arc::default();
        let submitters = (0..8)
            .map(|s| {
                let (clients, submitted) = (clients.clone(), submitted.clone());
                tokio::spawn(async move {
                    for n in (s..TASKS).step_by(8) {
                        let body = json!({
                            "title": format!("job {n}"), "required_capabilities": ["etl"],
                            "lease_seconds": 5, "max_attempts": 10
                        });
                        let key = format!("job-{n}");
                        let headers = [("Idempotency-Key", key.as_str())];
                        let (status, task) = clients
                            .retried(n, "POST", "/api/v1/tasks", ADMIN_KEY, &headers, Some(&body))
                            .await;
                        assert_eq!(status, 200, "{task}");
                        submitted
                            .lock()
                            .unwrap()
                            .push(task["id"].as_str().unwrap().to_owned());
                    }
                })
            })
            .collect();
        Flow {
            clients,
            stop,
            done,
            completes,
            submitted,
            completed_seen,
            events_seen,
            doom,
            probe,
            mortal,
            subscriber,
            workers,
            submitters,
        }
    }

    /// Waits until agents have completed `n` tasks.
    pub(crate) async fn completed(&self, n: usize) {
        let enough = async {
            loop {
                let more = self.clients.progress.notified();
                if self.done.load(Ordering::SeqCst) >= n {
                    return;
                }
                more.await;
            }
        };
        let got = tokio::time::timeout(Duration::from_secs(60), enough).await;
        assert!(got.is_ok(), "the flow did not get going");
    }

    /// Waits until a write has been refused with `503`: the outage is felt by clients (and
    /// answered as the contract says). The flow's own writes may be over by then (submitters
    /// done, agents polling for work they cannot get), so the test writes too: an agent's
    /// heartbeat, each sent once the one before is answered, with metadata that changes each
    /// time: a write that reaches the database (a bare heartbeat of an idle agent may be
    /// answered from memory) and changes nothing a check counts.
    pub(crate) async fn write_refused(&self) {
        let (id, key) = &self.probe;
        let heartbeat = format!("/api/v1/agents/{id}/heartbeat");
        let refused = async {
            for at in 0.. {
                let body = json!({"metadata": {"probe": at}});
                let _ = self
                    .clients
                    .call(at, "POST", &heartbeat, key, &[], Some(&body))
                    .await;
                if self.clients.tally.lock().unwrap().writes.contains_key(&503) {
                    return;
                }
            }
        };
        let felt = tokio::time::timeout(Duration::from_secs(30), refused).await;
        assert!(
            felt.is_ok(),
            "writes during the outage were refused with 503"
        );
    }

    /// Waits until agents have completed `n` more tasks than they have now.
    pub(crate) async fn completed_more(&self, n: usize) {
        self.completed(self.done.load(Ordering::SeqCst) + n).await;
    }

    /// Makes the agents that run beside replica 0 die, each holding a task it started, as if
    /// their machine went down; waits until they have, and returns each one's ID and task.
    pub(crate) async fn doom_agents_beside_replica_0(&self) -> Vec<(String, String)> {
        self.doom.doomed.store(true, Ordering::SeqCst);
        let all_dead = async {
            loop {
                let more = self.clients.progress.notified();
                if self.doom.abandoned.lock().unwrap().len() >= self.mortal {
                    return;
                }
                more.await;
            }
        };
        let died = tokio::time::timeout(Duration::from_secs(60), all_dead).await;
        assert!(died.is_ok(), "the agents beside replica 0 took no task");
        self.doom.abandoned.lock().unwrap().clone()
    }

    /// Waits until every task has completed, through the replicas that still answer, then
    /// checks the run: every acknowledged task once, completed once, no attempt assigned
    /// twice, every task event seen once, in order, by the subscriber. Returns how requests
    /// went, and each task's history.
    pub(crate) async fn finish(self, live: &[usize]) -> (Tally, HashMap<String, Vec<Value>>) {
        for submitter in self.submitters {
            submitter.await.unwrap();
        }
        let routes = self.clients.routes.lock().unwrap().clone();
        let live = Clients {
            routes: Arc::new(Mutex::new(live.iter().map(|&i| routes[i]).collect())),
            tally: Arc::default(),
            progress: Arc::default(),
        };
        // The subscriber hears of every completion: wait until it has heard of them all.
        let all_seen = async {
            loop {
                let more = self.clients.progress.notified();
                if self.completed_seen.lock().unwrap().len() >= TASKS {
                    return;
                }
                more.await;
            }
        };
        let seen = tokio::time::timeout(Duration::from_secs(90), all_seen).await;
        let (_, summary) = live
            .retried(0, "GET", "/api/v1/dashboard/summary", ADMIN_KEY, &[], None)
            .await;
        assert!(
            seen.is_ok(),
            "not every task completed: {}",
            summary["tasks"]
        );
        assert_eq!(summary["tasks"]["total"], TASKS, "{}", summary["tasks"]);
        assert_eq!(summary["tasks"]["completed"], TASKS, "{}", summary["tasks"]);
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let mut unique = self.submitted.lock().unwrap().clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            TASKS,
            "each acknowledged submission is its own task, none twice"
        );
        let completes = self.completes.lock().unwrap().clone();
        assert!(
            completes.values().all(|&n| n == 1),
            "a completion was accepted twice for one task"
        );
        let mut histories = HashMap::new();
        for id in &unique {
            let (status, history) = live
                .retried(
                    0,
                    "GET",
                    &format!("/api/v1/tasks/{id}/history"),
                    ADMIN_KEY,
                    &[],
                    None,
                )
                .await;
            assert_eq!(status, 200);
            let events = history.as_array().unwrap();
            let of = |kind: &str| events.iter().filter(|e| e["type"] == kind).count();
            assert_eq!(of("task_completed"), 1, "task {id}: {history}");
            let mut attempts: Vec<i64> = events
                .iter()
                .filter(|e| e["type"] == "task_assigned")
                .map(|e| e["data"]["attempt"].as_i64().unwrap())
                .collect();
            let assigned = attempts.len();
            attempts.dedup();
            assert_eq!(
                attempts.len(),
                assigned,
                "task {id} was assigned twice in one attempt"
            );
            histories.insert(id.clone(), events.clone());
        }
        self.subscriber.await.unwrap();
        // Every event of the channel subscribed to, as each task's history keeps it, reached
        // the subscriber, and nothing else did (it saw each at most once, in order, as it checked).
        let mut logged: Vec<i64> = histories
            .values()
            .flatten()
            .filter(|e| e["channel"] == "task_activity")
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        logged.sort_unstable();
        let mut heard = self.events_seen.lock().unwrap().clone();
        heard.sort_unstable();
        assert_eq!(
            heard.len(),
            logged.len(),
            "the subscriber heard {} task events of the {} logged",
            heard.len(),
            logged.len()
        );
        assert_eq!(heard, logged, "the subscriber missed a task event");
        let seen = self.completed_seen.lock().unwrap().clone();
        let mut by_task: BTreeMap<&String, usize> = BTreeMap::new();
        for task in &seen {
            *by_task.entry(task).or_default() += 1;
        }
        assert_eq!(by_task.len(), TASKS, "the subscriber missed a completion");
        assert!(
            by_task.values().all(|&n| n == 1),
            "the subscriber saw a completion twice"
        );
        let tally = self.clients.tally.lock().unwrap().clone();
        (tally, histories)
    }
}

/// A subscriber to every task event, moving to the next replica with `since` when its own
/// closes or stops answering; it checks every event comes after the last, and records every
/// event's `seq` and the completions. Returns how many times it moved.
pub(crate) async fn subscribe(
    clients: Clients,
    seen: Arc<Mutex<Vec<String>>>,
    events: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
) -> usize {
    let (mut at, mut last, mut moves) = (0, 0i64, 0);
    while !stop.load(Ordering::SeqCst) {
        let url = format!(
            "ws://{}/api/v1/ws/watcher?token={ADMIN_KEY}",
            clients.route(at)
        );
        if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await {
            let subscribe =
                json!({"type": "subscribe", "subscriptions": ["task_activity"], "since": last});
            if socket
                .send(Message::Text(subscribe.to_string().into()))
                .await
                .is_ok()
            {
                loop {
                    let next =
                        tokio::time::timeout(Duration::from_millis(500), socket.next()).await;
                    let text = match next {
                        Err(_) if stop.load(Ordering::SeqCst) => return moves,
                        Err(_) => continue,
                        Ok(Some(Ok(Message::Text(text)))) => text,
                        Ok(Some(Ok(_))) => continue,
                        Ok(_) => break,
                    };
                    let event: Value = serde_json::from_str(&text).unwrap();
                    let Some(seq) = event["seq"].as_i64() else {
                        continue;
                    };
                    assert!(
                        seq > last,
                        "an event came twice or out of order: {seq} after {last}"
                    );
                    last = seq;
                    events.lock().unwrap().push(seq);
                    if event["type"] == "task_completed" {
                        let task = event["data"]["task_id"].as_str().unwrap().to_owned();
                        seen.lock().unwrap().push(task);
                        clients.progress.notify_waiters();
                    }
                }
            }
        }
        moves += 1;
        at += 1;
    }
    moves
}

/// What makes an agent mortal: the flag that dooms it, and where it records the task it dies
/// holding (with its own ID).
#[derive(Clone, Default)]
pub(crate) struct Doom {
    pub(crate) doomed: Arc<AtomicBool>,
    pub(crate) abandoned: Arc<Mutex<Vec<(String, String)>>>,
}

/// A simulated agent: long-polls its replica, starts and completes what it is given; when a
/// call gets no answer or `503`, it leaves the task in hand to its lease and moves on to the
/// next replica. A mortal one (given its `doom`) dies once doomed, as soon as it has started a
/// task, recording it as abandoned.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn work(
    clients: Clients,
    home: usize,
    id: String,
    key: String,
    completes: Arc<Mutex<HashMap<String, usize>>>,
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    doom: Option<Doom>,
) {
    let mut at = home;
    let poll = format!("/api/v1/agents/{id}/tasks?status_filter=assigned&wait_seconds=1");
    while !stop.load(Ordering::SeqCst) {
        let Ok((200, tasks)) = clients.call(at, "GET", &poll, &key, &[], None).await else {
            at += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        for task in tasks.as_array().unwrap() {
            let task_id = task["id"].as_str().unwrap();
            let attempt = json!({"attempt": task["attempt"]});
            let start = format!("/api/v1/tasks/{task_id}/start");
            if !matches!(
                clients
                    .call(at, "POST", &start, &key, &[], Some(&attempt))
                    .await,
                Ok((200, _))
            ) {
                break;
            }
            if let Some(doom) = &doom {
                if doom.doomed.load(Ordering::SeqCst) {
                    doom.abandoned
                        .lock()
                        .unwrap()
                        .push((id.clone(), task_id.to_owned()));
                    clients.progress.notify_waiters();
                    return;
                }
            }
            let body = json!({"attempt": task["attempt"], "result": {"by": id}});
            let complete = format!("/api/v1/tasks/{task_id}/complete");
            match clients
                .call(at, "POST", &complete, &key, &[], Some(&body))
                .await
            {
                Ok((200, _)) => {
                    *completes
                        .lock()
                        .unwrap()
                        .entry(task_id.to_owned())
                        .or_default() += 1;
                    done.fetch_add(1, Ordering::SeqCst);
                    clients.progress.notify_waiters();
                }
                Ok((409, _)) => {} // the attempt is over (its lease ran out): not ours any more
                _ => break,        // no answer, or 503: the outcome is unknown
            }
        }
    }
}
