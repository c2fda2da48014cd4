//! A W3C Clear Key license server (`POST /license/v1/clearkey`): the EME JSON license request
//! as the body (what an EME player, or widevinedecrypt with `license-body=raw`, sends), a JWK
//! set back. It serves the keys registered with `POST /_emulator/clearkey` (content packaged
//! outside the emulator, e.g. by Shaka Packager, for any client: Clear Key servers do not
//! authenticate). `x-amz-music-license-expiration-secs` asks for a lifetime, answered in the
//! JWK set's `expiration_secs` (the emulator's extension; a CDM that honours it renews).
//! With `--key-system clearkey` it also serves the catalogue's own keys, whose manifests then
//! name it (modelled: Amazon runs no Clear Key server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use amzmusic_common::clearkey;
use amzmusic_common::license::{KeyId, LicenseError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::license::{key_owner, EXPIRATION_HEADER};
use crate::content::catalog::KeySystem;
use crate::state::AppState;

/// Where the Clear Key license server listens.
pub const CLEARKEY_LICENSE_PATH: &str = "/license/v1/clearkey";

/// Keys registered through the admin API, by key id.
#[derive(Default)]
pub struct ClearKeys(Mutex<HashMap<KeyId, [u8; 16]>>);

impl ClearKeys {
    pub fn add(&self, kid: KeyId, key: [u8; 16]) {
        self.0.lock().unwrap().insert(kid, key);
    }

    fn get(&self, kid: &KeyId) -> Option<[u8; 16]> {
        self.0.lock().unwrap().get(kid).copied()
    }
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(CLEARKEY_LICENSE_PATH, post(license))
}

fn table_error(e: LicenseError) -> Response {
    (
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        e.to_json_body(),
    )
        .into_response()
}

async fn license(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let kids = match clearkey::parse_license_request(&body) {
        Ok(k) => k,
        Err(e) => return table_error(LicenseError::MalformedChallenge(e.to_string())),
    };
    let expiration = match headers.get(EXPIRATION_HEADER) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                return table_error(LicenseError::MalformedChallenge(format!(
                    "{EXPIRATION_HEADER} must be a whole number of seconds"
                )))
            }
        },
    };
    // The catalogue's own keys too when its content is offered for Clear Key.
    let catalogue = state.config.lock().unwrap().key_system == KeySystem::Clearkey;
    let keys: Vec<(KeyId, [u8; 16])> = kids
        .iter()
        .filter_map(|k| {
            let own = || {
                key_owner(&state.catalog, k)
                    .filter(|_| catalogue)
                    .map(|(t, tier)| t.content_key(tier))
            };
            state.clear_keys.get(k).or_else(own).map(|key| (*k, key))
        })
        .collect();
    if keys.is_empty() {
        return table_error(LicenseError::UnknownKeyId(
            kids.iter().map(KeyId::to_string).collect(),
        ));
    }
    tracing::debug!(
        "clearkey license: {} of {} key id(s), lifetime {expiration:?}",
        keys.len(),
        kids.len()
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        clearkey::license(&keys, expiration),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct Registration {
    /// Key id (32 hex digits) → key (32 hex digits).
    keys: HashMap<String, String>,
}

/// `POST /_emulator/clearkey` `{"keys":{"<kid hex>":"<key hex>",…}}`: registers keys.
pub async fn register(State(state): State<Arc<AppState>>, Json(r): Json<Registration>) -> Response {
    let mut parsed = Vec::new();
    for (kid, key) in &r.keys {
        let (Ok(kid), Some(key)) = (
            kid.parse::<KeyId>(),
            hex::decode(key)
                .ok()
                .and_then(|k| <[u8; 16]>::try_from(k).ok()),
        ) else {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": "bad_key", "message": format!("key id {kid}: want 32 hex digits for both")})),
            )
                .into_response();
        };
        parsed.push((kid, key));
    }
    let n = parsed.len();
    for (kid, key) in parsed {
        state.clear_keys.add(kid, key);
    }
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "registered": n })),
    )
        .into_response()
}
