//! Workflows through the HTTP API, each scenario on the embedded store and on PostgreSQL: the
//! seed's pipeline run by a simulated agent, a diamond whose branches run in parallel and join,
//! failure with and without `continue_on_failure`, cancellation, rerun from a failed step, and
//! bad input. On PostgreSQL alone, an execution carries on when its server is replaced midway.
//! The scheduler is run by hand.

mod common;

use std::sync::Arc;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::Method;
use common::*;
use serde_json::{json, Value};

on_both_stores!(
    the_seeds_pipeline_runs_its_steps_one_after_another,
    a_diamond_runs_its_branches_in_parallel_and_joins_their_results,
    a_failed_step_fails_the_execution_unless_it_may_continue,
    cancelling_an_execution_cancels_its_queued_and_running_tasks,
    a_failed_execution_reruns_from_its_failed_step_and_keeps_what_completed,
    bad_workflows_and_executions_are_refused_and_change_nothing,
);

/// The seed's example definition, exactly as its README sends it.
fn seed_workflow() -> Value {
    json!({
        "name": "Data Processing Pipeline",
        "description": "End-to-end data processing workflow",
        "steps": [
            {"name": "data_ingestion", "type": "task", "parameters": {"source": "database"}},
            {"name": "data_processing", "type": "task", "parameters": {"algorithm": "random_forest"}},
            {"name": "result_export", "type": "task", "parameters": {"format": "json"}}
        ],
        "metadata": {"version": "1.0"}
    })
}

/// The seed's example execution body.
fn seed_execution() -> Value {
    json!({"parameters": {"input_file": "data.csv"}, "metadata": {"execution_id": "exec-123"}})
}

fn dag(steps: &[(&str, &[&str])]) -> Value {
    json!({
        "name": "dag",
        "steps": steps.iter().map(|(name, needs)| json!({
            "name": name,
            "type": "task",
            "parameters": {"step": name},
            "depends_on": needs,
            "required_capabilities": ["data_processing"],
        })).collect::<Vec<_>>(),
    })
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

/// Creates a definition and starts it; returns (workflow ID, the execution as answered).
async fn start<S, B>(app: &S, definition: Value) -> (String, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let workflow = post(app, "/api/v1/workflows", definition).await;
    let id = workflow.ok()["id"].as_str().unwrap().to_owned();
    let execution = post(
        app,
        &format!("/api/v1/workflows/{id}/execute"),
        seed_execution(),
    )
    .await;
    (id, execution.ok().clone())
}

async fn execution<S, B>(app: &S, workflow: &str, execution: &Value) -> Value
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let id = execution["execution_id"].as_str().unwrap();
    get(
        app,
        &format!("/api/v1/workflows/{workflow}/executions/{id}"),
    )
    .await
    .ok()
    .clone()
}

