// SPDX-License-Identifier: MPL-2.0
//! Stall tracking of the media download in flight.

use crate::abr::estimator::OUTAGE_TTFB_S;

/// The progress of the media download in flight, from [`QualitySelector::check_abandon`]'s
/// calls: a link that goes down while a segment downloads shows as bytes that stop coming, not
/// as a late first byte, and must count as an outage rather than as a slow link.
///
/// [`QualitySelector::check_abandon`]: super::QualitySelector::check_abandon
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Progress {
    pub(super) segment: usize,
    pub(super) rep: usize,
    pub(super) bytes_total: u64,
    pub(super) ttfb_s: f64,
    /// Bytes received when last seen growing, and when (seconds since the request).
    pub(super) bytes: u64,
    pub(super) at_s: f64,
    /// Stalls that ended (bytes came again), seconds in all.
    pub(super) stalled_s: f64,
}

impl Progress {
    /// Bit rate while bytes flowed, before the last sighting (None before any).
    pub(super) fn rate_bps(&self) -> Option<f64> {
        let t = self.at_s - self.ttfb_s;
        (self.bytes > 0 && t > 0.0).then(|| self.bytes as f64 * 8.0 / t)
    }

    /// How much of the time from the last sighting to `now_s`, in which `new_bytes` came, the
    /// link was stalled: the time beyond what those bytes take at the earlier rate, if longer
    /// than an outage's threshold (sightings far apart are not stalls by themselves).
    pub(super) fn gap_stall(&self, now_s: f64, new_bytes: u64) -> f64 {
        let gap = now_s - self.at_s;
        let flowing = self.rate_bps().map_or(0.0, |r| new_bytes as f64 * 8.0 / r);
        let stall = gap - flowing;
        if stall > OUTAGE_TTFB_S {
            stall
        } else {
            0.0
        }
    }
}
