//! The license server's error table (docs/license-protocol.md), row by row, against a real
//! emulator process: each status is injected on the license path with the emulator's fault API,
//! and the pipeline `amazonmusicsrc ! amzdashdemux ! qtdemux ! widevinedecrypt ! flacparse !
//! flacdec` either retries and plays the whole track sample-identical to the source, or stops
//! with the documented GStreamer error after exactly the documented number of requests.

use amzmusic_tests::*;
use gst::glib;
use gst::prelude::*;
use std::time::{Duration, Instant};

const HD: &str = "B0EMUHD001";

fn env() -> &'static EmulatorEnv {
    shared_env()
}

struct Outcome {
    error: Option<glib::Error>,
    text: String,
    pcm: Vec<u8>,
}

fn play() -> Outcome {
    let desc = format!(
        "amazonmusicsrc track-id={HD} ! amzdashdemux max-bitrate=1000000 ! qtdemux ! \
         widevinedecrypt ! flacparse ! flacdec ! audio/x-raw,format=S16LE ! \
         appsink name=sink"
    );
    let (pipeline, sink) = launch_holding(&desc).unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out = Outcome {
        error: None,
        text: String::new(),
        pcm: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
            out.pcm
                .extend_from_slice(&s.buffer().unwrap().map_readable().unwrap());
            continue;
        }
        // An error first: after one, qtdemux also sends EOS downstream.
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                out.text = format!("{} ({:?})", e.error(), e.debug());
                out.error = Some(e.error());
            }
            break;
        }
        if sink.is_eos() {
            // Posted between the two checks above: still ours.
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                if let gst::MessageView::Error(e) = msg.view() {
                    out.text = format!("{} ({:?})", e.error(), e.debug());
                    out.error = Some(e.error());
                }
            }
            break;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

fn license_requests() -> usize {
    env()
        .requests()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/license/"))
        .count()
}

/// Injects `status` on the license path for the next `count` requests (all when None).
fn inject(status: u16, count: Option<u32>) {
    let count = count.map_or(String::new(), |c| format!(r#", "count": {c}"#));
    let rule = format!(
        r#"{{"path_contains": "/license/", "method": "POST"{count}, "action": {{"status": {status}}}}}"#
    );
    env().fault(serde_json::from_str(&rule).unwrap());
}

fn clear_faults() {
    env().clear_faults();
}

#[test]
fn every_row_of_the_license_error_table() {
    let _ = env();
    let source = source_pcm(HD, "flac-44k16");
    enum Want {
        Resource(gst::ResourceError),
        Stream(gst::StreamError),
    }
    // Refusals: one request, then the documented error naming the status.
    for (status, want) in [
        (400, Want::Stream(gst::StreamError::Decrypt)),
        (401, Want::Resource(gst::ResourceError::NotAuthorized)),
        (403, Want::Resource(gst::ResourceError::NotAuthorized)),
        (404, Want::Stream(gst::StreamError::DecryptNokey)),
        (418, Want::Stream(gst::StreamError::Decrypt)),
    ] {
        clear_faults();
        // A 403 earns one retry with a refreshed audio object, a 401 one with a refreshed
        // token (issue 20): refuse both.
        let refusals = if status == 403 || status == 401 { 2 } else { 1 };
        inject(status, Some(refusals));
        let before = license_requests();
        let out = play();
        let err = out
            .error
            .unwrap_or_else(|| panic!("{status}: no error ({} bytes played)", out.pcm.len()));
        let ok = match want {
            Want::Resource(e) => err.matches(e),
            Want::Stream(e) => err.matches(e),
        };
        assert!(ok, "{status}: wrong domain/code: {}", out.text);
        // In the message itself (what gst-launch prints first), not only the debug text.
        assert!(
            err.message().contains(&status.to_string()),
            "{status}: the message names the status: {}",
            out.text
        );
        assert_eq!(
            license_requests() - before,
            refusals as usize,
            "{status}: no retry (403: one, with a refreshed audio object; 401: one, with a \
             refreshed token)"
        );
    }
    // Transient failures: retried (429/503 after Retry-After: 1 s), and the track plays whole.
    for status in [429, 500, 502, 503] {
        clear_faults();
        inject(status, Some(1));
        let before = license_requests();
        let out = play();
        assert!(out.error.is_none(), "{status}: {}", out.text);
        assert_same_pcm(&out.pcm, &source, 4, &format!("after a {status}"));
        assert_eq!(license_requests() - before, 2, "{status}: one retry");
    }
    clear_faults();
}

/// A license answer without end is refused at 1 MiB (`body_limit::LICENSE`): one request, a
/// decrypt error saying why, not hundreds of megabytes of memory.
#[test]
fn an_endless_license_answer_is_refused_at_its_limit() {
    let _ = env();
    clear_faults();
    env().fault(serde_json::json!({
        "path_contains": "/license/", "method": "POST",
        "action": {"oversize": {"bytes": 1u64 << 40}}
    }));
    let before = license_requests();
    let out = play();
    clear_faults();
    let err = out.error.expect("an error");
    assert!(err.matches(gst::StreamError::Decrypt), "{}", out.text);
    assert!(
        out.text.contains("larger than the 1048576 bytes allowed"),
        "{}",
        out.text
    );
    assert_eq!(license_requests() - before, 1, "not retried");
}
