//! One subscription to the platform's events per process, each event encoded once and shared by
//! every session; and the periodic `system_metrics` frame.

use std::sync::Arc;
use std::time::Duration;

use app::Platform;
use bytestring::ByteString;
use domain::{ApiKeyId, Channel, Event};
use serde_json::json;
use tokio::sync::broadcast;

/// How many frames a session may fall behind before it is disconnected as too slow.
pub const SESSION_BACKLOG: usize = 1024;
/// How often the hub compares what it delivered with the log, to deliver what the bus lost,
/// unless told otherwise.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(2);
/// How often the hub looks for revoked API keys, and how far back.
const REVOCATIONS_EVERY: Duration = Duration::from_secs(5);
const REVOCATIONS_WINDOW_SECS: i64 = 60;

/// An event and its frame, encoded once; or a notice of revoked API keys.
#[derive(Debug)]
pub struct Delivery {
    /// `None` for frames that are not stored events (`system_metrics`, revocations).
    pub event: Option<Event>,
    pub channel: Channel,
    pub frame: ByteString,
    /// API keys revoked lately: sessions opened with one of them end. Empty for frames.
    pub revoked: Vec<ApiKeyId>,
}

/// The frame of a stored event, as every subscriber receives it.
pub fn encode(event: &Event) -> ByteString {
    /// The frame, serialized straight from the event (its `data` is not copied into a new
    /// tree), its keys in sorted order as before.
    #[derive(serde::Serialize)]
    struct Frame<'a> {
        channel: &'static str,
        data: &'a serde_json::Value,
        seq: i64,
        timestamp: &'a chrono::DateTime<chrono::Utc>,
        #[serde(rename = "type")]
        kind: &'static str,
    }
    serde_json::to_string(&Frame {
        channel: event.channel().as_str(),
        data: &event.data,
        seq: event.seq,
        timestamp: &event.timestamp,
        kind: event.kind.as_str(),
    })
    .expect("an event is plain JSON data")
    .into()
}

/// Fans events out to this process's WebSocket sessions.
#[derive(Debug, Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<Delivery>>,
}

impl Hub {
    /// Starts relaying the platform's events (and, every `metrics_every`, the system metrics)
    /// to sessions, on the current tokio runtime.
    pub fn start(
        platform: Platform,
        connections: Arc<super::Connections>,
        metrics_every: Duration,
        catch_up_every: Duration,
    ) -> Self {
        let sender = broadcast::channel(SESSION_BACKLOG).0;
        let hub = Self {
            sender: sender.clone(),
        };
        let mut events = platform.subscribe_events();
        tokio::spawn(async move {
            let mut metrics = tokio::time::interval(metrics_every);
            metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut check = tokio::time::interval(catch_up_every);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut revocations = tokio::time::interval(REVOCATIONS_EVERY);
            revocations.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Everything before now is history: subscribers ask for it with `since`.
            let mut delivered = platform.newest_seq().await.unwrap_or(0);
            loop {
                tokio::select! {
                    received = events.recv() => match received {
                        Ok(event) => {
                            delivered = delivered.max(event.seq);
                            // Framed only for sessions there are: none, no cost.
                            if sender.receiver_count() > 0 {
                                let _ = sender.send(Arc::new(delivery(event)));
                            }
                        }
                        // Caught up from the log at the next check.
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "the WebSocket hub fell behind the event bus");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    // Events the bus did not bring (Redis was away, or this hub lagged) are
                    // delivered from the log; sessions drop what they already have by `seq`.
                    _ = check.tick() => {
                        if sender.receiver_count() == 0 {
                            delivered = platform.newest_seq().await.unwrap_or(delivered);
                            continue;
                        }
                        while let Ok(missed) = platform.log_after(delivered, 500).await {
                            let Some(last) = missed.last().map(|e| e.seq) else { break };
                            for event in missed {
                                let _ = sender.send(Arc::new(delivery(event)));
                            }
                            delivered = last;
                        }
                    },
                    // A key revoked on any replica ends the sessions opened with it on this one.
                    _ = revocations.tick() => {
                        if sender.receiver_count() == 0 {
                            continue;
                        }
                        let window = chrono::Duration::seconds(REVOCATIONS_WINDOW_SECS);
                        match platform.recently_revoked(window).await {
                            Ok(revoked) if !revoked.is_empty() => {
                                let _ = sender.send(Arc::new(Delivery {
                                    event: None,
                                    channel: Channel::SystemMetrics,
                                    frame: ByteString::new(),
                                    revoked,
                                }));
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "cannot check for revoked API keys"),
                        }
                    },
                    _ = metrics.tick() => {
                        if sender.receiver_count() > 0 {
                            let frame = system_metrics(&platform, &connections).await;
                            let _ = sender.send(Arc::new(frame));
                        }
                    }
                }
            }
        });
        hub
    }

    /// A receiver of every delivery from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Delivery>> {
        self.sender.subscribe()
    }
}

fn delivery(event: Event) -> Delivery {
    Delivery {
        frame: encode(&event),
        channel: event.channel(),
        event: Some(event),
        revoked: Vec::new(),
    }
}

/// The dashboard counters, as a `system_metrics` frame. Not stored: it has no `seq`.
async fn system_metrics(platform: &Platform, connections: &super::Connections) -> Delivery {
    let health = platform.health().await;
    let frame = json!({
        "type": "system_metrics",
        "channel": Channel::SystemMetrics.as_str(),
        "data": {
            "active_agents": health.active_agents,
            "active_tasks": health.active_tasks,
            "websocket_connections": connections.open(),
            "database": health.database.as_str(),
            "redis": health.redis.as_str(),
        },
        "timestamp": health.timestamp,
    });
    Delivery {
        event: None,
        channel: Channel::SystemMetrics,
        frame: frame.to_string().into(),
        revoked: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{AgentId, EventKind, NewEvent};

    #[test]
    fn a_frame_is_the_event_in_the_contracts_five_fields() {
        let at = chrono::DateTime::from_timestamp(1_767_225_600, 123_000_000).unwrap();
        let agent = AgentId(uuid::Uuid::from_u128(7));
        let data = json!({"agent_id": agent, "status": "idle", "note": "a \"quoted\" word"});
        let event = Event::stored(
            42,
            NewEvent::about_agent(EventKind::AgentRegistered, agent, data.clone(), at),
        );
        let frame: serde_json::Value = serde_json::from_str(&encode(&event)).unwrap();
        assert_eq!(
            frame,
            json!({
                "type": "agent_registered",
                "channel": "agent_activity",
                "data": data,
                "timestamp": "2026-01-01T00:00:00.123Z",
                "seq": 42,
            })
        );
    }
}
