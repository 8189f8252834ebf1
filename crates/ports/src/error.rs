//! The errors every repository port speaks.

/// What went wrong in a repository call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoError {
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// The write lost a race: the stored version differs from the one the caller read,
    /// or a uniqueness rule refused it. Nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backing store cannot be reached right now. Nothing was written; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupt data. Nothing was written.
    #[error("store error: {0}")]
    Internal(String),
}
