// SPDX-License-Identifier: MPL-2.0
//! The download engine: one tokio task per play (start or seek) that picks a representation per
//! segment, streams init and media segments into a byte- and time-bounded queue as their bytes
//! arrive, abandons a download the selector says will come too late, refreshes the audio object
//! on 403 or expiry, and reports measurements for `stats`.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::abr;
use crate::fetch::{Fetcher, Request};
use crate::mpd::{sidx, SegmentScheme};
use crate::segments::{self, InitRef, SegmentPlan, SegmentRef};
use amzmusic_common::codec::Codec;

mod download;
mod handle;
mod history;
pub mod presentation;
mod queue;
mod refresh;
mod upgrade;

use download::Streamed;
pub use download::{ABANDON_CHECK, CHUNK_BYTES, FLUSH_INTERVAL, START_SAMPLE};
pub use handle::Engine;
pub use history::History;
pub use presentation::{quality_rank, Built, Candidate, Presentation, Wanted};
pub use queue::{Item, Next, Queue, QueuedSegment, UNDERRUN};
pub use refresh::{AudioObject, Refresher};

/// No single segment response may be larger than this (`body_limit::SEGMENT`).
pub const MAX_RESPONSE_BYTES: u64 = amzmusic_common::http::body_limit::SEGMENT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// Access refused even after a refresh (or with nobody to refresh from).
    NotAuthorized(String),
    NotFound(String),
    /// Retries exhausted.
    Network(String),
    /// The manifest (or an index, or a refreshed manifest) cannot be used.
    Manifest(String),
    /// A segment's bytes cannot be what the manifest says (its boxes do not fit it).
    Media(String),
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub candidate: Option<usize>,
    pub estimate_bps: f64,
    pub switches: u64,
    pub bytes: u64,
    pub segments: u64,
    pub refreshes: u64,
    pub retries: u64,
    pub stalls: u64,
    /// Media downloads given up for a lower representation (the selector's abandon rule).
    pub abandons: u64,
    /// Times playback ran dry (the streaming thread waited for data after audio had flowed).
    pub underruns: u64,
    /// Buffered segments fetched again from a better candidate and swapped in before they
    /// went downstream (the selector's upgrade, once everything is fetched).
    pub upgrades: u64,
    /// Such upgrades that came too late (or failed) and were dropped: the buffered segment
    /// played.
    pub upgrades_dropped: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub buffer_time: Duration,
    pub buffer_bytes: u64,
}

/// The selector and how its ladder indexes map to our candidates.
pub struct Abr {
    pub selector: abr::QualitySelector,
    /// Ladder index -> candidate index.
    pub map: Vec<usize>,
    /// The max-bitrate the selector's cap was computed for.
    pub cap_for: u64,
}

pub struct RepPlan {
    pub init: Option<InitRef>,
    pub segments: Vec<SegmentRef>,
}

/// Everything one play needs; shared by the download task and the element.
pub struct Context {
    pub presentation: Mutex<Arc<Presentation>>,
    pub audio_object: Mutex<AudioObject>,
    pub fetcher: Fetcher,
    pub limits: Limits,
    /// Shared with the element's streaming thread.
    pub queue: Arc<Queue>,
    /// What `stats` reports.
    pub stats: Mutex<Stats>,
    pub refresher: Option<Arc<dyn Refresher>>,
    pub plans: Mutex<HashMap<String, Arc<RepPlan>>>,
    pub inits: Mutex<HashMap<String, Bytes>>,
    /// The rate estimate when no quality selector decides (it keeps its own).
    pub throughput: Mutex<abr::ThroughputEstimator>,
    /// Codec the engine starts in, and stays in unless `codec_switching`.
    pub family: Codec,
    /// The selector may choose another codec family (a new stream downstream): set when the
    /// element downstream takes a codec change (amzdashbin).
    pub codec_switching: bool,
    /// The quality selector (crate::abr) over the family's candidates, built once the
    /// segment plans are known; None falls back to [`abr::fallback`].
    pub abr: Mutex<Option<Abr>>,
    /// Origin of the selector's clock.
    pub epoch: Instant,
    /// `max-bitrate` and `representation`, changeable while playing.
    pub live: Arc<Live>,
    /// The last stream's estimates, which this one starts from and leaves for the next.
    pub history: History,
    /// Held while a refresh is in flight.
    pub refresh_lock: tokio::sync::Mutex<()>,
    /// Requests are built under the read side; a refresh swaps URLs and headers under the
    /// write side, so no request pairs one generation's headers with another's URLs.
    pub swap_lock: RwLock<()>,
    /// Log sink (the element's debug category), never given secrets.
    pub log: Box<dyn Fn(&str) + Send + Sync>,
}

