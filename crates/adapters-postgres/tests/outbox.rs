//! The event log on PostgreSQL is an outbox: an event is numbered only once its transaction has
//! committed, so a reader following `seq` never skips an event that commits late.

use ports::{AgentRepository, EventLog};
use serde_json::json;

#[tokio::test]
async fn an_event_committed_late_is_numbered_after_the_ones_already_read() {
    let store = adapters_postgres::testing::fresh_store().await;

    // A writer has stored its event but not committed yet.
    let mut slow = store.pool().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (type, channel, data, created_at)
         VALUES ('agent_updated', 'agent_activity', '{\"n\": 1}', now())",
    )
    .execute(&mut *slow)
    .await
    .unwrap();

    // Meanwhile another write commits, and a reader consumes everything numbered.
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let agent = testkit::builders::agent(1, "fast", &[], at);
    let event = domain::NewEvent::about_agent(
        domain::EventKind::AgentUpdated,
        agent.id,
        json!({"n": 2}),
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
