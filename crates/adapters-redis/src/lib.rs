//! The event bus on Redis pub/sub, so events committed on any replica reach every replica.
//!
//! Redis carries notices; it does not keep events, and it is not trusted with them. The durable
//! copy is the event log in the store, written with each change. A replica publishes, for each
//! batch of committed events, the `seq` of the newest; a replica that hears a notice reads the
//! log after what it has delivered and hands on exactly what it read. So a message that is not
//! a committed event of this deployment (another deployment's, or anything else somebody with
//! access to Redis sends) delivers nothing and moves no cursor.
//!
//! Each deployment has its own channel, `<namespace>:events`, since pub/sub ignores Redis's
//! database numbers; the namespace defaults to one derived from the store's identity.
//!
//! Publishing never makes a request wait: notices go into a bounded queue that one background
//! task drains to Redis in order. While Redis is down notices are dropped (and logged); the
//! events remain in the log, and readers catch up from it.

mod limits;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;
use deadpool_redis::{Config, Pool, Runtime};
use domain::Event;
use futures_util::FutureExt;
use ports::{ComponentStatus, EventBus, EventLog};

pub use limits::RedisRateLimiter;

/// The namespace's pub/sub channel for event notices.
pub fn events_channel(namespace: &str) -> String {
    format!("{namespace}:events")
}
/// Events read from the log per page when a notice arrives.
const READ_PAGE: u32 = 500;
/// How long a health check or a publish may wait for Redis.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Notices waiting to be published; beyond this, new ones are dropped (the events stay in the
/// log).
const QUEUE: usize = 10_000;
/// Most notices sent in one pipeline.
const BATCH: usize = 256;
/// How far this process's slowest subscriber may fall behind the events received.
const LOCAL_CAPACITY: usize = 4096;
/// Longest wait between attempts to resubscribe after Redis went away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why the Redis adapter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("invalid REDIS_URL: {0}")]
pub struct ConfigError(String);

/// Publishes notices of committed events to Redis, and delivers this deployment's events,
/// read from its log, to this process's subscribers.
#[derive(Clone)]
pub struct RedisBus {
    pool: Pool,
    namespace: Arc<str>,
    queue: tokio::sync::mpsc::Sender<i64>,
    /// Events read from the log on a notice (this replica's included), for this process's
    /// subscribers.
    local: tokio::sync::broadcast::Sender<Event>,
    /// Whether the listener is subscribed now.
    subscribed: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Builds the connection pool and starts the publishing and listening tasks on the current
    /// tokio runtime. `namespace` names this deployment on Redis (its channel, its rate-limit
    /// keys); `log` is where events heard of are read from. Connections are opened on first
    /// use, so a Redis that is down now only makes the bus report itself unhealthy until it is
    /// back.
    pub fn new(url: &str, namespace: &str, log: Arc<dyn EventLog>) -> Result<Self, ConfigError> {
        if namespace.is_empty() {
            return Err(ConfigError("the Redis namespace must not be empty".into()));
        }
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
        let channel = events_channel(namespace);
        let (queue, pending) = tokio::sync::mpsc::channel(QUEUE);
        tokio::spawn(drain(pool.clone(), channel.clone(), pending));
        let local = tokio::sync::broadcast::channel(LOCAL_CAPACITY).0;
        let (ready, subscribed) = tokio::sync::watch::channel(false);
        tokio::spawn(listen(url.to_owned(), channel, log, local.clone(), ready));
        Ok(Self {
            pool,
            namespace: namespace.into(),
            queue,
            local,
            subscribed,
        })
    }

    /// Resolves once the listener is subscribed: from then on, notices any replica publishes
    /// reach this one. (Redis delivers only to subscriptions made before a publish.)
    pub async fn subscribed(&self) {
        let mut subscribed = self.subscribed.clone();
        let _ = subscribed.wait_for(|s| *s).await;
    }

