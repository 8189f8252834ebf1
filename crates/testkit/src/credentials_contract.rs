//! The credential contract: what every implementation of `CredentialRepository` must do with
//! API keys, users and the audit trail.

use chrono::{DateTime, Duration, Utc};
use domain::{ApiKey, ApiKeyId, AuditAction, AuditEntry, Cursor, KeyHash, Role, User, UserId};
use ports::RepoError;
use serde_json::json;
use uuid::Uuid;

use crate::StoreUnderTest;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).expect("valid time")
}

/// An API key with a fixed ID number and hash, of `role`, created at `at`.
pub fn key(n: u128, role: Role, at: DateTime<Utc>) -> ApiKey {
    ApiKey {
        id: ApiKeyId(Uuid::from_u128(n)),
        name: format!("key-{n}"),
        prefix: format!("mapk_{n:07}"),
        hash: KeyHash(format!("{:064x}", n + 1000)),
        role,
        agent_id: None,
        created_at: at,
        expires_at: None,
        revoked_at: None,
    }
}

/// A user with a fixed ID number, created at `at`.
pub fn user(n: u128, name: &str, role: Role, at: DateTime<Utc>) -> User {
    User {
        id: UserId(Uuid::from_u128(n)),
        username: name.to_owned(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$h{n}"),
        role,
        created_at: at,
        token_version: 1,
    }
}

fn entry(n: u128, action: AuditAction, at: DateTime<Utc>) -> AuditEntry {
    AuditEntry {
        id: Uuid::from_u128(n),
        at,
        actor: "user:alice".into(),
        action,
        target: Some(format!("target-{n}")),
        detail: json!({"n": n as u64}),
    }
}

fn cursor(at: DateTime<Utc>, id: Uuid) -> Option<Cursor> {
    Some(Cursor { created_at: at, id })
}

pub async fn api_keys_are_unique_listed_newest_first_and_revoked_once(store: StoreUnderTest) {
    let (a, b, c) = (
        key(3, Role::Viewer, t(0)),
        key(2, Role::Operator, t(1)),
        key(1, Role::Admin, t(2)),
    );
    for k in [&a, &b, &c] {
        store.credentials.insert_api_key(k).await.unwrap();
    }
    assert_eq!(
        store.credentials.find_api_key(&b.hash).await.unwrap(),
        Some(b.clone())
    );
    // The same ID, or the same hash, is a conflict.
    let mut same_hash = key(4, Role::Admin, t(3));
    same_hash.hash = a.hash.clone();
    let mut same_id = key(5, Role::Admin, t(3));
    same_id.id = a.id;
    for clash in [&same_id, &same_hash] {
        assert!(matches!(
            store.credentials.insert_api_key(clash).await,
            Err(RepoError::Conflict(_))
        ));
    }
    let ids = |keys: Vec<ApiKey>| keys.iter().map(|k| k.id).collect::<Vec<_>>();
    let page = store.credentials.list_api_keys(None, 2).await.unwrap();
    assert_eq!(ids(page), [c.id, b.id]);
    let rest = store
        .credentials
        .list_api_keys(cursor(b.created_at, b.id.as_uuid()), 10)
        .await
        .unwrap();
    assert_eq!(ids(rest), [a.id]);

    let revoked = store.credentials.revoke_api_key(b.id, t(10)).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(t(10)));
    // Revoking again changes nothing: the first revocation stands.
    let again = store.credentials.revoke_api_key(b.id, t(20)).await.unwrap();
    assert_eq!(again.revoked_at, Some(t(10)));
    assert_eq!(
        store
            .credentials
            .revoke_api_key(ApiKeyId(Uuid::from_u128(9)), t(10))
            .await,
        Err(RepoError::NotFound)
    );
    let listed = store.credentials.list_api_keys(None, 10).await.unwrap();
    assert_eq!(listed.len(), 3, "revoked keys stay listed");
    let found = store.credentials.find_api_key(&b.hash).await.unwrap();
    assert_eq!(
        found.and_then(|k| k.revoked_at),
        Some(t(10)),
        "a revoked key is still found by its hash: the caller decides it is not usable"
    );
    assert_eq!(store.credentials.revoked_since(t(5)).await.unwrap(), [b.id]);
    assert!(store
        .credentials
        .revoked_since(t(15))
        .await
        .unwrap()
        .is_empty());
}

