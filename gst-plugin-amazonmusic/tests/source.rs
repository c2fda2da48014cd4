// SPDX-License-Identifier: MPL-2.0
//! amazonmusicsrc against the real emulator process, with an appsink after it: the MPD, the
//! sticky audio-object event, the tags, the refresh query, token handling and every error.

mod common;

use std::time::Duration;

use common::*;
use gst::prelude::*;

const HD: &str = "B0EMUHD001";
const JP_ONLY: &str = "B0EMUJP001";
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn manifest_event_and_tags_reach_downstream() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let run = Running::new(source(&emu, &token_file, HD));
    let sample = run.manifest(WAIT).expect("manifest");

    let caps = sample.caps().unwrap().structure(0).unwrap().to_owned();
    assert_eq!(caps.name(), "application/dash+xml");
    assert_eq!(caps.get::<&str>("source").unwrap(), "amazonmusicsrc");
    let mpd = sample.buffer().unwrap().map_readable().unwrap().to_vec();
    let text = String::from_utf8(mpd).unwrap();
    assert!(
        text.contains("<MPD") && text.contains("codecs=\"flac\""),
        "{text}"
    );

    // The sticky event, as the contract describes it.
    let ev = run.audio_object_event().expect("sticky audio-object event");
    assert_eq!(ev.get::<&str>("track-id").unwrap(), HD);
    assert_eq!(ev.get::<u32>("generation").unwrap(), 1);
    let expires = ev.get::<u64>("expires").unwrap();
    let now = gstamazonmusic::token::now_unix();
    assert!(
        expires > now + 3000 && expires <= now + 3601,
        "{expires} vs {now}"
    );
    assert_eq!(ev.get::<&str>("quality").unwrap(), "SD,HD,UHD,ATMOS");
    let creds = credentials(&ev);
    assert_eq!(creds.type_().name(), "AmzMusicCredentials");
    let auth = creds.property::<String>("authorization");
    assert!(auth.starts_with("Bearer Atza|"), "{}", auth.len());
    let seg = headers(&creds, "segment-headers");
    assert_eq!(seg[0].0, "x-amz-music-segment-token");
    assert_eq!(headers(&creds, "key-headers")[0].0, "x-amz-music-key-token");
    assert!(creds
        .property::<String>("user-agent")
        .starts_with("gst-amazonmusic/"));

    // What the event carries works: the manifest URL with its headers is served.
    let uri = creds.property::<String>("manifest-uri");
    let (status, _) =
        amzmusic_tests::http_get_with(&uri, &headers(&creds, "manifest-headers")).unwrap();
    assert_eq!(status, 200);

    // Tags, before the MPD buffer (sticky on the appsink's pad).
    let tags = run.tags();
    assert_eq!(
        tags.get::<gst::tags::Title>().unwrap().get(),
        "Harbour Lights"
    );
    assert_eq!(
        tags.get::<gst::tags::Artist>().unwrap().get(),
        "The Loopback Ensemble"
    );
    assert_eq!(tags.get::<gst::tags::Album>().unwrap().get(), "Signals");
    assert_eq!(
        tags.get::<gst::tags::AlbumArtist>().unwrap().get(),
        "The Loopback Ensemble"
    );
    assert_eq!(tags.get::<gst::tags::TrackNumber>().unwrap().get(), 1);
    assert_eq!(tags.get::<gst::tags::AlbumVolumeNumber>().unwrap().get(), 1);
    assert_eq!(
        tags.get::<gst::tags::Duration>().unwrap().get(),
        gst::ClockTime::from_seconds(60)
    );
    assert_eq!(tags.get::<gst::tags::ISRC>().unwrap().get(), "QZEMU2600101");
    assert!(!tags
        .generic("amazonmusic-explicit")
        .unwrap()
        .get::<bool>()
        .unwrap());
    let image = tags.get::<gst::tags::Image>().unwrap().get();
    assert_eq!(
        image.caps().unwrap().structure(0).unwrap().name(),
        "image/png"
    );
    assert!(image.buffer().unwrap().size() > 100);
    drop(run);

    // One audio object, one metadata query, no refresh.
    assert_eq!(emu.audio_calls(HD).len(), 1);
    assert_eq!(emu.calls("POST", "/graphql").len(), 1);
    assert!(emu.token_calls().len() == 1, "only the sign-in poll");
}

