//! What operators watch: `/api/v1/dashboard` (the activity feed, read from the event log, and
//! the summary counters) and `/api/v1/metrics/performance` (each agent's figures).

use actix_web::{web, HttpRequest, HttpResponse};
use app::{AgentPerformance, PerformanceRange, Summary};
use chrono::{DateTime, Utc};
use domain::ResourceStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::endpoint;
use crate::auth::{AgentOrViewer, Auth, Viewer};
use crate::dto::page_params;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/dashboard/activity", "GET", |r| {
        r.route(web::get().to(activity))
    }))
    .service(endpoint("/dashboard/summary", "GET", |r| {
        r.route(web::get().to(summary))
    }))
    .service(endpoint("/metrics/performance", "GET", |r| {
        r.route(web::get().to(performance))
    }));
}

/// The dashboard's counters.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SummaryBody {
    agents: AgentCounts,
    tasks: TaskCounts,
    resources: ResourceCounts,
    conflicts: ConflictCounts,
    /// Workflow definitions, and their executions running now.
    workflows: WorkflowCounts,
    /// Open on the replica that answers.
    websocket_connections: u64,
    timestamp: DateTime<Utc>,
}

/// Agents by status; each count is what `GET /agents?status_filter=` returns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentCounts {
    total: u64,
    idle: u64,
    active: u64,
    busy: u64,
    draining: u64,
    offline: u64,
    suspended: u64,
}

/// Tasks by status; `in_progress` is `assigned` plus `running`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskCounts {
    total: u64,
    pending: u64,
    in_progress: u64,
    assigned: u64,
    running: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    expired: u64,
}

/// Resource pools by status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourceCounts {
    total: u64,
    available: u64,
    in_use: u64,
    exhausted: u64,
    maintenance: u64,
}

/// Conflicts by status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConflictCounts {
    total: u64,
    open: u64,
    resolved: u64,
    dismissed: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkflowCounts {
    total: u64,
    running_executions: u64,
}

