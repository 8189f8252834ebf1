//! The in-process event bus: a broadcast channel inside one server process.

use async_trait::async_trait;
use domain::Event;
use ports::{ComponentStatus, EventBus};
use tokio::sync::broadcast;

/// How many undelivered events a slow in-process subscriber may fall behind by.
const CAPACITY: usize = 4096;

/// Delivers events to subscribers in this process.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    sender: broadcast::Sender<Event>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, events: &[Event]) {
        for event in events {
            // No subscriber is not an error: the event is in the log.
            let _ = self.sender.send(event.clone());
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    async fn status(&self) -> ComponentStatus {
        ComponentStatus::Embedded
    }
}
