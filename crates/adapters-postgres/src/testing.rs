//! Fresh, migrated databases for tests, one per test, on the PostgreSQL the suite runs against.
//!
//! The server is `TEST_DATABASE_URL`, by default `postgres://postgres@127.0.0.1:5432/postgres`.
//! Each database is named after the test process, so a later run drops the leftovers of
//! processes that have exited and never touches those of a run still going.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

use crate::{PgStore, PoolSettings};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PREFIX: &str = "platform_test_";

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEPT: OnceCell<()> = OnceCell::const_new();

/// The server URL tests use.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// The URL of the named database on the test server.
fn database_url(name: &str) -> String {
    let server = server_url();
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

async fn admin_connection() -> PgConnection {
    let url = server_url();
    PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url} ({e}).\n\
             These tests need it. Start it with:\n  \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
             or point TEST_DATABASE_URL at a server where the user may create databases."
        )
    })
}

/// Drops test databases left behind by test processes that are no longer running.
async fn sweep_leftovers(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(format!("{PREFIX}%"))
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name
            .trim_start_matches(PREFIX)
            .split('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut *admin)
                .await;
        }
    }
}

/// Creates an empty database, applies every migration, and returns a store on it.
/// Panics, saying how to start PostgreSQL, when the server cannot be reached.
pub async fn fresh_store() -> PgStore {
    let url = fresh_database().await;
    let settings = PoolSettings {
        max_connections: 4,
        ..PoolSettings::default()
    };
    PgStore::connect(&url, &settings)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test database {url}: {e}"))
}

/// Creates an empty, migrated database and returns its URL.
/// Panics, saying how to start PostgreSQL, when the server cannot be reached.
pub async fn fresh_database() -> String {
    let url = fresh_empty_database().await;
    let store = PgStore::connect(&url, &PoolSettings::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test database {url}: {e}"));
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("cannot migrate test database {url}: {e}"));
    store.close().await;
    url
}

/// Creates an empty database, not migrated, and returns its URL.
/// Panics, saying how to start PostgreSQL, when the server cannot be reached.
pub async fn fresh_empty_database() -> String {
    let mut admin = admin_connection().await;
    SWEPT
        .get_or_init(|| async {
            sweep_leftovers(&mut admin).await;
        })
        .await;
    let name = format!(
        "{PREFIX}{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = admin.close().await;
    database_url(&name)
}
