//! The event log table: appended to, numbered, inside other writes' transactions; read by seq.
//!
//! A write numbers its events as the last thing before it commits, under a transaction-scoped
//! advisory lock held to the commit: writes on every replica commit in the order of their
//! numbers, so a reader that has seen `seq` N has seen everything below it. Each store handle
//! keeps what its own writes numbered in an outbox, in that order, for `EventLog::sequence` to
//! hand to the relay without reading it back.
//!
//! Writes wait for the lock in PostgreSQL's queue, not in one of their own: the moment one
//! commits, the next is numbered, without a round trip to this process between. A write takes
//! its place in the outbox as soon as it is numbered, before it commits; the lock it holds
//! meanwhile keeps every other write from being numbered until it has committed, so places are
//! taken in the order of the numbers. What comes after a write still committing waits for it.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{AgentId, Event, EventKind, NewEvent, TaskId};
use ports::{EventLog, RepoError};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{corrupt, repo_error};
use crate::rows::ReadRows;
use crate::PgStore;

/// The key of the advisory lock under which events are numbered, held to the commit.
const RELAY_LOCK: i64 = 0x4556_454e_5452_454c; // "EVENTREL"

/// Events an outbox keeps in memory; beyond them, what is queued is remembered only by its
/// numbers and read back from the log when handed over.
const KEPT_EVENTS: usize = 50_000;

/// How many times reading a range back may fail before it is given up (with a warning: the
/// events stay in the log for every reader; only this replica's live delivery skips them).
const READ_BACK_ATTEMPTS: u8 = 3;

/// What one store handle's writes numbered, waiting to be handed over in `seq` order.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: std::sync::Mutex<Queue>,
    /// Rung whenever a write still committing learns its outcome (see [`Place`]).
    settled_place: tokio::sync::Notify,
    /// The id the next [`Place`] takes: places are told apart by it, not by their numbers,
    /// since a write that rolled back leaves its numbers to the next.
    places: std::sync::atomic::AtomicU64,
    /// Held while events are handed over; the highest `seq` handed over so far.
    handed: tokio::sync::Mutex<i64>,
    /// Commits running as tasks of their own (see [`commit_with`]), and a bell rung whenever
    /// the last of them is done.
    committing: std::sync::atomic::AtomicUsize,
    settled: tokio::sync::Notify,
}

/// One commit counted in [`Outbox::committing`] until it is dropped, however its task ends.
struct Committing(Arc<Outbox>);

impl Committing {
    fn start(outbox: Arc<Outbox>) -> Self {
        outbox
            .committing
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(outbox)
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        let left = self
            .0
            .committing
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if left == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

impl Outbox {
    /// Waits until no commit begun so far is still running: each has queued its events, or
    /// failed.
    pub(crate) async fn settled(&self) {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.committing.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            settled.await;
        }
    }
}

/// The writes waiting, oldest first, and how many events they keep in memory.
#[derive(Debug, Default)]
struct Queue {
    writes: VecDeque<Numbered>,
    kept: usize,
}

impl Queue {
    fn kept_by(numbered: &Numbered) -> usize {
        match numbered {
            Numbered::Committed(events) => events.len(),
            Numbered::Committing { .. } | Numbered::ReadBack { .. } => 0,
        }
    }

    fn numbers(numbered: &Numbered) -> Option<(i64, i64)> {
        match numbered {
            Numbered::Committed(events) => Some((events.front()?.seq, events.back()?.seq)),
            Numbered::Committing { first, last, .. } | Numbered::ReadBack { first, last, .. } => {
                Some((*first, *last))
            }
        }
    }

    fn push_back(&mut self, numbered: Numbered) {
        self.kept += Self::kept_by(&numbered);
        self.writes.push_back(numbered);
        self.keep_within_bounds();
    }

