//! One subscription to the platform's events per process, each event encoded once and handed
//! to the sessions that may see it; and the periodic `system_metrics` frame.
//!
//! The hub relays events in `seq` order without gaps: an event that arrives ahead of one the
//! bus has not brought (lost while Redis was away, or still on its way from another replica)
//! is preceded by what the log holds before it, read once here for every session. Sessions
//! then only drop what they already sent during a replay.
//!
//! Readers (who may see every event) share one channel. An agent's sessions share a channel
//! of their own, which carries only that agent's events: a fleet of agents connected for
//! their assignments costs each event one hand-off, not one per connected agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::Platform;
use bytestring::ByteString;
use domain::{AgentId, ApiKeyId, Channel, Event, Principal, Role};
use serde_json::json;
use tokio::sync::broadcast;

/// How many frames a reader's session may fall behind before it is disconnected as too slow.
pub const SESSION_BACKLOG: usize = 1024;
/// The same for an agent's sessions, which get only that agent's events. Each connected agent
/// has a backlog of its own (about 32 bytes a frame, allocated up front), so it is smaller.
pub const AGENT_BACKLOG: usize = 256;
/// How often the hub compares what it delivered with the log, to deliver what the bus lost,
/// unless told otherwise.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(2);
/// How often the hub looks for revoked API keys, and how far back.
const REVOCATIONS_EVERY: Duration = Duration::from_secs(5);
const REVOCATIONS_WINDOW_SECS: i64 = 60;
/// Events read from the log per page when the hub fills a gap.
const LOG_PAGE: u32 = 500;

/// What the hub hands to sessions.
#[derive(Debug)]
pub enum Delivery {
    /// A stored event and its frame, encoded once.
    Event { event: Event, frame: ByteString },
    /// A frame that is not a stored event (`system_metrics`): it has no `seq`. For readers.
    Counters { channel: Channel, frame: ByteString },
    /// API keys revoked lately: sessions opened with one of them end.
    Revoked(Vec<ApiKeyId>),
    /// Events are missing after `relayed` (every event up to it was relayed before this
    /// notice) and the log cannot be read to fill the gap: every session ends, telling its
    /// client where to resume.
    LogUnavailable { relayed: i64 },
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

/// The agent whose events a principal may see, for one that may not see them all; `None` for
/// a principal that sees no event.
fn agent_of(principal: &Principal) -> Option<AgentId> {
    principal.agent_id.filter(|_| principal.role == Role::Agent)
}

/// Where deliveries go: one channel for readers, one per agent for its sessions.
#[derive(Debug)]
struct Fanout {
    readers: broadcast::Sender<Arc<Delivery>>,
    /// By the agent whose sessions listen (see [`agent_of`]). A channel is made by the first
    /// session of its agent and dropped once none listens.
    agents: Mutex<HashMap<Option<AgentId>, broadcast::Sender<Arc<Delivery>>>>,
}

impl Fanout {
    fn new() -> Self {
        Self {
            readers: broadcast::channel(SESSION_BACKLOG).0,
            agents: Mutex::default(),
        }
    }

