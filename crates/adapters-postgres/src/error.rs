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
    #[error(
        "the database's schema is at migration {database}, newer than this version knows \
         (up to {known}): a newer version of the server migrated it; run that version, or one \
         at least as new"
    )]
    SchemaNewer { database: i64, known: i64 },
    #[error(
        "the database's schema is at migration {database}, older than this version needs \
         ({known}), and MIGRATIONS=skip leaves it so: run the migrations first (MIGRATIONS=only, \
         as the deployment's migration job does)"
    )]
    SchemaBehind { database: i64, known: i64 },
}

/// An error with its chain of causes, each said once: what the logs record of a failure.
fn described(error: &sqlx::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// Maps a sqlx error to the port's error vocabulary.
pub(crate) fn repo_error(error: sqlx::Error) -> RepoError {
    match &error {
        sqlx::Error::RowNotFound => RepoError::NotFound,
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => RepoError::Unavailable(described(&error)),
        sqlx::Error::Protocol(_) => RepoError::Unavailable(described(&error)),
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
            _ => RepoError::Internal(described(&error)),
        },
        _ => RepoError::Internal(described(&error)),
    }
}

/// A stored value that no longer parses: corrupt data, reported as internal.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> RepoError {
    RepoError::Internal(format!("corrupt {what} in the database: {detail}"))
}

/// The one version check of every write: a write "over the versions read" of the rows `ids` of
/// `table` changed `written` rows. Every row written is success; otherwise the rows that are
/// gone make it `NotFound`, and rows that are there but moved on make it `Conflict` (a lost
/// race). `what` names one row in the message (`agent`, `resource`, ...).
pub(crate) async fn check_written(
    conn: &mut sqlx::PgConnection,
    table: &'static str,
    what: &str,
    ids: &[uuid::Uuid],
    written: u64,
) -> Result<(), RepoError> {
    if written == ids.len() as u64 {
        return Ok(());
    }
    let present =
        sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table} WHERE id = ANY($1)"))
            .bind(ids)
            .fetch_one(conn)
            .await
            .map_err(repo_error)?;
    Err(if present < ids.len() as i64 {
        RepoError::NotFound
    } else if let [id] = ids {
        RepoError::Conflict(format!("{what} {id} changed since it was read"))
    } else {
        RepoError::Conflict(format!("a {what} changed since it was read"))
    })
}

#[cfg(test)]
mod described_tests {
    use super::*;

    #[derive(Debug)]
    struct Cause;

    impl std::fmt::Display for Cause {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("refused by peer")
        }
    }

    impl std::error::Error for Cause {}

    #[derive(Debug)]
    struct Handshake(Cause);

    impl std::fmt::Display for Handshake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("handshake failed")
        }
    }

    impl std::error::Error for Handshake {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_is_described_with_each_of_its_causes_once() {
        let error = sqlx::Error::Configuration(Box::new(Handshake(Cause)));
        assert_eq!(
            described(&error),
            "error with configuration: handshake failed: refused by peer"
        );
        assert_eq!(
            repo_error(error),
            RepoError::Internal(
                "error with configuration: handshake failed: refused by peer".into()
            )
        );
    }
}
