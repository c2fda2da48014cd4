//! Expiries mid-track against a real emulator process: the audio object (its URLs and headers),
//! the LWA access token (ahead of expiry, and on a 401) and the license each expire while the
//! HD track plays, and the track still comes out whole: sample-identical to the source, with
//! continuous timestamps, and the request log shows exactly one refresh.
//!
//! Real time is spent only where it must pass: the holding appsink stops pulling at 1 s of
//! audio (the demuxer's 2 s buffer then stops the downloads) until the expiry is due, and the
//! rest of the track decodes as fast as it can. Tests run one at a time: each applies its own
//! emulator's --env-file to this process.

use amzmusic_tests::*;
use gst::prelude::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const HD: &str = "B0EMUHD001";
static SERIAL: Mutex<()> = Mutex::new(());

fn pipeline(decryptor_props: &str) -> String {
    // flac-44k16 only (max-bitrate), so the output compares with one source representation.
    format!(
        "amazonmusicsrc track-id={HD} ! amzdashdemux max-bitrate=1000000 buffer-time=2000000000 ! \
         qtdemux ! widevinedecrypt {decryptor_props} ! flacparse ! flacdec ! appsink name=sink"
    )
}

/// Plays the HD track, holding the pipeline at 1 s of audio until `hold_until()` (measured
/// from the first buffer) has passed; `on_first_buffer` runs once, before the hold.
fn play_holding(
    desc: &str,
    mut on_first_buffer: impl FnMut(),
    hold_until: impl Fn(Instant) -> Instant,
) -> Played {
    let mut first: Option<Instant> = None;
    let mut held = false;
    play_launch(desc, Duration::from_secs(60), |p| {
        let now = Instant::now();
        if first.is_none() {
            first = Some(now);
            on_first_buffer();
        }
        let (pts, _) = *p.timestamps.last().unwrap();
        if !held && pts >= 1_000_000_000 {
            held = true;
            let until = hold_until(first.unwrap());
            if until > now {
                std::thread::sleep(until - now);
            }
        }
    })
    .unwrap()
}

/// The track is whole: the source's samples exactly, and no PTS jump anywhere (the 30 s
/// clear/encrypted boundary included).
fn assert_whole_track(what: &str, p: &Played) {
    if let Err(e) = p.ok() {
        panic!("{what}: {e}");
    }
    let want = source_pcm(HD, "flac-44k16");
    assert_same_pcm(&p.bytes, &want, 4, what);
    let jumps = timestamp_jumps(&p.timestamps);
    assert!(
        jumps.is_empty(),
        "{what}: PTS jumps (buffer, pts, expected): {jumps:?}"
    );
}

fn count(log: &[LoggedRequest], method: &str, path_prefix: &str) -> usize {
    log.iter()
        .filter(|r| r.method == method && r.path.starts_with(path_prefix))
        .count()
}

fn audio_object_path() -> String {
    format!("/v1/tracks/{HD}/audio")
}

/// The distinct `ao=` values of the CDN's segment requests, in the order they were first used.
fn audio_objects_used(log: &[LoggedRequest]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for r in log
        .iter()
        .filter(|r| r.service == "cdn" && r.path.contains(".mp4"))
    {
        let ao = r
            .path
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("ao="))
            .unwrap_or_default()
            .to_string();
        if seen.last() != Some(&ao) {
            seen.push(ao);
        }
    }
    seen
}

