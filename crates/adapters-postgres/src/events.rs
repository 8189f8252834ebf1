//! The event log table: appended to inside other writes' transactions, read by seq.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{AgentId, Event, EventKind, NewEvent, TaskId};
use ports::{EventLog, RepoError};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{corrupt, repo_error};
use crate::PgStore;

/// Appends events inside the caller's transaction; returns them with their `seq`, in order.
pub(crate) async fn append(
    conn: &mut PgConnection,
    events: Vec<NewEvent>,
) -> Result<Vec<Event>, RepoError> {
    let mut stored = Vec::with_capacity(events.len());
    for event in events {
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO events (type, channel, agent_id, task_id, data, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        )
        .bind(event.kind.as_str())
        .bind(event.kind.channel().as_str())
        .bind(event.agent_id.map(|a| a.as_uuid()))
        .bind(event.task_id.map(|t| t.as_uuid()))
        .bind(&event.data)
        .bind(event.timestamp)
        .fetch_one(&mut *conn)
        .await
        .map_err(repo_error)?;
        stored.push(Event::stored(seq, event));
    }
    Ok(stored)
}

fn event_from_row(row: &PgRow) -> Result<Event, RepoError> {
    let kind: String = row.try_get("type").map_err(repo_error)?;
    Ok(Event {
        seq: row.try_get("seq").map_err(repo_error)?,
        kind: kind
            .parse::<EventKind>()
            .map_err(|e| corrupt("event type", e))?,
        agent_id: row
            .try_get::<Option<Uuid>, _>("agent_id")
            .map_err(repo_error)?
            .map(AgentId),
        task_id: row
            .try_get::<Option<Uuid>, _>("task_id")
            .map_err(repo_error)?
            .map(TaskId),
        data: row.try_get("data").map_err(repo_error)?,
        timestamp: row
            .try_get::<DateTime<Utc>, _>("created_at")
            .map_err(repo_error)?,
    })
}

#[async_trait]
impl EventLog for PgStore {
    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, RepoError> {
        sqlx::query(
            "SELECT seq, type, agent_id, task_id, data, created_at FROM events
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(repo_error)?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn task_events(&self, task: TaskId, limit: u32) -> Result<Vec<Event>, RepoError> {
        sqlx::query(
            "SELECT seq, type, agent_id, task_id, data, created_at FROM events
             WHERE task_id = $1 ORDER BY seq LIMIT $2",
        )
        .bind(task.as_uuid())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(repo_error)?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn latest_events(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        sqlx::query(
            "SELECT seq, type, agent_id, task_id, data, created_at FROM events
             ORDER BY seq DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(repo_error)?
        .iter()
        .map(event_from_row)
        .collect()
    }
}
