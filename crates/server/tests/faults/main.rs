//! Faults survived by real processes: three replicas of the binary on one PostgreSQL and one
//! Redis, with clients and agents spread over them that move to another replica, as they would
//! behind a load balancer, when theirs does not answer or answers `503`. While 2,000 tasks
//! flow, one fault strikes: a replica killed with SIGKILL (with the agents that ran beside it,
//! holding a task each, which must come back to the queue when its lease runs out and finish
//! elsewhere), every replica restarted in turn with SIGTERM, the database cut off and back
//! through a proxy (which drops every connection and refuses new ones while down), or a
//! PostgreSQL or Redis server of the test's own really stopped and started again. Each time,
//! every acknowledged task completes exactly once, none is created twice, no attempt is assigned
//! twice, no request fails but with a retryable `503` (but where a replica is killed under it),
//! and a WebSocket subscriber sees every task event once, in order, moving to a live replica
//! with `since` when its own goes. A rolling restart does what a load balancer does when a
//! replica's readiness fails: takes it out of rotation before it stops.
//!
//! The five tests run one at a time (each starts three servers), and each replica keeps to one
//! worker and four database connections, so they fit a small machine. `servers` runs the
//! processes and breaks them, `requests` is how clients reach the replicas, and `flow` is the
//! work flowing through them and the checks every run must pass.

mod flow;
mod requests;
mod servers;

use serde_json::Value;
use tokio::sync::{Mutex as AsyncMutex, MutexGuard as AsyncGuard};

use crate::flow::{Flow, TASKS};
use crate::requests::Tally;
use crate::servers::{redis_url, OwnPostgres, OwnRedis, Proxy, Stack};

