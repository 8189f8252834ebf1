//! The conflict contract: what every implementation of `ConflictRepository` must do.

use chrono::{DateTime, Utc};
use domain::conflict::{Cause, Detection, Resolution};
use domain::{
    AgentId, Conflict, ConflictId, ConflictReport, ConflictStatus, ConflictType, Cursor, EventKind,
    NewEvent, Severity,
};
use ports::{ConflictQuery, RepoError};
use serde_json::{json, Map};
use uuid::Uuid;

use crate::contract::numbered;
use crate::StoreUnderTest;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).expect("valid time")
}

/// The cause a capability gap for task number `n` has.
fn gap(n: u128) -> Cause {
    Cause::CapabilityGap {
        task: domain::TaskId(Uuid::from_u128(n)),
    }
}

fn contention(n: u128) -> Cause {
    Cause::ResourceContention {
        pool: domain::ResourceId(Uuid::from_u128(n)),
    }
}

fn id(n: u128) -> ConflictId {
    ConflictId(Uuid::from_u128(n))
}

/// A report of `kind` and `severity` about agent `agent`, made at `at`.
pub fn reported(n: u128, kind: &str, severity: &str, agent: u128, at: DateTime<Utc>) -> Conflict {
    let agent = Uuid::from_u128(agent).to_string();
    let report = ConflictReport::parse(
        Some(&agent),
        None,
        kind,
        "they disagree",
        severity,
        Map::new(),
    )
    .expect("a valid report");
    Conflict::report(id(n), report, "api-key:test", at)
}

/// A detected conflict with the given cause, made at `at`.
pub fn detected(n: u128, kind: ConflictType, cause: Cause, at: DateTime<Utc>) -> Conflict {
    Conflict::detect(
        id(n),
        Detection {
            conflict_type: kind,
            severity: Severity::Medium,
            description: format!("detected: {cause}"),
            cause,
            agent_id: None,
            task_id: None,
            involved_agents: vec![AgentId(Uuid::from_u128(7))],
            involved_tasks: Vec::new(),
            resource_id: None,
            metadata: Map::new(),
        },
        at,
    )
}

fn noted(conflict: &Conflict) -> NewEvent {
    NewEvent::about_nothing(
        EventKind::ConflictDetected,
        json!({"conflict_id": conflict.id}),
        conflict.updated_at,
    )
}

