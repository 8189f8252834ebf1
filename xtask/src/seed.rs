//! `cargo xtask seed`: a realistic demo fleet, written through the platform's own use cases so
//! every row has its events, exactly as if an operator had registered it over the API.

use std::sync::Arc;

use adapters_memory::{MemoryBus, RandomIds, SystemClock};
use app::{Dependencies, Platform, Settings};
use domain::{AgentPatch, NewAgent, NewTask, Principal, Role, StatusRequest, TaskInput};
use ports::AgentQuery;
use serde_json::{json, Value};

/// (name, capabilities, resources, max concurrent tasks, team)
const FLEET: &[(&str, &[&str], &str, u32, &str)] = &[
    (
        "ingest-worker-1",
        &["data_ingestion", "etl"],
        r#"{"cpu": 4, "memory": "8Gi"}"#,
        4,
        "data",
    ),
    (
        "ingest-worker-2",
        &["data_ingestion", "etl"],
        r#"{"cpu": 4, "memory": "8Gi"}"#,
        4,
        "data",
    ),
    (
        "etl-transformer",
        &["etl", "data_processing"],
        r#"{"cpu": 8, "memory": "16Gi"}"#,
        6,
        "data",
    ),
    (
        "gpu-inference-a100-1",
        &["ml_inference", "gpu_inference"],
        r#"{"cpu": 16, "memory": "64Gi", "gpu": 1}"#,
        2,
        "ml",
    ),
    (
        "gpu-inference-a100-2",
        &["ml_inference", "gpu_inference"],
        r#"{"cpu": 16, "memory": "64Gi", "gpu": 1}"#,
        2,
        "ml",
    ),
    (
        "trainer-h100",
        &["ml_training", "gpu_inference"],
        r#"{"cpu": 32, "memory": "256Gi", "gpu": 8}"#,
        1,
        "ml",
    ),
    (
        "llm-report-writer",
        &["report_generation", "llm"],
        r#"{"cpu": "2", "memory": "4Gi"}"#,
        8,
        "analytics",
    ),
    (
        "web-scraper-1",
        &["web_scraping", "http"],
        r#"{"cpu": "500m", "memory": "512Mi"}"#,
        16,
        "growth",
    ),
    (
        "web-scraper-2",
        &["web_scraping", "http"],
        r#"{"cpu": "500m", "memory": "512Mi"}"#,
        16,
        "growth",
    ),
    (
        "data-processor",
        &["data_processing", "ml_inference"],
        r#"{"cpu": 2, "memory": "1Gi"}"#,
        3,
        "ai",
    ),
];

pub async fn run(force: bool) -> anyhow::Result<()> {
    let store = Arc::new(crate::connect().await?);
    store.migrate().await?;
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
        subject: "xtask-seed".into(),
        role: Role::Operator,
        agent_id: None,
        expires_at: None,
        api_key: None,
        user_token: None,
    };
    let existing = platform
        .list_agents(
            &operator,
            AgentQuery::default(),
            domain::Limit::new(Some(1)).map_err(anyhow::Error::msg)?,
        )
        .await?;
    if !existing.items.is_empty() && !force {
        println!("the database already has agents; nothing seeded (use --force to add the demo fleet anyway)");
        return Ok(());
    }

    println!("{:<24} {:<38} agent_key (shown once)", "agent", "id");
    for (name, capabilities, resources, max, team) in FLEET {
        let capabilities: Vec<String> = capabilities.iter().map(|c| c.to_string()).collect();
        let resources: Value = serde_json::from_str(resources)?;
        let metadata = json!({"team": team, "seeded": true});
        let new = NewAgent::parse(
            name,
            &capabilities,
            resources.as_object().expect("resources are objects"),
            metadata.as_object().expect("metadata is an object").clone(),
            Some(*max),
        )
        .map_err(|e| anyhow::anyhow!("demo agent {name}: {e}"))?;
        let registered = platform.register_agent(&operator, new).await?;
        println!(
            "{name:<24} {:<38} {}",
            registered.agent.id, registered.agent_key
        );
        if *name == "etl-transformer" {
            // One agent winding down, so the demo shows more than one status.
            let patch = AgentPatch {
                status: Some(StatusRequest::Draining),
                ..AgentPatch::default()
            };
            platform
                .update_agent(&operator, registered.agent.id, patch)
                .await?;
        }
    }
    let now = chrono::Utc::now();
    for (title, priority, capabilities, resources) in TASKS {
        let input = TaskInput {
            title: title.to_string(),
            description: Some(format!("demo task: {title}")),
            priority: Some(*priority),
            required_capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            resources: serde_json::from_str::<Value>(resources)?
                .as_object()
                .expect("resources are objects")
                .clone(),
            metadata: json!({"seeded": true}).as_object().expect("object").clone(),
            ..TaskInput::default()
        };
        let new =
            NewTask::parse(input, now).map_err(|e| anyhow::anyhow!("demo task {title}: {e}"))?;
        platform.submit_task(&operator, new, None).await?;
    }
    let assigned = platform.run_scheduler().await?;
    store.close().await;
    println!(
        "seeded {} agents and {} tasks ({assigned} assigned at once; the rest wait, each with its reason)",
        FLEET.len(),
        TASKS.len()
    );
    Ok(())
}

/// (title, priority, required capabilities, resources)
const TASKS: &[(&str, i64, &[&str], &str)] = &[
    (
        "Ingest yesterday's orders",
        6,
        &["data_ingestion"],
        r#"{"cpu": 2, "memory": "4Gi"}"#,
    ),
    (
        "Normalise customer records",
        5,
        &["etl"],
        r#"{"cpu": 2, "memory": "2Gi"}"#,
    ),
    (
        "Score churn risk",
        8,
        &["ml_inference"],
        r#"{"cpu": 4, "memory": "16Gi", "gpu": 1}"#,
    ),
    (
        "Fine-tune ranking model",
        7,
        &["ml_training"],
        r#"{"cpu": 16, "memory": "128Gi", "gpu": 8}"#,
    ),
    (
        "Weekly analytics report",
        3,
        &["report_generation"],
        r#"{"cpu": "500m", "memory": "1Gi"}"#,
    ),
    (
        "Crawl competitor prices",
        4,
        &["web_scraping"],
        r#"{"cpu": "250m", "memory": "256Mi"}"#,
    ),
    (
        "Transcribe support calls",
        5,
        &["speech_to_text"],
        r#"{"cpu": 2}"#,
    ),
];
