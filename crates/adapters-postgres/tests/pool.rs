//! The connection pool: a connection in steady use is not pinged before each call, and one the
//! database closed while it sat idle (as a restart does) is found out and replaced before a call
//! meets it.

use std::time::Duration;

use adapters_postgres::{PgStore, PoolSettings};
use ports::EventLog;

#[tokio::test]
async fn a_connection_the_database_closed_while_idle_is_replaced_before_a_call_uses_it() {
    let url = adapters_postgres::testing::fresh_database().await;
    let admin = PgStore::connect(&url, &PoolSettings::default())
        .await
        .unwrap();
    let settings = PoolSettings {
        max_connections: 1,
        // Every connection counts as idle long enough to be checked.
        ping_when_idle: Duration::ZERO,
        ..PoolSettings::default()
    };
    let store = PgStore::connect(&url, &settings).await.unwrap();
    store.log_id().await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(admin.pool())
    .await
    .unwrap();
    assert!(
        !ended.is_empty() && ended.iter().all(|e| *e),
        "the store's connection ended, as in a restart: {ended:?}"
    );
    store
        .log_id()
        .await
        .expect("the closed connection is found out and replaced before the call uses it");
}
