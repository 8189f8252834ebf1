//! Shared resource pools (a GPU cluster, a licence pool) and what tasks hold of them.
//!
//! A pool's allocations are not stored apart from the tasks: a task holds its `resource_claims`
//! exactly while it is assigned or running. Allocation therefore happens in the same write as
//! the assignment and ends with whatever ends the task (completion, failure, cancellation,
//! expiry, a lost lease), and `allocated`, `available` and `status` are always derived from
//! the live holders, never kept in a second place that could drift.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::quantity::{nanos_to_json, show_nanos, ResourceMap};
use crate::task::{Task, TaskStatus};
use crate::validation::{check_name, ValidationErrors};
use crate::{AgentId, Metadata, ResourceId, TaskId};

/// Longest pool type, e.g. `gpu`.
pub const MAX_TYPE_CHARS: usize = 64;

named_enum!(
    /// What a pool is doing, as clients see it.
    ResourceStatus, "status" {
            /// Nothing allocated.
            Available => "available",
            /// Something allocated, something free.
            InUse => "in_use",
            /// Nothing free on some dimension.
            Exhausted => "exhausted",
            /// Taken out of service by an operator: no new allocations.
            Maintenance => "maintenance",
    }
);

/// A registered pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub id: ResourceId,
    /// Unique; claims may name the pool by it. Never changes.
    pub name: String,
    /// The pool's kind (`gpu`, `license`, ...), for filtering.
    pub kind: String,
    pub capacity: ResourceMap,
    pub metadata: Metadata,
    /// Out of service: holders keep what they have, nobody gets more.
    pub maintenance: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq)]
pub struct NewResource {
    pub name: String,
    pub kind: String,
    pub capacity: ResourceMap,
    pub metadata: Metadata,
}

impl NewResource {
    pub fn parse(
        name: &str,
        kind: &str,
        capacity: &Map<String, Value>,
        metadata: Map<String, Value>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = errors.collect(
            "name",
            check_name(name).and_then(|n| match n.parse::<uuid::Uuid>() {
                // Claims name a pool by ID or by name: a name that is an ID would be ambiguous.
                Ok(_) => Err("must not be a UUID".to_owned()),
                Err(_) => Ok(n),
            }),
        );
        let kind = errors.collect("type", check_kind(kind));
        let capacity = parse_capacity(&mut errors, capacity);
        let metadata = errors.collect("metadata", Metadata::parse(metadata));
        match (name, kind, capacity, metadata) {
            (Some(name), Some(kind), Some(capacity), Some(metadata)) if errors.is_empty() => {
                Ok(Self {
                    name,
                    kind,
                    capacity,
                    metadata,
                })
            }
            _ => Err(errors),
        }
    }
}

