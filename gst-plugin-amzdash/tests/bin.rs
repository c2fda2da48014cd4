//! `amzdashbin`: the demuxer with qtdemux, the decryptor and a parser behind it, one source pad
//! of parsed audio. Its point is the codec change: FLAC down to Opus and back up mid-track in
//! decodebin3, with continuous timestamps and the FLAC parts sample-identical to the source.

mod common;

use amzmusic_emulator::content::catalog::Addressing;
use common::*;
use gst::prelude::*;

/// One run of output buffers with the same sample rate.
struct Run {
    rate: i32,
    start: u64,
    end: u64,
    pcm: Vec<u8>,
}

/// Plays `desc` (with `amzdashbin name=bin` and `appsink name=sink`) to EOS; `at_output`
/// runs after every buffer with the output end so far (ns) and may change the demuxer's
/// properties. Returns the runs and every gap or overlap (> 1 ms) between buffers.
fn play_runs(
    desc: &str,
    setup: impl FnOnce(&gst::Element),
    mut at_output: impl FnMut(u64, &gst::Element),
) -> (Vec<Run>, Vec<(u64, u64)>) {
    init();
    let pipeline = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let demux: gst::Element = pipeline.by_name("bin").unwrap().property("demuxer");
    setup(&demux);
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut runs: Vec<Run> = Vec::new();
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
        if let Some(last) = runs.last() {
            if pts.abs_diff(last.end) > 1_000_000 {
                gaps.push((last.end, pts));
            }
        }
        let map = b.map_readable().unwrap();
        match runs.last_mut() {
            Some(r) if r.rate == rate => {
                r.end = pts + dur;
                r.pcm.extend_from_slice(&map);
            }
            _ => runs.push(Run {
                rate,
                start: pts,
                end: pts + dur,
                pcm: map.to_vec(),
            }),
        }
        at_output(pts + dur, &demux);
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
    let emu = Emulator::start(Addressing::Template);
    let track = "B0EMUHD001";
    let url = format!("{}/open/{track}/manifest.mpd", emu.base());
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
