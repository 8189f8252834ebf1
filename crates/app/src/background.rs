//! Background jobs every replica runs: the scheduler, woken by new work or a timer, the sweeps
//! (offline agents, expired leases, missed deadlines), and the renewal of trusted API keys. Each is safe to run on several
//! replicas at once: passes are serialized by the store and every change is a versioned write.

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::Platform;

/// Handle to the running background jobs; `shutdown` stops them and waits.
#[derive(Debug)]
pub struct BackgroundJobs {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl BackgroundJobs {
    /// Asks every job to stop after its current pass, and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

/// Starts the periodic jobs on the current tokio runtime.
pub fn spawn_background_jobs(platform: Platform) -> BackgroundJobs {
    let (stop, stopped) = watch::channel(false);
    let sweeper = tokio::spawn(sweep(platform.clone(), stopped.clone()));
    let scheduler = tokio::spawn(schedule(platform.clone(), stopped.clone()));
    let assignments = tokio::spawn(follow_events(platform.clone(), stopped.clone()));
    let relay = tokio::spawn(relay(platform.clone(), stopped.clone()));
    let keys = tokio::spawn(renew_keys(platform.clone(), stopped.clone()));
    let beats = tokio::spawn(flush_heartbeats(platform.clone(), stopped.clone()));
    let settings = tokio::spawn(announce_settings(platform, stopped));
    BackgroundJobs {
        stop,
        handles: vec![
            sweeper,
            scheduler,
            assignments,
            relay,
            keys,
            beats,
            settings,
        ],
    }
}

/// Announces this replica's shared settings every [`crate::ANNOUNCE_EVERY`] and logs each one
/// a live replica announced differently (once, and again when what differs changes).
async fn announce_settings(platform: Platform, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(crate::ANNOUNCE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(replica = %platform.replica(), "this replica announces its shared settings as");
    let mut reported: Vec<crate::Disagreement> = Vec::new();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        match platform.announce_settings().await {
            Ok(found) => {
                for d in found.iter().filter(|d| !reported.contains(d)) {
                    tracing::error!(
                        setting = %d.setting,
                        other_replica = %d.replica,
                        replica = %platform.replica(),
                        "another replica of this deployment runs with a different {}: set it alike on every replica",
                        d.setting
                    );
                }
                if found.is_empty() && !reported.is_empty() {
                    tracing::info!("every live replica runs with the same shared settings again");
                }
                reported = found;
                failing = false;
            }
            Err(e) => {
                // Unknown until the next announcement succeeds.
                platform.metrics().settings_disagreements.set(0);
                if !failing {
                    tracing::warn!(error = %e, "cannot announce this replica's settings now; will retry");
                }
                failing = true;
            }
        }
    }
}

/// Wakes the long polls of agents that events of any replica are about (their assignments
/// first), and tells the scheduler of capacity other replicas freed: the bus brings events as
/// they are made, and every `long_poll_recheck`, while polls wait, the log is read for those the
/// bus did not bring. That is one read per replica, however many agents wait; with none
/// waiting, one look at the newest `seq`.
async fn follow_events(platform: Platform, mut stopped: watch::Receiver<bool>) {
    let mut events = platform.subscribe_events();
    platform.follow_events_from_now(true);
    // However the job ends, what it vouched for is forgotten.
    let _following = Following(platform.clone());
    let mut check = tokio::time::interval(platform.settings().long_poll_recheck);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut delivered = platform.newest_seq().await.unwrap_or(0);
    // The newest event in the log at the last check: one the bus has not brought by the next
    // check was missed, not merely on its way.
    let mut newest_before = delivered;
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(event) => {
                    // Numbers have no gaps: a jump means the bus lost events (Redis away, say).
                    if event.seq > delivered + 1 {
                        platform.wake_all_polls();
                        platform.capacity_may_be_free();
                    }
                    delivered = delivered.max(event.seq);
                    platform.wake_polls([event.agent_id]);
                    platform.note_capacity(event.kind);
                }
                // Some were missed: every poll reads again, and capacity may have come free.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    platform.wake_all_polls();
                    platform.capacity_may_be_free();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = check.tick() => {
                let newest = platform.newest_seq().await.unwrap_or(delivered);
                if !platform.polls_waiting() {
                    if newest_before > delivered {
                        // Missed, and no poll waits to read them: what was known is forgotten.
                        platform.wake_all_polls();
                        delivered = newest;
                    }
                    newest_before = newest;
                    continue;
                }
                newest_before = newest;
                while let Ok(missed) = platform.log_after(delivered, 500).await {
                    let Some(last) = missed.last().map(|e| e.seq) else { break };
                    platform.wake_polls(missed.iter().map(|e| e.agent_id));
                    for event in &missed {
                        platform.note_capacity(event.kind);
                    }
                    delivered = last;
                }
            },
            _ = stopped.changed() => return,
        }
    }
}

