//! The event log contract: what every implementation of `EventLog` must do.

use chrono::{DateTime, Utc};
use domain::{EventKind, NewEvent};
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

pub async fn the_log_keeps_one_identity(store: StoreUnderTest) {
    let first = store.events.log_id().await.unwrap();
    assert!(!first.is_nil());
    assert_eq!(store.events.log_id().await.unwrap(), first);
}

pub async fn two_stores_keep_different_logs(one: StoreUnderTest, other: StoreUnderTest) {
    let ours = one.events.log_id().await.unwrap();
    let theirs = other.events.log_id().await.unwrap();
    assert_ne!(
        ours, theirs,
        "two stores must not share a log identity: their events would mix on a shared bus"
    );
    // Events written to one are not in the other.
    let a = agent(1, "worker-1", &[], t(0));
    one.agents
        .insert(&a, &agent_key(1, a.id, t(0)), vec![note(1, &a)])
        .await
        .unwrap();
    numbered(&one).await;
    assert_eq!(one.events.events_after(0, 10).await.unwrap().len(), 1);
    assert!(other.events.events_after(0, 10).await.unwrap().is_empty());
}

pub async fn events_are_numbered_and_read_back_in_order(store: StoreUnderTest) {
    let a = agent(1, "worker-1", &[], t(0));
    store
        .agents
        .insert(&a, &agent_key(1, a.id, t(0)), vec![note(1, &a)])
        .await
        .unwrap();
    let b = agent(2, "worker-2", &[], t(0));
    store
        .agents
        .insert(
            &b,
            &agent_key(2, b.id, t(0)),
            vec![note(2, &b), note(3, &b)],
        )
        .await
        .unwrap();

    let all = numbered(&store).await.events_after(0, 100).await.unwrap();
    let ns: Vec<_> = all.iter().map(|e| e.data["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [1, 2, 3]);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all[1].agent_id, Some(b.id));
    assert_eq!(all[0].timestamp, a.updated_at);

    let after_first = store.events.events_after(all[0].seq, 100).await.unwrap();
    assert_eq!(after_first.len(), 2);
    assert_eq!(
        store
            .events
            .events_after(all[0].seq, 1)
            .await
            .unwrap()
            .len(),
        1
    );

    let latest = store.events.latest_events(2).await.unwrap();
    let ns: Vec<_> = latest
        .iter()
        .map(|e| e.data["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [3, 2], "newest first");
}

pub async fn writes_number_events_consecutively_in_write_order_and_hand_each_over_once(
    store: StoreUnderTest,
) {
    assert!(store.events.sequence(10).await.unwrap().is_empty());
    let a = agent(1, "worker-1", &[], t(0));
    let events: Vec<NewEvent> = (1..=5).map(|n| note(n, &a)).collect();
    store
        .agents
        .insert(&a, &agent_key(1, a.id, t(0)), events)
        .await
        .unwrap();
    let written = store.events.events_after(0, 10).await.unwrap();
    assert_eq!(
        written.len(),
        5,
        "a write's events are numbered as it commits, and read back at once"
    );
    // The hand-over after a write and the periodic one draw on the same queue.
    let first = store.events.hand_over(3).await.unwrap();
    let rest = store.events.sequence(10).await.unwrap();
    assert_eq!((first.len(), rest.len()), (3, 2), "the limit is honoured");
    assert!(store.events.hand_over(10).await.unwrap().is_empty());
    assert!(
        store.events.sequence(10).await.unwrap().is_empty(),
        "numbered once"
    );
    let all: Vec<_> = first.into_iter().chain(rest).collect();
    let ns: Vec<u64> = all.iter().map(|e| e.data["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [1, 2, 3, 4, 5], "numbered in write order");
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive: {seqs:?}"
    );
    assert_eq!(written, all, "handed over as stored");
}

pub async fn racing_relays_are_handed_every_event_once_without_gaps(store: StoreUnderTest) {
    let a = agent(1, "worker-1", &[], t(0));
    let events: Vec<NewEvent> = (1..=60).map(|n| note(n, &a)).collect();
    store
        .agents
        .insert(&a, &agent_key(1, a.id, t(0)), events)
        .await
        .unwrap();
    // Eight relays at once on one store, a few events at a time, after a burst of writes.
    let relays: Vec<_> = (0..8)
        .map(|_| {
            let log = store.events.clone();
            tokio::spawn(async move {
                let mut numbered = Vec::new();
                loop {
                    let batch = log
                        .sequence(4)
                        .await
                        .expect("sequencing never loses a race");
                    if batch.is_empty() {
                        return numbered;
                    }
                    numbered.extend(batch);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for relay in relays {
        all.extend(relay.await.unwrap());
    }
    all.sort_by_key(|e| e.seq);
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + 60).collect::<Vec<_>>(),
        "every event numbered once, consecutively"
    );
    let ns: Vec<u64> = all.iter().map(|e| e.data["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (1..=60).collect::<Vec<_>>(), "numbered in write order");
    assert_eq!(store.events.events_after(0, 100).await.unwrap(), all);
}

pub async fn pruning_bounds_the_log_by_age_and_count_and_keeps_the_newest(store: StoreUnderTest) {
    let a = agent(1, "worker-1", &[], t(0));
    let events: Vec<NewEvent> = (1..=6)
        .map(|n| {
            let mut e = note(n, &a);
            e.timestamp = t(n as i64 * 10);
            e
        })
        .collect();
    store
        .agents
        .insert(&a, &agent_key(1, a.id, t(0)), events)
        .await
        .unwrap();
    let log = numbered(&store).await;
    let ns = |events: Vec<domain::Event>| -> Vec<u64> {
        events
            .iter()
            .map(|e| e.data["n"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        store.events.prune(t(25), 100).await.unwrap(),
        2,
        "older than 25 s: n = 1 and 2"
    );
    assert_eq!(ns(log.events_after(0, 10).await.unwrap()), [3, 4, 5, 6]);
    assert_eq!(
        store.events.prune(t(0), 3).await.unwrap(),
        1,
        "beyond the newest three"
    );
    assert_eq!(ns(log.events_after(0, 10).await.unwrap()), [4, 5, 6]);
    assert_eq!(
        store.events.prune(t(1000), 0).await.unwrap(),
        2,
        "everything old goes..."
    );
    assert_eq!(
        ns(log.events_after(0, 10).await.unwrap()),
        [6],
        "...but the newest stays"
    );

    // Numbering continues above what was pruned.
    let more = vec![note(7, &a)];
    let mut b = a.clone();
    b.max_concurrent_tasks = 5;
    store.agents.update(&b, more).await.unwrap();
    let next = store.events.sequence(10).await.unwrap();
    let last = log.events_after(0, 10).await.unwrap()[0].seq;
    assert_eq!(next[0].seq, last + 1);
}

pub async fn task_events_are_a_tasks_numbered_events_oldest_first(store: StoreUnderTest) {
    let mine = crate::builders::task(1, 5, &[], t(0));
    let other = crate::builders::task(2, 5, &[], t(0));
    let about = |x: &domain::Task, n: u64| {
        NewEvent::about_task(EventKind::TaskProgress, x.id, None, json!({"n": n}), t(0))
    };
    store
        .tasks
        .insert(&mine, vec![about(&mine, 1), about(&mine, 2)], None)
        .await
        .unwrap();
    store
        .tasks
        .insert(&other, vec![about(&other, 3)], None)
        .await
        .unwrap();
    // Numbered as written: read back at once.
    let ns: Vec<u64> = store
        .events
        .task_events(mine.id, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.data["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2]);
    assert_eq!(store.events.task_events(mine.id, 1).await.unwrap().len(), 1);
}
