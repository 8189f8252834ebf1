//! Replay: reading the log after a `seq` and sending what the session wants, a page at a
//! time, checking between pages that the credentials still hold.

use super::delivery::Blocked;
use super::hub::encode;
use super::session::Session;

/// Events read from the log per page while catching up.
const REPLAY_PAGE: u32 = 500;

impl Session {
    /// Sends every retained event after `since` this session wants, then lets live events
    /// continue from there. Tells the client when the log no longer reaches back that far.
    pub(super) async fn replay_from(&mut self, since: i64) -> Result<(), Blocked> {
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
    pub(super) async fn catch_up(&mut self, until: i64) -> Result<(), Blocked> {
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
}
