//! The resource pool contract: what every implementation of `ResourceRepository` must do.

use chrono::{DateTime, Utc};
use domain::{EventKind, NewEvent, NewResource, Resource, ResourceClaim, ResourceId, ResourceMap};
use ports::{Changes, RepoError};
use serde_json::json;
use uuid::Uuid;

use crate::builders::{agent, agent_key, object, task};
use crate::contract::numbered;
use crate::StoreUnderTest;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).expect("valid time")
}

/// A pool with a fixed ID number, `gpus` GPUs and 32Gi of memory, registered at `at`.
pub fn pool(n: u128, name: &str, kind: &str, gpus: u32, at: DateTime<Utc>) -> Resource {
    let new = NewResource::parse(
        name,
        kind,
        &object(json!({"gpus": gpus, "memory": "32Gi"})),
        object(json!({"rack": "r1"})),
    )
    .expect("a valid pool");
    Resource::register(ResourceId(Uuid::from_u128(n)), new, at)
}

fn created(pool: &Resource) -> NewEvent {
    NewEvent {
        kind: EventKind::ResourceRegistered,
        agent_id: None,
        task_id: None,
        data: json!({"resource_id": pool.id, "name": pool.name}).into(),
        timestamp: pool.created_at,
    }
}

pub async fn pools_round_trip_and_names_and_ids_are_unique(store: StoreUnderTest) {
    let gpus = pool(1, "gpu_cluster_01", "gpu", 4, t(0));
    let stored = store
        .resources
        .insert_resource(&gpus, vec![created(&gpus)])
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "the event is stored with the pool");
    assert_eq!(store.resources.get_resource(gpus.id).await.unwrap(), gpus);
    assert_eq!(
        numbered(&store)
            .await
            .events_after(0, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // The same name, or the same ID, is a conflict, and nothing of it is written.
    let same_name = pool(2, "gpu_cluster_01", "gpu", 1, t(1));
    let same_id = pool(1, "another", "gpu", 1, t(1));
    for clash in [&same_name, &same_id] {
        assert!(matches!(
            store
                .resources
                .insert_resource(clash, vec![created(clash)])
                .await,
            Err(RepoError::Conflict(_))
        ));
    }
    assert_eq!(store.resources.list_resources(None).await.unwrap().len(), 1);
    assert_eq!(
        numbered(&store)
            .await
            .events_after(0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .resources
            .get_resource(ResourceId(Uuid::from_u128(9)))
            .await,
        Err(RepoError::NotFound)
    );
}

pub async fn pools_are_found_by_id_or_name_and_listed_newest_first(store: StoreUnderTest) {
    // IDs fall as time rises: the order is by time, not by ID.
    let a = pool(3, "gpus-a", "gpu", 1, t(0));
    let b = pool(2, "licenses", "license", 1, t(1));
    let c = pool(1, "gpus-c", "gpu", 1, t(2));
    for p in [&a, &b, &c] {
        store.resources.insert_resource(p, vec![]).await.unwrap();
    }
    let by_name = store.resources.find_resource("licenses").await.unwrap();
    assert_eq!(by_name.map(|p| p.id), Some(b.id));
    let by_id = store
        .resources
        .find_resource(&c.id.to_string())
        .await
        .unwrap();
    assert_eq!(by_id.map(|p| p.id), Some(c.id));
    let upper = c.id.to_string().to_uppercase();
    let by_other_spelling = store.resources.find_resource(&upper).await.unwrap();
    assert_eq!(by_other_spelling.map(|p| p.id), Some(c.id));
    assert_eq!(
        store.resources.find_resource("nothing").await.unwrap(),
        None
    );
    let unknown_id = Uuid::from_u128(99).to_string();
    assert_eq!(
        store.resources.find_resource(&unknown_id).await.unwrap(),
        None
    );

    let all: Vec<ResourceId> = store
        .resources
        .list_resources(None)
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(all, [c.id, b.id, a.id]);
    let gpus: Vec<ResourceId> = store
        .resources
        .list_resources(Some("gpu"))
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(gpus, [c.id, a.id]);
}

pub async fn pool_updates_and_deletes_hold_to_the_version_read(store: StoreUnderTest) {
    let mut gpus = pool(1, "gpus", "gpu", 4, t(0));
    gpus.version = 7;
    store
        .resources
        .insert_resource(&gpus, vec![])
        .await
        .unwrap();
    assert_eq!(
        store.resources.get_resource(gpus.id).await.unwrap().version,
        0,
        "a new pool starts at version 0"
    );
    gpus.version = 0;

    let mut bigger = gpus.clone();
    bigger.capacity =
        ResourceMap::from_json("capacity", &object(json!({"gpus": 8}))).expect("a capacity");
    bigger.updated_at = t(5);
    bigger.metadata = domain::Metadata::parse(object(json!({"rack": "r2"}))).unwrap();
    bigger.maintenance = true;
    // Not the pool's to change: its name, kind and time of registration.
    bigger.name = "renamed".into();
    bigger.kind = "other".into();
    bigger.created_at = t(4);
    store
        .resources
        .update_resource(&bigger, vec![created(&bigger)])
        .await
        .unwrap();
    let stored = store.resources.get_resource(gpus.id).await.unwrap();
    assert_eq!(stored.version, 1, "an update bumps the version");
    assert_eq!(
        (
            &stored.capacity,
            &stored.metadata,
            stored.maintenance,
            stored.updated_at
        ),
        (&bigger.capacity, &bigger.metadata, true, t(5))
    );
    assert_eq!(
        (
            stored.name.as_str(),
            stored.kind.as_str(),
            stored.created_at
        ),
        ("gpus", "gpu", t(0))
    );

    // A write over the old version loses, and writes nothing (nor its events).
    let events_before = numbered(&store)
        .await
        .events_after(0, 10)
        .await
        .unwrap()
        .len();
    assert!(matches!(
        store
            .resources
            .update_resource(&bigger, vec![created(&bigger)])
            .await,
        Err(RepoError::Conflict(_))
    ));
    assert!(matches!(
        store.resources.delete_resource(&gpus, vec![]).await,
        Err(RepoError::Conflict(_))
    ));
    assert_eq!(
        numbered(&store)
            .await
            .events_after(0, 10)
            .await
            .unwrap()
            .len(),
        events_before
    );
    assert_eq!(store.resources.get_resource(gpus.id).await.unwrap(), stored);

    store
        .resources
        .delete_resource(&stored, vec![created(&stored)])
        .await
        .unwrap();
    assert_eq!(
        store.resources.get_resource(gpus.id).await,
        Err(RepoError::NotFound)
    );
    assert_eq!(
        store.resources.update_resource(&stored, vec![]).await,
        Err(RepoError::NotFound)
    );
    assert_eq!(
        store.resources.delete_resource(&stored, vec![]).await,
        Err(RepoError::NotFound)
    );
}

pub async fn claim_holders_are_the_assigned_and_running_tasks_that_claim(store: StoreUnderTest) {
    let worker = agent(1, "worker", &[], t(0));
    store
        .agents
        .insert(&worker, &agent_key(1, worker.id, t(0)), vec![])
        .await
        .unwrap();
    let claim = ResourceClaim {
        resource: "gpus".into(),
        amount: ResourceMap::from_json("a", &object(json!({"gpus": 1}))).unwrap(),
    };
    let mut holding = task(10, 5, &[], t(1));
    holding.resource_claims = vec![claim.clone()];
    let mut waiting = task(11, 5, &[], t(2));
    waiting.resource_claims = vec![claim];
    let plain = task(12, 5, &[], t(3));
    for x in [&holding, &waiting, &plain] {
        store.tasks.insert(x, vec![], None).await.unwrap();
    }
    assert!(store.resources.claim_holders().await.unwrap().is_empty());
    let mut assigned = store.tasks.get(holding.id).await.unwrap();
    let mut plain_assigned = store.tasks.get(plain.id).await.unwrap();
    for x in [&mut assigned, &mut plain_assigned] {
        x.assign(worker.id, t(4))
            .expect("a pending task can be assigned");
    }
    store
        .tasks
        .save(Changes {
            tasks: vec![assigned, plain_assigned],
            ..Changes::default()
        })
        .await
        .unwrap();
    let holders: Vec<domain::TaskId> = store
        .resources
        .claim_holders()
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(holders, [holding.id], "only held tasks with claims");
}