impl Resource {
    pub fn register(id: ResourceId, new: NewResource, now: DateTime<Utc>) -> Self {
        Self {
            id,
            name: new.name,
            kind: new.kind,
            capacity: new.capacity,
            metadata: new.metadata,
            maintenance: false,
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }

    /// Whether a claim's `resource_id` names this pool: its name, or its ID in any spelling.
    pub fn is_named(&self, reference: &str) -> bool {
        self.name == reference
            || reference
                .parse::<uuid::Uuid>()
                .is_ok_and(|u| u == self.id.0)
    }

    /// The pool's status given what is allocated of it.
    pub fn status(&self, allocated: &Amounts) -> ResourceStatus {
        if self.maintenance {
            ResourceStatus::Maintenance
        } else if allocated.is_empty() {
            ResourceStatus::Available
        } else if self
            .capacity
            .iter()
            .any(|(dim, q)| allocated.get(dim) >= q.nanos())
        {
            ResourceStatus::Exhausted
        } else {
            ResourceStatus::InUse
        }
    }

    /// What is free on each dimension of the capacity.
    pub fn available(&self, allocated: &Amounts) -> Amounts {
        Amounts(
            self.capacity
                .iter()
                .map(|(dim, q)| (dim.to_owned(), (q.nanos() - allocated.get(dim)).max(0)))
                .collect(),
        )
    }

    /// Applies a patch, refusing a capacity below what is allocated now.
    pub fn apply(
        &mut self,
        patch: ResourcePatch,
        allocated: &Amounts,
        now: DateTime<Utc>,
    ) -> Result<(), ValidationErrors> {
        if let Some(capacity) = &patch.capacity {
            let mut errors = ValidationErrors::default();
            for (dim, held) in allocated.iter() {
                let cap = capacity.get(dim).map_or(0, |q| q.nanos());
                if cap < held {
                    errors.push(
                        format!("capacity.{dim}"),
                        format!("must be at least the {} allocated now", show_nanos(held)),
                    );
                }
            }
            errors.into_result()?;
        }
        if let Some(capacity) = patch.capacity {
            self.capacity = capacity;
        }
        if let Some(metadata) = patch.metadata {
            self.metadata = self
                .metadata
                .merged(&metadata)
                .map_err(|e| ValidationErrors::single("metadata", e))?;
        }
        if let Some(maintenance) = patch.maintenance {
            self.maintenance = maintenance;
        }
        self.updated_at = now;
        Ok(())
    }

    /// Why a claim of `amount` on this pool could never be satisfied, if it could not: a
    /// dimension the pool does not have, or more than its whole capacity.
    pub fn never_fits(&self, amount: &ResourceMap) -> Option<String> {
        for (dim, q) in amount.iter() {
            match self.capacity.get(dim) {
                None => return Some(format!("resource {} has no {dim}", self.name)),
                Some(cap) if q.nanos() > cap.nanos() => {
                    return Some(format!(
                        "resource {} has only {} {dim} in all",
                        self.name, cap
                    ))
                }
                Some(_) => {}
            }
        }
        None
    }
}

/// A validated partial update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourcePatch {
    pub capacity: Option<ResourceMap>,
    pub metadata: Option<Metadata>,
    /// `Some(true)` for `maintenance`, `Some(false)` for `available`.
    pub maintenance: Option<bool>,
}

impl ResourcePatch {
    pub fn parse(
        capacity: Option<&Map<String, Value>>,
        metadata: Option<Map<String, Value>>,
        status: Option<&str>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let patch = Self {
            capacity: capacity.and_then(|c| parse_capacity(&mut errors, c)),
            metadata: metadata.and_then(|m| errors.collect("metadata", Metadata::parse(m))),
            maintenance: status.and_then(|s| match s {
                "maintenance" => Some(true),
                "available" => Some(false),
                other => {
                    errors.push(
                        "status",
                        format!("cannot be set to '{other}' (expected maintenance or available; in_use and exhausted follow from allocations)"),
                    );
                    None
                }
            }),
        };
        errors.into_result().map(|()| patch)
    }
}

fn check_kind(kind: &str) -> Result<String, String> {
    let kind = kind.trim();
    if kind.is_empty() || kind.chars().count() > MAX_TYPE_CHARS {
        return Err(format!("must be 1 to {MAX_TYPE_CHARS} characters"));
    }
    if !kind
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("may contain only letters, digits, '_', '-' and '.'".into());
    }
    Ok(kind.to_owned())
}

/// A capacity: at least one dimension, every amount positive.
fn parse_capacity(errors: &mut ValidationErrors, raw: &Map<String, Value>) -> Option<ResourceMap> {
    let capacity = match ResourceMap::from_json("capacity", raw) {
        Ok(c) => c,
        Err(e) => {
            errors.0.extend(e.0);
            return None;
        }
    };
    if capacity.is_empty() {
        errors.push("capacity", "must name at least one dimension");
        return None;
    }
    let mut ok = true;
    for (dim, q) in capacity.iter() {
        if q.is_zero() {
            errors.push(format!("capacity.{dim}"), "must be positive");
            ok = false;
        }
    }
    ok.then_some(capacity)
}

/// Amounts per dimension, in nano-units; absent dimensions are zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Amounts(BTreeMap<String, i128>);

impl Amounts {
    pub fn get(&self, dim: &str) -> i128 {
        self.0.get(dim).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(|v| *v == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i128)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn add(&mut self, amount: &ResourceMap) {
        for (dim, q) in amount.iter() {
            *self.0.entry(dim.to_owned()).or_insert(0) += q.nanos();
        }
    }

    pub fn into_map(self) -> BTreeMap<String, i128> {
        self.0
    }

    /// As JSON numbers (integers when whole).
    pub fn to_json(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(dim, n)| (dim.clone(), nanos_to_json(*n)))
            .collect()
    }
}

