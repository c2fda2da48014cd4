//! The gapless album: B0EMUALB01's three tracks are cut from one continuous recording, so
//! played back to back (playbin3 queueing the next track on about-to-finish, as amzmusic-play
//! does) the decoded FLAC must equal the concatenated source samples, not one sample missing or
//! repeated at either join. And the next track is fetched (manifest, first segment, license)
//! while the current one still plays.

use amzmusic_tests::*;
use gst::prelude::*;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// One test at a time: they share the emulator, and the prefetch test reads its request log.
fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

fn env() -> &'static EmulatorEnv {
    static E: OnceLock<EmulatorEnv> = OnceLock::new();
    E.get_or_init(|| {
        let e = EmulatorEnv::start(&[]).expect("emulator");
        // Packaged before anything is timed (the prefetch test wants the next track early).
        let ids: Vec<String> = album().into_iter().map(|(id, _)| id).collect();
        e.prepare(&ids.iter().map(String::as_str).collect::<Vec<_>>())
            .expect("preparing the album");
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

/// Plays `uris` back to back on `pb` (the first already set), each queued at about-to-finish.
fn play_queued(pb: &gst::Element, sink: &gst_app::AppSink, uris: &[String]) -> Played {
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
    let p = play_to_end(pb, sink, Duration::from_secs(90), |_| {});
    p.ok().unwrap();
    assert!(queue.lock().unwrap().is_empty(), "every track was queued");
    p
}

#[test]
fn playbin3_album_joins_are_sample_exact() {
    let _serial = serial();
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
    pin_max_bitrate(&pb, 1_000_000);
    let p = play_queued(&pb, &sink, &uris);
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
    let _serial = serial();
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

fn field<'a>(r: &'a Value, k: &str) -> &'a str {
    r[k].as_str().unwrap_or("")
}

fn range_of(r: &Value) -> Option<&str> {
    r["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == "range")
        .and_then(|h| h[1].as_str())
}

/// When the last buffer of track `join` (1-based) has been rendered, this many requests of the
/// next track had reached the emulator: the manifest, the first media segment and the license.
fn prefetched_before(log: &[Value], next_id: &str, marker: &Value) -> Vec<String> {
    let at = |r: &Value| r["at_ms"].as_u64().unwrap();
    let cdn = format!("/cdn/{next_id}/");
    let manifest = log
        .iter()
        .find(|r| field(r, "path").starts_with(&format!("{cdn}manifest")))
        .unwrap_or_else(|| panic!("{next_id}: no manifest request in the log"));
    // The init segment is the range from byte 0; media segments come after it.
    let first_media = log
        .iter()
        .find(|r| {
            let p = field(r, "path");
            p.starts_with(&cdn)
                && !p.starts_with(&format!("{cdn}manifest"))
                && range_of(r).is_some_and(|g| !g.starts_with("bytes=0-"))
        })
        .unwrap_or_else(|| panic!("{next_id}: no media segment request in the log"));
    let license = log
        .iter()
        .find(|r| field(r, "service") == "license" && r["seq"].as_u64() > manifest["seq"].as_u64())
        .unwrap_or_else(|| panic!("{next_id}: no license request after its manifest"));
    let mut late = Vec::new();
    for (what, r) in [
        ("manifest", manifest),
        ("first media segment", first_media),
        ("license", license),
    ] {
        let margin = at(marker) as i64 - at(r) as i64;
        eprintln!("{next_id}: {what} {margin} ms before the previous track's last buffer");
        if margin <= 0 {
            late.push(format!("{what} ({} ms late)", -margin));
        }
    }
    late
}

/// The next track is prefetched: for each join, its manifest, first media segment and license
/// request reach the emulator before a clock-synced sink has rendered the current track's last
/// buffer. Each track is entered 4 s before its end (a seek), so the test runs ~10 s.
#[test]
fn the_next_track_is_fetched_before_the_current_one_ends() {
    let _serial = serial();
    let e = env();
    let tracks = album();
    let first_seq = e
        .request_log()
        .last()
        .and_then(|r| r["seq"].as_u64())
        .unwrap_or(0);
    let uris: Vec<String> = tracks
        .iter()
        .map(|(id, _)| format!("amazonmusic://track/{id}"))
        .collect();
    init_gst();
    let pb = gst::ElementFactory::make("playbin3")
        .property("uri", &uris[0])
        .build()
        .unwrap();
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", true)
        .build()
        .unwrap();
    pb.set_property("audio-sink", &sink);
    pb.set_property(
        "video-sink",
        gst::ElementFactory::make("fakesink").build().unwrap(),
    );
    set_source_properties(&pb, Some("hd"), None);
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
    // The sink's streaming thread: a new group id at its pad is the next track, whose
    // stream-start comes right after the previous track's last buffer was rendered; a marker
    // request there puts that moment into the emulator's log, on the emulator's clock.
    let track = Arc::new(AtomicUsize::new(0));
    let marker_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let buffers = Arc::new(AtomicUsize::new(0));
    {
        let track = track.clone();
        let buffers = buffers.clone();
        let marker_url = e.url("/_emulator/requests?since=18446744073709551615&join=");
        let marker_errors = marker_errors.clone();
        let group = Mutex::new(None);
        sink.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Event(ev)) => {
                        if let gst::EventView::StreamStart(s) = ev.view() {
                            let mut g = group.lock().unwrap();
                            if *g != Some(s.group_id()) {
                                *g = Some(s.group_id());
                                let n = track.fetch_add(1, Ordering::SeqCst);
                                if n > 0 {
                                    // Once more on a failure (seen once in many runs): a few ms
                                    // late is nothing against margins of over a second.
                                    let url = format!("{marker_url}{n}");
                                    if let Err(e) =
                                        http("GET", &url, None).or_else(|_| http("GET", &url, None))
                                    {
                                        marker_errors.lock().unwrap().push(format!("{e:#}"));
                                    }
                                }
                                buffers.store(0, Ordering::SeqCst);
                            }
                        }
                    }
                    Some(gst::PadProbeData::Buffer(_)) => {
                        buffers.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    let bus = pb.bus().unwrap();
    let seek_near_end = |duration_ms: u64| {
        let to = gst::ClockTime::from_mseconds(duration_ms - 4_000);
        pb.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, to)
            .expect("seek near the end of the track");
    };
    pb.set_state(gst::State::Paused).unwrap();
    assert!(
        pb.state(gst::ClockTime::from_seconds(20)).0.is_ok(),
        "playbin3 did not preroll"
    );
    seek_near_end(tracks[0].1);
    pb.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut entered = 1;
    let mut error = None;
    loop {
        if Instant::now() > deadline {
            error = Some("timed out after 40 s".to_string());
            break;
        }
        let (t, b) = (track.load(Ordering::SeqCst), buffers.load(Ordering::SeqCst));
        // Track `t` is rendering: enter it near its end, or stop once the last one plays.
        if t > entered && b > 2 {
            if t == tracks.len() {
                break;
            }
            seek_near_end(tracks[t - 1].1);
            entered = t;
        }
        if let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(50),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        ) {
            error = Some(format!("{msg:?}"));
            break;
        }
    }
    pb.set_state(gst::State::Null).unwrap();
    if let Some(err) = error {
        panic!("playback stopped before the last track: {err}");
    }
    let marker_errors = marker_errors.lock().unwrap().clone();
    assert!(
        marker_errors.is_empty(),
        "marker requests: {marker_errors:?}"
    );
    let log: Vec<Value> = e
        .request_log()
        .into_iter()
        .filter(|r| r["seq"].as_u64().unwrap_or(0) > first_seq)
        .collect();
    let mut late = Vec::new();
    for (join, (next_id, _)) in tracks.iter().enumerate().skip(1) {
        let marker = log
            .iter()
            .find(|r| field(r, "path").ends_with(&format!("&join={join}")))
            .unwrap_or_else(|| panic!("no marker for join {join}"));
        for l in prefetched_before(&log, next_id, marker) {
            late.push(format!("join {join}: {l}"));
        }
    }
    assert!(
        late.is_empty(),
        "not fetched before the previous track's last buffer: {late:?}"
    );
}

/// A join where the next track starts in another codec (FLAC, then Opus: here the second track is
/// held to the SD tier) plays through: both tracks whole, the second decoded from Opus.
/// (urisourcebin plugs amzdashbin, whose output is parsed audio: decodebin3 swaps the decoder
/// at the join. With amzdashdemux and qtdemux there, 1.22's parsebin never exposed the new
/// codec's pad and playback stopped after the first track.)
#[test]
fn playbin3_join_from_flac_to_opus_plays_both_tracks() {
    let _serial = serial();
    let _ = env();
    let tracks = album();
    let uris: Vec<String> = tracks
        .iter()
        .map(|(id, _)| format!("amazonmusic://track/{id}"))
        .collect();
    let (pb, sink) = playbin3(&uris[0], None, None).unwrap();
    let demuxers = AtomicUsize::new(0);
    pb.connect("element-setup", false, move |args| {
        let e = args[1].get::<gst::Element>().unwrap();
        if e.factory().is_some_and(|f| f.name() == "amzdashdemux") {
            // The first track in FLAC 44.1 kHz, the second in Opus (48 kHz).
            match demuxers.fetch_add(1, Ordering::SeqCst) {
                0 => e.set_property("max-bitrate", 1_000_000u64),
                _ => e.set_property_from_str("max-quality", "sd"),
            }
        }
        None
    });
    let next = Mutex::new(Some(uris[1].clone()));
    pb.connect("about-to-finish", false, move |args| {
        let pb = args[0].get::<gst::Element>().unwrap();
        if let Some(next) = next.lock().unwrap().take() {
            pb.set_property("uri", next);
        }
        None
    });
    let p = play_to_end(&pb, &sink, Duration::from_secs(30), |_| {});
    p.ok().unwrap();
    let want_ms = tracks[0].1 + tracks[1].1;
    let got_ms = p.sample_duration_ns() / 1_000_000;
    assert!(
        got_ms.abs_diff(want_ms) <= 50,
        "{got_ms} ms of audio for {want_ms} ms of tracks"
    );
    let rate = |c: &gst::Caps| c.structure(0).and_then(|s| s.get::<i32>("rate").ok());
    assert_eq!(rate(&p.caps[0].0), Some(44_100), "{:?}", p.caps);
    assert_eq!(
        p.last_caps_field::<i32>("rate"),
        Some(48_000),
        "{:?}",
        p.caps
    );
}

/// The album at the SD tier (opus-320k for every track): Opus is lossy, so each join is checked
/// by cross-correlation with the source on both sides (lag 0 ± 1 sample), and the whole is
/// exactly as long as the three sources (the priming dropped, each last frame's padding clipped).
#[test]
fn playbin3_album_joins_at_the_opus_tier_are_aligned() {
    let _serial = serial();
    let _ = env();
    let tracks = album();
    let mut want = Vec::new();
    let mut joins = Vec::new();
    for (id, _) in &tracks {
        want.extend(source_pcm(id, "opus-320k"));
        joins.push(want.len() / 4);
    }
    joins.pop();
    let uris: Vec<String> = tracks
        .iter()
        .map(|(id, _)| format!("amazonmusic://track/{id}"))
        .collect();
    let (pb, sink) = playbin3(&uris[0], Some("hd"), None).unwrap();
    pb.connect("element-setup", false, |args| {
        let e = args[1].get::<gst::Element>().unwrap();
        if e.factory().is_some_and(|f| f.name() == "amzdashdemux") {
            e.set_property("representation", "opus-320k");
        }
        None
    });
    let p = play_queued(&pb, &sink, &uris);
    assert_eq!(p.last_caps_field::<i32>("rate"), Some(48_000));
    assert!(
        p.caps
            .iter()
            .all(|(c, _)| c.structure(0).and_then(|s| s.get::<i32>("rate").ok()) == Some(48_000)),
        "Opus throughout: {:?}",
        p.caps
    );
    assert_eq!(
        p.bytes.len() / 4,
        want.len() / 4,
        "frames played vs the sources' frames"
    );
    let (got, src) = (mono_s16(&p.bytes, 2), mono_s16(&want, 2));
    const WINDOW: usize = 9_600;
    let mut checks = vec![(0usize, "start")];
    for j in &joins {
        checks.push((j - WINDOW, "before a join"));
        checks.push((*j, "after a join"));
    }
    checks.push((got.len() - WINDOW, "end"));
    for (at, what) in checks {
        let (lag, r) = best_lag(&got, at, &src, at, WINDOW, 2_000);
        eprintln!("{what} at frame {at}: lag {lag}, r {r:.4}");
        assert!(
            lag.abs() <= 1 && r > 0.9,
            "{what} at frame {at}: lag {lag}, r {r}"
        );
    }
}

/// A join inside one codec whose format changes, FLAC 44.1 kHz/16 to 48 kHz/24 (the next track
/// reaches the same qtdemux and decryptor under the same stream-id in a new group): each track
/// is its own source's samples, so the decryptor did not hand the second the first's
/// STREAMINFO, and the rate changes at the join.
#[test]
fn playbin3_join_from_flac_16_bit_to_flac_24_bit_is_each_tracks_source() {
    let _serial = serial();
    let _ = env();
    let tracks = ["B0EMUAL001", "B0EMUHD001"];
    let uris: Vec<String> = tracks
        .iter()
        .map(|id| format!("amazonmusic://track/{id}"))
        .collect();
    let (pb, sink) = playbin3(&uris[0], Some("hd"), None).unwrap();
    let demuxers = AtomicUsize::new(0);
    pb.connect("element-setup", false, move |args| {
        let e = args[1].get::<gst::Element>().unwrap();
        if e.factory().is_some_and(|f| f.name() == "amzdashdemux") {
            let rep = match demuxers.fetch_add(1, Ordering::SeqCst) {
                0 => "flac-44k16",
                _ => "flac-48k24",
            };
            e.set_property("representation", rep);
        }
        None
    });
    let p = play_queued(&pb, &sink, &uris);
    let rates: Vec<_> = p
        .caps
        .iter()
        .map(|(c, n)| (c.structure(0).and_then(|s| s.get::<i32>("rate").ok()), *n))
        .collect();
    assert_eq!(
        rates.iter().map(|r| r.0).collect::<Vec<_>>(),
        [Some(44_100), Some(48_000)],
        "{:?}",
        p.caps
    );
    // Each track as flacdec gives it (S16LE, then packed S24LE) against its source.
    let first = rates[0].1 as usize;
    let (a, b) = p.bytes.split_at(first);
    assert_same_pcm(
        a,
        &source_pcm(tracks[0], "flac-44k16"),
        4,
        "the 16-bit track",
    );
    let format = p.last_caps_field::<String>("format").unwrap();
    assert_eq!(format, "S24LE", "{:?}", p.caps);
    assert_same_pcm(
        b,
        &source_pcm(tracks[1], "flac-48k24"),
        6,
        "the 24-bit track",
    );
}
