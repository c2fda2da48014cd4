// SPDX-License-Identifier: MPL-2.0
//! FireFly GraphQL metadata: the track query (kept under the 4096-character limit, split in
//! two after a 413), the three auth modes, and the typed metadata the element turns into tags.

use base64::Engine;
use serde::Deserialize;

use crate::http::{send_with_retries, HttpError, RetryPolicy, Secret};
use amzmusic_common::http::body_limit;

/// FireFly rejects query strings of this many characters or more with 413.
pub const MAX_QUERY_CHARS: usize = 4096;

/// The one query the element sends: everything the tags need in one round trip.
pub const TRACK_QUERY: &str = "query AmazonMusicSrcTrack($id: ID!) { track(id: $id) { \
id title isrc explicit trackNumber discNumber durationMs artists { name } \
album { id title artists { name } image { url } } image { url } } }";

/// The fallback after a 413: the track without its album...
pub const TRACK_ONLY_QUERY: &str = "query AmazonMusicSrcTrackOnly($id: ID!) { track(id: $id) { \
id title isrc explicit trackNumber discNumber durationMs artists { name } image { url } } }";

/// ...and the album on its own.
pub const ALBUM_OF_TRACK_QUERY: &str = "query AmazonMusicSrcAlbum($id: ID!) { track(id: $id) { \
album { id title artists { name } image { url } } } }";