fn failed(log: &[LoggedRequest]) -> Vec<String> {
    log.iter()
        .filter(|r| r.status >= 400)
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

#[test]
fn audio_object_expiring_mid_track_is_refreshed_once_with_no_gap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 35 s: the demuxer refreshes 30 s before expiry, i.e. 5 s after receipt (the source's own
    // schedule, 70 % of the lifetime, is 24.5 s away). The refreshed object lives an hour.
    let e = EmulatorEnv::start(&["--audio-object-lifetime", "35"]).unwrap();
    e.prepare(&[HD]).unwrap();
    e.apply();
    let p = play_holding(
        &pipeline(""),
        || e.configure(r#"{"audio_object_lifetime_s": 3600}"#).unwrap(),
        |first| first + Duration::from_millis(6_000),
    );
    assert_whole_track("audio object expiry", &p);
    let log = e.requests().unwrap();
    assert_eq!(failed(&log), Vec::<String>::new(), "failed requests");
    assert_eq!(count(&log, "GET", &audio_object_path()), 2, "one refresh");
    let used = audio_objects_used(&log);
    assert_eq!(
        used.len(),
        2,
        "segments moved to the new audio object once: {used:?}"
    );
}

#[test]
fn access_token_expiring_mid_track_is_refreshed_once_ahead_of_expiry() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A 4 s token from the token file (whose expiry the element knows: the environment's bare
    // AMAZONMUSIC_ACCESS_TOKEN would hide it) is refreshed at 80 % of its life; the audio
    // object refresh at 5 s then needs the new token.
    let e =
        EmulatorEnv::start(&["--token-lifetime", "4", "--audio-object-lifetime", "35"]).unwrap();
    e.prepare(&[HD]).unwrap();
    e.apply();
    std::env::remove_var("AMAZONMUSIC_ACCESS_TOKEN");
    let p = play_holding(
        &pipeline(""),
        || {
            e.configure(r#"{"token_lifetime_s": 3600, "audio_object_lifetime_s": 3600}"#)
                .unwrap()
        },
        |first| first + Duration::from_millis(6_000),
    );
    assert_whole_track("access token expiry", &p);
    let log = e.requests().unwrap();
    assert_eq!(failed(&log), Vec::<String>::new(), "failed requests");
    assert_eq!(
        count(&log, "POST", "/auth/o2/token"),
        1,
        "one token refresh"
    );
    assert_eq!(count(&log, "GET", &audio_object_path()), 2);
    let token_at = log
        .iter()
        .find(|r| r.path.starts_with("/auth/o2/token"))
        .unwrap()
        .at_ms;
    let second_ao_at = log
        .iter()
        .filter(|r| r.path.starts_with(&audio_object_path()))
        .nth(1)
        .unwrap()
        .at_ms;
    assert!(
        token_at <= second_ao_at,
        "the token was refreshed before it was needed again"
    );
}

#[test]
fn access_token_unknown_lifetime_is_refreshed_once_on_401() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // AMAZONMUSIC_ACCESS_TOKEN (from the env file) has no known expiry: the first call after it
    // expired (the audio object refresh at 5 s) gets 401, the element refreshes once and retries.
    let e =
        EmulatorEnv::start(&["--token-lifetime", "3", "--audio-object-lifetime", "35"]).unwrap();
    e.prepare(&[HD]).unwrap();
    e.apply();
    let p = play_holding(
        &pipeline(""),
        || {
            e.configure(r#"{"token_lifetime_s": 3600, "audio_object_lifetime_s": 3600}"#)
                .unwrap()
        },
        |first| first + Duration::from_millis(6_000),
    );
    assert_whole_track("access token 401", &p);
    let log = e.requests().unwrap();
    assert_eq!(
        count(&log, "POST", "/auth/o2/token"),
        1,
        "one token refresh"
    );
    let unauthorized: Vec<_> = log.iter().filter(|r| r.status == 401).collect();
    assert_eq!(unauthorized.len(), 1, "one 401: {unauthorized:?}");
    assert!(unauthorized[0].path.starts_with(&audio_object_path()));
    assert_eq!(
        failed(&log).len(),
        1,
        "nothing failed but the 401: {:?}",
        failed(&log)
    );
}

/// Plays the HD track with a 6 s license (renewed at 4.8 s), holding the output at 1 s of
/// audio until the first license has expired (6.5 s after its request was seen).
fn play_past_the_first_license(e: &EmulatorEnv) -> Played {
    let license_seen = std::cell::Cell::new(None::<Instant>);
    play_holding(
        &pipeline("license-expiration-secs=6"),
        || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if count(&e.requests().unwrap(), "POST", "/license/") > 0 {
                    license_seen.set(Some(Instant::now()));
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("no license request within 5 s of the first buffer");
        },
        |_| license_seen.get().unwrap() + Duration::from_millis(6_500),
    )
}

#[test]
fn a_license_401_makes_the_source_refresh_the_token_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The license server's 401 on the renewal goes upstream as `reason=unauthorized`; the
    // source refreshes the token (its own calls never met the 401) and the renewal is retried
    // with the new one.
    let e =
        EmulatorEnv::start(&["--token-lifetime", "3", "--audio-object-lifetime", "3600"]).unwrap();
    e.prepare(&[HD]).unwrap();
    e.apply();
    let p = play_past_the_first_license(&e);
    assert_whole_track("license 401", &p);
    let log = e.requests().unwrap();
    assert_eq!(
        count(&log, "POST", "/auth/o2/token"),
        1,
        "one token refresh"
    );
    let unauthorized: Vec<_> = log.iter().filter(|r| r.status == 401).collect();
    assert_eq!(unauthorized.len(), 1, "one 401: {unauthorized:?}");
    assert!(unauthorized[0].path.starts_with("/license/"));
    assert_eq!(failed(&log).len(), 1, "nothing failed but the 401");
    assert_eq!(
        count(&log, "POST", "/license/"),
        3,
        "the license, the refused renewal and its retry"
    );
    assert_eq!(
        count(&log, "GET", &audio_object_path()),
        1,
        "no music API call"
    );
}

#[test]
fn a_license_401_with_a_token_that_cannot_be_refreshed_says_so() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Only the environment's access token: no token file, so no refresh token.
    let e =
        EmulatorEnv::start(&["--token-lifetime", "3", "--audio-object-lifetime", "3600"]).unwrap();
    e.prepare(&[HD]).unwrap();
    e.apply();
    let dir = temp_dir("no-token-file-");
    std::env::set_var("AMAZONMUSIC_TOKEN_FILE", dir.path().join("absent.json"));
    let p = play_past_the_first_license(&e);
    let (gerror, from) = p.gerror.clone().expect("an error");
    assert_eq!(
        gerror.kind::<gst::ResourceError>(),
        Some(gst::ResourceError::NotAuthorized),
        "{gerror:?} from {from}"
    );
    assert!(
        from.starts_with("amazonmusicsrc"),
        "posted by the source: {from}"
    );
    let message = gerror.message().to_string();
    assert!(
        message.contains("refused (401)") && message.contains("cannot be refreshed"),
        "{message}"
    );
    assert!(
        p.error.as_deref().unwrap().contains("no refresh token"),
        "the detail says why: {:?}",
        p.error
    );
    let log = e.requests().unwrap();
    assert_eq!(count(&log, "POST", "/auth/o2/token"), 0);
    assert_eq!(
        log.iter().filter(|r| r.status == 401).count(),
        1,
        "no retry with the refused token"
    );
}

#[test]
fn license_expiring_mid_track_is_renewed_once_with_no_gap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let e = EmulatorEnv::start(&[]).unwrap();
    e.prepare(&[HD]).unwrap();
    e.apply();
    // A 6 s license is renewed at 80 % (4.8 s); the hold lasts until the first license has
    // expired, so the encrypted half decrypts with the renewed keys only. The next renewal
    // (9.6 s) is after the track has finished decoding.
    let p = play_past_the_first_license(&e);
    assert_whole_track("license expiry", &p);
    let log = e.requests().unwrap();
    assert_eq!(failed(&log), Vec::<String>::new(), "failed requests");
    assert_eq!(
        count(&log, "POST", "/license/"),
        2,
        "one license and one renewal"
    );
}

