//! The emulator's catalogue: tracks, albums and playlists with their representation ladders,
//! modelled on Amazon Music's tiers (Opus SD/LD, FLAC HD, FLAC UHD, a spatial E-AC-3 stand-in).

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Flac,
    Opus,
    #[serde(rename = "ec-3")]
    Eac3,
}

impl Codec {
    /// The DASH `codecs` attribute.
    pub fn codecs(self) -> &'static str {
        match self {
            Codec::Flac => "flac",
            Codec::Opus => "opus",
            Codec::Eac3 => "ec-3",
        }
    }
}

/// The quality tiers the music API's `X-Amzn-Audio-Device-Capability` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Tier {
    /// Low-bitrate Opus.
    Ld,
    /// Opus.
    Sd,
    /// FLAC up to 48 kHz/24 bit.
    Hd,
    /// FLAC 96 or 192 kHz/24 bit.
    Uhd,
    /// Spatial stand-in (E-AC-3 5.1).
    Atmos,
}

impl Tier {
    pub fn label(self) -> &'static str {
        match self {
            Tier::Ld => "LD",
            Tier::Sd => "SD",
            Tier::Hd => "HD",
            Tier::Uhd => "UHD",
            Tier::Atmos => "ATMOS",
        }
    }

    /// `selectionPriority` of the tier's AdaptationSet (higher is preferred).
    pub fn selection_priority(self) -> u32 {
        match self {
            Tier::Ld => 1,
            Tier::Sd => 2,
            Tier::Hd => 3,
            Tier::Uhd => 4,
            Tier::Atmos => 5,
        }
    }

    /// `amz-music:trackType` value.
    pub fn track_type(self) -> &'static str {
        match self {
            Tier::Ld => "LD",
            Tier::Sd => "SD",
            Tier::Hd => "HD",
            Tier::Uhd => "UHD",
            Tier::Atmos => "SPATIAL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Cenc,
    Cbcs,
}

impl Scheme {
    pub fn fourcc(self) -> &'static [u8; 4] {
        match self {
            Scheme::Cenc => b"cenc",
            Scheme::Cbcs => b"cbcs",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Cenc => "cenc",
            Scheme::Cbcs => "cbcs",
        }
    }
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cenc" => Ok(Scheme::Cenc),
            "cbcs" => Ok(Scheme::Cbcs),
            _ => Err(format!("unknown scheme {s:?} (cenc or cbcs)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    /// One file per representation, `SegmentList` with `mediaRange`s (what the service sends).
    #[default]
    List,
    /// `SegmentTemplate` with `$Number$` and a `SegmentTimeline`, one file per segment.
    Template,
    /// One file per representation, `SegmentBase` with a `sidx`.
    Base,
}

impl std::str::FromStr for Addressing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "list" => Ok(Addressing::List),
            "template" => Ok(Addressing::Template),
            "base" => Ok(Addressing::Base),
            _ => Err(format!("unknown addressing {s:?} (list, template or base)")),
        }
    }
}

/// The DRM system the encrypted content is offered for. The media (keys, key ids, encrypted
/// samples) is the same for both; what differs is the `pssh` in the init segments, the
/// manifest's `ContentProtection` and the license server it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeySystem {
    /// Amazon's: a Widevine `pssh` and `<amz:LicenseUrl>` naming the Widevine license service.
    #[default]
    Widevine,
    /// W3C Clear Key: a Common System `pssh` (key ids only, `1077efec-…`), a
    /// `ContentProtection` for `e2719d58-…` with `<dashif:Laurl>` naming the emulator's Clear Key
    /// license server, which then serves the catalogue's keys. Modelled: Amazon does not offer
    /// Clear Key; it lets any Clear Key CDM (a test module, an EME browser) play the catalogue.
    Clearkey,
}

impl std::str::FromStr for KeySystem {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "widevine" => Ok(KeySystem::Widevine),
            "clearkey" => Ok(KeySystem::Clearkey),
            _ => Err(format!("unknown key system {s:?} (widevine or clearkey)")),
        }
    }
}