/// One fault test at a time.
async fn one_at_a_time() -> AsyncGuard<'static, ()> {
    static TURN: std::sync::OnceLock<AsyncMutex<()>> = std::sync::OnceLock::new();
    TURN.get_or_init(|| AsyncMutex::new(())).lock().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_flow_loses_no_task_and_runs_none_twice() {
    let _turn = one_at_a_time().await;
    let database = adapters_postgres::testing::fresh_database().await;
    let redis = redis_url();
    let mut stack = Stack::start(database, redis).await;
    let flow = Flow::start(&stack).await;
    flow.completed(TASKS / 3).await;
    // The replica's machine goes down: the agents beside it with it, each holding a task it
    // started; the agents elsewhere move to the live replicas.
    let abandoned = flow.doom_agents_beside_replica_0().await;
    stack.replicas[0].child.kill().unwrap();
    stack.replicas[0].child.wait().unwrap();
    let (tally, histories) = flow.finish(&[1, 2]).await;
    eprintln!("replica killed: {tally:?}");
    // Requests the kill cut off are the only ones that failed.
    assert_eq!(tally.failed(), 0, "{tally:?}");
    assert!(!abandoned.is_empty());
    // Each task a dead agent held came back to the queue when its lease ran out, and another
    // agent ran it to the end in a later attempt.
    for (agent, task) in abandoned {
        let history = &histories[&task];
        let holder = |e: &Value| e["data"]["assigned_agent"].as_str().map(str::to_owned);
        let attempt = |e: &Value| e["data"]["attempt"].as_i64().unwrap();
        let assigned: Vec<&Value> = history
            .iter()
            .filter(|e| e["type"] == "task_assigned")
            .collect();
        let lost = assigned
            .iter()
            .rposition(|&e| holder(e).as_deref() == Some(agent.as_str()))
            .unwrap_or_else(|| panic!("task {task} was held by {agent}: {history:?}"));
        let lease_ran_out = history.iter().any(|e| {
            e["type"] == "task_retrying"
                && e["data"]["error"] == "lease expired"
                && attempt(e) > attempt(assigned[lost])
        });
        assert!(
            lease_ran_out,
            "task {task} came back when its lease ran out: {history:?}"
        );
        let completed = history
            .iter()
            .find(|e| e["type"] == "task_completed")
            .unwrap();
        let finisher = holder(completed);
        assert!(
            finisher.is_some() && finisher.as_deref() != Some(agent.as_str()),
            "task {task}, left by dead agent {agent}, was finished by another: {history:?}"
        );
        assert!(
            assigned[lost + 1..]
                .iter()
                .any(|&e| holder(e) == finisher && attempt(e) > attempt(assigned[lost])),
            "task {task} went back to the queue and was run again in a later attempt: \
             {history:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_fails_no_request_but_with_a_retryable_503() {
    let _turn = one_at_a_time().await;
    let database = adapters_postgres::testing::fresh_database().await;
    let redis = redis_url();
    let mut stack = Stack::start(database, redis).await;
    let flow = Flow::start(&stack).await;
    flow.completed(TASKS / 4).await;
    for i in 0..3 {
        stack.restart(i).await;
    }
    let (tally, _) = flow.finish(&[0, 1, 2]).await;
    eprintln!("rolling restart: {tally:?}");
    assert_eq!(
        tally.broken, 0,
        "a request was cut off by a graceful stop: {tally:?}"
    );
    assert_eq!(tally.failed(), 0, "{tally:?}");
}

/// What a run where no replica died must show: no request cut off, and no error but a
/// retryable `503`.
fn only_retries(fault: &str, tally: &Tally) {
    eprintln!("{fault}: {tally:?}");
    assert_eq!(
        tally.broken, 0,
        "{fault}: a request got no answer: {tally:?}"
    );
    assert_eq!(tally.failed(), 0, "{fault}: {tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_cut_off_mid_flow_costs_only_retries() {
    let _turn = one_at_a_time().await;
    let database = adapters_postgres::testing::fresh_database().await;
    let (prefix, rest) = database.split_once("://").unwrap();
    let (credentials, host_and_db) = rest
        .split_once('@')
        .expect("TEST_DATABASE_URL names its user (postgres://user@host/...)");
    let (host, db) = host_and_db.split_once('/').unwrap();
    let proxy = Proxy::start(host.to_owned()).await;
    let proxied = format!("{prefix}://{credentials}@127.0.0.1:{}/{db}", proxy.port);
    let redis = redis_url();
    let stack = Stack::start(proxied, redis).await;
    let flow = Flow::start(&stack).await;
    flow.completed(TASKS / 3).await;
    proxy.set_up(false);
    // Down until clients feel it: a write is refused with 503.
    flow.write_refused().await;
    proxy.set_up(true);
    let (tally, _) = flow.finish(&[0, 1, 2]).await;
    only_retries("database cut off", &tally);
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_and_started_mid_flow_loses_no_event() {
    let _turn = one_at_a_time().await;
    let database = adapters_postgres::testing::fresh_database().await;
    let mut redis = OwnRedis::start().await;
    let stack = Stack::start(database, redis.url()).await;
    let flow = Flow::start(&stack).await;
    flow.completed(TASKS / 3).await;
    let marks: Vec<usize> = stack.replicas.iter().map(|r| r.said.mark()).collect();
    redis.stop();
    // Down until every replica has noticed, and while 50 tasks complete without it (their
    // events reach the subscriber from the log); then started again.
    for (replica, &mark) in stack.replicas.iter().zip(&marks) {
        assert!(
            replica
                .said
                .after(mark, "lost the Redis event subscription")
                .await,
            "a replica noticed Redis stopped"
        );
    }
    flow.completed_more(50).await;
    let marks: Vec<usize> = stack.replicas.iter().map(|r| r.said.mark()).collect();
    redis.restart().await;
    let (tally, _) = flow.finish(&[0, 1, 2]).await;
    only_retries("Redis restarted", &tally);
    // Every replica found Redis again.
    for (replica, &mark) in stack.replicas.iter().zip(&marks) {
        assert!(
            replica
                .said
                .after(mark, "subscribed to Redis event notices")
                .await,
            "a replica found Redis again"
        );
    }
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_restarted_mid_flow_costs_only_retries() {
    let _turn = one_at_a_time().await;
    let postgres = OwnPostgres::start();
    let redis = redis_url();
    let stack = Stack::start(postgres.url(), redis).await;
    let flow = Flow::start(&stack).await;
    flow.completed(TASKS / 3).await;
    // A real stop (every session ended, nothing accepted) and start of the server.
    tokio::task::block_in_place(|| postgres.pg_ctl("stop"));
    // Down until clients feel it: a write is refused with 503. Then started again.
    flow.write_refused().await;
    tokio::task::block_in_place(|| postgres.pg_ctl("start"));
    let (tally, _) = flow.finish(&[0, 1, 2]).await;
    only_retries("database restarted", &tally);
    drop(stack);
}
