//! Tasks through the HTTP API, each scenario on the embedded store and on PostgreSQL:
//! submission, scheduling, the agent work protocol, leases, retries, deadlines, cancellation.
//! Time moves only through the manual clock; the scheduler and sweeps are run by hand.

mod common;

use actix_web::http::Method;
use chrono::Duration;
use common::*;
use serde_json::{json, Value};

on_both_stores!(
    a_task_is_scheduled_run_and_completed_with_its_history,
    an_unplaceable_task_says_what_is_missing_and_waits_for_an_agent,
    a_task_whose_agent_dies_completes_on_another_and_the_late_agent_is_refused,
    an_unstarted_task_goes_back_to_the_queue_when_its_lease_runs_out,
    a_failed_task_is_retried_by_an_operator,
    a_pending_task_past_its_deadline_expires,
    cancelling_a_running_task_reaches_the_agent_through_its_heartbeat,
    higher_priority_runs_first_when_capacity_is_short,
    bad_submissions_are_422_and_change_nothing,
    agents_act_only_on_their_own_tasks,
    an_idempotency_key_returns_the_original_task,
    a_batch_is_stored_whole_in_order_and_replayed_under_its_key,
    a_batch_with_bad_items_stores_nothing_and_names_each_by_index,
    an_agent_reports_on_several_tasks_in_one_call,
    bad_reports_change_nothing_and_only_the_holder_reports,
    deregistering_an_agent_puts_its_work_back_in_the_queue,
    a_draining_agent_finishes_its_work_and_gets_no_more,
    a_silent_running_task_loses_its_lease_and_fails_when_attempts_run_out,
);

fn submission(title: &str, priority: i64, capabilities: &[&str]) -> Value {
    json!({
        "title": title,
        "description": "Analyze customer behavior patterns",
        "priority": priority,
        "required_capabilities": capabilities,
        "resources": {"cpu": 1, "memory": "512Mi"},
        "metadata": {"customer_id": "12345"}
    })
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().unwrap().to_owned()
}

async fn a_task_is_scheduled_run_and_completed_with_its_history(h: Harness) {
    let app = service!(h);
    let (agent, key) = register(&app, seed_agent("worker")).await;
    let task = send(
        &app,
        admin(Method::POST, "/api/v1/tasks").set_json(submission(
            "Process Customer Data",
            8,
            &["data_processing"],
        )),
    )
    .await;
    let task = task.ok().clone();
    assert_eq!(task["status"], "pending");
    assert_eq!(task["attempt"], 1);
    assert_eq!(task["max_attempts"], 3);
    assert_eq!(task["lease_seconds"], 60);
    let id = id_of(&task);

    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    let mine = send(
        &app,
        bearer(
            Method::GET,
            &format!("/api/v1/agents/{agent}/tasks?status_filter=assigned"),
            &key,
        ),
    )
    .await;
    let mine = mine.ok().as_array().unwrap().clone();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["id"], id.as_str());
    assert_eq!(mine[0]["assigned_agent"], agent.as_str());
    let busy = send(&app, admin(Method::GET, &format!("/api/v1/agents/{agent}"))).await;
    assert_eq!(busy.ok()["status"], "busy", "one slot of one is taken");
    assert_eq!(busy.ok()["current_tasks"], 1);

    let started = send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/start"), &key)
            .set_json(json!({"attempt": 1})),
    )
    .await;
    assert_eq!(started.ok()["status"], "running");
    h.clock.advance(Duration::seconds(30));
    let beat = send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/heartbeat"), &key)
            .set_json(json!({"attempt": 1, "progress": 0.5, "message": "halfway"})),
    )
    .await;
    let beat = beat.ok();
    assert_eq!(beat["cancel_requested"], false);
    assert_eq!(beat["task"]["progress"], 0.5);
    let done = send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/complete"), &key)
            .set_json(json!({"attempt": 1, "result": {"rows": 1200}})),
    )
    .await;
    let done = done.ok();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"], json!({"rows": 1200}));
    assert!(done["completed_at"].is_string());

    let agent_now = send(&app, admin(Method::GET, &format!("/api/v1/agents/{agent}"))).await;
    assert_eq!(agent_now.ok()["status"], "idle");
    assert_eq!(agent_now.ok()["current_tasks"], 0);

    let history = history(&app, &id).await;
    assert_eq!(
        kinds(&history),
        [
            "task_submitted",
            "task_assigned",
            "task_started",
            "task_progress",
            "task_completed"
        ]
    );
    let progress = &history[3];
    assert_eq!(progress["data"]["message"], "halfway");
    assert_eq!(progress["channel"], "task_activity");
}

