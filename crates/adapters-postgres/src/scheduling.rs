//! The scheduling pass, and every write of a set of changes (tasks, agents, pools allocated
//! from, events) in one transaction.
//!
//! A pass holds a transaction-scoped advisory lock, so passes never overlap across replicas; it
//! locks the pending tasks it reads, then the serving agents, then any pending tasks it reads
//! behind the head of the queue (`FOR UPDATE SKIP LOCKED` all: rows another transaction holds
//! are left out, and agents counted, rather than waited for, so this order cannot deadlock),
//! so its writes cannot lose a race and no task is assigned twice.

use chrono::{DateTime, Utc};
use domain::NewEvent;
use ports::{Changes, Decide, PassSize, RepoError, SchedulingSnapshot};
use uuid::Uuid;

use crate::agents::{lock_serving, update_agents};
use crate::error::repo_error;
use crate::events::commit_with;
use crate::resources::{lock_pools, mark_allocated};
use crate::rows::ReadRows;
use crate::task_rows::{
    claim_holders, held_from_row, insert_tasks, task_from_row, update_tasks, COLUMNS, HELD_COLUMNS,
};
use crate::workflows::update_executions;
use crate::PgStore;

/// The key of the advisory lock that serializes scheduling passes.
const SCHEDULER_LOCK: i64 = 0x5343_4845_4455_4c45; // "SCHEDULE"

/// Writes a set of changes in the transaction `tx` and commits it with their events: one
/// statement per kind of row. Agents before tasks, the order in which an agent's reports lock
/// them (a scheduling pass waits for no task or agent row, see above), so that a write taking
/// its locks as it goes cannot deadlock with them; then the executions of the steps it ends, moved in the same transaction (see
/// `workflows::follow`).
pub(crate) async fn write(
    store: &PgStore,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    changes: Changes,
) -> Result<Vec<NewEvent>, RepoError> {
    update_agents(&mut tx, &changes.agents).await?;
    update_tasks(&mut tx, &changes.tasks).await?;
    let follow = crate::workflows::follow(&mut tx, &changes).await?;
    let created: Vec<&domain::Task> = changes.created.iter().chain(&follow.created).collect();
    insert_tasks(&mut tx, &created).await?;
    update_tasks(&mut tx, &follow.cancelled).await?;
    let executions: Vec<domain::Execution> = changes
        .executions
        .into_iter()
        .chain(follow.executions)
        .collect();
    update_executions(&mut tx, &executions).await?;
    mark_allocated(&mut tx, &changes.allocated_from).await?;
    let mut events = changes.events;
    events.extend(follow.events);
    commit_with(store, tx, events).await
}

/// A query over the pending tasks with the ranking's parameters bound: `$1` now, `$2` the rows
/// wanted, `$3` to `$6` the policy's aging and urgency.
fn ranked_query<'q>(
    sql: &'q str,
    now: DateTime<Utc>,
    limit: u32,
    policy: &domain::scheduler::Policy,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(now)
        .bind(i64::from(limit))
        .bind(policy.aging_step.num_milliseconds().max(1) as f64 / 1000.0)
        .bind(policy.max_aging)
        .bind(policy.urgency_horizon.num_milliseconds().max(1) as f64 / 1000.0)
        .bind(policy.max_urgency)
}

