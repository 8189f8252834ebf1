//! Resource pools in memory.

use async_trait::async_trait;
use domain::{NewEvent, Resource, ResourceId, Task};
use ports::{RepoError, ResourceRepository};

use super::{newest_page, MemoryStore};

#[async_trait]
impl ResourceRepository for MemoryStore {
    async fn insert_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        if state.resources.contains_key(&pool.id)
            || state.resources.values().any(|p| p.name == pool.name)
        {
            return Err(RepoError::Conflict(format!(
                "a resource named {} exists",
                pool.name
            )));
        }
        let mut stored = pool.clone();
        stored.version = 0;
        state.resources.insert(pool.id, stored);
        Ok(state.append(events))
    }

    async fn get_resource(&self, id: ResourceId) -> Result<Resource, RepoError> {
        self.lock()
            .resources
            .get(&id)
            .cloned()
            .ok_or(RepoError::NotFound)
    }

    async fn find_resource(&self, reference: &str) -> Result<Option<Resource>, RepoError> {
        Ok(self
            .lock()
            .resources
            .values()
            .find(|p| p.is_named(reference))
            .cloned())
    }

    async fn list_resources(&self, kind: Option<&str>) -> Result<Vec<Resource>, RepoError> {
        let state = self.lock();
        let rows = state
            .resources
            .values()
            .filter(|p| kind.is_none_or(|k| p.kind == k));
        Ok(newest_page(
            rows,
            |p| (p.created_at, p.id.as_uuid()),
            None,
            u32::MAX,
        ))
    }

    async fn claim_holders(&self) -> Result<Vec<Task>, RepoError> {
        Ok(self.lock().claim_holders())
    }

    async fn update_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        state.check_pool(pool)?;
        if let Some(stored) = state.resources.get_mut(&pool.id) {
            // The name, the kind and the time of registration are the pool's for good.
            stored.capacity = pool.capacity.clone();
            stored.metadata = pool.metadata.clone();
            stored.maintenance = pool.maintenance;
            stored.updated_at = pool.updated_at;
            stored.version += 1;
        }
        Ok(state.append(events))
    }

    async fn delete_resource(
        &self,
        pool: &Resource,
        events: Vec<NewEvent>,
    ) -> Result<Vec<NewEvent>, RepoError> {
        let mut state = self.lock();
        state.check_pool(pool)?;
        state.resources.remove(&pool.id);
        Ok(state.append(events))
    }
}
