//! The Redis bus against a real Redis (`TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).

use adapters_redis::{RedisBus, EVENTS_CHANNEL};
use chrono::{DateTime, Utc};
use deadpool_redis::redis;
use domain::{AgentId, Event, EventKind};
use futures_util::StreamExt;
use ports::{ComponentStatus, EventBus};
use serde_json::json;

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn event(seq: i64) -> Event {
    Event {
        seq,
        kind: EventKind::AgentRegistered,
        agent_id: Some(AgentId(uuid::Uuid::from_u128(seq as u128))),
        task_id: None,
        data: json!({"n": seq}),
        timestamp: DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap(),
    }
}

#[tokio::test]
async fn published_events_reach_a_redis_subscriber_in_order() {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap_or_else(|e| {
        panic!(
            "Redis is not reachable at {url} ({e}). These tests need it. Start it with:\n  \
             redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no\n\
             or point TEST_REDIS_URL at a running Redis."
        )
    });
    pubsub.subscribe(EVENTS_CHANNEL).await.unwrap();

    let bus = RedisBus::new(&url).unwrap();
    assert_eq!(bus.status().await, ComponentStatus::Healthy);
    bus.publish(&[event(1), event(2)]).await;

    let mut messages = pubsub.on_message();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), messages.next())
            .await
            .expect("an event within 5 s")
            .expect("the subscription stays open");
        let payload: String = msg.get_payload().unwrap();
        let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
        // Other test processes may publish on the same channel: keep only ours.
        if value["data"]["n"].is_i64() && value["type"] == "agent_registered" {
            seen.push(value);
        }
    }
    assert_eq!(seen[0]["seq"], 1);
    assert_eq!(seen[1]["seq"], 2);
    assert_eq!(seen[0]["channel"], "agent_activity");
    assert_eq!(seen[0]["timestamp"], "2026-01-01T00:00:00Z");
}

#[tokio::test]
async fn an_unreachable_redis_is_reported_unhealthy_and_publishing_does_not_fail() {
    let bus = RedisBus::new("redis://127.0.0.1:1").unwrap();
    assert_eq!(bus.status().await, ComponentStatus::Unhealthy);
    bus.publish(&[event(1)]).await; // logs, never panics or errors the caller
}

#[test]
fn a_malformed_url_is_refused() {
    assert!(RedisBus::new("not a url").is_err());
}
