//! The quality selector: from the ladder, the measurements and the buffer level, which candidate
//! to fetch for the next segment, whether to abandon a download, and whether to fetch at all.

use std::time::Duration;

use super::bola::Bola;
use super::estimator::{ThroughputEstimator, OUTAGE_TTFB_S};
use super::ladder::{CodecFamily, Ladder};

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

/// A buffered segment, for [`QualitySelector::upgrade`].
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionEstimate {
    pub bps: f64,
    pub latency: Duration,
}

/// The progress of the media download in flight, from [`QualitySelector::check_abandon`]'s
/// calls: a link that goes down while a segment downloads shows as bytes that stop coming, not
/// as a late first byte, and must count as an outage rather than as a slow link.
#[derive(Debug, Clone, PartialEq)]
struct Progress {
    segment: usize,
    rep: usize,
    bytes_total: u64,
    ttfb_s: f64,
    /// Bytes received when last seen growing, and when (seconds since the request).
    bytes: u64,
    at_s: f64,
    /// Stalls that ended (bytes came again), seconds in all.
    stalled_s: f64,
}

impl Progress {
    /// Bit rate while bytes flowed, before the last sighting (None before any).
    fn rate_bps(&self) -> Option<f64> {
        let t = self.at_s - self.ttfb_s;
        (self.bytes > 0 && t > 0.0).then(|| self.bytes as f64 * 8.0 / t)
    }

