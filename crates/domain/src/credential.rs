//! Credentials: API keys (what is stored of them, a hash, never the key, and when one may be
//! used) and users, who sign in with a password stored only as an Argon2id hash.

use chrono::{DateTime, Utc};

use crate::validation::{check_name, ValidationErrors};
use crate::{AgentId, ApiKeyId, Role, UserId};

/// Every key the platform issues starts with this, so leaked keys are easy to spot.
pub const KEY_PREFIX: &str = "mapk_";
/// How many leading characters of a key are stored in clear, to tell keys apart.
pub const VISIBLE_PREFIX_CHARS: usize = 12;

/// SHA-256 of a key, hex-encoded: the only form in which a key is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(pub String);

/// A stored API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    /// The key's first characters, for display.
    pub prefix: String,
    pub hash: KeyHash,
    pub role: Role,
    /// Set for `agent` keys: the agent this key acts for.
    pub agent_id: Option<AgentId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// A key authenticates only while it is neither revoked nor expired.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// A validated request for a new API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub name: String,
    pub role: Role,
    pub agent_id: Option<AgentId>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewApiKey {
    /// An `agent` key names its agent; no other key does. An expiry must be in the future.
    pub fn parse(
        name: &str,
        role: &str,
        agent_id: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = errors.collect("name", check_name(name));
        let role = errors.collect("role", role.parse::<Role>());
        let agent_id = agent_id.and_then(|a| {
            errors.collect(
                "agent_id",
                a.parse::<AgentId>().map_err(|_| "must be an agent's ID"),
            )
        });
        match (role, agent_id) {
            (Some(Role::Agent), None) => errors.push("agent_id", "an agent key names its agent"),
            (Some(r), Some(_)) if r != Role::Agent => {
                errors.push("agent_id", "only an agent key names an agent")
            }
            _ => {}
        }
        if expires_at.is_some_and(|at| at <= now) {
            errors.push("expires_at", "must be in the future");
        }
        match (name, role) {
            (Some(name), Some(role)) if errors.is_empty() => Ok(Self {
                name,
                role,
                agent_id,
                expires_at,
            }),
            _ => Err(errors),
        }
    }
}

/// A person who signs in with a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    /// The Argon2id hash in PHC string form: never the password.
    pub password_hash: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// Tokens issued at sign-in carry this; changing the user's role or password moves it on,
    /// which ends every token issued before, and deleting the user ends them all.
    pub token_version: i64,
}

/// Shortest and longest password accepted.
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 12..=256;

/// A validated request for a new user; the password is hashed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
}

impl NewUser {
    /// Usernames are 1..=64 of letters, digits, `.`, `_`, `-`, `@`; passwords 12..=256
    /// characters; roles `viewer`, `operator` or `admin` (agents use API keys).
    pub fn parse(username: &str, password: &str, role: &str) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let username = errors.collect("username", check_username(username));
        errors.collect("password", check_password(password));
        let role = errors.collect("role", check_user_role(role));
        match (username, role) {
            (Some(username), Some(role)) if errors.is_empty() => Ok(Self {
                username,
                password: password.to_owned(),
                role,
            }),
            _ => Err(errors),
        }
    }
}

/// A validated change to a user: a new role, a new password (hashed by the caller), or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    pub role: Option<Role>,
    pub password: Option<String>,
}

impl UserChange {
    /// The same rules as for a new user; a change that changes nothing is refused.
    pub fn parse(role: Option<&str>, password: Option<&str>) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if role.is_none() && password.is_none() {
            errors.push("body", "name a role, a password, or both");
        }
        let role = role.and_then(|r| errors.collect("role", check_user_role(r)));
        if let Some(p) = password {
            errors.collect("password", check_password(p));
        }
        errors.into_result().map(|()| Self {
            role,
            password: password.map(str::to_owned),
        })
    }
}

fn check_password(password: &str) -> Result<(), String> {
    if PASSWORD_CHARS.contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(format!(
            "must be {} to {} characters",
            PASSWORD_CHARS.start(),
            PASSWORD_CHARS.end()
        ))
    }
}

fn check_user_role(role: &str) -> Result<Role, String> {
    match role.parse::<Role>()? {
        Role::Agent => Err("users are viewer, operator or admin; agents use API keys".into()),
        role => Ok(role),
    }
}

/// A username as stored: 1..=64 of letters, digits, `.`, `_`, `-`, `@`, compared as written.
pub fn check_username(username: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(username.to_owned())
    } else {
        Err("must be 1 to 64 letters, digits, '.', '_', '-' or '@'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_keys_and_only_they_name_an_agent() {
        let now = Utc::now();
        let agent = "00000000-0000-0000-0000-000000000001";
        assert!(NewApiKey::parse("ci", "operator", None, None, now).is_ok());
        assert!(NewApiKey::parse("a", "agent", Some(agent), None, now).is_ok());
        let err = NewApiKey::parse("a", "agent", None, None, now).unwrap_err();
        assert_eq!(err.0[0].field, "agent_id");
        let err = NewApiKey::parse("a", "admin", Some(agent), None, now).unwrap_err();
        assert_eq!(err.0[0].field, "agent_id");
        let err = NewApiKey::parse("a", "root", None, Some(now), now).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["role", "expires_at"]);
    }

    #[test]
    fn users_need_a_real_password_and_a_human_role() {
        assert!(NewUser::parse("alice", "correct horse battery", "operator").is_ok());
        let err = NewUser::parse("al ice", "short", "agent").unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["username", "password", "role"]);
    }

    #[test]
    fn a_user_change_names_something_valid_to_change() {
        assert!(UserChange::parse(Some("viewer"), None).is_ok());
        assert!(UserChange::parse(None, Some("a new long password")).is_ok());
        assert_eq!(
            UserChange::parse(None, None).unwrap_err().0[0].field,
            "body"
        );
        let err = UserChange::parse(Some("agent"), Some("short")).unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["role", "password"]);
    }
}
