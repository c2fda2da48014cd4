// SPDX-License-Identifier: MPL-2.0
//! What the element reports: the `stats` structure, the `amzdashdemux-segment` element message,
//! the buffering percentage and which levels are worth a message, and the error an engine
//! failure becomes.

use std::time::Duration;

use crate::engine::{Candidate, EngineError, Stats};

/// The `stats` property: the current representation, the estimate, the buffer level and the
/// counters.
pub fn stats_structure(
    level: (Duration, u64),
    s: &Stats,
    cand: Option<&Candidate>,
) -> gst::Structure {
    let (level_time, level_bytes) = level;
    gst::Structure::builder("amzdashdemux-stats")
        .field(
            "representation",
            cand.map(|c| c.id.clone()).unwrap_or_default(),
        )
        .field(
            "codec",
            cand.map(|c| c.codec.stream_id_suffix()).unwrap_or_default(),
        )
        .field("bandwidth", cand.map(|c| c.bandwidth).unwrap_or(0))
        .field("quality", cand.map(|c| c.label.clone()).unwrap_or_default())
        .field("throughput-estimate", s.estimate_bps as u64)
        .field("buffer-level-time", level_time.as_nanos() as u64)
        .field("buffer-level-bytes", level_bytes)
        .field("switches", s.switches)
        .field("stalls", s.stalls)
        .field("bytes", s.bytes)
        .field("segments", s.segments)
        .field("refreshes", s.refreshes)
        .field("retries", s.retries)
        .field("abandons", s.abandons)
        .field("underruns", s.underruns)
        .field("upgrades", s.upgrades)
        .field("upgrades-dropped", s.upgrades_dropped)
        .build()
}

/// The element message saying which representation the segment going downstream comes from.
pub fn segment_structure(start: Duration, duration: Duration, c: &Candidate) -> gst::Structure {
    gst::Structure::builder("amzdashdemux-segment")
        .field("start", start.as_nanos() as u64)
        .field("duration", duration.as_nanos() as u64)
        .field("representation", c.id.clone())
        .field("bandwidth", c.bandwidth)
        .build()
}

/// The buffering percentage of `queued` against the low watermark: 100 at or above it, when it
/// is zero, or once everything is downloaded (`complete`: nothing to wait for).
pub fn buffering_percent(queued: Duration, low_watermark: gst::ClockTime, complete: bool) -> i32 {
    if low_watermark.is_zero() || complete {
        100
    } else {
        ((queued.as_nanos() * 100) / low_watermark.nseconds().max(1) as u128).min(100) as i32
    }
}

/// Whether to post `pct` after `prev`: 0 and 100 always, other levels in steps of 10, never
/// the same level twice.
pub fn buffering_changed(prev: Option<i32>, pct: i32) -> bool {
    !(prev == Some(pct) || (prev.is_some_and(|p| (p - pct).abs() < 10) && pct != 100 && pct != 0))
}

