//! One WebSocket connection: authentication, subscriptions, replay and live delivery.
//!
//! Everything a session sends is in `seq` order and sent once: it remembers the last `seq` it
//! has passed, skips anything at or below it, and when a live event shows a gap (the bus lost
//! something, say while Redis was away) it reads the missing events from the log first.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use bytestring::ByteString;
use domain::{Channel, Event, Principal};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use uuid::Uuid;

use super::hub::{encode, Delivery};
use super::slots::CredentialSlot;
use super::MAX_MESSAGE_BYTES;
use crate::auth::{authenticate, caller_key};
use crate::error::{ApiError, ErrorKind};
use crate::extract::ApiQuery;
use crate::AppState;

/// How long a connection without credentials has to send an `auth` message.
const AUTH_WINDOW: Duration = Duration::from_secs(10);
/// How often the server pings.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A connection silent this long (no message, no pong) is closed as dead.
const DEAD_AFTER: Duration = Duration::from_secs(60);
/// Events read from the log per page while catching up.
const REPLAY_PAGE: u32 = 500;
/// Longest a single frame may take to go out before the client is given up as not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most live events handled per wake-up.
const LIVE_BATCH: usize = 64;
/// How often a session opened with a signed-in user's token checks that the user still
/// holds it (not deleted, role and password unchanged).
const USER_CHECK_EVERY: Duration = Duration::from_secs(5);

/// `?token=` on the upgrade request.
#[derive(Debug, Deserialize)]
pub struct Connect {
    token: Option<String>,
}

/// Upgrades `GET /api/v1/ws/{client_id}`. Credentials in the `Authorization` or `X-API-Key`
/// header or in `?token=` are checked now (a bad one refuses the upgrade with `401`); without
/// them the client must send `{"type": "auth", "token": ...}` first.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    client_id: web::Path<String>,
    query: ApiQuery<Connect>,
) -> Result<HttpResponse, ApiError> {
    let client_id = client_id.into_inner();
    if client_id.is_empty()
        || client_id.len() > 128
        || !client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(ApiError::bad_request(
            "client_id must be 1 to 128 letters, digits, '-', '_', '.' or ':'",
        ));
    }
    let token = match crate::auth::presented(&req)? {
        Some(token) => Some(token),
        None => query.into_inner().token,
    };
    let principal = match token {
        Some(token) => Some(authenticate(&state, &token).await?),
        None => None,
    };
    // Places are taken before the upgrade, so a refusal is an ordinary answer.
    let Some(slot) = state.connections.admit() else {
        return Err(ApiError::new(
            ErrorKind::Overloaded {
                retry_after: CAPPED_RETRY_AFTER,
            },
            "this server has as many WebSocket connections open as it allows; try again later",
        ));
    };
    // Until it authenticates, a connection counts against its address, so nobody can fill
    // the total without credentials.
    let credential_slot = match &principal {
        Some(principal) => state
            .connections
            .admit_credential(caller_key(principal))
            .ok_or_else(too_many_for_credential)?,
        None => state
            .connections
            .admit_pending(&crate::middleware::client_address(&req))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::TooManyRequests {
                        retry_after: CAPPED_RETRY_AFTER,
                    },
                    "this address has as many WebSocket connections waiting to authenticate as it may",
                )
            })?,
    };
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        tracing::debug!(error = %e, "not a WebSocket upgrade");
        ApiError::bad_request(
            "not a WebSocket upgrade: a GET with Upgrade: websocket, Connection: Upgrade, \
             Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
        )
    })?;
    let stream = stream
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    let state = state.into_inner();
    actix_web::rt::spawn(async move {
        let _slot = slot;
        tracing::info!(client_id, "WebSocket connected");
        let closing = session.clone();
        let mut open = Session::new(state.clone(), principal, session);
        open.credential_slot = Some(credential_slot);
        let reason = open.run(stream).await;
        tracing::info!(client_id, reason = ?reason.as_ref().map(|r| r.code), "WebSocket closed");
        let _ = tokio::time::timeout(WRITE_TIMEOUT, closing.close(reason)).await;
    });
    Ok(response)
}

/// Why a frame could not be sent.
#[derive(Debug)]
enum Blocked {
    /// The client is gone.
    Gone,
    /// The client reads too slowly: a frame did not go out in time.
    Slow,
    /// The API key the session was opened with has been revoked.
    Revoked,
    /// The credentials ran out (noticed during a replay).
    Expired,
    /// The log cannot be read to fill a gap: the client must resume later.
    LogUnavailable,
}