async fn an_unplaceable_task_says_what_is_missing_and_waits_for_an_agent(h: Harness) {
    let app = service!(h);
    let task = send(
        &app,
        admin(Method::POST, "/api/v1/tasks").set_json(submission("render", 5, &["gpu_inference"])),
    )
    .await;
    let id = id_of(task.ok());
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 0);
    let waiting = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(waiting.ok()["status"], "pending");
    assert_eq!(
        waiting.ok()["pending_reason"],
        "no online agent has capability gpu_inference"
    );
    let mut gpu = seed_agent("gpu-box");
    gpu["capabilities"] = json!(["gpu_inference"]);
    gpu["resources"] = json!({"cpu": "500m", "memory": "8Gi"});
    register(&app, gpu).await;
    h.state.platform.run_scheduler().await.unwrap();
    let still = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(
        still.ok()["pending_reason"],
        "1 agent match, none has enough free cpu (needs 1, at most 0.5 free)"
    );
    let listed = send(
        &app,
        admin(
            Method::GET,
            "/api/v1/tasks?status_filter=pending&priority_filter=5",
        ),
    )
    .await;
    assert_eq!(listed.ok().as_array().unwrap().len(), 1);
}

async fn a_task_whose_agent_dies_completes_on_another_and_the_late_agent_is_refused(h: Harness) {
    let app = service!(h);
    let (a, key_a) = register(&app, seed_agent("a")).await;
    let task = send(
        &app,
        admin(Method::POST, "/api/v1/tasks").set_json(submission("etl", 5, &["data_processing"])),
    )
    .await;
    let id = id_of(task.ok());
    h.state.platform.run_scheduler().await.unwrap();
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/start"), &key_a)
            .set_json(json!({"attempt": 1})),
    )
    .await
    .ok();

    let (b, key_b) = register(&app, seed_agent("b")).await;
    h.clock.advance(Duration::seconds(60));
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{b}/heartbeat"),
            &key_b,
        ),
    )
    .await
    .ok();
    h.clock.advance(Duration::seconds(31)); // A silent for 91 s; B for 31 s
    assert_eq!(h.state.platform.detect_offline_agents().await.unwrap(), 1);
    let requeued = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(requeued.ok()["status"], "pending");
    assert_eq!(requeued.ok()["attempt"], 2);
    assert_eq!(requeued.ok()["error"], "agent went offline");

    assert_eq!(
        h.state.platform.run_scheduler().await.unwrap(),
        0,
        "the retry backs off first"
    );
    h.clock.advance(Duration::seconds(2));
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    let moved = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(moved.ok()["assigned_agent"], b.as_str());

    // A comes back and reports its old attempt: refused, nothing changes.
    let late = send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/tasks/{id}/complete"),
            &key_a,
        )
        .set_json(json!({"attempt": 1, "result": {"stale": true}})),
    )
    .await;
    late.problem(409);
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/tasks/{id}/complete"),
            &key_b,
        )
        .set_json(json!({"attempt": 2, "result": {"ok": true}})),
    )
    .await
    .ok();
    let done = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(done.ok()["status"], "completed");
    assert_eq!(done.ok()["result"], json!({"ok": true}));
    let a_now = send(&app, admin(Method::GET, &format!("/api/v1/agents/{a}"))).await;
    assert_eq!(
        a_now.ok()["current_tasks"],
        0,
        "the offline agent's slot was released"
    );
    assert!(
        a_now.ok()["reliability"].as_f64().unwrap() < 1.0,
        "losing a task costs reliability"
    );
}

async fn an_unstarted_task_goes_back_to_the_queue_when_its_lease_runs_out(h: Harness) {
    let app = service!(h);
    let (agent, key) = register(&app, seed_agent("slow")).await;
    let mut body = submission("quick", 5, &[]);
    body["lease_seconds"] = json!(30);
    let id = id_of(
        send(&app, admin(Method::POST, "/api/v1/tasks").set_json(body))
            .await
            .ok(),
    );
    h.state.platform.run_scheduler().await.unwrap();
    h.clock.advance(Duration::seconds(29));
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{agent}/heartbeat"),
            &key,
        ),
    )
    .await
    .ok();
    assert_eq!(h.state.platform.expire_leases().await.unwrap(), 0);
    h.clock.advance(Duration::seconds(1));
    assert_eq!(h.state.platform.expire_leases().await.unwrap(), 1);
    assert_eq!(h.state.platform.metrics().lease_expiries.get(), 1);
    let task = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(task.ok()["status"], "pending");
    assert_eq!(task.ok()["attempt"], 2);
    assert_eq!(task.ok()["error"], "lease expired");
    let late_start = send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/start"), &key)
            .set_json(json!({"attempt": 1})),
    )
    .await;
    late_start.problem(409);
}

