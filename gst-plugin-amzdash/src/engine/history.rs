// SPDX-License-Identifier: MPL-2.0
//! What outlives one stream: the last session's throughput estimates, so that the next track
//! starts where this one left off instead of at the cold default.
//!
//! One [`History`] is shared by whoever holds a clone of it. The element owns one and shares it
//! through a GstContext (`amzdashdemux/history.rs`), so every demuxer of one pipeline (track after
//! track in playbin3) and of any pipeline the application hands the context to starts warm;
//! nothing is process-wide.

use std::sync::{Arc, Mutex};

use crate::abr::SessionEstimate;

#[derive(Debug, Default, Clone, Copy)]
struct Remembered {
    /// The rate estimate used where no selector decides ([`crate::abr::fallback`]).
    estimate_bps: Option<f64>,
    /// The selector's estimate, which seeds the next selector.
    session: Option<SessionEstimate>,
}

/// The estimates a stream leaves for the next one. Cloning shares it.
#[derive(Debug, Default, Clone)]
pub struct History(Arc<Mutex<Remembered>>);

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// The last fallback-rule estimate (bit/s).
    pub fn estimate_bps(&self) -> Option<f64> {
        self.0.lock().unwrap().estimate_bps
    }

    pub fn remember_estimate(&self, bps: f64) {
        self.0.lock().unwrap().estimate_bps = Some(bps);
    }

    /// The last selector's session estimate.
    pub fn session(&self) -> Option<SessionEstimate> {
        self.0.lock().unwrap().session
    }

    pub fn remember_session(&self, session: Option<SessionEstimate>) {
        self.0.lock().unwrap().session = session;
    }

    /// Whether `self` and `other` are one history (clones of each other).
    pub fn is_same(&self, other: &History) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clones_share_and_new_histories_start_cold() {
        let a = History::new();
        let b = a.clone();
        assert!(a.is_same(&b));
        a.remember_estimate(3e6);
        let s = SessionEstimate {
            bps: 2.5e6,
            latency: Duration::from_millis(40),
        };
        b.remember_session(Some(s));
        assert_eq!(b.estimate_bps(), Some(3e6));
        assert_eq!(a.session().map(|s| s.bps), Some(2.5e6));
        let cold = History::new();
        assert!(!cold.is_same(&a));
        assert_eq!(cold.estimate_bps(), None);
        assert!(cold.session().is_none());
    }
}
