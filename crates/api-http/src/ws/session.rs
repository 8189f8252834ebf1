//! One WebSocket connection: authentication, subscriptions, and the loop that answers the
//! client, delivers live events (`delivery`) and replays the log (`replay`).
//!
//! Everything a session sends is in `seq` order and sent once: the hub relays events without
//! gaps (see `hub`), and the session remembers the last `seq` it has passed, skipping anything
//! at or below it that a replay already sent.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use domain::{Channel, Event, Principal};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;

use super::delivery::{close, Blocked, LIVE_BATCH};
use super::hub::Delivery;
use super::protocol::{self, ClientMessage, Filters, Incoming, Subscription};
use super::slots::CredentialSlot;
use super::MAX_MESSAGE_BYTES;
use crate::auth::{authenticate, caller_key};
use crate::error::{ApiError, ErrorKind};
use crate::AppState;

/// How long a connection without credentials has to send an `auth` message.
const AUTH_WINDOW: Duration = Duration::from_secs(10);
/// How often the server pings.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A connection silent this long (no message, no pong) is closed as dead.
const DEAD_AFTER: Duration = Duration::from_secs(60);
/// How often a session looks again at its credentials: whether they ran out by the
/// platform's clock (which tests move), and for a signed-in user's token, whether the user
/// still holds it (not deleted, role and password unchanged).
const CREDENTIALS_CHECK_EVERY: Duration = Duration::from_secs(5);

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

/// The next delivery of a session's live stream, once it has one.
async fn next_live(live: &mut Option<Receiver<Arc<Delivery>>>) -> Result<Arc<Delivery>, RecvError> {
    match live {
        Some(live) => live.recv().await,
        None => std::future::pending().await,
    }
}

/// What a client refused for a connection cap is told to wait, in seconds.
pub(super) const CAPPED_RETRY_AFTER: u64 = 5;

pub(super) fn too_many_for_credential() -> ApiError {
    ApiError::new(
        ErrorKind::TooManyRequests {
            retry_after: CAPPED_RETRY_AFTER,
        },
        "this credential has as many WebSocket connections open as it may; close one first",
    )
}

/// One connection's state. Frames are written in order, each awaited: a client that reads
/// slowly holds up only its own session, whose place in its channel's backlog (readers share
/// one of [`super::hub::SESSION_BACKLOG`] frames, each agent's sessions one of
/// [`super::hub::AGENT_BACKLOG`]) is then its bounded queue; falling further behind ends the
/// session with `1013` and where to resume.
pub(super) struct Session {
    pub(super) state: Arc<AppState>,
    pub(super) principal: Option<Principal>,
    pub(super) out: actix_ws::Session,
    pub(super) channels: BTreeSet<Channel>,
    pub(super) filters: Filters,
    /// The highest `seq` passed (delivered or filtered out); 0 before the first.
    pub(super) last_seq: i64,
    /// When the client last showed it is there: a message, a pong, or a page of a replay
    /// taken.
    pub(super) heard: tokio::time::Instant,
    /// The connection's place among its credential's, or among its address's until it
    /// authenticates.
    pub(super) credential_slot: Option<CredentialSlot>,
}

/// Why the loop stopped sending: the client went away, or we close it with this reason.
pub(super) type Ending = Option<CloseReason>;