async fn a_failed_task_is_retried_by_an_operator(h: Harness) {
    let app = service!(h);
    let (_, key) = register(&app, seed_agent("worker")).await;
    let id = id_of(
        send(
            &app,
            admin(Method::POST, "/api/v1/tasks").set_json(submission("x", 5, &[])),
        )
        .await
        .ok(),
    );
    h.state.platform.run_scheduler().await.unwrap();
    let retrying = send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/fail"), &key)
            .set_json(json!({"attempt": 1, "error": "upstream timeout"})),
    )
    .await;
    assert_eq!(retrying.ok()["status"], "pending", "retryable by default");
    assert_eq!(retrying.ok()["attempt"], 2);
    h.clock.advance(Duration::seconds(2));
    h.state.platform.run_scheduler().await.unwrap();
    let failed = send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/fail"), &key)
            .set_json(json!({"attempt": 2, "error": "bad input", "retryable": false})),
    )
    .await;
    assert_eq!(failed.ok()["status"], "failed");
    assert_eq!(failed.ok()["error"], "bad input");

    let viewer = jwt(json!({"sub": "v", "role": "viewer"}));
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/retry"), &viewer),
    )
    .await
    .problem(403);
    let retried = send(
        &app,
        admin(Method::POST, &format!("/api/v1/tasks/{id}/retry")),
    )
    .await;
    assert_eq!(retried.ok()["status"], "pending");
    assert_eq!(retried.ok()["attempt"], 3, "attempt numbers never repeat");
    assert_eq!(retried.ok()["error"], Value::Null);
    send(
        &app,
        admin(Method::POST, &format!("/api/v1/tasks/{id}/retry")),
    )
    .await
    .problem(409);
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    // The agent, holding the task again, cannot be confused with its earlier attempt.
    let stale = send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/complete"), &key)
            .set_json(json!({"attempt": 2})),
    )
    .await;
    stale.problem(409);
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/start"), &key)
            .set_json(json!({"attempt": 3})),
    )
    .await
    .ok();
}

async fn a_pending_task_past_its_deadline_expires(h: Harness) {
    let app = service!(h);
    let mut body = submission("urgent", 9, &["nobody_has_this"]);
    body["deadline"] = json!((h.clock_now() + Duration::seconds(60)).to_rfc3339());
    let id = id_of(
        send(&app, admin(Method::POST, "/api/v1/tasks").set_json(body))
            .await
            .ok(),
    );
    h.clock.advance(Duration::seconds(59));
    assert_eq!(h.state.platform.expire_deadlines().await.unwrap(), 0);
    h.clock.advance(Duration::seconds(1));
    assert_eq!(h.state.platform.expire_deadlines().await.unwrap(), 1);
    let task = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(task.ok()["status"], "expired");
    send(
        &app,
        admin(Method::POST, &format!("/api/v1/tasks/{id}/retry")),
    )
    .await
    .problem(409);
}

async fn cancelling_a_running_task_reaches_the_agent_through_its_heartbeat(h: Harness) {
    let app = service!(h);
    let (agent, key) = register(&app, seed_agent("worker")).await;
    let id = id_of(
        send(
            &app,
            admin(Method::POST, "/api/v1/tasks").set_json(submission("long", 5, &[])),
        )
        .await
        .ok(),
    );
    h.state.platform.run_scheduler().await.unwrap();
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/start"), &key)
            .set_json(json!({"attempt": 1})),
    )
    .await
    .ok();
    let cancelled = send(
        &app,
        admin(Method::POST, &format!("/api/v1/tasks/{id}/cancel")),
    )
    .await;
    assert_eq!(
        cancelled.ok()["status"],
        "running",
        "the agent still holds it"
    );
    assert_eq!(cancelled.ok()["cancel_requested"], true);
    let beat = send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/heartbeat"), &key)
            .set_json(json!({"attempt": 1})),
    )
    .await;
    assert_eq!(beat.ok()["cancel_requested"], true);
    let stopped = send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/fail"), &key)
            .set_json(json!({"attempt": 1, "error": "cancelled by request"})),
    )
    .await;
    assert_eq!(stopped.ok()["status"], "cancelled");
    let agent_now = send(&app, admin(Method::GET, &format!("/api/v1/agents/{agent}"))).await;
    assert_eq!(agent_now.ok()["current_tasks"], 0);

    let pending = id_of(
        send(
            &app,
            admin(Method::POST, "/api/v1/tasks").set_json(submission("never", 5, &["x"])),
        )
        .await
        .ok(),
    );
    let gone = send(
        &app,
        admin(Method::POST, &format!("/api/v1/tasks/{pending}/cancel")),
    )
    .await;
    assert_eq!(gone.ok()["status"], "cancelled");
    send(
        &app,
        admin(Method::POST, &format!("/api/v1/tasks/{pending}/cancel")),
    )
    .await
    .problem(409);
}