pub async fn conflicts_round_trip_and_one_cause_has_one_open_conflict(store: StoreUnderTest) {
    let first = detected(1, ConflictType::ResourceContention, contention(1), t(0));
    let stored = store
        .conflicts
        .insert_conflict(&first, vec![noted(&first)])
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(store.conflicts.get_conflict(first.id).await.unwrap(), first);

    // A second open conflict with the same cause is refused, and nothing of it is written.
    let twin = detected(2, ConflictType::ResourceContention, contention(1), t(1));
    assert!(matches!(
        store
            .conflicts
            .insert_conflict(&twin, vec![noted(&twin)])
            .await,
        Err(RepoError::Conflict(_))
    ));
    assert_eq!(
        store.conflicts.get_conflict(twin.id).await,
        Err(RepoError::NotFound)
    );
    assert_eq!(
        numbered(&store)
            .await
            .events_after(0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // The same ID twice is refused too.
    let same_id = reported(1, "other", "low", 5, t(1));
    assert!(matches!(
        store.conflicts.insert_conflict(&same_id, vec![]).await,
        Err(RepoError::Conflict(_))
    ));

    // Once the first is closed, the cause may open again; reports have no cause and never clash.
    let mut closed = first.clone();
    closed
        .resolve(Resolution {
            strategy: None,
            outcome: "contention ended".into(),
            decided_by: "platform".into(),
            decided_at: t(2),
            details: json!({}),
        })
        .unwrap();
    store
        .conflicts
        .update_conflict(&closed, vec![])
        .await
        .unwrap();
    store
        .conflicts
        .insert_conflict(&twin, vec![])
        .await
        .unwrap();
    for n in 3..5 {
        let report = reported(n, "goal_conflict", "low", 5, t(3));
        store
            .conflicts
            .insert_conflict(&report, vec![])
            .await
            .unwrap();
    }
}

pub async fn conflict_updates_hold_to_the_version_read(store: StoreUnderTest) {
    let mut open = reported(1, "other", "high", 5, t(0));
    open.version = 3;
    store
        .conflicts
        .insert_conflict(&open, vec![])
        .await
        .unwrap();
    assert_eq!(
        store.conflicts.get_conflict(open.id).await.unwrap().version,
        0,
        "a new conflict starts at version 0"
    );
    open.version = 0;
    let mut dismissed = open.clone();
    dismissed
        .dismiss("noise".into(), "user:alice", t(5))
        .unwrap();
    dismissed.description = "not a conflict after all".into();
    dismissed.involved_tasks = vec![domain::TaskId(Uuid::from_u128(8))];
    // Not the conflict's to change: what it is about and how it came to be.
    dismissed.severity = Severity::Critical;
    dismissed.conflict_type = ConflictType::GoalConflict;
    dismissed.reported_by = "someone else".into();
    dismissed.agent_id = Some(domain::AgentId(Uuid::from_u128(77)));
    dismissed.task_id = Some(domain::TaskId(Uuid::from_u128(78)));
    dismissed.resource_id = Some(domain::ResourceId(Uuid::from_u128(79)));
    dismissed.cause = Some(Cause::Unknown("made up".into()));
    dismissed.source = domain::conflict::Source::Detected;
    dismissed.created_at = t(4);
    store
        .conflicts
        .update_conflict(&dismissed, vec![noted(&dismissed)])
        .await
        .unwrap();
    let stored = store.conflicts.get_conflict(open.id).await.unwrap();
    assert_eq!(stored.version, 1, "an update bumps the version");
    assert_eq!(stored.status, ConflictStatus::Dismissed);
    assert_eq!(stored.resolution, dismissed.resolution);
    assert_eq!(stored.description, "not a conflict after all");
    assert_eq!(stored.involved_tasks, dismissed.involved_tasks);
    assert_eq!(stored.resolved_at, Some(t(5)));
    assert_eq!(
        (
            stored.severity,
            stored.conflict_type,
            stored.reported_by.as_str()
        ),
        (Severity::High, ConflictType::Other, "api-key:test")
    );
    assert_eq!(
        (
            stored.agent_id,
            stored.task_id,
            stored.resource_id,
            &stored.cause,
            stored.source,
            stored.created_at
        ),
        (
            open.agent_id,
            open.task_id,
            open.resource_id,
            &open.cause,
            open.source,
            open.created_at
        ),
        "who, what and how it came to be stay as inserted"
    );
    // A resolved conflict counts as resolved, apart from the dismissed one.
    let mut settled = reported(2, "other", "low", 5, t(1));
    store
        .conflicts
        .insert_conflict(&settled, vec![])
        .await
        .unwrap();
    settled
        .resolve(Resolution {
            strategy: None,
            outcome: "settled".into(),
            decided_by: "user:alice".into(),
            decided_at: t(6),
            details: json!({}),
        })
        .unwrap();
    store
        .conflicts
        .update_conflict(&settled, vec![])
        .await
        .unwrap();
    assert_eq!(store.conflicts.count_conflicts().await.unwrap(), (0, 1, 1));

    let before = numbered(&store)
        .await
        .events_after(0, 10)
        .await
        .unwrap()
        .len();
    assert!(matches!(
        store
            .conflicts
            .update_conflict(&dismissed, vec![noted(&dismissed)])
            .await,
        Err(RepoError::Conflict(_))
    ));
    assert_eq!(
        numbered(&store)
            .await
            .events_after(0, 10)
            .await
            .unwrap()
            .len(),
        before
    );
    assert_eq!(store.conflicts.get_conflict(open.id).await.unwrap(), stored);
    let gone = reported(9, "other", "low", 5, t(0));
    assert_eq!(
        store.conflicts.update_conflict(&gone, vec![]).await,
        Err(RepoError::NotFound)
    );
    assert_eq!(
        store.conflicts.get_conflict(gone.id).await,
        Err(RepoError::NotFound)
    );
}

pub async fn conflict_lists_filter_and_page_newest_first(store: StoreUnderTest) {
    // IDs fall as time rises: the order is by time, not by ID.
    let a = reported(4, "goal_conflict", "low", 5, t(0));
    let b = reported(3, "policy_violation", "critical", 6, t(1));
    let c = detected(2, ConflictType::CapabilityGap, gap(11), t(2));
    let d = reported(1, "goal_conflict", "low", 6, t(3));
    for x in [&a, &b, &c, &d] {
        store.conflicts.insert_conflict(x, vec![]).await.unwrap();
    }
    let mut resolved = d.clone();
    resolved.dismiss("done".into(), "user:alice", t(4)).unwrap();
    store
        .conflicts
        .update_conflict(&resolved, vec![])
        .await
        .unwrap();

    let ids = |list: Vec<Conflict>| list.iter().map(|x| x.id).collect::<Vec<_>>();
    let query = |q: ConflictQuery| ConflictQuery { limit: 10, ..q };
    let all = store
        .conflicts
        .list_conflicts(&query(ConflictQuery::default()))
        .await
        .unwrap();
    assert_eq!(ids(all), [d.id, c.id, b.id, a.id]);
    let open = ConflictQuery {
        status: Some(ConflictStatus::Open),
        ..ConflictQuery::default()
    };
    assert_eq!(
        ids(store.conflicts.list_conflicts(&query(open)).await.unwrap()),
        [c.id, b.id, a.id]
    );
    let critical = ConflictQuery {
        severity: Some(Severity::Critical),
        ..ConflictQuery::default()
    };
    assert_eq!(
        ids(store
            .conflicts
            .list_conflicts(&query(critical))
            .await
            .unwrap()),
        [b.id]
    );
    let goals = ConflictQuery {
        conflict_type: Some(ConflictType::GoalConflict),
        ..ConflictQuery::default()
    };
    assert_eq!(
        ids(store.conflicts.list_conflicts(&query(goals)).await.unwrap()),
        [d.id, a.id]
    );
    // An agent's conflicts: named as the agent, or among the involved.
    let of_six = ConflictQuery {
        agent: Some(AgentId(Uuid::from_u128(6))),
        ..ConflictQuery::default()
    };
    assert_eq!(
        ids(store
            .conflicts
            .list_conflicts(&query(of_six))
            .await
            .unwrap()),
        [d.id, b.id]
    );
    let of_seven = ConflictQuery {
        agent: Some(AgentId(Uuid::from_u128(7))),
        ..ConflictQuery::default()
    };
    assert_eq!(
        ids(store
            .conflicts
            .list_conflicts(&query(of_seven))
            .await
            .unwrap()),
        [c.id]
    );
    // Pages: strictly after the cursor, at most the limit.
    let first_page = ConflictQuery {
        limit: 2,
        ..ConflictQuery::default()
    };
    let page = store.conflicts.list_conflicts(&first_page).await.unwrap();
    assert_eq!(ids(page.clone()), [d.id, c.id]);
    let last = page.last().unwrap();
    let next = ConflictQuery {
        limit: 2,
        after: Some(Cursor {
            created_at: last.created_at,
            id: last.id.as_uuid(),
        }),
        ..ConflictQuery::default()
    };
    assert_eq!(
        ids(store.conflicts.list_conflicts(&next).await.unwrap()),
        [b.id, a.id]
    );

    assert_eq!(store.conflicts.count_conflicts().await.unwrap(), (3, 0, 1));
}

pub async fn open_detected_conflicts_are_found_by_type_oldest_first(store: StoreUnderTest) {
    let gap_new = detected(1, ConflictType::CapabilityGap, gap(22), t(5));
    let gap_old = detected(2, ConflictType::CapabilityGap, gap(21), t(1));
    let late = detected(
        3,
        ConflictType::DeadlineMissed,
        Cause::DeadlineMissed {
            task: domain::TaskId(Uuid::from_u128(31)),
        },
        t(2),
    );
    let report = reported(4, "capability_gap", "low", 5, t(0));
    let mut closed = detected(5, ConflictType::CapabilityGap, gap(23), t(0));
    for x in [&gap_new, &gap_old, &late, &report, &closed] {
        store.conflicts.insert_conflict(x, vec![]).await.unwrap();
    }
    closed.dismiss("gone".into(), "platform", t(6)).unwrap();
    store
        .conflicts
        .update_conflict(&closed, vec![])
        .await
        .unwrap();

    let ids = |list: Vec<Conflict>| list.iter().map(|x| x.id).collect::<Vec<_>>();
    let gaps = store
        .conflicts
        .open_detected(&[ConflictType::CapabilityGap], 10)
        .await
        .unwrap();
    assert_eq!(
        ids(gaps),
        [gap_old.id, gap_new.id],
        "open, detected, oldest first"
    );
    let both = store
        .conflicts
        .open_detected(
            &[ConflictType::CapabilityGap, ConflictType::DeadlineMissed],
            2,
        )
        .await
        .unwrap();
    assert_eq!(ids(both), [gap_old.id, late.id], "at most the limit");
    assert!(store
        .conflicts
        .open_detected(&[ConflictType::LeaseExpired], 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.conflicts.count_conflicts().await.unwrap(), (4, 0, 1));
}