    /// Puts a committing write's outcome in its place. A place no longer there was taken into
    /// a range read back from the log, which waits for the write's commit by itself.
    fn settle(&mut self, place: u64, outcome: Numbered) {
        let place = self
            .writes
            .iter_mut()
            .find(|w| matches!(w, Numbered::Committing { place: p, .. } if *p == place));
        if let Some(place) = place {
            self.kept += Self::kept_by(&outcome);
            *place = outcome;
            self.keep_within_bounds();
        }
    }

    /// What to do with the front of the queue: a write still committing is waited for only
    /// when a write behind it is ready, which must not be handed over before it.
    fn next(&mut self) -> Next {
        match self.writes.front() {
            None => Next::Done,
            Some(Numbered::Committing { .. }) => {
                let ready = |w: &Numbered| !matches!(w, Numbered::Committing { .. });
                if self.writes.iter().any(ready) {
                    Next::Wait
                } else {
                    Next::Done
                }
            }
            Some(_) => self.pop_front().map_or(Next::Done, Next::Take),
        }
    }

    fn keep_within_bounds(&mut self) {
        if self.kept > KEPT_EVENTS {
            // Nobody has handed events over for a while: all that waits becomes one range read
            // back from the log (with any other replica's events between, which are as real,
            // and those of writes still committing, which reading back waits for).
            let ranges: Vec<(i64, i64)> = self.writes.iter().filter_map(Self::numbers).collect();
            let first = ranges.iter().map(|r| r.0).min();
            let last = ranges.iter().map(|r| r.1).max();
            self.writes.clear();
            self.kept = 0;
            if let (Some(first), Some(last)) = (first, last) {
                self.writes.push_back(Numbered::ReadBack {
                    first,
                    last,
                    failed: 0,
                });
            }
        }
    }

    fn push_front(&mut self, numbered: Numbered) {
        self.kept += Self::kept_by(&numbered);
        self.writes.push_front(numbered);
    }

    fn pop_front(&mut self) -> Option<Numbered> {
        let next = self.writes.pop_front()?;
        self.kept -= Self::kept_by(&next);
        Some(next)
    }
}

/// What [`Queue::next`] found at the front.
enum Next {
    Take(Numbered),
    Wait,
    Done,
}

/// One write's numbered events.
#[derive(Debug)]
enum Numbered {
    /// Numbers of a write still committing: its place, until it knows its outcome.
    Committing {
        first: i64,
        last: i64,
        place: u64,
    },
    Committed(VecDeque<Event>),
    /// Numbers read back from the log when handed over: a write whose commit failed without
    /// saying whether it took effect (they may be another write's if it did not), or writes
    /// whose events were not kept.
    ReadBack {
        first: i64,
        last: i64,
        failed: u8,
    },
}

/// A numbered write's place in its outbox, from numbering to commit. Settled with the
/// write's outcome; dropped unsettled (its task stopped or its future was dropped), the
/// numbers are read back from the log, which tells whether they were committed.
struct Place {
    outbox: Arc<Outbox>,
    place: u64,
    first: i64,
    last: i64,
    settled: bool,
}

impl Place {
    /// Takes the place of numbers `first..=last`, just numbered, before their write commits.
    fn take(outbox: Arc<Outbox>, first: i64, last: i64) -> Self {
        let place = outbox
            .places
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        outbox.push(Numbered::Committing { first, last, place });
        Self {
            outbox,
            place,
            first,
            last,
            settled: false,
        }
    }

    fn settle(mut self, outcome: Numbered) {
        self.settled = true;
        self.put(outcome);
    }

    fn put(&self, outcome: Numbered) {
        self.outbox
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .settle(self.place, outcome);
        self.outbox.settled_place.notify_waiters();
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if !self.settled {
            self.put(Numbered::ReadBack {
                first: self.first,
                last: self.last,
                failed: 0,
            });
        }
    }
}

impl Outbox {
    fn push(&self, numbered: Numbered) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(numbered);
    }

