//! The CDN, the open mirror, shaping, faults and the request log, exercised over real HTTP
//! against an emulator running in this process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amzmusic_emulator::cdn::{issue_audio_object, AudioObject};
use amzmusic_emulator::content::catalog::{ids, Addressing, Catalog, Tier};
use amzmusic_emulator::content::store::Store;
use amzmusic_emulator::server::{self, AppState, Config, Running};
use reqwest::StatusCode;

fn data_dir() -> PathBuf {
    std::env::var_os("AMZMUSIC_EMULATOR_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("emulator-data"))
}

async fn emulator(open_mirror: bool) -> Running {
    let catalog = Arc::new(Catalog::builtin(None));
    let store = Arc::new(Store::new(&data_dir(), catalog.clone()).unwrap());
    let state = Arc::new(AppState::new(
        catalog,
        store,
        Config {
            audio_object_lifetime_s: 3600,
            token_lifetime_s: 3600,
            addressing: Addressing::List,
            open_mirror,
            ..Config::default()
        },
    ));
    server::start("127.0.0.1:0", state).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn header(list: &[(String, String)]) -> (String, String) {
    list[0].clone()
}

async fn get_manifest(c: &reqwest::Client, ao: &AudioObject) -> reqwest::Response {
    let (k, v) = header(&ao.manifest_headers);
    c.get(&ao.manifest_url).header(k, v).send().await.unwrap()
}

/// (BaseURL, first mediaRange) of the first Representation with `rep_id`.
fn base_and_range(mpd: &str, rep_id: &str) -> (String, (u64, u64)) {
    let rep = &mpd[mpd.find(&format!("id=\"{rep_id}\"")).unwrap()..];
    let base = rep[rep.find("<BaseURL>").unwrap() + 9..rep.find("</BaseURL>").unwrap()]
        .replace("&amp;", "&");
    let mr = &rep[rep.find("mediaRange=\"").unwrap() + 12..];
    let mr = &mr[..mr.find('"').unwrap()];
    let (a, b) = mr.split_once('-').unwrap();
    (base, (a.parse().unwrap(), b.parse().unwrap()))
}

fn manifest_dir(url: &str) -> String {
    let path = url.split('?').next().unwrap();
    path[..path.rfind('/').unwrap() + 1].to_string()
}

#[tokio::test]
async fn manifest_needs_signed_url_and_its_own_header() {
    let emu = emulator(false).await;
    let c = client();
    let ao = issue_audio_object(&emu.state, ids::JP_ONLY, Tier::Hd, None).unwrap();
    let ok = get_manifest(&c, &ao).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        ok.headers()["content-type"].to_str().unwrap(),
        "application/dash+xml"
    );
    let mpd = ok.text().await.unwrap();
    assert!(mpd.contains("<SegmentList") && mpd.contains("amz:LicenseUrl"));

    // No header, the segment header instead, another track's header, a tampered signature.
    let r = c.get(&ao.manifest_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("missing_token"));
    let (k, _) = header(&ao.manifest_headers);
    let (_, seg) = header(&ao.audio_segment_headers);
    let r = c
        .get(&ao.manifest_url)
        .header(&k, seg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let other = issue_audio_object(&emu.state, ids::HD, Tier::Hd, None).unwrap();
    let (_, other_tok) = header(&other.manifest_headers);
    let r = c
        .get(&ao.manifest_url)
        .header(&k, other_tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let tampered = ao.manifest_url.replace("cap=HD", "cap=UHD");
    let (k, v) = header(&ao.manifest_headers);
    let r = c.get(&tampered).header(k, v).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("bad_signature"));
}

#[tokio::test]
async fn segments_are_served_by_byte_range_with_the_segment_header() {
    let emu = emulator(false).await;
    let c = client();
    let ao = issue_audio_object(&emu.state, ids::JP_ONLY, Tier::Hd, None).unwrap();
    let mpd = get_manifest(&c, &ao).await.text().await.unwrap();
    let (base, (a, b)) = base_and_range(&mpd, "flac-44k16");
    let url = format!("{}{}", manifest_dir(&ao.manifest_url), base);
    let (k, v) = header(&ao.audio_segment_headers);
    let whole = c
        .get(&url)
        .header(&k, &v)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let r = c
        .get(&url)
        .header(&k, &v)
        .header("range", format!("bytes={a}-{b}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes {a}-{b}/{}", whole.len())
    );
    let part = r.bytes().await.unwrap();
    assert_eq!(&part[..], &whole[a as usize..=b as usize]);
    assert_eq!(&part[4..8], b"moof");

    let r = c
        .get(&url)
        .header(&k, &v)
        .header("range", format!("bytes={}-", whole.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = c
        .get(&url)
        .header(&k, &v)
        .header("range", "bytes=z-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // The manifest header does not open segments.
    let (_, mv) = header(&ao.manifest_headers);
    let r = c.get(&url).header(&k, mv).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn expired_audio_objects_are_refused() {
    let emu = emulator(false).await;
    emu.state.config.lock().unwrap().audio_object_lifetime_s = 1;
    let c = client();
    let ao = issue_audio_object(&emu.state, ids::JP_ONLY, Tier::Sd, None).unwrap();
    assert_eq!(get_manifest(&c, &ao).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get_manifest(&c, &ao).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn template_and_base_addressing() {
    let emu = emulator(false).await;
    let c = client();
    let ao = issue_audio_object(
        &emu.state,
        ids::JP_ONLY,
        Tier::Hd,
        Some(Addressing::Template),
    )
    .unwrap();
    let mpd = get_manifest(&c, &ao).await.text().await.unwrap();
    assert!(mpd.contains("<SegmentTemplate") && mpd.contains("<SegmentTimeline>"));
    let dir = manifest_dir(&ao.manifest_url);
    let query = &ao.manifest_url[ao.manifest_url.find('?').unwrap()..];
    let (k, v) = header(&ao.audio_segment_headers);
    for (file, magic) in [
        ("flac-44k16/init.mp4", b"ftyp"),
        ("flac-44k16/00002.m4s", b"moof"),
    ] {
        let r = c
            .get(format!("{dir}{file}{query}"))
            .header(&k, &v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{file}");
        assert_eq!(&r.bytes().await.unwrap()[4..8], magic);
    }
    let r = c
        .get(format!("{dir}flac-44k16/00003.m4s{query}"))
        .header(&k, &v)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "12 s track has 2 segments"
    );

    let ao =
        issue_audio_object(&emu.state, ids::JP_ONLY, Tier::Hd, Some(Addressing::Base)).unwrap();
    let mpd = get_manifest(&c, &ao).await.text().await.unwrap();
    let rep = &mpd[mpd.find("id=\"flac-44k16\"").unwrap()..];
    let ir = &rep[rep.find("indexRange=\"").unwrap() + 12..];
    let (a, b) = ir[..ir.find('"').unwrap()].split_once('-').unwrap();
    let base = &rep[rep.find("<BaseURL>").unwrap() + 9..rep.find("</BaseURL>").unwrap()];
    let url = format!(
        "{}{}",
        manifest_dir(&ao.manifest_url),
        base.replace("&amp;", "&")
    );
    let (k, v) = header(&ao.audio_segment_headers);
    let sidx = c
        .get(url)
        .header(k, v)
        .header("range", format!("bytes={a}-{b}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&sidx[4..8], b"sidx");
}

/// A page on another origin (a browser player served from its own port) may read the open
/// mirror: CORS headers on its answers, and OPTIONS answered, preflight or not.
#[tokio::test]
async fn open_mirror_answers_cors_and_options() {
    let emu = emulator(true).await;
    let c = client();
    let base = &emu.base_url;
    let origin = "http://127.0.0.1:9";
    let seg = format!("{base}/open/{}/flac-44k16/00001.m4s", ids::JP_ONLY);
    let r = c
        .get(&seg)
        .header("Origin", origin)
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("content-range") && exposed.contains("content-length"),
        "{exposed}"
    );
    // A preflight, as Chromium sends for a request with a non-safelisted header.
    let r = c
        .request(reqwest::Method::OPTIONS, &seg)
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "range,x-player")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("GET"), "{methods}");
    assert!(r.headers().contains_key("access-control-allow-headers"));
    // A plain OPTIONS (no preflight headers) on the manifest: what is allowed, not 405.
    let r = c
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/open/{}/manifest.mpd", ids::JP_ONLY),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("GET"), "{methods}");
    // The authenticated CDN stays without CORS.
    let r = c
        .get(format!("{base}/cdn/{}/manifest.mpd", ids::JP_ONLY))
        .header("Origin", origin)
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn open_mirror_and_bad_paths() {
    let emu = emulator(true).await;
    let c = client();
    let base = &emu.base_url;
    let r = c
        .get(format!("{base}/open/{}/manifest.mpd", ids::JP_ONLY))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mpd = r.text().await.unwrap();
    assert!(!mpd.contains("ContentProtection") && mpd.contains("<SegmentTemplate"));
    for (path, status) in [
        ("/open/NOSUCHTRACK/manifest.mpd", 404),
        (&format!("/open/{}/nope/init.mp4", ids::JP_ONLY), 404),
        (&format!("/open/{}/flac-44k16/99.m4s", ids::JP_ONLY), 404),
        (&format!("/open/{}/flac-44k16/abc.m4s", ids::JP_ONLY), 404),
        ("/cdn/x", 404),
        ("/nothing/here", 404),
        (&format!("/cdn/{}/manifest.mpd", ids::JP_ONLY), 403),
    ] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert!(r.text().await.unwrap().contains("\"error\""), "{path}");
    }
    let closed = emulator(false).await;
    let r = c
        .get(format!(
            "{}/open/{}/manifest.mpd",
            closed.base_url,
            ids::JP_ONLY
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn http2_with_prior_knowledge() {
    let emu = emulator(true).await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .get(format!(
            "{}/open/{}/manifest.mpd",
            emu.base_url,
            ids::JP_ONLY
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}

async fn add_fault(c: &reqwest::Client, base: &str, rule: serde_json::Value) {
    let r = c
        .post(format!("{base}/_emulator/faults"))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn injected_faults() {
    let emu = emulator(true).await;
    let c = client();
    let base = &emu.base_url;
    let seg = format!("{base}/open/{}/flac-44k16/00001.m4s", ids::JP_ONLY);
    add_fault(
        &c,
        base,
        serde_json::json!({"path_contains": "00001.m4s", "count": 2, "action": {"status": 503}}),
    )
    .await;
    assert_eq!(c.get(&seg).send().await.unwrap().status(), 503);
    assert_eq!(c.get(&seg).send().await.unwrap().status(), 503);
    let full = c.get(&seg).send().await.unwrap().bytes().await.unwrap();
    assert!(full.len() > 10_000);

    add_fault(
        &c,
        base,
        serde_json::json!({"path_contains": "00001.m4s", "action": {"truncate": {"bytes": 1000}}}),
    )
    .await;
    let r = c.get(&seg).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.content_length().unwrap() > 1000);
    assert!(
        r.bytes().await.is_err(),
        "a truncated body must fail to read"
    );

    add_fault(
        &c,
        base,
        serde_json::json!({"path_contains": "00001.m4s", "action": "reset"}),
    )
    .await;
    let r = c.get(&seg).send().await;
    assert!(r.is_err() || r.unwrap().bytes().await.is_err());

    add_fault(
        &c,
        base,
        serde_json::json!({"path_contains": "00001.m4s", "action": {"stall": {"seconds": 30}}}),
    )
    .await;
    let t = Instant::now();
    let r = c.get(&seg).timeout(Duration::from_millis(500)).send().await;
    assert!(r.unwrap_err().is_timeout());
    assert!(t.elapsed() < Duration::from_secs(5));

    let log: Vec<serde_json::Value> = c
        .get(format!("{base}/_emulator/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let faulted = log.iter().filter(|e| !e["fault"].is_null()).count();
    assert!(faulted >= 4, "{faulted} faulted requests logged");
}

#[tokio::test]
async fn shaping_paces_bandwidth_latency_and_outages() {
    let emu = emulator(true).await;
    let c = client();
    let base = &emu.base_url;
    let seg = format!("{base}/open/{}/flac-44k16/00001.m4s", ids::JP_ONLY);
    // Warm the content cache before shaping.
    c.get(&seg).send().await.unwrap().bytes().await.unwrap();

    // 800 kb/s = 100 kB/s: 150 kB take about 1.5 s.
    let r = c
        .post(format!("{base}/_emulator/shaping"))
        .json(&serde_json::json!({"trace": "60 800 0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = Instant::now();
    let body = c
        .get(&seg)
        .header("range", "bytes=0-149999")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let took = t.elapsed().as_secs_f64();
    assert_eq!(body.len(), 150_000);
    assert!(
        (1.3..2.5).contains(&took),
        "150 kB at 100 kB/s took {took:.2} s"
    );

    // 300 ms of latency on a fast link.
    c.post(format!("{base}/_emulator/shaping"))
        .json(&serde_json::json!({"trace": "60 100000 300"}))
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    c.get(format!("{base}/open/{}/manifest.mpd", ids::JP_ONLY))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let took = t.elapsed().as_secs_f64();
    assert!((0.29..1.0).contains(&took), "took {took:.2} s");

    // An outage holds requests until it ends.
    c.post(format!("{base}/_emulator/shaping"))
        .json(&serde_json::json!({"trace": "1.2 1000 0 outage\n60 100000 0"}))
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    let r = c
        .get(format!("{base}/open/{}/manifest.mpd", ids::JP_ONLY))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let took = t.elapsed().as_secs_f64();
    assert!((1.1..2.5).contains(&took), "took {took:.2} s");

    let r = c
        .post(format!("{base}/_emulator/shaping"))
        .json(&serde_json::json!({"scenario": "moon-link"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn request_log_never_holds_secrets() {
    let emu = emulator(false).await;
    let c = client();
    let ao = issue_audio_object(&emu.state, ids::JP_ONLY, Tier::Hd, None).unwrap();
    let _ = get_manifest(&c, &ao).await.text().await.unwrap();
    let log = c
        .get(format!("{}/_emulator/requests", emu.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sig = ao.manifest_url.rsplit("sig=").next().unwrap();
    let (name, token) = header(&ao.manifest_headers);
    assert!(log.contains("sig=REDACTED"));
    assert!(log.contains(&name), "header names are logged");
    assert!(!log.contains(sig), "the URL signature leaked into the log");
    assert!(!log.contains(&token), "a header token leaked into the log");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&log).unwrap();
    let e = entries.iter().find(|e| e["service"] == "cdn").unwrap();
    assert_eq!(e["status"], 200);
    assert!(e["duration_ms"].is_u64());
}

/// The manifest's Amazon signals in the service's own forms (Amazon's vinyl player's public
/// test manifests): `amz-music:trackType` and `amz-music:bitDepth` as descriptor values, the
/// track type of the low Opus rung LD, loudness with its unit.
#[tokio::test]
async fn manifests_write_the_services_descriptor_forms() {
    let emu = emulator(true).await;
    let base = &emu.base_url;
    let mpd = client()
        .get(format!("{base}/open/{}/manifest.mpd", ids::HD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        r#"<SupplementalProperty schemeIdUri="amz-music:trackType" value="HD"/>"#,
        r#"<SupplementalProperty schemeIdUri="amz-music:trackType" value="LD"/>"#,
        r#"<SupplementalProperty schemeIdUri="amz-music:bitDepth" value="24"/>"#,
        r#"<SupplementalProperty schemeIdUri="amz-music:bitDepth" value="16"/>"#,
        " LUFS\"/>",
    ] {
        assert!(mpd.contains(want), "no {want} in\n{mpd}");
    }
    assert!(
        !mpd.contains("amz-music:trackType=\""),
        "the invented attribute form"
    );
    assert!(
        !mpd.contains("amz-music:bitDepth=\""),
        "the invented attribute form"
    );
}
