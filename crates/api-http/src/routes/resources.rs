//! `/api/v1/resources`: shared pools, their changes and their live allocations.

use actix_web::{web, HttpRequest, HttpResponse};
use domain::ResourceId;
use uuid::Uuid;

use super::endpoint;
use crate::auth::{Auth, Operator, Viewer};
use crate::dto::agents::MessageBody;
use crate::dto::resources::{
    AllocationBody, ListResources, RegisterResource, ResourceBody, UpdateResource,
};
use crate::dto::NoFields;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/resources", "GET, POST", |r| {
        r.route(web::get().to(list)).route(web::post().to(register))
    }))
    .service(endpoint(
        "/resources/{resource_id}",
        "GET, PATCH, DELETE",
        |r| {
            r.route(web::get().to(get))
                .route(web::patch().to(update))
                .route(web::delete().to(delete))
        },
    ))
    .service(endpoint(
        "/resources/{resource_id}/allocations",
        "GET",
        |r| r.route(web::get().to(allocations)),
    ));
}

/// Registers a resource pool.
#[utoipa::path(
    post,
    path = "/api/v1/resources",
    tag = "resources",
    request_body = RegisterResource,
    responses((status = 200, description = "The pool.", body = ResourceBody), (status = 409, description = "The name is taken.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn register(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    body: ApiJson<RegisterResource>,
) -> Result<HttpResponse, ApiError> {
    let new = body.0.into_domain()?;
    let view = state
        .platform
        .register_resource(&auth.principal, new)
        .await?;
    Ok(HttpResponse::Ok().json(ResourceBody::from(view)))
}

/// Pools, newest first, with what is allocated of each.
#[utoipa::path(
    get,
    path = "/api/v1/resources",
    tag = "resources",
    params(ListResources),
    responses((status = 200, description = "A page of pools.", body = Vec<ResourceBody>, headers(("Link" = String, description = "`<...>; rel=\"next\"` when there are more rows."))))
)]
pub(crate) async fn list(
    state: web::Data<AppState>,
    auth: Auth<Viewer>,
    req: HttpRequest,
    params: ApiQuery<ListResources>,
) -> Result<HttpResponse, ApiError> {
    let (filter, limit) = params.into_inner().into_filter()?;
    let page = state
        .platform
        .list_resources(&auth.principal, filter, limit)
        .await?;
    Ok(crate::pagination::page(&req, page.map(ResourceBody::from)))
}

/// One pool.
#[utoipa::path(
    get,
    path = "/api/v1/resources/{resource_id}",
    tag = "resources",
    params(("resource_id" = Uuid, Path, description = "The pool's ID or name.")),
    responses((status = 200, description = "The pool.", body = ResourceBody))
)]
pub(crate) async fn get(
    state: web::Data<AppState>,
    auth: Auth<Viewer>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .platform
        .get_resource(&auth.principal, ResourceId(id.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(ResourceBody::from(view)))
}

/// Changes a pool's capacity, metadata or maintenance status.
#[utoipa::path(
    patch,
    path = "/api/v1/resources/{resource_id}",
    tag = "resources",
    params(("resource_id" = Uuid, Path, description = "The pool's ID or name.")),
    request_body = UpdateResource,
    responses((status = 200, description = "The pool as changed.", body = ResourceBody), (status = 409, description = "The new capacity is below what is allocated.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn update(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    body: ApiJson<UpdateResource>,
) -> Result<HttpResponse, ApiError> {
    let patch = body.0.into_domain()?;
    let view = state
        .platform
        .update_resource(&auth.principal, ResourceId(id.into_inner()), patch)
        .await?;
    Ok(HttpResponse::Ok().json(ResourceBody::from(view)))
}

/// Deletes a pool nothing is allocated from.
#[utoipa::path(
    delete,
    path = "/api/v1/resources/{resource_id}",
    tag = "resources",
    params(("resource_id" = Uuid, Path, description = "The pool's ID or name.")),
    responses((status = 200, description = "Deleted.", body = crate::dto::agents::MessageBody), (status = 409, description = "Something is allocated from the pool.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    _body: ApiJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    state
        .platform
        .delete_resource(&auth.principal, ResourceId(id.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(MessageBody {
        message: "Resource deleted successfully",
    }))
}

/// What each holding task has of the pool.
#[utoipa::path(
    get,
    path = "/api/v1/resources/{resource_id}/allocations",
    tag = "resources",
    params(("resource_id" = Uuid, Path, description = "The pool's ID or name.")),
    responses((status = 200, description = "The allocations.", body = Vec<AllocationBody>))
)]
pub(crate) async fn allocations(
    state: web::Data<AppState>,
    auth: Auth<Viewer>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let list = state
        .platform
        .resource_allocations(&auth.principal, ResourceId(id.into_inner()))
        .await?;
    let body: Vec<AllocationBody> = list.into_iter().map(AllocationBody::from).collect();
    Ok(HttpResponse::Ok().json(body))
}
