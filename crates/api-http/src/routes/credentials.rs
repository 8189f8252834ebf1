//! `/api/v1/api-keys`, `/api/v1/users`, `/api/v1/auth/login` and `/api/v1/audit`: credentials,
//! sign-in and the audit trail.

use actix_web::{web, HttpRequest, HttpResponse};
use domain::{ApiKeyId, AuditAction, UserId};
use ports::Admission;
use uuid::Uuid;

use super::endpoint;
use crate::auth::{Admin, AnyRole, Auth};
use crate::dto::credentials::{
    ApiKeyBody, AuditBody, CallerBody, CreateApiKey, CreateUser, IssuedKeyBody, ListAudit, Login,
    Paging, TokenBody, UpdateUser, UserBody,
};
use crate::dto::NoFields;
use crate::error::{ApiError, ErrorKind};
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::page;
use crate::AppState;

/// Largest sign-in body accepted.
const LOGIN_BODY_BYTES: usize = 4 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/api-keys", "GET, POST", |r| {
        r.route(web::get().to(list_keys))
            .route(web::post().to(create_key))
    }))
    .service(endpoint("/api-keys/{key_id}", "DELETE", |r| {
        r.route(web::delete().to(revoke_key))
    }))
    .service(endpoint("/users", "GET, POST", |r| {
        r.route(web::get().to(list_users))
            .route(web::post().to(create_user))
    }))
    .service(endpoint("/users/{user_id}", "PATCH, DELETE", |r| {
        r.route(web::patch().to(update_user))
            .route(web::delete().to(delete_user))
    }))
    .service(endpoint("/auth/login", "POST", |r| {
        r
            // A username and a password: nothing larger is a sign-in.
            .app_data(crate::BodyLimit(LOGIN_BODY_BYTES))
            .route(web::post().to(login))
    }))
    .service(endpoint("/auth/me", "GET", |r| {
        r.route(web::get().to(whoami))
    }))
    .service(endpoint("/audit", "GET", |r| r.route(web::get().to(audit))));
}

/// Creates an API key; the key is shown once.
#[utoipa::path(
    post,
    path = "/api/v1/api-keys",
    tag = "credentials",
    request_body = CreateApiKey,
    responses((status = 200, description = "The key's record and the key itself.", body = IssuedKeyBody))
)]
pub(crate) async fn create_key(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    body: ApiJson<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    let new = body.0.into_domain(state.platform.clock().now())?;
    let issued = state.platform.create_api_key(&auth.principal, new).await?;
    Ok(HttpResponse::Ok().json(IssuedKeyBody {
        key: issued.key.into(),
        api_key: issued.secret,
    }))
}

/// API keys (never the keys themselves), newest first.
#[utoipa::path(
    get,
    path = "/api/v1/api-keys",
    tag = "credentials",
    params(Paging),
    responses((status = 200, description = "A page of keys.", body = Vec<ApiKeyBody>, headers(("Link" = String, description = "`<...>; rel=\"next\"` when there are more rows."))))
)]
pub(crate) async fn list_keys(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    req: HttpRequest,
    params: ApiQuery<Paging>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (limit, after) = crate::dto::page_params(params.limit, params.cursor)?;
    let found = state
        .platform
        .list_api_keys(&auth.principal, after, limit)
        .await?;
    Ok(page(&req, found.map(ApiKeyBody::from)))
}

/// Revokes an API key.
#[utoipa::path(
    delete,
    path = "/api/v1/api-keys/{key_id}",
    tag = "credentials",
    params(("key_id" = Uuid, Path, description = "The API key's ID.")),
    responses((status = 200, description = "The key's record, revoked.", body = ApiKeyBody))
)]
pub(crate) async fn revoke_key(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    id: web::Path<Uuid>,
    _body: ApiJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let key = state
        .platform
        .revoke_api_key(&auth.principal, ApiKeyId(id.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(ApiKeyBody::from(key)))
}

/// Creates a user who signs in with a password.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "credentials",
    request_body = CreateUser,
    responses((status = 200, description = "The user.", body = UserBody), (status = 409, description = "The username is taken.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn create_user(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    body: ApiJson<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let new = body.0.into_domain()?;
    let user = state.platform.create_user(&auth.principal, new).await?;
    Ok(HttpResponse::Ok().json(UserBody::from(user)))
}

/// Users, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "credentials",
    params(Paging),
    responses((status = 200, description = "A page of users.", body = Vec<UserBody>, headers(("Link" = String, description = "`<...>; rel=\"next\"` when there are more rows."))))
)]
pub(crate) async fn list_users(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    req: HttpRequest,
    params: ApiQuery<Paging>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (limit, after) = crate::dto::page_params(params.limit, params.cursor)?;
    let found = state
        .platform
        .list_users(&auth.principal, after, limit)
        .await?;
    Ok(page(&req, found.map(UserBody::from)))
}

