// SPDX-License-Identifier: MPL-2.0
//! What the source pad carries: its caps, the stream id per codec, whether a codec has a decoder
//! here (its caps are [`Codec::caps`]), and the stream and collection announced inside
//! urisourcebin.

use amzmusic_common::codec::Codec;
use amzmusic_common::contract;
use std::time::Duration;

/// Whether the registry has a decoder for the codec's elementary stream.
pub fn decodable(codec: Codec) -> bool {
    let caps = codec.caps();
    gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::DECODER | gst::ElementFactoryType::MEDIA_AUDIO,
        gst::Rank::MARGINAL,
    )
    .into_iter()
    .any(|f| f.can_sink_any_caps(&caps))
}

/// What the source pad carries: one fragmented MP4 stream.
pub fn src_caps() -> gst::Caps {
    gst::Caps::builder("video/quicktime")
        .field("variant", "iso-fragmented")
        .build()
}

/// What the sink pad's template takes: only amazonmusicsrc's manifests, so that autoplugging
/// leaves other DASH manifests to dashdemux2 (by hand any MPD is welcome, see
/// [`mpd_caps`]).
pub fn sink_template_caps() -> gst::Caps {
    contract::source_mpd_caps()
}

/// The element's pad templates: the sink (always) and the source (sometimes: it appears once
/// there is something to stream).
pub fn pad_templates() -> Vec<gst::PadTemplate> {
    let sink = gst::PadTemplate::new(
        "sink",
        gst::PadDirection::Sink,
        gst::PadPresence::Always,
        &sink_template_caps(),
    );
    let src = gst::PadTemplate::new(
        "src",
        gst::PadDirection::Src,
        gst::PadPresence::Sometimes,
        &src_caps(),
    );
    vec![sink.unwrap(), src.unwrap()]
}

/// What the sink pad accepts when asked.
pub fn mpd_caps() -> gst::Caps {
    gst::Caps::new_empty_simple(contract::MPD_MEDIA_TYPE)
}

/// `caps` as a caps query with `filter` answers it.
pub fn filtered(caps: gst::Caps, filter: Option<&gst::CapsRef>) -> gst::Caps {
    match filter {
        Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
        None => caps,
    }
}

/// An init segment's buffer: a header, after which the stream is discontinuous.
pub fn init_buffer(data: bytes::Bytes) -> gst::Buffer {
    let mut buf = gst::Buffer::from_slice(data);
    buf.get_mut()
        .unwrap()
        .set_flags(gst::BufferFlags::HEADER | gst::BufferFlags::DISCONT);
    buf
}

/// The id of the stream we output, the same for every track in one codec: in playbin3's gapless
/// mode the next track's fragments reach the same qtdemux, which keeps its pad (and the
/// decryptor and decoder behind it) only for a stream id it already knows. With a new id per
/// track it added a new pad, which 1.22's parsebin never exposes once the previous one has
/// drained, and the album stopped after its first track.
pub fn stream_id(codec: Codec) -> String {
    format!("amzdashdemux/audio-{}", codec.stream_id_suffix())
}

/// The stream announced inside urisourcebin (which links an adaptive demuxer's output only once
/// it posted a collection), and the collection holding it.
pub fn announced_stream(stream_id: &str) -> (gst::Stream, gst::StreamCollection) {
    let stream = gst::Stream::new(
        Some(stream_id),
        Some(&src_caps()),
        gst::StreamType::AUDIO,
        gst::StreamFlags::empty(),
    );
    let collection = gst::StreamCollection::builder(None)
        .stream(stream.clone())
        .build();
    (stream, collection)
}

pub fn to_clock(d: Duration) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stream_id_per_codec_family() {
        assert_eq!(stream_id(Codec::Flac), "amzdashdemux/audio-flac");
        // `flac` and `fLaC` in a manifest are one codec, so one stream id.
        let of = |c: &str| stream_id(Codec::from_dash_codecs(c).unwrap());
        assert_eq!(of("flac"), of("fLaC"));
        assert_ne!(of("flac"), of("opus"));
        let ids: std::collections::HashSet<String> = Codec::ALL.map(stream_id).into();
        assert_eq!(ids.len(), Codec::ALL.len());
    }

    #[test]
    fn caps_per_family() {
        gst::init().unwrap();
        let caps = |f: &str| Codec::from_dash_codecs(f).map(Codec::caps);
        let name = |f: &str| caps(f).map(|c| c.structure(0).unwrap().name().to_string());
        assert_eq!(name("flac").as_deref(), Some("audio/x-flac"));
        assert_eq!(name("opus").as_deref(), Some("audio/x-opus"));
        assert_eq!(name("ec-3").as_deref(), Some("audio/x-eac3"));
        assert_eq!(name("ac-3").as_deref(), Some("audio/x-ac3"));
        let aac = caps("mp4a").unwrap();
        assert_eq!(aac.structure(0).unwrap().get::<i32>("mpegversion"), Ok(4));
        // A codec we do not know is no candidate (presentation::build skips it).
        assert!(caps("vorbis").is_none());
        // Every test machine has flacdec (gst-plugins-good).
        assert!(decodable(Codec::Flac));
        let src = src_caps();
        let s = src.structure(0).unwrap();
        assert_eq!(s.name(), "video/quicktime");
        assert_eq!(s.get::<&str>("variant"), Ok("iso-fragmented"));
        let sink = sink_template_caps();
        assert_eq!(
            sink.structure(0).unwrap().get::<&str>("source"),
            Ok("amazonmusicsrc")
        );
        assert!(sink.is_subset(&mpd_caps()));
        let any = gst::Caps::new_any();
        assert_eq!(filtered(src_caps(), Some(&any)), src_caps());
        assert!(filtered(src_caps(), Some(&mpd_caps())).is_empty());
        assert_eq!(filtered(mpd_caps(), None), mpd_caps());
        let init = init_buffer(bytes::Bytes::from_static(b"moov"));
        assert!(init
            .flags()
            .contains(gst::BufferFlags::HEADER | gst::BufferFlags::DISCONT));
    }

    #[test]
    fn the_announced_collection_holds_the_stream() {
        gst::init().unwrap();
        let (stream, collection) = announced_stream("amzdashdemux/audio-flac");
        assert_eq!(
            stream.stream_id().as_deref(),
            Some("amzdashdemux/audio-flac")
        );
        assert_eq!(stream.stream_type(), gst::StreamType::AUDIO);
        assert_eq!(collection.len(), 1);
        assert_eq!(
            to_clock(Duration::from_millis(1500)),
            gst::ClockTime::from_mseconds(1500)
        );
    }
}
