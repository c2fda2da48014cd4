// SPDX-License-Identifier: MPL-2.0
//! The music API client: the typed audio object of a track (with one token refresh on 401),
//! the manifest it points to, album and playlist track lists, and what each error means.

use std::sync::Arc;

use serde::Deserialize;

use crate::http::{send_with_retries, Answer, HttpError, RetryPolicy, Secret};
use crate::token::{TokenError, TokenManager};
use amzmusic_common::http::body_limit;

pub const CAPABILITY_HEADER: &str = "X-Amzn-Audio-Device-Capability";
pub const DRM_TYPE_HEADER: &str = "X-Amzn-Audio-DrmType";
pub const MARKET_HEADER: &str = "x-amzn-market";
pub const API_KEY_HEADER: &str = "x-api-key";

/// One header of an audio object's lists. The value is secret.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Secret,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AudioHeaders {
    #[serde(default)]
    pub key: Vec<Header>,
    #[serde(default)]
    pub manifest_headers: Vec<Header>,
    #[serde(default)]
    pub audio_segment_headers: Vec<Header>,
}

/// What the music API says about how to play one track, valid until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioObject {
    pub track_id: String,
    /// Signed: secret.
    pub manifest_url: Secret,
    /// Unix seconds (UTC).
    pub expires: u64,
    /// The best quality the manifest holds (`HD`, …).
    pub quality: String,
    pub drm_type: String,
    pub headers: AudioHeaders,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AudioObjectWire {
    track_id: String,
    manifest_url: Secret,
    expires: String,
    #[serde(default)]
    quality: String,
    #[serde(default)]
    drm_type: String,
    #[serde(default)]
    headers: AudioHeaders,
}

#[derive(Deserialize)]
struct AudioAnswer {
    audio: AudioObjectWire,
}

impl AudioObject {
    /// Parses the `GET /v1/tracks/{id}/audio` answer.
    pub fn from_json(body: &[u8]) -> Result<AudioObject, String> {
        let a: AudioAnswer =
            serde_json::from_slice(body).map_err(|e| format!("audio object: {e}"))?;
        let w = a.audio;
        let expires =
            time::OffsetDateTime::parse(&w.expires, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("audio object: bad expires {:?}: {e}", w.expires))?
                .unix_timestamp()
                .max(0) as u64;
        if w.manifest_url.is_empty() {
            return Err("audio object: empty manifestUrl".into());
        }
        // The URL policy of what an audio object names: an http(s) URL, nothing local.
        let scheme = url::Url::parse(w.manifest_url.expose()).map(|u| u.scheme().to_string());
        if !matches!(scheme.as_deref(), Ok("http" | "https")) {
            return Err(format!(
                "audio object: its manifestUrl is not an http(s) URL ({})",
                match scheme {
                    Ok(s) => format!("scheme {s}"),
                    Err(e) => e.to_string(),
                }
            ));
        }
        Ok(AudioObject {
            track_id: w.track_id,
            manifest_url: w.manifest_url,
            expires,
            quality: w.quality,
            drm_type: w.drm_type,
            headers: w.headers,
        })
    }
}

/// A track of an album or playlist.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListedTrack {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub track_number: Option<u32>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TrackList {
    pub id: String,
    #[serde(default)]
    pub title: String,
    pub tracks: Vec<ListedTrack>,
}

/// Why the music API gave no audio object, in the terms the element reports.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{what} {id} does not exist ({message})")]
    NotFound {
        what: &'static str,
        id: String,
        message: String,
    },
    /// Market, entitlement, scope or API key: the account may not play this.
    #[error("not authorized to play {id}: {reason}")]
    NotAuthorized { id: String, reason: String },
    /// The device capability asks for nothing the track has.
    #[error("{id} is not offered in a quality this device asked for ({asked}): {message}")]
    NoQuality {
        id: String,
        asked: String,
        message: String,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No answer after the retries.
    #[error("the music API did not answer: {0}")]
    Network(HttpError),
    #[error("the music API answered: {0}")]
    Other(HttpError),
}

