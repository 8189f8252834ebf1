//! Credentials and the audit trail: API keys (issued once, stored hashed, revocable), users with
//! Argon2id passwords and their sign-in, the bootstrap admin key, and the record of who did what.
//!
//! Sign-in answers the same way, after the same work, whether the user exists or not: an unknown
//! username is checked against a stand-in hash, so neither the answer nor its timing tells an
//! attacker which usernames exist.

use argon2::password_hash::SaltString;
use domain::credential::{check_username, VISIBLE_PREFIX_CHARS};
use domain::{
    ApiKey, ApiKeyId, AuditAction, AuditEntry, Cursor, Limit, NewApiKey, NewUser, Principal, Role,
    User, UserId, ValidationErrors,
};
use ports::RepoError;
use serde_json::{json, Value};

use crate::auth::{hash_key, new_api_key};
use crate::passwords;
use crate::{AppError, Platform};

/// A key as issued: the stored record and, this once, the key itself.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: String,
}

fn repo(e: RepoError) -> AppError {
    AppError::from_repo("Credential", e)
}

fn require_admin(actor: &Principal, what: &str) -> Result<(), AppError> {
    if actor.role == Role::Admin {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!(
            "role {} may not {what}",
            actor.role
        )))
    }
}

/// How long audit entries are kept.
pub const AUDIT_RETENTION_DAYS: i64 = 90;

/// The one answer to a failed sign-in, whatever failed.
const BAD_LOGIN: &str = "invalid username or password";

impl Platform {
    /// Issues an API key. The key is in the answer and nowhere else: only its hash is kept.
    pub async fn create_api_key(
        &self,
        actor: &Principal,
        new: NewApiKey,
    ) -> Result<IssuedKey, AppError> {
        require_admin(actor, "manage API keys")?;
        if let Some(agent) = new.agent_id {
            match self.deps.agents.get(agent).await {
                Ok(_) => {}
                Err(RepoError::NotFound) => {
                    return Err(ValidationErrors::single("agent_id", "no agent has this ID").into())
                }
                Err(e) => return Err(AppError::from_repo("Agent", e)),
            }
        }
        let issued = self.issue_key(new.name, new.role, new.agent_id, new.expires_at);
        self.deps
            .credentials
            .insert_api_key(&issued.key)
            .await
            .map_err(repo)?;
        self.audit(
            &actor.subject,
            AuditAction::ApiKeyCreated,
            Some(issued.key.id.to_string()),
            key_detail(&issued.key),
        )
        .await;
        Ok(issued)
    }

