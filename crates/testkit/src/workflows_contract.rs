//! The workflow contract: what every implementation of `WorkflowRepository` must do, and how
//! every write of a change set moves the executions of the steps it ends.

use chrono::{DateTime, Utc};
use domain::workflow::{ExecutionInput, StepInput, WorkflowInput};
use domain::{
    EventKind, Execution, ExecutionId, ExecutionStatus, StepStatus, Task, TaskId, TaskStatus,
    Workflow, WorkflowId,
};
use ports::{Changes, RepoError, WorkflowCounts};
use serde_json::json;
use uuid::Uuid;

use crate::builders::object;
use crate::contract::numbered;
use crate::StoreUnderTest;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).expect("valid time")
}

/// A definition numbered `n`: each step a name and the steps it depends on.
pub fn workflow(n: u128, steps: &[(&str, &[&str])], at: DateTime<Utc>) -> Workflow {
    let input = WorkflowInput {
        name: format!("pipeline {n}"),
        description: Some("a test pipeline".into()),
        steps: steps
            .iter()
            .map(|(name, needs)| StepInput {
                name: (*name).into(),
                parameters: object(json!({"step": name})),
                depends_on: needs.iter().map(|d| (*d).to_owned()).collect(),
                required_capabilities: vec!["etl".into()],
                ..StepInput::default()
            })
            .collect(),
        metadata: object(json!({"version": "1.0"})),
    };
    Workflow::parse(input, WorkflowId(Uuid::from_u128(n)), at).expect("a valid workflow")
}

/// Starts `workflow` as execution `n`, its task IDs numbered from `n * 100`.
fn start(
    workflow: &Workflow,
    n: u128,
    at: DateTime<Utc>,
) -> (Execution, Vec<Task>, Vec<domain::NewEvent>) {
    let mut next = n * 100;
    let (execution, advance) = Execution::start(
        workflow,
        ExecutionId(Uuid::from_u128(n)),
        ExecutionInput {
            parameters: object(json!({"input_file": "data.csv"})),
            metadata: object(json!({})),
        },
        || {
            next += 1;
            TaskId(Uuid::from_u128(next))
        },
        at,
    )
    .expect("valid parameters");
    (execution, advance.created, advance.events)
}

/// The stored task `id`, ended with `status` at `at` (completed with a result, or failed).
async fn ended(store: &StoreUnderTest, id: TaskId, status: TaskStatus, at: DateTime<Utc>) -> Task {
    let mut task = store.tasks.get(id).await.unwrap();
    task.status = status;
    task.completed_at = Some(at);
    task.updated_at = at;
    match status {
        TaskStatus::Completed => task.result = Some(object(json!({"rows": 42}))),
        _ => task.error = Some("the source is unreachable".into()),
    }
    task
}

/// Writes `tasks` over the versions they were read at, as any write of a change set does.
async fn save_tasks(store: &StoreUnderTest, tasks: Vec<Task>) -> Vec<domain::NewEvent> {
    store
        .tasks
        .save(Changes {
            tasks,
            ..Changes::default()
        })
        .await
        .unwrap()
}

fn step_of(execution: &Execution, name: &str) -> domain::workflow::StepRun {
    execution
        .steps
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .expect("a step of the execution")
}

pub async fn workflows_round_trip_and_are_listed_newest_first(store: StoreUnderTest) {
    let chain = workflow(
        1,
        &[("ingest", &[]), ("process", &[]), ("export", &[])],
        t(0),
    );
    let diamond = workflow(
        2,
        &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])],
        t(1),
    );
    let third = workflow(3, &[("only", &[])], t(2));
    for w in [&chain, &diamond, &third] {
        let stored = store
            .workflows
            .insert_workflow(w, vec![domain::workflow::workflow_created(w)])
            .await
            .unwrap();
        assert_eq!(stored.len(), 1, "the event is stored with the definition");
    }
    assert_eq!(
        store.workflows.get_workflow(diamond.id).await.unwrap(),
        diamond
    );
    assert_eq!(store.workflows.get_workflow(chain.id).await.unwrap(), chain);
    assert!(matches!(
        store
            .workflows
            .get_workflow(WorkflowId(Uuid::from_u128(9)))
            .await,
        Err(RepoError::NotFound)
    ));
    assert!(matches!(
        store.workflows.insert_workflow(&chain, vec![]).await,
        Err(RepoError::Conflict(_))
    ));

    let first = store.workflows.list_workflows(None, 2).await.unwrap();
    let ids: Vec<_> = first.iter().map(|w| w.id).collect();
    assert_eq!(ids, vec![third.id, diamond.id]);
    let after = domain::Cursor {
        created_at: diamond.created_at,
        id: diamond.id.as_uuid(),
    };
    let rest = store
        .workflows
        .list_workflows(Some(after), 2)
        .await
        .unwrap();
    assert_eq!(rest, vec![chain]);
    assert_eq!(
        store.workflows.workflow_counts().await.unwrap(),
        WorkflowCounts {
            workflows: 3,
            running_executions: 0
        }
    );
    assert_eq!(
        numbered(&store)
            .await
            .events_after(0, 10)
            .await
            .unwrap()
            .len(),
        3
    );
}

