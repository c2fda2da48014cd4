//! The license server: checks the LWA token, User-Agent, the audio object's key header and
//! entitlement, then answers the stub CDM's challenge through `amzmusic_common::license`.

use amzmusic_common::license::{
    decode_license_request_body, encode_license_response_body, issue_license, parse_challenge,
    Challenge, KeyId, LicenseError, LicensePolicy,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use std::collections::HashMap;
use std::sync::Arc;

use super::checks::{market, require_bearer, require_scope, ApiError, MUSIC_SCOPE};
use crate::content::catalog::{Catalog, Tier, TrackSpec};
use crate::signing::{DenyReason, TokenKind, KEY_TOKEN_HEADER};
use crate::state::{AppState, LICENSE_PATH};

/// The request header that asks for a license expiring after N seconds (the seed's name).
pub const EXPIRATION_HEADER: &str = "x-amz-music-license-expiration-secs";

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(LICENSE_PATH, post(license))
}

/// An error-table row as the HTTP answer.
fn table_error(e: LicenseError) -> Response {
    let mut resp = (
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        e.to_json_body(),
    )
        .into_response();
    if let Some(secs) = e.retry_after_secs() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Maps the shared checks' errors onto the license error table where a row fits.
fn as_table(e: ApiError) -> Response {
    match e.status.as_u16() {
        401 => table_error(LicenseError::InvalidToken(e.message)),
        _ => e.into_response(),
    }
}

/// Which track and tier a key id belongs to.
pub(crate) fn key_owner<'a>(catalog: &'a Catalog, kid: &KeyId) -> Option<(&'a TrackSpec, Tier)> {
    catalog.tracks.iter().find_map(|t| {
        t.tiers()
            .into_iter()
            .find(|tier| t.key_id(*tier) == kid.0)
            .map(|tier| (t, tier))
    })
}

/// The track a challenge is for: its PSSH content id (the track id), else its key ids.
fn challenge_track<'a>(catalog: &'a Catalog, c: &Challenge) -> Option<&'a TrackSpec> {
    let by_content = base64::engine::general_purpose::STANDARD
        .decode(&c.content_id)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|id| catalog.track(&id));
    by_content.or_else(|| {
        c.parsed_key_ids()
            .ok()?
            .iter()
            .find_map(|k| key_owner(catalog, k).map(|(t, _)| t))
    })
}

fn not_entitled(msg: impl Into<String>) -> Response {
    table_error(LicenseError::NotEntitled(msg.into()))
}

async fn license(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let has_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    if !has_agent {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_user_agent",
            "license requests must carry a User-Agent naming the player",
        )
        .into_response();
    }
    let grant = match require_bearer(&state, &headers) {
        Ok(g) => g,
        Err(e) => return as_table(e),
    };
    if let Err(e) = require_scope(&grant, MUSIC_SCOPE) {
        return e.into_response();
    }
    let duration = match headers.get(EXPIRATION_HEADER) {
        None => state.config.lock().unwrap().license_duration_s,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) => n,
            None => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_expiration",
                    format!("{EXPIRATION_HEADER} must be a whole number of seconds"),
                )
                .into_response()
            }
        },
    };
    let challenge_bytes = match decode_license_request_body(&body) {
        Ok(c) => c,
        Err(e) => return table_error(e),
    };
    let challenge = match parse_challenge(&challenge_bytes) {
        Ok(c) => c,
        Err(e) => return table_error(e),
    };
    tracing::debug!(
        "license: {:?} challenge, session {}, key ids {:?}, client {:?}",
        challenge.kind,
        challenge.session_id,
        challenge.key_ids,
        challenge.client_info
    );
    let catalog = &state.catalog;
    let Some(track) = challenge_track(catalog, &challenge) else {
        return table_error(LicenseError::UnknownKeyId(challenge.key_ids.clone()));
    };

    // The audio object's key header: valid, for this track, not expired.
    let Some(token) = headers.get(KEY_TOKEN_HEADER).and_then(|v| v.to_str().ok()) else {
        return not_entitled(format!(
            "the audio object's key header ({KEY_TOKEN_HEADER}) is missing: send the audio object's `key` headers"
        ));
    };
    let ao = match state.signer.verify_header_token(
        TokenKind::Key,
        &track.id,
        token.trim(),
        state.now_unix(),
    ) {
        Ok(ao) => ao,
        Err(DenyReason::Expired) => {
            return not_entitled(
                "the audio object's key header has expired: refresh the audio object",
            )
        }
        Err(_) => {
            return not_entitled(format!(
                "the audio object's key header is not valid for track {}",
                track.id
            ))
        }
    };
    let market = market(&headers);
    if !track.available_in(&market) {
        return not_entitled(format!(
            "track {} is not available in market {market}",
            track.id
        ));
    }
    // Tiers above what the audio object granted are not entitled; with no record of the audio
    // object (another emulator run), the track's own tiers are.
    let top = state
        .services
        .audio_object(&ao)
        .filter(|a| a.track_id == track.id)
        .map(|a| a.top)
        .unwrap_or(Tier::Atmos);
    let mut keys: HashMap<[u8; 16], [u8; 16]> = HashMap::new();
    let mut refused = Vec::new();
    for kid in challenge.parsed_key_ids().unwrap_or_default() {
        match key_owner(catalog, &kid) {
            Some((t, tier)) if t.id == track.id && tier <= top => {
                keys.insert(kid.0, t.content_key(tier));
            }
            Some(_) => refused.push(kid.to_string()),
            None => {}
        }
    }
    if keys.is_empty() && !refused.is_empty() {
        return not_entitled(format!(
            "this audio object does not entitle to key ids {}",
            refused.join(", ")
        ));
    }
    let policy = LicensePolicy {
        license_duration_secs: duration,
        renewal_delay_secs: 0,
        can_renew: true,
    };
    match issue_license(&challenge_bytes, |kid| keys.get(&kid.0).copied(), &policy) {
        Ok(license) => {
            tracing::debug!(
                "license: issued {} key(s) for {} (up to {}), duration {duration} s, {} refused",
                keys.len(),
                track.id,
                top.label(),
                refused.len()
            );
            (
                [(header::CONTENT_TYPE, "application/json")],
                encode_license_response_body(&license),
            )
                .into_response()
        }
        Err(e) => table_error(e),
    }
}
