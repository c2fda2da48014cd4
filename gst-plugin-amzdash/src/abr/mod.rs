//! Adaptive bitrate for audio: which representation to fetch for each segment, and how far
//! ahead to fetch, from measured downloads and the buffer level. Pure logic, no GStreamer, no I/O.
//!
//! # Using it from the element
//!
//! ```
//! use std::time::Duration;
//! use gstamzdash::abr::*;
//!
//! // One Candidate per playable representation (codec has a decoder, within max-bitrate).
//! let secs = |s| Duration::from_secs(s);
//! let opus = Candidate {
//!     id: "opus-320k".into(),
//!     codec: CodecFamily::Opus,
//!     adaptation_set: 0,
//!     bandwidth_bps: 326_522,
//!     quality_ranking: Some(3),
//!     segment_bytes: Some(vec![404_100, 404_100]), // SegmentList mediaRange / sidx, when known
//!     segment_durations: None,                       // same timeline as the ladder
//! };
//! let flac = Candidate {
//!     id: "flac-44k16".into(),
//!     codec: CodecFamily::Flac,
//!     bandwidth_bps: 794_390,
//!     quality_ranking: Some(2),
//!     segment_bytes: Some(vec![988_826, 984_081]),
//!     ..opus.clone()
//! };
//! let ladder = Ladder::new(vec![flac, opus], &[secs(10), secs(10)]).unwrap();
//! let mut abr = QualitySelector::new(ladder, AbrConfig::default())
//!     .with_previous(None); // or the SessionEstimate persisted from the last session
//!
//! // Before each segment: should I fetch, and which representation?
//! let buffer = BufferLevel { ahead: secs(0), bytes: 0, playing: false };
//! assert_eq!(abr.fetch_advice(&buffer), FetchAdvice::Fetch);
//! let choice = abr.choose(0, &buffer, Duration::ZERO);
//! let id = &abr.ladder().candidates()[choice.rep].id;
//! # let _ = id;
//! // While it downloads, every ~250 ms: abandon it for a lower one?
//! // abr.check_abandon(&InFlight { .. }, &buffer, now)
//! // When it is done (also for init segments and indexes):
//! abr.on_download(&Download { bytes: 405_076, ttfb: Duration::from_millis(80), total: secs(1) });
//! // When playback runs dry: abr.on_stall(); after a flushing seek: abr.on_seek();
//! // A request timed out before its first byte: abr.on_request_timeout(waited).
//! // When max-bitrate/max-quality change: abr.set_cap(Some(index)).
//! // Everything fetched and the link idle: abr.upgrade(&buffered, &buffer).
//! // For the `stats` property: abr.stats(); at the end, persist abr.session_estimate().
//! ```
//!
//! Indexes in answers refer to [`Ladder::candidates`], sorted lowest quality first. Times are
//! `Duration`s from any fixed origin the element picks; the selector never reads a clock, so the
//! same inputs always give the same answers (which is what makes [`sim`] meaningful).
//!
//! The algorithm is described in `ABR.md` at the crate root, with the simulated scores.

mod bola;
mod estimator;
pub mod fallback;
mod ladder;
pub mod qoe;
mod selector;
pub mod sim;

pub use bola::Bola;
pub use estimator::{Ewma, ThroughputEstimator};
pub use fallback::FALLBACK_ESTIMATE_BPS;
pub use ladder::{Candidate, CodecFamily, Ladder, LadderError};
pub use selector::{
    AbrConfig, AbrStats, BufferLevel, Buffered, Choice, Download, FetchAdvice, InFlight,
    QualitySelector, Reason, SessionEstimate, DEFAULT_ESTIMATE_BPS,
};
