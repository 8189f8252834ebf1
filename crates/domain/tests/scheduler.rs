//! The scheduler: scenarios, and property tests of its invariants (no over-commit, every
//! assignment fits, priority order respected, every task accounted for).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use domain::scheduler::{
    effective_priority, first_in_queue, head_of_queue, queue_order, schedule, AgentCapacity, Held,
    Plan, Policy, Pools, Strategy as Placement,
};
use domain::{AgentId, CapabilitySet, NewTask, Task, TaskId, TaskInput};
use proptest::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

const G: i128 = 1_000_000_000;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap()
}

fn caps(names: &[&str]) -> CapabilitySet {
    let v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    CapabilitySet::parse("c", &v).unwrap()
}

fn task(n: u128, priority: i64, needs: &[&str], resources: Value, at: i64) -> Task {
    let input = TaskInput {
        title: format!("task {n}"),
        priority: Some(priority),
        required_capabilities: needs.iter().map(|s| s.to_string()).collect(),
        resources: resources.as_object().unwrap().clone(),
        ..TaskInput::default()
    };
    Task::submit(
        NewTask::parse(input, t(at)).unwrap(),
        TaskId(Uuid::from_u128(n)),
        t(at),
    )
}

fn agent(n: u128, has: &[&str], slots: u32, cpu: i128) -> AgentCapacity {
    AgentCapacity {
        id: AgentId(Uuid::from_u128(n)),
        capabilities: caps(has),
        max_slots: slots,
        free_slots: slots,
        free: BTreeMap::from([("cpu".to_owned(), cpu * G)]),
        reliability: 1.0,
    }
}

#[test]
fn the_head_of_the_queue_is_priority_then_age_then_id_whatever_the_aging() {
    // An hour-old priority-2 task ranks first by effective priority; kept in the queue, it
    // comes after every priority-6 task.
    let tasks = [
        task(1, 2, &[], json!({}), 0),
        task(4, 6, &[], json!({}), 3600),
        task(3, 6, &[], json!({}), 3590),
        task(2, 6, &[], json!({}), 3590),
    ];
    let ids = |v: Vec<&Task>| v.iter().map(|t| t.id.0.as_u128()).collect::<Vec<_>>();
    assert_eq!(
        ids(queue_order(&tasks, t(3600), &Policy::default()))[0],
        1,
        "ranked, the aged task first"
    );
    assert_eq!(ids(head_of_queue(&tasks, 10)), [2, 3, 4, 1]);
    assert_eq!(ids(head_of_queue(&tasks, 2)), [2, 3]);
    assert!(head_of_queue(&tasks, 0).is_empty());
}

#[test]
fn a_task_takes_its_agents_slot_and_resources_while_assigned_or_running_only() {
    let holder = AgentId(Uuid::from_u128(1000));
    let mut one = task(1, 5, &[], json!({"cpu": 2}), 0);
    assert_eq!(Held::of(&one), None, "pending: nobody holds it");
    one.assign(holder, t(1)).unwrap();
    let held = Held::of(&one).expect("assigned: its agent holds it");
    assert_eq!((held.task, held.agent), (one.id, holder));
    assert_eq!(held.resources, one.resources);
    one.start(holder, one.attempt, t(2)).unwrap();
    assert!(Held::of(&one).is_some(), "running: still held");
    one.complete(holder, one.attempt, Default::default(), t(3))
        .unwrap();
    assert_eq!(
        one.assigned_agent,
        Some(holder),
        "an ended task keeps its agent"
    );
    assert_eq!(Held::of(&one), None, "but takes none of its room");
}