/// The error message an engine failure is posted as, in the domain an application acts on.
pub fn engine_error(e: EngineError) -> gst::ErrorMessage {
    match e {
        EngineError::NotAuthorized(m) => gst::error_msg!(
            gst::ResourceError::NotAuthorized,
            ["Segment access refused: {}", m]
        ),
        EngineError::NotFound(m) => gst::error_msg!(
            gst::ResourceError::NotFound,
            ["A segment the manifest lists does not exist: {}", m]
        ),
        EngineError::Network(m) => gst::error_msg!(
            gst::ResourceError::Read,
            ["Could not download a segment: {}", m]
        ),
        EngineError::Manifest(m) => gst::error_msg!(
            gst::StreamError::Demux,
            ["Cannot play this manifest: {}", m]
        ),
        EngineError::Media(m) => {
            gst::error_msg!(gst::StreamError::Demux, ["A segment is malformed: {}", m])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gst::prelude::*;

    fn cand() -> Candidate {
        Candidate {
            set: 0,
            rep: 1,
            id: "flac-48k24".into(),
            codec: amzmusic_common::codec::Codec::Flac,
            bandwidth: 1_700_000,
            label: "HD".into(),
            selection_priority: 3,
        }
    }

    #[test]
    fn stats_carry_the_candidate_the_level_and_the_counters() {
        gst::init().unwrap();
        let s = Stats {
            estimate_bps: 2_500_000.7,
            switches: 2,
            underruns: 1,
            upgrades_dropped: 4,
            ..Default::default()
        };
        let c = cand();
        let st = stats_structure((Duration::from_secs(3), 1234), &s, Some(&c));
        assert_eq!(st.name(), "amzdashdemux-stats");
        assert_eq!(st.get::<&str>("representation"), Ok("flac-48k24"));
        assert_eq!(st.get::<&str>("codec"), Ok("flac"));
        assert_eq!(st.get::<u64>("bandwidth"), Ok(1_700_000));
        assert_eq!(st.get::<&str>("quality"), Ok("HD"));
        assert_eq!(st.get::<u64>("throughput-estimate"), Ok(2_500_000));
        assert_eq!(st.get::<u64>("buffer-level-time"), Ok(3_000_000_000));
        assert_eq!(st.get::<u64>("buffer-level-bytes"), Ok(1234));
        assert_eq!(st.get::<u64>("switches"), Ok(2));
        assert_eq!(st.get::<u64>("underruns"), Ok(1));
        assert_eq!(st.get::<u64>("upgrades-dropped"), Ok(4));
        let none = stats_structure((Duration::ZERO, 0), &Stats::default(), None);
        assert_eq!(none.get::<&str>("representation"), Ok(""));
        assert_eq!(none.get::<u64>("bandwidth"), Ok(0));
        assert_eq!(none.n_fields(), st.n_fields());
    }

    #[test]
    fn segment_message_names_the_representation() {
        gst::init().unwrap();
        let s = segment_structure(Duration::from_secs(2), Duration::from_secs(2), &cand());
        assert_eq!(s.name(), "amzdashdemux-segment");
        assert_eq!(s.get::<u64>("start"), Ok(2_000_000_000));
        assert_eq!(s.get::<u64>("duration"), Ok(2_000_000_000));
        assert_eq!(s.get::<&str>("representation"), Ok("flac-48k24"));
        assert_eq!(s.get::<u64>("bandwidth"), Ok(1_700_000));
    }

    #[test]
    fn buffering_levels() {
        let low = gst::ClockTime::from_seconds(4);
        assert_eq!(buffering_percent(Duration::from_secs(1), low, false), 25);
        assert_eq!(buffering_percent(Duration::from_secs(9), low, false), 100);
        assert_eq!(buffering_percent(Duration::ZERO, low, true), 100);
        assert_eq!(
            buffering_percent(Duration::ZERO, gst::ClockTime::ZERO, false),
            100
        );
        assert!(buffering_changed(None, 30));
        assert!(!buffering_changed(Some(30), 30));
        assert!(!buffering_changed(Some(30), 35));
        assert!(buffering_changed(Some(30), 40));
        assert!(buffering_changed(Some(95), 100));
        assert!(buffering_changed(Some(5), 0));
    }

    #[test]
    fn engine_errors_keep_their_domain() {
        gst::init().unwrap();
        let posted = |e: EngineError| {
            let p = gst::Pipeline::new();
            let bus = p.bus().unwrap();
            p.post_error_message(engine_error(e));
            let m = bus.pop_filtered(&[gst::MessageType::Error]).unwrap();
            let gst::MessageView::Error(err) = m.view() else {
                panic!("not an error");
            };
            (
                err.error(),
                err.debug().map(|d| d.to_string()).unwrap_or_default(),
            )
        };
        // The domain's own message, and what happened in the debug text.
        let (e, debug) = posted(EngineError::NotAuthorized("403".into()));
        assert!(e.matches(gst::ResourceError::NotAuthorized));
        assert!(debug.ends_with("Segment access refused: 403"), "{debug}");
        let (e, debug) = posted(EngineError::NotFound("x".into()));
        assert!(e.matches(gst::ResourceError::NotFound));
        assert!(debug.ends_with("A segment the manifest lists does not exist: x"));
        let (e, debug) = posted(EngineError::Network("x".into()));
        assert!(e.matches(gst::ResourceError::Read));
        assert!(debug.ends_with("Could not download a segment: x"));
        let (e, debug) = posted(EngineError::Manifest("x".into()));
        assert!(e.matches(gst::StreamError::Demux));
        assert!(debug.ends_with("Cannot play this manifest: x"));
        let (e, debug) = posted(EngineError::Media("x".into()));
        assert!(e.matches(gst::StreamError::Demux));
        assert!(debug.ends_with("A segment is malformed: x"));
    }
}
