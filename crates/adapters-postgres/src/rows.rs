//! Reading rows into entities: the one way every repository fetches a list, one row an ID
//! names, or a row that may be absent, and turns each row into its domain type.

use ports::RepoError;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Executor, Postgres};

use crate::error::repo_error;

/// How a row becomes an entity; a row that does not read as one is an error, never a default.
pub(crate) type ReadRow<T> = fn(&PgRow) -> Result<T, RepoError>;

/// Runs a query, on the pool or inside a transaction, and reads what it selects.
pub(crate) trait ReadRows {
    /// Every row the query selects, in its order.
    async fn read_all<'c, T>(
        self,
        db: impl Executor<'c, Database = Postgres>,
        read: ReadRow<T>,
    ) -> Result<Vec<T>, RepoError>;

    /// The row the query selects, if there is one.
    async fn read_optional<'c, T>(
        self,
        db: impl Executor<'c, Database = Postgres>,
        read: ReadRow<T>,
    ) -> Result<Option<T>, RepoError>;

    /// The one row the query selects, or `NotFound`.
    async fn read_one<'c, T>(
        self,
        db: impl Executor<'c, Database = Postgres>,
        read: ReadRow<T>,
    ) -> Result<T, RepoError>;
}

impl ReadRows for Query<'_, Postgres, PgArguments> {
    async fn read_all<'c, T>(
        self,
        db: impl Executor<'c, Database = Postgres>,
        read: ReadRow<T>,
    ) -> Result<Vec<T>, RepoError> {
        self.fetch_all(db)
            .await
            .map_err(repo_error)?
            .iter()
            .map(read)
            .collect()
    }

    async fn read_optional<'c, T>(
        self,
        db: impl Executor<'c, Database = Postgres>,
        read: ReadRow<T>,
    ) -> Result<Option<T>, RepoError> {
        self.fetch_optional(db)
            .await
            .map_err(repo_error)?
            .as_ref()
            .map(read)
            .transpose()
    }

    async fn read_one<'c, T>(
        self,
        db: impl Executor<'c, Database = Postgres>,
        read: ReadRow<T>,
    ) -> Result<T, RepoError> {
        let row = self
            .fetch_optional(db)
            .await
            .map_err(repo_error)?
            .ok_or(RepoError::NotFound)?;
        read(&row)
    }
}
