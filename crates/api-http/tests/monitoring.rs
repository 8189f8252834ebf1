//! What operators watch: Prometheus metrics, the dashboard summary, agents' performance, the
//! readiness probe, and the monitoring files shipped in `deploy/monitoring`.

mod common;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::Method;
use actix_web::test::TestRequest;
use chrono::Duration;
use common::*;
use serde_json::{json, Value};

/// A `GET /metrics` answer: its status, content type and text.
async fn scrape<S, B>(app: &S, request: TestRequest) -> (u16, String, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = actix_web::test::call_service(app, request.to_request()).await;
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = actix_web::test::read_body(response).await;
    spec::check("GET", "/metrics", status, &kind, &Value::Null);
    (status, kind, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The value of the sample named exactly `series` (name and labels, as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn task_body(title: &str, priority: i64) -> Value {
    json!({
        "title": title,
        "priority": priority,
        "required_capabilities": ["data_processing"],
    })
}

async fn submit<S, B>(app: &S, title: &str, priority: i64) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let reply = send(
        app,
        admin(Method::POST, "/api/v1/tasks").set_json(task_body(title, priority)),
    )
    .await;
    reply.ok()["id"].as_str().unwrap().to_owned()
}

/// Starts and completes `task` as its agent, `seconds` apart on the manual clock.
async fn run<S, B>(h: &Harness, app: &S, task: &str, key: &str, seconds: i64)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    send(
        app,
        bearer(Method::POST, &format!("/api/v1/tasks/{task}/start"), key)
            .set_json(json!({"attempt": 1})),
    )
    .await
    .ok();
    h.clock.advance(Duration::seconds(seconds));
    send(
        app,
        bearer(Method::POST, &format!("/api/v1/tasks/{task}/complete"), key)
            .set_json(json!({"attempt": 1, "result": {}})),
    )
    .await
    .ok();
}

async fn metrics_count_requests_by_route_and_the_work_that_flows(h: Harness) {
    let app = service!(h);
    let (agent, key) = register(&app, seed_agent("worker")).await;
    for _ in 0..2 {
        send(&app, admin(Method::GET, &format!("/api/v1/agents/{agent}")))
            .await
            .ok();
    }
    send(&app, admin(Method::GET, "/api/v1/agents/not-a-uuid"))
        .await
        .problem(400);
    let task = submit(&app, "counted", 7).await;
    submit(&app, "waiting", 3).await;
    send(
        &app,
        admin(Method::POST, "/api/v1/conflicts").set_json(json!({
            "conflict_type": "resource_contention", "description": "two want one", "severity": "high"
        })),
    )
    .await
    .ok();
    h.clock.advance(Duration::seconds(4));
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    run(&h, &app, &task, &key, 30).await;

    let (status, kind, text) = scrape(&app, req(Method::GET, "/metrics")).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let agents_route = "method=\"GET\",path=\"/api/v1/agents/{agent_id}\"";
    assert_eq!(
        sample(
            &text,
            &format!("http_requests_total{{{agents_route},status=\"200\"}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("http_requests_total{{{agents_route},status=\"400\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("http_request_duration_seconds_count{{{agents_route}}}")
        ),
        Some(3.0)
    );
    assert!(
        !text.contains(&agent) && !text.contains("not-a-uuid"),
        "paths are route templates, never raw IDs"
    );
    assert_eq!(
        sample(&text, "agent_platform_tasks_submitted_total"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "agent_platform_tasks_assigned_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "agent_platform_tasks_finished_total{outcome=\"completed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "agent_platform_tasks_finished_total{outcome=\"failed\"}"
        ),
        Some(0.0)
    );
    // Waited 4 s for its assignment, ran 30 s.
    assert_eq!(
        sample(&text, "agent_platform_task_assignment_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "agent_platform_task_assignment_seconds_sum"),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            "agent_platform_task_assignment_seconds_bucket{le=\"2.5\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "agent_platform_task_assignment_seconds_bucket{le=\"5\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "agent_platform_task_run_seconds_sum"),
        Some(30.0)
    );
    assert!(sample(&text, "agent_platform_scheduler_pass_seconds_count").unwrap() >= 1.0);
    assert_eq!(
        sample(
            &text,
            "agent_platform_events_published_total{channel=\"task_activity\"}"
        ),
        Some(5.0),
        "submitted twice, assigned, started, completed"
    );
    assert_eq!(
        sample(
            &text,
            "agent_platform_conflicts_total{type=\"resource_contention\",severity=\"high\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "agent_platform_task_retries_total"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "agent_platform_metric_series_lost_total"),
        Some(0.0)
    );
    // Platform-wide gauges, from the store.
    assert_eq!(sample(&text, "agent_platform_store_up"), Some(1.0));
    assert_eq!(
        sample(&text, "agent_platform_active_agents_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "agent_platform_active_tasks_total"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "agent_platform_agent_slots"), Some(1.0));
    assert_eq!(
        sample(&text, "agent_platform_agents{status=\"idle\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "agent_platform_queue_depth{priority=\"3\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "agent_platform_queue_depth{priority=\"7\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "websocket_connections_total"), Some(0.0));
}

async fn the_summary_counts_what_the_filtered_lists_return(h: Harness) {
    let app = service!(h);
    // One agent completes a task, then holds another; one more is idle and one suspended.
    let (_, key_a) = register(&app, seed_agent("a")).await;
    let done = submit(&app, "done", 9).await;
    h.state.platform.run_scheduler().await.unwrap();
    run(&h, &app, &done, &key_a, 1).await;
    submit(&app, "held", 8).await;
    h.state.platform.run_scheduler().await.unwrap();
    register(&app, seed_agent("b")).await;
    let (c, _) = register(&app, seed_agent("c")).await;
    send(
        &app,
        admin(Method::PATCH, &format!("/api/v1/agents/{c}"))
            .set_json(json!({"status": "suspended"})),
    )
    .await
    .ok();
    submit(&app, "pending", 1).await;
    let cancelled = submit(&app, "cancelled", 1).await;
    send(
        &app,
        admin(Method::POST, &format!("/api/v1/tasks/{cancelled}/cancel")),
    )
    .await
    .ok();
    send(
        &app,
        admin(Method::POST, "/api/v1/resources").set_json(json!({
            "name": "gpu_cluster_01", "type": "gpu", "capacity": {"gpus": 4}
        })),
    )
    .await
    .ok();
    for severity in ["low", "high"] {
        send(
            &app,
            admin(Method::POST, "/api/v1/conflicts").set_json(json!({
                "conflict_type": "other", "description": "noise", "severity": severity
            })),
        )
        .await
        .ok();
    }

    let summary = send(&app, admin(Method::GET, "/api/v1/dashboard/summary")).await;
    let summary = summary.ok().clone();
    let listed = |path: String| {
        let app = &app;
        async move {
            let reply = send(app, admin(Method::GET, &path)).await;
            reply.ok().as_array().unwrap().len() as u64
        }
    };
    for (section, path, statuses) in [
        (
            "agents",
            "/api/v1/agents",
            &["idle", "active", "busy", "draining", "offline", "suspended"][..],
        ),
        (
            "tasks",
            "/api/v1/tasks",
            &[
                "pending",
                "assigned",
                "running",
                "completed",
                "failed",
                "cancelled",
                "expired",
            ][..],
        ),
        (
            "resources",
            "/api/v1/resources",
            &["available", "in_use", "exhausted", "maintenance"][..],
        ),
        (
            "conflicts",
            "/api/v1/conflicts",
            &["open", "resolved", "dismissed"][..],
        ),
    ] {
        assert_eq!(
            summary[section]["total"],
            listed(format!("{path}?limit=1000")).await,
            "{section} total"
        );
        for status in statuses {
            assert_eq!(
                summary[section][*status],
                listed(format!("{path}?status_filter={status}&limit=1000")).await,
                "{section} {status}"
            );
        }
    }
    assert_eq!(summary["agents"]["idle"], 1);
    assert_eq!(summary["agents"]["busy"], 1);
    assert_eq!(summary["agents"]["suspended"], 1);
    assert_eq!(summary["tasks"]["total"], 4);
    assert_eq!(summary["tasks"]["in_progress"], 1);
    assert_eq!(summary["tasks"]["completed"], 1);
    assert_eq!(summary["conflicts"]["open"], 2);
    assert_eq!(summary["resources"]["available"], 1);
    assert_eq!(
        summary["workflows"],
        json!({"total": 0, "running_executions": 0})
    );
    assert_eq!(summary["websocket_connections"], 0);
    // Readers only.
    send(
        &app,
        bearer(Method::GET, "/api/v1/dashboard/summary", &key_a),
    )
    .await
    .problem(403);
}

async fn performance_is_computed_from_the_tasks_each_agent_ended(h: Harness) {
    let app = service!(h);
    let (busy, key) = register(&app, seed_agent("busy")).await;
    let (idle, idle_key) = register(&app, seed_agent("idle")).await;
    // Only `busy` can take these.
    send(
        &app,
        admin(Method::PATCH, &format!("/api/v1/agents/{idle}"))
            .set_json(json!({"status": "draining"})),
    )
    .await
    .ok();
    for seconds in [10, 30] {
        let task = submit(&app, "timed", 5).await;
        h.state.platform.run_scheduler().await.unwrap();
        run(&h, &app, &task, &key, seconds).await;
    }
    let failing = submit(&app, "failing", 5).await;
    h.state.platform.run_scheduler().await.unwrap();
    send(
        &app,
        bearer(Method::POST, &format!("/api/v1/tasks/{failing}/fail"), &key)
            .set_json(json!({"attempt": 1, "error": "broken", "retryable": false})),
    )
    .await
    .ok();
    submit(&app, "held", 5).await;
    h.state.platform.run_scheduler().await.unwrap();

    let one = send(
        &app,
        admin(
            Method::GET,
            &format!("/api/v1/metrics/performance?agent_id={busy}&time_range=15m"),
        ),
    )
    .await;
    let one = one.ok().as_array().unwrap().clone();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["agent_id"], busy.as_str());
    assert_eq!(one[0]["time_range"], "15m");
    let m = &one[0]["metrics"];
    assert_eq!(
        (m["tasks_completed"].clone(), m["tasks_failed"].clone()),
        (json!(2), json!(1))
    );
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    assert!(close(&m["success_rate"], 2.0 / 3.0), "{m}");
    assert!(close(&m["avg_duration_seconds"], 20.0), "{m}");
    assert!(close(&m["p50_duration_seconds"], 20.0), "{m}");
    assert!(close(&m["p95_duration_seconds"], 29.0), "{m}");
    assert!(close(&m["throughput_per_minute"], 2.0 / 15.0), "{m}");
    assert_eq!(m["current_load"], 1);
    assert!(close(&m["utilization"], 1.0), "one slot, held");
    assert!(m["reliability"].is_number());

    // An hour later the 15-minute span holds nothing; the day still does.
    h.clock.advance(Duration::hours(1));
    let later = |range: &'static str| {
        let (app, busy) = (&app, busy.clone());
        async move {
            let path = format!("/api/v1/metrics/performance?agent_id={busy}&time_range={range}");
            send(app, admin(Method::GET, &path)).await.ok()[0]["metrics"].clone()
        }
    };
    let quarter = later("15m").await;
    assert_eq!(
        (
            quarter["tasks_completed"].clone(),
            quarter["success_rate"].clone()
        ),
        (json!(0), Value::Null)
    );
    assert_eq!(later("24h").await["tasks_completed"], 2);

    // An agent with no tasks, asking for itself (the default span is an hour).
    let own = send(
        &app,
        bearer(Method::GET, "/api/v1/metrics/performance", &idle_key),
    )
    .await;
    let own = own.ok().as_array().unwrap().clone();
    assert_eq!(own.len(), 1, "an agent sees only itself");
    assert_eq!(own[0]["agent_id"], idle.as_str());
    assert_eq!(own[0]["time_range"], "1h");
    assert_eq!(
        own[0]["metrics"],
        json!({
            "tasks_completed": 0, "tasks_failed": 0, "success_rate": null,
            "avg_duration_seconds": null, "p50_duration_seconds": null,
            "p95_duration_seconds": null, "throughput_per_minute": 0.0,
            "current_load": 0, "utilization": 0.0, "reliability": own[0]["metrics"]["reliability"]
        })
    );
    // ...and not another one.
    send(
        &app,
        bearer(
            Method::GET,
            &format!("/api/v1/metrics/performance?agent_id={busy}"),
            &idle_key,
        ),
    )
    .await
    .problem(404);

    // Every agent, a page at a time.
    let all = send(
        &app,
        admin(Method::GET, "/api/v1/metrics/performance?limit=1"),
    )
    .await;
    assert_eq!(all.ok().as_array().unwrap().len(), 1);
    assert!(all.header("link").unwrap().contains("cursor="));

    let bad = send(
        &app,
        admin(Method::GET, "/api/v1/metrics/performance?time_range=2h"),
    )
    .await;
    assert!(bad.problem(400)["detail"]
        .as_str()
        .unwrap()
        .contains("time_range"));
    let bad = send(
        &app,
        admin(Method::GET, "/api/v1/metrics/performance?limit=5000"),
    )
    .await;
    assert!(bad.problem(400)["detail"]
        .as_str()
        .unwrap()
        .contains("limit"));
    let unknown = uuid::Uuid::new_v4();
    send(
        &app,
        admin(
            Method::GET,
            &format!("/api/v1/metrics/performance?agent_id={unknown}"),
        ),
    )
    .await
    .problem(404);
}

on_both_stores!(
    metrics_count_requests_by_route_and_the_work_that_flows,
    the_summary_counts_what_the_filtered_lists_return,
    performance_is_computed_from_the_tasks_each_agent_ended,
);

#[actix_web::test]
async fn metrics_can_be_put_behind_a_token() {
    let mut h = Harness::memory();
    h.state = h
        .state
        .with_metrics_token(Some("scrape-token-0123456789".into()));
    let app = service!(h);
    for request in [
        req(Method::GET, "/metrics"),
        bearer(Method::GET, "/metrics", "scrape-token-wrong-6789"),
        bearer(Method::GET, "/metrics", ADMIN_KEY),
    ] {
        let reply = send(&app, request).await;
        reply.problem(401);
        assert!(reply.header("www-authenticate").is_some());
    }
    let (status, _, text) = scrape(
        &app,
        bearer(Method::GET, "/metrics", "scrape-token-0123456789"),
    )
    .await;
    assert_eq!(status, 200);
    // The scheme's spelling does not matter, as for credentials.
    let spelt = req(Method::GET, "/metrics")
        .insert_header(("Authorization", "bearer scrape-token-0123456789"));
    assert_eq!(scrape(&app, spelt).await.0, 200);
    assert!(text.contains("# TYPE http_requests_total counter"));
}

#[actix_web::test]
async fn readiness_follows_the_replicas_phase() {
    let h = Harness::memory();
    let app = service!(h);
    for phase in [api_http::Phase::Starting, api_http::Phase::Draining] {
        h.state.readiness.set(phase);
        send(&app, req(Method::GET, "/readyz")).await.problem(503);
        send(&app, req(Method::GET, "/livez")).await.ok();
    }
    h.state.readiness.set(api_http::Phase::Ready);
    send(&app, req(Method::GET, "/readyz")).await.ok();
}

/// Every metric the shipped dashboards and alerting rules query is one the server exposes.
#[actix_web::test]
async fn the_monitoring_files_query_only_metrics_the_server_exposes() {
    let h = Harness::memory();
    let app = service!(h);
    let (_, _, text) = scrape(&app, req(Method::GET, "/metrics")).await;
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring");
    let files = [
        "grafana/dashboards/agent-platform-dashboard.json",
        "prometheus/rules/agent-platform.yml",
    ];
    let mut queried = std::collections::BTreeSet::new();
    // The dashboard is valid JSON with the seed's panels and the platform's own.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(files[0])).unwrap())
            .expect("the dashboard is JSON");
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert!(titles.len() >= 15, "{titles:?}");
    for file in files {
        let content = std::fs::read_to_string(root.join(file)).unwrap();
        for word in content.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let metric = ["agent_platform_", "http_", "websocket_"]
                .iter()
                .any(|p| word.starts_with(p));
            if metric {
                queried.insert(
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word)
                        .to_owned(),
                );
            }
        }
    }
    assert!(
        queried.len() >= 15,
        "the files query the platform: {queried:?}"
    );
    let missing: Vec<&String> = queried
        .iter()
        .filter(|m| !exposed.contains(m.as_str()))
        .collect();
    assert!(missing.is_empty(), "queried but not exposed: {missing:?}");
}
