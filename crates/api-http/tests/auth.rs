//! Credentials and roles: who may call what, and what a refusal looks like.

mod common;

use actix_web::http::Method;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

#[actix_web::test]
async fn every_api_endpoint_but_health_needs_credentials() {
    let h = Harness::memory();
    let app = service!(h);
    let id = "6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f";
    let calls = [
        (Method::GET, "/api/v1/agents".to_owned()),
        (Method::POST, "/api/v1/agents".to_owned()),
        (Method::GET, format!("/api/v1/agents/{id}")),
        (Method::PATCH, format!("/api/v1/agents/{id}")),
        (Method::DELETE, format!("/api/v1/agents/{id}")),
        (Method::POST, format!("/api/v1/agents/{id}/heartbeat")),
    ];
    for (method, path) in calls {
        let reply = send(&app, req(method.clone(), &path).set_json(json!({}))).await;
        reply.problem(401);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"agent-platform\""),
            "{method} {path}"
        );
    }
    for open in ["/", "/api/v1/health", "/livez", "/readyz"] {
        send(&app, req(Method::GET, open)).await.ok();
    }
}

#[actix_web::test]
async fn the_seed_token_without_a_role_acts_as_operator() {
    let h = Harness::memory();
    let app = service!(h);
    let token = jwt(json!({"sub": "user123"}));
    let reply = send(
        &app,
        bearer(Method::POST, "/api/v1/agents", &token).set_json(seed_agent("a")),
    )
    .await;
    reply.ok();
    send(&app, bearer(Method::GET, "/api/v1/agents", &token))
        .await
        .ok();
}

#[actix_web::test]
async fn bad_tokens_are_401() {
    let h = Harness::memory();
    let app = service!(h);
    let now = chrono::Utc::now().timestamp();
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let expired = jwt(json!({"sub": "u", "exp": now - 3600}));
    let not_yet = jwt(json!({"sub": "u", "nbf": now + 3600}));
    let no_exp = encode(&Header::default(), &json!({"sub": "u"}), &key).unwrap();
    let wrong_secret = encode(
        &Header::default(),
        &json!({"sub": "u", "exp": now + 3600}),
        &EncodingKey::from_secret(b"another-secret-of-sufficient-length-xyz"),
    )
    .unwrap();
    let hs512 = encode(
        &Header::new(Algorithm::HS512),
        &json!({"sub": "u", "exp": now + 3600}),
        &key,
    )
    .unwrap();
    // alg "none": header and claims, no signature.
    let b64 = |v: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": "u", "exp": now + 3600, "role": "admin"}))
    );
    let unknown_role = jwt(json!({"sub": "u", "role": "superuser"}));
    let agent_without_id = jwt(json!({"sub": "u", "role": "agent"}));
    // Past the maximum lifetime (a day by default), from now or from its own `iat`.
    let for_ever = jwt(json!({"sub": "u", "exp": now + 10 * 86_400}));
    let issued_long = jwt(json!({"sub": "u", "iat": now - 2 * 86_400, "exp": now + 60}));
    let issued_later = jwt(json!({"sub": "u", "iat": now + 3600}));
    let critical = {
        // jsonwebtoken cannot write `crit`: sign a header that names it by hand.
        use base64::Engine;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let signing_input = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"]})),
            b64(json!({"sub": "u", "exp": now + 3600}))
        );
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{signing_input}.{signature}")
    };
    let no_subject = jwt(json!({"sub": ""}));
    let control_subject = jwt(json!({"sub": "a\nb"}));
    let half_user =
        jwt(json!({"sub": "user:alice", "uid": "6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f"}));
    let unknown_user = jwt(json!({"sub": "user:alice", "role": "admin",
        "uid": "6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f", "tv": 1}));
    for token in [
        for_ever,
        issued_long,
        issued_later,
        critical,
        no_subject,
        control_subject,
        half_user,
        unknown_user,
        expired,
        not_yet,
        no_exp,
        wrong_secret,
        hs512,
        none,
        unknown_role,
        agent_without_id,
        "garbage.token.here".to_owned(),
        "mapk_0000".to_owned(),
    ] {
        let reply = send(&app, bearer(Method::GET, "/api/v1/agents", &token)).await;
        let detail = reply.problem(401)["detail"].as_str().unwrap().to_owned();
        assert!(
            detail == "invalid or expired token" || detail == "invalid, revoked or expired API key",
            "one answer for every refusal, naming no check: {detail}"
        );
    }
    let reply = send(
        &app,
        req(Method::GET, "/api/v1/agents").insert_header(("Authorization", "Basic dTpw")),
    )
    .await;
    reply.problem(401);
    let reply = send(
        &app,
        req(Method::GET, "/api/v1/agents").insert_header(("X-API-Key", "wrong-key")),
    )
    .await;
    reply.problem(401);
}