async fn higher_priority_runs_first_when_capacity_is_short(h: Harness) {
    let app = service!(h);
    let low = id_of(
        send(
            &app,
            admin(Method::POST, "/api/v1/tasks").set_json(submission("low", 2, &[])),
        )
        .await
        .ok(),
    );
    h.clock.advance(Duration::seconds(1));
    let high = id_of(
        send(
            &app,
            admin(Method::POST, "/api/v1/tasks").set_json(submission("high", 9, &[])),
        )
        .await
        .ok(),
    );
    register(&app, seed_agent("only-one-slot")).await;
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    let high_now = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{high}"))).await;
    assert_eq!(high_now.ok()["status"], "assigned");
    let low_now = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{low}"))).await;
    assert_eq!(low_now.ok()["status"], "pending");
    assert_eq!(
        low_now.ok()["pending_reason"],
        "1 agent match, all at capacity"
    );
}

async fn bad_submissions_are_422_and_change_nothing(h: Harness) {
    let app = service!(h);
    let past = (h.clock_now() - Duration::seconds(1)).to_rfc3339();
    let cases = [
        (json!({"title": "t", "priority": 11}), "priority"),
        (json!({"title": "t", "priority": 0}), "priority"),
        (json!({"title": "t", "deadline": past}), "deadline"),
        (json!({"title": "t", "deadline": "tomorrow"}), "deadline"),
        (json!({"title": "t", "status": "completed"}), "status"),
        (
            json!({"title": "t", "resources": {"memory": "12 GB"}}),
            "resources.memory",
        ),
        (
            json!({"title": "t", "metadata": {"blob": "x".repeat(70 * 1024)}}),
            "metadata",
        ),
        (json!({"title": "t", "max_attempts": 0}), "max_attempts"),
        (json!({"title": "t", "lease_seconds": 1}), "lease_seconds"),
        (
            json!({"title": "t", "resource_claims": [{"resource_id": "gpu", "amount": {"gpus": "x"}}]}),
            "resource_claims[0].amount.gpus",
        ),
        (json!({"description": "no title"}), "title"),
    ];
    for (body, field) in cases {
        let reply = send(&app, admin(Method::POST, "/api/v1/tasks").set_json(&body)).await;
        let problem = reply.problem(422);
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{body} -> {problem}");
    }
    let listed = send(&app, admin(Method::GET, "/api/v1/tasks")).await;
    assert!(listed.ok().as_array().unwrap().is_empty());
    send(&app, admin(Method::GET, "/api/v1/tasks?priority_filter=11"))
        .await
        .problem(400);
    send(&app, admin(Method::GET, "/api/v1/tasks?status_filter=done"))
        .await
        .problem(400);
    send(&app, admin(Method::GET, "/api/v1/tasks/not-a-uuid"))
        .await
        .problem(400);
}