/// Changes a user's role or password; their earlier tokens stop working.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{user_id}",
    tag = "credentials",
    params(("user_id" = Uuid, Path, description = "The user's ID.")),
    request_body = UpdateUser,
    responses((status = 200, description = "The user as changed.", body = UserBody), (status = 409, description = "The change would leave no admin.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn update_user(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    id: web::Path<Uuid>,
    body: ApiJson<UpdateUser>,
) -> Result<HttpResponse, ApiError> {
    let change = body.0.into_domain()?;
    let user = state
        .platform
        .update_user(&auth.principal, UserId(id.into_inner()), change)
        .await?;
    Ok(HttpResponse::Ok().json(UserBody::from(user)))
}

/// Deletes a user.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{user_id}",
    tag = "credentials",
    params(("user_id" = Uuid, Path, description = "The user's ID.")),
    responses((status = 200, description = "The user as it was.", body = UserBody), (status = 409, description = "The change would leave no admin.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn delete_user(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    id: web::Path<Uuid>,
    _body: ApiJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let user = state
        .platform
        .delete_user(&auth.principal, UserId(id.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(UserBody::from(user)))
}

/// Who the caller is: its credential's subject, role, agent and expiry. Any role may ask; a
/// client (the dashboard, say) learns from it what to offer.
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "credentials",
    responses((status = 200, description = "The caller.", body = CallerBody))
)]
pub(crate) async fn whoami(auth: Auth<AnyRole>) -> HttpResponse {
    let p = auth.principal;
    HttpResponse::Ok().json(CallerBody {
        subject: p.subject,
        role: p.role.as_str(),
        agent_id: p.agent_id.map(|a| a.as_uuid()),
        expires_at: p.expires_at,
    })
}

/// Open: a username and password for a token. Needs `JWT_SECRET`, which signs the token.
/// Attempts are limited per username and address, more strictly than other calls, and then
/// wait for one of the few password-hashing slots (`503` with `Retry-After` when none frees up).
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "credentials",
    request_body = Login,
    responses((status = 200, description = "A bearer token.", body = TokenBody), (status = 401, description = "Unknown username or wrong password (which one is not said).", body = crate::error::Problem, content_type = "application/problem+json")),
    security(())
)]
pub(crate) async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ApiJson<Login>,
) -> Result<HttpResponse, ApiError> {
    let address = crate::middleware::client_address(&req);
    if let Admission::Limited { retry_after } =
        state.platform.admit_login(&body.0.username, &address).await
    {
        return Err(ApiError::too_many(retry_after));
    }
    let Some(keys) = &state.jwt else {
        return Err(ApiError::new(
            ErrorKind::Unavailable,
            "sign-in is not available: the server has no JWT_SECRET to sign tokens with",
        ));
    };
    let principal = state
        .platform
        .login(&body.0.username, &body.0.password)
        .await?;
    // Tokens are checked against the wall clock (as every JWT is), so they are issued by it.
    let token = keys.issue(&principal, chrono::Utc::now().timestamp())?;
    Ok(HttpResponse::Ok().json(TokenBody {
        access_token: token,
        token_type: "bearer",
        expires_in: keys.login_token_seconds(),
    }))
}

/// The audit trail, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "credentials",
    params(ListAudit),
    responses((status = 200, description = "A page of entries.", body = Vec<AuditBody>, headers(("Link" = String, description = "`<...>; rel=\"next\"` when there are more rows."))))
)]
pub(crate) async fn audit(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    req: HttpRequest,
    params: ApiQuery<ListAudit>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (limit, after) = crate::dto::page_params(params.limit, params.cursor)?;
    let action = params
        .action
        .map(|a| a.parse::<AuditAction>())
        .transpose()
        .map_err(|e| crate::dto::bad_param("action", e))?;
    let found = state
        .platform
        .audit_trail(&auth.principal, after, action, limit)
        .await?;
    Ok(page(&req, found.map(AuditBody::from)))
}
