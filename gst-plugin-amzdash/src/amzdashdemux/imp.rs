// SPDX-License-Identifier: MPL-2.0
//! Element glue: collects the MPD on the sink pad, starts the download engine, and pushes its
//! fragments from a src pad task with the events qtdemux and the decryptor need.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use url::Url;

use super::audio_object::{
    audio_object_from_structure, AUDIO_OBJECT, CAPS_SOURCE_FIELD, CAPS_SOURCE_VALUE,
};
use crate::clear_lead::ClearLeadMarker;
use crate::engine::{
    self, AudioObject, Context, Engine, EngineError, Item, Limits, Next, Queue, Refresher,
};
use crate::fetch::{redact, Fetcher, RetryPolicy};
use crate::mpd::{Mpd, MAX_MANIFEST_BYTES};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "amzdashdemux",
        gst::DebugColorFlags::empty(),
        Some("Amazon Music DASH audio demuxer"),
    )
});

const DEFAULT_MAX_BITRATE: u64 = 0;
const DEFAULT_MAX_QUALITY: &str = "";
/// Audio is small: a minute ahead rides out long outages for ~12 MB of HD FLAC.
const DEFAULT_BUFFER_TIME: gst::ClockTime = gst::ClockTime::from_seconds(60);
const DEFAULT_BUFFER_BYTES: u64 = 32 * 1024 * 1024;
const DEFAULT_LOW_WATERMARK: gst::ClockTime = gst::ClockTime::from_seconds(4);
const DEFAULT_RETRIES: u32 = 6;
const DEFAULT_CONNECT_TIMEOUT: u32 = 5;
const DEFAULT_STALL_TIMEOUT: u32 = 10;

#[derive(Debug, Clone)]
struct Settings {
    max_quality: String,
    buffer_time: gst::ClockTime,
    buffer_bytes: u64,
    low_watermark: gst::ClockTime,
    retries: u32,
    connect_timeout: u32,
    stall_timeout: u32,
    codec_switching: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_quality: DEFAULT_MAX_QUALITY.into(),
            buffer_time: DEFAULT_BUFFER_TIME,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            low_watermark: DEFAULT_LOW_WATERMARK,
            retries: DEFAULT_RETRIES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            codec_switching: false,
        }
    }
}

#[derive(Default)]
struct State {
    manifest: Vec<u8>,
    audio_object: Option<AudioObject>,
    engine: Option<Arc<Engine>>,
    /// stream-start, caps, segment and protection events still to send.
    need_events: bool,
    segment: gst::FormattedSegment<gst::ClockTime>,
    seqnum: Option<gst::Seqnum>,
    discont: bool,
    buffering: Option<i32>,
    position: Option<gst::ClockTime>,
    started: bool,
    /// Codec family of the last init segment pushed.
    codec: Option<String>,
    /// Marks clear-lead fragments of constant-IV tracks as clear (`clear_lead.rs`); set from
    /// each init segment.
    clear_lead: Option<ClearLeadMarker>,
    /// Start and duration of the fragment whose first buffer is still to be pushed.
    fragment_time: Option<(Duration, Duration)>,
    /// Media time up to which pieces went downstream (for the playhead).
    pushed_to: Duration,
}

pub struct AmzDashDemux {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Shared with the download task (and kept across plays: the playhead's clock).
    queue: Arc<Queue>,
    /// The settings that change while playing (max-bitrate, representation): the one copy,
    /// which the engine reads too.
    live: Arc<engine::Live>,
    /// Serializes seeks against each other and against state changes.
    seek_lock: Mutex<()>,
    /// Serializes buffering reports (see `report_level`).
    buffering_lock: Mutex<()>,
}

/// Answers the contract's refresh query through the sink pad's peer.
struct PadRefresher(glib::WeakRef<gst::Pad>);

impl Refresher for PadRefresher {
    fn refresh(&self, reason: &str, generation: u32) -> Option<AudioObject> {
        let pad = self.0.upgrade()?;
        let s = gst::Structure::builder(AUDIO_OBJECT)
            .field("reason", reason)
            .field("generation", generation)
            .build();
        let mut q = gst::query::Custom::new(s);
        if !pad.peer_query(&mut q) {
            return None;
        }
        audio_object_from_structure(q.structure()?)
    }
}

fn codec_caps(family: &str) -> Option<gst::Caps> {
    Some(match family {
        "flac" | "fLaC" => gst::Caps::new_empty_simple("audio/x-flac"),
        "opus" | "Opus" => gst::Caps::new_empty_simple("audio/x-opus"),
        "ec-3" => gst::Caps::new_empty_simple("audio/x-eac3"),
        "ac-3" => gst::Caps::new_empty_simple("audio/x-ac3"),
        "mp4a" => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .build(),
        _ => return None,
    })
}

/// Whether the registry has a decoder for the codec family.
fn decodable(family: &str) -> bool {
    let Some(caps) = codec_caps(family) else {
        return false;
    };
    gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::DECODER | gst::ElementFactoryType::MEDIA_AUDIO,
        gst::Rank::MARGINAL,
    )
    .into_iter()
    .any(|f| f.can_sink_any_caps(&caps))
}

