//! The composition root: the one place that names concrete adapters and wires them together.

use std::sync::Arc;

use adapters_memory::{MemoryBus, MemoryStore, RandomIds, SystemClock};
use adapters_postgres::{PgStore, PoolSettings};
use adapters_redis::{RedisBus, RedisRateLimiter};
use api_http::ws::WsLimits;
use api_http::{AppState, JwtKeys};
use app::{Dependencies, Platform, Settings};
use domain::credential::VISIBLE_PREFIX_CHARS;
use domain::limit::Rate;
use ports::{EventBus, EventLog, Store};
use secrecy::ExposeSecret;

use crate::config::{Config, Migrations};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] adapters_postgres::StartupError),
    #[error(transparent)]
    Redis(#[from] adapters_redis::ConfigError),
    #[error("cannot issue the bootstrap admin key: {0}")]
    Bootstrap(String),
    #[error("{0}")]
    Store(String),
}

/// The running adapters, kept so shutdown can close them.
#[derive(Debug)]
pub struct Runtime {
    pub state: AppState,
    pub postgres: Option<PgStore>,
    pub redis: Option<RedisBus>,
}

impl Runtime {
    /// Closes pools after the HTTP server has drained.
    pub async fn close(&self) {
        if let Some(store) = &self.postgres {
            store.close().await;
        }
        if let Some(bus) = &self.redis {
            bus.close();
        }
    }
}

/// Chooses and connects the adapters the configuration asks for, and builds the platform.
pub async fn build(config: &Config, websocket_budget: usize) -> Result<Runtime, StartupError> {
    let postgres = connect_postgres(config).await?;
    let (deps, redis) = match &postgres {
        Some(store) => wire(Arc::new(store.clone()), config).await?,
        None => {
            tracing::warn!(
                "DATABASE_URL is not set: using the embedded in-process store; data is not persisted and is lost when the server stops"
            );
            wire(Arc::new(MemoryStore::new()), config).await?
        }
    };

    let admin_key = config
        .admin_api_key
        .as_ref()
        .map(|key| app::hash_key(key.expose_secret()));
    let settings = Settings {
        agent_offline_after: chrono::Duration::from_std(config.agent_offline_after)
            .unwrap_or(chrono::Duration::seconds(90)),
        admin_key,
        event_max_age: chrono::Duration::days(config.event_retention_days as i64),
        event_max_count: config.event_retention_max,
        task_max_age: chrono::Duration::days(config.task_retention_days as i64),
        conflict_strategies: config.conflict_strategies.clone(),
        auto_resolve_reported: config.conflict_auto_resolve_reported,
        rate_limit: (config.rate_limit_per_second > 0).then_some(Rate {
            per_second: config.rate_limit_per_second as f64,
            burst: config.rate_limit_burst as u32,
        }),
        anonymous_rate_limit: (config.anonymous_rate_limit_per_second > 0).then_some(Rate {
            per_second: config.anonymous_rate_limit_per_second as f64,
            burst: config.anonymous_rate_limit_per_second.saturating_mul(2) as u32,
        }),
        login_rate_limit: (config.login_rate_limit_per_minute > 0).then_some(Rate {
            per_second: config.login_rate_limit_per_minute as f64 / 60.0,
            burst: config.login_rate_limit_per_minute.min(10) as u32,
        }),
        password_hash_concurrency: config.password_hash_concurrency,
        shared: shared_settings(config),
        ..Settings::default()
    };
    let jwt = config.jwt_secret.as_ref().map(|secret| {
        JwtKeys::new(
            secret,
            config.jwt_issuer.as_deref(),
            config.jwt_audience.as_deref(),
        )
        .with_max_lifetime(config.jwt_max_lifetime.as_secs() as i64)
    });
    let platform = Platform::new(deps, settings);
    if config.admin_api_key.is_none() {
        // Without any admin credential the API could not be managed: issue one, stored like
        // any other key, and show it this once.
        match platform.bootstrap_admin_key().await {
            Ok(Some(key)) => {
                // The key itself goes to stderr only, once; logs, which are often shipped
                // elsewhere, get its prefix.
                eprintln!("agent-platform: generated an admin API key (shown once): {key}");
                let prefix: String = key.chars().take(VISIBLE_PREFIX_CHARS).collect();
                tracing::warn!(
                    admin_api_key_prefix = %prefix,
                    "no admin credential exists: generated an admin API key, printed once on stderr; set ADMIN_API_KEY to choose one instead"
                );
            }
            Ok(None) => {}
            Err(e) => return Err(StartupError::Bootstrap(e.to_string())),
        }
    }
    Ok(Runtime {
        state: AppState::new(platform, jwt, config.system_metrics_interval)
            .with_cors_origins(config.cors_allowed_origins.clone())
            .with_trusted_proxies(config.trusted_proxies.clone())
            .with_metrics_token(
                config
                    .metrics_token
                    .as_ref()
                    .map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned()),
            )
            .with_ws_limits(websocket_limits(config, websocket_budget)),
        postgres,
        redis,
    })
}

/// The WebSocket caps: the total as configured, lowered to fit what the open-file limit
/// leaves for WebSockets; per credential as configured, else a quarter of the total (at most
/// 1,000), so one credential never holds them all.
fn websocket_limits(config: &Config, budget: usize) -> WsLimits {
    if config.ws_max_connections > budget {
        tracing::warn!(
            configured = config.ws_max_connections,
            allowed = budget,
            "WS_MAX_CONNECTIONS does not fit the open-file limit; lowered (raise the hard limit to allow more)"
        );
    }
    let total = config.ws_max_connections.min(budget);
    WsLimits {
        total,
        per_credential: config
            .ws_max_connections_per_credential
            .unwrap_or_else(|| (total / 4).clamp(1, 1_000)),
    }
}

