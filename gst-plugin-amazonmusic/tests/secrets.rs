// SPDX-License-Identifier: MPL-2.0
//! With GST_DEBUG=*:9 captured to a file, a run that resolves a track, refreshes the token
//! after a 401 and refreshes the audio object by query logs none of the secrets it handled.
//! One test in its own process: GST_DEBUG must be set before GStreamer starts.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gst::prelude::*;
use gstamazonmusic::token::TokenFile;

fn secrets_of(creds: &gst::glib::Object) -> Vec<String> {
    let mut out = vec![];
    let auth = creds.property::<String>("authorization");
    out.push(auth.trim_start_matches("Bearer ").to_string());
    let uri = creds.property::<String>("manifest-uri");
    let sig = url::Url::parse(&uri)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.to_string())
        .expect("signed manifest URL");
    out.push(sig);
    for list in ["segment-headers", "manifest-headers", "key-headers"] {
        // The market joins the key headers but is no secret.
        for (_, v) in headers(creds, list)
            .into_iter()
            .filter(|(k, _)| k != "x-amzn-market")
        {
            out.push(v);
        }
    }
    out
}

#[test]
fn nothing_secret_in_gst_debug_9() {
    std::env::set_var("GST_DEBUG", "*:9");
    std::env::set_var("GST_DEBUG_NO_COLOR", "1");
    init();
    // Everything GStreamer logs goes to a file (and not to the terminal).
    let dir = temp_dir();
    let log_path = dir.path().join("gst-debug.log");
    let log = Arc::new(Mutex::new(std::fs::File::create(&log_path).unwrap()));
    gst::log::remove_default_log_function();
    let sink = log.clone();
    gst::log::add_log_function(move |cat, level, file, function, line, obj, msg| {
        // Format before taking the lock: formatting may log (type registration) and re-enter.
        let obj = obj.map(|o| o.to_string()).unwrap_or_default();
        let text = format!(
            "{level:?} {} {file}:{line}:{function}:<{obj}> {}\n",
            cat.name(),
            msg.get().map(|m| m.to_string()).unwrap_or_default()
        );
        let _ = sink.lock().unwrap().write_all(text.as_bytes());
    });
    assert_eq!(
        gst::DebugCategory::get("GST_EVENT").unwrap().threshold(),
        gst::DebugLevel::Memdump,
        "GST_DEBUG=*:9"
    );

    let emu = Emulator::start(&[]).unwrap();
    let token_file = emu.sign_in(dir.path());
    let signed_in = TokenFile::load(&token_file).unwrap();
    let bogus = "Atza|not-issued-so-401-then-refresh-7c1f";
    let src = source(&emu, &token_file, "B0EMUHD001");
    src.set_property("access-token", bogus);
    let run = Running::new(src);
    run.manifest(Duration::from_secs(30)).expect("manifest");
    let first = run.audio_object_event().unwrap();
    let second = run.ask("forbidden", 1).unwrap();
    assert_eq!(second.get::<u32>("generation").unwrap(), 2);
    let mut secrets = vec![
        bogus.to_string(),
        signed_in.access_token.expose().to_string(),
        signed_in.refresh_token.unwrap().expose().to_string(),
        API_KEY.to_string(),
    ];
    secrets.extend(secrets_of(&credentials(&first)));
    secrets.extend(secrets_of(&credentials(&second)));
    drop(run);
    drop(emu);
    let refreshed = TokenFile::load(&token_file).unwrap();
    secrets.push(refreshed.access_token.expose().to_string());

    let text = std::fs::read_to_string(&log_path).unwrap();
    // The log is real and covers what happened.
    assert!(
        text.lines().count() > 1000,
        "{} lines",
        text.lines().count()
    );
    assert!(text.contains("amazonmusic-audio-object"));
    assert!(text.contains("audio object generation 2"));
    for s in &secrets {
        assert!(s.len() >= 8, "secret too short to check: {}", s.len());
        if let Some(at) = text.find(s.as_str()) {
            let line = text[..at].lines().count();
            panic!(
                "a secret ({} chars) is in the GST_DEBUG=*:9 log at line {line}",
                s.len()
            );
        }
    }
}
