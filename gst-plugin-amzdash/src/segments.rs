//! Segment addressing: turns a Representation (SegmentList, SegmentTemplate with or without a
//! timeline, SegmentBase after its `sidx` is read, or a single file) into absolute SegmentRefs.

use std::time::Duration;
use url::Url;

use crate::mpd::{
    sidx::Sidx, ByteRange, MpdError, Representation, SegmentInfo, SegmentScheme, MAX_PRESENTATION,
};
use crate::url_policy::{self, AllowList};

/// Refuse more segments than this for one representation (a 10 h file at 1 s segments).
const MAX_SEGMENTS: usize = 36_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    pub url: Url,
    pub range: Option<ByteRange>,
    /// Presentation time of the segment start, from the period start plus period offset.
    pub start: Duration,
    pub duration: Duration,
    /// The exact size in bytes, when the manifest or the index gives it.
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitRef {
    pub url: Url,
    pub range: Option<ByteRange>,
}

/// What a representation needs fetched and in which order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentPlan {
    Ready {
        init: Option<InitRef>,
        segments: Vec<SegmentRef>,
    },
    /// SegmentBase: read `index` (a `sidx`) first, then call [`from_sidx`].
    NeedsIndex {
        init: Option<InitRef>,
        url: Url,
        index: ByteRange,
    },
}

fn invalid(rep: &Representation, why: impl std::fmt::Display) -> MpdError {
    MpdError::Invalid(format!("Representation {}: {why}", rep.id))
}

/// The representation's base URL resolved against the manifest URI, if the manifest may send
/// the demuxer there ([`url_policy`]).
pub fn base_url(manifest: &Url, allow: &AllowList, rep: &Representation) -> Result<Url, MpdError> {
    let mut u = manifest.clone();
    for b in &rep.base_urls {
        u = u
            .join(b.trim())
            .map_err(|e| invalid(rep, format!("bad BaseURL {b:?}: {e}")))?;
    }
    allowed(manifest, allow, rep, u)
}

fn allowed(
    manifest: &Url,
    allow: &AllowList,
    rep: &Representation,
    u: Url,
) -> Result<Url, MpdError> {
    url_policy::check_with(allow, manifest, &u).map_err(|e| invalid(rep, e))?;
    Ok(u)
}

/// `s` resolved against `base`, if the manifest may send the demuxer there.
fn join(
    (manifest, allow): (&Url, &AllowList),
    base: &Url,
    rep: &Representation,
    s: &str,
) -> Result<Url, MpdError> {
    let u = base
        .join(s)
        .map_err(|e| invalid(rep, format!("bad URL {s:?}: {e}")))?;
    allowed(manifest, allow, rep, u)
}