pub async fn executions_start_with_their_first_tasks_or_not_at_all(store: StoreUnderTest) {
    let diamond = workflow(
        1,
        &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])],
        t(0),
    );
    store
        .workflows
        .insert_workflow(&diamond, vec![])
        .await
        .unwrap();
    let (execution, tasks, events) = start(&diamond, 7, t(1));
    assert_eq!(tasks.len(), 1, "only the root is ready");
    let stored = store
        .workflows
        .start_execution(&execution, &tasks, events)
        .await
        .unwrap();
    assert!(stored.iter().any(|e| e.kind == EventKind::ExecutionStarted));
    assert_eq!(
        store.workflows.get_execution(execution.id).await.unwrap(),
        execution
    );
    let root = store.tasks.get(tasks[0].id).await.unwrap();
    assert_eq!(root.execution_id, Some(execution.id.as_uuid()));
    assert_eq!(root.step.as_deref(), Some("a"));
    assert_eq!(root.status, TaskStatus::Pending);

    // A second execution, listed first; one of a workflow gone, or with a task ID taken,
    // stores nothing.
    let (later, later_tasks, later_events) = start(&diamond, 8, t(2));
    store
        .workflows
        .start_execution(&later, &later_tasks, later_events)
        .await
        .unwrap();
    let listed = store
        .workflows
        .list_executions(diamond.id, None, 10)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![later.id, execution.id]
    );
    let paged = store
        .workflows
        .list_executions(
            diamond.id,
            Some(domain::Cursor {
                created_at: later.created_at,
                id: later.id.as_uuid(),
            }),
            10,
        )
        .await
        .unwrap();
    assert_eq!(paged, vec![execution.clone()]);
    let other = workflow(2, &[("x", &[])], t(0));
    let (orphan, orphan_tasks, _) = start(&other, 9, t(3));
    assert!(matches!(
        store
            .workflows
            .start_execution(&orphan, &orphan_tasks, vec![])
            .await,
        Err(RepoError::NotFound)
    ));
    let (mut clash, _, _) = start(&diamond, 10, t(3));
    clash.steps[0].task_id = tasks[0].id;
    let clashing = vec![Task {
        id: tasks[0].id,
        ..tasks[0].clone()
    }];
    assert!(matches!(
        store
            .workflows
            .start_execution(&clash, &clashing, vec![])
            .await,
        Err(RepoError::Conflict(_))
    ));
    assert!(matches!(
        store.workflows.get_execution(clash.id).await,
        Err(RepoError::NotFound)
    ));
    assert!(matches!(
        store.workflows.get_execution(orphan.id).await,
        Err(RepoError::NotFound)
    ));
    assert_eq!(
        store.workflows.workflow_counts().await.unwrap(),
        WorkflowCounts {
            workflows: 1,
            running_executions: 2
        }
    );
}

