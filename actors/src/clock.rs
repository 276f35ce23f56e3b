//! The one place that reads the wall clock.
//!
//! Handlers read `now` once and pass it down. Tests move an engine's clock forward instead of
//! sleeping, so a five-minute lock can end in a millisecond.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

/// Wall-clock seconds with an adjustable offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset: Arc<AtomicI64>,
}

impl Clock {
    /// Epoch seconds now.
    #[allow(clippy::disallowed_methods)] // the single sanctioned clock read
    pub fn now(&self) -> u64 {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        real.saturating_add_signed(self.offset.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every engine sharing it) forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}
