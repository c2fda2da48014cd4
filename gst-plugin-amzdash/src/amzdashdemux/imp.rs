// SPDX-License-Identifier: MPL-2.0
//! Element glue: collects the MPD on the sink pad, starts the download engine, and pushes its
//! fragments from a src pad task with the events qtdemux and the decryptor need.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use url::Url;

use amzmusic_common::codec::Codec;
use amzmusic_common::contract::MPD_MEDIA_TYPE;

use super::audio_object::{audio_object_from_structure, AUDIO_OBJECT};
use super::history::{HistorySlot, CONTEXT_TYPE as HISTORY_CONTEXT};
use super::protection::{check_license_urls, protection_events};
use super::refresher::PadRefresher;
use super::report::{self, buffering_percent};
use super::seek::SeekRequest;
use super::settings::{self, Settings, DEFAULT_USER_AGENT};
use super::state::State;
use super::streams::{
    announced_stream, decodable, filtered, init_buffer, mpd_caps, pad_templates, src_caps,
    stream_id, to_clock,
};
use crate::engine::{
    self, AudioObject, Context, Engine, EngineError, Item, Next, Queue, Refresher,
};
use crate::fetch::{redact, Fetcher};
use crate::mpd::{Mpd, MAX_MANIFEST_BYTES};
use crate::timing;
use amzmusic_common::http::Transport;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "amzdashdemux",
        gst::DebugColorFlags::empty(),
        Some("Amazon Music DASH audio demuxer"),
    )
});

pub struct AmzDashDemux {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    /// `ca-file` and `proxy` as loaded when the element started (READY to PAUSED).
    transport: Mutex<Transport>,
    state: Mutex<State>,
    /// Shared with the download task (and kept across plays: the playhead's clock).
    queue: Arc<Queue>,
    /// The settings that change while playing (max-bitrate, representation): the one copy,
    /// which the engine reads too.
    live: Arc<engine::Live>,
    /// What the last stream left for the next: from a GstContext, or made here when nobody
    /// has one.
    history: HistorySlot,
    /// Serializes seeks against each other and against state changes.
    seek_lock: Mutex<()>,
    /// Serializes buffering reports (see `report_level`).
    buffering_lock: Mutex<()>,
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
            EventView::Tag(t) if t.tag().scope() == gst::TagScope::Stream => {
                let now = {
                    let mut st = self.state.lock().unwrap();
                    st.upstream_tags = Some(t.tag_owned());
                    // Before the stream's tags are due (or while they wait) they go with them.
                    st.started && !st.tags_due && st.fragment_seen
                };
                if now {
                    self.push_tags();
                }
                true
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
                q.set_result(&filtered(mpd_caps(), q.filter()));
                true
            }
            QueryViewMut::AcceptCaps(q) => {
                let ok = q
                    .caps()
                    .structure(0)
                    .is_some_and(|s| s.name() == MPD_MEDIA_TYPE);
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
        let loudness = crate::loudness::Loudness::of(&mpd);
        if let Some(l) = &loudness {
            gst::info!(
                CAT,
                imp = self,
                "programme loudness {} LUFS: ReplayGain track gain {:+.2} dB",
                l.programme,
                l.track_gain()
            );
        }
        self.state.lock().unwrap().loudness = loudness;
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
            max_quality: settings.max_quality.label().unwrap_or(""),
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
        let allow = settings.allow_list()?;
        check_license_urls(&presentation, &allow)?;
        let ua = ao.as_ref().and_then(|a| a.user_agent.as_deref());
        let transport = self.transport.lock().unwrap().clone();
        let fetcher = Fetcher::with_allow_list(
            settings.retry_policy(),
            ua.unwrap_or(DEFAULT_USER_AGENT),
            &transport,
            allow,
        )?;
        let refresher: Option<Arc<dyn Refresher>> = ao
            .as_ref()
            .map(|_| Arc::new(PadRefresher(self.sinkpad.downgrade())) as Arc<dyn Refresher>);
        let obj = self.obj().downgrade();
        let config = settings.engine_config(family, self.live.clone(), self.history.get());
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
        self.state.lock().unwrap().start_engine(engine.clone());
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
        let low = self.settings.lock().unwrap().low_watermark;
        let pct = buffering_percent(self.queue.queued().0, low, self.queue.is_complete());
        let settled = self.state.lock().unwrap().buffering == Some(100);
        if settled && pct < 100 && !underrun {
            return;
        }
        self.post_buffering(pct);
    }

