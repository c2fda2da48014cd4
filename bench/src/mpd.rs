//! Just enough of a DASH manifest to score playback: each representation's bandwidth, segment
//! times and (SegmentList) byte ranges, so a fetched URL or range names a segment.

use anyhow::{bail, Context, Result};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

#[derive(Debug, Clone, PartialEq)]
pub struct Rep {
    pub id: String,
    pub bandwidth: u64,
    /// Start and end of each segment, seconds.
    pub segments: Vec<(f64, f64)>,
    /// SegmentList `mediaRange` starts and ends (inclusive), in segment order.
    pub ranges: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ladder {
    pub reps: Vec<Rep>,
    pub duration_s: f64,
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name.as_bytes())
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn num<T: std::str::FromStr>(e: &BytesStart<'_>, name: &str) -> Option<T> {
    attr(e, name).and_then(|v| v.trim().parse().ok())
}

/// `PT60.000S`, `PT1H0M0S`: the subset of ISO 8601 durations manifests use.
pub fn parse_duration(s: &str) -> Option<f64> {
    let rest = s.strip_prefix("PT")?;
    let (mut total, mut n) = (0.0, String::new());
    for c in rest.chars() {
        match c {
            '0'..='9' | '.' => n.push(c),
            'H' | 'M' | 'S' => {
                let v: f64 = n.parse().ok()?;
                n.clear();
                total += v * match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
            }
            _ => return None,
        }
    }
    n.is_empty().then_some(total)
}

impl Ladder {
    pub fn parse(xml: &str) -> Result<Ladder> {
        let mut reader = Reader::from_str(xml);
        let mut ladder = Ladder::default();
        let mut cur: Option<Rep> = None;
        let mut timescale = 1u64;
        let mut list_duration: Option<u64> = None;
        let mut next_t = 0u64;
        loop {
            let ev = reader.read_event().context("manifest XML")?;
            let (e, empty) = match &ev {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::End(e) => {
                    if e.local_name().as_ref() == b"Representation" {
                        if let Some(r) = cur.take() {
                            ladder.reps.push(r);
                        }
                    }
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            match e.local_name().as_ref() {
                b"MPD" => {
                    ladder.duration_s = attr(e, "mediaPresentationDuration")
                        .and_then(|d| parse_duration(&d))
                        .unwrap_or(0.0);
                }
                b"Representation" => {
                    let r = Rep {
                        id: attr(e, "id").context("Representation without id")?,
                        bandwidth: num(e, "bandwidth").unwrap_or(0),
                        segments: vec![],
                        ranges: vec![],
                    };
                    if empty {
                        ladder.reps.push(r);
                    } else {
                        cur = Some(r);
                    }
                    timescale = 1;
                    list_duration = None;
                    next_t = 0;
                }
                b"SegmentTemplate" | b"SegmentList" => {
                    timescale = num(e, "timescale").unwrap_or(1).max(1);
                    list_duration = num(e, "duration");
                }
                b"S" => {
                    if let Some(r) = cur.as_mut() {
                        let t: u64 = num(e, "t").unwrap_or(next_t);
                        let d: u64 = num(e, "d").context("S without d")?;
                        let repeat: i64 = num(e, "r").unwrap_or(0);
                        let mut t = t;
                        for _ in 0..=repeat.max(0) {
                            r.segments.push((
                                t as f64 / timescale as f64,
                                (t + d) as f64 / timescale as f64,
                            ));
                            t += d;
                        }
                        next_t = t;
                    }
                }
                b"SegmentURL" => {
                    if let Some(r) = cur.as_mut() {
                        if let Some((a, b)) = attr(e, "mediaRange").as_deref().and_then(|m| {
                            let (a, b) = m.split_once('-')?;
                            Some((a.parse().ok()?, b.parse().ok()?))
                        }) {
                            r.ranges.push((a, b));
                        }
                        if let Some(d) = list_duration {
                            let k = r.segments.len() as u64;
                            r.segments.push((
                                (k * d) as f64 / timescale as f64,
                                ((k + 1) * d) as f64 / timescale as f64,
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        if ladder.reps.is_empty() {
            bail!("the manifest has no Representation");
        }
        Ok(ladder)
    }

    pub fn top_bandwidth(&self) -> u64 {
        self.reps.iter().map(|r| r.bandwidth).max().unwrap_or(0)
    }

    pub fn rep(&self, id: &str) -> Option<&Rep> {
        self.reps.iter().find(|r| r.id == id)
    }
}

impl Rep {
    /// The segment that holds media time `t` seconds (the last one past the end).
    pub fn segment_at(&self, t: f64) -> Option<usize> {
        if self.segments.is_empty() {
            return None;
        }
        Some(
            self.segments
                .iter()
                .position(|(_, end)| t < *end)
                .unwrap_or(self.segments.len() - 1),
        )
    }

    /// The segment whose `mediaRange` holds byte `offset`.
    pub fn segment_of_offset(&self, offset: u64) -> Option<usize> {
        self.ranges
            .iter()
            .position(|(a, b)| (*a..=*b).contains(&offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT20.020S">
 <Period><AdaptationSet>
  <Representation id="flac" bandwidth="1600000">
   <SegmentTemplate timescale="48000" media="$RepresentationID$/$Number%05d$.m4s" startNumber="1">
    <SegmentTimeline><S t="0" d="480000" r="1"/><S d="960"/></SegmentTimeline>
   </SegmentTemplate>
  </Representation>
  <Representation id="opus" bandwidth="150000">
   <SegmentList timescale="1000" duration="10000">
    <Initialization range="0-99"/>
    <SegmentURL mediaRange="100-199"/><SegmentURL mediaRange="200-299"/>
   </SegmentList>
  </Representation>
 </AdaptationSet></Period></MPD>"#;

    #[test]
    fn reads_bandwidths_timelines_and_ranges() {
        let l = Ladder::parse(TEMPLATE).unwrap();
        assert_eq!(l.top_bandwidth(), 1_600_000);
        assert!((l.duration_s - 20.02).abs() < 1e-9);
        let flac = l.rep("flac").unwrap();
        assert_eq!(flac.segments.len(), 3);
        assert_eq!(flac.segments[2], (20.0, 20.02));
        assert_eq!(flac.segment_at(9.99), Some(0));
        assert_eq!(flac.segment_at(10.0), Some(1));
        assert_eq!(flac.segment_at(99.0), Some(2));
        let opus = l.rep("opus").unwrap();
        assert_eq!(opus.ranges, vec![(100, 199), (200, 299)]);
        assert_eq!(opus.segments, vec![(0.0, 10.0), (10.0, 20.0)]);
        assert_eq!(opus.segment_of_offset(250), Some(1));
        assert_eq!(opus.segment_of_offset(50), None);
    }

    #[test]
    fn durations_and_bad_manifests() {
        assert_eq!(parse_duration("PT1H0M0S"), Some(3600.0));
        assert_eq!(parse_duration("PT60.000S"), Some(60.0));
        assert_eq!(parse_duration("P1D"), None);
        assert!(Ladder::parse("<MPD/>").is_err());
        assert!(Ladder::parse("<MPD><Representation>").is_err());
    }
}
