//! Resource pools and conflicts through the HTTP API, each scenario on the embedded store and on
//! PostgreSQL: registration and its bad input, allocation with assignment and release with the
//! end of the attempt, contention detected and closing itself, preemption, policy enforcement,
//! and the platform's other detections. The scheduler and sweeps are run by hand.

mod common;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::Method;
use chrono::Duration;
use common::*;
use serde_json::{json, Value};

on_both_stores!(
    pools_are_registered_listed_filtered_and_changed,
    bad_pool_input_is_refused_and_changes_nothing,
    two_tasks_compete_for_one_gpu_and_the_contention_closes_itself,
    a_preemptible_task_makes_room_for_a_higher_priority_one,
    a_critical_policy_violation_suspends_the_agent_and_its_task_moves,
    bad_conflict_reports_are_refused_and_agents_see_only_their_own,
    strategies_refuse_what_they_cannot_settle_and_manual_records_the_words,
    the_platform_detects_lost_leases_missed_deadlines_gaps_and_stale_reports,
);

fn gpu_pool(name: &str, gpus: u32) -> Value {
    json!({
        "name": name,
        "type": "gpu",
        "capacity": {"gpus": gpus, "memory": "32Gi"},
        "metadata": {"model": "RTX 4090", "location": "rack-1"}
    })
}

fn claiming(title: &str, priority: i64, pool: &str, gpus: u32) -> Value {
    json!({
        "title": title,
        "priority": priority,
        "resources": {"cpu": 1},
        "resource_claims": [{"resource_id": pool, "amount": {"gpus": gpus}}]
    })
}

/// An agent with room for several tasks, so only pools limit placement.
fn roomy_agent(name: &str) -> Value {
    let mut body = seed_agent(name);
    body["max_concurrent_tasks"] = json!(4);
    body["resources"] = json!({"cpu": 8, "memory": "16Gi"});
    body
}

async fn post<S, B>(app: &S, path: &str, body: Value) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    send(app, admin(Method::POST, path).set_json(body)).await
}

async fn get<S, B>(app: &S, path: &str) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    send(app, admin(Method::GET, path)).await
}

fn id(body: &Value) -> String {
    body["id"].as_str().unwrap().to_owned()
}

