//! Agent use cases: register, list, get, update, deregister, heartbeat, offline detection.

use chrono::{DateTime, Utc};
use domain::credential::VISIBLE_PREFIX_CHARS;
use domain::{
    Agent, AgentId, AgentPatch, ApiKey, ApiKeyId, Cursor, EventKind, HeartbeatStatus, Limit,
    Metadata, NewAgent, NewEvent, Principal, Role,
};
use ports::AgentQuery;

use crate::auth::{hash_key, new_api_key};
use crate::{events, require, Access, AppError, Attempt, Platform};

/// Most events handed over and published at a time.
const RELAY_BATCH: u32 = 1000;
/// How many stale agents one offline-detection pass loads at a time.
const SWEEP_BATCH: u32 = 500;

/// How often heartbeats that change nothing but the time are written, all at once: an idle
/// fleet's heartbeats then cost one statement per flush, not one transaction per beat. Such a
/// beat is answered at once and stored within this long (a replica that dies first loses at
/// most this much of its agents' liveness; offline detection waits far longer).
pub const HEARTBEAT_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// Heartbeats recorded but not yet written: the latest time of each agent.
#[derive(Debug, Default)]
pub(crate) struct Beats(std::sync::Mutex<std::collections::HashMap<AgentId, DateTime<Utc>>>);

impl Beats {
    pub(crate) fn record(&self, agent: AgentId, at: DateTime<Utc>) {
        let mut beats = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let latest = beats.entry(agent).or_insert(at);
        *latest = (*latest).max(at);
    }

    fn take(&self) -> Vec<(AgentId, DateTime<Utc>)> {
        let mut beats = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *beats).into_iter().collect()
    }
}

/// The answer to a heartbeat: the agent as it is now, and the tasks it holds.
#[derive(Debug, Clone)]
pub struct Beat {
    pub agent: Agent,
    pub tasks: Vec<domain::Task>,
}

/// A registration's result: the agent and its one-time credential.
#[derive(Debug, Clone)]
pub struct RegisteredAgent {
    pub agent: Agent,
    /// The agent's API key, shown once and stored only as a hash.
    pub agent_key: String,
}

impl Platform {
    /// Registers an agent and issues its `agent`-role API key, both in one transaction.
    pub async fn register_agent(
        &self,
        actor: &Principal,
        new: NewAgent,
    ) -> Result<RegisteredAgent, AppError> {
        require(actor, Access::Change, "agents")?;
        let now = self.deps.clock.now();
        let agent = Agent::register(new, AgentId(self.deps.ids.new_id()), now);
        let agent_key = new_api_key(self.deps.ids.as_ref());
        let key = ApiKey {
            id: ApiKeyId(self.deps.ids.new_id()),
            name: format!("agent:{}", agent.name),
            prefix: agent_key[..VISIBLE_PREFIX_CHARS].to_owned(),
            hash: hash_key(&agent_key),
            role: Role::Agent,
            agent_id: Some(agent.id),
            created_at: now,
            expires_at: None,
            revoked_at: None,
        };
        let stored = self
            .deps
            .agents
            .insert(&agent, &key, vec![events::agent_registered(&agent)])
            .await
            .map_err(|e| AppError::from_repo("Agent", e))?;
        self.publish(&stored).await;
        self.wake_for_room(); // new capacity: waiting tasks may fit now
        tracing::info!(agent_id = %agent.id, name = %agent.name, "agent registered");
        Ok(RegisteredAgent { agent, agent_key })
    }

    /// Lists agents, newest first. Agents (the role) may not list the fleet.
    pub async fn list_agents(
        &self,
        actor: &Principal,
        mut query: AgentQuery,
        limit: Limit,
    ) -> Result<crate::Page<Agent>, AppError> {
        if !actor.can_read_all() {
            return Err(AppError::Forbidden(format!(
                "role {} may not list agents",
                actor.role
            )));
        }
        query.limit = limit.get() + 1;
        let rows = self
            .deps
            .agents
            .list(&query)
            .await
            .map_err(|e| AppError::from_repo("Agent", e))?;
        Ok(crate::Page::of(rows, limit, |a| Cursor {
            created_at: a.created_at,
            id: a.id.as_uuid(),
        }))
    }

