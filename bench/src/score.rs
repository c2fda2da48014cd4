//! vinyl's ABR quality-of-experience score (`abrScore.ts` of its public ABR benchmark): an
//! event timeline folded into quality, rebuffer, stall and startup components and their sum.

// One implementation of the formula, shared with the ABR simulator (amzdashdemux's abr::qoe).
pub use gstamzdash::abr::qoe::{Event, Sample, Score};
pub use gstamzdash::abr::sim::VINYL_AUDIO_SCORES;

/// Scores a timeline closed at `end_time`; `max_bandwidth` is the top rung's bandwidth (none:
/// quality scores 0). A run that never played scores 0 in every component, as in vinyl.
pub fn score(
    timeline: &[Sample],
    end_time: f64,
    startup_s: f64,
    max_bandwidth: Option<u64>,
) -> Score {
    gstamzdash::abr::qoe::score(timeline, end_time, startup_s, max_bandwidth.unwrap_or(0))
}

pub fn vinyl_score(scenario: &str) -> Option<f64> {
    VINYL_AUDIO_SCORES
        .iter()
        .find(|(n, _)| *n == scenario)
        .map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(time: f64, bandwidth: Option<u64>, event: Event) -> Sample {
        Sample {
            time,
            bandwidth,
            event,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn an_uninterrupted_top_quality_run_scores_by_its_startup_only() {
        let tl = [
            s(2.0, Some(1000), Event::Playing),
            s(62.0, None, Event::Ended),
        ];
        let sc = score(&tl, 62.0, 2.0, Some(1000));
        assert!(close(sc.quality, 1.0));
        assert!(close(sc.rebuffer, 1.0));
        assert!(close(sc.stall, 1.0));
        assert!(close(sc.startup, 0.5));
        assert!(close(sc.total, 0.4 + 0.3 + 0.1 + 0.2 * 0.5));
        assert!(close(sc.playback_s, 60.0));
    }

    #[test]
    fn quality_is_the_time_weighted_square_root_of_the_bandwidth_ratio() {
        // Half the time at a quarter of the top rung: (0.5 · 0.5 + 0.5 · 1) = 0.75.
        let tl = [
            s(0.0, Some(250), Event::Playing),
            s(10.0, Some(1000), Event::QualityChange),
        ];
        let sc = score(&tl, 20.0, 0.0, Some(1000));
        assert!(close(sc.quality, 0.75), "{sc:?}");
        assert!(close(sc.avg_bitrate, 625.0));
        // Above the top rung counts as the top rung.
        let over = score(&[s(0.0, Some(4000), Event::Playing)], 1.0, 0.0, Some(1000));
        assert!(close(over.quality, 1.0));
    }

    #[test]
    fn rebuffers_and_stall_seconds_count_only_after_playback_started() {
        let tl = [
            s(0.0, None, Event::Waiting), // before the start: startup, not a rebuffer
            s(1.0, Some(1000), Event::Playing),
            s(11.0, None, Event::Waiting),
            s(15.0, Some(1000), Event::Playing),
            s(20.0, None, Event::Paused),
        ];
        let sc = score(&tl, 30.0, 1.0, Some(1000));
        assert_eq!(sc.rebuffers, 1);
        assert!(close(sc.stall_s, 4.0));
        assert!(close(sc.rebuffer, 0.5));
        assert!(close(sc.stall, 0.5));
        assert!(close(sc.playback_s, 15.0));
    }

    #[test]
    fn a_run_that_never_played_scores_zero() {
        let sc = score(&[s(0.0, None, Event::Waiting)], 120.0, 0.0, Some(1000));
        assert_eq!(sc.total, 0.0);
        assert_eq!(sc.startup, 0.0);
        assert_eq!(score(&[], 10.0, 0.0, None).total, 0.0);
    }

    #[test]
    fn published_vinyl_scores_are_known_per_scenario() {
        assert_eq!(vinyl_score("outage"), Some(0.368));
        assert_eq!(vinyl_score("moon"), None);
    }
}
