// SPDX-License-Identifier: MPL-2.0
//! The FireFly client against the emulator's GraphQL: the three auth modes, 429 retried after
//! Retry-After, and a 413 answered by splitting the query in two.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gstamazonmusic::firefly::{self, Auth};
use gstamazonmusic::http::{self, Secret, API_RETRY, RUNTIME};
use gstamazonmusic::token::TokenFile;

fn client(emu: &Emulator) -> firefly::Client {
    firefly::Client {
        http: http::client("amazonmusic-tests", &http::TlsProxy::default()).unwrap(),
        url: emu.url("/graphql"),
        api_key: Some(Secret::new(API_KEY)),
        device_id: "0123456789ABCDEF".into(),
        device_type: "A1GSTAMZMUSIC".into(),
        market: "US".into(),
        session_id: firefly::new_session_id(),
        feature_flags: String::new(),
        policy: API_RETRY,
    }
}

/// Header names of the last GraphQL request.
fn last_graphql_headers(emu: &Emulator) -> Vec<String> {
    emu.request_log()
        .into_iter()
        .rfind(|r| r["service"] == "graphql")
        .unwrap()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn all_three_auth_modes_resolve_the_track() {
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token = TokenFile::load(&emu.sign_in(dir.path()))
        .unwrap()
        .access_token;
    let c = client(&emu);
    let modes = [
        Auth::Bearer(token.clone()),
        Auth::AmznMusic {
            token: token.clone(),
            device_id: c.device_id.clone(),
            device_type: c.device_type.clone(),
        },
        Auth::Anonymous,
    ];
    for auth in modes {
        let t = RUNTIME
            .block_on(c.track("B0EMUHD001", &auth))
            .unwrap_or_else(|e| panic!("{auth:?}: {e}"));
        assert_eq!(t.title, "Harbour Lights", "{auth:?}");
        assert_eq!(t.album.as_ref().unwrap().title, "Signals");
        assert!(t.cover_url().unwrap().ends_with(".png"));
        let h = last_graphql_headers(&emu);
        let has = |n: &str| h.iter().any(|x| x == n);
        match auth {
            Auth::Anonymous => {
                assert!(!has("authorization"), "{h:?}");
                for n in ["device-id", "device-type", "market", "x-amzn-session-id"] {
                    assert!(has(n), "anonymous call lacks {n}: {h:?}");
                }
            }
            Auth::AmznMusic { .. } => assert!(has("authorization") && has("device-id")),
            Auth::Bearer(_) => assert!(has("authorization") && has("x-api-key")),
        }
    }
    // A bad first-party token is refused, not silently anonymous.
    let bad = Auth::AmznMusic {
        token: Secret::new("Atna|unknown"),
        device_id: "d".into(),
        device_type: "t".into(),
    };
    assert!(RUNTIME.block_on(c.track("B0EMUHD001", &bad)).is_err());
}

#[test]
fn rate_limited_queries_wait_and_succeed() {
    // One request per second per API key.
    let emu = Emulator::start(&["--graphql-rate-limit", "1"]).unwrap();
    let c = client(&emu);
    let started = Instant::now();
    for _ in 0..3 {
        RUNTIME
            .block_on(c.track("B0EMUHD001", &Auth::Anonymous))
            .expect("429 is retried after Retry-After");
    }
    let statuses: Vec<u16> = emu
        .calls("POST", "/graphql")
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[test]
fn payload_too_large_splits_the_query() {
    let emu = Emulator::start(&[]).unwrap();
    emu.fault(
        serde_json::json!({"path_contains": "/graphql", "count": 1, "action": {"status": 413}}),
    );
    let mut c = client(&emu);
    c.market = "JP".into();
    let t = RUNTIME
        .block_on(c.track("B0EMUJP001", &Auth::Anonymous))
        .unwrap();
    assert_eq!(t.title, "Tokyo Only");
    assert_eq!(t.album.unwrap().title, "Local");
    assert_eq!(t.explicit, Some(true));
    let statuses: Vec<u16> = emu
        .calls("POST", "/graphql")
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(statuses, vec![413, 200, 200]);
}
