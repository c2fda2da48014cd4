// SPDX-License-Identifier: MPL-2.0
//! Plays Amazon-style content as amazonmusicsrc would feed it: the contract's sticky audio
//! object (credentials in a GObject's properties) and an answer to the refresh query.
#![allow(dead_code)]

use gst::glib;
use gst::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use amzmusic_emulator::cdn::{issue_audio_object, AudioObject};
use amzmusic_emulator::content::catalog::Tier;

use super::*;

mod creds {
    use gst::glib;
    use gst::subclass::prelude::*;
    use std::sync::{LazyLock, Mutex};

    /// Stands in for amazonmusic's `AmzMusicCredentials` (the contract names only its
    /// properties, so any GObject with them will do).
    #[derive(Default)]
    pub struct TestCredentials {
        pub values: Mutex<Vec<(String, glib::Value)>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for TestCredentials {
        const NAME: &'static str = "AmzDashTestCredentials";
        type Type = super::TestCredentials;
        type ParentType = glib::Object;
    }

    impl ObjectImpl for TestCredentials {
        fn properties() -> &'static [glib::ParamSpec] {
            static P: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
                vec![
                    glib::ParamSpecString::builder("manifest-uri").build(),
                    glib::ParamSpecString::builder("user-agent").build(),
                    glib::ParamSpecBoxed::builder::<gst::Structure>("segment-headers").build(),
                    glib::ParamSpecBoxed::builder::<gst::Structure>("manifest-headers").build(),
                ]
            });
            P.as_ref()
        }
        fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
            self.values
                .lock()
                .unwrap()
                .push((pspec.name().to_string(), value.clone()));
        }
        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            self.values
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|(k, _)| k == pspec.name())
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| pspec.default_value().clone())
        }
    }
}

glib::wrapper! {
    pub struct TestCredentials(ObjectSubclass<creds::TestCredentials>);
}

// SAFETY: its only state is behind a Mutex, and GObject refcounting is atomic; a structure
// field must be Send + Sync (amazonmusic's AmzMusicCredentials is declared the same way).
unsafe impl Send for TestCredentials {}
unsafe impl Sync for TestCredentials {}

fn headers(list: &[(String, String)]) -> gst::Structure {
    let mut s = gst::Structure::new_empty("headers");
    for (k, v) in list {
        s.set(k.as_str(), v.as_str());
    }
    s
}

pub fn audio_object_structure(ao: &AudioObject, generation: u32) -> gst::Structure {
    let creds: TestCredentials = glib::Object::builder()
        .property("manifest-uri", &ao.manifest_url)
        .property("user-agent", "amzdash-tests/1")
        .property("segment-headers", headers(&ao.audio_segment_headers))
        .property("manifest-headers", headers(&ao.manifest_headers))
        .build();
    gst::Structure::builder("amazonmusic-audio-object")
        .field("track-id", &ao.track_id)
        .field("generation", generation)
        .field("expires", ao.expires)
        .field("quality", &ao.quality)
        .field("credentials", creds)
        .build()
}

/// What amazonmusicsrc sends down `src`: stream-start, the caps (if any), a bytes segment, the
/// sticky audio object (generation 1), the manifest as one buffer, EOS.
pub fn feed(
    src: &gst::Pad,
    stream_id: &str,
    caps: Option<gst::Caps>,
    ao: &AudioObject,
    mpd: Vec<u8>,
) {
    src.push_event(gst::event::StreamStart::new(stream_id));
    if let Some(caps) = caps {
        src.push_event(gst::event::Caps::new(&caps));
    }
    src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::format::Bytes,
    >::new()));
    src.push_event(gst::event::CustomDownstreamSticky::new(
        audio_object_structure(ao, 1),
    ));
    let _ = src.push(gst::Buffer::from_slice(mpd));
    src.push_event(gst::event::Eos::new());
}

pub struct Outcome {
    pub pcm: Vec<u8>,
    pub error: Option<String>,
    pub eos: bool,
    pub stats: gst::Structure,
    pub refresh_queries: Vec<(String, u32)>,
    /// Factories of every element added below the pipeline, in order.
    pub plugged: Vec<String>,
}

/// Plays `track` from the CDN as amazonmusicsrc would feed it; `refresh` answers the
/// contract's upstream query (None: nobody answers).
pub fn play(
    emu: &Emulator,
    track: &str,
    tier: Tier,
    demux_props: &str,
    before: impl FnOnce(&Emulator),
) -> Outcome {
    play_with_expiry(emu, track, tier, demux_props, None, before)
}

/// As [`play`], with the first audio object's `expires` (Unix seconds) replaced.
pub fn play_with_expiry(
    emu: &Emulator,
    track: &str,
    tier: Tier,
    demux_props: &str,
    expires: Option<u64>,
    before: impl FnOnce(&Emulator),
) -> Outcome {
    play_decoded(
        emu,
        track,
        tier,
        demux_props,
        expires,
        "flacparse ! flacdec",
        before,
    )
}

