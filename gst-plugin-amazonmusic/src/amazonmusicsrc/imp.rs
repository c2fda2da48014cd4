// SPDX-License-Identifier: MPL-2.0
//! The element glue: properties and URI, opening the session in `create`, pushing the sticky
//! audio-object event, tags and the MPD, starting the background refresher and answering the
//! refresh query. What is fetched and when lives in plain modules: `resolver` (the first
//! audio object and manifest), `audio_object` (the answering rules, the refresher) and
//! `errors` (the error table).

use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use amzmusic_common::contract;
use futures::future::{AbortHandle, Abortable};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;

use super::Quality;
use crate::api::{self, ApiError};
use crate::audio_object::{self, AnswerError};
use crate::config::{self, Overrides};
use crate::errors;
use crate::firefly::TrackMetadata;
use crate::http::{wait_on_runtime, Secret, RUNTIME};
use crate::resolver::{self, Cover, CoverBytes};
use crate::session::{Current, Session};
use crate::tags;
use crate::token::{now_unix, now_unix_ms, TokenError};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "amazonmusicsrc",
        gst::DebugColorFlags::empty(),
        Some("Amazon Music source"),
    )
});

const URI_SCHEME: &str = "amazonmusic";

/// `application/dash+xml, source=amazonmusicsrc`: the caps that tell decodebin3 this MPD is
/// for amzdashdemux (contract section 0).
fn src_caps() -> gst::Caps {
    contract::source_mpd_caps()
}

#[derive(Debug, Clone, Default)]
struct Settings {
    track_id: Option<String>,
    quality: Quality,
    o: Overrides,
}

enum State {
    Stopped,
    Started {
        session: Arc<Session>,
        /// The MPD went out: the next `create` is EOS.
        sent: bool,
        refresher: Option<tokio::task::AbortHandle>,
    },
}

#[derive(Default)]
enum Canceller {
    #[default]
    None,
    Waiting(AbortHandle),
    /// `unlock` came: fail the next wait at once.
    Cancelled,
}

pub struct AmazonMusicSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    canceller: Mutex<Canceller>,
}

