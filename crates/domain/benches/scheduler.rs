//! B8: one scheduling decision among 100 / 1k / 10k / 100k serving agents, against a naive full
//! scan of the same fleet making the same choice (`cargo bench -p domain --bench scheduler`).
//!
//! The fleet is realistic: eight capability profiles, agents loaded to different degrees, and a
//! task that about a fifth of the fleet can run.

use std::collections::BTreeMap;

use chrono::DateTime;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use domain::scheduler::{AgentCapacity, Fleet, Strategy};
use domain::{AgentId, CapabilitySet, NewTask, Task, TaskId, TaskInput};
use uuid::Uuid;

const G: i128 = 1_000_000_000;
const PROFILES: [&[&str]; 8] = [
    &["etl", "data_processing"],
    &["etl"],
    &["ml_inference", "gpu_inference"],
    &["ml_training", "gpu_inference"],
    &["web_scraping", "http"],
    &["report_generation", "llm"],
    &["data_processing", "ml_inference"],
    &["http"],
];

fn caps(names: &[&str]) -> CapabilitySet {
    let v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    CapabilitySet::parse("c", &v).unwrap()
}

fn fleet(n: usize) -> Vec<AgentCapacity> {
    (0..n)
        .map(|i| {
            let max = 4 + (i % 5) as u32;
            AgentCapacity {
                id: AgentId(Uuid::from_u128(i as u128 + 1)),
                capabilities: caps(PROFILES[i % PROFILES.len()]),
                max_slots: max,
                free_slots: max - (i % 4) as u32,
                free: BTreeMap::from([
                    ("cpu".to_owned(), ((i % 16) as i128 + 1) * G),
                    ("memory".to_owned(), ((i % 32) as i128 + 1) * G * 1024),
                ]),
                reliability: 0.5 + (i % 50) as f64 / 100.0,
            }
        })
        .collect()
}

fn task() -> Task {
    let input = TaskInput {
        title: "infer".into(),
        priority: Some(5),
        required_capabilities: vec!["ml_inference".into()],
        resources: serde_json::json!({"cpu": 2, "memory": "4096"})
            .as_object()
            .unwrap()
            .clone(),
        ..TaskInput::default()
    };
    let now = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    Task::submit(
        NewTask::parse(input, now).unwrap(),
        TaskId(Uuid::from_u128(1)),
        now,
    )
}

/// The baseline: look at every agent, keep the best eligible one.
fn naive(agents: &[AgentCapacity], task: &Task) -> Option<AgentId> {
    let mut best: Option<(f64, AgentId)> = None;
    for agent in agents {
        if !agent.capabilities.covers(&task.required_capabilities) || !agent.fits(&task.resources) {
            continue;
        }
        let score = agent.score(Strategy::Spread);
        if best.is_none_or(|(s, id)| score > s || (score == s && agent.id < id)) {
            best = Some((score, agent.id));
        }
    }
    best.map(|(_, id)| id)
}

fn decisions(c: &mut Criterion) {
    let task = task();
    let mut group = c.benchmark_group("B8 one scheduling decision");
    for n in [100, 1_000, 10_000, 100_000] {
        let agents = fleet(n);
        let indexed = Fleet::new(agents.clone(), Strategy::Spread);
        assert_eq!(
            indexed.choose(&task),
            naive(&agents, &task),
            "both pick the same agent"
        );
        group.bench_with_input(BenchmarkId::new("fleet index", n), &n, |b, _| {
            b.iter(|| black_box(indexed.choose(black_box(&task))))
        });
        group.bench_with_input(BenchmarkId::new("naive full scan", n), &n, |b, _| {
            b.iter(|| black_box(naive(black_box(&agents), black_box(&task))))
        });
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
