//! `playbin3`, `uridecodebin3` and `decodebin3` with amazonmusic:// URIs against a real
//! emulator process whose --env-file is applied to this process (no element properties but the
//! quality tier): every catalogue track at every tier it offers plays its full duration, and a
//! seek into the encrypted region lands there sample-exact. (Threads and connections after
//! pause/resume/stop are counted in e2e_lifecycle.rs, a process of its own.)

use amzmusic_tests::*;
use gst::prelude::*;
use serde_json::Value;
use std::sync::OnceLock;
use std::time::Duration;

fn env() -> &'static EmulatorEnv {
    shared_env()
}

fn catalog() -> &'static Value {
    static C: OnceLock<Value> = OnceLock::new();
    C.get_or_init(|| serde_json::from_slice(&emulator(&["catalog"]).unwrap()).unwrap())
}

/// (track id, duration in ms, tiers it offers, market it plays in) for every non-lazy track.
fn tracks_and_tiers() -> Vec<(String, u64, Vec<&'static str>, Option<&'static str>)> {
    catalog()["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["lazy"].as_bool().unwrap())
        .map(|t| {
            let id = t["id"].as_str().unwrap().to_string();
            let qualities: Vec<&str> = t["representations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["quality"].as_str().unwrap())
                .collect();
            let mut tiers = vec!["sd"];
            for (label, tier) in [("HD", "hd"), ("UHD", "uhd"), ("ATMOS", "atmos")] {
                if qualities.contains(&label) {
                    tiers.push(tier);
                }
            }
            // The one JP-only track plays in its market.
            let market = (id == "B0EMUJP001").then_some("JP");
            (id, t["duration_ms"].as_u64().unwrap(), tiers, market)
        })
        .collect()
}

/// What a tier must have produced: Opus (48 kHz stereo) for sd, FLAC above 48 kHz for uhd,
/// six channels for atmos.
fn check_tier(what: &str, tier: &str, p: &Played) {
    let caps_has = |f: &dyn Fn(i32, i32, &str) -> bool| {
        p.caps.iter().any(|(c, _)| {
            let s = c.structure(0).unwrap();
            f(
                s.get::<i32>("rate").unwrap_or(0),
                s.get::<i32>("channels").unwrap_or(0),
                &s.get::<String>("format").unwrap_or_default(),
            )
        })
    };
    match tier {
        "sd" => assert!(
            p.caps
                .iter()
                .all(|(c, _)| c.structure(0).unwrap().get::<i32>("rate") == Ok(48_000)),
            "{what}: sd is Opus at 48 kHz, got {:?}",
            p.caps
        ),
        "uhd" => assert!(
            caps_has(&|rate, _, _| rate > 48_000),
            "{what}: no UHD rate in {:?}",
            p.caps
        ),
        "atmos" => assert!(
            caps_has(&|_, ch, _| ch == 6),
            "{what}: no 5.1 E-AC-3 in {:?}",
            p.caps
        ),
        _ => {}
    }
}

fn check_full_duration(what: &str, duration_ms: u64, p: &Played) {
    if let Err(e) = p.ok() {
        panic!("{what}: {e}");
    }
    // In running time (a lossy codec's PTS are media time, its priming before the segment),
    // within a sample: the segment's start sits half a sample inside the first one kept.
    let first = p.running.first().map_or(u64::MAX, |r| r.0);
    assert!(first <= 20_834, "{what}: first running time {first} ns");
    // Continuous in running time: nothing played twice, nothing skipped (decodebin3's
    // parsebin once made flacdec re-stamp three frames at 30 s, a 300 ms step back).
    let jumps = timestamp_jumps(&p.running);
    assert!(jumps.is_empty(), "{what}: timestamp jumps {jumps:?}");
    // Every codec exactly as long as the source (to the sample: 1 ms covers the rounding).
    let got = p.sample_duration_ns();
    assert!(
        got.abs_diff(duration_ms * 1_000_000) <= 1_000_000,
        "{what}: {got} ns of samples for a {duration_ms} ms track"
    );
}

#[test]
fn playbin3_plays_every_track_at_every_tier_to_eos() {
    let _ = env();
    for (id, duration_ms, tiers, market) in tracks_and_tiers() {
        for tier in tiers {
            let what = format!("playbin3 {id} quality={tier}");
            let (pb, sink) =
                playbin3(&format!("amazonmusic://track/{id}"), Some(tier), market).unwrap();
            let p = play_to_end(&pb, &sink, Duration::from_secs(60), |_| {});
            check_full_duration(&what, duration_ms, &p);
            check_tier(&what, tier, &p);
        }
    }
}

/// uridecodebin3 with its audio pad linked to a holding appsink.
fn uridecodebin3(uri: &str, tier: &str, market: Option<&str>) -> (gst::Element, gst_app::AppSink) {
    init_gst();
    let pipeline = gst::Pipeline::new();
    let dec = gst::ElementFactory::make("uridecodebin3")
        .property("uri", uri)
        .build()
        .unwrap();
    set_source_properties(&dec, Some(tier), market);
    let sink = holding_appsink();
    pipeline.add_many([&dec, sink.upcast_ref()]).unwrap();
    let sink_pad = sink.static_pad("sink").unwrap();
    dec.connect_pad_added(move |_, pad| {
        let is_audio = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("audio/")))
            .unwrap_or(false);
        if is_audio && !sink_pad.is_linked() {
            pad.link(&sink_pad).expect("link the audio pad");
        }
    });
    (pipeline.upcast(), sink)
}