    /// One agent. An agent caller sees only itself; any other ID is `NotFound` to it.
    pub async fn get_agent(&self, actor: &Principal, id: AgentId) -> Result<Agent, AppError> {
        if !actor.can_see_agent(id) {
            return Err(AppError::NotFound("Agent"));
        }
        self.deps
            .agents
            .get(id)
            .await
            .map_err(|e| AppError::from_repo("Agent", e))
    }

    /// Applies an operator's update.
    pub async fn update_agent(
        &self,
        actor: &Principal,
        id: AgentId,
        patch: AgentPatch,
    ) -> Result<Agent, AppError> {
        require(actor, Access::Change, "agents")?;
        let reason = format!("changed by {}", actor.subject);
        let agent = self
            .modify_agent(id, |agent, now| {
                let outcome = agent
                    .apply(patch.clone(), now)
                    .map_err(|e| AppError::Conflict(e.0))?;
                let mut out = Vec::new();
                if !outcome.fields.is_empty() {
                    out.push(events::agent_updated(agent, &outcome.fields, now));
                }
                if let Some(change) = outcome.status {
                    out.push(events::agent_status_changed(agent, change, &reason, now));
                }
                Ok(out)
            })
            .await?;
        // More slots or resources, or an agent back in service, may place waiting tasks.
        self.wake_for_room();
        Ok(agent)
    }

    /// Deregisters an agent and revokes its credentials.
    pub async fn deregister_agent(&self, actor: &Principal, id: AgentId) -> Result<(), AppError> {
        require(actor, Access::Change, "agents")?;
        // Its work goes back to the queue first; if the delete then fails, nothing is lost.
        self.release_held(id, "agent deregistered", false).await?;
        crate::until_won("agent", || async {
            let agent = self
                .deps
                .agents
                .get(id)
                .await
                .map_err(|e| AppError::from_repo("Agent", e))?;
            let now = self.deps.clock.now();
            let event = events::agent_deregistered(&agent, now);
            let written = self.deps.agents.delete(&agent, now, vec![event]).await;
            let Attempt::Won(stored) =
                Attempt::of(written).map_err(|e| AppError::from_repo("Agent", e))?
            else {
                return Ok(Attempt::Lost);
            };
            // Its keys are revoked with it.
            self.trusted_keys.forget_all();
            self.publish(&stored).await;
            Ok(Attempt::Won(()))
        })
        .await?;
        // A pass that ran between the release and the delete may have given it work; that
        // goes back too.
        self.release_held(id, "agent deregistered", false).await?;
        tracing::info!(agent_id = %id, "agent deregistered");
        Ok(())
    }

    /// Records an agent's heartbeat: the agent itself, or an operator on its behalf.
    pub async fn agent_heartbeat(
        &self,
        actor: &Principal,
        id: AgentId,
        status: Option<HeartbeatStatus>,
        metadata: Option<Metadata>,
    ) -> Result<Beat, AppError> {
        if !actor.can_act_for_agent(id) {
            return Err(AppError::Forbidden(
                "a heartbeat may be sent only by the agent itself or an operator".into(),
            ));
        }
        let polls = &self.signals.polls;
        if metadata.is_none() {
            if let Some(mut agent) = polls.known_agent(id) {
                let now = self.deps.clock.now();
                if let Ok(None) = agent.heartbeat(now, status, None) {
                    // Nothing but the time changes: recorded, and written with every other
                    // such beat within `HEARTBEAT_FLUSH`.
                    self.signals.beats.record(id, now);
                    let (tasks, _) = self.held_tasks_known(id).await?;
                    return Ok(Beat { agent, tasks });
                }
            }
        }
        let epoch = polls.epoch();
        let agent = self
            .modify_agent(id, |agent, now| {
                let change = agent.heartbeat(now, status, metadata.as_ref())?;
                Ok(change
                    .map(|c| events::agent_status_changed(agent, c, "heartbeat", now))
                    .into_iter()
                    .collect())
            })
            .await?;
        polls.found_agent(&agent, epoch);
        if agent.status.is_serving() {
            self.wake_for_room(); // an agent back in service may take waiting tasks
        }
        let (tasks, _) = self.held_tasks_known(agent.id).await?;
        Ok(Beat { agent, tasks })
    }

