//! The selector's download-time rules at work in the element: a segment switched up on a fast
//! link is abandoned for the lower representation when the link drops mid-download, and the
//! audio stays sample-exact. (A test binary of its own: the warm-start estimate is per process.)

mod common;

use amzmusic_emulator::content::catalog::Addressing;
use common::*;
use gst::prelude::*;
use std::time::{Duration, Instant};

const TRACK: &str = "B0EMUHD001";

fn requested(emu: &Emulator, path: &str) -> Vec<u64> {
    emu.state()
        .log
        .since(0)
        .into_iter()
        .filter(|r| r.path.contains(path))
        .map(|r| r.seq)
        .collect()
}

/// While paused after preroll the pipeline takes nothing, so what is queued stays ahead of
/// playback: segment 1 is chosen with ~10 s buffered, as during playback, without real time.
/// The test then drops the link to 500 kb/s as soon as segment 1 of flac-48k24 (2 MB) is
/// requested: at that rate it would take ~30 s, longer than the buffer lasts, while the whole
/// flac-44k16 segment (1 MB) takes half of that, so the element abandons it for flac-44k16.
#[test]
fn a_download_that_would_arrive_too_late_is_abandoned_and_audio_stays_sample_exact() {
    init();
    let emu = Emulator::in_process(Addressing::Template);
    let url = format!("{}/open/{TRACK}/manifest.mpd", emu.base_url);
    // (Also generates the content before the link is shaped.)
    let low = bandwidth(&emu.get(&url), "flac-44k16");
    emu.shape_trace("600 16000 5");
    let (pipeline, sink) = launch(&format!(
        "souphttpsrc location={url} ! amzdashdemux name=demux ! qtdemux ! flacparse ! flacdec ! \
         audio/x-raw,format=S16LE ! appsink name=sink sync=false"
    ));
    let demux = pipeline.by_name("demux").unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    let stats = || demux.property::<gst::Structure>("stats");
    let deadline = Instant::now() + Duration::from_secs(20);
    while requested(&emu, "/flac-48k24/00002").is_empty() {
        assert!(
            Instant::now() < deadline,
            "segment 1 was never fetched from flac-48k24 (the up-switch this test needs): {}",
            stats()
        );
        if let Some(m) = bus.pop_filtered(&[gst::MessageType::Error]) {
            panic!("{m:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    emu.shape_trace("600 500 5");
    while stats().get::<u64>("abandons").unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "no abandon: {}, requests {:?}",
            stats(),
            requested(&emu, "/flac-")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The rest at flac-44k16 (so the output is one format), on a fast link again.
    demux.set_property("max-bitrate", low);
    emu.unshape();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut pcm = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !sink.is_eos() {
        assert!(Instant::now() < deadline, "timed out: {}", stats());
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
            pcm.extend_from_slice(&s.buffer().unwrap().map_readable().unwrap());
        }
        if let Some(m) = bus.pop_filtered(&[gst::MessageType::Error]) {
            panic!("{m:?}");
        }
    }
    let s = stats();
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(s.get::<u64>("abandons").unwrap(), 1, "{s}");
    // The abandoned request came first, then the same segment from flac-44k16, once.
    let high = requested(&emu, "/flac-48k24/00002");
    let again = requested(&emu, "/flac-44k16/00002");
    assert_eq!((high.len(), again.len()), (1, 1), "{high:?} {again:?}");
    assert!(high[0] < again[0], "{high:?} {again:?}");
    amzmusic_tests::assert_same_pcm(&pcm, &source_pcm(TRACK, "flac-44k16"), 4, "abandoned");
}