async fn pools_are_registered_listed_filtered_and_changed(h: Harness) {
    let app = service!(h);
    let gpu = post(&app, "/api/v1/resources", gpu_pool("gpu_cluster_01", 4)).await;
    let gpu = gpu.ok().clone();
    assert_eq!(gpu["name"], "gpu_cluster_01");
    assert_eq!(gpu["type"], "gpu");
    assert_eq!(
        gpu["capacity"],
        json!({"gpus": 4, "memory": "32Gi"}),
        "echoed as sent"
    );
    assert_eq!(gpu["allocated"], json!({"gpus": 0, "memory": 0}));
    assert_eq!(
        gpu["available"],
        json!({"gpus": 4, "memory": 34359738368u64})
    );
    assert_eq!(gpu["status"], "available");
    assert_eq!(gpu["metadata"]["model"], "RTX 4090");
    let licences = post(
        &app,
        "/api/v1/resources",
        json!({"name": "matlab", "type": "license", "capacity": {"seats": 10}}),
    )
    .await;
    licences.ok();

    let all = get(&app, "/api/v1/resources").await;
    assert_eq!(all.ok().as_array().unwrap().len(), 2);
    let gpus = get(&app, "/api/v1/resources?type_filter=gpu").await;
    let gpus = gpus.ok().as_array().unwrap().clone();
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0]["id"], gpu["id"]);
    let paged = get(&app, "/api/v1/resources?limit=1").await;
    assert_eq!(paged.ok().as_array().unwrap().len(), 1);
    assert!(paged
        .header("link")
        .is_some_and(|l| l.contains("rel=\"next\"")));

    let path = format!("/api/v1/resources/{}", id(&gpu));
    assert_eq!(get(&app, &path).await.ok()["id"], gpu["id"]);
    let patched = send(
        &app,
        admin(Method::PATCH, &path)
            .set_json(json!({"metadata": {"location": "rack-2"}, "status": "maintenance"})),
    )
    .await;
    let patched = patched.ok().clone();
    assert_eq!(patched["status"], "maintenance");
    assert_eq!(
        patched["metadata"],
        json!({"model": "RTX 4090", "location": "rack-2"})
    );
    let in_maintenance = get(&app, "/api/v1/resources?status_filter=maintenance").await;
    assert_eq!(in_maintenance.ok().as_array().unwrap().len(), 1);
    let available = get(&app, "/api/v1/resources?status_filter=available").await;
    assert_eq!(available.ok()[0]["name"], "matlab");

    // Nothing is placed on a pool in maintenance, and the task says why.
    post(&app, "/api/v1/agents", roomy_agent("w")).await.ok();
    let task = post(
        &app,
        "/api/v1/tasks",
        claiming("train", 5, "gpu_cluster_01", 1),
    )
    .await;
    let task = id(task.ok());
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 0);
    let waiting = get(&app, &format!("/api/v1/tasks/{task}")).await;
    assert_eq!(
        waiting.ok()["pending_reason"],
        "resource gpu_cluster_01 is in maintenance"
    );
    send(
        &app,
        admin(Method::PATCH, &path).set_json(json!({"status": "available"})),
    )
    .await
    .ok();
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);

    // The pool's events are on the resource_activity channel.
    let feed = get(&app, "/api/v1/dashboard/activity?limit=100").await;
    let kinds: Vec<&str> = feed
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "resource_activity")
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for kind in [
        "resource_registered",
        "resource_updated",
        "resource_allocated",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }

    // A report naming the pool, by name as the seed's example does, is about that pool.
    let reported = post(
        &app,
        "/api/v1/conflicts",
        json!({
            "conflict_type": "resource_contention",
            "description": "Multiple agents requesting same GPU resource",
            "severity": "high",
            "metadata": {"resource_id": "gpu_cluster_01"}
        }),
    )
    .await;
    assert_eq!(reported.ok()["resource_id"], gpu["id"]);
}

