//! The errors use cases return; `api-http` maps each to one status code.

use domain::ValidationErrors;
use ports::RepoError;

/// Why a use case refused or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppError {
    /// The input is well-formed but breaks a rule (422).
    #[error("validation failed: {0}")]
    Validation(ValidationErrors),
    /// No such object, or the caller may not know it exists (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// No valid credentials (401).
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// Authenticated, but not allowed (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The current state does not allow this (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A required dependency is down (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Too much of this work is under way; the caller may retry after this many seconds (503
    /// with `Retry-After`). Nothing was done.
    #[error("overloaded: {what}")]
    Overloaded {
        what: &'static str,
        retry_after: u64,
    },
    /// The caller is over a rate limit; it may retry after this long (429). Nothing was done.
    #[error("rate limited")]
    RateLimited { retry_after: std::time::Duration },
    /// A bug or corrupt data (500). The message is for logs, never for clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// Translates a repository error about an object of the named kind.
    pub fn from_repo(entity: &'static str, error: RepoError) -> Self {
        match error {
            RepoError::NotFound => AppError::NotFound(entity),
            RepoError::Conflict(m) => AppError::Conflict(m),
            RepoError::Unavailable(m) => AppError::Unavailable(m),
            RepoError::Internal(m) => AppError::Internal(m),
        }
    }
}

impl From<ValidationErrors> for AppError {
    fn from(errors: ValidationErrors) -> Self {
        AppError::Validation(errors)
    }
}
