//! Against the emulator's signed CDN: the audio object arrives as the contract's sticky event
//! (credentials in a GObject's properties), segment headers go on every request, every
//! addressing plays sample-identical, and a 403 makes the demuxer ask upstream for a fresh
//! audio object and continue without gap or repeat.

mod common;

use gst::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amzmusic_emulator::cdn::issue_audio_object;
use amzmusic_emulator::content::catalog::{Addressing, Catalog, Tier};
use common::amazon::*;
use common::*;

fn plays_identical(addressing: Addressing) {
    let emu = Emulator::in_process(addressing);
    let track = "B0EMUHD001";
    let bw = bandwidth_of(&emu, track, "flac-44k16");
    let out = play(&emu, track, Tier::Hd, &format!("max-bitrate={bw}"), |_| {});
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.eos);
    amzmusic_tests::assert_same_pcm(
        &out.pcm,
        &source_pcm(track, "flac-44k16"),
        4,
        &format!("{addressing:?}"),
    );
    assert_eq!(
        out.stats.get::<String>("representation").unwrap(),
        "flac-44k16"
    );
    assert!(out.stats.get::<u64>("bytes").unwrap() > 1_000_000);
    assert!(out.refresh_queries.is_empty(), "{:?}", out.refresh_queries);
}

#[test]
fn segment_list_with_media_ranges() {
    plays_identical(Addressing::List);
}

#[test]
fn segment_template_with_timeline() {
    plays_identical(Addressing::Template);
}

#[test]
fn segment_base_with_sidx() {
    plays_identical(Addressing::Base);
}

#[test]
fn forbidden_segment_refreshes_once_and_continues_without_gap() {
    let emu = Emulator::in_process(Addressing::List);
    let track = "B0EMUHD001";
    let bw = bandwidth_of(&emu, track, "flac-44k16");
    let out = play(&emu, track, Tier::Hd, &format!("max-bitrate={bw}"), |emu| {
        // The third segment request (after init and two segments, all ranges of one file)
        // is refused as an expired URL would be.
        emu.fault(serde_json::json!({
            "path_contains": "flac-44k16",
            "count": 1,
            "action": {"status": 403},
        }));
    });
    assert!(out.error.is_none(), "{:?}", out.error);
    amzmusic_tests::assert_same_pcm(&out.pcm, &source_pcm(track, "flac-44k16"), 4, "refresh");
    assert_eq!(out.refresh_queries, vec![("forbidden".to_string(), 1)]);
    assert_eq!(out.stats.get::<u64>("refreshes").unwrap(), 1);
}

#[test]
fn forbidden_without_anyone_to_refresh_is_a_clear_error() {
    let emu = Emulator::in_process(Addressing::List);
    let track = "B0EMUHD001";
    let out = play(&emu, track, Tier::Hd, "", |emu| {
        emu.fault(serde_json::json!({
            "path_contains": "/cdn/",
            "count": 100,
            "action": {"status": 403},
        }));
    });
    let err = out.error.expect("an error");
    assert!(err.contains("refused") || err.contains("403"), "{err}");
    let _ = Duration::ZERO;
}

#[test]
fn decodebin3_picks_amzdashdemux_for_amazonmusicsrc_caps() {
    let emu = Emulator::in_process(Addressing::List);
    let track = "B0EMUHD001";
    let bw = bandwidth_of(&emu, track, "flac-44k16");
    let out = play(
        &emu,
        track,
        Tier::Hd,
        &format!("decodebin3 max-bitrate={bw}"),
        |_| {},
    );
    assert!(
        out.error.is_none(),
        "{:?} (plugged {:?})",
        out.error,
        out.plugged
    );
    assert!(out.eos);
    assert!(
        out.plugged.iter().any(|f| f == "amzdashdemux"),
        "{:?}",
        out.plugged
    );
    assert!(
        !out.plugged.iter().any(|f| f == "dashdemux2"),
        "{:?}",
        out.plugged
    );
    assert_eq!(
        out.stats.get::<String>("representation").unwrap(),
        "flac-44k16"
    );
    amzmusic_tests::assert_same_pcm(&out.pcm, &source_pcm(track, "flac-44k16"), 4, "decodebin3");
}