    /// The namespace this deployment's keys and channel live under.
    pub fn namespace(&self) -> &str {
        &self.namespace
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

/// The notice a batch of events travels as between replicas: the newest `seq`.
pub fn encode(newest_seq: i64) -> String {
    newest_seq.to_string()
}

async fn publish_all(pool: &Pool, channel: &str, notices: &[i64]) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    // Only the newest matters: a reader reads everything up to it.
    let newest = notices.iter().copied().max().unwrap_or_default();
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(encode(newest))
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// The `seq` a message announces, if it is a notice: a number, or an object with a numeric
/// `seq` (what replicas of earlier versions publish). It is only ever a hint to read the log.
pub fn decode(payload: &str) -> Option<i64> {
    let payload = payload.trim();
    if payload.len() > 64 * 1024 {
        return None;
    }
    payload.parse::<i64>().ok().or_else(|| {
        serde_json::from_str::<serde_json::Value>(payload)
            .ok()?
            .get("seq")?
            .as_i64()
    })
}

/// One subscription per process. Each notice newer than what was delivered makes the listener
/// read the log from there and deliver what it finds to this process's subscribers; notices
/// that arrive meanwhile are folded into one read. Resubscribes with a growing pause while
/// Redis is away.
async fn listen(
    url: String,
    channel: String,
    log: Arc<dyn EventLog>,
    local: tokio::sync::broadcast::Sender<Event>,
    ready: tokio::sync::watch::Sender<bool>,
) {
    let mut pause = Duration::from_millis(100);
    let mut failing = false;
    loop {
        let result = listen_once(&url, &channel, log.as_ref(), &local, &ready).await;
        // Subscribed until now: a loss is news again, and is logged.
        if ready.send_replace(false) {
            failing = false;
        }
        match result {
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
    channel: &str,
    log: &dyn EventLog,
    local: &tokio::sync::broadcast::Sender<Event>,
    ready: &tokio::sync::watch::Sender<bool>,
) -> Result<(), String> {
    use futures_util::StreamExt;
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    // The place is taken before subscribing, on every (re)subscription: events committed in
    // between are read at the first notice, and what was committed while the subscription was
    // down has reached subscribers through their catch-up from the log, so it is not read
    // again here.
    let mut delivered = head(log).await;
    pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
    ready.send_replace(true);
    tracing::info!(channel, "subscribed to Redis event notices");
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let mut newest = notice(&message);
        while let Some(Some(more)) = messages.next().now_or_never() {
            newest = newest.max(notice(&more));
        }
        let Some(newest) = newest else {
            tracing::warn!("ignoring a message on the events channel that is not a notice");
            continue;
        };
        match delivered {
            Some(from) if newest > from => delivered = Some(read_after(log, from, local).await),
            Some(_) => {}
            // The log could not be read when the subscription began: start from its head now
            // (a notice's own number is never trusted as a place); what this skips reaches
            // subscribers through their catch-up from the log.
            None => delivered = head(log).await,
        }
    }
    Err("the subscription ended".into())
}

/// The newest `seq` in the log, if it can be read.
async fn head(log: &dyn EventLog) -> Option<i64> {
    match log.latest_events(1).await {
        Ok(latest) => Some(latest.first().map_or(0, |e| e.seq)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the event log's head");
            None
        }
    }
}

fn notice(message: &redis::Msg) -> Option<i64> {
    message
        .get_payload::<String>()
        .ok()
        .and_then(|p| decode(&p))
}

/// Delivers every event in the log after `from`; returns the last `seq` delivered. Stops early,
/// keeping its place, when the log cannot be read: subscribers catch up from the log later.
async fn read_after(
    log: &dyn EventLog,
    mut from: i64,
    local: &tokio::sync::broadcast::Sender<Event>,
) -> i64 {
    loop {
        match log.events_after(from, READ_PAGE).await {
            Ok(events) => {
                let exhausted = events.len() < READ_PAGE as usize;
                for event in events {
                    from = event.seq;
                    let _ = local.send(event); // no local subscriber is fine
                }
                if exhausted {
                    return from;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event log for a notice");
                return from;
            }
        }
    }
}

/// Publishes queued notices, the newest of each batch, until every sender is gone. Logs when
/// delivery stops working and when it works again, not for every notice.
async fn drain(pool: Pool, channel: String, mut pending: tokio::sync::mpsc::Receiver<i64>) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(BATCH);
    while pending.recv_many(&mut batch, BATCH).await > 0 {
        let result = tokio::time::timeout(TIMEOUT, publish_all(&pool, &channel, &batch))
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
        let Some(newest) = events.iter().map(|e| e.seq).max() else {
            return;
        };
        if self.queue.try_send(newest).is_err() {
            tracing::warn!(
                seq = newest,
                "the Redis publish queue is full; the events are in the log only"
            );
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
