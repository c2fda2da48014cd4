// SPDX-License-Identifier: MPL-2.0
//! The presentation: the parsed manifest and the representations of it that can play here
//! (the candidates), built once per track from the MPD and the element's settings.

use std::collections::HashMap;
use std::time::Duration;
use url::Url;

use crate::mpd::{Mpd, Representation};
use amzmusic_common::codec::Codec;

/// One representation the engine may choose.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub set: usize,
    pub rep: usize,
    pub id: String,
    pub codec: Codec,
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
    /// Why `id` cannot be pinned, or None when it names a candidate.
    pub fn pin_error(&self, id: &str) -> Option<String> {
        (!self.candidates.iter().any(|c| c.id == id)).then(|| unknown_pin(id, &self.candidates))
    }

    pub fn duration(&self) -> Option<Duration> {
        self.mpd.duration.or(self.mpd.periods[self.period].duration)
    }
}

/// The message for a `representation` that names no candidate.
fn unknown_pin(id: &str, candidates: &[Candidate]) -> String {
    let ids: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
    format!(
        "The representation property names {id:?}, which this manifest does not offer here \
         (a representation without a decoder or above max-quality is left out); it offers: {}",
        ids.join(", ")
    )
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

/// What of the element's settings shapes the presentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted<'a> {
    /// Highest `amz-music:trackType` (empty or unknown: any).
    pub max_quality: &'a str,
    /// `max-bitrate` (0 = none).
    pub max_bitrate: u64,
    /// `representation`, the pinned id (empty = adaptive).
    pub representation: &'a str,
}

/// A built presentation, with the codec family to start in and what was left out.
#[derive(Debug, Clone)]
pub struct Built {
    pub presentation: Presentation,
    /// The pinned representation's family, else the one the manifest prefers
    /// (selectionPriority, then bandwidth) within max-bitrate, else the lowest bandwidth's.
    pub family: Codec,
    /// `id (codecs)` of each representation with no decoder here.
    pub skipped: Vec<String>,
}