#[test]
fn explicit_flag_and_market() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let src = source(&emu, &token_file, JP_ONLY);
    src.set_property("market", "jp");
    let run = Running::new(src);
    run.manifest(WAIT).expect("JP track plays in market JP");
    let tags = run.tags();
    assert!(tags
        .generic("amazonmusic-explicit")
        .unwrap()
        .get::<bool>()
        .unwrap());
    // The market goes to the license server with the key headers.
    let creds = credentials(&run.ask("lookup", 0).unwrap());
    assert!(headers(&creds, "key-headers").contains(&("x-amzn-market".into(), "JP".into())));
}

#[test]
fn jp_only_track_in_us_is_not_authorized_with_the_reason() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let run = Running::new(source(&emu, &token_file, JP_ONLY));
    let (err, _) = run.error(WAIT);
    assert!(err.matches(gst::ResourceError::NotAuthorized), "{err:?}");
    assert!(
        err.message().contains(JP_ONLY) && err.message().contains("not_available_in_market"),
        "{}",
        err.message()
    );
}

#[test]
fn unknown_track_is_not_found() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let run = Running::new(source(&emu, &token_file, "B0NOSUCH01"));
    let (err, _) = run.error(WAIT);
    assert!(err.matches(gst::ResourceError::NotFound), "{err:?}");
    assert!(err.message().contains("B0NOSUCH01"), "{}", err.message());
}

#[test]
fn refused_refresh_token_asks_to_run_amzmusic_login() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let path = dir.path().join("token.json");
    gstamazonmusic::token::TokenFile {
        access_token: gstamazonmusic::http::Secret::new("Atza|long-expired"),
        refresh_token: Some(gstamazonmusic::http::Secret::new("Atzr|revoked")),
        issued_at: 1_000_000,
        expires_at: 1_003_600,
        client_id: Some(CLIENT_ID.into()),
        ..Default::default()
    }
    .save_atomic(&path)
    .unwrap();
    let run = Running::new(source(&emu, &path, HD));
    let (err, _) = run.error(WAIT);
    assert!(err.matches(gst::ResourceError::NotAuthorized), "{err:?}");
    assert!(
        err.message().contains("amzmusic-login"),
        "{}",
        err.message()
    );
    assert_eq!(
        emu.token_calls(),
        vec![("/auth/o2/token".to_string(), 400)],
        "one refresh attempt, refused"
    );
    assert!(emu.audio_calls(HD).is_empty());
}

