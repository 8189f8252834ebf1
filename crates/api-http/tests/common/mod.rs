//! Test harness: the whole application in process, on a chosen store, with a manual clock.

#![allow(dead_code)]

pub mod spec;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, StatusCode};
use actix_web::test::{self, TestRequest};
use adapters_memory::{MemoryBus, MemoryStore};
use api_http::{AppState, JwtKeys};
use app::{Platform, Settings};
use jsonwebtoken::{encode, EncodingKey, Header};
use ports::EventLog;
use secrecy::SecretString;
use serde_json::{json, Value};
use testkit::ManualClock;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const JWT_SECRET: &str = "test-jwt-secret-that-is-long-enough-0123456789";

/// Everything a test needs around the application.
pub struct Harness {
    pub state: AppState,
    pub clock: ManualClock,
    pub bus: Arc<MemoryBus>,
    /// The store's event log, read directly.
    pub log: Arc<dyn EventLog>,
}

impl Harness {
    /// The platform on the embedded store.
    pub fn memory() -> Self {
        Self::on(Arc::new(MemoryStore::new()))
    }

    /// The platform on any store.
    pub fn on<S>(store: Arc<S>) -> Self
    where
        S: ports::Store + 'static,
    {
        Self::configured(store, |_| {})
    }

    /// The platform on the embedded store, with settings changed by `change`.
    pub fn memory_with(change: impl FnOnce(&mut Settings)) -> Self {
        Self::configured(Arc::new(MemoryStore::new()), change)
    }

    /// The platform on any store, with settings changed by `change`.
    pub fn on_with<S>(store: Arc<S>, change: impl FnOnce(&mut Settings)) -> Self
    where
        S: ports::Store + 'static,
    {
        Self::configured(store, change)
    }

    /// Replica number `n` of several on one store: its IDs never meet another replica's.
    pub fn replica<S>(store: Arc<S>, n: u64) -> Self
    where
        S: ports::Store + 'static,
    {
        Self::built(store, |_| {}, testkit::SequentialIds::after(n << 40))
    }

    fn configured<S>(store: Arc<S>, change: impl FnOnce(&mut Settings)) -> Self
    where
        S: ports::Store + 'static,
    {
        Self::built(store, change, testkit::SequentialIds::default())
    }

    fn built<S>(
        store: Arc<S>,
        change: impl FnOnce(&mut Settings),
        ids: testkit::SequentialIds,
    ) -> Self
    where
        S: ports::Store + 'static,
    {
        let clock = ManualClock::default();
        let bus = Arc::new(MemoryBus::new());
        let mut settings = Settings {
            admin_key: Some(app::hash_key(ADMIN_KEY)),
            ..Settings::default()
        };
        change(&mut settings);
        let log: Arc<dyn EventLog> = store.clone();
        let platform: Platform =
            testkit::platform_with_ids(store, bus.clone(), clock.clone(), settings, ids);
        let jwt = JwtKeys::new(&SecretString::from(JWT_SECRET.to_owned()), None, None);
        Self {
            state: AppState::new(platform, Some(jwt), std::time::Duration::from_secs(1)),
            clock,
            bus,
            log,
        }
    }
}

impl Harness {
    /// The time on the manual clock.
    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        ports::Clock::now(&self.clock)
    }
}

/// Runs each named scenario `async fn name(h: Harness)` twice: on the embedded store
/// (`memory::name`) and on a fresh PostgreSQL database (`postgres::name`).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[actix_web::test]
                async fn $name() {
                    super::$name(super::Harness::memory()).await
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $name() {
                    let store = adapters_postgres::testing::fresh_store().await;
                    super::$name(super::Harness::on(std::sync::Arc::new(store))).await
                }
            )*
        }
    };
}

/// Builds the service under test.
#[macro_export]
macro_rules! service {
    ($harness:expr) => {
        actix_web::test::init_service(api_http::app(
            $harness.state.clone(),
            api_http::BodyLimit(api_http::extract::DEFAULT_MAX_BODY_BYTES),
        ))
        .await
    };
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the contract's error envelope with this status, and returns the body.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "errors use the problem envelope"
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["detail"].is_string());
        assert!(self.body["title"].is_string());
        assert!(self.body["type"].is_string());
        &self.body
    }

    /// Asserts 200 and returns the body.
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        &self.body
    }
}

pub async fn send<S, B>(app: &S, req: TestRequest) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let request = req.to_request();
    let (method, path) = (request.method().to_string(), request.path().to_owned());
    let response = test::call_service(app, request).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = test::read_body(response).await;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("response is not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    spec::check(&method, &path, status.as_u16(), content_type, &body);
    Reply {
        status,
        headers,
        body,
    }
}

/// A request with the given method and path, no credentials.
pub fn req(method: Method, path: &str) -> TestRequest {
    TestRequest::default().method(method).uri(path)
}

/// A request authenticated with the bootstrap admin key.
pub fn admin(method: Method, path: &str) -> TestRequest {
    req(method, path).insert_header(("X-API-Key", ADMIN_KEY))
}

/// A request authenticated with the given bearer token.
pub fn bearer(method: Method, path: &str, token: &str) -> TestRequest {
    req(method, path).insert_header(("Authorization", format!("Bearer {token}")))
}

/// A JWT signed with the test secret, carrying `claims` (plus `exp` an hour ahead unless given).
pub fn jwt(mut claims: Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = json!(chrono::Utc::now().timestamp() + 3600);
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// The seed's example registration.
pub fn seed_agent(name: &str) -> Value {
    json!({
        "name": name,
        "capabilities": ["data_processing", "ml_inference"],
        "resources": {"cpu": 2, "memory": "1Gi"},
        "metadata": {"version": "1.0", "team": "ai"}
    })
}

/// Registers an agent as admin; returns (id, agent_key).
pub async fn register<S, B>(app: &S, body: Value) -> (String, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let reply = send(app, admin(Method::POST, "/api/v1/agents").set_json(body)).await;
    let body = reply.ok();
    (
        body["id"].as_str().unwrap().to_owned(),
        body["agent_key"].as_str().unwrap().to_owned(),
    )
}
