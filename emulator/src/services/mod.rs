//! The emulated Amazon services other than the CDN: Login with Amazon, the music API, FireFly
//! GraphQL and the license server, with the checks they share (API key, token, scope, market).

pub mod api;
pub mod graphql;
pub mod images;
pub mod license;
pub mod lwa;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::content::catalog::Tier;
use crate::server::AppState;

/// Where the license server listens (the manifests' `<amz:LicenseUrl>`).
pub const LICENSE_PATH: &str = "/license/v1/widevine";

/// The scope the music API and the license server require.
pub const MUSIC_SCOPE: &str = "amazon_music:access";

/// The LWA client id and API key the `--env-file` exports name. The emulator accepts any
/// non-empty client id and API key; these are the ones it suggests.
pub const EMULATOR_CLIENT_ID: &str = "amzn1.application-oa2-client.amzmusicemulator";
pub const EMULATOR_API_KEY: &str = "amzn1.application.amzmusicemulator";

/// The market when a request names none.
pub const DEFAULT_MARKET: &str = "US";

/// Runtime state of the services: tokens and device codes, issued audio objects, rate limits.
pub struct ServicesState {
    pub lwa: Mutex<lwa::LwaState>,
    audio_objects: Mutex<HashMap<String, IssuedAudioObject>>,
    rate: Mutex<HashMap<String, Bucket>>,
    pub(crate) schema: graphql::FireflySchema,
}

impl Default for ServicesState {
    fn default() -> Self {
        ServicesState {
            lwa: Mutex::new(lwa::LwaState::default()),
            audio_objects: Mutex::new(HashMap::new()),
            rate: Mutex::new(HashMap::new()),
            schema: graphql::schema(),
        }
    }
}

/// What the license server needs to know about an audio object: the best tier it grants.
#[derive(Debug, Clone)]
pub struct IssuedAudioObject {
    pub track_id: String,
    pub top: Tier,
    /// Unix seconds.
    pub expires: u64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl ServicesState {
    /// Remembers an audio object so the license server can hand out only the tiers it grants.
    pub fn record_audio_object(&self, ao: &str, issued: IssuedAudioObject, now_unix: u64) {
        let mut g = self.audio_objects.lock().unwrap();
        g.retain(|_, a| a.expires > now_unix);
        g.insert(ao.to_string(), issued);
    }

    pub fn audio_object(&self, ao: &str) -> Option<IssuedAudioObject> {
        self.audio_objects.lock().unwrap().get(ao).cloned()
    }

    /// Token bucket per API key: `per_s` requests a second, bursts of `per_s`. `Err(secs)` is
    /// the `Retry-After` to answer with.
    pub fn take_rate(&self, key: &str, per_s: u32, now: Instant) -> Result<(), u64> {
        if per_s == 0 {
            return Ok(());
        }
        let rate = per_s as f64;
        let mut g = self.rate.lock().unwrap();
        let b = g.entry(key.to_string()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// An error answer: `{"error": code, "message": message}` with the status (and `Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The body of an injected `status` fault: on the license server, the error-table row of that
/// status (so the decryptor maps it exactly as a real one); elsewhere a generic `injected`
/// code. 429 and 503 carry `Retry-After: 1`.
pub fn injected_error(service: &str, code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let msg = "fault injected by the emulator's admin API";
    let name = match (service, status.as_u16()) {
        ("license", 400) => "malformed_challenge",
        ("license", 401) | (_, 401) => "invalid_token",
        ("license", 403) => "not_entitled",
        ("license", 404) => "unknown_key_id",
        (_, 429) => "too_many_requests",
        ("license", 500) => "server_error",
        ("license", 503) => "service_unavailable",
        _ => "injected",
    };
    let mut e = ApiError::new(status, name, msg);
    if matches!(status.as_u16(), 429 | 503) {
        e = e.retry_after(1);
    }
    e.into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The `x-api-key` every service except LWA requires (403 `missing_api_key`).
pub fn require_api_key(headers: &HeaderMap) -> Result<String, ApiError> {
    header_str(headers, "x-api-key")
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "missing_api_key",
                "send your application's API key in the x-api-key header",
            )
        })
}

/// The bearer token of `Authorization: Bearer Atza|…`, checked against LWA (401
/// `invalid_token` when missing, unknown or expired).
pub fn require_bearer(state: &AppState, headers: &HeaderMap) -> Result<lwa::AccessGrant, ApiError> {
    let auth = header_str(headers, "authorization").ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "no access token: send Authorization: Bearer <LWA access token>",
        )
    })?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the Authorization header must be `Bearer <LWA access token>`",
            )
        })?;
    check_token(state, token.trim())
}

