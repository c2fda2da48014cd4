// SPDX-License-Identifier: MPL-2.0
//! Login with Amazon's HTTP face: device authorization (code pair, polling, approval) and token
//! refresh, over the token store in `tokens` that every other service checks tokens against.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checks::ApiError;
use crate::state::AppState;

pub use super::tokens::{AccessGrant, CodePair, LwaState, PollError, TokenError, TokenPair};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/o2/create/codepair", post(create_code_pair))
        .route("/auth/o2/token", post(token))
        .route("/activate", get(activate_page).post(activate))
        .route("/_emulator/lwa/approve", post(admin_approve))
}

fn oauth_error(status: StatusCode, code: &str, message: &str) -> Response {
    // OAuth clients read `error_description`; the emulator's own shape is `message`.
    (
        status,
        Json(json!({ "error": code, "error_description": message, "message": message })),
    )
        .into_response()
}

type FormMap = Result<Form<HashMap<String, String>>, FormRejection>;

// The error is the finished answer.
#[allow(clippy::result_large_err)]
fn form_fields(f: FormMap) -> Result<HashMap<String, String>, Response> {
    f.map(|Form(m)| m).map_err(|_| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send an application/x-www-form-urlencoded body",
        )
    })
}

fn field<'a>(m: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    m.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

async fn create_code_pair(State(state): State<Arc<AppState>>, form: FormMap) -> Response {
    let m = match form_fields(form) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if field(&m, "response_type") != Some("device_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            "response_type must be device_code",
        );
    }
    let Some(client_id) = field(&m, "client_id") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "client_id is required",
        );
    };
    let scopes: Vec<String> = field(&m, "scope")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if scopes.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope is required (amazon_music:access for the music API)",
        );
    }
    let (lifetime, interval) = {
        let c = state.config.lock().unwrap();
        (c.device_code_lifetime_s, c.device_poll_interval_s)
    };
    let pair = state.services.lwa.lock().unwrap().create_code_pair(
        client_id,
        scopes.clone(),
        Duration::from_secs(lifetime),
        Duration::from_secs(interval),
        Instant::now(),
    );
    tracing::debug!(
        "lwa: new device authorization for client {client_id}, scopes {scopes:?}, expires in {lifetime} s"
    );
    Json(json!({
        "user_code": pair.user_code,
        "device_code": pair.device_code,
        "verification_uri": format!("{}/activate", state.base_url()),
        "expires_in": pair.expires_in,
        "interval": pair.interval,
    }))
    .into_response()
}

fn token_answer(pair: TokenPair) -> Response {
    Json(json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": "bearer",
        "expires_in": pair.expires_in,
    }))
    .into_response()
}

async fn token(State(state): State<Arc<AppState>>, form: FormMap) -> Response {
    let m = match form_fields(form) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let lifetime = Duration::from_secs(state.config.lock().unwrap().token_lifetime_s);
    let now = Instant::now();
    match field(&m, "grant_type") {
        Some("device_code") => {
            let Some(device_code) = field(&m, "device_code") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "device_code is required",
                );
            };
            let r = state.services.lwa.lock().unwrap().poll(
                device_code,
                field(&m, "user_code"),
                lifetime,
                now,
            );
            match r {
                Ok(pair) => {
                    tracing::debug!("lwa: device authorization redeemed, token issued");
                    token_answer(pair)
                }
                Err(e) => {
                    tracing::trace!("lwa: device code poll: {}", e.code());
                    let msg = match e {
                        PollError::Pending => "the user has not approved the code yet: poll again after `interval` seconds",
                        PollError::SlowDown => "polled sooner than `interval` seconds after the previous poll: slow down",
                        PollError::InvalidCodePair => "the device code is unknown, expired or already used: start again with create/codepair",
                    };
                    oauth_error(StatusCode::BAD_REQUEST, e.code(), msg)
                }
            }
        }
        Some("refresh_token") => {
            let Some(refresh_token) = field(&m, "refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                );
            };
            let r = state.services.lwa.lock().unwrap().refresh(
                refresh_token,
                field(&m, "client_id"),
                lifetime,
                now,
            );
            match r {
                Some(pair) => {
                    tracing::debug!("lwa: access token refreshed");
                    token_answer(pair)
                }
                None => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the refresh token is unknown or revoked (or issued to another client_id): log in again",
                ),
            }
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be device_code or refresh_token",
        ),
    }
}

const PAGE_STYLE: &str =
    "<style>body{font-family:sans-serif;max-width:30em;margin:3em auto}</style>";

async fn activate_page() -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><title>Amazon Music emulator: link a device</title>{PAGE_STYLE}</head><body>\
         <h1>Link a device</h1><p>Enter the code your device shows.</p>\
         <form method=\"post\" action=\"/activate\"><input name=\"user_code\" autofocus autocomplete=\"off\">\
         <button type=\"submit\">Approve</button></form></body></html>"
    ))
}

async fn activate(State(state): State<Arc<AppState>>, form: FormMap) -> Response {
    let code = form
        .ok()
        .and_then(|Form(m)| m.get("user_code").cloned())
        .unwrap_or_default();
    if state
        .services
        .lwa
        .lock()
        .unwrap()
        .approve(&code, Instant::now())
    {
        tracing::debug!("lwa: device authorization approved on the page");
        Html(format!(
            "<!doctype html><html><head><title>Approved</title>{PAGE_STYLE}</head><body>\
             <h1>Device linked</h1><p>You can return to your device.</p></body></html>"
        ))
        .into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><html><head><title>Unknown code</title>{PAGE_STYLE}</head><body>\
                 <h1>Unknown or expired code</h1><p>Check the code on your device, or start again.</p>\
                 <p><a href=\"/activate\">Try again</a></p></body></html>"
            )),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct ApproveRequest {
    user_code: String,
}

async fn admin_approve(
    State(state): State<Arc<AppState>>,
    Json(req): Json<ApproveRequest>,
) -> Response {
    if state
        .services
        .lwa
        .lock()
        .unwrap()
        .approve(&req.user_code, Instant::now())
    {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_user_code",
            "no live device authorization has this user code",
        )
        .into_response()
    }
}
