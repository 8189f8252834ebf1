//! Every port in process: the embedded default and the fast test double.
//!
//! With no `DATABASE_URL` the server runs on [`MemoryStore`]; with no `REDIS_URL` it runs on
//! [`MemoryBus`]. Both keep the same contracts as their PostgreSQL and Redis counterparts,
//! which `testkit`'s suites check.

mod bus;
mod store;
mod system;

pub use bus::MemoryBus;
pub use store::MemoryStore;
pub use system::{RandomIds, SystemClock};
