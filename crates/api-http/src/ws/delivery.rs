//! Sending to the client: frames in order, each within a time limit, live events as the hub
//! hands them on, and the closes that end a session when it cannot keep up.

use std::time::Duration;

use actix_ws::{CloseCode, CloseReason};
use bytestring::ByteString;
use serde_json::{json, Value};

use super::hub::Delivery;
use super::session::{Ending, Session};

/// Longest a single frame may take to go out before the client is given up as not reading.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most live events handled per wake-up.
pub(super) const LIVE_BATCH: usize = 64;

/// Why a frame could not be sent.
#[derive(Debug)]
pub(super) enum Blocked {
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

pub(super) fn close(code: CloseCode, description: impl Into<String>) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(description.into()),
    })
}

impl Session {
    pub(super) async fn send(&mut self, value: Value) -> Result<(), Blocked> {
        self.push(value.to_string().into()).await
    }

    /// Writes a frame, waiting at most [`WRITE_TIMEOUT`] for the client to take it.
    pub(super) async fn push(&mut self, frame: ByteString) -> Result<(), Blocked> {
        let metrics = self.state.platform.metrics();
        match tokio::time::timeout(WRITE_TIMEOUT, self.out.text(frame)).await {
            Ok(Ok(())) => {
                metrics.ws_sent.inc();
                Ok(())
            }
            Ok(Err(_)) => Err(Blocked::Gone),
            Err(_) => {
                metrics.ws_dropped.inc();
                Err(Blocked::Slow)
            }
        }
    }

    /// Ends the session of a subscriber that fell `missed` frames behind the hub.
    pub(super) fn fell_behind(&self, missed: u64) -> Ending {
        self.state.platform.metrics().ws_dropped.add(missed);
        self.too_slow()
    }

    pub(super) fn too_slow(&self) -> Ending {
        close(
            CloseCode::Again,
            format!(
                "too slow to keep up; reconnect with since={}",
                self.last_seq
            ),
        )
    }

    /// Ends the session for a frame that could not be queued.
    pub(super) fn blocked(&self, why: Blocked) -> Ending {
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
    pub(super) async fn control<F, Fut>(&mut self, send: F) -> Result<(), Blocked>
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

    pub(super) async fn error(&mut self, detail: impl Into<String>) -> Result<(), Blocked> {
        self.send(json!({"type": "error", "data": {"detail": detail.into()}}))
            .await
    }

    pub(super) async fn on_live(&mut self, delivery: &Delivery) -> Result<(), Blocked> {
        match delivery {
            Delivery::Revoked(revoked) => {
                let key = self.principal.as_ref().and_then(|p| p.api_key);
                match key {
                    Some(key) if revoked.contains(&key) => Err(Blocked::Revoked),
                    _ => Ok(()),
                }
            }
            Delivery::LogUnavailable { relayed } => {
                // Every event up to `relayed` came before this notice: the session has passed
                // all of those it wanted, and resumes after them.
                self.last_seq = self.last_seq.max(*relayed);
                Err(Blocked::LogUnavailable)
            }
            Delivery::Counters { channel, frame } => {
                // The platform-wide counters are for readers, not for an agent, which sees only
                // what concerns itself.
                let reader = self.principal.as_ref().is_some_and(|p| p.can_read_all());
                if reader && self.channels.contains(channel) {
                    self.push(frame.clone()).await?;
                }
                Ok(())
            }
            Delivery::Event { event, frame } => {
                // The hub relays without gaps (see `hub`): what is at or below `last_seq` was
                // sent during a replay.
                if event.seq <= self.last_seq {
                    return Ok(());
                }
                if self.wants(event) {
                    self.push(frame.clone()).await?;
                }
                self.last_seq = event.seq;
                Ok(())
            }
        }
    }
}