impl ApiError {
    fn from_http(e: HttpError, what: &'static str, id: &str, asked: &str) -> ApiError {
        match e {
            HttpError::Status {
                status: 404,
                message,
                ..
            } => ApiError::NotFound {
                what,
                id: id.into(),
                message,
            },
            HttpError::Status {
                status: 403,
                code,
                message,
            } => ApiError::NotAuthorized {
                id: id.into(),
                reason: if message.is_empty() {
                    code
                } else {
                    format!("{code}: {message}")
                },
            },
            HttpError::Status {
                status: 406,
                message,
                ..
            } => ApiError::NoQuality {
                id: id.into(),
                asked: asked.into(),
                message,
            },
            e @ (HttpError::Transport { .. } | HttpError::Certificate(_)) => ApiError::Network(e),
            e @ HttpError::Status { status: 500.., .. } => ApiError::Network(e),
            e => ApiError::Other(e),
        }
    }
}

enum GetError {
    Http(HttpError),
    Token(TokenError),
}

/// The music API, authorized by a [`TokenManager`].
#[derive(Clone)]
pub struct MusicApi {
    pub http: reqwest::Client,
    pub base: String,
    pub api_key: Option<Secret>,
    pub market: String,
    pub tokens: Arc<TokenManager>,
    pub policy: RetryPolicy,
}

/// A clock skew beyond this (seconds) moves an audio object's expiry onto this machine's clock.
pub const CLOCK_SKEW_TOLERANCE_S: i64 = 5;

/// `expires` (unix seconds by the server's clock) on this machine's clock: moved by the skew
/// the answer's `Date` showed when it exceeds [`CLOCK_SKEW_TOLERANCE_S`]. A client clock an
/// hour ahead then still refreshes at 70 % of the real lifetime, instead of taking every audio
/// object for expired and asking for the next at once.
pub fn local_expiry(expires: u64, clock_skew_secs: Option<i64>) -> u64 {
    match clock_skew_secs {
        Some(s) if s.abs() > CLOCK_SKEW_TOLERANCE_S => expires.saturating_add_signed(s),
        _ => expires,
    }
}

/// Ids go into URL paths: accept what catalogue ids look like and nothing that could change
/// the path.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && id != "."
        && id != ".."
}

impl MusicApi {
    /// GETs `path` with the token, refreshing it once when the API says 401.
    async fn get(&self, path: &str, extra: &[(&str, &str)]) -> Result<Answer, GetError> {
        let url = format!("{}{}", self.base.trim_end_matches('/'), path);
        let (mut token, mut serial) = self.tokens.current().await.map_err(GetError::Token)?;
        let mut refreshed = false;
        loop {
            let r = send_with_retries(&self.policy, body_limit::API, || {
                let mut b = self
                    .http
                    .get(&url)
                    .header(reqwest::header::ACCEPT, "application/json")
                    .header(
                        reqwest::header::AUTHORIZATION,
                        format!("Bearer {}", token.expose()),
                    )
                    .header(MARKET_HEADER, &self.market);
                if let Some(k) = &self.api_key {
                    b = b.header(API_KEY_HEADER, k.expose());
                }
                for (n, v) in extra {
                    b = b.header(*n, *v);
                }
                b
            })
            .await;
            match r {
                Ok(a) => return Ok(a),
                Err(HttpError::Status { status: 401, .. }) if !refreshed => {
                    refreshed = true;
                    (token, serial) = self
                        .tokens
                        .unauthorized(serial)
                        .await
                        .map_err(GetError::Token)?;
                }
                Err(HttpError::Status { status: 401, .. }) => {
                    return Err(GetError::Token(TokenError::Refused {
                        code: "invalid_token".into(),
                        message: "the music API refused a freshly refreshed access token".into(),
                    }))
                }
                Err(e) => return Err(GetError::Http(e)),
            }
        }
    }

