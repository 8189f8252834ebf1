//! `/api/v1/tasks`: submission, reads, operator actions and the agent work protocol.

use actix_web::{web, HttpRequest, HttpResponse};
use domain::TaskId;
use uuid::Uuid;

use super::endpoint;
use crate::auth::{AgentOrOperator, AgentOrViewer, Auth, Operator};
use crate::dto::tasks::{
    BatchBody, CompleteTask, EventBody, FailTask, ListTasks, StartTask, SubmitBatch, SubmitTask,
    TaskBody, TaskHeartbeat, TaskHeartbeatBody,
};
use crate::dto::NoFields;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/tasks", "GET, POST", |r| {
        r.route(web::get().to(list)).route(web::post().to(submit))
    }))
    // Before `/tasks/{task_id}`, which would take `batch` for an ID.
    .service(endpoint("/tasks/batch", "POST", |r| {
        r.app_data(crate::BodyLimit(super::BULK_BODY_BYTES))
            .route(web::post().to(submit_batch))
    }))
    .service(endpoint("/tasks/{task_id}", "GET", |r| {
        r.route(web::get().to(get))
    }))
    .service(endpoint("/tasks/{task_id}/history", "GET", |r| {
        r.route(web::get().to(history))
    }));
    cfg.service(endpoint("/tasks/{task_id}/cancel", "POST", |r| {
        r.route(web::post().to(cancel))
    }))
    .service(endpoint("/tasks/{task_id}/retry", "POST", |r| {
        r.route(web::post().to(retry))
    }));
    cfg.service(endpoint("/tasks/{task_id}/start", "POST", |r| {
        r.route(web::post().to(start))
    }))
    .service(endpoint("/tasks/{task_id}/heartbeat", "POST", |r| {
        r.route(web::post().to(heartbeat))
    }))
    .service(endpoint("/tasks/{task_id}/complete", "POST", |r| {
        r.route(web::post().to(complete))
    }))
    .service(endpoint("/tasks/{task_id}/fail", "POST", |r| {
        r.route(web::post().to(fail))
    }));
}

fn ok(task: domain::Task) -> HttpResponse {
    HttpResponse::Ok().json(TaskBody::from(task))
}

/// The request's `Idempotency-Key`, if it has one, with the digest of its parsed body.
fn idempotency(
    req: &HttpRequest,
    body: &impl serde::Serialize,
) -> Result<Option<app::Idempotency>, ApiError> {
    let Some(key) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = key
        .to_str()
        .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
    // The parsed body, serialized again, is the fingerprint: formatting does not count.
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    app::Idempotency::new(key, &canonical)
        .map(Some)
        .map_err(ApiError::bad_request)
}

/// Submits a task.
#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the call safe to retry: the same key and body return the original answer for 24 h; a different body with the same key is 422.")),
    request_body = SubmitTask,
    responses((status = 200, description = "The task, pending.", body = TaskBody))
)]
pub(crate) async fn submit(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    req: HttpRequest,
    body: ApiJson<SubmitTask>,
) -> Result<HttpResponse, ApiError> {
    let idempotency = idempotency(&req, &body.0)?;
    let task = state
        .platform
        .submit(&auth.principal, body.0.into_input(), idempotency)
        .await?;
    Ok(ok(task))
}

/// Submits 1 to 1,000 tasks, all or nothing.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/batch",
    tag = "tasks",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the call safe to retry: the same key and body return the original answer for 24 h; a different body with the same key is 422.")),
    request_body = SubmitBatch,
    responses((status = 200, description = "The tasks, in the order given.", body = BatchBody))
)]
pub(crate) async fn submit_batch(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    req: HttpRequest,
    body: ApiJson<SubmitBatch>,
) -> Result<HttpResponse, ApiError> {
    if body.0.tasks.len() > app::MAX_BATCH_TASKS {
        let got = body.0.tasks.len();
        return Err(super::too_many_items("tasks", app::MAX_BATCH_TASKS, got));
    }
    let idempotency = idempotency(&req, &body.0)?;
    let inputs = body
        .0
        .tasks
        .into_iter()
        .map(SubmitTask::into_input)
        .collect();
    let tasks = state
        .platform
        .submit_batch(&auth.principal, inputs, idempotency)
        .await?;
    Ok(HttpResponse::Ok().json(BatchBody {
        tasks: tasks.into_iter().map(TaskBody::from).collect(),
    }))
}

/// Tasks, newest first; an agent sees those it holds or held.
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(ListTasks),
    responses((status = 200, description = "A page of tasks.", body = Vec<TaskBody>, headers(("Link" = String, description = "`<...>; rel=\"next\"` when there are more rows."))))
)]
pub(crate) async fn list(
    state: web::Data<AppState>,
    auth: Auth<AgentOrViewer>,
    req: HttpRequest,
    params: ApiQuery<ListTasks>,
) -> Result<HttpResponse, ApiError> {
    let (query, limit) = params.into_inner().into_query()?;
    let page = state
        .platform
        .list_tasks(&auth.principal, query, limit)
        .await?;
    Ok(crate::pagination::page(&req, page.map(TaskBody::from)))
}

