//! Group commit: requests that arrive while a group is being written wait in a queue, and the
//! next writer takes them all and writes them in one transaction, so concurrent requests share
//! their commits. Submissions and agents' reports both go through it: reports one group at a
//! time, submissions (independent of each other) up to `Settings::submission_writers` at once.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::PoisonError;

use tokio::sync::oneshot;

/// Requests waiting for the next group commit, and the turns of the groups being written.
#[derive(Debug)]
pub(crate) struct Group<T, R> {
    /// Held by the writers of the groups being committed now.
    turn: tokio::sync::Semaphore,
    queue: std::sync::Mutex<VecDeque<Member<T, R>>>,
}

impl<T, R> Default for Group<T, R> {
    /// One group written at a time.
    fn default() -> Self {
        Self::new(1)
    }
}

impl<T, R> Group<T, R> {
    /// Up to `writers` groups written at once (at least one).
    pub fn new(writers: usize) -> Self {
        Self {
            turn: tokio::sync::Semaphore::new(writers.max(1)),
            queue: std::sync::Mutex::new(VecDeque::new()),
        }
    }
}

/// One request in a group, and where its outcome goes.
#[derive(Debug)]
pub(crate) struct Member<T, R> {
    pub item: T,
    pub reply: Reply<R>,
}

/// Where a request's outcome goes.
#[derive(Debug)]
pub(crate) struct Reply<R>(oneshot::Sender<R>);

impl<R> Reply<R> {
    /// Answers the request (unless it was abandoned meanwhile).
    pub fn answer(self, outcome: R) {
        let _ = self.0.send(outcome);
    }
}

impl<T, R> Group<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    /// Queues `item`, starts `writer` and waits for the item's outcome; `None` if the writer
    /// dropped it unanswered. The writer is a task of its own, so a request dropped while it
    /// waits cannot leave its group unwritten or unanswered. Every request starts one; each
    /// writes whatever is waiting when its turn comes (see [`Group::next`]), and finds nothing
    /// if an earlier one took it all.
    pub async fn join<W>(&self, item: T, writer: W) -> Option<R>
    where
        W: Future<Output = ()> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Member {
                item,
                reply: Reply(reply),
            });
        tokio::spawn(writer);
        outcome.await.ok()
    }

    /// Waits for a turn to write, then takes the next group from the queue as `pick` chooses
    /// (it leaves what it does not take). The turn is held until the guard is dropped: with one
    /// writer, the next group may be written once this one has committed.
    pub async fn next<F>(&self, pick: F) -> (tokio::sync::SemaphorePermit<'_>, Vec<Member<T, R>>)
    where
        F: FnOnce(&mut VecDeque<Member<T, R>>) -> Vec<Member<T, R>>,
    {
        let turn = self.turn.acquire().await.expect("the turn is never closed");
        let group = pick(&mut self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        (turn, group)
    }
}

impl<T, R> Group<T, R> {
    /// Whether any request waits for a group.
    pub fn is_waiting(&self) -> bool {
        !self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// Takes members from the front of `queue` while their sizes add up to at most `most` (always
/// at least one).
pub(crate) fn take_up_to<T, R>(
    queue: &mut VecDeque<Member<T, R>>,
    most: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Member<T, R>> {
    let mut group = Vec::new();
    let mut taken = 0;
    while let Some(next) = queue.front() {
        let n = size(&next.item);
        if !group.is_empty() && taken + n > most {
            break;
        }
        taken += n;
        group.extend(queue.pop_front());
    }
    group
}