    fn agents(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Option<AgentId>, broadcast::Sender<Arc<Delivery>>>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(&self, principal: &Principal) -> broadcast::Receiver<Arc<Delivery>> {
        if principal.can_read_all() {
            return self.readers.subscribe();
        }
        self.agents()
            .entry(agent_of(principal))
            .or_insert_with(|| broadcast::channel(AGENT_BACKLOG).0)
            .subscribe()
    }

    /// Whether any session listens; forgets the agents none listens for any more.
    fn listened(&self) -> bool {
        let mut agents = self.agents();
        agents.retain(|_, channel| channel.receiver_count() > 0);
        self.readers.receiver_count() > 0 || !agents.is_empty()
    }

    /// Who listens that may see `event`: whether readers do, and its agent's channel if any
    /// of that agent's sessions do. Nobody, and it is not even framed.
    fn audience(&self, event: &Event) -> Option<(bool, Option<broadcast::Sender<Arc<Delivery>>>)> {
        let readers = self.readers.receiver_count() > 0;
        let agent = event
            .agent_id
            .and_then(|agent| self.agents().get(&Some(agent)).cloned());
        (readers || agent.is_some()).then_some((readers, agent))
    }

    /// An event, to the readers and to its agent's sessions.
    fn event(&self, event: Event) {
        let Some((readers, agent)) = self.audience(&event) else {
            return;
        };
        let delivery = Arc::new(Delivery::Event {
            frame: encode(&event),
            event,
        });
        if readers {
            let _ = self.readers.send(delivery.clone());
        }
        // A channel whose last session has just gone is forgotten by the next `listened`.
        if let Some(channel) = agent {
            let _ = channel.send(delivery);
        }
    }

    /// A notice for every session.
    fn everyone(&self, delivery: Delivery) {
        let delivery = Arc::new(delivery);
        let _ = self.readers.send(delivery.clone());
        self.agents()
            .retain(|_, channel| channel.send(delivery.clone()).is_ok());
    }
}

/// Fans events out to this process's WebSocket sessions.
#[derive(Debug, Clone)]
pub struct Hub {
    fanout: Arc<Fanout>,
    /// True once the hub has read where the log stands (or found it cannot): sessions
    /// subscribe only then, so no event committed after a session's replay is taken for
    /// history the hub need not relay.
    ready: tokio::sync::watch::Receiver<bool>,
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
        let fanout = Arc::new(Fanout::new());
        let (started, ready) = tokio::sync::watch::channel(false);
        let hub = Self {
            fanout: fanout.clone(),
            ready,
        };
        let mut events = platform.subscribe_events();
        tokio::spawn(async move {
            let mut metrics = tokio::time::interval(metrics_every);
            metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut check = tokio::time::interval(catch_up_every);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut revocations = tokio::time::interval(REVOCATIONS_EVERY);
            revocations.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Everything before now is history: subscribers ask for it with `since`. Not
            // known while the log cannot be read: then the first event relayed sets it, or the
            // check below while nobody listens.
            let mut relayed = platform.newest_seq().await.ok();
            let _ = started.send(true);
            loop {
                tokio::select! {
                    received = events.recv() => match received {
                        Ok(event) => match relayed {
                            // Relayed already (read from the log, or brought twice).
                            Some(last) if event.seq <= last => {}
                            Some(last) if event.seq > last + 1 && fanout.listened() => {
                                // Events before it have not come: the log's go first.
                                if from_log(&platform, &fanout, &mut relayed, event.seq - 1).await.is_err() {
                                    let relayed = relayed.unwrap_or(last);
                                    fanout.everyone(Delivery::LogUnavailable { relayed });
                                }
                                relayed = Some(event.seq);
                                fanout.event(event);
                            }
                            _ => {
                                relayed = Some(event.seq);
                                fanout.event(event);
                            }
                        },
                        // The next event shows the gap, or the next check finds it.
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "the WebSocket hub fell behind the event bus");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    // Events the bus did not bring (Redis was away) and no later event showed
                    // missing are delivered from the log.
                    _ = check.tick() => {
                        if !fanout.listened() {
                            // Nobody to deliver to: what is in the log now is history. The head
                            // is read before it is known that nobody listens, so a session that
                            // began meanwhile (and replayed the log up to a head older than
                            // this one) is not passed over.
                            let head = platform.newest_seq().await.ok();
                            if !fanout.listened() {
                                relayed = head.or(relayed);
                            }
                            continue;
                        }
                        let _ = from_log(&platform, &fanout, &mut relayed, i64::MAX).await;
                    },
                    // A key revoked on any replica ends the sessions opened with it on this one.
                    _ = revocations.tick() => {
                        if !fanout.listened() {
                            continue;
                        }
                        let window = chrono::Duration::seconds(REVOCATIONS_WINDOW_SECS);
                        match platform.recently_revoked(window).await {
                            Ok(revoked) if !revoked.is_empty() => {
                                fanout.everyone(Delivery::Revoked(revoked));
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "cannot check for revoked API keys"),
                        }
                    },
                    _ = metrics.tick() => {
                        if fanout.readers.receiver_count() > 0 {
                            let frame = system_metrics(&platform, &connections).await;
                            let _ = fanout.readers.send(Arc::new(frame));
                        }
                    }
                }
            }
        });
        hub
    }

