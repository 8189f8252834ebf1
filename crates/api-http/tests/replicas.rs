//! Several replicas on one PostgreSQL database: scheduling passes run concurrently on each, and
//! still no task is assigned twice and no agent takes more than it has room for. Also the
//! agent's long poll, which needs real time.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::Method;
use common::*;
use domain::EventKind;
use serde_json::json;

#[actix_web::test]
async fn two_schedulers_on_one_database_never_double_assign_or_over_commit() {
    let url = adapters_postgres::testing::fresh_database().await;
    let settings = adapters_postgres::PoolSettings::default();
    let one = Harness::on(Arc::new(
        adapters_postgres::PgStore::connect(&url, &settings)
            .await
            .unwrap(),
    ));
    let two = Harness::on(Arc::new(
        adapters_postgres::PgStore::connect(&url, &settings)
            .await
            .unwrap(),
    ));
    let app = service!(one);
    let mut agents = Vec::new();
    for n in 0..5 {
        let mut body = seed_agent(&format!("worker-{n}"));
        body["max_concurrent_tasks"] = json!(3);
        body["resources"] = json!({"cpu": 8, "memory": "16Gi"});
        agents.push(register(&app, body).await.0);
    }
    for n in 0..40 {
        let body =
            json!({"title": format!("job-{n}"), "priority": n % 10 + 1, "resources": {"cpu": 1}});
        send(&app, admin(Method::POST, "/api/v1/tasks").set_json(body))
            .await
            .ok();
    }

    // Both replicas schedule at once, repeatedly.
    let mut passes = Vec::new();
    for platform in [one.state.platform.clone(), two.state.platform.clone()] {
        passes.push(tokio::spawn(async move {
            let mut assigned = 0;
            for _ in 0..5 {
                assigned += platform.run_scheduler().await.expect("a pass never fails");
            }
            assigned
        }));
    }
    let mut total = 0;
    for pass in passes {
        total += pass.await.unwrap();
    }
    assert_eq!(total, 15, "exactly the fleet's 15 slots are filled");

    let events = one.log.events_after(0, 10_000).await.unwrap();
    let mut assignments: HashMap<String, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.kind == EventKind::TaskAssigned) {
        *assignments
            .entry(e.task_id.unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(assignments.len(), 15);
    assert!(
        assignments.values().all(|n| *n == 1),
        "no task assigned twice"
    );

    let tasks = send(&app, admin(Method::GET, "/api/v1/tasks?limit=1000")).await;
    let mut per_agent: HashMap<String, u64> = HashMap::new();
    for task in tasks.ok().as_array().unwrap() {
        if let Some(agent) = task["assigned_agent"].as_str() {
            assert_eq!(task["status"], "assigned");
            *per_agent.entry(agent.to_owned()).or_default() += 1;
        }
    }
    for agent in &agents {
        let body = send(&app, admin(Method::GET, &format!("/api/v1/agents/{agent}"))).await;
        let held = per_agent.get(agent).copied().unwrap_or(0);
        assert_eq!(
            body.ok()["current_tasks"],
            held,
            "the agent's count matches its tasks"
        );
        assert!(
            held <= 3,
            "agent {agent} holds {held} tasks with room for 3"
        );
    }
}

#[actix_web::test]
async fn two_replicas_never_over_allocate_a_pool() {
    let url = adapters_postgres::testing::fresh_database().await;
    let settings = adapters_postgres::PoolSettings::default();
    let one = Harness::on(Arc::new(
        adapters_postgres::PgStore::connect(&url, &settings)
            .await
            .unwrap(),
    ));
    let two = Harness::on(Arc::new(
        adapters_postgres::PgStore::connect(&url, &settings)
            .await
            .unwrap(),
    ));
    let app = service!(one);
    let pool = send(
        &app,
        admin(Method::POST, "/api/v1/resources")
            .set_json(json!({"name": "gpus", "type": "gpu", "capacity": {"gpus": 3}})),
    )
    .await;
    let pool = pool.ok()["id"].as_str().unwrap().to_owned();
    for n in 0..6 {
        let mut body = seed_agent(&format!("worker-{n}"));
        body["max_concurrent_tasks"] = json!(4);
        body["resources"] = json!({"cpu": 16, "memory": "16Gi"});
        register(&app, body).await;
    }
    const TASKS: usize = 30;
    for n in 0..TASKS {
        let body = json!({
            "title": format!("train-{n}"),
            "priority": n % 10 + 1,
            "resource_claims": [{"resource_id": "gpus", "amount": {"gpus": 1 + n % 2}}]
        });
        send(&app, admin(Method::POST, "/api/v1/tasks").set_json(body))
            .await
            .ok();
    }

    let operator = testkit::builders::principal(domain::Role::Operator);
    let mut completed = 0;
    for _ in 0..200 {
        // Both replicas schedule while holders of the pool finish on the second one.
        let held = one
            .state
            .platform
            .list_tasks(
                &operator,
                ports::TaskQuery {
                    status: Some(domain::TaskStatus::Assigned),
                    ..ports::TaskQuery::default()
                },
                domain::Limit::new(Some(1000)).unwrap(),
            )
            .await
            .unwrap()
            .items;
        let finisher = two.state.platform.clone();
        let finish = async move {
            let mut done = 0;
            for task in held {
                let agent = testkit::builders::agent_principal(task.assigned_agent.unwrap());
                finisher
                    .complete_task(&agent, task.id, task.attempt, serde_json::Map::new())
                    .await
                    .unwrap();
                done += 1;
            }
            done
        };
        let (a, b, done) = tokio::join!(
            one.state.platform.run_scheduler(),
            two.state.platform.run_scheduler(),
            finish
        );
        a.expect("a pass never fails");
        b.expect("a pass never fails");
        completed += done;

        let view = send(
            &app,
            admin(Method::GET, &format!("/api/v1/resources/{pool}")),
        )
        .await;
        let allocated = view.ok()["allocated"]["gpus"].as_i64().unwrap();
        assert!(
            (0..=3).contains(&allocated),
            "{allocated} of 3 gpus allocated"
        );
        let holders = send(
            &app,
            admin(
                Method::GET,
                &format!("/api/v1/resources/{pool}/allocations"),
            ),
        )
        .await;
        let sum: i64 = holders
            .ok()
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["amount"]["gpus"].as_i64().unwrap())
            .sum();
        assert_eq!(
            sum, allocated,
            "the pool's figure is the sum of its allocations"
        );
        if completed == TASKS {
            break;
        }
    }
    assert_eq!(completed, TASKS, "every task got the pool in the end");
}

