// SPDX-License-Identifier: MPL-2.0
//! The buffered-segment upgrades: once everything is fetched, segments still queued are fetched
//! again from a better candidate and swapped in, if nothing of them went downstream meanwhile.

use bytes::{Bytes, BytesMut};
use std::time::Duration;

use super::download::Piece;
use super::{plan_id, Context, EngineError, Item, QueuedSegment, CHUNK_BYTES, FLUSH_INTERVAL};
use crate::abr;
use crate::segments::{self, SegmentRef};

impl Context {
    /// The selector's upgrade for the queue as it is: `(segment, its index, candidate)`.
    pub(super) fn propose_upgrade(&self) -> Option<(QueuedSegment, usize, usize)> {
        if self.live.is_pinned() || !self.queue.taking() {
            return None;
        }
        let queued = self.queue.queued_segments();
        let level = self.buffer_level();
        let plans = self.plans.lock().unwrap().clone();
        let index_of = |q: &QueuedSegment| {
            let plan = plans.get(&plan_id(self, q.candidate))?;
            Some(segments::segment_at(&plan.segments, q.start))
        };
        let indexes: Vec<usize> = queued.iter().map(index_of).collect::<Option<_>>()?;
        let mut abr = self.abr.lock().unwrap();
        let a = abr.as_mut()?;
        self.apply_cap(a);
        let rep_of = |c: usize| a.map.iter().position(|m| *m == c);
        let buffered: Vec<abr::Buffered> = queued
            .iter()
            .zip(&indexes)
            .map(|(q, &segment)| {
                Some(abr::Buffered {
                    segment,
                    rep: rep_of(q.candidate)?,
                    due_in: q.due_in,
                })
            })
            .collect::<Option<_>>()?;
        let (k, choice) = a.selector.upgrade(&buffered, &level)?;
        let i = indexes.iter().position(|&x| x == k)?;
        let to = a.map[choice.rep];
        // The segment's index in the new candidate's own plan, found by time: only one that
        // covers exactly the same media can take its place (a candidate with another segment
        // timeline, e.g. a short tail, cannot).
        let q = queued[i];
        let end = q.start + plans.get(&plan_id(self, q.candidate))?.segments[k].duration;
        let index = same_media(&plans.get(&plan_id(self, to))?.segments, q.start, end)?;
        Some((q, index, to))
    }

    /// Everything is fetched and the link would sit idle until the next track: fetches
    /// buffered segments again from better candidates while the selector proposes one. Each is
    /// swapped in only if nothing of its segment went downstream meanwhile, and its download is
    /// given up as soon as that happens. A failed or late upgrade is dropped (the buffered
    /// segment plays): it never stops playback.
    pub(super) async fn upgrade_buffered(&self, epoch: u64) {
        // Each proposal is swapped in or its segment is gone from the choices (downstream, or
        // failed): this bound is only a guard.
        let bound = self.queue.queued_segments().len() * 8;
        for _ in 0..bound {
            let Some((seg, index, to)) = self.propose_upgrade() else {
                return;
            };
            let from = plan_id(self, seg.candidate);
            let to_id = plan_id(self, to);
            (self.log)(&format!(
                "segment {index}: upgrading {from} -> {to_id}, due downstream in {:.1} s",
                seg.due_in.as_secs_f64()
            ));
            match self.upgrade_segment(seg, index, to, epoch).await {
                Ok(true) => {
                    self.stats.lock().unwrap().upgrades += 1;
                    (self.log)(&format!("segment {index}: {to_id} swapped in"));
                }
                Ok(false) => {
                    self.stats.lock().unwrap().upgrades_dropped += 1;
                    (self.log)(&format!(
                        "segment {index}: the upgrade to {to_id} came too late, dropped"
                    ));
                }
                Err(e) => {
                    self.stats.lock().unwrap().upgrades_dropped += 1;
                    (self.log)(&format!(
                        "segment {index}: the upgrade to {to_id} failed ({e:?}); no more upgrades"
                    ));
                    return;
                }
            }
        }
    }

