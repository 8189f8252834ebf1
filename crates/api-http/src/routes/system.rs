//! Service endpoints: the root document, health and the orchestrator probes. No credentials.

use actix_web::{web, HttpResponse};

use super::endpoint;
use crate::dto::system::{Components, HealthBody, HealthMetrics, ProbeBody, RootBody};
use crate::error::{ApiError, ErrorKind};
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/", "GET", |r| r.route(web::get().to(root))))
        .service(endpoint("/livez", "GET", |r| r.route(web::get().to(livez))))
        .service(endpoint("/readyz", "GET", |r| {
            r.route(web::get().to(readyz))
        }));
}

async fn root() -> HttpResponse {
    HttpResponse::Ok().json(RootBody {
        message: "Multi-Agent Platform API Server",
        version: env!("CARGO_PKG_VERSION"),
        docs: "/docs",
        health: "/api/v1/health",
    })
}

/// The seed's health document; `503` when the database is unreachable.
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
async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(ProbeBody { status: "ok" })
}

/// The replica can serve traffic: its database answers.
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.platform.store_status().await.is_up() {
        Ok(HttpResponse::Ok().json(ProbeBody { status: "ready" }))
    } else {
        Err(ApiError::new(
            ErrorKind::Unavailable,
            "the database is unreachable",
        ))
    }
}