/// The candidates of `mpd`'s first audio period: each representation of a codec we know whose
/// decoder `decodable` says is here, none above `wanted.max_quality`.
pub fn build(
    mpd: Mpd,
    url: Url,
    wanted: Wanted<'_>,
    mut decodable: impl FnMut(Codec) -> bool,
) -> Result<Built, String> {
    let max_q = quality_rank(wanted.max_quality);
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    let mut known: HashMap<Codec, bool> = HashMap::new();
    let period = mpd
        .audio_sets()
        .next()
        .map(|(p, _)| p)
        .ok_or("no audio AdaptationSet")?;
    for (si, set) in mpd.periods[period].adaptation_sets.iter().enumerate() {
        let label = set.track_type().map(str::to_string);
        if max_q > 0 && label.as_deref().is_some_and(|l| quality_rank(l) > max_q) {
            continue;
        }
        for (ri, rep) in set.representations.iter().enumerate() {
            let codec = Codec::from_dash_codecs(&rep.codecs);
            let Some(codec) = codec.filter(|c| *known.entry(*c).or_insert_with(|| decodable(*c)))
            else {
                skipped.push(format!("{} ({})", rep.id, rep.codecs));
                continue;
            };
            candidates.push(Candidate {
                set: si,
                rep: ri,
                id: rep.id.clone(),
                label: label
                    .clone()
                    .unwrap_or_else(|| codec.stream_id_suffix().to_string()),
                codec,
                bandwidth: rep.bandwidth,
                selection_priority: set.selection_priority,
            });
        }
    }
    if candidates.is_empty() {
        return Err(format!(
            "No representation of this manifest can be played here: no decoder for {} \
             (or max-quality excludes the rest)",
            if skipped.is_empty() {
                "any".into()
            } else {
                skipped.join(", ")
            }
        ));
    }
    // Start in the family the manifest prefers (selectionPriority), within max-bitrate.
    let fits = |c: &&Candidate| wanted.max_bitrate == 0 || c.bandwidth <= wanted.max_bitrate;
    let pinned = candidates
        .iter()
        .find(|c| !wanted.representation.is_empty() && c.id == wanted.representation);
    if pinned.is_none() && !wanted.representation.is_empty() {
        return Err(unknown_pin(wanted.representation, &candidates));
    }
    let family = pinned
        .or_else(|| {
            candidates
                .iter()
                .filter(fits)
                .max_by_key(|c| (c.selection_priority, c.bandwidth))
        })
        .or_else(|| candidates.iter().min_by_key(|c| c.bandwidth))
        .map(|c| c.codec)
        .ok_or("no candidates")?;
    Ok(Built {
        presentation: Presentation {
            mpd,
            period,
            manifest_url: url,
            candidates,
        },
        family,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_families() {
        // The DASH codecs value names the candidate's codec (amzmusic_common::codec tests the
        // whole table).
        let codec = |c: &str| Codec::from_dash_codecs(c).map(Codec::stream_id_suffix);
        assert_eq!(codec("flac"), Some("flac"));
        assert_eq!(codec("mp4a.40.2"), Some("mp4a"));
        assert_eq!(codec("Opus"), Some("opus"));
        assert_eq!(codec("ec-3"), Some("ec-3"));
    }

    const MPD: &str = r#"<MPD type="static" mediaPresentationDuration="PT4S"><Period>
        <AdaptationSet contentType="audio" selectionPriority="3">
          <SupplementalProperty schemeIdUri="urn:amazon:music:drm:2019" value="trackType"
            xmlns:amz-music="urn:amazon:music:drm:2019" amz-music:trackType="UHD"/>
          <Representation id="flac-96k24" codecs="flac" bandwidth="4000000"><BaseURL>u.mp4</BaseURL>
            <SegmentList timescale="1" duration="2"><SegmentURL mediaRange="0-9"/></SegmentList>
          </Representation></AdaptationSet>
        <AdaptationSet contentType="audio" selectionPriority="2">
          <Representation id="opus-320k" codecs="opus" bandwidth="330000"><BaseURL>o.mp4</BaseURL>
            <SegmentList timescale="1" duration="2"><SegmentURL mediaRange="0-9"/></SegmentList>
          </Representation>
          <Representation id="ac4" codecs="ac-4" bandwidth="640000"><BaseURL>a.mp4</BaseURL>
            <SegmentList timescale="1" duration="2"><SegmentURL mediaRange="0-9"/></SegmentList>
          </Representation></AdaptationSet>
      </Period></MPD>"#;

    const FLAC: Codec = Codec::Flac;
    const OPUS: Codec = Codec::Opus;

    fn built(wanted: Wanted<'_>, decoders: &[Codec]) -> Result<Built, String> {
        let mpd = Mpd::parse(MPD.as_bytes()).unwrap();
        let url = Url::parse("http://cdn.example/m.mpd").unwrap();
        build(mpd, url, wanted, |f| decoders.contains(&f))
    }

    #[test]
    fn candidates_are_what_decodes_within_max_quality() {
        let b = built(Wanted::default(), &[FLAC, OPUS]).unwrap();
        let ids: Vec<&str> = b
            .presentation
            .candidates
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["flac-96k24", "opus-320k"]);
        assert_eq!(b.presentation.candidates[0].label, "UHD");
        assert_eq!(b.presentation.candidates[1].label, "opus");
        assert_eq!(b.skipped, ["ac4 (ac-4)"]);
        // The manifest prefers FLAC (selectionPriority 3).
        assert_eq!(b.family, FLAC);
        let hd = Wanted {
            max_quality: "HD",
            ..Default::default()
        };
        let b = built(hd, &[FLAC, OPUS]).unwrap();
        assert_eq!(b.presentation.candidates.len(), 1);
        assert_eq!(b.family, OPUS);
        let err = built(Wanted::default(), &[]).unwrap_err();
        assert!(err.contains("no decoder for flac-96k24 (flac)"), "{err}");
    }

    #[test]
    fn the_start_family_follows_the_pin_then_max_bitrate() {
        let capped = Wanted {
            max_bitrate: 1_000_000,
            ..Default::default()
        };
        assert_eq!(built(capped, &[FLAC, OPUS]).unwrap().family, OPUS);
        let pinned = Wanted {
            representation: "opus-320k",
            ..Default::default()
        };
        assert_eq!(built(pinned, &[FLAC, OPUS]).unwrap().family, OPUS);
        // A pin the manifest does not have is an error that names it (it played adaptively).
        let unknown = Wanted {
            representation: "flac-192k24",
            ..Default::default()
        };
        let err = built(unknown, &[FLAC, OPUS]).unwrap_err();
        assert!(err.contains("\"flac-192k24\""), "{err}");
        assert!(err.ends_with("it offers: flac-96k24, opus-320k"), "{err}");
        // Nor one that has no decoder here.
        let no_decoder = Wanted {
            representation: "ac4",
            ..Default::default()
        };
        assert!(built(no_decoder, &[FLAC, OPUS]).is_err());
        let p = built(Wanted::default(), &[FLAC, OPUS])
            .unwrap()
            .presentation;
        assert!(p.pin_error("opus-320k").is_none());
        assert!(p.pin_error("ac4").unwrap().contains("\"ac4\""));
        // Nothing within the cap: the lowest bandwidth's family.
        let tiny = Wanted {
            max_bitrate: 1,
            ..Default::default()
        };
        assert_eq!(built(tiny, &[FLAC]).unwrap().family, FLAC);
    }
}
