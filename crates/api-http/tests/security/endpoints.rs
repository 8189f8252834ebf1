//! Every endpoint family without credentials, with dead ones and with too small a role; wrong
//! methods; CORS; request deadlines.

use actix_web::http::Method;
use chrono::Duration;
use serde_json::{json, Value};

use crate::common::*;
use crate::service;

pub(crate) const ID: &str = "6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f";

/// One call of every endpoint family, and whether it only reads.
pub(crate) fn every_endpoint() -> Vec<(Method, String, bool)> {
    let mut calls = Vec::new();
    for (family, item) in [
        ("agents", true),
        ("tasks", false),
        ("resources", true),
        ("conflicts", false),
        ("workflows", false),
    ] {
        calls.push((Method::GET, format!("/api/v1/{family}"), true));
        calls.push((Method::POST, format!("/api/v1/{family}"), false));
        calls.push((Method::GET, format!("/api/v1/{family}/{ID}"), true));
        if item {
            calls.push((Method::PATCH, format!("/api/v1/{family}/{ID}"), false));
            calls.push((Method::DELETE, format!("/api/v1/{family}/{ID}"), false));
        }
    }
    for write in [
        "agents/{ID}/heartbeat",
        "tasks/{ID}/cancel",
        "tasks/{ID}/retry",
        "tasks/{ID}/start",
        "tasks/{ID}/heartbeat",
        "tasks/{ID}/complete",
        "tasks/{ID}/fail",
        "conflicts/{ID}/resolve",
        "conflicts/{ID}/dismiss",
        "workflows/{ID}/execute",
        "workflows/{ID}/executions/{ID}/cancel",
        "workflows/{ID}/executions/{ID}/rerun",
    ] {
        calls.push((
            Method::POST,
            format!("/api/v1/{}", write.replace("{ID}", ID)),
            false,
        ));
    }
    for read in [
        "agents/{ID}/tasks",
        "tasks/{ID}/history",
        "resources/{ID}/allocations",
        "dashboard/activity",
        "workflows/{ID}/executions",
        "workflows/{ID}/executions/{ID}",
    ] {
        calls.push((
            Method::GET,
            format!("/api/v1/{}", read.replace("{ID}", ID)),
            true,
        ));
    }
    calls.push((Method::DELETE, format!("/api/v1/workflows/{ID}"), false));
    calls
}

/// The admin-only endpoints.
pub(crate) fn admin_endpoints() -> Vec<(Method, String)> {
    vec![
        (Method::GET, "/api/v1/api-keys".into()),
        (Method::POST, "/api/v1/api-keys".into()),
        (Method::DELETE, format!("/api/v1/api-keys/{ID}")),
        (Method::GET, "/api/v1/users".into()),
        (Method::POST, "/api/v1/users".into()),
        (Method::PATCH, format!("/api/v1/users/{ID}")),
        (Method::DELETE, format!("/api/v1/users/{ID}")),
        (Method::GET, "/api/v1/audit".into()),
    ]
}

#[actix_web::test]
async fn every_endpoint_refuses_missing_and_dead_credentials() {
    let h = Harness::memory();
    let app = service!(h);
    let now = chrono::Utc::now().timestamp();
    let revoked = send(
        &app,
        admin(Method::POST, "/api/v1/api-keys").set_json(json!({"name": "old", "role": "admin"})),
    )
    .await;
    let revoked = revoked.ok().clone();
    send(
        &app,
        admin(
            Method::DELETE,
            &format!("/api/v1/api-keys/{}", revoked["id"].as_str().unwrap()),
        ),
    )
    .await
    .ok();
    let revoked = revoked["api_key"].as_str().unwrap().to_owned();
    let expiring = send(
        &app,
        admin(Method::POST, "/api/v1/api-keys").set_json(json!({
            "name": "short-lived",
            "role": "admin",
            "expires_at": (h.clock_now() + Duration::minutes(1)).to_rfc3339()
        })),
    )
    .await;
    let expired_key = expiring.ok()["api_key"].as_str().unwrap().to_owned();
    h.clock.advance(Duration::minutes(1));
    let expired = jwt(json!({"sub": "u", "role": "admin", "exp": now - 60}));
    let early = jwt(json!({"sub": "u", "role": "admin", "nbf": now + 3600}));
    let claims = json!({"sub": "u", "role": "admin", "exp": now + 3600});
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-secret-but-long-enough"),
    )
    .unwrap();
    let other_alg = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims.clone())
    );
    let mut calls: Vec<(Method, String)> = every_endpoint()
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    calls.extend(admin_endpoints());
    for (method, path) in calls {
        let none = send(&app, req(method.clone(), &path).set_json(json!({}))).await;
        none.problem(401);
        assert!(none.header("www-authenticate").is_some(), "{method} {path}");
        for token in [
            &revoked,
            &expired_key,
            &expired,
            &early,
            &forged,
            &other_alg,
            &unsigned,
        ] {
            send(
                &app,
                bearer(method.clone(), &path, token).set_json(json!({})),
            )
            .await
            .problem(401);
        }
    }
}

