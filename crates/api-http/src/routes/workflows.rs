//! `/api/v1/workflows`: definitions, executions, and an operator's cancel and rerun.

use actix_web::{web, HttpRequest, HttpResponse};
use domain::{ExecutionId, WorkflowId};
use uuid::Uuid;

use super::endpoint;
use crate::auth::{Auth, Operator, Viewer};
use crate::dto::agents::MessageBody;
use crate::dto::workflows::{
    CreateWorkflow, ExecuteWorkflow, ExecutionBody, ListPage, RerunExecution, WorkflowBody,
};
use crate::dto::NoFields;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/workflows", "GET, POST", |r| {
        r.route(web::get().to(list)).route(web::post().to(create))
    }))
    .service(endpoint("/workflows/{workflow_id}", "GET, DELETE", |r| {
        r.route(web::get().to(get)).route(web::delete().to(delete))
    }))
    .service(endpoint("/workflows/{workflow_id}/execute", "POST", |r| {
        r.route(web::post().to(execute))
    }))
    .service(endpoint(
        "/workflows/{workflow_id}/executions",
        "GET",
        |r| r.route(web::get().to(executions)),
    ))
    .service(endpoint(
        "/workflows/{workflow_id}/executions/{execution_id}",
        "GET",
        |r| r.route(web::get().to(execution)),
    ))
    .service(endpoint(
        "/workflows/{workflow_id}/executions/{execution_id}/cancel",
        "POST",
        |r| r.route(web::post().to(cancel)),
    ))
    .service(endpoint(
        "/workflows/{workflow_id}/executions/{execution_id}/rerun",
        "POST",
        |r| r.route(web::post().to(rerun)),
    ));
}

/// Stores a workflow definition: steps, and what each depends on.
#[utoipa::path(
    post,
    path = "/api/v1/workflows",
    tag = "workflows",
    request_body = CreateWorkflow,
    responses((status = 200, description = "The definition.", body = WorkflowBody))
)]
pub(crate) async fn create(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    body: ApiJson<CreateWorkflow>,
) -> Result<HttpResponse, ApiError> {
    let workflow = state
        .platform
        .create_workflow(&auth.principal, body.0.into_input())
        .await?;
    Ok(HttpResponse::Ok().json(WorkflowBody::from(workflow)))
}

/// Definitions, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/workflows",
    tag = "workflows",
    params(ListPage),
    responses((status = 200, description = "A page of definitions.", body = Vec<WorkflowBody>, headers(("Link" = String, description = "`<...>; rel=\"next\"` when there are more rows."))))
)]
pub(crate) async fn list(
    state: web::Data<AppState>,
    auth: Auth<Viewer>,
    req: HttpRequest,
    params: ApiQuery<ListPage>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (limit, after) = crate::dto::page_params(params.limit, params.cursor)?;
    let page = state
        .platform
        .list_workflows(&auth.principal, after, limit)
        .await?;
    Ok(crate::pagination::page(&req, page.map(WorkflowBody::from)))
}

