//! Bad input: smuggled fields, oversized and nested bodies and heads, huge pages, NUL text that
//! PostgreSQL cannot store, quantities past the largest, and bodies sent to actions that take
//! none. Each is refused the same way on every store, and changes nothing.

use actix_web::http::Method;
use serde_json::{json, Value};

use crate::common::*;
use crate::{on_both_stores, service};

on_both_stores!(
    nul_characters_are_refused_naming_the_field_on_every_store,
    the_largest_quantities_round_trip_exactly_and_larger_ones_are_refused_in_every_spelling,
);

#[actix_web::test]
async fn smuggled_fields_oversized_and_nested_bodies_and_huge_pages_are_refused() {
    let h = Harness::memory();
    let app = service!(h);
    let (agent, key) = register(&app, seed_agent("a")).await;
    let smuggled: [(Method, String, Value); 6] = [
        (
            Method::POST,
            "/api/v1/tasks".into(),
            json!({"title": "t", "status": "completed"}),
        ),
        (
            Method::POST,
            "/api/v1/tasks".into(),
            json!({"title": "t", "assigned_agent": agent}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/agents/{agent}"),
            json!({"current_tasks": 0}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/agents/{agent}"),
            json!({"reliability": 1.0}),
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            json!({"username": "eve", "password": "a long password!", "role": "viewer", "is_admin": true}),
        ),
        (
            Method::POST,
            "/api/v1/conflicts".into(),
            json!({"conflict_type": "other", "description": "d", "severity": "low", "status": "resolved"}),
        ),
    ];
    for (method, path, body) in smuggled {
        send(&app, admin(method, &path).set_json(body))
            .await
            .problem(422);
    }
    // An agent cannot raise its own role or reach another through its key's claims.
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{agent}/heartbeat"),
            &key,
        )
        .set_json(json!({"role": "admin"})),
    )
    .await
    .problem(422);

    let big = "x".repeat(2 * 1024 * 1024);
    send(
        &app,
        admin(Method::POST, "/api/v1/tasks").set_json(json!({"title": "t", "description": big})),
    )
    .await
    .problem(413);
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    send(
        &app,
        admin(Method::POST, "/api/v1/tasks")
            .insert_header(("Content-Type", "application/json"))
            .set_payload(format!(
                "{{\"title\": \"t\", \"metadata\": {{\"x\": {deep}}}}}"
            )),
    )
    .await
    .problem(400);
    for path in [
        "/api/v1/agents?limit=100000",
        "/api/v1/tasks?limit=0",
        "/api/v1/conflicts?limit=-1",
        "/api/v1/audit?limit=5000",
    ] {
        send(&app, admin(Method::GET, path)).await.problem(400);
    }
    let tasks = send(&app, admin(Method::GET, "/api/v1/tasks")).await;
    assert!(
        tasks.ok().as_array().unwrap().is_empty(),
        "nothing was created"
    );
    let reply = send(&app, admin(Method::GET, "/api/v1/agents")).await;
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(reply.header(name), Some(value), "{name}");
    }
}

/// A head the HTTP parser cannot read never reaches the application; the connection answers it
/// itself, in the same envelope. Through a real socket, since only the real parser sees it.
#[actix_web::test]
async fn a_head_the_parser_refuses_is_answered_in_the_envelope() {
    use std::io::{Read, Write};
    let h = Harness::memory();
    let state = h.state.clone();
    let server = actix_web::HttpServer::new(move || {
        api_http::app(
            state.clone(),
            api_http::BodyLimit(api_http::extract::DEFAULT_MAX_BODY_BYTES),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    let running = server.run();
    let handle = running.handle();
    actix_web::rt::spawn(running);
    let raw = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(
                b"POST /api/v1/tasks HTTP/1.1\r\nHost: test\r\nIdempotency-Key: a\x01b\r\n\
                  Content-Length: 2\r\n\r\n{}",
            )
            .unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).into_owned()
    })
    .await
    .unwrap();
    handle.stop(false).await;
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{raw}"
    );
    let problem: Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(problem["type"], "/problems/bad-request");
    assert_eq!(problem["title"], "Bad Request");
    assert_eq!(problem["status"], 400);
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("control character"));
}

#[actix_web::test]
async fn a_request_head_over_32_kib_is_431_in_the_envelope() {
    let h = Harness::memory();
    let app = service!(h);
    for size in [33 * 1024, 130_000] {
        let reply = send(
            &app,
            admin(Method::GET, "/api/v1/agents").insert_header(("x-padding", "a".repeat(size))),
        )
        .await;
        reply.problem(431);
    }
    let long_query = format!("/api/v1/agents?capability_filter={}", "a".repeat(40_000));
    send(&app, admin(Method::GET, &long_query))
        .await
        .problem(431);
    send(
        &app,
        admin(Method::GET, "/api/v1/agents").insert_header(("x-padding", "a".repeat(30 * 1024))),
    )
    .await
    .ok();
}

