//! Tasks in PostgreSQL: the task repository. The rows are in `crate::task_rows`; the
//! scheduling pass, and every write of a set of changes, in `crate::scheduling`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{AgentId, NewEvent, Task, TaskId, TaskStatus};
use ports::{Changes, Decide, IdempotencyRecord, RepoError, TaskCounts, TaskQuery, TaskRepository};
use sqlx::Row;

use crate::error::{corrupt, repo_error};
use crate::events::commit_with;
use crate::rows::ReadRows;
use crate::task_rows::{bind_task, select, task_from_row, SelectBinds, COLUMNS};
use crate::PgStore;

#[async_trait]
impl TaskRepository for PgStore {
    async fn insert(
        &self,
        task: &Task,
        events: Vec<NewEvent>,
        idempotency: Option<(&IdempotencyRecord, chrono::Duration)>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        if let Some((record, lifetime)) = idempotency {
            // Takes the key, or a stale record of it; a live one stops the insert.
            let taken = sqlx::query(
                "INSERT INTO idempotency_keys (key, fingerprint, task_id, created_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE
                     SET fingerprint = EXCLUDED.fingerprint, task_id = EXCLUDED.task_id,
                         created_at = EXCLUDED.created_at
                     WHERE idempotency_keys.created_at < $5",
            )
            .bind(&record.key)
            .bind(&record.fingerprint)
            .bind(record.task.as_uuid())
            .bind(record.created_at)
            .bind(record.created_at - lifetime)
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?;
            if taken.rows_affected() == 0 {
                return Err(RepoError::Conflict("idempotency key in use".into()));
            }
        }
        bind_task!(
            sqlx::query(&format!(
                "INSERT INTO tasks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26,
                 $27, $28, $29, $30, $31, $32, 0)"
            )),
            task
        )
        .execute(&mut *tx)
        .await
        .map_err(repo_error)?;
        commit_with(tx, events).await
    }

    async fn get(&self, id: TaskId) -> Result<Task, RepoError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id.as_uuid())
            .read_one(self.pool(), task_from_row)
            .await
    }

    async fn find_idempotency(
        &self,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, RepoError> {
        let row = sqlx::query(
            "SELECT key, fingerprint, task_id, created_at FROM idempotency_keys
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
                task: TaskId(row.try_get("task_id").map_err(repo_error)?),
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
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        let stored = crate::scheduling::write(&mut tx, changes).await?;
        tx.commit().await.map_err(repo_error)?;
        Ok(stored)
    }

    async fn schedule(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        policy: &domain::scheduler::Policy,
        decide: Decide,
    ) -> Result<Vec<NewEvent>, RepoError> {
        crate::scheduling::pass(self, now, limit, policy, decide).await
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
