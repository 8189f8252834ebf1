//! Authentication by API key: the bootstrap admin key and stored keys.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use domain::credential::KEY_PREFIX;
use domain::{ApiKey, KeyHash, Principal, Role};
use ports::IdGenerator;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{AppError, Platform};

/// How long a stored API key found valid is trusted without reading it again, unless a check of
/// the keys revoked since renews its trust (see [`Platform::renew_trusted_keys`], every
/// [`KEY_RENEWAL`]). A key revoked through this replica stops working here at once; one
/// revoked through another replica stops working here within this long (as sockets opened with
/// it close within the revocation check's 5 s) while the replicas' clocks agree within a minute,
/// and within a minute whatever they say.
pub const KEY_TRUST: chrono::Duration = chrono::Duration::seconds(5);
/// How often the keys revoked lately are read, once for every trusted key: a key found not
/// revoked is trusted for another [`KEY_TRUST`] without being read again.
pub const KEY_RENEWAL: std::time::Duration = std::time::Duration::from_secs(2);
/// How far back a renewal looks for revocations (what another replica's clock may differ by),
/// and how long after a key was read renewals may keep trusting it: past it, the key is read
/// again, so a revocation no renewal saw stops it within this long.
const RENEWAL_WINDOW: chrono::Duration = chrono::Duration::seconds(60);
/// Most keys trusted at once; past it, trust starts afresh.
const KEYS_TRUSTED: usize = 10_000;

/// Stored API keys recently found valid, so a busy client's every request does not read the
/// store. Only keys that were valid are kept, so unknown keys cannot fill it.
#[derive(Debug, Default)]
pub(crate) struct TrustedKeys(Mutex<Trusted>);

#[derive(Debug, Default)]
struct Trusted {
    /// Each key, when it was last known valid (read, or renewed), and when it was read.
    keys: HashMap<KeyHash, (ApiKey, DateTime<Utc>, DateTime<Utc>)>,
    /// Moves on whenever every key is forgotten, so a read that began before cannot put back
    /// a key revoked meanwhile.
    generation: u64,
}

impl TrustedKeys {
    /// The key with this hash, if it was read from the store within [`KEY_TRUST`] before
    /// `now` (a clock set back trusts nothing it read "later"); and the generation a read of
    /// the store starting now belongs to.
    fn get(&self, hash: &KeyHash, now: DateTime<Utc>) -> (Option<ApiKey>, u64) {
        let trusted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = trusted
            .keys
            .get(hash)
            .filter(|(_, valid, _)| *valid <= now && now - *valid < KEY_TRUST)
            .map(|(key, _, _)| key.clone());
        (key, trusted.generation)
    }

    /// Trusts a key read from the store, unless every key was forgotten since the read began.
    fn keep(&self, hash: KeyHash, key: ApiKey, now: DateTime<Utc>, generation: u64) {
        let mut trusted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if trusted.generation != generation {
            return;
        }
        if trusted.keys.len() >= KEYS_TRUSTED {
            trusted.keys.clear();
        }
        trusted.keys.insert(hash, (key, now, now));
    }

    /// After a check at `checked` found the keys revoked in the window before it: those are
    /// forgotten, and every other key read within that window is trusted as if read at
    /// `checked` (it was valid when read and was not revoked since). A revocation the window
    /// cannot show (stamped by a clock more than the window behind) is found by reading the
    /// key again, which renewals never put off past the window. `generation` is the one the
    /// check started at: if keys were forgotten meanwhile, nothing is renewed.
    fn renew(&self, checked: DateTime<Utc>, revoked: &[domain::ApiKeyId], generation: u64) {
        let mut trusted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if trusted.generation != generation {
            return;
        }
        trusted
            .keys
            .retain(|_, (key, _, _)| !revoked.contains(&key.id));
        for (_, valid, read) in trusted.keys.values_mut() {
            if *read <= checked && checked - *read < RENEWAL_WINDOW && *valid <= checked {
                *valid = checked;
            }
        }
    }

    /// How many keys are trusted now, and the generation they belong to.
    fn count(&self) -> (usize, u64) {
        let trusted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (trusted.keys.len(), trusted.generation)
    }

    /// Forgets every key: one was revoked.
    pub(crate) fn forget_all(&self) {
        let mut trusted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        trusted.keys.clear();
        trusted.generation += 1;
    }
}

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
    /// Renews the trust of every trusted key with one read of the keys revoked lately (see
    /// [`KEY_RENEWAL`]): a busy fleet's keys are then read once each, not once every
    /// [`KEY_TRUST`] each. With no key trusted it reads nothing.
    pub async fn renew_trusted_keys(&self) -> Result<(), AppError> {
        let (count, generation) = self.trusted_keys.count();
        if count == 0 {
            return Ok(());
        }
        let checked = self.deps.clock.now();
        let revoked = self.recently_revoked(RENEWAL_WINDOW).await?;
        self.trusted_keys.renew(checked, &revoked, generation);
        Ok(())
    }

    /// The caller an API key stands for. `Unauthorized` for unknown, revoked or expired keys,
    /// with one message for all three so a caller learns nothing about which it was. A stored
    /// key found valid is trusted for [`KEY_TRUST`] without reading it again.
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<Principal, AppError> {
        self.authenticate_key(presented, None).await
    }

    /// [`authenticate_api_key`](Self::authenticate_api_key) for a key presented from
    /// `address`: a key that must be read from the store (neither the bootstrap key nor one
    /// trusted now) is first admitted under that address's lookup limit, so made-up keys
    /// cannot flood the store while known ones are never held back.
    pub async fn authenticate_api_key_from(
        &self,
        presented: &str,
        address: &str,
    ) -> Result<Principal, AppError> {
        self.authenticate_key(presented, Some(address)).await
    }

    async fn authenticate_key(
        &self,
        presented: &str,
        address: Option<&str>,
    ) -> Result<Principal, AppError> {
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
        let now = self.deps.clock.now();
        let key = match self.trusted_keys.get(&hash, now) {
            (Some(key), _) => Some(key),
            (None, generation) => {
                if let Some(address) = address {
                    if let ports::Admission::Limited { retry_after } =
                        self.admit_key_lookup(address).await
                    {
                        return Err(AppError::RateLimited { retry_after });
                    }
                }
                let found = self
                    .deps
                    .credentials
                    .find_api_key(&hash)
                    .await
                    .map_err(|e| AppError::from_repo("API key", e))?;
                if let Some(key) = found.as_ref().filter(|k| k.is_usable(now)) {
                    self.trusted_keys.keep(hash, key.clone(), now, generation);
                }
                found
            }
        };
        match key {
            // Expiry is checked on every use, trusted or read.
            Some(key) if key.is_usable(now) => Ok(Principal {
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
