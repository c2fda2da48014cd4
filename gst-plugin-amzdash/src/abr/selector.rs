//! The quality selector: from the ladder, the measurements and the buffer level, which candidate
//! to fetch for the next segment, whether to abandon a download, and whether to fetch at all.

use std::time::Duration;

use super::bola::Bola;
use super::estimator::ThroughputEstimator;
use super::ladder::Ladder;

mod config;
mod progress;
mod signals;

pub use config::{AbrConfig, DEFAULT_ESTIMATE_BPS};
use progress::Progress;
pub use signals::{
    AbrStats, BufferLevel, Buffered, Choice, Download, FetchAdvice, InFlight, Reason,
    SessionEstimate,
};

/// The ABR decision logic of one track. Pure: every time and measurement comes in as an argument.
#[derive(Debug, Clone)]
pub struct QualitySelector {
    ladder: Ladder,
    config: AbrConfig,
    bola: Bola,
    est: ThroughputEstimator,
    current: Option<usize>,
    played: bool,
    paused: bool,
    last_codec_switch_s: Option<f64>,
    abandoned_segment: Option<usize>,
    progress: Option<Progress>,
    /// Highest candidate allowed (the element's max-bitrate / max-quality).
    cap: Option<usize>,
    stats: AbrStats,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl QualitySelector {
    pub fn new(ladder: Ladder, config: AbrConfig) -> QualitySelector {
        let sizes: Vec<f64> = (0..ladder.len()).map(|r| ladder.mean_bytes(r)).collect();
        let bola = Bola::new(&sizes, secs(config.bola_low), secs(config.bola_high));
        let est =
            ThroughputEstimator::new(secs(config.fast_half_life), secs(config.slow_half_life));
        QualitySelector {
            ladder,
            config,
            bola,
            est,
            current: None,
            played: false,
            paused: false,
            last_codec_switch_s: None,
            abandoned_segment: None,
            progress: None,
            cap: None,
            stats: AbrStats::default(),
        }
    }

    /// Starts from an earlier session's estimate instead of the default, so that the first
    /// segment is not always the lowest one.
    pub fn with_previous(mut self, previous: Option<SessionEstimate>) -> QualitySelector {
        if let Some(p) = previous {
            self.est.seed(p.bps, Some(secs(p.latency)));
        }
        self
    }

    pub fn ladder(&self) -> &Ladder {
        &self.ladder
    }

    pub fn config(&self) -> &AbrConfig {
        &self.config
    }

    /// The estimate to persist for the next session, once something was measured.
    pub fn session_estimate(&self) -> Option<SessionEstimate> {
        Some(SessionEstimate {
            bps: self.est.estimate_bps()?,
            latency: Duration::from_secs_f64(self.est.latency_s()?),
        })
    }

    pub fn stats(&self) -> AbrStats {
        AbrStats {
            current: self.current,
            estimate_bps: self.est.estimate_bps(),
            latency_s: self.est.latency_s(),
            ..self.stats
        }
    }

    /// Feed every finished download (media segments, init segments, indexes).
    pub fn on_download(&mut self, d: &Download) {
        self.on_download_inner(d, None);
    }

    /// [`on_download`](Self::on_download) with the time it finished on the clock given to
    /// [`choose`](Self::choose): the link's idle time before it then weighs in (see
    /// [`IDLE_WEIGHT_CAP_S`](super::estimator::IDLE_WEIGHT_CAP_S)), so that a recovered link
    /// shows in the estimate at the first download after a quiet spell.
    pub fn on_download_at(&mut self, d: &Download, now: Duration) {
        self.on_download_inner(d, Some(secs(now)));
    }

    fn on_download_inner(&mut self, d: &Download, end_s: Option<f64>) {
        // The media download whose progress was followed (same size, same first byte): its
        // stalls are outages, not rate.
        let stalled = match self.progress.take() {
            Some(p)
                if p.bytes_total == d.bytes
                    && (p.ttfb_s - secs(d.ttfb)).abs() < 1e-3
                    && secs(d.total) >= p.at_s =>
            {
                p.stalled_s + p.gap_stall(secs(d.total), d.bytes.saturating_sub(p.bytes))
            }
            other => {
                self.progress = other;
                0.0
            }
        };
        self.est
            .add_stalled_at(d.bytes, secs(d.ttfb), secs(d.total), stalled, end_s);
    }

    /// Follows the progress of the download in flight (see [`Progress`]).
    fn track_progress(&mut self, f: &InFlight) {
        let Some(ttfb) = f.ttfb else {
            return;
        };
        let (ttfb_s, now_s) = (secs(ttfb), secs(f.elapsed));
        let same = self.progress.as_ref().is_some_and(|p| {
            (p.segment, p.rep, p.bytes_total) == (f.segment, f.rep, f.bytes_total)
                && now_s >= p.at_s
        });
        if !same {
            self.progress = Some(Progress {
                segment: f.segment,
                rep: f.rep,
                bytes_total: f.bytes_total,
                ttfb_s,
                bytes: f.bytes_received,
                // Nothing yet since the first byte: flowing stopped right then.
                at_s: if f.bytes_received == 0 { ttfb_s } else { now_s },
                stalled_s: 0.0,
            });
            return;
        }
        let p = self.progress.as_mut().expect("same download");
        if f.bytes_received > p.bytes {
            p.stalled_s += p.gap_stall(now_s, f.bytes_received - p.bytes);
            p.bytes = f.bytes_received;
            p.at_s = now_s;
        } else {
            // Still nothing: the outage is at least this long already.
            self.est.note_stall(p.gap_stall(now_s, 0));
        }
    }

    /// Call instead of [`check_abandon`](Self::check_abandon) while a media segment that can
    /// no longer be abandoned downloads (its first bytes already went downstream): it follows
    /// the progress the same way, so an outage that starts mid-download is still seen.
    pub fn on_progress(&mut self, f: &InFlight) {
        self.track_progress(f);
    }

    /// Never answer above candidate `max_rep` (the element's `max-bitrate`/`max-quality`, which
    /// may change while playing); `None` lifts the cap.
    pub fn set_cap(&mut self, max_rep: Option<usize>) {
        self.cap = max_rep;
    }

    /// A seek flushed the buffer: the next segment is chosen like a start (the best one expected
    /// within the start-up budget, now at the measured estimate), not like a rebuffer.
    pub fn on_seek(&mut self) {
        self.played = false;
        self.paused = false;
        self.abandoned_segment = None;
        self.progress = None;
    }

    /// A request got no answer for `waited` and was given up (a timeout before the first byte,
    /// before a retry): counted as link outage, like a very late first byte. Report what did
    /// complete with [`on_download`](Self::on_download) as usual.
    pub fn on_request_timeout(&mut self, waited: Duration) {
        self.est.add_outage(secs(waited));
    }

    /// Playback ran dry (the element posts buffering and waits).
    pub fn on_stall(&mut self) {
        self.stats.stalls += 1;
    }

    fn estimate(&self) -> f64 {
        self.est
            .estimate_bps()
            .unwrap_or(self.config.default_estimate_bps)
            .max(1.0)
    }

    fn latency(&self) -> f64 {
        self.est
            .latency_s()
            .unwrap_or(secs(self.config.default_latency))
    }

    /// Expected seconds from request to last byte for segment `k` of `rep` at `bps`.
    fn fetch_time(&self, rep: usize, k: usize, bps: f64) -> f64 {
        self.latency() + self.ladder.segment_bytes(rep, k) * 8.0 / bps
    }

    /// The bit rate `rep` needs over the rate window from segment `k`, per-request round trips
    /// included.
    fn need_bps(&self, rep: usize, k: usize) -> f64 {
        let d = self.ladder.duration_s(k);
        let n = ((secs(self.config.rate_window) / d).ceil() as usize).max(1);
        let n = n.min(self.ladder.segment_count().saturating_sub(k)).max(1);
        let media = self.ladder.window_rate_bps(rep, k, n) * d * n as f64;
        let secs_avail = (d * n as f64 - n as f64 * self.latency()).max(0.1 * d * n as f64);
        media / secs_avail
    }

    /// The buffer level below which quality waits for the buffer: the configured one, or more
    /// to cover the longest outage seen (capped by what is left to buffer).
    fn build_level(&self) -> f64 {
        let outage = self.est.longest_outage_s();
        let cfg = secs(self.config.build_buffer);
        let want = if outage > 0.0 {
            cfg.max(1.25 * outage + secs(self.config.reserve))
        } else {
            cfg
        };
        want.min(secs(self.config.max_buffer) - secs(self.config.resume_gap))
    }

    /// How many times over a thin buffer must cover an up-switch's fetch.
    fn quick_speed(&self) -> f64 {
        if self.est.longest_outage_s() > 0.0 {
            self.config.build_speed
        } else {
            self.config.calm_build_speed
        }
    }

    /// Whether segment `k` of `rep` arrives before the buffer falls below the reserve.
    fn in_time(&self, rep: usize, k: usize, buffer_s: f64, bps: f64) -> bool {
        self.fetch_time(rep, k, bps) <= buffer_s - secs(self.config.reserve)
    }

    /// Whether every segment from `k` to the end, all at `rep`, arrives in time.
    /// The reserve is raised by the longest outage seen: spending the buffer on quality must
    /// not spend what rides out the next one (the averaged rate alone does not: outages come
    /// whole, not spread out).
    fn rest_fits(&self, rep: usize, k: usize, buffer_s: f64, bps: f64) -> bool {
        let reserve = secs(self.config.reserve) + 1.25 * self.est.longest_outage_s();
        let (mut clock, mut starts_at) = (0.0, buffer_s);
        for j in k..self.ladder.segment_count() {
            clock += self.fetch_time(rep, j, bps);
            if clock > starts_at - reserve {
                return false;
            }
            starts_at += self.ladder.duration_s(j);
        }
        true
    }

    /// Shaka's rule on exact sizes: the best candidate needing at most `up_factor` of the
    /// estimate; keep the current one while it needs at most `keep_factor`; when going down,
    /// prefer staying in the same codec family.
    fn throughput_rule(&self, k: usize, bps: f64) -> usize {
        let c = &self.config;
        // Over a long track, the link's outages count against the rate it sustains.
        let bps = bps * self.est.availability();
        let up = (0..self.ladder.len())
            .rev()
            .find(|&r| self.need_bps(r, k) <= bps * c.up_factor)
            .unwrap_or(0);
        match self.current {
            Some(cur) if cur >= up => {
                if self.need_bps(cur, k) <= bps * c.keep_factor {
                    cur
                } else {
                    let fam = self.ladder.codec(cur);
                    (up + 1..cur)
                        .rev()
                        .find(|&r| {
                            self.ladder.codec(r) == fam
                                && self.need_bps(r, k) <= bps * c.keep_factor
                        })
                        .unwrap_or(up)
                }
            }
            _ => up,
        }
    }

    /// Which candidate to fetch segment `k` (0-based, in the ladder's timeline) with. `now` is
    /// any monotonic clock (only differences matter). Call it once per segment; the answer
    /// becomes the current quality.
    pub fn choose(&mut self, k: usize, buffer: &BufferLevel, now: Duration) -> Choice {
        let c = self.config.clone();
        let n = self.ladder.len();
        let k = k.min(self.ladder.segment_count() - 1);
        let b = secs(buffer.ahead);
        if buffer.playing {
            self.played = true;
        }
        let bps = self.estimate();

        // Not playing: the very start (nothing buffered yet), or a rebuffer. With something
        // buffered before the first play (the pipeline is prerolling), decide as if playing.
        if !buffer.playing && (self.played || buffer.ahead.is_zero()) {
            let choice = if !self.played {
                let allowed = |r: usize| c.start_codec.is_none_or(|f| self.ladder.codec(r) == f);
                let lowest = (0..n).find(|&r| allowed(r)).unwrap_or(0);
                let r = (0..n)
                    .rev()
                    .filter(|&r| allowed(r))
                    .find(|&r| self.fetch_time(r, k, bps) <= secs(c.startup_budget))
                    .unwrap_or(lowest);
                Choice {
                    rep: r,
                    reason: Reason::Startup,
                }
            } else {
                Choice {
                    rep: 0,
                    reason: Reason::Rebuffer,
                }
            };
            return self.commit(choice, now);
        }

        let mut target = self.throughput_rule(k, bps);
        let mut reason = Reason::Throughput;
        let building = b < self.build_level();
        if let Some(cur) = self.current {
            if !building && b >= secs(c.bola_low) {
                let hold = self.bola.choose(b).min(cur);
                if hold > target {
                    target = hold;
                    reason = Reason::BufferHold;
                }
            }
            if target < cur
                && b >= secs(c.hold_buffer)
                && self.in_time(cur, k, b, bps * c.keep_factor)
            {
                target = cur;
                reason = Reason::BufferHold;
            }
        }
        if !building && self.ladder.remaining_s(k) <= secs(c.end_game_horizon) + 1e-9 {
            // Near the end of a track the buffer can buy quality: the best candidate at which
            // every remaining segment still arrives in time.
            let same = |r: usize| {
                self.current
                    .is_none_or(|cur| self.ladder.codec(cur) == self.ladder.codec(r))
            };
            let avail = bps * self.est.availability();
            if let Some(r) = (target + 1..n).rev().find(|&r| {
                let rate = if same(r) {
                    avail * c.up_factor
                } else {
                    avail * c.up_factor / (1.0 + c.cross_codec_margin)
                };
                self.rest_fits(r, k, b, rate)
            }) {
                target = r;
                reason = Reason::EndGame;
            }
        } else if let Some(cur) = self.current.filter(|_| !building && b >= secs(c.bola_high)) {
            // Further from the end, a buffer past BOLA's top level is spent evenly rather than
            // hoarded for the end (√ utility: a steady quality beats a late burst): a candidate
            // of the current family at which the whole rest of the track still arrives in time
            // at the sustained rate. Once taken it keeps fitting, so it does not oscillate.
            let avail = bps * self.est.availability() * c.up_factor;
            if let Some(r) = (target + 1..n).rev().find(|&r| {
                self.ladder.codec(r) == self.ladder.codec(cur) && self.rest_fits(r, k, b, avail)
            }) {
                target = r;
                reason = Reason::EndGame;
            }
        }
        if building {
            let cap = (0..n)
                .rev()
                .find(|&r| {
                    self.fetch_time(r, k, bps * c.up_factor)
                        <= self.ladder.duration_s(k) / c.build_speed
                })
                .unwrap_or(0);
            // Building the buffer is no reason to change codec downwards (a new decoder chain,
            // and FLAC gone while the link sustains it): then the current family's lowest rung.
            // Leaving the family is the throughput rule's or a deadline's call.
            let cap = match self.current {
                Some(cur) if cap < cur && self.ladder.codec(cap) != self.ladder.codec(cur) => {
                    let fam = self.ladder.codec(cur);
                    (0..n).find(|&r| self.ladder.codec(r) == fam).unwrap_or(cap)
                }
                _ => cap,
            };
            if target > cap {
                target = cap;
                reason = Reason::BufferBuild;
            }
        }
        if let Some(cur) = self.current {
            // ExoPlayer's rule, except for a segment so quick to fetch that even a thin buffer
            // covers it `build_speed` times over (a fast link right after the first segment).
            let quick = self.fetch_time(target, k, bps * c.up_factor) * self.quick_speed()
                <= b - secs(c.reserve);
            if target > cur && b < secs(c.min_buffer_for_up) && !quick {
                target = cur;
                reason = Reason::LowBuffer;
            }
        }
        if let Some(cur) = self.current {
            let fam = self.ladder.codec(cur);
            if target > cur && self.ladder.codec(target) != fam {
                let too_soon = self
                    .last_codec_switch_s
                    .is_some_and(|t| secs(now) - t < secs(c.cross_codec_min_interval));
                let sustained = bps * self.est.availability();
                let headroom = reason == Reason::EndGame
                    || self.need_bps(target, k)
                        <= sustained * c.up_factor / (1.0 + c.cross_codec_margin);
                if too_soon || !headroom {
                    target = (cur..target)
                        .rev()
                        .find(|&r| self.ladder.codec(r) == fam)
                        .unwrap_or(cur);
                    reason = Reason::CodecCost;
                }
            }
        }
        while target > 0 && !self.in_time(target, k, b, bps * c.keep_factor) {
            target -= 1;
            reason = Reason::Deadline;
        }
        self.commit(
            Choice {
                rep: target,
                reason,
            },
            now,
        )
    }

    fn commit(&mut self, mut choice: Choice, now: Duration) -> Choice {
        if let Some(cap) = self.cap {
            choice.rep = choice.rep.min(cap);
        }
        if let Some(cur) = self.current {
            if choice.rep != cur {
                self.stats.switches += 1;
                if choice.rep > cur {
                    self.stats.up_switches += 1;
                } else {
                    self.stats.down_switches += 1;
                }
                if self.ladder.codec(choice.rep) != self.ladder.codec(cur) {
                    self.stats.codec_switches += 1;
                    self.last_codec_switch_s = Some(secs(now));
                }
            }
        }
        self.current = Some(choice.rep);
        choice
    }

    /// At start-up (the first segment of a play, or after a seek), when the first bytes of the
    /// segment in flight are about to go downstream: played as it arrives, the segment must come
    /// faster than real time with `start_margin` to spare, at the rate its bytes are coming.
    /// `Some` means it will not: drop it before anything of it goes downstream and fetch it from
    /// the returned candidate (the best one that would). The start candidate is chosen on an
    /// estimate that, cold, is only a guess (FLAC on a 500 kb/s link stalled for 6 s in its
    /// first segment); this is the first download's measurement correcting it at no cost to
    /// the start-up. At most once per segment, and only before the first play.
    pub fn check_start(&mut self, f: &InFlight, now: Duration) -> Option<Choice> {
        if self.played || f.rep == 0 || f.bytes_total == 0 {
            return None;
        }
        if self.abandoned_segment == Some(f.segment) {
            return None;
        }
        let ttfb = secs(f.ttfb?);
        let flowing = secs(f.elapsed) - ttfb;
        if flowing <= 0.0 || f.bytes_received == 0 {
            return None;
        }
        let rate = f.bytes_received as f64 * 8.0 / flowing;
        let k = f.segment.min(self.ladder.segment_count() - 1);
        let budget = self.ladder.duration_s(k) / (1.0 + self.config.start_margin);
        let left_s = f.bytes_total.saturating_sub(f.bytes_received) as f64 * 8.0 / rate;
        if secs(f.elapsed) + left_s <= budget {
            return None;
        }
        let r = (0..f.rep)
            .rev()
            .find(|&r| self.fetch_time(r, k, rate) <= budget)
            .unwrap_or(0);
        Some(self.abandon(f, ttfb, 0.0, r, now))
    }

    /// Gives up the download in flight for candidate `r`: what did arrive is a measurement
    /// (`stalled` seconds of it without bytes), its progress record goes, and the segment is
    /// not given up twice.
    fn abandon(
        &mut self,
        f: &InFlight,
        ttfb: f64,
        stalled: f64,
        r: usize,
        now: Duration,
    ) -> Choice {
        self.progress = None;
        self.est.add_stalled_at(
            f.bytes_received,
            ttfb,
            secs(f.elapsed),
            stalled,
            Some(secs(now)),
        );
        self.abandoned_segment = Some(f.segment);
        self.stats.abandons += 1;
        self.commit(
            Choice {
                rep: r,
                reason: Reason::Abandon,
            },
            now,
        )
    }

    /// Call while a media segment downloads (every few hundred ms; not once its audio is being
    /// played, when segments are streamed downstream as they arrive): `Some` means drop it and
    /// fetch the same segment from the returned candidate, which arrives sooner (the bytes that
    /// did arrive are taken as a measurement: do not also report them with `on_download`). At
    /// most once per segment; never before the first byte (an outage: nothing would come sooner).
    pub fn check_abandon(
        &mut self,
        f: &InFlight,
        buffer: &BufferLevel,
        now: Duration,
    ) -> Option<Choice> {
        self.track_progress(f);
        if f.rep == 0 || self.abandoned_segment == Some(f.segment) || f.bytes_total == 0 {
            return None;
        }
        let ttfb = secs(f.ttfb?);
        let since_first = secs(f.elapsed) - ttfb;
        if since_first < 0.5 || f.bytes_received == 0 {
            return None;
        }
        let rate = f.bytes_received as f64 * 8.0 / since_first;
        let left_s = f.bytes_total.saturating_sub(f.bytes_received) as f64 * 8.0 / rate;
        let budget = if buffer.playing {
            secs(buffer.ahead) - secs(self.config.reserve)
        } else {
            2.0 * secs(self.config.startup_budget)
        };
        if left_s <= budget {
            return None;
        }
        let bps = rate.min(self.estimate());
        let k = f.segment.min(self.ladder.segment_count() - 1);
        let r = (0..f.rep)
            .rev()
            .find(|&r| self.fetch_time(r, k, bps) <= budget)
            .unwrap_or(0);
        if self.fetch_time(r, k, bps) >= left_s {
            return None;
        }
        // What did arrive is a measurement too (and often the freshest one), stalls apart.
        let stalled = self.progress.take().map_or(0.0, |p| {
            p.stalled_s + p.gap_stall(secs(f.elapsed), f.bytes_received.saturating_sub(p.bytes))
        });
        Some(self.abandon(f, ttfb, stalled, r, now))
    }

    /// Spare bandwidth spent on quality: when every segment is fetched (nothing left for
    /// [`choose`](Self::choose)) and the link would sit idle, a buffered segment to fetch again
    /// from a better candidate, as `(segment, choice)`. `buffered` lists every buffered segment
    /// in order, from the one playing (its `due_in` zero). The latest segments are upgraded
    /// first (the most time to arrive, and a codec change moved to the end rather than added),
    /// each only if it is expected `reserve` before it is due and it adds no codec change.
    /// Swap it in only if nothing of its segment went downstream meanwhile; otherwise drop it
    /// (the buffered one plays: a late upgrade costs bandwidth, never audio).
    pub fn upgrade(
        &mut self,
        buffered: &[Buffered],
        buffer: &BufferLevel,
    ) -> Option<(usize, Choice)> {
        let c = &self.config;
        // (Everything is fetched: the buffer holds the rest of the track, nothing to build.)
        if !buffer.playing {
            return None;
        }
        let count = self.ladder.segment_count();
        let top = self.cap.unwrap_or(usize::MAX).min(self.ladder.len() - 1);
        let bps = self.estimate() * self.est.availability() * c.keep_factor;
        let fam_of = |r: usize| self.ladder.codec(r);
        for i in (0..buffered.len()).rev() {
            let Buffered {
                segment: k,
                rep,
                due_in,
            } = buffered[i];
            if k >= count || rep >= top {
                continue;
            }
            let before = (i > 0).then(|| fam_of(buffered[i - 1].rep));
            let after = buffered.get(i + 1).map(|s| fam_of(s.rep));
            let changes =
                |f| before.is_some_and(|b| b != f) as u8 + after.is_some_and(|a| a != f) as u8;
            let now_changes = changes(fam_of(rep));
            let best = (rep + 1..=top).rev().find(|&r| {
                changes(fam_of(r)) <= now_changes
                    && self.fetch_time(r, k, bps) <= secs(due_in) - secs(c.reserve)
                    && buffer.bytes as f64 + self.ladder.segment_bytes(r, k)
                        <= c.max_buffer_bytes as f64
            });
            if let Some(r) = best {
                self.stats.upgrades += 1;
                let choice = Choice {
                    rep: r,
                    reason: Reason::Upgrade,
                };
                return Some((k, choice));
            }
        }
        None
    }

    /// Whether to start another download: fetch until `max_buffer` (time) or `max_buffer_bytes`
    /// is reached, then pause until the buffer drains `resume_gap` below.
    pub fn fetch_advice(&mut self, buffer: &BufferLevel) -> FetchAdvice {
        let c = &self.config;
        let ahead = secs(buffer.ahead);
        let full = ahead >= secs(c.max_buffer) || buffer.bytes >= c.max_buffer_bytes;
        if self.paused {
            let next = self.current.map_or(0.0, |r| self.ladder.mean_bytes(r)) as u64;
            if ahead <= secs(c.max_buffer) - secs(c.resume_gap)
                && buffer.bytes + next <= c.max_buffer_bytes
            {
                self.paused = false;
            }
        } else if full {
            self.paused = true;
        }
        if self.paused {
            FetchAdvice::Pause
        } else {
            FetchAdvice::Fetch
        }
    }
}

#[cfg(test)]
mod tests;
