//! The process's open-file limit: raised at start-up as far as the hard limit allows, and the
//! budget the connection caps are fitted into, so that connections can never take the
//! descriptors health checks, the database pool and Redis need.

/// Descriptors kept back from WebSocket connections: the pools, listeners, logs, and room for
/// plain requests (health checks above all) while every WebSocket slot is taken.
pub const RESERVED_FOR_OTHERS: u64 = 256;
/// Descriptors kept back from all client connections together.
pub const RESERVED_FOR_PROCESS: u64 = 64;

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

/// The most WebSocket connections that fit under `files` descriptors.
pub fn websocket_budget(files: u64) -> usize {
    files.saturating_sub(RESERVED_FOR_OTHERS).max(1) as usize
}

/// The most client connections one of `workers` HTTP workers may hold.
pub fn connections_per_worker(files: u64, workers: usize) -> usize {
    (files.saturating_sub(RESERVED_FOR_PROCESS) as usize / workers.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websockets_leave_room_for_everything_else() {
        assert_eq!(websocket_budget(1024), 768);
        assert_eq!(websocket_budget(100), 1);
        assert_eq!(connections_per_worker(1024, 2), 480);
        assert!(websocket_budget(1024) < connections_per_worker(1024, 1));
    }
}
