//! A scheduling pass on PostgreSQL never waits for a row another write holds: an agent whose
//! row is locked (its reports being written) is left out of the pass, which says so.

use ports::{AgentRepository, Changes, PassSize, TaskRepository};
use testkit::builders::{agent, agent_key};

#[tokio::test]
async fn a_pass_leaves_out_the_agents_another_write_holds_and_says_so() {
    let store = adapters_postgres::testing::fresh_store().await;
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let (busy, free) = (agent(1, "busy", &[], at), agent(2, "free", &[], at));
    for (n, a) in [(1, &busy), (2, &free)] {
        AgentRepository::insert(&store, a, &agent_key(n, a.id, at), vec![])
            .await
            .unwrap();
    }
    // Another write holds one agent's row.
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM agents WHERE id = $1 FOR UPDATE")
        .bind(busy.id.as_uuid())
        .execute(&mut *holder)
        .await
        .unwrap();

    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let policy = domain::scheduler::Policy::default();
    let pass = store.schedule(
        at,
        PassSize::fitted(100),
        &policy,
        Box::new(move |snapshot| {
            let agents: Vec<_> = snapshot.agents.iter().map(|a| a.id).collect();
            *record.lock().unwrap() = Some((agents, snapshot.left_out));
            Changes::default()
        }),
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), pass)
        .await
        .expect("the pass does not wait for the held row")
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some((vec![free.id], 1)));
    holder.rollback().await.unwrap();
}
