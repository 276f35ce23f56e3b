//! The storage trait the domain depends on.

use std::{future::Future, pin::Pin};

use crate::{Batch, Record, Result, Space};

/// A pending commit: resolves once the batch is applied and, in sync mode, on disk.
pub type Commit = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// Counters that show how the writer is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches committed.
    pub batches: u64,
    /// fsyncs issued; batches / fsyncs is the group-commit factor.
    pub fsyncs: u64,
    /// A write failed: the store refuses writes until restarted.
    pub poisoned: bool,
}

/// A durable key-value store with atomic multi-space batches.
///
/// Implementations promise: when the future from [`Store::commit`] resolves `Ok`, every write in
/// the batch is visible to [`Store::get`] and, unless the store was opened in a buffered mode,
/// survives a crash of the process or the machine.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Reads one value.
    ///
    /// # Errors
    ///
    /// Returns the engine's error if the read fails.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Reads every pair whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    ///
    /// Returns the engine's error if the scan fails.
    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Reads the last `limit` pairs whose key starts with `prefix`, in reverse key order (the
    /// greatest key first). With time-ordered keys this is "the newest `limit`", read without
    /// touching the older ones.
    ///
    /// The default reads the whole prefix; an engine with reverse iterators overrides it.
    ///
    /// # Errors
    ///
    /// Returns the engine's error if the scan fails.
    fn scan_prefix_rev(
        &self,
        space: Space,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut pairs = self.scan_prefix(space, prefix)?;
        pairs.reverse();
        pairs.truncate(limit);
        Ok(pairs)
    }

    /// Submits a batch; nothing in it is acknowledged before the returned future resolves.
    /// Batches are applied in submission order, so an empty batch is a barrier.
    ///
    /// IMPORTANT: the batch is submitted by this call, not when the future is first polled, and
    /// dropping the future does not withdraw it.
    fn commit(&self, batch: Batch) -> Commit;

    /// Queues a batch that nobody waits for (the audit log): it is applied in submission order
    /// like any other, but asks for no fsync of its own. It becomes durable with the next
    /// [`Store::commit`] that does, or shortly after the writer falls idle. A failure is not
    /// reported to anyone; the store logs it and refuses writes from then on.
    ///
    /// The default commits and drops the future, which an engine without group commit may
    /// keep.
    fn submit(&self, batch: Batch) {
        drop(self.commit(batch));
    }

    /// Writer counters.
    fn stats(&self) -> StoreStats;

    /// Makes everything written so far durable and stops accepting writes.
    ///
    /// # Errors
    ///
    /// Returns the engine's error if the final flush fails.
    fn close(&self) -> Result<()>;
}

/// Typed reads on top of any [`Store`].
pub trait StoreExt {
    /// Reads and decodes one record.
    ///
    /// # Errors
    ///
    /// Returns the engine's or the codec's error.
    fn load<R: Record>(&self, space: Space, key: &[u8]) -> Result<Option<R>>;
}

impl<S: Store + ?Sized> StoreExt for S {
    fn load<R: Record>(&self, space: Space, key: &[u8]) -> Result<Option<R>> {
        self.get(space, key)?
            .map(|bytes| R::decode(&bytes))
            .transpose()
    }
}
