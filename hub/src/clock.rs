//! The node's clock: wall time plus an offset that tests (and simulations of a whole network in
//! one process) can advance. HTLC expiries are absolute unix seconds, and the smallest expiry
//! delta is almost half an hour (`htlc::forward::MIN_EXPIRY_DELTA_SECS`), so expiry scenarios
//! are tested by moving this clock, never by waiting.

use htlc::Expiry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall time plus a shared, only-growing offset. Clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset: Arc<AtomicU64>,
}

impl Clock {
    /// The system clock, no offset.
    pub fn system() -> Self {
        Clock::default()
    }

    /// Now, in unix seconds.
    pub fn now(&self) -> Expiry {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Expiry(wall.saturating_add(self.offset.load(Ordering::Relaxed)))
    }

    /// Move this clock (and every clone) `secs` seconds forward.
    pub fn advance(&self, secs: u64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}
