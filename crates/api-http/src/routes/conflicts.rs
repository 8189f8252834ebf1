//! `/api/v1/conflicts`: reports, the platform's detections, resolution and dismissal.

use actix_web::{web, HttpRequest, HttpResponse};
use domain::ConflictId;
use uuid::Uuid;

use super::endpoint;
use crate::auth::{AgentOrOperator, AgentOrViewer, Auth, Operator};
use crate::dto::conflicts::{
    ConflictBody, DismissConflict, ListConflicts, ReportConflict, ResolveConflict,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/conflicts", "GET, POST", |r| {
        r.route(web::get().to(list)).route(web::post().to(report))
    }))
    .service(endpoint("/conflicts/{conflict_id}", "GET", |r| {
        r.route(web::get().to(get))
    }))
    .service(endpoint("/conflicts/{conflict_id}/resolve", "POST", |r| {
        r.route(web::post().to(resolve))
    }))
    .service(endpoint("/conflicts/{conflict_id}/dismiss", "POST", |r| {
        r.route(web::post().to(dismiss))
    }));
}

/// Operators report any conflict; an agent reports those it is part of (checked in the app).
async fn report(
    state: web::Data<AppState>,
    auth: Auth<AgentOrOperator>,
    body: ApiJson<ReportConflict>,
) -> Result<HttpResponse, ApiError> {
    let report = body.0.into_domain()?;
    let conflict = state
        .platform
        .report_conflict(&auth.principal, report)
        .await?;
    Ok(HttpResponse::Ok().json(ConflictBody::from(conflict)))
}

async fn list(
    state: web::Data<AppState>,
    auth: Auth<AgentOrViewer>,
    req: HttpRequest,
    params: ApiQuery<ListConflicts>,
) -> Result<HttpResponse, ApiError> {
    let (query, limit) = params.into_inner().into_query()?;
    let page = state
        .platform
        .list_conflicts(&auth.principal, query, limit)
        .await?;
    Ok(crate::pagination::page(&req, page.map(ConflictBody::from)))
}

async fn get(
    state: web::Data<AppState>,
    auth: Auth<AgentOrViewer>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let conflict = state
        .platform
        .get_conflict(&auth.principal, ConflictId(id.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(ConflictBody::from(conflict)))
}

async fn resolve(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    body: ApiJson<ResolveConflict>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0.into_request()?;
    let conflict = state
        .platform
        .resolve_conflict(&auth.principal, ConflictId(id.into_inner()), request)
        .await?;
    Ok(HttpResponse::Ok().json(ConflictBody::from(conflict)))
}

async fn dismiss(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    body: ApiJson<DismissConflict>,
) -> Result<HttpResponse, ApiError> {
    let conflict = state
        .platform
        .dismiss_conflict(&auth.principal, ConflictId(id.into_inner()), body.0.reason)
        .await?;
    Ok(HttpResponse::Ok().json(ConflictBody::from(conflict)))
}