fn src_caps() -> gst::Caps {
    gst::Caps::builder("video/quicktime")
        .field("variant", "iso-fragmented")
        .build()
}

/// The id of the stream we output, the same for every track in one codec: in playbin3's gapless
/// mode the next track's fragments reach the same qtdemux, which keeps its pad (and the
/// decryptor and decoder behind it) only for a stream id it already knows. With a new id per
/// track it added a new pad, which 1.22's parsebin never exposes once the previous one has
/// drained, and the album stopped after its first track.
fn stream_id(codec: &str) -> String {
    format!("amzdashdemux/audio-{}", codec.to_ascii_lowercase())
}

fn to_clock(d: Duration) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(d.as_nanos() as u64)
}

impl AmzDashDemux {
    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut st = self.state.lock().unwrap();
        if st.started {
            // The manifest is complete once upstream sent EOS; more data is ignored.
            return Ok(gst::FlowSuccess::Ok);
        }
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        if st.manifest.len() + map.len() > MAX_MANIFEST_BYTES {
            drop(st);
            gst::element_imp_error!(
                self,
                gst::StreamError::Demux,
                [
                    "Manifest is larger than {} bytes: not an audio MPD?",
                    MAX_MANIFEST_BYTES
                ]
            );
            return Err(gst::FlowError::Error);
        }
        st.manifest.extend_from_slice(&map);
        Ok(gst::FlowSuccess::Ok)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::CustomDownstreamSticky(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == AUDIO_OBJECT) {
                    if let Some(ao) = audio_object_from_structure(s) {
                        gst::debug!(CAT, imp = self, "audio object generation {}", ao.generation);
                        let mut st = self.state.lock().unwrap();
                        if let Some(engine) = &st.engine {
                            engine.update_audio_object(ao.clone());
                        }
                        st.audio_object = Some(ao);
                    }
                    // Consumed: the fragments we push are not the MPD it describes.
                    return true;
                }
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::Eos(_) => {
                if let Err(msg) = self.start_playback() {
                    gst::element_imp_error!(self, gst::StreamError::Demux, ["{}", msg]);
                }
                true
            }
            // Our own stream-start, caps and segment go downstream; upstream's describe the MPD.
            EventView::StreamStart(_)
            | EventView::Caps(_)
            | EventView::Segment(_)
            | EventView::FlushStart(_)
            | EventView::FlushStop(_) => true,
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        use gst::QueryViewMut;
        match query.view_mut() {
            // The template needs `source=amazonmusicsrc` only for autoplugging; by hand
            // (souphttpsrc, filesrc) any MPD is welcome.
            QueryViewMut::Caps(q) => {
                let caps = gst::Caps::new_empty_simple("application/dash+xml");
                let caps = match q.filter() {
                    Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
                    None => caps,
                };
                q.set_result(&caps);
                true
            }
            QueryViewMut::AcceptCaps(q) => {
                let ok = q
                    .caps()
                    .structure(0)
                    .is_some_and(|s| s.name() == "application/dash+xml");
                q.set_result(ok);
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    /// The manifest's own URL: from the audio object, else from upstream's URI query.
    fn manifest_url(&self, ao: Option<&AudioObject>) -> Option<Url> {
        if let Some(u) = ao.and_then(|a| a.manifest_uri.clone()) {
            return Some(u);
        }
        let mut q = gst::query::Uri::new();
        if self.sinkpad.peer_query(&mut q) {
            let uri = q.redirection().0.or_else(|| q.uri());
            return uri.and_then(|u| Url::parse(u.as_str()).ok());
        }
        None
    }

    fn start_playback(&self) -> Result<(), String> {
        let (doc, ao) = {
            let mut st = self.state.lock().unwrap();
            if st.started {
                return Ok(());
            }
            st.started = true;
            (std::mem::take(&mut st.manifest), st.audio_object.clone())
        };
        let mpd = Mpd::parse(&doc).map_err(|e| format!("Cannot play this manifest: {e}"))?;
        let url = self.manifest_url(ao.as_ref()).ok_or(
            "Cannot resolve segment URLs: upstream gave neither an audio object nor the \
             manifest URI (use amazonmusicsrc, souphttpsrc or filesrc)",
        )?;
        gst::info!(
            CAT,
            imp = self,
            "manifest {} ({} bytes)",
            redact(&url),
            doc.len()
        );
        let settings = self.settings.lock().unwrap().clone();
        let wanted = engine::Wanted {
            max_quality: &settings.max_quality,
            max_bitrate: self.live.max_bitrate(),
            representation: &self.live.pinned().unwrap_or_default(),
        };
        let engine::Built {
            presentation,
            family,
            skipped,
        } = engine::presentation::build(mpd, url, wanted, decodable)?;
        if !skipped.is_empty() {
            gst::info!(CAT, imp = self, "no decoder for: {}", skipped.join(", "));
        }
        let policy = RetryPolicy {
            attempts: settings.retries.max(1),
            connect_timeout: Duration::from_secs(settings.connect_timeout as u64),
            stall_timeout: Duration::from_secs(settings.stall_timeout as u64),
            ..Default::default()
        };
        let ua = ao
            .as_ref()
            .and_then(|a| a.user_agent.clone())
            .unwrap_or_else(|| concat!("gst-amzdash/", env!("CARGO_PKG_VERSION")).to_string());
        let fetcher = Fetcher::new(policy, &ua)?;
        let refresher: Option<Arc<dyn Refresher>> = ao
            .as_ref()
            .map(|_| Arc::new(PadRefresher(self.sinkpad.downgrade())) as Arc<dyn Refresher>);
        let obj = self.obj().downgrade();
        let config = engine::Config {
            limits: Limits {
                buffer_time: Duration::from_nanos(settings.buffer_time.nseconds()),
                buffer_bytes: settings.buffer_bytes,
            },
            family,
            codec_switching: settings.codec_switching,
            live: self.live.clone(),
        };
        let engine = Arc::new(Engine::new(Context::new(
            presentation,
            ao.unwrap_or_default(),
            fetcher,
            refresher,
            self.queue.clone(),
            config,
            Box::new(move |m| {
                if let Some(o) = obj.upgrade() {
                    gst::debug!(CAT, obj = o, "{}", m);
                }
            }),
        )));
        {
            let mut st = self.state.lock().unwrap();
            st.engine = Some(engine.clone());
            st.segment = gst::FormattedSegment::new();
            st.need_events = true;
            st.discont = true;
        }
        let obj = self.obj().downgrade();
        self.queue.set_on_level(Some(Box::new(move |_, _| {
            if let Some(o) = obj.upgrade() {
                o.imp().report_level(false);
            }
        })));
        engine.start(Duration::ZERO);
        self.start_task()
    }

    fn stop_download(&self) {
        self.queue.set_flushing(true);
        let engine = self.state.lock().unwrap().engine.clone();
        if let Some(engine) = engine {
            engine.stop();
        }
    }

    fn start_task(&self) -> Result<(), String> {
        let imp = self.ref_counted();
        self.srcpad
            .start_task(move || imp.loop_fn())
            .map_err(|e| format!("cannot start the streaming task: {e}"))
    }

    fn next_item(&self) -> Next {
        let engine = self.state.lock().unwrap().engine.clone();
        match engine {
            Some(engine) => engine.next(|underrun| self.report_level(underrun)),
            None => self
                .queue
                .next(|underrun| self.report_level(underrun), || {}),
        }
    }

    /// Posts the buffering level as it is *now*. Both the streaming thread and the download
    /// task call this; computing and posting under one lock makes the last message the true
    /// level. Once 100 % was posted, a lower level is only posted on an underrun: applications
    /// (gst-launch) pause on < 100 %, and flapping between 0 and 100 on every fragment of a fast
    /// link made gst-launch 1.22 lose its PLAYING state change during preroll.
    fn report_level(&self, underrun: bool) {
        let _serial = self.buffering_lock.lock().unwrap();
        let time = self.queue.queued().0;
        let low = self.settings.lock().unwrap().low_watermark;
        // Once everything is downloaded there is nothing to wait for.
        let done = self.queue.is_complete();
        let pct = if low.is_zero() || done {
            100
        } else {
            ((time.as_nanos() * 100) / low.nseconds().max(1) as u128).min(100) as i32
        };
        let settled = self.state.lock().unwrap().buffering == Some(100);
        if settled && pct < 100 && !underrun {
            return;
        }
        self.post_buffering(pct);
    }

    fn post_buffering(&self, pct: i32) {
        let changed = {
            let mut st = self.state.lock().unwrap();
            let prev = st.buffering;
            // Report 0 and 100 always, other levels in steps of 10.
            if prev == Some(pct)
                || (prev.is_some_and(|p| (p - pct).abs() < 10) && pct != 100 && pct != 0)
            {
                false
            } else {
                st.buffering = Some(pct);
                true
            }
        };
        if changed {
            let _ = self.obj().post_message(
                gst::message::Buffering::builder(pct)
                    .src(&*self.obj())
                    .build(),
            );
        }
    }

    /// Inside urisourcebin (playbin3, uridecodebin3): 1.22's urisourcebin links an adaptive
    /// demuxer's output only on `pad-added`, and only once the demuxer has shown it is
    /// streams-aware by posting a stream collection.
    fn in_urisourcebin(&self) -> bool {
        self.obj()
            .parent()
            .and_then(|p| p.downcast::<gst::Element>().ok())
            .and_then(|p| p.factory())
            .is_some_and(|f| f.name() == "urisourcebin")
    }

    /// Adds the source pad when the first fragment is about to flow, as adaptive demuxers do.
    fn expose_srcpad(&self, collection: Option<&gst::StreamCollection>) {
        if self.srcpad.parent().is_some() {
            return;
        }
        let obj = self.obj();
        if let Some(c) = collection {
            let _ = obj.post_message(
                gst::message::StreamCollection::builder(c)
                    .src(&*obj)
                    .build(),
            );
        }
        if let Err(e) = self.srcpad.set_active(true) {
            gst::warning!(CAT, imp = self, "cannot activate the source pad: {e}");
        }
        if obj.add_pad(&self.srcpad).is_ok() {
            obj.no_more_pads();
        }
    }

    fn hide_srcpad(&self) {
        if self.srcpad.parent().is_some() {
            let _ = self.srcpad.set_active(false);
            let _ = self.obj().remove_pad(&self.srcpad);
        }
    }

    /// `codec`: the family of the first init segment (the adaptive choice may start in
    /// another family than the manifest's preferred one when codec switching is on).
    fn push_initial_events(&self, engine: &Engine, codec: &str) {
        let (segment, seqnum) = {
            let st = self.state.lock().unwrap();
            (st.segment.clone(), st.seqnum)
        };
        let stream_id = stream_id(codec);
        if self
            .srcpad
            .sticky_event::<gst::event::StreamStart>(0)
            .is_none()
        {
            // Elsewhere no GstStream or collection of our own: what we output is a container,
            // and the elementary stream decodebin3 selects is the one qtdemux (inside parsebin)
            // announces. A collection listing our container stream made decodebin3 deselect
            // qtdemux's audio stream (not-linked) when we sit inside decodebin3's parsebin.
            let stream = self.in_urisourcebin().then(|| {
                gst::Stream::new(
                    Some(stream_id.as_str()),
                    Some(&src_caps()),
                    gst::StreamType::AUDIO,
                    gst::StreamFlags::empty(),
                )
            });
            let collection = stream.as_ref().map(|s| {
                gst::StreamCollection::builder(None)
                    .stream(s.clone())
                    .build()
            });
            self.expose_srcpad(collection.as_ref());
            let start =
                gst::event::StreamStart::builder(stream_id.as_str()).group_id(gst::GroupId::next());
            self.srcpad.push_event(match stream {
                Some(s) => start.stream(s).build(),
                None => start.build(),
            });
            self.srcpad.push_event(gst::event::Caps::new(&src_caps()));
            let dur = engine.presentation().duration();
            if let Some(d) = dur {
                let _ = self.obj().post_message(
                    gst::message::DurationChanged::builder()
                        .src(&*self.obj())
                        .build(),
                );
                gst::debug!(CAT, imp = self, "duration {}", to_clock(d));
            }
        }
        let mut ev = gst::event::Segment::builder(&segment);
        if let Some(s) = seqnum {
            ev = ev.seqnum(s);
        }
        self.srcpad.push_event(ev.build());
        self.push_protection_events(engine);
    }

    /// Pushes a piece of a media segment (a fragment arrives in many, in order). The first
    /// buffer of a fragment carries its start as PTS, since qtdemux takes an upstream TIME
    /// buffer's PTS as the fragment's time; the pieces after it carry none.
    fn push_piece(
        &self,
        data: bytes::Bytes,
        start: Duration,
        duration: Duration,
        time: Duration,
        first: bool,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (data, stamp, discont, span) = {
            let mut st = self.state.lock().unwrap();
            if first {
                st.fragment_time = Some((start, duration));
                st.position = Some(to_clock(start));
                st.pushed_to = start;
            }
            // The media this piece accounts for, from where playback starts (a seek lands
            // inside a segment, and what precedes it is clipped downstream).
            let from = Duration::from_nanos(st.segment.start().map_or(0, |t| t.nseconds()));
            let span = (st.pushed_to.max(from), (st.pushed_to + time).max(from));
            st.pushed_to += time;
            // (The marker may hold bytes back while it gathers a moof: the stamp waits for
            // the first buffer that leaves.)
            let data = match st.clear_lead.as_mut() {
                Some(marker) => marker.feed(data),
                None => data,
            };
            if data.is_empty() {
                return Ok(gst::FlowSuccess::Ok);
            }
            let stamp = st.fragment_time.take();
            (data, stamp, std::mem::take(&mut st.discont), span)
        };
        let mut buf = gst::Buffer::from_slice(data);
        {
            let b = buf.get_mut().unwrap();
            if let Some((start, duration)) = stamp {
                b.set_pts(to_clock(start));
                b.set_duration(to_clock(duration));
            }
            if discont {
                b.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        self.queue.set_playing(true);
        let res = self.srcpad.push(buf);
        if res.is_ok() {
            self.queue.pushed_downstream(span.0, span.1);
        }
        res
    }

    /// A codec change: push-mode qtdemux cannot change codec inside one stream on 1.22, so the
    /// new representation starts a new stream (stream-start with a new id and group, caps, the
    /// same TIME segment, protection events) and parsebin/decodebin3 plug a new chain for it.
    fn start_new_stream(&self, engine: &Engine, codec: &str) {
        let n = {
            let mut st = self.state.lock().unwrap();
            st.discont = true;
            st.segment.clone()
        };
        let stream_id = stream_id(codec);
        gst::info!(
            CAT,
            imp = self,
            "codec change to {}: new stream {}",
            codec,
            stream_id
        );
        self.srcpad.push_event(
            gst::event::StreamStart::builder(stream_id.as_str())
                .group_id(gst::GroupId::next())
                .build(),
        );
        self.srcpad.push_event(gst::event::Caps::new(&src_caps()));
        self.srcpad.push_event(gst::event::Segment::new(&n));
        self.push_protection_events(engine);
    }

    /// One protection event per ContentProtection with a PSSH, before the first fragment, so
    /// the decryptor asks for the license while the clear lead plays.
    fn push_protection_events(&self, engine: &Engine) {
        let p = engine.presentation();
        let mut sets: Vec<usize> = p.candidates.iter().map(|c| c.set).collect();
        sets.sort();
        sets.dedup();
        for si in sets {
            let set = &p.mpd.periods[p.period].adaptation_sets[si];
            let kid = set.default_kid().map(hex::encode);
            for cp in &set.content_protections {
                let (Some(system), Some(pssh)) = (cp.system_id(), cp.pssh.as_ref()) else {
                    continue;
                };
                let buf = gst::Buffer::from_slice(pssh.clone());
                let mut b = gst::event::Protection::builder(&system, &buf).origin("dash/mpd");
                if let Some(u) = &cp.license_url {
                    b = b.other_field("license-url", u);
                }
                if let Some(k) = &kid {
                    b = b.other_field("default-kid", k);
                }
                gst::debug!(
                    CAT,
                    imp = self,
                    "protection event for {} (set {})",
                    system,
                    si
                );
                self.srcpad.push_event(b.build());
            }
        }
    }

    /// Pauses the streaming task: nothing more is taken from the queue until the next play,
    /// which the download task must know (a buffered segment is then never due).
    fn pause(&self) {
        self.queue.stop_taking();
        let _ = self.srcpad.pause_task();
    }

    fn loop_fn(&self) {
        let item = match self.next_item() {
            Next::Item(i) => i,
            Next::Flushing => {
                self.pause();
                return;
            }
            Next::Error(e) => {
                self.post_engine_error(e);
                self.srcpad.push_event(gst::event::Eos::new());
                self.pause();
                return;
            }
        };
        let Some(engine) = self.state.lock().unwrap().engine.clone() else {
            self.pause();
            return;
        };
        let need = std::mem::take(&mut self.state.lock().unwrap().need_events);
        if need {
            let codec = match &item {
                Item::Init { codec, .. } => codec.clone(),
                _ => engine.family().to_string(),
            };
            self.push_initial_events(&engine, &codec);
        }
        let res = match item {
            Item::Init {
                data,
                candidate,
                codec,
                ..
            } => {
                let previous = self.state.lock().unwrap().codec.replace(codec.clone());
                if previous.is_some_and(|p| p != codec) {
                    self.start_new_stream(&engine, &codec);
                }
                let marker = ClearLeadMarker::from_init(&data);
                let mut buf = gst::Buffer::from_slice(data);
                {
                    let b = buf.get_mut().unwrap();
                    b.set_flags(gst::BufferFlags::HEADER | gst::BufferFlags::DISCONT);
                }
                {
                    let mut st = self.state.lock().unwrap();
                    st.discont = false;
                    st.clear_lead = marker;
                }
                gst::debug!(CAT, imp = self, "pushing init of candidate {}", candidate);
                self.srcpad.push(buf)
            }
            Item::Media {
                data,
                start,
                duration,
                time,
                first,
                candidate,
                ..
            } => {
                if first {
                    self.post_segment(&engine, candidate, start, duration);
                }
                self.push_piece(data, start, duration, time, first)
            }
            Item::Eos => {
                gst::debug!(CAT, imp = self, "end of presentation");
                self.report_level(false);
                self.srcpad.push_event(gst::event::Eos::new());
                self.pause();
                return;
            }
        };
        match res {
            Ok(_) => {}
            Err(gst::FlowError::Flushing) => {
                self.pause();
            }
            Err(gst::FlowError::Eos) => {
                self.srcpad.push_event(gst::event::Eos::new());
                self.pause();
            }
            Err(e) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ["Internal data flow error: {:?}", e]
                );
                self.srcpad.push_event(gst::event::Eos::new());
                self.pause();
            }
        }
    }

    /// Says which representation the segment now going downstream comes from (what plays is
    /// known only here: a buffered segment can be swapped for an upgrade until this moment).
    fn post_segment(&self, engine: &Engine, candidate: usize, start: Duration, duration: Duration) {
        let (id, bandwidth) = {
            let p = engine.presentation();
            match p.candidates.get(candidate) {
                Some(c) => (c.id.clone(), c.bandwidth),
                None => return,
            }
        };
        let s = gst::Structure::builder("amzdashdemux-segment")
            .field("start", start.as_nanos() as u64)
            .field("duration", duration.as_nanos() as u64)
            .field("representation", id)
            .field("bandwidth", bandwidth)
            .build();
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
    }

    fn post_engine_error(&self, e: EngineError) {
        match e {
            EngineError::NotAuthorized(m) => gst::element_imp_error!(
                self,
                gst::ResourceError::NotAuthorized,
                ["Segment access refused: {}", m]
            ),
            EngineError::NotFound(m) => gst::element_imp_error!(
                self,
                gst::ResourceError::NotFound,
                ["A segment the manifest lists does not exist: {}", m]
            ),
            EngineError::Network(m) => gst::element_imp_error!(
                self,
                gst::ResourceError::Read,
                ["Could not download a segment: {}", m]
            ),
            EngineError::Manifest(m) => gst::element_imp_error!(
                self,
                gst::StreamError::Demux,
                ["Cannot play this manifest: {}", m]
            ),
        }
    }

    fn duration(&self) -> Option<gst::ClockTime> {
        let st = self.state.lock().unwrap();
        let d = st.engine.as_ref()?.presentation().duration()?;
        Some(to_clock(d))
    }

    fn do_seek(&self, event: &gst::event::Seek) -> bool {
        let (rate, flags, start_type, start, stop_type, stop) = event.get();
        if rate <= 0.0 {
            gst::debug!(CAT, imp = self, "reverse playback is not supported");
            return false;
        }
        let start: Result<Option<gst::ClockTime>, _> = start.try_into();
        let stop: Result<Option<gst::ClockTime>, _> = stop.try_into();
        let (Ok(start), Ok(stop)) = (start, stop) else {
            gst::debug!(CAT, imp = self, "only time seeks are supported");
            return false;
        };
        if !flags.contains(gst::SeekFlags::FLUSH) {
            gst::debug!(CAT, imp = self, "only flushing seeks are supported");
            return false;
        }
        let Some(engine) = self.state.lock().unwrap().engine.clone() else {
            return false;
        };
        let _guard = self.seek_lock.lock().unwrap();
        let seqnum = event.seqnum();
        self.srcpad
            .push_event(gst::event::FlushStart::builder().seqnum(seqnum).build());
        self.stop_download();
        let _ = self.srcpad.pause_task();
        let duration = self.duration();
        let position = match (start_type, start) {
            (gst::SeekType::Set, Some(s)) => s,
            _ => gst::ClockTime::ZERO,
        };
        let position = match duration {
            Some(d) if position > d => d,
            _ => position,
        };
        {
            let mut st = self.state.lock().unwrap();
            let mut seg = gst::FormattedSegment::<gst::ClockTime>::new();
            seg.set_rate(rate);
            seg.set_flags(gst::SegmentFlags::from_bits_truncate(flags.bits()));
            seg.set_start(position);
            seg.set_time(position);
            seg.set_position(position);
            if stop_type == gst::SeekType::Set {
                seg.set_stop(stop);
            }
            seg.set_duration(duration);
            st.segment = seg;
            st.seqnum = Some(seqnum);
            st.need_events = true;
            st.discont = true;
            st.buffering = None;
        }
        self.srcpad
            .push_event(gst::event::FlushStop::builder(true).seqnum(seqnum).build());
        gst::debug!(CAT, imp = self, "seek to {}", position);
        engine.start(Duration::from_nanos(position.nseconds()));
        self.start_task().is_ok()
    }

    fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Seek(e) => self.do_seek(e),
            // Upstream is a manifest source: nothing it could do with these.
            gst::EventView::Reconfigure(_)
            | gst::EventView::Latency(_)
            | gst::EventView::Qos(_) => true,
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        use gst::QueryViewMut;
        match query.view_mut() {
            QueryViewMut::Duration(q) if q.format() == gst::Format::Time => match self.duration() {
                Some(d) => {
                    q.set(d);
                    true
                }
                None => false,
            },
            QueryViewMut::Seeking(q) if q.format() == gst::Format::Time => {
                let d = self.duration();
                q.set(d.is_some(), gst::ClockTime::ZERO, d);
                true
            }
            QueryViewMut::Position(q) if q.format() == gst::Format::Time => {
                match self.state.lock().unwrap().position {
                    Some(p) => {
                        q.set(p);
                        true
                    }
                    None => false,
                }
            }
            QueryViewMut::Caps(q) => {
                let caps = src_caps();
                q.set_result(&match q.filter() {
                    Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
                    None => caps,
                });
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn stats(&self) -> gst::Structure {
        let (level_time, level_bytes) = self.queue.queued();
        let engine = self.state.lock().unwrap().engine.clone();
        let (s, cand) = engine.map(|e| e.stats()).unwrap_or_default();
        gst::Structure::builder("amzdashdemux-stats")
            .field(
                "representation",
                cand.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
            )
            .field(
                "codec",
                cand.as_ref().map(|c| c.codec.clone()).unwrap_or_default(),
            )
            .field("bandwidth", cand.as_ref().map(|c| c.bandwidth).unwrap_or(0))
            .field(
                "quality",
                cand.as_ref().map(|c| c.label.clone()).unwrap_or_default(),
            )
            .field("throughput-estimate", s.estimate_bps as u64)
            .field("buffer-level-time", level_time.as_nanos() as u64)
            .field("buffer-level-bytes", level_bytes)
            .field("switches", s.switches)
            .field("stalls", s.stalls)
            .field("bytes", s.bytes)
            .field("segments", s.segments)
            .field("refreshes", s.refreshes)
            .field("retries", s.retries)
            .field("abandons", s.abandons)
            .field("underruns", s.underruns)
            .field("upgrades", s.upgrades)
            .field("upgrades-dropped", s.upgrades_dropped)
            .build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for AmzDashDemux {
    const NAME: &'static str = "GstAmzDashDemux";
    type Type = super::AmzDashDemux;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                AmzDashDemux::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                AmzDashDemux::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                AmzDashDemux::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_query(pad, query),
                )
            })
            .build();
        let templ = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&templ)
            .event_function(|pad, parent, event| {
                AmzDashDemux::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                AmzDashDemux::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .build();
        AmzDashDemux {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            queue: Arc::new(Queue::default()),
            live: Arc::new(engine::Live::default()),
            seek_lock: Mutex::new(()),
            buffering_lock: Mutex::new(()),
        }
    }
}

impl ObjectImpl for AmzDashDemux {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt64::builder("max-bitrate")
                    .nick("Maximum bitrate")
                    .blurb("Never choose a representation above this bandwidth (bits/s, 0 = no limit)")
                    .default_value(DEFAULT_MAX_BITRATE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("representation")
                    .nick("Representation")
                    .blurb("Play this Representation id instead of choosing adaptively (empty = adaptive); another codec than the current one starts a new stream (see codec-switching)")
                    .default_value(Some(""))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("codec-switching")
                    .nick("Codec switching")
                    .blurb("Let the adaptive choice change codec mid-stream (FLAC <-> Opus), each change a new stream on the source pad. Only for a downstream that takes that: amzdashbin sets it; one qtdemux cannot change codec")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("max-quality")
                    .nick("Maximum quality")
                    .blurb("Highest amz-music:trackType to play: SD, HD, UHD or SPATIAL (empty = any)")
                    .default_value(Some(DEFAULT_MAX_QUALITY))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("buffer-time")
                    .nick("Buffer time")
                    .blurb("Download this much audio ahead of playback (ns)")
                    .minimum(gst::ClockTime::SECOND.nseconds())
                    .default_value(DEFAULT_BUFFER_TIME.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("buffer-bytes")
                    .nick("Buffer bytes")
                    .blurb("Never hold more than this many downloaded bytes (plus one segment)")
                    .minimum(64 * 1024)
                    .default_value(DEFAULT_BUFFER_BYTES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("low-watermark-time")
                    .nick("Low watermark")
                    .blurb("Buffering messages report 100 % from this much audio ahead (ns)")
                    .default_value(DEFAULT_LOW_WATERMARK.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("retries")
                    .nick("Attempts")
                    .blurb("Attempts per request on timeouts, 5xx and 429 (with backoff and jitter)")
                    .minimum(1)
                    .maximum(50)
                    .default_value(DEFAULT_RETRIES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("connect-timeout")
                    .nick("Connect timeout")
                    .blurb("Seconds to wait for a connection")
                    .minimum(1)
                    .maximum(300)
                    .default_value(DEFAULT_CONNECT_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("stall-timeout")
                    .nick("Stall timeout")
                    .blurb("Seconds without a byte before a request is retried")
                    .minimum(1)
                    .maximum(300)
                    .default_value(DEFAULT_STALL_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Current representation, throughput estimate, buffer level, switches, stalls, bytes, refreshes, retries")
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "max-bitrate" => {
                // Live: the next segment's choice honours it.
                self.live.set_max_bitrate(value.get().unwrap());
            }
            "representation" => {
                self.live.pin(value.get::<Option<String>>().unwrap());
            }
            "max-quality" => {
                s.max_quality = value.get::<Option<String>>().unwrap().unwrap_or_default()
            }
            "codec-switching" => s.codec_switching = value.get().unwrap(),
            "buffer-time" => s.buffer_time = gst::ClockTime::from_nseconds(value.get().unwrap()),
            "buffer-bytes" => s.buffer_bytes = value.get().unwrap(),
            "low-watermark-time" => {
                s.low_watermark = gst::ClockTime::from_nseconds(value.get().unwrap())
            }
            "retries" => s.retries = value.get().unwrap(),
            "connect-timeout" => s.connect_timeout = value.get().unwrap(),
            "stall-timeout" => s.stall_timeout = value.get().unwrap(),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "max-bitrate" => self.live.max_bitrate().to_value(),
            "max-quality" => s.max_quality.to_value(),
            "representation" => self.live.pinned().unwrap_or_default().to_value(),
            "codec-switching" => s.codec_switching.to_value(),
            "buffer-time" => s.buffer_time.nseconds().to_value(),
            "buffer-bytes" => s.buffer_bytes.to_value(),
            "low-watermark-time" => s.low_watermark.nseconds().to_value(),
            "retries" => s.retries.to_value(),
            "connect-timeout" => s.connect_timeout.to_value(),
            "stall-timeout" => s.stall_timeout.to_value(),
            "stats" => {
                drop(s);
                self.stats().to_value()
            }
            _ => unimplemented!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        // The source pad is added by expose_srcpad() once there is something to stream.
    }
}

impl GstObjectImpl for AmzDashDemux {}

impl ElementImpl for AmzDashDemux {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Amazon Music DASH audio demuxer",
                "Codec/Demuxer/Adaptive/Audio",
                "Plays on-demand DASH audio manifests (Amazon Music's or any) as one fragmented \
                 MP4 stream, choosing representations adaptively",
                "gst-amazonmusic contributors",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink_caps = gst::Caps::builder("application/dash+xml")
                .field(CAPS_SOURCE_FIELD, CAPS_SOURCE_VALUE)
                .build();
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
                    &src_caps(),
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
        match transition {
            gst::StateChange::PausedToPlaying => self.queue.set_clock_running(true),
            gst::StateChange::PlayingToPaused => self.queue.set_clock_running(false),
            _ => {}
        }
        if transition == gst::StateChange::PausedToReady {
            let _guard = self.seek_lock.lock().unwrap();
            self.stop_download();
            let _ = self.srcpad.stop_task();
        }
        let res = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            let mut st = self.state.lock().unwrap();
            *st = State::default();
            drop(st);
            self.hide_srcpad();
            self.queue.clear();
            self.queue.set_playing(false);
        }
        Ok(res)
    }
}