pub async fn the_first_admin_key_is_stored_only_while_no_admin_exists(store: StoreUnderTest) {
    let now = t(100);
    assert!(!store.credentials.admin_exists(now).await.unwrap());
    // Keys that are not usable admin keys do not count.
    let mut expired = key(1, Role::Admin, t(0));
    expired.expires_at = Some(t(50));
    store.credentials.insert_api_key(&expired).await.unwrap();
    store
        .credentials
        .insert_api_key(&key(2, Role::Operator, t(0)))
        .await
        .unwrap();
    assert!(!store.credentials.admin_exists(now).await.unwrap());

    let first = key(3, Role::Admin, t(1));
    assert!(store
        .credentials
        .insert_first_admin_key(&first, now)
        .await
        .unwrap());
    assert!(store.credentials.admin_exists(now).await.unwrap());
    let second = key(4, Role::Admin, t(2));
    assert!(!store
        .credentials
        .insert_first_admin_key(&second, now)
        .await
        .unwrap());
    assert_eq!(
        store.credentials.find_api_key(&second.hash).await.unwrap(),
        None
    );

    // An admin user counts as an admin credential too.
    store
        .credentials
        .revoke_api_key(first.id, now)
        .await
        .unwrap();
    assert!(!store.credentials.admin_exists(now).await.unwrap());
    store
        .credentials
        .insert_user(&user(5, "root", Role::Admin, t(3)))
        .await
        .unwrap();
    assert!(store.credentials.admin_exists(now).await.unwrap());
}

pub async fn users_are_unique_by_name_found_listed_and_deleted(store: StoreUnderTest) {
    let (alice, bob, carol) = (
        user(3, "alice", Role::Viewer, t(0)),
        user(2, "bob", Role::Operator, t(1)),
        user(1, "carol", Role::Admin, t(2)),
    );
    for u in [&alice, &bob, &carol] {
        store.credentials.insert_user(u).await.unwrap();
    }
    assert!(matches!(
        store
            .credentials
            .insert_user(&user(4, "alice", Role::Admin, t(3)))
            .await,
        Err(RepoError::Conflict(_))
    ));
    assert_eq!(
        store.credentials.find_user("bob").await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(store.credentials.find_user("Bob").await.unwrap(), None);
    let ids = |users: Vec<User>| users.iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.credentials.list_users(None, 2).await.unwrap()),
        [carol.id, bob.id]
    );
    assert_eq!(
        ids(store
            .credentials
            .list_users(cursor(bob.created_at, bob.id.as_uuid()), 10)
            .await
            .unwrap()),
        [alice.id]
    );
    assert_eq!(store.credentials.delete_user(bob.id).await.unwrap(), bob);
    assert_eq!(
        store.credentials.delete_user(bob.id).await,
        Err(RepoError::NotFound)
    );
    assert_eq!(store.credentials.find_user("bob").await.unwrap(), None);
    // The name is free again.
    store
        .credentials
        .insert_user(&user(6, "bob", Role::Viewer, t(4)))
        .await
        .unwrap();
}