/// One task.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{task_id}",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's ID.")),
    responses((status = 200, description = "The task.", body = TaskBody))
)]
pub(crate) async fn get(
    state: web::Data<AppState>,
    auth: Auth<AgentOrViewer>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let task = state
        .platform
        .get_task(&auth.principal, TaskId(id.into_inner()))
        .await?;
    Ok(ok(task))
}

/// The task's events, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{task_id}/history",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's ID.")),
    responses((status = 200, description = "The events.", body = Vec<EventBody>))
)]
pub(crate) async fn history(
    state: web::Data<AppState>,
    auth: Auth<AgentOrViewer>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let events = state
        .platform
        .task_history(&auth.principal, TaskId(id.into_inner()))
        .await?;
    let body: Vec<EventBody> = events.into_iter().map(EventBody::from).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// Cancels a task: at once if it waits, when its agent next reports if it runs.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/cancel",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's ID.")),
    responses((status = 200, description = "The task.", body = TaskBody), (status = 409, description = "The task has ended.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn cancel(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    _body: ApiJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let id = TaskId(id.into_inner());
    Ok(ok(state.platform.cancel_task(&auth.principal, id).await?))
}

/// Puts a failed, cancelled or expired task back in the queue with a fresh round of attempts.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/retry",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's ID.")),
    responses((status = 200, description = "The task, pending.", body = TaskBody), (status = 409, description = "The task has not ended, or completed.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn retry(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    _body: ApiJson<NoFields>,
) -> Result<HttpResponse, ApiError> {
    let id = TaskId(id.into_inner());
    Ok(ok(state.platform.retry_task(&auth.principal, id).await?))
}

/// The holding agent starts the task.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/start",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's ID.")),
    request_body = StartTask,
    responses((status = 200, description = "The task, running.", body = TaskBody), (status = 409, description = "Not the current attempt, or not held by the caller.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn start(
    state: web::Data<AppState>,
    auth: Auth<AgentOrOperator>,
    id: web::Path<Uuid>,
    body: ApiJson<StartTask>,
) -> Result<HttpResponse, ApiError> {
    let task = state
        .platform
        .start_task(&auth.principal, TaskId(id.into_inner()), body.0.attempt)
        .await?;
    Ok(ok(task))
}

/// The holding agent renews the lease and may report progress.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/heartbeat",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's ID.")),
    request_body = TaskHeartbeat,
    responses((status = 200, description = "Whether to stop, and the task.", body = TaskHeartbeatBody), (status = 409, description = "Not the current attempt, or not held by the caller.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn heartbeat(
    state: web::Data<AppState>,
    auth: Auth<AgentOrOperator>,
    id: web::Path<Uuid>,
    body: ApiJson<TaskHeartbeat>,
) -> Result<HttpResponse, ApiError> {
    let message = body.0.checked_message()?;
    let task = state
        .platform
        .task_heartbeat(
            &auth.principal,
            TaskId(id.into_inner()),
            body.0.attempt,
            body.0.progress,
            message,
        )
        .await?;
    Ok(HttpResponse::Ok().json(TaskHeartbeatBody {
        cancel_requested: task.cancel_requested,
        lease_expires_at: task.lease_expires_at,
        task: task.into(),
    }))
}

/// The holding agent completes the task with its result.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/complete",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's ID.")),
    request_body = CompleteTask,
    responses((status = 200, description = "The task, completed.", body = TaskBody), (status = 409, description = "Not the current attempt, or not held by the caller.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn complete(
    state: web::Data<AppState>,
    auth: Auth<AgentOrOperator>,
    id: web::Path<Uuid>,
    body: ApiJson<CompleteTask>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let task = state
        .platform
        .complete_task(
            &auth.principal,
            TaskId(id.into_inner()),
            body.attempt,
            body.result,
        )
        .await?;
    Ok(ok(task))
}

/// The holding agent gives up; a retryable failure goes back to the queue while attempts remain.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/fail",
    tag = "tasks",
    params(("task_id" = Uuid, Path, description = "The task's ID.")),
    request_body = FailTask,
    responses((status = 200, description = "The task.", body = TaskBody), (status = 409, description = "Not the current attempt, or not held by the caller.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn fail(
    state: web::Data<AppState>,
    auth: Auth<AgentOrOperator>,
    id: web::Path<Uuid>,
    body: ApiJson<FailTask>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let task = state
        .platform
        .fail_task(
            &auth.principal,
            TaskId(id.into_inner()),
            body.attempt,
            &body.error,
            body.retryable.unwrap_or(true),
        )
        .await?;
    Ok(ok(task))
}
