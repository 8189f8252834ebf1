//! Resource pools: registration, changes checked against the live allocations, and views that
//! derive `allocated`, `available` and `status` from those allocations every time.

use std::collections::HashMap;

use domain::resource::{allocated, allocations};
use domain::{
    Allocation, Amounts, Cursor, Limit, NewResource, Principal, Resource, ResourceId,
    ResourcePatch, ResourceStatus, Task, ValidationErrors,
};
use ports::RepoError;

use crate::{events, require, Access, AppError, Attempt, Platform};

/// A pool with what is allocated of it now.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceView {
    pub resource: Resource,
    pub allocated: Amounts,
    pub available: Amounts,
    pub status: ResourceStatus,
}

impl ResourceView {
    pub(crate) fn of(resource: Resource, holders: &[Task]) -> Self {
        let allocated = allocated(&resource, holders);
        Self {
            available: resource.available(&allocated),
            status: resource.status(&allocated),
            allocated,
            resource,
        }
    }
}

/// Which pools to list.
#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    pub kind: Option<String>,
    pub status: Option<ResourceStatus>,
    pub after: Option<Cursor>,
}

fn repo(e: RepoError) -> AppError {
    AppError::from_repo("Resource", e)
}

impl Platform {
    /// Registers a pool. Names are unique: a taken one is `409`.
    pub async fn register_resource(
        &self,
        actor: &Principal,
        new: NewResource,
    ) -> Result<ResourceView, AppError> {
        require(actor, Access::Change, "resource pools")?;
        let id = ResourceId(self.deps.ids.new_id());
        let pool = Resource::register(id, new, self.deps.clock.now());
        if self.resource_named(&pool.name).await?.is_some() {
            return Err(name_taken(&pool.name));
        }
        let event = events::resource_registered(&pool);
        match self
            .deps
            .resources
            .insert_resource(&pool, vec![event])
            .await
        {
            Ok(stored) => self.publish(&stored).await,
            Err(RepoError::Conflict(_)) => return Err(name_taken(&pool.name)),
            Err(e) => return Err(repo(e)),
        }
        Ok(ResourceView::of(pool, &[]))
    }

    /// Pools, newest first, filtered by type and by status (which follows from allocations, so
    /// the filter is applied to the views).
    pub async fn list_resources(
        &self,
        actor: &Principal,
        filter: ResourceFilter,
        limit: Limit,
    ) -> Result<crate::Page<ResourceView>, AppError> {
        require(actor, Access::Read, "resource pools")?;
        let pools = self
            .deps
            .resources
            .list_resources(filter.kind.as_deref())
            .await
            .map_err(repo)?;
        let holders = self.deps.resources.claim_holders().await.map_err(repo)?;
        let rows: Vec<ResourceView> = pools
            .into_iter()
            .filter(|p| {
                filter
                    .after
                    .as_ref()
                    .is_none_or(|c| c.precedes(p.created_at, p.id.as_uuid()))
            })
            .map(|p| ResourceView::of(p, &holders))
            .filter(|v| filter.status.is_none_or(|s| v.status == s))
            .take(limit.get() as usize + 1)
            .collect();
        Ok(crate::Page::of(rows, limit, |v| Cursor {
            created_at: v.resource.created_at,
            id: v.resource.id.as_uuid(),
        }))
    }

    pub async fn get_resource(
        &self,
        actor: &Principal,
        id: ResourceId,
    ) -> Result<ResourceView, AppError> {
        require(actor, Access::Read, "resource pools")?;
        let pool = self.deps.resources.get_resource(id).await.map_err(repo)?;
        let holders = self.deps.resources.claim_holders().await.map_err(repo)?;
        Ok(ResourceView::of(pool, &holders))
    }

    /// What tasks hold of a pool now, oldest allocation first.
    pub async fn resource_allocations(
        &self,
        actor: &Principal,
        id: ResourceId,
    ) -> Result<Vec<Allocation>, AppError> {
        require(actor, Access::Read, "resource pools")?;
        let pool = self.deps.resources.get_resource(id).await.map_err(repo)?;
        let holders = self.deps.resources.claim_holders().await.map_err(repo)?;
        let mut list = allocations(&pool, &holders);
        list.sort_by_key(|a| (a.allocated_at, a.task));
        Ok(list)
    }