/// Writes the heartbeats recorded since the last flush, every `HEARTBEAT_FLUSH`, and once more
/// as the replica stops.
async fn flush_heartbeats(platform: Platform, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(crate::HEARTBEAT_FLUSH);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = stopped.changed() => true,
        };
        if let Err(e) = platform.flush_heartbeats().await {
            tracing::warn!(error = %e, "cannot write heartbeats now; will retry");
        }
        if stopping {
            return;
        }
    }
}

/// Renews the trust of the API keys in use with one read of the keys revoked lately, so a
/// fleet's keys are not each read again every few seconds.
async fn renew_keys(platform: Platform, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(crate::KEY_RENEWAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        if let Err(e) = platform.renew_trusted_keys().await {
            tracing::warn!(error = %e, "cannot renew trusted API keys; they are read again");
        }
    }
}

/// Marks the end of following events, however `follow_events` ends.
struct Following(Platform);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.follow_events_from_now(false);
    }
}

/// Every write relays its own events; this publishes those a failed relay left, and numbers
/// (and publishes) events an earlier version stored unnumbered and left behind.
async fn relay(platform: Platform, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(500));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        match platform.relay_events().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(events = n, "relayed events left behind"),
            Err(e) => tracing::warn!(error = %e, "event relay failed; will retry"),
        }
    }
}

async fn sweep(platform: Platform, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(platform.settings().sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        match platform.detect_offline_agents().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(agents = n, "marked agents offline after missed heartbeats"),
            Err(e) => tracing::warn!(error = %e, "offline detection failed; will retry"),
        }
        match platform.expire_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "ended attempts whose lease expired"),
            Err(e) => tracing::warn!(error = %e, "lease expiry failed; will retry"),
        }
        match platform.prune_events().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "pruned events past their retention"),
            Err(e) => tracing::warn!(error = %e, "event retention failed; will retry"),
        }
        match platform.purge_ended_tasks().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "deleted tasks past their retention"),
            Err(e) => tracing::warn!(error = %e, "task retention failed; will retry"),
        }
        if let Err(e) = platform.purge_idempotency_keys().await {
            tracing::warn!(error = %e, "purging old idempotency keys failed; will retry");
        }
        match platform.expire_deadlines().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "expired pending tasks past their deadline"),
            Err(e) => tracing::warn!(error = %e, "deadline expiry failed; will retry"),
        }
        if let Err(e) = platform.prune_audit().await {
            tracing::warn!(error = %e, "pruning the audit trail failed; will retry");
        }
        if let Err(e) = platform.sweep_conflicts().await {
            tracing::warn!(error = %e, "conflict detection failed; will retry");
        }
    }
}

async fn schedule(platform: Platform, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(platform.settings().schedule_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = platform.work_arrived() => {}
            _ = stopped.changed() => return,
        }
        match platform.run_scheduler().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(tasks = n, "scheduling pass assigned tasks"),
            Err(e) => tracing::warn!(error = %e, "scheduling pass failed; will retry"),
        }
    }
}
