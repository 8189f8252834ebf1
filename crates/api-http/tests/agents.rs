//! Agents through the HTTP API: the seed's flows, filters, paging, updates, heartbeats,
//! deregistration and offline detection.

mod common;

use actix_web::http::Method;
use chrono::Duration;
use common::*;
use domain::{Channel, EventKind};
use ports::EventBus;
use serde_json::json;

#[actix_web::test]
async fn the_seed_registration_round_trips_with_a_one_time_agent_key() {
    let h = Harness::memory();
    let app = service!(h);
    let mut events = h.bus.subscribe();

    let reply = send(
        &app,
        admin(Method::POST, "/api/v1/agents").set_json(seed_agent("data_processor_agent")),
    )
    .await;
    let created = reply.ok().clone();
    assert_eq!(created["name"], "data_processor_agent");
    assert_eq!(created["status"], "idle");
    assert_eq!(created["resources"], json!({"cpu": 2, "memory": "1Gi"}));
    assert_eq!(created["metadata"], json!({"version": "1.0", "team": "ai"}));
    assert_eq!(created["current_tasks"], 0);
    assert_eq!(created["max_concurrent_tasks"], 1);
    assert_eq!(created["reliability"], 1.0);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    let key = created["agent_key"].as_str().unwrap();
    assert!(key.starts_with("mapk_") && key.len() > 60);

    let id = created["id"].as_str().unwrap();
    let fetched = send(&app, admin(Method::GET, &format!("/api/v1/agents/{id}"))).await;
    let fetched = fetched.ok();
    assert_eq!(fetched["id"], created["id"]);
    assert!(
        fetched.get("agent_key").is_none(),
        "the key is shown only once"
    );

    let event = events.try_recv().expect("agent_registered was published");
    assert_eq!(event.kind, EventKind::AgentRegistered);
    assert_eq!(event.channel(), Channel::AgentActivity);
    assert_eq!(event.data["name"], "data_processor_agent");
}

#[actix_web::test]
async fn lists_filter_by_status_and_capability_and_page_with_a_link_header() {
    let h = Harness::memory();
    let app = service!(h);
    let mut ids = Vec::new();
    for n in 0..5 {
        let caps = if n % 2 == 0 {
            json!(["gpu_inference"])
        } else {
            json!(["cpu"])
        };
        let (id, _) = register(&app, json!({"name": format!("w{n}"), "capabilities": caps})).await;
        ids.push(id);
        h.clock.advance(Duration::seconds(1));
    }
    send(
        &app,
        admin(Method::PATCH, &format!("/api/v1/agents/{}", ids[0]))
            .set_json(json!({"status": "draining"})),
    )
    .await
    .ok();

    let names = |body: &serde_json::Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = send(&app, admin(Method::GET, "/api/v1/agents")).await;
    assert_eq!(
        names(all.ok()),
        ["w4", "w3", "w2", "w1", "w0"],
        "newest first"
    );
    assert!(all.header("link").is_none());

    let gpu = send(
        &app,
        admin(
            Method::GET,
            "/api/v1/agents?capability_filter=gpu_inference",
        ),
    )
    .await;
    assert_eq!(names(gpu.ok()), ["w4", "w2", "w0"]);

    let draining = send(
        &app,
        admin(Method::GET, "/api/v1/agents?status_filter=draining"),
    )
    .await;
    assert_eq!(names(draining.ok()), ["w0"]);
    let both = send(
        &app,
        admin(
            Method::GET,
            "/api/v1/agents?status_filter=idle&capability_filter=gpu_inference",
        ),
    )
    .await;
    assert_eq!(names(both.ok()), ["w4", "w2"]);

    let first = send(
        &app,
        admin(
            Method::GET,
            "/api/v1/agents?limit=2&capability_filter=gpu_inference",
        ),
    )
    .await;
    assert_eq!(names(first.ok()), ["w4", "w2"]);
    let link = first.header("link").expect("a next link").to_owned();
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    assert!(
        link.contains("capability_filter=gpu_inference"),
        "filters are kept: {link}"
    );
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let second = send(&app, admin(Method::GET, next)).await;
    assert_eq!(names(second.ok()), ["w0"]);
    assert!(
        second.header("link").is_none(),
        "the last page has no next link"
    );
}