/// As [`play_with_expiry`], decoding with `decoder` (e.g. `opusparse ! opusdec`).
pub fn play_decoded(
    emu: &Emulator,
    track: &str,
    tier: Tier,
    demux_props: &str,
    expires: Option<u64>,
    decoder: &str,
    before: impl FnOnce(&Emulator),
) -> Outcome {
    init();
    let state = emu.state().clone();
    let mut ao = issue_audio_object(&state, track, tier, None).unwrap();
    if let Some(e) = expires {
        ao.expires = e;
    }
    let mpd = manifest(emu, &ao);
    let keys = source_keys(track).join(",");
    // "decodebin3 k=v …": autoplug, then set k=v on the amzdashdemux parsebin creates.
    let decodebin3 = demux_props.starts_with("decodebin3");
    let autoplugged_props: Vec<(String, String)> = demux_props
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let desc = if decodebin3 {
        // playbin3's path: parsebin must pick amzdashdemux for amazonmusicsrc's caps, then
        // qtdemux, widevinedecrypt, flacparse and flacdec.
        "decodebin3 name=demux ! audioconvert ! audio/x-raw,format=S16LE ! \
         appsink name=sink sync=false"
            .to_string()
    } else {
        format!(
            "amzdashdemux name=demux {demux_props} ! qtdemux ! widevinedecrypt keys={keys} ! \
             {decoder} ! audio/x-raw,format=S16LE ! appsink name=sink sync=false"
        )
    };
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let plugged = Arc::new(Mutex::new(Vec::<String>::new()));
    let plugged2 = plugged.clone();
    pipeline.connect("deep-element-added", false, move |args| {
        let e = args[2].get::<gst::Element>().unwrap();
        if let Some(f) = e.factory() {
            if f.name() == "widevinedecrypt" {
                e.set_property_from_str("keys", &keys);
            }
            if f.name() == "amzdashdemux" {
                for (k, v) in &autoplugged_props {
                    e.set_property_from_str(k, v);
                }
            }
            plugged2.lock().unwrap().push(f.name().to_string());
        }
        None
    });
    let demux = pipeline.by_name("demux").unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let queries = Arc::new(Mutex::new(Vec::new()));
    let generation = Arc::new(AtomicU32::new(1));
    let (q2, g2, st2, track2) = (
        queries.clone(),
        generation.clone(),
        state.clone(),
        track.to_string(),
    );
    let src = gst::Pad::builder(gst::PadDirection::Src)
        .name("amazonmusicsrc")
        .query_function(move |_pad, _parent, q| {
            let gst::QueryViewMut::Custom(c) = q.view_mut() else {
                return false;
            };
            let s = c.structure_mut();
            if s.name() != "amazonmusic-audio-object" {
                return false;
            }
            let reason = s.get::<String>("reason").unwrap_or_default();
            let asked = s.get::<u32>("generation").unwrap_or(0);
            q2.lock().unwrap().push((reason, asked));
            // A new audio object per refresh, as the music API would hand out.
            let fresh = issue_audio_object(&st2, &track2, tier, None).unwrap();
            let gen = g2.fetch_add(1, Ordering::SeqCst) + 1;
            let a = audio_object_structure(&fresh, gen);
            for (k, v) in a.iter() {
                s.set_value(k, v.clone());
            }
            true
        })
        .build();
    src.set_active(true).unwrap();
    src.link(&demux.static_pad("sink").unwrap()).unwrap();
    if decodebin3 {
        let conv = pipeline.by_name("audioconvert0").unwrap();
        let conv_sink = conv.static_pad("sink").unwrap();
        demux.connect_pad_added(move |_, pad| {
            if !conv_sink.is_linked() {
                let _ = pad.link(&conv_sink);
            }
        });
    }
    before(emu);
    pipeline.set_state(gst::State::Playing).unwrap();
    let caps = gst::Caps::builder("application/dash+xml")
        .field("source", "amazonmusicsrc")
        .build();
    feed(&src, "amazonmusicsrc-test", Some(caps), &ao, mpd);

    let mut out = Outcome {
        pcm: Vec::new(),
        error: None,
        eos: false,
        stats: gst::Structure::new_empty("none"),
        refresh_queries: Vec::new(),
        plugged: Vec::new(),
    };
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
            out.pcm
                .extend_from_slice(&s.buffer().unwrap().map_readable().unwrap());
            continue;
        }
        if let Some(m) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = m.view() {
                out.error = Some(format!("{} ({:?})", e.error(), e.debug()));
            }
            break;
        }
        if sink.is_eos() {
            out.eos = true;
            break;
        }
    }
    out.stats = if decodebin3 {
        let found = pipeline
            .iterate_recurse()
            .into_iter()
            .flatten()
            .find(|e| e.factory().is_some_and(|f| f.name() == "amzdashdemux"));
        match found {
            Some(d) => d.property::<gst::Structure>("stats"),
            None => gst::Structure::new_empty("not-plugged"),
        }
    } else {
        demux.property::<gst::Structure>("stats")
    };
    out.plugged = plugged.lock().unwrap().clone();
    pipeline.set_state(gst::State::Null).unwrap();
    let _ = src.set_active(false);
    out.refresh_queries = queries.lock().unwrap().clone();
    out
}

pub fn bandwidth_of(emu: &Emulator, track: &str, rep: &str) -> u64 {
    let ao = issue_audio_object(emu.state(), track, Tier::Hd, None).unwrap();
    bandwidth(&manifest(emu, &ao), rep)
}

/// The signed manifest of `ao`, fetched with its first manifest header.
pub fn manifest(emu: &Emulator, ao: &AudioObject) -> Vec<u8> {
    emu.get_with(&ao.manifest_url, &ao.manifest_headers[..1])
}