    fn push_front(&self, numbered: Numbered) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_front(numbered);
    }

    /// Takes up to `limit` events from the front of the queue, in order, each once.
    async fn hand_over(&self, store: &PgStore, limit: u32) -> Result<Vec<Event>, RepoError> {
        let mut handed = self.handed.lock().await;
        let mut out = Vec::new();
        while out.len() < limit as usize {
            // Listening before looking, so a write settled meanwhile is not missed.
            let settled = self.settled_place.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let next = self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .next();
            let next = match next {
                Next::Take(next) => next,
                Next::Wait => {
                    settled.await;
                    continue;
                }
                Next::Done => break,
            };
            let room = limit as usize - out.len();
            let found = match next {
                // `Queue::next` hands out no write still committing; reading its numbers back
                // would wait for its commit.
                Numbered::Committing { first, last, .. } => {
                    self.read_back(store, first, last, 0, room).await
                }
                Numbered::Committed(mut events) => {
                    if events.len() > room {
                        let rest = events.split_off(room);
                        self.push_front(Numbered::Committed(rest));
                    }
                    Ok(Vec::from(events))
                }
                Numbered::ReadBack {
                    first,
                    last,
                    failed,
                } => self.read_back(store, first, last, failed, room).await,
            };
            // A range that could not be read waits at the front; what was taken before it
            // goes now, since it counts as handed over.
            let found = match found {
                Ok(found) => found,
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            };
            // Numbers read back may be handed over again by the write that took them after a
            // rollback: each goes once.
            for event in found {
                if event.seq > *handed {
                    *handed = event.seq;
                    out.push(event);
                }
            }
        }
        Ok(out)
    }

    /// Up to `room` events numbered `first..=last`, read back from the log; what did not fit,
    /// or what could not be read yet, waits at the front for the next call.
    async fn read_back(
        &self,
        store: &PgStore,
        first: i64,
        last: i64,
        failed: u8,
        room: usize,
    ) -> Result<Vec<Event>, RepoError> {
        match read_back(store, first, last, room).await {
            Ok(found) => {
                let through = found.last().map_or(last, |e| e.seq);
                if found.len() == room && through < last {
                    self.push_front(Numbered::ReadBack {
                        first: through + 1,
                        last,
                        failed: 0,
                    });
                }
                Ok(found)
            }
            Err(e) if failed + 1 < READ_BACK_ATTEMPTS => {
                self.push_front(Numbered::ReadBack {
                    first,
                    last,
                    failed: failed + 1,
                });
                Err(e)
            }
            Err(e) => {
                tracing::warn!(first, last, error = %e,
                    "cannot read numbered events back from the log; not publishing them");
                Ok(Vec::new())
            }
        }
    }
}

/// The first `limit` numbered events from `first` to `last`, in order, once no write that may
/// still be committing numbers holds the numbering lock.
async fn read_back(
    store: &PgStore,
    first: i64,
    last: i64,
    limit: usize,
) -> Result<Vec<Event>, RepoError> {
    let mut tx = store.pool().begin().await.map_err(repo_error)?;
    crate::advisory_lock(&mut tx, RELAY_LOCK, crate::Hold::Shared).await?;
    let events = sqlx::query(
        "SELECT seq, type, agent_id, task_id, data, created_at FROM events
         WHERE seq BETWEEN $1 AND $2 ORDER BY seq LIMIT $3",
    )
    .bind(first)
    .bind(last)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .read_all(&mut *tx, event_from_row)
    .await?;
    tx.commit().await.map_err(repo_error)?;
    Ok(events)
}

