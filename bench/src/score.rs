//! vinyl's ABR quality-of-experience score (`abrScore.ts` of its public ABR benchmark): an
//! event timeline folded into quality, rebuffer, stall and startup components and their sum.

use serde::Serialize;

/// What happened at a timeline sample (vinyl's `TimelineEventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    Playing,
    /// A rebuffer starts (only counted once playback has started).
    Waiting,
    QualityChange,
    Paused,
    Ended,
}

/// A state change: between two samples the earlier one's state holds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds from the play request.
    pub time: f64,
    /// `bandwidth` (bit/s) of the representation playing; `None` when not playing.
    pub bandwidth: Option<u64>,
    pub event: Event,
}

/// Weights of the components (vinyl's `ABR_WEIGHTS`).
pub const W_QUALITY: f64 = 0.4;
pub const W_REBUFFER: f64 = 0.3;
pub const W_STALL: f64 = 0.1;
pub const W_STARTUP: f64 = 0.2;
/// Decay constants: each component is `1 / (1 + k · penalty)`.
const REBUFFER_DECAY: f64 = 1.0;
const STALL_DECAY: f64 = 0.25;
const STARTUP_DECAY: f64 = 0.5;

/// The score and its components, all in [0, 1] (1 is ideal), plus the raw penalties.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Score {
    pub quality: f64,
    pub rebuffer: f64,
    pub stall: f64,
    pub startup: f64,
    pub total: f64,
    pub avg_bitrate: f64,
    pub rebuffers: u32,
    pub stall_s: f64,
    pub playback_s: f64,
    pub startup_s: f64,
}

/// Scores a timeline closed at `end_time`; `max_bandwidth` is the top rung's bandwidth. A run
/// that never played scores 0 in every component, as in vinyl.
pub fn score(
    timeline: &[Sample],
    end_time: f64,
    startup_s: f64,
    max_bandwidth: Option<u64>,
) -> Score {
    let (mut playback, mut bit_s, mut sqrt_s, mut stall_s) = (0.0, 0.0, 0.0, 0.0);
    let mut rebuffers = 0u32;
    let mut started = false;
    let top = max_bandwidth.filter(|b| *b > 0);
    for (i, s) in timeline.iter().enumerate() {
        let next = timeline.get(i + 1).map_or(end_time, |n| n.time);
        let dt = (next - s.time).max(0.0);
        match s.bandwidth {
            Some(bw) if bw > 0 => {
                started = true;
                playback += dt;
                bit_s += dt * bw as f64;
                if let Some(top) = top {
                    sqrt_s += dt * (bw as f64 / top as f64).min(1.0).sqrt();
                }
            }
            _ if started && s.event == Event::Waiting => {
                stall_s += dt;
                rebuffers += 1;
            }
            _ => {}
        }
    }
    if playback <= 0.0 {
        return Score {
            rebuffers,
            stall_s,
            startup_s,
            ..Score::default()
        };
    }
    let quality = if top.is_some() {
        (sqrt_s / playback).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let rebuffer = 1.0 / (1.0 + REBUFFER_DECAY * rebuffers as f64);
    let stall = 1.0 / (1.0 + STALL_DECAY * stall_s);
    let startup = 1.0 / (1.0 + STARTUP_DECAY * startup_s.max(0.0));
    Score {
        quality,
        rebuffer,
        stall,
        startup,
        total: W_QUALITY * quality + W_REBUFFER * rebuffer + W_STALL * stall + W_STARTUP * startup,
        avg_bitrate: bit_s / playback,
        rebuffers,
        stall_s,
        playback_s: playback,
        startup_s,
    }
}

/// vinyl's published scores for its audio track (results.json, seed 1), per scenario.
pub const VINYL_AUDIO_SCORES: [(&str, f64); 5] = [
    ("stable-high", 0.902),
    ("stable-low", 0.610),
    ("wifi-to-4g", 0.878),
    ("outage", 0.368),
    ("noisy-mobile", 0.719),
];

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
