//! The credential repository port.

use async_trait::async_trait;
use domain::{ApiKey, KeyHash};

use crate::RepoError;

/// Where API keys are looked up.
#[async_trait]
pub trait CredentialRepository: Send + Sync {
    /// The key with this hash, revoked and expired ones included (the caller decides whether it
    /// is usable). `Ok(None)` if no key has this hash. The lookup is by exact hash, so its timing
    /// reveals nothing about the key.
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, RepoError>;
}
