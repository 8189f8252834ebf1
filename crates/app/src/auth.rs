//! Authentication by API key: the bootstrap admin key and stored keys.

use domain::credential::KEY_PREFIX;
use domain::{KeyHash, Principal, Role};
use ports::IdGenerator;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{AppError, Platform};

/// The stored form of a key: SHA-256, hex. Keys are 256-bit random, so a fast hash is enough;
/// passwords, which are not, use Argon2id instead.
pub fn hash_key(key: &str) -> KeyHash {
    KeyHash(hex::encode(Sha256::digest(key.as_bytes())))
}

/// A new API key: the recognisable prefix and 256 random bits, hex-encoded.
pub fn new_api_key(ids: &dyn IdGenerator) -> String {
    format!("{KEY_PREFIX}{}", hex::encode(ids.secret_bytes()))
}

impl Platform {
    /// The caller an API key stands for. `Unauthorized` for unknown, revoked or expired keys,
    /// with one message for all three so a caller learns nothing about which it was.
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<Principal, AppError> {
        let hash = hash_key(presented);
        if let Some(admin) = &self.settings.admin_key {
            if bool::from(admin.0.as_bytes().ct_eq(hash.0.as_bytes())) {
                return Ok(Principal {
                    subject: "admin-api-key".into(),
                    role: Role::Admin,
                    agent_id: None,
                    expires_at: None,
                    api_key: None,
                    user_token: None,
                });
            }
        }
        let key = self
            .deps
            .credentials
            .find_api_key(&hash)
            .await
            .map_err(|e| AppError::from_repo("API key", e))?;
        match key {
            Some(key) if key.is_usable(self.deps.clock.now()) => Ok(Principal {
                subject: format!("api-key:{}", key.prefix),
                role: key.role,
                agent_id: key.agent_id,
                expires_at: key.expires_at,
                api_key: Some(key.id),
                user_token: None,
            }),
            _ => Err(AppError::Unauthorized(
                "invalid, revoked or expired API key",
            )),
        }
    }
}
