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
#[utoipa::path(
    post,
    path = "/api/v1/conflicts",
    tag = "conflicts",
    request_body = ReportConflict,
    responses((status = 200, description = "The conflict, open.", body = ConflictBody))
)]
pub(crate) async fn report(
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

/// Conflicts, newest first; an agent sees those it is part of.
#[utoipa::path(
    get,
    path = "/api/v1/conflicts",
    tag = "conflicts",
    params(ListConflicts),
    responses((status = 200, description = "A page of conflicts.", body = Vec<ConflictBody>, headers(("Link" = String, description = "`<...>; rel=\"next\"` when there are more rows."))))
)]
pub(crate) async fn list(
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

/// One conflict.
#[utoipa::path(
    get,
    path = "/api/v1/conflicts/{conflict_id}",
    tag = "conflicts",
    params(("conflict_id" = Uuid, Path, description = "The conflict's ID.")),
    responses((status = 200, description = "The conflict.", body = ConflictBody))
)]
pub(crate) async fn get(
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

/// Resolves an open conflict with a strategy.
#[utoipa::path(
    post,
    path = "/api/v1/conflicts/{conflict_id}/resolve",
    tag = "conflicts",
    params(("conflict_id" = Uuid, Path, description = "The conflict's ID.")),
    request_body = ResolveConflict,
    responses((status = 200, description = "The conflict, resolved.", body = ConflictBody), (status = 409, description = "The conflict is no longer open.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn resolve(
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

/// Dismisses an open conflict.
#[utoipa::path(
    post,
    path = "/api/v1/conflicts/{conflict_id}/dismiss",
    tag = "conflicts",
    params(("conflict_id" = Uuid, Path, description = "The conflict's ID.")),
    request_body = DismissConflict,
    responses((status = 200, description = "The conflict, dismissed.", body = ConflictBody), (status = 409, description = "The conflict is no longer open.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn dismiss(
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
