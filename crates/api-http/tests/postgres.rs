//! The HTTP API on PostgreSQL: the same behaviour as on the embedded store, `503` while the
//! database is unreachable, and recovery without a restart once it is back.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use adapters_postgres::{PgStore, PoolSettings};
use common::*;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[actix_web::test]
async fn agents_work_end_to_end_on_postgres() {
    let store = Arc::new(adapters_postgres::testing::fresh_store().await);
    let h = Harness::on(store);
    let app = service!(h);
    let (id, key) = register(&app, seed_agent("pg-worker")).await;

    let listed = send(
        &app,
        admin(Method::GET, "/api/v1/agents?capability_filter=ml_inference"),
    )
    .await;
    assert_eq!(listed.ok().as_array().unwrap().len(), 1);
    let beat = send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{id}/heartbeat"),
            &key,
        )
        .set_json(json!({"status": "draining"})),
    )
    .await;
    assert_eq!(beat.ok()["agent"]["status"], "draining");
    let patched = send(
        &app,
        admin(Method::PATCH, &format!("/api/v1/agents/{id}"))
            .set_json(json!({"resources": {"cpu": "500m"}, "status": "idle"})),
    )
    .await;
    assert_eq!(patched.ok()["resources"], json!({"cpu": "500m"}));
    assert_eq!(patched.ok()["status"], "idle");

    let health = send(&app, req(Method::GET, "/api/v1/health")).await;
    assert_eq!(health.ok()["components"]["database"], "healthy");
    assert_eq!(health.ok()["metrics"]["active_agents"], 1);

    send(&app, admin(Method::DELETE, &format!("/api/v1/agents/{id}")))
        .await
        .ok();
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{id}/heartbeat"),
            &key,
        ),
    )
    .await
    .problem(401);
    let events = h.log.events_after(0, 100).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "agent_registered",
            "agent_status_changed", // heartbeat: draining
            "agent_updated",        // patch: resources
            "agent_status_changed", // patch: back to idle
            "agent_deregistered",
        ]
    );
}

/// A TCP proxy in front of PostgreSQL that can be cut and restored, to simulate an outage.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropping the socket refuses the connection
                }
                let target = target.clone();
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.notify_waiters();
        }
    }
}

#[actix_web::test]
async fn an_unreachable_database_gives_503_and_the_api_recovers_when_it_returns() {
    let url = adapters_postgres::testing::fresh_database().await;
    let (prefix, rest) = url.split_once("://").unwrap();
    let (credentials, host_and_db) = rest.split_once('@').unwrap();
    let (host, db) = host_and_db.split_once('/').unwrap();
    let proxy = Proxy::start(host.to_owned()).await;
    let proxied = format!("{prefix}://{credentials}@127.0.0.1:{}/{db}", proxy.port);
    let settings = PoolSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(1),
        ..PoolSettings::default()
    };
    let store = Arc::new(PgStore::connect(&proxied, &settings).await.unwrap());
    let h = Harness::on(store);
    let app = service!(h);
    let (id, _) = register(&app, seed_agent("survivor")).await;

    proxy.set_up(false);
    let reply = send(&app, admin(Method::GET, &format!("/api/v1/agents/{id}"))).await;
    let problem = reply.problem(503);
    assert!(
        !problem["detail"].as_str().unwrap().contains("127.0.0.1"),
        "no internals leak"
    );
    send(
        &app,
        admin(Method::POST, "/api/v1/agents").set_json(seed_agent("lost")),
    )
    .await
    .problem(503);
    let health = send(&app, req(Method::GET, "/api/v1/health")).await;
    assert_eq!(health.status.as_u16(), 503);
    assert_eq!(health.body["components"]["database"], "unhealthy");
    assert_eq!(health.body["status"], "degraded");
    send(&app, req(Method::GET, "/readyz")).await.problem(503);
    send(&app, req(Method::GET, "/livez")).await.ok();
    // Metrics still show what this replica counted, and that the store is away.
    let scraped =
        actix_web::test::call_service(&app, req(Method::GET, "/metrics").to_request()).await;
    assert_eq!(scraped.status().as_u16(), 200);
    let text = String::from_utf8(actix_web::test::read_body(scraped).await.to_vec()).unwrap();
    assert!(text.contains("\nagent_platform_store_up 0\n"), "{text}");
    assert!(text.contains("status=\"503\""), "{text}");
    assert!(
        !text.contains("\nagent_platform_active_agents_total "),
        "{text}"
    );

    proxy.set_up(true);
    let reply = send(&app, admin(Method::GET, &format!("/api/v1/agents/{id}"))).await;
    assert_eq!(reply.ok()["name"], "survivor");
    let all = send(&app, admin(Method::GET, "/api/v1/agents")).await;
    assert_eq!(
        all.ok().as_array().unwrap().len(),
        1,
        "the refused registration left nothing"
    );
    send(&app, req(Method::GET, "/readyz")).await.ok();
}