    /// Writes the heartbeats recorded since the last flush (see [`Beats`]), all in one
    /// statement. Returns how many agents it wrote; on failure they are kept for the next.
    pub async fn flush_heartbeats(&self) -> Result<u64, AppError> {
        let beats = self.signals.beats.take();
        if beats.is_empty() {
            return Ok(0);
        }
        let written = self.deps.agents.record_heartbeats(&beats).await;
        self.agents_released();
        match written {
            Ok(written) => Ok(written),
            Err(e) => {
                for (agent, at) in beats {
                    self.signals.beats.record(agent, at);
                }
                Err(AppError::from_repo("Agent", e))
            }
        }
    }

    /// Marks every agent that missed its heartbeats offline. Returns how many were marked.
    /// Safe to run on every replica at once: each change is a versioned write.
    pub async fn detect_offline_agents(&self) -> Result<usize, AppError> {
        // This replica's recorded heartbeats count: written first.
        self.flush_heartbeats().await?;
        let after = self.settings.agent_offline_after;
        let mut marked = 0;
        loop {
            let cutoff = self.deps.clock.now() - after;
            let stale = self
                .deps
                .agents
                .heartbeat_before(cutoff, SWEEP_BATCH)
                .await
                .map_err(|e| AppError::from_repo("Agent", e))?;
            let batch_len = stale.len();
            let marked_before = marked;
            for agent in stale {
                let result = self
                    .modify_agent(agent.id, |agent, now| {
                        Ok(agent
                            .detect_offline(now, after)
                            .map(|c| {
                                events::agent_status_changed(agent, c, "missed heartbeats", now)
                            })
                            .into_iter()
                            .collect())
                    })
                    .await;
                match result {
                    Ok(a) if a.status == domain::AgentStatus::Offline => {
                        marked += 1;
                        self.release_held(a.id, "agent went offline", true).await?;
                    }
                    // Gone or changed meanwhile: nothing left to do for this one.
                    Ok(_) | Err(AppError::NotFound(_)) => {}
                    // A store outage ends the pass; the next one picks up where this stopped.
                    Err(e @ AppError::Unavailable(_)) => return Err(e),
                    // Anything else concerns this agent only; the others still get their turn.
                    Err(e) => {
                        tracing::warn!(agent_id = %agent.id, error = %e, "cannot mark agent offline")
                    }
                }
            }
            // A short batch was the last one; a full batch that marked nothing would only
            // come back unchanged.
            if batch_len < SWEEP_BATCH as usize || marked == marked_before {
                return Ok(marked);
            }
        }
    }

    /// Load, decide, save with a version check, publish; retried when another writer won the race.
    /// `decide` returns the events its change causes; it is not called again after a success.
    pub(crate) async fn modify_agent<F>(&self, id: AgentId, decide: F) -> Result<Agent, AppError>
    where
        F: Fn(&mut Agent, DateTime<Utc>) -> Result<Vec<NewEvent>, AppError>,
    {
        crate::until_won("agent", || async {
            let mut agent = self
                .deps
                .agents
                .get(id)
                .await
                .map_err(|e| AppError::from_repo("Agent", e))?;
            let before = agent.clone();
            let events = decide(&mut agent, self.deps.clock.now())?;
            if agent == before {
                return Ok(Attempt::Won(agent)); // nothing changed: nothing to write
            }
            let written = self.deps.agents.update(&agent, events).await;
            let Attempt::Won(stored) =
                Attempt::of(written).map_err(|e| AppError::from_repo("Agent", e))?
            else {
                return Ok(Attempt::Lost);
            };
            self.publish(&stored).await;
            agent.version += 1;
            Ok(Attempt::Won(agent))
        })
        .await
    }