#[test]
fn unauthorized_token_is_refreshed_once_and_written_back() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let before = gstamazonmusic::token::TokenFile::load(&token_file).unwrap();
    // A token the API does not know (revoked, or from another session): 401, then one refresh.
    let src = source(&emu, &token_file, HD);
    src.set_property("access-token", "Atza|not-issued-by-this-lwa");
    let run = Running::new(src);
    run.manifest(WAIT).expect("manifest after one refresh");
    let statuses: Vec<u16> = emu.audio_calls(HD).into_iter().map(|(_, s)| s).collect();
    assert_eq!(statuses, vec![401, 200]);
    assert_eq!(emu.token_calls().len(), 2, "sign-in poll + one refresh");
    let after = gstamazonmusic::token::TokenFile::load(&token_file).unwrap();
    assert_ne!(after.access_token, before.access_token);
    assert_eq!(after.refresh_token, before.refresh_token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn concurrent_askers_cause_one_refresh_and_lookups_none() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let run = Running::new(source(&emu, &token_file, HD));
    run.manifest(WAIT).unwrap();
    let first_uri = credentials(&run.ask("lookup", 0).unwrap()).property::<String>("manifest-uri");

    // Four askers holding generation 1 at once (403 on a segment, say).
    let answers: Vec<u32> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let sink = run.sink.clone();
                s.spawn(move || {
                    ask(&sink, "forbidden", 1)
                        .expect("answered")
                        .get::<u32>("generation")
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers, vec![2, 2, 2, 2]);
    assert_eq!(emu.audio_calls(HD).len(), 2, "one refresh for four askers");

    // An asker still on generation 1 gets the current one without an API call; so does a
    // lookup.
    let late = run.ask("expiring", 1).unwrap();
    assert_eq!(late.get::<u32>("generation").unwrap(), 2);
    let look = run.ask("lookup", 0).unwrap();
    assert_eq!(look.get::<u32>("generation").unwrap(), 2);
    assert_eq!(emu.audio_calls(HD).len(), 2);
    let uri = credentials(&look).property::<String>("manifest-uri");
    assert_ne!(uri, first_uri, "a new audio object");
    assert_eq!(look.get::<&str>("track-id").unwrap(), HD);

    // A demuxer whose schedule says "expiring" about an object fetched a moment ago gets that
    // one back: no API call (no refresh storm when lifetimes are short).
    let again = run.ask("expiring", 2).unwrap();
    assert_eq!(again.get::<u32>("generation").unwrap(), 2);
    assert_eq!(emu.audio_calls(HD).len(), 2);
}

#[test]
fn short_lived_audio_object_is_refreshed_once_ahead_of_expiry() {
    // Lifetime 8 s (7-8 s once `expires` is truncated to the second): the source refreshes at
    // 70 %, 4.9-5.6 s in, and the next would come ≥ 4.9 s after that; at 7.5 s exactly one
    // refresh has happened, with ≈ 2 s of margin either way for a loaded machine.
    let emu = Emulator::start(&["--audio-object-lifetime", "8"]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let run = Running::new(source(&emu, &token_file, HD));
    run.manifest(WAIT).unwrap();
    let started = std::time::Instant::now();
    let first = run.ask("lookup", 0).unwrap();
    assert_eq!(first.get::<u32>("generation").unwrap(), 1);
    std::thread::sleep(Duration::from_millis(7500).saturating_sub(started.elapsed()));
    let now = run.ask("lookup", 0).unwrap();
    assert_eq!(now.get::<u32>("generation").unwrap(), 2);
    assert!(now.get::<u64>("expires").unwrap() > first.get::<u64>("expires").unwrap());
    assert_eq!(
        emu.audio_calls(HD).len(),
        2,
        "exactly one refresh ahead of expiry"
    );
}

#[test]
fn access_token_expiring_mid_run_is_refreshed_once_and_written_back() {
    // Tokens live 10 s; the source refreshes one fifth before expiry, 7-8 s after issue (the
    // file keeps whole seconds), and the next one 7 s later; at 10.5 s the first token has
    // expired and exactly one refresh happened, with ≥ 2.5 s of margin either way.
    let emu = Emulator::start(&["--token-lifetime", "10"]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let before = gstamazonmusic::token::TokenFile::load(&token_file).unwrap();
    let issued = std::time::Instant::now();
    let run = Running::new(source(&emu, &token_file, HD));
    run.manifest(WAIT).unwrap();
    std::thread::sleep(Duration::from_millis(10_500).saturating_sub(issued.elapsed()));
    // The first token has expired by now; the file holds the refreshed one.
    let after = gstamazonmusic::token::TokenFile::load(&token_file).unwrap();
    assert_ne!(after.access_token, before.access_token);
    assert_eq!(after.refresh_token, before.refresh_token);
    assert_eq!(emu.token_calls().len(), 2, "sign-in poll + one refresh");
    let look = run.ask("lookup", 0).unwrap();
    assert_eq!(
        credentials(&look).property::<String>("authorization"),
        format!("Bearer {}", after.access_token.expose())
    );
    // And the API takes it: a refresh of the audio object with the new token succeeds.
    let next = run.ask("forbidden", 1).unwrap();
    assert_eq!(next.get::<u32>("generation").unwrap(), 2);
    let statuses: Vec<u16> = emu.audio_calls(HD).into_iter().map(|(_, s)| s).collect();
    assert_eq!(statuses, vec![200, 200]);
    // No temporary file left next to it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_late_cover_does_not_hold_the_manifest_back() {
    // The cover answers 3 s late: the manifest (and the tags without the image) go on at
    // once, and the image follows in a tag message when it comes.
    let emu = Emulator::start(&[]).unwrap();
    emu.prepare(&[HD]).expect("preparing the track");
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    emu.fault(serde_json::json!({"path_contains": "/images/", "action": {"delay": {"ms": 3000}}}));
    let t = std::time::Instant::now();
    let run = Running::new(source(&emu, &token_file, HD));
    run.manifest(WAIT).expect("manifest");
    assert!(
        t.elapsed() < Duration::from_millis(2000),
        "{:?}",
        t.elapsed()
    );
    let tags = run.tags();
    assert_eq!(
        tags.get::<gst::tags::Title>().unwrap().get(),
        "Harbour Lights"
    );
    assert!(tags.get::<gst::tags::Image>().is_none());
    let bus = run.pipeline.bus().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let image = loop {
        assert!(std::time::Instant::now() < deadline, "no late cover");
        let Some(m) =
            bus.timed_pop_filtered(gst::ClockTime::from_mseconds(100), &[gst::MessageType::Tag])
        else {
            continue;
        };
        if let gst::MessageView::Tag(t) = m.view() {
            if let Some(i) = t.tags().get::<gst::tags::Image>() {
                break i.get().clone();
            }
        }
    };
    assert_eq!(
        image.caps().unwrap().structure(0).unwrap().name(),
        "image/png"
    );
    assert!(t.elapsed() >= Duration::from_millis(3000));
}

#[test]
fn network_failures_are_retried() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    emu.fault(
        serde_json::json!({"path_contains": "/v1/tracks/", "count": 2, "action": {"status": 503}}),
    );
    let run = Running::new(source(&emu, &token_file, HD));
    run.manifest(WAIT).expect("third attempt succeeds");
    let statuses: Vec<u16> = emu.audio_calls(HD).into_iter().map(|(_, s)| s).collect();
    assert_eq!(statuses, vec![503, 503, 200]);
}

#[test]
fn network_failure_after_retries_is_open_read() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    emu.fault(serde_json::json!({"path_contains": "/v1/tracks/", "count": 100, "action": "reset"}));
    let run = Running::new(source(&emu, &token_file, HD));
    let (err, debug) = run.error(WAIT);
    assert!(err.matches(gst::ResourceError::OpenRead), "{err:?}");
    assert!(debug.contains("4 attempt"), "{debug}");
    assert_eq!(emu.audio_calls(HD).len(), 4);
}

#[test]
fn album_uris_are_refused_with_a_reason() {
    init();
    let e = gst::Element::make_from_uri(gst::URIType::Src, "amazonmusic://album/B0EMUALB01", None);
    assert!(e.is_err(), "album URIs are for the player to resolve");
    let src =
        gst::Element::make_from_uri(gst::URIType::Src, "amazonmusic://track/B0EMUHD001", None)
            .unwrap();
    assert_eq!(
        src.property::<Option<String>>("track-id").as_deref(),
        Some("B0EMUHD001")
    );
}

#[test]
fn no_token_at_all_is_not_authorized() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let run = Running::new(source(&emu, &dir.path().join("missing.json"), HD));
    let (err, _) = run.error(WAIT);
    assert!(err.matches(gst::ResourceError::NotAuthorized), "{err:?}");
    assert!(
        err.message().contains("amzmusic-login"),
        "{}",
        err.message()
    );
}