    /// The audio object of `track_id` for a device that can play `capability` (`SD,HD`, …).
    pub async fn audio_object(
        &self,
        track_id: &str,
        capability: &str,
    ) -> Result<AudioObject, ApiError> {
        if !valid_id(track_id) {
            return Err(ApiError::NotFound {
                what: "track",
                id: track_id.into(),
                message: "not a catalogue id".into(),
            });
        }
        let answer = self
            .get(
                &format!("/v1/tracks/{track_id}/audio"),
                &[
                    (CAPABILITY_HEADER, capability),
                    (DRM_TYPE_HEADER, "WIDEVINE"),
                ],
            )
            .await
            .map_err(|e| match e {
                GetError::Token(t) => ApiError::Token(t),
                GetError::Http(e) => ApiError::from_http(e, "track", track_id, capability),
            })?;
        let mut ao = AudioObject::from_json(&answer.body)
            .map_err(|m| ApiError::Other(HttpError::BadBody(m)))?;
        ao.expires = local_expiry(ao.expires, answer.clock_skew_secs);
        Ok(ao)
    }

    async fn list(&self, kind: &'static str, id: &str) -> Result<TrackList, ApiError> {
        if !valid_id(id) {
            return Err(ApiError::NotFound {
                what: kind,
                id: id.into(),
                message: "not a catalogue id".into(),
            });
        }
        let answer = self
            .get(&format!("/v1/{kind}s/{id}/tracks"), &[])
            .await
            .map_err(|e| match e {
                GetError::Token(t) => ApiError::Token(t),
                GetError::Http(e) => ApiError::from_http(e, kind, id, ""),
            })?;
        serde_json::from_slice(&answer.body)
            .map_err(|e| ApiError::Other(HttpError::BadBody(format!("{kind} tracks: {e}"))))
    }

    /// The tracks of an album in play order.
    pub async fn album_tracks(&self, id: &str) -> Result<TrackList, ApiError> {
        self.list("album", id).await
    }

    /// The tracks of a playlist in play order.
    pub async fn playlist_tracks(&self, id: &str) -> Result<TrackList, ApiError> {
        self.list("playlist", id).await
    }
}

/// GETs the manifest of `ao` with its `manifestHeaders`.
pub async fn fetch_manifest(
    http: &reqwest::Client,
    ao: &AudioObject,
    policy: &RetryPolicy,
) -> Result<Vec<u8>, HttpError> {
    let ans = send_with_retries(policy, body_limit::MANIFEST, || {
        let mut b = http.get(ao.manifest_url.expose());
        for h in &ao.headers.manifest_headers {
            b = b.header(h.name.as_str(), h.value.expose());
        }
        b
    })
    .await?;
    Ok(ans.body)
}

