//! Configuration, read once at start-up into a typed struct.
//!
//! Sources, later ones winning: built-in defaults, the optional file named by `CONFIG_FILE`
//! (`KEY=VALUE` lines, as in a `.env` file), then the process environment. Secrets are held in
//! [`SecretString`], which never prints its contents.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use domain::{ConflictType, Strategy};
use secrecy::SecretString;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("cannot read CONFIG_FILE {path}: {message}")]
    File { path: String, message: String },
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// What the server does with the database's migrations at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Applies those the database lacks, then serves (the default).
    Run,
    /// Checks the schema is exactly this version's, and refuses to start otherwise: for
    /// replicas whose migrations a job of their own applies.
    Skip,
    /// Applies them and exits: the migration job.
    Only,
}

/// Everything the server reads from its environment.
#[derive(Debug)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// PostgreSQL; `None` runs on the embedded in-process store.
    pub database_url: Option<SecretString>,
    pub database_max_connections: u32,
    pub migrations: Migrations,
    /// Redis; `None` runs on the in-process event bus.
    pub redis_url: Option<SecretString>,
    /// What this deployment's keys and channel on Redis are named under; `None` derives one
    /// from the store's identity, so deployments sharing a Redis never meet.
    pub redis_namespace: Option<String>,
    pub jwt_secret: Option<SecretString>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// The longest lifetime a JWT may claim (`exp` from now, or from its `iat`).
    pub jwt_max_lifetime: Duration,
    pub admin_api_key: Option<SecretString>,
    /// The bearer token `/metrics` asks for; unset leaves it open.
    pub metrics_token: Option<SecretString>,
    /// A `tracing` filter: a level (`info`) or directives (`info,sqlx=warn`).
    pub log_level: String,
    pub log_format: LogFormat,
    pub agent_offline_after: Duration,
    /// Worker threads serving HTTP; `None` is one per core.
    pub workers: Option<usize>,
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// How long after SIGTERM/SIGINT the server keeps accepting requests while `/readyz`
    /// answers `503`, so load balancers stop sending it traffic before it closes its listener.
    pub shutdown_drain: Duration,
    /// How often WebSocket subscribers of `system_metrics` get the counters.
    pub system_metrics_interval: Duration,
    /// Events older than this many days are deleted from the log.
    pub event_retention_days: u64,
    /// At most this many of the newest events are kept.
    pub event_retention_max: u64,
    /// Tasks that ended more than this many days ago are deleted.
    pub task_retention_days: u64,
    /// The strategy that settles detected conflicts of each type on its own.
    pub conflict_strategies: BTreeMap<ConflictType, Strategy>,
    /// Whether reported conflicts are settled by those strategies too.
    pub conflict_auto_resolve_reported: bool,
    /// Requests per second per credential; 0 is no limit.
    pub rate_limit_per_second: u64,
    /// How many requests a credential may make at once before the rate applies.
    pub rate_limit_burst: u64,
    /// Requests per second per address from callers without valid credentials (twice this at
    /// once); 0 is no limit.
    pub anonymous_rate_limit_per_second: u64,
    /// Sign-in attempts per minute per address and per username; 0 is no limit.
    pub login_rate_limit_per_minute: u64,
    /// Password hashes computed at once (about 19 MiB each while they run).
    pub password_hash_concurrency: usize,
    /// Browser origins allowed cross-origin (`CORS_ALLOWED_ORIGINS`, comma-separated).
    pub cors_allowed_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` names the client (`TRUSTED_PROXIES`, addresses and
    /// networks separated by commas); none by default.
    pub trusted_proxies: api_http::TrustedProxies,
    /// WebSocket connections open at once on this replica (lowered to fit the open-file
    /// limit).
    pub ws_max_connections: usize,
    /// WebSocket connections open at once for one credential; `None` is a quarter of the total
    /// (at most 1,000), so no one credential can hold every connection.
    pub ws_max_connections_per_credential: Option<usize>,
}

/// Half the cores, at least one: sign-in floods never take every core from other requests.
fn default_hash_concurrency() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores as u64 / 2).max(1)
}

/// `CORS_ALLOWED_ORIGINS`: `scheme://host[:port]` origins separated by commas. `*` is refused:
/// credentials are sent in headers, and an API that trusts every origin trusts every page.
fn cors_origins(text: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let mut origins = Vec::new();
    for origin in text
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
            && !origin.ends_with('/')
            && origin
                .split("://")
                .nth(1)
                .is_some_and(|h| !h.is_empty() && !h.contains('/'));
        if !valid {
            return Err(ConfigError::Invalid {
                name: "CORS_ALLOWED_ORIGINS",
                message: format!(
                    "expected origins like https://console.example.com, got {origin:?}"
                ),
            });
        }
        origins.push(origin.to_owned());
    }
    Ok(origins)
}