async fn agents_act_only_on_their_own_tasks(h: Harness) {
    let app = service!(h);
    let (_, key_a) = register(&app, seed_agent("a")).await;
    let (b, key_b) = register(&app, seed_agent("b")).await;
    let id = id_of(
        send(
            &app,
            admin(Method::POST, "/api/v1/tasks").set_json(submission("x", 5, &[])),
        )
        .await
        .ok(),
    );
    h.state.platform.run_scheduler().await.unwrap();
    let task = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    let holder = task.ok()["assigned_agent"].as_str().unwrap().to_owned();
    let (owner, other) = if holder == b {
        (&key_b, &key_a)
    } else {
        (&key_a, &key_b)
    };

    for action in ["start", "heartbeat", "complete", "fail"] {
        let body = json!({"attempt": 1, "error": "x"});
        let body = if action == "fail" {
            body
        } else {
            json!({"attempt": 1})
        };
        let reply = send(
            &app,
            bearer(Method::POST, &format!("/api/v1/tasks/{id}/{action}"), other).set_json(body),
        )
        .await;
        reply.problem(409);
    }
    send(
        &app,
        bearer(Method::GET, &format!("/api/v1/tasks/{id}"), other),
    )
    .await
    .problem(404);
    send(
        &app,
        bearer(
            Method::GET,
            &format!("/api/v1/agents/{holder}/tasks"),
            other,
        ),
    )
    .await
    .problem(404);
    send(
        &app,
        bearer(Method::GET, &format!("/api/v1/tasks/{id}"), owner),
    )
    .await
    .ok();
    send(&app, bearer(Method::GET, "/api/v1/tasks", owner))
        .await
        .problem(403);
    send(
        &app,
        bearer(Method::POST, "/api/v1/tasks", owner).set_json(submission("y", 5, &[])),
    )
    .await
    .problem(403);
    let operator = jwt(json!({"sub": "op"}));
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/tasks/{id}/start"),
            &operator,
        )
        .set_json(json!({"attempt": 1})),
    )
    .await
    .problem(403);
    let unchanged = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(unchanged.ok()["status"], "assigned");
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/start"), owner)
            .set_json(json!({"attempt": 2})),
    )
    .await
    .problem(409);
}

async fn an_idempotency_key_returns_the_original_task(h: Harness) {
    let app = service!(h);
    let body = submission("once", 5, &[]);
    let post = |key: &'static str, body: &Value| {
        admin(Method::POST, "/api/v1/tasks")
            .insert_header(("Idempotency-Key", key))
            .set_json(body)
    };
    let first = send(&app, post("order-42", &body)).await;
    let id = id_of(first.ok());
    let again = send(&app, post("order-42", &body)).await;
    assert_eq!(
        id_of(again.ok()),
        id,
        "the same key and body give the same task"
    );

    let mut different = body.clone();
    different["priority"] = json!(9);
    let reply = send(&app, post("order-42", &different)).await;
    assert_eq!(reply.problem(422)["errors"][0]["field"], "Idempotency-Key");

    // Another caller may use the same key for its own request.
    let other = jwt(json!({"sub": "another-client"}));
    let theirs = send(
        &app,
        bearer(Method::POST, "/api/v1/tasks", &other)
            .insert_header(("Idempotency-Key", "order-42"))
            .set_json(&body),
    )
    .await;
    assert_ne!(id_of(theirs.ok()), id);

    // After 24 hours the key is free again.
    h.clock.advance(Duration::hours(24) + Duration::seconds(1));
    let later = send(&app, post("order-42", &body)).await;
    assert_ne!(id_of(later.ok()), id);

    let listed = send(&app, admin(Method::GET, "/api/v1/tasks")).await;
    assert_eq!(
        listed.ok().as_array().unwrap().len(),
        3,
        "replays created nothing"
    );
    send(&app, post("", &body)).await.problem(400);

    // A replay answers as the original did, even once the body would no longer be accepted.
    let mut with_deadline = body.clone();
    with_deadline["deadline"] = json!((h.clock_now() + Duration::seconds(30)).to_rfc3339());
    let original = send(&app, post("order-43", &with_deadline)).await;
    let original = id_of(original.ok());
    h.clock.advance(Duration::seconds(60));
    let replay = send(&app, post("order-43", &with_deadline)).await;
    assert_eq!(id_of(replay.ok()), original);
}

async fn a_batch_is_stored_whole_in_order_and_replayed_under_its_key(h: Harness) {
    let app = service!(h);
    let (_agent, _key) = register(&app, seed_agent("worker")).await;
    let batch = json!({"tasks": [
        submission("ingest", 2, &[]),
        submission("transform", 9, &["data_processing"]),
        submission("export", 5, &[]),
    ]});
    let post = |key: &'static str, body: &Value| {
        admin(Method::POST, "/api/v1/tasks/batch")
            .insert_header(("Idempotency-Key", key))
            .set_json(body)
    };
    let stored = send(&app, post("nightly-7", &batch)).await;
    let stored = stored.ok()["tasks"].as_array().unwrap().clone();
    let titles: Vec<&str> = stored
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        ["ingest", "transform", "export"],
        "in the order given"
    );
    assert!(stored.iter().all(|t| t["status"] == "pending"));
    let ids: Vec<String> = stored.iter().map(id_of).collect();

    let again = send(&app, post("nightly-7", &batch)).await;
    let again: Vec<String> = again.ok()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(
        again, ids,
        "the same key and body give the same tasks, in order"
    );
    let mut changed = batch.clone();
    changed["tasks"][2]["priority"] = json!(6);
    let refused = send(&app, post("nightly-7", &changed)).await;
    assert_eq!(
        refused.problem(422)["errors"][0]["field"],
        "Idempotency-Key"
    );

    let listed = send(&app, admin(Method::GET, "/api/v1/tasks")).await;
    assert_eq!(
        listed.ok().as_array().unwrap().len(),
        3,
        "replays created nothing"
    );
    // Batched tasks are scheduled like any others: the one agent takes the most urgent.
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    let placed = send(
        &app,
        admin(Method::GET, &format!("/api/v1/tasks/{}", ids[1])),
    )
    .await;
    assert_eq!(placed.ok()["status"], "assigned");
}