    /// Hands what a write stored over for delivery: takes every event this replica's writes
    /// numbered and have not been published yet (this write's and any other's, see
    /// `EventLog::sequence`) and publishes them in `seq` order, before it returns. Concurrent
    /// writes share one relay (see `Relay`). The relay runs as a task of its own, so a request
    /// dropped mid-way (its client gone) cannot leave events unpublished. A failure here loses
    /// nothing: the events are in the log, and the background relay publishes them later.
    pub(crate) async fn publish(&self, written: &[NewEvent]) {
        use std::sync::atomic::Ordering::SeqCst;
        if written.is_empty() {
            return;
        }
        self.metrics.observe(written);
        // Tasks queued by this write (a submission, or steps a workflow's write made ready)
        // are worth a pass.
        if written.iter().any(|e| e.kind == EventKind::TaskSubmitted) {
            self.wake_for_work();
        }
        // Long polls on this replica of the agents these events are about look again at once;
        // those on other replicas hear of them through the bus.
        self.wake_polls(written.iter().map(|e| e.agent_id));
        // This write has committed: any relay that starts from now on hands its events over.
        let mine = self.signals.relay.asked.fetch_add(1, SeqCst) + 1;
        let platform = self.clone();
        let relay = tokio::spawn(async move {
            let relay = &platform.signals.relay;
            let _turn = relay.turn.lock().await;
            // A relay that ran while this write waited started after it committed, or failed
            // after it did: either way there is nothing more to try now.
            if relay.served.load(SeqCst) >= mine || relay.failed.load(SeqCst) >= mine {
                return;
            }
            let asked = relay.asked.load(SeqCst);
            match platform.sequence_and_publish(Relayed::Written).await {
                Ok(_) => {
                    relay.served.fetch_max(asked, SeqCst);
                }
                Err(e) => {
                    // The writes waiting behind this one would fail alike; they return at once.
                    relay.failed.fetch_max(asked, SeqCst);
                    tracing::warn!(error = %e, "cannot publish events now; the background relay will");
                }
            }
        });
        let _ = relay.await;
    }

    /// Publishes the events this replica's writes numbered (see `EventLog::sequence`), until
    /// none are left, as the one relay in flight on this replica. Returns how many.
    pub async fn relay_events(&self) -> Result<usize, AppError> {
        use std::sync::atomic::Ordering::SeqCst;
        let relay = &self.signals.relay;
        let _turn = relay.turn.lock().await;
        let asked = relay.asked.load(SeqCst);
        let total = self.sequence_and_publish(Relayed::All).await?;
        relay.served.fetch_max(asked, SeqCst);
        Ok(total)
    }

    /// Publishes the events the store hands over, until none are left. Returns how many.
    async fn sequence_and_publish(&self, relayed: Relayed) -> Result<usize, AppError> {
        let mut total = 0;
        loop {
            let log = &self.deps.event_log;
            let batch = match relayed {
                Relayed::Written => log.hand_over(RELAY_BATCH).await,
                Relayed::All => log.sequence(RELAY_BATCH).await,
            }
            .map_err(|e| AppError::from_repo("Event", e))?;
            if !batch.is_empty() {
                self.deps.bus.publish(&batch).await;
            }
            total += batch.len();
            if batch.len() < RELAY_BATCH as usize {
                return Ok(total);
            }
        }
    }
}

/// What a relay hands over.
#[derive(Debug, Clone, Copy)]
enum Relayed {
    /// What this replica's writes numbered: right after a write.
    Written,
    /// That, and events an earlier version left without a number: the periodic relay.
    All,
}
