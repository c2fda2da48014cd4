//! The CDN: signed, expiring manifest and segment URLs that also require the audio object's
//! per-track headers, byte ranges over virtual files, and the unauthenticated open mirror.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use std::io::SeekFrom;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::content::catalog::{Addressing, KeySystem, Tier};
use crate::content::mpd::{self, SelectError, UrlStyle};
use crate::content::store::{PackagedRep, PackagedTrack, Variant};
use crate::signing::{
    random_id, DenyReason, Grant, TokenKind, KEY_TOKEN_HEADER, MANIFEST_TOKEN_HEADER,
    SEGMENT_TOKEN_HEADER,
};
use crate::state::AppState;

/// The audio object the music API hands out: where the manifest is, until when, and the three
/// header lists (name, value) the client must send.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AudioObject {
    pub id: String,
    pub track_id: String,
    pub manifest_url: String,
    /// Unix seconds.
    pub expires: u64,
    pub quality: String,
    pub manifest_headers: Vec<(String, String)>,
    pub audio_segment_headers: Vec<(String, String)>,
    pub key_headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueError {
    UnknownTrack,
    Select(SelectError),
}

/// Issues an audio object for `track_id` filtered for a device whose best quality is `max`.
pub fn issue_audio_object(
    state: &AppState,
    track_id: &str,
    max: Tier,
    addressing: Option<Addressing>,
) -> Result<AudioObject, IssueError> {
    let track = state
        .catalog
        .track(track_id)
        .ok_or(IssueError::UnknownTrack)?;
    let reps = mpd::select_representations(track, max).map_err(IssueError::Select)?;
    let top = reps.iter().map(|r| r.tier).max().unwrap_or(Tier::Sd);
    let cfg = state.config.lock().unwrap().clone();
    let addressing = addressing.unwrap_or(cfg.addressing);
    let exp = state.now_unix() + cfg.audio_object_lifetime_s;
    let ao = random_id(8);
    let grant = Grant {
        track_id: track_id.to_string(),
        ao: ao.clone(),
        cap: top.label().to_string(),
        addressing: addressing.name().to_string(),
        exp,
    };
    let query = state.signer.sign_query(&grant);
    let tok = |k| state.signer.header_token(k, track_id, &ao, exp);
    // The license server hands out keys only for the tiers this audio object grants.
    state.services.record_audio_object(
        &ao,
        crate::state::IssuedAudioObject {
            track_id: track_id.to_string(),
            top,
            expires: exp,
        },
        state.now_unix(),
    );
    Ok(AudioObject {
        id: ao.clone(),
        track_id: track_id.to_string(),
        manifest_url: format!(
            "{}/cdn/{}/manifest.mpd{}",
            state.base_url(),
            track_id,
            query
        ),
        expires: exp,
        quality: top.label().to_string(),
        manifest_headers: vec![(MANIFEST_TOKEN_HEADER.into(), tok(TokenKind::Manifest))],
        audio_segment_headers: vec![(SEGMENT_TOKEN_HEADER.into(), tok(TokenKind::Segment))],
        key_headers: vec![(KEY_TOKEN_HEADER.into(), tok(TokenKind::Key))],
    })
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/cdn/{track}/manifest.mpd", get(cdn_manifest))
        .route("/cdn/{track}/{file}", get(cdn_file))
        .route("/cdn/{track}/{rep}/{segment}", get(cdn_segment))
        .merge(open_router())
}

/// The open mirror, readable from a page on any origin (a browser player served from another
/// port): CORS headers on every answer, and every OPTIONS answered by the CORS layer (tower-http
/// takes any OPTIONS for a preflight: 200 with the allowed methods and headers).
fn open_router() -> Router<Arc<AppState>> {
    use axum::http::Method;
    use tower_http::cors::{Any, CorsLayer};
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers(Any)
        // Players read the length and range of what they fetched (dash.js and Shaka time
        // their downloads with them).
        .expose_headers([
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::DATE,
        ])
        .max_age(std::time::Duration::from_secs(600));
    Router::new()
        .route("/open/{track}/manifest.mpd", get(open_manifest))
        .route("/open/{track}/{rep}/{segment}", get(open_segment))
        .layer(cors)
}

