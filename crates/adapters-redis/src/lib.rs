//! The event bus on Redis pub/sub, so events committed on any replica reach every replica.
//!
//! Redis carries events; it does not keep them. The durable copy is the event log in the
//! store, written with each change. Publishing never makes a request wait: events go into a
//! bounded queue that one background task drains to Redis in order. While Redis is down the
//! queue's events are dropped (and logged); they remain in the event log.

mod limits;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;
use deadpool_redis::{Config, Pool, Runtime};
use domain::Event;
use ports::{ComponentStatus, EventBus};
use serde_json::json;

pub use limits::RedisRateLimiter;

/// The pub/sub channel events travel on.
pub const EVENTS_CHANNEL: &str = "agent_platform:events";
/// How long a health check or a publish may wait for Redis.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Events waiting to be published; beyond this, new ones are dropped (they stay in the log).
const QUEUE: usize = 10_000;
/// Most events sent in one pipeline.
const BATCH: usize = 256;
/// How far this process's slowest subscriber may fall behind the events received.
const LOCAL_CAPACITY: usize = 4096;
/// Longest wait between attempts to resubscribe after Redis went away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why the Redis adapter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("invalid REDIS_URL: {0}")]
pub struct ConfigError(String);

/// Publishes committed events to Redis.
#[derive(Clone)]
pub struct RedisBus {
    pool: Pool,
    queue: tokio::sync::mpsc::Sender<String>,
    /// Events received from Redis (this replica's included), for this process's subscribers.
    local: tokio::sync::broadcast::Sender<Event>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Builds the connection pool and starts the publishing task on the current tokio runtime.
    /// Connections are opened on first use, so a Redis that is down now only makes the bus
    /// report itself unhealthy until it is back.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        redis::Client::open(url).map_err(|e| ConfigError(e.to_string()))?;
        let pool = Config::from_url(url)
            .builder()
            .map_err(|e| ConfigError(e.to_string()))?
            .max_size(16)
            .wait_timeout(Some(TIMEOUT))
            .create_timeout(Some(TIMEOUT))
            .recycle_timeout(Some(TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| ConfigError(e.to_string()))?;
        let (queue, pending) = tokio::sync::mpsc::channel(QUEUE);
        tokio::spawn(drain(pool.clone(), pending));
        let local = tokio::sync::broadcast::channel(LOCAL_CAPACITY).0;
        tokio::spawn(listen(url.to_owned(), local.clone()));
        Ok(Self { pool, queue, local })
    }

    /// The connection pool, shared with the rate limiter.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn ping(&self) -> Result<(), String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("unexpected PING reply {pong:?}"))
        }
    }

    /// Closes the pool.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// The form an event travels in between replicas.
pub fn encode(event: &Event) -> String {
    json!({
        "seq": event.seq,
        "type": event.kind.as_str(),
        "channel": event.channel().as_str(),
        "agent_id": event.agent_id,
        "task_id": event.task_id,
        "data": event.data,
        "timestamp": event.timestamp,
    })
    .to_string()
}

async fn publish_all(pool: &Pool, payloads: &[String]) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let mut pipe = redis::pipe();
    for payload in payloads {
        pipe.publish(EVENTS_CHANNEL, payload).ignore();
    }
    pipe.query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// The event an encoded payload carries, if it is one.
pub fn decode(payload: &str) -> Option<Event> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let id = |key: &str| v[key].as_str().and_then(|s| s.parse::<uuid::Uuid>().ok());
    Some(Event {
        seq: v["seq"].as_i64()?,
        kind: v["type"].as_str()?.parse().ok()?,
        agent_id: id("agent_id").map(domain::AgentId),
        task_id: id("task_id").map(domain::TaskId),
        data: v["data"].clone(),
        timestamp: v["timestamp"].as_str()?.parse().ok()?,
    })
}

/// One subscription per process: every event on the channel goes to this process's local
/// subscribers. Resubscribes with a growing pause while Redis is away.
async fn listen(url: String, local: tokio::sync::broadcast::Sender<Event>) {
    let mut pause = Duration::from_millis(100);
    let mut failing = false;
    loop {
        match listen_once(&url, &local).await {
            Ok(()) => pause = Duration::from_millis(100),
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "lost the Redis event subscription; retrying");
                }
                failing = true;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

async fn listen_once(
    url: &str,
    local: &tokio::sync::broadcast::Sender<Event>,
) -> Result<(), String> {
    use futures_util::StreamExt;
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    pubsub
        .subscribe(EVENTS_CHANNEL)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("subscribed to Redis events");
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: String = message.get_payload().map_err(|e| e.to_string())?;
        match decode(&payload) {
            Some(event) => {
                let _ = local.send(event); // no local subscriber is fine
            }
            None => tracing::warn!("ignoring a malformed message on the events channel"),
        }
    }
    Err("the subscription ended".into())
}

/// Publishes queued events in order, a pipeline at a time, until every sender is gone.
/// Logs when delivery stops working and when it works again, not for every event.
async fn drain(pool: Pool, mut pending: tokio::sync::mpsc::Receiver<String>) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(BATCH);
    while pending.recv_many(&mut batch, BATCH).await > 0 {
        let result = tokio::time::timeout(TIMEOUT, publish_all(&pool, &batch))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("publishing events to Redis works again");
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot publish events to Redis; they stay in the event log");
                }
                failing = true;
            }
        }
        batch.clear();
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, events: &[Event]) {
        for event in events {
            if self.queue.try_send(encode(event)).is_err() {
                tracing::warn!(
                    seq = event.seq,
                    "the Redis publish queue is full; the event is in the log only"
                );
            }
        }
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.local.subscribe()
    }

    async fn status(&self) -> ComponentStatus {
        match tokio::time::timeout(TIMEOUT, self.ping()).await {
            Ok(Ok(())) => ComponentStatus::Healthy,
            _ => ComponentStatus::Unhealthy,
        }
    }
}