/// How requests authenticate (the FireFly seed's three modes).
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer Atza|…` (LWA, third party).
    Bearer(Secret),
    /// `Authorization: AmznMusic <base64 JSON {access_token, deviceId, deviceType}>`
    /// (first-party token bound to a device).
    AmznMusic {
        token: Secret,
        device_id: String,
        device_type: String,
    },
    /// No Authorization; device id and type, market and a session id identify the caller.
    Anonymous,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Bearer(_) => "Bearer",
            Auth::AmznMusic { .. } => "AmznMusic",
            Auth::Anonymous => "Anonymous",
        })
    }
}

impl Auth {
    /// Picks the mode a token calls for: `Atna|` tokens are first-party (AmznMusic), others
    /// (`Atza|`) go as Bearer; no token means anonymous.
    pub fn for_token(token: Option<Secret>, device_id: &str, device_type: &str) -> Auth {
        match token {
            Some(t) if t.expose().starts_with("Atna|") => Auth::AmznMusic {
                token: t,
                device_id: device_id.into(),
                device_type: device_type.into(),
            },
            Some(t) if !t.is_empty() => Auth::Bearer(t),
            _ => Auth::Anonymous,
        }
    }

    /// The `Authorization` value, if the mode sends one. Secret.
    pub fn authorization(&self) -> Option<String> {
        match self {
            Auth::Bearer(t) => Some(format!("Bearer {}", t.expose())),
            Auth::AmznMusic {
                token,
                device_id,
                device_type,
            } => {
                let json = serde_json::json!({
                    "access_token": token.expose(),
                    "deviceId": device_id,
                    "deviceType": device_type,
                });
                Some(format!(
                    "AmznMusic {}",
                    base64::engine::general_purpose::STANDARD.encode(json.to_string())
                ))
            }
            Auth::Anonymous => None,
        }
    }
}

/// Everything a FireFly request carries besides the query.
#[derive(Clone, Debug)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub api_key: Option<Secret>,
    pub device_id: String,
    pub device_type: String,
    pub market: String,
    /// `x-amzn-session-id` for anonymous calls (`000-0000000-0000000` shape).
    pub session_id: String,
    /// `x-amzn-feature-flags`, comma-separated; empty sends none.
    pub feature_flags: String,
    pub policy: RetryPolicy,
}

/// A fresh anonymous session id in the shape FireFly expects.
pub fn new_session_id() -> String {
    let d = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'0' + rand::random::<u8>() % 10))
            .collect()
    };
    format!("{}-{}-{}", d(3), d(7), d(7))
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Named {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Image {
    pub url: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Album {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub artists: Vec<Named>,
    #[serde(default)]
    pub image: Option<Image>,
}

/// The metadata of one track.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrackMetadata {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub artists: Vec<Named>,
    #[serde(default)]
    pub album: Option<Album>,
    pub track_number: Option<u32>,
    pub disc_number: Option<u32>,
    pub duration_ms: Option<u64>,
    pub isrc: Option<String>,
    pub explicit: Option<bool>,
    #[serde(default)]
    pub image: Option<Image>,
}

impl TrackMetadata {
    /// The cover: the album's image, else the track's.
    pub fn cover_url(&self) -> Option<&str> {
        self.album
            .as_ref()
            .and_then(|a| a.image.as_ref())
            .or(self.image.as_ref())
            .map(|i| i.url.as_str())
            .filter(|u| !u.is_empty())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FireflyError {
    #[error("FireFly: {0}")]
    Http(HttpError),
    #[error("FireFly has no track {0}")]
    NotFound(String),
    #[error("FireFly answered with errors: {0}")]
    GraphQl(String),
}

#[derive(Deserialize)]
struct GqlError {
    message: String,
}

#[derive(Deserialize)]
struct GqlAnswer<T> {
    data: Option<T>,
    #[serde(default)]
    errors: Vec<GqlError>,
}

#[derive(Deserialize)]
struct TrackData {
    track: Option<TrackMetadata>,
}

impl Client {
    async fn post(&self, query: &str, id: &str, auth: &Auth) -> Result<Vec<u8>, HttpError> {
        debug_assert!(query.len() < MAX_QUERY_CHARS);
        let body = serde_json::json!({ "query": query, "variables": { "id": id } }).to_string();
        let authorization = auth.authorization();
        let anonymous = matches!(auth, Auth::Anonymous);
        // 429 is retried by send_with_retries, honouring Retry-After.
        let ans = send_with_retries(&self.policy, body_limit::API, || {
            let mut b = self
                .http
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "application/json")
                .header("market", &self.market)
                .body(body.clone());
            if let Some(k) = &self.api_key {
                b = b.header("x-api-key", k.expose());
            }
            if let Some(a) = &authorization {
                b = b.header(reqwest::header::AUTHORIZATION, a);
            }
            if anonymous || matches!(auth, Auth::AmznMusic { .. }) {
                b = b
                    .header("device-id", &self.device_id)
                    .header("device-type", &self.device_type);
            }
            if anonymous {
                b = b.header("x-amzn-session-id", &self.session_id);
            }
            if !self.feature_flags.is_empty() {
                b = b.header("x-amzn-feature-flags", &self.feature_flags);
            }
            b
        })
        .await?;
        Ok(ans.body)
    }

    pub(crate) fn parse(id: &str, body: &[u8]) -> Result<TrackMetadata, FireflyError> {
        let a: GqlAnswer<TrackData> = serde_json::from_slice(body)
            .map_err(|e| FireflyError::Http(HttpError::BadBody(format!("GraphQL answer: {e}"))))?;
        match a.data.and_then(|d| d.track) {
            Some(t) => Ok(t),
            None if a.errors.is_empty() => Err(FireflyError::NotFound(id.into())),
            None => Err(FireflyError::GraphQl(
                a.errors
                    .into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    /// The metadata of `id`. After a 413 the query is split in two smaller ones.
    pub async fn track(&self, id: &str, auth: &Auth) -> Result<TrackMetadata, FireflyError> {
        match self.post(TRACK_QUERY, id, auth).await {
            Ok(body) => Self::parse(id, &body),
            Err(HttpError::Status { status: 413, .. }) => {
                let body = self
                    .post(TRACK_ONLY_QUERY, id, auth)
                    .await
                    .map_err(FireflyError::Http)?;
                let mut t = Self::parse(id, &body)?;
                if let Ok(body) = self.post(ALBUM_OF_TRACK_QUERY, id, auth).await {
                    if let Ok(a) = Self::parse(id, &body) {
                        t.album = a.album;
                    }
                }
                Ok(t)
            }
            Err(e) => Err(FireflyError::Http(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_fit_the_limit() {
        for q in [TRACK_QUERY, TRACK_ONLY_QUERY, ALBUM_OF_TRACK_QUERY] {
            assert!(q.len() < MAX_QUERY_CHARS, "{} chars", q.len());
        }
    }

    #[test]
    fn auth_modes() {
        let b = Auth::for_token(Some(Secret::new("Atza|x")), "d", "t");
        assert_eq!(b.authorization().unwrap(), "Bearer Atza|x");
        let f = Auth::for_token(Some(Secret::new("Atna|y")), "dev1", "typ1");
        let h = f.authorization().unwrap();
        let enc = h.strip_prefix("AmznMusic ").unwrap();
        let json: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(enc)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json["access_token"], "Atna|y");
        assert_eq!(json["deviceId"], "dev1");
        assert_eq!(json["deviceType"], "typ1");
        assert!(Auth::for_token(None, "d", "t").authorization().is_none());
        assert_eq!(format!("{f:?}"), "AmznMusic");
    }

    #[test]
    fn session_id_shape() {
        let s = new_session_id();
        assert_eq!(s.len(), 19);
        assert_eq!(&s[3..4], "-");
        assert_eq!(&s[11..12], "-");
    }

    #[test]
    fn answers_parse() {
        let body = br#"{"data":{"track":{"id":"T","title":"Harbour Lights","isrc":"Q","explicit":true,
            "trackNumber":3,"discNumber":1,"durationMs":60000,"artists":[{"name":"A"}],
            "album":{"id":"AL","title":"Signals","artists":[{"name":"AA"}],"image":{"url":"http://x/i.png"}},
            "image":null}}}"#;
        let t = Client::parse("T", body).unwrap();
        assert_eq!(t.title, "Harbour Lights");
        assert_eq!(t.track_number, Some(3));
        assert_eq!(t.explicit, Some(true));
        assert_eq!(t.cover_url(), Some("http://x/i.png"));
        assert!(matches!(
            Client::parse("T", br#"{"data":{"track":null}}"#),
            Err(FireflyError::NotFound(_))
        ));
        assert!(matches!(
            Client::parse("T", br#"{"data":null,"errors":[{"message":"boom"}]}"#),
            Err(FireflyError::GraphQl(m)) if m == "boom"
        ));
    }
}