/// PostgreSQL can store NUL neither in text nor in JSON: every store refuses it the same way,
/// naming the field, and stores nothing.
async fn nul_characters_are_refused_naming_the_field_on_every_store(h: Harness) {
    let app = service!(h);
    let (agent, key) = register(&app, seed_agent("worker")).await;
    let task = send(
        &app,
        admin(Method::POST, "/api/v1/tasks").set_json(json!({
            "title": "t", "required_capabilities": ["data_processing"]
        })),
    )
    .await;
    let task = task.ok()["id"].as_str().unwrap().to_owned();
    h.state.platform.run_scheduler().await.unwrap();
    let as_agent = |method: Method, path: &str| bearer(method, path, &key);
    let cases: Vec<(actix_web::test::TestRequest, Value, &str)> = vec![
        (
            admin(Method::POST, "/api/v1/tasks"),
            json!({"title": "t", "description": "d\u{0}"}),
            "description",
        ),
        (
            admin(Method::POST, "/api/v1/tasks"),
            json!({"title": "t", "required_capabilities": ["ok", "c\u{0}"]}),
            "required_capabilities[1]",
        ),
        (
            admin(Method::POST, "/api/v1/agents"),
            json!({"name": "a", "metadata": {"k\u{0}": "v"}}),
            "metadata.k\\u0000",
        ),
        (
            admin(Method::POST, "/api/v1/agents"),
            json!({"name": "a", "metadata": {"k": ["v\u{0}"]}}),
            "metadata.k[0]",
        ),
        (
            admin(Method::POST, "/api/v1/conflicts"),
            json!({"agent_id": agent, "task_id": task, "conflict_type": "other",
                   "description": "\u{0}", "severity": "low"}),
            "description",
        ),
        (
            as_agent(Method::POST, &format!("/api/v1/agents/{agent}/heartbeat")),
            json!({"metadata": {"note": "x\u{0}"}}),
            "metadata.note",
        ),
        (
            as_agent(Method::POST, &format!("/api/v1/tasks/{task}/heartbeat")),
            json!({"attempt": 1, "message": "m\u{0}"}),
            "message",
        ),
        (
            as_agent(Method::POST, &format!("/api/v1/tasks/{task}/fail")),
            json!({"attempt": 1, "error": "e\u{0}"}),
            "error",
        ),
        (
            as_agent(Method::POST, &format!("/api/v1/tasks/{task}/complete")),
            json!({"attempt": 1, "result": {"out": "\u{0}"}}),
            "result.out",
        ),
        (
            admin(Method::POST, "/api/v1/resources"),
            json!({"name": "gpus", "type": "gpu", "capacity": {"gpu": 1}, "metadata": {"m": "\u{0}"}}),
            "metadata.m",
        ),
    ];
    for (request, body, field) in cases {
        let reply = send(&app, request.set_json(body.clone())).await;
        assert_eq!(reply.problem(422)["errors"][0]["field"], field, "{body}");
    }
    // Nothing was stored: one agent, one task, still assigned; no conflict, no pool.
    let agents = send(&app, admin(Method::GET, "/api/v1/agents")).await;
    assert_eq!(agents.ok().as_array().unwrap().len(), 1);
    let tasks = send(&app, admin(Method::GET, "/api/v1/tasks")).await;
    assert_eq!(tasks.ok().as_array().unwrap().len(), 1);
    assert_eq!(tasks.ok()[0]["status"], "assigned");
    let conflicts = send(&app, admin(Method::GET, "/api/v1/conflicts")).await;
    assert!(conflicts.ok().as_array().unwrap().is_empty());
    // Query strings too: 400 naming the parameter, never a store error.
    for path in [
        "/api/v1/agents?capability_filter=a%00b",
        "/api/v1/tasks?capability_filter=%00",
        "/api/v1/resources?type_filter=gpu%00",
    ] {
        let reply = send(&app, admin(Method::GET, path)).await;
        let detail = reply.problem(400)["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains("NUL"), "{path}: {detail}");
    }
    // The same text without the NUL is stored faithfully, other control characters included.
    let kept = send(
        &app,
        admin(Method::POST, "/api/v1/tasks")
            .set_json(json!({"title": "t", "description": "a\u{1}b\u{7f}c\u{2028}"})),
    )
    .await;
    assert_eq!(kept.ok()["description"], "a\u{1}b\u{7f}c\u{2028}");
}

async fn the_largest_quantities_round_trip_exactly_and_larger_ones_are_refused_in_every_spelling(
    h: Harness,
) {
    let app = service!(h);
    let max = json!(9_223_372_036_854_775_807_i64);
    let pool = send(
        &app,
        admin(Method::POST, "/api/v1/resources").set_json(json!({
            "name": "huge", "type": "storage",
            "capacity": {"bytes": max, "blocks": "7Ei", "slices": "9007199254740993.5"}
        })),
    )
    .await;
    let pool = pool.ok().clone();
    assert_eq!(pool["capacity"]["bytes"], max);
    assert_eq!(pool["available"]["bytes"], max);
    assert_eq!(pool["available"]["blocks"], 8_070_450_532_247_928_832_i64);
    assert_eq!(pool["available"]["slices"], "9007199254740993.5");
    // Allocated and available stay exact with a claim on the pool.
    register(
        &app,
        json!({"name": "w", "capabilities": [], "resources": {"cpu": 2}}),
    )
    .await;
    send(
        &app,
        admin(Method::POST, "/api/v1/tasks").set_json(json!({
            "title": "t", "resource_claims": [{"resource_id": "huge", "amount": {"bytes": 1}}]
        })),
    )
    .await
    .ok();
    assert_eq!(h.state.platform.run_scheduler().await.unwrap(), 1);
    let id = pool["id"].as_str().unwrap();
    let after = send(&app, admin(Method::GET, &format!("/api/v1/resources/{id}"))).await;
    assert_eq!(after.ok()["allocated"]["bytes"], 1);
    assert_eq!(
        after.ok()["available"]["bytes"],
        9_223_372_036_854_775_806_i64
    );
    for too_large in [
        json!(9_223_372_036_854_775_808_u64),
        json!("8Ei"),
        json!("68719476736Gi"),
        json!("79228162514264337593543950336"),
        json!("1e28"),
        json!(18_446_744_073_709_551_615_u64),
    ] {
        let reply = send(
            &app,
            admin(Method::POST, "/api/v1/resources").set_json(json!({
                "name": "too-big", "type": "storage", "capacity": {"bytes": too_large}
            })),
        )
        .await;
        let problem = reply.problem(422);
        assert_eq!(
            problem["errors"][0]["field"], "capacity.bytes",
            "{too_large}"
        );
    }
    let pools = send(&app, admin(Method::GET, "/api/v1/resources")).await;
    assert_eq!(pools.ok().as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn actions_without_fields_hold_their_bodies_to_the_same_rules() {
    let h = Harness::memory();
    let app = service!(h);
    let (agent, _) = register(&app, seed_agent("worker")).await;
    let task = send(
        &app,
        admin(Method::POST, "/api/v1/tasks").set_json(json!({"title": "t"})),
    )
    .await;
    let task = task.ok()["id"].as_str().unwrap().to_owned();
    let pool = send(
        &app,
        admin(Method::POST, "/api/v1/resources")
            .set_json(json!({"name": "p", "type": "gpu", "capacity": {"gpus": 1}})),
    )
    .await;
    let pool = pool.ok()["id"].as_str().unwrap().to_owned();
    let calls = [
        (Method::POST, format!("/api/v1/tasks/{task}/cancel")),
        (Method::POST, format!("/api/v1/tasks/{task}/retry")),
        (Method::DELETE, format!("/api/v1/agents/{agent}")),
        (Method::DELETE, format!("/api/v1/resources/{pool}")),
        (
            Method::DELETE,
            "/api/v1/api-keys/6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f".to_owned(),
        ),
        (
            Method::DELETE,
            "/api/v1/users/6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f".to_owned(),
        ),
    ];
    for (method, path) in &calls {
        let call = || admin(method.clone(), path);
        send(
            &app,
            call()
                .insert_header(("content-type", "application/json"))
                .set_payload("{\"max_attempts\": "),
        )
        .await
        .problem(400);
        send(
            &app,
            call()
                .insert_header(("content-type", "text/plain"))
                .set_payload("cancel it"),
        )
        .await
        .problem(415);
        let unknown = send(&app, call().set_json(json!({"max_attempts": 100}))).await;
        assert_eq!(
            unknown.problem(422)["errors"][0]["field"],
            "max_attempts",
            "{path}"
        );
    }
    // Refused bodies changed nothing.
    let now = send(&app, admin(Method::GET, &format!("/api/v1/tasks/{task}"))).await;
    assert_eq!(now.ok()["status"], "pending");
    assert_eq!(now.ok()["max_attempts"], 3);
    let agents = send(&app, admin(Method::GET, "/api/v1/agents")).await;
    assert_eq!(agents.ok().as_array().unwrap().len(), 1);
    // No body, or `{}`, is the ordinary call.
    send(
        &app,
        admin(Method::POST, &format!("/api/v1/tasks/{task}/cancel")).set_json(json!({})),
    )
    .await
    .ok();
    send(
        &app,
        admin(Method::POST, &format!("/api/v1/tasks/{task}/retry")),
    )
    .await
    .ok();
    send(
        &app,
        admin(Method::DELETE, &format!("/api/v1/agents/{agent}")),
    )
    .await
    .ok();
}