/// The close for a frame the protocol layer refused, with the code RFC 6455 gives its cause
/// and a description of our own (never the parser's text).
fn refused(error: &actix_ws::ProtocolError) -> Ending {
    use actix_ws::ProtocolError;
    match error {
        ProtocolError::Overflow => close(
            CloseCode::Size,
            format!("messages may be at most {MAX_MESSAGE_BYTES} bytes"),
        ),
        ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            close(CloseCode::Invalid, "text messages must be valid UTF-8")
        }
        _ => close(
            CloseCode::Protocol,
            "the frame breaks the WebSocket protocol",
        ),
    }
}

/// What a client refused for a connection cap is told to wait, in seconds.
const CAPPED_RETRY_AFTER: u64 = 5;

fn too_many_for_credential() -> ApiError {
    ApiError::new(
        ErrorKind::TooManyRequests {
            retry_after: CAPPED_RETRY_AFTER,
        },
        "this credential has as many WebSocket connections open as it may; close one first",
    )
}

fn close(code: CloseCode, description: impl Into<String>) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(description.into()),
    })
}

/// Narrowing of a subscription.
#[derive(Debug, Default, Clone, PartialEq)]
struct Filters {
    agent_id: Option<Uuid>,
    task_id: Option<Uuid>,
    execution_id: Option<String>,
}

impl Filters {
    fn parse(value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err("filters must be an object".into());
        };
        let mut filters = Filters::default();
        for (key, v) in map {
            let text = v
                .as_str()
                .ok_or_else(|| format!("filters.{key} must be a string"))?;
            match key.as_str() {
                "agent_id" => {
                    filters.agent_id = Some(
                        text.parse()
                            .map_err(|_| "filters.agent_id must be a UUID")?,
                    )
                }
                "task_id" => {
                    filters.task_id =
                        Some(text.parse().map_err(|_| "filters.task_id must be a UUID")?)
                }
                "execution_id" if text.len() <= 200 => filters.execution_id = Some(text.into()),
                other => return Err(format!("unknown filter '{other}'")),
            }
        }
        Ok(filters)
    }

    fn admit(&self, event: &Event) -> bool {
        self.agent_id
            .is_none_or(|a| event.agent_id.is_some_and(|e| e.as_uuid() == a))
            && self
                .task_id
                .is_none_or(|t| event.task_id.is_some_and(|e| e.as_uuid() == t))
            && self
                .execution_id
                .as_ref()
                .is_none_or(|x| event.data["execution_id"].as_str() == Some(x))
    }
}

/// One connection's state. Frames are written in order, each awaited: a client that reads
/// slowly holds up only its own session, whose place in the hub's shared backlog
/// ([`super::hub::SESSION_BACKLOG`] frames) is then its bounded queue; falling further behind
/// ends the session with `1013` and where to resume.
struct Session {
    state: Arc<AppState>,
    principal: Option<Principal>,
    out: actix_ws::Session,
    channels: BTreeSet<Channel>,
    filters: Filters,
    /// The highest `seq` passed (delivered or filtered out); 0 before the first.
    last_seq: i64,
    /// When the client last showed it is there: a message, a pong, or a page of a replay
    /// taken.
    heard: tokio::time::Instant,
    /// The connection's place among its credential's, or among its address's until it
    /// authenticates.
    credential_slot: Option<CredentialSlot>,
}

/// Why the loop stopped sending: the client went away, or we close it with this reason.
type Ending = Option<CloseReason>;

impl Session {
    fn new(state: Arc<AppState>, principal: Option<Principal>, out: actix_ws::Session) -> Self {
        Self {
            state,
            principal,
            out,
            channels: BTreeSet::new(),
            filters: Filters::default(),
            last_seq: 0,
            heard: tokio::time::Instant::now(),
            credential_slot: None,
        }
    }

