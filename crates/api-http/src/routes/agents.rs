//! `/api/v1/agents`: registration, listing, updates, deregistration and heartbeats.

use actix_web::{web, HttpRequest, HttpResponse};
use domain::AgentId;
use uuid::Uuid;

use super::endpoint;
use crate::auth::{AgentOrOperator, AgentOrViewer, Auth, Operator};
use crate::dto::agents::{
    AgentBody, Heartbeat, HeartbeatBody, ListAgents, MessageBody, RegisterAgent, RegisteredBody,
    UpdateAgent,
};
use crate::dto::tasks::{AgentTasks, ReportResult, ReportsBody, SubmitReports, TaskBody};
use crate::dto::NoFields;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/agents", "GET, POST", |r| {
        r.route(web::get().to(list)).route(web::post().to(register))
    }))
    .service(endpoint("/agents/{agent_id}", "GET, PATCH, DELETE", |r| {
        r.route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(deregister))
    }))
    .service(endpoint("/agents/{agent_id}/heartbeat", "POST", |r| {
        r.route(web::post().to(heartbeat))
    }))
    .service(endpoint("/agents/{agent_id}/tasks", "GET", |r| {
        r.route(web::get().to(tasks))
    }))
    .service(endpoint("/agents/{agent_id}/reports", "POST", |r| {
        r.app_data(crate::BodyLimit(super::BULK_BODY_BYTES))
            .route(web::post().to(reports))
    }));
}