fn step<'a>(execution: &'a Value, name: &str) -> &'a Value {
    execution["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

fn statuses(execution: &Value) -> Vec<(String, String)> {
    execution["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A simulated agent's round: the scheduler runs, then the agent starts and completes every
/// task assigned to it (failing, for good, those of the steps in `failing`), each result naming
/// its step and the upstream steps it saw. Returns the steps it worked, in order.
async fn work<S, B>(h: &Harness, app: &S, agent: &(String, String), failing: &[&str]) -> Vec<String>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    h.state.platform.run_scheduler().await.unwrap();
    let (id, key) = agent;
    let assigned = send(
        app,
        bearer(
            Method::GET,
            &format!("/api/v1/agents/{id}/tasks?status_filter=assigned"),
            key,
        ),
    )
    .await;
    let mut worked = Vec::new();
    for task in assigned.ok().as_array().unwrap().clone() {
        let task_id = task["id"].as_str().unwrap();
        let attempt = task["attempt"].clone();
        let step = task["step"].as_str().unwrap().to_owned();
        send(
            app,
            bearer(Method::POST, &format!("/api/v1/tasks/{task_id}/start"), key)
                .set_json(json!({"attempt": attempt})),
        )
        .await
        .ok();
        let (path, body) = if failing.contains(&step.as_str()) {
            (
                "fail",
                json!({"attempt": attempt, "error": format!("{step} broke"), "retryable": false}),
            )
        } else {
            let seen: Vec<&String> = task["metadata"]["upstream"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            (
                "complete",
                json!({"attempt": attempt, "result": {"step": step, "saw": seen}}),
            )
        };
        send(
            app,
            bearer(
                Method::POST,
                &format!("/api/v1/tasks/{task_id}/{path}"),
                key,
            )
            .set_json(body),
        )
        .await
        .ok();
        worked.push(step);
    }
    worked
}

/// An agent for every step, with room for `slots` tasks at once.
async fn worker<S, B>(app: &S, slots: u32) -> (String, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let mut body = seed_agent("pipeline-worker");
    body["max_concurrent_tasks"] = json!(slots);
    register(app, body).await
}

async fn the_seeds_pipeline_runs_its_steps_one_after_another(h: Harness) {
    let app = service!(h);
    let agent = worker(&app, 4).await;
    let created = post(&app, "/api/v1/workflows", seed_workflow()).await;
    let workflow = created.ok().clone();
    assert_eq!(workflow["status"], "created");
    assert_eq!(workflow["name"], "Data Processing Pipeline");
    assert_eq!(workflow["steps"][1]["type"], "task");
    assert_eq!(
        workflow["steps"][1]["parameters"],
        json!({"algorithm": "random_forest"})
    );
    assert_eq!(workflow["metadata"], json!({"version": "1.0"}));
    let id = workflow["id"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&app, &format!("/api/v1/workflows/{id}")).await.ok(),
        &workflow
    );

    let started = post(
        &app,
        &format!("/api/v1/workflows/{id}/execute"),
        seed_execution(),
    )
    .await;
    let started = started.ok().clone();
    assert_eq!(started["workflow_id"], id.as_str());
    assert_eq!(started["status"], "running");
    assert_eq!(started["metadata"], json!({"execution_id": "exec-123"}));
    assert!(step(&started, "data_ingestion")["task_id"].is_string());
    assert!(step(&started, "data_processing")["task_id"].is_null());
    let summary = get(&app, "/api/v1/dashboard/summary").await;
    assert_eq!(
        summary.ok()["workflows"],
        json!({"total": 1, "running_executions": 1})
    );

    // With room for four, the agent still gets one step at a time, in the order given.
    let mut order = Vec::new();
    for _ in 0..3 {
        let worked = work(&h, &app, &agent, &[]).await;
        assert_eq!(worked.len(), 1, "one step is ready at a time: {worked:?}");
        order.extend(worked);
    }
    assert_eq!(
        order,
        ["data_ingestion", "data_processing", "result_export"]
    );
    assert!(work(&h, &app, &agent, &[]).await.is_empty());

    let done = execution(&app, &id, &started).await;
    assert_eq!(done["status"], "completed");
    assert!(done["completed_at"].is_string());
    assert_eq!(
        step(&done, "data_processing")["result"],
        json!({"step": "data_processing", "saw": ["data_ingestion"]})
    );
    let execution_id = started["execution_id"].as_str().unwrap();
    let tasks = get(&app, &format!("/api/v1/tasks?execution_id={execution_id}")).await;
    let tasks = tasks.ok().as_array().unwrap().clone();
    assert_eq!(tasks.len(), 3, "each step ran as exactly one task");
    let export = tasks.iter().find(|t| t["step"] == "result_export").unwrap();
    assert_eq!(export["workflow_id"], id.as_str());
    assert_eq!(
        export["metadata"]["execution_parameters"],
        json!({"input_file": "data.csv"})
    );
    assert_eq!(
        export["metadata"]["step_parameters"],
        json!({"format": "json"})
    );
    assert_eq!(
        export["metadata"]["upstream"]["data_processing"]["result"]["step"],
        "data_processing"
    );

    let listed = get(&app, &format!("/api/v1/workflows/{id}/executions")).await;
    let listed = listed.ok().as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "completed");
    assert!(
        step(&listed[0], "data_processing")["result"].is_null(),
        "lists leave results out"
    );
    assert_eq!(
        get(&app, "/api/v1/workflows")
            .await
            .ok()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let summary = get(&app, "/api/v1/dashboard/summary").await;
    assert_eq!(
        summary.ok()["workflows"],
        json!({"total": 1, "running_executions": 0})
    );

    // Every change was on `workflow_activity`, each naming the execution (what the socket's
    // `execution_id` filter reads), and so was each of its tasks' events.
    let events = h.log.latest_events(500).await.unwrap();
    let of_execution: Vec<&str> = events
        .iter()
        .rev()
        .filter(|e| e.data["execution_id"] == execution_id)
        .filter(|e| e.channel() == domain::Channel::WorkflowActivity)
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        of_execution,
        [
            "execution_started",
            "step_started",
            "step_completed",
            "step_started",
            "step_completed",
            "step_started",
            "step_completed",
            "execution_completed"
        ]
    );
    let task_events = events
        .iter()
        .filter(|e| e.channel() == domain::Channel::TaskActivity)
        .filter(|e| e.data["execution_id"] == execution_id)
        .count();
    assert!(
        task_events >= 12,
        "each task's events name the execution: {task_events}"
    );
}

async fn a_diamond_runs_its_branches_in_parallel_and_joins_their_results(h: Harness) {
    let app = service!(h);
    let agent = worker(&app, 4).await;
    post(
        &app,
        "/api/v1/resources",
        json!({"name": "gpu_pool", "type": "gpu", "capacity": {"gpus": 4}}),
    )
    .await
    .ok();
    let mut diamond = dag(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]);
    let options = json!({
        "priority": 7, "max_attempts": 2, "lease_seconds": 120, "resources": {"cpu": "500m"},
        "resource_claims": [{"resource_id": "gpu_pool", "amount": {"gpus": 1}}]
    });
    for (key, value) in options.as_object().unwrap() {
        diamond["steps"][0][key] = value.clone();
    }
    let (id, started) = start(&app, diamond).await;
    // The step's options are its task's.
    let a_task = step(&started, "a")["task_id"].as_str().unwrap().to_owned();
    let a_task = get(&app, &format!("/api/v1/tasks/{a_task}")).await;
    let a_task = a_task.ok();
    for (key, value) in options.as_object().unwrap() {
        assert_eq!(&a_task[key], value, "{key}");
    }
    assert_eq!(a_task["required_capabilities"], json!(["data_processing"]));
    assert_eq!(a_task["workflow_id"], id.as_str());
    assert_eq!(a_task["execution_id"], started["execution_id"]);
    assert_eq!(a_task["step"], "a");
    assert_eq!(work(&h, &app, &agent, &[]).await, ["a"]);
    let mut branches = work(&h, &app, &agent, &[]).await;
    branches.sort();
    assert_eq!(branches, ["b", "c"], "B and C run side by side");
    assert_eq!(work(&h, &app, &agent, &[]).await, ["d"]);
    let done = execution(&app, &id, &started).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(
        step(&done, "d")["result"]["saw"],
        json!(["b", "c"]),
        "D sees both results"
    );
}