#[test]
fn unreadable_ca_file_is_a_settings_error() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let src = source(&emu, &token_file, HD);
    src.set_property("ca-file", dir.path().join("nope.pem").to_str().unwrap());
    let run = Running::new(src);
    let (err, _) = run.error(WAIT);
    assert!(err.matches(gst::ResourceError::Settings), "{err:?}");
    assert!(err.message().contains("ca-file"), "{}", err.message());
}

#[test]
fn feature_flags_and_album_lists() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let src = source(&emu, &token_file, HD);
    src.set_property("feature-flags", "trace");
    let run = Running::new(src);
    run.manifest(WAIT).unwrap();
    let gql = emu
        .request_log()
        .into_iter()
        .rfind(|r| r["service"] == "graphql")
        .unwrap();
    assert!(
        gql["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "x-amzn-feature-flags"),
        "{gql}"
    );

    // The API client's album and playlist lookups (the player resolves albums with them).
    let cfg = gstamazonmusic::config::resolve(
        &gstamazonmusic::config::Overrides {
            api_endpoint: Some(emu.base_url.clone()),
            lwa_endpoint: Some(emu.base_url.clone()),
            api_key: Some(gstamazonmusic::http::Secret::new(API_KEY)),
            token_file: Some(token_file.clone()),
            ..Default::default()
        },
        |_| None,
    )
    .unwrap();
    let session = gstamazonmusic::session::Session::new(cfg, HD, "SD,HD").unwrap();
    let rt = &gstamazonmusic::http::RUNTIME;
    let album = rt.block_on(session.api.album_tracks("B0EMUALB01")).unwrap();
    let ids: Vec<&str> = album.tracks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["B0EMUAL001", "B0EMUAL002", "B0EMUAL003"]);
    assert_eq!(album.tracks[1].track_number, Some(2));
    let pl = rt
        .block_on(session.api.playlist_tracks("B0EMUPL001"))
        .unwrap();
    assert_eq!(pl.tracks.len(), 3);
    assert_eq!(pl.tracks[0].id, HD);
    assert!(matches!(
        rt.block_on(session.api.album_tracks("B0NOALBUM1")),
        Err(gstamazonmusic::api::ApiError::NotFound { .. })
    ));
}

#[test]
fn stopping_interrupts_a_stalled_request_at_once() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    // The music API never answers (until the request timeout, 15 s).
    emu.fault(
        serde_json::json!({"path_contains": "/v1/tracks/", "action": {"stall": {"seconds": 60}}}),
    );
    let run = Running::new(source(&emu, &token_file, HD));
    std::thread::sleep(Duration::from_millis(500));
    let t = std::time::Instant::now();
    run.pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "NULL took {:?}",
        t.elapsed()
    );
}

