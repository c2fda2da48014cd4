//! Writes manifests shaped like the service's: static on-demand MPD, one AdaptationSet per tier
//! with ContentProtection, Amazon properties, and SegmentList, SegmentTemplate or SegmentBase.

use base64::Engine;
use std::fmt::Write;

use super::catalog::{Addressing, Codec, KeySystem, RepresentationSpec, Tier, TrackSpec};
use super::store::{PackagedRep, PackagedTrack, Variant};

pub const NS_AMZ: &str = "urn:amazon:music:3p:music:2020";
pub const NS_AMZ_MUSIC: &str = "urn:amazon:music:drm:2019";
pub const WIDEVINE_URN: &str = "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed";
/// W3C Clear Key's system id as DASH-IF IOP signals it in a manifest.
pub const CLEARKEY_URN: &str = "urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e";
/// The DASH-IF content protection namespace (`dashif:Laurl`).
pub const NS_DASHIF: &str = "https://dashif.org/CPS";

/// Why a capability request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// The header names no quality this API knows.
    InvalidCapability(String),
    /// The track has nothing at or below what the device can play.
    CapabilityExceeded,
}

/// Parses `X-Amzn-Audio-Device-Capability` (`SD,HD,UHD,ATMOS,360RA`) into the highest tier.
pub fn max_capability(header: &str) -> Result<Tier, SelectError> {
    let mut best = None;
    for q in header.split(',').map(|s| s.trim().to_ascii_uppercase()) {
        let t = match q.as_str() {
            "" => continue,
            "LD" => Tier::Ld,
            "SD" => Tier::Sd,
            "HD" => Tier::Hd,
            "UHD" => Tier::Uhd,
            "ATMOS" | "360RA" => Tier::Atmos,
            _ => return Err(SelectError::InvalidCapability(q)),
        };
        best = best.max(Some(t));
    }
    best.ok_or_else(|| SelectError::InvalidCapability(header.to_string()))
}

/// The representations a manifest holds for a device whose best quality is `max`: the highest
/// tier the track has up to `max`, plus the lower tiers; UHD and spatial manifests hold only
/// their top representation plus the Opus fallback.
pub fn select_representations(
    track: &TrackSpec,
    max: Tier,
) -> Result<Vec<RepresentationSpec>, SelectError> {
    let top = track
        .tiers()
        .into_iter()
        .filter(|t| *t <= max)
        .max()
        .ok_or(SelectError::CapabilityExceeded)?;
    let opus = track
        .representations
        .iter()
        .filter(|r| r.codec == Codec::Opus && r.tier <= top);
    let mut out: Vec<RepresentationSpec> = match top {
        Tier::Uhd | Tier::Atmos => {
            let best = track
                .representations
                .iter()
                .filter(|r| r.tier == top)
                .max_by_key(|r| (r.sample_rate, r.channels, r.bit_depth))
                .expect("tier present")
                .clone();
            std::iter::once(best).chain(opus.cloned()).collect()
        }
        Tier::Hd => track
            .representations
            .iter()
            .filter(|r| r.tier == Tier::Hd)
            .chain(opus)
            .cloned()
            .collect(),
        _ => opus.cloned().collect(),
    };
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}

/// How URLs in the manifest are written.
pub struct UrlStyle<'a> {
    /// Appended to every media URL (the signed query, `?ao=…&exp=…&sig=…`), or empty.
    pub query: &'a str,
    /// `<amz:LicenseUrl>` (Widevine) or `<dashif:Laurl>` (Clear Key) for device clients; None
    /// for the open mirror.
    pub license_url: Option<&'a str>,
    /// The DRM system the encrypted content is offered for.
    pub key_system: KeySystem,
}

fn iso_duration(seconds: f64) -> String {
    format!("PT{seconds:.3}S")
}