/// What the element configures a play with.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: Limits,
    /// Codec to start in (see [`Context::family`]).
    pub family: Codec,
    pub codec_switching: bool,
    /// The settings that change while playing (the element's one copy).
    pub live: Arc<Live>,
    /// What the last stream left (the element's, shared through its GstContext).
    pub history: History,
}

/// The settings that may change while playing: one copy, the element's, which the engine reads
/// at each decision.
#[derive(Debug, Default)]
pub struct Live {
    /// `max-bitrate` (0 = none).
    max_bitrate: std::sync::atomic::AtomicU64,
    /// `representation`: a Representation id that overrides the selector (any codec: a codec
    /// change starts a new stream downstream).
    pinned: Mutex<Option<String>>,
}

impl Live {
    pub fn set_max_bitrate(&self, bps: u64) {
        self.max_bitrate
            .store(bps, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn max_bitrate(&self) -> u64 {
        self.max_bitrate.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Plays representation `id` from the next segment on (None or empty: adaptive again).
    pub fn pin(&self, id: Option<String>) {
        *self.pinned.lock().unwrap() = id.filter(|s| !s.is_empty());
    }

    pub fn pinned(&self) -> Option<String> {
        self.pinned.lock().unwrap().clone()
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned.lock().unwrap().is_some()
    }
}

impl Context {
    pub fn new(
        presentation: Presentation,
        audio_object: AudioObject,
        fetcher: Fetcher,
        refresher: Option<Arc<dyn Refresher>>,
        queue: Arc<Queue>,
        config: Config,
        log: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Context {
        // The selector's half-lives, for the estimate used without one.
        let d = abr::AbrConfig::default();
        Context {
            presentation: Mutex::new(Arc::new(presentation)),
            audio_object: Mutex::new(audio_object),
            fetcher,
            limits: config.limits,
            queue,
            stats: Mutex::new(Stats::default()),
            refresher,
            plans: Mutex::new(HashMap::new()),
            inits: Mutex::new(HashMap::new()),
            throughput: Mutex::new(abr::ThroughputEstimator::new(
                d.fast_half_life.as_secs_f64(),
                d.slow_half_life.as_secs_f64(),
            )),
            family: config.family,
            codec_switching: config.codec_switching,
            abr: Mutex::new(None),
            epoch: Instant::now(),
            live: config.live,
            history: config.history,
            refresh_lock: tokio::sync::Mutex::new(()),
            swap_lock: RwLock::new(()),
            log,
        }
    }
}

impl Context {
    fn estimate(&self) -> f64 {
        self.throughput
            .lock()
            .unwrap()
            .estimate_bps()
            .or(self.history.estimate_bps())
            .unwrap_or(abr::FALLBACK_ESTIMATE_BPS)
    }

    /// One finished download (of `bytes` in all, over every attempt) for the estimates.
    fn measure(&self, bytes: u64, ttfb: Duration, total: Duration) {
        // The fallback estimate (the estimator counts tiny responses for latency only).
        {
            let mut t = self.throughput.lock().unwrap();
            t.add(bytes, ttfb.as_secs_f64(), total.as_secs_f64());
            if let Some(e) = t.estimate_bps() {
                self.history.remember_estimate(e);
            }
        }
        let abr_estimate = self.abr.lock().unwrap().as_mut().and_then(|a| {
            a.selector
                .on_download_at(&abr::Download { bytes, ttfb, total }, self.epoch.elapsed());
            let est = a.selector.session_estimate();
            self.history.remember_session(est);
            a.selector.stats().estimate_bps
        });
        self.stats.lock().unwrap().estimate_bps = abr_estimate.unwrap_or_else(|| self.estimate());
    }

    /// Playback ran dry: the selector counts it (and decides the next segment as a rebuffer).
    pub fn on_underrun(&self) {
        self.stats.lock().unwrap().underruns += 1;
        if let Some(a) = self.abr.lock().unwrap().as_mut() {
            a.selector.on_stall();
        }
    }

    /// The buffer the selector decides on: the demuxer's queue and what went downstream that
    /// the listener has not heard yet.
    fn buffer_level(&self) -> abr::BufferLevel {
        self.queue.level(true)
    }

    /// Builds the selector over the family's candidates, or every candidate with
    /// `codec_switching` (planning each: exact segment sizes come from SegmentList ranges or
    /// the sidx). Kept across seeks.
    async fn build_abr(&self) -> Result<(), EngineError> {
        if let Some(a) = self.abr.lock().unwrap().as_mut() {
            a.selector.on_seek();
            return Ok(());
        }
        let p = self.presentation.lock().unwrap().clone();
        let family: Vec<usize> = (0..p.candidates.len())
            .filter(|i| self.codec_switching || p.candidates[*i].codec == self.family)
            .collect();
        let plans = futures::future::join_all(family.iter().map(|c| self.plan(*c))).await;
        let plans = plans.into_iter().collect::<Result<Vec<_>, _>>()?;
        let durations: Vec<Duration> = plans[0].segments.iter().map(|s| s.duration).collect();
        let ladder_cands: Vec<abr::Candidate> = family
            .iter()
            .zip(&plans)
            .map(|(ci, plan)| {
                let c = &p.candidates[*ci];
                let rep = p.rep(c);
                let sizes: Option<Vec<u64>> = plan.segments.iter().map(|s| s.size).collect();
                let own: Vec<Duration> = plan.segments.iter().map(|s| s.duration).collect();
                abr::Candidate {
                    id: c.id.clone(),
                    codec: c.codec.abr_family(),
                    adaptation_set: c.set as u32,
                    bandwidth_bps: c.bandwidth,
                    quality_ranking: rep.quality_ranking,
                    segment_bytes: sizes,
                    segment_durations: (own != durations).then_some(own),
                }
            })
            .collect();
        let ladder = match abr::Ladder::new(ladder_cands, &durations) {
            Ok(l) => l,
            Err(e) => {
                (self.log)(&format!("no ABR ladder ({e:?}): simple throughput choice"));
                return Ok(());
            }
        };
        let map: Vec<usize> = ladder
            .candidates()
            .iter()
            .map(|lc| {
                family
                    .iter()
                    .copied()
                    .find(|ci| p.candidates[*ci].id == lc.id)
                    .expect("ladder holds our candidates")
            })
            .collect();
        // The selector's buffer levels are for the default minute of buffer; a smaller
        // buffer-time scales them down, or an up-switch (10 s buffered) could never happen.
        let d = abr::AbrConfig::default();
        let within =
            |level: Duration, share: f64| level.min(self.limits.buffer_time.mul_f64(share));
        let config = abr::AbrConfig {
            min_buffer_for_up: within(d.min_buffer_for_up, 0.5),
            build_buffer: within(d.build_buffer, 0.75),
            bola_low: within(d.bola_low, 0.5),
            bola_high: within(d.bola_high, 0.9),
            hold_buffer: within(d.hold_buffer, 0.9),
            max_buffer: self.limits.buffer_time,
            max_buffer_bytes: self.limits.buffer_bytes,
            resume_gap: (self.limits.buffer_time / 6).min(Duration::from_secs(10)),
            // Across codecs, start in the manifest's preferred family (FLAC for a lossless
            // track): Opus is the fallback the measured link or a rebuffer calls for.
            start_codec: self.codec_switching.then(|| self.family.abr_family()),
            ..Default::default()
        };
        let selector =
            abr::QualitySelector::new(ladder, config).with_previous(self.history.session());
        *self.abr.lock().unwrap() = Some(Abr {
            selector,
            map,
            cap_for: u64::MAX,
        });
        Ok(())
    }

    /// Applies the current max-bitrate as the selector's cap (the highest ladder entry within
    /// it; the lowest when none is).
    fn apply_cap(&self, a: &mut Abr) {
        let max = self.live.max_bitrate();
        if a.cap_for == max {
            return;
        }
        a.cap_for = max;
        let p = self.presentation.lock().unwrap().clone();
        let cap = (max > 0).then(|| {
            a.map
                .iter()
                .rposition(|ci| p.candidates[*ci].bandwidth <= max)
                .unwrap_or(0)
        });
        a.selector.set_cap(cap);
    }

    async fn plan(&self, cand: usize) -> Result<Arc<RepPlan>, EngineError> {
        let p = self.presentation.lock().unwrap().clone();
        let c = &p.candidates[cand];
        if let Some(pl) = self.plans.lock().unwrap().get(&c.id) {
            return Ok(pl.clone());
        }
        let period = &p.mpd.periods[p.period];
        let rep = p.rep(c);
        let planned = segments::plan_with(
            self.fetcher.allow_list(),
            &p.manifest_url,
            rep,
            period.start,
            period.duration,
        )
        .map_err(|e| EngineError::Manifest(e.to_string()))?;
        let plan = match planned {
            SegmentPlan::Ready { init, segments } => RepPlan { init, segments },
            SegmentPlan::NeedsIndex { init, url, index } => {
                let headers = self.headers();
                let u = url.clone();
                let f = self
                    .fetch(&format!("index of {}", c.id), move |_| {
                        Ok(Request {
                            url: u.clone(),
                            range: Some(index),
                            headers: headers.clone(),
                        })
                    })
                    .await?;
                let sx = sidx::parse(&f.data, index.start)
                    .map_err(|e| EngineError::Manifest(format!("{}: {e}", c.id)))?;
                let (pto, ts) = match &rep.segments {
                    SegmentScheme::Base(i) => (
                        i.presentation_time_offset.unwrap_or(0),
                        i.timescale.unwrap_or(1),
                    ),
                    _ => (0, 1),
                };
                RepPlan {
                    init,
                    segments: segments::from_sidx(&url, &sx, pto, ts, period.start),
                }
            }
        };
        if plan.segments.is_empty() {
            return Err(EngineError::Manifest(format!(
                "representation {} has no segments",
                c.id
            )));
        }
        let plan = Arc::new(plan);
        self.plans
            .lock()
            .unwrap()
            .insert(c.id.clone(), plan.clone());
        Ok(plan)
    }

    /// Ensures the plan exists again after a refresh cleared it.
    async fn replan(&self, cand: usize) -> Result<(), EngineError> {
        self.plan(cand).await.map(|_| ())
    }

    /// Runs `ask` on the quality selector with candidate `cand`'s ladder index; a choice it
    /// returns comes back as a candidate index. None without a selector, or for a candidate
    /// outside its ladder.
    fn with_selector(
        &self,
        cand: usize,
        ask: impl FnOnce(&mut abr::QualitySelector, usize) -> Option<abr::Choice>,
    ) -> Option<usize> {
        let mut abr = self.abr.lock().unwrap();
        let a = abr.as_mut()?;
        let rep = a.map.iter().position(|c| *c == cand)?;
        let choice = ask(&mut a.selector, rep)?;
        Some(a.map[choice.rep])
    }

    async fn wait_for_space(&self) {
        loop {
            // Only the demuxer's own queue: it is what the byte and time budgets bound, and a
            // consumer far ahead of real time (a file sink) must not pause the downloads.
            let level = self.queue.level(false);
            let advice = self
                .abr
                .lock()
                .unwrap()
                .as_mut()
                .map(|a| a.selector.fetch_advice(&level));
            match advice {
                Some(abr::FetchAdvice::Fetch) => return,
                Some(abr::FetchAdvice::Pause) => {}
                None => {
                    if level.ahead < self.limits.buffer_time
                        && level.bytes < self.limits.buffer_bytes
                    {
                        return;
                    }
                }
            }
            // The streaming thread notifies on every pop; the timeout covers a missed wakeup.
            self.queue.taken(Duration::from_millis(200)).await;
        }
    }

    /// Any candidate of the family (all share one segment timeline).
    fn family_head(&self) -> usize {
        let p = self.presentation.lock().unwrap().clone();
        p.candidates
            .iter()
            .position(|c| c.codec == self.family)
            .unwrap_or(0)
    }

    /// The candidate for segment `k` (in the current timeline).
    fn choose(&self, current: Option<usize>, k: usize) -> usize {
        if let Some(id) = self.live.pinned() {
            let p = self.presentation.lock().unwrap().clone();
            if let Some(i) = p.candidates.iter().position(|c| c.id == id) {
                return i;
            }
        }
        let level = self.buffer_level();
        if let Some(a) = self.abr.lock().unwrap().as_mut() {
            self.apply_cap(a);
            let choice = a.selector.choose(k, &level, self.epoch.elapsed());
            let est = a.selector.stats().estimate_bps.unwrap_or(0.0);
            (self.log)(&format!(
                "segment {k}: {} ({:?}) with {:.1} s buffered, estimate {:.0} kb/s",
                plan_id(self, a.map[choice.rep]),
                choice.reason,
                level.ahead.as_secs_f64(),
                est / 1000.0
            ));
            return a.map[choice.rep];
        }
        let p = self.presentation.lock().unwrap().clone();
        let est = self.estimate();
        let max = self.live.max_bitrate();
        // No ladder (the selector could not be built for this manifest): its throughput rule.
        let rungs: Vec<abr::fallback::Rung> = p
            .candidates
            .iter()
            .map(|c| abr::fallback::Rung {
                codec: c.codec,
                bandwidth: c.bandwidth,
            })
            .collect();
        abr::fallback::choose(&rungs, self.family, est, max, current)
    }
}

/// Plays from `position` to the end, or until the task is aborted (flush, seek, stop).
/// `epoch` is what [`Queue::clear`] returned for this play.
pub async fn run(ctx: Arc<Context>, position: Duration, epoch: u64) {
    use futures::FutureExt;
    // A panic must become an error message, never a silent stop that hangs the pipeline.
    let res = std::panic::AssertUnwindSafe(run_inner(&ctx, position, epoch))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            Err(EngineError::Network(
                "internal error in the download task (a bug: please report it)".into(),
            ))
        });
    if let Err(e) = res {
        (ctx.log)(&format!("download stopped: {e:?}"));
        ctx.queue.fail(epoch, e);
    }
}

async fn run_inner(ctx: &Context, position: Duration, epoch: u64) -> Result<(), EngineError> {
    // No resolved address more private than the manifest's is reached.
    let manifest = ctx.presentation.lock().unwrap().manifest_url.clone();
    ctx.fetcher.set_origin(&manifest).await;
    ctx.build_abr().await?;
    // The segment index at `position` in the family's common timeline.
    let any = ctx.family_head();
    let k = segments::segment_at(&ctx.plan(any).await?.segments, position);
    // The candidate whose init segment precedes what is queued, and the one before it (an
    // abandoned switch takes its init segment back).
    let mut current: Option<usize> = None;
    let mut previous: Option<usize> = None;
    // End of the last segment queued whole (None: start at `position`).
    let mut next_time: Option<Duration> = None;
    // The candidate an abandon asked for, for the same segment.
    let mut forced: Option<usize> = None;
    loop {
        let chosen = match (current, forced.take()) {
            (_, Some(f)) => f,
            (None, None) => ctx.choose(None, k),
            (Some(cur), None) => {
                let plan = ctx.plan(cur).await?;
                let index = next_index(&plan, next_time, position);
                if index >= plan.segments.len() {
                    break;
                }
                ctx.wait_for_space().await;
                ctx.choose(Some(cur), index)
            }
        };
        // Same segment timeline assumed across the family (segmentAlignment); map by time so
        // a switch neither repeats nor skips audio.
        let plan = ctx.plan(chosen).await?;
        let index = next_index(&plan, next_time, position);
        if index >= plan.segments.len() {
            break;
        }
        let seg = plan.segments[index].clone();
        let tag = ctx.queue.new_tag();
        let outcome = if current == Some(chosen) {
            ctx.stream_segment(chosen, index, tag, epoch, None).await?
        } else {
            if let Some(cur) = current {
                (ctx.log)(&format!(
                    "switching {} -> {}",
                    plan_id(ctx, cur),
                    plan_id(ctx, chosen)
                ));
                ctx.stats.lock().unwrap().switches += 1;
            }
            let codec = ctx.presentation.lock().unwrap().candidates[chosen].codec;
            // Init and media segment in parallel (start-up costs one round trip, not two);
            // the media bytes are queued once the init segment is.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let init = async {
                let data = ctx.init_bytes(chosen).await?;
                // Queued by the media download, with its first piece.
                let _ = tx.send(Item::Init {
                    candidate: chosen,
                    codec,
                    data,
                    tag,
                });
                Ok::<(), EngineError>(())
            };
            let media = ctx.stream_segment(chosen, index, tag, epoch, Some(rx));
            let ((), outcome) = tokio::try_join!(init, media)?;
            previous = current;
            current = Some(chosen);
            ctx.stats.lock().unwrap().candidate = Some(chosen);
            outcome
        };
        match outcome {
            Streamed::Done => next_time = Some(seg.start + seg.duration),
            Streamed::Abandoned { to, init_retracted } => {
                if init_retracted {
                    current = previous;
                    let mut s = ctx.stats.lock().unwrap();
                    s.candidate = current;
                    if current.is_some() {
                        s.switches = s.switches.saturating_sub(1);
                    }
                }
                forced = Some(to);
            }
        }
    }
    ctx.queue.push(epoch, Item::Eos);
    ctx.upgrade_buffered(epoch).await;
    Ok(())
}

/// The segment of `plan` after `next_time`, or the one at `position` at the start.
fn next_index(plan: &RepPlan, next_time: Option<Duration>, position: Duration) -> usize {
    match next_time {
        None => segments::segment_at(&plan.segments, position),
        Some(t) => plan
            .segments
            .iter()
            .position(|s| s.start + Duration::from_millis(1) > t)
            .unwrap_or(plan.segments.len()),
    }
}

fn plan_id(ctx: &Context, c: usize) -> String {
    ctx.presentation.lock().unwrap().candidates[c].id.clone()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mpd::Mpd;
    use url::Url;

    /// A context over a one-representation manifest (FLAC, two 2 s segments), fetching nothing.
    pub(crate) fn context(audio_object: AudioObject) -> Context {
        let doc = r#"<MPD type="static" mediaPresentationDuration="PT4S"><Period>
            <AdaptationSet contentType="audio"><Representation id="a" codecs="flac"
            bandwidth="1000000"><BaseURL>a.mp4</BaseURL><SegmentList timescale="1" duration="2">
            <Initialization range="0-9"/><SegmentURL mediaRange="10-19"/>
            <SegmentURL mediaRange="20-29"/></SegmentList></Representation></AdaptationSet>
            </Period></MPD>"#;
        let presentation = Presentation {
            mpd: Mpd::parse(doc.as_bytes()).unwrap(),
            period: 0,
            manifest_url: Url::parse("http://cdn.example/t/manifest.mpd").unwrap(),
            candidates: vec![cand("a", Codec::Flac, 1_000_000)],
        };
        let config = Config {
            limits: Limits {
                buffer_time: Duration::from_secs(60),
                buffer_bytes: 32 * 1024 * 1024,
            },
            family: Codec::Flac,
            codec_switching: false,
            live: Arc::default(),
            history: History::new(),
        };
        Context::new(
            presentation,
            audio_object,
            Fetcher::new(Default::default(), "test", &Default::default()).unwrap(),
            None,
            Arc::default(),
            config,
            Box::new(|_| {}),
        )
    }

    #[test]
    fn a_stream_starts_from_the_history_it_is_given_and_leaves_its_estimate_there() {
        let mut ctx = context(AudioObject::default());
        // Cold: the fallback rule's own start.
        assert_eq!(ctx.estimate(), abr::FALLBACK_ESTIMATE_BPS);
        let history = History::new();
        history.remember_estimate(5e6);
        ctx.history = history.clone();
        assert_eq!(ctx.estimate(), 5e6);
        // A measured download replaces it, in the shared history.
        ctx.measure(1_000_000, Duration::from_millis(10), Duration::from_secs(2));
        let left = history.estimate_bps().unwrap();
        assert!(left < 5e6 && left > 1e6, "{left}");
        // Another element's history is untouched: nothing is process-wide.
        assert_eq!(History::new().estimate_bps(), None);
    }

    fn cand(id: &str, codec: Codec, bw: u64) -> Candidate {
        Candidate {
            set: 0,
            rep: 0,
            id: id.into(),
            codec,
            bandwidth: bw,
            label: String::new(),
            selection_priority: 1,
        }
    }
}
