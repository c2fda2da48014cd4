//! The download engine: one tokio task per play (start or seek) that picks a representation per
//! segment, fetches init and media segments ahead into a byte- and time-bounded queue, refreshes
//! the audio object on 403 or expiry, and reports measurements for `stats`.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use url::Url;

use crate::abr;
use crate::fetch::{FetchError, Fetched, Fetcher, Request};
use crate::mpd::{sidx, Mpd, Representation, SegmentScheme};
use crate::segments::{self, InitRef, SegmentPlan, SegmentRef};

/// No single response may be larger than this (a 10 s 192 kHz/24 bit FLAC segment is ~8 MB).
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// A first estimate when nothing was ever measured: enough for HD FLAC on a decent link, so the
/// first seconds are not Opus 64k on every start (dashdemux2 1.22 starts at the lowest).
pub const DEFAULT_ESTIMATE_BPS: f64 = 2_000_000.0;

/// The audio object as the demuxer uses it; values are secret, `Debug` prints none.
#[derive(Clone, Default)]
pub struct AudioObject {
    pub generation: u32,
    /// Unix seconds.
    pub expires: Option<u64>,
    pub manifest_uri: Option<Url>,
    pub segment_headers: Vec<(String, String)>,
    pub manifest_headers: Vec<(String, String)>,
    pub user_agent: Option<String>,
    /// When the demuxer should ask for a fresh one (computed on receipt).
    pub refresh_at: Option<SystemTime>,
}

impl std::fmt::Debug for AudioObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioObject")
            .field("generation", &self.generation)
            .field("expires", &self.expires)
            .field("segment_headers", &self.segment_headers.len())
            .finish_non_exhaustive()
    }
}

impl AudioObject {
    /// The contract's refresh time: at 80 % of the remaining lifetime or 30 s before expiry,
    /// whichever is earlier.
    pub fn schedule_refresh(&mut self, now: SystemTime) {
        self.refresh_at = self.expires.map(|e| {
            let exp = UNIX_EPOCH + Duration::from_secs(e);
            let remaining = exp.duration_since(now).unwrap_or_default();
            let a = remaining.mul_f64(0.8);
            let b = remaining.saturating_sub(Duration::from_secs(30));
            now + a.min(b)
        });
    }
}

/// Asks upstream (amazonmusicsrc) for a fresh audio object; blocking, called off the runtime.
pub trait Refresher: Send + Sync {
    fn refresh(&self, reason: &str, generation: u32) -> Option<AudioObject>;
}

/// One representation the engine may choose.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub set: usize,
    pub rep: usize,
    pub id: String,
    pub codec: String,
    pub bandwidth: u64,
    /// `amz-music:trackType` or the codec, for `stats`.
    pub label: String,
    pub selection_priority: u32,
}

/// The parsed manifest and what of it can be played here.
#[derive(Debug, Clone)]
pub struct Presentation {
    pub mpd: Mpd,
    pub period: usize,
    pub manifest_url: Url,
    pub candidates: Vec<Candidate>,
}

impl Presentation {
    pub fn rep(&self, c: &Candidate) -> &Representation {
        &self.mpd.periods[self.period].adaptation_sets[c.set].representations[c.rep]
    }
    pub fn duration(&self) -> Option<Duration> {
        self.mpd.duration.or(self.mpd.periods[self.period].duration)
    }
}

