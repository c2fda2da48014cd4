//! TLS and proxies end to end, against real emulator processes (`serve --tls`: a CA of its
//! own, HTTPS with HTTP/2 by ALPN): playbin3 plays sample-identical over https with the CA
//! from `AMAZONMUSIC_CA_FILE`; without it the source fails once on certificate verification;
//! a ca-file that cannot be read is each element's settings error; a forward proxy (the
//! `proxy` property of each element, or `https_proxy`/`http_proxy`) carries every request.
//! The environment is process-wide: the tests take turns.

use amzmusic_tests::*;
use gst::prelude::*;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const HD: &str = "B0EMUHD001";
/// The catalogue's shortest track (12 s, JP market only): for the proxy runs.
const SHORT: &str = "B0EMUJP001";
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    let guard = TURN.lock().unwrap_or_else(|e| e.into_inner());
    for k in PROXY_VARS {
        std::env::remove_var(k);
    }
    guard
}

fn tls_env() -> &'static EmulatorEnv {
    static E: OnceLock<EmulatorEnv> = OnceLock::new();
    E.get_or_init(|| {
        let e = EmulatorEnv::start(&["--tls"]).expect("emulator --tls");
        e.prepare(&[HD, SHORT]).unwrap();
        e
    })
}

fn plain_env() -> &'static EmulatorEnv {
    static E: OnceLock<EmulatorEnv> = OnceLock::new();
    E.get_or_init(|| {
        let e = EmulatorEnv::start(&[]).expect("emulator");
        e.prepare(&[SHORT]).unwrap();
        e
    })
}

/// The service requests (not the admin API's) logged since `since`.
fn service_requests(emu: &Emulator, since: u64) -> Vec<LoggedRequest> {
    emu.requests()
        .unwrap()
        .into_iter()
        .filter(|r| r.seq > since && r.service != "admin")
        .collect()
}

fn last_seq(emu: &Emulator) -> u64 {
    emu.requests()
        .unwrap()
        .last()
        .map(|r| r.seq)
        .unwrap_or_default()
}

fn tls_report(emu: &Emulator) -> (u64, u64) {
    let r = emu.get_json("/_emulator/tls");
    (
        r["handshakes"].as_u64().unwrap(),
        r["failed"].as_u64().unwrap(),
    )
}

/// How many logged requests each service got.
fn count(reqs: &[LoggedRequest], service: &str) -> usize {
    reqs.iter().filter(|r| r.service == service).count()
}

#[test]
fn playbin3_over_https_is_sample_identical_and_every_request_is_tls() {
    let _turn = turn();
    let env = tls_env();
    env.apply();
    assert!(env
        .var("AMAZONMUSIC_API_ENDPOINT")
        .unwrap()
        .starts_with("https://"));
    let since = last_seq(env);
    let want = source_pcm(HD, "flac-44k16");
    let (pb, sink) = playbin3(&format!("amazonmusic://track/{HD}"), Some("hd"), None).unwrap();
    pin_max_bitrate(&pb, 1_000_000);
    let p = play_to_end(&pb, &sink, Duration::from_secs(90), |_| {});
    p.ok().unwrap();
    assert_same_pcm(&p.bytes, &want, 4, "flac-44k16 through playbin3 over https");

    let reqs = service_requests(env, since);
    let plain: Vec<_> = reqs.iter().filter(|r| !r.tls).collect();
    assert!(plain.is_empty(), "requests not over TLS: {plain:?}");
    // The audio object, the manifest and the segments, the license: all of them.
    assert!(count(&reqs, "api") >= 1, "{reqs:?}");
    assert!(count(&reqs, "cdn") >= 3, "{reqs:?}");
    assert!(count(&reqs, "license") >= 1, "{reqs:?}");
    assert!(
        reqs.iter()
            .any(|r| r.service == "cdn" && r.http_version == "HTTP/2.0"),
        "HTTP/2 by ALPN: {reqs:?}"
    );
}

