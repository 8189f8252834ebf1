//! API keys, users, sign-in and the audit trail, on the embedded store and on PostgreSQL: keys
//! are shown once and stored hashed, revoked and expired ones stop working, passwords never come
//! back, a failed sign-in says nothing about which part was wrong, and everything lands in the
//! audit trail that only admins read.

mod common;

use actix_web::http::Method;
use chrono::Duration;
use common::*;
use serde_json::{json, Value};

on_both_stores!(
    api_keys_are_shown_once_listed_without_secrets_and_revocable,
    expired_keys_stop_working_and_agent_keys_act_only_for_their_agent,
    users_sign_in_with_a_password_and_failures_reveal_nothing,
    the_audit_trail_records_who_did_what_and_only_admins_read_it,
    a_caller_learns_who_it_is,
);

fn keys_of(body: &Value) -> Vec<String> {
    body.as_object().unwrap().keys().cloned().collect()
}

async fn api_keys_are_shown_once_listed_without_secrets_and_revocable(h: Harness) {
    let app = service!(h);
    let created = send(
        &app,
        admin(Method::POST, "/api/v1/api-keys").set_json(json!({"name": "ci", "role": "operator"})),
    )
    .await;
    let created = created.ok().clone();
    let key = created["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("mapk_") && key.len() == 5 + 64, "{key}");
    assert_eq!(created["prefix"], &key[..12]);
    assert_eq!(created["role"], "operator");
    assert!(created["revoked_at"].is_null());

    // It works as a Bearer token and as X-API-Key.
    send(&app, bearer(Method::GET, "/api/v1/agents", &key))
        .await
        .ok();
    send(
        &app,
        req(Method::GET, "/api/v1/agents").insert_header(("X-API-Key", key.as_str())),
    )
    .await
    .ok();

    let listed = send(&app, admin(Method::GET, "/api/v1/api-keys")).await;
    let listed = listed.ok().as_array().unwrap().clone();
    let mine = listed.iter().find(|k| k["id"] == created["id"]).unwrap();
    assert!(
        !keys_of(mine).iter().any(|k| k == "api_key" || k == "hash"),
        "{mine}"
    );
    assert!(
        !json!(listed).to_string().contains(&key[12..]),
        "the key is never shown again"
    );

    // Only admins manage keys; an operator key may not make itself an admin one.
    send(
        &app,
        bearer(Method::POST, "/api/v1/api-keys", &key)
            .set_json(json!({"name": "x", "role": "admin"})),
    )
    .await
    .problem(403);
    send(&app, bearer(Method::GET, "/api/v1/api-keys", &key))
        .await
        .problem(403);
    // Smuggled fields are refused.
    send(
        &app,
        admin(Method::POST, "/api/v1/api-keys")
            .set_json(json!({"name": "x", "role": "viewer", "hash": "00", "revoked_at": null})),
    )
    .await
    .problem(422);

    let id = created["id"].as_str().unwrap();
    let revoked = send(
        &app,
        admin(Method::DELETE, &format!("/api/v1/api-keys/{id}")),
    )
    .await;
    assert!(revoked.ok()["revoked_at"].is_string());
    let refused = send(&app, bearer(Method::GET, "/api/v1/agents", &key)).await;
    assert_eq!(
        refused.problem(401)["detail"],
        "invalid, revoked or expired API key"
    );
    send(
        &app,
        admin(
            Method::DELETE,
            &format!("/api/v1/api-keys/{}", uuid::Uuid::nil()),
        ),
    )
    .await
    .problem(404);
}

async fn expired_keys_stop_working_and_agent_keys_act_only_for_their_agent(h: Harness) {
    let app = service!(h);
    let soon = (h.clock_now() + Duration::minutes(10)).to_rfc3339();
    let created = send(
        &app,
        admin(Method::POST, "/api/v1/api-keys")
            .set_json(json!({"name": "temp", "role": "viewer", "expires_at": soon})),
    )
    .await;
    let key = created.ok()["api_key"].as_str().unwrap().to_owned();
    send(&app, bearer(Method::GET, "/api/v1/agents", &key))
        .await
        .ok();
    h.clock.advance(Duration::minutes(10));
    send(&app, bearer(Method::GET, "/api/v1/agents", &key))
        .await
        .problem(401);

    for (body, field) in [
        (json!({"name": "a", "role": "agent"}), "agent_id"),
        (
            json!({"name": "a", "role": "agent", "agent_id": uuid::Uuid::nil()}),
            "agent_id",
        ),
        (json!({"name": "a", "role": "root"}), "role"),
        (
            json!({"name": "a", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let reply = send(&app, admin(Method::POST, "/api/v1/api-keys").set_json(body)).await;
        assert_eq!(reply.problem(422)["errors"][0]["field"], field);
    }

    let (a, _) = register(&app, seed_agent("a")).await;
    let (b, _) = register(&app, seed_agent("b")).await;
    let agent_key = send(
        &app,
        admin(Method::POST, "/api/v1/api-keys")
            .set_json(json!({"name": "a-2", "role": "agent", "agent_id": a})),
    )
    .await;
    let agent_key = agent_key.ok()["api_key"].as_str().unwrap().to_owned();
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{a}/heartbeat"),
            &agent_key,
        ),
    )
    .await
    .ok();
    send(
        &app,
        bearer(
            Method::POST,
            &format!("/api/v1/agents/{b}/heartbeat"),
            &agent_key,
        ),
    )
    .await
    .problem(403);
    send(
        &app,
        bearer(Method::GET, &format!("/api/v1/agents/{b}"), &agent_key),
    )
    .await
    .problem(404);
}

/// `GET /auth/me`: what a client (the dashboard) needs to offer only what the caller may do.
async fn a_caller_learns_who_it_is(h: Harness) {
    let app = service!(h);
    let me = send(&app, admin(Method::GET, "/api/v1/auth/me")).await;
    assert_eq!(
        me.ok(),
        &json!({"subject": "admin-api-key", "role": "admin", "agent_id": null, "expires_at": null})
    );

    let until = h.clock_now() + Duration::minutes(10);
    let viewer = send(
        &app,
        admin(Method::POST, "/api/v1/api-keys")
            .set_json(json!({"name": "wall", "role": "viewer", "expires_at": until})),
    )
    .await;
    let viewer = viewer.ok().clone();
    let me = send(
        &app,
        bearer(
            Method::GET,
            "/api/v1/auth/me",
            viewer["api_key"].as_str().unwrap(),
        ),
    )
    .await;
    let me = me.ok();
    assert_eq!(me["role"], "viewer");
    assert_eq!(
        me["subject"],
        format!("api-key:{}", viewer["prefix"].as_str().unwrap())
    );
    assert_eq!(
        me["expires_at"]
            .as_str()
            .map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().unwrap()),
        Some(until)
    );

    let (agent, agent_key) = register(&app, seed_agent("self-aware")).await;
    let me = send(&app, bearer(Method::GET, "/api/v1/auth/me", &agent_key)).await;
    assert_eq!(me.ok()["role"], "agent");
    assert_eq!(me.ok()["agent_id"], agent.as_str());

    send(&app, req(Method::GET, "/api/v1/auth/me"))
        .await
        .problem(401);
    send(
        &app,
        bearer(Method::GET, "/api/v1/auth/me", "mapk_not-a-key"),
    )
    .await
    .problem(401);
}

async fn users_sign_in_with_a_password_and_failures_reveal_nothing(h: Harness) {
    let app = service!(h);
    let created = send(
        &app,
        admin(Method::POST, "/api/v1/users").set_json(
            json!({"username": "alice", "password": "correct horse battery staple", "role": "operator"}),
        ),
    )
    .await;
    let created = created.ok().clone();
    assert_eq!(keys_of(&created), ["created_at", "id", "role", "username"]);

    let login = send(
        &app,
        req(Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": "alice", "password": "correct horse battery staple"})),
    )
    .await;
    let login = login.ok().clone();
    assert_eq!(login["token_type"], "bearer");
    assert_eq!(login["expires_in"], 3600);
    let token = login["access_token"].as_str().unwrap().to_owned();
    send(&app, bearer(Method::GET, "/api/v1/agents", &token))
        .await
        .ok();
    send(
        &app,
        bearer(Method::POST, "/api/v1/agents", &token).set_json(seed_agent("by-alice")),
    )
    .await
    .ok();
    send(&app, bearer(Method::GET, "/api/v1/users", &token))
        .await
        .problem(403);

    // A wrong password and an unknown user get the same answer.
    let wrong = send(
        &app,
        req(Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": "alice", "password": "wrong horse battery staple"})),
    )
    .await;
    let unknown = send(
        &app,
        req(Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": "mallory", "password": "correct horse battery staple"})),
    )
    .await;
    let malformed = send(
        &app,
        req(Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": "' OR 1=1 --", "password": "x"})),
    )
    .await;
    let answers: Vec<Value> = [wrong, unknown, malformed]
        .iter()
        .map(|r| r.problem(401).clone())
        .collect();
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(answers[0]["detail"], "invalid username or password");

    for (body, field) in [
        (
            json!({"username": "bob", "password": "short", "role": "viewer"}),
            "password",
        ),
        (
            json!({"username": "b o b", "password": "long enough password", "role": "viewer"}),
            "username",
        ),
        (
            json!({"username": "bob", "password": "long enough password", "role": "agent"}),
            "role",
        ),
    ] {
        let reply = send(&app, admin(Method::POST, "/api/v1/users").set_json(body)).await;
        assert_eq!(reply.problem(422)["errors"][0]["field"], field);
    }
    send(
        &app,
        admin(Method::POST, "/api/v1/users").set_json(
            json!({"username": "alice", "password": "another long password", "role": "admin"}),
        ),
    )
    .await
    .problem(409);
    let users = send(&app, admin(Method::GET, "/api/v1/users")).await;
    assert_eq!(users.ok().as_array().unwrap().len(), 1);
    assert!(
        !users.ok().to_string().contains("argon2"),
        "no hash leaves the server"
    );

    let id = created["id"].as_str().unwrap();
    send(&app, admin(Method::DELETE, &format!("/api/v1/users/{id}")))
        .await
        .ok();
    send(
        &app,
        req(Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": "alice", "password": "correct horse battery staple"})),
    )
    .await
    .problem(401);
}

async fn the_audit_trail_records_who_did_what_and_only_admins_read_it(h: Harness) {
    let app = service!(h);
    let key = send(
        &app,
        admin(Method::POST, "/api/v1/api-keys")
            .set_json(json!({"name": "ops", "role": "operator"})),
    )
    .await;
    let key = key.ok().clone();
    let secret = key["api_key"].as_str().unwrap().to_owned();
    send(&app, bearer(Method::GET, "/api/v1/audit", &secret))
        .await
        .problem(403);
    send(
        &app,
        admin(Method::POST, "/api/v1/users").set_json(
            json!({"username": "carol", "password": "a long enough password", "role": "viewer"}),
        ),
    )
    .await
    .ok();
    send(
        &app,
        req(Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": "carol", "password": "not her password"})),
    )
    .await
    .problem(401);
    let conflict = send(
        &app,
        admin(Method::POST, "/api/v1/conflicts").set_json(json!({
            "conflict_type": "other", "description": "noise", "severity": "low"
        })),
    )
    .await;
    let conflict = conflict.ok()["id"].as_str().unwrap().to_owned();
    send(
        &app,
        admin(
            Method::POST,
            &format!("/api/v1/conflicts/{conflict}/dismiss"),
        )
        .set_json(json!({"reason": "not a conflict"})),
    )
    .await
    .ok();
    send(
        &app,
        admin(
            Method::DELETE,
            &format!("/api/v1/api-keys/{}", key["id"].as_str().unwrap()),
        ),
    )
    .await
    .ok();

    let trail = send(&app, admin(Method::GET, "/api/v1/audit?limit=100")).await;
    let trail = trail.ok().as_array().unwrap().clone();
    let actions: Vec<&str> = trail
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "api_key_created",
        "access_denied",
        "user_created",
        "login_failed",
        "conflict_dismissed",
        "api_key_revoked",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    let denied = trail
        .iter()
        .find(|e| e["action"] == "access_denied")
        .unwrap();
    assert_eq!(denied["actor"], format!("api-key:{}", &secret[..12]));
    assert_eq!(denied["target"], "GET /api/v1/audit");
    let failed = trail
        .iter()
        .find(|e| e["action"] == "login_failed")
        .unwrap();
    assert_eq!(failed["actor"], "user:carol");
    assert!(!trail
        .iter()
        .any(|e| e.to_string().contains("not her password")));
    let only = send(
        &app,
        admin(Method::GET, "/api/v1/audit?action=login_failed"),
    )
    .await;
    assert_eq!(only.ok().as_array().unwrap().len(), 1);
    send(&app, admin(Method::GET, "/api/v1/audit?action=nope"))
        .await
        .problem(400);
}