impl Default for AmazonMusicSrc {
    fn default() -> Self {
        AmazonMusicSrc {
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::Stopped),
            canceller: Mutex::new(Canceller::None),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for AmazonMusicSrc {
    const NAME: &'static str = "GstAmazonMusicSrc";
    type Type = super::AmazonMusicSrc;
    type ParentType = gst_base::PushSrc;
    type Interfaces = (gst::URIHandler,);
}

/// Parses `amazonmusic://track/<id>`.
pub fn track_id_from_uri(uri: &str) -> Result<String, String> {
    let rest = uri
        .strip_prefix("amazonmusic://")
        .ok_or_else(|| format!("{uri:?} is not an amazonmusic:// URI"))?;
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    match rest.split_once('/') {
        Some(("track", id)) if api::valid_id(id) => Ok(id.to_string()),
        Some(("album" | "playlist", _)) => Err(format!(
            "{uri:?}: amazonmusicsrc plays one track; resolve albums and playlists in the \
             player and give it amazonmusic://track/<id> URIs"
        )),
        _ => Err(format!(
            "{uri:?} is not of the form amazonmusic://track/<id>"
        )),
    }
}

fn opt_string(v: &glib::Value) -> Option<String> {
    v.get::<Option<String>>()
        .expect("type checked upstream")
        .filter(|s| !s.is_empty())
}

impl ObjectImpl for AmazonMusicSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let s = |name: &str, nick: &str, blurb: &str| {
                glib::ParamSpecString::builder(name)
                    .nick(nick)
                    .blurb(blurb)
                    .mutable_ready()
                    .build()
            };
            // Secrets can be written but never read back (gst-inspect, gst-launch -v).
            let secret = |name: &str, nick: &str, blurb: &str| {
                glib::ParamSpecString::builder(name)
                    .nick(nick)
                    .blurb(blurb)
                    .write_only()
                    .mutable_ready()
                    .build()
            };
            vec![
                s(
                    "track-id",
                    "Track ID",
                    "Amazon Music track id (ASIN) to play; also set by uri=amazonmusic://track/<id>",
                ),
                glib::ParamSpecEnum::builder_with_default("quality", Quality::Auto)
                    .nick("Quality")
                    .blurb("Best quality to ask for; auto asks for the best the installed decoders play (flacdec: HD/UHD, avdec_eac3: ATMOS, opusdec: SD)")
                    .mutable_ready()
                    .build(),
                s(
                    "api-endpoint",
                    "Music API endpoint",
                    "Base URL of the music API (default: $AMAZONMUSIC_API_ENDPOINT, then the token file)",
                ),
                s(
                    "lwa-endpoint",
                    "LWA endpoint",
                    "Base URL of Login with Amazon, for token refresh (default: $AMAZONMUSIC_LWA_ENDPOINT, then the token file)",
                ),
                s(
                    "graphql-endpoint",
                    "GraphQL endpoint",
                    "FireFly GraphQL URL for metadata (default: $AMAZONMUSIC_GRAPHQL_ENDPOINT, then the token file; none: no tags)",
                ),
                secret(
                    "api-key",
                    "API key",
                    "x-api-key of the application (default: $AMAZONMUSIC_API_KEY, then the token file; write-only)",
                ),
                s(
                    "client-id",
                    "Client ID",
                    "LWA client id used to refresh tokens (default: $AMAZONMUSIC_CLIENT_ID, then the token file)",
                ),
                secret(
                    "access-token",
                    "Access token",
                    "LWA access token Atza|… (default: $AMAZONMUSIC_ACCESS_TOKEN, then the token file; write-only; prefer the token file, command lines are visible to other users)",
                ),
                secret(
                    "refresh-token",
                    "Refresh token",
                    "LWA refresh token Atzr|… (default: the token file; write-only)",
                ),
                s(
                    "token-file",
                    "Token file",
                    "Token file written by amzmusic-login; refreshed tokens are written back to it (default: $AMAZONMUSIC_TOKEN_FILE, then ~/.config/amazonmusic/token.json)",
                ),
                s(
                    "device-id",
                    "Device ID",
                    "Device id sent to FireFly (default: the token file, else random per run)",
                ),
                s(
                    "device-type",
                    "Device type",
                    "Device type sent to FireFly (default: the token file, else A1GSTAMZMUSIC)",
                ),
                s(
                    "market",
                    "Market",
                    "ISO country code of the catalogue to play from (default: $AMAZONMUSIC_MARKET, then the token file, then US)",
                ),
                s(
                    "user-agent",
                    "User-Agent",
                    "User-Agent of every request, also handed downstream (default: gst-amazonmusic/<version> GStreamer/<version>)",
                ),
                s(
                    "ca-file",
                    "CA file",
                    "PEM file of CA certificates to trust besides the system roots (default: $AMAZONMUSIC_CA_FILE); certificates are always verified",
                ),
                s(
                    "proxy",
                    "Proxy",
                    "HTTP proxy URL for every request, http://[user:password@]host:port (default: the http_proxy, https_proxy and no_proxy environment)",
                ),
                s(
                    "feature-flags",
                    "Feature flags",
                    "FireFly x-amzn-feature-flags, comma-separated (e.g. trace,complexity)",
                ),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let o = &mut s.o;
        match pspec.name() {
            "track-id" => {
                let id = opt_string(value);
                gst::debug!(CAT, imp = self, "track-id {:?}", id);
                s.track_id = id;
            }
            "quality" => s.quality = value.get().expect("type checked upstream"),
            "api-endpoint" => o.api_endpoint = opt_string(value),
            "lwa-endpoint" => o.lwa_endpoint = opt_string(value),
            "graphql-endpoint" => o.graphql_endpoint = opt_string(value),
            "api-key" => o.api_key = opt_string(value).map(Secret::new),
            "client-id" => o.client_id = opt_string(value),
            "access-token" => o.access_token = opt_string(value).map(Secret::new),
            "refresh-token" => o.refresh_token = opt_string(value).map(Secret::new),
            "token-file" => o.token_file = opt_string(value).map(PathBuf::from),
            "device-id" => o.device_id = opt_string(value),
            "device-type" => o.device_type = opt_string(value),
            "market" => o.market = opt_string(value),
            "user-agent" => o.user_agent = opt_string(value),
            "ca-file" => o.ca_file = opt_string(value).map(PathBuf::from),
            "proxy" => o.proxy = opt_string(value),
            "feature-flags" => o.feature_flags = opt_string(value),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        let o = &s.o;
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        match pspec.name() {
            "track-id" => s.track_id.to_value(),
            "quality" => s.quality.to_value(),
            "api-endpoint" => o.api_endpoint.to_value(),
            "lwa-endpoint" => o.lwa_endpoint.to_value(),
            "graphql-endpoint" => o.graphql_endpoint.to_value(),
            "client-id" => o.client_id.to_value(),
            "token-file" => path(&o.token_file).to_value(),
            "device-id" => o.device_id.to_value(),
            "device-type" => o.device_type.to_value(),
            "market" => o.market.to_value(),
            "user-agent" => o.user_agent.to_value(),
            "ca-file" => path(&o.ca_file).to_value(),
            "proxy" => o.proxy.to_value(),
            "feature-flags" => o.feature_flags.to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for AmazonMusicSrc {}

impl ElementImpl for AmazonMusicSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Amazon Music source",
                "Source/Network",
                "Resolves an Amazon Music track to its DASH manifest, the credentials downstream \
                 needs (docs/element-contract.md) and its tags",
                "gst-amazonmusic contributors",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &src_caps(),
            )
            .unwrap()]
        });
        T.as_ref()
    }
}