#[test]
fn each_serving_agents_capacity_counts_only_the_tasks_it_holds() {
    let registered = |n: u128, slots: u32| {
        let new = domain::NewAgent::parse(
            &format!("agent-{n}"),
            &["gpu".into()],
            json!({"cpu": 8}).as_object().unwrap(),
            Default::default(),
            Some(slots),
        )
        .unwrap();
        domain::Agent::register(new, AgentId(Uuid::from_u128(n)), t(0))
    };
    let (one, two, mut away) = (registered(1, 4), registered(2, 2), registered(3, 4));
    away.status = domain::AgentStatus::Offline;
    let holding = |task: u128, agent: u128, cpu: i64| Held {
        task: TaskId(Uuid::from_u128(task)),
        agent: AgentId(Uuid::from_u128(agent)),
        resources: domain::ResourceMap::from_json("r", json!({"cpu": cpu}).as_object().unwrap())
            .unwrap(),
    };
    // Agent 1 holds two tasks, agent 2 one, the offline agent one, and an agent not listed one.
    let held = [
        holding(10, 1, 2),
        holding(11, 2, 5),
        holding(12, 1, 1),
        holding(13, 3, 1),
        holding(14, 9, 1),
    ];
    let capacity = AgentCapacity::of_all(&[two.clone(), away, one.clone()], &held);
    let seen: Vec<(u128, u32, i128)> = capacity
        .iter()
        .map(|c| (c.id.0.as_u128(), c.free_slots, c.free["cpu"] / G))
        .collect();
    assert_eq!(
        seen,
        [(2, 1, 3), (1, 2, 5)],
        "the serving agents in their order, each less its own tasks"
    );
    assert_eq!(
        capacity[1],
        AgentCapacity::of(&one, [&held[0], &held[2]]).unwrap()
    );
}

fn placed(plan: &Plan) -> Vec<(u128, u128)> {
    plan.assignments
        .iter()
        .map(|a| (a.task.0.as_u128(), a.agent.0.as_u128()))
        .collect()
}

fn reason(plan: &Plan, n: u128) -> String {
    plan.unplaced
        .iter()
        .find(|u| u.task.0.as_u128() == n)
        .map(|u| u.reason.to_string())
        .unwrap_or_else(|| panic!("task {n} is not unplaced: {plan:?}"))
}

#[test]
fn higher_priority_goes_first_and_a_big_task_does_not_block_small_ones() {
    let tasks = [
        task(1, 2, &["etl"], json!({"cpu": 1}), 0),
        task(2, 9, &["etl"], json!({"cpu": 8}), 0), // too big for anyone
        task(3, 5, &["etl"], json!({"cpu": 1}), 0),
    ];
    let agents = vec![agent(10, &["etl"], 1, 2), agent(11, &["etl"], 1, 2)];
    let plan = schedule(&tasks, agents, Pools::default(), t(0), &Policy::default());
    assert_eq!(placed(&plan).len(), 2);
    assert_eq!(
        reason(&plan, 2),
        "2 agents match, none has enough free cpu (needs 8, at most 2 free)"
    );
    let order: Vec<u128> = plan
        .assignments
        .iter()
        .map(|a| a.task.0.as_u128())
        .collect();
    assert_eq!(order, [3, 1], "priority 5 before priority 2");
}

#[test]
fn reasons_name_what_is_missing() {
    let tasks = [
        task(1, 5, &["gpu_inference"], json!({}), 0),
        task(2, 5, &["etl"], json!({}), 0),
        task(3, 5, &["etl"], json!({}), 0),
        task(4, 5, &["etl", "cpu_only"], json!({}), 0),
    ];
    let agents = vec![agent(10, &["etl"], 1, 1), agent(11, &["cpu_only"], 1, 1)];
    let plan = schedule(&tasks, agents, Pools::default(), t(0), &Policy::default());
    assert_eq!(
        reason(&plan, 1),
        "no online agent has capability gpu_inference"
    );
    assert_eq!(
        reason(&plan, 4),
        "no online agent has all the required capabilities"
    );
    let full = plan
        .unplaced
        .iter()
        .find(|u| matches!(u.reason, domain::WaitReason::AllAtCapacity { .. }))
        .expect("one etl task waits for capacity");
    assert_eq!(full.reason.to_string(), "1 agent match, all at capacity");
}

