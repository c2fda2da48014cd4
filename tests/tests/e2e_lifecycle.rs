//! Pausing, resuming and stopping mid-track (`playbin3`, and the explicit pipeline) leave no
//! thread and no connection behind.
//! A test binary of its own: threads (/proc/self/task) and loopback connections are counted
//! for the whole process, so nothing else may play in it meanwhile.

use amzmusic_tests::*;
use gst::prelude::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One test at a time: each points the process-wide `AMAZONMUSIC_*` environment at its own
/// emulator (a test that finished first stopped the emulator the others' next pipelines were
/// reading: CI saw both explicit-pipeline tests get no buffer in 20 s), and the thread and
/// connection counts are the whole process's.
static SERIAL: Mutex<()> = Mutex::new(());

/// playbin3 for the HD track with amzdashdemux pinned to flac-44k16 (element-setup).
fn pinned_hd_playbin3() -> (gst::Element, gst_app::AppSink) {
    let (pb, sink) = playbin3("amazonmusic://track/B0EMUHD001", Some("hd"), None).unwrap();
    pin_max_bitrate(&pb, 1_000_000);
    (pb, sink)
}

/// Pulls buffers until one reaches `pts`, or fails (naming the pipeline's error if it posted
/// one).
fn pull_until(
    pipeline: &gst::Element,
    sink: &gst_app::AppSink,
    pts: gst::ClockTime,
    last: &mut Option<(u64, u64)>,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let bus = pipeline.bus().unwrap();
    loop {
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                panic!("waiting for {pts}: {} ({:?})", e.error(), e.debug());
            }
        }
        assert!(Instant::now() < deadline, "no buffer reached {pts} in time");
        let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        let b = s.buffer().unwrap();
        let (p, d) = (
            b.pts().unwrap().nseconds(),
            b.duration().unwrap().nseconds(),
        );
        if let Some((lp, ld)) = *last {
            assert!(p.abs_diff(lp + ld) <= 1_000, "PTS jump {} -> {p}", lp + ld);
        }
        *last = Some((p, d));
        if p >= pts.nseconds() {
            return;
        }
    }
}

/// The explicit chain, pinned to flac-44k16, into a holding appsink.
fn pinned_hd_explicit() -> (gst::Element, gst_app::AppSink) {
    launch_holding(
        "amazonmusicsrc track-id=B0EMUHD001 ! amzdashdemux max-bitrate=1000000 ! qtdemux ! \
         widevinedecrypt ! flacparse ! flacdec ! appsink name=sink",
    )
    .unwrap()
}

/// One play / pause / resume / stop-mid-track cycle.
fn pause_resume_stop_cycle(make: fn() -> (gst::Element, gst_app::AppSink)) {
    let (pb, sink) = make();
    pb.set_state(gst::State::Playing).unwrap();
    let mut last = None;
    pull_until(&pb, &sink, gst::ClockTime::from_seconds(1), &mut last);
    pb.set_state(gst::State::Paused).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    pb.set_state(gst::State::Playing).unwrap();
    // Resuming continues where it paused: no jump, no repeat.
    pull_until(&pb, &sink, gst::ClockTime::from_seconds(2), &mut last);
    assert_eq!(
        pb.set_state(gst::State::Null).unwrap(),
        gst::StateChangeSuccess::Success
    );
}

#[test]
fn playbin3_pause_resume_and_stop_mid_track_leave_no_thread_or_connection() {
    no_thread_or_connection_left(pinned_hd_playbin3, 0);
}

/// Threads and connections do not accumulate over stops, and nothing is requested after one.
#[test]
fn explicit_pipeline_pause_resume_and_stop_mid_track_accumulate_no_thread_or_connection() {
    no_thread_or_connection_left(pinned_hd_explicit, 1);
}

#[test]
fn explicit_pipeline_pause_resume_and_stop_mid_track_leave_no_connection() {
    no_thread_or_connection_left(pinned_hd_explicit, 0);
}

/// Runs pause/resume/stop cycles; `allowed_idle` connections may stay open after a stop (a
/// process-wide client's idle pool), but never more after three more cycles.
fn no_thread_or_connection_left(
    make: fn() -> (gst::Element, gst_app::AppSink),
    allowed_idle: usize,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = EmulatorEnv::start(&[]).unwrap();
    e.apply();
    let port = port_of(&e.emu.base_url);
    // The first cycle starts what lives for the whole process (each plugin's network runtime,
    // GStreamer's thread pools); later cycles must not add to it.
    pause_resume_stop_cycle(make);
    std::thread::sleep(Duration::from_millis(500));
    let threads = thread_count();
    let conns_after_first = established_connections_to(port);
    let before = e.requests().unwrap().len();
    for _ in 0..3 {
        pause_resume_stop_cycle(make);
    }
    // Give exiting threads and closing sockets a moment, but no more.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline
        && (thread_count() > threads || established_connections_to(port) > allowed_idle)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        thread_count() <= threads,
        "threads grew from {threads} to {} over 3 cycles",
        thread_count()
    );
    let conns = established_connections_to(port);
    assert!(
        conns <= allowed_idle,
        "{conns} connections to the emulator left open after stopping ({conns_after_first} \
         after the first cycle, {allowed_idle} allowed)"
    );
    // Stopped pipelines stop asking: nothing reaches the emulator once they are gone.
    let settled = e.requests().unwrap().len();
    let late = e.requests_within(Duration::from_millis(500)).unwrap();
    assert!(
        late.is_empty(),
        "requests after every pipeline stopped: {late:?}"
    );
    assert!(settled > before, "the cycles did play");
}
