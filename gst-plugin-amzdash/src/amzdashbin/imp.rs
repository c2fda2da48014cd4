// SPDX-License-Identifier: MPL-2.0
//! The bin: `amzdashdemux` → `qtdemux` → (`widevinedecrypt` when the track is protected) →
//! parser → one source pad of parsed audio, with the `qtdemux` and parser replaced at every
//! codec change. The decryptor stays for the whole stream: its license covers every tier.
//!
//! A codec change shows as a new stream-start on the demuxer's source (`amzdashdemux` starts a
//! new stream for another codec). In that streaming thread, before the event goes on, the old
//! `qtdemux` is drained (an EOS pushed into it: the parser hands over its last frame, and the
//! EOS itself stops here) and a new `qtdemux` takes the demuxer's output. Downstream sees one
//! stream whose caps change, which decodebin3 (1.22) handles by swapping the decoder, sample
//! for sample continuous.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::{LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "amzdashbin",
        gst::DebugColorFlags::empty(),
        Some("Amazon Music DASH demuxer, decryptor and parser bin"),
    )
});

/// The id of the one stream this bin outputs. Kept across tracks, as amzdashdemux does, so
/// playbin3's gapless mode keeps the decoder for a next track of the same codec.
const STREAM_ID: &str = "amzdashbin/audio";

/// The parser for the media type of an elementary stream (the decryptor's output type for a
/// protected one).
fn parser_for(media: &str) -> Option<&'static str> {
    match media {
        "audio/x-flac" => Some("flacparse"),
        "audio/x-opus" => Some("opusparse"),
        "audio/x-eac3" | "audio/x-ac3" => Some("ac3parse"),
        "audio/mpeg" => Some("aacparse"),
        _ => None,
    }
}

/// One codec's elements: the demuxer for its fragments and the parser after it (or after the
/// decryptor).
struct Chain {
    qtdemux: gst::Element,
    parser: Option<gst::Element>,
}

#[derive(Default)]
struct State {
    chain: Option<Chain>,
    decryptor: Option<gst::Element>,
    /// The stream id of the demuxer's current stream: another one is a codec change.
    upstream_stream: Option<String>,
    /// Our stream-start (and collection) went out.
    started: bool,
    /// The old chain is being drained: its EOS ends here.
    draining: bool,
    stream: Option<gst::Stream>,
}

pub struct AmzDashBin {
    demux: gst::Element,
    sinkpad: gst::GhostPad,
    srcpad: gst::Pad,
    /// Receives the current parser's output (a pad of no element, linked inside the bin).
    collector: gst::Pad,
    state: Mutex<State>,
}

#[glib::object_subclass]
impl ObjectSubclass for AmzDashBin {
    const NAME: &'static str = "GstAmzDashBin";
    type Type = super::AmzDashBin;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let demux = gst::ElementFactory::make("amzdashdemux")
            .name("demux")
            .build()
            .expect("amzdashdemux is in this plugin");
        let sinkpad = gst::GhostPad::builder_from_template(&klass.pad_template("sink").unwrap())
            .name("sink")
            .build();
        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .name("src")
            .event_function(|_pad, parent, event| {
                AmzDashBin::catch_panic_pad_function(parent, || false, |bin| bin.src_event(event))
            })
            .query_function(|_pad, parent, query| {
                AmzDashBin::catch_panic_pad_function(
                    parent,
                    || false,
                    |bin| bin.collector.peer_query(query),
                )
            })
            .build();
        let collector = gst::Pad::builder(gst::PadDirection::Sink)
            .name("collector")
            .build();
        AmzDashBin {
            demux,
            sinkpad,
            srcpad,
            collector,
            state: Mutex::default(),
        }
    }
}

impl AmzDashBin {
    fn src_event(&self, event: gst::Event) -> bool {
        // Seeks, QoS, latency, reconfigure: to the current parser and on up to the demuxer.
        self.collector.push_event(event)
    }