impl Addressing {
    pub fn name(self) -> &'static str {
        match self {
            Addressing::List => "list",
            Addressing::Template => "template",
            Addressing::Base => "base",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RepresentationSpec {
    pub id: &'static str,
    pub codec: Codec,
    pub tier: Tier,
    pub sample_rate: u32,
    /// 16 or 24 for FLAC; the decoded depth for lossy codecs (16).
    pub bit_depth: u32,
    pub channels: u32,
    /// Encoder target for lossy codecs, in bit/s; 0 for FLAC.
    #[serde(skip)]
    pub target_bitrate: u32,
}

impl RepresentationSpec {
    pub fn is_lossless(&self) -> bool {
        self.codec == Codec::Flac
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrackSpec {
    pub id: String,
    pub title: String,
    pub artist: String,
    pub album: String,
    pub album_id: String,
    pub album_artist: String,
    pub track_number: u32,
    pub disc_number: u32,
    pub isrc: String,
    pub explicit: bool,
    /// Markets the track is available in; empty means everywhere.
    pub markets: Vec<String>,
    pub scheme: Scheme,
    /// Generated only when first asked for (the 60-minute track).
    pub lazy: bool,
    /// Seed of the composition and the first second of this track inside it (albums cut one
    /// continuous recording into tracks).
    #[serde(skip)]
    pub seed: u64,
    #[serde(skip)]
    pub offset_ms: u64,
    /// Length of the whole recording this track is cut from.
    #[serde(skip)]
    pub recording_ms: u64,
    pub duration_ms: u64,
    pub representations: Vec<RepresentationSpec>,
}

impl TrackSpec {
    pub fn representation(&self, id: &str) -> Option<&RepresentationSpec> {
        self.representations.iter().find(|r| r.id == id)
    }

    pub fn tiers(&self) -> Vec<Tier> {
        let mut t: Vec<Tier> = self.representations.iter().map(|r| r.tier).collect();
        t.sort();
        t.dedup();
        t
    }

    /// First and one-past-last frame of this track inside its recording, at `rate`.
    pub fn frame_range(&self, rate: u32) -> (u64, u64) {
        let first = self.offset_ms * rate as u64 / 1000;
        let len = self.duration_ms * rate as u64 / 1000;
        (first, first + len)
    }

    pub fn available_in(&self, market: &str) -> bool {
        self.markets.is_empty() || self.markets.iter().any(|m| m.eq_ignore_ascii_case(market))
    }

    /// The content key id of a tier: one key per AdaptationSet, as the service does.
    pub fn key_id(&self, tier: Tier) -> [u8; 16] {
        derive16(b"kid", &self.id, tier.label())
    }

    /// The content key of a tier. Synthetic content only: derived, never stored.
    pub fn content_key(&self, tier: Tier) -> [u8; 16] {
        derive16(b"key", &self.id, tier.label())
    }

    /// Per-track base of the per-sample IVs (cenc) and the constant IV (cbcs).
    pub fn iv_seed(&self, tier: Tier) -> [u8; 16] {
        derive16(b"iv", &self.id, tier.label())
    }

    /// The content id in the Widevine PSSH.
    pub fn content_id(&self) -> Vec<u8> {
        self.id.as_bytes().to_vec()
    }
}

fn derive16(purpose: &[u8], track: &str, tier: &str) -> [u8; 16] {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"amzmusic-emulator synthetic content v1")
        .expect("HMAC takes any key length");
    mac.update(purpose);
    mac.update(track.as_bytes());
    mac.update(tier.as_bytes());
    let out = mac.finalize().into_bytes();
    let mut k = [0u8; 16];
    k.copy_from_slice(&out[..16]);
    k
}

#[derive(Debug, Clone, Serialize)]
pub struct AlbumSpec {
    pub id: String,
    pub title: String,
    pub artist: String,
    pub track_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlaylistSpec {
    pub id: String,
    pub title: String,
    pub track_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    pub tracks: Vec<TrackSpec>,
    pub albums: Vec<AlbumSpec>,
    pub playlists: Vec<PlaylistSpec>,
}

const fn rep(
    id: &'static str,
    codec: Codec,
    tier: Tier,
    sample_rate: u32,
    bit_depth: u32,
    channels: u32,
    target_bitrate: u32,
) -> RepresentationSpec {
    RepresentationSpec {
        id,
        codec,
        tier,
        sample_rate,
        bit_depth,
        channels,
        target_bitrate,
    }
}

const OPUS_64: RepresentationSpec = rep("opus-64k", Codec::Opus, Tier::Ld, 48_000, 16, 2, 64_000);
const OPUS_150: RepresentationSpec =
    rep("opus-150k", Codec::Opus, Tier::Ld, 48_000, 16, 2, 150_000);
const OPUS_320: RepresentationSpec =
    rep("opus-320k", Codec::Opus, Tier::Sd, 48_000, 16, 2, 320_000);
const FLAC_44_16: RepresentationSpec = rep("flac-44k16", Codec::Flac, Tier::Hd, 44_100, 16, 2, 0);
const FLAC_48_24: RepresentationSpec = rep("flac-48k24", Codec::Flac, Tier::Hd, 48_000, 24, 2, 0);
const FLAC_96_24: RepresentationSpec = rep("flac-96k24", Codec::Flac, Tier::Uhd, 96_000, 24, 2, 0);
const FLAC_192_24: RepresentationSpec =
    rep("flac-192k24", Codec::Flac, Tier::Uhd, 192_000, 24, 2, 0);
const EAC3_51: RepresentationSpec = rep(
    "eac3-640k",
    Codec::Eac3,
    Tier::Atmos,
    48_000,
    16,
    6,
    640_000,
);

/// Well-known ids, for tests and docs.
pub mod ids {
    pub const HD: &str = "B0EMUHD001";
    pub const UHD: &str = "B0EMUUHD01";
    pub const UHD96: &str = "B0EMUUHD02";
    pub const SPATIAL: &str = "B0EMUATM01";
    pub const ALBUM: &str = "B0EMUALB01";
    pub const ALBUM_TRACKS: [&str; 3] = ["B0EMUAL001", "B0EMUAL002", "B0EMUAL003"];
    pub const LONG: &str = "B0EMULNG01";
    pub const JP_ONLY: &str = "B0EMUJP001";
    pub const PLAYLIST: &str = "B0EMUPL001";
}

#[allow(clippy::too_many_arguments)]
fn track(
    id: &str,
    title: &str,
    artist: &str,
    album: (&str, &str),
    number: u32,
    seed: u64,
    offset_ms: u64,
    duration_ms: u64,
    recording_ms: u64,
    scheme: Scheme,
    reps: &[RepresentationSpec],
) -> TrackSpec {
    TrackSpec {
        id: id.to_string(),
        title: title.to_string(),
        artist: artist.to_string(),
        album: album.1.to_string(),
        album_id: album.0.to_string(),
        album_artist: artist.to_string(),
        track_number: number,
        disc_number: 1,
        isrc: format!("QZEMU26{:05}", seed % 100_000),
        explicit: false,
        markets: vec![],
        scheme,
        lazy: false,
        seed,
        offset_ms,
        recording_ms,
        duration_ms,
        representations: reps.to_vec(),
    }
}

impl Catalog {
    /// The built-in catalogue. `scheme` overrides every track's encryption scheme.
    pub fn builtin(scheme: Option<Scheme>) -> Catalog {
        let sch = |s: Scheme| scheme.unwrap_or(s);
        let mut tracks = vec![
            track(
                ids::HD,
                "Harbour Lights",
                "The Loopback Ensemble",
                ("B0EMUHDA01", "Signals"),
                1,
                101,
                0,
                60_000,
                60_000,
                sch(Scheme::Cenc),
                &[OPUS_150, OPUS_320, FLAC_44_16, FLAC_48_24],
            ),
            track(
                ids::UHD,
                "Ninety Seconds of Air",
                "Kilohertz",
                ("B0EMUUHA01", "High Rates"),
                1,
                202,
                0,
                90_000,
                90_000,
                sch(Scheme::Cbcs),
                &[OPUS_64, OPUS_320, FLAC_44_16, FLAC_192_24],
            ),
            track(
                ids::UHD96,
                "Half Speed",
                "Kilohertz",
                ("B0EMUUHA01", "High Rates"),
                2,
                203,
                0,
                45_000,
                45_000,
                sch(Scheme::Cenc),
                &[OPUS_64, OPUS_320, FLAC_44_16, FLAC_96_24],
            ),
            track(
                ids::SPATIAL,
                "Six Speakers",
                "Surround Society",
                ("B0EMUATA01", "Around"),
                1,
                303,
                0,
                60_000,
                60_000,
                sch(Scheme::Cenc),
                &[OPUS_64, OPUS_320, FLAC_44_16, EAC3_51],
            ),
        ];
        // One continuous recording cut into three tracks, for gapless checks at the joins.
        let album = ("B0EMUALB01", "One Take");
        let cuts = [(0u64, 24_000u64), (24_000, 37_000), (61_000, 31_000)];
        let titles = ["Before", "During", "After"];
        for (i, (&(off, dur), title)) in cuts.iter().zip(titles).enumerate() {
            tracks.push(track(
                ids::ALBUM_TRACKS[i],
                title,
                "The Continuous",
                album,
                i as u32 + 1,
                404,
                off,
                dur,
                92_000,
                sch(Scheme::Cbcs),
                &[OPUS_64, OPUS_320, FLAC_44_16],
            ));
        }
        let mut long = track(
            ids::LONG,
            "The Long Hour",
            "Endurance",
            ("B0EMULNA01", "Soak"),
            1,
            505,
            0,
            3_600_000,
            3_600_000,
            sch(Scheme::Cenc),
            &[OPUS_64, FLAC_44_16],
        );
        long.lazy = true;
        tracks.push(long);
        let mut jp = track(
            ids::JP_ONLY,
            "Tokyo Only",
            "Regional",
            ("B0EMUJPA01", "Local"),
            1,
            606,
            0,
            12_000,
            12_000,
            sch(Scheme::Cenc),
            &[OPUS_64, FLAC_44_16],
        );
        jp.markets = vec!["JP".into()];
        jp.explicit = true;
        tracks.push(jp);

        let albums = vec![AlbumSpec {
            id: ids::ALBUM.into(),
            title: album.1.into(),
            artist: "The Continuous".into(),
            track_ids: ids::ALBUM_TRACKS.iter().map(|s| s.to_string()).collect(),
        }];
        let playlists = vec![PlaylistSpec {
            id: ids::PLAYLIST.into(),
            title: "Emulator Mix".into(),
            track_ids: vec![
                ids::HD.into(),
                ids::ALBUM_TRACKS[1].into(),
                ids::UHD96.into(),
            ],
        }];
        Catalog {
            tracks,
            albums,
            playlists,
        }
    }

    pub fn track(&self, id: &str) -> Option<&TrackSpec> {
        self.tracks.iter().find(|t| t.id == id)
    }

    pub fn album(&self, id: &str) -> Option<&AlbumSpec> {
        self.albums.iter().find(|a| a.id == id)
    }

    pub fn playlist(&self, id: &str) -> Option<&PlaylistSpec> {
        self.playlists.iter().find(|p| p.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_track_keeps_an_opus_fallback() {
        for t in Catalog::builtin(None).tracks {
            assert!(
                t.representations.iter().any(|r| r.codec == Codec::Opus),
                "{} has no Opus",
                t.id
            );
        }
    }

    #[test]
    fn album_tracks_are_contiguous_cuts_of_one_recording() {
        let c = Catalog::builtin(None);
        let a = c.album(ids::ALBUM).unwrap();
        let mut end = 0;
        for id in &a.track_ids {
            let t = c.track(id).unwrap();
            assert_eq!(t.offset_ms, end);
            assert!((20_000..=40_000).contains(&t.duration_ms));
            end = t.offset_ms + t.duration_ms;
        }
    }

    #[test]
    fn keys_are_stable_and_distinct_per_tier() {
        let c = Catalog::builtin(None);
        let t = c.track(ids::HD).unwrap();
        assert_eq!(t.key_id(Tier::Hd), t.key_id(Tier::Hd));
        assert_ne!(t.key_id(Tier::Hd), t.key_id(Tier::Sd));
        assert_ne!(t.key_id(Tier::Hd), t.content_key(Tier::Hd));
    }
}
