//! The PostgreSQL store: every repository port on sqlx, and the migrator.
//!
//! Each port call runs in one transaction. Writes check the row's `version`, so concurrent
//! writers (other requests, other replicas) never overwrite each other silently.

mod agents;
mod conflicts;
mod credentials;
mod error;
mod events;
mod replicas;
mod resources;
mod rows;
mod scheduling;
mod task_rows;
mod tasks;
pub mod testing;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ports::{ComponentStatus, HealthCheck};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

pub use error::StartupError;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Logs an error naming each index a build left invalid (an index built `CONCURRENTLY` whose
/// build was stopped): PostgreSQL keeps it but never reads it, and `CREATE INDEX IF NOT
/// EXISTS` will not build it again.
async fn warn_of_invalid_indexes(conn: &mut sqlx::PgConnection) {
    let invalid: Result<Vec<(String,)>, _> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_index i
         JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT i.indisvalid AND n.nspname = current_schema()",
    )
    .fetch_all(&mut *conn)
    .await;
    for (index,) in invalid.unwrap_or_default() {
        tracing::error!(
            index,
            "index {index} is invalid (its build was stopped) and is not used: rebuild it with \
             REINDEX INDEX CONCURRENTLY {index}"
        );
    }
}

/// [`PgStore::schema`], on one connection.
async fn schema_on(conn: &mut sqlx::PgConnection) -> Result<Schema, StartupError> {
    let unreachable = |e: sqlx::Error| StartupError::Unreachable(e.to_string());
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(unreachable)?;
    let database = if exists {
        let (newest,): (Option<i64>,) =
            sqlx::query_as("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut *conn)
                .await
                .map_err(unreachable)?;
        newest.unwrap_or(0)
    } else {
        0
    };
    Ok(Schema {
        database,
        known: MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0),
    })
}

/// Where a database's schema stands against this version's migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// The newest migration applied (0 for none).
    pub database: i64,
    /// The newest migration this version has.
    pub known: i64,
}

impl Schema {
    fn refuse_newer(self) -> Result<Self, StartupError> {
        if self.database > self.known {
            Err(StartupError::SchemaNewer {
                database: self.database,
                known: self.known,
            })
        } else {
            Ok(self)
        }
    }
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a connection before the store reports itself unavailable.
    pub acquire_timeout: Duration,
    /// A pooled connection idle at least this long is checked (a round trip) before it is used
    /// again, and replaced, with a warning logged, if the database closed it meanwhile (a
    /// restart); one in steady use is not checked before use. (The pool checks each connection
    /// as it is returned, after the call has been answered.)
    pub ping_when_idle: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            ping_when_idle: Duration::from_secs(1),
        }
    }
}

/// The store on one PostgreSQL database. Clones share the pool and the outbox of numbered
/// events (see `EventLog::sequence`): one store, and its clones, per replica.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    outbox: Arc<events::Outbox>,
}

impl PgStore {
    /// Connects and checks the database answers. Fails with a clear error if it does not.
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Self, StartupError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StartupError::InvalidUrl(e.to_string()))?;
        let ping_when_idle = settings.ping_when_idle;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= ping_when_idle {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StartupError::Unreachable(e.to_string()))?;
        Ok(Self::from_pool(pool))
    }

    /// A store on an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            outbox: Arc::default(),
        }
    }

    /// Applies the migrations this version has and the database lacks. Refuses
    /// (`SchemaNewer`), changing nothing, a database a newer version migrated past them.
    ///
    /// Replicas starting together take turns: each waits for a lock of its own by trying it
    /// over and over rather than by a statement that blocks, since an index built
    /// `CONCURRENTLY` waits for every statement running, a blocked wait for the lock
    /// included, and PostgreSQL would end one of the two as a deadlock. The one that gets the
    /// lock finds what the others applied.
    pub async fn migrate(&self) -> Result<(), StartupError> {
        const MIGRATION_LOCK: i64 = 0x4d49_4752_4154_4521; // "MIGRATE!"
        let unreachable = |e: sqlx::Error| StartupError::Unreachable(e.to_string());
        let mut conn = self.pool.acquire().await.map_err(unreachable)?;
        loop {
            let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .fetch_one(&mut *conn)
                .await
                .map_err(unreachable)?;
            if taken {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let migrated = async {
            let schema = schema_on(&mut conn).await?.refuse_newer()?;
            if schema.database == schema.known {
                return Ok(());
            }
            MIGRATOR
                .run(&mut *conn)
                .await
                .map_err(|e| StartupError::Migration(e.to_string()))
        }
        .await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await;
        warn_of_invalid_indexes(&mut conn).await;
        migrated
    }

    /// Checks, changing nothing, that the database's schema is exactly the one this version
    /// knows: `SchemaNewer` or `SchemaBehind` otherwise. For replicas that leave migrations to
    /// a job of their own.
    pub async fn check_schema(&self) -> Result<(), StartupError> {
        if let Ok(mut conn) = self.pool.acquire().await {
            warn_of_invalid_indexes(&mut conn).await;
        }
        let schema = self.schema().await?.refuse_newer()?;
        if schema.database < schema.known {
            return Err(StartupError::SchemaBehind {
                database: schema.database,
                known: schema.known,
            });
        }
        // Exactly this version's migrations, each as this version has it: what applying them
        // (`run`) would also insist on.
        let applied: Vec<(i64, Vec<u8>, bool)> = sqlx::query_as(
            "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StartupError::Unreachable(e.to_string()))?;
        for migration in MIGRATOR.iter() {
            let found = applied.iter().find(|(v, _, _)| *v == migration.version);
            let problem = match found {
                None => Some("was never applied"),
                Some((_, _, false)) => Some("failed part way"),
                Some((_, checksum, true)) if checksum[..] != migration.checksum[..] => {
                    Some("was applied from a different file than this version has")
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                return Err(StartupError::Migration(format!(
                    "migration {} ({}) {problem}",
                    migration.version, migration.description
                )));
            }
        }
        Ok(())
    }

    /// The newest migration applied to the database (0 for none) and the newest this version
    /// has.
    pub async fn schema(&self) -> Result<Schema, StartupError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| StartupError::Unreachable(e.to_string()))?;
        schema_on(&mut conn).await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn outbox(&self) -> &events::Outbox {
        &self.outbox
    }

    /// Waits until every write that has begun to commit on this handle is done, its events
    /// queued for the relay (or it failed): what a shutdown, or a test, waits for before the
    /// last hand-over.
    pub async fn commits_settled(&self) {
        self.outbox.settled().await;
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How a transaction holds an advisory lock: alone, or beside other shared holders.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hold {
    Exclusive,
    Shared,
}

/// Takes the transaction-scoped advisory lock `key`, waiting for it; held to the end of the
/// transaction.
pub(crate) async fn advisory_lock(
    conn: &mut sqlx::PgConnection,
    key: i64,
    hold: Hold,
) -> Result<(), ports::RepoError> {
    let statement = match hold {
        Hold::Exclusive => "SELECT pg_advisory_xact_lock($1)",
        Hold::Shared => "SELECT pg_advisory_xact_lock_shared($1)",
    };
    sqlx::query(statement)
        .bind(key)
        .execute(conn)
        .await
        .map_err(error::repo_error)?;
    Ok(())
}

#[async_trait]
impl HealthCheck for PgStore {
    async fn status(&self) -> ComponentStatus {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => ComponentStatus::Healthy,
            _ => ComponentStatus::Unhealthy,
        }
    }
}