#[test]
fn factory_filter_leaves_plain_dash_to_dashdemux2() {
    init();
    let factories = gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::DECODABLE,
        gst::Rank::MARGINAL,
    );
    let first = |caps: gst::Caps| {
        // What parsebin/decodebin3 do: subset filtering for fixed caps, then rank order.
        // (gst_element_factory_list_filter has no binding: the same test, spelled out.)
        let mut l: Vec<gst::ElementFactory> = factories
            .iter()
            .filter(|f| {
                f.static_pad_templates().iter().any(|t| {
                    if t.direction() != gst::PadDirection::Sink {
                        return false;
                    }
                    let tc = t.caps();
                    if caps.is_fixed() {
                        caps.is_subset(&tc)
                    } else {
                        caps.can_intersect(&tc)
                    }
                })
            })
            .cloned()
            .collect();
        l.sort_by_key(|f| std::cmp::Reverse(f.rank()));
        l.into_iter()
            .map(|f| f.name().to_string())
            .collect::<Vec<_>>()
    };
    let plain = first(gst::Caps::new_empty_simple("application/dash+xml"));
    assert_eq!(
        plain.first().map(String::as_str),
        Some("dashdemux2"),
        "{plain:?}"
    );
    assert!(
        !plain
            .iter()
            .any(|f| f == "amzdashdemux" || f == "amzdashbin"),
        "{plain:?}"
    );
    let ours = first(
        gst::Caps::builder("application/dash+xml")
            .field("source", "amazonmusicsrc")
            .build(),
    );
    // amzdashbin first (urisourcebin plugs it; inside parsebin it declines and amzdashdemux,
    // next, takes over).
    assert_eq!(
        ours.iter().take(2).map(String::as_str).collect::<Vec<_>>(),
        vec!["amzdashbin", "amzdashdemux"],
        "{ours:?}"
    );
}