/// The end of every write: numbers `events` and stores them in the write's transaction, and
/// commits it, so the events exist if and only if the change does. Returns the events.
///
/// Numbering, commit and queueing run as a task of their own: a request dropped meanwhile (its
/// client gone) cannot leave a committed write's events out of the outbox.
pub(crate) async fn commit_with(
    store: &PgStore,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    events: Vec<NewEvent>,
) -> Result<Vec<NewEvent>, RepoError> {
    if events.is_empty() {
        tx.commit().await.map_err(repo_error)?;
        return Ok(events);
    }
    let outbox = store.outbox.clone();
    // Counted before the task exists, so a caller dropped from here on is still waited for.
    let committing = Committing::start(outbox.clone());
    let numbered = tokio::spawn(async move {
        let _committing = committing;
        // On failure the transaction rolls back as it is dropped: nothing was numbered.
        let top = append(&mut tx, &events).await?;
        let numbered = |n: usize| top + i64::try_from(n).unwrap_or(i64::MAX);
        let (first, last) = (numbered(1), numbered(events.len()));
        let place = Place::take(outbox, first, last);
        match tx.commit().await {
            Ok(()) => {
                let stored = events
                    .iter()
                    .enumerate()
                    .map(|(n, e)| Event::stored(numbered(n + 1), e.clone()))
                    .collect();
                place.settle(Numbered::Committed(stored));
                Ok(events)
            }
            Err(e) => {
                place.settle(Numbered::ReadBack {
                    first,
                    last,
                    failed: 0,
                });
                Err(repo_error(e))
            }
        }
    });
    numbered
        .await
        .map_err(|e| RepoError::Unavailable(format!("the commit stopped: {e}")))?
}

/// Numbers `events` after the highest `seq` committed and inserts them, after taking the
/// numbering lock (held to the end of the transaction), in one call (`append_events`, see its
/// migration): the last statement of a write. Returns the highest `seq` before them.
async fn append(conn: &mut PgConnection, events: &[NewEvent]) -> Result<i64, RepoError> {
    // One array per column, in PostgreSQL's binary format (see `task_rows::TaskColumns`).
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let channels: Vec<&str> = events.iter().map(|e| e.kind.channel().as_str()).collect();
    let agents: Vec<Option<uuid::Uuid>> = events
        .iter()
        .map(|e| e.agent_id.map(|a| a.as_uuid()))
        .collect();
    let tasks: Vec<Option<uuid::Uuid>> = events
        .iter()
        .map(|e| e.task_id.map(|t| t.as_uuid()))
        .collect();
    let payloads: Vec<sqlx::types::Json<&Value>> =
        events.iter().map(|e| sqlx::types::Json(&*e.data)).collect();
    let stamps: Vec<chrono::DateTime<chrono::Utc>> = events.iter().map(|e| e.timestamp).collect();
    sqlx::query_scalar(
        "SELECT append_events($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::jsonb[],
                              $6::timestamptz[])",
    )
    .bind(kinds)
    .bind(channels)
    .bind(agents)
    .bind(tasks)
    .bind(payloads)
    .bind(stamps)
    .fetch_one(&mut *conn)
    .await
    .map_err(repo_error)
}

