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

async fn register(
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

async fn list(
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

async fn get(
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

async fn update(
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

async fn delete(
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

async fn allocations(
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
