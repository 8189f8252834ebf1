//! Who is calling, and what each role may do.

use chrono::{DateTime, Utc};

use crate::{AgentId, ApiKeyId, UserId};

named_enum!(
    /// The four roles of the platform.
    ///
    /// `viewer` < `operator` < `admin` form a ladder; `agent` stands apart and may act only for
    /// its own agent.
    Role, "role" {
            Viewer => "viewer",
            Operator => "operator",
            Admin => "admin",
            Agent => "agent",
    }
);

impl Role {
    /// Position on the viewer < operator < admin ladder; agents are not on it.
    fn rank(self) -> Option<u8> {
        match self {
            Role::Viewer => Some(1),
            Role::Operator => Some(2),
            Role::Admin => Some(3),
            Role::Agent => None,
        }
    }

    /// True when this role includes everything `required` may do.
    pub fn includes(self, required: Role) -> bool {
        match (self.rank(), required.rank()) {
            (Some(have), Some(need)) => have >= need,
            _ => self == required,
        }
    }
}

/// The user a token issued at sign-in stands for, and the user's token version when it was
/// issued: the token holds only while the user exists at that version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserToken {
    pub user: UserId,
    pub version: i64,
}

/// The actor the platform itself is recorded as. No credential can be it: every principal's
/// subject carries a prefix saying what kind of credential it came from.
pub const PLATFORM_ACTOR: &str = "platform";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who, prefixed by the kind of credential: `user:<name>` (signed in), `token:<sub>` (any
    /// other JWT), `api-key:<prefix>` or `admin-api-key`.
    pub subject: String,
    pub role: Role,
    /// For the `agent` role: the one agent this caller is.
    pub agent_id: Option<AgentId>,
    /// When the credential stops being valid (a JWT's `exp`, an API key's expiry); long-lived
    /// connections end then.
    pub expires_at: Option<DateTime<Utc>>,
    /// The stored API key the caller presented, if it was one: long-lived connections end when
    /// it is revoked.
    pub api_key: Option<ApiKeyId>,
    /// For a token issued at sign-in: the user, checked on every use.
    pub user_token: Option<UserToken>,
}

impl Principal {
    /// May this caller read everything of this kind?
    pub fn can_read_all(&self) -> bool {
        self.role.includes(Role::Viewer)
    }

    /// May this caller change platform state as an operator?
    pub fn can_operate(&self) -> bool {
        self.role.includes(Role::Operator)
    }

    /// Is this caller the given agent itself?
    pub fn is_agent(&self, agent: AgentId) -> bool {
        self.role == Role::Agent && self.agent_id == Some(agent)
    }

    /// May this caller see the given agent? Readers see all; an agent sees itself.
    pub fn can_see_agent(&self, agent: AgentId) -> bool {
        self.can_read_all() || self.is_agent(agent)
    }

    /// May this caller see this event? Readers see every event; an agent only those about itself.
    pub fn can_see_event(&self, event: &crate::Event) -> bool {
        self.can_read_all() || event.agent_id.is_some_and(|a| self.is_agent(a))
    }

    /// May this caller act on behalf of the given agent (heartbeat, its tasks)?
    pub fn can_act_for_agent(&self, agent: AgentId) -> bool {
        self.can_operate() || self.is_agent(agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_ladder_and_the_agent_role() {
        assert!(Role::Admin.includes(Role::Operator));
        assert!(Role::Operator.includes(Role::Viewer));
        assert!(!Role::Viewer.includes(Role::Operator));
        assert!(!Role::Agent.includes(Role::Viewer));
        assert!(!Role::Admin.includes(Role::Agent));
        assert!(Role::Agent.includes(Role::Agent));
    }

    #[test]
    fn an_agent_acts_only_for_itself() {
        let me = AgentId(uuid::Uuid::from_u128(1));
        let other = AgentId(uuid::Uuid::from_u128(2));
        let caller = Principal {
            subject: "a".into(),
            role: Role::Agent,
            agent_id: Some(me),
            expires_at: None,
            api_key: None,
            user_token: None,
        };
        assert!(caller.can_act_for_agent(me));
        assert!(!caller.can_act_for_agent(other));
        assert!(!caller.can_see_agent(other));
        let viewer = Principal {
            subject: "v".into(),
            role: Role::Viewer,
            agent_id: None,
            expires_at: None,
            api_key: None,
            user_token: None,
        };
        assert!(viewer.can_see_agent(other));
        assert!(!viewer.can_act_for_agent(other));
    }
}
