//! Tokens: subjects that try to pass for the platform, a key or a user; and users whose tokens
//! must end at once when they are deleted or changed.

use actix_web::http::Method;
use serde_json::json;

use crate::common::*;
use crate::{on_both_stores, service};

on_both_stores!(deleting_a_user_or_changing_their_role_or_password_ends_their_tokens_at_once);

#[actix_web::test]
async fn token_subjects_never_pass_for_the_platform_in_the_audit_trail() {
    let h = Harness::memory();
    let app = service!(h);
    for sub in [
        "platform",
        "admin-api-key",
        "api-key:mapk_0000000",
        "user:alice",
    ] {
        let token = jwt(json!({"sub": sub, "role": "viewer"}));
        send(
            &app,
            bearer(Method::POST, "/api/v1/agents", &token).set_json(seed_agent("x")),
        )
        .await
        .problem(403);
    }
    let denied = send(
        &app,
        admin(Method::GET, "/api/v1/audit?action=access_denied"),
    )
    .await;
    let mut actors: Vec<String> = denied
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap().to_owned())
        .collect();
    actors.sort();
    assert_eq!(
        actors,
        [
            "token:admin-api-key",
            "token:api-key:mapk_0000000",
            "token:platform",
            "token:user:alice"
        ]
    );
}

/// Signs in; the token.
async fn sign_in<S, B>(app: &S, username: &str, password: &str) -> String
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let reply = send(
        app,
        req(Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": username, "password": password})),
    )
    .await;
    reply.ok()["access_token"].as_str().unwrap().to_owned()
}

async fn deleting_a_user_or_changing_their_role_or_password_ends_their_tokens_at_once(h: Harness) {
    let app = service!(h);
    let password = "correct horse battery staple";
    let create = |role: &str| {
        admin(Method::POST, "/api/v1/users")
            .set_json(json!({"username": "alice", "password": password, "role": role}))
    };
    let alice = send(&app, create("admin")).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = sign_in(&app, "alice", password).await;
    send(&app, bearer(Method::GET, "/api/v1/api-keys", &token))
        .await
        .ok();

    // Deleted: the token is dead at once, and stays dead when the name comes back as a viewer.
    send(
        &app,
        admin(Method::DELETE, &format!("/api/v1/users/{alice}")),
    )
    .await
    .ok();
    let key = bearer(Method::POST, "/api/v1/api-keys", &token)
        .set_json(json!({"name": "for ever", "role": "admin"}));
    send(&app, key).await.problem(401);
    let alice = send(&app, create("viewer")).await.ok()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    send(&app, bearer(Method::GET, "/api/v1/agents", &token))
        .await
        .problem(401);

    // A role change ends the tokens issued under the old role; a new sign-in has the new one.
    let viewer = sign_in(&app, "alice", password).await;
    send(&app, bearer(Method::GET, "/api/v1/agents", &viewer))
        .await
        .ok();
    let changed = send(
        &app,
        admin(Method::PATCH, &format!("/api/v1/users/{alice}"))
            .set_json(json!({"role": "operator"})),
    )
    .await;
    assert_eq!(changed.ok()["role"], "operator");
    send(&app, bearer(Method::GET, "/api/v1/agents", &viewer))
        .await
        .problem(401);
    let operator = sign_in(&app, "alice", password).await;
    send(
        &app,
        bearer(Method::POST, "/api/v1/agents", &operator).set_json(seed_agent("by-alice")),
    )
    .await
    .ok();

    // A new password ends the tokens too, and only the new password signs in.
    let new_password = "a completely different passphrase";
    send(
        &app,
        admin(Method::PATCH, &format!("/api/v1/users/{alice}"))
            .set_json(json!({"password": new_password})),
    )
    .await
    .ok();
    send(&app, bearer(Method::GET, "/api/v1/agents", &operator))
        .await
        .problem(401);
    send(
        &app,
        req(Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": "alice", "password": password})),
    )
    .await
    .problem(401);
    sign_in(&app, "alice", new_password).await;

    // Bad changes change nothing.
    for (body, field) in [
        (json!({}), "body"),
        (json!({"role": "agent"}), "role"),
        (json!({"password": "short"}), "password"),
    ] {
        let reply = send(
            &app,
            admin(Method::PATCH, &format!("/api/v1/users/{alice}")).set_json(body),
        )
        .await;
        assert_eq!(reply.problem(422)["errors"][0]["field"], field);
    }
    send(
        &app,
        admin(
            Method::PATCH,
            "/api/v1/users/6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f",
        )
        .set_json(json!({"role": "viewer"})),
    )
    .await
    .problem(404);
    let audit = send(
        &app,
        admin(Method::GET, "/api/v1/audit?action=user_updated"),
    )
    .await;
    assert_eq!(audit.ok().as_array().unwrap().len(), 2);
}

#[actix_web::test]
async fn sign_in_tokens_fit_a_maximum_lifetime_shorter_than_an_hour() {
    let mut h = Harness::memory();
    h.state.jwt = Some(
        api_http::JwtKeys::new(&JWT_SECRET.to_owned().into(), None, None).with_max_lifetime(600),
    );
    let app = service!(h);
    let password = "correct horse battery staple";
    send(
        &app,
        admin(Method::POST, "/api/v1/users")
            .set_json(json!({"username": "dana", "password": password, "role": "viewer"})),
    )
    .await
    .ok();
    let login = send(
        &app,
        req(Method::POST, "/api/v1/auth/login")
            .set_json(json!({"username": "dana", "password": password})),
    )
    .await;
    assert_eq!(login.ok()["expires_in"], 600);
    let token = login.ok()["access_token"].as_str().unwrap().to_owned();
    send(&app, bearer(Method::GET, "/api/v1/agents", &token))
        .await
        .ok();
    // Anyone else's token past the limit is refused, as before.
    let long = jwt(json!({"sub": "someone", "exp": chrono::Utc::now().timestamp() + 3600}));
    send(&app, bearer(Method::GET, "/api/v1/agents", &long))
        .await
        .problem(401);
}
