//! The task state machine: submission rules, leases, attempts, retries, cancellation, expiry.

use chrono::{DateTime, Utc};
use domain::task::{Outcome, TaskError};
use domain::{AgentId, NewTask, Task, TaskId, TaskInput, TaskStatus};
use serde_json::{json, Map};
use uuid::Uuid;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap()
}

fn input() -> TaskInput {
    TaskInput {
        title: "Process Customer Data".into(),
        priority: Some(8),
        required_capabilities: vec!["data_processing".into()],
        resources: json!({"cpu": 1, "memory": "512Mi"})
            .as_object()
            .unwrap()
            .clone(),
        ..TaskInput::default()
    }
}

fn task() -> Task {
    Task::submit(
        NewTask::parse(input(), t(0)).unwrap(),
        TaskId(Uuid::from_u128(1)),
        t(0),
    )
}

const A: AgentId = AgentId(Uuid::from_u128(100));
const B: AgentId = AgentId(Uuid::from_u128(200));

#[test]
fn submission_applies_defaults_and_reports_every_bad_field() {
    let new = NewTask::parse(input(), t(0)).unwrap();
    assert_eq!(new.max_attempts, 3);
    assert_eq!(new.lease_seconds, 60);
    assert!(!new.preemptible);

    let bad = TaskInput {
        title: " ".into(),
        priority: Some(11),
        deadline: Some(t(-1)),
        resources: json!({"memory": "lots"}).as_object().unwrap().clone(),
        max_attempts: Some(0),
        lease_seconds: Some(1),
        resource_claims: vec![("gpu_cluster_01".into(), Map::new())],
        ..TaskInput::default()
    };
    let err = NewTask::parse(bad, t(0)).unwrap_err();
    let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "title",
            "priority",
            "resources.memory",
            "deadline",
            "max_attempts",
            "lease_seconds",
            "resource_claims[0].amount"
        ]
    );
    let zero_priority = TaskInput {
        priority: Some(0),
        ..input()
    };
    assert!(NewTask::parse(zero_priority, t(0)).is_err());
}

#[test]
fn the_happy_path_assign_start_heartbeat_complete() {
    let mut task = task();
    assert_eq!((task.status, task.attempt), (TaskStatus::Pending, 1));
    task.assign(A, t(1)).unwrap();
    assert_eq!(task.lease_expires_at, Some(t(61)));
    task.start(A, 1, t(2)).unwrap();
    assert_eq!(task.status, TaskStatus::Running);
    task.heartbeat(A, 1, Some(0.5), t(30)).unwrap();
    assert_eq!(
        task.lease_expires_at,
        Some(t(90)),
        "a heartbeat renews the lease"
    );
    assert_eq!(task.progress, Some(0.5));
    let outcome = task
        .complete(
            A,
            1,
            json!({"rows": 10}).as_object().unwrap().clone(),
            t(40),
        )
        .unwrap();
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.completed_at, Some(t(40)));
    assert_eq!(task.lease_expires_at, None);
}

#[test]
fn a_stale_attempt_or_another_agent_is_refused_and_changes_nothing() {
    let mut task = task();
    task.assign(A, t(1)).unwrap();
    let before = task.clone();
    assert!(matches!(task.start(A, 2, t(2)), Err(TaskError::Stale(_))));
    assert!(matches!(task.start(B, 1, t(2)), Err(TaskError::Stale(_))));
    assert!(matches!(
        task.complete(B, 1, Map::new(), t(2)),
        Err(TaskError::Stale(_))
    ));
    assert_eq!(task, before);
}

#[test]
fn a_lost_lease_requeues_with_the_next_attempt_after_a_backoff_and_the_old_holder_is_stale() {
    let mut task = task();
    task.assign(A, t(0)).unwrap();
    assert!(!task.lease_expired(t(59)));
    assert!(task.lease_expired(t(60)));
    assert_eq!(
        task.release("lease expired", t(60)),
        Some(Outcome::Requeued)
    );
    assert_eq!((task.status, task.attempt), (TaskStatus::Pending, 2));
    assert_eq!(task.not_before, t(62), "first backoff is 2 s");
    assert_eq!(task.assigned_agent, None);

    task.assign(B, t(62)).unwrap();
    assert!(matches!(
        task.complete(A, 1, Map::new(), t(63)),
        Err(TaskError::Stale(_))
    ));
    task.release("lease expired", t(200)).unwrap();
    assert_eq!(task.not_before, t(204), "the backoff doubles");
    task.assign(A, t(204)).unwrap();
    assert_eq!(task.release("agent offline", t(300)), Some(Outcome::Failed));
    assert_eq!(task.status, TaskStatus::Failed, "three attempts used up");
}

