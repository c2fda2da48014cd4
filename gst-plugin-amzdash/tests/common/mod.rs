// SPDX-License-Identifier: MPL-2.0
//! What the amzdash tests add to the shared harness (`amzmusic_tests`, whose in-process
//! [`Emulator`] they run against): the plugin registered statically, manifest inspection,
//! pipeline helpers.
#![allow(dead_code)]

pub mod amazon;

use std::sync::OnceLock;
use std::time::Duration;

#[allow(unused_imports)] // each test binary uses some of them
pub use amzmusic_tests::{source_keys, source_pcm, Emulator};
use gstamzdash::mpd::Mpd;

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

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// `desc` (with an `appsink name=sink`) as a pipeline, and its sink.
pub fn launch(desc: &str) -> (gst::Pipeline, gst_app::AppSink) {
    init();
    amzmusic_tests::launch(desc).unwrap()
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
    // In running time (where the sink plays it): a primed codec's PTS are media time, its
    // segment starting at the priming.
    let pts = b.pts().unwrap();
    let pts = s
        .segment()
        .and_then(|seg| seg.downcast_ref::<gst::ClockTime>())
        .and_then(|seg| seg.to_running_time(pts))
        .unwrap_or(pts)
        .nseconds();
    let dur = b.duration().unwrap().nseconds();
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
