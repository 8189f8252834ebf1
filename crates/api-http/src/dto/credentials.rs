//! API key, user, sign-in and audit requests and responses.

use chrono::{DateTime, Utc};
use domain::{ApiKey, AuditEntry, NewApiKey, NewUser, User, UserChange};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// `POST /api-keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    pub role: String,
    pub agent_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreateApiKey {
    pub fn into_domain(self, now: DateTime<Utc>) -> Result<NewApiKey, ApiError> {
        NewApiKey::parse(
            &self.name,
            &self.role,
            self.agent_id.as_deref(),
            self.expires_at,
            now,
        )
        .map_err(ApiError::validation)
    }
}

/// A key as listed: never the key itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyBody {
    pub id: uuid::Uuid,
    pub name: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub role: &'static str,
    pub agent_id: Option<uuid::Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyBody {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.as_uuid(),
            name: k.name,
            prefix: k.prefix,
            role: k.role.as_str(),
            agent_id: k.agent_id.map(|a| a.as_uuid()),
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A key as issued: the one time the key itself is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedKeyBody {
    #[serde(flatten)]
    pub key: ApiKeyBody,
    pub api_key: String,
}

/// `POST /users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub password: String,
    pub role: String,
}

impl CreateUser {
    pub fn into_domain(self) -> Result<NewUser, ApiError> {
        NewUser::parse(&self.username, &self.password, &self.role).map_err(ApiError::validation)
    }
}

/// `PATCH /users/{id}`: a new role, a new password, or both.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl UpdateUser {
    pub fn into_domain(self) -> Result<UserChange, ApiError> {
        UserChange::parse(self.role.as_deref(), self.password.as_deref())
            .map_err(ApiError::validation)
    }
}

/// A user as clients see it: never the password hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    pub id: uuid::Uuid,
    pub username: String,
    pub role: &'static str,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserBody {
    fn from(u: User) -> Self {
        Self {
            id: u.id.as_uuid(),
            username: u.username,
            role: u.role.as_str(),
            created_at: u.created_at,
        }
    }
}

/// `POST /auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// A signed-in user's token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
}

/// `GET /auth/me`: who the credential presented is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallerBody {
    /// The credential's kind and name: `user:<name>`, `token:<sub>`, `api-key:<prefix>` or
    /// `admin-api-key`.
    pub subject: String,
    /// `viewer`, `operator`, `admin` or `agent`.
    pub role: &'static str,
    /// For the `agent` role, the agent it acts for.
    pub agent_id: Option<uuid::Uuid>,
    /// When the credential stops being valid, if it does.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `GET /api-keys`, `GET /users`: paging only.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// `GET /audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListAudit {
    pub action: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// One audit entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditBody {
    pub id: uuid::Uuid,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: &'static str,
    pub target: Option<String>,
    pub detail: Value,
}

impl From<AuditEntry> for AuditBody {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action.as_str(),
            target: e.target,
            detail: e.detail,
        }
    }
}
