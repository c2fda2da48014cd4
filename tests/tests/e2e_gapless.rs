//! The gapless album: B0EMUALB01's three tracks are cut from one continuous recording, so
//! played back to back (playbin3 queueing the next track on about-to-finish, as amzmusic-play
//! does) the decoded FLAC must equal the concatenated source samples, not one sample missing or
//! repeated at either join.

use amzmusic_tests::*;
use gst::prelude::*;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

fn env() -> &'static EmulatorEnv {
    static E: OnceLock<EmulatorEnv> = OnceLock::new();
    E.get_or_init(|| {
        let e = EmulatorEnv::start(&[]).expect("emulator");
        e.apply();
        e
    })
}

/// The album's track ids in play order, and their durations in ms.
fn album() -> Vec<(String, u64)> {
    let c: Value = serde_json::from_slice(&emulator(&["catalog"]).unwrap()).unwrap();
    let album = c["albums"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "B0EMUALB01")
        .expect("album B0EMUALB01");
    album["track_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| {
            let id = id.as_str().unwrap();
            let t = c["tracks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == id)
                .unwrap();
            (id.to_string(), t["duration_ms"].as_u64().unwrap())
        })
        .collect()
}

/// Says at which join (or inside which track) two PCM streams first differ.
fn locate(got: &[u8], joins: &[usize]) -> String {
    let at = |b: usize| b / 4;
    joins
        .iter()
        .enumerate()
        .map(|(i, j)| format!("join {} at frame {}", i + 1, at(*j)))
        .collect::<Vec<_>>()
        .join(", ")
        + &format!("; got {} frames", got.len() / 4)
}

#[test]
fn playbin3_album_joins_are_sample_exact() {
    let _ = env();
    let tracks = album();
    assert_eq!(tracks.len(), 3);
    // The source: each track's samples (the cuts of the one recording), back to back.
    let mut want = Vec::new();
    let mut joins = Vec::new();
    for (id, _) in &tracks {
        want.extend(source_pcm(id, "flac-44k16"));
        joins.push(want.len());
    }
    joins.pop();
    let uris: Vec<String> = tracks
        .iter()
        .map(|(id, _)| format!("amazonmusic://track/{id}"))
        .collect();
    let (pb, sink) = playbin3(&uris[0], Some("hd"), None).unwrap();
    // flac-44k16 only: the source is one representation.
    pb.connect("element-setup", false, |args| {
        let e = args[1].get::<gst::Element>().unwrap();
        if e.factory().is_some_and(|f| f.name() == "amzdashdemux") {
            e.set_property("max-bitrate", 1_000_000u64);
        }
        None
    });
    let queue = Arc::new(Mutex::new(
        uris[1..].iter().cloned().collect::<VecDeque<_>>(),
    ));
    {
        let queue = queue.clone();
        pb.connect("about-to-finish", false, move |args| {
            let pb = args[0].get::<gst::Element>().unwrap();
            if let Some(next) = queue.lock().unwrap().pop_front() {
                pb.set_property("uri", next);
            }
            None
        });
    }
    let p = play_to_end(&pb, &sink, Duration::from_secs(90), |_| {});
    p.ok().unwrap();
    assert!(queue.lock().unwrap().is_empty(), "every track was queued");
    assert_eq!(p.last_caps_field::<i32>("rate"), Some(44_100));
    if p.bytes != want {
        panic!(
            "album PCM differs from the source at frame {} ({})",
            common_prefix(&p.bytes, &want) / 4,
            locate(&p.bytes, &joins)
        );
    }
}

#[test]
fn amzmusic_play_writes_the_whole_album_to_one_wav() {
    let e = env();
    let tracks = album();
    let tmp = temp_dir("album-wav");
    let wav = tmp.path().join("album.wav");
    let out = std::process::Command::new(target_profile_dir().join("amzmusic-play"))
        .envs(e.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("GST_PLUGIN_PATH", target_profile_dir())
        .args(["--output", "wav", "--fast", "--timeout", "60", "--wav"])
        .arg(&wav)
        .arg("amazonmusic://album/B0EMUALB01")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "amzmusic-play: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The WAV is 48 kHz 24-bit stereo (resampled from 44.1 kHz): the album's total length,
    // within a millisecond, so no track was cut short or played twice.
    let total_ms: u64 = tracks.iter().map(|(_, d)| d).sum();
    let frames = (std::fs::metadata(&wav).unwrap().len() - 44) / 6;
    let want = total_ms * 48;
    assert!(
        frames.abs_diff(want) <= 48,
        "{frames} frames in the WAV for {total_ms} ms at 48 kHz"
    );
}
