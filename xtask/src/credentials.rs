//! `cargo xtask create-user` and `cargo xtask create-api-key`: credentials made straight in the
//! database, through the platform's own use cases (so they are validated, hashed and audited
//! exactly as over the API), for the first admin or for automation.

use std::sync::Arc;

use adapters_memory::{MemoryBus, RandomIds, SystemClock};
use app::{Dependencies, Platform, Settings};
use domain::{NewApiKey, NewUser, Principal, Role};

/// Who the audit trail says made them.
fn operator_of_the_database() -> Principal {
    Principal {
        subject: "xtask".into(),
        role: Role::Admin,
        agent_id: None,
        expires_at: None,
        api_key: None,
        user_token: None,
    }
}

async fn platform() -> anyhow::Result<Platform> {
    let store = Arc::new(crate::connect().await?);
    store.migrate().await?;
    Ok(Platform::new(
        Dependencies::on_store(
            store,
            Arc::new(MemoryBus::new()),
            Arc::new(SystemClock),
            Arc::new(RandomIds),
        ),
        Settings::default(),
    ))
}

/// The value after `--name` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].as_str())
}

/// `create-user --username U --role R`, the password read from `XTASK_PASSWORD` (so it is
/// never in the shell history or the process list).
pub async fn create_user(args: &[String]) -> anyhow::Result<()> {
    let username =
        flag(args, "--username").ok_or_else(|| anyhow::anyhow!("--username is required"))?;
    let role = flag(args, "--role").unwrap_or("operator");
    let password = std::env::var("XTASK_PASSWORD")
        .map_err(|_| anyhow::anyhow!("set the password in XTASK_PASSWORD"))?;
    let new = NewUser::parse(username, &password, role).map_err(|e| anyhow::anyhow!("{e}"))?;
    let user = platform()
        .await?
        .create_user(&operator_of_the_database(), new)
        .await?;
    println!(
        "created user {} ({}) with role {}",
        user.username, user.id, user.role
    );
    Ok(())
}

/// `create-api-key --name N --role R [--agent-id ID]`: prints the key, once.
pub async fn create_api_key(args: &[String]) -> anyhow::Result<()> {
    let name = flag(args, "--name").ok_or_else(|| anyhow::anyhow!("--name is required"))?;
    let role = flag(args, "--role").unwrap_or("operator");
    let platform = platform().await?;
    let new = NewApiKey::parse(
        name,
        role,
        flag(args, "--agent-id"),
        None,
        chrono::Utc::now(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let issued = platform
        .create_api_key(&operator_of_the_database(), new)
        .await?;
    println!("{}", issued.secret);
    eprintln!(
        "created API key {} ({}), role {}; it is shown only this once",
        issued.key.name, issued.key.id, issued.key.role
    );
    Ok(())
}