#[test]
fn uridecodebin3_plays_every_track_to_eos() {
    let _ = env();
    for (id, duration_ms, tiers, market) in tracks_and_tiers() {
        // The top tier each track offers (playbin3 covers every tier through the same bins).
        let tier = *tiers.last().unwrap();
        let what = format!("uridecodebin3 {id} quality={tier}");
        let (p, sink) = uridecodebin3(&format!("amazonmusic://track/{id}"), tier, market);
        let out = play_to_end(&p, &sink, Duration::from_secs(60), |_| {});
        check_full_duration(&what, duration_ms, &out);
        check_tier(&what, tier, &out);
    }
}

#[test]
fn decodebin3_plays_every_track_at_the_flac_and_eac3_tiers_to_eos() {
    decodebin3_plays(&["hd", "uhd", "atmos"]);
}

#[test]
fn decodebin3_plays_every_track_at_the_opus_tier_to_eos() {
    decodebin3_plays(&["sd"]);
}

fn decodebin3_plays(only: &[&str]) {
    let _ = env();
    for (id, duration_ms, tiers, market) in tracks_and_tiers() {
        for tier in tiers.into_iter().filter(|t| only.contains(t)) {
            let what = format!("amazonmusicsrc ! decodebin3 {id} quality={tier}");
            let market = market.map(|m| format!(" market={m}")).unwrap_or_default();
            let desc = format!(
                "amazonmusicsrc track-id={id} quality={tier}{market} ! decodebin3 ! appsink name=sink"
            );
            let out = play_to_end_launch(&desc);
            check_full_duration(&what, duration_ms, &out);
            check_tier(&what, tier, &out);
        }
    }
}

fn play_to_end_launch(desc: &str) -> Played {
    play_launch(desc, Duration::from_secs(60), |_| {}).unwrap()
}

/// playbin3 for the HD track with amzdashdemux pinned to flac-44k16 (element-setup), so the
/// output can be compared with the source samples.
fn pinned_hd_playbin3() -> (gst::Element, gst_app::AppSink) {
    let (pb, sink) = playbin3("amazonmusic://track/B0EMUHD001", Some("hd"), None).unwrap();
    pin_max_bitrate(&pb, 1_000_000);
    (pb, sink)
}

#[test]
fn playbin3_seek_into_the_encrypted_region_lands_there_and_plays_to_eos() {
    let _ = env();
    let (pb, sink) = pinned_hd_playbin3();
    seek_into_the_encrypted_region(pb, sink);
}

#[test]
fn explicit_pipeline_seek_into_the_encrypted_region_lands_there_and_plays_to_eos() {
    let _ = env();
    let (pipeline, sink) = launch_holding(
        "amazonmusicsrc track-id=B0EMUHD001 ! amzdashdemux max-bitrate=1000000 ! qtdemux ! \
         widevinedecrypt ! flacparse ! flacdec ! appsink name=sink",
    )
    .unwrap();
    seek_into_the_encrypted_region(pipeline, sink);
}

/// Seeks (flushing, accurate) to 40 s, 10 s into the encrypted part, after three buffers:
/// the output then starts at exactly 40 s, continues without a jump to the end, and equals
/// the source from 40 s on.
fn seek_into_the_encrypted_region(pb: gst::Element, sink: gst_app::AppSink) {
    let want = source_pcm("B0EMUHD001", "flac-44k16");
    let target = gst::ClockTime::from_seconds(40);
    let mut seeked_at_buffer = None;
    let pb2 = pb.clone();
    let p = play_to_end(&pb, &sink, Duration::from_secs(60), |p| {
        if seeked_at_buffer.is_none() && p.timestamps.len() == 3 {
            seeked_at_buffer = Some(p.timestamps.len());
            // From the streaming thread's point of view this is any application thread.
            pb2.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, target)
                .expect("seek accepted");
        }
    });
    p.ok().unwrap();
    let before = seeked_at_buffer.expect("played before seeking");
    // The first buffer at or after the target, after the flush.
    let after = p.timestamps[before..]
        .iter()
        .position(|(pts, _)| *pts >= target.nseconds() - 1_000)
        .map(|i| before + i)
        .expect("a buffer after the seek target");
    let stale: Vec<_> = p.timestamps[after..]
        .iter()
        .filter(|(pts, _)| *pts < target.nseconds() - 1_000)
        .collect();
    assert!(
        stale.is_empty(),
        "buffers before the target after the seek: {stale:?}"
    );
    assert_eq!(
        p.timestamps[after].0,
        target.nseconds(),
        "accurate seek starts at 40 s"
    );
    let jumps = timestamp_jumps(&p.timestamps[after..]);
    assert!(jumps.is_empty(), "PTS jumps after the seek: {jumps:?}");
    let end = p.end_ns().unwrap();
    assert!(
        end.abs_diff(60_000_000_000) <= 30_000_000,
        "ends at {end} ns"
    );
    // The bytes after the seek are the source from 40 s on.
    let bytes_before: usize = p.timestamps[..after]
        .iter()
        .map(|(_, d)| (*d as u128 * 44_100 / 1_000_000_000) as usize * 4)
        .sum();
    let got = &p.bytes[bytes_before.min(p.bytes.len())..];
    assert_same_pcm(got, &want[40 * 44_100 * 4..], 4, "after the seek to 40 s");
}