/// `CONFLICT_STRATEGIES`: `type=strategy` pairs separated by commas, over the defaults;
/// `type=none` leaves that type to operators.
fn conflict_strategies(text: Option<&str>) -> Result<BTreeMap<ConflictType, Strategy>, String> {
    let mut strategies = app::default_conflict_strategies();
    for pair in text
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (kind, strategy) = pair
            .split_once('=')
            .ok_or_else(|| format!("expected type=strategy pairs, got {pair:?}"))?;
        let kind: ConflictType = kind.trim().parse()?;
        match strategy.trim() {
            "none" => {
                strategies.remove(&kind);
            }
            s => {
                strategies.insert(kind, s.parse()?);
            }
        }
    }
    Ok(strategies)
}

impl Config {
    /// Reads `CONFIG_FILE` (if set) and the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let mut merged = HashMap::new();
        if let Some(path) = env.get("CONFIG_FILE").filter(|p| !p.is_empty()) {
            let entries = dotenvy::from_path_iter(path).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for entry in entries {
                let (key, value) = entry.map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                merged.insert(key, value);
            }
        }
        merged.extend(env);
        Self::from_map(&merged)
    }

    /// Builds the configuration from a set of variables.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::reading(vars, &std::cell::RefCell::default())
    }

    /// The names of every setting the configuration reads: `CONFIG_FILE` and those
    /// [`Config::from_map`] reads (each whatever its value, so all of them from no value).
    #[cfg(test)]
    fn names() -> std::collections::BTreeSet<String> {
        let asked = std::cell::RefCell::default();
        // With no value set every setting takes its default, and every one is read.
        let _ = Self::reading(&HashMap::new(), &asked);
        let mut names = asked.into_inner();
        names.insert("CONFIG_FILE".to_owned());
        names
    }

    /// [`Config::from_map`], noting in `asked` the name of every setting it reads.
    fn reading(
        vars: &HashMap<String, String>,
        asked: &std::cell::RefCell<std::collections::BTreeSet<String>>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            asked.borrow_mut().insert(name.to_owned());
            vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
        };
        let secret = |name: &str| get(name).map(|v| SecretString::from(v.to_owned()));
        let number =
            |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match get(name) {
                    None => Ok(default),
                    Some(v) => v
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (min..=max).contains(n))
                        .ok_or_else(|| ConfigError::Invalid {
                            name,
                            message: format!(
                                "must be a whole number between {min} and {max}, got {v:?}"
                            ),
                        }),
                }
            };

        let host = match get("HOST") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
                name: "HOST",
                message: format!("must be an IP address, got {v:?}"),
            })?,
        };
        let log_format = match get("LOG_FORMAT").map(str::to_ascii_lowercase).as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "LOG_FORMAT",
                    message: format!("must be json or pretty, got {other:?}"),
                })
            }
        };
        let jwt_secret = secret("JWT_SECRET");
        if let Some(s) = &jwt_secret {
            use secrecy::ExposeSecret;
            if s.expose_secret().len() < 32 {
                return Err(ConfigError::Invalid {
                    name: "JWT_SECRET",
                    message: "must be at least 32 characters".into(),
                });
            }
        }
        if get("ADMIN_API_KEY").is_some_and(|k| k.split('.').count() == 3 || k.len() < 16) {
            return Err(ConfigError::Invalid {
                name: "ADMIN_API_KEY",
                message: "must be at least 16 characters and must not look like a JWT (two dots)"
                    .into(),
            });
        }
        if get("METRICS_TOKEN")
            .is_some_and(|t| t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::Invalid {
                name: "METRICS_TOKEN",
                message: "must be at least 16 printable characters without spaces".into(),
            });
        }
        let log_level = get("LOG_LEVEL").unwrap_or("info").to_ascii_lowercase();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(ConfigError::Invalid {
                name: "LOG_LEVEL",
                message: format!(
                    "must be a level (error, warn, info, debug, trace) or filter directives: {e}"
                ),
            });
        }
        let redis_namespace = get("REDIS_NAMESPACE").map(str::to_owned);
        if redis_namespace.as_deref().is_some_and(|n| {
            n.len() > 64
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        }) {
            return Err(ConfigError::Invalid {
                name: "REDIS_NAMESPACE",
                message: "must be 1 to 64 letters, digits, '_', '-', '.' or ':'".into(),
            });
        }
        let migrations = match get("MIGRATIONS").map(str::to_ascii_lowercase).as_deref() {
            None | Some("run") => Migrations::Run,
            Some("skip") => Migrations::Skip,
            Some("only") => Migrations::Only,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "MIGRATIONS",
                    message: format!("must be run, skip or only, got {other:?}"),
                })
            }
        };
        if migrations == Migrations::Only && get("DATABASE_URL").is_none() {
            return Err(ConfigError::Invalid {
                name: "MIGRATIONS",
                message: "only migrates a database: set DATABASE_URL".into(),
            });
        }
        let workers = match number("WORKERS", 0, 0, 1024)? {
            0 => None,
            n => Some(n as usize),
        };
        Ok(Self {
            host,
            port: number("PORT", 8000, 0, 65535)? as u16,
            database_url: secret("DATABASE_URL"),
            database_max_connections: number("DATABASE_MAX_CONNECTIONS", 16, 1, 1000)? as u32,
            migrations,
            redis_url: secret("REDIS_URL"),
            redis_namespace,
            jwt_secret,
            jwt_issuer: get("JWT_ISSUER").map(str::to_owned),
            jwt_audience: get("JWT_AUDIENCE").map(str::to_owned),
            jwt_max_lifetime: Duration::from_secs(number(
                "JWT_MAX_LIFETIME_SECS",
                86_400,
                60,
                31_536_000,
            )?),
            admin_api_key: secret("ADMIN_API_KEY"),
            metrics_token: secret("METRICS_TOKEN"),
            log_level,
            log_format,
            agent_offline_after: Duration::from_secs(number(
                "AGENT_OFFLINE_AFTER_SECS",
                90,
                1,
                86_400,
            )?),
            workers,
            max_body_bytes: number("MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024)? as usize,
            shutdown_timeout: Duration::from_secs(number("SHUTDOWN_TIMEOUT_SECS", 30, 0, 3600)?),
            shutdown_drain: Duration::from_secs(number("SHUTDOWN_DRAIN_SECS", 0, 0, 300)?),
            system_metrics_interval: Duration::from_secs(number(
                "SYSTEM_METRICS_INTERVAL_SECS",
                5,
                1,
                3600,
            )?),
            event_retention_days: number("EVENT_RETENTION_DAYS", 7, 1, 3650)?,
            event_retention_max: number("EVENT_RETENTION_MAX", 1_000_000, 1000, 1_000_000_000)?,
            task_retention_days: number("TASK_RETENTION_DAYS", 30, 1, 36_500)?,
            conflict_strategies: conflict_strategies(get("CONFLICT_STRATEGIES")).map_err(
                |message| ConfigError::Invalid {
                    name: "CONFLICT_STRATEGIES",
                    message,
                },
            )?,
            cors_allowed_origins: cors_origins(get("CORS_ALLOWED_ORIGINS"))?,
            trusted_proxies: api_http::TrustedProxies::parse(get("TRUSTED_PROXIES").unwrap_or(""))
                .map_err(|message| ConfigError::Invalid {
                    name: "TRUSTED_PROXIES",
                    message,
                })?,
            ws_max_connections: number("WS_MAX_CONNECTIONS", 10_000, 1, 1_000_000)? as usize,
            ws_max_connections_per_credential: match number(
                "WS_MAX_CONNECTIONS_PER_CREDENTIAL",
                0,
                0,
                1_000_000,
            )? {
                0 => None,
                n => Some(n as usize),
            },
            rate_limit_per_second: number("RATE_LIMIT_PER_SECOND", 1000, 0, 1_000_000)?,
            rate_limit_burst: number("RATE_LIMIT_BURST", 2000, 1, 1_000_000)?,
            anonymous_rate_limit_per_second: number(
                "RATE_LIMIT_ANONYMOUS_PER_SECOND",
                20,
                0,
                1_000_000,
            )?,
            login_rate_limit_per_minute: number("LOGIN_RATE_LIMIT_PER_MINUTE", 10, 0, 10_000)?,
            password_hash_concurrency: number(
                "PASSWORD_HASH_CONCURRENCY",
                default_hash_concurrency(),
                1,
                256,
            )? as usize,
            conflict_auto_resolve_reported: match get("CONFLICT_AUTO_RESOLVE_REPORTED")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "CONFLICT_AUTO_RESOLVE_REPORTED",
                        message: format!("must be true or false, got {other:?}"),
                    })
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn the_readme_documents_exactly_the_settings_read() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        // The names in the README's configuration table (its "Configuration" section).
        let documented: std::collections::BTreeSet<String> = readme
            .lines()
            .skip_while(|line| *line != "## Configuration")
            .skip(1)
            .take_while(|line| !line.starts_with("## "))
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split('`').next())
            .filter(|name| {
                name.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .map(str::to_owned)
            .collect();
        assert_eq!(documented, Config::names());
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn conflict_strategies_override_the_defaults() {
        let config = Config::from_map(&vars(&[(
            "CONFLICT_STRATEGIES",
            "deadline_missed=retry_with_backoff, lease_expired=none",
        )]))
        .unwrap();
        assert_eq!(
            config
                .conflict_strategies
                .get(&ConflictType::DeadlineMissed),
            Some(&Strategy::RetryWithBackoff)
        );
        assert_eq!(
            config
                .conflict_strategies
                .get(&ConflictType::ResourceContention),
            Some(&Strategy::PriorityBased),
            "defaults stay unless overridden"
        );
        assert!(!config
            .conflict_strategies
            .contains_key(&ConflictType::LeaseExpired));
        for bad in ["fight=manual", "lease_expired=shrug", "lease_expired"] {
            let err = Config::from_map(&vars(&[("CONFLICT_STRATEGIES", bad)])).unwrap_err();
            assert!(err.to_string().contains("CONFLICT_STRATEGIES"), "{err}");
        }
        let err =
            Config::from_map(&vars(&[("CONFLICT_AUTO_RESOLVE_REPORTED", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("CONFLICT_AUTO_RESOLVE_REPORTED"));
    }

    #[test]
    fn defaults_need_no_configuration() {
        let config = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!(config.host.to_string(), "0.0.0.0");
        assert_eq!(config.port, 8000);
        assert!(config.database_url.is_none());
        assert!(config.redis_url.is_none());
        assert_eq!(config.agent_offline_after, Duration::from_secs(90));
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert!(
            config.trusted_proxies.is_empty(),
            "no proxy is trusted unless named"
        );
    }

    #[test]
    fn variables_are_read_and_bad_values_name_their_variable() {
        let config = Config::from_map(&vars(&[
            ("PORT", "9001"),
            ("DATABASE_URL", "postgres://u:p@db/x"),
            ("LOG_FORMAT", "json"),
            ("AGENT_OFFLINE_AFTER_SECS", "30"),
        ]))
        .unwrap();
        assert_eq!(config.port, 9001);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(
            config.database_url.unwrap().expose_secret(),
            "postgres://u:p@db/x"
        );
        for (name, value) in [
            ("PORT", "eighty"),
            ("LOG_FORMAT", "xml"),
            ("HOST", "localhost:80"),
            ("AGENT_OFFLINE_AFTER_SECS", "0"),
            ("JWT_SECRET", "short"),
            ("LOG_LEVEL", "very=loud=please"),
            ("TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal"),
            ("ADMIN_API_KEY", "a.b.c-looks-like-a-jwt"),
            ("ADMIN_API_KEY", "short"),
        ] {
            let err = Config::from_map(&vars(&[(name, value)])).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::from_map(&vars(&[
            ("ADMIN_API_KEY", "super-secret-admin-key"),
            ("DATABASE_URL", "postgres://user:hunter2@db/x"),
            ("JWT_SECRET", "a-jwt-secret-that-is-long-enough-to-use"),
        ]))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("super-secret-admin-key"));
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("long-enough"));
    }
}
