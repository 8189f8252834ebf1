//! The event log on PostgreSQL: writes number their events as they commit, in commit order on
//! every replica, so a reader following `seq` never skips an event; events an earlier version
//! stored without a number are numbered after the ones already read.

use adapters_postgres::{PgStore, PoolSettings};
use ports::{AgentRepository, EventLog};
use serde_json::json;

/// `n` small events about agent `a`, in the order written.
fn notes(agent: &domain::Agent, n: std::ops::Range<u64>) -> Vec<domain::NewEvent> {
    n.map(|n| {
        domain::NewEvent::about_agent(
            domain::EventKind::AgentUpdated,
            agent.id,
            json!({"n": n}),
            agent.created_at,
        )
    })
    .collect()
}

/// Everything `store` hands over, until it has nothing more.
async fn handed_over(store: &PgStore) -> Vec<domain::Event> {
    let mut all = Vec::new();
    loop {
        let batch = store.sequence(1000).await.unwrap();
        assert!(batch.len() <= 1000, "at most the limit at a time");
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// Stores an event the way a version before write-time numbering did: without a number.
async fn insert_unnumbered<'c>(on: impl sqlx::PgExecutor<'c>) {
    sqlx::query(
        "INSERT INTO events (type, channel, data, created_at)
         VALUES ('agent_updated', 'agent_activity', '{\"n\": 1}', now())",
    )
    .execute(on)
    .await
    .unwrap();
}

/// One write through the store: an agent registered with one event carrying `n`.
async fn write_one_event(store: &PgStore, n: u64) {
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let agent = testkit::builders::agent(1, "writer", &[], at);
    let event = domain::NewEvent::about_agent(
        domain::EventKind::AgentUpdated,
        agent.id,
        json!({"n": n}),
        at,
    );
    store
        .insert(
            &agent,
            &testkit::builders::agent_key(1, agent.id, at),
            vec![event],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn replicas_writing_at_once_number_the_log_without_gaps_and_each_hands_over_its_own() {
    let url = adapters_postgres::testing::fresh_database().await;
    let settings = PoolSettings {
        max_connections: 4,
        ..PoolSettings::default()
    };
    let replicas = [
        PgStore::connect(&url, &settings).await.unwrap(),
        PgStore::connect(&url, &settings).await.unwrap(),
    ];
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let writes: Vec<_> = (0..40u64)
        .map(|w| {
            let store = replicas[(w % 2) as usize].clone();
            tokio::spawn(async move {
                let agent = testkit::builders::agent(u128::from(w) + 1, &format!("a{w}"), &[], at);
                let key = testkit::builders::agent_key(u128::from(w) + 1, agent.id, at);
                let events = notes(&agent, w * 10..w * 10 + 3);
                store.insert(&agent, &key, events).await.unwrap();
            })
        })
        .collect();
    for write in writes {
        write.await.unwrap();
    }
    let log = replicas[0].events_after(0, 1000).await.unwrap();
    let seqs: Vec<i64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=120).collect::<Vec<_>>(),
        "no gap, no number twice"
    );
    for window in log.chunks(3) {
        let n: Vec<u64> = window
            .iter()
            .map(|e| e.data["n"].as_u64().unwrap())
            .collect();
        assert_eq!(n[1], n[0] + 1, "one write's events are numbered together");
        assert_eq!(n[2], n[0] + 2);
    }
    let (first, second) = (
        handed_over(&replicas[0]).await,
        handed_over(&replicas[1]).await,
    );
    let of = |events: &[domain::Event], replica: u64| {
        events
            .iter()
            .all(|e| (e.data["n"].as_u64().unwrap() / 10) % 2 == replica)
    };
    assert!(
        of(&first, 0) && of(&second, 1),
        "each hands over its own writes' events"
    );
    assert_eq!(first.len() + second.len(), 120);
    for handed in [&first, &second] {
        assert!(
            handed.windows(2).all(|w| w[0].seq < w[1].seq),
            "in seq order"
        );
        assert!(handed.iter().all(|e| log.contains(e)), "as stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_hands_over_its_own_events_in_order_while_others_commit() {
    let url = adapters_postgres::testing::fresh_database().await;
    let settings = PoolSettings {
        max_connections: 12,
        ..PoolSettings::default()
    };
    let store = PgStore::connect(&url, &settings).await.unwrap();
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    // As the relay after every write does: once a write has committed, one hand-over at a
    // time, while the writes numbered just before it may still be committing.
    let handed = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<domain::Event>::new()));
    let writes: Vec<_> = (0..120u64)
        .map(|w| {
            let (store, handed) = (store.clone(), handed.clone());
            tokio::spawn(async move {
                let n = u128::from(w) + 1;
                let agent = testkit::builders::agent(n, &format!("a{w}"), &[], at);
                let key = testkit::builders::agent_key(n, agent.id, at);
                store
                    .insert(&agent, &key, notes(&agent, w * 10..w * 10 + 2))
                    .await
                    .unwrap();
                let mut handed = handed.lock().await;
                handed.extend(store.hand_over(1000).await.unwrap());
                let mine = handed
                    .iter()
                    .filter(|e| e.data["n"].as_u64().unwrap() / 10 == w)
                    .count();
                assert_eq!(
                    mine, 2,
                    "write {w}'s events are handed over once it has committed"
                );
            })
        })
        .collect();
    for write in writes {
        write.await.unwrap();
    }
    let handed = handed.lock().await.clone();
    let log = store.events_after(0, 1000).await.unwrap();
    assert_eq!(log.len(), 240);
    assert_eq!(handed, log, "every event handed over once, in seq order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_dropped_midway_leave_no_committed_event_unhanded() {
    let store = adapters_postgres::testing::fresh_store().await;
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    // Writes whose callers give up at every point of the way, as requests whose clients go
    // away: some never start, some roll back, some commit while nobody waits for them.
    for round in 0..30u64 {
        let writes: Vec<_> = (round * 10..round * 10 + 10)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let n = u128::from(w) + 1;
                    let agent = testkit::builders::agent(n, &format!("a{w}"), &[], at);
                    let key = testkit::builders::agent_key(n, agent.id, at);
                    let write = store.insert(&agent, &key, notes(&agent, w * 10..w * 10 + 2));
                    let patience = std::time::Duration::from_micros(w % 30 * 300);
                    let _ = tokio::time::timeout(patience, write).await;
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap();
        }
    }
    // Writes whose callers gave up may still be committing: they finish first.
    store.commits_settled().await;
    let handed = handed_over(&store).await;
    let log = store.events_after(0, 10_000).await.unwrap();
    assert!(!log.is_empty(), "some writes committed");
    assert!(log.len() < 600, "and some were given up before they did");
    assert_eq!(
        handed, log,
        "every committed event is handed over, once, in order"
    );
}

#[tokio::test]
async fn events_not_kept_in_memory_are_read_back_from_the_log_in_order() {
    let store = adapters_postgres::testing::fresh_store().await;
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    // More than a store keeps in memory for its relay, written while nothing hands them over.
    for (n, name, events) in [(1, "big", 0..60_000), (2, "small", 60_000..60_003)] {
        let agent = testkit::builders::agent(n, name, &[], at);
        let key = testkit::builders::agent_key(n, agent.id, at);
        store
            .insert(&agent, &key, notes(&agent, events))
            .await
            .unwrap();
    }
    let handed = handed_over(&store).await;
    let n: Vec<u64> = handed
        .iter()
        .map(|e| e.data["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        n,
        (0..60_003).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(handed.last().unwrap().seq, 60_003);
}

#[tokio::test]
async fn an_event_committed_late_is_numbered_after_the_ones_already_read() {
    let store = adapters_postgres::testing::fresh_store().await;

    // A writer has stored its event but not committed yet.
    let mut slow = store.pool().begin().await.unwrap();
    insert_unnumbered(&mut *slow).await;

    // Meanwhile another write commits, and a reader consumes everything numbered.
    write_one_event(&store, 2).await;
    let first = store.sequence(10).await.unwrap();
    assert_eq!(
        first.len(),
        1,
        "the open transaction's event is not numbered"
    );
    assert_eq!(first[0].data["n"], 2);
    let reader_at = first[0].seq;

    slow.commit().await.unwrap();
    let second = store.sequence(10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].data["n"], 1);
    assert_eq!(
        second[0].seq,
        reader_at + 1,
        "numbered after what the reader has seen"
    );
    let next = store.events_after(reader_at, 10).await.unwrap();
    assert_eq!(
        next, second,
        "the reader's next read has it: nothing is skipped"
    );
}

#[tokio::test]
async fn the_hand_over_after_a_write_leaves_old_versions_rows_to_the_periodic_relay() {
    let store = adapters_postgres::testing::fresh_store().await;
    // A row an earlier version stored without a number, committed.
    insert_unnumbered(store.pool()).await;
    write_one_event(&store, 2).await;
    let written = store.hand_over(10).await.unwrap();
    assert_eq!(written.len(), 1, "only this handle's write");
    assert_eq!(written[0].data["n"], 2);
    let unnumbered: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE seq IS NULL")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(unnumbered, 1, "the old row is left for the periodic relay");
    let left = store.sequence(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].data["n"], 1);
    assert_eq!(left[0].seq, written[0].seq + 1);
}