#[actix_web::test]
async fn a_viewer_reads_but_does_not_write() {
    let h = Harness::memory();
    let app = service!(h);
    let (id, _) = register(&app, seed_agent("worker")).await;
    let viewer = jwt(json!({"sub": "v", "role": "viewer"}));
    send(&app, bearer(Method::GET, "/api/v1/agents", &viewer))
        .await
        .ok();
    send(
        &app,
        bearer(Method::GET, &format!("/api/v1/agents/{id}"), &viewer),
    )
    .await
    .ok();
    let writes = [
        (Method::POST, "/api/v1/agents".to_owned(), seed_agent("x")),
        (
            Method::PATCH,
            format!("/api/v1/agents/{id}"),
            json!({"status": "suspended"}),
        ),
        (Method::DELETE, format!("/api/v1/agents/{id}"), json!({})),
        (
            Method::POST,
            format!("/api/v1/agents/{id}/heartbeat"),
            json!({}),
        ),
    ];
    for (method, path, body) in writes {
        let reply = send(&app, bearer(method, &path, &viewer).set_json(body)).await;
        reply.problem(403);
    }
    let agent = send(&app, admin(Method::GET, &format!("/api/v1/agents/{id}"))).await;
    assert_eq!(agent.ok()["status"], "idle", "nothing changed");
}

#[actix_web::test]
async fn an_agent_acts_only_for_itself() {
    let h = Harness::memory();
    let app = service!(h);
    let (a, key_a) = register(&app, seed_agent("agent-a")).await;
    let (b, _) = register(&app, seed_agent("agent-b")).await;
    // Time moves, so any heartbeat recorded for B below would show.
    h.clock.advance(chrono::Duration::seconds(30));

    // Its own agent: readable, and it may heartbeat — by X-API-Key or Bearer.
    send(
        &app,
        bearer(Method::GET, &format!("/api/v1/agents/{a}"), &key_a),
    )
    .await
    .ok();
    send(
        &app,
        req(Method::POST, &format!("/api/v1/agents/{a}/heartbeat"))
            .insert_header(("X-API-Key", key_a.as_str())),
    )
    .await
    .ok();

    // Another agent: invisible, and no heartbeat on its behalf.
    send(
        &app,
        bearer(Method::GET, &format!("/api/v1/agents/{b}"), &key_a),
    )
    .await
    .problem(404);
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{b}/heartbeat"),
            &key_a,
        ),
    )
    .await
    .problem(403);
    // Nor the fleet, nor any operator action, even on itself.
    send(&app, bearer(Method::GET, "/api/v1/agents", &key_a))
        .await
        .problem(403);
    send(
        &app,
        bearer(Method::POST, "/api/v1/agents", &key_a).set_json(seed_agent("x")),
    )
    .await
    .problem(403);
    send(
        &app,
        bearer(Method::PATCH, &format!("/api/v1/agents/{a}"), &key_a)
            .set_json(json!({"status": "idle"})),
    )
    .await
    .problem(403);
    send(
        &app,
        bearer(Method::DELETE, &format!("/api/v1/agents/{b}"), &key_a),
    )
    .await
    .problem(403);

    // The same rules hold for an agent JWT.
    let token = jwt(json!({"sub": "agent-a", "role": "agent", "agent_id": a}));
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{a}/heartbeat"),
            &token,
        ),
    )
    .await
    .ok();
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{b}/heartbeat"),
            &token,
        ),
    )
    .await
    .problem(403);

    let b_agent = send(&app, admin(Method::GET, &format!("/api/v1/agents/{b}"))).await;
    let b_agent = b_agent.ok();
    assert_eq!(
        b_agent["last_heartbeat"], b_agent["created_at"],
        "B was never touched"
    );
}

#[actix_web::test]
async fn an_operator_may_heartbeat_for_an_agent_and_admins_do_everything() {
    let h = Harness::memory();
    let app = service!(h);
    let operator = jwt(json!({"sub": "op", "role": "operator"}));
    let admin_jwt = jwt(json!({"sub": "root", "role": "admin"}));
    let reply = send(
        &app,
        bearer(Method::POST, "/api/v1/agents", &admin_jwt).set_json(seed_agent("a")),
    )
    .await;
    let id = reply.ok()["id"].as_str().unwrap().to_owned();
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{id}/heartbeat"),
            &operator,
        ),
    )
    .await
    .ok();
    send(
        &app,
        bearer(Method::DELETE, &format!("/api/v1/agents/{id}"), &operator),
    )
    .await
    .ok();
}
