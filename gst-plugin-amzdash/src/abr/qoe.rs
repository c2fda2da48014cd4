//! Quality of experience scored exactly as Amazon's vinyl ABR benchmark scores it (abrScore.ts),
//! from a timeline of playback events: for the simulator and for benchmarks of real pipelines.

use serde::Serialize;

/// What the player was doing from `time` on (vinyl's `TimelineEventType`).
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

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds from the play request.
    pub time: f64,
    /// `bandwidth` of the representation playing, `None` when not playing.
    pub bandwidth: Option<u64>,
    pub event: Event,
}

/// The score and its components, all in [0, 1] (1 is ideal), as vinyl's `abrScore.ts` computes
/// them: 0.4·quality + 0.3·rebuffer + 0.1·stall + 0.2·startup.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Score {
    /// Time-weighted mean of √(bandwidth / top bandwidth) while playing.
    pub quality: f64,
    /// 1 / (1 + rebuffers).
    pub rebuffer: f64,
    /// 1 / (1 + 0.25 · stall seconds).
    pub stall: f64,
    /// 1 / (1 + 0.5 · start-up seconds).
    pub startup: f64,
    pub total: f64,
    pub avg_bitrate: f64,
    pub rebuffers: u32,
    pub stall_s: f64,
    pub playback_s: f64,
    pub startup_s: f64,
}

/// Scores a timeline: between two samples the earlier one's state holds; `end_time` closes the
/// last interval; a run that never played scores 0.
pub fn score(timeline: &[Sample], end_time: f64, startup_s: f64, top_bandwidth: u64) -> Score {
    let (mut playback, mut bit_s, mut sqrt_s, mut stall_s) = (0.0, 0.0, 0.0, 0.0);
    let mut rebuffers = 0u32;
    let mut started = false;
    for (i, s) in timeline.iter().enumerate() {
        let next = timeline.get(i + 1).map_or(end_time, |n| n.time);
        let dt = (next - s.time).max(0.0);
        match s.bandwidth {
            Some(bw) if bw > 0 => {
                started = true;
                playback += dt;
                bit_s += dt * bw as f64;
                if top_bandwidth > 0 {
                    sqrt_s += dt * (bw as f64 / top_bandwidth as f64).min(1.0).sqrt();
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
    let quality = if top_bandwidth > 0 {
        (sqrt_s / playback).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let rebuffer = 1.0 / (1.0 + rebuffers as f64);
    let stall = 1.0 / (1.0 + 0.25 * stall_s);
    let startup = 1.0 / (1.0 + 0.5 * startup_s.max(0.0));
    Score {
        quality,
        rebuffer,
        stall,
        startup,
        total: 0.4 * quality + 0.3 * rebuffer + 0.1 * stall + 0.2 * startup,
        avg_bitrate: bit_s / playback,
        rebuffers,
        stall_s,
        playback_s: playback,
        startup_s,
    }
}

/// Builds a timeline from playback events as they happen (times in seconds from the play
/// request), then scores it. Repeated states are not recorded twice.
#[derive(Debug, Clone, Default)]
pub struct QoeRecorder {
    timeline: Vec<Sample>,
    playing: Option<u64>,
    startup_s: Option<f64>,
}

impl QoeRecorder {
    pub fn new() -> QoeRecorder {
        QoeRecorder::default()
    }

    /// Audio plays (first start or after a rebuffer) at `bandwidth` (the representation's
    /// `bandwidth` attribute).
    pub fn playing(&mut self, time: f64, bandwidth: u64) {
        if self.playing.is_some() {
            return self.quality(time, bandwidth);
        }
        self.startup_s.get_or_insert(time);
        self.playing = Some(bandwidth);
        self.timeline.push(Sample {
            time,
            bandwidth: Some(bandwidth),
            event: Event::Playing,
        });
    }

    /// The representation playing changed.
    pub fn quality(&mut self, time: f64, bandwidth: u64) {
        if self.playing.is_some_and(|b| b != bandwidth) {
            self.playing = Some(bandwidth);
            self.timeline.push(Sample {
                time,
                bandwidth: Some(bandwidth),
                event: Event::QualityChange,
            });
        }
    }

    /// Playback ran dry (a rebuffer once started; before the start it is start-up time).
    pub fn waiting(&mut self, time: f64) {
        if self.playing.take().is_some() {
            self.timeline.push(Sample {
                time,
                bandwidth: None,
                event: Event::Waiting,
            });
        }
    }

    /// The track ended.
    pub fn ended(&mut self, time: f64) {
        self.playing = None;
        self.timeline.push(Sample {
            time,
            bandwidth: None,
            event: Event::Ended,
        });
    }

    pub fn timeline(&self) -> &[Sample] {
        &self.timeline
    }

    /// Seconds from the play request to the first audio, once it played.
    pub fn startup_s(&self) -> Option<f64> {
        self.startup_s
    }

    /// The score at `end_time`, against the ladder's top `bandwidth`.
    pub fn score(&self, end_time: f64, top_bandwidth: u64) -> Score {
        score(
            &self.timeline,
            end_time,
            self.startup_s.unwrap_or(0.0),
            top_bandwidth,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_follows_vinyls_formula() {
        // Start-up 2 s; 30 s at the top; a 4 s rebuffer; 30 s at a quarter of the top; ended.
        let mut r = QoeRecorder::new();
        r.waiting(1.0); // before the start: start-up time, not a rebuffer
        r.playing(2.0, 1000);
        r.quality(10.0, 1000); // no change: not recorded
        r.waiting(32.0);
        r.playing(36.0, 250);
        r.ended(66.0);
        assert_eq!(r.timeline().len(), 4);
        assert_eq!(r.startup_s(), Some(2.0));
        let s = r.score(67.0, 1000);
        assert!((s.quality - 0.75).abs() < 1e-12);
        assert_eq!(s.rebuffers, 1);
        assert!((s.rebuffer - 0.5).abs() < 1e-12);
        assert!((s.stall - 0.5).abs() < 1e-12);
        assert!((s.startup - 0.5).abs() < 1e-12);
        assert!((s.total - 0.6).abs() < 1e-12);
        assert!((s.avg_bitrate - 625.0).abs() < 1e-9);
        // Never played: zero, whatever else.
        let none = [Sample {
            time: 0.0,
            bandwidth: None,
            event: Event::Waiting,
        }];
        assert_eq!(score(&none, 10.0, 0.0, 1000).total, 0.0);
        // Bandwidths above the top count as the top.
        let mut r = QoeRecorder::new();
        r.playing(0.0, 2000);
        assert!((r.score(10.0, 1000).quality - 1.0).abs() < 1e-12);
    }
}