#[derive(Debug, Deserialize)]
pub struct SignedQuery {
    ao: Option<String>,
    cap: Option<String>,
    addr: Option<String>,
    exp: Option<u64>,
    sig: Option<String>,
}

pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

fn deny(reason: DenyReason) -> Response {
    let msg = match reason {
        DenyReason::Expired => "this URL or header token has expired: refresh the audio object",
        DenyReason::BadSignature => "the URL signature does not match",
        DenyReason::BadToken => "the per-track header token is not valid for this resource",
        DenyReason::MissingToken => "the audio object's per-track header is missing",
    };
    error(StatusCode::FORBIDDEN, reason.code(), msg)
}

/// Checks the signed query and the per-track header for `track`; returns the grant.
// The error is the handler's finished answer; boxing it would only add noise at every caller.
#[allow(clippy::result_large_err)]
fn authorize(
    state: &AppState,
    track: &str,
    q: &SignedQuery,
    headers: &HeaderMap,
    kind: TokenKind,
) -> Result<Grant, Response> {
    let (Some(ao), Some(cap), Some(addr), Some(exp), Some(sig)) =
        (&q.ao, &q.cap, &q.addr, q.exp, &q.sig)
    else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "unsigned",
            "this CDN URL is not signed: use the URL from the audio object",
        ));
    };
    let grant = Grant {
        track_id: track.to_string(),
        ao: ao.clone(),
        cap: cap.clone(),
        addressing: addr.clone(),
        exp,
    };
    let now = state.now_unix();
    state.signer.verify_grant(&grant, sig, now).map_err(deny)?;
    let header = match kind {
        TokenKind::Manifest => MANIFEST_TOKEN_HEADER,
        TokenKind::Segment => SEGMENT_TOKEN_HEADER,
        TokenKind::Key => KEY_TOKEN_HEADER,
    };
    let token = headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| deny(DenyReason::MissingToken))?;
    let token_ao = state
        .signer
        .verify_header_token(kind, track, token, now)
        .map_err(deny)?;
    if token_ao != *ao {
        return Err(deny(DenyReason::BadToken));
    }
    Ok(grant)
}

async fn packaged(
    state: &Arc<AppState>,
    track: &str,
    variant: Variant,
) -> Result<Arc<PackagedTrack>, Response> {
    if state.catalog.track(track).is_none() {
        return Err(error(
            StatusCode::NOT_FOUND,
            "unknown_track",
            "no such track",
        ));
    }
    let st = state.clone();
    let id = track.to_string();
    tokio::task::spawn_blocking(move || st.store.packaged(&id, variant))
        .await
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            )
        })?
        .map_err(|e| {
            tracing::error!("content generation failed: {e:#}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "content generation failed",
            )
        })
}

fn track_variant(state: &AppState, track: &str) -> Variant {
    let scheme = state
        .catalog
        .track(track)
        .map(|t| t.scheme)
        .unwrap_or(crate::content::catalog::Scheme::Cenc);
    Variant::Encrypted(scheme)
}

fn mpd_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/dash+xml")], body).into_response()
}

