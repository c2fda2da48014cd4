// SPDX-License-Identifier: MPL-2.0
//! The segment download: one request at a time with retries, resumes and the refresh on 403,
//! and the media segment streamed into the queue as its bytes arrive, abandoned when too late.

use bytes::{Bytes, BytesMut};
use std::time::{Duration, Instant};

use super::{plan_id, Context, EngineError, Item, MAX_RESPONSE_BYTES};
use crate::abr;
use crate::box_layout::{self, BoxLayout};
use crate::fetch::{FetchError, Fetched, Request};

/// A media segment's bytes are queued for downstream in pieces of at least this much, or
/// whatever arrived within [`FLUSH_INTERVAL`]: qtdemux outputs samples as the `mdat` comes in,
/// so audio starts after the first piece instead of after the whole (10 s) segment.
pub const CHUNK_BYTES: usize = 16 * 1024;
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// How often the selector is asked whether to abandon the download in flight.
pub const ABANDON_CHECK: Duration = Duration::from_millis(250);
/// At start-up, the first piece waits for this much of the body (or a whole piece) so that the
/// start check measures a rate, not a burst.
pub const START_SAMPLE: Duration = Duration::from_millis(100);
/// What a failed attempt must have delivered to count as progress, after which the resumed
/// request starts a fresh attempt budget. Less (a server that sends a few bytes and stalls, on
/// every response) spends the budget, so such a segment fails after `max-attempts` instead of
/// being resumed forever; a budget is renewed at most once per 16 KiB of the segment.
pub const MIN_PROGRESS: u64 = CHUNK_BYTES as u64;

/// A request's attempts: `charged` count against `max-attempts`, `made` are all of them (the
/// backoff's step). An attempt that fails while more audio is buffered than the wait and the
/// next attempt's timeout is not charged: retrying lasts as long as the buffer does, and the
/// budget is spent only when playback would run dry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attempts {
    pub(super) charged: u32,
    pub(super) made: u32,
}

impl Attempts {
    fn begin(&mut self) {
        self.charged += 1;
        self.made += 1;
    }
}

/// How a media segment download ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Streamed {
    Done,
    /// Given up for candidate `to`; `init_retracted`: the init segment queued for it (a switch)
    /// was taken back too.
    Abandoned {
        to: usize,
        init_retracted: bool,
    },
}

/// The download in flight as [`Context::check_abandon`] sees it.
pub(super) struct InFlightNow {
    cand: usize,
    index: usize,
    tag: u64,
    total: Option<u64>,
    received: u64,
    elapsed: Duration,
    ttfb: Option<Duration>,
}

impl InFlightNow {
    /// As the selector sees it: `rep` in its ladder, `total` bytes in all.
    fn as_rep(&self, rep: usize, total: u64) -> abr::InFlight {
        abr::InFlight {
            rep,
            segment: self.index,
            bytes_total: total,
            bytes_received: self.received,
            elapsed: self.elapsed,
            ttfb: self.ttfb,
        }
    }
}

/// The part of a media segment received and not yet queued, and the accounting of what was.
pub(super) struct Piece {
    pub(super) cand: usize,
    pub(super) tag: u64,
    pub(super) start: Duration,
    pub(super) duration: Duration,
    /// The segment's size, when the manifest, the index or the response says.
    pub(super) total: Option<u64>,
    pub(super) queued: u64,
    pub(super) queued_time: Duration,
    pub(super) pending: BytesMut,
}

impl Piece {
    /// The pending bytes as the next queue item; `last` closes the segment's time account.
    pub(super) fn take(&mut self, last: bool) -> Item {
        let data = self.pending.split().freeze();
        let first = self.queued == 0;
        self.queued += data.len() as u64;
        let target = if last {
            self.duration
        } else {
            match self.total {
                Some(t) if t > 0 => Duration::from_nanos(
                    (self.duration.as_nanos() * u128::from(self.queued.min(t)) / u128::from(t))
                        as u64,
                ),
                // Size unknown: the segment counts once complete.
                _ => Duration::ZERO,
            }
        };
        let time = target.saturating_sub(self.queued_time);
        self.queued_time = self.queued_time.max(target);
        Item::Media {
            candidate: self.cand,
            data,
            start: self.start,
            duration: self.duration,
            time,
            first,
            tag: self.tag,
        }
    }
}

