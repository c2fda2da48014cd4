// SPDX-License-Identifier: MPL-2.0
//! What every service checks of a request (API key, bearer token, scope, market) and the
//! error answer they all give, injected faults' included.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::Instant;

use super::tokens::{AccessGrant, TokenError};
use crate::state::AppState;

/// The scope the music API and the license server require.
pub const MUSIC_SCOPE: &str = "amazon_music:access";

/// The market when a request names none.
pub const DEFAULT_MARKET: &str = "US";

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
pub fn require_bearer(state: &AppState, headers: &HeaderMap) -> Result<AccessGrant, ApiError> {
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
pub fn check_token(state: &AppState, token: &str) -> Result<AccessGrant, ApiError> {
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
                    TokenError::Expired => {
                        "the access token has expired: refresh it with grant_type=refresh_token"
                    }
                    TokenError::Unknown => {
                        "the access token is not one this LWA issued: log in again"
                    }
                },
            )
        })
}

/// 403 `insufficient_scope` unless the token carries `scope`.
pub fn require_scope(grant: &AccessGrant, scope: &str) -> Result<(), ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_license_errors_follow_the_table() {
        let r = injected_error("license", 429);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "1");
        let r = injected_error("cdn", 500);
        assert!(r.headers().get("retry-after").is_none());
    }
}