#[test]
fn without_the_ca_the_source_fails_once_on_certificate_verification() {
    let _turn = turn();
    let env = tls_env();
    env.apply_except(&["AMAZONMUSIC_CA_FILE"]);
    let since = last_seq(env);
    let (_, failed_before) = tls_report(env);
    let started = Instant::now();
    let (pb, sink) = playbin3(&format!("amazonmusic://track/{HD}"), Some("hd"), None).unwrap();
    let p = play_to_end(&pb, &sink, Duration::from_secs(30), |_| {});
    let took = started.elapsed();
    let (err, src) = p.gerror.clone().expect("an error");
    assert!(
        err.matches(gst::ResourceError::OpenRead),
        "{err} from {src}: {:?}",
        p.error
    );
    assert!(
        src.starts_with("amazonmusicsrc"),
        "{src}: the source reports it"
    );
    assert!(
        err.message()
            .contains("TLS certificate verification failed")
            && err.message().contains("AMAZONMUSIC_CA_FILE"),
        "{:?}",
        p.error
    );
    eprintln!("no-CA error: {}", err.message());
    // One refused handshake per call the source starts with (the music API's audio object
    // and, beside it, FireFly's metadata): no retry (4 attempts each before), and no request
    // got through.
    let (_, failed_after) = tls_report(env);
    let refused = failed_after - failed_before;
    assert!((1..=2).contains(&refused), "{refused} handshakes refused");
    assert!(service_requests(env, since).is_empty());
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_ca_file_or_proxy_that_cannot_be_used_is_each_elements_settings_error() {
    let _turn = turn();
    init_gst();
    let dir = temp_dir("amz-tls-");
    let missing = dir.path().join("missing-ca.pem");
    let missing = missing.to_str().unwrap();
    for (factory, prop, value, want) in [
        (
            "amazonmusicsrc",
            "ca-file",
            missing,
            format!("ca-file {missing}"),
        ),
        (
            "amzdashdemux",
            "ca-file",
            missing,
            format!("ca-file {missing}"),
        ),
        (
            "widevinedecrypt",
            "ca-file",
            missing,
            format!("ca-file {missing}"),
        ),
        (
            "amazonmusicsrc",
            "proxy",
            "ftp://p:21",
            "proxy \"ftp://p:21\"".into(),
        ),
        (
            "amzdashdemux",
            "proxy",
            "http://[::1",
            "proxy \"http://[::1\"".into(),
        ),
        (
            "widevinedecrypt",
            "proxy",
            "socks5://u:pw@h:1",
            "proxy \"socks5://u:<redacted>@h:1\"".into(),
        ),
    ] {
        let e = gst::ElementFactory::make(factory).build().unwrap();
        e.set_property(prop, value);
        if factory == "amazonmusicsrc" {
            e.set_property("track-id", HD);
            e.set_property("api-endpoint", "https://127.0.0.1:9");
            e.set_property("access-token", "Atza|x");
        }
        let pipeline = gst::Pipeline::new();
        pipeline.add(&e).unwrap();
        assert!(
            pipeline.set_state(gst::State::Paused).is_err(),
            "{factory} {prop}"
        );
        let msg = pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
            .unwrap_or_else(|| panic!("{factory} {prop}: no error"));
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        let err = err.error();
        assert!(
            err.matches(gst::ResourceError::Settings),
            "{factory} {prop}: {err}"
        );
        assert!(
            err.message().contains(&want),
            "{factory}: {}",
            err.message()
        );
        assert!(!err.message().contains("pw@"), "{}", err.message());
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

/// Every service request since `since` came through `proxy`, and each of the three
/// elements' services is among them.
fn all_through(proxy: &ForwardProxy, emu: &Emulator, since: u64, tls: bool) {
    let reqs = service_requests(emu, since);
    let direct: Vec<_> = reqs.iter().filter(|r| !proxy.carried(&r.peer)).collect();
    assert!(direct.is_empty(), "requests past the proxy: {direct:?}");
    assert!(reqs.iter().all(|r| r.tls == tls), "{reqs:?}");
    for service in ["api", "cdn", "license"] {
        assert!(count(&reqs, service) >= 1, "no {service} request: {reqs:?}");
    }
    assert!(proxy.refused().is_empty(), "{:?}", proxy.refused());
}

#[test]
fn the_proxy_property_of_each_element_carries_every_request() {
    let _turn = turn();
    let env = tls_env();
    env.apply();
    let proxy = ForwardProxy::start();
    let since = last_seq(env);
    let px = &proxy.url;
    let p = play_launch(
        &format!(
            "amazonmusicsrc track-id={SHORT} market=JP proxy={px} ! amzdashdemux representation=flac-44k16 proxy={px} ! \
             qtdemux ! widevinedecrypt proxy={px} ! flacparse ! flacdec ! appsink name=sink"
        ),
        Duration::from_secs(60),
        |_| {},
    )
    .unwrap();
    p.ok().unwrap();
    all_through(&proxy, env, since, true);
    let host = env.base_url.trim_start_matches("https://").to_string();
    let tunnels = proxy.tunnels();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| *t == host),
        "{tunnels:?}"
    );
    assert!(proxy.forwarded().is_empty());
}

#[test]
fn the_proxy_environment_carries_every_request() {
    let _turn = turn();
    // https through `https_proxy` (CONNECT tunnels) ...
    let env = tls_env();
    env.apply();
    let proxy = ForwardProxy::start();
    std::env::set_var("https_proxy", &proxy.url);
    let since = last_seq(env);
    let (pb, sink) = playbin3(&format!("amazonmusic://track/{SHORT}"), None, Some("JP")).unwrap();
    let p = play_to_end(&pb, &sink, Duration::from_secs(60), |_| {});
    std::env::remove_var("https_proxy");
    p.ok().unwrap();
    all_through(&proxy, env, since, true);
    assert!(!proxy.tunnels().is_empty());

    // ... and plain http through `http_proxy` (absolute-form requests).
    let env = plain_env();
    env.apply_except(&["AMAZONMUSIC_CA_FILE"]);
    let proxy = ForwardProxy::start();
    std::env::set_var("http_proxy", &proxy.url);
    let since = last_seq(env);
    let (pb, sink) = playbin3(&format!("amazonmusic://track/{SHORT}"), None, Some("JP")).unwrap();
    let p = play_to_end(&pb, &sink, Duration::from_secs(60), |_| {});
    std::env::remove_var("http_proxy");
    p.ok().unwrap();
    all_through(&proxy, env, since, false);
    assert!(proxy.tunnels().is_empty());
    assert!(
        proxy
            .forwarded()
            .iter()
            .all(|l| l.contains(&format!(" {}/", env.base_url))),
        "{:?}",
        proxy.forwarded()
    );
}