    async fn run(mut self, mut stream: actix_ws::AggregatedMessageStream) -> Ending {
        // Subscribed before anything is replayed, so nothing falls between replay and live.
        let mut live = self.state.hub.subscribe();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        self.heard = tokio::time::Instant::now();
        let auth_deadline = tokio::time::sleep(AUTH_WINDOW);
        tokio::pin!(auth_deadline);
        let expiry = tokio::time::sleep_until(self.expiry());
        tokio::pin!(expiry);
        let mut user_check = tokio::time::interval(USER_CHECK_EVERY);
        user_check.reset();
        loop {
            tokio::select! {
                message = stream.next() => {
                    self.heard = tokio::time::Instant::now();
                    match message {
                        Some(Ok(AggregatedMessage::Text(text))) => {
                            let was_anonymous = self.principal.is_none();
                            if let Some(ending) = self.on_text(&text).await {
                                return ending;
                            }
                            if was_anonymous && self.principal.is_some() {
                                expiry.as_mut().reset(self.expiry());
                            }
                        }
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            if let Err(why) = self.error("binary frames are not supported; send JSON text").await {
                                return self.blocked(why);
                            }
                        }
                        Some(Ok(AggregatedMessage::Ping(bytes))) => {
                            if let Err(why) = self.control(|mut c| async move { c.pong(&bytes).await }).await {
                                return self.blocked(why);
                            }
                        }
                        Some(Ok(AggregatedMessage::Pong(_))) => {}
                        Some(Ok(AggregatedMessage::Close(_))) | None => return None,
                        Some(Err(e)) => return refused(&e),
                    }
                }
                delivery = live.recv(), if self.principal.is_some() => match delivery {
                    Ok(delivery) => {
                        // Whatever else is waiting goes out in the same turn, a bounded batch.
                        let mut next = Some(delivery);
                        let mut batch = 0;
                        while let Some(delivery) = next.take() {
                            if let Err(why) = self.on_live(&delivery).await {
                                return self.blocked(why);
                            }
                            batch += 1;
                            if batch < LIVE_BATCH {
                                match live.try_recv() {
                                    Ok(more) => next = Some(more),
                                    Err(TryRecvError::Lagged(_)) => return self.too_slow(),
                                    Err(_) => {}
                                }
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => return self.too_slow(),
                    Err(RecvError::Closed) => return close(CloseCode::Away, "server shutting down"),
                },
                _ = &mut auth_deadline, if self.principal.is_none() => {
                    return close(CloseCode::Policy, "authentication required");
                }
                _ = &mut expiry, if self.principal.as_ref().is_some_and(|p| p.expires_at.is_some()) => {
                    return self.expired();
                }
                _ = user_check.tick(), if self.principal.as_ref().is_some_and(|p| p.user_token.is_some()) => {
                    if let Err(why) = self.user_still_valid().await {
                        return self.blocked(why);
                    }
                }
                _ = ping.tick() => {
                    if self.heard.elapsed() > DEAD_AFTER {
                        return close(CloseCode::Away, "no response to pings");
                    }
                    if let Err(why) = self.control(|mut c| async move { c.ping(b"").await }).await {
                        return self.blocked(why);
                    }
                }
            }
        }
    }

    /// When the credentials run out: the session is closed then. Far ahead when they do not.
    fn expiry(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        match self.principal.as_ref().and_then(|p| p.expires_at) {
            Some(at) => now + (at - chrono::Utc::now()).to_std().unwrap_or_default(),
            None => now + Duration::from_secs(86_400 * 365),
        }
    }

    async fn send(&mut self, value: Value) -> Result<(), Blocked> {
        self.push(value.to_string().into()).await
    }

    /// Writes a frame, waiting at most [`WRITE_TIMEOUT`] for the client to take it.
    async fn push(&mut self, frame: ByteString) -> Result<(), Blocked> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.out.text(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Blocked::Gone),
            Err(_) => Err(Blocked::Slow),
        }
    }

    fn expired(&self) -> Ending {
        close(
            CloseCode::Policy,
            format!(
                "credentials expired; reconnect with new ones and since={}",
                self.last_seq
            ),
        )
    }

    /// Between pages of a replay: the credentials must still hold (a long replay does not
    /// outlive an expiry or a revocation), and taking a page shows the client is there.
    async fn still_valid(&mut self) -> Result<(), Blocked> {
        self.heard = tokio::time::Instant::now();
        let Some(principal) = &self.principal else {
            return Ok(());
        };
        if principal
            .expires_at
            .is_some_and(|at| at <= chrono::Utc::now())
        {
            return Err(Blocked::Expired);
        }
        if let Some(key) = principal.api_key {
            let window = chrono::Duration::seconds(60);
            if let Ok(revoked) = self.state.platform.recently_revoked(window).await {
                if revoked.contains(&key) {
                    return Err(Blocked::Revoked);
                }
            }
        }
        self.user_still_valid().await
    }

    /// A signed-in user's token holds while the user exists with the role and password it was
    /// issued under. A store that cannot answer now is asked again later.
    async fn user_still_valid(&self) -> Result<(), Blocked> {
        let Some(token) = self.principal.as_ref().and_then(|p| p.user_token) else {
            return Ok(());
        };
        match self.state.platform.authenticate_user_token(token).await {
            Err(app::AppError::Unauthorized(_)) => Err(Blocked::Revoked),
            _ => Ok(()),
        }
    }