async fn a_failed_step_fails_the_execution_unless_it_may_continue(h: Harness) {
    let app = service!(h);
    let agent = worker(&app, 4).await;
    let (id, started) = start(&app, seed_workflow()).await;
    // A failure the step may retry is not the step's failure: its task goes back to the queue.
    h.state.platform.run_scheduler().await.unwrap();
    let (agent_id, key) = &agent;
    let mine = send(
        &app,
        bearer(
            Method::GET,
            &format!("/api/v1/agents/{agent_id}/tasks"),
            key,
        ),
    )
    .await;
    let first = mine.ok()[0]["id"].as_str().unwrap().to_owned();
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{first}/fail"), key)
            .set_json(json!({"attempt": 1, "error": "flaky source", "retryable": true})),
    )
    .await
    .ok();
    let retrying = execution(&app, &id, &started).await;
    assert_eq!(retrying["status"], "running");
    assert_eq!(step(&retrying, "data_ingestion")["status"], "running");
    h.clock.advance(chrono::Duration::seconds(10)); // past the retry's backoff
    assert_eq!(work(&h, &app, &agent, &[]).await, ["data_ingestion"]);
    assert_eq!(
        work(&h, &app, &agent, &["data_processing"]).await,
        ["data_processing"]
    );
    let failed = execution(&app, &id, &started).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        statuses(&failed),
        [
            ("data_ingestion".into(), "completed".into()),
            ("data_processing".into(), "failed".into()),
            ("result_export".into(), "cancelled".into()),
        ]
    );
    assert_eq!(
        step(&failed, "data_processing")["error"],
        "data_processing broke"
    );
    assert!(
        step(&failed, "result_export")["task_id"].is_null(),
        "it never became a task"
    );
    assert!(work(&h, &app, &agent, &[]).await.is_empty());

    // The same pipeline with a middle step that may fail: the export still runs, and sees it.
    let mut lenient = seed_workflow();
    lenient["steps"][1]["continue_on_failure"] = json!(true);
    let (id, started) = start(&app, lenient).await;
    assert_eq!(work(&h, &app, &agent, &[]).await, ["data_ingestion"]);
    assert_eq!(
        work(&h, &app, &agent, &["data_processing"]).await,
        ["data_processing"]
    );
    assert_eq!(work(&h, &app, &agent, &[]).await, ["result_export"]);
    let done = execution(&app, &id, &started).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(step(&done, "data_processing")["status"], "failed");
    let tasks = get(
        &app,
        &format!(
            "/api/v1/tasks?execution_id={}",
            started["execution_id"].as_str().unwrap()
        ),
    )
    .await;
    let export = tasks
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["step"] == "result_export")
        .cloned()
        .unwrap();
    assert_eq!(
        export["metadata"]["upstream"]["data_processing"],
        json!({
            "status": "failed",
            "task_id": step(&done, "data_processing")["task_id"],
            "error": "data_processing broke"
        })
    );
}