/// Reports many task outcomes (start, heartbeat, complete, fail) in one call; each is answered on its own.
#[utoipa::path(
    post,
    path = "/api/v1/agents/{agent_id}/reports",
    tag = "agents",
    params(("agent_id" = Uuid, Path, description = "The agent's ID.")),
    request_body = SubmitReports,
    responses((status = 200, description = "One result per report, in order.", body = ReportsBody))
)]
pub(crate) async fn reports(
    state: web::Data<AppState>,
    auth: Auth<AgentOrOperator>,
    id: web::Path<Uuid>,
    body: ApiJson<SubmitReports>,
) -> Result<HttpResponse, ApiError> {
    if body.0.reports.len() > app::MAX_REPORTS {
        let got = body.0.reports.len();
        return Err(super::too_many_items("reports", app::MAX_REPORTS, got));
    }
    let reports = body.0.into_reports()?;
    let ids: Vec<Uuid> = reports.iter().map(|r| r.task.as_uuid()).collect();
    let answers = state
        .platform
        .report(&auth.principal, AgentId(id.into_inner()), reports)
        .await?;
    let results = ids
        .into_iter()
        .zip(answers)
        .map(|(task_id, answer)| match answer {
            Ok(task) => ReportResult {
                task_id,
                status: 200,
                task: Some(TaskBody::from(task)),
                error: None,
            },
            Err(e) => {
                let e = ApiError::from(e);
                ReportResult {
                    task_id,
                    status: actix_web::ResponseError::status_code(&e).as_u16(),
                    task: None,
                    error: Some(e.problem()),
                }
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(ReportsBody { results }))
}

/// Registers an agent; the answer carries its one-time `agent_key`.
#[utoipa::path(
    post,
    path = "/api/v1/agents",
    tag = "agents",
    request_body = RegisterAgent,
    responses((status = 200, description = "The agent, and its key (shown once).", body = RegisteredBody), (status = 409, description = "The name is taken.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn register(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    body: ApiJson<RegisterAgent>,
) -> Result<HttpResponse, ApiError> {
    let new = body.0.into_domain()?;
    let registered = state.platform.register_agent(&auth.principal, new).await?;
    Ok(HttpResponse::Ok().json(RegisteredBody {
        agent: registered.agent.into(),
        agent_key: registered.agent_key,
    }))
}

/// Agents, newest first; an agent sees only itself.
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "agents",
    params(ListAgents),
    responses((status = 200, description = "A page of agents.", body = Vec<AgentBody>, headers(("Link" = String, description = "`<...>; rel=\"next\"` when there are more rows."))))
)]
pub(crate) async fn list(
    state: web::Data<AppState>,
    auth: Auth<AgentOrViewer>,
    req: HttpRequest,
    params: ApiQuery<ListAgents>,
) -> Result<HttpResponse, ApiError> {
    let (query, limit) = params.into_inner().into_query()?;
    let page = state
        .platform
        .list_agents(&auth.principal, query, limit)
        .await?;
    Ok(crate::pagination::page(&req, page.map(AgentBody::from)))
}

/// One agent.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{agent_id}",
    tag = "agents",
    params(("agent_id" = Uuid, Path, description = "The agent's ID.")),
    responses((status = 200, description = "The agent.", body = AgentBody))
)]
pub(crate) async fn get(
    state: web::Data<AppState>,
    auth: Auth<AgentOrViewer>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let agent = state
        .platform
        .get_agent(&auth.principal, AgentId(id.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(AgentBody::from(agent)))
}

/// Changes capabilities, resources, metadata, `max_concurrent_tasks` or status (`draining`, `idle`, `suspended`).
#[utoipa::path(
    patch,
    path = "/api/v1/agents/{agent_id}",
    tag = "agents",
    params(("agent_id" = Uuid, Path, description = "The agent's ID.")),
    request_body = UpdateAgent,
    responses((status = 200, description = "The agent as changed.", body = AgentBody), (status = 409, description = "The agent's state does not allow the change.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn update(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    body: ApiJson<UpdateAgent>,
) -> Result<HttpResponse, ApiError> {
    let patch = body.0.into_domain()?;
    let agent = state
        .platform
        .update_agent(&auth.principal, AgentId(id.into_inner()), patch)
        .await?;
    Ok(HttpResponse::Ok().json(AgentBody::from(agent)))
}

/// Deregisters an agent; its unfinished tasks go back to the queue and its keys are revoked.
#[utoipa::path(
    delete,
    path = "/api/v1/agents/{agent_id}",
    tag = "agents",
    params(("agent_id" = Uuid, Path, description = "The agent's ID.")),
    responses((status = 200, description = "`{\"message\": \"Agent deregistered successfully\"}`.", body = crate::dto::agents::MessageBody))
)]
pub(crate) async fn deregister(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    _body: ApiJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    state
        .platform
        .deregister_agent(&auth.principal, AgentId(id.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(MessageBody {
        message: "Agent deregistered successfully",
    }))
}

/// The agent is alive; an offline agent comes back online.
#[utoipa::path(
    post,
    path = "/api/v1/agents/{agent_id}/heartbeat",
    tag = "agents",
    params(("agent_id" = Uuid, Path, description = "The agent's ID.")),
    request_body = Heartbeat,
    responses((status = 200, description = "The agent and the tasks it holds.", body = HeartbeatBody), (status = 409, description = "The agent's state does not allow the change.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn heartbeat(
    state: web::Data<AppState>,
    auth: Auth<AgentOrOperator>,
    id: web::Path<Uuid>,
    body: ApiJson<Heartbeat>,
) -> Result<HttpResponse, ApiError> {
    let (status, metadata) = body.0.into_domain()?;
    let beat = state
        .platform
        .agent_heartbeat(&auth.principal, AgentId(id.into_inner()), status, metadata)
        .await?;
    Ok(HttpResponse::Ok().json(HeartbeatBody {
        agent: beat.agent.into(),
        tasks: beat.tasks.into_iter().map(TaskBody::from).collect(),
    }))
}

/// The agent's tasks; with `wait_seconds`, a long poll until at least one matches.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{agent_id}/tasks",
    tag = "agents",
    params(("agent_id" = Uuid, Path, description = "The agent's ID."), AgentTasks),
    responses((status = 200, description = "The matching tasks (none when a long poll ran out).", body = Vec<TaskBody>))
)]
pub(crate) async fn tasks(
    state: web::Data<AppState>,
    auth: Auth<AgentOrViewer>,
    id: web::Path<Uuid>,
    params: ApiQuery<AgentTasks>,
) -> Result<HttpResponse, ApiError> {
    let (status, wait) = params.into_inner().parse()?;
    let tasks = state
        .platform
        .agent_tasks(&auth.principal, AgentId(id.into_inner()), status, wait)
        .await?;
    let body: Vec<TaskBody> = tasks.into_iter().map(TaskBody::from).collect();
    Ok(HttpResponse::Ok().json(body))
}
