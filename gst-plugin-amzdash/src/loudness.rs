// SPDX-License-Identifier: MPL-2.0
//! The manifest's loudness as ReplayGain tags, so that `rgvolume` normalizes Amazon Music
//! playback with no code of the application's.
//!
//! The service signals each AdaptationSet's loudness with the CICP descriptors
//! `urn:mpeg:mpegB:cicp:ProgramLoudness` and `AnchorLoudness` (ISO/IEC 23001-8), values such as
//! `-13.5 LUFS` (the public test manifests of Amazon's vinyl player). ReplayGain 2.0 normalizes
//! to -18 LUFS, which it calls a reference level of 89 dB: the track gain is
//! `-18 - programme loudness` dB. A player that wants another target (Amazon Music's own
//! normalization is reported as -14 LUFS) sets `rgvolume pre-amp`. Album gain is not signalled
//! (the manifest describes one track), so `rgvolume album-mode` falls back to the track gain.
//!
//! How the gain reaches `rgvolume` ahead of the first sample: GStreamer 1.22's `qtdemux` sends
//! its own stream tags right before its first sample and forwards upstream tag events only once
//! it has a pad, so a tag event from the demuxer arrives a fragment late (10 s of audio at the
//! wrong level). The gain therefore also goes into the init segment, where MP4 files keep
//! ReplayGain (iTunes-style `moov/udta/meta/ilst/----` with `com.apple.iTunes` and
//! `replaygain_track_gain`): qtdemux reads it and sends it as a global tag before the first
//! sample.

use crate::clear_lead::{canonical, children, put_box};
use crate::mpd::Mpd;

/// ReplayGain 2.0's target loudness.
pub const REPLAYGAIN_TARGET_LUFS: f64 = -18.0;
/// The reference level ReplayGain's tags state for that target.
pub const REPLAYGAIN_REFERENCE_DB: f64 = 89.0;

/// What one manifest says about its programme's loudness.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loudness {
    /// Integrated loudness of the programme, LUFS.
    pub programme: f64,
    /// Loudness of the anchor (dialogue) content, LUFS, when signalled.
    pub anchor: Option<f64>,
}

impl Loudness {
    /// The first AdaptationSet's loudness that signals a programme loudness (every set is an
    /// encoding of the same programme).
    pub fn of(mpd: &Mpd) -> Option<Loudness> {
        mpd.periods
            .iter()
            .flat_map(|p| &p.adaptation_sets)
            .find_map(|set| {
                let programme = set.loudness("ProgramLoudness")?;
                // A loudness outside what audio can have is a broken manifest: no tags rather
                // than a gain of +100 dB.
                (-70.0..=0.0).contains(&programme).then_some(Loudness {
                    programme,
                    anchor: set.loudness("AnchorLoudness"),
                })
            })
    }

    /// The ReplayGain track gain, dB.
    pub fn track_gain(&self) -> f64 {
        REPLAYGAIN_TARGET_LUFS - self.programme
    }

    /// The tags: ReplayGain track gain and reference level.
    pub fn tags(&self) -> gst::TagList {
        let mut tags = gst::TagList::new();
        {
            let t = tags.get_mut().expect("a new tag list is writable");
            let m = gst::TagMergeMode::Replace;
            t.add::<gst::tags::TrackGain>(&self.track_gain(), m);
            t.add::<gst::tags::ReferenceLevel>(&REPLAYGAIN_REFERENCE_DB, m);
        }
        tags
    }
}

/// `init` with the ReplayGain track gain in its `moov` (a `udta` appended to it), or `None`
/// when it cannot be done safely: not plain 32-bit boxes, no `moov`, or a `udta` of the
/// packager's already (its tags are left alone; the tag event still carries the gain).
pub fn init_with_gain(init: &[u8], gain_db: f64) -> Option<Vec<u8>> {
    if !canonical(init) || !gain_db.is_finite() {
        return None;
    }
    let moov = children(init).find(|(t, _)| t == b"moov")?.1;
    if !canonical(moov) || children(moov).any(|(t, _)| &t == b"udta") {
        return None;
    }
    let full = |body: &[u8]| [&[0u8; 4][..], body].concat();
    let mut hdlr = vec![0u8; 4];
    hdlr.extend_from_slice(b"mdir");
    hdlr.extend_from_slice(b"appl");
    hdlr.extend_from_slice(&[0; 9]);
    let mut data = 1u32.to_be_bytes().to_vec(); // type 1: UTF-8 text
    data.extend_from_slice(&[0; 4]); // locale
    data.extend_from_slice(format!("{gain_db:+.2} dB").as_bytes());
    let mut freeform = Vec::new();
    put_box(&mut freeform, b"mean", &full(b"com.apple.iTunes"));
    put_box(&mut freeform, b"name", &full(b"replaygain_track_gain"));
    put_box(&mut freeform, b"data", &data);
    let mut ilst = Vec::new();
    put_box(&mut ilst, b"----", &freeform);
    let mut meta = vec![0u8; 4];
    put_box(&mut meta, b"hdlr", &full(&hdlr));
    put_box(&mut meta, b"ilst", &ilst);
    let mut udta = Vec::new();
    put_box(&mut udta, b"meta", &meta);
    let mut out = Vec::with_capacity(init.len() + udta.len() + 8);
    for (kind, body) in children(init) {
        if &kind == b"moov" {
            let mut b = body.to_vec();
            put_box(&mut b, b"udta", &udta);
            put_box(&mut out, &kind, &b);
        } else {
            put_box(&mut out, &kind, body);
        }
    }
    Some(out)
}

