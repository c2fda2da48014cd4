//! `amzdashbin`: the demuxer with qtdemux, the decryptor and a parser behind it, one source pad
//! of parsed audio. Its point is the codec change: FLAC down to Opus and back up mid-track in
//! decodebin3, with continuous timestamps and the FLAC parts sample-identical to the source.

mod common;

use amzmusic_emulator::content::catalog::Addressing;
use common::*;
use gst::prelude::*;

/// Plays `desc` (with `amzdashbin name=bin` and `appsink name=sink`) to EOS; `at_output`
/// runs after every buffer with the output end so far (ns) and may change the demuxer's
/// properties. Returns the runs and every gap or overlap (> 1 ms) between buffers.
fn play_runs(
    desc: &str,
    setup: impl FnOnce(&gst::Element),
    mut at_output: impl FnMut(u64, &gst::Element),
) -> (Vec<RateRun>, Vec<(u64, u64)>) {
    let (pipeline, sink) = launch(desc);
    let demux: gst::Element = pipeline.by_name("bin").unwrap().property("demuxer");
    setup(&demux);
    pipeline.set_state(gst::State::Playing).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut runs: Vec<RateRun> = Vec::new();
    let mut gaps = Vec::new();
    while std::time::Instant::now() < deadline && !sink.is_eos() {
        let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) else {
            if let Some(m) = pipeline
                .bus()
                .unwrap()
                .pop_filtered(&[gst::MessageType::Error])
            {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("{m:?}");
            }
            continue;
        };
        if let Some(gap) = add_to_runs(&mut runs, &s) {
            gaps.push(gap);
        }
        at_output(runs.last().unwrap().end, &demux);
    }
    assert!(sink.is_eos(), "no EOS within {TIMEOUT:?}");
    pipeline.set_state(gst::State::Null).unwrap();
    (runs, gaps)
}

/// FLAC 44.1/16 -> Opus 320k at ~12 s of output -> FLAC again at ~32 s, by the demuxer's
/// `representation` property, through decodebin3: three runs, end to end with no gap, the
/// whole 60 s, and the FLAC runs equal to the source at their times.
#[test]
fn flac_to_opus_and_back_in_decodebin3_is_continuous() {
    let emu = Emulator::in_process(Addressing::Template);
    let track = "B0EMUHD001";
    let url = format!("{}/open/{track}/manifest.mpd", emu.base_url);
    let mut step = 0;
    let (runs, gaps) = play_runs(
        &format!(
            "souphttpsrc location={url} ! amzdashbin name=bin ! decodebin3 ! audioconvert ! \
             audio/x-raw,format=S16LE,channels=2 ! appsink name=sink sync=false max-buffers=4"
        ),
        |demux| {
            demux.set_property("buffer-time", 5_000_000_000u64);
            demux.set_property("representation", "flac-44k16");
        },
        |end, demux| {
            if step == 0 {
                step = 1;
            } else if step == 1 && end >= 12_000_000_000 {
                demux.set_property("representation", "opus-320k");
                step = 2;
            } else if step == 2 && end >= 32_000_000_000 {
                demux.set_property("representation", "flac-44k16");
                step = 3;
            }
        },
    );
    let summary: Vec<_> = runs
        .iter()
        .map(|r| (r.rate, r.start as f64 / 1e9, r.end as f64 / 1e9))
        .collect();
    eprintln!("runs {summary:?}");
    assert_eq!(gaps, vec![], "gaps or overlaps; runs {summary:?}");
    assert_eq!(
        runs.iter().map(|r| r.rate).collect::<Vec<_>>(),
        vec![44100, 48000, 44100],
        "runs {summary:?}"
    );
    assert_eq!(runs[0].start, 0);
    let end = runs.last().unwrap().end;
    assert!(end.abs_diff(60_000_000_000) < 25_000_000, "ends at {end}");
    let src = source_pcm(track, "flac-44k16");
    for r in [&runs[0], &runs[2]] {
        let from = (r.start as u128 * 44100 / 1_000_000_000) as usize * 4;
        amzmusic_tests::assert_same_pcm(
            &r.pcm,
            &src[from..from + r.pcm.len().min(src.len() - from)],
            4,
            &format!("FLAC run from {} ns", r.start),
        );
    }
}