#[test]
fn fail_retries_while_attempts_remain_unless_not_retryable() {
    let mut task = task();
    task.assign(A, t(0)).unwrap();
    assert_eq!(
        task.fail(A, 1, "timeout", true, t(5)).unwrap(),
        Outcome::Requeued
    );
    assert_eq!(task.error.as_deref(), Some("timeout"));
    task.assign(A, t(10)).unwrap();
    assert_eq!(
        task.fail(A, 2, "bad input", false, t(11)).unwrap(),
        Outcome::Failed
    );
    assert_eq!(task.status, TaskStatus::Failed);

    assert_eq!(task.retry(t(20)).unwrap(), Outcome::Retried);
    assert_eq!((task.status, task.attempt), (TaskStatus::Pending, 3));
    assert_eq!(task.error, None);
    assert!(
        task.retry(t(21)).is_err(),
        "only failed, cancelled or expired tasks are retried"
    );
    // A fresh round of three attempts, numbered on: 3, 4, 5.
    for attempt in 3..=4 {
        task.assign(A, t(30)).unwrap();
        assert_eq!(
            task.fail(A, attempt, "again", true, t(31)).unwrap(),
            Outcome::Requeued
        );
    }
    task.assign(A, t(40)).unwrap();
    assert_eq!(
        task.fail(A, 5, "again", true, t(41)).unwrap(),
        Outcome::Failed
    );
}

#[test]
fn cancelling_a_held_task_reaches_the_agent_and_ends_it_cancelled() {
    let mut pending = task();
    assert_eq!(pending.cancel(t(1)).unwrap(), Outcome::Cancelled);
    assert_eq!(pending.status, TaskStatus::Cancelled);

    let mut task = task();
    task.assign(A, t(0)).unwrap();
    task.start(A, 1, t(1)).unwrap();
    assert_eq!(task.cancel(t(2)).unwrap(), Outcome::CancelRequested);
    assert_eq!(task.status, TaskStatus::Running, "the agent still holds it");
    task.heartbeat(A, 1, None, t(3)).unwrap();
    assert!(task.cancel_requested, "the heartbeat reply tells the agent");
    assert_eq!(
        task.complete(A, 1, Map::new(), t(4)).unwrap(),
        Outcome::Cancelled
    );
    assert_eq!(task.status, TaskStatus::Cancelled);
    assert_eq!(task.result, None);
}

#[test]
fn a_pending_task_past_its_deadline_expires() {
    let with_deadline = TaskInput {
        deadline: Some(t(100)),
        ..input()
    };
    let mut task = Task::submit(
        NewTask::parse(with_deadline, t(0)).unwrap(),
        TaskId(Uuid::from_u128(2)),
        t(0),
    );
    assert_eq!(task.expire_if_late(t(99)), None);
    assert_eq!(task.expire_if_late(t(100)), Some(Outcome::Expired));
    assert_eq!(task.status, TaskStatus::Expired);
    assert!(
        task.retry(t(101)).is_err(),
        "a task past its deadline cannot be retried"
    );
}

#[test]
fn progress_must_be_a_fraction() {
    let mut task = task();
    task.assign(A, t(0)).unwrap();
    assert!(
        matches!(
            task.heartbeat(A, 1, None, t(1)),
            Err(TaskError::InvalidTransition(_))
        ),
        "a heartbeat does not stand in for start"
    );
    task.start(A, 1, t(1)).unwrap();
    assert!(matches!(
        task.heartbeat(A, 1, Some(1.5), t(1)),
        Err(TaskError::Invalid(_))
    ));
}