pub async fn a_write_ending_a_steps_task_queues_the_steps_it_unblocks(store: StoreUnderTest) {
    let diamond = workflow(
        1,
        &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])],
        t(0),
    );
    store
        .workflows
        .insert_workflow(&diamond, vec![])
        .await
        .unwrap();
    let (execution, tasks, events) = start(&diamond, 7, t(1));
    store
        .workflows
        .start_execution(&execution, &tasks, events)
        .await
        .unwrap();

    // A's end, written by any write of a change set, queues B and C in the same write.
    let a = ended(&store, tasks[0].id, TaskStatus::Completed, t(2)).await;
    let written = save_tasks(&store, vec![a]).await;
    let kinds: Vec<EventKind> = written.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::StepCompleted), "{kinds:?}");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::TaskSubmitted)
            .count(),
        2,
        "{kinds:?}"
    );
    let moved = store.workflows.get_execution(execution.id).await.unwrap();
    assert_eq!(moved.version, execution.version + 1);
    assert_eq!(step_of(&moved, "a").status, StepStatus::Completed);
    assert_eq!(
        step_of(&moved, "a").result,
        Some(object(json!({"rows": 42})))
    );
    for name in ["b", "c"] {
        let step = step_of(&moved, name);
        assert_eq!(step.status, StepStatus::Running);
        let task = store.tasks.get(step.task_id).await.unwrap();
        assert_eq!(task.status, TaskStatus::Pending);
        assert_eq!(
            task.metadata.as_map()["upstream"]["a"]["result"],
            json!({"rows": 42}),
            "the task of {name} carries what A returned"
        );
        assert_eq!(
            task.metadata.as_map()["execution_parameters"],
            json!({"input_file": "data.csv"})
        );
    }
    assert_eq!(step_of(&moved, "d").status, StepStatus::Pending);

    // The same end written again (a later write of the same task) moves nothing.
    let again = store.tasks.get(tasks[0].id).await.unwrap();
    save_tasks(&store, vec![again]).await;
    assert_eq!(
        store
            .workflows
            .get_execution(execution.id)
            .await
            .unwrap()
            .version,
        moved.version
    );

    // B and C end together in one write: D is queued once; its end completes the execution.
    let b = ended(
        &store,
        step_of(&moved, "b").task_id,
        TaskStatus::Completed,
        t(3),
    )
    .await;
    let c = ended(
        &store,
        step_of(&moved, "c").task_id,
        TaskStatus::Completed,
        t(3),
    )
    .await;
    save_tasks(&store, vec![b, c]).await;
    let moved = store.workflows.get_execution(execution.id).await.unwrap();
    let d = step_of(&moved, "d");
    assert_eq!(d.status, StepStatus::Running);
    let d_task = store.tasks.get(d.task_id).await.unwrap();
    let upstream = d_task.metadata.as_map()["upstream"].as_object().unwrap();
    assert_eq!(upstream.len(), 2, "D sees both B and C: {upstream:?}");
    let d_done = ended(&store, d.task_id, TaskStatus::Completed, t(4)).await;
    let written = save_tasks(&store, vec![d_done]).await;
    assert!(written
        .iter()
        .any(|e| e.kind == EventKind::ExecutionCompleted));
    let done = store.workflows.get_execution(execution.id).await.unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert!(step_of(&done, "d").result.is_some());
    let listed = store
        .workflows
        .list_executions(diamond.id, None, 10)
        .await
        .unwrap();
    assert_eq!(listed[0].steps.len(), 4);
    assert!(
        listed[0].steps.iter().all(|s| s.result.is_none()),
        "lists leave results out"
    );
    assert_eq!(step_of(&listed[0], "d").status, StepStatus::Completed);
    assert_eq!(done.completed_at, Some(t(4)));
    assert_eq!(
        store
            .workflows
            .workflow_counts()
            .await
            .unwrap()
            .running_executions,
        0
    );
}

