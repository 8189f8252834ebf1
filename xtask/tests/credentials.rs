//! `cargo xtask create-user` and `create-api-key` against a real database: what they make
//! works, and what they print is the key.

use std::process::Command;
use std::sync::Arc;

use adapters_memory::{MemoryBus, RandomIds, SystemClock};
use app::{Dependencies, Platform, Settings};
use ports::CredentialRepository;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn made_credentials_work_and_bad_ones_are_refused() {
    let rt = runtime();
    let url = rt.block_on(adapters_postgres::testing::fresh_database());
    let xtask = env!("CARGO_BIN_EXE_xtask");

    let made = Command::new(xtask)
        .args(["create-api-key", "--name", "automation", "--role", "admin"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("mapk_"), "{key}");

    let user = Command::new(xtask)
        .args(["create-user", "--username", "root-admin", "--role", "admin"])
        .env("DATABASE_URL", &url)
        .env("XTASK_PASSWORD", "a long enough password")
        .output()
        .unwrap();
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
    let short = Command::new(xtask)
        .args(["create-user", "--username", "x", "--role", "admin"])
        .env("DATABASE_URL", &url)
        .env("XTASK_PASSWORD", "short")
        .output()
        .unwrap();
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("password"));

    rt.block_on(async {
        let store = Arc::new(
            adapters_postgres::PgStore::connect(&url, &adapters_postgres::PoolSettings::default())
                .await
                .unwrap(),
        );
        let stored = store
            .find_api_key(&app::hash_key(&key))
            .await
            .unwrap()
            .expect("the printed key is the stored one");
        assert_eq!(stored.role, domain::Role::Admin);
        let platform = Platform::new(
            Dependencies::on_store(
                store,
                Arc::new(MemoryBus::new()),
                Arc::new(SystemClock),
                Arc::new(RandomIds),
            ),
            Settings::default(),
        );
        let signed_in = platform
            .login("root-admin", "a long enough password")
            .await
            .unwrap();
        assert_eq!(signed_in.role, domain::Role::Admin);
        assert_eq!(
            platform.authenticate_api_key(&key).await.unwrap().role,
            domain::Role::Admin
        );
    });
}
