// SPDX-License-Identifier: MPL-2.0
//! The selector's tunables and the cold-start estimate.

use std::time::Duration;

use crate::abr::ladder::CodecFamily;

/// The throughput assumed on a cold start (nothing measured, no earlier session): what decides
/// the first segment (through [`AbrConfig::default_estimate_bps`]).
pub const DEFAULT_ESTIMATE_BPS: f64 = 1_000_000.0;

/// Tunables. The defaults are chosen for audio (10 s segments, tracks of minutes).
#[derive(Debug, Clone, PartialEq)]
pub struct AbrConfig {
    /// Half-life of the fast throughput average (Shaka: 2 s).
    pub fast_half_life: Duration,
    /// Half-life of the slow throughput average (Shaka: 5 s). The lower of the two is used.
    pub slow_half_life: Duration,
    /// Throughput assumed before any measurement when no earlier estimate is given, bit/s.
    pub default_estimate_bps: f64,
    /// Round trip assumed before any measurement.
    pub default_latency: Duration,
    /// Switch up only to a candidate that needs at most this share of the estimate (Shaka 0.85).
    pub up_factor: f64,
    /// Keep the current candidate while it needs at most this share of the estimate (Shaka 0.95).
    pub keep_factor: f64,
    /// No up-switch with less than this buffered (ExoPlayer: 10 s), unless the segment would
    /// arrive `build_speed` times faster than the buffer (above the reserve) drains.
    pub min_buffer_for_up: Duration,
    /// No down-switch with this much buffered (ExoPlayer: 25 s), unless the next segment at the
    /// current quality would arrive too late.
    pub hold_buffer: Duration,
    /// BOLA's range: from `bola_low` of buffer (dash.js: 10 s) BOLA may hold the quality against
    /// throughput noise; at `bola_high` it would hold the top candidate.
    pub bola_low: Duration,
    pub bola_high: Duration,
    /// Every segment must be expected to arrive with at least this much still buffered.
    pub reserve: Duration,
    /// Buffer first, quality second: until this much is buffered (raised to cover the longest
    /// outage seen), only candidates that download `build_speed` times faster than real time.
    pub build_buffer: Duration,
    pub build_speed: f64,
    /// `build_speed` in the thin-buffer up-switch rule while the link has never stalled (no
    /// outage seen): on a 10 Mb/s link, the segment after the first came about 9 s ahead of
    /// playback, just short of 3 × its fetch time plus the reserve, and FLAC HD waited a
    /// segment (against dashdemux2's one).
    pub calm_build_speed: f64,
    /// The first segment must be expected to arrive within this, so start-up stays fast.
    pub startup_budget: Duration,
    /// Played as it arrives, the first segment must come this much faster than real time
    /// (0.25: in 80 % of its duration), or [`QualitySelector::check_start`] drops it.
    ///
    /// [`QualitySelector::check_start`]: super::QualitySelector::check_start
    pub start_margin: f64,
    /// Media time over which exact segment sizes give the rate a candidate needs.
    pub rate_window: Duration,
    /// Within this much media of the end of the track, the buffer may be spent on quality that
    /// the throughput alone does not sustain, as long as every segment still arrives in time.
    pub end_game_horizon: Duration,
    /// Extra headroom an up-switch across codec families needs (0.2 = 20 % more than within a
    /// codec), since it means a new decoder chain downstream.
    pub cross_codec_margin: f64,
    /// Minimum time between two codec family changes unless a deadline forces one.
    pub cross_codec_min_interval: Duration,
    /// The family the first choice stays in (its lowest rung when none fits the start-up
    /// budget), when the ladder spans several: the manifest's preferred one. Leaving it is
    /// then the measured throughput's or a rebuffer's call, not a cold estimate's. None: any.
    pub start_codec: Option<CodecFamily>,
    /// Pause fetching at this much buffered or this many bytes (whole tracks fit by default).
    pub max_buffer: Duration,
    pub max_buffer_bytes: u64,
    /// Resume fetching once the buffer is this far below `max_buffer`.
    pub resume_gap: Duration,
}

impl Default for AbrConfig {
    fn default() -> Self {
        AbrConfig {
            fast_half_life: Duration::from_secs(2),
            slow_half_life: Duration::from_secs(5),
            default_estimate_bps: DEFAULT_ESTIMATE_BPS,
            default_latency: Duration::from_millis(100),
            up_factor: 0.85,
            keep_factor: 0.95,
            min_buffer_for_up: Duration::from_secs(10),
            hold_buffer: Duration::from_secs(25),
            bola_low: Duration::from_secs(10),
            bola_high: Duration::from_secs(30),
            reserve: Duration::from_secs(3),
            build_buffer: Duration::from_secs(20),
            build_speed: 3.0,
            calm_build_speed: 2.0,
            startup_budget: Duration::from_secs(1),
            start_margin: 0.25,
            rate_window: Duration::from_secs(30),
            end_game_horizon: Duration::from_secs(60),
            cross_codec_margin: 0.2,
            cross_codec_min_interval: Duration::from_secs(20),
            start_codec: None,
            max_buffer: Duration::from_secs(600),
            max_buffer_bytes: 32 * 1024 * 1024,
            resume_gap: Duration::from_secs(10),
        }
    }
}