async fn a_batch_with_bad_items_stores_nothing_and_names_each_by_index(h: Harness) {
    let app = service!(h);
    let post = |body: Value| admin(Method::POST, "/api/v1/tasks/batch").set_json(body);
    let mut no_title = submission("x", 1, &[]);
    no_title.as_object_mut().unwrap().remove("title");
    let reply = send(
        &app,
        post(json!({"tasks": [submission("fine", 1, &[]), no_title]})),
    )
    .await;
    assert_eq!(reply.problem(422)["errors"][0]["field"], "tasks[1].title");

    let reply = send(
        &app,
        post(json!({"tasks": [
            submission("fine", 1, &[]),
            submission("too urgent", 11, &[]),
            submission("fine too", 3, &[]),
            unknown_pool_claim(),
        ]})),
    )
    .await;
    let fields: Vec<&str> = reply.problem(422)["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "tasks[1].priority",
            "tasks[3].resource_claims[0].resource_id"
        ],
        "every bad item is named in one answer"
    );

    let reply = send(&app, post(json!({"tasks": []}))).await;
    assert_eq!(reply.problem(422)["errors"][0]["field"], "tasks");
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"title": format!("t{i}")}))
        .collect();
    let reply = send(&app, post(json!({ "tasks": many }))).await;
    assert!(reply.problem(413)["detail"]
        .as_str()
        .unwrap()
        .contains("1000"));

    let listed = send(&app, admin(Method::GET, "/api/v1/tasks")).await;
    assert_eq!(
        listed.ok().as_array().unwrap().len(),
        0,
        "no batch stored anything"
    );
    // Only operators submit.
    let (_agent, key) = register(&app, seed_agent("worker")).await;
    let reply = send(
        &app,
        bearer(Method::POST, "/api/v1/tasks/batch", &key)
            .set_json(json!({"tasks": [submission("mine", 1, &[])]})),
    )
    .await;
    reply.problem(403);
}

/// Registers a four-slot agent, submits `n` plain tasks and assigns them; returns the agent,
/// its key and the task IDs in submission order.
async fn agent_with_tasks<S, B>(h: &Harness, app: &S, n: usize) -> (String, String, Vec<String>)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let mut body = seed_agent("batcher");
    body["max_concurrent_tasks"] = json!(4);
    let (agent, key) = register(app, body).await;
    let mut ids = Vec::new();
    for i in 0..n {
        let task = json!({"title": format!("t{i}"), "priority": 5});
        ids.push(id_of(
            send(app, admin(Method::POST, "/api/v1/tasks").set_json(task))
                .await
                .ok(),
        ));
    }
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), n);
    (agent, key, ids)
}