impl URIHandlerImpl for AmazonMusicSrc {
    const URI_TYPE: gst::URIType = gst::URIType::Src;

    fn protocols() -> &'static [&'static str] {
        &[URI_SCHEME]
    }

    fn uri(&self) -> Option<String> {
        let s = self.settings.lock().unwrap();
        s.track_id
            .as_ref()
            .map(|id| format!("{URI_SCHEME}://track/{id}"))
    }

    fn set_uri(&self, uri: &str) -> Result<(), glib::Error> {
        if !matches!(*self.state.lock().unwrap(), State::Stopped) {
            return Err(glib::Error::new(
                gst::URIError::BadState,
                "cannot change the URI while the source is running",
            ));
        }
        let id = track_id_from_uri(uri).map_err(|m| glib::Error::new(gst::URIError::BadUri, &m))?;
        self.settings.lock().unwrap().track_id = Some(id);
        Ok(())
    }
}

fn installed(element: &str) -> bool {
    gst::ElementFactory::find(element).is_some()
}

impl AmazonMusicSrc {
    /// Runs `fut` on the plugin runtime; `unlock` aborts it. None when aborted.
    fn wait_cancellable<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (handle, registration) = AbortHandle::new_pair();
        {
            let mut c = self.canceller.lock().unwrap();
            if matches!(*c, Canceller::Cancelled) {
                return None;
            }
            *c = Canceller::Waiting(handle);
        }
        let r = wait_on_runtime(Abortable::new(fut, registration));
        let mut c = self.canceller.lock().unwrap();
        if matches!(*c, Canceller::Waiting(_)) {
            *c = Canceller::None;
        }
        r.and_then(|r| r.ok())
    }

    fn session(&self) -> Option<Arc<Session>> {
        match &*self.state.lock().unwrap() {
            State::Started { session, .. } => Some(session.clone()),
            State::Stopped => None,
        }
    }

    fn push_audio_object_event(
        &self,
        session: &Session,
        current: &Current,
        token: Option<&(Secret, u64)>,
    ) -> bool {
        let s = audio_object::structure(session, current, token);
        self.push_audio_object(s, current.generation, current.audio.expires)
    }

    /// Pushes the audio-object structure `s` (of `generation`, expiring at unix second
    /// `expires`) as the sticky event. Blocks while the streaming thread downstream is busy.
    fn push_audio_object(&self, s: gst::Structure, generation: u32, expires: u64) -> bool {
        let pushed = self
            .obj()
            .src_pad()
            .push_event(gst::event::CustomDownstreamSticky::new(s));
        gst::debug!(
            CAT,
            imp = self,
            "audio object generation {} (expires in {} s) {}",
            generation,
            expires.saturating_sub(now_unix()),
            if pushed {
                "pushed downstream"
            } else {
                "not pushed (downstream is done with the manifest; it gets it by query)"
            }
        );
        pushed
    }

    fn first_buffer(&self, session: Arc<Session>) -> Result<gst::Buffer, gst::FlowError> {
        let track = session.track_id.clone();
        gst::info!(
            CAT,
            imp = self,
            "resolving track {} (capability {}, market {})",
            track,
            session.capability,
            session.cfg.market
        );
        let opened = match self.wait_cancellable(resolver::open(session.clone())) {
            None => return Err(gst::FlowError::Flushing),
            Some(Ok(o)) => o,
            Some(Err(resolver::OpenError::Api(e))) => {
                gst::info!(CAT, imp = self, "no audio object: {}", e);
                self.post_error_message(errors::api_error_message(&e, &track));
                return Err(gst::FlowError::Error);
            }
            Some(Err(resolver::OpenError::Manifest(e))) => {
                gst::info!(CAT, imp = self, "no manifest: {}", e);
                self.post_error_message(errors::manifest_error_message(&e, &track));
                return Err(gst::FlowError::Error);
            }
        };
        match api::manifest_codecs(&opened.manifest) {
            Ok(codecs) => {
                gst::debug!(CAT, imp = self, "manifest codecs {:?}", codecs);
                if let Err(m) = config::check_playable(&codecs, installed) {
                    gst::element_imp_error!(self, gst::StreamError::CodecNotFound, ("{}", m));
                    return Err(gst::FlowError::Error);
                }
            }
            Err(m) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    ("The manifest of track {} is not a DASH MPD", track),
                    ["{}", m]
                );
                return Err(gst::FlowError::Error);
            }
        }

        // BaseSrc sends its segment only with the buffer; ours (the same) goes first so that
        // downstream sees stream-start, caps, segment, then the audio object and the tags.
        self.obj()
            .src_pad()
            .push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::format::Bytes,
            >::new()));
        self.push_audio_object_event(&session, &opened.current, opened.token.as_ref());
        match &opened.metadata {
            Ok(meta) => {
                let cover = match opened.cover {
                    Cover::Here(c) => c,
                    Cover::Late(c) => {
                        self.post_late_cover(meta.clone(), c);
                        None
                    }
                };
                let cover = cover.map(|(bytes, kind)| tags::image_sample(bytes, &kind));
                let tags = tags::tag_list(meta, cover);
                gst::debug!(CAT, imp = self, "tags {:?}", tags);
                // As an event for downstream, and as a message so that the application (and
                // gst-launch-1.0 -t) sees them even when the demuxer does not forward them.
                self.obj()
                    .src_pad()
                    .push_event(gst::event::Tag::new(tags.clone()));
                let _ = self
                    .obj()
                    .post_message(gst::message::Tag::builder(tags).src(&*self.obj()).build());
            }
            Err(e) => {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Read,
                    ("No metadata for track {}: playing without tags", track),
                    ["{}", e]
                );
            }
        }
        self.start_refresher(session);
        gst::info!(
            CAT,
            imp = self,
            "manifest of {} bytes, audio object generation {}",
            opened.manifest.len(),
            opened.current.generation
        );
        Ok(gst::Buffer::from_mut_slice(opened.manifest))
    }

    /// The tags again, with the cover, in a message once a late cover arrives (the manifest,
    /// and with it the tag event, went on without it).
    fn post_late_cover(&self, meta: TrackMetadata, cover: tokio::task::JoinHandle<CoverBytes>) {
        let weak = self.obj().downgrade();
        RUNTIME.spawn(async move {
            let Ok(Some((bytes, kind))) = cover.await else {
                return;
            };
            let Some(obj) = weak.upgrade() else {
                return;
            };
            let tags = tags::tag_list(&meta, Some(tags::image_sample(bytes, &kind)));
            gst::debug!(CAT, obj = obj, "late cover: {:?}", tags);
            let _ = obj.post_message(gst::message::Tag::builder(tags).src(&obj).build());
        });
    }

    fn start_refresher(&self, session: Arc<Session>) {
        let weak = self.obj().downgrade();
        let task = RUNTIME.spawn(audio_object::keep_fresh(session, Glue(weak)));
        if let State::Started { refresher, .. } = &mut *self.state.lock().unwrap() {
            if let Some(old) = refresher.replace(task.abort_handle()) {
                old.abort();
            }
        } else {
            task.abort();
        }
    }

    /// Answers the contract's custom query (section 2) by the rules in `audio_object`.
    fn answer_audio_object_query(&self, query: &mut gst::QueryRef) -> bool {
        let Some(session) = self.session() else {
            return false;
        };
        let req = audio_object::Request::from_query(
            query.structure().expect("custom query has a structure"),
        );
        let (sess, r) = (session.clone(), req.clone());
        let answer =
            wait_on_runtime(async move { audio_object::answer(&sess, &r, now_unix_ms).await });
        match answer {
            Some(Ok(answer)) => {
                gst::debug!(
                    CAT,
                    imp = self,
                    "query ({}, holds generation {}): answering generation {}",
                    req.reason,
                    req.held,
                    answer.current.generation
                );
                let filled =
                    audio_object::structure(&session, &answer.current, answer.token.as_ref());
                let s = query.structure_mut();
                for (name, value) in filled.iter() {
                    s.set_value(name, value.clone());
                }
                if answer.push_downstream(&req) {
                    // Keep the sticky event current too, for elements linked later.
                    self.push_audio_object_event(&session, &answer.current, answer.token.as_ref());
                }
                true
            }
            Some(Err(AnswerError::Refresh(e))) => {
                gst::info!(
                    CAT,
                    imp = self,
                    "refresh for query ({}) failed: {}",
                    req.reason,
                    e
                );
                if req.is_forbidden() {
                    // The asker cannot continue with what it holds.
                    self.post_error_message(errors::api_error_message(&e, &session.track_id));
                } else {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Read,
                        ("Could not refresh the audio object of {}", session.track_id),
                        ["{}", e]
                    );
                }
                false
            }
            Some(Err(AnswerError::Token(e))) => {
                // A downstream request got 401 and no fresher token can be had: the track
                // cannot go on, and the reason is here, not in the 401 downstream sees.
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::NotAuthorized,
                    (
                        "A request for {} was refused (401) and the access token cannot be \
                         refreshed",
                        session.track_id
                    ),
                    ["{}", e]
                );
                false
            }
            Some(Err(AnswerError::NotStarted)) | None => false,
        }
    }
}

