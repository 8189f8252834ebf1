//! WebSocket subscribers: each connects, subscribes to task and agent activity, and for
//! `--websocket-duration` counts the events it receives and how long after they happened.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::http::Target;
use super::stats::Recorder;
use super::Options;

/// What the subscribers measured, once they are done.
pub type Subscribers = JoinHandle<(Recorder, Map<String, Value>)>;

/// Starts `--websocket-connections` subscribers; they run alongside the other phases.
pub fn spawn(options: &Options, target: &Target, token: &str) -> Subscribers {
    let (count, duration) = (options.websocket_connections, options.websocket_duration);
    let (target, token) = (target.clone(), token.to_owned());
    tokio::spawn(async move {
        let sessions: Vec<_> = (0..count)
            .map(|n| tokio::spawn(subscribe(n, target.spread(n), token.clone(), duration)))
            .collect();
        let mut recorder = Recorder::default();
        let (mut opened, mut events) = (0u64, 0u64);
        for session in sessions {
            if let Ok((r, connected, received)) = session.await {
                recorder.merge(r);
                opened += u64::from(connected);
                events += received;
            }
        }
        let mut figures = Map::new();
        if count > 0 {
            figures.insert("websocket_connections_opened".into(), json!(opened));
            figures.insert("websocket_events_received".into(), json!(events));
        }
        (recorder, figures)
    })
}

/// A WebSocket connection to the server.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/api/v1/ws/{client}` with `token` in the `Authorization` header, recording the
/// upgrade (or its failure) as `WS connect`.
pub async fn connect(
    target: &Target,
    client: &str,
    token: &str,
    recorder: &mut Recorder,
) -> Option<Socket> {
    let url = format!("ws://{}{}/api/v1/ws/{client}", target.addr, target.prefix);
    let Ok(mut request) = url.into_client_request() else {
        recorder.error("WS connect");
        return None;
    };
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.headers_mut().insert("authorization", value);
    }
    let started = Instant::now();
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(request),
    )
    .await;
    match connected {
        Ok(Ok((socket, response))) => {
            recorder.record("WS connect", response.status().as_u16(), started.elapsed());
            Some(socket)
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            recorder.record("WS connect", response.status().as_u16(), started.elapsed());
            None
        }
        _ => {
            recorder.error("WS connect");
            None
        }
    }
}

/// What a subscriber reads of a frame: a stored event has a `seq`, and when it happened.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    seq: Option<u64>,
    #[serde(borrow)]
    timestamp: Option<std::borrow::Cow<'a, str>>,
}

/// One subscriber; returns what it measured, whether it connected, and how many events it got.
async fn subscribe(
    n: usize,
    target: Target,
    token: String,
    duration: Duration,
) -> (Recorder, bool, u64) {
    let mut recorder = Recorder::default();
    let mut socket = match connect(&target, &format!("loadtest-{n}"), &token, &mut recorder).await {
        Some(socket) => socket,
        None => return (recorder, false, 0),
    };
    let subscribe =
        json!({"type": "subscribe", "subscriptions": ["task_activity", "agent_activity"]});
    if socket
        .send(Message::text(subscribe.to_string()))
        .await
        .is_err()
    {
        return (recorder, true, 0);
    }
    let mut events = 0;
    let until = tokio::time::Instant::now() + duration;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, socket.next()).await {
        let Message::Text(text) = message else {
            continue;
        };
        // Only what is measured is read out of the frame: its `data` (a task's whole snapshot,
        // say) is skipped over, not built into a tree, so that the subscribers' cost does not
        // crowd the server out of the cores they share.
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            continue;
        };
        if frame.seq.is_some() {
            events += 1;
            let happened = frame
                .timestamp
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
            if let Some(at) = happened {
                let lag = chrono::Utc::now().signed_duration_since(at);
                recorder.sample("event_delivery_lag", lag.to_std().unwrap_or_default());
            }
        }
    }
    let _ = socket.close(None).await;
    (recorder, true, events)
}