/// One scheduling pass (see `TaskRepository::schedule`).
pub(crate) async fn pass(
    store: &PgStore,
    now: DateTime<Utc>,
    size: PassSize,
    policy: &domain::scheduler::Policy,
    decide: Decide,
) -> Result<Vec<NewEvent>, RepoError> {
    let mut tx = store.pool().begin().await.map_err(repo_error)?;
    crate::advisory_lock(&mut tx, SCHEDULER_LOCK, crate::Hold::Exclusive).await?;
    // The free slots are counted before anything is locked, and the pending tasks read and
    // locked before the agents: the agents, which agents' reports wait for, stay locked only
    // for the rest of the pass.
    let (serving, free): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(greatest(a.max_concurrent_tasks - (
                    SELECT count(*) FROM tasks t
                    WHERE t.assigned_agent = a.id AND t.status IN ('assigned', 'running')), 0)), 0)::bigint
         FROM agents a WHERE a.status IN ('idle', 'active', 'busy')",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(repo_error)?;
    let free = usize::try_from(free).unwrap_or(0);
    let limit = size.rows(free);
    let ranked = PassSize::ranks(free);
    // The same effective priority as `domain::scheduler::effective_priority`, so the batch
    // holds the tasks the scheduler would take first: aging and deadlines lift old and
    // urgent tasks into it however many higher-priority tasks wait. The queue is ranked on
    // IDs alone, keeping only the first `limit` as it goes, so a long queue costs a scan but no
    // sort of whole rows; only those are read whole and locked.
    let ready = "status = 'pending' AND not_before <= $1 AND (deadline IS NULL OR deadline > $1)";
    let ranking = "priority
                  + LEAST(GREATEST(extract(epoch FROM ($1 - created_at)), 0) / $3, $4)
                  + CASE WHEN deadline IS NULL THEN 0
                         WHEN extract(epoch FROM (deadline - $1)) < $5
                         THEN $6 * (1 - extract(epoch FROM (deadline - $1)) / $5)
                         ELSE 0 END DESC,
                  deadline NULLS LAST, created_at, id";
    // No slot free: the head of the queue as `tasks_queue_idx` keeps it, for the waiting
    // reasons (see `PassSize::ranks`), a short walk of the index where ranking looks at every
    // pending task. (The ranking's parameters are bound either way, typed, and then unused.)
    let order = if ranked {
        ranking
    } else {
        "priority DESC, created_at, id"
    };
    let head_sql = format!(
        "SELECT {COLUMNS} FROM tasks
         WHERE id IN (SELECT id FROM tasks WHERE {ready} ORDER BY {order} LIMIT $2) AND {ready}
         ORDER BY {order}
         FOR UPDATE SKIP LOCKED"
    );
    let mut pending = ranked_query(&head_sql, now, limit, policy)
        .read_all(&mut *tx, task_from_row)
        .await?;
    let agents = lock_serving(&mut tx).await?;
    let ids: Vec<Uuid> = agents.iter().map(|a| a.id.as_uuid()).collect();
    let held = sqlx::query(&format!(
        "SELECT {HELD_COLUMNS} FROM tasks
         WHERE status IN ('assigned', 'running') AND assigned_agent = ANY($1)"
    ))
    .bind(ids)
    .read_all(&mut *tx, held_from_row)
    .await?;
    let open = if ranked {
        PassSize::open_capabilities(&domain::scheduler::AgentCapacity::of_all(&agents, &held))
    } else {
        Vec::new()
    };
    if PassSize::looks_behind(&pending, limit, &open) {
        // The head holds tasks no agent with a slot free can take: the first tasks behind it
        // that one can are read too. Each agent's capabilities go as one string (capability
        // names never hold the separator, U+001F).
        let sets: std::collections::BTreeSet<String> =
            open.iter().map(|c| c.to_strings().join("\u{1f}")).collect();
        let read: Vec<Uuid> = pending.iter().map(|t| t.id.as_uuid()).collect();
        let behind_sql = format!(
            "SELECT {COLUMNS} FROM tasks
             WHERE id IN (SELECT id FROM tasks
                          WHERE {ready} AND NOT (id = ANY($7))
                            AND EXISTS (SELECT 1 FROM unnest($8::text[]) AS open(caps)
                                        WHERE required_capabilities
                                              <@ string_to_array(open.caps, chr(31)))
                          ORDER BY {ranking} LIMIT $2) AND {ready}
             ORDER BY {ranking}
             FOR UPDATE SKIP LOCKED"
        );
        let behind = ranked_query(&behind_sql, now, limit, policy)
            .bind(read)
            .bind(sets.into_iter().collect::<Vec<_>>())
            .read_all(&mut *tx, task_from_row)
            .await?;
        pending.extend(behind);
        pending = domain::scheduler::first_in_queue(&pending, usize::MAX, now, policy)
            .into_iter()
            .cloned()
            .collect();
    }
    // Pools are read (and locked) only when a task in the batch claims one.
    let (resources, claim_holders) = if pending.iter().any(|t| !t.resource_claims.is_empty()) {
        (lock_pools(&mut tx).await?, claim_holders(&mut tx).await?)
    } else {
        Default::default()
    };
    let left_out = usize::try_from(serving)
        .unwrap_or(0)
        .saturating_sub(agents.len());
    let snapshot = SchedulingSnapshot {
        pending,
        agents,
        held,
        resources,
        claim_holders,
        asked: limit,
        unranked: !ranked,
        left_out,
    };
    let changes = snapshot.decide(decide)?;
    write(store, tx, changes).await
}