/// Expands `$RepresentationID$`, `$Number$`, `$Time$`, `$Bandwidth$` (with `%0Nd` widths) and
/// `$$`.
pub fn expand_template(
    t: &str,
    rep_id: &str,
    number: u64,
    time: u64,
    bandwidth: u64,
) -> Result<String, String> {
    let mut out = String::with_capacity(t.len() + 16);
    let mut rest = t;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after
            .find('$')
            .ok_or_else(|| format!("unterminated $ in template {t:?}"))?;
        let ident = &after[..j];
        rest = &after[j + 1..];
        if ident.is_empty() {
            out.push('$');
            continue;
        }
        let (name, fmt) = match ident.split_once('%') {
            Some((n, f)) => (n, Some(f)),
            None => (ident, None),
        };
        let value = match name {
            "RepresentationID" => {
                if fmt.is_some() {
                    return Err("$RepresentationID$ takes no format".into());
                }
                out.push_str(rep_id);
                continue;
            }
            "Number" => number,
            "Time" => time,
            "Bandwidth" => bandwidth,
            _ => return Err(format!("unknown template identifier ${ident}$")),
        };
        match fmt {
            None => out.push_str(&value.to_string()),
            Some(f) => {
                let width: usize = f
                    .strip_prefix('0')
                    .unwrap_or(f)
                    .strip_suffix('d')
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| format!("bad template format %{f}"))?;
                if width > 32 {
                    return Err(format!("template width {width} too large"));
                }
                out.push_str(&format!("{value:0width$}"));
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `v` ticks of `timescale` as a Duration, or `None` past [`MAX_PRESENTATION`] (the MPD parser
/// refuses a timescale of 0).
fn ticks(v: u64, timescale: u64) -> Option<Duration> {
    let ns = (v as u128 * 1_000_000_000) / timescale.max(1) as u128;
    (ns <= MAX_PRESENTATION.as_nanos()).then(|| Duration::from_nanos(ns as u64))
}

/// [`ticks`], with an error naming `what` for a value past [`MAX_PRESENTATION`].
fn time(rep: &Representation, what: &str, v: u64, timescale: u64) -> Result<Duration, MpdError> {
    ticks(v, timescale).ok_or_else(|| {
        invalid(
            rep,
            format!(
                "{what} = {v} (timescale {timescale}) is past the {} h this demuxer accepts",
                MAX_PRESENTATION.as_secs() / 3600
            ),
        )
    })
}

/// Segment `i`'s start tick, `pto + i * d`, refusing what overflows.
fn nth_start(rep: &Representation, pto: u64, i: u64, d: u64) -> Result<u64, MpdError> {
    i.checked_mul(d)
        .and_then(|x| x.checked_add(pto))
        .ok_or_else(|| {
            invalid(
                rep,
                format!("segment {} starts past the end of time", i + 1),
            )
        })
}

/// Expands a SegmentTimeline into (time, duration) pairs, resolving negative repeat counts
/// against the next entry's `t` or the period end.
fn expand_timeline(
    info: &SegmentInfo,
    timescale: u64,
    period_duration: Option<Duration>,
    rep: &Representation,
) -> Result<Vec<(u64, u64)>, MpdError> {
    let tl = info.timeline.as_deref().unwrap_or_default();
    let pto = info.presentation_time_offset.unwrap_or(0);
    let overflow = || invalid(rep, "SegmentTimeline runs past the end of time");
    let period_end = period_duration
        .map(|d| {
            u64::try_from(d.as_nanos() * timescale as u128 / 1_000_000_000)
                .ok()
                .and_then(|x| x.checked_add(pto))
                .ok_or_else(overflow)
        })
        .transpose()?;
    let mut out = Vec::new();
    let mut t = 0u64;
    for (i, s) in tl.iter().enumerate() {
        if let Some(st) = s.t {
            t = st;
        }
        if s.d == 0 {
            return Err(invalid(
                rep,
                format!("SegmentTimeline entry {} has d=0", i + 1),
            ));
        }
        let count: u64 = if s.r >= 0 {
            s.r as u64 + 1
        } else {
            let end = match tl.get(i + 1).and_then(|n| n.t) {
                Some(nt) => nt,
                None => period_end.ok_or_else(|| {
                    invalid(rep, "negative repeat count but the period has no known end")
                })?,
            };
            if end <= t {
                0
            } else {
                (end - t).div_ceil(s.d)
            }
        };
        for _ in 0..count {
            out.push((t, s.d));
            t = t.checked_add(s.d).ok_or_else(overflow)?;
            if out.len() > MAX_SEGMENTS {
                return Err(invalid(rep, "too many segments"));
            }
        }
    }
    Ok(out)
}

/// Plans `rep` of a period lasting `period_duration`, with URLs absolute against `manifest`.
pub fn plan(
    manifest: &Url,
    rep: &Representation,
    period_start: Duration,
    period_duration: Option<Duration>,
) -> Result<SegmentPlan, MpdError> {
    plan_with(
        &AllowList::default(),
        manifest,
        rep,
        period_start,
        period_duration,
    )
}

/// [`plan`], with the hosts and networks of `allow` reachable whatever their address class
/// (`allowed-hosts`).
pub fn plan_with(
    allow: &AllowList,
    manifest: &Url,
    rep: &Representation,
    period_start: Duration,
    period_duration: Option<Duration>,
) -> Result<SegmentPlan, MpdError> {
    let base = base_url(manifest, allow, rep)?;
    let origin = (manifest, allow);
    let init_of = |info: &SegmentInfo| -> Result<Option<InitRef>, MpdError> {
        info.initialization
            .as_ref()
            .map(|i| {
                let url = match &i.url {
                    Some(u) => {
                        let u = expand_template(u, &rep.id, 0, 0, rep.bandwidth)
                            .map_err(|e| invalid(rep, e))?;
                        join(origin, &base, rep, &u)?
                    }
                    None => base.clone(),
                };
                Ok(InitRef {
                    url,
                    range: i.range,
                })
            })
            .transpose()
    };
    match &rep.segments {
        SegmentScheme::Single => Ok(SegmentPlan::Ready {
            init: None,
            segments: vec![SegmentRef {
                url: base,
                range: None,
                start: period_start,
                duration: period_duration.unwrap_or_default(),
                size: None,
            }],
        }),
        SegmentScheme::Base(info) => {
            let index = info
                .index_range
                .ok_or_else(|| invalid(rep, "SegmentBase without indexRange"))?;
            Ok(SegmentPlan::NeedsIndex {
                init: init_of(info)?,
                url: base,
                index,
            })
        }
        SegmentScheme::List(info) => {
            let ts = info.timescale.unwrap_or(1);
            let pto = info.presentation_time_offset.unwrap_or(0);
            let urls = info.segment_urls.as_deref().unwrap_or_default();
            if urls.is_empty() {
                return Err(invalid(rep, "SegmentList without SegmentURL"));
            }
            // A list longer than the period is clipped below; only what can play is planned.
            let urls = &urls[..urls.len().min(MAX_SEGMENTS + 1)];
            let times: Vec<(u64, u64)> = if info.timeline.is_some() {
                expand_timeline(info, ts, period_duration, rep)?
            } else {
                let d = info
                    .duration
                    .filter(|d| *d > 0)
                    .ok_or_else(|| invalid(rep, "SegmentList without duration or timeline"))?;
                (0..urls.len() as u64)
                    .map(|i| Ok((nth_start(rep, pto, i, d)?, d)))
                    .collect::<Result<_, MpdError>>()?
            };
            let mut segments = Vec::with_capacity(urls.len());
            for (i, u) in urls.iter().enumerate() {
                let (t, d) = times
                    .get(i)
                    .copied()
                    .ok_or_else(|| invalid(rep, "SegmentTimeline shorter than SegmentList"))?;
                let url = match &u.media {
                    Some(m) => join(origin, &base, rep, m)?,
                    None => base.clone(),
                };
                segments.push(SegmentRef {
                    url,
                    range: u.media_range,
                    start: period_start + time(rep, "segment start", t.saturating_sub(pto), ts)?,
                    duration: time(rep, "segment duration", d, ts)?,
                    size: u.media_range.map(|r| r.len()),
                });
            }
            // A listed segment is a real file. With @duration its start is nominal and its
            // media may begin up to half a duration earlier (DASH-IF IOP): ffmpeg segments
            // Opus in media time, so the priming pushes its last few ms into a segment listed
            // at the period's end. Such a segment still plays (the decoder clips at the end).
            let slack = match (&info.timeline, info.duration) {
                (None, Some(d)) => time(rep, "segment duration", d / 2, ts)?,
                _ => Duration::ZERO,
            };
            clip_to_period(rep, &mut segments, period_start, period_duration, slack)?;
            Ok(SegmentPlan::Ready {
                init: init_of(info)?,
                segments,
            })
        }
        SegmentScheme::Template(info) => {
            let ts = info.timescale.unwrap_or(1);
            let pto = info.presentation_time_offset.unwrap_or(0);
            let media = info
                .media
                .as_deref()
                .ok_or_else(|| invalid(rep, "SegmentTemplate without media"))?;
            let start_number = info.start_number.unwrap_or(1);
            let times: Vec<(u64, u64)> = if info.timeline.is_some() {
                expand_timeline(info, ts, period_duration, rep)?
            } else {
                let d = info
                    .duration
                    .filter(|d| *d > 0)
                    .ok_or_else(|| invalid(rep, "SegmentTemplate without duration or timeline"))?;
                let total = period_duration.ok_or_else(|| {
                    invalid(
                        rep,
                        "SegmentTemplate@duration needs a known period duration",
                    )
                })?;
                let total_ticks = total.as_nanos() * ts as u128 / 1_000_000_000;
                let n = total_ticks.div_ceil(d as u128);
                if n > MAX_SEGMENTS as u128 {
                    return Err(invalid(rep, "too many segments"));
                }
                (0..n as u64)
                    .map(|i| Ok((nth_start(rep, pto, i, d)?, d)))
                    .collect::<Result<_, MpdError>>()?
            };
            let mut segments = Vec::with_capacity(times.len());
            for (i, (t, d)) in times.into_iter().enumerate() {
                let number = start_number
                    .checked_add(i as u64)
                    .ok_or_else(|| invalid(rep, "startNumber overflows the segment numbers"))?;
                let name = expand_template(media, &rep.id, number, t, rep.bandwidth)
                    .map_err(|e| invalid(rep, e))?;
                segments.push(SegmentRef {
                    url: join(origin, &base, rep, &name)?,
                    range: None,
                    start: period_start + time(rep, "segment start", t.saturating_sub(pto), ts)?,
                    duration: time(rep, "segment duration", d, ts)?,
                    size: None,
                });
            }
            // Without a timeline the last segment is usually shorter than @duration.
            clip_to_period(
                rep,
                &mut segments,
                period_start,
                period_duration,
                Duration::ZERO,
            )?;
            Ok(SegmentPlan::Ready {
                init: init_of(info)?,
                segments,
            })
        }
    }
}

/// Clips `segments` to the period: segments that start at or after its end plus `slack` are
/// dropped (they would never be presented) and the last one ends with it. A segment declared longer than the
/// whole period, among several, means the manifest's timing is wrong (its media would be cut
/// off silently), and is refused.
fn clip_to_period(
    rep: &Representation,
    segments: &mut Vec<SegmentRef>,
    period_start: Duration,
    period_duration: Option<Duration>,
    slack: Duration,
) -> Result<(), MpdError> {
    let Some(total) = period_duration else {
        if segments.len() > MAX_SEGMENTS {
            return Err(invalid(rep, "too many segments"));
        }
        return Ok(());
    };
    if segments.len() > 1 {
        if let Some((i, s)) = segments
            .iter()
            .enumerate()
            .find(|(_, s)| s.duration > total + Duration::from_secs(1))
        {
            return Err(invalid(
                rep,
                format!(
                    "segment {} lasts {:.3} s, longer than the whole Period ({:.3} s): the \
                     segment duration or timeline does not fit the Period",
                    i + 1,
                    s.duration.as_secs_f64(),
                    total.as_secs_f64()
                ),
            ));
        }
    }
    let end = period_start + total;
    let playing = segments
        .iter()
        .take_while(|s| s.start < end + slack)
        .count();
    if playing == 0 && total > Duration::ZERO {
        return Err(invalid(rep, "no segment starts inside the Period"));
    }
    segments.truncate(playing.max(1));
    if segments.len() > MAX_SEGMENTS {
        return Err(invalid(rep, "too many segments"));
    }
    if let Some(last) = segments.last_mut() {
        if last.start < end && last.start + last.duration > end {
            last.duration = end - last.start;
        }
    }
    Ok(())
}

/// The segments of a SegmentBase representation once its `sidx` is known.
pub fn from_sidx(
    url: &Url,
    sidx: &Sidx,
    presentation_time_offset: u64,
    pto_timescale: u64,
    period_start: Duration,
) -> Vec<SegmentRef> {
    // The index's times are bounded by `sidx::parse`; a presentationTimeOffset past the limit
    // can only shift every segment to the start.
    let pto = ticks(presentation_time_offset, pto_timescale).unwrap_or(MAX_PRESENTATION);
    sidx.references
        .iter()
        .map(|r| SegmentRef {
            url: url.clone(),
            range: Some(ByteRange {
                start: r.offset,
                end: r.offset + r.size - 1,
            }),
            start: period_start
                + ticks(r.start, sidx.timescale)
                    .unwrap_or(MAX_PRESENTATION)
                    .saturating_sub(pto),
            duration: ticks(r.duration, sidx.timescale).unwrap_or(MAX_PRESENTATION),
            size: Some(r.size),
        })
        .collect()
}

/// The index of the segment holding `t` (the last one for times past the end).
pub fn segment_at(segments: &[SegmentRef], t: Duration) -> usize {
    match segments.iter().position(|s| s.start + s.duration > t) {
        Some(i) => i,
        None => segments.len().saturating_sub(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_expansion() {
        assert_eq!(
            expand_template("$RepresentationID$/$Number%05d$.m4s", "flac", 7, 0, 1).unwrap(),
            "flac/00007.m4s"
        );
        assert_eq!(
            expand_template("t$Time$-b$Bandwidth$-$$-$Number$", "x", 3, 96000, 320000).unwrap(),
            "t96000-b320000-$-3"
        );
        assert!(expand_template("$Nope$", "x", 1, 0, 0).is_err());
        assert!(expand_template("$Number", "x", 1, 0, 0).is_err());
        assert!(expand_template("$Number%0999d$", "x", 1, 0, 0).is_err());
    }

    #[test]
    fn segment_at_finds_the_covering_segment() {
        let u = Url::parse("http://h/x").unwrap();
        let segs: Vec<SegmentRef> = (0..3)
            .map(|i| SegmentRef {
                url: u.clone(),
                range: None,
                start: Duration::from_secs(2 * i),
                duration: Duration::from_secs(2),
                size: None,
            })
            .collect();
        assert_eq!(segment_at(&segs, Duration::ZERO), 0);
        assert_eq!(segment_at(&segs, Duration::from_millis(3999)), 1);
        assert_eq!(segment_at(&segs, Duration::from_secs(4)), 2);
        assert_eq!(segment_at(&segs, Duration::from_secs(100)), 2);
    }
}