async fn an_agent_reports_on_several_tasks_in_one_call(h: Harness) {
    let app = service!(h);
    let (agent, key, ids) = agent_with_tasks(&h, &app, 3).await;
    let report = |id: &str, action: &str, extra: Value| {
        let mut r = json!({"task_id": id, "action": action, "attempt": 1});
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r
    };
    let unknown = "00000000-0000-4000-8000-000000000001";
    let reply = send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{agent}/reports"),
            &key,
        )
        .set_json(json!({
            "reports": [
                report(&ids[0], "start", json!({})),
                report(&ids[0], "heartbeat", json!({"progress": 0.5, "message": "halfway"})),
                report(&ids[0], "complete", json!({"result": {"rows": 10}})),
                report(&ids[1], "complete", json!({})),
                report(&ids[2], "fail", json!({"error": "bad input", "retryable": false})),
                report(&ids[2], "complete", json!({})),
                report(unknown, "start", json!({})),
            ]
        })),
    )
    .await;
    let results = reply.ok()["results"].as_array().unwrap().clone();
    let statuses: Vec<i64> = results
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 409, 404], "{results:?}");
    assert_eq!(results[2]["task"]["status"], "completed");
    assert_eq!(results[2]["task"]["result"]["rows"], 10);
    assert_eq!(
        results[5]["error"]["status"], 409,
        "a refused report carries its problem"
    );
    assert_eq!(results[6]["task_id"], unknown);

    let status = |id: String| {
        let app = &app;
        async move {
            send(app, admin(Method::GET, &format!("/api/v1/tasks/{id}")))
                .await
                .ok()["status"]
                .clone()
        }
    };
    assert_eq!(status(ids[0].clone()).await, "completed");
    assert_eq!(
        status(ids[1].clone()).await,
        "completed",
        "completed without a start"
    );
    assert_eq!(status(ids[2].clone()).await, "failed");
    assert_eq!(
        kinds(&history(&app, &ids[0]).await),
        [
            "task_submitted",
            "task_assigned",
            "task_started",
            "task_progress",
            "task_completed"
        ]
    );
    let idle = send(&app, admin(Method::GET, &format!("/api/v1/agents/{agent}"))).await;
    assert_eq!(idle.ok()["current_tasks"], 0, "every slot is free again");
    assert_eq!(idle.ok()["status"], "idle");

    // A late report of an earlier attempt is refused, as the per-task call refuses it.
    let reply = send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{agent}/reports"),
            &key,
        )
        .set_json(json!({"reports": [report(&ids[1], "complete", json!({}))]})),
    )
    .await;
    assert_eq!(reply.ok()["results"][0]["status"], 409);
}

async fn bad_reports_change_nothing_and_only_the_holder_reports(h: Harness) {
    let app = service!(h);
    let (agent, key, ids) = agent_with_tasks(&h, &app, 1).await;
    let path = format!("/api/v1/agents/{agent}/reports");
    let post = |body: Value| bearer(Method::POST, &path, &key).set_json(body);
    let fields = |reply: &Reply| -> Vec<String> {
        reply.problem(422)["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    };
    let reply = send(
        &app,
        post(json!({"reports": [
            {"task_id": ids[0], "action": "complete", "attempt": 1},
            {"task_id": ids[0], "action": "explode", "attempt": 1},
            {"task_id": ids[0], "action": "complete", "attempt": 1, "error": "no"},
            {"task_id": ids[0], "action": "fail", "attempt": 1},
        ]})),
    )
    .await;
    assert_eq!(
        fields(&reply),
        ["reports[1].action", "reports[2].error", "reports[3].error"]
    );
    let reply = send(
        &app,
        post(json!({"reports": [{"task_id": ids[0], "attempt": 1}]})),
    )
    .await;
    assert_eq!(fields(&reply), ["reports[0].action"]);
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"task_id": ids[0], "action": "start", "attempt": 1}))
        .collect();
    let reply = send(&app, post(json!({ "reports": many }))).await;
    assert!(reply.problem(413)["detail"]
        .as_str()
        .unwrap()
        .contains("1000"));
    let task = send(
        &app,
        admin(Method::GET, &format!("/api/v1/tasks/{}", ids[0])),
    )
    .await;
    assert_eq!(
        task.ok()["status"],
        "assigned",
        "no bad call changed anything"
    );

    // Only the agent itself reports on its tasks.
    let complete = json!({"reports": [{"task_id": ids[0], "action": "complete", "attempt": 1}]});
    let reply = send(&app, admin(Method::POST, &path).set_json(&complete)).await;
    reply.problem(403);
    let (_other, other_key) = register(&app, seed_agent("other")).await;
    let reply = send(
        &app,
        bearer(Method::POST, &path, &other_key).set_json(&complete),
    )
    .await;
    reply.problem(403);
    let task = send(
        &app,
        admin(Method::GET, &format!("/api/v1/tasks/{}", ids[0])),
    )
    .await;
    assert_eq!(task.ok()["status"], "assigned");
}

/// A task's events, oldest first.
async fn history<S, B>(app: &S, id: &str) -> Vec<Value>
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let history = send(
        app,
        admin(Method::GET, &format!("/api/v1/tasks/{id}/history")),
    )
    .await;
    history.ok().as_array().unwrap().clone()
}

/// The types of events, in order.
fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn unknown_pool_claim() -> Value {
    let mut task = submission("claims", 1, &[]);
    task["resource_claims"] = json!([{"resource_id": "nowhere", "amount": {"gpus": 1}}]);
    task
}

