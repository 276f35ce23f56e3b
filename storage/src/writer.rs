//! The group-commit writer: one thread applies every submitted batch, then makes all of them
//! durable with a single fsync before it releases any of their waiters.
//!
//! Batches that arrive while an fsync is running queue up and share the next one, so the
//! number of fsyncs per second stays near 1 / fsync latency however many actors write.
//!
//! A batch without a waiter (`Store::submit`) asks for no fsync of its own: it is applied in
//! its turn and becomes durable with the next group that has a waiter, or after [`IDLE_SYNC`]
//! if none comes.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    time::Duration,
};

use fjall::{Database, Keyspace, PersistMode};
use tokio::sync::oneshot;

use crate::{Batch, Durability, Error, Op, Result, Space};

/// Most batches applied under one fsync; bounds the latency of the first waiter.
const MAX_GROUP: usize = 1024;

/// Longest time waiterless batches stay applied but not fsynced while nothing else is written.
pub(crate) const IDLE_SYNC: Duration = Duration::from_millis(100);

pub(crate) struct Request {
    pub(crate) batch: Batch,
    /// `None` for a submitted batch: nobody waits, so it does not force an fsync.
    pub(crate) done: Option<oneshot::Sender<Result<()>>>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) poisoned: AtomicBool,
}

pub(crate) struct Writer {
    pub(crate) db: Database,
    pub(crate) spaces: Vec<Keyspace>,
    pub(crate) durability: Durability,
    pub(crate) counters: Arc<Counters>,
}

impl Writer {
    /// Runs until every sender is gone, then makes the journal durable one last time.
    pub(crate) fn run(self, requests: &mpsc::Receiver<Request>) {
        let mut group = Vec::with_capacity(64);
        // Waiterless batches are applied but not yet fsynced.
        let mut unsynced = false;
        loop {
            let next = if unsynced {
                requests.recv_timeout(IDLE_SYNC)
            } else {
                requests.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            let first = match next {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    // A failure poisons the store; the next waiter hears of it.
                    let _ = self.sync_group();
                    unsynced = false;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            group.push(first);
            while group.len() < MAX_GROUP {
                match requests.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }

            let results: Vec<Result<()>> = group
                .iter_mut()
                .map(|r| self.apply(std::mem::take(&mut r.batch)))
                .collect();

            let waited = group.iter().any(|r| r.done.is_some());
            let synced = if waited {
                unsynced = false;
                self.sync_group()
            } else {
                unsynced = true;
                Ok(())
            };

            for (request, result) in group.drain(..).zip(results) {
                let outcome = match (&synced, result) {
                    (Err(_), _) => Err(Error::Poisoned),
                    (Ok(()), r) => r,
                };
                if let Some(done) = request.done {
                    let _ = done.send(outcome);
                }
            }
        }
        if let Err(err) = self.db.persist(PersistMode::SyncAll) {
            tracing::error!(err = ?err, "final flush of the journal failed");
        }
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        if self.counters.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        if batch.is_empty() {
            return Ok(());
        }

        let mut out = self.db.batch();
        for op in batch.into_ops() {
            match op {
                Op::Put { space, key, value } => out.insert(self.space(space), key, value),
                Op::Delete { space, key } => out.remove(self.space(space), key),
            }
        }

        out.commit().inspect_err(|err| {
            tracing::error!(err = ?err, "batch commit failed; the store refuses further writes");
            self.counters.poisoned.store(true, Ordering::Release);
        })?;
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// IMPORTANT: this is the only place that makes writes durable in sync mode, and it runs
    /// before any waiter of the group is answered.
    fn sync_group(&self) -> Result<()> {
        if self.durability == Durability::Buffered {
            return Ok(());
        }
        self.db.persist(PersistMode::SyncData).map_err(|err| {
            tracing::error!(err = ?err, "fsync failed; the store refuses further writes");
            self.counters.poisoned.store(true, Ordering::Release);
            Error::from(err)
        })?;
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn space(&self, space: Space) -> &Keyspace {
        // The vector is built from Space::ALL in order, so every index is present.
        #[allow(clippy::indexing_slicing)]
        &self.spaces[space.index()]
    }
}
