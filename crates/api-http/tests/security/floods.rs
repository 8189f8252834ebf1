//! Bursts past the rate limits, made-up credentials that want a fresh bucket, sign-in floods
//! that would exhaust memory, and failures meant to lock a user out.

use actix_web::http::Method;
use chrono::Duration;
use domain::limit::Rate;
use serde_json::json;

use crate::common::*;
use crate::service;

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
async fn made_up_or_respelt_credentials_earn_no_fresh_bucket() {
    let h = Harness::memory_with(|s| {
        let strict = Some(Rate {
            per_second: 1.0,
            burst: 3,
        });
        s.rate_limit = strict;
        s.anonymous_rate_limit = strict;
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
async fn made_up_keys_are_limited_by_their_store_lookups_and_known_keys_never_are() {
    let h = Harness::memory_with(|s| {
        s.anonymous_rate_limit = Some(Rate {
            per_second: 1.0,
            burst: 1,
        });
    });
    let app = service!(h);
    let key = send(
        &app,
        admin(Method::POST, "/api/v1/api-keys").set_json(json!({"name": "k", "role": "viewer"})),
    )
    .await;
    let key = key.ok()["api_key"].as_str().unwrap().to_owned();
    send(&app, bearer(Method::GET, "/api/v1/agents", &key))
        .await
        .ok();
    // Ten lookups at once per address (ten times the anonymous burst), then none.
    let mut statuses = Vec::new();
    for n in 0..12 {
        let reply = send(
            &app,
            bearer(Method::GET, "/api/v1/agents", &format!("mapk_made-up-{n}")),
        )
        .await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Those made-up keys used up the address's lookups: a valid key never seen before must
    // wait too, since finding it valid takes a lookup...
    let fresh = send(
        &app,
        admin(Method::POST, "/api/v1/api-keys").set_json(json!({"name": "new", "role": "viewer"})),
    )
    .await;
    let fresh = fresh.ok()["api_key"].as_str().unwrap().to_owned();
    let refused = send(&app, bearer(Method::GET, "/api/v1/agents", &fresh)).await;
    refused.problem(429);
    assert!(refused.header("retry-after").is_some());
    // ...while a key found valid, and the bootstrap key, cost no lookup: the same address
    // uses them.
    for _ in 0..20 {
        send(&app, bearer(Method::GET, "/api/v1/agents", &key))
            .await
            .ok();
        send(&app, admin(Method::GET, "/api/v1/agents")).await.ok();
    }
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

#[actix_web::test]
async fn a_sign_in_body_is_at_most_4_kib() {
    let h = Harness::memory();
    let app = service!(h);
    let body = json!({"username": "alice", "password": "p".repeat(5000)});
    send(&app, req(Method::POST, "/api/v1/auth/login").set_json(body))
        .await
        .problem(413);
    send(&app, login_from("10.4.0.1", "alice", "not her password"))
        .await
        .problem(401);
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_address_and_no_one_else_can_claim_one() {
    let mut h = Harness::memory_with(|s| {
        s.anonymous_rate_limit = Some(Rate {
            per_second: 1.0,
            burst: 2,
        });
    });
    h.state = h
        .state
        .with_trusted_proxies(api_http::TrustedProxies::parse("10.0.0.0/8").unwrap());
    let app = service!(h);
    let through = |peer: &str, forwarded: &str| {
        req(Method::GET, "/api/v1/agents")
            .peer_addr(format!("{peer}:40000").parse().unwrap())
            .insert_header(("X-Forwarded-For", forwarded.to_owned()))
    };
    // One client behind the proxy spends its anonymous budget...
    for _ in 0..2 {
        send(&app, through("10.0.0.2", "198.51.100.1"))
            .await
            .problem(401);
    }
    send(&app, through("10.0.0.2", "198.51.100.1"))
        .await
        .problem(429);
    // ...and cannot reset it by writing another address before the one its proxy appended.
    send(&app, through("10.0.0.2", "6.6.6.6, 198.51.100.1"))
        .await
        .problem(429);
    // Another client behind the same proxy is not held back.
    send(&app, through("10.0.0.2", "198.51.100.2"))
        .await
        .problem(401);
    // A peer that is no trusted proxy is counted by its own address, whatever it claims.
    for _ in 0..2 {
        send(&app, through("203.0.113.9", "198.51.100.3"))
            .await
            .problem(401);
    }
    send(&app, through("203.0.113.9", "198.51.100.4"))
        .await
        .problem(429);
}