#[actix_web::test]
async fn an_agent_long_polls_until_work_is_assigned_on_the_embedded_store() {
    let store = Arc::new(adapters_memory::MemoryStore::new());
    long_polls_until_work_is_assigned(store).await;
}

#[actix_web::test]
async fn an_agent_long_polls_until_work_is_assigned_on_postgres() {
    let store = Arc::new(adapters_postgres::testing::fresh_store().await);
    long_polls_until_work_is_assigned(store).await;
}

/// The assignment itself wakes the poll: it never looks again by itself in this test, so
/// without the wake-up it would answer empty when its wait ran out.
async fn long_polls_until_work_is_assigned<S: ports::Store + 'static>(store: Arc<S>) {
    let h = Harness::on_with(store, |s| {
        s.long_poll_recheck = std::time::Duration::from_secs(3600);
    });
    let app = service!(h);
    let (agent, key) = register(&app, seed_agent("poller")).await;

    let empty = send(
        &app,
        bearer(Method::GET, &format!("/api/v1/agents/{agent}/tasks"), &key),
    )
    .await;
    assert!(
        empty.ok().as_array().unwrap().is_empty(),
        "without wait_seconds it answers at once"
    );

    let (answered, answer) = tokio::sync::oneshot::channel::<()>();
    let poll = async {
        let reply = send(
            &app,
            bearer(
                Method::GET,
                &format!("/api/v1/agents/{agent}/tasks?status_filter=assigned&wait_seconds=20"),
                &key,
            ),
        )
        .await;
        let _ = answered.send(());
        reply
    };
    let work = async {
        // Only once the poll has read and is waiting is the work submitted.
        let listening = h.state.platform.until_long_polls_waiting(1);
        tokio::time::timeout(std::time::Duration::from_secs(5), listening)
            .await
            .expect("the poll waits");
        assert_eq!(h.state.platform.long_polls_waiting(), 1, "the poll waits");
        let task = send(
            &app,
            admin(Method::POST, "/api/v1/tasks")
                .set_json(json!({"title": "wake up", "priority": 5})),
        )
        .await;
        let task = task.ok()["id"].as_str().unwrap().to_owned();
        h.state.platform.run_scheduler().await.unwrap();
        // A poll that was not woken would only find the task when its wait ran out; by then
        // the task is no longer `assigned`, so it would answer empty.
        if tokio::time::timeout(std::time::Duration::from_secs(5), answer)
            .await
            .is_err()
        {
            send(
                &app,
                bearer(Method::POST, &format!("/api/v1/tasks/{task}/start"), &key)
                    .set_json(json!({"attempt": 1})),
            )
            .await
            .ok();
        }
    };
    let (reply, ()) = tokio::join!(poll, work);
    let tasks = reply.ok().as_array().unwrap().clone();
    assert_eq!(
        tasks.len(),
        1,
        "woken by the assignment, not by its wait running out"
    );
    assert_eq!(tasks[0]["title"], "wake up");

    send(
        &app,
        bearer(
            Method::GET,
            &format!("/api/v1/agents/{agent}/tasks?wait_seconds=31"),
            &key,
        ),
    )
    .await
    .problem(400);
}

