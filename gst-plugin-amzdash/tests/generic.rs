//! Generic DASH through `souphttpsrc ! amzdashdemux ! qtdemux ! flacparse ! flacdec`: the
//! emulator's open mirror (SegmentTemplate + SegmentTimeline), sample-identical to the source.

mod common;

use amzmusic_emulator::content::catalog::Addressing;
use common::*;

#[test]
fn open_mirror_template_plays_sample_identical() {
    init();
    let emu = Emulator::in_process(Addressing::Template);
    let track = "B0EMUHD001";
    let url = format!("{}/open/{track}/manifest.mpd", emu.base_url);
    let bw = bandwidth(&emu.get(&url), "flac-44k16");
    let d = amzmusic_tests::run_pipeline(
        &format!(
            "souphttpsrc location={url} ! amzdashdemux max-bitrate={bw} ! qtdemux ! flacparse ! \
             flacdec ! audio/x-raw,format=S16LE ! appsink name=sink"
        ),
        TIMEOUT,
    )
    .unwrap();
    assert!(d.error.is_none(), "{:?}", d.error);
    assert!(d.eos);
    assert_eq!(d.rate(), Some(44100));
    amzmusic_tests::assert_same_pcm(&d.bytes, &source_pcm(track, "flac-44k16"), 4, "open mirror");
}

/// A representation switch inside FLAC (44.1 kHz/16 bit to 48 kHz/24 bit) while playing: the
/// new init segment goes through push-mode qtdemux, and every sample on both sides of the
/// switch is the source's, at its time: no gap, no repeat.
#[test]
fn switch_within_flac_is_gapless_and_sample_exact() {
    use gst::prelude::*;
    init();
    let emu = Emulator::in_process(Addressing::Template);
    let track = "B0EMUHD001";
    let url = format!("{}/open/{track}/manifest.mpd", emu.base_url);
    let (pipeline, sink) = launch(&format!(
        "souphttpsrc location={url} ! amzdashdemux name=demux representation=flac-44k16 \
         buffer-time=15000000000 ! qtdemux ! flacparse ! flacdec ! appsink name=sink sync=false \
         max-buffers=4"
    ));
    let demux = pipeline.by_name("demux").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut runs: Vec<RateRun> = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut switched = false;
    while std::time::Instant::now() < deadline && !sink.is_eos() {
        let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) else {
            if let Some(m) = pipeline
                .bus()
                .unwrap()
                .pop_filtered(&[gst::MessageType::Error])
            {
                panic!("{m:?}");
            }
            continue;
        };
        add_to_runs(&mut runs, &s);
        if !switched && runs.last().unwrap().end >= 5_000_000_000 {
            demux.set_property("representation", "flac-48k24");
            switched = true;
        }
    }
    assert!(sink.is_eos(), "no EOS");
    let stats = demux.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(
        runs.len(),
        2,
        "{:?}",
        runs.iter().map(|r| (r.rate, r.start)).collect::<Vec<_>>()
    );
    assert_eq!(stats.get::<u64>("switches").unwrap(), 1);
    let (a, b) = (&runs[0].pcm, &runs[1].pcm);
    assert_eq!((runs[0].rate, runs[1].rate), (44100, 48000));
    assert_eq!(runs[0].start, 0);
    // The first run ends exactly where the second starts.
    let (a_secs, t1) = (a.len() as f64 / (44100.0 * 4.0), runs[1].start);
    assert!((a_secs - t1 as f64 / 1e9).abs() < 1e-6, "{a_secs} vs {t1}");
    let src44 = source_pcm(track, "flac-44k16");
    amzmusic_tests::assert_same_pcm(a, &src44[..a.len()], 4, "before the switch");
    // S24_32LE out of flacdec, packed 3-byte little-endian in the source.
    let packed: Vec<u8> = b.chunks(4).flat_map(|s| s[..3].to_vec()).collect();
    let src48 = source_pcm(track, "flac-48k24");
    let from = (t1 as u128 * 48000 / 1_000_000_000) as usize * 6;
    amzmusic_tests::assert_same_pcm(&packed, &src48[from..], 6, "after the switch");
}

/// Segments stream downstream as their bytes arrive: on a 2 Mb/s link the first segment (1 or
/// 2 MB, 4 to 8 s at that rate) is still downloading when the first audio comes out.
#[test]
fn first_audio_comes_before_the_first_segment_is_downloaded() {
    use gst::prelude::*;
    init();
    let emu = Emulator::in_process(Addressing::Template);
    let url = format!("{}/open/B0EMUHD001/manifest.mpd", emu.base_url);
    let _ = emu.get(&url); // content generated before shaping slows everything
    emu.shape_trace("600 2000 20");
    let (pipeline, sink) = launch(&format!(
        "souphttpsrc location={url} ! amzdashdemux name=demux ! qtdemux ! flacparse ! flacdec ! \
         appsink name=sink sync=false"
    ));
    let demux = pipeline.by_name("demux").unwrap();
    let started = std::time::Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap();
    let first = sink.try_pull_sample(gst::ClockTime::from_seconds(10));
    let waited = started.elapsed();
    let stats = demux.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    emu.unshape();
    eprintln!("first audio after {waited:?}");
    assert!(first.is_some(), "no audio in 10 s: {stats}");
    assert_eq!(stats.get::<u64>("segments").unwrap(), 0, "{stats}");
    assert!(
        waited < std::time::Duration::from_secs(2),
        "first audio after {waited:?}: {stats}"
    );
}

/// A `representation` the manifest does not offer is said, never silently replaced by the
/// adaptive choice: at the start an error naming it and what the manifest offers, while
/// playing a warning (the choice stays what it was).
#[test]
fn a_pin_the_manifest_does_not_offer_is_an_error_at_start_and_a_warning_while_playing() {
    use gst::prelude::*;
    init();
    let emu = Emulator::in_process(Addressing::Template);
    let url = format!("{}/open/B0EMUHD001/manifest.mpd", emu.base_url);
    let d = amzmusic_tests::run_pipeline(
        &format!(
            "souphttpsrc location={url} ! amzdashdemux representation=flac-192k24 ! qtdemux ! \
             flacparse ! flacdec ! appsink name=sink"
        ),
        TIMEOUT,
    )
    .unwrap();
    let err = d.error.expect("the unknown pin must stop playback");
    assert!(err.contains("\"flac-192k24\""), "{err}");
    assert!(
        err.contains("it offers: ") && err.contains("flac-44k16"),
        "{err}"
    );
    assert!(d.bytes.is_empty(), "it played {} bytes", d.bytes.len());

    let (pipeline, sink) = launch(&format!(
        "souphttpsrc location={url} ! amzdashdemux name=demux representation=flac-44k16 ! \
         qtdemux ! flacparse ! flacdec ! appsink name=sink sync=false max-buffers=4"
    ));
    let demux = pipeline.by_name("demux").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    assert!(
        sink.try_pull_sample(gst::ClockTime::from_seconds(60))
            .is_some(),
        "no audio"
    );
    demux.set_property("representation", "flac-192k24");
    let bus = pipeline.bus().unwrap();
    let warning = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(5),
            &[gst::MessageType::Warning],
        )
        .expect("a warning for the unknown pin");
    let gst::MessageView::Warning(w) = warning.view() else {
        unreachable!()
    };
    assert!(w.error().matches(gst::ResourceError::Settings), "{w:?}");
    assert!(w.error().message().contains("\"flac-192k24\""), "{w:?}");
    pipeline.set_state(gst::State::Null).unwrap();
}
