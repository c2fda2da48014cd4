//! The music API: a track id in, an audio object (signed manifest URL, expiry, three header
//! lists) out, filtered by the device's capability; album and playlist track lists.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::checks::{
    market, require_api_key, require_bearer, require_scope, ApiError, MUSIC_SCOPE,
};
use crate::cdn::{issue_audio_object, AudioObject, IssueError};
use crate::content::catalog::{Tier, TrackSpec};
use crate::content::mpd::{self, SelectError};
use crate::state::AppState;

pub const CAPABILITY_HEADER: &str = "x-amzn-audio-device-capability";
pub const DRM_TYPE_HEADER: &str = "x-amzn-audio-drmtype";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/tracks/{id}/audio", get(track_audio))
        .route("/v1/albums/{id}/tracks", get(album_tracks))
        .route("/v1/playlists/{id}/tracks", get(playlist_tracks))
}

/// API key, then token, then scope: what every music API call checks first.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    require_api_key(headers)?;
    let grant = require_bearer(state, headers)?;
    require_scope(&grant, MUSIC_SCOPE)
}

/// The best tier the request may see, from `X-Amzn-Audio-Device-Capability` and the DRM type.
pub fn requested_tier(headers: &HeaderMap) -> Result<Tier, ApiError> {
    let drm = headers
        .get(DRM_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    if !drm.eq_ignore_ascii_case("WIDEVINE") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_drm_type",
            "send X-Amzn-Audio-DrmType: WIDEVINE (the only DRM type there is)",
        ));
    }
    let cap = headers
        .get(CAPABILITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    mpd::max_capability(cap).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "unsupported_capability",
            "X-Amzn-Audio-Device-Capability must list qualities among SD, HD, UHD, ATMOS, 360RA",
        )
    })
}

fn rfc3339(unix: u64) -> String {
    OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn header_list(list: &[(String, String)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(n, v)| json!({ "name": n, "value": v }))
            .collect(),
    )
}

/// The audio object as the music API answers it (docs/service-api.md).
pub fn audio_json(ao: &AudioObject) -> Value {
    json!({
        "audio": {
            "trackId": ao.track_id,
            "manifestUrl": ao.manifest_url,
            "expires": rfc3339(ao.expires),
            "quality": ao.quality,
            "drmType": "WIDEVINE",
            "headers": {
                "key": header_list(&ao.key_headers),
                "manifestHeaders": header_list(&ao.manifest_headers),
                "audioSegmentHeaders": header_list(&ao.audio_segment_headers),
            }
        }
    })
}

fn track_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "track_not_found",
        format!("there is no track {id}"),
    )
}

async fn track_audio(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let max = requested_tier(&headers)?;
    let track = state
        .catalog
        .track(&id)
        .ok_or_else(|| track_not_found(&id))?;
    let market = market(&headers);
    if !track.available_in(&market) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_available_in_market",
            format!("track {id} is not available in market {market}"),
        ));
    }
    let ao = issue_audio_object(&state, &id, max, None).map_err(|e| match e {
        IssueError::UnknownTrack => track_not_found(&id),
        IssueError::Select(SelectError::CapabilityExceeded | SelectError::InvalidCapability(_)) => {
            ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "unsupported_capability",
                format!("track {id} has no quality this device can play"),
            )
        }
    })?;
    tracing::debug!(
        "api: audio object for {id} (asked up to {}, got {}), expires {}",
        max.label(),
        ao.quality,
        rfc3339(ao.expires)
    );
    Ok(Json(audio_json(&ao)))
}

fn track_entry(t: &TrackSpec) -> Value {
    json!({
        "id": t.id,
        "title": t.title,
        "trackNumber": t.track_number,
        "durationMs": t.duration_ms,
    })
}

fn track_list(state: &AppState, id: &str, title: &str, ids: &[String]) -> Json<Value> {
    let tracks: Vec<Value> = ids
        .iter()
        .filter_map(|t| state.catalog.track(t))
        .map(track_entry)
        .collect();
    Json(json!({ "id": id, "title": title, "tracks": tracks }))
}

async fn album_tracks(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let album = super::graphql::album_view(&state.catalog, &id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "album_not_found",
            format!("there is no album {id}"),
        )
    })?;
    Ok(track_list(
        &state,
        &album.id,
        &album.title,
        &album.track_ids,
    ))
}

async fn playlist_tracks(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let p = state.catalog.playlist(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "playlist_not_found",
            format!("there is no playlist {id}"),
        )
    })?;
    Ok(track_list(&state, &p.id, &p.title, &p.track_ids))
}