#[actix_web::test]
async fn two_replicas_batching_submissions_and_reports_never_double_assign_or_over_commit() {
    const TASKS: usize = 80;
    const SLOTS: u64 = 3;
    let url = adapters_postgres::testing::fresh_database().await;
    let settings = adapters_postgres::PoolSettings::default();
    let connect = || adapters_postgres::PgStore::connect(&url, &settings);
    let one = Harness::replica(Arc::new(connect().await.unwrap()), 1);
    let two = Harness::replica(Arc::new(connect().await.unwrap()), 2);
    let (app_one, app_two) = (service!(one), service!(two));
    let mut agents = Vec::new();
    for n in 0..4 {
        let mut body = seed_agent(&format!("worker-{n}"));
        body["max_concurrent_tasks"] = json!(SLOTS);
        agents.push(register(&app_one, body).await);
    }

    // Each replica submits batches while both schedule and the agents report in batches,
    // alternating between the replicas.
    let submit = |app_index: usize| {
        let (app_one, app_two) = (&app_one, &app_two);
        async move {
            for batch in 0..2 {
                let tasks: Vec<_> = (0..TASKS / 4)
                    .map(|n| json!({"title": format!("r{app_index}-b{batch}-{n}"), "priority": 5}))
                    .collect();
                let request =
                    admin(Method::POST, "/api/v1/tasks/batch").set_json(json!({ "tasks": tasks }));
                let reply = if app_index == 0 {
                    send(app_one, request).await
                } else {
                    send(app_two, request).await
                };
                assert_eq!(reply.ok()["tasks"].as_array().unwrap().len(), TASKS / 4);
            }
        }
    };
    let schedule = |platform: app::Platform| async move {
        for _ in 0..200 {
            platform.run_scheduler().await.expect("a pass never fails");
            tokio::task::yield_now().await;
        }
    };
    let work = async {
        let mut completed = 0;
        for round in 0..2000 {
            if completed == TASKS {
                break;
            }
            let (id, key) = &agents[round % agents.len()];
            let app = if round % 2 == 0 { &app_one } else { &app_two };
            match complete_held(app, id, key).await {
                0 => tokio::task::yield_now().await,
                n => completed += n,
            }
        }
        completed
    };
    let (_, _, _, _, completed) = tokio::join!(
        submit(0),
        submit(1),
        schedule(one.state.platform.clone()),
        schedule(two.state.platform.clone()),
        work
    );
    // Whatever the passes left is placed and finished now.
    let mut completed = completed;
    while completed < TASKS {
        one.state.platform.run_scheduler().await.unwrap();
        for (id, key) in &agents {
            completed += complete_held(&app_one, id, key).await;
        }
    }
    assert_eq!(completed, TASKS);

    // The log, in commit order: each task assigned and completed once, and no agent ever
    // holding more than it has room for.
    one.state.platform.relay_events().await.unwrap();
    let events = one.log.events_after(0, 100_000).await.unwrap();
    let mut assigned: HashMap<String, usize> = HashMap::new();
    let mut finished: HashMap<String, usize> = HashMap::new();
    let mut holding: HashMap<String, u64> = HashMap::new();
    for e in &events {
        let (Some(task), Some(agent)) = (e.task_id, e.agent_id) else {
            continue;
        };
        match e.kind {
            EventKind::TaskAssigned => {
                *assigned.entry(task.to_string()).or_default() += 1;
                let held = holding.entry(agent.to_string()).or_default();
                *held += 1;
                assert!(
                    *held <= SLOTS,
                    "agent {agent} held {held} with room for {SLOTS}"
                );
            }
            EventKind::TaskCompleted => {
                *finished.entry(task.to_string()).or_default() += 1;
                *holding.entry(agent.to_string()).or_default() -= 1;
            }
            _ => {}
        }
    }
    assert_eq!(assigned.len(), TASKS);
    assert!(assigned.values().all(|n| *n == 1), "no task assigned twice");
    assert_eq!(finished.len(), TASKS);
    assert!(
        finished.values().all(|n| *n == 1),
        "no task completed twice"
    );
    for (id, _) in &agents {
        let agent = send(
            &app_one,
            admin(Method::GET, &format!("/api/v1/agents/{id}")),
        )
        .await;
        assert_eq!(agent.ok()["current_tasks"], 0, "every slot is free again");
    }
}

/// The agent reads the tasks it holds and completes them all in one call; returns how many.
async fn complete_held<S, B>(app: &S, id: &str, key: &str) -> usize
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let held = send(
        app,
        bearer(Method::GET, &format!("/api/v1/agents/{id}/tasks"), key),
    )
    .await;
    let reports: Vec<_> = held
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!({"task_id": t["id"], "action": "complete", "attempt": t["attempt"]}))
        .collect();
    if reports.is_empty() {
        return 0;
    }
    let answer = send(
        app,
        bearer(Method::POST, &format!("/api/v1/agents/{id}/reports"), key)
            .set_json(json!({ "reports": reports })),
    )
    .await;
    let results = answer.ok()["results"].as_array().unwrap().clone();
    for result in &results {
        assert_eq!(result["status"], 200, "{result}");
    }
    results.len()
}
