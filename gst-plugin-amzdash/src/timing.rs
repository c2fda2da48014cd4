// SPDX-License-Identifier: MPL-2.0
//! A representation's presentation timing from its init segment's edit list: the encoder delay
//! (priming) that comes before presentation time zero, which downstream must drop, and the end
//! past which the last frame's padding must be clipped.
//!
//! What GStreamer 1.22 does, found by experiment (`tests/packagers.rs`): `qtdemux` applies an
//! `elst` only when it reads a file itself (pull mode). Fed by an upstream TIME segment, as
//! behind any DASH demuxer, it takes each fragment's time from the buffer's PTS and ignores the
//! edit list, so the priming (312 samples for libopus) played. So the demuxer does it: each
//! fragment is stamped with its media time (presentation time plus the priming), and the TIME
//! segment downstream starts at the priming and stops at the presentation's end plus the
//! priming. The audio decoder clips its output to that segment (`GstAudioDecoder`), and what
//! comes out starts and ends where the source does.
//!
//! In pull mode `qtdemux` drops whole samples that end before the edit's `media_time` instead
//! of handing them to the decoder to be clipped. With a priming of one whole frame (the
//! emulator's Opus: 960 samples, as Opus encoders pad it) its decoder starts cold one frame in,
//! so its first ~0.4 s differ slightly from a decode that ran through the priming, as ours does
//! (`tests/cdn.rs` measures it). `dashdemux2` and push-mode `qtdemux` ignore the edit list and
//! play the priming.
//!
//! How packagers write it (Shaka Packager 3, ffmpeg 8's dash muxer, for libopus): an `elst`
//! whose one edit has `media_time` = the priming; `tfdt` in media time from 0; the MPD's segment
//! times (`sidx` earliest presentation time, `SegmentTimeline`) in presentation time from 0, with
//! the first segment holding the priming before it; no `presentationTimeOffset`. Priming said
//! only by `presentationTimeOffset` is not handled (no packager we know writes it that way).

use std::time::Duration;

use crate::clear_lead::{be32, be64, children, path};

/// The edit list's timing of one representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditTiming {
    /// The media time of presentation time zero (`media_time` of the first edit), in samples.
    pub priming: u64,
    /// The media timescale (`mdhd`), samples per second for audio.
    pub timescale: u32,
}

/// The timing an init segment's edit list says, or None when it has none (or only an edit that
/// starts at media time zero, which changes nothing).
pub fn from_init(init: &[u8]) -> Option<EditTiming> {
    let moov = path(init, &[b"moov"])?;
    let trak = children(moov).find(|(t, _)| t == b"trak")?.1;
    let mdhd = path(trak, &[b"mdia", b"mdhd"])?;
    let timescale = match *mdhd.first()? {
        1 => be32(mdhd, 20)?,
        _ => be32(mdhd, 12)?,
    };
    let elst = path(trak, &[b"edts", b"elst"])?;
    let version = *elst.first()?;
    let count = be32(elst, 4)?;
    let (entry, media_at) = if version == 1 { (20, 8) } else { (12, 4) };
    // An empty edit (media_time -1) delays the start: nothing of the media is dropped for it.
    let priming = (0..count.min(16) as usize).find_map(|i| {
        let at = 8 + i * entry + media_at;
        let t = if version == 1 {
            be64(elst, at)? as i64
        } else {
            be32(elst, at)? as i32 as i64
        };
        (t >= 0).then_some(t as u64)
    })?;
    (priming > 0 && timescale > 0).then_some(EditTiming { priming, timescale })
}

impl EditTiming {
    fn at(&self, samples: u64) -> Duration {
        Duration::from_nanos(
            (samples as u128 * 1_000_000_000 / self.timescale as u128).min(u64::MAX as u128) as u64,
        )
    }

    /// Half a sample: the segment's bounds sit half a sample inside the samples they keep, so
    /// that the decoder's rounding of nanoseconds to samples keeps exactly those.
    fn half(&self) -> Duration {
        Duration::from_nanos(500_000_000 / self.timescale as u64)
    }

    /// The PTS of a fragment's first sample, from its start in the manifest. The first segment
    /// (starting at presentation time zero) holds the priming before zero, so its media starts at
    /// media time zero; every later segment starts `priming` after its presentation time.
    pub fn stamp(&self, start: Duration) -> Duration {
        if start.is_zero() {
            Duration::ZERO
        } else {
            start + self.at(self.priming)
        }
    }

    /// Where presentation time `t` is in the stamps' (media) time, as the segment's bound.
    pub fn bound(&self, t: Duration) -> Duration {
        self.at(self.priming) + t + self.half()
    }

    /// The segment's stop for a presentation `end`ing there: its last whole sample kept.
    pub fn stop(&self, end: Duration) -> Duration {
        let samples = (end.as_nanos() * self.timescale as u128 + 500_000_000) / 1_000_000_000;
        (self.at(self.priming + samples as u64)).saturating_sub(self.half())
    }
}