    /// How much of the time from the last sighting to `now_s`, in which `new_bytes` came, the
    /// link was stalled: the time beyond what those bytes take at the earlier rate, if longer
    /// than an outage's threshold (sightings far apart are not stalls by themselves).
    fn gap_stall(&self, now_s: f64, new_bytes: u64) -> f64 {
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
mod tests {
    use super::*;
    use crate::abr::ladder::{Candidate, CodecFamily};

    const S: Duration = Duration::from_secs(1);

    fn cand(id: &str, codec: CodecFamily, bw: u64) -> Candidate {
        Candidate {
            id: id.into(),
            codec,
            adaptation_set: 0,
            bandwidth_bps: bw,
            quality_ranking: None,
            segment_bytes: None,
            segment_durations: None,
        }
    }

    /// 100/200/400 kb/s Opus and 800 kb/s FLAC, bandwidth only, `n` segments of 10 s.
    fn ladder(n: usize) -> Ladder {
        Ladder::new(
            vec![
                cand("o100", CodecFamily::Opus, 100_000),
                cand("o200", CodecFamily::Opus, 200_000),
                cand("o400", CodecFamily::Opus, 400_000),
                cand("f800", CodecFamily::Flac, 800_000),
            ],
            &vec![10 * S; n],
        )
        .unwrap()
    }

    /// A config with only the throughput rule and the deadline guard active.
    fn throughput_only() -> AbrConfig {
        AbrConfig {
            bola_low: 10_000 * S,
            bola_high: 20_000 * S,
            hold_buffer: 10_000 * S,
            min_buffer_for_up: Duration::ZERO,
            build_buffer: Duration::ZERO,
            cross_codec_margin: 0.0,
            cross_codec_min_interval: Duration::ZERO,
            ..AbrConfig::default()
        }
    }

    /// A selector whose estimate is exactly `bps` with zero latency.
    fn measured(l: Ladder, config: AbrConfig, bps: f64) -> QualitySelector {
        let mut q = QualitySelector::new(l, config);
        q.on_download(&Download {
            bytes: (bps / 8.0 * 10.0) as u64,
            ttfb: Duration::ZERO,
            total: 10 * S,
        });
        q
    }

    fn playing(secs: u32) -> BufferLevel {
        BufferLevel {
            ahead: secs * S,
            bytes: 0,
            playing: true,
        }
    }

    #[test]
    fn startup_from_default_or_previous_estimate() {
        let stopped = BufferLevel {
            ahead: Duration::ZERO,
            bytes: 0,
            playing: false,
        };
        // Cold: 1 Mb/s assumed, the 1 s budget fits only 100 kb/s × 10 s (+ 0.1 s latency).
        let mut q = QualitySelector::new(ladder(6), AbrConfig::default());
        let c = q.choose(0, &stopped, Duration::ZERO);
        assert_eq!((c.rep, c.reason), (0, Reason::Startup));
        // Warm: last session measured 5 Mb/s, 20 ms: 800 kb/s × 10 s arrives in 1.62 s, too slow
        // for the budget; 400 kb/s in 0.82 s fits.
        let prev = SessionEstimate {
            bps: 5e6,
            latency: Duration::from_millis(20),
        };
        let mut q = QualitySelector::new(ladder(6), AbrConfig::default()).with_previous(Some(prev));
        assert_eq!(q.choose(0, &stopped, Duration::ZERO).rep, 2);
        assert_eq!(q.session_estimate(), Some(prev));
    }

    #[test]
    fn start_codec_keeps_the_first_choice_in_the_preferred_family() {
        let stopped = BufferLevel {
            ahead: Duration::ZERO,
            bytes: 0,
            playing: false,
        };
        let flac_first = AbrConfig {
            start_codec: Some(CodecFamily::Flac),
            ..AbrConfig::default()
        };
        // Cold, nothing FLAC fits the budget: the lowest FLAC, not the Opus that would.
        let mut q = QualitySelector::new(ladder(6), flac_first.clone());
        assert_eq!(q.choose(0, &stopped, Duration::ZERO).rep, 3);
        // A rebuffer may still fall back to the lowest rung of any family.
        let mut q = QualitySelector::new(ladder(6), flac_first);
        q.choose(0, &stopped, Duration::ZERO);
        q.choose(1, &playing(5), S);
        assert_eq!(q.choose(2, &stopped, 2 * S).rep, 0);
    }

    #[test]
    fn throughput_rule_upgrades_at_085_keeps_until_095() {
        // 450 kb/s: 400 needs 0.89 of it (> 0.85): not an up-switch target...
        let mut q = measured(ladder(60), throughput_only(), 450e3);
        assert_eq!(q.choose(1, &playing(40), S).rep, 1);
        // (Near the end of the track, the buffer would have bought 400 kb/s.)
        assert_eq!(q.choose(55, &playing(40), S).rep, 2);
        q.current = Some(1);
        // ...but once at 400, it is kept (0.89 < 0.95).
        q.current = Some(2);
        assert_eq!(q.choose(2, &playing(40), S).rep, 2);
        // 480 kb/s: 400 needs 0.83: up.
        let mut q = measured(ladder(60), throughput_only(), 480e3);
        assert_eq!(q.choose(1, &playing(40), S).rep, 2);
        // 415 kb/s: 400 needs 0.964 (> 0.95): down, to what needs at most 0.85 (200).
        let mut q = measured(ladder(60), throughput_only(), 415e3);
        q.current = Some(2);
        let c = q.choose(1, &playing(40), S);
        assert_eq!((c.rep, c.reason), (1, Reason::Throughput));
    }

    #[test]
    fn exact_sizes_not_the_bandwidth_attribute_decide() {
        // The attribute says 800 kb/s, the real segments are 400 kb/s: 500 kb/s is enough.
        let mut f = cand("f", CodecFamily::Flac, 800_000);
        f.segment_bytes = Some(vec![500_000; 60]);
        let l = Ladder::new(
            vec![cand("o", CodecFamily::Opus, 100_000), f],
            &vec![10 * S; 60],
        )
        .unwrap();
        let mut q = measured(l, throughput_only(), 500e3);
        assert_eq!(q.choose(1, &playing(40), S).rep, 1);
    }

    #[test]
    fn exoplayer_buffer_rules() {
        let cfg = AbrConfig {
            build_buffer: Duration::ZERO,
            bola_low: 10_000 * S,
            bola_high: 20_000 * S,
            cross_codec_margin: 0.0,
            ..AbrConfig::default()
        };
        // 1.2 Mb/s sustains 800 kb/s, but under 10 s buffered: no up-switch...
        let mut q = measured(ladder(60), cfg.clone(), 1.2e6);
        q.current = Some(0);
        let c = q.choose(1, &playing(9), S);
        assert_eq!((c.rep, c.reason), (0, Reason::LowBuffer));
        assert_eq!(q.choose(2, &playing(11), S).rep, 3);
        // ...unless the segment is quick to fetch: at 10 Mb/s, 0.94 s, three times over in the
        // 6 s above the reserve.
        let mut q = measured(ladder(60), cfg.clone(), 10e6);
        q.current = Some(0);
        assert_eq!(q.choose(1, &playing(9), S).rep, 3);
        // 25 s or more buffered: no down-switch although 800 kb/s no longer fits 500 kb/s...
        let mut q = measured(ladder(60), cfg.clone(), 500e3);
        q.current = Some(3);
        let c = q.choose(1, &playing(25), S);
        assert_eq!((c.rep, c.reason), (3, Reason::BufferHold));
        // ...but under 25 s, down it goes.
        assert!(q.choose(2, &playing(24), S).rep < 3);
        // And the hold never risks the deadline: 800 kb/s × 10 s takes 16.9 s at 0.95 × 500 kb/s,
        // more than 18 s − 3 s reserve... at 19 s it fits, at 18 s it does not.
        let mut cfg2 = cfg;
        cfg2.hold_buffer = 10 * S;
        let mut q = measured(ladder(60), cfg2, 500e3);
        q.current = Some(3);
        assert_eq!(q.choose(1, &playing(20), S).rep, 3);
        q.current = Some(3);
        assert!(q.choose(2, &playing(18), S).rep < 3);
    }

    #[test]
    fn deadline_guard_lowers_until_the_segment_arrives_in_time() {
        // 1 Mb/s; 7 s buffered, 3 s reserve: 4 s to fetch at 0.95 Mb/s: 3.8 Mbit, so 200 kb/s
        // (2 Mbit) fits and 400 (4 Mbit) does not, whatever the other rules say.
        let mut q = measured(ladder(60), throughput_only(), 1e6);
        let c = q.choose(1, &playing(7), S);
        assert_eq!((c.rep, c.reason), (1, Reason::Deadline));
        // With nothing buffered the lowest is all there is.
        assert_eq!(q.choose(2, &playing(0), S).rep, 0);
    }

    #[test]
    fn buffer_first_then_quality() {
        let cfg = AbrConfig {
            min_buffer_for_up: Duration::ZERO,
            ..AbrConfig::default()
        };
        // 1.5 Mb/s: 800 kb/s is sustainable, but under 20 s buffered only what downloads 3×
        // faster than real time (≤ 3.3 s per 10 s segment at 0.85 × 1.5 Mb/s: 400 kb/s).
        let mut q = measured(ladder(60), cfg.clone(), 1.5e6);
        let c = q.choose(1, &playing(12), S);
        assert_eq!((c.rep, c.reason), (2, Reason::BufferBuild));
        assert_eq!(q.choose(2, &playing(20), S).rep, 3);
        // After a 30 s outage, the buffer to build covers it (1.25 × 30 + 3 s), and the link's
        // availability counts against what it sustains: 800 kb/s is out of reach at 30 s.
        let mut q = measured(ladder(60), cfg, 1.5e6);
        q.on_download(&Download {
            bytes: 100_000,
            ttfb: 30 * S,
            total: 31 * S,
        });
        assert!((q.build_level() - 40.5).abs() < 0.1, "{}", q.build_level());
        assert!(q.est.availability() < 0.5, "{}", q.est.availability());
        assert!(q.choose(1, &playing(30), S).rep < 3);
        // A request given up after 30 s without an answer counts the same.
        let mut q = measured(ladder(60), AbrConfig::default(), 1.5e6);
        q.on_request_timeout(30 * S);
        assert!((q.build_level() - 40.5).abs() < 0.1, "{}", q.build_level());
    }

    #[test]
    fn a_stall_mid_download_is_an_outage_not_a_slow_link() {
        // 1 Mb/s, 30 ms; a 400 kB segment: 100 kB in the first 0.83 s, then nothing for 30 s
        // (the link went down mid-transfer; the first byte was on time), then the rest at 1 Mb/s.
        let mut q = QualitySelector::new(ladder(60), AbrConfig::default());
        let ms = Duration::from_millis;
        let at = |elapsed: Duration, got: u64| InFlight {
            rep: 0,
            segment: 3,
            bytes_total: 400_000,
            bytes_received: got,
            elapsed,
            ttfb: Some(ms(30)),
        };
        let mut t = ms(280);
        while t <= ms(830) {
            let got = (t - ms(30)).as_secs_f64() * 125_000.0;
            assert_eq!(q.check_abandon(&at(t, got as u64), &playing(40), t), None);
            t += ms(250);
        }
        let stalled_bytes = (ms(780) - ms(30)).as_secs_f64() * 125_000.0;
        while t < ms(30_830) {
            q.check_abandon(&at(t, stalled_bytes as u64), &playing(40), t);
            t += ms(250);
        }
        // Already known as an outage while it lasts.
        assert!(
            q.est.longest_outage_s() > 29.0,
            "{}",
            q.est.longest_outage_s()
        );
        q.on_download(&Download {
            bytes: 400_000,
            ttfb: ms(30),
            total: ms(33_230),
        });
        // The rate is the link's when up, not 400 kB over 33 s (97 kb/s)...
        let bps = q.est.estimate_bps().unwrap();
        assert!((bps - 1e6).abs() < 0.05e6, "{bps}");
        // ...and the stall counts as an outage: buffer to build, availability.
        let o = q.est.longest_outage_s();
        assert!((29.5..31.0).contains(&o), "{o}");
        assert!(q.build_level() > 39.0, "{}", q.build_level());
        assert!(q.est.availability() < 0.2, "{}", q.est.availability());
        // Bytes that keep coming, even slowly, are no outage; nor are far-apart calls.
        let mut q = QualitySelector::new(ladder(60), AbrConfig::default());
        for (s, got) in [(1, 10_000), (5, 50_000), (9, 90_000)] {
            q.check_abandon(&at(s * S, got), &playing(40), S);
        }
        q.on_download(&Download {
            bytes: 400_000,
            ttfb: ms(30),
            total: 40 * S,
        });
        assert_eq!(q.est.longest_outage_s(), 0.0);
        assert!((q.est.estimate_bps().unwrap() - 80e3).abs() < 1e3);
    }

    #[test]
    fn a_large_buffer_is_spent_evenly_within_the_codec() {
        // 300 kb/s sustains 200 kb/s (not 400) by the throughput rule; with 200 s buffered and
        // 30 segments left, every one at 400 kb/s still arrives in time: take it now, rather
        // than hoard the buffer for the end. Not across codecs (FLAC), not below bola_high.
        let cfg = AbrConfig {
            min_buffer_for_up: Duration::ZERO,
            ..AbrConfig::default()
        };
        let mut q = measured(ladder(60), cfg.clone(), 300e3);
        q.current = Some(1);
        let c = q.choose(30, &playing(200), S);
        assert_eq!((c.rep, c.reason), (2, Reason::EndGame));
        let mut q = measured(ladder(60), cfg, 300e3);
        q.current = Some(1);
        assert_eq!(q.choose(30, &playing(29), S).rep, 1);
    }

    #[test]
    fn end_of_track_spends_the_buffer_on_quality() {
        // 300 kb/s: only 200 kb/s is sustainable, but with 36 s buffered and 2 segments left,
        // 400 kb/s for both arrives in time (4 Mbit each at 0.85 × 300 kb/s = 15.7 s).
        let mut q = measured(ladder(6), throughput_only(), 300e3);
        q.current = Some(1);
        let c = q.choose(4, &playing(36), S);
        assert_eq!((c.rep, c.reason), (2, Reason::EndGame));
        // With 5 segments left it would not: the throughput rule stands.
        let mut q = measured(ladder(6), throughput_only(), 300e3);
        q.current = Some(1);
        assert_eq!(q.choose(1, &playing(36), S).rep, 1);
    }

    #[test]
    fn cross_codec_up_switch_costs_more() {
        let cfg = AbrConfig {
            cross_codec_margin: 0.2,
            cross_codec_min_interval: 20 * S,
            ..throughput_only()
        };
        // 1 Mb/s: 800 kb/s FLAC needs 0.8 (< 0.85) but not the 0.85 / 1.2 = 0.71 a codec
        // change asks for: stay with the best Opus.
        let mut q = measured(ladder(60), cfg.clone(), 1e6);
        q.current = Some(2);
        let c = q.choose(1, &playing(40), S);
        assert_eq!((c.rep, c.reason), (2, Reason::CodecCost));
        // 1.2 Mb/s: enough headroom, FLAC.
        let mut q = measured(ladder(60), cfg, 1.2e6);
        q.current = Some(2);
        assert_eq!(q.choose(1, &playing(40), 100 * S).rep, 3);
        assert_eq!(q.stats().codec_switches, 1);
        // Forced down to Opus at t = 105 s (deadline), then back up too soon is refused.
        let c = q.choose(2, &playing(5), 105 * S);
        assert_eq!((c.rep, c.reason), (1, Reason::Deadline));
        assert_eq!(q.choose(3, &playing(40), 110 * S).reason, Reason::CodecCost);
        assert_eq!(q.choose(4, &playing(40), 126 * S).rep, 3);
    }

    #[test]
    fn a_start_too_slow_for_real_time_is_dropped_before_it_plays() {
        // Cold, the first segment is the FLAC rung (1 MB for 10 s). On a 500 kb/s link its
        // first bytes come at that rate: it would take 16 s, so it goes to the best Opus rung
        // that comes within 8 s at that rate (400 kb/s would need 8.1 s), before it plays.
        let cfg = AbrConfig {
            start_codec: Some(CodecFamily::Flac),
            ..AbrConfig::default()
        };
        let stopped = BufferLevel {
            ahead: Duration::ZERO,
            bytes: 0,
            playing: false,
        };
        let mut q = QualitySelector::new(ladder(6), cfg.clone());
        let c = q.choose(0, &stopped, Duration::ZERO);
        assert_eq!((c.rep, c.reason), (3, Reason::Startup));
        let at = |bps: f64| InFlight {
            rep: 3,
            segment: 0,
            bytes_total: 1_000_000,
            bytes_received: (bps / 8.0 * 0.05) as u64,
            elapsed: Duration::from_millis(130),
            ttfb: Some(Duration::from_millis(80)),
        };
        let c = q
            .check_start(&at(500e3), Duration::from_millis(130))
            .unwrap();
        assert_eq!((c.rep, c.reason), (1, Reason::Abandon));
        assert_eq!(q.stats().abandons, 1);
        // Once per segment.
        assert_eq!(q.check_start(&at(500e3), Duration::from_millis(200)), None);
        // On a 10 Mb/s link it stays; and never once playing.
        let mut q = QualitySelector::new(ladder(6), cfg);
        q.choose(0, &stopped, Duration::ZERO);
        assert_eq!(q.check_start(&at(10e6), Duration::from_millis(130)), None);
        q.choose(1, &playing(9), S);
        let mut f = at(100e3);
        f.segment = 1;
        assert_eq!(q.check_start(&f, S), None);
    }

    #[test]
    fn abandon_a_download_that_would_arrive_too_late() {
        let mut q = measured(ladder(60), throughput_only(), 2e6);
        // 800 kb/s segment (1 MB), 100 kB in after 4 s at 200 kb/s: 36 s to go, 12 s buffered.
        let f = InFlight {
            rep: 3,
            segment: 5,
            bytes_total: 1_000_000,
            bytes_received: 100_000,
            elapsed: 4 * S + Duration::from_millis(100),
            ttfb: Some(Duration::from_millis(100)),
        };
        let c = q.check_abandon(&f, &playing(12), S).unwrap();
        // At 200 kb/s, 9 s of budget: 100 kb/s (1 Mbit, 5.1 s) fits, 200 kb/s (10.1 s) not.
        assert_eq!((c.rep, c.reason), (0, Reason::Abandon));
        // Once per segment.
        assert_eq!(q.check_abandon(&f, &playing(12), S), None);
        // Not when it will arrive in time, nor before the first byte (an outage: nothing helps).
        let mut q = measured(ladder(60), throughput_only(), 2e6);
        assert_eq!(q.check_abandon(&f, &playing(60), S), None);
        let waiting = InFlight {
            ttfb: None,
            bytes_received: 0,
            ..f
        };
        assert_eq!(q.check_abandon(&waiting, &playing(5), S), None);
    }

    #[test]
    fn fetch_pauses_when_full_and_resumes_below_the_gap() {
        let cfg = AbrConfig {
            max_buffer: 60 * S,
            resume_gap: 10 * S,
            max_buffer_bytes: 3_000_000,
            ..AbrConfig::default()
        };
        let mut q = QualitySelector::new(ladder(60), cfg);
        q.current = Some(2); // 500 kB segments
        let lvl = |s: u32, bytes: u64| BufferLevel {
            ahead: s * S,
            bytes,
            playing: true,
        };
        assert_eq!(q.fetch_advice(&lvl(59, 0)), FetchAdvice::Fetch);
        assert_eq!(q.fetch_advice(&lvl(60, 0)), FetchAdvice::Pause);
        assert_eq!(q.fetch_advice(&lvl(55, 0)), FetchAdvice::Pause);
        assert_eq!(q.fetch_advice(&lvl(50, 0)), FetchAdvice::Fetch);
        // The byte budget too.
        assert_eq!(q.fetch_advice(&lvl(5, 3_000_000)), FetchAdvice::Pause);
        // Resumes only when the next segment fits in the budget.
        assert_eq!(q.fetch_advice(&lvl(5, 2_600_000)), FetchAdvice::Pause);
        assert_eq!(q.fetch_advice(&lvl(5, 2_400_000)), FetchAdvice::Fetch);
    }

    #[test]
    fn seek_starts_again_and_cap_holds() {
        let stopped = BufferLevel {
            ahead: Duration::ZERO,
            bytes: 0,
            playing: false,
        };
        let mut q = measured(ladder(60), throughput_only(), 10e6);
        assert_eq!(q.choose(5, &playing(40), S).rep, 3);
        // Running dry after playing: the fastest way back.
        q.played = true;
        assert_eq!(q.choose(6, &stopped, S).reason, Reason::Rebuffer);
        // After a seek: a start at 10 Mb/s, 800 kb/s × 10 s arrives in 0.8 s.
        q.on_seek();
        let c = q.choose(30, &stopped, S);
        assert_eq!((c.rep, c.reason), (3, Reason::Startup));
        // max-bitrate lowered to the 400 kb/s candidate.
        q.set_cap(Some(2));
        assert_eq!(q.choose(31, &playing(40), S).rep, 2);
        q.set_cap(None);
        assert_eq!(q.choose(32, &playing(40), S).rep, 3);
    }

    /// Segments `(segment, rep)` buffered at 20 s into the track, the first one playing.
    fn at_20s(segs: &[(usize, usize)]) -> Vec<Buffered> {
        segs.iter()
            .map(|&(segment, rep)| Buffered {
                segment,
                rep,
                due_in: (segment as u32 * 10).saturating_sub(20) * S,
            })
            .collect()
    }

    #[test]
    fn idle_link_upgrades_buffered_segments_from_the_end() {
        let mut q = measured(ladder(6), throughput_only(), 1e6);
        // At 20 s, segments 2 (playing) to 5 buffered at 100 kb/s Opus: the last one first, and
        // not to FLAC (that would add a codec change): 400 kb/s Opus.
        let all_low = at_20s(&[(2, 0), (3, 0), (4, 0), (5, 0)]);
        let (k, c) = q.upgrade(&all_low, &playing(40)).unwrap();
        assert_eq!((k, c.rep, c.reason), (5, 2, Reason::Upgrade));
        // FLAC already at the end: segment 3 may become FLAC (no extra change) but 800 kb/s
        // (8.4 s at 0.95 Mb/s) does not arrive 3 s before it plays in 10 s; 400 kb/s does.
        let flac_end = at_20s(&[(2, 0), (3, 0), (4, 3), (5, 3)]);
        let (k, c) = q.upgrade(&flac_end, &playing(40)).unwrap();
        assert_eq!((k, c.rep), (3, 2));
        // Nothing while rebuffering, nothing above the cap.
        let stalled = BufferLevel {
            playing: false,
            ..playing(40)
        };
        assert_eq!(q.upgrade(&all_low, &stalled), None);
        q.set_cap(Some(0));
        assert_eq!(q.upgrade(&all_low, &playing(40)), None);
        assert_eq!(q.stats().upgrades, 2);
    }
}
