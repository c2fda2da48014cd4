// SPDX-License-Identifier: MPL-2.0
//! What the amazonmusic tests share: a running emulator with its admin API, a token file
//! signed in through the real LWA device flow, and a source pipeline ending in an appsink.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gst::prelude::*;

pub use amzmusic_tests::Emulator;
use gstamazonmusic::http::{self, API_RETRY, RUNTIME};
use gstamazonmusic::token::{now_unix, LwaClient, PollOutcome, TokenFile, SCOPE};

pub const CLIENT_ID: &str = "amzn1.application-oa2-client.amzmusicemulator";
pub const API_KEY: &str = "amzn1.application.amzmusicemulator";

/// What these tests ask of the shared emulator harness beyond its admin API.
pub trait AmazonMusicEmulator {
    /// `(path, status)` of the music API's audio-object requests for `track`.
    fn audio_calls(&self, track: &str) -> Vec<(String, u16)>;
    /// `(path, status)` of the LWA token requests.
    fn token_calls(&self) -> Vec<(String, u16)>;
    /// Signs in through the device flow (code pair, approval, one poll) and writes the token
    /// file the element reads, as amzmusic-login would.
    fn sign_in(&self, dir: &Path) -> PathBuf;
}

impl AmazonMusicEmulator for Emulator {
    fn audio_calls(&self, track: &str) -> Vec<(String, u16)> {
        self.calls("GET", &format!("/v1/tracks/{track}/audio"))
    }

    fn token_calls(&self) -> Vec<(String, u16)> {
        self.calls("POST", "/auth/o2/token")
    }

    fn sign_in(&self, dir: &Path) -> PathBuf {
        let http = http::client("amazonmusic-tests", &http::TlsProxy::default()).unwrap();
        let lwa = LwaClient::new(http, &self.base_url, CLIENT_ID, API_RETRY);
        let pair = RUNTIME.block_on(lwa.create_code_pair(SCOPE)).unwrap();
        assert_eq!(
            self.post_json(
                "/_emulator/lwa/approve",
                serde_json::json!({ "user_code": pair.user_code })
            ),
            204
        );
        let answer = match RUNTIME.block_on(lwa.poll(&pair)).unwrap() {
            PollOutcome::Granted(a) => a,
            other => panic!("approved code pair gave {other:?}"),
        };
        let mut f = TokenFile {
            client_id: Some(CLIENT_ID.into()),
            lwa_endpoint: Some(self.base_url.clone()),
            scope: Some(SCOPE.into()),
            ..Default::default()
        };
        f.apply(&answer, now_unix());
        let path = dir.join("token.json");
        f.save_atomic(&path).unwrap();
        path
    }
}

/// GStreamer with this crate's plugin registered from the code under test (the `.so` in
/// target/debug is only refreshed by `cargo build`, not by `cargo test`), the other workspace
/// plugins from target/debug.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    amzmusic_tests::init_gst();
    ONCE.call_once(|| gstamazonmusic::plugin_register_static().expect("register amazonmusic"));
}

/// `amazonmusicsrc` configured by properties for `emu` (no environment, so that tests in one
/// process do not disturb each other).
pub fn source(emu: &Emulator, token_file: &Path, track: &str) -> gst::Element {
    init();
    gst::ElementFactory::make("amazonmusicsrc")
        .property("track-id", track)
        .property("api-endpoint", &emu.base_url)
        .property("lwa-endpoint", &emu.base_url)
        .property("graphql-endpoint", emu.url("/graphql"))
        .property("api-key", API_KEY)
        .property("client-id", CLIENT_ID)
        .property("token-file", token_file.to_str().unwrap())
        .build()
        .expect("amazonmusicsrc (is the plugin built? cargo build -p gst-plugin-amazonmusic)")
}

pub struct Running {
    pub pipeline: gst::Pipeline,
    pub sink: gst_app::AppSink,
}

impl Running {
    /// The tags the source sent before the manifest (sticky on the appsink's pad).
    pub fn tags(&self) -> gst::TagList {
        self.sink
            .static_pad("sink")
            .unwrap()
            .sticky_event::<gst::event::Tag>(0)
            .expect("tag event")
            .tag_owned()
    }

    pub fn new(src: gst::Element) -> Running {
        let pipeline = gst::Pipeline::new();
        let sink = gst_app::AppSink::builder().sync(false).build();
        pipeline
            .add_many([&src, sink.upcast_ref::<gst::Element>()])
            .unwrap();
        src.link(&sink).unwrap();
        // A source that fails in start() makes this fail; the error is on the bus.
        let _ = pipeline.set_state(gst::State::Playing);
        Running { pipeline, sink }
    }

    /// The MPD sample, or the error the pipeline posted (with its debug text).
    pub fn manifest(&self, timeout: Duration) -> Result<gst::Sample, (glib::Error, String)> {
        let deadline = Instant::now() + timeout;
        let bus = self.pipeline.bus().unwrap();
        while Instant::now() < deadline {
            if let Some(s) = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
                return Ok(s);
            }
            if let Some(m) = bus.pop_filtered(&[gst::MessageType::Error]) {
                if let gst::MessageView::Error(e) = m.view() {
                    return Err((
                        e.error(),
                        e.debug().map(|s| s.to_string()).unwrap_or_default(),
                    ));
                }
            }
        }
        panic!("no manifest and no error within {timeout:?}");
    }

    /// The error the pipeline posts (the source must fail).
    pub fn error(&self, timeout: Duration) -> (glib::Error, String) {
        match self.manifest(timeout) {
            Ok(_) => panic!("the source produced a manifest instead of an error"),
            Err(e) => e,
        }
    }

    /// The contract query, sent from the appsink's pad as the demuxer would.
    pub fn ask(&self, reason: &str, generation: u32) -> Option<gst::Structure> {
        ask(&self.sink, reason, generation)
    }

    /// The sticky audio-object event on the appsink's pad.
    pub fn audio_object_event(&self) -> Option<gst::Structure> {
        let pad = self.sink.static_pad("sink").unwrap();
        let mut found = None;
        pad.sticky_events_foreach(|ev| {
            if ev.type_() == gst::EventType::CustomDownstreamSticky
                && ev
                    .structure()
                    .is_some_and(|s| s.name() == "amazonmusic-audio-object")
            {
                found = ev.structure().map(|s| s.to_owned());
            }
            std::ops::ControlFlow::Continue(gst::EventForeachAction::Keep)
        });
        found
    }
}

use gst::glib;

pub fn ask(sink: &gst_app::AppSink, reason: &str, generation: u32) -> Option<gst::Structure> {
    let mut q = gst::query::Custom::new(
        gst::Structure::builder("amazonmusic-audio-object")
            .field("reason", reason)
            .field("generation", generation)
            .build(),
    );
    let pad = sink.static_pad("sink").unwrap();
    pad.peer_query(&mut q)
        .then(|| q.structure().map(|s| s.to_owned()))
        .flatten()
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

pub fn credentials(s: &gst::StructureRef) -> glib::Object {
    s.get::<glib::Object>("credentials").expect("credentials")
}

pub fn headers(creds: &glib::Object, name: &str) -> Vec<(String, String)> {
    let s = creds.property::<gst::Structure>(name);
    s.iter()
        .map(|(k, v)| (k.to_string(), v.get::<String>().unwrap()))
        .collect()
}

pub fn temp_dir() -> tempfile::TempDir {
    amzmusic_tests::temp_dir("amazonmusic-test-")
}