/// One definition.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{workflow_id}",
    tag = "workflows",
    params(("workflow_id" = Uuid, Path, description = "The workflow's ID.")),
    responses((status = 200, description = "The definition.", body = WorkflowBody))
)]
pub(crate) async fn get(
    state: web::Data<AppState>,
    auth: Auth<Viewer>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let workflow = state
        .platform
        .get_workflow(&auth.principal, WorkflowId(id.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(WorkflowBody::from(workflow)))
}

/// Deletes a definition and the records of its executions; refused while one runs.
#[utoipa::path(
    delete,
    path = "/api/v1/workflows/{workflow_id}",
    tag = "workflows",
    params(("workflow_id" = Uuid, Path, description = "The workflow's ID.")),
    responses((status = 200, description = "Deleted.", body = MessageBody), (status = 409, description = "An execution of it is running.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn delete(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    _body: ApiJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    state
        .platform
        .delete_workflow(&auth.principal, WorkflowId(id.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(MessageBody {
        message: "Workflow deleted successfully",
    }))
}

/// Starts an execution: the steps that depend on none are queued as tasks at once.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{workflow_id}/execute",
    tag = "workflows",
    params(("workflow_id" = Uuid, Path, description = "The workflow's ID.")),
    request_body = ExecuteWorkflow,
    responses((status = 200, description = "The execution, running.", body = ExecutionBody))
)]
pub(crate) async fn execute(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    body: ApiJson<ExecuteWorkflow>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let input = body.0.into_input(id)?;
    let execution = state
        .platform
        .execute_workflow(&auth.principal, WorkflowId(id), input)
        .await?;
    Ok(HttpResponse::Ok().json(ExecutionBody::from(execution)))
}

/// A workflow's executions, newest first, without their steps' results.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{workflow_id}/executions",
    tag = "workflows",
    params(("workflow_id" = Uuid, Path, description = "The workflow's ID."), ListPage),
    responses((status = 200, description = "A page of executions.", body = Vec<ExecutionBody>, headers(("Link" = String, description = "`<...>; rel=\"next\"` when there are more rows."))))
)]
pub(crate) async fn executions(
    state: web::Data<AppState>,
    auth: Auth<Viewer>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    params: ApiQuery<ListPage>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let (limit, after) = crate::dto::page_params(params.limit, params.cursor)?;
    let page = state
        .platform
        .list_executions(&auth.principal, WorkflowId(id.into_inner()), after, limit)
        .await?;
    // The store leaves the steps' results out (each up to 64 KiB): one execution's answer
    // has them.
    Ok(crate::pagination::page(&req, page.map(ExecutionBody::from)))
}

/// One execution: its status, and each step's status, task and result.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{workflow_id}/executions/{execution_id}",
    tag = "workflows",
    params(("workflow_id" = Uuid, Path, description = "The workflow's ID."), ("execution_id" = Uuid, Path, description = "The execution's ID.")),
    responses((status = 200, description = "The execution.", body = ExecutionBody))
)]
pub(crate) async fn execution(
    state: web::Data<AppState>,
    auth: Auth<Viewer>,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (workflow, id) = path.into_inner();
    let execution = state
        .platform
        .get_execution(&auth.principal, WorkflowId(workflow), ExecutionId(id))
        .await?;
    Ok(HttpResponse::Ok().json(ExecutionBody::from(execution)))
}

/// Cancels a running execution: steps not started at once, running ones through their agents.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{workflow_id}/executions/{execution_id}/cancel",
    tag = "workflows",
    params(("workflow_id" = Uuid, Path, description = "The workflow's ID."), ("execution_id" = Uuid, Path, description = "The execution's ID.")),
    responses((status = 200, description = "The execution, cancelled.", body = ExecutionBody), (status = 409, description = "The execution is not running.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn cancel(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    path: web::Path<(Uuid, Uuid)>,
    _body: ApiJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let (workflow, id) = path.into_inner();
    let execution = state
        .platform
        .cancel_execution(&auth.principal, WorkflowId(workflow), ExecutionId(id))
        .await?;
    Ok(HttpResponse::Ok().json(ExecutionBody::from(execution)))
}

/// Runs a failed or cancelled execution again from a step: that step and everything
/// downstream of it, and every step that did not complete, run afresh; completed steps keep
/// their results.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{workflow_id}/executions/{execution_id}/rerun",
    tag = "workflows",
    params(("workflow_id" = Uuid, Path, description = "The workflow's ID."), ("execution_id" = Uuid, Path, description = "The execution's ID.")),
    request_body = RerunExecution,
    responses((status = 200, description = "The execution, running again.", body = ExecutionBody), (status = 409, description = "The execution is running or completed.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn rerun(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    path: web::Path<(Uuid, Uuid)>,
    body: ApiJson<RerunExecution>,
) -> Result<HttpResponse, ApiError> {
    let (workflow, id) = path.into_inner();
    let execution = state
        .platform
        .rerun_execution(
            &auth.principal,
            WorkflowId(workflow),
            ExecutionId(id),
            &body.0.from_step,
        )
        .await?;
    Ok(HttpResponse::Ok().json(ExecutionBody::from(execution)))
}
