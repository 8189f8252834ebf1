//! `/api/v1/conflicts`: reports, the platform's detections, resolution and dismissal.

use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use domain::ConflictId;
use uuid::Uuid;

use crate::auth::{AgentOrOperator, AgentOrViewer, Auth, Operator};
use crate::dto::conflicts::{
    ConflictBody, DismissConflict, ListConflicts, ReportConflict, ResolveConflict,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::middleware::{deadline, method_not_allowed};
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/conflicts")
            .route(web::get().to(list))
            .route(web::post().to(report))
            .default_service(method_not_allowed("GET, POST"))
            .wrap(from_fn(deadline)),
    )
    .service(
        web::resource("/conflicts/{conflict_id}")
            .route(web::get().to(get))
            .default_service(method_not_allowed("GET"))
            .wrap(from_fn(deadline)),
    )
    .service(
        web::resource("/conflicts/{conflict_id}/resolve")
            .route(web::post().to(resolve))
            .default_service(method_not_allowed("POST"))
            .wrap(from_fn(deadline)),
    )
    .service(
        web::resource("/conflicts/{conflict_id}/dismiss")
            .route(web::post().to(dismiss))
            .default_service(method_not_allowed("POST"))
            .wrap(from_fn(deadline)),
    );
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
    let body: Vec<ConflictBody> = page.conflicts.into_iter().map(ConflictBody::from).collect();
    Ok(crate::pagination::page(&req, page.next, body))
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
