//! The task store contract: what every implementation of `TaskRepository` must do.
//!
//! Longer than the other contract modules because the task port is the widest (rows, paging,
//! idempotency, leases, the scheduling pass and its snapshot); the cases stay in one module so
//! they read in the order of the port's documentation.

use chrono::{DateTime, Utc};
use domain::scheduler::Policy;
use domain::{
    AgentStatus, Capability, EventKind, NewEvent, Priority, ResourceClaim, ResourceMap, TaskStatus,
};
use ports::{Changes, IdempotencyRecord, PassSize, RepoError, Submission, TaskQuery};
use serde_json::json;

use crate::builders::{agent, agent_key, object, task};
use crate::StoreUnderTest;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).expect("valid time")
}

/// The numbers the `task` builder made `tasks` from, in order.
fn numbers(tasks: &[domain::Task]) -> Vec<u128> {
    tasks.iter().map(|t| t.id.as_uuid().as_u128()).collect()
}

fn note(task: &domain::Task) -> NewEvent {
    NewEvent::about_task(
        EventKind::TaskProgress,
        task.id,
        task.assigned_agent,
        json!({"n": 1}),
        t(0),
    )
}

async fn with_agent(store: &StoreUnderTest, n: u128) -> domain::Agent {
    let a = agent(n, &format!("worker-{n}"), &["etl"], t(0));
    store
        .agents
        .insert(&a, &agent_key(n, a.id, t(0)), vec![])
        .await
        .unwrap();
    a
}

pub async fn tasks_round_trip_with_every_field(store: StoreUnderTest) {
    let mut x = task(1, 7, &["etl", "gpu"], t(0));
    x.deadline = Some(t(3600));
    x.resource_claims = vec![ResourceClaim {
        resource: "gpu_cluster_01".into(),
        amount: ResourceMap::from_json("a", &object(json!({"gpus": 1, "memory": "8Gi"}))).unwrap(),
    }];
    x.workflow_id = Some(uuid::Uuid::from_u128(77));
    x.execution_id = Some(uuid::Uuid::from_u128(78));
    x.step = Some("ingest".into());
    x.pending_reason = Some(domain::WaitReason::PoolShort {
        pool: "gpu_cluster_01".into(),
        dimension: "gpus".into(),
        free: "0".into(),
        needs: "1".into(),
    });
    // Columns of one type hold distinct values, so no two can be written in each other's place.
    x.attempt = 3;
    x.round_start = 2;
    x.max_attempts = 5;
    x.not_before = t(5);
    x.updated_at = t(6);
    x.version = 4;
    let events = store
        .tasks
        .insert(
            &x,
            vec![NewEvent::about_task(
                EventKind::TaskSubmitted,
                x.id,
                None,
                json!({}),
                t(0),
            )],
            None,
        )
        .await
        .unwrap();
    assert_eq!(events[0].task_id, Some(x.id));
    let numbered = store.events.sequence(10).await.unwrap();
    assert_eq!(numbered[0].task_id, Some(x.id));
    x.version = 0;
    assert_eq!(
        store.tasks.get(x.id).await.unwrap(),
        x,
        "every field as written, at version 0"
    );
    assert_eq!(
        store.tasks.get(task(2, 1, &[], t(0)).id).await,
        Err(RepoError::NotFound)
    );
    assert!(matches!(
        store.tasks.insert(&x, vec![], None).await,
        Err(RepoError::Conflict(_))
    ));
    let history = crate::contract::numbered(&store)
        .await
        .task_events(x.id, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);

    // Every field a save may change is written as given.
    let holder = with_agent(&store, 50).await;
    let mut running = store.tasks.get(x.id).await.unwrap();
    running.pending_reason = None;
    running.assign(holder.id, t(10)).unwrap();
    running.start(holder.id, running.attempt, t(11)).unwrap();
    running.progress = Some(0.5);
    running.cancel_requested = true;
    running.title = "renamed".into();
    running.required_capabilities =
        domain::CapabilitySet::parse("c", &["etl".to_owned(), "ml/gpu:a100".to_owned()]).unwrap();
    running.metadata = domain::Metadata::parse(object(json!({"k": "v"}))).unwrap();
    running.updated_at = t(12);
    store
        .tasks
        .save(Changes {
            tasks: vec![running.clone()],
            ..Changes::default()
        })
        .await
        .unwrap();
    running.version += 1;
    assert_eq!(store.tasks.get(x.id).await.unwrap(), running);
    let mut done = running.clone();
    done.result = Some(object(json!({"rows": 3})));
    done.error = Some("an earlier attempt failed".into());
    done.status = TaskStatus::Completed;
    done.completed_at = Some(t(13));
    done.lease_expires_at = None;
    done.assigned_agent = None;
    store
        .tasks
        .save(Changes {
            tasks: vec![done.clone()],
            ..Changes::default()
        })
        .await
        .unwrap();
    done.version += 1;
    assert_eq!(store.tasks.get(x.id).await.unwrap(), done);

    // A task that is not stored cannot be saved, and nothing of the change is written.
    let ghost = task(9, 1, &[], t(0));
    let result = store
        .tasks
        .save(Changes {
            tasks: vec![ghost],
            events: vec![note(&done)],
            ..Changes::default()
        })
        .await;
    assert_eq!(result, Err(RepoError::NotFound));
}

pub async fn task_lists_filter_and_page_newest_first(store: StoreUnderTest) {
    let a = with_agent(&store, 50).await;
    // Task number n is made at t(n) with ID 10 - n: IDs fall as time rises, so the order
    // is by time, not by ID.
    for n in 1..=5u128 {
        let caps: &[&str] = if n % 2 == 0 { &["gpu"] } else { &["etl"] };
        let mut x = task(10 - n, (n % 3 + 1) as i64, caps, t(n as i64));
        if n == 3 {
            x.assign(a.id, t(10)).unwrap();
        }
        if n == 5 {
            x.workflow_id = Some(uuid::Uuid::from_u128(77));
            x.execution_id = Some(uuid::Uuid::from_u128(78));
        }
        store.tasks.insert(&x, vec![], None).await.unwrap();
    }
    let ids = |v: Vec<domain::Task>| numbers(&v);
    let all = TaskQuery {
        limit: 100,
        ..TaskQuery::default()
    };
    assert_eq!(ids(store.tasks.list(&all).await.unwrap()), [5, 6, 7, 8, 9]);
    let gpu = TaskQuery {
        capability: Some(Capability::parse("gpu").unwrap()),
        ..all.clone()
    };
    assert_eq!(ids(store.tasks.list(&gpu).await.unwrap()), [6, 8]);
    let assigned = TaskQuery {
        status: Some(TaskStatus::Assigned),
        ..all.clone()
    };
    assert_eq!(ids(store.tasks.list(&assigned).await.unwrap()), [7]);
    let mine = TaskQuery {
        agent: Some(a.id),
        ..all.clone()
    };
    assert_eq!(ids(store.tasks.list(&mine).await.unwrap()), [7]);
    for query in [
        TaskQuery {
            workflow_id: Some(uuid::Uuid::from_u128(77)),
            ..all.clone()
        },
        TaskQuery {
            execution_id: Some(uuid::Uuid::from_u128(78)),
            ..all.clone()
        },
    ] {
        assert_eq!(ids(store.tasks.list(&query).await.unwrap()), [5]);
    }
    let p1 = TaskQuery {
        priority: Some(Priority::new(1).unwrap()),
        ..all.clone()
    };
    assert_eq!(ids(store.tasks.list(&p1).await.unwrap()), [7]);
    let first = store
        .tasks
        .list(&TaskQuery {
            limit: 2,
            ..all.clone()
        })
        .await
        .unwrap();
    let last = first.last().unwrap();
    let next = TaskQuery {
        after: Some(domain::Cursor {
            created_at: last.created_at,
            id: last.id.as_uuid(),
        }),
        limit: 2,
        ..all
    };
    assert_eq!(ids(store.tasks.list(&next).await.unwrap()), [7, 8]);
}