    fn collector_event(&self, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::StreamStart(_) => {
                // Ours went (or goes) out once; the chain's own stream ids stay inside.
                self.start_stream();
                true
            }
            EventView::Caps(c) => {
                self.start_stream();
                let caps = c.caps_owned();
                if let Some(s) = &self.state.lock().unwrap().stream {
                    s.set_caps(Some(&caps));
                }
                gst::debug!(CAT, imp = self, "caps {caps}");
                self.srcpad.push_event(event)
            }
            EventView::Eos(_) if self.state.lock().unwrap().draining => {
                gst::debug!(CAT, imp = self, "old chain drained");
                true
            }
            _ => {
                if event.is_sticky() {
                    self.start_stream();
                }
                self.srcpad.push_event(event)
            }
        }
    }

    fn collector_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.start_stream();
        self.srcpad.push(buffer)
    }

    fn collector_query(&self, query: &mut gst::QueryRef) -> bool {
        if self.srcpad.peer_query(query) {
            return true;
        }
        // Not linked yet (the pad is added with the first stream-start): what the parser
        // proposes is fine.
        match query.view_mut() {
            gst::QueryViewMut::AcceptCaps(q) => {
                q.set_result(true);
                true
            }
            gst::QueryViewMut::Caps(q) => {
                let caps = q
                    .filter()
                    .map(|f| f.to_owned())
                    .unwrap_or_else(gst::Caps::new_any);
                q.set_result(&caps);
                true
            }
            _ => false,
        }
    }

    /// Adds the source pad and sends our stream-start and collection, once.
    fn start_stream(&self) {
        let stream = {
            let mut st = self.state.lock().unwrap();
            if st.started {
                return;
            }
            st.started = true;
            let stream = gst::Stream::new(
                Some(STREAM_ID),
                None,
                gst::StreamType::AUDIO,
                gst::StreamFlags::empty(),
            );
            st.stream = Some(stream.clone());
            stream
        };
        let collection = gst::StreamCollection::builder(None)
            .stream(stream.clone())
            .build();
        let obj = self.obj();
        // urisourcebin (1.22) links an adaptive demuxer's pads only once it has posted a
        // collection; elsewhere (parsebin) our stream-start's stream is what counts.
        if in_urisourcebin(obj.upcast_ref()) {
            let _ = obj.post_message(
                gst::message::StreamCollection::builder(&collection)
                    .src(&*obj)
                    .build(),
            );
        }
        if self.srcpad.parent().is_none() {
            let _ = self.srcpad.set_active(true);
            if obj.add_pad(&self.srcpad).is_ok() {
                obj.no_more_pads();
            }
        }
        self.srcpad.push_event(
            gst::event::StreamStart::builder(STREAM_ID)
                .group_id(gst::GroupId::next())
                .stream(stream)
                .build(),
        );
        self.srcpad
            .push_event(gst::event::StreamCollection::new(&collection));
    }

    /// The demuxer's source appeared: its fragments go to a first qtdemux.
    fn demux_pad_added(&self, pad: &gst::Pad) {
        let weak = self.obj().downgrade();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
            let Some(gst::PadProbeData::Event(ev)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let gst::EventView::StreamStart(s) = ev.view() else {
                return gst::PadProbeReturn::Ok;
            };
            let id = s.stream_id().to_string();
            if let Some(bin) = weak.upgrade() {
                bin.imp().upstream_stream_start(pad, id);
            }
            gst::PadProbeReturn::Ok
        });
        if let Err(e) = self.new_chain(pad) {
            gst::element_imp_error!(self, gst::CoreError::MissingPlugin, ["{}", e]);
        }
    }

    /// A stream-start from the demuxer: a new stream id after the first is a codec change.
    fn upstream_stream_start(&self, pad: &gst::Pad, id: String) {
        let previous = self
            .state
            .lock()
            .unwrap()
            .upstream_stream
            .replace(id.clone());
        match previous {
            Some(p) if p != id => {
                gst::info!(CAT, imp = self, "codec change: {p} -> {id}");
                self.drain_chain();
                if let Err(e) = self.new_chain(pad) {
                    gst::element_imp_error!(self, gst::CoreError::MissingPlugin, ["{}", e]);
                }
            }
            _ => {}
        }
    }

    /// Ends the current chain: its parser hands over its last frame, then it is removed.
    fn drain_chain(&self) {
        let Some(chain) = self.state.lock().unwrap().chain.take() else {
            return;
        };
        self.state.lock().unwrap().draining = true;
        if let Some(sink) = chain.qtdemux.static_pad("sink") {
            sink.send_event(gst::event::Eos::new());
            if let Some(peer) = sink.peer() {
                let _ = peer.unlink(&sink);
            }
        }
        self.state.lock().unwrap().draining = false;
        if let Some(peer) = self.collector.peer() {
            let _ = peer.unlink(&self.collector);
        }
        let bin = self.obj();
        for e in [Some(chain.qtdemux), chain.parser].into_iter().flatten() {
            let _ = e.set_state(gst::State::Null);
            let _ = bin.remove(&e);
        }
    }

    /// A new qtdemux for the demuxer's output; its pad is linked when it appears.
    fn new_chain(&self, demux_src: &gst::Pad) -> Result<(), String> {
        let qtdemux = gst::ElementFactory::make("qtdemux")
            .build()
            .map_err(|_| "qtdemux is missing (gst-plugins-good)".to_string())?;
        let weak = self.obj().downgrade();
        qtdemux.connect_pad_added(move |_, pad| {
            if let Some(bin) = weak.upgrade() {
                if let Err(e) = bin.imp().qtdemux_pad_added(pad) {
                    gst::element_error!(bin, gst::CoreError::MissingPlugin, ("{}", e));
                }
            }
        });
        self.obj()
            .add(&qtdemux)
            .map_err(|e| format!("cannot add qtdemux: {e}"))?;
        let _ = qtdemux.sync_state_with_parent();
        demux_src
            .link(&qtdemux.static_pad("sink").unwrap())
            .map_err(|e| format!("cannot link qtdemux: {e:?}"))?;
        self.state.lock().unwrap().chain = Some(Chain {
            qtdemux,
            parser: None,
        });
        Ok(())
    }

    /// qtdemux found the track: decryptor (when protected), parser, then our collector.
    fn qtdemux_pad_added(&self, pad: &gst::Pad) -> Result<(), String> {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let s = caps
            .structure(0)
            .ok_or_else(|| format!("qtdemux gave no caps on {}", pad.name()))?;
        let protected = s.name() == "application/x-cenc";
        let media = if protected {
            s.get::<String>("original-media-type").unwrap_or_default()
        } else {
            s.name().to_string()
        };
        let Some(parser_name) = parser_for(&media) else {
            gst::warning!(CAT, imp = self, "ignoring a {media} track");
            return Ok(());
        };
        let bin = self.obj();
        let upstream = if protected {
            let decryptor = {
                let mut st = self.state.lock().unwrap();
                match &st.decryptor {
                    Some(d) => d.clone(),
                    None => {
                        let d = gst::ElementFactory::make("widevinedecrypt")
                            .name("decrypt")
                            .build()
                            .map_err(|_| {
                                "the track is encrypted and widevinedecrypt is missing \
                                 (gst-plugin-widevine-stub)"
                                    .to_string()
                            })?;
                        bin.add(&d)
                            .map_err(|e| format!("cannot add decryptor: {e}"))?;
                        st.decryptor = Some(d.clone());
                        d
                    }
                }
            };
            let _ = decryptor.sync_state_with_parent();
            let dsink = decryptor.static_pad("sink").unwrap();
            if let Some(old) = dsink.peer() {
                let _ = old.unlink(&dsink);
            }
            let dsrc = decryptor.static_pad("src").unwrap();
            if let Some(old) = dsrc.peer() {
                let _ = dsrc.unlink(&old);
            }
            pad.link(&dsink)
                .map_err(|e| format!("cannot link the decryptor: {e:?}"))?;
            dsrc
        } else {
            pad.clone()
        };
        let parser = gst::ElementFactory::make(parser_name)
            .build()
            .map_err(|_| format!("{parser_name} is missing (gst-plugins-good/-bad)"))?;
        bin.add(&parser)
            .map_err(|e| format!("cannot add {parser_name}: {e}"))?;
        let _ = parser.sync_state_with_parent();
        upstream
            .link(&parser.static_pad("sink").unwrap())
            .map_err(|e| format!("cannot link {parser_name}: {e:?}"))?;
        parser
            .static_pad("src")
            .unwrap()
            .link(&self.collector)
            .map_err(|e| format!("cannot link {parser_name} to the output: {e:?}"))?;
        gst::info!(
            CAT,
            imp = self,
            "{media}: {parser_name} (protected: {protected})"
        );
        if let Some(chain) = self.state.lock().unwrap().chain.as_mut() {
            chain.parser = Some(parser);
        }
        Ok(())
    }

    /// Back to READY: every chain element goes, and the source pad with them.
    fn reset(&self) {
        let (chain, decryptor) = {
            let mut st = self.state.lock().unwrap();
            let chain = st.chain.take();
            let decryptor = st.decryptor.take();
            *st = State::default();
            (chain, decryptor)
        };
        if let Some(peer) = self.collector.peer() {
            let _ = peer.unlink(&self.collector);
        }
        let bin = self.obj();
        let elements = chain
            .map(|c| vec![Some(c.qtdemux), c.parser])
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .chain(decryptor);
        for e in elements {
            let _ = e.set_state(gst::State::Null);
            let _ = bin.remove(&e);
        }
        if self.srcpad.parent().is_some() {
            let _ = self.srcpad.set_active(false);
            let _ = bin.remove_pad(&self.srcpad);
        }
    }
}