    fn too_slow(&self) -> Ending {
        close(
            CloseCode::Again,
            format!(
                "too slow to keep up; reconnect with since={}",
                self.last_seq
            ),
        )
    }

    /// Ends the session for a frame that could not be queued.
    fn blocked(&self, why: Blocked) -> Ending {
        match why {
            Blocked::Gone => None,
            Blocked::Slow => self.too_slow(),
            Blocked::Revoked => close(CloseCode::Policy, "credentials revoked"),
            Blocked::Expired => self.expired(),
            Blocked::LogUnavailable => close(
                CloseCode::Again,
                format!(
                    "the event log cannot be read now; reconnect with since={}",
                    self.last_seq
                ),
            ),
        }
    }

    /// A control frame, given as long as any frame: a client that cannot take it is not reading.
    async fn control<F, Fut>(&mut self, send: F) -> Result<(), Blocked>
    where
        F: FnOnce(actix_ws::Session) -> Fut,
        Fut: std::future::Future<Output = Result<(), actix_ws::Closed>>,
    {
        match tokio::time::timeout(WRITE_TIMEOUT, send(self.out.clone())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Blocked::Gone),
            Err(_) => Err(Blocked::Slow),
        }
    }

    async fn error(&mut self, detail: impl Into<String>) -> Result<(), Blocked> {
        self.send(json!({"type": "error", "data": {"detail": detail.into()}}))
            .await
    }

    /// Handles one client message; `Some` ends the session.
    async fn on_text(&mut self, text: &str) -> Option<Ending> {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return self
                .error("messages must be JSON objects")
                .await
                .err()
                .map(|why| self.blocked(why));
        };
        let kind = message["type"].as_str().unwrap_or_default();
        let result = match (kind, &self.principal) {
            ("auth", None) => {
                let Some(token) = message["token"].as_str() else {
                    return Some(close(CloseCode::Policy, "an auth message needs a token"));
                };
                match authenticate(&self.state, token).await {
                    Ok(principal) => {
                        let Some(slot) = self
                            .state
                            .connections
                            .admit_credential(caller_key(&principal))
                        else {
                            return Some(close(
                                CloseCode::Policy,
                                too_many_for_credential().detail,
                            ));
                        };
                        self.credential_slot = Some(slot);
                        let role = principal.role.as_str();
                        self.principal = Some(principal);
                        self.send(json!({"type": "authenticated", "data": {"role": role}}))
                            .await
                    }
                    Err(_) => {
                        return Some(close(CloseCode::Policy, "invalid or expired credentials"))
                    }
                }
            }
            ("auth", Some(_)) => self.error("already authenticated").await,
            (_, None) => {
                self.error("authenticate first: {\"type\": \"auth\", \"token\": ...}")
                    .await
            }
            ("ping", Some(_)) => {
                self.send(json!({"type": "pong", "timestamp": chrono::Utc::now()}))
                    .await
            }
            ("subscribe", Some(_)) => self.subscribe(&message).await,
            ("unsubscribe", Some(_)) => self.unsubscribe(&message).await,
            (other, Some(_)) => {
                self.error(format!(
                    "unknown message type '{other}' (expected subscribe, unsubscribe or ping)"
                ))
                .await
            }
        };
        result.err().map(|why| self.blocked(why))
    }

    fn channels_of(message: &Value) -> Result<Vec<Channel>, String> {
        let Some(list) = message["subscriptions"].as_array() else {
            return Err("subscriptions must be a list of channel names".into());
        };
        if list.len() > Channel::ALL.len() {
            return Err(format!("at most {} subscriptions", Channel::ALL.len()));
        }
        let mut unknown = Vec::new();
        let mut channels = Vec::new();
        for item in list {
            match item.as_str().map(str::parse::<Channel>) {
                Some(Ok(c)) => channels.push(c),
                _ => unknown.push(item.to_string()),
            }
        }
        if unknown.is_empty() {
            Ok(channels)
        } else {
            Err(format!(
                "unknown channel(s) {}; known: agent_activity, task_activity, conflict_alerts, \
                 resource_activity, workflow_activity, system_metrics",
                unknown.join(", ")
            ))
        }
    }

    async fn subscribe(&mut self, message: &Value) -> Result<(), Blocked> {
        let channels = match Self::channels_of(message) {
            Ok(c) => c,
            Err(detail) => return self.error(detail).await,
        };
        let filters = match message.get("filters") {
            None | Some(Value::Null) => None,
            Some(value) => match Filters::parse(value) {
                Ok(f) => Some(f),
                Err(detail) => return self.error(detail).await,
            },
        };
        let since = match message.get("since") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64().filter(|n| *n >= 0) {
                Some(n) => Some(n),
                None => {
                    return self
                        .error("since must be a sequence number (0 or more)")
                        .await
                }
            },
        };
        if let Some(since) = since {
            // A cursor from the future would skip what happens next: refused, naming the head.
            match self.state.platform.newest_seq().await {
                Ok(newest) if since > newest => {
                    return self
                        .error(format!(
                            "since {since} is ahead of the newest event, seq {newest}; \
                             subscribe with since at most {newest}"
                        ))
                        .await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event log for a subscriber");
                    return Err(Blocked::LogUnavailable);
                }
            }
        }
        self.channels.extend(channels);
        if let Some(filters) = filters {
            self.filters = filters;
        }
        let current: Vec<&str> = self.channels.iter().map(|c| c.as_str()).collect();
        self.send(json!({"type": "subscription_confirmed", "subscriptions": current}))
            .await?;
        if let Some(since) = since {
            self.replay_from(since).await?;
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, message: &Value) -> Result<(), Blocked> {
        let channels = match Self::channels_of(message) {
            Ok(c) => c,
            Err(detail) => return self.error(detail).await,
        };
        for c in &channels {
            self.channels.remove(c);
        }
        let removed: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        let remaining: Vec<&str> = self.channels.iter().map(|c| c.as_str()).collect();
        self.send(json!({
            "type": "unsubscription_confirmed",
            "subscriptions": removed,
            "remaining": remaining,
        }))
        .await
    }

    /// Whether this session wants an event: subscribed channel, allowed to see it, filters.
    fn wants(&self, event: &Event) -> bool {
        self.channels.contains(&event.channel())
            && self
                .principal
                .as_ref()
                .is_some_and(|p| p.can_see_event(event))
            && self.filters.admit(event)
    }

    /// Sends every retained event after `since` this session wants, then lets live events
    /// continue from there. Tells the client when the log no longer reaches back that far.
    async fn replay_from(&mut self, since: i64) -> Result<(), Blocked> {
        if let Ok(Some(oldest)) = self.state.platform.oldest_retained_seq().await {
            if oldest > since.saturating_add(1) {
                self.error(format!(
                    "events after {since} and before {oldest} are no longer retained; replaying from {oldest}"
                ))
                .await?;
            }
        }
        self.last_seq = since;
        self.catch_up(i64::MAX).await
    }

    /// Reads the log after `last_seq` up to `until` (inclusive) and sends what is wanted.
    async fn catch_up(&mut self, until: i64) -> Result<(), Blocked> {
        let Some(principal) = self.principal.clone() else {
            return Ok(());
        };
        loop {
            let page = match self
                .state
                .platform
                .events_after(&principal, self.last_seq, REPLAY_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    // Going on would skip the missing events for good: the client resumes.
                    tracing::warn!(error = %e, "cannot read the event log for a subscriber");
                    return Err(Blocked::LogUnavailable);
                }
            };
            for event in page.events.iter().filter(|e| e.seq <= until) {
                if self.wants(event) {
                    self.push(encode(event)).await?;
                }
            }
            self.last_seq = page.next_after.min(until);
            if page.exhausted || page.next_after >= until {
                return Ok(());
            }
            self.still_valid().await?;
        }
    }

    async fn on_live(&mut self, delivery: &Delivery) -> Result<(), Blocked> {
        if !delivery.revoked.is_empty() {
            let key = self.principal.as_ref().and_then(|p| p.api_key);
            return match key {
                Some(key) if delivery.revoked.contains(&key) => Err(Blocked::Revoked),
                _ => Ok(()),
            };
        }
        let Some(event) = &delivery.event else {
            // Not a stored event (system metrics): no sequence to keep. The platform-wide
            // counters are for readers, not for an agent, which sees only what concerns itself.
            let reader = self.principal.as_ref().is_some_and(|p| p.can_read_all());
            if reader && self.channels.contains(&delivery.channel) {
                self.push(delivery.frame.clone()).await?;
            }
            return Ok(());
        };
        if event.seq <= self.last_seq {
            return Ok(()); // already sent during replay
        }
        if self.last_seq > 0 && event.seq > self.last_seq.saturating_add(1) {
            self.catch_up(event.seq - 1).await?;
        }
        if self.wants(event) {
            self.push(delivery.frame.clone()).await?;
        }
        self.last_seq = event.seq;
        Ok(())
    }
}
