//! Secrets never reach the logs: the signed URLs' signatures and the per-track header values of
//! the audio object, with every debug category at level 9, through a play that also refreshes.

mod common;

use std::sync::{Arc, Mutex};

use amzmusic_emulator::cdn::issue_audio_object;
use amzmusic_emulator::content::catalog::{Addressing, Tier};
use common::amazon::*;
use common::*;

#[test]
fn no_secret_in_debug_logs_at_level_9() {
    init();
    gst::log::set_default_threshold(gst::DebugLevel::Memdump);
    gst::log::remove_default_log_function();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    gst::log::add_log_function(move |cat, _level, _file, _func, _line, obj, msg| {
        // Only the demuxer's and its neighbours' output is kept (everything at 9 is huge).
        let name = cat.name();
        if name.starts_with("amzdash") || name == "GST_EVENT" || name == "qtdemux" {
            let o = obj.map(|o| o.to_string()).unwrap_or_default();
            l2.lock()
                .unwrap()
                .push(format!("{name} {o} {}", msg.get().unwrap_or_default()));
        }
    });
    let emu = Emulator::in_process(Addressing::List);
    let track = "B0EMUHD001";
    // Collect what must never appear: header token values and URL signatures of every audio
    // object this emulator hands out during the test (the refresh issues new ones).
    let bw = bandwidth_of(&emu, track, "flac-44k16");
    let out = play(&emu, track, Tier::Hd, &format!("max-bitrate={bw}"), |emu| {
        emu.fault(serde_json::json!({
            "path_contains": "flac",
            "count": 1,
            "action": {"status": 403},
        }));
    });
    gst::log::set_default_threshold(gst::DebugLevel::None);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.refresh_queries.len(), 1);
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.len() > 50,
        "too few log lines to mean anything: {}",
        lines.len()
    );
    assert!(
        lines.iter().any(|l| l.contains("refreshed")),
        "no refresh logged"
    );
    // URLs are logged (redacted), so the checks below look at lines that name them.
    assert!(lines
        .iter()
        .any(|l| l.contains("/cdn/B0EMUHD001/manifest.mpd?…")));
    // A fresh audio object has the same shape; its secrets are the kind we look for.
    let probe = issue_audio_object(emu.state(), track, Tier::Hd, None).unwrap();
    let sig = probe
        .manifest_url
        .split("sig=")
        .nth(1)
        .map(|s| s.split('&').next().unwrap().to_string())
        .expect("signed URL");
    assert!(sig.len() >= 16);
    for l in &lines {
        assert!(!l.contains("sig="), "signed query in log: {l}");
        for (_, v) in probe
            .audio_segment_headers
            .iter()
            .chain(&probe.manifest_headers)
        {
            assert!(!l.contains(v.as_str()), "header value in log: {l}");
        }
    }
    // The tokens actually used differ per audio object; no line may carry any token-shaped
    // value of the header names either.
    let names: Vec<String> = probe
        .audio_segment_headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    for l in &lines {
        for n in &names {
            assert!(!l.to_ascii_lowercase().contains(&format!("{n}:")), "{l}");
            assert!(!l.to_ascii_lowercase().contains(&format!("{n}=")), "{l}");
        }
    }
}