/// A body without end (a broken or hostile server) is refused at its limit: the manifest at
/// 8 MiB, an audio object at 4 MiB, each a clear error after one request, not gigabytes of
/// memory and not a retry.
#[test]
fn an_endless_body_is_refused_at_its_limit() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let endless = serde_json::json!({"oversize": {"bytes": 1u64 << 40}});
    emu.fault(serde_json::json!({"path_contains": "/manifest.mpd", "action": endless}));
    let run = Running::new(source(&emu, &token_file, HD));
    let (err, debug) = run.error(WAIT);
    assert!(err.matches(gst::ResourceError::OpenRead), "{err:?}");
    assert!(err.message().contains("manifest"), "{err:?}");
    assert!(
        debug.contains("larger than the 8388608 bytes allowed"),
        "{debug}"
    );
    let manifests = emu.calls("GET", &format!("/cdn/{HD}/manifest.mpd"));
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    drop(run);

    emu.clear_faults();
    let before = emu.audio_calls(HD).len();
    emu.fault(serde_json::json!({"path_contains": "/v1/tracks/", "action": endless}));
    let run = Running::new(source(&emu, &token_file, HD));
    let (_, debug) = run.error(WAIT);
    assert!(
        debug.contains("larger than the 4194304 bytes allowed"),
        "{debug}"
    );
    assert_eq!(emu.audio_calls(HD).len(), before + 1);
}

/// A response head that never ends (a 10 MB header) is refused at hyper's head limit (about
/// 400 KiB), at once and without a retry, with a message that says what was wrong.
#[test]
fn a_huge_response_header_is_refused_without_a_retry() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let huge = serde_json::json!({"huge_header": {"bytes": 10_000_000}});
    for (path, what, domain) in [
        ("/manifest.mpd", "manifest", gst::ResourceError::OpenRead),
        ("/v1/tracks/", "audio object", gst::ResourceError::Failed),
    ] {
        emu.clear_faults();
        emu.fault(serde_json::json!({"path_contains": path, "action": huge, "count": 100}));
        let before = emu.calls("GET", path).len();
        let started = std::time::Instant::now();
        let run = Running::new(source(&emu, &token_file, HD));
        let (err, debug) = run.error(WAIT);
        assert!(err.matches(domain), "{what}: {err:?}");
        assert!(
            debug.contains("the request cannot be made: the response's head cannot be read")
                && debug.contains("message head is too large"),
            "{what}: {debug}"
        );
        assert_eq!(
            emu.calls("GET", path).len(),
            before + 1,
            "{what}: one request"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        drop(run);
    }
}

/// A service whose clock is an hour behind ours hands out audio objects that look expired here.
/// The `Date` header puts their expiry on our clock, so the source neither takes each for
/// expired nor asks for the next at once: one API call, and the event's `expires` is a
/// minute from now on this machine.
#[test]
fn a_server_clock_an_hour_behind_causes_no_refresh_storm() {
    let emu =
        Emulator::start(&["--clock-offset", "-3600", "--audio-object-lifetime", "60"]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    let run = Running::new(source(&emu, &token_file, HD));
    run.manifest(WAIT).expect("manifest");
    // What a demuxer whose schedule reads the expiry asks: "expiring", again and again.
    for _ in 0..20 {
        let held = run
            .ask("lookup", 0)
            .unwrap()
            .get::<u32>("generation")
            .unwrap();
        run.ask("expiring", held).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(emu.audio_calls(HD).len(), 1, "no refresh storm");
    let ev = run.audio_object_event().expect("audio object event");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires = ev.get::<u64>("expires").unwrap();
    assert!(
        expires > now + 45 && expires <= now + 61,
        "expires {expires}, now {now}"
    );
}

/// A redirect loop on the manifest is said as one, at the first redirect back to a URL already
/// visited (`url_policy::redirect_policy`), with no retries: it read "could not be reached"
/// after 55 requests.
#[test]
fn a_redirect_loop_is_said_at_once() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());
    emu.fault(serde_json::json!({"path_contains": "/manifest.mpd", "count": 1000, "action": "redirect_loop"}));
    let run = Running::new(source(&emu, &token_file, HD));
    let (err, debug) = run.error(WAIT);
    assert!(err.matches(gst::ResourceError::OpenRead), "{err:?}");
    assert!(debug.contains("a redirect loop back to"), "{debug}");
    let asked = emu.calls("GET", &format!("/cdn/{HD}/manifest.mpd")).len();
    assert_eq!(asked, 1, "{asked} manifest requests");
}
