//! Tasks in PostgreSQL: the task repository. The rows are in `crate::task_rows`; the
//! scheduling pass, and every write of a set of changes, in `crate::scheduling`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{AgentId, NewEvent, Task, TaskId, TaskStatus};
use ports::{
    AgentOutcomes, Changes, Decide, DecideWithAgents, Durations, IdempotencyRecord, PassSize,
    RepoError, Submission, TaskCounts, TaskQuery, TaskRepository,
};
use serde_json::{json, Value};
use sqlx::Row;
use uuid::Uuid;

use crate::error::{corrupt, repo_error};
use crate::events::commit_with;
use crate::rows::ReadRows;
use crate::task_rows::{insert_tasks, select, task_from_row, SelectBinds, COLUMNS};
use crate::PgStore;

#[async_trait]
impl TaskRepository for PgStore {
    async fn insert_all(
        &self,
        submissions: &[Submission],
        key_lifetime: chrono::Duration,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut records: Vec<&IdempotencyRecord> = submissions
            .iter()
            .filter_map(|s| s.idempotency.as_ref())
            .collect();
        // Keys taken in one order by every group (the statement inserts them by key, too), so
        // two written at once cannot deadlock on them.
        records.sort_by(|a, b| a.key.cmp(&b.key));
        let keys: std::collections::HashSet<&str> =
            records.iter().map(|r| r.key.as_str()).collect();
        if keys.len() < records.len() {
            return Err(RepoError::Conflict("idempotency key in use".into()));
        }
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        if !records.is_empty() {
            // Takes each key, or a stale record of it; a live one stops the whole insert.
            let rows = Value::Array(
                records
                    .iter()
                    .map(|r| {
                        json!({
                            "key": r.key,
                            "fingerprint": r.fingerprint,
                            "task_id": r.tasks.first(),
                            "task_ids": r.tasks,
                            "created_at": r.created_at,
                        })
                    })
                    .collect(),
            );
            let taken = sqlx::query(
                "INSERT INTO idempotency_keys (key, fingerprint, task_id, task_ids, created_at)
                 SELECT key, fingerprint, task_id, task_ids, created_at
                 FROM jsonb_populate_recordset(NULL::idempotency_keys, $1)
                 ORDER BY key
                 ON CONFLICT (key) DO UPDATE
                     SET fingerprint = EXCLUDED.fingerprint, task_id = EXCLUDED.task_id,
                         task_ids = EXCLUDED.task_ids, created_at = EXCLUDED.created_at
                     WHERE idempotency_keys.created_at
                         < EXCLUDED.created_at - $2 * interval '1 microsecond'",
            )
            .bind(rows)
            .bind(key_lifetime.num_microseconds().unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?;
            if taken.rows_affected() < records.len() as u64 {
                return Err(RepoError::Conflict("idempotency key in use".into()));
            }
        }
        let tasks: Vec<&Task> = submissions.iter().flat_map(|s| &s.tasks).collect();
        insert_tasks(&mut tx, &tasks).await?;
        let events = submissions
            .iter()
            .flat_map(|s| s.events.iter().cloned())
            .collect();
        commit_with(self, tx, events).await
    }

    async fn get(&self, id: TaskId) -> Result<Task, RepoError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id.as_uuid())
            .read_one(self.pool(), task_from_row)
            .await
    }

    async fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Task>, RepoError> {
        let uuids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        let found = sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ANY($1)"))
            .bind(&uuids)
            .read_all(self.pool(), task_from_row)
            .await?;
        let by_id: std::collections::HashMap<TaskId, Task> =
            found.into_iter().map(|t| (t.id, t)).collect();
        ids.iter()
            .map(|id| by_id.get(id).cloned().ok_or(RepoError::NotFound))
            .collect()
    }

    async fn find_idempotency(
        &self,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        let row = sqlx::query(
            "SELECT key, fingerprint,
                    CASE WHEN task_ids[1] = task_id THEN task_ids ELSE ARRAY[task_id] END
                        AS task_ids,
                    created_at
             FROM idempotency_keys
             WHERE key = $1 AND created_at >= $2",
        )
        .bind(key)
        .bind(since)
        .fetch_optional(self.pool())
        .await
        .map_err(repo_error)?;
        row.map(|row| {
            Ok(IdempotencyRecord {
                key: row.try_get("key").map_err(repo_error)?,
                fingerprint: row.try_get("fingerprint").map_err(repo_error)?,
                tasks: row
                    .try_get::<Vec<Uuid>, _>("task_ids")
                    .map_err(repo_error)?
                    .into_iter()
                    .map(TaskId)
                    .collect(),
                created_at: row.try_get("created_at").map_err(repo_error)?,
            })
        })
        .transpose()
    }

    async fn purge_idempotency(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(self.pool())
            .await
            .map_err(repo_error)?;
        Ok(done.rows_affected())
    }

    async fn purge_ended(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, RepoError> {
        // The rows are chosen and locked once (a CTE), those other writers (or another
        // replica's sweep) hold left to the next sweep; the conditions stand in the delete
        // too, so a row another write changed meanwhile (an operator's retry) is checked again
        // as it is now.
        let done = sqlx::query(
            "WITH doomed AS (
                 SELECT id FROM tasks t
                 WHERE status IN ('completed', 'failed', 'cancelled', 'expired')
                   AND completed_at < $1
                   AND NOT EXISTS (SELECT 1 FROM workflow_executions x
                                   WHERE x.id = t.execution_id AND x.status = 'running')
                 ORDER BY completed_at LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             DELETE FROM tasks t USING doomed
             WHERE t.id = doomed.id
               AND t.status IN ('completed', 'failed', 'cancelled', 'expired')
               AND t.completed_at < $1",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(self.pool())
        .await
        .map_err(repo_error)?;
        Ok(done.rows_affected())
    }

    async fn list(&self, query: &TaskQuery) -> Result<Vec<Task>, RepoError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE ($1::text IS NULL OR status = $1)
               AND ($2::smallint IS NULL OR priority = $2)
               AND ($3::text IS NULL OR required_capabilities @> ARRAY[$3::text])
               AND ($4::uuid IS NULL OR assigned_agent = $4)
               AND ($5::uuid IS NULL OR workflow_id = $5)
               AND ($6::uuid IS NULL OR execution_id = $6)
               AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8))
             ORDER BY created_at DESC, id DESC
             LIMIT $9"
        ))
        .bind(query.status.map(|s| s.as_str()))
        .bind(query.priority.map(|p| i16::from(p.get())))
        .bind(query.capability.as_ref().map(|c| c.as_str()))
        .bind(query.agent.map(|a| a.as_uuid()))
        .bind(query.workflow_id)
        .bind(query.execution_id)
        .bind(query.after.map(|c| c.created_at))
        .bind(query.after.map(|c| c.id))
        .bind(i64::from(query.limit))
        .read_all(self.pool(), task_from_row)
        .await
    }

    async fn save(&self, changes: Changes) -> Result<Vec<NewEvent>, RepoError> {
        let tx = self.pool().begin().await.map_err(repo_error)?;
        crate::scheduling::write(self, tx, changes).await
    }

    async fn update_with_agents(
        &self,
        agents: &[AgentId],
        tasks: &[TaskId],
        decide: DecideWithAgents,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        // The agents first, in the order of their IDs (as a heartbeat flush locks them), before
        // any task.
        let holders = crate::agents::lock_many(&mut tx, agents).await?;
        let holding: Vec<Uuid> = holders.iter().map(|a| a.id.as_uuid()).collect();
        let ids: Vec<Uuid> = tasks.iter().map(|t| t.as_uuid()).collect();
        // Only their own tasks are locked; others named are read as they are.
        let held = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE id = ANY($1) AND assigned_agent = ANY($2)
             ORDER BY id FOR UPDATE"
        ))
        .bind(&ids)
        .bind(&holding)
        .read_all(&mut *tx, task_from_row)
        .await?;
        let found: std::collections::HashSet<Uuid> = held.iter().map(|t| t.id.as_uuid()).collect();
        let rest: Vec<Uuid> = ids.into_iter().filter(|id| !found.contains(id)).collect();
        let others = if rest.is_empty() {
            Vec::new()
        } else {
            sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ANY($1)"))
                .bind(&rest)
                .read_all(&mut *tx, task_from_row)
                .await?
        };
        let rows = ports::SnapshotRows::of(&held, &holders);
        let loaded = held.into_iter().chain(others).collect();
        let changes = decide(holders, loaded);
        rows.admit(&changes)?;
        crate::scheduling::write(self, tx, changes).await
    }

    async fn schedule(
        &self,
        now: DateTime<Utc>,
        size: PassSize,
        policy: &domain::scheduler::Policy,
        decide: Decide,
    ) -> Result<Vec<NewEvent>, RepoError> {
        crate::scheduling::pass(self, now, size, policy, decide).await
    }

    async fn lease_expired(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        let mut conn = self.pool().acquire().await.map_err(repo_error)?;
        select(
            &mut conn,
            &format!(
                "SELECT {COLUMNS} FROM tasks
                 WHERE status IN ('assigned', 'running') AND lease_expires_at <= $1
                 ORDER BY lease_expires_at, id LIMIT $2"
            ),
            SelectBinds::TimeLimit(now, limit),
        )
        .await
    }

    async fn past_deadline(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Task>, RepoError> {
        let mut conn = self.pool().acquire().await.map_err(repo_error)?;
        select(
            &mut conn,
            &format!(
                "SELECT {COLUMNS} FROM tasks
                 WHERE status = 'pending' AND deadline <= $1
                 ORDER BY deadline, id LIMIT $2"
            ),
            SelectBinds::TimeLimit(now, limit),
        )
        .await
    }

    async fn held_by(&self, agent: AgentId) -> Result<Vec<Task>, RepoError> {
        let mut conn = self.pool().acquire().await.map_err(repo_error)?;
        select(
            &mut conn,
            &format!(
                "SELECT {COLUMNS} FROM tasks
                 WHERE status IN ('assigned', 'running') AND assigned_agent = $1
                 ORDER BY assigned_at, id"
            ),
            SelectBinds::Agent(agent),
        )
        .await
    }

    async fn count_by_status(&self) -> Result<TaskCounts, RepoError> {
        let rows = sqlx::query("SELECT status, count(*) AS n FROM tasks GROUP BY status")
            .fetch_all(self.pool())
            .await
            .map_err(repo_error)?;
        let mut counts = TaskCounts::default();
        for row in rows {
            let status: String = row.try_get("status").map_err(repo_error)?;
            let n: i64 = row.try_get("n").map_err(repo_error)?;
            let status = status
                .parse::<TaskStatus>()
                .map_err(|m| corrupt("task status", m))?;
            counts.add(status, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    async fn queue_depth(&self) -> Result<[u64; 10], RepoError> {
        let rows = sqlx::query(
            "SELECT priority, count(*) AS n FROM tasks WHERE status = 'pending' GROUP BY priority",
        )
        .fetch_all(self.pool())
        .await
        .map_err(repo_error)?;
        let mut depth = [0; 10];
        for row in rows {
            let priority: i16 = row.try_get("priority").map_err(repo_error)?;
            let n: i64 = row.try_get("n").map_err(repo_error)?;
            let slot = usize::try_from(priority - 1)
                .ok()
                .and_then(|i| depth.get_mut(i))
                .ok_or_else(|| corrupt("task priority", priority))?;
            *slot = u64::try_from(n).unwrap_or(0);
        }
        Ok(depth)
    }

    async fn outcomes(
        &self,
        agents: &[AgentId],
        since: DateTime<Utc>,
    ) -> Result<Vec<AgentOutcomes>, RepoError> {
        let ids: Vec<Uuid> = agents.iter().map(|a| a.as_uuid()).collect();
        let rows = sqlx::query(
            "SELECT assigned_agent,
                    count(*) FILTER (WHERE status = 'completed') AS completed,
                    count(*) FILTER (WHERE status = 'failed') AS failed,
                    avg(seconds) FILTER (WHERE status = 'completed') AS mean,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)
                        FILTER (WHERE status = 'completed') AS p50,
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds)
                        FILTER (WHERE status = 'completed') AS p95
             FROM (SELECT assigned_agent, status,
                          extract(epoch FROM completed_at - coalesce(started_at, assigned_at))::float8
                              AS seconds
                   FROM tasks
                   WHERE assigned_agent = ANY($1) AND status IN ('completed', 'failed')
                     AND completed_at >= $2) AS ended
             GROUP BY assigned_agent",
        )
        .bind(&ids)
        .bind(since)
        .fetch_all(self.pool())
        .await
        .map_err(repo_error)?;
        rows.iter()
            .map(|row| {
                let count = |c: &str| -> Result<u64, RepoError> {
                    let n: i64 = row.try_get(c).map_err(repo_error)?;
                    Ok(u64::try_from(n).unwrap_or(0))
                };
                let seconds = |c: &str| -> Result<Option<f64>, RepoError> {
                    row.try_get(c).map_err(repo_error)
                };
                let durations = match (seconds("mean")?, seconds("p50")?, seconds("p95")?) {
                    (Some(mean), Some(p50), Some(p95)) => Some(Durations { mean, p50, p95 }),
                    _ => None,
                };
                Ok(AgentOutcomes {
                    agent: AgentId(row.try_get("assigned_agent").map_err(repo_error)?),
                    completed: count("completed")?,
                    failed: count("failed")?,
                    durations,
                })
            })
            .collect()
    }

    async fn waiting_for_capabilities(&self, limit: u32) -> Result<Vec<Task>, RepoError> {
        // The kinds are written into the statement, so it matches the partial index on them.
        let kinds: Vec<String> = domain::WaitReason::CAPABILITY_GAP_KINDS
            .iter()
            .map(|k| format!("'{k}'"))
            .collect();
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE status = 'pending' AND wait_reason->>'kind' IN ({})
             ORDER BY created_at, id LIMIT $1",
            kinds.join(", ")
        ))
        .bind(i64::from(limit))
        .read_all(self.pool(), task_from_row)
        .await
    }
}
