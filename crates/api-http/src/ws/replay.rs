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
        self.catch_up().await
    }

    /// Reads the log after `last_seq` to its end and sends what is wanted.
    async fn catch_up(&mut self) -> Result<(), Blocked> {
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
            for event in &page.events {
                if self.wants(event) {
                    self.push(encode(event)).await?;
                }
            }
            self.last_seq = page.next_after;
            if page.exhausted {
                return Ok(());
            }
            self.still_valid().await?;
        }
    }
}