async fn bad_pool_input_is_refused_and_changes_nothing(h: Harness) {
    let app = service!(h);
    let pool = post(&app, "/api/v1/resources", gpu_pool("gpu_cluster_01", 2)).await;
    let pool = pool.ok().clone();
    for (body, field) in [
        (
            json!({"name": "x", "type": "gpu", "capacity": {"gpus": -1}}),
            "capacity.gpus",
        ),
        (
            json!({"name": "x", "type": "gpu", "capacity": {"gpus": "lots"}}),
            "capacity.gpus",
        ),
        (
            json!({"name": "x", "type": "gpu", "capacity": {"gpus": 0}}),
            "capacity.gpus",
        ),
        (
            json!({"name": "x", "type": "gpu", "capacity": {}}),
            "capacity",
        ),
        (
            json!({"name": "", "type": "gpu", "capacity": {"gpus": 1}}),
            "name",
        ),
        (
            json!({"name": "x", "type": "g p u", "capacity": {"gpus": 1}}),
            "type",
        ),
        (
            json!({"name": "x", "type": "gpu", "capacity": {"gpus": 1}, "status": "in_use"}),
            "status",
        ),
    ] {
        let reply = post(&app, "/api/v1/resources", body.clone()).await;
        let problem = reply.problem(422);
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            fields.contains(&field) || problem["detail"].as_str().unwrap().contains(field),
            "{body} -> {problem}"
        );
    }
    post(&app, "/api/v1/resources", gpu_pool("gpu_cluster_01", 9))
        .await
        .problem(409);
    assert_eq!(
        get(&app, "/api/v1/resources")
            .await
            .ok()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    get(&app, "/api/v1/resources/not-a-uuid").await.problem(400);
    get(&app, &format!("/api/v1/resources/{}", uuid::Uuid::nil()))
        .await
        .problem(404);
    get(&app, "/api/v1/resources?status_filter=busy")
        .await
        .problem(400);
    let path = format!("/api/v1/resources/{}", id(&pool));
    send(
        &app,
        admin(Method::PATCH, &path).set_json(json!({"status": "exhausted"})),
    )
    .await
    .problem(422);

    // Claims on unknown pools, on dimensions a pool lacks, or beyond its whole capacity.
    for (claim, why) in [
        (
            json!({"resource_id": "nope", "amount": {"gpus": 1}}),
            "no resource pool",
        ),
        (
            json!({"resource_id": "gpu_cluster_01", "amount": {"gpus": 3}}),
            "only 2",
        ),
        (
            json!({"resource_id": id(&pool), "amount": {"tpus": 1}}),
            "no tpus",
        ),
    ] {
        let body = json!({"title": "t", "resource_claims": [claim]});
        let reply = post(&app, "/api/v1/tasks", body).await;
        let problem = reply.problem(422);
        assert!(problem.to_string().contains(why), "{problem}");
    }
    assert!(get(&app, "/api/v1/tasks")
        .await
        .ok()
        .as_array()
        .unwrap()
        .is_empty());

    // Capacity may not drop below what is allocated; a viewer may not change pools.
    post(&app, "/api/v1/agents", roomy_agent("w")).await.ok();
    post(&app, "/api/v1/tasks", claiming("a", 5, "gpu_cluster_01", 2))
        .await
        .ok();
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    let shrink = send(
        &app,
        admin(Method::PATCH, &path).set_json(json!({"capacity": {"gpus": 1, "memory": "32Gi"}})),
    )
    .await;
    assert_eq!(shrink.problem(422)["errors"][0]["field"], "capacity.gpus");
    let viewer = jwt(json!({"sub": "v", "role": "viewer"}));
    send(
        &app,
        bearer(Method::PATCH, &path, &viewer).set_json(json!({"metadata": {}})),
    )
    .await
    .problem(403);
    send(&app, bearer(Method::GET, &path, &viewer)).await.ok();
    let view = get(&app, &path).await;
    assert_eq!(view.ok()["capacity"]["gpus"], 2);
    assert_eq!(view.ok()["status"], "exhausted");
}

