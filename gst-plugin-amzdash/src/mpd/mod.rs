//! The typed MPD model: Periods, AdaptationSets, Representations with their segment addressing
//! (inherited across levels), BaseURLs, ContentProtection and descriptor properties.

pub mod sidx;
mod xml;

use base64::Engine;
use std::time::Duration;

use xml::Node;

/// The largest manifest accepted. A 1 h SegmentList manifest with 6 representations is ~1 MB.
pub const MAX_MANIFEST_BYTES: usize = amzmusic_common::http::body_limit::MANIFEST as usize;

/// The latest presentation time accepted anywhere in a manifest or a segment index: a week, far
/// beyond any track, album or audiobook. Every time is checked against it where it is read, so
/// that sums of such times (a period start plus a segment end) can never overflow later on.
pub const MAX_PRESENTATION: Duration = Duration::from_secs(7 * 86_400);

pub const WIDEVINE_SYSTEM_ID: &str = "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed";

/// Why a manifest cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MpdError {
    #[error("manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("manifest is not valid XML: {0}")]
    Xml(String),
    #[error("document is not an MPD (root element is <{0}>)")]
    NotMpd(String),
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive, as in HTTP.
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Parses `a-b` (inclusive).
    pub fn parse(s: &str) -> Result<Self, MpdError> {
        let bad = || MpdError::Invalid(format!("bad byte range {s:?} (expected first-last)"));
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let start: u64 = a.trim().parse().map_err(|_| bad())?;
        let end: u64 = b.trim().parse().map_err(|_| bad())?;
        if end < start {
            return Err(bad());
        }
        // No file is 8 EiB long; refusing such ends keeps `len()` and `end + 1` from overflowing.
        if end >= i64::MAX as u64 {
            return Err(MpdError::Invalid(format!(
                "byte range {s:?} ends past the end of any file"
            )));
        }
        Ok(ByteRange { start, end })
    }
}

/// `<S t d r>` of a SegmentTimeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineEntry {
    pub t: Option<u64>,
    pub d: u64,
    /// Repeat count; -1 means "until the next `t` or the end of the period".
    pub r: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRange {
    pub url: Option<String>,
    pub range: Option<ByteRange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentUrl {
    pub media: Option<String>,
    pub media_range: Option<ByteRange>,
}

/// Segment addressing attributes as written at one level; `merge` lays a lower level over a
/// higher one (Period < AdaptationSet < Representation), as the DASH spec inherits them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentInfo {
    pub timescale: Option<u64>,
    pub duration: Option<u64>,
    pub start_number: Option<u64>,
    pub presentation_time_offset: Option<u64>,
    pub initialization: Option<UrlRange>,
    pub timeline: Option<Vec<TimelineEntry>>,
    pub index_range: Option<ByteRange>,
    /// SegmentTemplate@media.
    pub media: Option<String>,
    /// SegmentList's SegmentURLs.
    pub segment_urls: Option<Vec<SegmentUrl>>,
}

impl SegmentInfo {
    fn merge(&self, over: &SegmentInfo) -> SegmentInfo {
        SegmentInfo {
            timescale: over.timescale.or(self.timescale),
            duration: over.duration.or(self.duration),
            start_number: over.start_number.or(self.start_number),
            presentation_time_offset: over
                .presentation_time_offset
                .or(self.presentation_time_offset),
            initialization: over
                .initialization
                .clone()
                .or_else(|| self.initialization.clone()),
            timeline: over.timeline.clone().or_else(|| self.timeline.clone()),
            index_range: over.index_range.or(self.index_range),
            media: over.media.clone().or_else(|| self.media.clone()),
            segment_urls: over
                .segment_urls
                .clone()
                .or_else(|| self.segment_urls.clone()),
        }
    }
}

/// Which of the three addressing schemes a level uses, with its attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addressing {
    pub base: Option<SegmentInfo>,
    pub list: Option<SegmentInfo>,
    pub template: Option<SegmentInfo>,
}

