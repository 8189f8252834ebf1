//! What operators watch: `/api/v1/dashboard` (the activity feed, read from the event log, and
//! the summary counters) and `/api/v1/metrics/performance` (each agent's figures).

use actix_web::{web, HttpRequest, HttpResponse};
use app::{AgentPerformance, PerformanceRange, Summary};
use chrono::{DateTime, Utc};
use domain::{AgentStatus, ResourceStatus};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::endpoint;
use crate::auth::{AgentOrViewer, Auth, Viewer};
use crate::dto::{bad_param, page_params};
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

/// `GET /dashboard/summary`: each count is what the matching filtered list returns
/// (`in_progress` is `assigned` plus `running`); `websocket_connections` are this replica's.
async fn summary(state: web::Data<AppState>, auth: Auth<Viewer>) -> Result<HttpResponse, ApiError> {
    let Summary {
        agents,
        tasks,
        resources,
        conflicts: (open, resolved, dismissed),
    } = state.platform.summary(&auth.principal).await?;
    let mut agents_body = json!({"total": agents.total()});
    for status in AgentStatus::ALL {
        agents_body[status.as_str()] = json!(agents.of(*status));
    }
    let mut pools = json!({"total": resources.values().sum::<u64>()});
    for status in ResourceStatus::ALL {
        pools[status.as_str()] = json!(resources.get(status).copied().unwrap_or(0));
    }
    Ok(HttpResponse::Ok().json(json!({
        "agents": agents_body,
        "tasks": {
            "total": tasks.total(),
            "pending": tasks.pending,
            "in_progress": tasks.assigned + tasks.running,
            "assigned": tasks.assigned,
            "running": tasks.running,
            "completed": tasks.completed,
            "failed": tasks.failed,
            "cancelled": tasks.cancelled,
            "expired": tasks.expired,
        },
        "resources": pools,
        "conflicts": {
            "total": open + resolved + dismissed,
            "open": open,
            "resolved": resolved,
            "dismissed": dismissed,
        },
        // Workflows are not part of the platform yet: there are none to count.
        "workflows": {"total": 0, "running_executions": 0},
        "websocket_connections": state.connections.open(),
        "timestamp": state.platform.clock().now(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerformanceQuery {
    agent_id: Option<Uuid>,
    time_range: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct PerformanceBody {
    agent_id: Uuid,
    metrics: PerformanceFigures,
    time_range: &'static str,
    timestamp: DateTime<Utc>,
}

/// Figures without a value (no task ended in the span) are `null`.
#[derive(Debug, Serialize)]
struct PerformanceFigures {
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
async fn performance(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: Auth<AgentOrViewer>,
    query: ApiQuery<PerformanceQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let range =
        PerformanceRange::parse(query.time_range.as_deref().unwrap_or("1h")).ok_or_else(|| {
            bad_param(
                "time_range",
                format!("must be one of {}", PerformanceRange::NAMES),
            )
        })?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityQuery {
    limit: Option<u32>,
}

/// One entry of the feed, in the seed's shape (`type` is the channel), plus the event's name
/// and `seq`.
#[derive(Debug, Serialize)]
struct ActivityBody {
    #[serde(rename = "type")]
    channel: &'static str,
    event: &'static str,
    timestamp: DateTime<Utc>,
    data: Value,
    seq: i64,
}

async fn activity(
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
            data: e.data,
            seq: e.seq,
        })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}
