//! The event bus on Redis pub/sub, so events committed on any replica reach every replica.
//!
//! Redis carries events; it does not keep them. The durable copy is the event log in the
//! store, so a Redis outage delays delivery but loses nothing.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;
use deadpool_redis::{Config, Pool, Runtime};
use domain::Event;
use ports::{ComponentStatus, EventBus};
use serde_json::json;

/// The pub/sub channel events travel on.
pub const EVENTS_CHANNEL: &str = "agent_platform:events";
/// How long a health check or a publish may wait for Redis.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Why the Redis adapter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("invalid REDIS_URL: {0}")]
pub struct ConfigError(String);

/// Publishes committed events to Redis.
#[derive(Clone)]
pub struct RedisBus {
    pool: Pool,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Builds the connection pool. Connections are opened on first use, so a Redis that is down
    /// now only makes the bus report itself unhealthy until it is back.
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
        Ok(Self { pool })
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

    async fn publish_all(&self, payloads: Vec<String>) -> Result<(), String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let mut pipe = redis::pipe();
        for payload in payloads {
            pipe.publish(EVENTS_CHANNEL, payload).ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
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

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, events: &[Event]) {
        let payloads = events.iter().map(encode).collect();
        match tokio::time::timeout(TIMEOUT, self.publish_all(payloads)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot publish events to Redis; they stay in the event log")
            }
            Err(_) => {
                tracing::warn!("publishing events to Redis timed out; they stay in the event log")
            }
        }
    }

    async fn status(&self) -> ComponentStatus {
        match tokio::time::timeout(TIMEOUT, self.ping()).await {
            Ok(Ok(())) => ComponentStatus::Healthy,
            _ => ComponentStatus::Unhealthy,
        }
    }
}
