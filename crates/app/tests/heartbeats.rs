//! Heartbeats that change nothing but the time are answered at once and written together:
//! a fleet's idle heartbeats cost one statement per flush. Any other heartbeat is written
//! before it is answered, and offline detection counts the recorded ones.

use std::sync::Arc;
use std::time::Duration;

use adapters_memory::{MemoryBus, MemoryStore};
use app::{spawn_background_jobs, Settings};
use domain::agent::HeartbeatStatus;
use domain::{AgentStatus, Role};
use ports::AgentRepository;
use testkit::builders::{agent_principal, new_agent, principal};
use testkit::ManualClock;

/// A replica on the embedded store with its background jobs running (offline detection aside),
/// following the events, and one registered agent.
struct Replica {
    store: Arc<MemoryStore>,
    clock: ManualClock,
    platform: app::Platform,
    jobs: app::BackgroundJobs,
    agent: domain::Agent,
    me: domain::Principal,
}

async fn replica() -> Replica {
    let store = Arc::new(MemoryStore::new());
    let clock = ManualClock::default();
    let settings = Settings {
        sweep_interval: Duration::from_secs(3600),
        ..Settings::default()
    };
    let platform = testkit::platform(
        store.clone(),
        Arc::new(MemoryBus::new()),
        clock.clone(),
        settings,
    );
    let jobs = spawn_background_jobs(platform.clone());
    tokio::task::yield_now().await; // the jobs start following events
    let operator = principal(Role::Operator);
    let agent = platform
        .register_agent(&operator, new_agent("worker", &["etl"]))
        .await
        .unwrap()
        .agent;
    let me = agent_principal(agent.id);
    Replica {
        store,
        clock,
        platform,
        jobs,
        agent,
        me,
    }
}

#[tokio::test(start_paused = true)]
async fn a_beat_that_changes_only_the_time_is_written_with_the_next_flush() {
    let Replica {
        store,
        clock,
        platform,
        jobs,
        agent,
        me,
    } = replica().await;
    // The first beat is written: this replica did not know the agent yet.
    clock.advance(chrono::Duration::seconds(5));
    let first = platform
        .agent_heartbeat(&me, agent.id, None, None)
        .await
        .unwrap();
    let stored = store.get(agent.id).await.unwrap();
    assert_eq!(stored.last_heartbeat, first.agent.last_heartbeat);

    // The next changes only the time: answered with it, stored with the next flush.
    clock.advance(chrono::Duration::seconds(5));
    let beat = platform
        .agent_heartbeat(&me, agent.id, None, None)
        .await
        .unwrap();
    let now = ports::Clock::now(&clock);
    assert_eq!(beat.agent.last_heartbeat, now);
    assert_eq!(beat.agent.status, AgentStatus::Idle);
    assert_eq!(
        store.get(agent.id).await.unwrap().last_heartbeat,
        first.agent.last_heartbeat,
        "not written yet"
    );
    assert_eq!(platform.flush_heartbeats().await.unwrap(), 1);
    assert_eq!(store.get(agent.id).await.unwrap().last_heartbeat, now);
    assert_eq!(
        platform.flush_heartbeats().await.unwrap(),
        0,
        "nothing left"
    );

    // A beat that changes the status is written before it is answered.
    let draining = platform
        .agent_heartbeat(&me, agent.id, Some(HeartbeatStatus::Draining), None)
        .await
        .unwrap();
    assert_eq!(draining.agent.status, AgentStatus::Draining);
    assert_eq!(
        store.get(agent.id).await.unwrap().status,
        AgentStatus::Draining
    );

    // Offline detection writes this replica's recorded beats first: an agent that beat just
    // before its deadline is not taken for silent.
    platform
        .agent_heartbeat(&me, agent.id, None, None)
        .await
        .unwrap(); // written (the status change was news), and known again
    clock.advance(chrono::Duration::seconds(85));
    platform
        .agent_heartbeat(&me, agent.id, None, None)
        .await
        .unwrap();
    clock.advance(chrono::Duration::seconds(10));
    assert_eq!(platform.detect_offline_agents().await.unwrap(), 0);
    assert_eq!(
        store.get(agent.id).await.unwrap().status,
        AgentStatus::Draining
    );

    // Stopping the replica writes what is left.
    clock.advance(chrono::Duration::seconds(1));
    let last = platform
        .agent_heartbeat(&me, agent.id, None, None)
        .await
        .unwrap();
    jobs.shutdown().await;
    assert_eq!(
        store.get(agent.id).await.unwrap().last_heartbeat,
        last.agent.last_heartbeat
    );
}

#[tokio::test(start_paused = true)]
async fn an_agent_is_answered_from_memory_for_at_most_30_s_then_its_beat_is_written() {
    let r = replica().await;
    let (store, clock, id) = (&r.store, &r.clock, r.agent.id);
    let beat = || async {
        r.platform
            .agent_heartbeat(&r.me, id, None, None)
            .await
            .unwrap()
    };
    clock.advance(chrono::Duration::seconds(5));
    beat().await; // written, and the agent remembered
    clock.advance(chrono::Duration::seconds(5));
    let remembered = beat().await;
    assert_ne!(
        store.get(id).await.unwrap().last_heartbeat,
        remembered.agent.last_heartbeat,
        "answered from memory, written later"
    );

    // Past the 30 s the memory lasts (flushes meanwhile write the recorded beat).
    tokio::time::advance(Duration::from_secs(31)).await;
    clock.advance(chrono::Duration::seconds(31));
    let late = beat().await;
    assert_eq!(
        store.get(id).await.unwrap().last_heartbeat,
        late.agent.last_heartbeat,
        "the agent is read and the beat written before it is answered"
    );
    r.jobs.shutdown().await;
}