/// `GET /dashboard/summary`: each count is what the matching filtered list returns.
#[utoipa::path(
    get,
    path = "/api/v1/dashboard/summary",
    tag = "dashboard",
    responses((status = 200, description = "The counters.", body = SummaryBody))
)]
pub(crate) async fn summary(
    state: web::Data<AppState>,
    auth: Auth<Viewer>,
) -> Result<HttpResponse, ApiError> {
    let Summary {
        agents,
        tasks,
        resources,
        conflicts: (open, resolved, dismissed),
        workflows,
    } = state.platform.summary(&auth.principal).await?;
    let pools = |status| resources.get(&status).copied().unwrap_or(0);
    Ok(HttpResponse::Ok().json(SummaryBody {
        agents: AgentCounts {
            total: agents.total(),
            idle: agents.idle,
            active: agents.active,
            busy: agents.busy,
            draining: agents.draining,
            offline: agents.offline,
            suspended: agents.suspended,
        },
        tasks: TaskCounts {
            total: tasks.total(),
            pending: tasks.pending,
            in_progress: tasks.assigned + tasks.running,
            assigned: tasks.assigned,
            running: tasks.running,
            completed: tasks.completed,
            failed: tasks.failed,
            cancelled: tasks.cancelled,
            expired: tasks.expired,
        },
        resources: ResourceCounts {
            total: resources.values().sum(),
            available: pools(ResourceStatus::Available),
            in_use: pools(ResourceStatus::InUse),
            exhausted: pools(ResourceStatus::Exhausted),
            maintenance: pools(ResourceStatus::Maintenance),
        },
        conflicts: ConflictCounts {
            total: open + resolved + dismissed,
            open,
            resolved,
            dismissed,
        },
        workflows: WorkflowCounts {
            total: workflows.workflows,
            running_executions: workflows.running_executions,
        },
        websocket_connections: state.connections.open(),
        timestamp: state.platform.clock().now(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PerformanceQuery {
    /// One agent; without it, a page of every agent.
    agent_id: Option<Uuid>,
    /// The span the figures cover, up to now (default `1h`).
    time_range: Option<TimeRange>,
    /// Agents per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `time_range`, as the query spells it.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
pub(crate) enum TimeRange {
    #[serde(rename = "15m")]
    FifteenMinutes,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
}

impl From<TimeRange> for PerformanceRange {
    fn from(range: TimeRange) -> Self {
        match range {
            TimeRange::FifteenMinutes => PerformanceRange::FifteenMinutes,
            TimeRange::Hour => PerformanceRange::Hour,
            TimeRange::Day => PerformanceRange::Day,
            TimeRange::Week => PerformanceRange::Week,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PerformanceBody {
    agent_id: Uuid,
    metrics: PerformanceFigures,
    time_range: &'static str,
    timestamp: DateTime<Utc>,
}

/// Figures without a value (no task ended in the span) are `null`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PerformanceFigures {
    tasks_completed: u64,
    tasks_failed: u64,
    success_rate: Option<f64>,
    avg_duration_seconds: Option<f64>,
    p50_duration_seconds: Option<f64>,
    p95_duration_seconds: Option<f64>,
    throughput_per_minute: f64,
    current_load: u32,
    utilization: f64,
    reliability: f64,
}

impl PerformanceBody {
    fn of(p: AgentPerformance, time_range: &'static str) -> Self {
        Self {
            agent_id: p.agent.id.as_uuid(),
            metrics: PerformanceFigures {
                tasks_completed: p.completed,
                tasks_failed: p.failed,
                success_rate: p.success_rate,
                avg_duration_seconds: p.durations.map(|d| d.mean),
                p50_duration_seconds: p.durations.map(|d| d.p50),
                p95_duration_seconds: p.durations.map(|d| d.p95),
                throughput_per_minute: p.throughput_per_minute,
                current_load: p.agent.current_tasks,
                utilization: p.utilization,
                reliability: p.agent.reliability,
            },
            time_range,
            timestamp: p.timestamp,
        }
    }
}

/// `GET /metrics/performance?agent_id=&time_range=1h`: one agent's figures, or a page of every
/// agent's (newest first) without `agent_id`. An agent caller gets only its own.
#[utoipa::path(
    get,
    path = "/api/v1/metrics/performance",
    tag = "dashboard",
    params(PerformanceQuery),
    responses((status = 200, description = "One entry per agent.", body = Vec<PerformanceBody>, headers(("Link" = String, description = "`<...>; rel=\"next\"` when there are more rows."))), (status = 404, description = "No such agent, or not the caller's own.", body = crate::error::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn performance(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: Auth<AgentOrViewer>,
    query: ApiQuery<PerformanceQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let range = query
        .time_range
        .map_or(PerformanceRange::Hour, PerformanceRange::from);
    let (limit, after) = page_params(query.limit, query.cursor)?;
    let page = state
        .platform
        .performance(
            &auth.principal,
            query.agent_id.map(domain::AgentId),
            range,
            limit,
            after,
        )
        .await?;
    Ok(crate::pagination::page(
        &req,
        page.map(|p| PerformanceBody::of(p, range.name())),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivityQuery {
    /// Events, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// One entry of the feed, in the seed's shape (`type` is the channel), plus the event's name
/// and `seq`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivityBody {
    #[serde(rename = "type")]
    channel: &'static str,
    event: &'static str,
    timestamp: DateTime<Utc>,
    data: Value,
    seq: i64,
}

/// The newest events, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/dashboard/activity",
    tag = "dashboard",
    params(ActivityQuery),
    responses((status = 200, description = "The events.", body = Vec<ActivityBody>))
)]
pub(crate) async fn activity(
    state: web::Data<AppState>,
    auth: Auth<Viewer>,
    query: ApiQuery<ActivityQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = match query.limit {
        None => 50,
        Some(n @ 1..=1000) => n,
        Some(_) => return Err(ApiError::bad_request("limit: must be between 1 and 1000")),
    };
    let events = state.platform.activity(&auth.principal, limit).await?;
    let body: Vec<ActivityBody> = events
        .into_iter()
        .map(|e| ActivityBody {
            channel: e.channel().as_str(),
            event: e.kind.as_str(),
            timestamp: e.timestamp,
            data: std::sync::Arc::unwrap_or_clone(e.data),
            seq: e.seq,
        })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}