/// `upstream`'s stream tags with the loudness tags added (the loudness wins: it describes the
/// audio that is played).
pub fn merged(
    upstream: Option<&gst::TagList>,
    loudness: Option<&Loudness>,
) -> Option<gst::TagList> {
    let own = loudness.map(Loudness::tags);
    match (upstream, own) {
        (None, None) => None,
        (Some(u), None) => Some(u.clone()),
        (None, Some(o)) => Some(o),
        (Some(u), Some(o)) => Some(u.merge(&o, gst::TagMergeMode::Replace)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mpd(descriptors: &str) -> Mpd {
        Mpd::parse(
            format!(
                r#"<MPD type="static" mediaPresentationDuration="PT10S"><Period>
                <AdaptationSet contentType="audio">{descriptors}
                <Representation id="r" bandwidth="1"><BaseURL>a.mp4</BaseURL></Representation>
                </AdaptationSet></Period></MPD>"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn the_services_descriptors_give_the_replaygain_track_gain() {
        gst::init().unwrap();
        let m = mpd(
            r#"<SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:ProgramLoudness" value="-13.5 LUFS"/>
            <SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:AnchorLoudness" value="-15.0 LUFS"/>"#,
        );
        let l = Loudness::of(&m).unwrap();
        assert_eq!(l.programme, -13.5);
        assert_eq!(l.anchor, Some(-15.0));
        assert_eq!(l.track_gain(), -4.5);
        let tags = l.tags();
        assert_eq!(tags.get::<gst::tags::TrackGain>().unwrap().get(), -4.5);
        assert_eq!(tags.get::<gst::tags::ReferenceLevel>().unwrap().get(), 89.0);
    }

    #[test]
    fn no_or_impossible_loudness_gives_no_tags() {
        assert_eq!(Loudness::of(&mpd("")), None);
        for v in ["+12 LUFS", "-90 LUFS", "-13 dB", "loud", "NaN"] {
            let m = mpd(&format!(
                r#"<SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:ProgramLoudness" value="{v}"/>"#
            ));
            assert_eq!(Loudness::of(&m), None, "{v}");
        }
    }

    #[test]
    fn the_gain_goes_into_the_moov_and_nothing_else_changes() {
        let mut init = Vec::new();
        put_box(&mut init, b"ftyp", b"iso6\0\0\0\0");
        let mut moov = Vec::new();
        put_box(&mut moov, b"mvhd", &[0; 100]);
        put_box(&mut moov, b"trak", &[1; 40]);
        put_box(&mut init, b"moov", &moov);
        let out = init_with_gain(&init, 2.2).unwrap();
        let boxes: Vec<_> = children(&out).map(|(t, b)| (t, b.len())).collect();
        assert_eq!(boxes[0], (*b"ftyp", 8));
        let new_moov = children(&out).find(|(t, _)| t == b"moov").unwrap().1;
        assert!(
            new_moov.starts_with(&moov),
            "moov's boxes unchanged, in order"
        );
        let udta = crate::clear_lead::path(new_moov, &[b"udta"]).unwrap();
        let meta = crate::clear_lead::path(udta, &[b"meta"]).unwrap();
        let ilst = crate::clear_lead::path(&meta[4..], &[b"ilst"]).unwrap();
        let ff = crate::clear_lead::path(ilst, &[b"----"]).unwrap();
        let field = |k: &[u8; 4]| crate::clear_lead::path(ff, &[k]).unwrap().to_vec();
        assert_eq!(&field(b"mean")[4..], b"com.apple.iTunes");
        assert_eq!(&field(b"name")[4..], b"replaygain_track_gain");
        assert_eq!(&field(b"data")[8..], b"+2.20 dB");
        // Once there is a udta, the packager's tags are left alone.
        assert_eq!(init_with_gain(&out, 1.0), None);
        assert_eq!(init_with_gain(b"junk", 1.0), None);
    }

    #[test]
    fn upstream_tags_are_kept_beside_the_loudness() {
        gst::init().unwrap();
        let mut up = gst::TagList::new();
        up.get_mut()
            .unwrap()
            .add::<gst::tags::Title>(&"Harbour Lights", gst::TagMergeMode::Replace);
        let l = Loudness {
            programme: -20.0,
            anchor: None,
        };
        let t = merged(Some(&up), Some(&l)).unwrap();
        assert_eq!(t.get::<gst::tags::Title>().unwrap().get(), "Harbour Lights");
        assert_eq!(t.get::<gst::tags::TrackGain>().unwrap().get(), 2.0);
        assert!(merged(None, None).is_none());
    }
}
