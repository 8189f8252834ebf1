//! The HTTP face of the platform: actix-web routes, wire DTOs, authentication and the
//! `application/problem+json` error envelope.
//!
//! Handlers are thin: extract, convert the DTO into domain types, call one `app` method,
//! convert the result back. Nothing here decides anything about agents or tasks.

pub mod auth;
mod dto;
pub mod error;
pub mod extract;
mod middleware;
mod pagination;
mod proxies;
mod routes;
pub mod ws;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{web, App};
use app::Platform;

pub use auth::JwtKeys;
pub use error::ApiError;
pub use extract::BodyLimit;
pub use middleware::REQUEST_DEADLINE;
pub use proxies::TrustedProxies;

/// The API's OpenAPI 3.1 description, as `GET /openapi.json` serves it.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    routes::openapi_description()
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub platform: Platform,
    /// `None` when no `JWT_SECRET` is configured: JWTs are then refused.
    pub jwt: Option<JwtKeys>,
    /// Open WebSocket connections on this replica, and their caps.
    pub connections: Arc<ws::Connections>,
    /// This replica's fan-out of events to WebSocket sessions.
    pub hub: ws::Hub,
    /// Browser origins allowed to call the API cross-origin; empty allows none.
    pub cors_origins: Vec<String>,
    /// Longest any request may take ([`REQUEST_DEADLINE`] unless changed).
    pub request_deadline: std::time::Duration,
    /// Whether this replica takes traffic: what `/readyz` says besides its database.
    pub readiness: Arc<Readiness>,
    /// The bearer token `/metrics` asks for; `None` leaves it open.
    pub metrics_token: Option<Arc<str>>,
    /// Peers whose `X-Forwarded-For` names the client (see [`TrustedProxies`]).
    pub trusted_proxies: Arc<TrustedProxies>,
}

/// Where a replica is in its life, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not yet serving: `/readyz` is `503`.
    Starting,
    /// Serving: `/readyz` is `200` while the database answers.
    Ready,
    /// Shutting down, finishing what it has: `/readyz` is `503`, so load balancers send new
    /// requests elsewhere.
    Draining,
}

/// The replica's [`Phase`], shared by every worker.
#[derive(Debug)]
pub struct Readiness(std::sync::atomic::AtomicU8);

impl Readiness {
    pub fn new(phase: Phase) -> Self {
        Self(std::sync::atomic::AtomicU8::new(phase as u8))
    }

    pub fn set(&self, phase: Phase) {
        self.0
            .store(phase as u8, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn phase(&self) -> Phase {
        match self.0.load(std::sync::atomic::Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }
}

impl AppState {
    /// The state, with the WebSocket hub started on the current tokio runtime; it sends
    /// `system_metrics` every `metrics_every`.
    pub fn new(
        platform: Platform,
        jwt: Option<JwtKeys>,
        metrics_every: std::time::Duration,
    ) -> Self {
        Self::with_catch_up(platform, jwt, metrics_every, ws::CATCH_UP_EVERY)
    }

    /// [`new`](Self::new), the hub comparing what it delivered with the log every
    /// `catch_up_every` instead of [`ws::CATCH_UP_EVERY`].
    pub fn with_catch_up(
        platform: Platform,
        jwt: Option<JwtKeys>,
        metrics_every: std::time::Duration,
        catch_up_every: std::time::Duration,
    ) -> Self {
        let connections = Arc::new(ws::Connections::new(ws::WsLimits::default()));
        let hub = ws::Hub::start(
            platform.clone(),
            connections.clone(),
            metrics_every,
            catch_up_every,
        );
        Self {
            platform,
            jwt,
            connections,
            hub,
            cors_origins: Vec::new(),
            request_deadline: REQUEST_DEADLINE,
            readiness: Arc::new(Readiness::new(Phase::Ready)),
            metrics_token: None,
            trusted_proxies: Arc::default(),
        }
    }

    /// Takes requests from `proxies` to come from the address their `X-Forwarded-For` names.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = Arc::new(proxies);
        self
    }

    /// Puts `/metrics` behind `Authorization: Bearer <token>`.
    pub fn with_metrics_token(mut self, token: Option<String>) -> Self {
        self.metrics_token = token.map(Arc::from);
        self
    }

    /// Caps the WebSocket connections open at once on this replica.
    pub fn with_ws_limits(self, limits: ws::WsLimits) -> Self {
        self.connections.set_limits(limits);
        self
    }

    /// Changes how long a request may take before it is answered `503`.
    pub fn with_request_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.request_deadline = deadline;
        self
    }

    /// Allows these browser origins cross-origin requests (exact matches, like
    /// `https://console.example.com`).
    pub fn with_cors_origins(mut self, origins: Vec<String>) -> Self {
        self.cors_origins = origins;
        self
    }
}

/// The whole application: routes, extractor configuration and middleware.
pub fn app(
    state: AppState,
    body_limit: BodyLimit,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(state))
        .app_data(body_limit)
        .app_data(web::PathConfig::default().error_handler(extract::path_error))
        .configure(routes::configure)
        .default_service(web::to(middleware::not_found))
        .wrap(actix_web::middleware::from_fn(middleware::rate_limit))
        .wrap(actix_web::middleware::from_fn(middleware::head_limit))
        .wrap(middleware::security_headers())
        .wrap(actix_web::middleware::from_fn(middleware::request_context))
        .wrap(actix_web::middleware::from_fn(middleware::cors))
}
