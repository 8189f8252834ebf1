//! Bad input: every invalid request gets its documented status in the problem envelope,
//! and changes nothing.

mod common;

use actix_web::http::Method;
use common::*;
use serde_json::json;

/// How many agents exist, read through the API.
macro_rules! agent_count {
    ($app:expr) => {
        send(&$app, admin(Method::GET, "/api/v1/agents"))
            .await
            .ok()
            .as_array()
            .unwrap()
            .len()
    };
}

#[actix_web::test]
async fn malformed_json_is_400() {
    let h = Harness::memory();
    let app = service!(h);
    for body in [
        "{\"name\": ",
        "not json",
        "{\"name\": \"a\"} trailing",
        "[1,2",
    ] {
        let reply = send(
            &app,
            admin(Method::POST, "/api/v1/agents")
                .insert_header(("content-type", "application/json"))
                .set_payload(body),
        )
        .await;
        let problem = reply.problem(400);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("malformed JSON"),
            "{problem}"
        );
    }
    // Valid JSON that is not an object never binds fields by position.
    let reply = send(
        &app,
        admin(Method::POST, "/api/v1/agents").set_json(json!(["a", ["gpu"]])),
    )
    .await;
    assert_eq!(reply.problem(422)["errors"][0]["field"], "body");
    assert_eq!(agent_count!(app), 0);
}

#[actix_web::test]
async fn unknown_fields_are_422_naming_the_field_so_nothing_is_mass_assigned() {
    let h = Harness::memory();
    let app = service!(h);
    for (field, value) in [
        ("status", json!("busy")),
        ("id", json!("x")),
        ("reliability", json!(0.0)),
    ] {
        let mut body = seed_agent("sneaky");
        body[field] = value;
        let reply = send(&app, admin(Method::POST, "/api/v1/agents").set_json(body)).await;
        let problem = reply.problem(422);
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (id, _) = register(&app, seed_agent("worker")).await;
    let reply = send(
        &app,
        admin(Method::PATCH, &format!("/api/v1/agents/{id}"))
            .set_json(json!({"current_tasks": 99})),
    )
    .await;
    assert_eq!(reply.problem(422)["errors"][0]["field"], "current_tasks");
    assert_eq!(agent_count!(app), 1);
}

#[actix_web::test]
async fn invalid_values_are_422_with_every_field_error() {
    let h = Harness::memory();
    let app = service!(h);
    let cases = [
        (json!({"capabilities": []}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"name": "a", "capabilities": "gpu"}), "capabilities"),
        (
            json!({"name": "a", "capabilities": ["ok", "bad cap!"]}),
            "capabilities[1]",
        ),
        (
            json!({"name": "a", "resources": {"memory": "lots"}}),
            "resources.memory",
        ),
        (
            json!({"name": "a", "resources": {"cpu": -1}}),
            "resources.cpu",
        ),
        (
            json!({"name": "a", "max_concurrent_tasks": 0}),
            "max_concurrent_tasks",
        ),
        (
            json!({"name": "a", "max_concurrent_tasks": -3}),
            "max_concurrent_tasks",
        ),
        (
            json!({"name": "a", "metadata": {"blob": "x".repeat(70 * 1024)}}),
            "metadata",
        ),
        (json!({"name": 42}), "name"),
    ];
    for (body, field) in cases {
        let reply = send(&app, admin(Method::POST, "/api/v1/agents").set_json(&body)).await;
        let problem = reply.problem(422);
        let fields: Vec<_> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect();
        assert!(fields.contains(&field.to_owned()), "{body} -> {problem}");
        assert!(problem["errors"][0]["message"].as_str().unwrap().len() > 3);
    }
    let too_many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let reply = send(
        &app,
        admin(Method::POST, "/api/v1/agents")
            .set_json(json!({"name": "a", "capabilities": too_many})),
    )
    .await;
    reply.problem(422);

    // Several problems at once are all reported.
    let reply = send(
        &app,
        admin(Method::POST, "/api/v1/agents").set_json(json!({
            "name": " ", "resources": {"gpu": "1Qi"}, "max_concurrent_tasks": 0
        })),
    )
    .await;
    assert_eq!(reply.problem(422)["errors"].as_array().unwrap().len(), 3);
    assert_eq!(agent_count!(app), 0);
}