async fn deregistering_an_agent_puts_its_work_back_in_the_queue(h: Harness) {
    let app = service!(h);
    let (a, key_a) = register(&app, seed_agent("leaving")).await;
    let id = id_of(
        send(
            &app,
            admin(Method::POST, "/api/v1/tasks").set_json(submission("x", 5, &[])),
        )
        .await
        .ok(),
    );
    h.state.platform.run_scheduler().await.unwrap();
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{id}/start"), &key_a)
            .set_json(json!({"attempt": 1})),
    )
    .await
    .ok();
    send(&app, admin(Method::DELETE, &format!("/api/v1/agents/{a}")))
        .await
        .ok();
    let task = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(task.ok()["status"], "pending");
    assert_eq!(task.ok()["attempt"], 2);
    assert_eq!(task.ok()["error"], "agent deregistered");
    let (b, _) = register(&app, seed_agent("arriving")).await;
    h.clock.advance(Duration::seconds(2));
    h.state.platform.run_scheduler().await.unwrap();
    let moved = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(moved.ok()["assigned_agent"], b.as_str());
}

async fn a_draining_agent_finishes_its_work_and_gets_no_more(h: Harness) {
    let app = service!(h);
    let mut body = seed_agent("winding-down");
    body["max_concurrent_tasks"] = json!(4);
    let (agent, key) = register(&app, body).await;
    let first = id_of(
        send(
            &app,
            admin(Method::POST, "/api/v1/tasks").set_json(submission("first", 5, &[])),
        )
        .await
        .ok(),
    );
    h.state.platform.run_scheduler().await.unwrap();
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{agent}/heartbeat"),
            &key,
        )
        .set_json(json!({"status": "draining"})),
    )
    .await
    .ok();
    let second = id_of(
        send(
            &app,
            admin(Method::POST, "/api/v1/tasks").set_json(submission("second", 5, &[])),
        )
        .await
        .ok(),
    );
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 0);
    let waiting = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{second}"))).await;
    assert_eq!(waiting.ok()["status"], "pending");
    // Its own task is still its to finish.
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{first}/start"), &key)
            .set_json(json!({"attempt": 1})),
    )
    .await
    .ok();
    let done = send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/tasks/{first}/complete"),
            &key,
        )
        .set_json(json!({"attempt": 1})),
    )
    .await;
    assert_eq!(done.ok()["status"], "completed");
    let agent_now = send(&app, admin(Method::GET, &format!("/api/v1/agents/{agent}"))).await;
    assert_eq!(agent_now.ok()["status"], "draining");
    assert_eq!(agent_now.ok()["current_tasks"], 0);
}

async fn a_silent_running_task_loses_its_lease_and_fails_when_attempts_run_out(h: Harness) {
    let app = service!(h);
    let (agent, key) = register(&app, seed_agent("flaky")).await;
    let mut body = submission("fragile", 5, &[]);
    body["max_attempts"] = json!(2);
    body["lease_seconds"] = json!(10);
    let id = id_of(
        send(&app, admin(Method::POST, "/api/v1/tasks").set_json(body))
            .await
            .ok(),
    );
    for attempt in 1..=2 {
        h.state.platform.run_scheduler().await.unwrap();
        let early = send(
            &app,
            bearer(Method::POST, &format!("/api/v1/tasks/{id}/heartbeat"), &key)
                .set_json(json!({"attempt": attempt})),
        )
        .await;
        early.problem(409); // a heartbeat does not stand in for start
        send(
            &app,
            bearer(Method::POST, &format!("/api/v1/tasks/{id}/start"), &key)
                .set_json(json!({"attempt": attempt})),
        )
        .await
        .ok();
        h.clock.advance(Duration::seconds(5));
        send(
            &app,
            bearer(
                Method::POST,
                &format!("/api/v1/agents/{agent}/heartbeat"),
                &key,
            ),
        )
        .await
        .ok();
        h.clock.advance(Duration::seconds(5)); // ten seconds without a task heartbeat
        assert_eq!(h.state.platform.expire_leases().await.unwrap(), 1);
        h.clock.advance(Duration::seconds(2));
    }
    let task = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{id}"))).await;
    assert_eq!(task.ok()["status"], "failed", "both attempts used up");
    assert_eq!(task.ok()["error"], "lease expired");
    let mine = send(
        &app,
        bearer(Method::GET, &format!("/api/v1/agents/{agent}/tasks"), &key),
    )
    .await;
    assert!(
        mine.ok().as_array().unwrap().is_empty(),
        "it holds nothing now"
    );
    let failed = send(
        &app,
        bearer(
            Method::GET,
            &format!("/api/v1/agents/{agent}/tasks?status_filter=failed"),
            &key,
        ),
    )
    .await;
    assert_eq!(failed.ok().as_array().unwrap().len(), 1);
}
