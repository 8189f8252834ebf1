//! PostgreSQL passes the same contract suite as the embedded store, each case on a fresh database.

use std::sync::Arc;

use testkit::StoreUnderTest;

async fn fresh() -> StoreUnderTest {
    StoreUnderTest::of(Arc::new(adapters_postgres::testing::fresh_store().await))
}

testkit::store_contract!(fresh);
