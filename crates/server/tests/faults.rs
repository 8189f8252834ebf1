//! Faults survived by real processes: three replicas of the binary on one PostgreSQL and one
//! Redis, clients and agents spread over them and failing over as they would behind a load
//! balancer, and one replica killed with SIGKILL while thousands of tasks flow.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const BINARY: &str = env!("CARGO_BIN_EXE_agent-platform");
const ADMIN_KEY: &str = "faults-test-admin-key-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_url() -> String {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let address = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    assert!(
        std::net::TcpStream::connect(&address).is_ok(),
        "Redis is not reachable at {url}: start it with \
         `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`"
    );
    url
}

/// One replica: the binary, on its own port.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Replica {
    fn start(database: &str, redis: &str) -> Replica {
        let port = free_port();
        let child = Command::new(BINARY)
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", database)
            .env("REDIS_URL", redis)
            .env("ADMIN_API_KEY", ADMIN_KEY)
            .env("RATE_LIMIT_PER_SECOND", "0")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Replica {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request over a connection of its own: the status and JSON body, or an error when the
/// replica did not answer (refused, reset, or no answer within 10 s).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no answer: {text:?}")))?;
        let json = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        Ok((status, json))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer within 10 s")))
}

/// The replicas clients may use, and which of them are gone.
#[derive(Clone)]
struct Pool {
    addrs: Vec<SocketAddr>,
}

impl Pool {
    /// `call` on replica `at`, moving on to the next one while a replica does not answer or
    /// answers `503` (what a load balancer gives a client that retries): the status and body,
    /// and the replica that answered.
    async fn call(
        &self,
        at: usize,
        method: &str,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (usize, u16, Value) {
        for turn in 0..60 {
            let i = (at + turn) % self.addrs.len();
            match call(self.addrs[i], method, path, key, headers, body).await {
                Ok((503, _)) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok((status, body)) => return (i, status, body),
            }
        }
        panic!("no replica answered {method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_flow_loses_no_task_and_runs_none_twice() {
    const TASKS: usize = 1500;
    const AGENTS: usize = 6;
    let database = adapters_postgres::testing::fresh_database().await;
    let redis = redis_url();
    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&database, &redis)).collect();
    let pool = Pool {
        addrs: replicas.iter().map(|r| r.addr).collect(),
    };
    for addr in &pool.addrs {
        let started = Instant::now();
        while call(*addr, "GET", "/readyz", ADMIN_KEY, &[], None)
            .await
            .map(|(s, _)| s)
            .unwrap_or(0)
            != 200
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "a replica did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Agents, spread over the replicas.
    let mut agents = Vec::new();
    for n in 0..AGENTS {
        let body = json!({"name": format!("worker-{n}"), "capabilities": ["etl"], "max_concurrent_tasks": 2});
        let (_, status, agent) = pool
            .call(n % 3, "POST", "/api/v1/agents", ADMIN_KEY, &[], Some(&body))
            .await;
        assert_eq!(status, 200);
        agents.push((
            n % 3,
            agent["id"].as_str().unwrap().to_owned(),
            agent["agent_key"].as_str().unwrap().to_owned(),
        ));
    }

    // A subscriber to every task event, on the replica that will be killed.
    let completed_seen: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let subscriber = {
        let (pool, seen, stop) = (pool.clone(), completed_seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut at = 0;
            let mut last = 0i64;
            let mut reconnections = 0;
            while !stop.load(Ordering::SeqCst) {
                let url = format!(
                    "ws://{}/api/v1/ws/watcher?token={ADMIN_KEY}",
                    pool.addrs[at]
                );
                let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await else {
                    at = (at + 1) % pool.addrs.len();
                    continue;
                };
                let subscribe =
                    json!({"type": "subscribe", "subscriptions": ["task_activity"], "since": last});
                if socket
                    .send(Message::Text(subscribe.to_string().into()))
                    .await
                    .is_err()
                {
                    continue;
                }
                loop {
                    let next =
                        tokio::time::timeout(Duration::from_millis(500), socket.next()).await;
                    let message = match next {
                        Err(_) if stop.load(Ordering::SeqCst) => return reconnections,
                        Err(_) => continue,
                        Ok(Some(Ok(Message::Text(text)))) => text,
                        Ok(Some(Ok(_))) => continue,
                        Ok(_) => break, // the replica is gone: reconnect elsewhere
                    };
                    let event: Value = serde_json::from_str(&message).unwrap();
                    let Some(seq) = event["seq"].as_i64() else {
                        continue;
                    };
                    assert!(
                        seq > last,
                        "an event came twice or out of order: {seq} after {last}"
                    );
                    last = seq;
                    if event["type"] == "task_completed" {
                        let task = event["data"]["task_id"].as_str().unwrap().to_owned();
                        seen.lock().unwrap().push((seq, task));
                    }
                }
                reconnections += 1;
                at = (at + 1) % pool.addrs.len();
            }
            reconnections
        })
    };

    // Agents: long-poll, start and complete on their replica; when it stops answering, they
    // move to another and leave the task in hand to its lease.
    let completes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (home, id, key) in agents.clone() {
        let (pool, completes, done, stop) =
            (pool.clone(), completes.clone(), done.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut at = home;
            while !stop.load(Ordering::SeqCst) {
                let poll =
                    format!("/api/v1/agents/{id}/tasks?status_filter=assigned&wait_seconds=1");
                let Ok((200, tasks)) = call(pool.addrs[at], "GET", &poll, &key, &[], None).await
                else {
                    at = (at + 1) % pool.addrs.len();
                    continue;
                };
                for task in tasks.as_array().unwrap() {
                    let task_id = task["id"].as_str().unwrap();
                    let attempt = json!({"attempt": task["attempt"]});
                    let start = format!("/api/v1/tasks/{task_id}/start");
                    if call(pool.addrs[at], "POST", &start, &key, &[], Some(&attempt))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    let body = json!({"attempt": task["attempt"], "result": {"by": id}});
                    let complete = format!("/api/v1/tasks/{task_id}/complete");
                    match call(pool.addrs[at], "POST", &complete, &key, &[], Some(&body)).await {
                        Ok((200, _)) => {
                            *completes
                                .lock()
                                .unwrap()
                                .entry(task_id.to_owned())
                                .or_default() += 1;
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => break, // the replica died mid-call: the outcome is unknown
                    }
                }
            }
        }));
    }

    // Submitters, spread over the replicas, each submission under an Idempotency-Key so a
    // retry elsewhere after an unanswered one creates nothing twice.
    let submitted: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut submitters = Vec::new();
    for s in 0..8 {
        let (pool, submitted) = (pool.clone(), submitted.clone());
        submitters.push(tokio::spawn(async move {
            for n in (s..TASKS).step_by(8) {
                let body = json!({
                    "title": format!("job {n}"), "required_capabilities": ["etl"],
                    "lease_seconds": 5, "max_attempts": 10
                });
                let key = format!("job-{n}");
                let (_, status, task) = pool
                    .call(
                        n % 3,
                        "POST",
                        "/api/v1/tasks",
                        ADMIN_KEY,
                        &[("Idempotency-Key", &key)],
                        Some(&body),
                    )
                    .await;
                assert_eq!(status, 200, "{task}");
                submitted
                    .lock()
                    .unwrap()
                    .push(task["id"].as_str().unwrap().to_owned());
            }
        }));
    }

    // A third of the way through, the first replica dies without a word.
    let started = Instant::now();
    while done.load(Ordering::SeqCst) < TASKS / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the flow did not get going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    replicas[0].child.kill().unwrap();
    replicas[0].child.wait().unwrap();
    for submitter in submitters {
        submitter.await.unwrap();
    }

    // Every acknowledged task completes, the ones the dead replica's agents held once their
    // leases ran out.
    let live = Pool {
        addrs: pool.addrs[1..].to_vec(),
    };
    let started = Instant::now();
    loop {
        let (_, _, summary) = live
            .call(0, "GET", "/api/v1/dashboard/summary", ADMIN_KEY, &[], None)
            .await;
        if summary["tasks"]["completed"] == TASKS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not every task completed: {}",
            summary["tasks"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }

    let submitted = submitted.lock().unwrap().clone();
    let mut unique = submitted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        TASKS,
        "each acknowledged submission is its own task, none twice"
    );
    let completes = completes.lock().unwrap().clone();
    assert!(
        completes.values().all(|&n| n == 1),
        "a completion was accepted twice for one task"
    );
    // Each task's history: assigned attempt by attempt, never twice the same, completed once.
    let mut requeued = 0;
    for id in &unique {
        let (_, status, history) = live
            .call(
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
        let of = |kind: &str| {
            events
                .iter()
                .filter(|e| e["type"] == kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(of("task_completed").len(), 1, "task {id}: {history}");
        let attempts: Vec<i64> = of("task_assigned")
            .iter()
            .map(|e| e["data"]["attempt"].as_i64().unwrap())
            .collect();
        let mut distinct = attempts.clone();
        distinct.dedup();
        assert_eq!(
            attempts, distinct,
            "task {id} was assigned twice in one attempt"
        );
        requeued += usize::from(attempts.len() > 1);
    }
    // The WebSocket subscriber, moved to a live replica with `since`, saw every completion once.
    let reconnections = subscriber.await.unwrap();
    assert!(reconnections >= 1, "the subscriber's replica died under it");
    let seen = completed_seen.lock().unwrap().clone();
    let by_task: BTreeMap<&String, usize> = seen.iter().fold(BTreeMap::new(), |mut m, (_, t)| {
        *m.entry(t).or_default() += 1;
        m
    });
    assert_eq!(by_task.len(), TASKS, "the subscriber missed a completion");
    assert!(
        by_task.values().all(|&n| n == 1),
        "the subscriber saw a completion twice"
    );
    eprintln!(
        "{TASKS} tasks, {} completions acknowledged, {requeued} tasks ran more than one attempt, \
         {reconnections} reconnection(s) of the subscriber",
        completes.len()
    );
}