async fn cancelling_an_execution_cancels_its_queued_and_running_tasks(h: Harness) {
    let app = service!(h);
    // One slot: of the two roots, one is held and started, the other waits in the queue.
    let agent = worker(&app, 1).await;
    let (id, started) = start(&app, dag(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])])).await;
    h.state.platform.run_scheduler().await.unwrap();
    let (agent_id, key) = &agent;
    let held = send(
        &app,
        bearer(
            Method::GET,
            &format!("/api/v1/agents/{agent_id}/tasks"),
            key,
        ),
    )
    .await;
    let held = held.ok()[0].clone();
    let held_id = held["id"].as_str().unwrap().to_owned();
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{held_id}/start"), key)
            .set_json(json!({"attempt": 1})),
    )
    .await
    .ok();
    let queued_step = if held["step"] == "a" { "b" } else { "a" };

    let execution_id = started["execution_id"].as_str().unwrap();
    let cancel = format!("/api/v1/workflows/{id}/executions/{execution_id}/cancel");
    let cancelled = post(&app, &cancel, json!({})).await;
    let cancelled = cancelled.ok().clone();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(step(&cancelled, queued_step)["status"], "cancelled");
    assert_eq!(step(&cancelled, "c")["status"], "cancelled");
    let queued_task = step(&cancelled, queued_step)["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let queued = get(&app, &format!("/api/v1/tasks/{queued_task}")).await;
    assert_eq!(queued.ok()["status"], "cancelled");

    // The running one is asked to stop; when its agent reports, its step ends cancelled.
    let beat = send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/tasks/{held_id}/heartbeat"),
            key,
        )
        .set_json(json!({"attempt": 1})),
    )
    .await;
    assert_eq!(beat.ok()["cancel_requested"], true);
    let rerun = format!("/api/v1/workflows/{id}/executions/{execution_id}/rerun");
    let early = post(&app, &rerun, json!({"from_step": "a"})).await;
    assert!(
        early.problem(409)["detail"]
            .as_str()
            .unwrap()
            .contains("still has a task running"),
        "a step never runs twice at once"
    );
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/tasks/{held_id}/complete"),
            key,
        )
        .set_json(json!({"attempt": 1, "result": {}})),
    )
    .await
    .ok();
    let after = execution(&app, &id, &started).await;
    assert_eq!(after["status"], "cancelled");
    assert_eq!(
        step(&after, held["step"].as_str().unwrap())["status"],
        "cancelled"
    );
    assert!(
        work(&h, &app, &agent, &[]).await.is_empty(),
        "nothing more runs"
    );
    post(&app, &cancel, json!({})).await.problem(409);
    // Once its task has ended, the cancelled execution runs again, whole.
    let again = post(&app, &rerun, json!({"from_step": "c"})).await;
    assert_eq!(again.ok()["reruns"][0]["steps"], json!(["a", "b", "c"]));
    assert_eq!(work(&h, &app, &agent, &[]).await.len(), 1);
    assert_eq!(work(&h, &app, &agent, &[]).await.len(), 1);
    assert_eq!(work(&h, &app, &agent, &[]).await, ["c"]);
    assert_eq!(execution(&app, &id, &started).await["status"], "completed");
}