async fn two_tasks_compete_for_one_gpu_and_the_contention_closes_itself(h: Harness) {
    let app = service!(h);
    let pool = post(&app, "/api/v1/resources", gpu_pool("gpu_cluster_01", 1)).await;
    let pool = id(pool.ok());
    let (agent, key) = register(&app, roomy_agent("gpu-box")).await;
    let low = id(post(
        &app,
        "/api/v1/tasks",
        claiming("low", 2, "gpu_cluster_01", 1),
    )
    .await
    .ok());
    let high = id(post(&app, "/api/v1/tasks", claiming("high", 9, &pool, 1))
        .await
        .ok());

    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    let first = get(&app, &format!("/api/v1/tasks/{high}")).await;
    assert_eq!(
        first.ok()["status"],
        "assigned",
        "the higher priority runs first"
    );
    let waiting = get(&app, &format!("/api/v1/tasks/{low}")).await;
    assert_eq!(waiting.ok()["status"], "pending");
    assert_eq!(
        waiting.ok()["pending_reason"],
        "resource gpu_cluster_01 has 0 of 1 gpus free"
    );
    let view = get(&app, &format!("/api/v1/resources/{pool}")).await;
    assert_eq!(view.ok()["allocated"]["gpus"], 1);
    assert_eq!(view.ok()["available"]["gpus"], 0);
    assert_eq!(view.ok()["status"], "exhausted");
    let allocations = get(&app, &format!("/api/v1/resources/{pool}/allocations")).await;
    let allocations = allocations.ok().as_array().unwrap().clone();
    assert_eq!(allocations.len(), 1);
    assert_eq!(allocations[0]["task_id"], high.as_str());
    assert_eq!(allocations[0]["agent_id"], agent.as_str());
    assert_eq!(allocations[0]["amount"], json!({"gpus": 1}));

    // The platform noticed: one open contention conflict, whoever looks how often.
    h.state.platform.run_scheduler().await.unwrap();
    let open = get(
        &app,
        "/api/v1/conflicts?type_filter=resource_contention&status_filter=open",
    )
    .await;
    let open = open.ok().as_array().unwrap().clone();
    assert_eq!(open.len(), 1, "{open:?}");
    let conflict = &open[0];
    assert_eq!(conflict["source"], "detected");
    assert_eq!(conflict["resource_id"], pool.as_str());
    let involved = conflict["involved_tasks"].as_array().unwrap();
    assert!(involved.contains(&json!(low)) && involved.contains(&json!(high)));
    assert_eq!(conflict["involved_agents"], json!([agent]));
    let conflict_id = id(conflict);

    // A pass that finds no free slot reads the head of the queue unranked, here 64 tasks no
    // agent can take, ahead of the waiting one: it judges no contention on what it read, and
    // the conflict stays open.
    let fillers: Vec<Value> = (0..64)
        .map(|n| json!({"title": format!("filler {n}"), "priority": 10, "required_capabilities": ["nobody"]}))
        .collect();
    let fillers = post(&app, "/api/v1/tasks/batch", json!({"tasks": fillers})).await;
    let fillers: Vec<String> = fillers.ok()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    let agent_path = format!("/api/v1/agents/{agent}");
    let slots =
        |max: u32| admin(Method::PATCH, &agent_path).set_json(json!({"max_concurrent_tasks": max}));
    send(&app, slots(1)).await.ok();
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 0);
    let still = get(&app, &format!("/api/v1/conflicts/{conflict_id}")).await;
    assert_eq!(
        still.ok()["status"],
        "open",
        "a full fleet ends no contention"
    );
    for filler in &fillers {
        let cancel = admin(Method::POST, &format!("/api/v1/tasks/{filler}/cancel"));
        send(&app, cancel).await.ok();
    }
    send(&app, slots(4)).await.ok();

    // The pool cannot go while it is held.
    send(
        &app,
        admin(Method::DELETE, &format!("/api/v1/resources/{pool}")),
    )
    .await
    .problem(409);

    // The holder finishes: the gpu is released, the waiting task gets it, the conflict closes.
    for (action, body) in [
        ("start", json!({"attempt": 1})),
        ("complete", json!({"attempt": 1, "result": {}})),
    ] {
        send(
            &app,
            bearer(
                Method::POST,
                &format!("/api/v1/tasks/{high}/{action}"),
                &key,
            )
            .set_json(body),
        )
        .await
        .ok();
    }
    assert_eq!(
        get(&app, &format!("/api/v1/resources/{pool}")).await.ok()["status"],
        "available"
    );
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    assert_eq!(
        get(&app, &format!("/api/v1/tasks/{low}")).await.ok()["status"],
        "assigned"
    );
    let closed = get(&app, &format!("/api/v1/conflicts/{conflict_id}")).await;
    let closed = closed.ok().clone();
    assert_eq!(closed["status"], "resolved", "{closed}");
    assert_eq!(closed["resolution"]["strategy"], "priority_based");
    assert_eq!(closed["resolution"]["decided_by"], "platform");
    assert!(closed["resolved_at"].is_string());

    let history = get(&app, &format!("/api/v1/tasks/{high}/history")).await;
    let kinds: Vec<&str> = history
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"resource_allocated") && kinds.contains(&"resource_released"),
        "{kinds:?}"
    );

    // Once the last holder is done, the pool may go.
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{low}/complete"), &key)
            .set_json(json!({"attempt": 1, "result": {}})),
    )
    .await
    .ok();
    send(
        &app,
        admin(Method::DELETE, &format!("/api/v1/resources/{pool}")),
    )
    .await
    .ok();
    get(&app, &format!("/api/v1/resources/{pool}"))
        .await
        .problem(404);
}