pub async fn a_failed_step_fails_its_execution_and_cancels_queued_steps_in_the_same_write(
    store: StoreUnderTest,
) {
    let fan = workflow(1, &[("a", &[]), ("b", &[]), ("c", &["a", "b"])], t(0));
    // Independent roots: A and B are both queued at the start.
    store.workflows.insert_workflow(&fan, vec![]).await.unwrap();
    let (execution, tasks, events) = start(&fan, 7, t(1));
    assert_eq!(tasks.len(), 2);
    store
        .workflows
        .start_execution(&execution, &tasks, events)
        .await
        .unwrap();

    let a = ended(&store, tasks[0].id, TaskStatus::Failed, t(2)).await;
    let written = save_tasks(&store, vec![a]).await;
    let kinds: Vec<EventKind> = written.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::ExecutionFailed), "{kinds:?}");
    assert!(kinds.contains(&EventKind::TaskCancelled), "{kinds:?}");
    let failed = store.workflows.get_execution(execution.id).await.unwrap();
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(step_of(&failed, "a").status, StepStatus::Failed);
    assert_eq!(
        step_of(&failed, "a").error.as_deref(),
        Some("the source is unreachable")
    );
    assert_eq!(step_of(&failed, "b").status, StepStatus::Cancelled);
    assert_eq!(step_of(&failed, "c").status, StepStatus::Cancelled);
    let b = store.tasks.get(tasks[1].id).await.unwrap();
    assert_eq!(
        b.status,
        TaskStatus::Cancelled,
        "B's queued task is cancelled with it"
    );

    // A workflow with a running execution cannot be deleted; one whose executions ended can,
    // with their records.
    let other = workflow(2, &[("x", &[])], t(0));
    store
        .workflows
        .insert_workflow(&other, vec![])
        .await
        .unwrap();
    let (running, running_tasks, _) = start(&other, 8, t(1));
    store
        .workflows
        .start_execution(&running, &running_tasks, vec![])
        .await
        .unwrap();
    assert!(matches!(
        store.workflows.delete_workflow(other.id, vec![]).await,
        Err(RepoError::Conflict(_))
    ));
    assert_eq!(store.workflows.get_workflow(other.id).await.unwrap(), other);
    store
        .workflows
        .delete_workflow(fan.id, vec![domain::workflow::workflow_deleted(&fan, t(3))])
        .await
        .unwrap();
    assert!(matches!(
        store.workflows.get_workflow(fan.id).await,
        Err(RepoError::NotFound)
    ));
    assert!(matches!(
        store.workflows.get_execution(execution.id).await,
        Err(RepoError::NotFound)
    ));
    assert!(matches!(
        store.workflows.delete_workflow(fan.id, vec![]).await,
        Err(RepoError::NotFound)
    ));
    assert_eq!(
        store.tasks.get(tasks[0].id).await.unwrap().status,
        TaskStatus::Failed,
        "the tasks it ran stay"
    );
}

pub async fn a_write_carrying_an_execution_is_written_as_it_decided(store: StoreUnderTest) {
    let chain = workflow(1, &[("a", &[]), ("b", &[])], t(0));
    store
        .workflows
        .insert_workflow(&chain, vec![])
        .await
        .unwrap();
    let (execution, tasks, events) = start(&chain, 7, t(1));
    store
        .workflows
        .start_execution(&execution, &tasks, events)
        .await
        .unwrap();

    // An operator's cancel: the execution and its task's cancellation, in one write.
    let mut cancelled = execution.clone();
    let (running, _) = cancelled.cancel(t(2)).unwrap();
    assert_eq!(running, vec![tasks[0].id]);
    let mut task = store.tasks.get(tasks[0].id).await.unwrap();
    task.cancel(t(2)).unwrap();
    cancelled.step_cancelled(&task);
    store
        .tasks
        .save(Changes {
            tasks: vec![task],
            executions: vec![cancelled.clone()],
            ..Changes::default()
        })
        .await
        .unwrap();
    let stored = store.workflows.get_execution(execution.id).await.unwrap();
    assert_eq!(
        stored,
        Execution {
            version: cancelled.version + 1,
            ..cancelled.clone()
        }
    );

    // A write over a version that moved on is a conflict, and writes nothing.
    let mut stale = cancelled.clone();
    stale.status = ExecutionStatus::Failed;
    assert!(matches!(
        store
            .tasks
            .save(Changes {
                executions: vec![stale],
                ..Changes::default()
            })
            .await,
        Err(RepoError::Conflict(_))
    ));

    // A rerun: the execution and the tasks it queues, together; a new task with a taken ID
    // stops the whole write.
    let mut rerun = stored.clone();
    let mut next = 500;
    let advance = rerun
        .rerun(
            &chain,
            "a",
            || {
                next += 1;
                TaskId(Uuid::from_u128(next))
            },
            t(3),
        )
        .unwrap();
    let mut clashing = advance.created.clone();
    clashing[0].id = tasks[0].id;
    assert!(matches!(
        store
            .tasks
            .save(Changes {
                executions: vec![rerun.clone()],
                created: clashing,
                ..Changes::default()
            })
            .await,
        Err(RepoError::Conflict(_))
    ));
    assert_eq!(
        store.workflows.get_execution(execution.id).await.unwrap(),
        stored
    );
    store
        .tasks
        .save(Changes {
            executions: vec![rerun.clone()],
            created: advance.created.clone(),
            events: advance.events,
            ..Changes::default()
        })
        .await
        .unwrap();
    let again = store.workflows.get_execution(execution.id).await.unwrap();
    assert_eq!(again.status, ExecutionStatus::Running);
    assert_eq!(again.reruns.len(), 1);
    let queued = store.tasks.get(advance.created[0].id).await.unwrap();
    assert_eq!(queued.status, TaskStatus::Pending);
    assert_eq!(queued.step.as_deref(), Some("a"));
}

