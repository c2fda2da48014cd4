//! Shared by the integration tests: an in-process emulator on loopback, the plugin registered
//! statically, manifest inspection and exact source samples.
#![allow(dead_code)]

pub mod amazon;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use amzmusic_emulator::content::catalog::{Addressing, Catalog};
use amzmusic_emulator::content::store::Store;
use amzmusic_emulator::server::{self, AppState, Config, Running};
use gstamzdash::mpd::Mpd;

pub struct Emulator {
    pub running: Running,
    pub rt: tokio::runtime::Runtime,
}

impl Emulator {
    pub fn start(addressing: Addressing) -> Emulator {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let catalog = Arc::new(Catalog::builtin(None));
        let store = Arc::new(Store::new(&amzmusic_tests::data_dir(), catalog.clone()).unwrap());
        let state = Arc::new(AppState::new(catalog, store, config(addressing, 3600)));
        let running = rt
            .block_on(server::start("127.0.0.1:0", state))
            .expect("emulator starts");
        Emulator { running, rt }
    }

    pub fn base(&self) -> &str {
        &self.running.base_url
    }

    pub fn get(&self, url: &str) -> Vec<u8> {
        let url = url.to_string();
        self.rt.block_on(async move {
            let r = reqwest::get(&url).await.unwrap();
            assert!(r.status().is_success(), "{url}: {}", r.status());
            r.bytes().await.unwrap().to_vec()
        })
    }
}

/// The emulator's config from the fields these tests care about; built through serde so the
/// fields the emulator adds later take their defaults.
pub fn config(addressing: Addressing, audio_object_lifetime_s: u64) -> Config {
    serde_json::from_value(serde_json::json!({
        "audio_object_lifetime_s": audio_object_lifetime_s,
        "token_lifetime_s": 3600,
        "addressing": addressing,
        "open_mirror": true,
    }))
    .expect("emulator config")
}

pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        // init_gst puts target/<profile> on the plugin path (widevinedecrypt comes from
        // `cargo build -p gst-plugin-widevine-stub`). `cargo test` does not refresh
        // target/<profile>/libgstamzdash.so, so the code under test is registered statically:
        // its features replace those of a stale file plugin of the same name.
        amzmusic_tests::init_gst();
        gstamzdash::plugin_register_static().expect("register amzdash");
    });
}

/// The `bandwidth` of representation `id` in a manifest.
pub fn bandwidth(mpd: &[u8], id: &str) -> u64 {
    let m = Mpd::parse(mpd).unwrap();
    m.periods
        .iter()
        .flat_map(|p| &p.adaptation_sets)
        .flat_map(|a| &a.representations)
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no representation {id}"))
        .bandwidth
}

/// The exact source samples of a lossless representation (raw little-endian).
pub fn source_pcm(track: &str, rep: &str) -> Vec<u8> {
    let mut out = Vec::new();
    amzmusic_emulator::export::write_pcm(&Catalog::builtin(None), track, rep, &mut out).unwrap();
    out
}

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// `desc` (with an `appsink name=sink`) as a pipeline, and its sink.
pub fn launch(desc: &str) -> (gst::Pipeline, gst_app::AppSink) {
    use gst::prelude::*;
    init();
    let pipeline = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    (pipeline, sink)
}

/// One run of output buffers with the same sample rate: its first timestamp and its end (ns),
/// and its bytes.
pub struct RateRun {
    pub rate: i32,
    pub start: u64,
    pub end: u64,
    pub pcm: Vec<u8>,
}

/// Adds an output sample to `runs`, in a new run where the rate changes. Returns the gap or
/// overlap before it, as (end of the last buffer, start of this one), when over 1 ms.
pub fn add_to_runs(runs: &mut Vec<RateRun>, s: &gst::Sample) -> Option<(u64, u64)> {
    let b = s.buffer().unwrap();
    let rate = s
        .caps()
        .unwrap()
        .structure(0)
        .unwrap()
        .get::<i32>("rate")
        .unwrap();
    let (pts, dur) = (
        b.pts().unwrap().nseconds(),
        b.duration().unwrap().nseconds(),
    );
    let gap = runs
        .last()
        .filter(|last| pts.abs_diff(last.end) > 1_000_000)
        .map(|last| (last.end, pts));
    let map = b.map_readable().unwrap();
    match runs.last_mut() {
        Some(r) if r.rate == rate => {
            r.end = pts + dur;
            r.pcm.extend_from_slice(&map);
        }
        _ => runs.push(RateRun {
            rate,
            start: pts,
            end: pts + dur,
            pcm: map.to_vec(),
        }),
    }
    gap
}

pub struct Played {
    pub pcm: Vec<u8>,
    pub error: Option<String>,
    pub eos: bool,
    pub stats: Option<gst::Structure>,
    pub buffering: Vec<i32>,
}

/// Runs `desc` (with `amzdashdemux name=demux` and `appsink name=sink`) to EOS or error,
/// optionally seeking first (flushing, accurate) once prerolled.
pub fn play_desc(desc: &str, seek: Option<gst::ClockTime>) -> Played {
    use gst::prelude::*;
    let (pipeline, sink) = launch(desc);
    sink.set_property("sync", false);
    let demux = pipeline.by_name("demux");
    let bus = pipeline.bus().unwrap();
    let mut out = Played {
        pcm: Vec::new(),
        error: None,
        eos: false,
        stats: None,
        buffering: Vec::new(),
    };
    let deadline = std::time::Instant::now() + TIMEOUT;
    if let Some(pos) = seek {
        pipeline.set_state(gst::State::Paused).unwrap();
        let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(30));
        assert!(res.is_ok(), "preroll failed");
        // The prerolled sample is from before the seek: drop it.
        let _ = sink.try_pull_preroll(gst::ClockTime::ZERO);
        assert!(pipeline
            .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, pos)
            .is_ok());
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    while std::time::Instant::now() < deadline {
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
            out.pcm
                .extend_from_slice(&s.buffer().unwrap().map_readable().unwrap());
            continue;
        }
        let mut stop = false;
        while let Some(m) = bus.pop() {
            match m.view() {
                gst::MessageView::Error(e) => {
                    out.error = Some(format!("{} ({:?})", e.error(), e.debug()));
                    stop = true;
                }
                gst::MessageView::Buffering(b) => out.buffering.push(b.percent()),
                _ => {}
            }
        }
        if stop {
            break;
        }
        if sink.is_eos() {
            out.eos = true;
            break;
        }
    }
    if out.error.is_none() && !out.eos {
        out.error = Some(format!("timed out after {TIMEOUT:?}"));
    }
    out.stats = demux.map(|d| d.property::<gst::Structure>("stats"));
    pipeline.set_state(gst::State::Null).unwrap();
    out
}