    /// Fetches segment `index` from `to` and swaps it for the queued `seg`; `Ok(false)` when
    /// part of `seg` went downstream first.
    pub(super) async fn upgrade_segment(
        &self,
        seg: QueuedSegment,
        index: usize,
        to: usize,
        epoch: u64,
    ) -> Result<bool, EngineError> {
        let gone = || !self.queue.taking() || self.queue.popped_tag() >= seg.tag;
        let what = format!("segment {index} of {}", plan_id(self, to));
        let download = async {
            self.init_bytes(to).await?;
            let plan = self.plan(to).await?;
            let f = self.fetch(&what, |c| c.media_request(to, index)).await?;
            Ok::<_, EngineError>((f.data, plan))
        };
        let watch = async {
            while !gone() {
                tokio::time::sleep(FLUSH_INTERVAL).await;
            }
        };
        let (data, plan) = tokio::select! {
            r = download => r?,
            () = watch => return Ok(false),
        };
        if data.is_empty() {
            return Err(EngineError::Network(format!("{what}: empty response")));
        }
        // Malformed: the buffered segment plays, and upgrades stop (the caller logs why).
        crate::box_layout::check(&data).map_err(|e| EngineError::Media(format!("{what}: {e}")))?;
        let (start, duration) = plan
            .segments
            .get(index)
            .map(|s| (s.start, s.duration))
            .ok_or_else(|| EngineError::Manifest(format!("no segment {index}")))?;
        // Not if what may play changed meanwhile (a pinned representation, a lower cap).
        let max = self.live.max_bitrate();
        let bandwidth = self.presentation.lock().unwrap().candidates[to].bandwidth;
        if self.live.is_pinned() || (max != 0 && bandwidth > max) {
            return Ok(false);
        }
        let mut piece = Piece {
            cand: to,
            tag: seg.tag,
            start,
            duration,
            total: Some(data.len() as u64),
            queued: 0,
            queued_time: Duration::ZERO,
            pending: BytesMut::new(),
        };
        let mut media = Vec::new();
        for chunk in data.chunks(CHUNK_BYTES) {
            piece.pending.extend_from_slice(chunk);
            let last = piece.queued + chunk.len() as u64 == data.len() as u64;
            media.push(piece.take(last));
        }
        let init_of = |c: usize, tag: u64| {
            let (id, codec) = {
                let p = self.presentation.lock().unwrap();
                (p.candidates[c].id.clone(), p.candidates[c].codec)
            };
            let cached = self.inits.lock().unwrap().get(&id).cloned();
            // (A candidate without an init segment queues an empty one, as on a switch.)
            let data = match cached {
                Some(d) => d,
                None => match self.init_request(c) {
                    Ok(None) => Bytes::new(),
                    _ => return None,
                },
            };
            Some(Item::Init {
                candidate: c,
                codec,
                data,
                tag,
            })
        };
        Ok(self.queue.replace(epoch, seg.tag, to, media, &init_of))
    }
}

/// The segment of `segments` covering exactly `[start, end)` (within 1 ms), if one does.
fn same_media(segments: &[SegmentRef], start: Duration, end: Duration) -> Option<usize> {
    let close = |a: Duration, b: Duration| a.abs_diff(b) <= Duration::from_millis(1);
    segments
        .iter()
        .position(|s| close(s.start, start) && close(s.start + s.duration, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    #[test]
    fn an_upgrade_takes_only_a_segment_covering_the_same_media() {
        let ms = Duration::from_millis;
        let seg = |start: u64, dur: u64| SegmentRef {
            url: Url::parse("http://h/s").unwrap(),
            range: None,
            start: ms(start),
            duration: ms(dur),
            size: None,
        };
        // FLAC: 10 s segments, the last one 10.02 s; Opus: the same, but a 20 ms tail of its own.
        let flac = [seg(0, 10_000), seg(10_000, 10_020)];
        let opus = [seg(0, 10_000), seg(10_000, 10_000), seg(20_000, 20)];
        assert_eq!(same_media(&flac, ms(0), ms(10_000)), Some(0));
        assert_eq!(same_media(&opus, ms(10_000), ms(20_020)), None);
        assert_eq!(same_media(&flac, ms(10_000), ms(20_000)), None);
        assert_eq!(same_media(&flac, ms(20_000), ms(20_020)), None);
        // Rounding within a millisecond is the same media.
        assert_eq!(same_media(&flac, ms(10_001), ms(20_020)), Some(1));
    }
}