fn kid_uuid(k: &[u8; 16]) -> String {
    let h = hex::encode(k);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Writes the MPD for `reps` (already selected) of a packaged track.
pub fn write_mpd(
    track: &TrackSpec,
    packaged: &PackagedTrack,
    reps: &[RepresentationSpec],
    addressing: Addressing,
    urls: &UrlStyle,
) -> String {
    let duration = track.duration_ms as f64 / 1000.0;
    let mut tiers: Vec<Tier> = reps.iter().map(|r| r.tier).collect();
    tiers.sort();
    tiers.dedup();
    tiers.reverse();
    // qualityRanking 1 = best, over the whole manifest, by measured worst-case bitrate.
    let mut ranked: Vec<(&str, u64)> = reps
        .iter()
        .filter_map(|r| packaged.rep(r.id).map(|p| (r.id, p.peak_bitrate)))
        .collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
    let rank = |id: &str| ranked.iter().position(|r| r.0 == id).unwrap_or(0) + 1;

    let mut m = String::new();
    let _ = writeln!(m, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        m,
        r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:cenc="urn:mpeg:cenc:2013" xmlns:amz="{NS_AMZ}" xmlns:amz-music="{NS_AMZ_MUSIC}" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" type="static" minBufferTime="PT2S" mediaPresentationDuration="{}">"#,
        iso_duration(duration)
    );
    let _ = writeln!(m, r#"  <Period id="0" start="PT0S">"#);
    let set_ids: Vec<u32> = (1..=tiers.len() as u32).collect();
    for (n, tier) in tiers.iter().enumerate() {
        let set_id = set_ids[n];
        let others: Vec<String> = set_ids
            .iter()
            .filter(|i| **i != set_id)
            .map(|i| i.to_string())
            .collect();
        let _ = writeln!(
            m,
            r#"    <AdaptationSet id="{set_id}" contentType="audio" mimeType="audio/mp4" lang="und" segmentAlignment="true" selectionPriority="{}">"#,
            tier.selection_priority()
        );
        if let Variant::Encrypted(scheme) = packaged.variant {
            let kid = track.key_id(*tier);
            let pssh = packaged
                .reps
                .iter()
                .find(|p| p.key_id == Some(kid))
                .and_then(|p| p.pssh_for(urls.key_system))
                .unwrap_or_default();
            let _ = writeln!(
                m,
                r#"      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="{}" cenc:default_KID="{}"/>"#,
                scheme.name(),
                kid_uuid(&kid)
            );
            let pssh = base64::engine::general_purpose::STANDARD.encode(pssh);
            match urls.key_system {
                KeySystem::Widevine => {
                    let _ = write!(
                        m,
                        r#"      <ContentProtection schemeIdUri="{WIDEVINE_URN}" value="Widevine"><cenc:pssh>{pssh}</cenc:pssh>"#,
                    );
                    if let Some(url) = urls.license_url {
                        let _ = write!(m, "<amz:LicenseUrl>{}</amz:LicenseUrl>", xml_escape(url));
                    }
                }
                // DASH-IF IOP's Clear Key signalling: the W3C system id, a Common System pssh
                // (key ids), and the license server as dashif:Laurl.
                KeySystem::Clearkey => {
                    let _ = write!(
                        m,
                        r#"      <ContentProtection schemeIdUri="{CLEARKEY_URN}" value="ClearKey1.0"><cenc:pssh>{pssh}</cenc:pssh>"#,
                    );
                    if let Some(url) = urls.license_url {
                        let _ = write!(
                            m,
                            r#"<dashif:Laurl xmlns:dashif="{NS_DASHIF}">{}</dashif:Laurl>"#,
                            xml_escape(url)
                        );
                    }
                }
            }
            let _ = writeln!(m, "</ContentProtection>");
        }
        if !others.is_empty() {
            let _ = writeln!(
                m,
                r#"      <SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="{}"/>"#,
                others.join(",")
            );
        }
        let _ = writeln!(
            m,
            r#"      <SupplementalProperty schemeIdUri="amz-music:trackType" value="{}"/>"#,
            tier.track_type()
        );
        // The source's measured loudness, as the service writes it (`-13.5 LUFS`). Music has
        // no dialogue anchor: the anchor is modelled as the programme's own loudness.
        let lufs = super::loudness::manifest_value(packaged.loudness);
        let _ = writeln!(
            m,
            r#"      <SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:ProgramLoudness" value="{lufs}"/>"#
        );
        let _ = writeln!(
            m,
            r#"      <SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:AnchorLoudness" value="{lufs}"/>"#
        );
        for r in reps.iter().filter(|r| r.tier == *tier) {
            let Some(p) = packaged.rep(r.id) else {
                continue;
            };
            write_representation(&mut m, r, p, rank(r.id), addressing, urls);
        }
        let _ = writeln!(m, "    </AdaptationSet>");
    }
    let _ = writeln!(m, "  </Period>\n</MPD>");
    m
}

fn write_representation(
    m: &mut String,
    r: &RepresentationSpec,
    p: &PackagedRep,
    ranking: usize,
    addressing: Addressing,
    urls: &UrlStyle,
) {
    let _ = writeln!(
        m,
        r#"      <Representation id="{}" codecs="{}" bandwidth="{}" audioSamplingRate="{}" qualityRanking="{ranking}" mimeType="audio/mp4">"#,
        r.id,
        r.codec.codecs(),
        p.peak_bitrate,
        r.sample_rate
    );
    let ch_value = if r.codec == Codec::Eac3 {
        // Dolby's channel configuration for 5.1 (L R C LFE Ls Rs).
        r#"schemeIdUri="tag:dolby.com,2014:dash:audio_channel_configuration:2011" value="F801""#
            .to_string()
    } else {
        format!(
            r#"schemeIdUri="urn:mpeg:mpegB:cicp:ChannelConfiguration" value="{}""#,
            r.channels
        )
    };
    let _ = writeln!(m, "        <AudioChannelConfiguration {ch_value}/>");
    // As the service writes it: a child descriptor of the representation.
    if r.codec == Codec::Flac {
        let _ = writeln!(
            m,
            r#"        <SupplementalProperty schemeIdUri="amz-music:bitDepth" value="{}"/>"#,
            r.bit_depth
        );
    }
    let q = xml_escape(urls.query);
    let init_len = p.init_for(urls.key_system).len() as u64;
    let seg_ticks = super::store::SEGMENT_SECONDS * p.timescale as u64;
    match addressing {
        Addressing::List => {
            let _ = writeln!(m, "        <BaseURL>{}.mp4{q}</BaseURL>", r.id);
            let _ = writeln!(
                m,
                r#"        <SegmentList timescale="{}" duration="{seg_ticks}">"#,
                p.timescale
            );
            let _ = writeln!(
                m,
                r#"          <Initialization range="0-{}"/>"#,
                init_len - 1
            );
            for s in &p.segments {
                let a = init_len + s.offset;
                let _ = writeln!(
                    m,
                    r#"          <SegmentURL mediaRange="{a}-{}"/>"#,
                    a + s.size - 1
                );
            }
            let _ = writeln!(m, "        </SegmentList>");
        }
        Addressing::Base => {
            let sidx_len = p.sidx().len() as u64;
            let _ = writeln!(m, "        <BaseURL>{}.mp4{q}</BaseURL>", r.id);
            let _ = writeln!(
                m,
                r#"        <SegmentBase timescale="{}" indexRange="{init_len}-{}" indexRangeExact="true">"#,
                p.timescale,
                init_len + sidx_len - 1
            );
            let _ = writeln!(
                m,
                r#"          <Initialization range="0-{}"/>"#,
                init_len - 1
            );
            let _ = writeln!(m, "        </SegmentBase>");
        }
        Addressing::Template => {
            let _ = writeln!(
                m,
                r#"        <SegmentTemplate timescale="{}" initialization="$RepresentationID$/init.mp4{q}" media="$RepresentationID$/$Number%05d$.m4s{q}" startNumber="1">"#,
                p.timescale
            );
            let _ = writeln!(m, "          <SegmentTimeline>");
            // Run-length encode equal durations, as packagers do.
            let mut i = 0;
            while i < p.segments.len() {
                let d = p.segments[i].duration;
                let mut r = 0;
                while i + r + 1 < p.segments.len() && p.segments[i + r + 1].duration == d {
                    r += 1;
                }
                let t = p.segments[i].start;
                if r > 0 {
                    let _ = writeln!(m, r#"            <S t="{t}" d="{d}" r="{r}"/>"#);
                } else {
                    let _ = writeln!(m, r#"            <S t="{t}" d="{d}"/>"#);
                }
                i += r + 1;
            }
            let _ = writeln!(m, "          </SegmentTimeline>");
            let _ = writeln!(m, "        </SegmentTemplate>");
        }
    }
    let _ = writeln!(m, "      </Representation>");
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::catalog::{ids, Catalog};

    #[test]
    fn capability_parsing() {
        assert_eq!(max_capability("SD,HD"), Ok(Tier::Hd));
        assert_eq!(max_capability("sd, uhd"), Ok(Tier::Uhd));
        assert_eq!(max_capability("360RA"), Ok(Tier::Atmos));
        assert!(matches!(
            max_capability("8K"),
            Err(SelectError::InvalidCapability(_))
        ));
    }

    #[test]
    fn hd_client_never_sees_uhd_and_uhd_manifest_is_top_plus_opus() {
        let c = Catalog::builtin(None);
        let t = c.track(ids::UHD).unwrap();
        let hd: Vec<_> = select_representations(t, Tier::Hd)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(hd, ["flac-44k16", "opus-64k", "opus-320k"]);
        let uhd: Vec<_> = select_representations(t, Tier::Uhd)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(uhd, ["flac-192k24", "opus-64k", "opus-320k"]);
        let sd: Vec<_> = select_representations(t, Tier::Sd)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(sd, ["opus-64k", "opus-320k"]);
    }

    #[test]
    fn capability_below_every_tier_is_refused() {
        let c = Catalog::builtin(None);
        let mut t = c.track(ids::SPATIAL).unwrap().clone();
        t.representations.retain(|r| r.tier == Tier::Atmos);
        assert!(matches!(
            select_representations(&t, Tier::Hd),
            Err(SelectError::CapabilityExceeded)
        ));
    }
}