#[actix_web::test]
async fn patch_updates_fields_and_status_and_refuses_impossible_transitions() {
    let h = Harness::memory();
    let app = service!(h);
    let (id, key) = register(&app, seed_agent("worker")).await;
    let mut events = h.bus.subscribe();
    let path = format!("/api/v1/agents/{id}");

    let patched = send(
        &app,
        admin(Method::PATCH, &path).set_json(json!({
            "capabilities": ["data_processing", "gpu_inference"],
            "resources": {"cpu": "1500m", "memory": "2Gi"},
            "max_concurrent_tasks": 4,
            "status": "suspended"
        })),
    )
    .await;
    let body = patched.ok();
    assert_eq!(body["status"], "suspended");
    assert_eq!(body["max_concurrent_tasks"], 4);
    assert_eq!(body["resources"], json!({"cpu": "1500m", "memory": "2Gi"}));
    assert_eq!(
        body["capabilities"],
        json!(["data_processing", "gpu_inference"])
    );

    let updated = events.try_recv().unwrap();
    assert_eq!(updated.kind, EventKind::AgentUpdated);
    let status = events.try_recv().unwrap();
    assert_eq!(status.kind, EventKind::AgentStatusChanged);
    assert_eq!(status.data["old_status"], "idle");
    assert_eq!(status.data["new_status"], "suspended");

    // A suspended agent's own heartbeat does not lift the suspension.
    let beat = send(
        &app,
        bearer(Method::POST, &format!("{path}/heartbeat"), &key),
    )
    .await;
    assert_eq!(beat.ok()["agent"]["status"], "suspended");

    // Offline agents come back by heartbeating, not by an operator's say-so.
    send(
        &app,
        admin(Method::PATCH, &path).set_json(json!({"status": "idle"})),
    )
    .await
    .ok();
    h.clock.advance(Duration::seconds(91));
    h.state.platform.detect_offline_agents().await.unwrap();
    let refused = send(
        &app,
        admin(Method::PATCH, &path).set_json(json!({"status": "idle"})),
    )
    .await;
    refused.problem(409);
    let still = send(&app, admin(Method::GET, &path)).await;
    assert_eq!(
        still.ok()["status"],
        "offline",
        "a refused transition changes nothing"
    );
}

#[actix_web::test]
async fn heartbeats_keep_an_agent_online_and_silence_takes_it_offline() {
    let h = Harness::memory();
    let app = service!(h);
    let (id, key) = register(&app, seed_agent("worker")).await;
    let beat = format!("/api/v1/agents/{id}/heartbeat");
    let mut events = h.bus.subscribe();

    h.clock.advance(Duration::seconds(60));
    let reply = send(
        &app,
        bearer(Method::POST, &beat, &key).set_json(json!({"metadata": {"load": 0.25}})),
    )
    .await;
    let agent = &reply.ok()["agent"];
    assert_eq!(agent["status"], "idle");
    assert_eq!(agent["metadata"]["load"], 0.25);
    assert_eq!(
        agent["metadata"]["team"], "ai",
        "heartbeat metadata is merged"
    );
    assert!(
        events.try_recv().is_err(),
        "a plain heartbeat is not an event"
    );

    // 60 s after the last heartbeat the agent is still online; at 90 s it is not.
    h.clock.advance(Duration::seconds(60));
    assert_eq!(h.state.platform.detect_offline_agents().await.unwrap(), 0);
    h.clock.advance(Duration::seconds(30));
    assert_eq!(h.state.platform.detect_offline_agents().await.unwrap(), 1);
    let fetched = send(&app, admin(Method::GET, &format!("/api/v1/agents/{id}"))).await;
    assert_eq!(fetched.ok()["status"], "offline");
    let offline = events.try_recv().unwrap();
    assert_eq!(offline.kind, EventKind::AgentStatusChanged);
    assert_eq!(offline.data["new_status"], "offline");
    assert_eq!(offline.data["reason"], "missed heartbeats");

    // An empty heartbeat body is fine, and brings the agent back.
    let back = send(&app, bearer(Method::POST, &beat, &key)).await;
    assert_eq!(back.ok()["agent"]["status"], "idle");
    assert_eq!(events.try_recv().unwrap().data["new_status"], "idle");

    // An agent can report that it is draining.
    let draining = send(
        &app,
        bearer(Method::POST, &beat, &key).set_json(json!({"status": "draining"})),
    )
    .await;
    assert_eq!(draining.ok()["agent"]["status"], "draining");
}

#[actix_web::test]
async fn deregistration_removes_the_agent_and_revokes_its_key() {
    let h = Harness::memory();
    let app = service!(h);
    let (id, key) = register(&app, seed_agent("worker")).await;
    let mut events = h.bus.subscribe();
    let path = format!("/api/v1/agents/{id}");

    let reply = send(&app, admin(Method::DELETE, &path)).await;
    assert_eq!(
        reply.ok(),
        &json!({"message": "Agent deregistered successfully"})
    );
    assert_eq!(
        events.try_recv().unwrap().kind,
        EventKind::AgentDeregistered
    );

    send(&app, admin(Method::GET, &path)).await.problem(404);
    send(&app, admin(Method::DELETE, &path)).await.problem(404);
    let beat = send(
        &app,
        bearer(Method::POST, &format!("{path}/heartbeat"), &key),
    )
    .await;
    beat.problem(401);
}

#[actix_web::test]
async fn every_change_is_in_the_event_log_in_order() {
    let h = Harness::memory();
    let app = service!(h);
    let (id, _) = register(&app, seed_agent("worker")).await;
    send(
        &app,
        admin(Method::PATCH, &format!("/api/v1/agents/{id}"))
            .set_json(json!({"status": "draining"})),
    )
    .await
    .ok();
    send(&app, admin(Method::DELETE, &format!("/api/v1/agents/{id}")))
        .await
        .ok();
    let mut log = Vec::new();
    let mut after = 0;
    loop {
        let page = ports_log(&h, after).await;
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().seq;
        log.extend(page);
    }
    let kinds: Vec<_> = log.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::AgentRegistered,
            EventKind::AgentStatusChanged,
            EventKind::AgentDeregistered
        ]
    );
}

async fn ports_log(h: &Harness, after: i64) -> Vec<domain::Event> {
    h.log.events_after(after, 2).await.unwrap()
}
