//! Trusted API keys: a stored key found valid is not read again for a moment (longer while
//! renewals find it not revoked); a key revoked through this replica stops working at once,
//! one revoked elsewhere within `KEY_TRUST`, and an expired one always.

use std::sync::Arc;

use adapters_memory::{MemoryBus, MemoryStore};
use app::{hash_key, KEY_TRUST};
use chrono::{DateTime, Utc};
use domain::{ApiKey, ApiKeyId, KeyHash, Role};
use ports::CredentialRepository;
use testkit::ManualClock;

/// A platform on a fresh embedded store, its clock moved by hand.
fn replica() -> (Arc<MemoryStore>, ManualClock, app::Platform) {
    let store = Arc::new(MemoryStore::new());
    let clock = ManualClock::default();
    let platform = testkit::platform(
        store.clone(),
        Arc::new(MemoryBus::new()),
        clock.clone(),
        app::Settings::default(),
    );
    (store, clock, platform)
}

/// An operator key stored under the hash of `secret`.
fn stored_key(secret: &str, at: DateTime<Utc>) -> ApiKey {
    ApiKey {
        id: ApiKeyId(uuid::Uuid::from_u128(7)),
        name: "ci".into(),
        prefix: "mapk_ci".into(),
        hash: hash_key(secret),
        role: Role::Operator,
        agent_id: None,
        created_at: at,
        expires_at: Some(at + chrono::Duration::seconds(60)),
        revoked_at: None,
    }
}

#[tokio::test]
async fn a_valid_key_is_trusted_briefly_revoked_here_at_once_and_expired_always() {
    let (store, clock, platform) = replica();
    let now = ports::Clock::now(&clock);
    let key = stored_key("secret-one", now);
    store.insert_api_key(&key).await.unwrap();
    assert!(platform.authenticate_api_key("secret-one").await.is_ok());

    // Revoked through another replica: still trusted here for a moment, then not.
    store.revoke_api_key(key.id, now).await.unwrap();
    assert!(platform.authenticate_api_key("secret-one").await.is_ok());
    clock.advance(KEY_TRUST);
    assert!(platform.authenticate_api_key("secret-one").await.is_err());

    // Revoked through this replica: refused at once.
    let mut second = stored_key("secret-two", now);
    second.id = ApiKeyId(uuid::Uuid::from_u128(8));
    second.hash = KeyHash(hash_key("secret-two").0);
    store.insert_api_key(&second).await.unwrap();
    assert!(platform.authenticate_api_key("secret-two").await.is_ok());
    let admin = testkit::builders::principal(Role::Admin);
    platform.revoke_api_key(&admin, second.id).await.unwrap();
    assert!(platform.authenticate_api_key("secret-two").await.is_err());

    // Expiry is checked on every use, however recently the key was read.
    let mut third = stored_key("secret-three", now);
    third.id = ApiKeyId(uuid::Uuid::from_u128(9));
    third.expires_at = Some(ports::Clock::now(&clock) + chrono::Duration::seconds(2));
    store.insert_api_key(&third).await.unwrap();
    assert!(platform.authenticate_api_key("secret-three").await.is_ok());
    clock.advance(chrono::Duration::seconds(3));
    assert!(platform.authenticate_api_key("secret-three").await.is_err());
}

#[tokio::test]
async fn a_deregistered_agents_key_stops_working_at_once() {
    let (_, _, platform) = replica();
    let operator = testkit::builders::principal(Role::Operator);
    let registered = platform
        .register_agent(&operator, testkit::builders::new_agent("worker", &[]))
        .await
        .unwrap();
    let key = registered.agent_key;
    assert!(platform.authenticate_api_key(&key).await.is_ok());
    platform
        .deregister_agent(&operator, registered.agent.id)
        .await
        .unwrap();
    assert!(platform.authenticate_api_key(&key).await.is_err());
}

#[tokio::test]
async fn a_renewal_keeps_keys_trusted_and_drops_those_revoked_elsewhere() {
    let (store, clock, platform) = replica();
    let now = ports::Clock::now(&clock);
    let mut key = stored_key("secret-one", now);
    key.expires_at = None;
    store.insert_api_key(&key).await.unwrap();
    let mut other = stored_key("secret-two", now);
    other.id = ApiKeyId(uuid::Uuid::from_u128(8));
    other.hash = hash_key("secret-two");
    store.insert_api_key(&other).await.unwrap();
    assert!(platform.authenticate_api_key("secret-one").await.is_ok());
    assert!(platform.authenticate_api_key("secret-two").await.is_ok());

    // Renewed before its trust lapses, a key is trusted on without being read: a revocation
    // only a read would show (stamped before the window a renewal looks at) goes unseen.
    store.revoke_api_key(other.id, now).await.unwrap();
    let long_ago = now - chrono::Duration::hours(1);
    store.revoke_api_key(key.id, long_ago).await.unwrap();
    for _ in 0..5 {
        clock.advance(chrono::Duration::seconds(2));
        platform.renew_trusted_keys().await.unwrap();
        assert!(platform.authenticate_api_key("secret-one").await.is_ok());
    }
    // The key revoked through another replica was dropped by the first renewal.
    assert!(platform.authenticate_api_key("secret-two").await.is_err());

    // Renewals put off reading a key again for a minute at most: then its trust lapses, it is
    // read, and the revocation found.
    for _ in 0..25 {
        clock.advance(chrono::Duration::seconds(2));
        platform.renew_trusted_keys().await.unwrap();
    }
    assert!(platform.authenticate_api_key("secret-one").await.is_ok());
    clock.advance(KEY_TRUST);
    platform.renew_trusted_keys().await.unwrap();
    assert!(platform.authenticate_api_key("secret-one").await.is_err());
}

#[tokio::test]
async fn without_renewals_trust_lapses() {
    let (store, clock, platform) = replica();
    let now = ports::Clock::now(&clock);
    let key = stored_key("secret-one", now);
    store.insert_api_key(&key).await.unwrap();
    assert!(platform.authenticate_api_key("secret-one").await.is_ok());
    store
        .revoke_api_key(key.id, now - chrono::Duration::hours(1))
        .await
        .unwrap();
    clock.advance(KEY_TRUST);
    assert!(platform.authenticate_api_key("secret-one").await.is_err());
}
