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
use crate::rows::ReadRows;
use crate::PgStore;

/// The key of the advisory lock that keeps relays from overlapping.
const RELAY_LOCK: i64 = 0x4556_454e_5452_454c; // "EVENTREL"

/// The end of every write: stores `events` in the write's transaction and commits it, so the
/// events exist if and only if the change does. Returns the events as stored.
pub(crate) async fn commit_with(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    events: Vec<NewEvent>,
) -> Result<Vec<NewEvent>, RepoError> {
    let stored = append(&mut tx, events).await?;
    tx.commit().await.map_err(crate::error::repo_error)?;
    Ok(stored)
}

/// Appends events, unnumbered, inside the caller's transaction, in one statement.
pub(crate) async fn append(
    conn: &mut PgConnection,
    events: Vec<NewEvent>,
) -> Result<Vec<NewEvent>, RepoError> {
    if events.is_empty() {
        return Ok(events);
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
    // Identities follow the ORDER BY, so the relay numbers these in the order given.
    sqlx::query(
        "INSERT INTO events (type, channel, agent_id, task_id, data, created_at)
         SELECT e.v->>'type', e.v->>'channel', (e.v->>'agent_id')::uuid, (e.v->>'task_id')::uuid,
                e.v->'data', (e.v->>'created_at')::timestamptz
         FROM jsonb_array_elements($1) WITH ORDINALITY AS e(v, ord)
         ORDER BY e.ord",
    )
    .bind(Value::Array(rows))
    .execute(&mut *conn)
    .await
    .map_err(repo_error)?;
    Ok(events)
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
    async fn sequence(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?;
        // Under the lock no other relay runs, so the next numbers follow the highest one given,
        // without gaps; unnumbered rows of transactions still open are invisible and wait.
        let mut events = sqlx::query(
            "WITH top AS (SELECT coalesce(max(seq), 0) AS seq FROM events),
                  next AS (
                      SELECT id, row_number() OVER (ORDER BY id) AS n
                      FROM (SELECT id FROM events WHERE seq IS NULL ORDER BY id LIMIT $1
                            FOR UPDATE) AS waiting
                  )
             UPDATE events AS e SET seq = top.seq + next.n
             FROM next, top
             WHERE e.id = next.id
             RETURNING e.seq, e.type, e.agent_id, e.task_id, e.data, e.created_at",
        )
        .bind(i64::from(limit))
        .read_all(&mut *tx, event_from_row)
        .await?;
        tx.commit().await.map_err(repo_error)?;
        events.sort_by_key(|e| e.seq);
        Ok(events)
    }

    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, RepoError> {
        sqlx::query(
            "SELECT seq, type, agent_id, task_id, data, created_at FROM events
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::from(limit))
        .read_all(self.pool(), event_from_row)
        .await
    }

    async fn task_events(&self, task: TaskId, limit: u32) -> Result<Vec<Event>, RepoError> {
        sqlx::query(
            "SELECT seq, type, agent_id, task_id, data, created_at FROM events
             WHERE task_id = $1 AND seq IS NOT NULL ORDER BY seq LIMIT $2",
        )
        .bind(task.as_uuid())
        .bind(i64::from(limit))
        .read_all(self.pool(), event_from_row)
        .await
    }

    async fn prune(&self, older_than: DateTime<Utc>, keep_newest: u64) -> Result<u64, RepoError> {
        let keep = i64::try_from(keep_newest.max(1)).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "WITH top AS (SELECT max(seq) AS seq FROM events)
             DELETE FROM events USING top
             WHERE events.seq < top.seq
               AND (events.created_at < $1 OR events.seq <= top.seq - $2)",
        )
        .bind(older_than)
        .bind(keep)
        .execute(self.pool())
        .await
        .map_err(repo_error)?;
        Ok(done.rows_affected())
    }

    async fn latest_events(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        sqlx::query(
            "SELECT seq, type, agent_id, task_id, data, created_at FROM events
             WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .read_all(self.pool(), event_from_row)
        .await
    }

    async fn log_id(&self) -> Result<uuid::Uuid, RepoError> {
        sqlx::query_scalar("SELECT id FROM deployment")
            .fetch_one(self.pool())
            .await
            .map_err(repo_error)
    }
}
