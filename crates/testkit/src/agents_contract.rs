//! The agent contract: what every implementation of `AgentRepository` must do.

use chrono::{DateTime, Utc};
use domain::{AgentStatus, Capability, EventKind, KeyHash, NewEvent};
use ports::{AgentQuery, RepoError};
use serde_json::json;

use crate::builders::{agent, agent_key};
use crate::StoreUnderTest;

use crate::contract::numbered;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 123_456_000).expect("valid time")
}

fn note(n: u64, agent: &domain::Agent) -> NewEvent {
    NewEvent::about_agent(
        EventKind::AgentUpdated,
        agent.id,
        json!({"n": n}),
        agent.updated_at,
    )
}

pub async fn insert_then_get_round_trips(store: StoreUnderTest) {
    let a = agent(1, "worker-1", &["gpu", "data_processing"], t(0));
    let events = vec![NewEvent::about_agent(
        EventKind::AgentRegistered,
        a.id,
        json!({"agent_id": a.id}),
        t(0),
    )];
    let stored = store
        .agents
        .insert(&a, &agent_key(1, a.id, t(0)), events)
        .await
        .expect("insert");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].kind, EventKind::AgentRegistered);
    let numbered = store.events.sequence(100).await.unwrap();
    assert_eq!(numbered.len(), 1);
    assert!(numbered[0].seq > 0, "events get a positive seq");
    assert_eq!(numbered[0].agent_id, Some(a.id));

    let back = store.agents.get(a.id).await.expect("get");
    assert_eq!(
        back, a,
        "every field round-trips, timestamps to the microsecond"
    );
    assert_eq!(back.version, 0);
    assert_eq!(
        serde_json::Value::Object(back.resources.to_json()),
        json!({"cpu": 2, "memory": "1Gi"}),
        "quantities keep the client's spelling"
    );
}

pub async fn get_of_an_unknown_agent_is_not_found(store: StoreUnderTest) {
    let missing = agent(99, "ghost", &[], t(0));
    assert_eq!(store.agents.get(missing.id).await, Err(RepoError::NotFound));
}

pub async fn inserting_the_same_agent_twice_is_a_conflict(store: StoreUnderTest) {
    let a = agent(1, "worker-1", &[], t(0));
    store
        .agents
        .insert(&a, &agent_key(1, a.id, t(0)), vec![])
        .await
        .expect("first insert");
    let again = store
        .agents
        .insert(&a, &agent_key(2, a.id, t(0)), vec![note(1, &a)])
        .await;
    assert!(matches!(again, Err(RepoError::Conflict(_))), "{again:?}");
    assert!(
        numbered(&store)
            .await
            .latest_events(10)
            .await
            .unwrap()
            .is_empty(),
        "a refused insert stores no events"
    );
}

pub async fn update_bumps_the_version_and_stores_its_events(store: StoreUnderTest) {
    let mut a = agent(1, "worker-1", &[], t(0));
    store
        .agents
        .insert(&a, &agent_key(1, a.id, t(0)), vec![])
        .await
        .unwrap();
    a.status = AgentStatus::Draining;
    a.updated_at = t(5);
    let stored = store
        .agents
        .update(&a, vec![note(1, &a), note(2, &a)])
        .await
        .expect("update");
    assert_eq!(stored.len(), 2);
    let numbered = store.events.sequence(100).await.unwrap();
    assert_eq!(numbered.len(), 2);
    assert!(numbered[0].seq < numbered[1].seq);
    assert_eq!(*numbered[0].data, serde_json::json!({"n": 1}));
    let back = store.agents.get(a.id).await.unwrap();
    assert_eq!(back.version, 1);
    assert_eq!(back.status, AgentStatus::Draining);
    assert_eq!(back.updated_at, t(5));
}

pub async fn a_stale_update_is_a_conflict_and_writes_nothing(store: StoreUnderTest) {
    let a = agent(1, "worker-1", &[], t(0));
    store
        .agents
        .insert(&a, &agent_key(1, a.id, t(0)), vec![])
        .await
        .unwrap();
    let mut first = a.clone();
    first.max_concurrent_tasks = 7;
    store
        .agents
        .update(&first, vec![note(1, &first)])
        .await
        .unwrap();

    let mut stale = a.clone(); // still at version 0
    stale.max_concurrent_tasks = 9;
    let result = store.agents.update(&stale, vec![note(2, &stale)]).await;
    assert!(matches!(result, Err(RepoError::Conflict(_))), "{result:?}");
    let back = store.agents.get(a.id).await.unwrap();
    assert_eq!(back.max_concurrent_tasks, 7);
    assert_eq!(back.version, 1);
    let events = numbered(&store).await.latest_events(10).await.unwrap();
    assert_eq!(events.len(), 1, "the losing write stored no event");
}