#[actix_web::test]
async fn a_path_id_that_is_not_a_uuid_is_400_and_an_unknown_one_is_404() {
    let h = Harness::memory();
    let app = service!(h);
    let reply = send(&app, admin(Method::GET, "/api/v1/agents/not-a-uuid")).await;
    assert_eq!(
        reply.problem(400)["detail"],
        "path parameter 'agent_id' must be a UUID",
        "the API's words, not the parser's"
    );
    send(&app, admin(Method::DELETE, "/api/v1/agents/123"))
        .await
        .problem(400);
    send(
        &app,
        admin(Method::POST, "/api/v1/agents/xyz/heartbeat").set_json(json!({})),
    )
    .await
    .problem(400);
    let missing = send(
        &app,
        admin(
            Method::GET,
            "/api/v1/agents/6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f",
        ),
    )
    .await;
    assert_eq!(missing.problem(404)["detail"], "Agent not found");
}

#[actix_web::test]
async fn bad_query_parameters_are_400() {
    let h = Harness::memory();
    let app = service!(h);
    for query in [
        "status_filter=sleeping",
        "capability_filter=no%20spaces",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=garbage",
        "status=offline", // a typo of status_filter is refused, not ignored
    ] {
        let reply = send(&app, admin(Method::GET, &format!("/api/v1/agents?{query}"))).await;
        let detail = reply.problem(400)["detail"].as_str().unwrap().to_owned();
        assert!(
            !detail.contains("deserialize") && !detail.contains("Query"),
            "no parser text: {detail}"
        );
    }
}

#[actix_web::test]
async fn unknown_routes_are_404_and_wrong_methods_are_405_with_allow() {
    let h = Harness::memory();
    let app = service!(h);
    let reply = send(&app, admin(Method::GET, "/api/v1/nothing-here")).await;
    reply.problem(404);
    let reply = send(&app, req(Method::GET, "/no/such/page")).await;
    reply.problem(404);

    let reply = send(&app, admin(Method::PUT, "/api/v1/agents")).await;
    reply.problem(405);
    assert_eq!(reply.header("allow"), Some("GET, POST"));
    let reply = send(
        &app,
        admin(
            Method::POST,
            "/api/v1/agents/6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f",
        ),
    )
    .await;
    reply.problem(405);
    assert_eq!(reply.header("allow"), Some("GET, PATCH, DELETE"));
    let reply = send(&app, req(Method::DELETE, "/api/v1/health")).await;
    reply.problem(405);
    assert_eq!(reply.header("allow"), Some("GET"));
}

#[actix_web::test]
async fn an_oversized_body_is_413_and_a_non_json_body_is_415() {
    let h = Harness::memory();
    let app = service!(h);
    let huge = json!({"name": "a", "metadata": {"blob": "x".repeat(1024 * 1024 + 1)}});
    let reply = send(&app, admin(Method::POST, "/api/v1/agents").set_json(huge)).await;
    reply.problem(413);

    let reply = send(
        &app,
        admin(Method::POST, "/api/v1/agents")
            .insert_header(("content-type", "text/plain"))
            .set_payload(r#"{"name": "a"}"#),
    )
    .await;
    reply.problem(415);
    let reply = send(
        &app,
        admin(Method::POST, "/api/v1/agents").set_payload(r#"{"name": "a"}"#),
    )
    .await;
    reply.problem(415);
    assert_eq!(agent_count!(app), 0);
}

#[actix_web::test]
async fn deeply_nested_json_is_refused_before_it_is_parsed() {
    let h = Harness::memory();
    let app = service!(h);
    let deep = format!(
        r#"{{"name": "a", "metadata": {{"x": {}1{}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let reply = send(
        &app,
        admin(Method::POST, "/api/v1/agents")
            .insert_header(("content-type", "application/json"))
            .set_payload(deep),
    )
    .await;
    reply.problem(400);
    assert_eq!(agent_count!(app), 0);
}

#[actix_web::test]
async fn a_heartbeat_with_an_invalid_status_changes_nothing() {
    let h = Harness::memory();
    let app = service!(h);
    let (id, key) = register(&app, seed_agent("worker")).await;
    h.clock.advance(chrono::Duration::seconds(10));
    let reply = send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{id}/heartbeat"),
            &key,
        )
        .set_json(json!({"status": "offline", "metadata": {"load": 1}})),
    )
    .await;
    assert_eq!(reply.problem(422)["errors"][0]["field"], "status");
    let agent = send(&app, admin(Method::GET, &format!("/api/v1/agents/{id}"))).await;
    let agent = agent.ok();
    assert_eq!(
        agent["last_heartbeat"], agent["created_at"],
        "the heartbeat was not recorded"
    );
    assert!(agent["metadata"].get("load").is_none());
}
