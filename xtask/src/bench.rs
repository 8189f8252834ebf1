//! `cargo xtask bench-scheduler`: B9, scheduler throughput through PostgreSQL.
//!
//! On a fresh database: registers a fleet, submits enough tasks to fill it, then runs scheduling
//! passes until every task is placed, and reports assignments per second for the passes alone.
//! Durable settings (`synchronous_commit` on) throughout.

use std::sync::Arc;
use std::time::Instant;

use adapters_memory::{MemoryBus, RandomIds, SystemClock};
use app::{Dependencies, Platform, Settings};
use domain::{NewAgent, NewTask, Principal, Role, TaskInput};
use serde_json::json;

const TASKS: usize = 20_000;

pub async fn run() -> anyhow::Result<()> {
    println!("B9 scheduler throughput through PostgreSQL, {TASKS} tasks per fleet");
    println!(
        "{:>8} {:>10} {:>9} {:>14}",
        "agents", "assigned", "seconds", "assignments/s"
    );
    for agents in [1_000usize, 10_000] {
        let (assigned, seconds) = measure(agents).await?;
        println!(
            "{agents:>8} {assigned:>10} {seconds:>9.2} {:>14.0}",
            assigned as f64 / seconds
        );
    }
    Ok(())
}

async fn measure(agents: usize) -> anyhow::Result<(usize, f64)> {
    let url = adapters_postgres::testing::fresh_database().await;
    let store = Arc::new(
        adapters_postgres::PgStore::connect(&url, &adapters_postgres::PoolSettings::default())
            .await?,
    );
    let platform = Platform::new(
        Dependencies::on_store(
            store.clone(),
            Arc::new(MemoryBus::new()),
            Arc::new(SystemClock),
            Arc::new(RandomIds),
        ),
        Settings::default(),
    );
    let operator = Principal {
        subject: "bench".into(),
        role: Role::Operator,
        agent_id: None,
        expires_at: None,
        api_key: None,
        user_token: None,
    };
    let slots = TASKS.div_ceil(agents) as u32;
    for n in 0..agents {
        let caps = [["etl", "ml_inference", "http", "llm"][n % 4].to_owned()];
        let new = NewAgent::parse(
            &format!("bench-agent-{n}"),
            &caps,
            json!({"cpu": 64, "memory": "256Gi"})
                .as_object()
                .expect("object"),
            serde_json::Map::new(),
            Some(slots + 1),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        platform.register_agent(&operator, new).await?;
    }
    let now = chrono::Utc::now();
    for n in 0..TASKS {
        let input = TaskInput {
            title: format!("bench-task-{n}"),
            priority: Some((n % 10) as i64 + 1),
            required_capabilities: vec![["etl", "ml_inference", "http", "llm"][n % 4].to_owned()],
            resources: json!({"cpu": 1}).as_object().expect("object").clone(),
            ..TaskInput::default()
        };
        let new = NewTask::parse(input, now).map_err(|e| anyhow::anyhow!("{e}"))?;
        platform.submit_task(&operator, new, None).await?;
    }
    let started = Instant::now();
    let mut assigned = 0;
    loop {
        let n = platform.run_scheduler().await?;
        if n == 0 {
            break;
        }
        assigned += n;
    }
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    Ok((assigned, seconds))
}