/// The TIME segment downstream: `segment` (presentation time) in the stamps' time when the
/// representation has an edit list, stopping at the presentation's `end` unless a seek set a
/// stop. Running time is unchanged, so streams with and without priming join seamlessly.
pub fn output_segment(
    segment: &gst::FormattedSegment<gst::ClockTime>,
    timing: Option<&EditTiming>,
    end: Option<Duration>,
) -> gst::FormattedSegment<gst::ClockTime> {
    let Some(t) = timing else {
        return segment.clone();
    };
    let clock = |d: Duration| gst::ClockTime::from_nseconds(d.as_nanos() as u64);
    let ns = |c: gst::ClockTime| Duration::from_nanos(c.nseconds());
    let mut out = segment.clone();
    let start = segment.start().map_or(Duration::ZERO, ns);
    out.set_start(clock(t.bound(start)));
    // The first kept sample's PTS is half a sample before the start: the base moves by as much,
    // so that its running time is the presentation's, exactly (a join with a stream without
    // priming is then seamless to the nanosecond, not only to the sample).
    out.set_base(segment.base().unwrap_or(gst::ClockTime::ZERO) + clock(t.half()));
    if let Some(p) = segment.position() {
        out.set_position(clock(t.bound(ns(p))));
    }
    match segment.stop() {
        Some(s) => out.set_stop(clock(t.bound(ns(s)))),
        None => {
            if let Some(e) = end {
                out.set_stop(clock(t.stop(e)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    /// moov/trak with an mdhd (v0, `timescale`) and, when given, an elst (v0) of `edits`
    /// (segment_duration, media_time).
    fn init(timescale: u32, edits: Option<&[(u32, i32)]>) -> Vec<u8> {
        let mut mdhd = vec![0u8; 24];
        mdhd[12..16].copy_from_slice(&timescale.to_be_bytes());
        let mut trak = Vec::new();
        if let Some(edits) = edits {
            let mut elst = vec![0u8; 4];
            elst.extend_from_slice(&(edits.len() as u32).to_be_bytes());
            for (d, t) in edits {
                elst.extend_from_slice(&d.to_be_bytes());
                elst.extend_from_slice(&t.to_be_bytes());
                elst.extend_from_slice(&[0, 1, 0, 0]);
            }
            trak.extend(mp4_box(b"edts", &mp4_box(b"elst", &elst)));
        }
        trak.extend(mp4_box(b"mdia", &mp4_box(b"mdhd", &mdhd)));
        let mut out = mp4_box(b"ftyp", b"iso6\0\0\0\0");
        out.extend(mp4_box(b"moov", &mp4_box(b"trak", &trak)));
        out
    }

    #[test]
    fn the_first_edit_that_plays_media_gives_the_priming() {
        let t = from_init(&init(48_000, Some(&[(0, 312)]))).unwrap();
        assert_eq!((t.priming, t.timescale), (312, 48_000));
        // An empty edit first (a delay) is skipped over.
        let t = from_init(&init(48_000, Some(&[(100, -1), (0, 960)]))).unwrap();
        assert_eq!(t.priming, 960);
        assert_eq!(from_init(&init(44_100, None)), None);
        assert_eq!(from_init(&init(44_100, Some(&[(0, 0)]))), None);
        assert_eq!(from_init(b"not an init segment"), None);
    }

    #[test]
    fn fragments_are_stamped_in_media_time() {
        let t = EditTiming {
            priming: 312,
            timescale: 48_000,
        };
        assert_eq!(t.stamp(Duration::ZERO), Duration::ZERO);
        // Shaka's second subsegment starts at presentation 480648: its tfdt is 480960.
        let start = Duration::from_nanos(480_648 * 1_000_000_000 / 48_000);
        assert_eq!(
            t.stamp(start).as_nanos(),
            480_960u128 * 1_000_000_000 / 48_000
        );
    }

    /// What GstAudioDecoder keeps of a buffer at `pts` of `n` samples: the samples whose start
    /// is in [start, stop), rounded as gst_audio_buffer_clip rounds (down, in samples).
    fn kept(pts: u64, n: u64, rate: u64, start: u64, stop: u64) -> (u64, u64) {
        let front = start.saturating_sub(pts) * rate / 1_000_000_000;
        let end = pts + n * 1_000_000_000 / rate;
        let back = end.saturating_sub(stop) * rate / 1_000_000_000;
        (front, n - front - back)
    }

    #[test]
    fn the_segment_keeps_exactly_the_presented_samples() {
        let t = EditTiming {
            priming: 312,
            timescale: 48_000,
        };
        gst::init().unwrap();
        // A 960590-sample source, as Shaka's manifest says it: PT20.012291S.
        let end = Duration::from_nanos(20_012_291_000);
        let mut seg = gst::FormattedSegment::<gst::ClockTime>::new();
        seg.set_start(gst::ClockTime::ZERO);
        let out = output_segment(&seg, Some(&t), Some(end));
        let (start, stop) = (
            out.start().unwrap().nseconds(),
            out.stop().unwrap().nseconds(),
        );
        // The first frame (960 samples at 0) loses the priming; the last frame (at media time
        // 960000, 960 samples decoded) keeps what the presentation still holds.
        assert_eq!(kept(0, 960, 48_000, start, stop), (312, 648));
        let last = 960_000u64 * 1_000_000_000 / 48_000;
        assert_eq!(
            kept(last, 960, 48_000, start, stop).1,
            960_590 + 312 - 960_000
        );
        // Running time is presentation time (within half a sample).
        let ten = t.stamp(Duration::from_secs(10)).as_nanos() as u64;
        let rt = out
            .to_running_time(gst::ClockTime::from_nseconds(ten))
            .unwrap();
        assert!(rt.nseconds().abs_diff(10_000_000_000) < 11_000, "{rt}");
        // Without an edit list nothing changes.
        assert_eq!(output_segment(&seg, None, Some(end)), seg);
    }
}