async fn a_preemptible_task_makes_room_for_a_higher_priority_one(h: Harness) {
    let app = service!(h);
    post(&app, "/api/v1/resources", gpu_pool("gpu_cluster_01", 1))
        .await
        .ok();
    let (agent, key) = register(&app, roomy_agent("gpu-box")).await;
    let mut body = claiming("batch", 2, "gpu_cluster_01", 1);
    body["preemptible"] = json!(true);
    body["max_attempts"] = json!(1);
    let low = id(post(&app, "/api/v1/tasks", body).await.ok());
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{low}/start"), &key)
            .set_json(json!({"attempt": 1})),
    )
    .await
    .ok();

    let urgent = id(post(
        &app,
        "/api/v1/tasks",
        claiming("urgent", 9, "gpu_cluster_01", 1),
    )
    .await
    .ok());
    // This pass finds the contention; priority_based sends the preemptible holder back.
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 0);
    let preempted = get(&app, &format!("/api/v1/tasks/{low}")).await;
    let preempted = preempted.ok().clone();
    assert_eq!(preempted["status"], "pending", "{preempted}");
    assert_eq!(preempted["attempt"], 2);
    assert!(preempted["error"].as_str().unwrap().contains("preempted"));
    let holder = get(&app, &format!("/api/v1/agents/{agent}")).await;
    assert_eq!(holder.ok()["current_tasks"], 0, "its slot is free");
    assert_eq!(
        holder.ok()["reliability"],
        1.0,
        "being preempted is not the agent's failure"
    );

    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    assert_eq!(
        get(&app, &format!("/api/v1/tasks/{urgent}")).await.ok()["status"],
        "assigned"
    );
    // The old attempt's reports are refused; the lost attempt did not use up its one try.
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/tasks/{low}/heartbeat"),
            &key,
        )
        .set_json(json!({"attempt": 1})),
    )
    .await
    .problem(409);
    assert_eq!(
        get(&app, &format!("/api/v1/tasks/{low}")).await.ok()["status"],
        "pending"
    );
    let open = get(
        &app,
        "/api/v1/conflicts?type_filter=resource_contention&status_filter=open",
    )
    .await;
    let open = open.ok().as_array().unwrap().clone();
    assert_eq!(
        open.len(),
        1,
        "the batch task now waits: contention goes on"
    );
    let actions = open[0]["metadata"]["actions"].as_array().unwrap();
    assert!(
        actions[0]["outcome"]
            .as_str()
            .unwrap()
            .contains("preempted"),
        "{actions:?}"
    );
}

async fn a_critical_policy_violation_suspends_the_agent_and_its_task_moves(h: Harness) {
    let app = service!(h);
    let (a, _) = register(&app, seed_agent("a")).await;
    let task = id(post(
        &app,
        "/api/v1/tasks",
        json!({"title": "job", "priority": 5}),
    )
    .await
    .ok());
    h.state.platform.run_scheduler().await.unwrap();
    assert_eq!(
        get(&app, &format!("/api/v1/tasks/{task}")).await.ok()["assigned_agent"],
        a.as_str()
    );
    let (b, _) = register(&app, seed_agent("b")).await;

    let reported = post(
        &app,
        "/api/v1/conflicts",
        json!({
            "agent_id": a,
            "task_id": task,
            "conflict_type": "policy_violation",
            "description": "agent exfiltrated data outside its sandbox",
            "severity": "critical",
            "metadata": {"rule": "sandbox"}
        }),
    )
    .await;
    let reported = reported.ok().clone();
    assert_eq!(
        reported["status"], "open",
        "reported conflicts wait for an operator"
    );
    assert_eq!(reported["source"], "reported");
    let path = format!("/api/v1/conflicts/{}", id(&reported));

    let resolved = post(
        &app,
        &format!("{path}/resolve"),
        json!({"strategy": "policy_enforcement"}),
    )
    .await;
    let resolved = resolved.ok().clone();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolution"]["strategy"], "policy_enforcement");
    assert_eq!(resolved["resolution"]["decided_by"], "admin-api-key");
    assert!(resolved["resolution"]["decided_at"].is_string());

    assert_eq!(
        get(&app, &format!("/api/v1/agents/{a}")).await.ok()["status"],
        "suspended"
    );
    let requeued = get(&app, &format!("/api/v1/tasks/{task}")).await;
    assert_eq!(requeued.ok()["status"], "pending");
    h.clock.advance(Duration::seconds(5));
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    assert_eq!(
        get(&app, &format!("/api/v1/tasks/{task}")).await.ok()["assigned_agent"],
        b.as_str(),
        "reassigned to the agent in good standing"
    );

    // Settled once: resolving or dismissing again is refused.
    post(
        &app,
        &format!("{path}/resolve"),
        json!({"strategy": "manual", "resolution": "again"}),
    )
    .await
    .problem(409);
    post(&app, &format!("{path}/dismiss"), json!({"reason": "late"}))
        .await
        .problem(409);
}