pub async fn update_of_a_missing_agent_is_not_found(store: StoreUnderTest) {
    let a = agent(1, "worker-1", &[], t(0));
    assert_eq!(
        store.agents.update(&a, vec![note(1, &a)]).await,
        Err(RepoError::NotFound)
    );
    assert!(numbered(&store)
        .await
        .latest_events(10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn list_filters_orders_newest_first_and_pages(store: StoreUnderTest) {
    let mut ids = Vec::new();
    // Agent number n is registered at t(n) with ID 10 - n: IDs fall as time rises, so the
    // order is by time, not by ID.
    for n in 1..=5u128 {
        let caps: &[&str] = if n % 2 == 0 { &["gpu"] } else { &["cpu_only"] };
        let mut a = agent(10 - n, &format!("worker-{n}"), caps, t(n as i64));
        if n == 5 {
            a.status = AgentStatus::Offline;
        }
        store
            .agents
            .insert(&a, &agent_key(10 - n, a.id, t(0)), vec![])
            .await
            .unwrap();
        ids.push(a.id);
    }
    // Two agents created at the same instant are ordered by ID, descending.
    let twin = agent(11, "twin", &["gpu"], t(5));
    store
        .agents
        .insert(&twin, &agent_key(11, twin.id, t(0)), vec![])
        .await
        .unwrap();

    let all = |limit| AgentQuery {
        limit,
        ..AgentQuery::default()
    };
    let listed: Vec<_> = store
        .agents
        .list(&all(100))
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(listed, [twin.id, ids[4], ids[3], ids[2], ids[1], ids[0]]);

    let gpu = AgentQuery {
        capability: Some(Capability::parse("gpu").unwrap()),
        ..all(100)
    };
    let listed: Vec<_> = store
        .agents
        .list(&gpu)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(listed, [twin.id, ids[3], ids[1]]);

    let offline = AgentQuery {
        status: Some(AgentStatus::Offline),
        ..all(100)
    };
    let listed = store.agents.list(&offline).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, ids[4]);

    // Paging by two visits every agent exactly once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .agents
            .list(&AgentQuery { after, ..all(2) })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        let last = page.last().unwrap();
        after = Some(domain::Cursor {
            created_at: last.created_at,
            id: last.id.as_uuid(),
        });
        seen.extend(page.into_iter().map(|a| a.id));
    }
    assert_eq!(seen, [twin.id, ids[4], ids[3], ids[2], ids[1], ids[0]]);
}

pub async fn delete_removes_the_agent_and_revokes_its_keys(store: StoreUnderTest) {
    let a = agent(1, "worker-1", &[], t(0));
    let key = agent_key(1, a.id, t(0));
    store.agents.insert(&a, &key, vec![]).await.unwrap();

    let mut moved = a.clone();
    moved.max_concurrent_tasks = 3;
    store.agents.update(&moved, vec![]).await.unwrap();
    let stale = store.agents.delete(&a, t(9), vec![note(1, &a)]).await;
    assert!(matches!(stale, Err(RepoError::Conflict(_))), "{stale:?}");
    assert!(
        store.agents.get(a.id).await.is_ok(),
        "a stale delete removes nothing"
    );

    let current = store.agents.get(a.id).await.unwrap();
    let stored = store
        .agents
        .delete(&current, t(10), vec![note(2, &current)])
        .await
        .expect("delete");
    assert_eq!(stored.len(), 1);
    assert_eq!(store.agents.get(a.id).await, Err(RepoError::NotFound));
    let revoked = store
        .credentials
        .find_api_key(&key.hash)
        .await
        .unwrap()
        .expect("the key record stays, revoked");
    assert_eq!(revoked.revoked_at, Some(t(10)));
    assert!(!revoked.is_usable(t(11)));
    assert_eq!(
        store.agents.delete(&current, t(11), vec![]).await,
        Err(RepoError::NotFound)
    );
}

pub async fn heartbeat_before_finds_only_silent_online_agents(store: StoreUnderTest) {
    let statuses = [
        (1, AgentStatus::Idle, 10),     // silent and online: found, after 2
        (2, AgentStatus::Busy, 0),      // silent and online: found first, the longest silent
        (3, AgentStatus::Draining, 20), // silent and draining: found
        (4, AgentStatus::Idle, 100),    // heard from recently
        (5, AgentStatus::Offline, 0),   // already offline
        (6, AgentStatus::Suspended, 0), // suspended agents are not expected to beat
    ];
    for (n, status, beat) in statuses {
        let mut a = agent(n, &format!("worker-{n}"), &[], t(0));
        a.status = status;
        a.last_heartbeat = t(beat);
        store
            .agents
            .insert(&a, &agent_key(10 - n, a.id, t(0)), vec![])
            .await
            .unwrap();
    }
    let found: Vec<u128> = store
        .agents
        .heartbeat_before(t(50), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id.as_uuid().as_u128())
        .collect();
    assert_eq!(found, [2, 1, 3], "oldest heartbeat first");
    let limited = store.agents.heartbeat_before(t(50), 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    let at_cutoff: Vec<u128> = store
        .agents
        .heartbeat_before(t(10), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id.as_uuid().as_u128())
        .collect();
    assert_eq!(at_cutoff, [2, 1], "the cutoff is inclusive");
}

pub async fn recorded_heartbeats_move_only_the_time_forward(store: StoreUnderTest) {
    let mut a = agent(1, "worker-1", &["etl"], t(0));
    a.status = AgentStatus::Busy;
    a.last_heartbeat = t(10);
    a.updated_at = t(10);
    let b = agent(2, "worker-2", &[], t(0));
    for x in [&a, &b] {
        let n = x.id.as_uuid().as_u128();
        store
            .agents
            .insert(x, &agent_key(n, x.id, t(0)), vec![])
            .await
            .unwrap();
    }
    let gone = domain::AgentId(uuid::Uuid::from_u128(9));
    // Two beats of one agent (the later counts), one older than what is stored, one of an
    // agent that does not exist.
    let written = store
        .agents
        .record_heartbeats(&[(a.id, t(30)), (gone, t(30)), (a.id, t(20)), (b.id, t(-5))])
        .await
        .unwrap();
    assert_eq!(written, 1, "only the agent whose time moved");
    let stored = store.agents.get(a.id).await.unwrap();
    assert_eq!((stored.last_heartbeat, stored.updated_at), (t(30), t(30)));
    assert_eq!(stored.version, a.version + 1);
    let mut unchanged = stored.clone();
    unchanged.last_heartbeat = a.last_heartbeat;
    unchanged.updated_at = a.updated_at;
    unchanged.version = a.version;
    assert_eq!(unchanged, a, "nothing else changed");
    assert_eq!(
        store.agents.get(b.id).await.unwrap(),
        b,
        "an older beat changes nothing"
    );
    assert_eq!(
        store.agents.get(gone).await,
        Err(RepoError::NotFound),
        "no agent is created"
    );
    assert_eq!(store.agents.record_heartbeats(&[]).await.unwrap(), 0);
}

pub async fn count_by_status_counts_every_status(store: StoreUnderTest) {
    let statuses = [
        AgentStatus::Idle,
        AgentStatus::Idle,
        AgentStatus::Active,
        AgentStatus::Busy,
        AgentStatus::Draining,
        AgentStatus::Offline,
        AgentStatus::Suspended,
    ];
    for (i, status) in statuses.into_iter().enumerate() {
        let n = i as u128 + 1;
        let mut a = agent(n, &format!("worker-{n}"), &[], t(0));
        a.status = status;
        a.current_tasks = u32::from(status == AgentStatus::Busy) * 2;
        a.max_concurrent_tasks = (i + 1) as u32;
        store
            .agents
            .insert(&a, &agent_key(10 - n, a.id, t(0)), vec![])
            .await
            .unwrap();
    }
    let counts = store.agents.count_by_status().await.unwrap();
    assert_eq!(
        (counts.idle, counts.active, counts.busy, counts.draining),
        (2, 1, 1, 1)
    );
    assert_eq!((counts.offline, counts.suspended), (1, 1));
    assert_eq!(counts.total(), 7);
    assert_eq!(counts.running_tasks, 2);
    // Slots of the online agents: idle (1 + 2), active (3), busy (4) and draining (5), not
    // the offline or suspended ones.
    assert_eq!(counts.slots, 15);
}

pub async fn api_keys_are_found_by_hash_only(store: StoreUnderTest) {
    let a = agent(1, "worker-1", &[], t(0));
    let key = agent_key(7, a.id, t(0));
    store.agents.insert(&a, &key, vec![]).await.unwrap();
    let found = store
        .credentials
        .find_api_key(&key.hash)
        .await
        .unwrap()
        .expect("found by its hash");
    assert_eq!(found, key);
    assert_eq!(
        store
            .credentials
            .find_api_key(&KeyHash("0".repeat(64)))
            .await
            .unwrap(),
        None
    );
}

pub async fn capable_exists_looks_at_every_registered_agent(store: StoreUnderTest) {
    let caps = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        domain::CapabilitySet::parse("capabilities", &names).expect("valid capabilities")
    };
    assert!(!store.agents.capable_exists(&caps(&["gpu"])).await.unwrap());
    let mut a = agent(1, "worker", &["gpu", "etl"], t(0));
    store
        .agents
        .insert(&a, &agent_key(1, a.id, t(0)), vec![])
        .await
        .unwrap();
    assert!(store
        .agents
        .capable_exists(&caps(&["gpu", "etl"]))
        .await
        .unwrap());
    assert!(
        !store
            .agents
            .capable_exists(&caps(&["gpu", "vision"]))
            .await
            .unwrap(),
        "one agent must have every capability"
    );
    // In whatever status.
    a.status = AgentStatus::Offline;
    store.agents.update(&a, vec![]).await.unwrap();
    assert!(store.agents.capable_exists(&caps(&["etl"])).await.unwrap());
}
