//! The embedded store passes the same contract suite as PostgreSQL.

use std::sync::Arc;

use adapters_memory::MemoryStore;
use testkit::StoreUnderTest;

async fn fresh() -> StoreUnderTest {
    StoreUnderTest::of(Arc::new(MemoryStore::new()))
}

testkit::store_contract!(fresh);
