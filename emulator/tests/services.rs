//! LWA, the music API, FireFly GraphQL and the license server, exercised over real HTTP against
//! an emulator running in this process: every success path and every documented error.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amzmusic_common::license::{
    decode_license_response_body, encode_license_request_body, ClientSession, KeyId, LicenseError,
    RequestKind,
};
use amzmusic_emulator::content::catalog::{ids, Catalog, Tier};
use amzmusic_emulator::content::store::Store;
use amzmusic_emulator::server::{self, AppState, Config, Running};
use amzmusic_emulator::services;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

const API_KEY: &str = services::EMULATOR_API_KEY;
const UA: &str = "amzmusic-emulator-tests/1";

fn data_dir() -> PathBuf {
    std::env::var_os("AMZMUSIC_EMULATOR_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("emulator-data"))
}

/// An emulator whose device codes can be polled back to back (tests that time polling set
/// their own interval).
async fn emulator() -> Running {
    let catalog = Arc::new(Catalog::builtin(None));
    let store = Arc::new(Store::new(&data_dir(), catalog.clone()).unwrap());
    let state = Arc::new(AppState::new(
        catalog,
        store,
        Config {
            device_poll_interval_s: 0,
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

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (status, v)
}

async fn code_pair(c: &reqwest::Client, base: &str, scope: &str) -> Value {
    let r = c
        .post(format!("{base}/auth/o2/create/codepair"))
        .form(&[
            ("response_type", "device_code"),
            ("client_id", services::EMULATOR_CLIENT_ID),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn poll(c: &reqwest::Client, base: &str, pair: &Value) -> (StatusCode, Value) {
    let r = c
        .post(format!("{base}/auth/o2/token"))
        .form(&[
            ("grant_type", "device_code"),
            ("device_code", pair["device_code"].as_str().unwrap()),
            ("user_code", pair["user_code"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    json_of(r).await
}

async fn approve(c: &reqwest::Client, base: &str, user_code: &str) -> StatusCode {
    c.post(format!("{base}/_emulator/lwa/approve"))
        .json(&json!({ "user_code": user_code }))
        .send()
        .await
        .unwrap()
        .status()
}

/// The whole device flow; returns the token answer.
async fn login(c: &reqwest::Client, base: &str, scope: &str) -> Value {
    let pair = code_pair(c, base, scope).await;
    assert_eq!(
        approve(c, base, pair["user_code"].as_str().unwrap()).await,
        StatusCode::NO_CONTENT
    );
    let (s, v) = poll(c, base, &pair).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn music_token(c: &reqwest::Client, base: &str) -> String {
    login(c, base, "profile amazon_music:access").await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn audio(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    track: &str,
    cap: &str,
    market: Option<&str>,
) -> (StatusCode, Value) {
    let mut rb = c
        .get(format!("{base}/v1/tracks/{track}/audio"))
        .bearer_auth(token)
        .header("x-api-key", API_KEY)
        .header("X-Amzn-Audio-Device-Capability", cap)
        .header("X-Amzn-Audio-DrmType", "WIDEVINE");
    if let Some(m) = market {
        rb = rb.header("x-amzn-market", m);
    }
    json_of(rb.send().await.unwrap()).await
}

async fn gql(
    c: &reqwest::Client,
    base: &str,
    headers: &[(&str, String)],
    query: &str,
    variables: Value,
) -> reqwest::Response {
    let mut rb = c
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    rb.send().await.unwrap()
}

fn bearer_headers(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-api-key", API_KEY.to_string()),
        ("authorization", format!("Bearer {token}")),
    ]
}

async fn set_config(c: &reqwest::Client, base: &str, patch: Value) {
    let r = c
        .post(format!("{base}/_emulator/config"))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

fn error_code(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// Login with Amazon

#[tokio::test]
async fn device_flow_pending_slow_down_approve_token() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    // Long enough that two back-to-back polls always fall inside it, even on a busy machine.
    set_config(&c, &base, json!({ "device_poll_interval_s": 2 })).await;
    let pair = code_pair(&c, &base, "amazon_music:access").await;
    assert_eq!(pair["interval"], 2);
    assert_eq!(pair["expires_in"], 600);
    assert_eq!(pair["verification_uri"], format!("{base}/activate"));
    assert!(pair["device_code"].as_str().unwrap().len() >= 32);

    let (s, v) = poll(&c, &base, &pair).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "authorization_pending")
    );
    let (s, v) = poll(&c, &base, &pair).await;
    assert_eq!((s, error_code(&v)), (StatusCode::BAD_REQUEST, "slow_down"));

    // The user approves on the verification page.
    let page = c.get(format!("{base}/activate")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("name=\"user_code\""));
    let r = c
        .post(format!("{base}/activate"))
        .form(&[("user_code", "NOSUCH")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .post(format!("{base}/activate"))
        .form(&[("user_code", pair["user_code"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, tok) = poll(&c, &base, &pair).await;
    assert_eq!(s, StatusCode::OK, "{tok}");
    assert!(tok["access_token"].as_str().unwrap().starts_with("Atza|"));
    assert!(tok["refresh_token"].as_str().unwrap().starts_with("Atzr|"));
    assert_eq!(tok["token_type"], "bearer");
    assert_eq!(tok["expires_in"], 3600);
    // A redeemed code is spent.
    let (s, v) = poll(&c, &base, &pair).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_code_pair")
    );
    assert_eq!(approve(&c, &base, "NOSUCH").await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn expired_device_code_is_refused() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    set_config(&c, &base, json!({ "device_code_lifetime_s": 1 })).await;
    let pair = code_pair(&c, &base, "amazon_music:access").await;
    assert_eq!(pair["expires_in"], 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        approve(&c, &base, pair["user_code"].as_str().unwrap()).await,
        StatusCode::NOT_FOUND
    );
    let (s, v) = poll(&c, &base, &pair).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_code_pair")
    );
}

#[tokio::test]
async fn lwa_refuses_bad_requests() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let cp = format!("{base}/auth/o2/create/codepair");
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[
                ("response_type", "code"),
                ("client_id", "c"),
                ("scope", "s"),
            ],
            "unsupported_response_type",
        ),
        (
            &[("response_type", "device_code"), ("scope", "s")],
            "invalid_client",
        ),
        (
            &[("response_type", "device_code"), ("client_id", "c")],
            "invalid_scope",
        ),
    ];
    for (form, code) in cases {
        let (s, v) = json_of(c.post(&cp).form(form).send().await.unwrap()).await;
        assert_eq!((s, error_code(&v)), (StatusCode::BAD_REQUEST, code));
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    let tok = format!("{base}/auth/o2/token");
    let (s, v) = json_of(
        c.post(&tok)
            .form(&[("grant_type", "password")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "unsupported_grant_type")
    );
    let (s, v) = json_of(
        c.post(&tok)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "Atzr|nope"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    let (s, v) = json_of(
        c.post(&tok)
            .json(&json!({"grant_type": "device_code"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
}

/// Builds a license request for `track`'s key ids of `tiers`.
fn license_session(track: &str, tiers: &[Tier]) -> ClientSession {
    let catalog = Catalog::builtin(None);
    let t = catalog.track(track).unwrap();
    ClientSession::new(
        tiers.iter().map(|tier| KeyId(t.key_id(*tier))).collect(),
        t.content_id(),
        Default::default(),
    )
}

fn key_header(audio: &Value) -> (String, String) {
    let h = &audio["audio"]["headers"]["key"][0];
    (
        h["name"].as_str().unwrap().to_string(),
        h["value"].as_str().unwrap().to_string(),
    )
}

async fn post_license(
    c: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    key: Option<&(String, String)>,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> reqwest::Response {
    let mut rb = c
        .post(format!("{base}{}", services::LICENSE_PATH))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some((k, v)) = key {
        rb = rb.header(k, v);
    }
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn refresh_and_expired_tokens_get_401_everywhere() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    set_config(&c, &base, json!({ "token_lifetime_s": 2 })).await;
    let tok = login(&c, &base, "amazon_music:access").await;
    assert_eq!(tok["expires_in"], 2);
    let access = tok["access_token"].as_str().unwrap().to_string();
    let (s, ao) = audio(&c, &base, &access, ids::HD, "HD", None).await;
    assert_eq!(s, StatusCode::OK);
    let key = key_header(&ao);
    let amzn = base64::engine::general_purpose::STANDARD
        .encode(json!({"access_token": access, "deviceId": "D1", "deviceType": "A1"}).to_string());

    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Music API, album lookups, FireFly (both token modes) and the license server.
    let (s, v) = audio(&c, &base, &access, ids::HD, "HD", None).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    assert!(v["message"].as_str().unwrap().contains("expired"));
    let r = c
        .get(format!("{base}/v1/albums/{}/tracks", ids::ALBUM))
        .bearer_auth(&access)
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = gql(&c, &base, &bearer_headers(&access), "{ market }", json!({})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = gql(
        &c,
        &base,
        &[
            ("x-api-key", API_KEY.into()),
            ("authorization", format!("AmznMusic {amzn}")),
        ],
        "{ market }",
        json!({}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let mut session = license_session(ids::HD, &[Tier::Hd]);
    let body = encode_license_request_body(&session.challenge(RequestKind::License));
    let r = post_license(
        &c,
        &base,
        Some(&access),
        Some(&key),
        &[("user-agent", UA)],
        body,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (_, v) = json_of(r).await;
    assert_eq!(error_code(&v), "invalid_token");

    // A refresh gives a working token again.
    set_config(&c, &base, json!({ "token_lifetime_s": 3600 })).await;
    let r = c
        .post(format!("{base}/auth/o2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tok["refresh_token"].as_str().unwrap()),
            ("client_id", services::EMULATOR_CLIENT_ID),
        ])
        .send()
        .await
        .unwrap();
    let (s, fresh) = json_of(r).await;
    assert_eq!(s, StatusCode::OK, "{fresh}");
    assert_eq!(fresh["expires_in"], 3600);
    assert_eq!(fresh["refresh_token"], tok["refresh_token"]);
    let fresh = fresh["access_token"].as_str().unwrap();
    assert_ne!(fresh, access);
    let (s, _) = audio(&c, &base, fresh, ids::HD, "HD", None).await;
    assert_eq!(s, StatusCode::OK);
    // Another client cannot use this refresh token.
    let r = c
        .post(format!("{base}/auth/o2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tok["refresh_token"].as_str().unwrap()),
            ("client_id", "someone-else"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------------------------------------
// Music API

#[tokio::test]
async fn music_api_checks_key_token_and_scope() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let url = format!("{base}/v1/tracks/{}/audio", ids::HD);
    let music = music_token(&c, &base).await;
    let profile = login(&c, &base, "profile").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let (s, v) = audio(&c, &base, &profile, ids::HD, "HD", None).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::FORBIDDEN, "insufficient_scope")
    );
    let r = c
        .get(&url)
        .bearer_auth(&music)
        .header("X-Amzn-Audio-Device-Capability", "HD")
        .header("X-Amzn-Audio-DrmType", "WIDEVINE")
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::FORBIDDEN, "missing_api_key")
    );
    let r = c
        .get(&url)
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    let (s, v) = json_of(r).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    let (s, v) = audio(&c, &base, "Atza|forged", ids::HD, "HD", None).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );

    // The license server needs the scope too.
    let mut session = license_session(ids::HD, &[Tier::Hd]);
    let body = encode_license_request_body(&session.challenge(RequestKind::License));
    let r = post_license(&c, &base, Some(&profile), None, &[("user-agent", UA)], body).await;
    let (s, v) = json_of(r).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::FORBIDDEN, "insufficient_scope")
    );
}

fn cap_of(audio: &Value) -> String {
    let url = audio["audio"]["manifestUrl"].as_str().unwrap();
    url.split("cap=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn audio_object_follows_the_device_capability() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let token = music_token(&c, &base).await;
    // (track, capability header, expected quality)
    let cases = [
        (ids::HD, "SD", "SD"),
        (ids::HD, "SD,HD", "HD"),
        (ids::HD, "SD,HD,UHD", "HD"),
        (ids::UHD, "HD", "HD"),
        (ids::UHD, "SD,HD,UHD", "UHD"),
        (ids::SPATIAL, "SD,HD,ATMOS", "ATMOS"),
        (ids::SPATIAL, "360RA", "ATMOS"),
        (ids::SPATIAL, "HD", "HD"),
    ];
    for (track, cap, want) in cases {
        let (s, v) = audio(&c, &base, &token, track, cap, None).await;
        assert_eq!(s, StatusCode::OK, "{track} {cap}: {v}");
        let a = &v["audio"];
        assert_eq!(a["quality"], want, "{track} {cap}");
        assert_eq!(cap_of(&v), want, "the manifest is filtered for {want}");
        assert_eq!(a["trackId"], track);
        assert_eq!(a["drmType"], "WIDEVINE");
        for (list, name) in [
            ("key", "x-amz-music-key-token"),
            ("manifestHeaders", "x-amz-music-manifest-token"),
            ("audioSegmentHeaders", "x-amz-music-segment-token"),
        ] {
            assert_eq!(a["headers"][list][0]["name"], name);
            assert!(!a["headers"][list][0]["value"].as_str().unwrap().is_empty());
        }
        let expires = time::OffsetDateTime::parse(
            a["expires"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let left = expires - time::OffsetDateTime::now_utc();
        assert!(
            left > time::Duration::seconds(3500) && left <= time::Duration::seconds(3601),
            "expires {expires}"
        );
    }

    // Errors: unknown track, market, DRM type, capability.
    let (s, v) = audio(&c, &base, &token, "B0NOSUCH00", "HD", None).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "track_not_found")
    );
    let (s, v) = audio(&c, &base, &token, ids::JP_ONLY, "HD", None).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::FORBIDDEN, "not_available_in_market")
    );
    let (s, _) = audio(&c, &base, &token, ids::JP_ONLY, "HD", Some("JP")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = audio(&c, &base, &token, ids::HD, "DOLBY9", None).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_ACCEPTABLE, "unsupported_capability")
    );
    let (s, v) = audio(&c, &base, &token, ids::HD, "", None).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_ACCEPTABLE, "unsupported_capability")
    );
    for drm in [None, Some("PLAYREADY")] {
        let mut rb = c
            .get(format!("{base}/v1/tracks/{}/audio", ids::HD))
            .bearer_auth(&token)
            .header("x-api-key", API_KEY)
            .header("X-Amzn-Audio-Device-Capability", "HD");
        if let Some(d) = drm {
            rb = rb.header("X-Amzn-Audio-DrmType", d);
        }
        let (s, v) = json_of(rb.send().await.unwrap()).await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::BAD_REQUEST, "unsupported_drm_type")
        );
    }
}

/// Representation ids in a manifest.
fn rep_ids(mpd: &str) -> Vec<String> {
    mpd.split("<Representation ")
        .skip(1)
        .map(|r| {
            let i = r.find("id=\"").unwrap() + 4;
            r[i..i + r[i..].find('"').unwrap()].to_string()
        })
        .collect()
}

#[tokio::test]
async fn manifests_hold_what_the_capability_allows() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let token = music_token(&c, &base).await;
    let mut got = Vec::new();
    for cap in ["SD", "HD", "SD,HD,UHD"] {
        let (s, v) = audio(&c, &base, &token, ids::UHD96, cap, None).await;
        assert_eq!(s, StatusCode::OK);
        let a = &v["audio"];
        let h = &a["headers"]["manifestHeaders"][0];
        let r = c
            .get(a["manifestUrl"].as_str().unwrap())
            .header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let mut reps = rep_ids(&r.text().await.unwrap());
        reps.sort();
        got.push(reps);
    }
    assert_eq!(got[0], ["opus-320k", "opus-64k"]);
    // HD never sees UHD.
    assert_eq!(got[1], ["flac-44k16", "opus-320k", "opus-64k"]);
    // UHD: only the top representation plus the Opus fallback.
    assert_eq!(got[2], ["flac-96k24", "opus-320k", "opus-64k"]);
}

#[tokio::test]
async fn album_and_playlist_tracks_in_order() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let token = music_token(&c, &base).await;
    let get = |path: String| {
        let c = c.clone();
        let token = token.clone();
        async move {
            json_of(
                c.get(path)
                    .bearer_auth(token)
                    .header("x-api-key", API_KEY)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let ids_of = |v: &Value| -> Vec<String> {
        v["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, v) = get(format!("{base}/v1/albums/{}/tracks", ids::ALBUM)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["title"], "One Take");
    assert_eq!(ids_of(&v), ids::ALBUM_TRACKS);
    let numbers: Vec<u64> = v["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trackNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(v["tracks"][1]["durationMs"], 37_000);
    // An album known only through its tracks, in track-number order.
    let (s, v) = get(format!("{base}/v1/albums/B0EMUUHA01/tracks")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids_of(&v), [ids::UHD, ids::UHD96]);
    let (s, v) = get(format!("{base}/v1/playlists/{}/tracks", ids::PLAYLIST)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["title"], "Emulator Mix");
    assert_eq!(ids_of(&v), [ids::HD, ids::ALBUM_TRACKS[1], ids::UHD96]);
    let (s, v) = get(format!("{base}/v1/albums/B0NOSUCH00/tracks")).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "album_not_found")
    );
    let (s, v) = get(format!("{base}/v1/playlists/B0NOSUCH00/tracks")).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, "playlist_not_found")
    );
}

// ---------------------------------------------------------------------------------------------
// FireFly GraphQL

const TRACK_QUERY: &str = "query($id: ID!) { track(id: $id) { id title artists { id name } \
     album { id title artists { name } image { url } } trackNumber discNumber durationMs isrc \
     explicit audioQualities image { url } } }";

fn anonymous_headers() -> Vec<(&'static str, String)> {
    vec![
        ("x-api-key", API_KEY.to_string()),
        ("device-id", "D0EMU1".into()),
        ("device-type", "A1EMU".into()),
        ("market", "US".into()),
        ("x-amzn-session-id", "000-0000000-0000000".into()),
    ]
}

#[tokio::test]
async fn graphql_auth_modes() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let token = music_token(&c, &base).await;
    let q = "{ authMode market }";

    let r = gql(&c, &base, &bearer_headers(&token), q, json!({})).await;
    let (s, v) = json_of(r).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!({"authMode": "bearer", "market": "US"}));

    let blob = base64::engine::general_purpose::STANDARD.encode(
        json!({"access_token": token, "deviceId": "D0EMU1", "deviceType": "A1EMU"}).to_string(),
    );
    let amzn = vec![
        ("x-api-key", API_KEY.to_string()),
        ("authorization", format!("AmznMusic {blob}")),
        ("cache-control", "no-cache, no-store".into()),
    ];
    let (s, v) = json_of(gql(&c, &base, &amzn, q, json!({})).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["authMode"], "amznmusic");

    let (s, v) = json_of(gql(&c, &base, &anonymous_headers(), q, json!({})).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["authMode"], "anonymous");
    // `music-territory` stands in for `market`.
    let mut anon = anonymous_headers();
    anon[3] = ("music-territory", "JP".into());
    let (s, v) = json_of(gql(&c, &base, &anon, q, json!({})).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["market"], "JP");

    // Errors.
    for (drop, code) in [
        ("x-amzn-session-id", "anonymous_auth_incomplete"),
        ("device-id", "anonymous_auth_incomplete"),
        ("market", "anonymous_auth_incomplete"),
    ] {
        let h: Vec<_> = anonymous_headers()
            .into_iter()
            .filter(|(k, _)| *k != drop)
            .collect();
        let (s, v) = json_of(gql(&c, &base, &h, q, json!({})).await).await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::UNAUTHORIZED, code),
            "{drop}"
        );
        assert!(v["message"].as_str().unwrap().contains(drop));
    }
    let h = vec![("authorization", format!("Bearer {token}"))];
    let (s, v) = json_of(gql(&c, &base, &h, q, json!({})).await).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::FORBIDDEN, "missing_api_key")
    );
    let h = vec![
        ("x-api-key", API_KEY.to_string()),
        ("authorization", "AmznMusic bm90IGpzb24=".to_string()),
    ];
    let (s, v) = json_of(gql(&c, &base, &h, q, json!({})).await).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "malformed_authorization")
    );
    let h = vec![
        ("x-api-key", API_KEY.to_string()),
        ("authorization", "Basic dTpw".to_string()),
    ];
    let (s, v) = json_of(gql(&c, &base, &h, q, json!({})).await).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "unsupported_authorization")
    );
    let (s, v) = json_of(gql(&c, &base, &bearer_headers("Atza|forged"), q, json!({})).await).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    let r = c
        .post(format!("{base}/graphql"))
        .header("x-api-key", API_KEY)
        .bearer_auth(&token)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn graphql_track_metadata_and_cover() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let token = music_token(&c, &base).await;
    let catalog = Catalog::builtin(None);
    let t = catalog.track(ids::UHD).unwrap();
    let (s, v) = json_of(
        gql(
            &c,
            &base,
            &bearer_headers(&token),
            TRACK_QUERY,
            json!({"id": ids::UHD}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.get("errors").is_none(), "{v}");
    let tr = &v["data"]["track"];
    assert_eq!(tr["id"], ids::UHD);
    assert_eq!(tr["title"], t.title);
    assert_eq!(tr["artists"][0]["name"], t.artist);
    assert_eq!(tr["album"]["id"], t.album_id);
    assert_eq!(tr["album"]["title"], t.album);
    assert_eq!(tr["trackNumber"], 1);
    assert_eq!(tr["discNumber"], 1);
    assert_eq!(tr["durationMs"], 90_000);
    assert_eq!(tr["isrc"], t.isrc);
    assert_eq!(tr["explicit"], false);
    assert_eq!(tr["audioQualities"], json!(["SD", "HD", "UHD"]));
    let img = tr["image"]["url"].as_str().unwrap();
    assert_eq!(img, format!("{base}/images/{}.png", t.album_id));
    let r = c.get(img).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(&r.bytes().await.unwrap()[..4], b"\x89PNG");
    assert_eq!(
        c.get(format!("{base}/images/B0NOSUCH00.png"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    // Album, artist and playlist lookups, tracks in order.
    let artist = tr["artists"][0]["id"].as_str().unwrap();
    let q = "query($a: ID!, $ar: ID!, $p: ID!) { album(id: $a) { title trackCount tracks { id } } \
             artist(id: $ar) { name tracks { id } albums { id } } playlist(id: $p) { title tracks { id } } \
             none: track(id: \"B0NOSUCH00\") { id } }";
    let (s, v) = json_of(
        gql(
            &c,
            &base,
            &bearer_headers(&token),
            q,
            json!({"a": ids::ALBUM, "ar": artist, "p": ids::PLAYLIST}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let d = &v["data"];
    assert_eq!(d["album"]["trackCount"], 3);
    let album_ids: Vec<&str> = d["album"]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(album_ids, ids::ALBUM_TRACKS);
    assert_eq!(d["artist"]["name"], "Kilohertz");
    assert_eq!(d["artist"]["albums"], json!([{"id": "B0EMUUHA01"}]));
    assert_eq!(
        d["artist"]["tracks"],
        json!([{"id": ids::UHD}, {"id": ids::UHD96}])
    );
    assert_eq!(
        d["playlist"]["tracks"],
        json!([{"id": ids::HD}, {"id": ids::ALBUM_TRACKS[1]}, {"id": ids::UHD96}])
    );
    assert_eq!(d["none"], Value::Null);
}

#[tokio::test]
async fn graphql_query_size_limit() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let h = anonymous_headers();
    let q = |len: usize| {
        let head = "{ market }";
        format!("{head}{}", " ".repeat(len - head.len()))
    };
    let (s, v) = json_of(gql(&c, &base, &h, &q(4095), json!({})).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["market"], "US");
    let (s, v) = json_of(gql(&c, &base, &h, &q(4096), json!({})).await).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
}

#[tokio::test]
async fn graphql_hydrates_at_most_300_entities_of_a_type() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let h = anonymous_headers();
    let q = "query($ids: [ID!]!) { tracks(ids: $ids) { id } }";
    let (s, v) = json_of(gql(&c, &base, &h, q, json!({"ids": vec![ids::HD; 300]})).await).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.get("errors").is_none());
    assert!(v["data"]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["id"] == ids::HD));

    let (s, v) = json_of(gql(&c, &base, &h, q, json!({"ids": vec![ids::HD; 305]})).await).await;
    assert_eq!(s, StatusCode::OK);
    let tracks = v["data"]["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), 305);
    assert_eq!(tracks.iter().filter(|t| t.is_null()).count(), 5);
    assert!(tracks[..300].iter().all(|t| t["id"] == ids::HD));
    assert_eq!(v["extensions"]["blockedEntities"], json!({"Track": 5}));
    let err = &v["errors"][0];
    assert_eq!(err["extensions"]["code"], "ENTITY_LIMIT");
    assert_eq!(err["extensions"]["blocked"], 5);
}

#[tokio::test]
async fn graphql_market_retargets_reads() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let token = music_token(&c, &base).await;
    let q = "query($id: ID!) { market track(id: $id) { title explicit } }";
    let vars = json!({ "id": ids::JP_ONLY });
    let (s, v) = json_of(gql(&c, &base, &bearer_headers(&token), q, vars.clone()).await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["market"], "US");
    assert_eq!(v["data"]["track"], Value::Null);
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        "NOT_AVAILABLE_IN_MARKET"
    );
    let mut h = bearer_headers(&token);
    h.push(("market", "jp".into()));
    let (s, v) = json_of(gql(&c, &base, &h, q, vars.clone()).await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["market"], "JP");
    assert_eq!(
        v["data"]["track"],
        json!({"title": "Tokyo Only", "explicit": true})
    );
    assert!(v.get("errors").is_none());
    let mut h = bearer_headers(&token);
    h.push(("market", "Japan".into()));
    let (s, v) = json_of(gql(&c, &base, &h, q, vars).await).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_market")
    );
}

#[tokio::test]
async fn graphql_feature_flags_trace_and_complexity() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let vars = json!({ "id": ids::HD });
    let (_, plain) =
        json_of(gql(&c, &base, &anonymous_headers(), TRACK_QUERY, vars.clone()).await).await;
    assert!(plain.get("extensions").is_none(), "{plain}");

    let mut h = anonymous_headers();
    h.push(("x-amzn-feature-flags", "trace, complexity".into()));
    let (s, v) = json_of(gql(&c, &base, &h, TRACK_QUERY, vars.clone()).await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], plain["data"]);
    let cx = &v["extensions"]["complexity"];
    assert!(cx["score"].as_u64().unwrap() >= 15, "{cx}");
    assert_eq!(cx["budget"], 2000);
    assert!(cx["depth"].as_u64().unwrap() >= 3);
    let tr = &v["extensions"]["trace"];
    assert!(tr["startTime"].as_str().unwrap().ends_with('Z'));
    let resolvers = tr["resolvers"].as_array().unwrap();
    assert!(resolvers
        .iter()
        .any(|r| r["path"] == "track" && r["fieldName"] == "track"));
    assert!(resolvers.iter().any(|r| r["parentType"] == "Album"));

    let mut h = anonymous_headers();
    h.push(("x-amzn-feature-flags", "complexity".into()));
    let (_, v) = json_of(gql(&c, &base, &h, TRACK_QUERY, vars).await).await;
    assert!(v["extensions"].get("trace").is_none());
    assert!(v["extensions"]["complexity"].is_object());
}

#[tokio::test]
async fn graphql_rate_limit_per_api_key() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    // One a second: eight requests pass only if they take seven seconds.
    set_config(&c, &base, json!({ "graphql_rate_limit": 1 })).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let r = gql(&c, &base, &anonymous_headers(), "{ market }", json!({})).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r.headers().get("retry-after").cloned();
            let (_, v) = json_of(r).await;
            assert_eq!(error_code(&v), "too_many_requests");
            statuses.push(429);
        } else {
            statuses.push(r.status().as_u16());
        }
    }
    assert_eq!(statuses[0], 200);
    assert!(statuses.contains(&429), "{statuses:?}");
    let secs: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!(secs >= 1);
    // Another API key has its own budget.
    let mut other = anonymous_headers();
    other[0] = ("x-api-key", "amzn1.application.other".into());
    let r = gql(&c, &base, &other, "{ market }", json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// License server

#[tokio::test]
async fn license_wraps_the_catalog_keys_and_honours_expiration() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let token = music_token(&c, &base).await;
    let catalog = Catalog::builtin(None);
    let t = catalog.track(ids::HD).unwrap();
    let (_, ao) = audio(&c, &base, &token, ids::HD, "SD,HD", None).await;
    let key = key_header(&ao);
    let tiers = [Tier::Ld, Tier::Sd, Tier::Hd];
    let mut session = license_session(ids::HD, &tiers);

    let body = encode_license_request_body(&session.challenge(RequestKind::License));
    let r = post_license(
        &c,
        &base,
        Some(&token),
        Some(&key),
        &[
            ("user-agent", UA),
            ("x-amz-music-license-expiration-secs", "30"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let bytes = r.bytes().await.unwrap();
    // The wire never shows a content key.
    let wire = String::from_utf8_lossy(&bytes).to_string();
    for tier in tiers {
        let k = t.content_key(tier);
        assert!(!wire.contains(&hex::encode(k)));
        assert!(!wire.contains(&base64::engine::general_purpose::STANDARD.encode(k)));
    }
    let license = decode_license_response_body(&bytes).unwrap();
    let accepted = session.accept_license(&license).unwrap();
    assert_eq!(accepted.policy.license_duration_secs, 30);
    let mut got: Vec<([u8; 16], [u8; 16])> =
        accepted.keys.iter().map(|k| (k.kid.0, *k.key)).collect();
    got.sort();
    let mut want: Vec<([u8; 16], [u8; 16])> = tiers
        .iter()
        .map(|x| (t.key_id(*x), t.content_key(*x)))
        .collect();
    want.sort();
    assert_eq!(got, want);

    // A renewal without the header gets the default duration.
    let body = encode_license_request_body(&session.challenge(RequestKind::Renewal));
    let r = post_license(
        &c,
        &base,
        Some(&token),
        Some(&key),
        &[("user-agent", UA)],
        body,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let license = decode_license_response_body(&r.bytes().await.unwrap()).unwrap();
    let renewed = session.accept_license(&license).unwrap();
    assert_eq!(renewed.kind, RequestKind::Renewal);
    assert_eq!(renewed.policy.license_duration_secs, 3600);
    assert_eq!(renewed.keys.len(), 3);
}

#[tokio::test]
async fn license_gives_only_the_tiers_the_audio_object_grants() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let token = music_token(&c, &base).await;
    let catalog = Catalog::builtin(None);
    let t = catalog.track(ids::UHD).unwrap();
    let (_, ao) = audio(&c, &base, &token, ids::UHD, "HD", None).await;
    let key = key_header(&ao);
    let mut session = license_session(ids::UHD, &[Tier::Sd, Tier::Hd, Tier::Uhd]);
    let body = encode_license_request_body(&session.challenge(RequestKind::License));
    let r = post_license(
        &c,
        &base,
        Some(&token),
        Some(&key),
        &[("user-agent", UA)],
        body,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let license = decode_license_response_body(&r.bytes().await.unwrap()).unwrap();
    let kids: Vec<[u8; 16]> = session
        .accept_license(&license)
        .unwrap()
        .keys
        .iter()
        .map(|k| k.kid.0)
        .collect();
    assert!(kids.contains(&t.key_id(Tier::Hd)));
    assert!(
        !kids.contains(&t.key_id(Tier::Uhd)),
        "an HD audio object never unlocks UHD"
    );

    let mut uhd_only = license_session(ids::UHD, &[Tier::Uhd]);
    let body = encode_license_request_body(&uhd_only.challenge(RequestKind::License));
    let r = post_license(
        &c,
        &base,
        Some(&token),
        Some(&key),
        &[("user-agent", UA)],
        body,
    )
    .await;
    let (s, v) = json_of(r).await;
    assert_eq!((s, error_code(&v)), (StatusCode::FORBIDDEN, "not_entitled"));
}

#[tokio::test]
async fn license_error_table() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let token = music_token(&c, &base).await;
    let (_, hd) = audio(&c, &base, &token, ids::HD, "HD", None).await;
    let hd_key = key_header(&hd);
    let (_, other) = audio(&c, &base, &token, ids::UHD96, "HD", None).await;
    let other_key = key_header(&other);
    let (_, jp) = audio(&c, &base, &token, ids::JP_ONLY, "HD", Some("JP")).await;
    let jp_key = key_header(&jp);
    let ua = [("user-agent", UA)];
    let good = || {
        let mut s = license_session(ids::HD, &[Tier::Hd]);
        encode_license_request_body(&s.challenge(RequestKind::License))
    };

    // (status, code) for each row; the client's own parser must classify it the same way.
    let mut rows: Vec<(reqwest::Response, u16, &str)> = Vec::new();
    rows.push((
        post_license(&c, &base, Some(&token), Some(&hd_key), &[], good()).await,
        400,
        "missing_user_agent",
    ));
    rows.push((
        post_license(&c, &base, None, Some(&hd_key), &ua, good()).await,
        401,
        "invalid_token",
    ));
    rows.push((
        post_license(
            &c,
            &base,
            Some(&token),
            Some(&hd_key),
            &ua,
            b"{\"licenseChallenge\": 5}".to_vec(),
        )
        .await,
        400,
        "malformed_challenge",
    ));
    rows.push((
        post_license(
            &c,
            &base,
            Some(&token),
            Some(&hd_key),
            &ua,
            encode_license_request_body(b"{\"version\": 9}"),
        )
        .await,
        400,
        "malformed_challenge",
    ));
    let mut unknown = ClientSession::new(vec![KeyId([7; 16])], Vec::new(), Default::default());
    rows.push((
        post_license(
            &c,
            &base,
            Some(&token),
            Some(&hd_key),
            &ua,
            encode_license_request_body(&unknown.challenge(RequestKind::License)),
        )
        .await,
        404,
        "unknown_key_id",
    ));
    rows.push((
        post_license(&c, &base, Some(&token), None, &ua, good()).await,
        403,
        "not_entitled",
    ));
    rows.push((
        post_license(&c, &base, Some(&token), Some(&other_key), &ua, good()).await,
        403,
        "not_entitled",
    ));
    let jp_body = {
        let mut s = license_session(ids::JP_ONLY, &[Tier::Hd]);
        encode_license_request_body(&s.challenge(RequestKind::License))
    };
    rows.push((
        post_license(&c, &base, Some(&token), Some(&jp_key), &ua, jp_body.clone()).await,
        403,
        "not_entitled",
    ));
    rows.push((
        post_license(
            &c,
            &base,
            Some(&token),
            Some(&hd_key),
            &[
                ("user-agent", UA),
                ("x-amz-music-license-expiration-secs", "soon"),
            ],
            good(),
        )
        .await,
        400,
        "invalid_expiration",
    ));
    // Injected rows: too many requests, server error, unavailable.
    for status in [429, 500, 503] {
        let r = c
            .post(format!("{base}/_emulator/faults"))
            .json(&json!({"path_contains": services::LICENSE_PATH, "action": {"status": status}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let code = match status {
            429 => "too_many_requests",
            500 => "server_error",
            _ => "service_unavailable",
        };
        rows.push((
            post_license(&c, &base, Some(&token), Some(&hd_key), &ua, good()).await,
            status,
            code,
        ));
    }
    for (r, status, code) in rows {
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        assert_eq!(r.status().as_u16(), status, "{code}");
        assert_eq!(r.headers()["content-type"], "application/json", "{code}");
        if status == 429 {
            assert_eq!(retry_after, Some(1), "429 must carry Retry-After");
        }
        let body = r.bytes().await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error_code(&v), code);
        assert!(!v["message"].as_str().unwrap().is_empty());
        let parsed = LicenseError::from_response(status, retry_after, &body);
        assert_eq!(parsed.status(), status);
        if code != "missing_user_agent" && code != "invalid_expiration" {
            assert_eq!(
                parsed.code(),
                code,
                "the decryptor reads this row as {parsed:?}"
            );
        }
    }
    // The JP track is licensed from JP.
    let r = post_license(
        &c,
        &base,
        Some(&token),
        Some(&jp_key),
        &[("user-agent", UA), ("x-amzn-market", "JP")],
        jp_body,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Env file and secrets

#[tokio::test]
async fn env_file_points_at_the_emulator_with_a_valid_token() {
    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emulator.env");
    services::write_env_file(&emu.state, &path, None).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let vars: std::collections::HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.trim_matches('\'').to_string())
        })
        .collect();
    assert_eq!(vars["AMAZONMUSIC_API_ENDPOINT"], base);
    assert_eq!(vars["AMAZONMUSIC_LWA_ENDPOINT"], base);
    assert_eq!(
        vars["AMAZONMUSIC_GRAPHQL_ENDPOINT"],
        format!("{base}/graphql")
    );
    assert_eq!(vars["AMAZONMUSIC_API_KEY"], API_KEY);
    assert_eq!(vars["AMAZONMUSIC_CLIENT_ID"], services::EMULATOR_CLIENT_ID);
    let token = &vars["AMAZONMUSIC_ACCESS_TOKEN"];
    let (s, _) = audio(&c, &base, token, ids::HD, "HD", None).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the exported token works on the music API"
    );
    let file: Value =
        serde_json::from_slice(&std::fs::read(&vars["AMAZONMUSIC_TOKEN_FILE"]).unwrap()).unwrap();
    assert_eq!(&file["access_token"], token);
    assert!(file["expires_at"].as_u64().unwrap() > amzmusic_emulator::signing::now_unix());
    // The refresh token in the file refreshes.
    let r = c
        .post(format!("{base}/auth/o2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", file["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The shell reads it as exports (tokens hold `|`).
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            ". '{}' && printenv AMAZONMUSIC_ACCESS_TOKEN",
            path.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), token);
}

/// Collects the emulator's tracing output (every level) for the secrets test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "amzmusic_emulator=trace,amzmusic_common=trace",
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let emu = emulator().await;
    let (c, base) = (client(), emu.base_url.clone());
    let pair = code_pair(&c, &base, "amazon_music:access").await;
    let _ = poll(&c, &base, &pair).await;
    approve(&c, &base, pair["user_code"].as_str().unwrap()).await;
    let (_, tok) = poll(&c, &base, &pair).await;
    let token = tok["access_token"].as_str().unwrap().to_string();
    let refresh = tok["refresh_token"].as_str().unwrap().to_string();
    let r = c
        .post(format!("{base}/auth/o2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let (_, refreshed) = json_of(r).await;
    let (_, ao) = audio(&c, &base, &token, ids::HD, "HD", None).await;
    let key = key_header(&ao);
    let blob = base64::engine::general_purpose::STANDARD
        .encode(json!({"access_token": token, "deviceId": "D", "deviceType": "T"}).to_string());
    let h = vec![
        ("x-api-key", API_KEY.to_string()),
        ("authorization", format!("AmznMusic {blob}")),
    ];
    let r = gql(&c, &base, &h, "{ market }", json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut session = license_session(ids::HD, &[Tier::Hd]);
    let body = encode_license_request_body(&session.challenge(RequestKind::License));
    let r = post_license(
        &c,
        &base,
        Some(&token),
        Some(&key),
        &[("user-agent", UA)],
        body,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    // An expired-token answer and a bad key header are logged as well.
    let r = post_license(
        &c,
        &base,
        Some("Atza|forged"),
        Some(&key),
        &[("user-agent", UA)],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let t = Catalog::builtin(None).track(ids::HD).unwrap().clone();
    let a = &ao["audio"];
    let mut secrets = vec![
        token.clone(),
        refresh,
        refreshed["access_token"].as_str().unwrap().to_string(),
        pair["device_code"].as_str().unwrap().to_string(),
        blob,
        a["manifestUrl"]
            .as_str()
            .unwrap()
            .rsplit("sig=")
            .next()
            .unwrap()
            .to_string(),
    ];
    for list in ["key", "manifestHeaders", "audioSegmentHeaders"] {
        secrets.push(a["headers"][list][0]["value"].as_str().unwrap().to_string());
    }
    for tier in [Tier::Ld, Tier::Sd, Tier::Hd] {
        secrets.push(hex::encode(t.content_key(tier)));
        secrets.push(base64::engine::general_purpose::STANDARD.encode(t.content_key(tier)));
    }
    // Token bodies without their prefix, in case a log strips it.
    secrets.push(token.trim_start_matches("Atza|").to_string());

    let requests = c
        .get(format!("{base}/_emulator/requests"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("license: issued 1 key(s)"),
        "the log is captured: {logs}"
    );
    assert!(logs.contains("lwa: device authorization redeemed"));
    assert!(requests.contains("\"service\":\"license\""));
    assert!(
        requests.contains("authorization"),
        "header names are logged"
    );
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "a secret reached the tracing output"
        );
        assert!(
            !requests.contains(s.as_str()),
            "a secret reached /_emulator/requests"
        );
    }
}

#[tokio::test]
async fn serve_writes_the_env_file_the_plugins_source() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("emu.env");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_amzmusic-emulator"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "serve",
            "--token-lifetime",
            "120",
            "--device-poll-interval",
            "0",
            "--env-file",
        ])
        .arg(&env)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base = line.strip_prefix("ready ").unwrap().to_string();
    // Written before `ready`.
    let text = std::fs::read_to_string(&env).unwrap();
    assert!(text.contains(&format!("export AMAZONMUSIC_API_ENDPOINT='{base}'")));
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("export AMAZONMUSIC_ACCESS_TOKEN='"))
        .unwrap()
        .trim_end_matches('\'');
    let c = client();
    let (s, v) = audio(&c, &base, token, ids::HD, "HD", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let file: Value =
        serde_json::from_slice(&std::fs::read(services::token_file_path(&env)).unwrap()).unwrap();
    assert_eq!(file["expires_in"], 120);
    assert_eq!(file["graphql_endpoint"], format!("{base}/graphql"));
    // The flags reached the services.
    let pair = code_pair(&c, &base, "amazon_music:access").await;
    assert_eq!(pair["interval"], 0);
    child.kill().await.unwrap();
}
