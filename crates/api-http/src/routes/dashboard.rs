//! `/api/v1/dashboard`: the activity feed, read from the event log.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::endpoint;
use crate::auth::{Auth, Viewer};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/dashboard/activity", "GET", |r| {
        r.route(web::get().to(activity))
    }));
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