    /// A fresh key and its record, not yet stored.
    pub(crate) fn issue_key(
        &self,
        name: String,
        role: Role,
        agent_id: Option<domain::AgentId>,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> IssuedKey {
        let secret = new_api_key(self.deps.ids.as_ref());
        let key = ApiKey {
            id: ApiKeyId(self.deps.ids.new_id()),
            name,
            prefix: secret.chars().take(VISIBLE_PREFIX_CHARS).collect(),
            hash: hash_key(&secret),
            role,
            agent_id,
            created_at: self.deps.clock.now(),
            expires_at,
            revoked_at: None,
        };
        IssuedKey { key, secret }
    }

    pub async fn list_api_keys(
        &self,
        actor: &Principal,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<crate::Page<ApiKey>, AppError> {
        require_admin(actor, "manage API keys")?;
        let rows = self
            .deps
            .credentials
            .list_api_keys(after, limit.get() + 1)
            .await
            .map_err(repo)?;
        Ok(crate::Page::of(rows, limit, |k| Cursor {
            created_at: k.created_at,
            id: k.id.as_uuid(),
        }))
    }

    /// Revokes a key; it stops working at once. Revoking a revoked key changes nothing.
    pub async fn revoke_api_key(
        &self,
        actor: &Principal,
        id: ApiKeyId,
    ) -> Result<ApiKey, AppError> {
        require_admin(actor, "manage API keys")?;
        let key = self
            .deps
            .credentials
            .revoke_api_key(id, self.deps.clock.now())
            .await
            .map_err(|e| AppError::from_repo("API key", e))?;
        self.trusted_keys.forget_all();
        self.audit(
            &actor.subject,
            AuditAction::ApiKeyRevoked,
            Some(id.to_string()),
            key_detail(&key),
        )
        .await;
        Ok(key)
    }

    /// Creates a user; the password is kept only as an Argon2id hash. A taken username is `409`.
    pub async fn create_user(&self, actor: &Principal, new: NewUser) -> Result<User, AppError> {
        require_admin(actor, "manage users")?;
        let hash = self.hash_password(new.password).await?;
        let user = User {
            id: UserId(self.deps.ids.new_id()),
            username: new.username,
            password_hash: hash,
            role: new.role,
            created_at: self.deps.clock.now(),
            token_version: 1,
        };
        match self.deps.credentials.insert_user(&user).await {
            Ok(()) => {}
            Err(RepoError::Conflict(_)) => {
                return Err(AppError::Conflict(format!(
                    "the username '{}' is taken",
                    user.username
                )))
            }
            Err(e) => return Err(repo(e)),
        }
        self.audit(
            &actor.subject,
            AuditAction::UserCreated,
            Some(user.id.to_string()),
            json!({"username": user.username, "role": user.role.as_str()}),
        )
        .await;
        Ok(user)
    }

    pub async fn list_users(
        &self,
        actor: &Principal,
        after: Option<Cursor>,
        limit: Limit,
    ) -> Result<crate::Page<User>, AppError> {
        require_admin(actor, "manage users")?;
        let rows = self
            .deps
            .credentials
            .list_users(after, limit.get() + 1)
            .await
            .map_err(repo)?;
        Ok(crate::Page::of(rows, limit, |u| Cursor {
            created_at: u.created_at,
            id: u.id.as_uuid(),
        }))
    }

    /// An Argon2id hash of a new password, in one of the hashing slots.
    async fn hash_password(&self, password: String) -> Result<String, AppError> {
        let salt = SaltString::encode_b64(&self.deps.ids.secret_bytes()[..16])
            .map_err(|e| AppError::Internal(format!("salt: {e}")))?;
        let slot = self.hashing.admit().await?;
        self.hashing
            .run(slot, move || passwords::hash(password.as_bytes(), &salt))
            .await?
            .map_err(|e| AppError::Internal(format!("hashing: {e}")))
    }

    /// Changes a user's role or password. Every token the user was issued before stops
    /// working at once, on every replica.
    pub async fn update_user(
        &self,
        actor: &Principal,
        id: UserId,
        change: domain::UserChange,
    ) -> Result<User, AppError> {
        require_admin(actor, "manage users")?;
        let hash = match change.password {
            Some(password) => Some(self.hash_password(password).await?),
            None => None,
        };
        let user = self
            .deps
            .credentials
            .update_user(id, change.role, hash.as_deref())
            .await
            .map_err(|e| AppError::from_repo("User", e))?;
        self.audit(
            &actor.subject,
            AuditAction::UserUpdated,
            Some(id.to_string()),
            json!({
                "username": user.username,
                "role": user.role.as_str(),
                "password_changed": hash.is_some(),
            }),
        )
        .await;
        Ok(user)
    }

    /// The caller a token issued at sign-in stands for now: `Unauthorized` once the user is
    /// deleted or its role or password has changed since the token was issued.
    pub async fn authenticate_user_token(
        &self,
        token: domain::UserToken,
    ) -> Result<Principal, AppError> {
        let user = self
            .deps
            .credentials
            .get_user(token.user)
            .await
            .map_err(repo)?;
        match user {
            Some(user) if user.token_version == token.version => Ok(user_principal(&user)),
            _ => Err(AppError::Unauthorized("invalid or expired token")),
        }
    }

    /// Deletes a user: it can no longer sign in, and its tokens stop working at once.
    pub async fn delete_user(&self, actor: &Principal, id: UserId) -> Result<User, AppError> {
        require_admin(actor, "manage users")?;
        let user = self
            .deps
            .credentials
            .delete_user(id)
            .await
            .map_err(|e| AppError::from_repo("User", e))?;
        self.audit(
            &actor.subject,
            AuditAction::UserDeleted,
            Some(id.to_string()),
            json!({"username": user.username, "role": user.role.as_str()}),
        )
        .await;
        Ok(user)
    }

    /// Checks a username and password. The same answer, after the same work, for an unknown
    /// user and a wrong password.
    pub async fn login(&self, username: &str, password: &str) -> Result<Principal, AppError> {
        // Admitted before anything else, so a refusal costs the same for every username.
        let slot = self.hashing.admit().await?;
        let user = match check_username(username) {
            Ok(name) => self.deps.credentials.find_user(&name).await.map_err(repo)?,
            Err(_) => None,
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let password = password.to_owned();
        let matches = self
            .hashing
            .run(slot, move || {
                let stored = stored.as_deref().unwrap_or_else(|| passwords::stand_in());
                passwords::verify(password.as_bytes(), stored)
            })
            .await?;
        // What is recorded of a failure is the username when it is a well-formed one, never
        // the password.
        let shown = check_username(username).unwrap_or_else(|_| "<malformed username>".into());
        match user {
            Some(user) if matches => {
                let principal = user_principal(&user);
                self.audit(
                    &principal.subject,
                    AuditAction::LoginSucceeded,
                    None,
                    json!({}),
                )
                .await;
                Ok(principal)
            }
            _ => {
                self.audit(
                    &format!("user:{shown}"),
                    AuditAction::LoginFailed,
                    None,
                    json!({}),
                )
                .await;
                Err(AppError::Unauthorized(BAD_LOGIN))
            }
        }
    }

    /// The audit trail, newest first; admins only.
    pub async fn audit_trail(
        &self,
        actor: &Principal,
        after: Option<Cursor>,
        action: Option<AuditAction>,
        limit: Limit,
    ) -> Result<crate::Page<AuditEntry>, AppError> {
        require_admin(actor, "read the audit trail")?;
        let rows = self
            .deps
            .credentials
            .audit_entries(after, action, limit.get() + 1)
            .await
            .map_err(repo)?;
        Ok(crate::Page::of(rows, limit, |e| Cursor {
            created_at: e.at,
            id: e.id,
        }))
    }

    /// The keys revoked in the last `window` (by this replica's clock; the window covers clock
    /// differences between replicas).
    pub async fn recently_revoked(
        &self,
        window: chrono::Duration,
    ) -> Result<Vec<ApiKeyId>, AppError> {
        self.deps
            .credentials
            .revoked_since(self.deps.clock.now() - window)
            .await
            .map_err(repo)
    }

    /// Deletes audit entries past [`AUDIT_RETENTION_DAYS`]; returns how many.
    pub async fn prune_audit(&self) -> Result<u64, AppError> {
        let before = self.deps.clock.now() - chrono::Duration::days(AUDIT_RETENTION_DAYS);
        self.deps
            .credentials
            .prune_audit(before)
            .await
            .map_err(repo)
    }

    /// Records that a caller was refused (`403`) what it asked for.
    pub async fn record_denial(&self, actor: &Principal, target: String) {
        self.audit(
            &actor.subject,
            AuditAction::AccessDenied,
            Some(target),
            json!({"role": actor.role.as_str()}),
        )
        .await;
    }

    /// At start-up: when no admin credential exists at all, issues an admin API key, stores it
    /// (hashed) and returns it so it can be shown once.
    pub async fn bootstrap_admin_key(&self) -> Result<Option<String>, AppError> {
        let now = self.deps.clock.now();
        if self
            .deps
            .credentials
            .admin_exists(now)
            .await
            .map_err(repo)?
        {
            return Ok(None);
        }
        let issued = self.issue_key("bootstrap admin".into(), Role::Admin, None, None);
        // Replicas starting together on a fresh database: only one issues the key.
        if !self
            .deps
            .credentials
            .insert_first_admin_key(&issued.key, now)
            .await
            .map_err(repo)?
        {
            return Ok(None);
        }
        self.audit(
            domain::PLATFORM_ACTOR,
            AuditAction::ApiKeyCreated,
            Some(issued.key.id.to_string()),
            key_detail(&issued.key),
        )
        .await;
        Ok(Some(issued.secret))
    }

    /// Appends to the audit trail. A failure to record is logged, not fatal: the change it
    /// describes has happened.
    pub(crate) async fn audit(
        &self,
        actor: &str,
        action: AuditAction,
        target: Option<String>,
        detail: Value,
    ) {
        let entry = AuditEntry {
            id: self.deps.ids.new_id(),
            at: self.deps.clock.now(),
            actor: actor.to_owned(),
            action,
            target,
            detail,
        };
        if let Err(e) = self.deps.credentials.record_audit(&entry).await {
            tracing::warn!(error = %e, action = %action, actor, "cannot record an audit entry");
        }
    }
}

/// A signed-in user as a caller. `user:` keeps users apart from every other kind of subject
/// (`platform`, keys, other tokens).
fn user_principal(user: &User) -> Principal {
    Principal {
        subject: format!("user:{}", user.username),
        role: user.role,
        agent_id: None,
        expires_at: None,
        api_key: None,
        user_token: Some(domain::UserToken {
            user: user.id,
            version: user.token_version,
        }),
    }
}

fn key_detail(key: &ApiKey) -> Value {
    json!({
        "name": key.name,
        "prefix": key.prefix,
        "role": key.role.as_str(),
        "agent_id": key.agent_id,
        "expires_at": key.expires_at,
    })
}
