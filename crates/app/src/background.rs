//! Background jobs: periodic work every replica runs (offline detection, for now).

use tokio::sync::watch;
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
    let (stop, mut stopped) = watch::channel(false);
    let interval = platform.settings().sweep_interval;
    let offline = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped.changed() => return,
            }
            match platform.detect_offline_agents().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(agents = n, "marked agents offline after missed heartbeats")
                }
                Err(e) => tracing::warn!(error = %e, "offline detection pass failed; will retry"),
            }
        }
    });
    BackgroundJobs {
        stop,
        handles: vec![offline],
    }
}