    /// A receiver of every delivery from now on that `principal` may see: a reader's get
    /// every event, an agent's only its own (and the notices every session gets).
    /// Waits until the hub has started.
    pub async fn subscribe(&self, principal: &Principal) -> broadcast::Receiver<Arc<Delivery>> {
        let mut ready = self.ready.clone();
        // A hub that stopped relays nothing more; the receiver then reports it closed.
        let _ = ready.wait_for(|ready| *ready).await;
        self.fanout.subscribe(principal)
    }
}

/// Relays the events the log holds after `relayed` up to `until`, in pages, moving `relayed`
/// on as it goes. An error leaves `relayed` at the last event relayed.
async fn from_log(
    platform: &Platform,
    fanout: &Fanout,
    relayed: &mut Option<i64>,
    until: i64,
) -> Result<(), app::AppError> {
    let Some(mut last) = *relayed else {
        return Ok(());
    };
    while last < until {
        let page = platform.log_after(last, LOG_PAGE).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read the event log to relay what the bus did not bring");
            e
        })?;
        let full = page.len() == LOG_PAGE as usize;
        for event in page {
            if event.seq > until {
                return Ok(());
            }
            last = event.seq;
            *relayed = Some(last);
            fanout.event(event);
        }
        if !full {
            break;
        }
    }
    Ok(())
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
    Delivery::Counters {
        channel: Channel::SystemMetrics,
        frame: frame.to_string().into(),
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

    fn principal(role: Role, agent: Option<AgentId>) -> Principal {
        Principal {
            subject: "caller".into(),
            role,
            agent_id: agent,
            expires_at: None,
            api_key: None,
            user_token: None,
        }
    }

    fn event(seq: i64, agent: Option<AgentId>) -> Event {
        let task = domain::TaskId(uuid::Uuid::from_u128(seq as u128));
        let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let new = NewEvent::about_task(EventKind::TaskAssigned, task, agent, json!({}), at);
        Event::stored(seq, new)
    }

    /// The seq of the next event waiting for a receiver; `None` when nothing waits.
    fn next_seq(receiver: &mut broadcast::Receiver<Arc<Delivery>>) -> Option<i64> {
        match &*receiver.try_recv().ok()? {
            Delivery::Event { event, .. } => Some(event.seq),
            _ => Some(-1),
        }
    }

    #[test]
    fn an_agents_sessions_are_handed_only_its_own_events_and_readers_every_one() {
        let fanout = Fanout::new();
        let (one, two) = (
            AgentId(uuid::Uuid::from_u128(1)),
            AgentId(uuid::Uuid::from_u128(2)),
        );
        let mut reader = fanout.subscribe(&principal(Role::Viewer, None));
        let mut first = fanout.subscribe(&principal(Role::Agent, Some(one)));
        let mut second = fanout.subscribe(&principal(Role::Agent, Some(two)));
        let mut twin = fanout.subscribe(&principal(Role::Agent, Some(one)));
        fanout.event(event(1, Some(one)));
        fanout.event(event(2, Some(two)));
        fanout.event(event(3, None));
        assert_eq!(
            [
                next_seq(&mut reader),
                next_seq(&mut reader),
                next_seq(&mut reader)
            ],
            [Some(1), Some(2), Some(3)]
        );
        assert_eq!(
            [next_seq(&mut first), next_seq(&mut first)],
            [Some(1), None]
        );
        assert_eq!([next_seq(&mut twin), next_seq(&mut twin)], [Some(1), None]);
        assert_eq!(
            [next_seq(&mut second), next_seq(&mut second)],
            [Some(2), None]
        );
        // Notices reach every session.
        fanout.everyone(Delivery::LogUnavailable { relayed: 3 });
        for receiver in [&mut reader, &mut first, &mut second, &mut twin] {
            assert_eq!(next_seq(receiver), Some(-1));
        }
    }

    #[test]
    fn an_agent_none_listens_for_is_forgotten_and_its_events_not_framed() {
        let fanout = Fanout::new();
        let one = AgentId(uuid::Uuid::from_u128(1));
        let session = fanout.subscribe(&principal(Role::Agent, Some(one)));
        assert!(fanout.listened());
        assert!(fanout.audience(&event(1, Some(one))).is_some());
        assert!(fanout.audience(&event(2, None)).is_none());
        drop(session);
        assert!(!fanout.listened());
        assert!(fanout.audience(&event(3, Some(one))).is_none());
    }
}