/// Checks an access token (from any auth scheme) against LWA.
pub fn check_token(state: &AppState, token: &str) -> Result<lwa::AccessGrant, ApiError> {
    state
        .services
        .lwa
        .lock()
        .unwrap()
        .validate(token, Instant::now())
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                match e {
                    lwa::TokenError::Expired => {
                        "the access token has expired: refresh it with grant_type=refresh_token"
                    }
                    lwa::TokenError::Unknown => {
                        "the access token is not one this LWA issued: log in again"
                    }
                },
            )
        })
}

/// 403 `insufficient_scope` unless the token carries `scope`.
pub fn require_scope(grant: &lwa::AccessGrant, scope: &str) -> Result<(), ApiError> {
    if grant.scopes.iter().any(|s| s == scope) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this call needs a token with scope {scope}: log in asking for it"),
        ))
    }
}

/// The caller's market: `x-amzn-market` (music API, license server), default `US`.
pub fn market(headers: &HeaderMap) -> String {
    header_str(headers, "x-amzn-market")
        .map(|m| m.to_ascii_uppercase())
        .unwrap_or_else(|| DEFAULT_MARKET.to_string())
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .merge(lwa::router())
        .merge(api::router())
        .merge(graphql::router())
        .merge(license::router())
        .merge(images::router())
}

/// The token file written next to an env file: `<env-file>.token.json`.
pub fn token_file_path(env_file: &Path) -> PathBuf {
    let mut name = env_file.as_os_str().to_owned();
    name.push(".token.json");
    PathBuf::from(name)
}

/// Writes `export KEY='value'` lines pointing the plugins at this emulator, with a freshly
/// issued token (scope `amazon_music:access`), and the token as JSON in `<path>.token.json`.
pub fn write_env_file(state: &AppState, path: &Path) -> anyhow::Result<()> {
    let base = state.base_url();
    let lifetime = state.config.lock().unwrap().token_lifetime_s;
    let pair = state.services.lwa.lock().unwrap().issue(
        EMULATOR_CLIENT_ID,
        vec![MUSIC_SCOPE.to_string()],
        Duration::from_secs(lifetime),
        Instant::now(),
    );
    let token_file = token_file_path(path);
    let now = crate::signing::now_unix();
    // The shape amzmusic-login writes, so the element reads either file the same way.
    let token_json = json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": "bearer",
        "issued_at": now,
        "expires_at": now + lifetime,
        "expires_in": lifetime,
        "scope": MUSIC_SCOPE,
        "client_id": EMULATOR_CLIENT_ID,
        "lwa_endpoint": base,
        "api_endpoint": base,
        "graphql_endpoint": format!("{base}/graphql"),
        "api_key": EMULATOR_API_KEY,
    });
    write_private(&token_file, &serde_json::to_vec_pretty(&token_json)?)?;
    let vars = [
        ("AMZMUSIC_EMULATOR_URL", base.to_string()),
        ("AMAZONMUSIC_API_ENDPOINT", base.to_string()),
        ("AMAZONMUSIC_LWA_ENDPOINT", base.to_string()),
        ("AMAZONMUSIC_GRAPHQL_ENDPOINT", format!("{base}/graphql")),
        ("AMAZONMUSIC_API_KEY", EMULATOR_API_KEY.to_string()),
        ("AMAZONMUSIC_CLIENT_ID", EMULATOR_CLIENT_ID.to_string()),
        ("AMAZONMUSIC_ACCESS_TOKEN", pair.access_token.clone()),
        (
            "AMAZONMUSIC_TOKEN_FILE",
            std::path::absolute(&token_file)?.display().to_string(),
        ),
    ];
    let mut text = String::from("# Written by amzmusic-emulator serve --env-file: source it.\n");
    for (k, v) in vars {
        // Single quotes: tokens contain `|`. Nothing written here contains a single quote.
        text.push_str(&format!("export {k}='{}'\n", v.replace('\'', "")));
    }
    write_private(path, text.as_bytes())?;
    Ok(())
}

/// Writes a file only its owner can read (it holds a token).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_bucket_refills() {
        let s = ServicesState::default();
        let t0 = Instant::now();
        assert!(s.take_rate("k", 2, t0).is_ok());
        assert!(s.take_rate("k", 2, t0).is_ok());
        assert_eq!(s.take_rate("k", 2, t0), Err(1));
        // Another key has its own bucket.
        assert!(s.take_rate("other", 2, t0).is_ok());
        assert!(s.take_rate("k", 2, t0 + Duration::from_millis(600)).is_ok());
        assert!(s.take_rate("k", 0, t0).is_ok());
    }

    #[test]
    fn injected_license_errors_follow_the_table() {
        let r = injected_error("license", 429);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "1");
        let r = injected_error("cdn", 500);
        assert!(r.headers().get("retry-after").is_none());
    }
}