impl PgStore {
    /// Numbers events that earlier versions stored without a number and their relay left
    /// behind (a replica stopped between its commit and its relay), and queues them.
    async fn number_left_behind(&self, limit: u32) -> Result<(), RepoError> {
        let waiting: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE seq IS NULL)")
                .fetch_one(self.pool())
                .await
                .map_err(repo_error)?;
        if !waiting {
            return Ok(());
        }
        let mut tx = self.pool().begin().await.map_err(repo_error)?;
        crate::advisory_lock(&mut tx, RELAY_LOCK, crate::Hold::Exclusive).await?;
        // Under the lock no other write numbers events, so the next numbers follow the highest
        // one given, without gaps; unnumbered rows of transactions still open are invisible and
        // wait. The rows are found by `id` among the unnumbered ones (the index of those; `id`
        // has no other, see migration 0025).
        let mut events = sqlx::query(
            "WITH top AS (SELECT coalesce(max(seq), 0) AS seq FROM events),
                  next AS (
                      SELECT id, row_number() OVER (ORDER BY id) AS n
                      FROM (SELECT id FROM events WHERE seq IS NULL ORDER BY id LIMIT $1
                            FOR UPDATE) AS waiting
                  )
             UPDATE events AS e SET seq = top.seq + next.n
             FROM next, top
             WHERE e.id = next.id AND e.seq IS NULL
             RETURNING e.seq, e.type, e.agent_id, e.task_id, e.data, e.created_at",
        )
        .bind(i64::from(limit))
        .read_all(&mut *tx, event_from_row)
        .await?;
        events.sort_by_key(|e| e.seq);
        let (Some(first), Some(last)) =
            (events.first().map(|e| e.seq), events.last().map(|e| e.seq))
        else {
            return tx.commit().await.map_err(repo_error);
        };
        let place = Place::take(self.outbox.clone(), first, last);
        match tx.commit().await {
            Ok(()) => {
                place.settle(Numbered::Committed(events.into()));
                Ok(())
            }
            Err(e) => {
                place.settle(Numbered::ReadBack {
                    first,
                    last,
                    failed: 0,
                });
                Err(repo_error(e))
            }
        }
    }
}

fn event_from_row(row: &PgRow) -> Result<Event, RepoError> {
    let kind: String = row.try_get("type").map_err(repo_error)?;
    Ok(Event {
        seq: row.try_get("seq").map_err(repo_error)?,
        kind: kind
            .parse::<EventKind>()
            .map_err(|e| corrupt("event type", e))?,
        agent_id: row
            .try_get::<Option<Uuid>, _>("agent_id")
            .map_err(repo_error)?
            .map(AgentId),
        task_id: row
            .try_get::<Option<Uuid>, _>("task_id")
            .map_err(repo_error)?
            .map(TaskId),
        data: std::sync::Arc::new(row.try_get("data").map_err(repo_error)?),
        timestamp: row
            .try_get::<DateTime<Utc>, _>("created_at")
            .map_err(repo_error)?,
    })
}

#[async_trait]
impl EventLog for PgStore {
    async fn sequence(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        // What this handle's writes numbered is handed over whether or not this works.
        if let Err(e) = self.number_left_behind(limit).await {
            tracing::warn!(error = %e, "cannot number events left behind now; will try again");
        }
        self.outbox().hand_over(self, limit).await
    }

    async fn hand_over(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        self.outbox().hand_over(self, limit).await
    }

    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, RepoError> {
        sqlx::query(
            "SELECT seq, type, agent_id, task_id, data, created_at FROM events
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::from(limit))
        .read_all(self.pool(), event_from_row)
        .await
    }

    async fn task_events(&self, task: TaskId, limit: u32) -> Result<Vec<Event>, RepoError> {
        sqlx::query(
            "SELECT seq, type, agent_id, task_id, data, created_at FROM events
             WHERE task_id = $1 AND seq IS NOT NULL ORDER BY seq LIMIT $2",
        )
        .bind(task.as_uuid())
        .bind(i64::from(limit))
        .read_all(self.pool(), event_from_row)
        .await
    }