impl Addressing {
    fn merge(&self, over: &Addressing) -> Addressing {
        fn m(a: &Option<SegmentInfo>, b: &Option<SegmentInfo>) -> Option<SegmentInfo> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.merge(b)),
                (None, Some(b)) => Some(b.clone()),
                (a, None) => a.clone(),
            }
        }
        Addressing {
            base: m(&self.base, &over.base),
            list: m(&self.list, &over.list),
            template: m(&self.template, &over.template),
        }
    }
}

/// The addressing a Representation finally uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentScheme {
    List(SegmentInfo),
    Template(SegmentInfo),
    Base(SegmentInfo),
    /// No Segment* element: the BaseURL is the single whole-file segment.
    Single,
}

/// An Essential/Supplemental property or any other descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Descriptor {
    pub scheme_id_uri: String,
    pub value: Option<String>,
    /// Extra attributes by local name (`trackType` for `amz-music:trackType`).
    pub attrs: Vec<(String, String)>,
}

impl Descriptor {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentProtection {
    pub scheme_id_uri: String,
    pub value: Option<String>,
    /// `cenc:default_KID`.
    pub default_kid: Option<[u8; 16]>,
    /// The full `pssh` box from `cenc:pssh`.
    pub pssh: Option<Vec<u8>>,
    /// `amz:LicenseUrl` (or a `dashif:Laurl`/`ms:laurl`).
    pub license_url: Option<String>,
}

impl ContentProtection {
    /// The lower-case system UUID of a `urn:uuid:` scheme.
    pub fn system_id(&self) -> Option<String> {
        let s = self.scheme_id_uri.to_ascii_lowercase();
        s.strip_prefix("urn:uuid:").map(|u| u.to_string())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
    pub id: String,
    pub bandwidth: u64,
    pub codecs: String,
    pub mime_type: String,
    pub audio_sampling_rate: Option<u32>,
    pub channels: Option<u32>,
    pub bit_depth: Option<u32>,
    /// Lower is better (DASH: 1 is the highest quality).
    pub quality_ranking: Option<u32>,
    /// BaseURLs from MPD down to this Representation, outermost first.
    pub base_urls: Vec<String>,
    pub segments: SegmentScheme,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdaptationSet {
    pub id: Option<u32>,
    pub content_type: Option<String>,
    pub mime_type: Option<String>,
    pub lang: Option<String>,
    /// Higher is preferred (default 1).
    pub selection_priority: u32,
    pub content_protections: Vec<ContentProtection>,
    pub essential: Vec<Descriptor>,
    pub supplemental: Vec<Descriptor>,
    pub representations: Vec<Representation>,
}

impl AdaptationSet {
    /// AdaptationSet ids the manifest says this one may switch to.
    pub fn switchable_to(&self) -> Vec<u32> {
        self.supplemental
            .iter()
            .chain(&self.essential)
            .filter(|d| d.scheme_id_uri == "urn:mpeg:dash:adaptation-set-switching:2016")
            .flat_map(|d| {
                d.value
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|v| v.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    /// The set's track type (`LD`, `SD`, `HD`, `UHD`, `SPATIAL`): the service writes
    /// `<SupplementalProperty schemeIdUri="amz-music:trackType" value="HD"/>`; an
    /// `amz-music:trackType` attribute on a descriptor reads the same.
    pub fn track_type(&self) -> Option<&str> {
        let descriptors = || self.supplemental.iter().chain(&self.essential);
        descriptors()
            .find(|d| d.scheme_id_uri == "amz-music:trackType")
            .and_then(|d| d.value.as_deref())
            .or_else(|| descriptors().find_map(|d| d.attr("trackType")))
    }

    /// The value of a loudness descriptor (`urn:mpeg:mpegB:cicp:ProgramLoudness`,
    /// `…:AnchorLoudness`), in LUFS. The service writes `-13.5 LUFS`; a bare number, or LKFS
    /// (the same unit), reads the same. Anything else (another unit, not finite) is no value.
    pub fn loudness(&self, which: &str) -> Option<f64> {
        let d = self
            .supplemental
            .iter()
            .chain(&self.essential)
            .find(|d| d.scheme_id_uri == format!("urn:mpeg:mpegB:cicp:{which}"))?;
        let v = d.value.as_deref()?.trim();
        let number = v
            .strip_suffix("LUFS")
            .or_else(|| v.strip_suffix("LKFS"))
            .unwrap_or(v)
            .trim();
        number.parse::<f64>().ok().filter(|l| l.is_finite())
    }

    /// The default KID of the set (from any of its ContentProtections).
    pub fn default_kid(&self) -> Option<[u8; 16]> {
        self.content_protections.iter().find_map(|c| c.default_kid)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub id: Option<String>,
    pub start: Duration,
    pub duration: Option<Duration>,
    pub adaptation_sets: Vec<AdaptationSet>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mpd {
    pub is_static: bool,
    pub duration: Option<Duration>,
    pub min_buffer_time: Option<Duration>,
    pub periods: Vec<Period>,
}

impl Mpd {
    /// Parses a manifest; refuses what cannot be played (dynamic, no audio, no periods).
    pub fn parse(doc: &[u8]) -> Result<Mpd, MpdError> {
        if doc.len() > MAX_MANIFEST_BYTES {
            return Err(MpdError::TooLarge);
        }
        let root = xml::parse(doc).map_err(MpdError::Xml)?;
        if root.name != "MPD" {
            return Err(MpdError::NotMpd(root.name));
        }
        let is_static = root.attr("type").unwrap_or("static") == "static";
        if !is_static {
            return Err(MpdError::Invalid(
                "dynamic (live) manifests are not supported: this demuxer plays on-demand audio"
                    .into(),
            ));
        }
        let duration = opt_duration(&root, "mediaPresentationDuration")?;
        let min_buffer_time = opt_duration(&root, "minBufferTime")?;
        let mpd_bases = base_urls(&root);
        let mut periods = Vec::new();
        let mut next_start = Duration::ZERO;
        let period_nodes: Vec<&Node> = root.children_named("Period").collect();
        for (i, p) in period_nodes.iter().enumerate() {
            let start = opt_duration(p, "start")?.unwrap_or(next_start);
            let mut pdur = opt_duration(p, "duration")?;
            if pdur.is_none() {
                // The period runs to the next one's start or to the presentation's end.
                let end = match period_nodes.get(i + 1) {
                    Some(n) => opt_duration(n, "start")?,
                    None => duration,
                };
                pdur = end.and_then(|e| e.checked_sub(start));
            }
            // Nothing plays past the presentation's end: a period that says it lasts longer is
            // clipped to it (its segment lists are clipped to the period in turn).
            if let (Some(total), Some(d)) = (duration, pdur) {
                pdur = Some(d.min(total.saturating_sub(start)));
            }
            let end = start + pdur.unwrap_or_default();
            if end > MAX_PRESENTATION {
                return Err(MpdError::Invalid(format!(
                    "Period {} ends at {:.0} s, past the {} h this demuxer accepts",
                    i + 1,
                    end.as_secs_f64(),
                    MAX_PRESENTATION.as_secs() / 3600
                )));
            }
            let period = parse_period(p, &mpd_bases, start, pdur)?;
            next_start = end;
            periods.push(period);
        }
        if periods.is_empty() {
            return Err(MpdError::Invalid("manifest has no Period".into()));
        }
        let mpd = Mpd {
            is_static,
            duration: duration.or_else(|| {
                let last = periods.last()?;
                Some(last.start + last.duration?)
            }),
            min_buffer_time,
            periods,
        };
        if mpd.audio_sets().next().is_none() {
            return Err(MpdError::Invalid(
                "manifest has no audio AdaptationSet with a Representation".into(),
            ));
        }
        Ok(mpd)
    }

    /// Audio AdaptationSets of every period, with their period index.
    pub fn audio_sets(&self) -> impl Iterator<Item = (usize, &AdaptationSet)> {
        self.periods.iter().enumerate().flat_map(|(i, p)| {
            p.adaptation_sets
                .iter()
                .filter(|a| !a.representations.is_empty() && is_audio(a))
                .map(move |a| (i, a))
        })
    }
}

fn is_audio(a: &AdaptationSet) -> bool {
    if let Some(ct) = &a.content_type {
        return ct == "audio";
    }
    let mime = a
        .mime_type
        .clone()
        .or_else(|| a.representations.first().map(|r| r.mime_type.clone()))
        .unwrap_or_default();
    mime.starts_with("audio/")
}

fn base_urls(n: &Node) -> Vec<String> {
    // Several BaseURLs are alternatives (CDN failover); the first is used.
    n.child("BaseURL")
        .map(|b| vec![b.text.clone()])
        .unwrap_or_default()
}

fn opt_duration(n: &Node, attr: &str) -> Result<Option<Duration>, MpdError> {
    n.attr(attr)
        .map(|v| {
            let d = parse_iso_duration(v)
                .ok_or_else(|| MpdError::Invalid(format!("bad duration {attr}={v:?}")))?;
            if d > MAX_PRESENTATION {
                return Err(MpdError::Invalid(format!(
                    "{attr}={v:?} in <{}> is longer than the {} h this demuxer accepts",
                    n.name,
                    MAX_PRESENTATION.as_secs() / 3600
                )));
            }
            Ok(d)
        })
        .transpose()
}

fn opt_num<T: std::str::FromStr>(n: &Node, attr: &str) -> Result<Option<T>, MpdError> {
    n.attr(attr)
        .map(|v| {
            v.trim()
                .parse::<T>()
                .map_err(|_| MpdError::Invalid(format!("bad number {attr}={v:?} in <{}>", n.name)))
        })
        .transpose()
}

/// ISO 8601 durations as MPDs write them: `PnYnMnDTnHnMnS` (years and months as 365 and 30
/// days; they never occur in audio manifests).
pub fn parse_iso_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0f64;
    let mut any = false;
    let mut num = String::new();
    for c in date.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'Y' | 'M' | 'W' | 'D' => {
                let v: f64 = num.parse().ok()?;
                num.clear();
                any = true;
                secs += v * match c {
                    'Y' => 365.0 * 86400.0,
                    'M' => 30.0 * 86400.0,
                    'W' => 7.0 * 86400.0,
                    _ => 86400.0,
                };
            }
            _ => return None,
        }
    }
    if !num.is_empty() {
        return None;
    }
    for c in time.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'H' | 'M' | 'S' => {
                let v: f64 = num.parse().ok()?;
                num.clear();
                any = true;
                secs += v * match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
            }
            _ => return None,
        }
    }
    if !num.is_empty() || !any {
        return None;
    }
    // Refuses what no Duration can hold (negative, not finite, or beyond u64 seconds).
    Duration::try_from_secs_f64(secs).ok()
}

fn parse_segment_info(n: &Node) -> Result<SegmentInfo, MpdError> {
    let mut info = SegmentInfo {
        timescale: opt_num(n, "timescale")?,
        duration: opt_num(n, "duration")?,
        start_number: opt_num(n, "startNumber")?,
        presentation_time_offset: opt_num(n, "presentationTimeOffset")?,
        index_range: n.attr("indexRange").map(ByteRange::parse).transpose()?,
        media: n.attr("media").map(str::to_string),
        ..Default::default()
    };
    if info.timescale == Some(0) {
        return Err(MpdError::Invalid(format!("<{}> has timescale 0", n.name)));
    }
    if let Some(init) = n.attr("initialization") {
        info.initialization = Some(UrlRange {
            url: Some(init.to_string()),
            range: None,
        });
    }
    if let Some(i) = n.child("Initialization") {
        info.initialization = Some(UrlRange {
            url: i.attr("sourceURL").map(str::to_string),
            range: i.attr("range").map(ByteRange::parse).transpose()?,
        });
    }
    if let Some(tl) = n.child("SegmentTimeline") {
        let mut entries = Vec::new();
        for s in tl.children_named("S") {
            let d: u64 =
                opt_num(s, "d")?.ok_or_else(|| MpdError::Invalid("<S> without d".into()))?;
            if d == 0 {
                return Err(MpdError::Invalid("<S> with d=0".into()));
            }
            entries.push(TimelineEntry {
                t: opt_num(s, "t")?,
                d,
                r: opt_num(s, "r")?.unwrap_or(0),
            });
        }
        info.timeline = Some(entries);
    }
    if n.name == "SegmentList" {
        let mut urls = Vec::new();
        for u in n.children_named("SegmentURL") {
            urls.push(SegmentUrl {
                media: u.attr("media").map(str::to_string),
                media_range: u.attr("mediaRange").map(ByteRange::parse).transpose()?,
            });
        }
        info.segment_urls = Some(urls);
    }
    Ok(info)
}

fn parse_addressing(n: &Node) -> Result<Addressing, MpdError> {
    Ok(Addressing {
        base: n.child("SegmentBase").map(parse_segment_info).transpose()?,
        list: n.child("SegmentList").map(parse_segment_info).transpose()?,
        template: n
            .child("SegmentTemplate")
            .map(parse_segment_info)
            .transpose()?,
    })
}

fn parse_descriptor(n: &Node) -> Descriptor {
    Descriptor {
        scheme_id_uri: n.attr("schemeIdUri").unwrap_or_default().to_string(),
        value: n.attr("value").map(str::to_string),
        attrs: n
            .attrs
            .iter()
            .filter(|(k, _)| k != "schemeIdUri" && k != "value")
            .cloned()
            .collect(),
    }
}

fn parse_kid(s: &str) -> Result<[u8; 16], MpdError> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let v =
        hex::decode(&hex).map_err(|_| MpdError::Invalid(format!("bad cenc:default_KID {s:?}")))?;
    v.try_into()
        .map_err(|_| MpdError::Invalid(format!("cenc:default_KID {s:?} is not 16 bytes")))
}

fn parse_content_protection(n: &Node) -> Result<ContentProtection, MpdError> {
    let pssh = match n.child("pssh") {
        Some(p) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(p.text.split_whitespace().collect::<String>())
                .map_err(|_| MpdError::Invalid("cenc:pssh is not base64".into()))?,
        ),
        None => None,
    };
    let license_url = ["LicenseUrl", "Laurl", "laurl"]
        .iter()
        .find_map(|name| n.child(name))
        .map(|l| {
            if l.text.is_empty() {
                l.attr("licenseUrl").unwrap_or_default().to_string()
            } else {
                l.text.clone()
            }
        })
        .filter(|s| !s.is_empty());
    Ok(ContentProtection {
        scheme_id_uri: n.attr("schemeIdUri").unwrap_or_default().to_string(),
        value: n.attr("value").map(str::to_string),
        default_kid: n.attr("default_KID").map(parse_kid).transpose()?,
        pssh,
        license_url,
    })
}

fn channels(n: &Node) -> Option<u32> {
    let acc = n.child("AudioChannelConfiguration")?;
    let v = acc.attr("value")?;
    if acc
        .attr("schemeIdUri")
        .is_some_and(|s| s.starts_with("tag:dolby.com"))
    {
        // Dolby's channel mask: one bit per speaker pair/position; F801 is 5.1.
        return match v.to_ascii_uppercase().as_str() {
            "F801" => Some(6),
            "A000" => Some(2),
            "4000" => Some(1),
            _ => None,
        };
    }
    v.parse().ok()
}

fn parse_period(
    p: &Node,
    mpd_bases: &[String],
    start: Duration,
    duration: Option<Duration>,
) -> Result<Period, MpdError> {
    let mut bases = mpd_bases.to_vec();
    bases.extend(base_urls(p));
    let p_addr = parse_addressing(p)?;
    let mut sets = Vec::new();
    for a in p.children_named("AdaptationSet") {
        let mut a_bases = bases.clone();
        a_bases.extend(base_urls(a));
        let a_addr = p_addr.merge(&parse_addressing(a)?);
        let cps = a
            .children_named("ContentProtection")
            .map(parse_content_protection)
            .collect::<Result<Vec<_>, _>>()?;
        let essential: Vec<Descriptor> = a
            .children_named("EssentialProperty")
            .map(parse_descriptor)
            .collect();
        let supplemental: Vec<Descriptor> = a
            .children_named("SupplementalProperty")
            .map(parse_descriptor)
            .collect();
        // An EssentialProperty we do not understand means we must not play the set.
        let understood = |d: &Descriptor| {
            d.scheme_id_uri == "urn:mpeg:dash:adaptation-set-switching:2016"
                || d.scheme_id_uri.starts_with("urn:amazon:music")
                || d.scheme_id_uri.starts_with("amz-music:")
                || d.scheme_id_uri.starts_with("urn:mpeg:mpegB:cicp")
        };
        if essential.iter().any(|d| !understood(d)) {
            continue;
        }
        let mut reps = Vec::new();
        for r in a.children_named("Representation") {
            let id = r
                .attr("id")
                .ok_or_else(|| MpdError::Invalid("Representation without id".into()))?
                .to_string();
            let bandwidth: u64 = opt_num(r, "bandwidth")?.ok_or_else(|| {
                MpdError::Invalid(format!("Representation {id} has no bandwidth"))
            })?;
            let mut r_bases = a_bases.clone();
            r_bases.extend(base_urls(r));
            let addr = a_addr.merge(&parse_addressing(r)?);
            // The most specific scheme wins when levels disagree; template > list > base
            // mirrors how packagers nest them.
            let segments = if let Some(t) = addr.template {
                SegmentScheme::Template(t)
            } else if let Some(l) = addr.list {
                SegmentScheme::List(l)
            } else if let Some(b) = addr.base {
                SegmentScheme::Base(b)
            } else {
                SegmentScheme::Single
            };
            // The service's form is a child descriptor
            // (`<SupplementalProperty schemeIdUri="amz-music:bitDepth" value="24"/>`); an
            // `amz-music:bitDepth` attribute reads the same.
            let bit_depth = r
                .children_named("SupplementalProperty")
                .chain(r.children_named("EssentialProperty"))
                .map(parse_descriptor)
                .find(|d| d.scheme_id_uri == "amz-music:bitDepth")
                .and_then(|d| d.value)
                .or_else(|| {
                    r.attr("bitDepth")
                        .or_else(|| a.attr("bitDepth"))
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse().ok());
            reps.push(Representation {
                codecs: r
                    .attr("codecs")
                    .or_else(|| a.attr("codecs"))
                    .unwrap_or_default()
                    .to_string(),
                mime_type: r
                    .attr("mimeType")
                    .or_else(|| a.attr("mimeType"))
                    .unwrap_or_default()
                    .to_string(),
                audio_sampling_rate: opt_num(r, "audioSamplingRate")?
                    .or(opt_num(a, "audioSamplingRate")?),
                channels: channels(r).or_else(|| channels(a)),
                bit_depth,
                quality_ranking: opt_num(r, "qualityRanking")?,
                base_urls: r_bases,
                segments,
                id,
                bandwidth,
            });
        }
        sets.push(AdaptationSet {
            id: opt_num(a, "id")?,
            content_type: a.attr("contentType").map(str::to_string),
            mime_type: a.attr("mimeType").map(str::to_string),
            lang: a.attr("lang").map(str::to_string),
            selection_priority: opt_num(a, "selectionPriority")?.unwrap_or(1),
            content_protections: cps,
            essential,
            supplemental,
            representations: reps,
        });
    }
    Ok(Period {
        id: p.attr("id").map(str::to_string),
        start,
        duration,
        adaptation_sets: sets,
    })
}

#[cfg(test)]
mod tests;