#[test]
fn protection_events_come_before_the_first_fragment() {
    init();
    let emu = Emulator::in_process(Addressing::List);
    let track = "B0EMUHD001";
    let ao = issue_audio_object(emu.state(), track, Tier::Hd, None).unwrap();
    let mpd = manifest(&emu, &ao);
    let parsed = gstamzdash::mpd::Mpd::parse(&mpd).unwrap();
    let want_sets = parsed.audio_sets().count();
    let demux = gst::ElementFactory::make("amzdashdemux").build().unwrap();
    let sink = gst::ElementFactory::make("fakesink").build().unwrap();
    let pipeline = gst::Pipeline::new();
    pipeline.add_many([&demux, &sink]).unwrap();
    // (event name, fields) in the order they leave the demuxer, until the first buffer.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let protections = Arc::new(Mutex::new(Vec::<gst::Structure>::new()));
    let (s2, p2) = (seen.clone(), protections.clone());
    // The source pad appears (pad-added) when the first fragment is about to flow.
    let sink_pad = sink.static_pad("sink").unwrap();
    demux.connect_pad_added(move |_, pad| {
        pad.link(&sink_pad).unwrap();
        let (s2, p2) = (s2.clone(), p2.clone());
        pad.add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Event(e)) => {
                        s2.lock().unwrap().push(format!("{:?}", e.type_()));
                        if e.type_() == gst::EventType::Protection {
                            p2.lock().unwrap().push(e.structure().unwrap().to_owned());
                        }
                    }
                    Some(gst::PadProbeData::Buffer(_)) => {
                        s2.lock().unwrap().push("buffer".into());
                        return gst::PadProbeReturn::Remove;
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    });
    let src = gst::Pad::builder(gst::PadDirection::Src).build();
    src.set_active(true).unwrap();
    src.link(&demux.static_pad("sink").unwrap()).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    feed(&src, "t", None, &ao, mpd);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !seen.lock().unwrap().iter().any(|s| s == "buffer") {
        std::thread::sleep(Duration::from_millis(20));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let seen = seen.lock().unwrap().clone();
    let first_buffer = seen.iter().position(|s| s == "buffer").expect("a buffer");
    let protections = protections.lock().unwrap().clone();
    // One Widevine PSSH per tier's AdaptationSet, all before the first fragment.
    assert_eq!(protections.len(), want_sets, "{seen:?}");
    assert!(
        seen[..first_buffer]
            .iter()
            .filter(|s| *s == "Protection")
            .count()
            == want_sets
    );
    let kids: Vec<String> = source_keys(track)
        .iter()
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect();
    for p in &protections {
        assert_eq!(p.get::<&str>("origin").unwrap(), "dash/mpd");
        assert_eq!(
            p.get::<&str>("system_id").unwrap(),
            "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"
        );
        let data = p.get::<gst::Buffer>("data").unwrap();
        assert_eq!(&data.map_readable().unwrap()[4..8], b"pssh");
        assert_eq!(
            p.get::<String>("license-url").unwrap(),
            emu.state().license_url()
        );
        assert!(
            kids.contains(&p.get::<String>("default-kid").unwrap()),
            "{p}"
        );
    }
}

#[test]
fn nearing_expiry_refreshes_once_and_continues_without_gap() {
    let emu = Emulator::in_process(Addressing::List);
    let track = "B0EMUHD001";
    let bw = bandwidth_of(&emu, track, "flac-44k16");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // 20 s left: "30 s before expiry" is already past, so the first request refreshes; the
    // fresh object (an hour) needs no other refresh during the track.
    let out = common::amazon::play_with_expiry(
        &emu,
        track,
        Tier::Hd,
        &format!("max-bitrate={bw}"),
        Some(now + 20),
        |_| {},
    );
    assert!(out.error.is_none(), "{:?}", out.error);
    amzmusic_tests::assert_same_pcm(&out.pcm, &source_pcm(track, "flac-44k16"), 4, "expiring");
    assert_eq!(out.refresh_queries, vec![("expiring".to_string(), 1)]);
    assert_eq!(out.stats.get::<u64>("refreshes").unwrap(), 1);
}

/// The cbcs track's Opus rung: its clear lead has no sample auxiliary information, so
/// GStreamer 1.22's qtdemux would mark those samples encrypted (constant IV) and the decryptor
/// would scramble them. The demuxer marks them clear (src/clear_lead.rs): the decoded audio must
/// equal the clear packaging's, decoded by the same qtdemux ! opusparse ! opusdec, sample for
/// sample, across the 30 s clear/encrypted boundary.
#[test]
fn cbcs_opus_clear_lead_decodes_identical_to_the_clear_packaging() {
    use amzmusic_emulator::content::store::{Store, Variant};
    let emu = Emulator::in_process(Addressing::List);
    let track = "B0EMUUHD01";
    let catalog = Arc::new(Catalog::builtin(None));
    assert_eq!(
        catalog.track(track).unwrap().scheme,
        amzmusic_emulator::content::catalog::Scheme::Cbcs
    );
    let out = play_decoded(
        &emu,
        track,
        Tier::Uhd,
        "representation=opus-320k",
        None,
        "opusparse ! opusdec",
        |_| {},
    );
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.eos);
    assert_eq!(
        out.stats.get::<String>("representation").unwrap(),
        "opus-320k"
    );

    // Reference: the clear packaging of the same rung, as one fragmented file.
    let store = Store::new(&amzmusic_tests::data_dir(), catalog).unwrap();
    let packaged = store.packaged(track, Variant::Clear).unwrap();
    let rep = packaged.rep("opus-320k").unwrap();
    let mut file = rep.init.clone();
    file.extend_from_slice(&std::fs::read(&rep.media_path).unwrap());
    let path = std::env::temp_dir().join(format!("amzdash-opus-clear-{}.mp4", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let want = decode_file(&path);
    let _ = std::fs::remove_file(&path);
    assert!(
        want.len() > 48_000 * 4 * 85,
        "reference too short: {}",
        want.len()
    );
    // The same length, and identical after the decoders have settled (from 0.44 s on). Before
    // that the two decodes differ: this path decodes the priming frame before presentation
    // zero (the segment clips it away), while pull-mode qtdemux starts its decoder cold at the
    // edit list's media time (measured: error energy 43 % of the signal in the first 20 ms,
    // 4.6 % over the first second).
    assert_eq!(out.pcm.len(), want.len(), "cbcs opus-320k: length");
    const SETTLED: usize = 48_000 * 4; // 1 s of S16 stereo
    amzmusic_tests::assert_same_pcm(
        &out.pcm[SETTLED..],
        &want[SETTLED..],
        4,
        "cbcs opus-320k after 1 s",
    );
    let s16 = |b: &[u8]| -> Vec<f64> {
        b.chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64)
            .collect()
    };
    let (a, b) = (s16(&out.pcm[..SETTLED]), s16(&want[..SETTLED]));
    let err: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let signal: f64 = b.iter().map(|y| y * y).sum();
    assert!(
        err / signal < 0.1,
        "cbcs opus-320k: first second's error energy {} of the signal",
        err / signal
    );
}

fn decode_file(path: &std::path::Path) -> Vec<u8> {
    let (p, sink) = launch(&format!(
        "filesrc location={} ! qtdemux ! opusparse ! opusdec ! audio/x-raw,format=S16LE ! \
         appsink name=sink sync=false",
        path.display()
    ));
    p.set_state(gst::State::Playing).unwrap();
    let mut pcm = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        pcm.extend_from_slice(&s.buffer().unwrap().map_readable().unwrap());
    }
    assert!(sink.is_eos(), "reference decode did not reach EOS");
    p.set_state(gst::State::Null).unwrap();
    pcm
}