fn in_urisourcebin(element: &gst::Element) -> bool {
    parent_is(element, "urisourcebin")
}

fn parent_is(element: &gst::Element, factory: &str) -> bool {
    element
        .parent()
        .and_then(|p| p.downcast::<gst::Element>().ok())
        .and_then(|p| p.factory())
        .is_some_and(|f| f.name() == factory)
}

impl ObjectImpl for AmzDashBin {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        // This bin takes a codec change (see the module documentation): the demuxer may choose
        // across codecs unless the application says otherwise.
        self.demux.set_property("codec-switching", true);
        obj.add(&self.demux).unwrap();
        self.sinkpad
            .set_target(Some(&self.demux.static_pad("sink").unwrap()))
            .unwrap();
        obj.add_pad(&self.sinkpad).unwrap();
        let weak = obj.downgrade();
        self.demux.connect_pad_added(move |_, pad| {
            if let Some(bin) = weak.upgrade() {
                bin.imp().demux_pad_added(pad);
            }
        });
        // The collector's functions reach the bin through a weak reference: it has no parent.
        let weak = obj.downgrade();
        let w2 = weak.clone();
        let w3 = weak.clone();
        // SAFETY: the pad is ours, not linked and not active yet, so no function of it can be
        // running while these are set.
        unsafe {
            self.collector
                .set_chain_function(move |_, _, buffer| match w2.upgrade() {
                    Some(bin) => bin.imp().collector_chain(buffer),
                    None => Err(gst::FlowError::Flushing),
                });
            self.collector.set_event_function(move |_, _, event| {
                weak.upgrade()
                    .is_some_and(|bin| bin.imp().collector_event(event))
            });
            self.collector.set_query_function(move |_, _, query| {
                w3.upgrade()
                    .is_some_and(|bin| bin.imp().collector_query(query))
            });
        }
        let _ = self.collector.set_active(true);
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecBoolean::builder("codec-switching")
                    .nick("Codec switching")
                    .blurb(
                        "Let the adaptive choice leave the starting codec (FLAC down to Opus when \
                         the link or a stall calls for it, and back up). Off: the choice stays \
                         in the manifest's preferred codec. A pinned representation of another \
                         codec, or a gapless next track in another codec, plays through this bin \
                         either way",
                    )
                    .default_value(true)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecObject::builder::<gst::Element>("demuxer")
                    .nick("Demuxer")
                    .blurb(
                        "The amzdashdemux inside (read-only): set its max-bitrate, max-quality, \
                     representation or buffer properties, or read its stats",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        match pspec.name() {
            "codec-switching" => self
                .demux
                .set_property("codec-switching", value.get::<bool>().unwrap()),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "codec-switching" => self.demux.property_value("codec-switching"),
            "demuxer" => self.demux.to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for AmzDashBin {}

impl ElementImpl for AmzDashBin {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Amazon Music DASH audio bin",
                "Codec/Demuxer/Adaptive/Audio",
                "amzdashdemux with the fragment demuxer, decryptor and parser behind it: one \
                 source pad of parsed audio whose codec may change mid-stream (FLAC <-> Opus), \
                 for decodebin3 and playbin3",
                "gst-amazonmusic contributors",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = amzmusic_common::contract::source_mpd_caps();
            let mut src_caps = gst::Caps::new_empty();
            {
                let caps = src_caps.get_mut().unwrap();
                for (media, extra) in [
                    ("audio/x-flac", Some(("framed", true))),
                    ("audio/x-opus", None),
                    ("audio/x-eac3", Some(("framed", true))),
                    ("audio/x-ac3", Some(("framed", true))),
                ] {
                    let mut s = gst::Structure::new_empty(media);
                    if let Some((k, v)) = extra {
                        s.set(k, v);
                    }
                    caps.append_structure(s);
                }
                caps.append_structure(
                    gst::Structure::builder("audio/mpeg")
                        .field("mpegversion", 4i32)
                        .field("framed", true)
                        .build(),
                );
            }
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &sink_caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &src_caps,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady
            && parent_is(self.obj().upcast_ref(), "parsebin")
        {
            // Inside decodebin3's parsebin a caps change on a parsed output pad ends the
            // stream (1.22), so there parsebin's next choice, amzdashdemux with qtdemux behind
            // it, does better. Refusing READY is how an autoplugged element declines.
            gst::info!(
                CAT,
                imp = self,
                "declining inside parsebin: amzdashdemux takes over"
            );
            return Err(gst::StateChangeError);
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            self.reset();
        }
        Ok(ret)
    }
}

impl BinImpl for AmzDashBin {}
