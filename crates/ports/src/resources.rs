//! The resource pool repository port.
//!
//! What a pool has allocated is not stored here: it is the claims of the assigned and running
//! tasks (see `domain::resource`). Scheduling passes allocate by assigning tasks, and bump the
//! version of every pool they allocate from in the same write, so a change to a pool that was
//! checked against its allocations (a smaller capacity, a deletion) loses the race, and is
//! checked again, instead of overtaking an allocation it did not see.

use async_trait::async_trait;
use domain::{NewEvent, Resource, ResourceId, Task};

use crate::RepoError;

/// Where resource pools live.
#[async_trait]
pub trait ResourceRepository: Send + Sync {
    /// Stores a new pool (`version` 0) and `events`, in one transaction. `Conflict` if a pool
    /// with this ID or name exists.
    async fn insert_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// The pool with this ID. `NotFound` if there is none.
    async fn get_resource(&self, id: ResourceId) -> Result<Resource, RepoError>;

    /// The pool a claim's reference names: by ID (when it parses as one) or by name.
    async fn find_resource(&self, reference: &str) -> Result<Option<Resource>, RepoError>;

    /// Every pool, newest first (`created_at` then `id`, descending), optionally only those of
    /// one type.
    async fn list_resources(&self, kind: Option<&str>) -> Result<Vec<Resource>, RepoError>;

    /// The assigned and running tasks that claim any pool: the live allocations.
    async fn claim_holders(&self) -> Result<Vec<Task>, RepoError>;

    /// Writes the pool's changeable fields (capacity, metadata, maintenance, `updated_at`) if
    /// its stored `version` still equals `pool.version`, bumps the version, and stores
    /// `events`; one transaction. The name, kind and `created_at` stay as registered. `NotFound`
    /// if gone, `Conflict` if moved.
    async fn update_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;

    /// Removes the pool if its stored `version` equals `pool.version`, and stores `events`; one
    /// transaction. `NotFound` if gone, `Conflict` if moved.
    async fn delete_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError>;
}
