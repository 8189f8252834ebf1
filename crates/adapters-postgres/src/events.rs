//! The event log table: appended to inside other writes' transactions, read by seq.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{AgentId, Event, EventKind, NewEvent, TaskId};
use ports::{EventLog, RepoError};
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{corrupt, repo_error};
use crate::PgStore;

/// Appends events inside the caller's transaction, in one statement; returns them with their
/// `seq`, in the order given.
pub(crate) async fn append(
    conn: &mut PgConnection,
    events: Vec<NewEvent>,
) -> Result<Vec<Event>, RepoError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "type": e.kind.as_str(),
                "channel": e.kind.channel().as_str(),
                "agent_id": e.agent_id,
                "task_id": e.task_id,
                "data": e.data,
                "created_at": e.timestamp,
            })
        })
        .collect();
    // Identities are drawn in insertion order, which the ORDER BY fixes; sorting the returned
    // values therefore lines them up with the input.
    let mut seqs: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO events (type, channel, agent_id, task_id, data, created_at)
         SELECT e.v->>'type', e.v->>'channel', (e.v->>'agent_id')::uuid, (e.v->>'task_id')::uuid,
                e.v->'data', (e.v->>'created_at')::timestamptz
         FROM jsonb_array_elements($1) WITH ORDINALITY AS e(v, ord)
         ORDER BY e.ord
         RETURNING seq",
    )
    .bind(Value::Array(rows))
    .fetch_all(&mut *conn)
    .await
    .map_err(repo_error)?;
    seqs.sort_unstable();
    Ok(seqs
        .into_iter()
        .zip(events)
        .map(|(seq, event)| Event::stored(seq, event))
        .collect())
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