    /// Changes a pool's capacity, metadata or maintenance status. A capacity below what is
    /// allocated now is refused (`422`), checked against allocations no pass can overtake.
    pub async fn update_resource(
        &self,
        actor: &Principal,
        id: ResourceId,
        patch: ResourcePatch,
    ) -> Result<ResourceView, AppError> {
        require(actor, Access::Change, "resource pools")?;
        crate::until_won("resource pool", || async {
            let mut pool = self.deps.resources.get_resource(id).await.map_err(repo)?;
            let holders = self.deps.resources.claim_holders().await.map_err(repo)?;
            let held = allocated(&pool, &holders);
            let before = pool.clone();
            pool.apply(patch.clone(), &held, self.deps.clock.now())?;
            if pool.capacity == before.capacity
                && pool.metadata == before.metadata
                && pool.maintenance == before.maintenance
            {
                return Ok(Attempt::Won(ResourceView::of(before, &holders)));
            }
            let event = events::resource_updated(&pool, &before);
            let written = self
                .deps
                .resources
                .update_resource(&pool, vec![event])
                .await;
            let Attempt::Won(stored) = Attempt::of(written).map_err(repo)? else {
                return Ok(Attempt::Lost);
            };
            self.publish(&stored).await;
            self.wake_for_room(); // more capacity may place waiting tasks
            pool.version += 1;
            Ok(Attempt::Won(ResourceView::of(pool, &holders)))
        })
        .await
    }

    /// Deletes a pool; `409` while any task holds part of it.
    pub async fn delete_resource(&self, actor: &Principal, id: ResourceId) -> Result<(), AppError> {
        require(actor, Access::Change, "resource pools")?;
        crate::until_won("resource pool", || async {
            let pool = self.deps.resources.get_resource(id).await.map_err(repo)?;
            let holders = self.deps.resources.claim_holders().await.map_err(repo)?;
            let live = allocations(&pool, &holders);
            if !live.is_empty() {
                return Err(AppError::Conflict(format!(
                    "resource {} has {} live allocation(s); it can be deleted once they are released",
                    pool.name,
                    live.len()
                )));
            }
            let event = events::resource_deleted(&pool, self.deps.clock.now());
            let written = self
                .deps
                .resources
                .delete_resource(&pool, vec![event])
                .await;
            let Attempt::Won(stored) = Attempt::of(written).map_err(repo)? else {
                return Ok(Attempt::Lost);
            };
            self.publish(&stored).await;
            Ok(Attempt::Won(()))
        })
        .await
    }

    /// The pool a claim names (ID or name), if there is one.
    pub(crate) async fn resource_named(
        &self,
        reference: &str,
    ) -> Result<Option<Resource>, AppError> {
        self.deps
            .resources
            .find_resource(reference)
            .await
            .map_err(repo)
    }

    /// The pools `references` name (by ID or name), each looked up once.
    pub(crate) async fn pools_named<'a>(
        &self,
        references: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashMap<String, Option<Resource>>, AppError> {
        let mut pools = HashMap::new();
        for reference in references {
            if !pools.contains_key(reference) {
                let pool = self.resource_named(reference).await?;
                pools.insert(reference.to_owned(), pool);
            }
        }
        Ok(pools)
    }
}

/// What is wrong with a submission's claims, given the pools they name: every pool must exist
/// and be able to hold the claim at all, with the task's claims on one pool counted together.
pub(crate) fn claim_errors(
    task: &domain::NewTask,
    pools: &HashMap<String, Option<Resource>>,
) -> ValidationErrors {
    let mut errors = ValidationErrors::default();
    let mut together: Vec<(&Resource, domain::ResourceMap)> = Vec::new();
    for (i, claim) in task.resource_claims.iter().enumerate() {
        let Some(pool) = pools.get(&claim.resource).and_then(Option::as_ref) else {
            errors.push(
                format!("resource_claims[{i}].resource_id"),
                format!("no resource pool has ID or name '{}'", claim.resource),
            );
            continue;
        };
        let total = match together.iter_mut().find(|(p, _)| p.id == pool.id) {
            Some((_, total)) => {
                *total = total.plus(&claim.amount);
                total.clone()
            }
            None => {
                together.push((pool, claim.amount.clone()));
                claim.amount.clone()
            }
        };
        if let Some(why) = pool.never_fits(&total) {
            errors.push(
                format!("resource_claims[{i}].amount"),
                format!("can never be satisfied: {why}"),
            );
        }
    }
    errors
}

fn name_taken(name: &str) -> AppError {
    AppError::Conflict(format!("a resource pool named '{name}' exists already"))
}