impl Session {
    pub(super) fn new(
        state: Arc<AppState>,
        principal: Option<Principal>,
        out: actix_ws::Session,
    ) -> Self {
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

    pub(super) async fn run(mut self, mut stream: actix_ws::AggregatedMessageStream) -> Ending {
        // Subscribed once the caller is known (to what it may see), before anything is
        // replayed, so nothing falls between replay and live.
        let mut live = match &self.principal {
            Some(principal) => Some(self.state.hub.subscribe(principal).await),
            None => None,
        };
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        self.heard = tokio::time::Instant::now();
        let auth_deadline = tokio::time::sleep(AUTH_WINDOW);
        tokio::pin!(auth_deadline);
        let expiry = tokio::time::sleep_until(self.expiry());
        tokio::pin!(expiry);
        let mut credentials_check = tokio::time::interval(CREDENTIALS_CHECK_EVERY);
        credentials_check.reset();
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
                            if let (true, Some(principal)) = (was_anonymous, &self.principal) {
                                live = Some(self.state.hub.subscribe(principal).await);
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
                delivery = next_live(&mut live), if live.is_some() => match delivery {
                    Ok(delivery) => {
                        // Whatever else is waiting goes out in the same turn, a bounded batch.
                        let mut next = Some(delivery);
                        let mut batch = 0;
                        while let Some(delivery) = next.take() {
                            if let Err(why) = self.on_live(&delivery).await {
                                return self.blocked(why);
                            }
                            batch += 1;
                            if let (true, Some(live)) = (batch < LIVE_BATCH, &mut live) {
                                match live.try_recv() {
                                    Ok(more) => next = Some(more),
                                    Err(TryRecvError::Lagged(missed)) => return self.fell_behind(missed),
                                    Err(_) => {}
                                }
                            }
                        }
                    }
                    Err(RecvError::Lagged(missed)) => return self.fell_behind(missed),
                    Err(RecvError::Closed) => return close(CloseCode::Away, "server shutting down"),
                },
                _ = &mut auth_deadline, if self.principal.is_none() => {
                    return close(CloseCode::Policy, "authentication required");
                }
                _ = &mut expiry, if self.principal.as_ref().is_some_and(|p| p.expires_at.is_some()) => {
                    return self.expired();
                }
                _ = credentials_check.tick(), if self.principal.as_ref().is_some_and(|p| p.user_token.is_some() || p.expires_at.is_some()) => {
                    if self.ran_out() {
                        return self.expired();
                    }
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
            Some(at) => {
                now + (at - self.state.platform.clock().now())
                    .to_std()
                    .unwrap_or_default()
            }
            None => now + Duration::from_secs(86_400 * 365),
        }
    }

    pub(super) fn expired(&self) -> Ending {
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
    pub(super) async fn still_valid(&mut self) -> Result<(), Blocked> {
        self.heard = tokio::time::Instant::now();
        let Some(principal) = &self.principal else {
            return Ok(());
        };
        if self.ran_out() {
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

    /// Whether the credentials ran out by the platform's clock.
    fn ran_out(&self) -> bool {
        self.principal
            .as_ref()
            .and_then(|p| p.expires_at)
            .is_some_and(|at| at <= self.state.platform.clock().now())
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

    /// Handles one client message; `Some` ends the session.
    async fn on_text(&mut self, text: &str) -> Option<Ending> {
        let authenticated = self.principal.is_some();
        let result = match (Incoming::read(text), authenticated) {
            (Incoming::NotJson, _) => self.error("messages must be JSON objects").await,
            (Incoming::Message(ClientMessage::Auth { token }), false) => {
                let Some(token) = token else {
                    return Some(close(CloseCode::Policy, "an auth message needs a token"));
                };
                return self.authenticate(&token).await;
            }
            (Incoming::Message(ClientMessage::Auth { .. }), true) => {
                self.error("already authenticated").await
            }
            (_, false) => {
                self.error("authenticate first: {\"type\": \"auth\", \"token\": ...}")
                    .await
            }
            (Incoming::Unknown(kind), true) => {
                self.error(format!(
                    "unknown message type '{kind}' (expected subscribe, unsubscribe or ping)"
                ))
                .await
            }
            (Incoming::Message(ClientMessage::Ping), true) => {
                let now = self.state.platform.clock().now();
                self.send(json!({"type": "pong", "timestamp": now})).await
            }
            (
                Incoming::Message(ClientMessage::Subscribe {
                    subscriptions,
                    filters,
                    since,
                }),
                true,
            ) => match Subscription::parse(&subscriptions, filters.as_ref(), since.as_ref()) {
                Ok(subscription) => self.subscribe(subscription).await,
                Err(detail) => self.error(detail).await,
            },
            (Incoming::Message(ClientMessage::Unsubscribe { subscriptions }), true) => {
                match protocol::channels(&subscriptions) {
                    Ok(channels) => self.unsubscribe(channels).await,
                    Err(detail) => self.error(detail).await,
                }
            }
        };
        result.err().map(|why| self.blocked(why))
    }

    /// Credentials sent in an `auth` message: checked like any others, and held to the
    /// credential's connection cap; `Some` ends the session.
    async fn authenticate(&mut self, token: &str) -> Option<Ending> {
        let principal = match authenticate(&self.state, token).await {
            Ok(principal) => principal,
            // A store that cannot be asked says nothing about the credential: try again later.
            Err(e) if actix_web::ResponseError::status_code(&e).is_server_error() => {
                return Some(close(
                    CloseCode::Again,
                    "credentials cannot be checked now; reconnect later",
                ));
            }
            Err(_) => return Some(close(CloseCode::Policy, "invalid or expired credentials")),
        };
        let Some(slot) = self
            .state
            .connections
            .admit_credential(caller_key(&principal))
        else {
            return Some(close(CloseCode::Policy, too_many_for_credential().detail));
        };
        // Its place among its credential's replaces the one it held among its address's.
        self.credential_slot = Some(slot);
        let role = principal.role.as_str();
        self.principal = Some(principal);
        self.send(json!({"type": "authenticated", "data": {"role": role}}))
            .await
            .err()
            .map(|why| self.blocked(why))
    }

    async fn subscribe(&mut self, subscription: Subscription) -> Result<(), Blocked> {
        if let Some(since) = subscription.since {
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
        self.channels.extend(subscription.channels);
        if let Some(filters) = subscription.filters {
            self.filters = filters;
        }
        let current: Vec<&str> = self.channels.iter().map(|c| c.as_str()).collect();
        self.send(json!({"type": "subscription_confirmed", "subscriptions": current}))
            .await?;
        if let Some(since) = subscription.since {
            self.replay_from(since).await?;
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, channels: Vec<Channel>) -> Result<(), Blocked> {
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
    pub(super) fn wants(&self, event: &Event) -> bool {
        self.channels.contains(&event.channel())
            && self
                .principal
                .as_ref()
                .is_some_and(|p| p.can_see_event(event))
            && self.filters.admit(event)
    }
}