async fn a_failed_execution_reruns_from_its_failed_step_and_keeps_what_completed(h: Harness) {
    let app = service!(h);
    let agent = worker(&app, 4).await;
    let (id, started) = start(&app, seed_workflow()).await;
    let execution_id = started["execution_id"].as_str().unwrap().to_owned();
    let rerun = format!("/api/v1/workflows/{id}/executions/{execution_id}/rerun");
    post(&app, &rerun, json!({"from_step": "data_processing"}))
        .await
        .problem(409); // still running
    work(&h, &app, &agent, &[]).await;
    work(&h, &app, &agent, &["data_processing"]).await;
    let failed = execution(&app, &id, &started).await;
    assert_eq!(failed["status"], "failed");
    let ingested = step(&failed, "data_ingestion").clone();

    let unknown = post(&app, &rerun, json!({"from_step": "no_such_step"})).await;
    assert_eq!(unknown.problem(422)["errors"][0]["field"], "from_step");
    let again = post(&app, &rerun, json!({"from_step": "data_processing"})).await;
    let again = again.ok().clone();
    assert_eq!(again["status"], "running");
    assert_eq!(again["reruns"][0]["from_step"], "data_processing");
    assert_eq!(
        again["reruns"][0]["steps"],
        json!(["data_processing", "result_export"])
    );
    assert_eq!(
        step(&again, "data_ingestion"),
        &ingested,
        "kept, with its result"
    );
    assert_ne!(
        step(&again, "data_processing")["task_id"],
        step(&failed, "data_processing")["task_id"],
        "the step runs afresh as a new task"
    );
    assert_eq!(work(&h, &app, &agent, &[]).await, ["data_processing"]);
    assert_eq!(work(&h, &app, &agent, &[]).await, ["result_export"]);
    let done = execution(&app, &id, &started).await;
    assert_eq!(done["status"], "completed");
    let tasks = get(&app, &format!("/api/v1/tasks?execution_id={execution_id}")).await;
    let steps: Vec<&str> = tasks
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps.iter().filter(|s| **s == "data_ingestion").count(), 1);
    assert_eq!(
        steps.len(),
        4,
        "ingestion once, processing twice, export once"
    );
    post(&app, &rerun, json!({"from_step": "data_processing"}))
        .await
        .problem(409); // completed

    // A step's task is not retried alone.
    let first_try = step(&failed, "data_processing")["task_id"]
        .as_str()
        .unwrap();
    post(&app, &format!("/api/v1/tasks/{first_try}/retry"), json!({}))
        .await
        .problem(409);
}