/// One task's hold on one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub task: TaskId,
    pub agent: Option<AgentId>,
    pub attempt: u32,
    pub amount: ResourceMap,
    pub allocated_at: Option<DateTime<Utc>>,
}

/// What tasks hold of each pool: the claims of every assigned or running task.
pub fn allocations(pool: &Resource, holders: &[Task]) -> Vec<Allocation> {
    holders
        .iter()
        .filter(|t| matches!(t.status, TaskStatus::Assigned | TaskStatus::Running))
        .flat_map(|t| {
            t.resource_claims
                .iter()
                .filter(|c| pool.is_named(&c.resource))
                .map(move |c| Allocation {
                    task: t.id,
                    agent: t.assigned_agent,
                    attempt: t.attempt,
                    amount: c.amount.clone(),
                    allocated_at: t.assigned_at,
                })
        })
        .collect()
}

/// The total `holders` hold of `pool`.
pub fn allocated(pool: &Resource, holders: &[Task]) -> Amounts {
    let mut total = Amounts::default();
    for allocation in allocations(pool, holders) {
        total.add(&allocation.amount);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(capacity: Value) -> Resource {
        let new = NewResource::parse(
            "gpu_cluster_01",
            "gpu",
            capacity.as_object().unwrap(),
            Map::new(),
        )
        .unwrap();
        Resource::register(ResourceId(uuid::Uuid::from_u128(7)), new, Utc::now())
    }

    fn amounts(value: Value) -> Amounts {
        let mut a = Amounts::default();
        a.add(&ResourceMap::from_json("x", value.as_object().unwrap()).unwrap());
        a
    }

    #[test]
    fn status_follows_the_allocations() {
        let p = pool(json!({"gpus": 4, "memory": "32Gi"}));
        assert_eq!(p.status(&Amounts::default()), ResourceStatus::Available);
        assert_eq!(
            p.status(&amounts(json!({"gpus": 1}))),
            ResourceStatus::InUse
        );
        assert_eq!(
            p.status(&amounts(json!({"gpus": 4}))),
            ResourceStatus::Exhausted
        );
        assert_eq!(
            p.available(&amounts(json!({"gpus": 1, "memory": "8Gi"})))
                .to_json(),
            json!({"gpus": 3, "memory": 24u64 << 30})
                .as_object()
                .unwrap()
                .clone()
        );
    }

    #[test]
    fn bad_registrations_name_every_field() {
        let err = NewResource::parse(
            "",
            "g p u",
            json!({"gpus": -1, "memory": "lots"}).as_object().unwrap(),
            Map::new(),
        )
        .unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"name"), "{fields:?}");
        assert!(fields.contains(&"type"), "{fields:?}");
        assert!(
            fields.iter().any(|f| f.starts_with("capacity.")),
            "{fields:?}"
        );
        let empty = NewResource::parse("p", "gpu", &Map::new(), Map::new()).unwrap_err();
        assert_eq!(empty.0[0].field, "capacity");
    }

    #[test]
    fn capacity_cannot_drop_below_what_is_allocated() {
        let mut p = pool(json!({"gpus": 4}));
        let patch = ResourcePatch::parse(Some(json!({"gpus": 1}).as_object().unwrap()), None, None)
            .unwrap();
        let err = p
            .apply(patch.clone(), &amounts(json!({"gpus": 2})), Utc::now())
            .unwrap_err();
        assert_eq!(err.0[0].field, "capacity.gpus");
        assert_eq!(p.capacity.get("gpus").unwrap().nanos(), 4_000_000_000);
        p.apply(patch, &amounts(json!({"gpus": 1})), Utc::now())
            .unwrap();
        assert_eq!(p.capacity.get("gpus").unwrap().nanos(), 1_000_000_000);
    }

    #[test]
    fn a_claim_beyond_the_whole_pool_never_fits() {
        let p = pool(json!({"gpus": 2}));
        let claim = |v: Value| ResourceMap::from_json("amount", v.as_object().unwrap()).unwrap();
        assert_eq!(p.never_fits(&claim(json!({"gpus": 2}))), None);
        assert!(p
            .never_fits(&claim(json!({"gpus": 3})))
            .unwrap()
            .contains("only 2"));
        assert!(p
            .never_fits(&claim(json!({"tpus": 1})))
            .unwrap()
            .contains("no tpus"));
    }
}