/// The refresher's view of the element: a weak reference, so that it ends with the element.
struct Glue(glib::WeakRef<super::AmazonMusicSrc>);

impl audio_object::RefreshListener for Glue {
    fn alive(&self) -> bool {
        self.0.upgrade().is_some()
    }

    fn token_refreshed(&self) {
        if let Some(e) = self.0.upgrade() {
            gst::info!(CAT, obj = e, "access token refreshed ahead of expiry");
        }
    }

    fn token_refresh_failed(&self, err: &TokenError) {
        let Some(e) = self.0.upgrade() else { return };
        gst::element_warning!(
            e,
            gst::ResourceError::NotAuthorized,
            ("Could not refresh the access token ahead of expiry"),
            ["{}", err]
        );
    }

    fn refreshed(&self, session: &Session, next: &Current, token: Option<&(Secret, u64)>) {
        let Some(e) = self.0.upgrade() else { return };
        gst::info!(
            CAT,
            obj = e,
            "audio object refreshed ahead of expiry: generation {}",
            next.generation
        );
        // Pushing a serialized event waits for the streaming thread downstream (its stream
        // lock), so it leaves the runtime's workers for the blocking pool.
        let s = audio_object::structure(session, next, token);
        let (generation, expires) = (next.generation, next.audio.expires);
        RUNTIME.spawn_blocking(move || e.imp().push_audio_object(s, generation, expires));
    }

