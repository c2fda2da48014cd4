//! The README's explicit pipelines against a real emulator process (its --env-file applied to
//! this process, so the elements need no properties): FLAC bit-exact against the source across
//! the 30 s clear/encrypted boundary, and E-AC-3 through avdec_eac3.

use amzmusic_tests::*;
use std::time::Duration;

fn env() -> &'static EmulatorEnv {
    shared_env()
}

const HD: &str = "B0EMUHD001";
/// flac-44k16 (794 kb/s) is the best representation under this cap, flac-48k24 (1.6 Mb/s)
/// is above it: the comparison is against one representation whatever the ABR measures.
const PIN_44K16: &str = "max-bitrate=1000000";

fn hd_pipeline() -> String {
    format!(
        "amazonmusicsrc track-id={HD} ! amzdashdemux name=demux {PIN_44K16} ! qtdemux ! \
         widevinedecrypt ! flacparse ! flacdec ! appsink name=sink"
    )
}

#[test]
fn hd_flac_is_sample_identical_to_the_source_across_the_encrypted_boundary() {
    let _ = env();
    let want = source_pcm(HD, "flac-44k16");
    let got = play_launch(&hd_pipeline(), Duration::from_secs(60), |_| {}).unwrap();
    got.ok().unwrap();
    assert_eq!(got.last_caps_field::<i32>("rate"), Some(44_100));
    assert_eq!(
        got.last_caps_field::<String>("format").as_deref(),
        Some("S16LE")
    );
    // 60 s at 44.1 kHz, 16-bit stereo; the 30 s boundary is at byte 30 * 44100 * 4.
    assert_eq!(want.len(), 60 * 44_100 * 4);
    assert_same_pcm(
        &got.bytes,
        &want,
        4,
        "flac-44k16 through the explicit pipeline",
    );
}

#[test]
fn hd_flac_timestamps_are_continuous_across_the_encrypted_boundary() {
    let _ = env();
    let got = play_launch(&hd_pipeline(), Duration::from_secs(60), |_| {}).unwrap();
    got.ok().unwrap();
    let jumps = timestamp_jumps(&got.timestamps);
    assert!(
        jumps.is_empty(),
        "PTS jumps (buffer, pts, expected): {jumps:?}"
    );
    let end = got.end_ns().unwrap();
    assert!(
        end.abs_diff(60_000_000_000) <= 30_000_000,
        "ends at {end} ns"
    );
}

#[test]
fn eac3_atmos_tier_decodes_through_avdec_eac3() {
    let _ = env();
    let desc = "amazonmusicsrc track-id=B0EMUATM01 quality=atmos ! amzdashdemux ! qtdemux ! \
                widevinedecrypt ! avdec_eac3 ! audioconvert ! \
                audio/x-raw,format=S16LE,layout=interleaved ! appsink name=sink";
    let got = play_launch(desc, Duration::from_secs(60), |_| {}).unwrap();
    got.ok().unwrap();
    assert_eq!(
        got.last_caps_field::<i32>("channels"),
        Some(6),
        "{:?}",
        got.caps
    );
    assert_eq!(got.last_caps_field::<i32>("rate"), Some(48_000));
    let jumps = timestamp_jumps(&got.timestamps);
    assert!(
        jumps.is_empty(),
        "PTS jumps (buffer, pts, expected): {jumps:?}"
    );
    // In running time: E-AC-3's PTS are media time, its segment starting at the priming.
    let first = got.running.first().map(|r| r.0);
    assert!(
        first.is_some_and(|r| r <= 20_834),
        "first running time {first:?}"
    );
    let end = got.running.last().map(|r| r.0 + r.1).unwrap();
    assert!(
        end.abs_diff(60_000_000_000) <= 30_000_000,
        "ends at {end} ns"
    );
    // Exactly as long as the source the encoder was fed (the emulator's `pcm` of the rung),
    // and lined up with it from the first sample to the last: the encoder delay (256 samples,
    // grown to a 1536-sample frame) is dropped, the last frame's padding clipped.
    let source = source_pcm("B0EMUATM01", "eac3-640k");
    assert_eq!(got.bytes.len(), source.len(), "length against the source");
    let (got, source) = (mono_s16(&got.bytes, 6), mono_s16(&source, 6));
    const WINDOW: usize = 9_600;
    let first = best_lag(&got, 0, &source, 0, WINDOW, 2_000);
    let tail = got.len() - WINDOW;
    let last = best_lag(&got, tail, &source, tail, WINDOW, 2_000);
    eprintln!("E-AC-3 against its source: lag {first:?} at the start, {last:?} at the end");
    assert!(first.0 == 0 && first.1 > 0.9, "at the start: {first:?}");
    assert!(last.0 == 0 && last.1 > 0.9, "at the end: {last:?}");
}