/// Tasks submitted in one batch share their creation time: a list pages through them by ID,
/// newest (highest ID) first, one at a time; a task written again is listed once; a deleted
/// one is gone.
pub async fn task_lists_page_through_tasks_made_together_and_follow_writes(store: StoreUnderTest) {
    let batch: Vec<domain::Task> = (1..=4).map(|n| task(n, 5, &["etl"], t(3))).collect();
    store
        .tasks
        .insert_all(
            &[Submission {
                events: batch.iter().map(note).collect(),
                tasks: batch.clone(),
                idempotency: None,
            }],
            chrono::Duration::hours(24),
        )
        .await
        .unwrap();
    let before = task(9, 5, &["etl"], t(1));
    store.tasks.insert(&before, vec![], None).await.unwrap();
    let ids = numbers;
    let mut seen = Vec::new();
    let mut query = TaskQuery {
        limit: 1,
        ..TaskQuery::default()
    };
    loop {
        let page = store.tasks.list(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        assert_eq!(page.len(), 1);
        query.after = Some(domain::Cursor {
            created_at: last.created_at,
            id: last.id.as_uuid(),
        });
        seen.extend(ids(&page));
        assert!(seen.len() <= 5, "the pages repeat: {seen:?}");
    }
    assert_eq!(seen, [4, 3, 2, 1, 9]);

    // Written again (cancelled), then deleted once ended.
    let mut cancelled = batch[2].clone();
    cancelled.cancel(t(4)).unwrap();
    store
        .tasks
        .save(Changes {
            tasks: vec![cancelled],
            ..Changes::default()
        })
        .await
        .unwrap();
    let all = TaskQuery {
        limit: 100,
        ..TaskQuery::default()
    };
    assert_eq!(ids(&store.tasks.list(&all).await.unwrap()), [4, 3, 2, 1, 9]);
    assert_eq!(store.tasks.purge_ended(t(1_000), 100).await.unwrap(), 1);
    assert_eq!(ids(&store.tasks.list(&all).await.unwrap()), [4, 2, 1, 9]);
    let two = TaskQuery { limit: 2, ..all };
    let first = store.tasks.list(&two).await.unwrap();
    assert_eq!(ids(&first), [4, 2]);
    let next = TaskQuery {
        after: Some(domain::Cursor {
            created_at: first[1].created_at,
            id: first[1].id.as_uuid(),
        }),
        ..two
    };
    assert_eq!(ids(&store.tasks.list(&next).await.unwrap()), [1, 9]);
}

pub async fn save_writes_tasks_and_agents_together_or_not_at_all(store: StoreUnderTest) {
    let mut a = with_agent(&store, 50).await;
    let mut x = task(1, 5, &["etl"], t(0));
    store.tasks.insert(&x, vec![], None).await.unwrap();
    let original = x.clone();
    x.assign(a.id, t(1)).unwrap();
    a.take_task(t(1));
    let events = store
        .tasks
        .save(Changes {
            tasks: vec![x.clone()],
            agents: vec![a.clone()],
            events: vec![note(&x)],
            ..Changes::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let stored = store.tasks.get(x.id).await.unwrap();
    assert_eq!((stored.status, stored.version), (TaskStatus::Assigned, 1));
    assert_eq!(store.agents.get(a.id).await.unwrap().current_tasks, 1);

    // A stale task next to a fresh agent: nothing of either is written.
    let mut fresh_agent = store.agents.get(a.id).await.unwrap();
    fresh_agent.max_concurrent_tasks = 9;
    let mut stale = original;
    stale.title = "overwritten".into();
    let result = store
        .tasks
        .save(Changes {
            tasks: vec![stale],
            agents: vec![fresh_agent],
            events: vec![note(&x)],
            ..Changes::default()
        })
        .await;
    assert!(matches!(result, Err(RepoError::Conflict(_))), "{result:?}");
    assert_eq!(store.tasks.get(x.id).await.unwrap().title, "task-1");
    assert_eq!(
        store.agents.get(a.id).await.unwrap().max_concurrent_tasks,
        2
    );
    assert_eq!(
        crate::contract::numbered(&store)
            .await
            .task_events(x.id, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // The agent's version moved with the first save; one read before it is stale on its own.
    let now_stored = store.agents.get(a.id).await.unwrap();
    assert_eq!(
        now_stored.version,
        a.version + 1,
        "a save bumps the agent's version"
    );
    let mut stale_agent = a.clone();
    stale_agent.max_concurrent_tasks = 7;
    let result = store
        .tasks
        .save(Changes {
            agents: vec![stale_agent],
            ..Changes::default()
        })
        .await;
    assert!(matches!(result, Err(RepoError::Conflict(_))), "{result:?}");
    assert_eq!(store.agents.get(a.id).await.unwrap(), now_stored);
}

pub async fn a_pass_with_no_claims_to_place_sees_no_pools(store: StoreUnderTest) {
    let worker = with_agent(&store, 50).await;
    let pool = crate::resources_contract::pool(1, "gpus", "gpu", 2, t(0));
    store
        .resources
        .insert_resource(&pool, vec![])
        .await
        .unwrap();
    // A held task claims the pool, but no pending one does.
    let mut holder = task(1, 5, &["etl"], t(0));
    holder.resource_claims = vec![ResourceClaim {
        resource: "gpus".into(),
        amount: ResourceMap::from_json("a", &object(json!({"gpus": 1}))).unwrap(),
    }];
    holder.assign(worker.id, t(1)).unwrap();
    let plain = task(2, 5, &["etl"], t(2));
    for x in [&holder, &plain] {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let kept = seen.clone();
    store
        .tasks
        .schedule(
            t(10),
            PassSize::at_most(10),
            &Policy::default(),
            Box::new(move |snapshot| {
                *kept.lock().unwrap() = Some((
                    snapshot.pending.len(),
                    snapshot.resources.len(),
                    snapshot.claim_holders.len(),
                ));
                Changes::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        Some((1, 0, 0)),
        "pools and their holders are read only when a pending task claims one"
    );
}

pub async fn a_scheduling_pass_sees_ready_work_and_serving_agents_and_writes_its_decision(
    store: StoreUnderTest,
) {
    let serving = with_agent(&store, 50).await;
    let mut away = agent(51, "away", &["etl"], t(0));
    away.status = AgentStatus::Offline;
    store
        .agents
        .insert(&away, &agent_key(51, away.id, t(0)), vec![])
        .await
        .unwrap();
    let ready = task(1, 3, &["etl"], t(0));
    let urgent = task(2, 9, &["etl"], t(5));
    let mut backing_off = task(3, 9, &["etl"], t(0));
    backing_off.not_before = t(1000);
    let mut held = task(4, 1, &["etl"], t(0));
    held.assign(serving.id, t(1)).unwrap();
    for x in [&ready, &urgent, &backing_off, &held] {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    let holding = domain::scheduler::Held::of(&held).unwrap();
    let events = store
        .tasks
        .schedule(
            t(10),
            PassSize::at_most(10),
            &Policy::default(),
            Box::new(move |snapshot| {
                let pending = numbers(&snapshot.pending);
                assert_eq!(pending, [2, 1], "ready tasks only, highest priority first");
                assert_eq!(snapshot.agents.len(), 1, "serving agents only");
                assert_eq!(
                    snapshot.held,
                    [holding],
                    "the held task, its holder and what it uses"
                );
                let mut agent = snapshot.agents[0].clone();
                let mut chosen = snapshot.pending[0].clone();
                chosen.assign(agent.id, t(10)).unwrap();
                agent.take_task(t(10));
                let event = note(&chosen);
                Changes {
                    tasks: vec![chosen],
                    agents: vec![agent],
                    events: vec![event],
                    ..Changes::default()
                }
            }),
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        store.tasks.get(urgent.id).await.unwrap().status,
        TaskStatus::Assigned
    );
    assert_eq!(
        store.tasks.get(ready.id).await.unwrap().status,
        TaskStatus::Pending
    );
    let limited = store
        .tasks
        .schedule(
            t(10),
            PassSize::at_most(1),
            &Policy::default(),
            Box::new(|s| {
                assert_eq!(s.pending.len(), 1, "the limit caps the pending tasks read");
                Changes::default()
            }),
        )
        .await
        .unwrap();
    assert!(limited.is_empty());
}

pub async fn a_fitted_pass_reads_as_many_pending_tasks_as_the_free_slots_call_for(
    store: StoreUnderTest,
) {
    // 30 slots, 10 of them taken: 20 free, so a fitted pass reads 4 pending tasks per slot.
    let mut fleet = agent(50, "fleet", &["etl"], t(0));
    fleet.max_concurrent_tasks = 30;
    store
        .agents
        .insert(&fleet, &agent_key(50, fleet.id, t(0)), vec![])
        .await
        .unwrap();
    for n in 1..=130u128 {
        let mut x = task(n, 5, &["etl"], t(0));
        if n > 120 {
            x.assign(fleet.id, t(1)).unwrap();
        }
        store.tasks.insert(&x, vec![], None).await.unwrap();
    }
    let free = 20 * PassSize::PER_FREE_SLOT as usize;
    for (size, read) in [
        (PassSize::fitted(1000), free),
        (PassSize::fitted(50), 50),
        (PassSize::at_most(1000), 120),
    ] {
        assert_eq!(pending_read(&store, size).await, read, "{size:?}");
    }
    // With no free slot a fitted pass still reads the head of the queue.
    let mut full = fleet.clone();
    full.max_concurrent_tasks = 10;
    store.agents.update(&full, vec![]).await.unwrap();
    let least = PassSize::LEAST as usize;
    assert_eq!(pending_read(&store, PassSize::fitted(1000)).await, least);
}

/// How many pending tasks a pass of `size` at `t(10)` read (checking the snapshot says it asked
/// for at least that many), writing nothing.
async fn pending_read(store: &StoreUnderTest, size: PassSize) -> usize {
    let seen = std::sync::Arc::new(std::sync::Mutex::new((0, 0)));
    let record = seen.clone();
    store
        .tasks
        .schedule(
            t(10),
            size,
            &Policy::default(),
            Box::new(move |snapshot| {
                *record.lock().unwrap() = (snapshot.pending.len(), snapshot.asked as usize);
                Changes::default()
            }),
        )
        .await
        .unwrap();
    let (read, asked) = *seen.lock().unwrap();
    assert!(read <= asked, "read {read} of the {asked} asked for");
    read
}

pub async fn passes_racing_on_one_store_never_place_a_task_twice(store: StoreUnderTest) {
    let mut fleet = agent(50, "fleet", &["etl"], t(0));
    fleet.max_concurrent_tasks = 1_000;
    store
        .agents
        .insert(&fleet, &agent_key(50, fleet.id, t(0)), vec![])
        .await
        .unwrap();
    for n in 1..=20u128 {
        store
            .tasks
            .insert(&task(n, 5, &["etl"], t(0)), vec![], None)
            .await
            .unwrap();
    }
    // Eight replicas' passes at once; each places every pending task it sees on the fleet.
    let passes: Vec<_> = (0..8)
        .map(|_| {
            let tasks = store.tasks.clone();
            tokio::spawn(async move {
                tasks
                    .schedule(
                        t(10),
                        PassSize::at_most(100),
                        &Policy::default(),
                        Box::new(|snapshot| {
                            let mut changes = Changes::default();
                            let Some(mut agent) = snapshot.agents.first().cloned() else {
                                return changes;
                            };
                            for pending in &snapshot.pending {
                                let mut placed = pending.clone();
                                placed.assign(agent.id, t(10)).unwrap();
                                agent.take_task(t(10));
                                changes.events.push(note(&placed));
                                changes.tasks.push(placed);
                            }
                            if !changes.tasks.is_empty() {
                                changes.agents.push(agent);
                            }
                            changes
                        }),
                    )
                    .await
            })
        })
        .collect();
    let mut placements = 0;
    for pass in passes {
        placements += pass
            .await
            .unwrap()
            .expect("passes never overlap, so none loses a race")
            .len();
    }
    assert_eq!(placements, 20, "each task placed by exactly one pass");
    assert_eq!(store.agents.get(fleet.id).await.unwrap().current_tasks, 20);
    assert_eq!(store.tasks.held_by(fleet.id).await.unwrap().len(), 20);
}

pub async fn lease_deadline_and_holder_queries_find_the_right_tasks(store: StoreUnderTest) {
    let a = with_agent(&store, 50).await;
    let mut leased = task(1, 5, &[], t(0));
    leased.assign(a.id, t(0)).unwrap(); // lease until t(60)
    let mut fresh = task(2, 5, &[], t(0));
    fresh.assign(a.id, t(50)).unwrap(); // lease until t(110)
    let mut late = task(3, 5, &[], t(0));
    late.deadline = Some(t(30));
    let on_time = task(4, 5, &[], t(0));
    let mut later = task(5, 5, &[], t(0));
    later.deadline = Some(t(20));
    // Past its deadline too, but held: only pending tasks expire.
    let mut held_late = task(6, 5, &[], t(0));
    held_late.deadline = Some(t(10));
    held_late.assign(a.id, t(100)).unwrap();
    for x in [&leased, &fresh, &late, &on_time, &later, &held_late] {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    let ids = |v: Vec<domain::Task>| numbers(&v);
    assert_eq!(
        ids(store.tasks.lease_expired(t(60), 10).await.unwrap()),
        [1]
    );
    assert_eq!(
        ids(store.tasks.lease_expired(t(200), 10).await.unwrap()),
        [1, 2, 6]
    );
    assert_eq!(
        ids(store.tasks.lease_expired(t(200), 1).await.unwrap()).len(),
        1,
        "at most the limit"
    );
    let mut expired = ids(store.tasks.past_deadline(t(30), 10).await.unwrap());
    expired.sort_unstable();
    assert_eq!(expired, [3, 5]);
    assert_eq!(
        ids(store.tasks.past_deadline(t(30), 1).await.unwrap()).len(),
        1,
        "at most the limit"
    );
    assert_eq!(
        ids(store.tasks.past_deadline(t(25), 10).await.unwrap()),
        [5]
    );
    assert!(store
        .tasks
        .past_deadline(t(19), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(ids(store.tasks.held_by(a.id).await.unwrap()), [1, 2, 6]);
    let counts = store.tasks.count_by_status().await.unwrap();
    assert_eq!((counts.pending, counts.assigned, counts.total()), (3, 3, 6));
}

pub async fn holders_are_listed_by_assignment_time_and_every_status_is_counted(
    store: StoreUnderTest,
) {
    let a = with_agent(&store, 50).await;
    let b = with_agent(&store, 51).await;
    // Assigned in the order 8, 7, 9: not the order of their IDs nor of their creation.
    let mut held = Vec::new();
    for (n, at) in [(9u128, 30), (8, 10), (7, 20)] {
        let mut x = task(n, 5, &[], t(0));
        x.assign(a.id, t(at)).unwrap();
        held.push(x);
    }
    let attempt = held[2].attempt;
    held[2].start(a.id, attempt, t(25)).unwrap(); // running is held too
    let mut elsewhere = task(10, 5, &[], t(0));
    elsewhere.assign(b.id, t(5)).unwrap();
    let mut done = task(11, 5, &[], t(0));
    done.assign(a.id, t(1)).unwrap();
    done.start(a.id, done.attempt, t(2)).unwrap();
    done.complete(a.id, done.attempt, serde_json::Map::new(), t(3))
        .unwrap();
    let mut failed = task(12, 5, &[], t(0));
    failed.assign(a.id, t(1)).unwrap();
    failed
        .fail(a.id, failed.attempt, "broken", false, t(2))
        .unwrap();
    let mut cancelled = task(13, 5, &[], t(0));
    cancelled.cancel(t(1)).unwrap();
    let mut expired = task(14, 5, &[], t(0));
    expired.deadline = Some(t(1));
    expired.expire_if_late(t(2)).unwrap();
    let pending = task(15, 5, &[], t(0));
    for x in held
        .iter()
        .chain([&elsewhere, &done, &failed, &cancelled, &expired, &pending])
    {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    let ids = numbers(&store.tasks.held_by(a.id).await.unwrap());
    assert_eq!(
        ids,
        [8, 7, 9],
        "oldest assignment first, finished tasks not held"
    );
    let counts = store.tasks.count_by_status().await.unwrap();
    assert_eq!(
        counts,
        ports::TaskCounts {
            pending: 1,
            assigned: 3,
            running: 1,
            completed: 1,
            failed: 1,
            cancelled: 1,
            expired: 1,
        }
    );
}

pub async fn idempotency_keys_are_recorded_with_the_task_and_expire(store: StoreUnderTest) {
    let day = chrono::Duration::hours(24);
    let record = |n: u128, at: i64| IdempotencyRecord {
        key: "caller:key-1".into(),
        fingerprint: format!("body-{n}"),
        tasks: vec![domain::TaskId(uuid::Uuid::from_u128(n))],
        created_at: t(at),
    };
    let first = task(1, 5, &[], t(0));
    store
        .tasks
        .insert(&first, vec![], Some((&record(1, 0), day)))
        .await
        .unwrap();
    let found = store
        .tasks
        .find_idempotency("caller:key-1", t(-10))
        .await
        .unwrap();
    assert_eq!(found, Some(record(1, 0)));
    assert_eq!(
        store
            .tasks
            .find_idempotency("caller:other", t(-10))
            .await
            .unwrap(),
        None
    );

    // A live key stops a second task, which is then not stored at all.
    let second = task(2, 5, &[], t(10));
    let refused = store
        .tasks
        .insert(&second, vec![], Some((&record(2, 10), day)))
        .await;
    assert!(
        matches!(refused, Err(RepoError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(store.tasks.get(second.id).await, Err(RepoError::NotFound));

    // Past its lifetime the key is free again, and the old record is replaced.
    assert_eq!(
        store
            .tasks
            .find_idempotency("caller:key-1", t(1))
            .await
            .unwrap(),
        None
    );
    let later = 24 * 3600 + 1;
    store
        .tasks
        .insert(&second, vec![], Some((&record(2, later), day)))
        .await
        .unwrap();
    let found = store
        .tasks
        .find_idempotency("caller:key-1", t(later))
        .await
        .unwrap();
    assert_eq!(found.map(|r| r.tasks), Some(vec![second.id]));

    assert_eq!(store.tasks.purge_idempotency(t(later)).await.unwrap(), 0);
    assert_eq!(
        store.tasks.purge_idempotency(t(later + 1)).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .tasks
            .find_idempotency("caller:key-1", t(0))
            .await
            .unwrap(),
        None
    );
}

pub async fn submissions_are_stored_together_or_not_at_all(store: StoreUnderTest) {
    let day = chrono::Duration::hours(24);
    let submission = |ids: &[u128], key: Option<&str>| {
        let tasks: Vec<domain::Task> = ids.iter().map(|&n| task(n, 5, &[], t(0))).collect();
        Submission {
            events: tasks.iter().map(note).collect(),
            idempotency: key.map(|key| IdempotencyRecord {
                key: key.into(),
                fingerprint: "body".into(),
                tasks: tasks.iter().map(|t| t.id).collect(),
                created_at: t(0),
            }),
            tasks,
        }
    };
    let ids = |ns: &[u128]| -> Vec<domain::TaskId> {
        ns.iter()
            .map(|&n| domain::TaskId(uuid::Uuid::from_u128(n)))
            .collect()
    };

    // Two requests' submissions, one a batch under one key, share one write.
    let stored = store
        .tasks
        .insert_all(
            &[
                submission(&[3, 1, 2], Some("caller:batch")),
                submission(&[4], None),
            ],
            day,
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 4, "every submission's events are stored");
    let read: Vec<_> = store
        .tasks
        .get_many(&ids(&[2, 4, 3, 1]))
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.version))
        .collect();
    assert_eq!(
        read,
        ids(&[2, 4, 3, 1])
            .into_iter()
            .map(|id| (id, 0))
            .collect::<Vec<_>>()
    );
    let record = store
        .tasks
        .find_idempotency("caller:batch", t(-1))
        .await
        .unwrap()
        .expect("the batch's key is recorded");
    assert_eq!(
        record.tasks,
        ids(&[3, 1, 2]),
        "in the order the batch gave them"
    );
    assert_eq!(
        store.tasks.get_many(&ids(&[1, 9])).await,
        Err(RepoError::NotFound)
    );

    // One taken ID, a live key, or one key twice: the whole write is refused.
    for refused in [
        vec![
            submission(&[5], Some("caller:fresh")),
            submission(&[6, 4], None),
        ],
        vec![
            submission(&[5], None),
            submission(&[6], Some("caller:batch")),
        ],
        vec![
            submission(&[5], Some("caller:twice")),
            submission(&[6], Some("caller:twice")),
        ],
        vec![submission(&[5, 6, 5], None)],
    ] {
        let written = store.tasks.insert_all(&refused, day).await;
        assert!(
            matches!(written, Err(RepoError::Conflict(_))),
            "{written:?}"
        );
        assert_eq!(
            store.tasks.get(ids(&[5])[0]).await,
            Err(RepoError::NotFound)
        );
        assert_eq!(
            store.tasks.get(ids(&[6])[0]).await,
            Err(RepoError::NotFound)
        );
        for key in ["caller:fresh", "caller:twice"] {
            assert_eq!(
                store.tasks.find_idempotency(key, t(-1)).await.unwrap(),
                None
            );
        }
        assert_eq!(store.tasks.count_by_status().await.unwrap().total(), 4);
    }
}

pub async fn an_update_with_agents_sees_them_and_the_named_tasks_and_writes_only_their_own(
    store: StoreUnderTest,
) {
    let a = with_agent(&store, 50).await;
    let b = with_agent(&store, 51).await;
    let nobody = domain::AgentId(uuid::Uuid::from_u128(98));
    // x is a's, w is b's; y (named too) and z are nobody's.
    let mut x = task(1, 5, &[], t(0));
    x.assign(a.id, t(0)).unwrap();
    let mut w = task(4, 5, &[], t(0));
    w.assign(b.id, t(0)).unwrap();
    let (y, z) = (task(2, 5, &[], t(0)), task(3, 5, &[], t(0)));
    for each in [&x, &y, &z, &w] {
        store.tasks.insert(each, vec![], None).await.unwrap();
    }
    let missing = domain::TaskId(uuid::Uuid::from_u128(99));
    let seen = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
    let saw = seen.clone();
    let stored = store
        .tasks
        .update_with_agents(
            &[b.id, nobody, a.id],
            &[y.id, missing, x.id, w.id],
            Box::new(move |agents, tasks| {
                let mut found: Vec<_> = agents.iter().map(|a| a.id).collect();
                found.sort();
                let mut ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
                ids.sort();
                *saw.lock().unwrap() = (found, ids);
                let agents: Vec<_> = agents
                    .into_iter()
                    .map(|mut agent| {
                        agent.take_task(t(5));
                        agent
                    })
                    .collect();
                let changed: Vec<_> = tasks
                    .into_iter()
                    .filter(|t| t.id == x.id || t.id == w.id)
                    .map(|mut t| {
                        t.title = "renamed".into();
                        t
                    })
                    .collect();
                Changes {
                    events: vec![note(&changed[0])],
                    tasks: changed,
                    agents,
                    ..Changes::default()
                }
            }),
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "its events are stored");
    assert_eq!(
        *seen.lock().unwrap(),
        (vec![a.id, b.id], vec![x.id, y.id, w.id]),
        "the named agents and tasks that exist"
    );
    for held in [x.id, w.id] {
        let written = store.tasks.get(held).await.unwrap();
        assert_eq!((written.title.as_str(), written.version), ("renamed", 1));
    }
    assert_eq!(store.tasks.get(y.id).await.unwrap().version, 0);
    for agent in [a.id, b.id] {
        assert_eq!(store.agents.get(agent).await.unwrap().current_tasks, 1);
    }

    // A row it did not load, a task named but none of the agents', or a task of an agent not
    // named may not be written.
    for (agents, named, written) in [
        (vec![a.id], x.id, z.clone()),
        (vec![a.id], y.id, y.clone()),
        (vec![a.id, nobody], w.id, w.clone()),
    ] {
        let outside = store
            .tasks
            .update_with_agents(
                &agents,
                &[named],
                Box::new(move |_, _| Changes {
                    tasks: vec![written],
                    ..Changes::default()
                }),
            )
            .await;
        assert!(
            matches!(outside, Err(RepoError::Internal(_))),
            "{outside:?}"
        );
    }
    assert_eq!(store.tasks.get(y.id).await.unwrap().version, 0);
    assert_eq!(store.tasks.get(z.id).await.unwrap().version, 0);
    assert_eq!(store.tasks.get(w.id).await.unwrap().version, 1);
    // Agents that do not exist are left out.
    let unknown = std::sync::Arc::new(std::sync::Mutex::new(None));
    let saw = unknown.clone();
    store
        .tasks
        .update_with_agents(
            &[nobody],
            &[x.id],
            Box::new(move |agents, tasks| {
                *saw.lock().unwrap() = Some((agents.len(), tasks.len()));
                Changes::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(*unknown.lock().unwrap(), Some((0, 1)));

    // Racing updates of one agent each see the one before: none loses, none is refused. (The
    // store's connections are opened first, so the updates do run at once.)
    let warming: Vec<_> = (0..8)
        .map(|_| {
            let tasks = store.tasks.clone();
            tokio::spawn(async move { tasks.count_by_status().await })
        })
        .collect();
    for warm in warming {
        warm.await.unwrap().unwrap();
    }
    let racing: Vec<_> = (0..8)
        .map(|_| {
            let tasks = store.tasks.clone();
            tokio::spawn(async move {
                tasks
                    .update_with_agents(
                        &[a.id],
                        &[],
                        Box::new(|mut agents, _| {
                            agents[0].take_task(t(6));
                            Changes {
                                agents,
                                ..Changes::default()
                            }
                        }),
                    )
                    .await
            })
        })
        .collect();
    for update in racing {
        update.await.unwrap().unwrap();
    }
    assert_eq!(store.agents.get(a.id).await.unwrap().current_tasks, 9);
}

pub async fn the_scheduling_batch_follows_effective_priority_and_skips_late_tasks(
    store: StoreUnderTest,
) {
    with_agent(&store, 50).await;
    // An hour-old priority-2 task has aged by +5: it outranks a fresh priority-6 task.
    let old_low = task(1, 2, &[], t(0));
    let fresh_high = task(2, 6, &[], t(3600));
    let mut late = task(3, 10, &[], t(0));
    late.deadline = Some(t(3000));
    for x in [&old_low, &fresh_high, &late] {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    store
        .tasks
        .schedule(
            t(3600),
            PassSize::at_most(1),
            &Policy::default(),
            Box::new(|snapshot| {
                let ids = numbers(&snapshot.pending);
                assert_eq!(
                    ids,
                    [1],
                    "the aged task is in the batch of one; the late one never"
                );
                Changes::default()
            }),
        )
        .await
        .unwrap();
}

pub async fn with_no_free_slot_a_pass_reads_the_head_of_the_queue_as_it_is_kept(
    store: StoreUnderTest,
) {
    // One agent of one slot, holding a task: no slot is free.
    let mut fleet = agent(50, "fleet", &[], t(0));
    fleet.max_concurrent_tasks = 1;
    store
        .agents
        .insert(&fleet, &agent_key(50, fleet.id, t(0)), vec![])
        .await
        .unwrap();
    let mut held = task(9, 5, &[], t(0));
    held.assign(fleet.id, t(1)).unwrap();
    // An hour-old priority-2 task outranks a fresh priority-6 one by effective priority; kept
    // in the queue, the priority-6 one comes first.
    let old_low = task(1, 2, &[], t(0));
    let fresh_high = task(2, 6, &[], t(3600));
    let mut late = task(3, 10, &[], t(0));
    late.deadline = Some(t(3000));
    for x in [&held, &old_low, &fresh_high, &late] {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    assert_eq!(
        batch_of_one(&store).await,
        (vec![2], true),
        "no slot free: the head of the queue as kept, unranked; the late task never"
    );
    fleet.max_concurrent_tasks = 2;
    store.agents.update(&fleet, vec![]).await.unwrap();
    assert_eq!(
        batch_of_one(&store).await,
        (vec![1], false),
        "a slot free: the batch is chosen by rank"
    );
}

pub async fn a_pass_reads_past_a_head_no_agent_with_a_free_slot_can_take(store: StoreUnderTest) {
    // One agent does `etl` and has slots free; another does `gpu` but holds all it may.
    with_agent(&store, 50).await;
    let mut full = agent(51, "full-gpu", &["gpu"], t(0));
    full.max_concurrent_tasks = 1;
    store
        .agents
        .insert(&full, &agent_key(51, full.id, t(0)), vec![])
        .await
        .unwrap();
    let mut holding = task(9, 5, &["gpu"], t(0));
    holding.assign(full.id, t(1)).unwrap();
    store.tasks.insert(&holding, vec![], None).await.unwrap();
    // Two tasks for a capability nobody has rank first; behind them, one the agent can take,
    // and one nobody can.
    let blocked = [task(1, 9, &["gpu"], t(0)), task(2, 9, &["gpu"], t(0))];
    let takeable = task(3, 1, &["etl"], t(0));
    let nobodys = task(4, 1, &["gpu"], t(0));
    for x in blocked.iter().chain([&takeable, &nobodys]) {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    let store = &store;
    let read = |size| async move { batch_read(store, size, t(60), &Policy::default()).await.0 };
    assert_eq!(
        read(PassSize::at_most(2)).await,
        [1, 2, 3],
        "a full head no free agent can take: the first task behind it one can is read too"
    );
    assert_eq!(
        read(PassSize::at_most(5)).await,
        [1, 2, 3, 4],
        "a head that is not full holds every ready task already"
    );
}

/// The IDs a fitted pass of one at `t(3600)` read, and whether it read them unranked.
async fn batch_of_one(store: &StoreUnderTest) -> (Vec<u128>, bool) {
    batch_read(store, PassSize::fitted(1), t(3600), &Policy::default()).await
}

/// The IDs of the pending tasks a pass of `size` at `now` read, in the order it got them, and
/// whether it read them unranked; it writes nothing.
async fn batch_read(
    store: &StoreUnderTest,
    size: PassSize,
    now: DateTime<Utc>,
    policy: &Policy,
) -> (Vec<u128>, bool) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), false)));
    let record = seen.clone();
    store
        .tasks
        .schedule(
            now,
            size,
            policy,
            Box::new(move |snapshot| {
                let ids = numbers(&snapshot.pending);
                *record.lock().unwrap() = (ids, snapshot.unranked);
                Changes::default()
            }),
        )
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    seen
}

pub async fn the_batch_order_is_the_domains_queue_order_with_every_tie_break(
    store: StoreUnderTest,
) {
    with_agent(&store, 50).await;
    let now = t(3600);
    let policy = Policy::default(); // aging +1 per 5 min up to 5; urgency up to 5 in 10 min
    let with_deadline = |mut x: domain::Task, secs: i64| {
        x.deadline = Some(t(3600 + secs));
        x
    };
    let tasks = [
        task(7, 2, &[], t(0)),                         // 2 + 5 aging = 7
        task(5, 6, &[], t(3600)),                      // 6
        task(4, 6, &[], t(3600)),                      // 6, same age: the lower ID first
        task(10, 1, &[], t(60)),                       // 1 + 5 aging = 6, older than 4 and 5
        task(11, 1, &[], t(0)),                        // 1 + 5 aging = 6, the oldest of all
        with_deadline(task(1, 3, &[], t(3600)), 300),  // 3 + 2.5 urgency = 5.5
        task(2, 5, &[], t(3450)),                      // 5 + 0.5 aging = 5.5, no deadline
        with_deadline(task(3, 4, &[], t(3150)), 1200), // 4 + 1.5 aging = 5.5, far deadline
        with_deadline(task(6, 1, &[], t(3600)), 60),   // 1 + 4.5 urgency = 5.5, nearest deadline
    ];
    for x in &tasks {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    let expected: Vec<u128> = domain::scheduler::queue_order(&tasks, now, &policy)
        .iter()
        .map(|x| x.id.as_uuid().as_u128())
        .collect();
    assert_eq!(
        expected,
        [7, 11, 10, 4, 5, 6, 1, 3, 2],
        "the domain's own order"
    );
    for limit in [9u32, 3] {
        let (seen, _) = batch_read(&store, PassSize::at_most(limit), now, &policy).await;
        assert_eq!(seen, expected[..limit as usize], "batch of {limit}");
    }
}

pub async fn waiting_tasks_are_found_by_why_they_wait_oldest_first(store: StoreUnderTest) {
    use domain::WaitReason;
    // The oldest has the highest ID and is stored last: only its age puts it first.
    let mut first = task(9, 5, &["gpu"], t(0));
    let mut second = task(2, 5, &["gpu", "vision"], t(1));
    let mut full = task(3, 5, &["etl"], t(2));
    let placed = task(4, 5, &["gpu"], t(3));
    first.pending_reason = Some(WaitReason::MissingCapability {
        capability: "gpu".into(),
    });
    second.pending_reason = Some(WaitReason::NoAgentWithAll);
    full.pending_reason = Some(WaitReason::AllAtCapacity { matching: 2 });
    for x in [&second, &full, &placed, &first] {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    assert_eq!(
        store.tasks.get(first.id).await.unwrap().pending_reason,
        first.pending_reason,
        "the reason is stored as the value it is"
    );
    let ids = |list: Vec<domain::Task>| list.iter().map(|x| x.id).collect::<Vec<_>>();
    let gaps = store.tasks.waiting_for_capabilities(10).await.unwrap();
    assert_eq!(ids(gaps), [first.id, second.id]);
    let one = store.tasks.waiting_for_capabilities(1).await.unwrap();
    assert_eq!(ids(one), [first.id]);
    // Only pending tasks wait.
    let mut started = store.tasks.get(first.id).await.unwrap();
    started.status = TaskStatus::Cancelled;
    store
        .tasks
        .save(Changes {
            tasks: vec![started],
            ..Changes::default()
        })
        .await
        .unwrap();
    let gaps = store.tasks.waiting_for_capabilities(10).await.unwrap();
    assert_eq!(ids(gaps), [second.id]);
}

pub async fn a_write_allocating_from_a_pool_gone_or_moved_writes_nothing(store: StoreUnderTest) {
    let pool = crate::resources_contract::pool(1, "gpus", "gpu", 2, t(0));
    store
        .resources
        .insert_resource(&pool, vec![])
        .await
        .unwrap();
    let read = store.resources.get_resource(pool.id).await.unwrap();
    let x = task(10, 5, &[], t(1));
    store.tasks.insert(&x, vec![], None).await.unwrap();
    let mut changed = store.tasks.get(x.id).await.unwrap();
    changed.title = "changed".into();
    let write = |allocated_from: Vec<domain::Resource>| Changes {
        tasks: vec![changed.clone()],
        allocated_from,
        ..Changes::default()
    };
    // Moved since it was read: a pool change committed first.
    let mut moved = read.clone();
    moved.maintenance = true;
    store
        .resources
        .update_resource(&moved, vec![])
        .await
        .unwrap();
    assert!(matches!(
        store.tasks.save(write(vec![read.clone()])).await,
        Err(RepoError::Conflict(_))
    ));
    // Gone since it was read.
    let current = store.resources.get_resource(pool.id).await.unwrap();
    store
        .resources
        .delete_resource(&current, vec![])
        .await
        .unwrap();
    assert!(matches!(
        store.tasks.save(write(vec![current])).await,
        Err(RepoError::Conflict(_))
    ));
    assert_eq!(
        store.tasks.get(x.id).await.unwrap().title,
        x.title,
        "nothing written"
    );
    // Over the version read, the pool's version moves on with the write.
    let again = crate::resources_contract::pool(2, "more", "gpu", 2, t(2));
    store
        .resources
        .insert_resource(&again, vec![])
        .await
        .unwrap();
    let read = store.resources.get_resource(again.id).await.unwrap();
    store.tasks.save(write(vec![read])).await.unwrap();
    assert_eq!(
        store
            .resources
            .get_resource(again.id)
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(store.tasks.get(x.id).await.unwrap().title, "changed");
}

pub async fn a_pass_sees_the_pools_and_their_holders_and_writes_only_what_it_read(
    store: StoreUnderTest,
) {
    let worker = with_agent(&store, 50).await;
    let pool = crate::resources_contract::pool(1, "gpus", "gpu", 2, t(0));
    store
        .resources
        .insert_resource(&pool, vec![])
        .await
        .unwrap();
    let claim = ResourceClaim {
        resource: "gpus".into(),
        amount: ResourceMap::from_json("a", &object(json!({"gpus": 1}))).unwrap(),
    };
    let mut holder = task(1, 5, &["etl"], t(0));
    holder.resource_claims = vec![claim.clone()];
    holder.assign(worker.id, t(1)).unwrap();
    let mut claimant = task(2, 5, &["etl"], t(2));
    claimant.resource_claims = vec![claim];
    let bystander = task(3, 5, &["etl"], t(3));
    let mut finished = task(4, 5, &[], t(0));
    finished.status = TaskStatus::Cancelled;
    for x in [&holder, &claimant, &bystander, &finished] {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let kept = seen.clone();
    store
        .tasks
        .schedule(
            t(10),
            PassSize::at_most(10),
            &Policy::default(),
            Box::new(move |snapshot| {
                *kept.lock().unwrap() = Some((
                    snapshot.resources.iter().map(|p| p.id).collect::<Vec<_>>(),
                    snapshot
                        .claim_holders
                        .iter()
                        .map(|x| x.id)
                        .collect::<Vec<_>>(),
                ));
                Changes::default()
            }),
        )
        .await
        .unwrap();
    let (pools, holders) = seen.lock().unwrap().take().unwrap();
    assert_eq!(
        pools,
        [pool.id],
        "a claiming task brings every pool into the pass"
    );
    assert_eq!(holders, [holder.id], "and every task holding part of one");

    // A pass may not write a task it did not read: refused, and nothing is written.
    let mut outside = store.tasks.get(finished.id).await.unwrap();
    outside.title = "written from outside".into();
    let mut inside = store.tasks.get(bystander.id).await.unwrap();
    inside.title = "written from inside".into();
    let result = store
        .tasks
        .schedule(
            t(10),
            PassSize::at_most(10),
            &Policy::default(),
            Box::new(move |_| Changes {
                tasks: vec![inside, outside],
                ..Changes::default()
            }),
        )
        .await;
    assert!(matches!(result, Err(RepoError::Internal(_))), "{result:?}");
    assert_eq!(store.tasks.get(bystander.id).await.unwrap().title, "task-3");
    assert_eq!(store.tasks.get(finished.id).await.unwrap().title, "task-4");
}

pub async fn queue_depth_counts_pending_tasks_by_priority(store: StoreUnderTest) {
    let a = with_agent(&store, 50).await;
    for (n, priority) in [(1u128, 1), (2, 5), (3, 5), (4, 10)] {
        store
            .tasks
            .insert(&task(n, priority, &[], t(0)), vec![], None)
            .await
            .unwrap();
    }
    // Held and ended tasks are not in the queue.
    let mut held = task(5, 5, &[], t(0));
    held.assign(a.id, t(1)).unwrap();
    let mut cancelled = task(6, 10, &[], t(0));
    cancelled.cancel(t(1)).unwrap();
    for x in [&held, &cancelled] {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    assert_eq!(
        store.tasks.queue_depth().await.unwrap(),
        [1, 0, 0, 0, 2, 0, 0, 0, 0, 1]
    );
}

pub async fn an_agents_ended_tasks_are_counted_by_outcome_and_timed_within_the_span(
    store: StoreUnderTest,
) {
    let a = with_agent(&store, 50).await;
    let b = with_agent(&store, 51).await;
    let idle = with_agent(&store, 52).await;
    // `a` completes four tasks (running 10, 20, 30 and 40 s, the last ending before the
    // span), fails one, and holds one; `b` completes one it never started (timed from its
    // assignment).
    let mut tasks = Vec::new();
    for (n, start, end) in [(1u128, 100, 110), (2, 100, 120), (3, 100, 130), (4, 0, 40)] {
        let mut x = task(n, 5, &[], t(0));
        x.assign(a.id, t(start - 5)).unwrap();
        x.start(a.id, x.attempt, t(start)).unwrap();
        x.complete(a.id, x.attempt, serde_json::Map::new(), t(end))
            .unwrap();
        tasks.push(x);
    }
    let mut failed = task(5, 5, &[], t(0));
    failed.assign(a.id, t(100)).unwrap();
    failed
        .fail(a.id, failed.attempt, "broken", false, t(150))
        .unwrap();
    let mut held = task(6, 5, &[], t(0));
    held.assign(a.id, t(100)).unwrap();
    let mut unstarted = task(7, 5, &[], t(0));
    unstarted.assign(b.id, t(100)).unwrap();
    unstarted
        .complete(b.id, unstarted.attempt, serde_json::Map::new(), t(103))
        .unwrap();
    tasks.extend([failed, held, unstarted]);
    for x in &tasks {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    let mut found = store
        .tasks
        .outcomes(&[a.id, b.id, idle.id], t(60))
        .await
        .unwrap();
    found.sort_by_key(|o| o.agent.as_uuid());
    assert_eq!(found.len(), 2, "an agent that ended nothing is left out");
    let (of_a, of_b) = (&found[0], &found[1]);
    assert_eq!((of_a.agent, of_a.completed, of_a.failed), (a.id, 3, 1));
    let d = of_a.durations.unwrap();
    let close = |x: f64, y: f64| (x - y).abs() < 1e-9;
    assert!(
        close(d.mean, 20.0) && close(d.p50, 20.0) && close(d.p95, 29.0),
        "{d:?}"
    );
    assert_eq!((of_b.agent, of_b.completed, of_b.failed), (b.id, 1, 0));
    assert!(close(of_b.durations.unwrap().p50, 3.0));
    // A task that failed on one agent and was retried to completion on another counts for the
    // last holder only.
    let mut retried = task(8, 5, &[], t(0));
    retried.assign(idle.id, t(100)).unwrap();
    retried
        .fail(idle.id, retried.attempt, "broken", false, t(101))
        .unwrap();
    store.tasks.insert(&retried, vec![], None).await.unwrap();
    assert_eq!(
        store.tasks.outcomes(&[idle.id], t(60)).await.unwrap()[0].failed,
        1
    );
    let mut again = store.tasks.get(retried.id).await.unwrap();
    again.retry(t(102)).unwrap();
    again.assign(b.id, t(103)).unwrap();
    again
        .complete(b.id, again.attempt, serde_json::Map::new(), t(104))
        .unwrap();
    store
        .tasks
        .save(Changes {
            tasks: vec![again],
            ..Changes::default()
        })
        .await
        .unwrap();
    assert!(store
        .tasks
        .outcomes(&[idle.id], t(60))
        .await
        .unwrap()
        .is_empty());
    let of_b = store.tasks.outcomes(&[b.id], t(60)).await.unwrap();
    assert_eq!((of_b[0].completed, of_b[0].failed), (2, 0));
    // Only the agents asked about are counted.
    let only_b = store.tasks.outcomes(&[b.id], t(0)).await.unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].agent, b.id);
    assert!(store.tasks.outcomes(&[], t(0)).await.unwrap().is_empty());
}

pub async fn tasks_that_ended_long_enough_ago_are_purged_oldest_first_and_no_others(
    store: StoreUnderTest,
) {
    let worker = agent(1, "worker", &["etl"], t(0));
    store
        .agents
        .insert(&worker, &agent_key(1, worker.id, t(0)), vec![])
        .await
        .unwrap();
    // Four tasks end at 10, 20, 30 and 40 s, each in another way; one is held, one waits.
    let mut ended = Vec::new();
    for (n, end) in [(1u128, 10i64), (2, 20), (3, 30), (4, 40)] {
        let x = task(n, 5, &["etl"], t(0));
        store.tasks.insert(&x, vec![], None).await.unwrap();
        let mut x = store.tasks.get(x.id).await.unwrap();
        match n {
            1 => {
                x.assign(worker.id, t(end - 5)).unwrap();
                x.start(worker.id, 1, t(end - 4)).unwrap();
                x.complete(worker.id, 1, Default::default(), t(end))
                    .unwrap();
            }
            2 => {
                x.assign(worker.id, t(end - 5)).unwrap();
                x.fail(worker.id, 1, "broke", false, t(end)).unwrap();
            }
            3 => {
                x.cancel(t(end)).unwrap();
            }
            _ => {
                x.deadline = Some(t(end - 1));
                x.expire_if_late(t(end)).unwrap();
            }
        }
        ended.push(x.id);
        store
            .tasks
            .save(Changes {
                tasks: vec![x],
                ..Changes::default()
            })
            .await
            .unwrap();
    }
    let mut held = task(5, 5, &["etl"], t(0));
    held.assign(worker.id, t(1)).unwrap();
    store.tasks.insert(&held, vec![], None).await.unwrap();
    let waiting = task(6, 5, &["etl"], t(0));
    store.tasks.insert(&waiting, vec![], None).await.unwrap();

    // Ended before 35 s: three, taken oldest first, two at a time.
    assert_eq!(store.tasks.purge_ended(t(35), 2).await.unwrap(), 2);
    assert!(matches!(
        store.tasks.get(ended[0]).await,
        Err(RepoError::NotFound)
    ));
    assert!(matches!(
        store.tasks.get(ended[1]).await,
        Err(RepoError::NotFound)
    ));
    assert!(
        store.tasks.get(ended[2]).await.is_ok(),
        "the third waits for the next batch"
    );
    assert_eq!(store.tasks.purge_ended(t(35), 2).await.unwrap(), 1);
    assert_eq!(store.tasks.purge_ended(t(35), 2).await.unwrap(), 0);
    assert!(
        store.tasks.get(ended[3]).await.is_ok(),
        "it ended after the cut"
    );
    // However old, a task that has not ended stays; and the agent's figures and held tasks
    // no longer count what was deleted.
    assert_eq!(store.tasks.purge_ended(t(1_000_000), 100).await.unwrap(), 1);
    assert_eq!(
        store.tasks.held_by(worker.id).await.unwrap(),
        vec![held.clone()]
    );
    assert_eq!(store.tasks.get(waiting.id).await.unwrap(), waiting);
    let counts = store.tasks.count_by_status().await.unwrap();
    assert_eq!((counts.total(), counts.pending, counts.assigned), (2, 1, 1));
    assert!(store
        .tasks
        .outcomes(&[worker.id], t(0))
        .await
        .unwrap()
        .is_empty());
}
