// SPDX-License-Identifier: MPL-2.0
//! Where a listener in real time would be in what the demuxer has pushed downstream.
//!
//! The demuxer's own queue is not the whole buffer: what it pushed is still ahead of the
//! listener in qtdemux, the decoder, playbin3's queues and the sound card. And a consumer that
//! is not clocked (a `filesink`, `fakesink sync=false`, `amzmusic-play --fast`) takes every
//! byte at once, so the streaming thread waits on the network without any listener waiting
//! for audio. Counting such a wait as a stall sent the selector down to the lowest Opus.
//!
//! So the element keeps a model playhead: from the first piece pushed, it advances at real
//! time while the element is PLAYING (not while PAUSED), and never past what was pushed. What
//! lies between it and the end pushed is buffered downstream; a wait for data is a stall only
//! once the playhead has reached that end. After a stall the playhead waits where it is and
//! restarts with the next piece, as a sound card resuming would. It stands for the listener
//! the QoE scores (vinyl's benchmark) and for any clocked sink that started playing with the
//! first buffer; a sink that starts later only makes it conservative (less buffered).

use std::time::{Duration, Instant};

/// Time spent in PLAYING: the clock the playhead runs on.
#[derive(Debug, Clone, Default)]
pub struct PlayClock {
    before: Duration,
    since: Option<Instant>,
}

impl PlayClock {
    /// The element went to PLAYING at `now`.
    pub fn start(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// The element left PLAYING at `now`.
    pub fn stop(&mut self, now: Instant) {
        if let Some(s) = self.since.take() {
            self.before += now.saturating_duration_since(s);
        }
    }

    pub fn at(&self, now: Instant) -> Duration {
        self.before
            + self
                .since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// The model playhead over media time (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Playhead {
    /// Media time and play-clock time from which playback runs at 1×; None before the first
    /// piece and after a stall, until the next piece.
    anchor: Option<(Duration, Duration)>,
    /// End of the media pushed downstream.
    pushed_end: Option<Duration>,
}

impl Playhead {
    /// A flush (start, seek): nothing is downstream.
    pub fn reset(&mut self) {
        *self = Playhead::default();
    }

    /// A piece of media `[start, end)` went downstream at play-clock time `clock`.
    pub fn pushed(&mut self, start: Duration, end: Duration, clock: Duration) {
        self.anchor.get_or_insert((start, clock));
        self.pushed_end = Some(self.pushed_end.map_or(end, |e| e.max(end)));
    }

    /// Where the listener is at play-clock time `clock` (None before the first piece).
    pub fn position(&self, clock: Duration) -> Option<Duration> {
        let end = self.pushed_end?;
        Some(match self.anchor {
            Some((media, at)) => (media + clock.saturating_sub(at)).min(end),
            None => end,
        })
    }

    /// Media pushed downstream that the listener has not reached at `clock`.
    pub fn ahead(&self, clock: Duration) -> Duration {
        match (self.pushed_end, self.position(clock)) {
            (Some(end), Some(pos)) => end.saturating_sub(pos),
            _ => Duration::ZERO,
        }
    }

    /// Whether the listener has played everything pushed: a wait for data now is a stall.
    pub fn caught_up(&self, clock: Duration) -> bool {
        self.ahead(clock).is_zero()
    }

    /// A stall: the playhead waits at the end pushed and restarts with the next piece.
    pub fn stalled(&mut self) {
        self.anchor = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_play_clock_runs_only_while_playing() {
        let t0 = Instant::now();
        let mut c = PlayClock::default();
        assert_eq!(c.at(t0 + 5 * S), Duration::ZERO);
        c.start(t0 + S);
        c.start(t0 + 2 * S);
        assert_eq!(c.at(t0 + 3 * S), 2 * S);
        c.stop(t0 + 4 * S);
        assert_eq!(c.at(t0 + 10 * S), 3 * S);
        c.start(t0 + 10 * S);
        assert_eq!(c.at(t0 + 11 * S), 4 * S);
    }

    #[test]
    fn a_clocked_listener_drains_what_was_pushed_at_real_time() {
        let mut p = Playhead::default();
        assert!(p.caught_up(S));
        assert_eq!(p.position(S), None);
        // 10 s pushed at once at clock 0 (prerolled): 7 s still ahead at clock 3.
        p.pushed(Duration::ZERO, 10 * S, Duration::ZERO);
        assert_eq!(p.ahead(3 * S), 7 * S);
        assert!(!p.caught_up(9 * S));
        assert!(p.caught_up(10 * S));
        assert_eq!(p.position(15 * S), Some(10 * S));
        // It stalled at 10 s; data comes at clock 15: playback restarts from there.
        p.stalled();
        p.pushed(10 * S, 12 * S, 15 * S);
        assert_eq!(p.position(16 * S), Some(11 * S));
        assert_eq!(p.ahead(16 * S), S);
        p.reset();
        assert!(p.caught_up(20 * S));
    }

    #[test]
    fn an_unclocked_consumer_runs_far_ahead_of_the_listener() {
        // A file sink takes a 60 s track in 2 s: the streaming thread waits on the network
        // between pieces, but the listener is 58 s behind, no stall.
        let mut p = Playhead::default();
        for i in 0..60u32 {
            let clock = Duration::from_millis(33) * i;
            p.pushed(S * i, S * (i + 1), clock);
        }
        assert!(p.ahead(2 * S) >= 57 * S, "{:?}", p.ahead(2 * S));
        assert!(!p.caught_up(2 * S));
    }
}