/// The license is fetched during the clear lead: with the output held at 1 s of audio (the
/// demuxer's 2 s buffer keeps it from downloading past the first, clear, segment), the
/// emulator's log shows the license POST answered; the track then plays whole with that one
/// license, and the decryptor never waits for a key.
#[test]
fn license_is_fetched_once_during_the_clear_lead() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let e = EmulatorEnv::start(&[]).unwrap();
    e.prepare(&[HD]).unwrap();
    e.apply();
    let (pipeline, sink) = launch_holding(&pipeline("")).unwrap();
    let waits = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let w = waits.clone();
    pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
        if let gst::MessageView::Element(el) = msg.view() {
            if let Some(s) = el.structure() {
                if s.name() == "widevinedecrypt-waiting-for-key" {
                    w.lock().unwrap().push(s.to_string());
                }
            }
        }
        gst::BusSyncReply::Pass
    });
    let mut licensed_at_pts = None;
    let p = play_to_end(&pipeline, &sink, Duration::from_secs(60), |p| {
        let (pts, _) = *p.timestamps.last().unwrap();
        if licensed_at_pts.is_some() || pts < 1_000_000_000 {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let log = e.requests().unwrap();
            if log
                .iter()
                .any(|r| r.method == "POST" && r.path.starts_with("/license/") && r.status == 200)
            {
                licensed_at_pts = Some(pts);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no license answered within 10 s while the output was held at {pts} ns");
    });
    let at = licensed_at_pts.expect("the output reached 1 s");
    assert!(
        at < 30_000_000_000,
        "licensed while the output was at {at} ns: inside the 30 s clear lead"
    );
    assert_whole_track("license during the clear lead", &p);
    let log = e.requests().unwrap();
    assert_eq!(failed(&log), Vec::<String>::new(), "failed requests");
    assert_eq!(count(&log, "POST", "/license/"), 1, "exactly one license");
    assert_eq!(
        *waits.lock().unwrap(),
        Vec::<String>::new(),
        "the decryptor never waited for a key"
    );
}
