//! Settings every replica of a deployment must share, and telling when they differ.
//!
//! Each replica announces a fingerprint of each such setting (see [`fingerprint`]) through the
//! store every [`ANNOUNCE_EVERY`], and compares it with what the other live replicas announced.
//! A replica started with a different `JWT_SECRET` would otherwise show only as tokens refused
//! now and then, depending on which replica a request reaches.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{AppError, Platform};

/// How often a replica announces its settings and looks at the others'.
pub const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A replica not heard from for this long is taken to be gone: its settings no longer count.
const LIVE_FOR: chrono::Duration = chrono::Duration::seconds(35);

/// Announcements older than this are deleted by the replicas still announcing.
const FORGET_AFTER: chrono::Duration = chrono::Duration::minutes(10);

/// The fingerprint of a setting's value as announced: the first 16 hex digits of a SHA-256 of
/// the name and value, so a value (a secret among them) never leaves the replica, and two
/// replicas agree only when their values do.
pub fn fingerprint(name: &str, value: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"agent-platform shared setting\0")
        .chain_update(name.as_bytes())
        .chain_update(b"\0")
        .chain_update(value.as_bytes())
        .finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A setting a live replica announced differently from this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub setting: String,
    pub replica: Uuid,
}

impl Platform {
    /// Announces this replica's shared settings ([`crate::Settings::shared`]) and returns those
    /// another live replica announced differently. A setting another replica does not announce
    /// is not compared: it runs a version that has no such setting, or none yet. Recorded in
    /// `/metrics` as `agent_platform_replica_settings_disagreements`.
    pub async fn announce_settings(&self) -> Result<Vec<Disagreement>, AppError> {
        let now = self.deps.clock.now();
        let mine = ports::ReplicaSettings {
            replica: self.replica,
            settings: self.settings.shared.clone(),
            seen_at: now,
        };
        let others = self
            .deps
            .replicas
            .announce(&mine, now - LIVE_FOR, now - FORGET_AFTER)
            .await
            .map_err(|e| AppError::from_repo("Replica", e))?;
        let found = disagreements(&mine.settings, &others);
        self.metrics.settings_disagreements.set(found.len() as u64);
        Ok(found)
    }

    /// This replica's ID, drawn when it started.
    pub fn replica(&self) -> Uuid {
        self.replica
    }
}

/// The settings of `mine` each of `others` holds another fingerprint for.
fn disagreements(
    mine: &BTreeMap<String, String>,
    others: &[ports::ReplicaSettings],
) -> Vec<Disagreement> {
    others
        .iter()
        .flat_map(|other| {
            mine.iter()
                .filter(|(name, print)| {
                    other
                        .settings
                        .get(*name)
                        .is_some_and(|theirs| theirs != *print)
                })
                .map(|(name, _)| Disagreement {
                    setting: name.clone(),
                    replica: other.replica,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_differ_with_the_value_and_the_name_and_hide_both() {
        let a = fingerprint("JWT_SECRET", "correct horse battery staple 0123456789");
        assert_eq!(a.len(), 16);
        assert_eq!(
            a,
            fingerprint("JWT_SECRET", "correct horse battery staple 0123456789")
        );
        assert_ne!(
            a,
            fingerprint("JWT_SECRET", "correct horse battery staple 0123456780")
        );
        assert_ne!(
            a,
            fingerprint("JWT_ISSUER", "correct horse battery staple 0123456789")
        );
        assert!(!a.contains("horse"));
    }

    #[test]
    fn a_setting_another_replica_holds_otherwise_is_a_disagreement_and_one_it_lacks_is_not() {
        let mine: BTreeMap<String, String> =
            [("A".into(), "1".into()), ("B".into(), "2".into())].into();
        let other = |n: u128, a: &str| ports::ReplicaSettings {
            replica: Uuid::from_u128(n),
            settings: [("A".into(), a.into())].into(),
            seen_at: chrono::Utc::now(),
        };
        let mut same = other(1, "1");
        same.settings.insert("B".into(), "2".into());
        assert!(disagreements(&mine, &[same]).is_empty());
        let found = disagreements(&mine, &[other(2, "9")]);
        let names: Vec<&str> = found.iter().map(|d| d.setting.as_str()).collect();
        assert_eq!(
            names,
            ["A"],
            "A differs; B, which the other lacks, is not compared"
        );
        assert!(found.iter().all(|d| d.replica == Uuid::from_u128(2)));
    }
}

#[cfg(test)]
mod between_replicas {
    use std::sync::Arc;

    use adapters_memory::{MemoryBus, MemoryStore, RandomIds, SystemClock};

    use super::*;
    use crate::{Dependencies, Settings};

    #[tokio::test]
    async fn replicas_with_different_secrets_name_each_other_and_alike_ones_do_not() {
        let store = Arc::new(MemoryStore::new());
        let replica = |secret: &str| {
            let settings = Settings {
                shared: [("JWT_SECRET".into(), fingerprint("JWT_SECRET", secret))].into(),
                ..Settings::default()
            };
            let deps = Dependencies::on_store(
                store.clone(),
                Arc::new(MemoryBus::new()),
                Arc::new(SystemClock),
                Arc::new(RandomIds),
            );
            crate::Platform::new(deps, settings)
        };
        let (one, two, three) = (replica("first"), replica("second"), replica("first"));
        assert!(one.announce_settings().await.unwrap().is_empty());
        let differs = |from: &crate::Platform| Disagreement {
            setting: "JWT_SECRET".into(),
            replica: from.replica(),
        };
        assert_eq!(two.announce_settings().await.unwrap(), [differs(&one)]);
        assert_eq!(two.metrics().settings_disagreements.get(), 1);
        let seen = three.announce_settings().await.unwrap();
        assert_eq!(
            seen,
            [differs(&two)],
            "the third agrees with the first only"
        );
        assert_eq!(one.announce_settings().await.unwrap(), [differs(&two)]);
        assert!(one
            .metrics()
            .render(None, 0)
            .contains("agent_platform_replica_settings_disagreements 1"));
    }
}