    fn refresh_failed(&self, err: &ApiError) {
        let Some(e) = self.0.upgrade() else { return };
        gst::element_warning!(
            e,
            gst::ResourceError::Read,
            ("Could not refresh the audio object ahead of expiry"),
            ["{}", err]
        );
    }
}

impl BaseSrcImpl for AmazonMusicSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let track = settings.track_id.clone().ok_or_else(|| {
            gst::error_msg!(
                gst::ResourceError::Settings,
                ("No track to play: set track-id or uri=amazonmusic://track/<id>")
            )
        })?;
        if !api::valid_id(&track) {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ("{:?} is not an Amazon Music track id", track)
            ));
        }
        let resolved = config::resolve(&settings.o, |k| std::env::var(k).ok())
            .map_err(|e| errors::config_error_message(&e))?;
        let capability = config::capability(settings.quality.into(), installed)
            .map_err(|m| gst::error_msg!(gst::StreamError::CodecNotFound, ("{}", m)))?;
        gst::debug!(
            CAT,
            imp = self,
            "api {} lwa {:?} graphql {:?} market {} token file write-back {}",
            resolved.api_endpoint,
            resolved.lwa_endpoint,
            resolved.graphql_endpoint,
            resolved.market,
            resolved.tokens.write_back.is_some()
        );
        let session = Session::new(resolved, &track, &capability)
            .map_err(|m| gst::error_msg!(gst::ResourceError::Settings, ("{}", m)))?;
        *self.state.lock().unwrap() = State::Started {
            session,
            sent: false,
            refresher: None,
        };
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let old = std::mem::replace(&mut *self.state.lock().unwrap(), State::Stopped);
        if let State::Started {
            refresher: Some(r), ..
        } = old
        {
            r.abort();
        }
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let caps = src_caps();
        Some(match filter {
            Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryView::Custom(_) = query.view() {
            if query.structure().is_some_and(contract::is_audio_object) {
                return self.answer_audio_object_query(query);
            }
        }
        BaseSrcImplExt::parent_query(self, query)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        let mut c = self.canceller.lock().unwrap();
        if let Canceller::Waiting(h) = &*c {
            h.abort();
        }
        *c = Canceller::Cancelled;
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.canceller.lock().unwrap() = Canceller::None;
        Ok(())
    }
}

impl PushSrcImpl for AmazonMusicSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let session = {
            let mut st = self.state.lock().unwrap();
            match &mut *st {
                State::Stopped => return Err(gst::FlowError::Flushing),
                State::Started { sent: true, .. } => return Err(gst::FlowError::Eos),
                State::Started { session, sent, .. } => {
                    *sent = true;
                    session.clone()
                }
            }
        };
        match self.first_buffer(session) {
            Ok(b) => Ok(CreateSuccess::NewBuffer(b)),
            Err(e) => {
                if e == gst::FlowError::Flushing {
                    // Unlocked mid-open: try again when restarted.
                    if let State::Started { sent, .. } = &mut *self.state.lock().unwrap() {
                        *sent = false;
                    }
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(
            track_id_from_uri("amazonmusic://track/B0EMUHD001").unwrap(),
            "B0EMUHD001"
        );
        assert!(track_id_from_uri("amazonmusic://album/B0EMUALB01")
            .unwrap_err()
            .contains("player"));
        assert!(track_id_from_uri("amazonmusic://track/../x").is_err());
        assert!(track_id_from_uri("http://x/track/1").is_err());
    }
}