pub async fn a_user_change_moves_the_token_version_and_a_missing_user_is_not_found(
    store: StoreUnderTest,
) {
    let alice = user(1, "alice", Role::Viewer, t(0));
    store.credentials.insert_user(&alice).await.unwrap();
    assert_eq!(
        store.credentials.get_user(alice.id).await.unwrap(),
        Some(alice.clone())
    );
    let promoted = store
        .credentials
        .update_user(alice.id, Some(Role::Operator), None)
        .await
        .unwrap();
    assert_eq!(
        (
            promoted.role,
            promoted.token_version,
            &promoted.password_hash
        ),
        (Role::Operator, 2, &alice.password_hash)
    );
    let rekeyed = store
        .credentials
        .update_user(alice.id, None, Some("$argon2id$second"))
        .await
        .unwrap();
    assert_eq!(
        (
            rekeyed.role,
            rekeyed.token_version,
            rekeyed.password_hash.as_str()
        ),
        (Role::Operator, 3, "$argon2id$second")
    );
    assert_eq!(
        store.credentials.get_user(alice.id).await.unwrap(),
        Some(rekeyed)
    );
    let nobody = UserId(Uuid::from_u128(2));
    assert_eq!(store.credentials.get_user(nobody).await.unwrap(), None);
    assert_eq!(
        store
            .credentials
            .update_user(nobody, Some(Role::Admin), None)
            .await,
        Err(RepoError::NotFound)
    );
    store.credentials.delete_user(alice.id).await.unwrap();
    assert_eq!(store.credentials.get_user(alice.id).await.unwrap(), None);
}

pub async fn the_audit_trail_is_read_newest_first_by_action_and_pruned_by_age(
    store: StoreUnderTest,
) {
    let entries = [
        entry(4, AuditAction::LoginFailed, t(0)),
        entry(3, AuditAction::UserCreated, t(10)),
        entry(2, AuditAction::LoginFailed, t(20)),
        entry(1, AuditAction::AccessDenied, t(30)),
    ];
    for e in &entries {
        store.credentials.record_audit(e).await.unwrap();
    }
    let ids = |list: Vec<AuditEntry>| list.iter().map(|e| e.id.as_u128()).collect::<Vec<_>>();
    let all = store
        .credentials
        .audit_entries(None, None, 10)
        .await
        .unwrap();
    assert_eq!(all[0], entries[3], "read back as written");
    assert_eq!(ids(all), [1, 2, 3, 4]);
    let failures = store
        .credentials
        .audit_entries(None, Some(AuditAction::LoginFailed), 10)
        .await
        .unwrap();
    assert_eq!(ids(failures), [2, 4]);
    let after = store
        .credentials
        .audit_entries(cursor(t(20), Uuid::from_u128(2)), None, 1)
        .await
        .unwrap();
    assert_eq!(ids(after), [3]);

    assert_eq!(
        store
            .credentials
            .prune_audit(t(0) + Duration::seconds(15))
            .await
            .unwrap(),
        2
    );
    let left = store
        .credentials
        .audit_entries(None, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(left), [1, 2]);
}

pub async fn racing_writers_store_one_first_admin_and_every_user_change(store: StoreUnderTest) {
    let now = t(100);
    // Eight replicas bootstrapping at once: exactly one key becomes the first admin.
    let racers: Vec<_> = (0..8u128)
        .map(|n| {
            let credentials = store.credentials.clone();
            tokio::spawn(async move {
                let candidate = key(10 + n, Role::Admin, t(1));
                let stored = credentials
                    .insert_first_admin_key(&candidate, now)
                    .await
                    .unwrap();
                (stored, candidate)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        let (stored, candidate) = racer.await.unwrap();
        let found = store
            .credentials
            .find_api_key(&candidate.hash)
            .await
            .unwrap();
        assert_eq!(
            found.is_some(),
            stored,
            "told {stored} but the key is {found:?}"
        );
        if stored {
            winners.push(candidate.id);
        }
    }
    assert_eq!(winners.len(), 1, "first admin keys stored: {winners:?}");

    // Concurrent changes to one user each move its token version: none is lost.
    let alice = user(1, "alice", Role::Viewer, t(0));
    store.credentials.insert_user(&alice).await.unwrap();
    let changes: Vec<_> = (0..8)
        .map(|_| {
            let credentials = store.credentials.clone();
            tokio::spawn(async move {
                credentials
                    .update_user(alice.id, Some(Role::Operator), None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for change in changes {
        change.await.unwrap();
    }
    let after = store.credentials.get_user(alice.id).await.unwrap().unwrap();
    assert_eq!(after.token_version, alice.token_version + 8);
}
