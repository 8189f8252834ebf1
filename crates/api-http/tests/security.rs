//! The API as an attacker sees it (OWASP API Security Top 10, 2023): every endpoint family
//! without credentials, with dead credentials and with too small a role; smuggled fields,
//! oversized and deeply nested bodies, huge pages; bursts past the rate limits; CORS and the
//! security headers. (Agents reading each other's events over the WebSocket: `websocket.rs`.) Each refusal has the right status and changes nothing.

mod common;

use actix_web::http::Method;
use chrono::Duration;
use common::*;
use domain::limit::Rate;
use serde_json::{json, Value};

const ID: &str = "6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f";

/// One call of every endpoint family, and whether it only reads.
fn every_endpoint() -> Vec<(Method, String, bool)> {
    let mut calls = Vec::new();
    for (family, item) in [
        ("agents", true),
        ("tasks", false),
        ("resources", true),
        ("conflicts", false),
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
    ] {
        calls.push((
            Method::GET,
            format!("/api/v1/{}", read.replace("{ID}", ID)),
            true,
        ));
    }
    calls
}

/// The admin-only endpoints.
fn admin_endpoints() -> Vec<(Method, String)> {
    vec![
        (Method::GET, "/api/v1/api-keys".into()),
        (Method::POST, "/api/v1/api-keys".into()),
        (Method::DELETE, format!("/api/v1/api-keys/{ID}")),
        (Method::GET, "/api/v1/users".into()),
        (Method::POST, "/api/v1/users".into()),
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

#[actix_web::test]
async fn a_burst_past_the_rate_limit_is_429_for_that_credential_only() {
    let h = Harness::memory_with(|s| {
        s.rate_limit = Some(Rate {
            per_second: 1.0,
            burst: 5,
        });
        s.login_rate_limit = Some(Rate {
            per_second: 1.0 / 60.0,
            burst: 3,
        });
    });
    let app = service!(h);
    for _ in 0..5 {
        send(&app, admin(Method::GET, "/api/v1/agents")).await.ok();
    }
    let limited = send(&app, admin(Method::GET, "/api/v1/agents")).await;
    limited.problem(429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    // Another credential has its own bucket; health checks are never limited.
    let other = jwt(json!({"sub": "someone-else"}));
    send(&app, bearer(Method::GET, "/api/v1/agents", &other))
        .await
        .ok();
    for _ in 0..10 {
        send(&app, req(Method::GET, "/api/v1/health")).await.ok();
    }
    h.clock.advance(Duration::seconds(1));
    send(&app, admin(Method::GET, "/api/v1/agents")).await.ok();

    // Sign-in is limited per username and address, more strictly.
    for _ in 0..3 {
        send(
            &app,
            req(Method::POST, "/api/v1/auth/login")
                .set_json(json!({"username": "root", "password": "guess"})),
        )
        .await
        .problem(401);
    }
    let locked = send(
        &app,
        req(Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": "root", "password": "guess"})),
    )
    .await;
    locked.problem(429);
    assert_eq!(locked.header("retry-after"), Some("60"));
    // That does not lock the user out for everyone else.
    send(
        &app,
        req(Method::POST, "/api/v1/auth/login")
            .peer_addr("10.0.0.2:40000".parse().unwrap())
            .set_json(json!({"username": "root", "password": "guess"})),
    )
    .await
    .problem(401);
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
async fn made_up_or_respelt_credentials_earn_no_fresh_bucket() {
    let h = Harness::memory_with(|s| {
        s.rate_limit = Some(Rate {
            per_second: 1.0,
            burst: 3,
        });
    });
    let app = service!(h);
    // Invalid credentials are limited by where they come from, however many are made up.
    for n in 0..3 {
        send(
            &app,
            bearer(Method::GET, "/api/v1/agents", &format!("mapk_fake{n}")),
        )
        .await
        .problem(401);
    }
    send(&app, bearer(Method::GET, "/api/v1/agents", "mapk_fake-3"))
        .await
        .problem(429);
    // A valid key spelt another way is still the same caller.
    let key = send(
        &app,
        admin(Method::POST, "/api/v1/api-keys").set_json(json!({"name": "k", "role": "viewer"})),
    )
    .await;
    let key = key.ok()["api_key"].as_str().unwrap().to_owned();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        send(
            &app,
            req(Method::GET, "/api/v1/agents")
                .insert_header(("Authorization", format!("{scheme} {key}"))),
        )
        .await
        .ok();
    }
    send(
        &app,
        req(Method::GET, "/api/v1/agents").insert_header(("X-API-Key", key.as_str())),
    )
    .await
    .problem(429);
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

/// A sign-in to `/api/v1/auth/login` from an address.
fn login_from(address: &str, username: &str, password: &str) -> actix_web::test::TestRequest {
    req(Method::POST, "/api/v1/auth/login")
        .peer_addr(format!("{address}:40000").parse().unwrap())
        .set_json(json!({"username": username, "password": password}))
}

#[actix_web::test]
async fn a_sign_in_flood_is_refused_before_hashing_with_retry_after() {
    // One hashing slot and its queue of four: a flood of made-up usernames from many
    // addresses gets five checks under way, and every other attempt is refused at once.
    let h = Harness::memory_with(|s| s.password_hash_concurrency = 1);
    let app = service!(h);
    let flood = (0..16).map(|i| {
        send(
            &app,
            login_from(&format!("10.1.0.{i}"), &format!("nobody{i}"), "guess"),
        )
    });
    let replies = futures_util::future::join_all(flood).await;
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(refused.len(), 11, "{replies:?}");
    for reply in &refused {
        reply.problem(503);
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    assert!(replies
        .iter()
        .filter(|r| r.status != 503)
        .all(|r| r.status == 401));
    // The slots are free again afterwards.
    send(&app, login_from("10.1.1.1", "nobody", "guess"))
        .await
        .problem(401);
}

#[actix_web::test]
async fn failures_from_other_addresses_never_lock_a_user_out() {
    let h = Harness::memory_with(|s| {
        s.login_rate_limit = Some(Rate {
            per_second: 1.0 / 60.0,
            burst: 3,
        });
        s.password_hash_concurrency = 2;
    });
    let app = service!(h);
    send(
        &app,
        admin(Method::POST, "/api/v1/users").set_json(
            json!({"username": "alice", "password": "correct horse battery staple", "role": "viewer"}),
        ),
    )
    .await
    .ok();
    // Guessing from 26 addresses: each is throttled on its own after three tries.
    for a in 0..26 {
        let address = format!("10.2.{a}.1");
        for _ in 0..3 {
            send(&app, login_from(&address, "alice", "wrong guess"))
                .await
                .problem(401);
        }
        send(&app, login_from(&address, "alice", "wrong guess"))
            .await
            .problem(429);
    }
    // The real user, from an address that has not been failing, signs in.
    send(
        &app,
        login_from("10.3.0.1", "alice", "correct horse battery staple"),
    )
    .await
    .ok();
    // A failing address stays throttled, even with the right password.
    send(
        &app,
        login_from("10.2.0.1", "alice", "correct horse battery staple"),
    )
    .await
    .problem(429);
}

on_both_stores!(nul_characters_are_refused_naming_the_field_on_every_store);

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