async fn bad_conflict_reports_are_refused_and_agents_see_only_their_own(h: Harness) {
    let app = service!(h);
    let (a, key_a) = register(&app, seed_agent("a")).await;
    let (b, key_b) = register(&app, seed_agent("b")).await;
    let valid = json!({
        "agent_id": a,
        "conflict_type": "resource_contention",
        "description": "Multiple agents requesting same GPU resource",
        "severity": "high",
        "metadata": {"resource_id": "gpu-001"}
    });
    for (change, field) in [
        (json!({"severity": "urgent"}), "severity"),
        (json!({"conflict_type": "fight"}), "conflict_type"),
        (json!({"agent_id": "agent-123"}), "agent_id"),
        (json!({"agent_id": uuid::Uuid::nil()}), "agent_id"),
        (json!({"task_id": uuid::Uuid::nil()}), "task_id"),
        (json!({"description": ""}), "description"),
    ] {
        let mut body = valid.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let reply = post(&app, "/api/v1/conflicts", body).await;
        let problem = reply.problem(422);
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let mut smuggled = valid.clone();
    smuggled["status"] = json!("resolved");
    post(&app, "/api/v1/conflicts", smuggled).await.problem(422);
    assert!(get(&app, "/api/v1/conflicts")
        .await
        .ok()
        .as_array()
        .unwrap()
        .is_empty());
    for bad in [
        "severity_filter=urgent",
        "type_filter=x",
        "status_filter=x",
        "agent_id=x",
    ] {
        get(&app, &format!("/api/v1/conflicts?{bad}"))
            .await
            .problem(400);
    }

    // A viewer reads but does not report; an agent reports only about itself.
    let viewer = jwt(json!({"sub": "v", "role": "viewer"}));
    send(
        &app,
        bearer(Method::POST, "/api/v1/conflicts", &viewer).set_json(valid.clone()),
    )
    .await
    .problem(403);
    send(
        &app,
        bearer(Method::POST, "/api/v1/conflicts", &key_b).set_json(valid.clone()),
    )
    .await
    .problem(403);
    let own = send(
        &app,
        bearer(Method::POST, "/api/v1/conflicts", &key_a).set_json(valid.clone()),
    )
    .await;
    let own = own.ok().clone();
    assert!(own["reported_by"].as_str().unwrap().starts_with("api-key:"));
    assert_eq!(own["agent_id"], a.as_str());
    let path = format!("/api/v1/conflicts/{}", id(&own));
    send(&app, bearer(Method::GET, &path, &key_a)).await.ok();
    send(&app, bearer(Method::GET, &path, &key_b))
        .await
        .problem(404);
    let mine = send(&app, bearer(Method::GET, "/api/v1/conflicts", &key_a)).await;
    assert_eq!(mine.ok().as_array().unwrap().len(), 1);
    let theirs = send(&app, bearer(Method::GET, "/api/v1/conflicts", &key_b)).await;
    assert!(theirs.ok().as_array().unwrap().is_empty());
    let snooping = send(
        &app,
        bearer(
            Method::GET,
            &format!("/api/v1/conflicts?agent_id={a}"),
            &key_b,
        ),
    )
    .await;
    assert!(snooping.ok().as_array().unwrap().is_empty());
    // Agents and viewers do not resolve.
    for token in [&key_a, &viewer] {
        send(
            &app,
            bearer(Method::POST, &format!("{path}/resolve"), token)
                .set_json(json!({"strategy": "manual", "resolution": "mine"})),
        )
        .await
        .problem(403);
    }
    let filtered = get(&app, &format!("/api/v1/conflicts?agent_id={b}")).await;
    assert!(filtered.ok().as_array().unwrap().is_empty());
    let high = get(&app, "/api/v1/conflicts?severity_filter=high").await;
    assert_eq!(high.ok().as_array().unwrap().len(), 1);
}

async fn strategies_refuse_what_they_cannot_settle_and_manual_records_the_words(h: Harness) {
    let app = service!(h);
    let (a, _) = register(&app, seed_agent("a")).await;
    let (b, _) = register(&app, seed_agent("b")).await;
    let report = |kind: &str, metadata: Value| {
        json!({
            "agent_id": a,
            "conflict_type": kind,
            "description": "the agents disagree",
            "severity": "medium",
            "metadata": metadata
        })
    };
    let split = id(post(
        &app,
        "/api/v1/conflicts",
        report(
            "state_inconsistency",
            json!({"states": {a.clone(): "done", b.clone(): "running"}}),
        ),
    )
    .await
    .ok());
    let path = format!("/api/v1/conflicts/{split}/resolve");
    let refused = post(&app, &path, json!({"strategy": "consensus"})).await;
    assert!(refused.problem(422).to_string().contains("no majority"));
    post(&app, &path, json!({"strategy": "priority_based"}))
        .await
        .problem(422);
    post(&app, &path, json!({"strategy": "manual"}))
        .await
        .problem(422);
    post(&app, &path, json!({"strategy": "sideways"}))
        .await
        .problem(422);
    post(&app, &path, json!({})).await.problem(422);
    assert_eq!(
        get(&app, &format!("/api/v1/conflicts/{split}")).await.ok()["status"],
        "open",
        "refusals change nothing"
    );
    let manual = post(
        &app,
        &path,
        json!({"strategy": "manual", "resolution": "agent b restarts its job"}),
    )
    .await;
    let manual = manual.ok().clone();
    assert_eq!(manual["resolution"]["strategy"], "manual");
    assert_eq!(manual["resolution"]["outcome"], "agent b restarts its job");

    let votes = id(post(
        &app,
        "/api/v1/conflicts",
        report("goal_conflict", json!({"states": ["ship", "ship", "wait"]})),
    )
    .await
    .ok());
    let agreed = post(
        &app,
        &format!("/api/v1/conflicts/{votes}/resolve"),
        json!({"strategy": "consensus"}),
    )
    .await;
    assert_eq!(agreed.ok()["resolution"]["details"]["state"], "ship");

    let perf = id(post(
        &app,
        "/api/v1/conflicts",
        json!({"agent_id": a, "conflict_type": "performance_dispute", "description": "who is faster", "severity": "low"}),
    )
    .await
    .ok());
    let decided = post(
        &app,
        &format!("/api/v1/conflicts/{perf}/resolve"),
        json!({"strategy": "performance_based"}),
    )
    .await;
    assert_eq!(
        decided.ok()["resolution"]["details"]["winner_agent"],
        a.as_str()
    );

    let noise = id(post(&app, "/api/v1/conflicts", report("other", json!({})))
        .await
        .ok());
    let dismissed = post(
        &app,
        &format!("/api/v1/conflicts/{noise}/dismiss"),
        json!({"reason": "duplicate report"}),
    )
    .await;
    assert_eq!(dismissed.ok()["status"], "dismissed");
    post(
        &app,
        &format!("/api/v1/conflicts/{noise}/dismiss"),
        json!({}),
    )
    .await
    .problem(422);
    let open = get(&app, "/api/v1/conflicts?status_filter=open").await;
    assert!(open.ok().as_array().unwrap().is_empty());
}

async fn the_platform_detects_lost_leases_missed_deadlines_gaps_and_stale_reports(h: Harness) {
    let app = service!(h);
    let (_, key) = register(&app, seed_agent("a")).await;
    let mut leased = json!({"title": "short lease", "priority": 5, "lease_seconds": 30});
    leased["max_attempts"] = json!(3);
    let leased = id(post(&app, "/api/v1/tasks", leased).await.ok());
    h.state.platform.run_scheduler().await.unwrap();
    h.clock.advance(Duration::seconds(30));
    assert_eq!(h.state.platform.expire_leases().await.unwrap(), 1);
    let lost = get(&app, "/api/v1/conflicts?type_filter=lease_expired").await;
    let lost = lost.ok().as_array().unwrap().clone();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0]["task_id"], leased.as_str());
    assert_eq!(
        lost[0]["status"], "resolved",
        "settled at once by retry_with_backoff"
    );
    assert_eq!(lost[0]["resolution"]["strategy"], "retry_with_backoff");

    // The agent's late report on attempt 1 is refused and recorded.
    h.clock.advance(Duration::seconds(2));
    h.state.platform.run_scheduler().await.unwrap();
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/tasks/{leased}/complete"),
            &key,
        )
        .set_json(json!({"attempt": 1, "result": {}})),
    )
    .await
    .problem(409);
    let stale = get(&app, "/api/v1/conflicts?type_filter=state_inconsistency").await;
    let stale = stale.ok().as_array().unwrap().clone();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0]["status"], "open");
    assert_eq!(stale[0]["source"], "detected");
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/tasks/{leased}/complete"),
            &key,
        )
        .set_json(json!({"attempt": 2, "result": {}})),
    )
    .await
    .ok();

    // Nobody registered could ever run this one.
    let gap = id(post(
        &app,
        "/api/v1/tasks",
        json!({"title": "quantum", "required_capabilities": ["quantum_annealing"]}),
    )
    .await
    .ok());
    h.state.platform.run_scheduler().await.unwrap();
    h.state.platform.sweep_conflicts().await.unwrap();
    let gaps = get(
        &app,
        "/api/v1/conflicts?type_filter=capability_gap&status_filter=open",
    )
    .await;
    let gaps = gaps.ok().as_array().unwrap().clone();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0]["task_id"], gap.as_str());
    // The stale report closed itself once its task finished.
    let stale_now = get(&app, &format!("/api/v1/conflicts/{}", id(&stale[0]))).await;
    assert_eq!(stale_now.ok()["status"], "resolved");
    // An agent that has the capability registers: the gap closes.
    let mut quantum = seed_agent("q");
    quantum["capabilities"] = json!(["quantum_annealing"]);
    register(&app, quantum).await;
    h.state.platform.sweep_conflicts().await.unwrap();
    let closed = get(&app, &format!("/api/v1/conflicts/{}", id(&gaps[0]))).await;
    assert_eq!(closed.ok()["status"], "resolved");
    assert!(closed.ok()["resolution"]["strategy"].is_null());

    // A deadline missed while waiting.
    let deadline = (h.clock_now() + Duration::seconds(10)).to_rfc3339();
    let late = id(post(
        &app,
        "/api/v1/tasks",
        json!({"title": "late", "required_capabilities": ["nobody_has_this"], "deadline": deadline}),
    )
    .await
    .ok());
    h.clock.advance(Duration::seconds(11));
    assert_eq!(h.state.platform.expire_deadlines().await.unwrap(), 1);
    let missed = get(&app, "/api/v1/conflicts?type_filter=deadline_missed").await;
    let missed = missed.ok().as_array().unwrap().clone();
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0]["task_id"], late.as_str());
    assert_eq!(missed[0]["severity"], "high");
    assert_eq!(missed[0]["status"], "open");
}