/// The `codecs` of every Representation (or its AdaptationSet) in an MPD.
pub fn manifest_codecs(mpd: &[u8]) -> Result<Vec<String>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(mpd);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut saw_mpd = false;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let name = e.local_name();
                if name.as_ref() == b"MPD" {
                    saw_mpd = true;
                }
                if name.as_ref() == b"Representation" || name.as_ref() == b"AdaptationSet" {
                    for a in e.attributes().flatten() {
                        if a.key.local_name().as_ref() == b"codecs" {
                            let v = String::from_utf8_lossy(&a.value).to_string();
                            if !out.contains(&v) {
                                out.push(v);
                            }
                        }
                    }
                }
            }
            Ok(Event::Eof) => break,
            Err(e) => return Err(format!("manifest is not XML: {e}")),
            _ => {}
        }
        buf.clear();
    }
    if !saw_mpd {
        return Err("manifest has no MPD element".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_moves_onto_this_clock_only_beyond_the_tolerance() {
        assert_eq!(local_expiry(1_000, None), 1_000);
        assert_eq!(local_expiry(1_000, Some(3)), 1_000);
        assert_eq!(local_expiry(1_000, Some(-5)), 1_000);
        // This machine an hour ahead: the server's expiry is an hour later here.
        assert_eq!(local_expiry(1_000, Some(3600)), 4_600);
        assert_eq!(local_expiry(1_000, Some(-600)), 400);
        assert_eq!(local_expiry(100, Some(-600)), 0);
    }

    const SAMPLE: &str = r#"{"audio":{"trackId":"B0EMUHD001",
        "manifestUrl":"http://127.0.0.1:1/cdn/B0EMUHD001/manifest.mpd?ao=1&sig=abc",
        "expires":"2026-11-23T18:00:00Z","quality":"HD","drmType":"WIDEVINE",
        "headers":{"key":[{"name":"x-amz-music-key-token","value":"k"}],
        "manifestHeaders":[{"name":"x-amz-music-manifest-token","value":"m"}],
        "audioSegmentHeaders":[{"name":"x-amz-music-segment-token","value":"s"}]}}}"#;

    #[test]
    fn an_audio_object_naming_a_local_file_is_refused() {
        let local = SAMPLE.replace(
            "http://127.0.0.1:1/cdn/B0EMUHD001/manifest.mpd?ao=1&sig=abc",
            "file:///etc/passwd",
        );
        let err = AudioObject::from_json(local.as_bytes()).unwrap_err();
        assert!(err.contains("not an http(s) URL (scheme file)"), "{err}");
        let junk = SAMPLE.replace("http://127.0.0.1:1", "not a url");
        let err = AudioObject::from_json(junk.as_bytes()).unwrap_err();
        assert!(err.contains("not an http(s) URL"), "{err}");
    }

    #[test]
    fn audio_object_parses() {
        let ao = AudioObject::from_json(SAMPLE.as_bytes()).unwrap();
        assert_eq!(ao.track_id, "B0EMUHD001");
        assert_eq!(ao.expires, 1_795_456_800);
        assert_eq!(ao.quality, "HD");
        assert_eq!(ao.headers.key[0].name, "x-amz-music-key-token");
        assert_eq!(ao.headers.audio_segment_headers[0].value.expose(), "s");
        let dbg = format!("{ao:?}");
        assert!(!dbg.contains("sig=abc") && !dbg.contains("\"s\""), "{dbg}");
    }

    #[test]
    fn audio_object_rejects_bad_expiry() {
        let bad = SAMPLE.replace("2026-11-23T18:00:00Z", "tomorrow");
        assert!(AudioObject::from_json(bad.as_bytes())
            .unwrap_err()
            .contains("expires"));
        assert!(AudioObject::from_json(b"{}").is_err());
    }

    #[test]
    fn errors_map_to_meanings() {
        let e = |s, c: &str| HttpError::Status {
            status: s,
            code: c.into(),
            message: "m".into(),
        };
        assert!(matches!(
            ApiError::from_http(e(404, "track_not_found"), "track", "X", "SD"),
            ApiError::NotFound { .. }
        ));
        match ApiError::from_http(e(403, "not_available_in_market"), "track", "X", "SD") {
            ApiError::NotAuthorized { reason, .. } => {
                assert!(reason.contains("not_available_in_market"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ApiError::from_http(e(406, "unsupported_capability"), "track", "X", "SD"),
            ApiError::NoQuality { .. }
        ));
        assert!(matches!(
            ApiError::from_http(e(503, "x"), "track", "X", "SD"),
            ApiError::Network(_)
        ));
    }

    #[test]
    fn ids_cannot_escape_the_path() {
        assert!(valid_id("B0EMUHD001"));
        for bad in ["", "..", "a/b", "a?b", "a b", "%2e%2e"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn codecs_are_collected() {
        let mpd = br#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"><Period>
          <AdaptationSet codecs="flac"><Representation id="a" codecs="flac"/></AdaptationSet>
          <AdaptationSet><Representation id="b" codecs="opus"/></AdaptationSet></Period></MPD>"#;
        assert_eq!(manifest_codecs(mpd).unwrap(), vec!["flac", "opus"]);
        assert!(manifest_codecs(b"not xml <<").is_err());
        assert!(manifest_codecs(b"<html/>").is_err());
    }
}