async fn bad_workflows_and_executions_are_refused_and_change_nothing(h: Harness) {
    let app = service!(h);
    let refused = |body: Value| {
        let app = &app;
        async move {
            let reply = post(app, "/api/v1/workflows", body).await;
            reply.problem(422)["errors"].clone()
        }
    };
    let cycle = refused(dag(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"])])).await;
    let message = cycle[0]["message"].as_str().unwrap();
    assert!(
        message.contains("a -> b -> c -> a")
            || message.contains("b -> c -> a -> b")
            || message.contains("c -> a -> b -> c"),
        "{message}"
    );
    let own = refused(dag(&[("a", &["a"])])).await;
    assert_eq!(own[0]["field"], "steps[0].depends_on");
    let unknown = refused(dag(&[("a", &[]), ("b", &["z"])])).await;
    assert_eq!(unknown[0]["field"], "steps[1].depends_on");
    assert!(unknown[0]["message"].as_str().unwrap().contains("'z'"));
    let twice = refused(dag(&[("a", &[]), ("a", &[])])).await;
    assert_eq!(twice[0]["field"], "steps[1].name");
    let empty = refused(json!({"name": "nothing", "steps": []})).await;
    assert_eq!(empty[0]["field"], "steps");
    let mut kind = seed_workflow();
    kind["steps"][2]["type"] = json!("http_call");
    assert_eq!(refused(kind).await[0]["field"], "steps[2].type");
    let mut big = seed_workflow();
    big["steps"][0]["parameters"] = json!({"blob": "x".repeat(70_000)});
    assert_eq!(refused(big).await[0]["field"], "steps[0].parameters");
    let mut priority = seed_workflow();
    priority["steps"][1]["priority"] = json!(11);
    assert_eq!(refused(priority).await[0]["field"], "steps[1].priority");
    let mut extra = seed_workflow();
    extra["steps"][0]["retries"] = json!(3);
    post(&app, "/api/v1/workflows", extra).await.problem(422);
    assert!(get(&app, "/api/v1/workflows")
        .await
        .ok()
        .as_array()
        .unwrap()
        .is_empty());
    assert!(
        h.log.latest_events(10).await.unwrap().is_empty(),
        "no event either"
    );

    let created = post(&app, "/api/v1/workflows", seed_workflow()).await;
    let id = created.ok()["id"].as_str().unwrap().to_owned();
    let execute = format!("/api/v1/workflows/{id}/execute");
    let other = "00000000-0000-0000-0000-000000000001";
    let mismatch = post(&app, &execute, json!({"workflow_id": other})).await;
    assert_eq!(mismatch.problem(422)["errors"][0]["field"], "workflow_id");
    let same = post(&app, &execute, json!({"workflow_id": id, "parameters": {}})).await;
    let same = same.ok().clone();
    post(
        &app,
        &format!("/api/v1/workflows/{other}/execute"),
        json!({}),
    )
    .await
    .problem(404);
    get(&app, &format!("/api/v1/workflows/{id}/executions/{other}"))
        .await
        .problem(404);
    let big = json!({"parameters": {"blob": "x".repeat(70_000)}});
    assert_eq!(
        post(&app, &execute, big).await.problem(422)["errors"][0]["field"],
        "parameters"
    );
    let executions = get(&app, &format!("/api/v1/workflows/{id}/executions")).await;
    assert_eq!(
        executions.ok().as_array().unwrap().len(),
        1,
        "only the good execution was stored"
    );
    assert_eq!(
        get(&app, "/api/v1/tasks")
            .await
            .ok()
            .as_array()
            .unwrap()
            .len(),
        1,
        "and only its first step's task"
    );

    // Deleting is refused while an execution runs, and allowed once none does.
    let delete = format!("/api/v1/workflows/{id}");
    send(&app, admin(Method::DELETE, &delete))
        .await
        .problem(409);
    let execution_id = same["execution_id"].as_str().unwrap();
    post(
        &app,
        &format!("/api/v1/workflows/{id}/executions/{execution_id}/cancel"),
        json!({}),
    )
    .await
    .ok();
    let gone = send(&app, admin(Method::DELETE, &delete)).await;
    assert_eq!(gone.ok()["message"], "Workflow deleted successfully");
    get(&app, &delete).await.problem(404);

    // A viewer reads but changes nothing; an agent has no business here.
    let viewer = jwt(json!({"sub": "watcher", "role": "viewer"}));
    let listed = send(&app, bearer(Method::GET, "/api/v1/workflows", &viewer)).await;
    listed.ok();
    let create = send(
        &app,
        bearer(Method::POST, "/api/v1/workflows", &viewer).set_json(seed_workflow()),
    )
    .await;
    create.problem(403);
    let (_, key) = register(&app, seed_agent("nosy")).await;
    send(&app, bearer(Method::GET, "/api/v1/workflows", &key))
        .await
        .problem(403);
}

/// An execution outlives the server that started it: the app is dropped after the first step,
/// and a fresh one over the same database carries it on. No step runs twice; none is skipped.
#[actix_web::test]
async fn an_execution_carries_on_when_its_server_is_replaced_midway() {
    let url = adapters_postgres::testing::fresh_database().await;
    let settings = adapters_postgres::PoolSettings::default();
    let (id, started, agent) = {
        let store = Arc::new(
            adapters_postgres::PgStore::connect(&url, &settings)
                .await
                .unwrap(),
        );
        let h = Harness::on(store.clone());
        let app = service!(h);
        let agent = worker(&app, 4).await;
        let (id, started) = start(&app, seed_workflow()).await;
        assert_eq!(work(&h, &app, &agent, &[]).await, ["data_ingestion"]);
        // The second step is queued, in the same write as the first one's end.
        h.state.platform.run_scheduler().await.unwrap();
        drop(app);
        drop(h);
        store.close().await;
        (id, started, agent)
    };

    let store = Arc::new(
        adapters_postgres::PgStore::connect(&url, &settings)
            .await
            .unwrap(),
    );
    let h = Harness::replica(store, 2);
    let app = service!(h);
    let midway = execution(&app, &id, &started).await;
    assert_eq!(midway["status"], "running");
    assert_eq!(step(&midway, "data_processing")["status"], "running");
    assert_eq!(work(&h, &app, &agent, &[]).await, ["data_processing"]);
    assert_eq!(work(&h, &app, &agent, &[]).await, ["result_export"]);
    let done = execution(&app, &id, &started).await;
    assert_eq!(done["status"], "completed");
    let execution_id = started["execution_id"].as_str().unwrap();
    let tasks = get(&app, &format!("/api/v1/tasks?execution_id={execution_id}")).await;
    let mut steps: Vec<String> = tasks
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["step"].as_str().unwrap().to_owned())
        .collect();
    steps.sort();
    assert_eq!(
        steps,
        ["data_ingestion", "data_processing", "result_export"]
    );
}