impl Context {
    /// After the last of `attempts` of `what` failed with `e`: `Ok` to try again (after the
    /// backoff, or after refreshing the audio object on a first 401/403), or the error to give
    /// up with. A transient failure is not charged while the buffer outlasts the wait and the
    /// next attempt ([`Attempts`]).
    pub(super) async fn after_failure(
        &self,
        what: &str,
        e: FetchError,
        attempts: &mut Attempts,
        refreshed: &mut bool,
        gen: u32,
        req: &Request,
    ) -> Result<(), EngineError> {
        match e {
            FetchError::Forbidden(code) => {
                if self.refresher.is_none() || *refreshed {
                    return Err(EngineError::NotAuthorized(format!(
                        "{what}: HTTP {code} {}",
                        if self.refresher.is_none() {
                            "and no amazonmusicsrc upstream to refresh the audio object"
                        } else {
                            "even with a freshly refreshed audio object"
                        }
                    )));
                }
                *refreshed = true;
                (self.log)(&format!("{what}: HTTP {code}, refreshing the audio object"));
                self.refresh("forbidden", gen).await
            }
            FetchError::NotFound(code) => Err(EngineError::NotFound(format!(
                "{what}: HTTP {code} ({req:?})"
            ))),
            e if e.is_transient() => {
                let d = self.fetcher.policy.delay(attempts.made, &e);
                let ahead = self.queue.level(true).ahead;
                if ahead > d + self.fetcher.policy.stall_timeout {
                    attempts.charged = attempts.charged.saturating_sub(1);
                    (self.log)(&format!(
                        "{what}: {:.1} s of audio buffered, this attempt is not charged",
                        ahead.as_secs_f64()
                    ));
                }
                if attempts.charged >= self.fetcher.policy.attempts {
                    return Err(EngineError::Network(format!(
                        "{what}: {e} (after {} attempts)",
                        attempts.made
                    )));
                }
                match e {
                    FetchError::Stalled(_) => self.stats.lock().unwrap().stalls += 1,
                    FetchError::NoResponse(waited) => {
                        self.stats.lock().unwrap().stalls += 1;
                        // No answer at all: the link is out, which the selector must know.
                        if let Some(a) = self.abr.lock().unwrap().as_mut() {
                            a.selector.on_request_timeout(waited);
                        }
                    }
                    _ => {}
                }
                self.stats.lock().unwrap().retries += 1;
                (self.log)(&format!("{what}: {e}; retry {} in {d:?}", attempts.made));
                tokio::time::sleep(d).await;
                Ok(())
            }
            e => Err(EngineError::Network(format!(
                "{what}: {e} (after {} attempts)",
                attempts.made
            ))),
        }
    }

    /// One request read whole, with retries; 401/403 triggers one audio-object refresh per
    /// generation. `build` makes the request from the current presentation, so a retry after a
    /// refresh uses the new URLs.
    pub(super) async fn fetch<F>(&self, what: &str, build: F) -> Result<Fetched, EngineError>
    where
        F: Fn(&Context) -> Result<Request, EngineError>,
    {
        let mut attempts = Attempts::default();
        let mut refreshed = false;
        loop {
            self.maybe_refresh_expiring().await?;
            let (gen, req) = self.snapshot(&build)?;
            attempts.begin();
            match self.fetcher.fetch_once(&req, MAX_RESPONSE_BYTES).await {
                Ok(f) => {
                    self.stats.lock().unwrap().bytes += f.data.len() as u64;
                    self.measure(f.data.len() as u64, f.ttfb, f.total);
                    return Ok(f);
                }
                Err(e) => {
                    self.after_failure(what, e, &mut attempts, &mut refreshed, gen, &req)
                        .await?
                }
            }
        }
    }

