//! The process's open-file limit: raised at start-up as far as the hard limit allows, and the
//! budget the connection caps are fitted into, so that connections can never take the
//! descriptors health checks, the database pool and Redis need.

/// Descriptors plain requests keep while every WebSocket slot is taken: health checks above
/// all.
pub const KEPT_FOR_REQUESTS: u64 = 192;
/// Descriptors the process needs besides its pools and client connections: listeners, logs,
/// the runtime's own.
pub const KEPT_FOR_PROCESS: u64 = 64;
/// Descriptors each HTTP worker keeps for itself (its event loop and wake-ups).
pub const KEPT_PER_WORKER: u64 = 8;
/// Descriptors of the Redis connections: the pool and the subscription.
pub const REDIS_CONNECTIONS: u64 = 17;

/// How the open-file limit is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Client connections per HTTP worker, WebSockets included.
    pub connections_per_worker: usize,
    /// WebSocket connections in all.
    pub websockets: usize,
}

impl Budget {
    /// Shares `files` descriptors: first what the process, its workers and its database and
    /// Redis pools need, then client connections, of which WebSockets may take all but
    /// [`KEPT_FOR_REQUESTS`].
    pub fn new(files: u64, workers: usize, database_connections: u32) -> Self {
        let workers = workers.max(1);
        let kept = KEPT_FOR_PROCESS
            + KEPT_PER_WORKER * workers as u64
            + u64::from(database_connections)
            + REDIS_CONNECTIONS;
        let connections = files.saturating_sub(kept);
        Self {
            connections_per_worker: (connections as usize / workers).max(1),
            websockets: connections.saturating_sub(KEPT_FOR_REQUESTS).max(1) as usize,
        }
    }
}

/// Raises the soft limit on open files to the hard limit and returns the limit now in force.
pub fn raise_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
            tracing::warn!(error = %e, limit = soft, "cannot raise the open-file limit");
            soft
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_and_plain_requests_keep_their_descriptors() {
        // 1024 files, 2 workers, 16 database connections: 64 + 16 + 16 + 17 = 113 kept.
        let budget = Budget::new(1024, 2, 16);
        assert_eq!(budget.connections_per_worker, 455);
        assert_eq!(budget.websockets, 911 - 192);
        // A larger pool leaves fewer connections, never none.
        let budget = Budget::new(1024, 2, 1000);
        assert_eq!(
            budget,
            Budget {
                connections_per_worker: 1,
                websockets: 1
            }
        );
        assert!(Budget::new(1_048_576, 2, 16).websockets > 1_000_000);
    }
}
