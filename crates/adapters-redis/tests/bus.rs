//! The Redis bus against a real Redis (`TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).

use std::sync::Arc;

use adapters_redis::{events_channel, RedisBus};
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
        data: json!({"n": seq}).into(),
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
    let namespace = format!("test:{}", uuid::Uuid::new_v4().simple());
    pubsub.subscribe(events_channel(&namespace)).await.unwrap();

    let bus = RedisBus::new(&url, &namespace, no_log()).unwrap();
    assert_eq!(bus.status().await, ComponentStatus::Healthy);
    bus.publish(&[event(1), event(2)]).await;
    bus.publish(&[event(3)]).await;

    // Only notices travel: the newest `seq` of what was published, never the events.
    let mut messages = pubsub.on_message();
    let mut newest = 0;
    while newest < 3 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), messages.next())
            .await
            .expect("a notice within 5 s")
            .expect("the subscription stays open");
        let payload: String = msg.get_payload().unwrap();
        newest = payload.parse().expect("a notice is a number");
        assert!(newest == 2 || newest == 3, "{payload}");
    }
}

#[test]
fn notices_are_numbers_or_objects_with_a_seq_and_nothing_else() {
    assert_eq!(adapters_redis::decode("42"), Some(42));
    assert_eq!(
        adapters_redis::decode(r#"{"seq": 7, "type": "x"}"#),
        Some(7)
    );
    for junk in ["", "forty", "{}", r#"{"seq": "7"}"#, "[1]", "1.5"] {
        assert_eq!(adapters_redis::decode(junk), None, "{junk}");
    }
}

/// A log for the bus to read: an empty embedded store.
fn no_log() -> Arc<dyn ports::EventLog> {
    Arc::new(adapters_memory::MemoryStore::new())
}

#[tokio::test]
async fn an_unreachable_redis_is_reported_unhealthy_and_publishing_does_not_fail() {
    let bus = RedisBus::new("redis://127.0.0.1:1", "test", no_log()).unwrap();
    assert_eq!(bus.status().await, ComponentStatus::Unhealthy);
    bus.publish(&[event(1)]).await; // logs, never panics or errors the caller
}

#[test]
fn a_malformed_url_is_refused() {
    assert!(RedisBus::new("not a url", "test", no_log()).is_err());
    assert!(RedisBus::new("redis://127.0.0.1:6379", "", no_log()).is_err());
}

/// An agent registered in `store`, its event numbered as the relay would: the events it made.
async fn committed_event(store: &adapters_memory::MemoryStore, n: u128) -> Vec<Event> {
    use ports::{AgentRepository, EventLog};
    let at = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap();
    let agent = testkit::builders::agent(n, &format!("agent-{n}"), &[], at);
    let key = testkit::builders::agent_key(n, agent.id, at);
    let event =
        domain::NewEvent::about_agent(EventKind::AgentRegistered, agent.id, json!({"n": 1}), at);
    store.insert(&agent, &key, vec![event]).await.unwrap();
    store.sequence(100).await.unwrap()
}

#[tokio::test]
async fn subscribers_get_the_logs_events_and_nothing_forged_on_the_channel() {
    let url = redis_url();
    let namespace = format!("test:{}", uuid::Uuid::new_v4().simple());
    let store = Arc::new(adapters_memory::MemoryStore::new());
    let bus = RedisBus::new(&url, &namespace, store.clone()).unwrap();
    let mut received = bus.subscribe();
    // Redis delivers only to subscriptions made before the publish.
    bus.subscribed().await;

    // The first event committed after the subscription arrives, exactly as stored.
    let events = committed_event(&store, 1).await;
    bus.publish(&events).await;
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), received.recv())
        .await
        .expect("the event within 5 s")
        .unwrap();
    assert_eq!(first, events[0]);
    // A made-up event, and a notice far ahead of the log, straight onto the channel...
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for forged in [
        json!({"seq": 2, "type": "task_assigned", "data": {}, "timestamp": "2026-01-01T00:00:00Z"})
            .to_string(),
        "1000000".to_owned(),
    ] {
        let _: () = redis::cmd("PUBLISH")
            .arg(events_channel(&namespace))
            .arg(forged)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // ...deliver nothing and move no cursor: the next real event is the next to arrive.
    let events = committed_event(&store, 2).await;
    bus.publish(&events).await;
    let second = tokio::time::timeout(std::time::Duration::from_secs(5), received.recv())
        .await
        .expect("the event within 5 s")
        .unwrap();
    assert_eq!(
        second, events[0],
        "the event as stored, not the made-up one"
    );
    // A third real event comes next: nothing was delivered in between.
    let events = committed_event(&store, 3).await;
    bus.publish(&events).await;
    let third = tokio::time::timeout(std::time::Duration::from_secs(5), received.recv())
        .await
        .expect("the event within 5 s")
        .unwrap();
    assert_eq!(third, events[0]);
}