async fn cdn_manifest(
    State(state): State<Arc<AppState>>,
    Path(track): Path<String>,
    Query(q): Query<SignedQuery>,
    headers: HeaderMap,
) -> Response {
    let grant = match authorize(&state, &track, &q, &headers, TokenKind::Manifest) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let Ok(max) = mpd::max_capability(&grant.cap) else {
        return error(StatusCode::BAD_REQUEST, "bad_capability", "bad capability");
    };
    let Ok(addressing) = grant.addressing.parse::<Addressing>() else {
        return error(StatusCode::BAD_REQUEST, "bad_addressing", "bad addressing");
    };
    let p = match packaged(&state, &track, track_variant(&state, &track)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let spec = state.catalog.track(&track).expect("checked").clone();
    let reps = match mpd::select_representations(&spec, max) {
        Ok(r) => r,
        Err(_) => {
            return error(
                StatusCode::FORBIDDEN,
                "capability_exceeded",
                "no representation fits",
            )
        }
    };
    let query = state.signer.sign_query(&grant);
    let key_system = state.config.lock().unwrap().key_system;
    let license = match key_system {
        KeySystem::Widevine => state.license_url(),
        KeySystem::Clearkey => state.clearkey_license_url(),
    };
    mpd_response(mpd::write_mpd(
        &spec,
        &p,
        &reps,
        addressing,
        &UrlStyle {
            query: &query,
            license_url: Some(&license),
            key_system,
        },
    ))
}

/// `{rep}.mp4`: the whole representation file (list and base addressing).
async fn cdn_file(
    State(state): State<Arc<AppState>>,
    Path((track, file)): Path<(String, String)>,
    Query(q): Query<SignedQuery>,
    headers: HeaderMap,
) -> Response {
    let grant = match authorize(&state, &track, &q, &headers, TokenKind::Segment) {
        Ok(g) => g,
        Err(r) => return r,
    };
    let Some(rep_id) = file.strip_suffix(".mp4") else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such file");
    };
    let p = match packaged(&state, &track, track_variant(&state, &track)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(rep) = p.rep(rep_id) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_representation",
            "no such representation",
        );
    };
    let with_sidx = grant.addressing == Addressing::Base.name();
    serve_virtual(&state, rep, VirtualFile::Whole { with_sidx }, &headers).await
}

async fn cdn_segment(
    State(state): State<Arc<AppState>>,
    Path((track, rep_id, segment)): Path<(String, String, String)>,
    Query(q): Query<SignedQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &track, &q, &headers, TokenKind::Segment) {
        return r;
    }
    segment_response(
        &state,
        &track,
        &rep_id,
        &segment,
        track_variant(&state, &track),
        &headers,
    )
    .await
}

async fn segment_response(
    state: &Arc<AppState>,
    track: &str,
    rep_id: &str,
    segment: &str,
    variant: Variant,
    headers: &HeaderMap,
) -> Response {
    let p = match packaged(state, track, variant).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(rep) = p.rep(rep_id) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_representation",
            "no such representation",
        );
    };
    let part = if segment == "init.mp4" {
        VirtualFile::Init
    } else {
        match segment
            .strip_suffix(".m4s")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n >= 1 && n <= rep.segments.len() => VirtualFile::Segment(n - 1),
            Some(_) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "no_such_segment",
                    "segment number out of range",
                )
            }
            None => return error(StatusCode::NOT_FOUND, "not_found", "no such file"),
        }
    };
    serve_virtual(state, rep, part, headers).await
}

async fn open_manifest(State(state): State<Arc<AppState>>, Path(track): Path<String>) -> Response {
    if !state.config.lock().unwrap().open_mirror {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the open mirror is off (serve --open-mirror)",
        );
    }
    let p = match packaged(&state, &track, Variant::Clear).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let spec = state.catalog.track(&track).expect("checked").clone();
    mpd_response(mpd::write_mpd(
        &spec,
        &p,
        &spec.representations,
        Addressing::Template,
        &UrlStyle {
            query: "",
            license_url: None,
            key_system: KeySystem::Widevine,
        },
    ))
}

async fn open_segment(
    State(state): State<Arc<AppState>>,
    Path((track, rep_id, segment)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if !state.config.lock().unwrap().open_mirror {
        return error(StatusCode::NOT_FOUND, "not_found", "the open mirror is off");
    }
    segment_response(&state, &track, &rep_id, &segment, Variant::Clear, &headers).await
}

enum VirtualFile {
    /// init [+ sidx] + every fragment
    Whole {
        with_sidx: bool,
    },
    Init,
    Segment(usize),
}

/// A Range header that is malformed or cannot be satisfied (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRange;

/// A byte range request, resolved against a length: `Ok(None)` is the whole thing.
pub fn parse_range(h: Option<&HeaderValue>, len: u64) -> Result<Option<(u64, u64)>, BadRange> {
    let Some(v) = h else { return Ok(None) };
    let s = v.to_str().map_err(|_| BadRange)?.trim();
    let spec = s.strip_prefix("bytes=").ok_or(BadRange)?;
    if spec.contains(',') {
        // Multiple ranges: answered with the whole body, which RFC 9110 allows.
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(BadRange)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", "") => return Err(BadRange),
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| BadRange)?;
            if n == 0 {
                return Err(BadRange);
            }
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().map_err(|_| BadRange)?, len.saturating_sub(1)),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| BadRange)?;
            let b: u64 = b.parse().map_err(|_| BadRange)?;
            if b < a {
                return Err(BadRange);
            }
            (a, b.min(len.saturating_sub(1)))
        }
    };
    if start >= len || len == 0 {
        return Err(BadRange);
    }
    Ok(Some((start, end)))
}