#[test]
fn spread_picks_the_least_loaded_agent_and_bin_pack_the_fullest() {
    let mut busy = agent(10, &["etl"], 4, 8);
    busy.free_slots = 1;
    let idle = agent(11, &["etl"], 4, 8);
    let tasks = [task(1, 5, &["etl"], json!({"cpu": 1}), 0)];
    let spread = schedule(
        &tasks,
        vec![busy.clone(), idle.clone()],
        Pools::default(),
        t(0),
        &Policy::default(),
    );
    assert_eq!(placed(&spread), [(1, 11)]);
    let policy = Policy {
        strategy: Placement::BinPack,
        ..Policy::default()
    };
    let packed = schedule(&tasks, vec![busy, idle], Pools::default(), t(0), &policy);
    assert_eq!(placed(&packed), [(1, 10)]);
}

#[test]
fn reliability_weighs_the_choice() {
    let mut flaky = agent(10, &["etl"], 4, 8);
    flaky.reliability = 0.2;
    let steady = agent(11, &["etl"], 4, 8);
    let tasks = [task(1, 5, &["etl"], json!({}), 0)];
    let plan = schedule(
        &tasks,
        vec![flaky, steady],
        Pools::default(),
        t(0),
        &Policy::default(),
    );
    assert_eq!(placed(&plan), [(1, 11)]);
}

#[test]
fn waiting_and_a_nearing_deadline_raise_the_effective_priority() {
    let policy = Policy::default();
    let old = task(1, 3, &[], json!({}), 0);
    assert_eq!(effective_priority(&old, t(0), &policy), 3.0);
    assert_eq!(
        effective_priority(&old, t(600), &policy),
        5.0,
        "two levels after ten minutes"
    );
    assert_eq!(
        effective_priority(&old, t(100_000), &policy),
        8.0,
        "aging is capped"
    );

    let mut urgent = task(2, 3, &[], json!({}), 0);
    urgent.deadline = Some(t(300));
    assert!(effective_priority(&urgent, t(0), &policy) > 3.0 + 2.0);
    let fresh_high = task(3, 6, &[], json!({}), 299);
    let both = [fresh_high, urgent];
    let order: Vec<u128> = queue_order(&both, t(299), &policy)
        .iter()
        .map(|t| t.id.0.as_u128())
        .collect();
    assert_eq!(
        order,
        [2, 3],
        "a task at its deadline overtakes a fresh higher priority one"
    );
}

#[test]
fn claims_on_pools_must_fit_and_say_what_is_short() {
    let mut a = task(1, 9, &[], json!({}), 0);
    let mut b = task(2, 5, &[], json!({}), 0);
    for t in [&mut a, &mut b] {
        t.resource_claims = vec![domain::ResourceClaim {
            resource: "gpu_cluster_01".into(),
            amount: domain::ResourceMap::from_json("a", json!({"gpus": 1}).as_object().unwrap())
                .unwrap(),
        }];
    }
    let mut pools = Pools::default();
    pools.add(
        domain::ResourceId(uuid::Uuid::from_u128(7)),
        "gpu_cluster_01",
        BTreeMap::from([("gpus".to_owned(), G)]),
    );
    let plan = schedule(
        &[a, b],
        vec![agent(10, &[], 4, 8)],
        pools,
        t(0),
        &Policy::default(),
    );
    assert_eq!(placed(&plan), [(1, 10)]);
    assert_eq!(
        reason(&plan, 2),
        "resource gpu_cluster_01 has 0 of 1 gpus free"
    );
}

#[test]
fn tasks_in_backoff_wait() {
    let mut retrying = task(1, 5, &[], json!({}), 0);
    retrying.not_before = t(10);
    let plan = schedule(
        &[retrying.clone()],
        vec![agent(10, &[], 1, 1)],
        Pools::default(),
        t(5),
        &Policy::default(),
    );
    assert!(plan.assignments.is_empty() && plan.unplaced.is_empty());
    let plan = schedule(
        &[retrying],
        vec![agent(10, &[], 1, 1)],
        Pools::default(),
        t(10),
        &Policy::default(),
    );
    assert_eq!(placed(&plan), [(1, 10)]);
}

