//! Test support shared by every crate: the contract suites each adapter must pass,
//! builders for realistic inputs, and a clock tests move by hand.

pub mod agents_contract;
pub mod builders;
pub mod conflicts_contract;
pub mod contract;
pub mod credentials_contract;
pub mod events_contract;
pub mod resources_contract;
mod system;
pub mod tasks_contract;
pub mod workflows_contract;

use std::sync::Arc;

use app::{Dependencies, Platform, Settings};
use ports::{
    AgentRepository, ConflictRepository, CredentialRepository, EventBus, EventLog, HealthCheck,
    ResourceRepository, TaskRepository, WorkflowRepository,
};

pub use system::{ManualClock, SequentialIds};

/// The repositories of one store, as the contract suite sees them.
#[derive(Clone)]
pub struct StoreUnderTest {
    pub agents: Arc<dyn AgentRepository>,
    pub credentials: Arc<dyn CredentialRepository>,
    pub events: Arc<dyn EventLog>,
    pub tasks: Arc<dyn TaskRepository>,
    pub resources: Arc<dyn ResourceRepository>,
    pub conflicts: Arc<dyn ConflictRepository>,
    pub workflows: Arc<dyn WorkflowRepository>,
    pub health: Arc<dyn HealthCheck>,
    pub replicas: Arc<dyn ports::ReplicaRegistry>,
}

impl std::fmt::Debug for StoreUnderTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUnderTest").finish_non_exhaustive()
    }
}

impl StoreUnderTest {
    /// Wraps a store that implements every repository port.
    pub fn of<S>(store: Arc<S>) -> Self
    where
        S: ports::Store + 'static,
    {
        Self {
            agents: store.clone(),
            credentials: store.clone(),
            events: store.clone(),
            tasks: store.clone(),
            resources: store.clone(),
            conflicts: store.clone(),
            workflows: store.clone(),
            health: store.clone(),
            replicas: store,
        }
    }
}

/// A platform on the given store and bus, with a manual clock and the given settings.
pub fn platform<S, B>(
    store: Arc<S>,
    bus: Arc<B>,
    clock: ManualClock,
    settings: Settings,
) -> Platform
where
    S: ports::Store + 'static,
    B: EventBus + 'static,
{
    platform_with_ids(store, bus, clock, settings, SequentialIds::default())
}

/// [`platform`], its IDs from `ids`: one of several replicas sharing a store.
pub fn platform_with_ids<S, B>(
    store: Arc<S>,
    bus: Arc<B>,
    clock: ManualClock,
    settings: Settings,
    ids: SequentialIds,
) -> Platform
where
    S: ports::Store + 'static,
    B: EventBus + 'static,
{
    Platform::new(
        Dependencies::on_store(store, bus, Arc::new(clock), Arc::new(ids)),
        settings,
    )
}
