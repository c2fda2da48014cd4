// SPDX-License-Identifier: MPL-2.0
//! The audio codecs the plugins handle, as one type: what a DASH `codecs` value or a caps media
//! type names, and what each codec needs downstream (caps, parser, stream id, ABR family).

/// One audio codec. AAC, AC-3 and E-AC-3 are distinct codecs (the demuxer's caps differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Flac,
    Opus,
    /// MPEG-4 AAC (`mp4a`).
    Aac,
    /// AC-3 (`ac-3`).
    Ac3,
    /// E-AC-3 (`ec-3`), Dolby Atmos among others.
    Eac3,
}

/// Which codecs share a decoder: switching inside a family is cheap (a new init segment),
/// across families it starts a new decoder. AC-3 and E-AC-3 share one; AAC is its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbrFamily {
    Flac,
    Opus,
    Aac,
    /// AC-3 and E-AC-3 (one parser, `ac3parse`, and E-AC-3 decoders take both).
    Ac3,
}

impl Codec {
    pub const ALL: [Codec; 5] = [
        Codec::Flac,
        Codec::Opus,
        Codec::Aac,
        Codec::Ac3,
        Codec::Eac3,
    ];

    /// The codec of a DASH `codecs` attribute: its first entry, up to the first `.`, in any
    /// case (`flac`, `fLaC`, `opus`, `Opus`, `mp4a.40.2`, `ac-3`, `ec-3`, `ec+3`).
    pub fn from_dash_codecs(codecs: &str) -> Option<Codec> {
        let first = codecs.split(',').next().unwrap_or("");
        let family = first.split('.').next().unwrap_or("").trim();
        match family.to_ascii_lowercase().as_str() {
            "flac" => Some(Codec::Flac),
            "opus" => Some(Codec::Opus),
            "mp4a" => Some(Codec::Aac),
            "ac-3" => Some(Codec::Ac3),
            "ec-3" | "ec+3" => Some(Codec::Eac3),
            _ => None,
        }
    }

    /// The codec of an elementary stream's caps media type (`audio/mpeg` is taken as AAC: the
    /// only MPEG audio DASH carries here).
    pub fn from_media_type(media: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.media_type() == media)
    }

    /// The caps media type of the elementary stream.
    pub const fn media_type(self) -> &'static str {
        match self {
            Codec::Flac => "audio/x-flac",
            Codec::Opus => "audio/x-opus",
            Codec::Aac => "audio/mpeg",
            Codec::Ac3 => "audio/x-ac3",
            Codec::Eac3 => "audio/x-eac3",
        }
    }

    /// The caps a decoder for this codec must accept.
    pub fn caps(self) -> gst::Caps {
        match self {
            Codec::Aac => gst::Caps::builder(self.media_type())
                .field("mpegversion", 4i32)
                .build(),
            other => gst::Caps::new_empty_simple(other.media_type()),
        }
    }

    /// The parser element that frames the elementary stream for a decoder.
    pub fn parser_factory(self) -> &'static str {
        match self {
            Codec::Flac => "flacparse",
            Codec::Opus => "opusparse",
            Codec::Aac => "aacparse",
            Codec::Ac3 | Codec::Eac3 => "ac3parse",
        }
    }

    /// The end of the demuxer's stream id, one per codec (`amzdashdemux/audio-<suffix>`): the
    /// lower-case DASH codec family.
    pub fn stream_id_suffix(self) -> &'static str {
        match self {
            Codec::Flac => "flac",
            Codec::Opus => "opus",
            Codec::Aac => "mp4a",
            Codec::Ac3 => "ac-3",
            Codec::Eac3 => "ec-3",
        }
    }

    pub fn abr_family(self) -> AbrFamily {
        match self {
            Codec::Flac => AbrFamily::Flac,
            Codec::Opus => AbrFamily::Opus,
            Codec::Aac => AbrFamily::Aac,
            Codec::Ac3 | Codec::Eac3 => AbrFamily::Ac3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_codecs_values_name_their_codec() {
        for (codecs, codec) in [
            ("flac", Some(Codec::Flac)),
            ("fLaC", Some(Codec::Flac)),
            ("Opus", Some(Codec::Opus)),
            ("mp4a.40.2", Some(Codec::Aac)),
            ("ac-3", Some(Codec::Ac3)),
            ("ec-3", Some(Codec::Eac3)),
            ("ec+3", Some(Codec::Eac3)),
            (" flac , opus", Some(Codec::Flac)),
            ("avc1.64001f", None),
            ("", None),
        ] {
            assert_eq!(Codec::from_dash_codecs(codecs), codec, "{codecs:?}");
        }
    }

    #[test]
    fn each_codec_round_trips_through_its_media_type() {
        gst::init().unwrap();
        for c in Codec::ALL {
            assert_eq!(Codec::from_media_type(c.media_type()), Some(c));
            assert_eq!(c.caps().structure(0).unwrap().name(), c.media_type());
            assert_eq!(
                Codec::from_dash_codecs(c.stream_id_suffix()),
                Some(c),
                "{c:?}"
            );
        }
        assert_eq!(Codec::from_media_type("audio/x-vorbis"), None);
    }

    #[test]
    fn aac_and_dolby_are_different_families() {
        gst::init().unwrap();
        assert_ne!(Codec::Aac.abr_family(), Codec::Ac3.abr_family());
        assert_eq!(Codec::Ac3.abr_family(), Codec::Eac3.abr_family());
        assert_eq!(Codec::Ac3.parser_factory(), Codec::Eac3.parser_factory());
        assert_ne!(Codec::Ac3.caps(), Codec::Eac3.caps());
    }
}