/// The platform's adapters around one store: the bus (Redis, named after the store unless
/// configured, or in process) and the rate limiter.
async fn wire<S: Store + 'static>(
    store: Arc<S>,
    config: &Config,
) -> Result<(Dependencies, Option<RedisBus>), StartupError> {
    let redis = connect_redis(config, store.clone()).await?;
    let bus: Arc<dyn EventBus> = match &redis {
        Some(bus) => Arc::new(bus.clone()),
        None => Arc::new(MemoryBus::new()),
    };
    let mut deps = Dependencies::on_store(store, bus, Arc::new(SystemClock), Arc::new(RandomIds));
    if let Some(bus) = &redis {
        // Every replica draws on the same buckets; this process's own decide while Redis is away.
        deps.limiter = Arc::new(RedisRateLimiter::new(bus, deps.limiter.clone()));
    }
    Ok((deps, redis))
}

async fn connect_postgres(config: &Config) -> Result<Option<PgStore>, StartupError> {
    let Some(url) = &config.database_url else {
        return Ok(None);
    };
    let settings = PoolSettings {
        max_connections: config.database_max_connections,
        ..PoolSettings::default()
    };
    let store = PgStore::connect(url.expose_secret(), &settings).await?;
    match config.migrations {
        Migrations::Run | Migrations::Only => {
            store.migrate().await?;
            tracing::info!("connected to PostgreSQL; migrations applied");
        }
        Migrations::Skip => {
            store.check_schema().await?;
            tracing::info!("connected to PostgreSQL; its schema is this version's");
        }
    }
    Ok(Some(store))
}

/// `MIGRATIONS=only`: applies the migrations the database lacks, and nothing else.
pub async fn migrate_only(config: &Config) -> Result<(), StartupError> {
    let store = connect_postgres(config).await?;
    if let Some(store) = store {
        let schema = store.schema().await?;
        tracing::info!(schema = schema.database, "migrations applied; exiting");
        store.close().await;
    }
    Ok(())
}

async fn connect_redis(
    config: &Config,
    log: Arc<dyn EventLog>,
) -> Result<Option<RedisBus>, StartupError> {
    let Some(url) = &config.redis_url else {
        tracing::info!("REDIS_URL is not set: events are delivered in process only");
        return Ok(None);
    };
    let namespace = match &config.redis_namespace {
        Some(namespace) => namespace.clone(),
        // Replicas on one database share its log's identity, and so their channel; other
        // deployments on the same Redis have their own.
        None => {
            let id = log.log_id().await.map_err(|e| {
                StartupError::Store(format!("cannot read the store's identity: {e}"))
            })?;
            format!("agent_platform:{}", id.simple())
        }
    };
    let bus = RedisBus::new(url.expose_secret(), &namespace, log)?;
    match bus.status().await {
        ports::ComponentStatus::Healthy => tracing::info!(namespace, "connected to Redis"),
        _ => tracing::warn!(
            namespace,
            "Redis does not answer yet; the API keeps working and health reports redis as unhealthy until it does"
        ),
    }
    Ok(Some(bus))
}

/// Fingerprints of the settings every replica of a deployment must share (`app::fingerprint`),
/// by variable name: with another value on one replica, tokens, limits, retention or conflict
/// rules would depend on which replica a request reaches.
fn shared_settings(config: &Config) -> std::collections::BTreeMap<String, String> {
    use secrecy::ExposeSecret;
    let values = [
        (
            "JWT_SECRET",
            config
                .jwt_secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default(),
        ),
        ("JWT_ISSUER", config.jwt_issuer.clone().unwrap_or_default()),
        (
            "JWT_AUDIENCE",
            config.jwt_audience.clone().unwrap_or_default(),
        ),
        (
            "JWT_MAX_LIFETIME_SECS",
            config.jwt_max_lifetime.as_secs().to_string(),
        ),
        (
            "AGENT_OFFLINE_AFTER_SECS",
            config.agent_offline_after.as_secs().to_string(),
        ),
        (
            "EVENT_RETENTION_DAYS",
            config.event_retention_days.to_string(),
        ),
        (
            "EVENT_RETENTION_MAX",
            config.event_retention_max.to_string(),
        ),
        (
            "TASK_RETENTION_DAYS",
            config.task_retention_days.to_string(),
        ),
        (
            "CONFLICT_AUTO_RESOLVE_REPORTED",
            config.conflict_auto_resolve_reported.to_string(),
        ),
        (
            "RATE_LIMIT_PER_SECOND",
            config.rate_limit_per_second.to_string(),
        ),
        ("RATE_LIMIT_BURST", config.rate_limit_burst.to_string()),
        (
            "RATE_LIMIT_ANONYMOUS_PER_SECOND",
            config.anonymous_rate_limit_per_second.to_string(),
        ),
        (
            "LOGIN_RATE_LIMIT_PER_MINUTE",
            config.login_rate_limit_per_minute.to_string(),
        ),
    ];
    // One name per conflict type, so a version that adds a type compares the others alike.
    let strategies = domain::ConflictType::ALL.iter().map(|kind| {
        let strategy = config.conflict_strategies.get(kind);
        (
            format!("CONFLICT_STRATEGIES.{}", kind.as_str()),
            strategy.map_or("", |s| s.as_str()).to_owned(),
        )
    });
    values
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .chain(strategies)
        .map(|(name, value)| {
            let print = app::fingerprint(&name, &value);
            (name, print)
        })
        .collect()
}
