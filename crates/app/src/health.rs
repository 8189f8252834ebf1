//! The platform's own view of its health, for `/api/v1/health` and `/readyz`.

use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use ports::ComponentStatus;

use crate::Platform;

/// What the health endpoint reports.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub platform: ComponentStatus,
    pub database: ComponentStatus,
    pub redis: ComponentStatus,
    /// Online agents.
    pub active_agents: u64,
    /// Tasks held by agents right now.
    pub active_tasks: u64,
    pub timestamp: DateTime<Utc>,
}

impl HealthReport {
    /// Healthy when every component is up.
    pub fn is_healthy(&self) -> bool {
        self.platform.is_up() && self.database.is_up() && self.redis.is_up()
    }
}

/// How long a reading of the store (health, readiness, gauges) answers later askers: callers
/// anyone may be, and probes that come in bursts, cost the store at most one reading a second.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last reading of something, shared so that callers close together cost one reading.
/// One asker reads at a time.
///
/// - *Recent* readings (health, readiness, gauges): a good one answers whoever asks within
///   [`FRESH_FOR`], and those who waited for a reading take it, good or failed, so a failing
///   store is never read once per waiting caller. A failed reading answers no one who asks
///   after it ends: recovery shows at once.
/// - *Exact* readings (the dashboard's counters, which must equal what the lists say): a
///   reading answers only those who asked before it started, so it reflects every write they
///   could have seen.
#[derive(Debug)]
pub(crate) struct Recent<T, E = T> {
    last: tokio::sync::Mutex<Option<Reading<T, E>>>,
    exact: bool,
}

#[derive(Debug)]
struct Reading<T, E> {
    started: Instant,
    ended: Instant,
    result: Result<T, E>,
}

impl<T, E> Default for Recent<T, E> {
    fn default() -> Self {
        Self {
            last: tokio::sync::Mutex::new(None),
            exact: false,
        }
    }
}

impl<T: Clone, E: Clone> Recent<T, E> {
    /// Readings that answer only callers who asked before they started.
    pub(crate) fn exact() -> Self {
        Self {
            exact: true,
            ..Self::default()
        }
    }

    pub(crate) async fn get<F>(&self, read: impl FnOnce() -> F) -> Result<T, E>
    where
        F: std::future::Future<Output = Result<T, E>>,
    {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some(reading) = last.as_ref() {
            let answers = if self.exact {
                reading.started >= asked
            } else {
                (reading.result.is_ok() && reading.ended.elapsed() < FRESH_FOR)
                    || reading.ended >= asked
            };
            if answers {
                return reading.result.clone();
            }
        }
        let started = Instant::now();
        let result = read().await;
        *last = Some(Reading {
            started,
            ended: Instant::now(),
            result: result.clone(),
        });
        result
    }
}

/// What the platform keeps of its last readings.
#[derive(Debug)]
pub(crate) struct Readings {
    pub(crate) store: Recent<ComponentStatus>,
    pub(crate) health: Recent<HealthReport>,
    pub(crate) gauges: Recent<crate::Gauges, crate::AppError>,
    pub(crate) summary: Recent<crate::Summary, crate::AppError>,
}

impl Default for Readings {
    fn default() -> Self {
        Self {
            store: Recent::default(),
            health: Recent::default(),
            gauges: Recent::default(),
            summary: Recent::exact(),
        }
    }
}

/// How long a whole reading of health may take: the ping has its own bound, the counters too.
const HEALTH_WITHIN: Duration = Duration::from_secs(3);

impl Platform {
    /// Whether the store answers (read at most once a second): readiness, which must not wait
    /// on anything else.
    pub async fn store_status(&self) -> ComponentStatus {
        let read = || async {
            let status = self.deps.store_health.status().await;
            if status.is_up() {
                Ok(status)
            } else {
                Err(status)
            }
        };
        self.readings
            .store
            .get(read)
            .await
            .unwrap_or_else(|down| down)
    }

    /// Checks the store and the bus and reads the fleet counters, at most once a second.
    pub async fn health(&self) -> HealthReport {
        let read = || async {
            let report = self.read_health().await;
            if report.is_healthy() {
                Ok(report)
            } else {
                Err(report)
            }
        };
        self.readings
            .health
            .get(read)
            .await
            .unwrap_or_else(|unhealthy| unhealthy)
    }

    async fn read_health(&self) -> HealthReport {
        let (database, redis) =
            tokio::join!(self.deps.store_health.status(), self.deps.bus.status());
        let counts = if database.is_up() {
            tokio::time::timeout(HEALTH_WITHIN, self.deps.agents.count_by_status())
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        HealthReport {
            platform: ComponentStatus::Healthy,
            database,
            redis,
            active_agents: counts.map_or(0, |c| c.online()),
            active_tasks: counts.map_or(0, |c| c.running_tasks),
            timestamp: self.deps.clock.now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_good_reading_is_shared_for_a_second_and_a_failed_one_is_not_kept() {
        let recent: Recent<i32> = Recent::default();
        let reads = AtomicUsize::new(0);
        let read = |good: bool| {
            reads.fetch_add(1, SeqCst);
            async move {
                if good {
                    Ok(1)
                } else {
                    Err(0)
                }
            }
        };
        assert_eq!(recent.get(|| read(false)).await, Err(0));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            recent.get(|| read(true)).await,
            Ok(1),
            "a failure is read again"
        );
        assert_eq!(
            recent.get(|| read(false)).await,
            Ok(1),
            "a good one is kept"
        );
        assert_eq!(reads.load(SeqCst), 2);
        tokio::time::advance(FRESH_FOR).await;
        assert_eq!(recent.get(|| read(false)).await, Err(0), "for a second");
        assert_eq!(reads.load(SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_exact_reading_answers_only_those_who_asked_before_it_started() {
        let recent: std::sync::Arc<Recent<u64, ()>> = std::sync::Arc::new(Recent::exact());
        let reads = std::sync::Arc::new(AtomicUsize::new(0));
        let count = |reads: std::sync::Arc<AtomicUsize>| async move {
            let n = reads.fetch_add(1, SeqCst) as u64 + 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(n)
        };
        // Asked one after the other: each reads anew, however close together.
        assert_eq!(recent.get(|| count(reads.clone())).await, Ok(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(recent.get(|| count(reads.clone())).await, Ok(2));
        // Asked together while a reading runs: those who queued behind it take the next one.
        let callers: Vec<_> = (0..5)
            .map(|_| {
                let (recent, reads) = (recent.clone(), reads.clone());
                tokio::spawn(async move { recent.get(|| count(reads)).await })
            })
            .collect();
        let mut got = Vec::new();
        for caller in callers {
            got.push(caller.await.unwrap().unwrap());
        }
        assert!(reads.load(SeqCst) <= 4, "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn callers_who_waited_for_a_failed_reading_take_it_instead_of_reading_again() {
        let recent: std::sync::Arc<Recent<i32>> = std::sync::Arc::default();
        let reads = std::sync::Arc::new(AtomicUsize::new(0));
        let slow_failure = |reads: std::sync::Arc<AtomicUsize>| async move {
            reads.fetch_add(1, SeqCst);
            tokio::time::sleep(Duration::from_secs(2)).await; // a ping that times out
            Err(0)
        };
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let (recent, reads) = (recent.clone(), reads.clone());
                tokio::spawn(async move { recent.get(|| slow_failure(reads)).await })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), Err(0));
        }
        assert_eq!(reads.load(SeqCst), 1, "one reading for all who waited");
    }
}