pub async fn an_agents_report_moves_the_execution_and_a_requeued_step_of_a_failed_one_is_cancelled(
    store: StoreUnderTest,
) {
    use crate::builders::{agent, agent_key};
    let fan = workflow(1, &[("a", &[]), ("b", &[]), ("c", &["a", "b"])], t(0));
    store.workflows.insert_workflow(&fan, vec![]).await.unwrap();
    let (execution, tasks, events) = start(&fan, 7, t(1));
    store
        .workflows
        .start_execution(&execution, &tasks, events)
        .await
        .unwrap();
    let worker = agent(1, "worker", &["etl"], t(0));
    store
        .agents
        .insert(&worker, &agent_key(1, worker.id, t(0)), vec![])
        .await
        .unwrap();
    // Both roots are held by the agent.
    let mut held = Vec::new();
    for task in &tasks {
        let mut task = store.tasks.get(task.id).await.unwrap();
        task.assign(worker.id, t(2)).unwrap();
        held.push(task);
    }
    store
        .tasks
        .save(Changes {
            tasks: held,
            ..Changes::default()
        })
        .await
        .unwrap();

    // The agent's report that A failed, written under its lock, fails the execution in the
    // same write; B, held, is not cancelled.
    let (a, b) = (tasks[0].id, tasks[1].id);
    let written = store
        .tasks
        .update_with_agents(
            &[worker.id],
            &[a],
            Box::new(move |_, tasks| {
                let mut a = tasks.into_iter().next().unwrap();
                a.fail(a.assigned_agent.unwrap(), a.attempt, "broke", false, t(3))
                    .unwrap();
                Changes {
                    tasks: vec![a],
                    ..Changes::default()
                }
            }),
        )
        .await
        .unwrap();
    assert!(written.iter().any(|e| e.kind == EventKind::ExecutionFailed));
    let failed = store.workflows.get_execution(execution.id).await.unwrap();
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(step_of(&failed, "b").status, StepStatus::Running);
    assert_eq!(step_of(&failed, "c").status, StepStatus::Cancelled);
    let held_b = store.tasks.get(b).await.unwrap();
    assert_eq!(
        held_b.status,
        TaskStatus::Assigned,
        "a held task runs to its end"
    );

    // B's lease runs out: sent back to the queue, it is cancelled in the same write instead.
    let mut requeued = held_b.clone();
    requeued.release("lease expired", t(4)).unwrap();
    assert_eq!(requeued.status, TaskStatus::Pending);
    let written = save_tasks(&store, vec![requeued]).await;
    assert!(written.iter().any(|e| e.kind == EventKind::TaskCancelled));
    let stored_b = store.tasks.get(b).await.unwrap();
    assert_eq!(stored_b.status, TaskStatus::Cancelled);
    assert_eq!(
        stored_b.version,
        held_b.version + 2,
        "written twice in one write"
    );
    let after = store.workflows.get_execution(execution.id).await.unwrap();
    assert_eq!(step_of(&after, "b").status, StepStatus::Cancelled);
    assert_eq!(after.version, failed.version + 1);
}

pub async fn a_running_executions_tasks_outlive_their_retention(store: StoreUnderTest) {
    let chain = workflow(1, &[("a", &[]), ("b", &[])], t(0));
    store
        .workflows
        .insert_workflow(&chain, vec![])
        .await
        .unwrap();
    let (execution, tasks, events) = start(&chain, 7, t(1));
    store
        .workflows
        .start_execution(&execution, &tasks, events)
        .await
        .unwrap();
    let a = ended(&store, tasks[0].id, TaskStatus::Completed, t(2)).await;
    save_tasks(&store, vec![a]).await;
    // B may still read A's task: it stays, however long ago it ended.
    assert_eq!(store.tasks.purge_ended(t(1_000), 10).await.unwrap(), 0);
    let running = store.workflows.get_execution(execution.id).await.unwrap();
    let b = ended(
        &store,
        step_of(&running, "b").task_id,
        TaskStatus::Completed,
        t(3),
    )
    .await;
    save_tasks(&store, vec![b]).await;
    assert_eq!(
        store
            .workflows
            .get_execution(execution.id)
            .await
            .unwrap()
            .status,
        ExecutionStatus::Completed
    );
    assert_eq!(store.tasks.purge_ended(t(1_000), 10).await.unwrap(), 2);
}
