//! How many WebSocket connections may be open at once on this replica: in total, per
//! credential, and per client address while they have not yet authenticated. A connection
//! holds its slots for as long as it lives; past a cap, new ones are refused (`503` in total,
//! `429` per credential or address) before they are upgraded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Open connections on this replica, whoever holds them.
    pub total: usize,
    /// Open connections of one credential (an API key, or a token's subject and role).
    pub per_credential: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            total: 10_000,
            per_credential: 1_000,
        }
    }
}

/// Connections one client address may hold open before they authenticate (which they must
/// within 10 s): enough for a few clients behind one address, too few for anyone to fill the
/// total without credentials.
pub const PENDING_PER_ADDRESS: usize = 16;

/// The open connections of this replica, counted against [`WsLimits`].
#[derive(Debug)]
pub struct Connections {
    total: AtomicUsize,
    per_credential: AtomicUsize,
    open: AtomicUsize,
    by_credential: Mutex<HashMap<String, usize>>,
    /// Rung whenever a connection gives a place back.
    released: tokio::sync::Notify,
}

impl Connections {
    pub fn new(limits: WsLimits) -> Self {
        Self {
            total: AtomicUsize::new(limits.total),
            per_credential: AtomicUsize::new(limits.per_credential),
            open: AtomicUsize::new(0),
            by_credential: Mutex::default(),
            released: tokio::sync::Notify::new(),
        }
    }

    pub fn limits(&self) -> WsLimits {
        WsLimits {
            total: self.total.load(Ordering::Relaxed),
            per_credential: self.per_credential.load(Ordering::Relaxed),
        }
    }

    /// Changes the caps; connections already open stay.
    pub fn set_limits(&self, limits: WsLimits) {
        self.total.store(limits.total, Ordering::Relaxed);
        self.per_credential
            .store(limits.per_credential, Ordering::Relaxed);
    }

    /// Resolves once a connection gives a place back after this is enabled or first polled:
    /// how a caller waiting for room learns there may be some.
    pub fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    /// How many connections are open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed) as u64
    }

    /// A place among all connections, or `None` at the cap.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.total.load(Ordering::Relaxed)).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// A place among the credential's connections, or `None` at its cap.
    pub(crate) fn admit_credential(self: &Arc<Self>, credential: String) -> Option<CredentialSlot> {
        let cap = self.per_credential.load(Ordering::Relaxed);
        self.admit_keyed(format!("credential:{credential}"), cap)
    }

    /// A place among the connections from `address` that have not authenticated yet, or
    /// `None` at [`PENDING_PER_ADDRESS`].
    pub(crate) fn admit_pending(self: &Arc<Self>, address: &str) -> Option<CredentialSlot> {
        self.admit_keyed(format!("pending:{address}"), PENDING_PER_ADDRESS)
    }

    fn admit_keyed(self: &Arc<Self>, credential: String, cap: usize) -> Option<CredentialSlot> {
        let mut counts = self.by_credential.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(credential.clone()).or_insert(0);
        if *count >= cap {
            if *count == 0 {
                counts.remove(&credential);
            }
            return None;
        }
        *count += 1;
        Some(CredentialSlot {
            connections: self.clone(),
            credential,
        })
    }
}

/// One connection's place in the total; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_waiters();
    }
}

/// One connection's place among its credential's (or its address's, before it has one); given
/// back when dropped.
#[derive(Debug)]
pub(crate) struct CredentialSlot {
    connections: Arc<Connections>,
    credential: String,
}

impl Drop for CredentialSlot {
    fn drop(&mut self) {
        let mut counts = self
            .connections
            .by_credential
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.credential) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.credential);
            }
        }
        drop(counts);
        self.connections.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back() {
        let connections = Arc::new(Connections::new(WsLimits {
            total: 3,
            per_credential: 2,
        }));
        let a = connections.admit().unwrap();
        let b = connections.admit().unwrap();
        let c = connections.admit().unwrap();
        assert!(connections.admit().is_none());
        assert_eq!(connections.open(), 3);
        drop(b);
        assert!(connections.admit().is_some());
        let x1 = connections.admit_credential("key:x".into()).unwrap();
        let x2 = connections.admit_credential("key:x".into()).unwrap();
        assert!(connections.admit_credential("key:x".into()).is_none());
        assert!(connections.admit_credential("key:y".into()).is_some());
        drop(x1);
        assert!(connections.admit_credential("key:x".into()).is_some());
        let pending: Vec<_> = (0..PENDING_PER_ADDRESS)
            .map(|_| connections.admit_pending("10.0.0.1").unwrap())
            .collect();
        assert!(connections.admit_pending("10.0.0.1").is_none());
        assert!(connections.admit_pending("10.0.0.2").is_some());
        drop((a, c, x2, pending));
        assert_eq!(connections.open(), 0);
        assert!(connections.by_credential.lock().unwrap().is_empty());
    }
}