// ---- properties -------------------------------------------------------------------------

const CAPS: [&str; 4] = ["a", "b", "c", "d"];

fn arb_caps() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(CAPS.to_vec(), 0..=3)
}

#[derive(Debug, Clone)]
struct World {
    tasks: Vec<Task>,
    agents: Vec<AgentCapacity>,
    pool_free: i128,
    now: DateTime<Utc>,
}

fn arb_world() -> impl Strategy<Value = World> {
    let agents = proptest::collection::vec((arb_caps(), 1u32..4, 0i128..8, 0u32..=10), 0..12);
    let tasks = proptest::collection::vec(
        (
            arb_caps(),
            1i64..=10,
            0i64..4,
            0i64..3000,
            proptest::option::of(1i64..4000),
            0u8..3,
        ),
        0..30,
    );
    (agents, tasks, 0i128..4).prop_map(|(agents, tasks, pool_free)| {
        let agents = agents
            .into_iter()
            .enumerate()
            .map(|(i, (c, slots, cpu, rel))| {
                let mut a = agent(1000 + i as u128, &c, slots, cpu);
                a.reliability = f64::from(rel) / 10.0;
                a
            })
            .collect();
        let tasks = tasks
            .into_iter()
            .enumerate()
            .map(|(i, (c, p, cpu, at, deadline, claim))| {
                let mut made = task(i as u128 + 1, p, &c, json!({"cpu": cpu}), at);
                made.deadline = deadline.map(|d| t(at + d));
                if claim > 0 {
                    made.resource_claims = vec![domain::ResourceClaim {
                        resource: "pool".into(),
                        amount: domain::ResourceMap::from_json(
                            "a",
                            json!({"gpus": claim}).as_object().unwrap(),
                        )
                        .unwrap(),
                    }];
                }
                made
            })
            .collect();
        World {
            tasks,
            agents,
            pool_free,
            now: t(3000),
        }
    })
}

fn pools(free: i128) -> Pools {
    let mut p = Pools::default();
    p.add(
        domain::ResourceId(uuid::Uuid::from_u128(1)),
        "pool",
        BTreeMap::from([("gpus".to_owned(), free * G)]),
    );
    p
}

fn claim(task: &Task) -> i128 {
    task.resource_claims
        .iter()
        .map(|c| c.amount.get("gpus").map_or(0, |q| q.nanos()))
        .sum()
}

