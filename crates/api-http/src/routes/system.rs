//! Service endpoints: the root document, health, the orchestrator probes and the Prometheus
//! metrics. No credentials (but `/metrics` may ask for its own token).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use subtle::ConstantTimeEq;

use super::endpoint;
use crate::dto::system::{Components, HealthBody, HealthMetrics, ProbeBody, RootBody};
use crate::error::{ApiError, ErrorKind};
use crate::{AppState, Phase};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/", "GET", |r| r.route(web::get().to(root))))
        .service(endpoint("/livez", "GET", |r| r.route(web::get().to(livez))))
        .service(endpoint("/readyz", "GET", |r| {
            r.route(web::get().to(readyz))
        }))
        .service(endpoint("/metrics", "GET", |r| {
            r.route(web::get().to(metrics))
        }));
}

/// Prometheus's text format: the platform-wide gauges from the store (left out when it cannot
/// be read) and everything this replica counts. With a metrics token configured, `401` without it.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses((status = 200, description = "The series.", body = String, content_type = "text/plain")),
    security((), ("metrics_token" = []))
)]
pub(crate) async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(expected) = &state.metrics_token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ApiError::unauthorized(
                "metrics need the configured token as a Bearer token",
            ));
        }
    }
    // A store that is away must not hide what this replica counts: the gauges are left out.
    let gauges = state.platform.gauges().await.ok();
    let text = state
        .platform
        .metrics()
        .render(gauges.as_ref(), state.connections.open());
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// Where to start.
#[utoipa::path(
    get,
    path = "/",
    tag = "system",
    responses((status = 200, description = "Links to the docs and health.", body = RootBody)),
    security(())
)]
pub(crate) async fn root() -> HttpResponse {
    HttpResponse::Ok().json(RootBody {
        message: "Multi-Agent Platform API Server",
        version: env!("CARGO_PKG_VERSION"),
        docs: "/docs",
        health: "/api/v1/health",
    })
}

/// The seed's health document; `503` when the database is unreachable.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "system",
    responses((status = 200, description = "Healthy or degraded.", body = HealthBody), (status = 503, description = "The database is unreachable.", body = HealthBody)),
    security(())
)]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let report = state.platform.health().await;
    let body = HealthBody {
        status: if report.is_healthy() {
            "healthy"
        } else {
            "degraded"
        },
        components: Components {
            platform: report.platform.as_str(),
            database: report.database.as_str(),
            redis: report.redis.as_str(),
        },
        metrics: HealthMetrics {
            active_agents: report.active_agents,
            active_tasks: report.active_tasks,
            active_connections: state.connections.open(),
        },
        timestamp: report.timestamp,
    };
    if report.database.is_up() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The process is alive and serving HTTP.
#[utoipa::path(
    get,
    path = "/livez",
    tag = "system",
    responses((status = 200, description = "`{\"status\": \"ok\"}`.", body = ProbeBody)),
    security(())
)]
pub(crate) async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(ProbeBody { status: "ok" })
}

/// The replica takes traffic: it has started, is not draining, and its database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "system",
    responses((status = 200, description = "`{\"status\": \"ready\"}`.", body = ProbeBody)),
    security(())
)]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.readiness.phase() {
        Phase::Ready => {}
        Phase::Starting => return Err(ApiError::new(ErrorKind::Unavailable, "starting")),
        Phase::Draining => {
            return Err(ApiError::new(
                ErrorKind::Unavailable,
                "shutting down: finishing the requests in flight",
            ))
        }
    }
    if state.platform.store_status().await.is_up() {
        Ok(HttpResponse::Ok().json(ProbeBody { status: "ready" }))
    } else {
        Err(ApiError::new(
            ErrorKind::Unavailable,
            "the database is unreachable",
        ))
    }
}