#[actix_web::test]
async fn roles_are_enforced_on_every_endpoint_and_refusals_change_nothing() {
    let h = Harness::memory();
    let app = service!(h);
    let viewer = jwt(json!({"sub": "v", "role": "viewer"}));
    let operator = jwt(json!({"sub": "o", "role": "operator"}));
    for (method, path, reads) in every_endpoint() {
        let reply = send(
            &app,
            bearer(method.clone(), &path, &viewer).set_json(json!({})),
        )
        .await;
        if reads {
            assert_ne!(reply.status.as_u16(), 403, "a viewer reads {method} {path}");
        } else {
            reply.problem(403);
        }
    }
    for (method, path) in admin_endpoints() {
        for token in [&viewer, &operator] {
            send(
                &app,
                bearer(method.clone(), &path, token).set_json(json!({})),
            )
            .await
            .problem(403);
        }
    }
    // An agent key reaches only its own agent and nothing administrative.
    let (a, key_a) = register(&app, seed_agent("a")).await;
    let (b, _) = register(&app, seed_agent("b")).await;
    for (method, path, body) in [
        (
            Method::POST,
            format!("/api/v1/agents/{b}/heartbeat"),
            json!({}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/agents/{a}"),
            json!({"status": "idle"}),
        ),
        (Method::DELETE, format!("/api/v1/agents/{a}"), json!({})),
        (
            Method::POST,
            "/api/v1/tasks".to_owned(),
            json!({"title": "t"}),
        ),
        (
            Method::POST,
            "/api/v1/resources".to_owned(),
            json!({"name": "p", "type": "gpu", "capacity": {"gpus": 1}}),
        ),
        (Method::GET, "/api/v1/api-keys".to_owned(), json!({})),
    ] {
        send(&app, bearer(method.clone(), &path, &key_a).set_json(body))
            .await
            .problem(403);
    }
    send(
        &app,
        bearer(Method::GET, &format!("/api/v1/agents/{b}"), &key_a),
    )
    .await
    .problem(404);
    let agents = send(&app, admin(Method::GET, "/api/v1/agents")).await;
    assert_eq!(
        agents.ok().as_array().unwrap().len(),
        2,
        "nothing was deleted"
    );
    let audit = send(
        &app,
        admin(Method::GET, "/api/v1/audit?action=access_denied&limit=1000"),
    )
    .await;
    assert!(
        audit.ok().as_array().unwrap().len() >= 10,
        "every refusal is on record"
    );
}

#[actix_web::test]
async fn a_wrong_method_on_a_protected_route_is_401_before_405_for_anonymous_callers() {
    let h = Harness::memory();
    let app = service!(h);
    let mut routes: Vec<String> = every_endpoint().into_iter().map(|(_, p, _)| p).collect();
    routes.extend(admin_endpoints().into_iter().map(|(_, p)| p));
    for path in routes {
        let anonymous = send(&app, req(Method::PUT, &path)).await;
        anonymous.problem(401);
        assert!(anonymous.header("allow").is_none(), "{path}");
        let forged = send(
            &app,
            req(Method::PUT, &path).insert_header(("X-API-Key", "made-up")),
        )
        .await;
        forged.problem(401);
        let known = send(&app, admin(Method::PUT, &path)).await;
        known.problem(405);
        assert!(known.header("allow").is_some(), "{path}");
    }
    // Open routes answer the method question to anyone.
    for path in ["/api/v1/health", "/api/v1/auth/login", "/livez"] {
        send(&app, req(Method::PUT, path)).await.problem(405);
    }
}

#[actix_web::test]
async fn cors_answers_only_the_configured_origins() {
    let mut h = Harness::memory();
    h.state = h
        .state
        .clone()
        .with_cors_origins(vec!["https://console.example.com".into()]);
    let app = service!(h);
    let allowed = send(
        &app,
        admin(Method::GET, "/api/v1/agents")
            .insert_header(("Origin", "https://console.example.com")),
    )
    .await;
    allowed.ok();
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://console.example.com")
    );
    let preflight = send(
        &app,
        req(Method::OPTIONS, "/api/v1/agents")
            .insert_header(("Origin", "https://console.example.com"))
            .insert_header(("Access-Control-Request-Method", "POST"))
            .insert_header((
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )),
    )
    .await;
    assert_eq!(preflight.status.as_u16(), 200);
    assert!(preflight
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));

    // A foreign page gets no CORS grant, so the browser keeps the answer from it, and its
    // preflight is refused.
    let foreign = send(
        &app,
        admin(Method::GET, "/api/v1/agents").insert_header(("Origin", "https://evil.example")),
    )
    .await;
    assert!(foreign.header("access-control-allow-origin").is_none());
    let foreign_preflight = send(
        &app,
        req(Method::OPTIONS, "/api/v1/agents")
            .insert_header(("Origin", "https://evil.example"))
            .insert_header(("Access-Control-Request-Method", "DELETE")),
    )
    .await;
    assert!(foreign_preflight
        .header("access-control-allow-origin")
        .is_none());
}

#[actix_web::test]
async fn a_request_past_its_deadline_is_503_in_the_envelope_with_every_header() {
    let mut h = Harness::memory();
    h.state = h
        .state
        .clone()
        .with_request_deadline(std::time::Duration::from_millis(200));
    let app = service!(h);
    let (agent, key) = register(&app, seed_agent("poller")).await;
    // A long poll that would wait 5 s for work that never comes.
    let reply = send(
        &app,
        bearer(
            Method::GET,
            &format!("/api/v1/agents/{agent}/tasks?status_filter=assigned&wait_seconds=5"),
            &key,
        ),
    )
    .await;
    assert_eq!(
        reply.problem(503)["detail"],
        "the request took too long; try again"
    );
    assert!(reply.header("x-request-id").is_some());
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
}