#[actix_web::test]
async fn concurrent_writes_to_one_agent_lose_nothing() {
    let store = Arc::new(adapters_postgres::testing::fresh_store().await);
    let h = Harness::on(store);
    let app = service!(h);
    let (id, key) = register(&app, seed_agent("busy-bee")).await;
    let principal = h
        .state
        .platform
        .authenticate_api_key(&key)
        .await
        .expect("the agent key authenticates");
    let writers = (0..12).map(|n| {
        let platform = h.state.platform.clone();
        let principal = principal.clone();
        let metadata =
            domain::Metadata::parse(testkit::builders::object(json!({ format!("k{n}"): n })))
                .unwrap();
        let id = domain::AgentId(id.parse().unwrap());
        tokio::spawn(async move {
            platform
                .agent_heartbeat(&principal, id, None, Some(metadata))
                .await
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer
            .await
            .unwrap()
            .expect("every write lands, retrying if it loses a race");
    }
    let agent = send(&app, admin(Method::GET, &format!("/api/v1/agents/{id}"))).await;
    let metadata = agent.ok()["metadata"].as_object().unwrap().clone();
    for n in 0..12 {
        assert_eq!(metadata[&format!("k{n}")], n, "write {n} was lost");
    }
}

#[actix_web::test]
async fn a_pool_stored_past_the_largest_quantity_is_still_read_and_scheduled() {
    let store = adapters_postgres::testing::fresh_store().await;
    // Written before quantities were bounded at 2^63 - 1 units.
    sqlx::query(
        "INSERT INTO resources (id, name, type, capacity, metadata, created_at, updated_at)
         VALUES ('6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f', 'legacy', 'storage',
                 '{\"bytes\": \"8Ei\", \"blocks\": 9223372036854775808}', '{}', now(), now())",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let h = Harness::on(Arc::new(store));
    let app = service!(h);
    let pools = send(&app, admin(Method::GET, "/api/v1/resources")).await;
    let pool = pools.ok()[0].clone();
    assert_eq!(pool["capacity"]["bytes"], "8Ei", "echoed as stored");
    assert_eq!(
        pool["available"]["bytes"],
        i64::MAX,
        "counted as the largest amount"
    );
    register(&app, seed_agent("worker")).await;
    send(
        &app,
        admin(Method::POST, "/api/v1/tasks").set_json(json!({
            "title": "t", "resource_claims": [{"resource_id": "legacy", "amount": {"bytes": "1Gi"}}]
        })),
    )
    .await
    .ok();
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
}

#[actix_web::test]
async fn rows_written_by_other_versions_read_back_and_this_one_writes_what_they_read() {
    let store = adapters_postgres::testing::fresh_store().await;
    let pool = store.pool().clone();
    let h = Harness::on(Arc::new(store));
    let app = service!(h);
    let task = send(
        &app,
        admin(Method::POST, "/api/v1/tasks")
            .set_json(json!({"title": "t", "required_capabilities": ["gpu"]})),
    )
    .await;
    let id = task.ok()["id"].as_str().unwrap().to_owned();
    h.state.platform.run_scheduler().await.unwrap();
    // The reason is stored as a value, and as the sentence earlier versions read.
    let (sentence, value): (Option<String>, Option<serde_json::Value>) =
        sqlx::query_as("SELECT pending_reason, wait_reason FROM tasks WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        sentence.as_deref(),
        Some("no online agent has capability gpu")
    );
    assert_eq!(
        value,
        Some(json!({"kind": "missing_capability", "capability": "gpu"}))
    );
    // A reason of a kind a later version knows, and a conflict with a later version's cause,
    // read back without failing the read.
    sqlx::query("UPDATE tasks SET wait_reason = '{\"kind\": \"from_a_later_version\"}'")
        .execute(&pool)
        .await
        .unwrap();
    let read = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(read.ok()["pending_reason"], serde_json::Value::Null);
    sqlx::query(
        "INSERT INTO conflicts (id, conflict_type, description, severity, metadata, status,
             source, involved_agents, involved_tasks, cause, reported_by, created_at, updated_at)
         VALUES ('6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f', 'other', 'later', 'low', '{}', 'open',
             'detected', '{}', '{}', 'quota_exceeded:42', 'platform', now(), now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let conflicts = send(&app, admin(Method::GET, "/api/v1/conflicts")).await;
    assert_eq!(conflicts.ok().as_array().unwrap().len(), 1);
}

/// Sets the flag when dropped: a loop that ends, even by a panic, stops the others with it.
struct StopAllOnExit(Arc<AtomicBool>);

impl Drop for StopAllOnExit {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A heartbeat flush, scheduling passes and agents' reports lock the same agents (and reports
/// their tasks too) in one order: run together over and over, none of them ever fails, as it
/// would if two waited on each other (PostgreSQL ends one of a deadlock with an error).
#[actix_web::test]
async fn heartbeat_flushes_passes_and_reports_on_the_same_agents_never_deadlock() {
    use ports::AgentRepository;
    let store = Arc::new(adapters_postgres::testing::fresh_store().await);
    let h = Harness::on(store.clone());
    let app = service!(h);
    let mut agents = Vec::new();
    for n in 0..6 {
        let mut body = seed_agent(&format!("worker-{n}"));
        body["max_concurrent_tasks"] = json!(3);
        let (id, _) = register(&app, body).await;
        agents.push(domain::AgentId(id.parse().unwrap()));
    }
    const TASKS: usize = 60;
    for n in 0..TASKS {
        let body = json!({"title": format!("job-{n}"), "required_capabilities": ["ml_inference"]});
        send(&app, admin(Method::POST, "/api/v1/tasks").set_json(body))
            .await
            .ok();
    }
    let platform = h.state.platform.clone();
    let done = Arc::new(AtomicBool::new(false));
    let passes = {
        let (platform, done) = (platform.clone(), done.clone());
        tokio::spawn(async move {
            let _stop = StopAllOnExit(done.clone());
            while !done.load(Ordering::SeqCst) {
                platform.run_scheduler().await.expect("a pass never fails");
                tokio::task::yield_now().await;
            }
        })
    };
    let flushes = {
        let (store, done, beats) = (store.clone(), done.clone(), agents.clone());
        tokio::spawn(async move {
            let _stop = StopAllOnExit(done.clone());
            while !done.load(Ordering::SeqCst) {
                let now = chrono::Utc::now();
                // Named in the reverse order: the store locks them in its own.
                let beats: Vec<_> = beats.iter().rev().map(|a| (*a, now)).collect();
                store
                    .record_heartbeats(&beats)
                    .await
                    .expect("a heartbeat flush never fails");
                tokio::task::yield_now().await;
            }
        })
    };
    // Completions of all agents; the one that completes the last task stops everyone.
    let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = agents
        .iter()
        .map(|&agent| {
            let (platform, done, total) = (platform.clone(), done.clone(), total.clone());
            tokio::spawn(async move {
                let _stop = StopAllOnExit(done.clone());
                let me = testkit::builders::agent_principal(agent);
                let mut completed = 0;
                while !done.load(Ordering::SeqCst) {
                    for task in platform.held_tasks(agent).await.unwrap() {
                        if task.status == domain::TaskStatus::Assigned {
                            platform
                                .start_task(&me, task.id, task.attempt)
                                .await
                                .expect("a start never fails");
                        }
                        platform
                            .complete_task(&me, task.id, task.attempt, Default::default())
                            .await
                            .expect("a completion never fails");
                        completed += 1;
                        if total.fetch_add(1, Ordering::SeqCst) + 1 == TASKS {
                            done.store(true, Ordering::SeqCst);
                        }
                    }
                    tokio::task::yield_now().await;
                }
                completed
            })
        })
        .collect();
    let mut completed = 0;
    for worker in workers {
        completed += worker.await.unwrap();
    }
    passes.await.unwrap();
    flushes.await.unwrap();
    assert_eq!(completed, TASKS, "every task was completed once");
    let counts = ports::TaskRepository::count_by_status(store.as_ref())
        .await
        .unwrap();
    assert_eq!(counts.completed as usize, TASKS);
}
