// SPDX-License-Identifier: MPL-2.0
//! For the unit tests: a session signed in through the real LWA device flow of the shared
//! emulator harness (`amzmusic_tests::Emulator`), as the integration tests' `sign_in` does.

use std::sync::Arc;

use amzmusic_tests::Emulator;

use crate::config::{self, Overrides};
use crate::http::{self, Secret, API_RETRY, RUNTIME};
use crate::session::Session;
use crate::token::{now_unix, LwaClient, PollOutcome, TokenFile, SCOPE};

pub const HD: &str = "B0EMUHD001";
pub const CLIENT_ID: &str = "amzn1.application-oa2-client.amzmusicemulator";
pub const API_KEY: &str = "amzn1.application.amzmusicemulator";

/// A started emulator (`extra`: its arguments), the directory of the token file and a session
/// for `track` with the capability the source asks for by default.
pub fn signed_in(extra: &[&str], track: &str) -> (Emulator, tempfile::TempDir, Arc<Session>) {
    let emu = Emulator::start(extra).expect("emulator (cargo build -p amzmusic-emulator)");
    let dir = amzmusic_tests::temp_dir("amazonmusic-unit-");
    let client = http::client("amazonmusic-tests", &http::TlsProxy::default()).unwrap();
    let lwa = LwaClient::new(client, &emu.base_url, CLIENT_ID, API_RETRY);
    let pair = RUNTIME.block_on(lwa.create_code_pair(SCOPE)).unwrap();
    let approved = emu.post_json(
        "/_emulator/lwa/approve",
        serde_json::json!({ "user_code": pair.user_code }),
    );
    assert_eq!(approved, 204);
    let answer = match RUNTIME.block_on(lwa.poll(&pair)).unwrap() {
        PollOutcome::Granted(a) => a,
        other => panic!("approved code pair gave {other:?}"),
    };
    let mut f = TokenFile {
        client_id: Some(CLIENT_ID.into()),
        lwa_endpoint: Some(emu.base_url.clone()),
        scope: Some(SCOPE.into()),
        ..Default::default()
    };
    f.apply(&answer, now_unix());
    let path = dir.path().join("token.json");
    f.save_atomic(&path).unwrap();
    let cfg = config::resolve(
        &Overrides {
            api_endpoint: Some(emu.base_url.clone()),
            lwa_endpoint: Some(emu.base_url.clone()),
            graphql_endpoint: Some(emu.url("/graphql")),
            api_key: Some(Secret::new(API_KEY)),
            client_id: Some(CLIENT_ID.into()),
            token_file: Some(path),
            ..Default::default()
        },
        |_| None,
    )
    .unwrap();
    let session = Session::new(cfg, track, "SD,HD,UHD,ATMOS").unwrap();
    (emu, dir, session)
}