    async fn prune(&self, older_than: DateTime<Utc>, keep_newest: u64) -> Result<u64, RepoError> {
        let keep = i64::try_from(keep_newest.max(1)).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "WITH top AS (SELECT max(seq) AS seq FROM events)
             DELETE FROM events USING top
             WHERE events.seq < top.seq
               AND (events.created_at < $1 OR events.seq <= top.seq - $2)",
        )
        .bind(older_than)
        .bind(keep)
        .execute(self.pool())
        .await
        .map_err(repo_error)?;
        Ok(done.rows_affected())
    }

    async fn latest_events(&self, limit: u32) -> Result<Vec<Event>, RepoError> {
        sqlx::query(
            "SELECT seq, type, agent_id, task_id, data, created_at FROM events
             WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .read_all(self.pool(), event_from_row)
        .await
    }

    async fn log_id(&self) -> Result<uuid::Uuid, RepoError> {
        sqlx::query_scalar("SELECT id FROM deployment")
            .fetch_one(self.pool())
            .await
            .map_err(repo_error)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn committed(first: i64, last: i64) -> Numbered {
        let at = Utc::now();
        Numbered::Committed(
            (first..=last)
                .map(|seq| {
                    let new = NewEvent::about_nothing(EventKind::ResourceUpdated, Value::Null, at);
                    Event::stored(seq, new)
                })
                .collect(),
        )
    }

    fn committing(first: i64, last: i64, place: u64) -> Numbered {
        Numbered::Committing { first, last, place }
    }

    fn numbers(next: Next) -> Option<(i64, i64)> {
        match next {
            Next::Take(numbered) => Queue::numbers(&numbered),
            Next::Wait | Next::Done => None,
        }
    }

    #[tokio::test]
    async fn a_hand_over_waits_for_a_write_committing_ahead_of_a_ready_one() {
        // Nothing here reads the log: the store's pool never connects.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://127.0.0.1:1/unused")
            .unwrap();
        let store = PgStore {
            pool,
            outbox: Arc::default(),
        };
        let outbox = store.outbox.clone();
        let ahead = Place::take(outbox.clone(), 1, 2);
        Place::take(outbox.clone(), 3, 3).settle(committed(3, 3));

        let handing = outbox.hand_over(&store, 10);
        tokio::pin!(handing);
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(handing.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "3 was handed over before 1..2");

        ahead.settle(committed(1, 2));
        let handed = handing.await.unwrap();
        let seqs: Vec<i64> = handed.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn a_ready_write_waits_for_the_one_still_committing_ahead_of_it() {
        let mut queue = Queue::default();
        queue.push_back(committing(1, 2, 0));
        queue.push_back(committing(3, 3, 1));
        assert!(matches!(queue.next(), Next::Done), "nothing is ready yet");

        queue.settle(1, committed(3, 3));
        assert!(matches!(queue.next(), Next::Wait), "3 must not pass 1..2");

        queue.settle(0, committed(1, 2));
        assert_eq!(numbers(queue.next()), Some((1, 2)));
        assert_eq!(numbers(queue.next()), Some((3, 3)));
        assert!(matches!(queue.next(), Next::Done));
        assert_eq!(queue.kept, 0);
    }

    #[test]
    fn a_write_whose_commit_failed_is_read_back_in_its_place() {
        let mut queue = Queue::default();
        queue.push_back(committing(1, 1, 0));
        queue.push_back(committed(2, 2));
        queue.settle(
            0,
            Numbered::ReadBack {
                first: 1,
                last: 1,
                failed: 0,
            },
        );
        match queue.next() {
            Next::Take(Numbered::ReadBack {
                first: 1, last: 1, ..
            }) => {}
            _ => panic!("the failed write's numbers come first, to be read back"),
        }
        assert_eq!(numbers(queue.next()), Some((2, 2)));
    }

    #[test]
    fn past_its_bound_everything_waiting_is_read_back_as_one_range() {
        let mut queue = Queue::default();
        queue.push_back(committing(1, 1, 0));
        let last = i64::try_from(KEPT_EVENTS).unwrap() + 2;
        queue.push_back(committed(2, last));
        assert_eq!(queue.writes.len(), 1, "{:?}", queue.writes.front());
        match queue.next() {
            Next::Take(Numbered::ReadBack { first, last: l, .. }) => {
                assert_eq!((first, l), (1, last));
            }
            _ => panic!("one range, the committing write's numbers included"),
        }
        // The write settles after its place was folded into the range: nothing changes.
        queue.settle(0, committed(1, 1));
        assert!(queue.writes.is_empty());
        assert_eq!(queue.kept, 0);
    }
}