    fn post_buffering(&self, pct: i32) {
        let changed = self.state.lock().unwrap().buffering_changed(pct);
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
    fn push_initial_events(&self, engine: &Engine, codec: Codec) {
        let end = engine.presentation().duration();
        let (segment, seqnum) = {
            let st = self.state.lock().unwrap();
            (st.output_segment(end), st.seqnum)
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
            let announced = self.in_urisourcebin().then(|| announced_stream(&stream_id));
            let (stream, collection) = announced.unzip();
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
        self.tags_due();
        self.push_protection_events(engine);
    }

    /// A new stream: its tags go out once qtdemux has a pad for them and has sent its own
    /// (see `State::tags_due`).
    fn tags_due(&self) {
        let mut st = self.state.lock().unwrap();
        st.tags_due = true;
        st.fragment_seen = false;
    }

    /// Before each fragment's first piece: the stream's tags, when they are due and the
    /// stream's first fragment is through qtdemux.
    fn push_tags_if_due(&self) {
        let due = {
            let mut st = self.state.lock().unwrap();
            let due = st.tags_due && st.fragment_seen;
            st.fragment_seen = true;
            if due {
                st.tags_due = false;
            }
            due
        };
        if due {
            self.push_tags();
        }
    }

    /// The stream tags downstream: upstream's with the manifest's loudness (ReplayGain).
    fn push_tags(&self) {
        let tags = {
            let st = self.state.lock().unwrap();
            crate::loudness::merged(st.upstream_tags.as_ref(), st.loudness.as_ref())
        };
        if let Some(tags) = tags {
            self.srcpad.push_event(gst::event::Tag::new(tags));
        }
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
        let (piece, timing) = {
            let mut st = self.state.lock().unwrap();
            (st.take_piece(data, start, duration, time, first), st.timing)
        };
        let Some(piece) = piece else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let mut buf = gst::Buffer::from_slice(piece.data);
        {
            let b = buf.get_mut().unwrap();
            if let Some((start, duration)) = piece.stamp {
                // In media time when an edit list puts a priming before presentation zero.
                let start = timing.map_or(start, |t| t.stamp(start));
                b.set_pts(to_clock(start));
                b.set_duration(to_clock(duration));
            }
            if piece.discont {
                b.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        self.queue.set_playing(true);
        let res = self.srcpad.push(buf);
        if res.is_ok() {
            self.queue.pushed_downstream(piece.span.0, piece.span.1);
        }
        res
    }

    /// A codec change: push-mode qtdemux cannot change codec inside one stream on 1.22, so the
    /// new representation starts a new stream (stream-start with a new id and group, caps, the
    /// same TIME segment, protection events) and parsebin/decodebin3 plug a new chain for it.
    fn start_new_stream(&self, engine: &Engine, codec: Codec) {
        let end = engine.presentation().duration();
        let n = {
            let mut st = self.state.lock().unwrap();
            st.discont = true;
            st.output_segment(end)
        };
        let stream_id = stream_id(codec);
        gst::info!(
            CAT,
            imp = self,
            "codec change to {:?}: new stream {}",
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
        self.tags_due();
        self.push_protection_events(engine);
    }

    /// One protection event per ContentProtection with a PSSH, before the first fragment, so
    /// the decryptor asks for the license while the clear lead plays.
    fn push_protection_events(&self, engine: &Engine) {
        for e in protection_events(&engine.presentation()) {
            gst::debug!(
                CAT,
                imp = self,
                "protection event for {} (set {})",
                e.system,
                e.set
            );
            self.srcpad.push_event(e.event);
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
        // The timing of the representation whose init segment this is: what the segment
        // events downstream say (its priming and end).
        let timing = match &item {
            Item::Init { data, .. } => Some(timing::from_init(data)),
            _ => None,
        };
        let retimed = timing.is_some_and(|t| {
            let mut st = self.state.lock().unwrap();
            std::mem::replace(&mut st.timing, t) != t
        });
        if need {
            let codec = match &item {
                Item::Init { codec, .. } => *codec,
                _ => engine.family(),
            };
            self.push_initial_events(&engine, codec);
        }
        let res = match item {
            Item::Init {
                data,
                candidate,
                codec,
                ..
            } => {
                let previous = self.state.lock().unwrap().codec.replace(codec);
                if previous.is_some_and(|p| p != codec) {
                    self.start_new_stream(&engine, codec);
                } else if retimed && !need {
                    // Same codec, another edit list: the same stream, retimed.
                    let end = engine.presentation().duration();
                    let seg = self.state.lock().unwrap().output_segment(end);
                    gst::debug!(CAT, imp = self, "edit list changed: segment {:?}", seg);
                    self.srcpad.push_event(gst::event::Segment::new(&seg));
                }
                let gain = {
                    let mut st = self.state.lock().unwrap();
                    st.init_pushed(&data);
                    st.loudness.map(|l| l.track_gain())
                };
                // The ReplayGain track gain where qtdemux reads it before the first sample.
                let data = match gain.and_then(|g| crate::loudness::init_with_gain(&data, g)) {
                    Some(tagged) => bytes::Bytes::from(tagged),
                    None => data,
                };
                let buf = init_buffer(data);
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
                    self.push_tags_if_due();
                }
                self.push_piece(data, start, duration, time, first)
            }
            Item::Eos => {
                gst::debug!(CAT, imp = self, "end of presentation");
                // A one-fragment stream: its tags still go out.
                if std::mem::take(&mut self.state.lock().unwrap().tags_due) {
                    self.push_tags();
                }
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
        let s = {
            let p = engine.presentation();
            match p.candidates.get(candidate) {
                Some(c) => report::segment_structure(start, duration, c),
                None => return,
            }
        };
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
    }

    fn post_engine_error(&self, e: EngineError) {
        self.post_error_message(report::engine_error(e));
    }

    fn duration(&self) -> Option<gst::ClockTime> {
        let st = self.state.lock().unwrap();
        let d = st.engine.as_ref()?.presentation().duration()?;
        Some(to_clock(d))
    }

    fn do_seek(&self, event: &gst::event::Seek) -> bool {
        let request = match SeekRequest::parse(event) {
            Ok(r) => r,
            Err(why) => {
                gst::debug!(CAT, imp = self, "{}", why);
                return false;
            }
        };
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
        let segment = request.segment(duration);
        let position = request.position(duration);
        self.state.lock().unwrap().seek(segment, seqnum);
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
                q.set_result(&filtered(src_caps(), q.filter()));
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn stats(&self) -> gst::Structure {
        let (level_time, level_bytes) = self.queue.queued();
        let engine = self.state.lock().unwrap().engine.clone();
        let (s, cand) = engine.map(|e| e.stats()).unwrap_or_default();
        report::stats_structure((level_time, level_bytes), &s, cand.as_ref())
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
            transport: Mutex::default(),
            state: Mutex::new(State::default()),
            queue: Arc::new(Queue::default()),
            live: Arc::new(engine::Live::default()),
            history: HistorySlot::default(),
            seek_lock: Mutex::new(()),
            buffering_lock: Mutex::new(()),
        }
    }
}

impl ObjectImpl for AmzDashDemux {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(settings::properties);
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        match pspec.name() {
            // Live: the next segment's choice honours them.
            "max-bitrate" => self.live.set_max_bitrate(value.get().unwrap()),
            "representation" => {
                let id = value.get::<Option<String>>().unwrap();
                // While playing, a pin the manifest does not have is said, not ignored (the
                // choice stays adaptive); before, starting with it is an error.
                let engine = self.state.lock().unwrap().engine.clone();
                let id_s = id.as_deref().unwrap_or("");
                if let Some(why) = engine
                    .and_then(|e| (!id_s.is_empty()).then(|| e.presentation().pin_error(id_s))?)
                {
                    gst::element_imp_warning!(self, gst::ResourceError::Settings, ("{}", why));
                }
                self.live.pin(id)
            }
            name => {
                if !self.settings.lock().unwrap().set(name, value) {
                    unimplemented!()
                }
            }
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "max-bitrate" => self.live.max_bitrate().to_value(),
            "representation" => self.live.pinned().unwrap_or_default().to_value(),
            "stats" => self.stats().to_value(),
            name => {
                let value = self.settings.lock().unwrap().get(name);
                value.unwrap_or_else(|| unimplemented!())
            }
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
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(pad_templates);
        TEMPLATES.as_ref()
    }

    fn set_context(&self, context: &gst::Context) {
        if self.history.set_from(context) {
            gst::debug!(
                CAT,
                imp = self,
                "estimates from a {HISTORY_CONTEXT} context"
            );
        }
        self.parent_set_context(context)
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady {
            self.history.obtain(self.obj().upcast_ref());
        }
        if transition == gst::StateChange::ReadyToPaused {
            // A CA file or proxy that cannot be used is an error now, not at the first segment.
            let tls = self.settings.lock().unwrap().tls.clone();
            match tls.load() {
                Ok(t) => *self.transport.lock().unwrap() = t,
                Err(e) => {
                    gst::element_imp_error!(self, gst::ResourceError::Settings, ("{}", e));
                    return Err(gst::StateChangeError);
                }
            }
        }
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
