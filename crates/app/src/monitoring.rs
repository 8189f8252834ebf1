//! What operators watch: the platform-wide gauges behind `/metrics`, the dashboard summary,
//! and each agent's performance over a span of time, all read from the store.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::{Agent, AgentId, Cursor, Limit, Principal, ResourceStatus};
use ports::{AgentOutcomes, AgentQuery, StatusCounts, TaskCounts};

use crate::metrics::Gauges;
use crate::resources::ResourceView;
use crate::{AppError, Platform};

/// The dashboard's counters, each equal to what the matching filtered list returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub agents: StatusCounts,
    pub tasks: TaskCounts,
    /// Pools by status.
    pub resources: HashMap<ResourceStatus, u64>,
    /// Conflicts open, resolved and dismissed.
    pub conflicts: (u64, u64, u64),
    pub workflows: ports::WorkflowCounts,
}

/// The spans of time performance figures cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerformanceRange {
    FifteenMinutes,
    Hour,
    Day,
    Week,
}

impl PerformanceRange {
    pub fn name(self) -> &'static str {
        match self {
            Self::FifteenMinutes => "15m",
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    pub fn minutes(self) -> i64 {
        match self {
            Self::FifteenMinutes => 15,
            Self::Hour => 60,
            Self::Day => 24 * 60,
            Self::Week => 7 * 24 * 60,
        }
    }
}

/// One agent's figures over a span of time: what the tasks it ended there say, and its load now.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPerformance {
    pub agent: Agent,
    pub completed: u64,
    pub failed: u64,
    /// Completed over ended; `None` when none ended.
    pub success_rate: Option<f64>,
    /// Mean, median and 95th percentile run time of the completed ones, in seconds.
    pub durations: Option<ports::Durations>,
    /// Completions per minute over the span.
    pub throughput_per_minute: f64,
    /// Held tasks over the tasks it may hold at once.
    pub utilization: f64,
    pub timestamp: DateTime<Utc>,
}

impl AgentPerformance {
    fn of(
        agent: Agent,
        outcomes: Option<AgentOutcomes>,
        range: PerformanceRange,
        now: DateTime<Utc>,
    ) -> Self {
        let (completed, failed, durations) =
            outcomes.map_or((0, 0, None), |o| (o.completed, o.failed, o.durations));
        let ended = completed + failed;
        Self {
            completed,
            failed,
            success_rate: (ended > 0).then(|| completed as f64 / ended as f64),
            durations,
            throughput_per_minute: completed as f64 / range.minutes() as f64,
            utilization: f64::from(agent.current_tasks)
                / f64::from(agent.max_concurrent_tasks.max(1)),
            timestamp: now,
            agent,
        }
    }
}

fn forbidden(actor: &Principal, what: &str) -> AppError {
    AppError::Forbidden(format!("role {} may not read {what}", actor.role))
}

/// How long reading the dashboard's counters may take.
const SUMMARY_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How long reading the gauges may take: a scrape must not hang on a store that is away.
const GAUGES_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

impl Platform {
    /// The platform-wide gauges, read from the store at most once a second however often
    /// they are asked for.
    pub async fn gauges(&self) -> Result<Gauges, AppError> {
        self.readings
            .gauges
            .get(|| async {
                let read = async {
                    tokio::join!(
                        self.deps.agents.count_by_status(),
                        self.deps.tasks.queue_depth()
                    )
                };
                let (agents, queue) =
                    tokio::time::timeout(GAUGES_WITHIN, read)
                        .await
                        .map_err(|_| {
                            AppError::Unavailable("the store did not answer in time".into())
                        })?;
                Ok(Gauges {
                    agents: agents.map_err(|e| AppError::from_repo("Agent", e))?,
                    queue: queue.map_err(|e| AppError::from_repo("Task", e))?,
                })
            })
            .await
    }

    /// The dashboard's counters, as of the call. Callers who ask while the counters are being
    /// read wait for the next reading and share it (the task counts read every task row).
    pub async fn summary(&self, actor: &Principal) -> Result<Summary, AppError> {
        if !actor.can_read_all() {
            return Err(forbidden(actor, "the dashboard"));
        }
        let read = || async {
            tokio::time::timeout(SUMMARY_WITHIN, self.read_summary())
                .await
                .unwrap_or_else(|_| {
                    Err(AppError::Unavailable(
                        "the store did not answer in time".into(),
                    ))
                })
        };
        self.readings.summary.get(read).await
    }

    async fn read_summary(&self) -> Result<Summary, AppError> {
        let (agents, tasks, pools, holders, conflicts, workflows) = tokio::join!(
            self.deps.agents.count_by_status(),
            self.deps.tasks.count_by_status(),
            self.deps.resources.list_resources(None),
            self.deps.resources.claim_holders(),
            self.deps.conflicts.count_conflicts(),
            self.deps.workflows.workflow_counts(),
        );
        let repo = |what| move |e| AppError::from_repo(what, e);
        let holders = holders.map_err(repo("Resource"))?;
        let mut resources = HashMap::new();
        for pool in pools.map_err(repo("Resource"))? {
            *resources
                .entry(ResourceView::of(pool, &holders).status)
                .or_default() += 1;
        }
        Ok(Summary {
            agents: agents.map_err(repo("Agent"))?,
            tasks: tasks.map_err(repo("Task"))?,
            resources,
            conflicts: conflicts.map_err(repo("Conflict"))?,
            workflows: workflows.map_err(repo("Workflow"))?,
        })
    }

    /// The performance of one agent (`NotFound` if there is none, or the caller may not see
    /// it), or, without `agent`, of a page of agents, newest first. An agent caller sees only
    /// its own.
    pub async fn performance(
        &self,
        actor: &Principal,
        agent: Option<AgentId>,
        range: PerformanceRange,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<crate::Page<AgentPerformance>, AppError> {
        let agents = match agent.or(actor.agent_id.filter(|_| !actor.can_read_all())) {
            Some(id) => crate::Page {
                items: vec![self.get_agent(actor, id).await?],
                next: None,
            },
            None if actor.can_read_all() => {
                let query = AgentQuery {
                    after,
                    ..AgentQuery::default()
                };
                self.list_agents(actor, query, limit).await?
            }
            None => return Err(forbidden(actor, "agents' performance")),
        };
        let now = self.deps.clock.now();
        let since = now - chrono::Duration::minutes(range.minutes());
        let ids: Vec<AgentId> = agents.items.iter().map(|a| a.id).collect();
        let mut outcomes: HashMap<AgentId, AgentOutcomes> = self
            .deps
            .tasks
            .outcomes(&ids, since)
            .await
            .map_err(|e| AppError::from_repo("Task", e))?
            .into_iter()
            .map(|o| (o.agent, o))
            .collect();
        Ok(agents.map(|agent| {
            let found = outcomes.remove(&agent.id);
            AgentPerformance::of(agent, found, range, now)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_range_is_named_as_the_query_spells_it_and_spans_its_minutes() {
        let ranges = [
            PerformanceRange::FifteenMinutes,
            PerformanceRange::Hour,
            PerformanceRange::Day,
            PerformanceRange::Week,
        ];
        let named: Vec<(&str, i64)> = ranges.iter().map(|r| (r.name(), r.minutes())).collect();
        assert_eq!(
            named,
            [("15m", 15), ("1h", 60), ("24h", 1440), ("7d", 10080)]
        );
    }
}
