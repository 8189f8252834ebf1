//! Translation of sqlx errors into port errors, by SQLSTATE.

use ports::RepoError;

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    InvalidUrl(String),
    #[error("cannot connect to PostgreSQL: {0}")]
    Unreachable(String),
    #[error("cannot apply database migrations: {0}")]
    Migration(String),
}

/// Maps a sqlx error to the port's error vocabulary.
pub(crate) fn repo_error(error: sqlx::Error) -> RepoError {
    match &error {
        sqlx::Error::RowNotFound => RepoError::NotFound,
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => RepoError::Unavailable(error.to_string()),
        sqlx::Error::Protocol(_) => RepoError::Unavailable(error.to_string()),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // unique_violation, serialization_failure, deadlock_detected: the write lost a race.
            // The database's own words (constraint names) stay in the logs, not in responses.
            Some("23505" | "40001" | "40P01") => {
                tracing::debug!(error = %db, "write refused by the database");
                RepoError::Conflict("the change conflicts with a concurrent one; try again".into())
            }
            // connection_exception (class 08), admin_shutdown, crash_shutdown,
            // cannot_connect_now, too_many_connections.
            Some(code) if code.starts_with("08") => RepoError::Unavailable(db.message().to_owned()),
            Some("57P01" | "57P02" | "57P03" | "53300") => {
                RepoError::Unavailable(db.message().to_owned())
            }
            _ => RepoError::Internal(error.to_string()),
        },
        _ => RepoError::Internal(error.to_string()),
    }
}

/// A stored value that no longer parses: corrupt data, reported as internal.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> RepoError {
    RepoError::Internal(format!("corrupt {what} in the database: {detail}"))
}

/// Distinguishes "gone" from "changed" after a versioned write to `table` matched no row.
/// `what` names the object in the message (`agent`, `resource`, ...).
pub(crate) async fn missed_write(
    conn: &mut sqlx::PgConnection,
    table: &'static str,
    what: &str,
    id: uuid::Uuid,
) -> RepoError {
    let exists = sqlx::query_scalar::<_, bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)"
    ))
    .bind(id)
    .fetch_one(conn)
    .await;
    match exists {
        Ok(true) => RepoError::Conflict(format!("{what} {id} changed since it was read")),
        Ok(false) => RepoError::NotFound,
        Err(e) => repo_error(e),
    }
}
