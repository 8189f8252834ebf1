//! Password hashing, bounded in time and memory.
//!
//! Argon2id is memory-hard: each hash fills about 19 MiB. Only `slots` hashes run at once, on
//! `slots` threads of their own; a few callers more may wait for a slot, and everyone past them
//! is refused at once, before any hashing. Each thread keeps one buffer for Argon2's memory and
//! reuses it for every hash, so hashing holds `slots` × 19 MiB however many sign-ins arrive,
//! and no allocator is left holding freed buffers. The other cores stay free for other
//! requests.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

use crate::AppError;

/// How many callers may wait for a hashing turn, per hashing slot.
const QUEUE_PER_SLOT: usize = 4;
/// Longest a caller waits in that queue before it is told to come back.
const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// What a refused caller is told to wait, in seconds.
const RETRY_AFTER: u64 = 1;
/// The costliest stored hash checked: four times this server's own memory and passes. A hash
/// stored by anyone else that asks for more is treated as not matching, so no row can make a
/// sign-in take unbounded memory or time.
const MAX_M_COST: u32 = 4 * Params::DEFAULT_M_COST;
const MAX_T_COST: u32 = 4 * Params::DEFAULT_T_COST;
const MAX_P_COST: u32 = 4;

/// Admission to the hashing threads, and the threads.
#[derive(Debug)]
pub(crate) struct Hashing {
    slots: Arc<tokio::sync::Semaphore>,
    queue: Arc<tokio::sync::Semaphore>,
    jobs: std::sync::mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Hashing {
    /// Starts `slots` hashing threads; they end when the platform is dropped.
    pub(crate) fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        let (jobs, incoming) = std::sync::mpsc::channel::<Job>();
        let incoming = Arc::new(Mutex::new(incoming));
        for n in 0..slots {
            let incoming = incoming.clone();
            let started = std::thread::Builder::new()
                .name(format!("password-hashing-{n}"))
                .spawn(move || loop {
                    let job = match incoming.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a password-hashing thread");
            }
        }
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            queue: Arc::new(tokio::sync::Semaphore::new(slots * QUEUE_PER_SLOT)),
            jobs,
        }
    }

    /// A hashing slot, or `Overloaded` when the queue is full or the wait runs out.
    pub(crate) async fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
        let refused = AppError::Overloaded {
            what: "password checks",
            retry_after: RETRY_AFTER,
        };
        let Ok(_place) = self.queue.clone().try_acquire_owned() else {
            return Err(refused);
        };
        match tokio::time::timeout(QUEUE_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(refused),
        }
    }

    /// Runs `work` on a hashing thread in the given slot, which it holds until the work is
    /// done, even if the caller goes away meanwhile.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        slot: tokio::sync::OwnedSemaphorePermit,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _slot = slot;
            let _ = done.send(work());
        });
        self.jobs
            .send(job)
            .map_err(|_| AppError::Internal("the password-hashing threads are gone".into()))?;
        result
            .await
            .map_err(|_| AppError::Internal("a password-hashing job was lost".into()))
    }
}

thread_local! {
    /// Argon2's memory, kept by each hashing thread across hashes.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` over `blocks` blocks of this thread's Argon2 memory. Memory beyond what this
/// server's own hashes need is given back afterwards.
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        let result = f(&mut memory[..blocks]);
        let own = Params::default().block_count();
        if memory.len() > own {
            memory.truncate(own);
            memory.shrink_to_fit();
        }
        result
    })
}

/// The Argon2id hash of `password` with this server's parameters, in PHC string form.
pub(crate) fn hash(password: &[u8], salt: &SaltString) -> Result<String, String> {
    let params = Params::default();
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| e.to_string())?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(params.block_count(), |memory| {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(password, salt_bytes, &mut out, memory)
    })
    .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches a stored PHC hash; compared in constant time. A hash that does
/// not parse, or asks for more than [`MAX_M_COST`] and the like, matches nothing.
pub(crate) fn verify(password: &[u8], stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let Ok(version) = hash.version.map(Version::try_from).transpose() else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST || params.t_cost() > MAX_T_COST || params.p_cost() > MAX_P_COST
    {
        tracing::warn!("a stored password hash asks for more than this server spends on one");
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let computed = with_memory(params.block_count(), |memory| {
        Argon2::new(algorithm, version.unwrap_or_default(), params.clone())
            .hash_password_into_with_memory(password, salt, &mut out, memory)
    });
    computed.is_ok() && bool::from(out.ct_eq(expected.as_bytes()))
}

/// A hash of no one's password, with the real parameters: checking an unknown username
/// against it costs what checking a real one does.
pub(crate) fn stand_in() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::encode_b64(b"stand-in-salt-16").expect("a valid salt");
        hash(b"no user has this password", &salt).expect("hashing a constant")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher;

    #[test]
    fn hashes_verify_and_match_the_reference_implementation() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let ours = hash(b"correct horse battery staple", &salt).unwrap();
        let reference = Argon2::default()
            .hash_password(b"correct horse battery staple", &salt)
            .unwrap()
            .to_string();
        assert_eq!(ours, reference);
        assert!(verify(b"correct horse battery staple", &ours));
        assert!(!verify(b"correct horse battery stapler", &ours));
        assert!(!verify(b"x", "not a hash"));
    }

    #[test]
    fn a_stored_hash_asking_for_too_much_matches_nothing() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let costly = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 5, None).unwrap(),
        )
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string();
        assert!(!verify(b"pw", &costly));
    }
}