    pub(super) fn init_request(&self, cand: usize) -> Result<Option<Request>, EngineError> {
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

    pub(super) fn media_request(&self, cand: usize, index: usize) -> Result<Request, EngineError> {
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

    pub(super) async fn init_bytes(&self, cand: usize) -> Result<Bytes, EngineError> {
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
        box_layout::check(&f.data)
            .map_err(|e| EngineError::Media(format!("the init segment of {id}: {e}")))?;
        self.inits.lock().unwrap().insert(id, f.data.clone());
        Ok(f.data)
    }

    /// Streams media segment `index` of candidate `cand` into the queue as its bytes arrive
    /// (pieces of [`CHUNK_BYTES`] or [`FLUSH_INTERVAL`]), tagged `tag`. Nothing is queued
    /// before `gate` opens (the parallel init segment is queued first). A failed attempt is
    /// resumed with a Range from the first byte not yet received, so no byte is queued twice.
    /// Every [`ABANDON_CHECK`] the selector may abandon it for a lower candidate, but only while
    /// none of it went downstream: its queued pieces are then taken back.
    pub(super) async fn stream_segment(
        &self,
        cand: usize,
        index: usize,
        tag: u64,
        epoch: u64,
        mut gate: Option<tokio::sync::oneshot::Receiver<Item>>,
    ) -> Result<Streamed, EngineError> {
        let plan = self.plan(cand).await?;
        let seg = plan
            .segments
            .get(index)
            .cloned()
            .ok_or_else(|| EngineError::Manifest(format!("no segment {index}")))?;
        let id = plan_id(self, cand);
        let what = format!("segment {index} of {id}");
        let mut piece = Piece {
            cand,
            tag,
            start: seg.start,
            duration: seg.duration,
            total: seg.size.or(seg.range.map(|r| r.len())),
            queued: 0,
            queued_time: Duration::ZERO,
            pending: BytesMut::new(),
        };
        // Every box must end within the segment: qtdemux would believe a header that claims
        // more, and swallow the segments after it.
        let mut layout = BoxLayout::new(piece.total);
        let malformed = |e: box_layout::LayoutError| EngineError::Media(format!("{what}: {e}"));
        let started = Instant::now();
        let mut ttfb: Option<Duration> = None;
        let mut received = 0u64;
        let mut last_flush = Instant::now();
        let mut next_check = started + ABANDON_CHECK;
        let (mut attempts, mut refreshed) = (Attempts::default(), false);
        // A switch's init segment (from `gate`) is held here and queued with the first piece,
        // not before: until then nothing of this download is downstream, and the start check
        // (or an abandon) may drop it with the rest.
        let in_flight = |total, received, ttfb| InFlightNow {
            cand,
            index,
            tag,
            total,
            received,
            elapsed: started.elapsed(),
            ttfb,
        };
        let mut held_init: Option<Item> = None;
        let queue = |item: Item, held: &mut Option<Item>| {
            if let Some(init) = held.take() {
                self.queue.push(epoch, init);
            }
            self.queue.push(epoch, item);
        };
        'attempts: loop {
            self.maybe_refresh_expiring().await?;
            let build = |c: &Context| c.media_request(cand, index);
            let (gen, req) = self.snapshot(&build)?;
            attempts.begin();
            let mut body = match self.fetcher.open(&req, received, MAX_RESPONSE_BYTES).await {
                Ok(b) => b,
                Err(e) => {
                    self.after_failure(&what, e, &mut attempts, &mut refreshed, gen, &req)
                        .await?;
                    continue;
                }
            };
            // The first answer's time to headers: with the total time from the first request,
            // what the selector compares against its progress record.
            ttfb.get_or_insert(started.elapsed());
            if piece.total.is_none() {
                piece.total = body.expected_len().map(|n| n + received);
                layout.set_total(piece.total);
            }
            let at_start = received;
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut stall_at = tokio::time::Instant::now() + self.fetcher.policy.stall_timeout;
            loop {
                tokio::select! {
                    c = body.next_raw() => match c {
                        Ok(Some(c)) => {
                            layout.feed(&c).map_err(malformed)?;
                            received += c.len() as u64;
                            self.stats.lock().unwrap().bytes += c.len() as u64;
                            piece.pending.extend_from_slice(&c);
                            stall_at = tokio::time::Instant::now()
                                + self.fetcher.policy.stall_timeout;
                        }
                        Ok(None) => {
                            layout.finish().map_err(malformed)?;
                            break 'attempts;
                        }
                        Err(e) => {
                            if received - at_start >= MIN_PROGRESS {
                                // It made progress: the resumed request is a new one.
                                attempts.charged = 1;
                            }
                            if gate.is_none() && !piece.pending.is_empty() {
                                queue(piece.take(false), &mut held_init);
                            }
                            self.after_failure(&what, e, &mut attempts, &mut refreshed, gen, &req)
                                .await?;
                            continue 'attempts;
                        }
                    },
                    _ = tokio::time::sleep_until(stall_at) => {
                        if received - at_start >= MIN_PROGRESS {
                            attempts.charged = 1;
                        }
                        if gate.is_none() && !piece.pending.is_empty() {
                            queue(piece.take(false), &mut held_init);
                        }
                        let e = FetchError::Stalled(self.fetcher.policy.stall_timeout);
                        self.after_failure(&what, e, &mut attempts, &mut refreshed, gen, &req)
                            .await?;
                        continue 'attempts;
                    }
                    r = async { gate.as_mut().expect("enabled only with a gate").await },
                        if gate.is_some() =>
                    {
                        match r {
                            Ok(init) => held_init = Some(init),
                            Err(_) => {
                                return Err(EngineError::Network(format!(
                                    "{what}: the init segment did not come"
                                )))
                            }
                        }
                        gate = None;
                    }
                    _ = tick.tick() => {}
                }
                let startup = piece.queued == 0 && !self.queue.is_playing();
                // The start check needs a fair sample: a full piece, or the bytes of
                // START_SAMPLE (on a slow link only; a fast one fills the piece sooner).
                let sampled = piece.pending.len() >= CHUNK_BYTES
                    || ttfb.is_some_and(|t| started.elapsed() >= t + START_SAMPLE);
                if gate.is_none()
                    && (!startup || sampled)
                    && (piece.pending.len() >= CHUNK_BYTES
                        || (!piece.pending.is_empty() && last_flush.elapsed() >= FLUSH_INTERVAL))
                {
                    if startup {
                        // Start-up: the first bytes are about to go downstream. Still time to
                        // trade the candidate for one the measured rate keeps in real time.
                        let f = in_flight(piece.total, received, ttfb);
                        if let Some(to) = self.check_start(&f) {
                            return Ok(Streamed::Abandoned {
                                to,
                                init_retracted: held_init.is_some(),
                            });
                        }
                    }
                    queue(piece.take(false), &mut held_init);
                    last_flush = Instant::now();
                }
                if Instant::now() >= next_check && gate.is_none() {
                    next_check = Instant::now() + ABANDON_CHECK;
                    let f = in_flight(piece.total, received, ttfb);
                    if let Some((to, init_retracted)) = self.check_abandon(&f) {
                        // An init segment still held here goes with the download.
                        return Ok(Streamed::Abandoned {
                            to,
                            init_retracted: init_retracted || held_init.is_some(),
                        });
                    }
                }
            }
        }
        if let Some(g) = gate {
            held_init = Some(g.await.map_err(|_| {
                EngineError::Network(format!("{what}: the init segment did not come"))
            })?);
        }
        queue(piece.take(true), &mut held_init);
        self.stats.lock().unwrap().segments += 1;
        let ttfb = ttfb.unwrap_or_default();
        self.measure(received, ttfb, started.elapsed());
        Ok(Streamed::Done)
    }

    /// At start-up, before the first piece of the download in flight goes downstream: asks the
    /// selector whether the rate its bytes come at keeps it ahead of real time, and which
    /// candidate to fetch instead when not (never with a pinned representation).
    pub(super) fn check_start(&self, f: &InFlightNow) -> Option<usize> {
        let total = f.total?;
        if self.live.is_pinned() {
            return None;
        }
        let now = self.epoch.elapsed();
        let to = self.with_selector(f.cand, |s, rep| s.check_start(&f.as_rep(rep, total), now))?;
        self.count_abandon("start-up, too slow for real time:", f, total, to);
        Some(to)
    }

    /// Counts a download given up for candidate `to`, with one debug line saying `why`.
    pub(super) fn count_abandon(&self, why: &str, f: &InFlightNow, total: u64, to: usize) {
        self.stats.lock().unwrap().abandons += 1;
        (self.log)(&format!(
            "{why} segment {} of {} after {} of {} bytes in {:?}: {} instead",
            f.index,
            plan_id(self, f.cand),
            f.received,
            total,
            f.elapsed,
            plan_id(self, to)
        ));
    }

    /// Asks the selector whether to abandon the download in flight; only while none of it went
    /// downstream (its pieces are still queued, or not queued at all), and never when a
    /// representation is pinned (then it only reports the progress). Holds the queue so that
    /// the streaming thread cannot take a piece between the decision and the retraction.
    /// `Some((candidate, init_retracted))`: fetch the segment from that candidate instead.
    pub(super) fn check_abandon(&self, f: &InFlightNow) -> Option<(usize, bool)> {
        let total = f.total?;
        let in_flight = |rep| f.as_rep(rep, total);
        let pinned = self.live.is_pinned();
        let now = self.epoch.elapsed();
        let (to, init_retracted) = self.queue.retract_unless_sent(f.tag, |level| match level {
            Some(level) if !pinned => self.with_selector(f.cand, |s, rep| {
                s.check_abandon(&in_flight(rep), &level, now)
            }),
            // Too late to abandon (or not ours to choose), but the selector still follows the
            // progress: an outage that starts mid-download shows there.
            _ => {
                self.with_selector(f.cand, |s, rep| {
                    s.on_progress(&in_flight(rep));
                    None
                });
                None
            }
        })?;
        self.count_abandon("abandoning", f, total, to);
        Some((to, init_retracted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(total: Option<u64>) -> Piece {
        Piece {
            cand: 0,
            tag: 1,
            start: Duration::from_secs(10),
            duration: Duration::from_secs(10),
            total,
            queued: 0,
            queued_time: Duration::ZERO,
            pending: BytesMut::new(),
        }
    }

    fn times(p: &mut Piece, sizes: &[usize]) -> Vec<(Duration, bool)> {
        let n = sizes.len();
        sizes
            .iter()
            .enumerate()
            .map(|(i, len)| {
                p.pending.extend_from_slice(&vec![0u8; *len]);
                match p.take(i + 1 == n) {
                    Item::Media { time, first, .. } => (time, first),
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn pieces_share_the_segment_duration_exactly() {
        // Size known: shares in proportion to bytes, adding up to the duration exactly.
        let t = times(&mut piece(Some(3000)), &[1000, 1000, 999, 1]);
        let third = Duration::from_nanos(3_333_333_333);
        assert_eq!(t[0], (third, true));
        assert_eq!(t[1], (third, false));
        let sum: Duration = t.iter().map(|(d, _)| *d).sum();
        assert_eq!(sum, Duration::from_secs(10));
        // Size unknown: the segment counts once complete.
        let t = times(&mut piece(None), &[5000, 5000, 0]);
        assert_eq!(
            t.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            [Duration::ZERO, Duration::ZERO, Duration::from_secs(10)]
        );
    }
}
