//! Buffered segments fetched again from a better representation once everything is fetched,
//! and swapped in before they go downstream: the element says which representation each
//! segment plays from, qtdemux gets an init segment wherever that changes, and every sample is
//! the source's, at its time. (A test binary of its own: the warm-start estimate is per
//! process.)

mod common;

use amzmusic_emulator::content::catalog::Addressing;
use common::*;
use gst::prelude::*;
use std::time::{Duration, Instant};

const TRACK: &str = "B0EMUHD001";

/// Whether segment `segment` (0-based) was requested from `rep`.
fn fetched(emu: &Emulator, rep: &str, segment: usize) -> bool {
    let path = format!("/{rep}/{:05}", segment + 1);
    emu.state()
        .log
        .since(0)
        .iter()
        .any(|r| r.path.contains(&path))
}

/// Paused after preroll, the pipeline takes nothing, so the queued segments stay due in the
/// future without real time. `max-bitrate` holds the first segments to flac-44k16; lifted, the
/// rest come from flac-48k24 on the 8 Mb/s link; with everything fetched, the buffered
/// flac-44k16 segments not yet downstream are fetched again from flac-48k24 and swapped in.
#[test]
fn buffered_segments_are_upgraded_before_they_play_and_stay_sample_exact() {
    init();
    let emu = Emulator::in_process(Addressing::Template);
    let url = format!("{}/open/{TRACK}/manifest.mpd", emu.base_url);
    // (Also generates the content before the link is shaped.)
    let low = bandwidth(&emu.get(&url), "flac-44k16");
    emu.shape_trace("600 8000 5");
    let (pipeline, sink) = launch(&format!(
        "souphttpsrc location={url} ! amzdashdemux name=demux max-bitrate={low} ! qtdemux ! \
         flacparse ! flacdec ! appsink name=sink sync=false"
    ));
    let demux = pipeline.by_name("demux").unwrap();
    let bus = pipeline.bus().unwrap();
    let stats = || demux.property::<gst::Structure>("stats");
    let count = |field: &str| stats().get::<u64>(field).unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    // What the element says each segment plays from, as `(start ns, representation)`.
    let played = std::cell::RefCell::new(Vec::<(u64, String)>::new());
    let drain = || {
        while let Some(m) = bus.pop() {
            match m.view() {
                gst::MessageView::Error(e) => panic!("{e:?}"),
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure().filter(|s| s.name() == "amzdashdemux-segment") {
                        played.borrow_mut().push((
                            s.get::<u64>("start").unwrap(),
                            s.get::<String>("representation").unwrap(),
                        ));
                    }
                }
                _ => {}
            }
        }
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        while !done() {
            assert!(Instant::now() < deadline, "{what}: {}", stats());
            drain();
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait("segment 2 from flac-44k16", &|| {
        fetched(&emu, "flac-44k16", 2)
    });
    demux.set_property("max-bitrate", 0u64);
    wait("an upgrade", &|| count("upgrades") >= 1);
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut runs: Vec<RateRun> = Vec::new();
    while !sink.is_eos() {
        assert!(Instant::now() < deadline, "timed out: {}", stats());
        drain();
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
            add_to_runs(&mut runs, &s);
        }
    }
    let upgrades = count("upgrades");
    drain();
    pipeline.set_state(gst::State::Null).unwrap();
    let played = played.into_inner();
    assert_eq!(played.len(), 6, "{played:?}");
    let reps: Vec<&str> = played.iter().map(|p| p.1.as_str()).collect();
    // Segment 0 was going downstream at once; an upgraded one was fetched from both.
    assert_eq!(reps[0], "flac-44k16", "{reps:?}");
    let upgraded: Vec<usize> = (1..6)
        .filter(|&k| reps[k] == "flac-48k24" && fetched(&emu, "flac-44k16", k))
        .collect();
    assert!(
        !upgraded.is_empty() && upgraded.len() as u64 <= upgrades,
        "{reps:?}, {upgrades} upgrades"
    );
    // The decoded runs follow what the element said, exactly and at their times.
    let mut expected: Vec<(i32, u64)> = Vec::new();
    for (start, rep) in &played {
        let rate = if rep == "flac-44k16" { 44100 } else { 48000 };
        if expected.last().is_none_or(|e| e.0 != rate) {
            expected.push((rate, *start));
        }
    }
    let got: Vec<(i32, u64)> = runs.iter().map(|r| (r.rate, r.start)).collect();
    assert_eq!(got, expected, "{reps:?}");
    let src44 = source_pcm(TRACK, "flac-44k16");
    let src48 = source_pcm(TRACK, "flac-48k24");
    for r in &runs {
        let what = format!("{} Hz from {} ns", r.rate, r.start);
        let at = |frame: usize| (r.start as u128 * r.rate as u128 / 1_000_000_000) as usize * frame;
        if r.rate == 44100 {
            let from = at(4);
            let want = &src44[from..(from + r.pcm.len()).min(src44.len())];
            amzmusic_tests::assert_same_pcm(&r.pcm, want, 4, &what);
        } else {
            // S24_32LE out of flacdec, packed 3-byte little-endian in the source.
            let packed: Vec<u8> = r.pcm.chunks(4).flat_map(|s| s[..3].to_vec()).collect();
            let from = at(6);
            let want = &src48[from..(from + packed.len()).min(src48.len())];
            amzmusic_tests::assert_same_pcm(&packed, want, 6, &what);
        }
    }
}
