//! The manifest's loudness reaches the application as ReplayGain, against a real emulator
//! process: the emulator measures each track's source (BS.1770 integrated loudness) and writes
//! it as `ProgramLoudness` (`-20.2 LUFS`), amzdashdemux turns it into the ReplayGain track gain
//! ahead of the first sample, and `rgvolume` normalizes with no code of ours. What comes out is
//! measured again here with an independent meter run on the decoded samples.

use amzmusic_tests::*;
use gst::prelude::*;
use std::process::Command;
use std::time::Duration;

const HD: &str = "B0EMUHD001";

/// Integrated loudness (LUFS) of interleaved F32LE samples.
fn loudness_f32(pcm: &[u8], channels: u32, rate: u32) -> f64 {
    let samples: Vec<f32> = pcm
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut m = ebur128::EbuR128::new(channels, rate, ebur128::Mode::I).unwrap();
    m.add_frames_f32(&samples).unwrap();
    m.loudness_global().unwrap()
}

/// The ProgramLoudness the emulator's manifest of the HD track states, in LUFS, read once.
fn hd_manifest_loudness() -> f64 {
    static L: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *L.get_or_init(|| manifest_loudness(HD))
}

/// The ProgramLoudness the emulator's manifest of `track` states, in LUFS (its `export`
/// writes the manifest as the CDN serves it).
fn manifest_loudness(track: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    emulator(&["export", track, "--out", out]).expect("amzmusic-emulator export");
    let mpd = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "mpd"))
        .expect("an exported manifest");
    let mpd = std::fs::read_to_string(mpd).unwrap();
    let key = "cicp:ProgramLoudness\" value=\"";
    let at = mpd.find(key).expect("ProgramLoudness") + key.len();
    let v = &mpd[at..at + mpd[at..].find('"').unwrap()];
    v.strip_suffix(" LUFS")
        .unwrap_or_else(|| panic!("{v:?} is not in LUFS"))
        .parse()
        .unwrap()
}

#[test]
fn gst_launch_shows_the_replaygain_track_gain() {
    let _ = shared_env();
    init_gst();
    let out = Command::new("gst-launch-1.0")
        .args(["-t", "amazonmusicsrc", &format!("track-id={HD}"), "!"])
        .args(["decodebin3", "!", "fakesink"])
        .output()
        .expect("gst-launch-1.0 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = -18.0 - hd_manifest_loudness();
    let line = stdout
        .lines()
        .find(|l| l.contains("replaygain track gain:"))
        .unwrap_or_else(|| panic!("no ReplayGain track gain in:\n{stdout}"));
    let got: f64 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    eprintln!("{}", line.trim());
    assert!((got - want).abs() < 1e-6, "{line}: want {want}");
}

/// rgvolume (headroom for the gain to raise a quiet track) brings the FLAC tier and the Opus
/// tier to ReplayGain's -18 LUFS, and to -14 LUFS with a pre-amp of 4 dB; without it the
/// output is as loud as the manifest says.
#[test]
fn rgvolume_normalizes_every_tier_to_its_target() {
    let _ = shared_env();
    let source = hd_manifest_loudness();
    for (quality, filter, want) in [
        ("hd", "", source),
        ("hd", "rgvolume headroom=10 !", -18.0),
        ("sd", "rgvolume headroom=10 !", -18.0),
        ("hd", "rgvolume headroom=10 pre-amp=4 !", -14.0),
    ] {
        let desc = format!(
            "amazonmusicsrc track-id={HD} quality={quality} ! decodebin3 ! audioconvert ! \
             {filter} audioconvert ! audio/x-raw,format=F32LE,layout=interleaved ! \
             appsink name=sink"
        );
        let p = play_launch(&desc, Duration::from_secs(60), |_| {}).unwrap();
        p.ok().unwrap();
        let rate = p.last_caps_field::<i32>("rate").unwrap() as u32;
        let channels = p.last_caps_field::<i32>("channels").unwrap() as u32;
        let got = loudness_f32(&p.bytes, channels, rate);
        eprintln!("{quality} {filter:32} {got:.2} LUFS (want {want:.2})");
        assert!(
            (got - want).abs() < 0.1,
            "{quality} {filter}: {got:.3} LUFS, want {want:.2}"
        );
    }
}

/// playbin3 (urisourcebin, amzdashbin) with rgvolume as its audio filter: the same -18 LUFS.
#[test]
fn playbin3_with_rgvolume_plays_at_the_replaygain_target() {
    let _ = shared_env();
    let (pb, sink) = playbin3(&format!("amazonmusic://track/{HD}"), Some("hd"), None).unwrap();
    let filter = gst::parse::bin_from_description(
        "audioconvert ! rgvolume headroom=10 ! audioconvert ! \
         capsfilter caps=audio/x-raw,format=F32LE,layout=interleaved",
        true,
    )
    .unwrap();
    pb.set_property("audio-filter", &filter);
    let p = play_to_end(&pb, &sink, Duration::from_secs(60), |_| {});
    p.ok().unwrap();
    let rate = p.last_caps_field::<i32>("rate").unwrap() as u32;
    let channels = p.last_caps_field::<i32>("channels").unwrap() as u32;
    assert_eq!(
        p.last_caps_field::<String>("format").as_deref(),
        Some("F32LE")
    );
    let got = loudness_f32(&p.bytes, channels, rate);
    eprintln!("playbin3 + rgvolume: {got:.2} LUFS");
    assert!((got + 18.0).abs() < 0.1, "{got:.3} LUFS, want -18.00");
}