/// Serves a virtual file made of in-memory parts and a region of the media file.
async fn serve_virtual(
    state: &AppState,
    rep: &PackagedRep,
    part: VirtualFile,
    headers: &HeaderMap,
) -> Response {
    let key_system = state.config.lock().unwrap().key_system;
    let (prefix, media_start, media_len): (Vec<u8>, u64, u64) = match part {
        VirtualFile::Whole { with_sidx } => {
            let mut p = rep.init_for(key_system).into_owned();
            if with_sidx {
                p.extend_from_slice(&rep.sidx());
            }
            (p, 0, rep.media_len())
        }
        VirtualFile::Init => (rep.init_for(key_system).into_owned(), 0, 0),
        VirtualFile::Segment(i) => (Vec::new(), rep.segments[i].offset, rep.segments[i].size),
    };
    let total = prefix.len() as u64 + media_len;
    let (start, end, status) = match parse_range(headers.get(header::RANGE), total) {
        Ok(None) => (0, total.saturating_sub(1), StatusCode::OK),
        Ok(Some((a, b))) => (a, b, StatusCode::PARTIAL_CONTENT),
        Err(BadRange) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{total}"))],
                Json(json!({"error": "bad_range", "message": "the Range cannot be satisfied"})),
            )
                .into_response()
        }
    };
    let len = if total == 0 { 0 } else { end - start + 1 };
    // Parts: [start, end] over prefix ++ media region.
    let plen = prefix.len() as u64;
    let head = if start < plen {
        Bytes::copy_from_slice(&prefix[start as usize..(end + 1).min(plen) as usize])
    } else {
        Bytes::new()
    };
    let m_from = start.max(plen) - plen;
    let m_to = (end + 1).saturating_sub(plen);
    let path = rep.media_path.clone();
    let file_from = media_start + m_from;
    let file_len = m_to.saturating_sub(m_from);
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(head) })
        .chain(media_stream(path, file_from, file_len));
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

use futures::StreamExt;

fn media_stream(
    path: std::path::PathBuf,
    from: u64,
    len: u64,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    const CHUNK: u64 = 64 * 1024;
    futures::stream::unfold(
        (None::<tokio::fs::File>, from, len),
        move |(file, pos, left)| {
            let path = path.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let mut f = match file {
                    Some(f) => f,
                    None => match tokio::fs::File::open(&path).await {
                        Ok(mut f) => match f.seek(SeekFrom::Start(pos)).await {
                            Ok(_) => f,
                            Err(e) => return Some((Err(e), (None, pos, 0))),
                        },
                        Err(e) => return Some((Err(e), (None, pos, 0))),
                    },
                };
                let n = CHUNK.min(left) as usize;
                let mut buf = vec![0u8; n];
                match f.read_exact(&mut buf).await {
                    Ok(_) => Some((
                        Ok(Bytes::from(buf)),
                        (Some(f), pos + n as u64, left - n as u64),
                    )),
                    Err(e) => Some((Err(e), (None, pos, 0))),
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, len: u64) -> Result<Option<(u64, u64)>, BadRange> {
        parse_range(Some(&HeaderValue::from_str(s).unwrap()), len)
    }

    #[test]
    fn ranges() {
        assert_eq!(r("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(r("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=90-200", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=100-", 100), Err(BadRange));
        assert_eq!(r("bytes=9-1", 100), Err(BadRange));
        assert_eq!(r("bytes=a-b", 100), Err(BadRange));
        assert_eq!(r("items=0-1", 100), Err(BadRange));
        assert_eq!(r("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range(None, 100), Ok(None));
    }
}
