//! The service endpoints and the cross-cutting behaviour every response shares.

mod common;

use actix_web::http::Method;
use common::*;
use serde_json::json;

#[actix_web::test]
async fn the_root_document_points_at_docs_and_health() {
    let h = Harness::memory();
    let app = service!(h);
    let reply = send(&app, req(Method::GET, "/")).await;
    let body = reply.ok();
    assert_eq!(body["message"], "Multi-Agent Platform API Server");
    assert_eq!(body["health"], "/api/v1/health");
    assert_eq!(body["docs"], "/docs");
    assert!(body["version"].is_string());
}

#[actix_web::test]
async fn health_has_the_seed_shape_and_counts_online_agents() {
    let h = Harness::memory();
    let app = service!(h);
    register(&app, seed_agent("a")).await;
    let (b, _) = register(&app, seed_agent("b")).await;
    send(
        &app,
        admin(Method::PATCH, &format!("/api/v1/agents/{b}"))
            .set_json(json!({"status": "suspended"})),
    )
    .await
    .ok();

    let reply = send(&app, req(Method::GET, "/api/v1/health")).await;
    let body = reply.ok();
    assert_eq!(body["status"], "healthy");
    assert_eq!(
        body["components"],
        json!({"platform": "healthy", "database": "embedded", "redis": "embedded"})
    );
    assert_eq!(
        body["metrics"]["active_agents"], 1,
        "suspended agents are not active"
    );
    assert_eq!(body["metrics"]["active_tasks"], 0);
    assert_eq!(body["metrics"]["active_connections"], 0);
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[actix_web::test]
async fn probes_answer_without_credentials() {
    let h = Harness::memory();
    let app = service!(h);
    assert_eq!(
        send(&app, req(Method::GET, "/livez")).await.ok()["status"],
        "ok"
    );
    assert_eq!(
        send(&app, req(Method::GET, "/readyz")).await.ok()["status"],
        "ready"
    );
}

#[actix_web::test]
async fn every_response_carries_a_request_id_and_security_headers() {
    let h = Harness::memory();
    let app = service!(h);
    let reply = send(&app, req(Method::GET, "/api/v1/agents")).await;
    reply.problem(401);
    let generated = reply
        .header("x-request-id")
        .expect("a generated request ID");
    assert_eq!(generated.len(), 36);
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));

    let reply = send(
        &app,
        req(Method::GET, "/livez").insert_header(("X-Request-Id", "trace-me-123")),
    )
    .await;
    assert_eq!(
        reply.header("x-request-id"),
        Some("trace-me-123"),
        "a client's ID is kept"
    );

    let reply = send(
        &app,
        req(Method::GET, "/livez").insert_header(("X-Request-Id", "x".repeat(200))),
    )
    .await;
    assert_ne!(
        reply.header("x-request-id"),
        Some("x".repeat(200).as_str()),
        "an oversized ID is replaced"
    );
}