fn fits(agent: &AgentCapacity, task: &Task, used_slots: u32, used_cpu: i128) -> bool {
    agent.capabilities.covers(&task.required_capabilities)
        && used_slots < agent.free_slots
        && task.resources.get("cpu").map_or(0, |q| q.nanos()) <= agent.free["cpu"] - used_cpu
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_agent_or_pool_is_ever_over_committed(world in arb_world()) {
        let plan = schedule(&world.tasks, world.agents.clone(), pools(world.pool_free), world.now, &Policy::default());
        let by_id: HashMap<TaskId, &Task> = world.tasks.iter().map(|t| (t.id, t)).collect();
        let mut pool_used = 0;
        for agent in &world.agents {
            let mine: Vec<&Task> = plan.assignments.iter().filter(|a| a.agent == agent.id).map(|a| by_id[&a.task]).collect();
            prop_assert!(mine.len() as u32 <= agent.free_slots);
            let cpu: i128 = mine.iter().map(|t| t.resources.get("cpu").map_or(0, |q| q.nanos())).sum();
            prop_assert!(cpu <= agent.free["cpu"]);
        }
        for a in &plan.assignments {
            pool_used += claim(by_id[&a.task]);
        }
        prop_assert!(pool_used <= world.pool_free * G);
    }

    #[test]
    fn every_assignment_satisfies_capabilities_and_every_task_is_accounted_for_once(world in arb_world()) {
        let plan = schedule(&world.tasks, world.agents.clone(), pools(world.pool_free), world.now, &Policy::default());
        let agents: HashMap<AgentId, &AgentCapacity> = world.agents.iter().map(|a| (a.id, a)).collect();
        let by_id: HashMap<TaskId, &Task> = world.tasks.iter().map(|t| (t.id, t)).collect();
        for a in &plan.assignments {
            prop_assert!(agents[&a.agent].capabilities.covers(&by_id[&a.task].required_capabilities));
        }
        let mut seen: Vec<TaskId> = plan.assignments.iter().map(|a| a.task).chain(plan.unplaced.iter().map(|u| u.task)).collect();
        seen.sort();
        // Tasks past their deadline are the sweep's to expire, not the scheduler's to place.
        let mut all: Vec<TaskId> = world
            .tasks
            .iter()
            .filter(|t| t.deadline.is_none_or(|d| d > world.now))
            .map(|t| t.id)
            .collect();
        all.sort();
        prop_assert_eq!(seen, all);
        prop_assert!(plan.unplaced.iter().all(|u| !u.reason.to_string().is_empty()));
    }

    #[test]
    fn the_first_tasks_in_the_queue_are_the_head_of_the_whole_order(world in arb_world(), limit in 0usize..12) {
        let policy = Policy::default();
        let whole: Vec<TaskId> = queue_order(&world.tasks, world.now, &policy).iter().map(|t| t.id).collect();
        let first: Vec<TaskId> = first_in_queue(&world.tasks, limit, world.now, &policy).iter().map(|t| t.id).collect();
        prop_assert_eq!(&first[..], &whole[..limit.min(whole.len())]);
    }

    #[test]
    fn a_higher_priority_task_never_waits_while_a_lower_one_takes_an_agent_it_could_use(world in arb_world()) {
        let policy = Policy::default();
        let plan = schedule(&world.tasks, world.agents.clone(), pools(world.pool_free), world.now, &policy);
        let order = queue_order(&world.tasks, world.now, &policy);
        let rank: HashMap<TaskId, usize> = order.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        let by_id: HashMap<TaskId, &Task> = world.tasks.iter().map(|t| (t.id, t)).collect();
        for waiting in &plan.unplaced {
            let h = by_id[&waiting.task];
            // Capacity and pool use by the tasks considered before h.
            let before: Vec<_> = plan.assignments.iter().filter(|a| rank[&a.task] < rank[&h.id]).collect();
            let pool_used: i128 = before.iter().map(|a| claim(by_id[&a.task])).sum();
            let pool_ok = claim(h) <= world.pool_free * G - pool_used;
            for lower in plan.assignments.iter().filter(|a| rank[&a.task] > rank[&h.id]) {
                let agent = world.agents.iter().find(|a| a.id == lower.agent).unwrap();
                let used: Vec<_> = before.iter().filter(|a| a.agent == agent.id).collect();
                let used_cpu: i128 = used.iter().map(|a| by_id[&a.task].resources.get("cpu").map_or(0, |q| q.nanos())).sum();
                prop_assert!(
                    !(pool_ok && fits(agent, h, used.len() as u32, used_cpu)),
                    "task {} waits although agent {} had room for it before lower task {} took it",
                    h.id, agent.id, lower.task
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_fleet_index_chooses_exactly_what_a_full_scan_would(world in arb_world()) {
        let fleet = domain::scheduler::Fleet::new(world.agents.clone(), Placement::Spread);
        for task in &world.tasks {
            let mut best: Option<(f64, AgentId)> = None;
            for agent in &world.agents {
                if agent.capabilities.covers(&task.required_capabilities) && agent.fits(&task.resources) {
                    let score = agent.score(Placement::Spread);
                    if best.is_none_or(|(s, id)| score > s || (score == s && agent.id < id)) {
                        best = Some((score, agent.id));
                    }
                }
            }
            prop_assert_eq!(fleet.choose(task), best.map(|(_, id)| id));
        }
    }
}

/// One step of a pool's life: tasks claiming parts of it arrive, a scheduling pass places what
/// fits, and some holders finish (any held task: by index into the holders).
#[derive(Debug, Clone)]
enum Step {
    Submit(Vec<(u8, u8)>),
    Pass,
    Finish(usize),
    Preempt(usize),
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            proptest::collection::vec((0u8..2, 1u8..5), 1..4).prop_map(Step::Submit),
            Just(Step::Pass),
            (0usize..8).prop_map(Step::Finish),
            (0usize..8).prop_map(Step::Preempt),
        ],
        1..40,
    )
}

fn pool_named(name: &str, n: u128, gpus: u32) -> domain::Resource {
    let new = domain::NewResource::parse(
        name,
        "gpu",
        json!({"gpus": gpus}).as_object().unwrap(),
        serde_json::Map::new(),
    )
    .unwrap();
    domain::Resource::register(domain::ResourceId(Uuid::from_u128(n)), new, t(0))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// For any sequence of claims, passes, completions and preemptions, what the holders of a
    /// pool hold never exceeds its capacity.
    #[test]
    fn allocations_never_exceed_capacity(steps in arb_steps(), capacities in (1u32..6, 1u32..6)) {
        let pools = [
            pool_named("pool-a", 901, capacities.0),
            pool_named("pool-b", 902, capacities.1),
        ];
        let mut tasks: Vec<Task> = Vec::new();
        let mut next = 1u128;
        let mut now = 0i64;
        for step in steps {
            now += 1;
            match step {
                Step::Submit(claims) => {
                    let mut made = task(next, (next % 10 + 1) as i64, &[], json!({}), now);
                    made.preemptible = next % 2 == 0;
                    made.resource_claims = claims
                        .iter()
                        .map(|(pool, gpus)| domain::ResourceClaim {
                            // By name, by ID, and by ID spelt in capitals.
                            resource: match next % 3 {
                                0 => pools[*pool as usize].id.to_string(),
                                1 => pools[*pool as usize].id.to_string().to_uppercase(),
                                _ => pools[*pool as usize].name.clone(),
                            },
                            amount: domain::ResourceMap::from_json(
                                "a",
                                json!({"gpus": gpus}).as_object().unwrap(),
                            )
                            .unwrap(),
                        })
                        .collect();
                    tasks.push(made);
                    next += 1;
                }
                Step::Pass => {
                    let holders: Vec<Task> =
                        tasks.iter().filter(|t| t.status.is_active()).cloned().collect();
                    let plan = schedule(
                        &tasks,
                        vec![agent(1, &[], 100, 100)],
                        Pools::of(&pools, &holders),
                        t(now),
                        &Policy::default(),
                    );
                    for a in plan.assignments {
                        let task = tasks.iter_mut().find(|t| t.id == a.task).unwrap();
                        task.assign(a.agent, t(now)).unwrap();
                    }
                }
                Step::Finish(i) | Step::Preempt(i) => {
                    let held: Vec<usize> = (0..tasks.len()).filter(|&k| tasks[k].status.is_active()).collect();
                    if let Some(&k) = held.get(i % held.len().max(1)) {
                        if matches!(step, Step::Finish(_)) {
                            let (agent, attempt) = (tasks[k].assigned_agent.unwrap(), tasks[k].attempt);
                            tasks[k].complete(agent, attempt, serde_json::Map::new(), t(now)).unwrap();
                        } else {
                            tasks[k].preempt("make room", t(now));
                        }
                    }
                }
            }
            for pool in &pools {
                let held = domain::resource::allocated(pool, &tasks);
                let cap = pool.capacity.get("gpus").unwrap().nanos();
                prop_assert!(held.get("gpus") <= cap, "{} holds {} of {}", pool.name, held.get("gpus"), cap);
            }
        }
    }
}
