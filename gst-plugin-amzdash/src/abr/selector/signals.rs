// SPDX-License-Identifier: MPL-2.0
//! What the selector is told (buffer level, downloads, the download in flight, the buffered
//! segments) and what it answers (a choice and its reason, fetch advice, stats, the estimate to
//! persist).

use std::time::Duration;

/// What is buffered ahead of the playback position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BufferLevel {
    /// Media time downloaded and not yet played.
    pub ahead: Duration,
    /// Bytes of it.
    pub bytes: u64,
    /// Whether audio is playing: false before the first play and while rebuffering. (Before the
    /// first play, segments fetched while the first one prerolls are chosen as if playing.)
    pub playing: bool,
}

/// One finished download (media, init or index), as measured by the element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Download {
    pub bytes: u64,
    /// From sending the request to the first body byte.
    pub ttfb: Duration,
    /// From sending the request to the last body byte.
    pub total: Duration,
}

/// A media segment download in progress, for [`QualitySelector::check_abandon`].
///
/// [`QualitySelector::check_abandon`]: super::QualitySelector::check_abandon
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InFlight {
    pub rep: usize,
    pub segment: usize,
    pub bytes_total: u64,
    pub bytes_received: u64,
    /// Since the request was sent.
    pub elapsed: Duration,
    /// Request to first byte, once it came.
    pub ttfb: Option<Duration>,
}

/// A buffered segment, for [`QualitySelector::upgrade`](super::QualitySelector::upgrade).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Buffered {
    pub segment: usize,
    pub rep: usize,
    /// How soon its first byte goes downstream, after which it can no longer be swapped
    /// (zero: it already is, e.g. the segment playing).
    pub due_in: Duration,
}

/// Why a candidate was chosen (for logs and stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The first segment: the best one expected within the start-up budget.
    Startup,
    /// Rebuffering: the fastest way back to playing.
    Rebuffer,
    /// The throughput rule (with its up/keep hysteresis) decided.
    Throughput,
    /// A healthy buffer kept the current quality (BOLA, or the no-down-switch level).
    BufferHold,
    /// Up-switch refused: too little buffered.
    LowBuffer,
    /// Buffer first: capped to what fills the buffer quickly.
    BufferBuild,
    /// The rest of the track fits at this quality before every deadline.
    EndGame,
    /// A cross-codec up-switch was refused (not enough headroom, or too soon after the last).
    CodecCost,
    /// Lowered so that the segment arrives before the buffer runs dry.
    Deadline,
    /// The download in flight would arrive too late: fetch this one instead.
    Abandon,
    /// Everything is fetched and the link is idle: fetch a buffered segment again, better.
    Upgrade,
}

/// The selector's answer: an index into [`Ladder::candidates`] and why.
///
/// [`Ladder::candidates`]: crate::abr::Ladder::candidates
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub rep: usize,
    pub reason: Reason,
}

/// Whether to start another download now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAdvice {
    Fetch,
    /// The buffer is full: wait until it drains below the resume level.
    Pause,
}

/// Counters and estimates for the element's `stats` property.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AbrStats {
    pub current: Option<usize>,
    pub estimate_bps: Option<f64>,
    pub latency_s: Option<f64>,
    pub switches: u32,
    pub up_switches: u32,
    pub down_switches: u32,
    /// Switches that changed the codec family.
    pub codec_switches: u32,
    pub stalls: u32,
    pub abandons: u32,
    /// Buffered segments fetched again at a better quality.
    pub upgrades: u32,
}

/// What to persist for the next session's start ([`QualitySelector::with_previous`]).
///
/// [`QualitySelector::with_previous`]: super::QualitySelector::with_previous
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionEstimate {
    pub bps: f64,
    pub latency: Duration,
}