/// The codec family of a DASH `codecs` value (`flac`, `opus`, `ec-3`, `mp4a`).
pub fn codec_family(codecs: &str) -> String {
    codecs
        .split(',')
        .next()
        .unwrap_or("")
        .split('.')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Quality order of `amz-music:trackType`, for the `max-quality` cap.
pub fn quality_rank(label: &str) -> u32 {
    match label.to_ascii_uppercase().as_str() {
        "LD" => 1,
        "SD" => 2,
        "HD" => 3,
        "UHD" => 4,
        "SPATIAL" | "ATMOS" => 5,
        _ => 0,
    }
}

#[derive(Debug)]
pub enum Item {
    /// An initialization segment (pushed when starting and on every representation change).
    Init {
        candidate: usize,
        /// Codec family: a change means a new stream for the elements downstream.
        codec: String,
        data: Bytes,
    },
    Media {
        candidate: usize,
        data: Bytes,
        start: Duration,
        duration: Duration,
    },
    Eos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// Access refused even after a refresh (or with nobody to refresh from).
    NotAuthorized(String),
    NotFound(String),
    /// Retries exhausted.
    Network(String),
    /// The manifest (or an index, or a refreshed manifest) cannot be used.
    Manifest(String),
}

#[derive(Debug, Default)]
pub struct Queue {
    pub items: VecDeque<Item>,
    pub bytes: u64,
    pub time: Duration,
    pub error: Option<EngineError>,
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
}

/// What the engine and the element's streaming thread share.
#[derive(Default)]
pub struct Shared {
    pub queue: Mutex<Queue>,
    /// Signalled when an item arrives or an error is set.
    pub ready: Condvar,
    /// Notified when the streaming thread takes an item (room for more).
    pub space: tokio::sync::Notify,
    pub stats: Mutex<Stats>,
    /// Set by the streaming thread once media flows downstream.
    pub playing: std::sync::atomic::AtomicBool,
    /// Everything up to the end is downloaded (buffering is then 100 %).
    pub complete: std::sync::atomic::AtomicBool,
    /// Told the queued time after every push (and whether the presentation is complete).
    #[allow(clippy::type_complexity)]
    pub on_level: Mutex<Option<Box<dyn Fn(Duration, bool) + Send + Sync>>>,
}

impl Shared {
    fn push(&self, item: Item) {
        let mut q = self.queue.lock().unwrap();
        if let Item::Media { data, duration, .. } = &item {
            q.bytes += data.len() as u64;
            q.time += *duration;
        }
        if let Item::Init { data, .. } = &item {
            q.bytes += data.len() as u64;
        }
        let done = matches!(item, Item::Eos);
        if done {
            self.complete
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        q.items.push_back(item);
        let level = q.time;
        self.ready.notify_all();
        drop(q);
        // Reported from here too: a paused pipeline (gst-launch pauses on buffering < 100 %)
        // takes nothing from the queue, so only the producer can say it is full again.
        if let Some(f) = self.on_level.lock().unwrap().as_ref() {
            f(level, done);
        }
    }

    fn fail(&self, e: EngineError) {
        let mut q = self.queue.lock().unwrap();
        q.error = Some(e);
        self.ready.notify_all();
    }

    /// Takes the next item, keeping the accounting right.
    pub fn pop(&self, q: &mut Queue) -> Option<Item> {
        let item = q.items.pop_front()?;
        match &item {
            Item::Media { data, duration, .. } => {
                q.bytes -= data.len() as u64;
                q.time = q.time.saturating_sub(*duration);
            }
            Item::Init { data, .. } => q.bytes -= data.len() as u64,
            Item::Eos => {}
        }
        self.space.notify_one();
        Some(item)
    }

    pub fn clear(&self) {
        let mut q = self.queue.lock().unwrap();
        *q = Queue::default();
        self.complete
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub buffer_time: Duration,
    pub buffer_bytes: u64,
}

/// Throughput from a fast and a slow EWMA (weighted by download time), taking the lower, so a
/// drop is believed at once and a burst only slowly.
#[derive(Debug, Clone)]
pub struct Throughput {
    fast: (f64, f64),
    slow: (f64, f64),
}

impl Throughput {
    const FAST_HALF_LIFE: f64 = 2.0;
    const SLOW_HALF_LIFE: f64 = 5.0;

    pub fn new() -> Self {
        Throughput {
            fast: (0.0, 0.0),
            slow: (0.0, 0.0),
        }
    }

    pub fn add(&mut self, bytes: u64, seconds: f64) {
        let seconds = seconds.max(0.001);
        let bps = bytes as f64 * 8.0 / seconds;
        for (est, hl) in [
            (&mut self.fast, Self::FAST_HALF_LIFE),
            (&mut self.slow, Self::SLOW_HALF_LIFE),
        ] {
            let alpha = 0.5f64.powf(seconds / hl);
            est.0 = alpha * est.0 + (1.0 - alpha) * bps;
            est.1 = alpha * est.1 + (1.0 - alpha);
        }
    }

    pub fn estimate(&self) -> Option<f64> {
        if self.fast.1 <= 0.0 {
            return None;
        }
        Some((self.fast.0 / self.fast.1).min(self.slow.0 / self.slow.1))
    }
}

impl Default for Throughput {
    fn default() -> Self {
        Self::new()
    }
}

/// The best candidate of `family` whose bandwidth fits 85 % of the estimate (and the cap);
/// the lowest of the family when none does.
pub fn choose(
    candidates: &[Candidate],
    family: &str,
    estimate_bps: f64,
    max_bitrate: u64,
) -> usize {
    let mut of_family: Vec<usize> = (0..candidates.len())
        .filter(|i| candidates[*i].codec == family)
        .collect();
    of_family.sort_by_key(|i| candidates[*i].bandwidth);
    let budget = estimate_bps * 0.85;
    of_family
        .iter()
        .rev()
        .copied()
        .find(|i| {
            let b = candidates[*i].bandwidth;
            (b as f64) <= budget && (max_bitrate == 0 || b <= max_bitrate)
        })
        .or_else(|| of_family.first().copied())
        .unwrap_or(0)
}

/// The last session's estimate, so the next track starts where this one left off.
static LAST_ESTIMATE: Mutex<Option<f64>> = Mutex::new(None);
static LAST_SESSION: Mutex<Option<abr::SessionEstimate>> = Mutex::new(None);

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
    pub shared: Arc<Shared>,
    pub refresher: Option<Arc<dyn Refresher>>,
    pub plans: Mutex<HashMap<String, Arc<RepPlan>>>,
    pub inits: Mutex<HashMap<String, Bytes>>,
    pub throughput: Mutex<Throughput>,
    /// Codec family the engine stays in (switching across codecs needs a new stream).
    pub family: String,
    /// The quality selector (crate::abr) over the family's candidates, built once the
    /// segment plans are known; None falls back to [`choose`].
    pub abr: Mutex<Option<Abr>>,
    /// Origin of the selector's clock.
    pub epoch: Instant,
    /// `max-bitrate`, changeable while playing (0 = none).
    pub max_bitrate: std::sync::atomic::AtomicU64,
    /// Held while a refresh is in flight.
    pub refresh_lock: tokio::sync::Mutex<()>,
    /// Requests are built under the read side; a refresh swaps URLs and headers under the
    /// write side, so no request pairs one generation's headers with another's URLs.
    pub swap_lock: std::sync::RwLock<()>,
    /// `representation`: a Representation id that overrides the selector (any codec: a codec
    /// change starts a new stream downstream).
    pub pinned: Mutex<Option<String>>,
    /// Log sink (the element's debug category), never given secrets.
    pub log: Box<dyn Fn(&str) + Send + Sync>,
}

impl Context {
    fn headers(&self) -> Vec<(String, String)> {
        self.audio_object.lock().unwrap().segment_headers.clone()
    }

    fn estimate(&self) -> f64 {
        self.throughput
            .lock()
            .unwrap()
            .estimate()
            .or(*LAST_ESTIMATE.lock().unwrap())
            .unwrap_or(DEFAULT_ESTIMATE_BPS)
    }

    fn measure(&self, f: &Fetched) {
        let secs = f.total.as_secs_f64();
        // Tiny responses measure latency, not throughput.
        if f.data.len() >= 16 * 1024 {
            let mut t = self.throughput.lock().unwrap();
            t.add(f.data.len() as u64, secs);
            if let Some(e) = t.estimate() {
                *LAST_ESTIMATE.lock().unwrap() = Some(e);
            }
        }
        let abr_estimate = self.abr.lock().unwrap().as_mut().and_then(|a| {
            a.selector.on_download(&abr::Download {
                bytes: f.data.len() as u64,
                ttfb: f.ttfb,
                total: f.total,
            });
            let est = a.selector.session_estimate();
            *LAST_SESSION.lock().unwrap() = est;
            a.selector.stats().estimate_bps
        });
        let mut s = self.shared.stats.lock().unwrap();
        s.bytes += f.data.len() as u64;
        s.estimate_bps = abr_estimate.unwrap_or_else(|| self.estimate());
    }

    fn buffer_level(&self) -> abr::BufferLevel {
        let q = self.shared.queue.lock().unwrap();
        abr::BufferLevel {
            ahead: q.time,
            bytes: q.bytes,
            playing: self
                .shared
                .playing
                .load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// Builds the selector over the family's candidates (planning each: exact segment sizes
    /// come from SegmentList ranges or the sidx). Kept across seeks.
    async fn build_abr(&self) -> Result<(), EngineError> {
        if let Some(a) = self.abr.lock().unwrap().as_mut() {
            a.selector.on_seek();
            return Ok(());
        }
        let p = self.presentation.lock().unwrap().clone();
        let family: Vec<usize> = (0..p.candidates.len())
            .filter(|i| p.candidates[*i].codec == self.family)
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
                    codec: abr::CodecFamily::from_codecs(&rep.codecs),
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
        let config = abr::AbrConfig {
            max_buffer: self.limits.buffer_time,
            max_buffer_bytes: self.limits.buffer_bytes,
            resume_gap: (self.limits.buffer_time / 6).min(Duration::from_secs(10)),
            ..Default::default()
        };
        let selector =
            abr::QualitySelector::new(ladder, config).with_previous(*LAST_SESSION.lock().unwrap());
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
        let max = self.max_bitrate.load(std::sync::atomic::Ordering::SeqCst);
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

    /// One request with retries; 401/403 triggers one audio-object refresh per generation.
    /// `build` makes the request from the current presentation, so a retry after a refresh
    /// uses the new URLs.
    async fn fetch<F>(&self, what: &str, build: F) -> Result<Fetched, EngineError>
    where
        F: Fn(&Context) -> Result<Request, EngineError>,
    {
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            self.maybe_refresh_expiring().await?;
            // URLs and headers from one generation (a refresh swaps both under the write
            // lock); a 403 on that generation asks for a newer one.
            let (gen, req) = {
                let _snapshot = self.swap_lock.read().unwrap();
                // (A separate statement: the generation's guard must be dropped before
                // build() reads the headers under the same mutex.)
                let gen = self.audio_object.lock().unwrap().generation;
                (gen, build(self)?)
            };
            attempt += 1;
            match self.fetcher.fetch_once(&req, MAX_RESPONSE_BYTES).await {
                Ok(f) => {
                    self.measure(&f);
                    return Ok(f);
                }
                Err(FetchError::Forbidden(code)) => {
                    if self.refresher.is_none() || refreshed {
                        return Err(EngineError::NotAuthorized(format!(
                            "{what}: HTTP {code} {}",
                            if self.refresher.is_none() {
                                "and no amazonmusicsrc upstream to refresh the audio object"
                            } else {
                                "even with a freshly refreshed audio object"
                            }
                        )));
                    }
                    refreshed = true;
                    (self.log)(&format!("{what}: HTTP {code}, refreshing the audio object"));
                    self.refresh("forbidden", gen).await?;
                }
                Err(FetchError::NotFound(code)) => {
                    return Err(EngineError::NotFound(format!(
                        "{what}: HTTP {code} ({req:?})"
                    )))
                }
                Err(e) if e.is_transient() && attempt < self.fetcher.policy.attempts => {
                    if matches!(e, FetchError::Stalled(_)) {
                        self.shared.stats.lock().unwrap().stalls += 1;
                    }
                    self.shared.stats.lock().unwrap().retries += 1;
                    let d = self.fetcher.policy.delay(attempt);
                    (self.log)(&format!("{what}: {e}; retry {attempt} in {d:?}"));
                    tokio::time::sleep(d).await;
                }
                Err(e) => {
                    return Err(EngineError::Network(format!(
                        "{what}: {e} (after {attempt} attempts)"
                    )))
                }
            }
        }
    }

    async fn maybe_refresh_expiring(&self) -> Result<(), EngineError> {
        let (due, gen) = {
            let ao = self.audio_object.lock().unwrap();
            (
                ao.refresh_at.is_some_and(|t| SystemTime::now() >= t),
                ao.generation,
            )
        };
        if due && self.refresher.is_some() {
            self.refresh("expiring", gen).await?;
        }
        Ok(())
    }

    /// Asks upstream for a fresh audio object, reloads the manifest with it and swaps the
    /// segment URLs; playback continues at the same segment index and time.
    /// `seen` is the generation the caller found wanting: concurrent callers (the parallel
    /// init and first segment, say) wait for one refresh instead of each asking.
    async fn refresh(&self, reason: &str, seen: u32) -> Result<(), EngineError> {
        let Some(r) = self.refresher.clone() else {
            return Ok(());
        };
        let _one_at_a_time = self.refresh_lock.lock().await;
        let gen = self.audio_object.lock().unwrap().generation;
        if gen != seen {
            return Ok(());
        }
        let reason_s = reason.to_string();
        let fresh = tokio::task::spawn_blocking(move || r.refresh(&reason_s, gen))
            .await
            .ok()
            .flatten();
        let Some(mut fresh) = fresh else {
            // Nobody answered: stop asking on a timer; a 403 will still fail clearly.
            self.audio_object.lock().unwrap().refresh_at = None;
            return Err(EngineError::NotAuthorized(format!(
                "audio object refresh ({reason}) got no answer from upstream"
            )));
        };
        fresh.schedule_refresh(SystemTime::now());
        let new_gen = fresh.generation;
        let manifest = fresh.manifest_uri.clone();
        let mheaders = fresh.manifest_headers.clone();
        self.shared.stats.lock().unwrap().refreshes += 1;
        (self.log)(&format!(
            "audio object refreshed ({reason}): generation {gen} -> {new_gen}"
        ));
        if let Some(url) = manifest {
            let req = Request {
                url: url.clone(),
                range: None,
                headers: mheaders,
            };
            let f = self
                .fetcher
                .fetch_once(&req, crate::mpd::MAX_MANIFEST_BYTES as u64)
                .await
                .map_err(|e| EngineError::Manifest(format!("refreshed manifest: {e}")))?;
            let mpd = Mpd::parse(&f.data)
                .map_err(|e| EngineError::Manifest(format!("refreshed manifest: {e}")))?;
            let old = self.presentation.lock().unwrap().clone();
            // Same track, same representations: only URLs change. Keep candidate indices.
            let mut p = (*old).clone();
            for c in &p.candidates {
                let set = mpd
                    .periods
                    .get(p.period)
                    .and_then(|per| per.adaptation_sets.get(c.set));
                if set
                    .and_then(|s| s.representations.get(c.rep))
                    .map(|r| &r.id)
                    != Some(&c.id)
                {
                    return Err(EngineError::Manifest(
                        "refreshed manifest lists different representations".into(),
                    ));
                }
            }
            p.mpd = mpd;
            p.manifest_url = url;
            let _swap = self.swap_lock.write().unwrap();
            self.replace_urls(&p)?;
            *self.presentation.lock().unwrap() = Arc::new(p);
            *self.audio_object.lock().unwrap() = fresh;
        } else {
            let _swap = self.swap_lock.write().unwrap();
            *self.audio_object.lock().unwrap() = fresh;
        }
        Ok(())
    }

    /// Re-derives the URLs of every planned representation from a refreshed manifest. Times
    /// and byte ranges stay, so the segment being fetched is the same one, at its new URL.
    fn replace_urls(&self, p: &Presentation) -> Result<(), EngineError> {
        let mut plans = self.plans.lock().unwrap();
        let period = &p.mpd.periods[p.period];
        for c in &p.candidates {
            let Some(old) = plans.get(&c.id).cloned() else {
                continue;
            };
            let fresh = segments::plan(&p.manifest_url, p.rep(c), period.start, period.duration)
                .map_err(|e| EngineError::Manifest(format!("refreshed manifest: {e}")))?;
            let plan = match fresh {
                SegmentPlan::Ready { init, segments } => {
                    if segments.len() != old.segments.len() {
                        return Err(EngineError::Manifest(format!(
                            "refreshed manifest has {} segments for {} instead of {}",
                            segments.len(),
                            c.id,
                            old.segments.len()
                        )));
                    }
                    RepPlan { init, segments }
                }
                SegmentPlan::NeedsIndex { init, url, .. } => RepPlan {
                    init,
                    segments: old
                        .segments
                        .iter()
                        .map(|s| SegmentRef {
                            url: url.clone(),
                            ..s.clone()
                        })
                        .collect(),
                },
            };
            plans.insert(c.id.clone(), Arc::new(plan));
        }
        Ok(())
    }

    async fn plan(&self, cand: usize) -> Result<Arc<RepPlan>, EngineError> {
        let p = self.presentation.lock().unwrap().clone();
        let c = &p.candidates[cand];
        if let Some(pl) = self.plans.lock().unwrap().get(&c.id) {
            return Ok(pl.clone());
        }
        let period = &p.mpd.periods[p.period];
        let rep = p.rep(c);
        let planned = segments::plan(&p.manifest_url, rep, period.start, period.duration)
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

    fn init_request(&self, cand: usize) -> Result<Option<Request>, EngineError> {
        let p = self.presentation.lock().unwrap().clone();
        let id = &p.candidates[cand].id;
        let plan = self.plans.lock().unwrap().get(id).cloned();
        let plan = plan.ok_or_else(|| EngineError::Manifest(format!("{id} not planned")))?;
        Ok(plan.init.as_ref().map(|i| Request {
            url: i.url.clone(),
            range: i.range,
            headers: self.headers(),
        }))
    }

    fn media_request(&self, cand: usize, index: usize) -> Result<Request, EngineError> {
        let p = self.presentation.lock().unwrap().clone();
        let id = &p.candidates[cand].id;
        let plan = self.plans.lock().unwrap().get(id).cloned();
        let plan = plan.ok_or_else(|| EngineError::Manifest(format!("{id} not planned")))?;
        let s = plan
            .segments
            .get(index)
            .ok_or_else(|| EngineError::Manifest(format!("{id} has no segment {index}")))?;
        Ok(Request {
            url: s.url.clone(),
            range: s.range,
            headers: self.headers(),
        })
    }

    /// Ensures the plan exists again after a refresh cleared it.
    async fn replan(&self, cand: usize) -> Result<(), EngineError> {
        self.plan(cand).await.map(|_| ())
    }

    async fn init_bytes(&self, cand: usize) -> Result<Bytes, EngineError> {
        let id = self.presentation.lock().unwrap().candidates[cand]
            .id
            .clone();
        if let Some(b) = self.inits.lock().unwrap().get(&id) {
            return Ok(b.clone());
        }
        self.replan(cand).await?;
        let Some(_) = self.init_request(cand)? else {
            return Ok(Bytes::new());
        };
        let f = self
            .fetch(&format!("init of {id}"), |c| {
                c.init_request(cand)?
                    .ok_or_else(|| EngineError::Manifest("init vanished".into()))
            })
            .await?;
        self.inits.lock().unwrap().insert(id, f.data.clone());
        Ok(f.data)
    }

    async fn media_bytes(&self, cand: usize, index: usize) -> Result<Bytes, EngineError> {
        self.replan(cand).await?;
        let id = self.presentation.lock().unwrap().candidates[cand]
            .id
            .clone();
        let f = self
            .fetch(&format!("segment {index} of {id}"), |c| {
                c.media_request(cand, index)
            })
            .await?;
        self.shared.stats.lock().unwrap().segments += 1;
        Ok(f.data)
    }

    async fn wait_for_space(&self) {
        loop {
            let level = self.buffer_level();
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
            let _ = tokio::time::timeout(Duration::from_millis(200), self.shared.space.notified())
                .await;
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
        let pinned = self.pinned.lock().unwrap().clone();
        if let Some(id) = pinned {
            let p = self.presentation.lock().unwrap().clone();
            if let Some(i) = p.candidates.iter().position(|c| c.id == id) {
                return i;
            }
        }
        let level = self.buffer_level();
        if let Some(a) = self.abr.lock().unwrap().as_mut() {
            self.apply_cap(a);
            let choice = a.selector.choose(k, &level, self.epoch.elapsed());
            return a.map[choice.rep];
        }
        let p = self.presentation.lock().unwrap().clone();
        let est = self.estimate();
        let max = self.max_bitrate.load(std::sync::atomic::Ordering::SeqCst);
        let next = choose(&p.candidates, &self.family, est, max);
        if let Some(cur) = current {
            // Hysteresis: only leave the current one when the estimate says so clearly.
            let cb = p.candidates[cur].bandwidth as f64;
            let nb = p.candidates[next].bandwidth as f64;
            if nb > cb && nb > est * 0.7 {
                return cur;
            }
        }
        next
    }
}

/// Plays from `position` to the end, or until the task is aborted (flush, seek, stop).
pub async fn run(ctx: Arc<Context>, position: Duration) {
    use futures::FutureExt;
    // A panic must become an error message, never a silent stop that hangs the pipeline.
    let res = std::panic::AssertUnwindSafe(run_inner(&ctx, position))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            Err(EngineError::Network(
                "internal error in the download task (a bug: please report it)".into(),
            ))
        });
    if let Err(e) = res {
        (ctx.log)(&format!("download stopped: {e:?}"));
        ctx.shared.fail(e);
    }
}

async fn run_inner(ctx: &Context, position: Duration) -> Result<(), EngineError> {
    ctx.build_abr().await?;
    // The segment index at `position` in the family's common timeline.
    let any = ctx.family_head();
    let k = segments::segment_at(&ctx.plan(any).await?.segments, position);
    let first = ctx.choose(None, k);
    let plan = ctx.plan(first).await?;
    let mut index = segments::segment_at(&plan.segments, position);
    // Init and first media segment in parallel: start-up costs one round trip, not two.
    let (init, media) = tokio::join!(ctx.init_bytes(first), ctx.media_bytes(first, index));
    let (init, media) = (init?, media?);
    let codec = ctx.presentation.lock().unwrap().candidates[first]
        .codec
        .clone();
    ctx.shared.push(Item::Init {
        candidate: first,
        codec,
        data: init,
    });
    let seg = &plan.segments[index];
    ctx.shared.push(Item::Media {
        candidate: first,
        data: media,
        start: seg.start,
        duration: seg.duration,
    });
    ctx.shared.stats.lock().unwrap().candidate = Some(first);
    let mut current = first;
    let mut next_time = seg.start + seg.duration;
    index += 1;
    loop {
        let plan = ctx.plan(current).await?;
        if index >= plan.segments.len() {
            break;
        }
        ctx.wait_for_space().await;
        let chosen = ctx.choose(Some(current), index);
        if chosen != current {
            // Same segment timeline assumed across the family (segmentAlignment); map by time
            // so a switch neither repeats nor skips audio.
            let np = ctx.plan(chosen).await?;
            let ni = np
                .segments
                .iter()
                .position(|s| s.start + Duration::from_millis(1) > next_time)
                .unwrap_or(np.segments.len());
            if ni >= np.segments.len() {
                break;
            }
            let init = ctx.init_bytes(chosen).await?;
            (ctx.log)(&format!(
                "switching {} -> {}",
                plan_id(ctx, current),
                plan_id(ctx, chosen)
            ));
            let codec = ctx.presentation.lock().unwrap().candidates[chosen]
                .codec
                .clone();
            ctx.shared.push(Item::Init {
                candidate: chosen,
                codec,
                data: init,
            });
            {
                let mut s = ctx.shared.stats.lock().unwrap();
                s.switches += 1;
                s.candidate = Some(chosen);
            }
            current = chosen;
            index = ni;
            continue;
        }
        let seg = plan.segments[index].clone();
        let started = Instant::now();
        let data = ctx.media_bytes(current, index).await?;
        let _ = started;
        ctx.shared.push(Item::Media {
            candidate: current,
            data,
            start: seg.start,
            duration: seg.duration,
        });
        next_time = seg.start + seg.duration;
        index += 1;
    }
    ctx.shared.push(Item::Eos);
    Ok(())
}

fn plan_id(ctx: &Context, c: usize) -> String {
    ctx.presentation.lock().unwrap().candidates[c].id.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, codec: &str, bw: u64) -> Candidate {
        Candidate {
            set: 0,
            rep: 0,
            id: id.into(),
            codec: codec.into(),
            bandwidth: bw,
            label: String::new(),
            selection_priority: 1,
        }
    }

    #[test]
    fn choice_fits_the_estimate_within_the_family() {
        let c = vec![
            cand("f16", "flac", 1_200_000),
            cand("f24", "flac", 2_400_000),
            cand("o64", "opus", 70_000),
        ];
        assert_eq!(choose(&c, "flac", 3_000_000.0, 0), 1);
        assert_eq!(choose(&c, "flac", 2_000_000.0, 0), 0);
        assert_eq!(choose(&c, "flac", 3_000_000.0, 2_000_000), 0);
        // Nothing fits: the lowest of the family, never another codec.
        assert_eq!(choose(&c, "flac", 100_000.0, 0), 0);
        assert_eq!(choose(&c, "opus", 10_000_000.0, 0), 2);
    }

    #[test]
    fn throughput_takes_the_lower_ewma() {
        let mut t = Throughput::new();
        assert_eq!(t.estimate(), None);
        for _ in 0..10 {
            t.add(1_000_000, 1.0);
        }
        let high = t.estimate().unwrap();
        assert!((high - 8_000_000.0).abs() < 1.0, "{high}");
        t.add(100_000, 1.0);
        let after_drop = t.estimate().unwrap();
        assert!(after_drop < 6_000_000.0, "{after_drop}");
    }

    #[test]
    fn refresh_time_is_the_earlier_of_80_percent_and_30_s_before() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let mut ao = AudioObject {
            expires: Some(1100),
            ..Default::default()
        };
        ao.schedule_refresh(now);
        assert_eq!(ao.refresh_at, Some(now + Duration::from_secs(70)));
        ao.expires = Some(1000 + 3600);
        ao.schedule_refresh(now);
        assert_eq!(ao.refresh_at, Some(now + Duration::from_secs(2880)));
        ao.expires = Some(10);
        ao.schedule_refresh(now);
        assert_eq!(ao.refresh_at, Some(now));
    }

    #[test]
    fn codec_families() {
        assert_eq!(codec_family("flac"), "flac");
        assert_eq!(codec_family("mp4a.40.2"), "mp4a");
        assert_eq!(codec_family("Opus"), "opus");
        assert_eq!(codec_family("ec-3"), "ec-3");
    }
}
